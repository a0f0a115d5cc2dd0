//! The Keel image, booted and tested through Redfish. A test binary with its own runner
//! (`harness = false`): the scenarios share one booted machine where they can (a TCG boot takes
//! minutes), run in order, and the whole process first moves into a private network namespace.
//!
//!   qemu-tests/run.sh [NAME...]                      (sets up, builds the image if missing)
//!   cargo test -p keel-qemu-tests --test scenarios -- [NAME...]
//!
//! NAME selects scenarios by substring (default: all that are implemented). Environment:
//! KEEL_IMAGE_ENV (default build/image/keel-image.env), KEEL_QEMU_ACCEL=kvm|tcg (skip the probe),
//! KEEL_QEMU_WORKDIR (default /var/tmp/keel-qemu), KEEL_QEMU_ECHO=0 (do not copy the serial console
//! into the test log), KEEL_BOOT_TIMEOUT seconds (default 1200), KEEL_SHARED (DMTF schemas).

use keel_qemu_tests::accel::{self, Accel};
use keel_qemu_tests::image::{repo_root, ImageEnv};
use keel_qemu_tests::machine::{Bus, Machine, Spec};
use keel_qemu_tests::tools::Tools;
use keel_qemu_tests::{netns, redfish::Client};
use serde_json::Value;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: (&str, &str) = ("admin", "Keel-Test-Pass1");

type Outcome = Result<(), String>;

struct Ctx {
    work: PathBuf,
    env: Option<Result<ImageEnv, String>>,
    accel: Option<(Accel, String)>,
    machine: Option<Machine>,
    /// `name value` lines printed in the summary (timings).
    figures: Vec<String>,
}

impl Ctx {
    fn env(&mut self) -> Result<ImageEnv, String> {
        self.env.get_or_insert_with(|| ImageEnv::load(&ImageEnv::default_path())).clone()
    }

    /// QEMU and friends: the image's tools tree when keel-image.env names one.
    fn tools(&mut self) -> Tools {
        Tools::new(self.env().ok().and_then(|e| e.tools))
    }

    fn accel(&mut self) -> Accel {
        let work = self.work.clone();
        let tools = self.tools();
        let (a, why) = self.accel.get_or_insert_with(|| accel::choose(&tools, &work));
        eprintln!("accelerator: {} ({why})", a.name());
        *a
    }

    fn boot_timeout() -> Duration {
        Duration::from_secs(std::env::var("KEEL_BOOT_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(1200))
    }

    /// The standard machine, booted once and shared by the scenarios that only look at it.
    fn booted(&mut self) -> Result<&mut Machine, String> {
        if self.machine.as_mut().is_some_and(|m| m.running()) {
            return Ok(self.machine.as_mut().unwrap());
        }
        self.machine = None;
        let env = self.env()?;
        let accel = self.accel();
        let tools = self.tools();
        let mut m = Machine::create(&env, Spec::standard("standard", ADMIN), &self.work.join("standard"), accel, &tools)?;
        eprintln!("booting {} (image {}, {}, https on {}; serial log {})", m.spec.name, env.version, accel.name(), m.https, m.serial_log_path().display());
        m.power_on()?;
        let ready = m.wait_redfish(Self::boot_timeout())?;
        self.figures.push(format!("first boot to Redfish ready ({}): {:.1} s", accel.name(), ready.as_secs_f64()));
        eprintln!("keeld answered {:.1} s after QEMU started", ready.as_secs_f64());
        self.machine = Some(m);
        Ok(self.machine.as_mut().unwrap())
    }
}

fn check(cond: bool, what: impl Into<String>) -> Outcome {
    if cond { Ok(()) } else { Err(what.into()) }
}

// ------------------------------------------------------------------------------------ scenario 0

/// The accelerator probe: TCG must run the probe guest (so a "no" from KVM means KVM, not the
/// probe), and deciding about KVM takes under a second.
fn accel_probe(ctx: &mut Ctx) -> Outcome {
    let tools = ctx.tools();
    eprintln!("QEMU from the {}", tools.describe());
    let t = Instant::now();
    let tcg = accel::runs_guest(&tools, Accel::Tcg, &ctx.work, Duration::from_secs(20))?;
    check(tcg, format!("TCG did not run the probe guest (exit code {} expected)", accel::PROBE_EXIT_CODE))?;
    eprintln!("TCG ran the probe guest in {} ms", t.elapsed().as_millis());
    std::env::remove_var("KEEL_QEMU_ACCEL");
    let t = Instant::now();
    let (a, why) = accel::choose(&tools, &ctx.work);
    let took = t.elapsed();
    eprintln!("KVM probe: {} ({why}) in {} ms", a.name(), took.as_millis());
    ctx.figures.push(format!("KVM probe: {} in {} ms", a.name(), took.as_millis()));
    check(took < Duration::from_secs(1), format!("the KVM probe took {took:?}"))
}

// ------------------------------------------------------------------------------------ scenario 1

/// Boot: keeld answers; Secure Boot on with our key in db; a TPM 2.0; root (and swap) LUKS2
/// unlocked by the TPM without any prompt; /usr on dm-verity.
fn boot(ctx: &mut Ctx) -> Outcome {
    let want = ctx.env()?.version;
    let m = ctx.booted()?;
    let anon = m.client();
    let c = anon.with_auth(ADMIN.0, ADMIN.1);

    // The bootstrap administrator came from the SMBIOS credential: the image holds no password.
    let r = anon.get("/redfish/v1/Systems/system")?;
    check(r.status == 401, format!("unauthenticated GET of the system answered {}", r.status))?;
    let sys = c.get_json("/redfish/v1/Systems/system").map_err(|e| format!("admin from the SMBIOS credential: {e}"))?;

    // Secure Boot, as the firmware reports it to keeld.
    let sb = c.get_json("/redfish/v1/Systems/system/SecureBoot")?;
    eprintln!("SecureBoot: {}", sb);
    check(sb["SecureBootEnable"] == true, format!("SecureBootEnable: {}", sb["SecureBootEnable"]))?;
    check(sb["SecureBootCurrentBoot"] == "Enabled", format!("SecureBootCurrentBoot: {}", sb["SecureBootCurrentBoot"]))?;
    check(matches!(sb["SecureBootMode"].as_str(), Some("UserMode" | "DeployedMode")), format!("SecureBootMode: {}", sb["SecureBootMode"]))?;
    let dbs = c.members("/redfish/v1/Systems/system/SecureBoot/SecureBootDatabases")?;
    let db = dbs.iter().find(|d| d["DatabaseId"] == "db").ok_or("no db among the SecureBootDatabases")?;
    let certs = c.members(&format!("{}/Certificates", db["@odata.id"].as_str().unwrap_or("")))?;
    check(
        certs.iter().any(|x| x.to_string().contains("Keel test image signing key")),
        format!("our signing certificate is not in db: {}", Value::from(certs.clone())),
    )?;

    // The TPM.
    let tm = &sys["TrustedModules"];
    check(tm[0]["InterfaceType"] == "TPM2_0", format!("TrustedModules: {tm}"))?;
    let ci = c.members("/redfish/v1/ComponentIntegrity")?;
    check(ci.iter().any(|x| x["ComponentIntegrityType"] == "TPM"), format!("ComponentIntegrity: {}", Value::from(ci.clone())))?;

    // Incus is installed and keeld sees it (`incus version`, socket-activated daemon).
    let sw = c.members("/redfish/v1/UpdateService/SoftwareInventory")?;
    let ids: Vec<&str> = sw.iter().filter_map(|x| x["Id"].as_str()).collect();
    eprintln!("software inventory: {:?}", sw.iter().map(|x| format!("{} {}", x["Id"], x["Version"])).collect::<Vec<_>>());
    check(ids.contains(&"incus"), format!("Incus is not in the software inventory: {ids:?}"))?;

    // The A/B slots as keeld's real platform reads them from this disk: one slot holds the booted
    // version (partition label keel_<version>), the other is empty (_empty), and the ESP has
    // this version's UKI.
    let env = ctx_version(&sw)?;
    check(env == want, format!("keeld reports OS version {env}, the image is {want}"))?;
    check(sw.iter().any(|x| x["Id"].as_str().is_some_and(|i| i.starts_with("Slot_")) && x["Version"] == env.as_str()), format!("no slot holds version {env}: {ids:?}"))?;
    check(sw.iter().any(|x| x["Id"].as_str().is_some_and(|i| i.starts_with("Slot_")) && x["Version"].is_null()), format!("no empty slot: {ids:?}"))?;
    check(ids.contains(&format!("UKI_{env}").as_str()), format!("no UKI_{env} in the software inventory: {ids:?}"))?;

    // Root unlocked by the TPM alone: the initrd set it up with no passphrase prompt, and keeld
    // sees the LUKS2 mappings.
    // Also /usr on dm-verity (its root hash from the signed UKI), the stub saw Secure Boot on, and
    // no unit failed.
    let serial = m.serial_text();
    check_boot_console(&serial)?;
    // (systemd shortens long unit names on the console: "systemd-cryptsetup@root.s…vice")
    for line in ["Finished systemd-cryptsetup@swap.s", "Activated swap dev-mapper-swap.swap"] {
        check(serial.contains(line), format!("the console never showed {line:?}"))?;
    }
    let storage = c.members("/redfish/v1/Systems/system/Storage")?;
    let mut volumes = Vec::new();
    for s in &storage {
        if let Some(v) = s["Volumes"]["@odata.id"].as_str() {
            volumes.extend(c.members(v)?);
        }
    }
    let luks: Vec<&Value> = volumes.iter().filter(|v| v["Encrypted"] == true && v["Name"].as_str().is_some_and(|n| n.starts_with("LUKS2"))).collect();
    eprintln!("encrypted volumes: {:?}", luks.iter().map(|v| v["DisplayName"].clone()).collect::<Vec<_>>());
    check(luks.iter().any(|v| v["DisplayName"] == "root"), format!("no LUKS2 volume 'root' in keeld's storage: {}", Value::from(volumes.clone())))?;

    // Boot counting: the boot was good, so systemd-boot's entry was blessed.
    check(serial.contains("Finished systemd-bless-boot.s"), "systemd-bless-boot did not mark the boot good")?;

    // Locked down: nothing on the console offers a login.
    check(!serial.contains("login:"), "the console offers a login prompt")
}

/// The image version as keeld reports the running OS (`os` in the software inventory).
fn ctx_version(sw: &[Value]) -> Result<String, String> {
    sw.iter().find(|x| x["Id"] == "os").and_then(|x| x["Version"].as_str()).map(String::from).ok_or_else(|| "no os entry in the software inventory".into())
}

// ------------------------------------------------------------------------------------ scenario 2

fn shared_schemas() -> PathBuf {
    std::env::var_os("KEEL_SHARED").map(PathBuf::from).unwrap_or_else(|| repo_root().parent().unwrap().join("shared")).join("redfish-schemas")
}

/// A console script of the test venv: $KEEL_VENV, the repository's .venv, or the main tree's.
fn venv_tool(name: &str) -> Result<PathBuf, String> {
    let root = repo_root();
    let mut dirs: Vec<PathBuf> = std::env::var_os("KEEL_VENV").map(|v| vec![PathBuf::from(v)]).unwrap_or_default();
    dirs.push(root.join(".venv"));
    dirs.push(root.parent().unwrap().join("main/.venv"));
    dirs.iter().map(|d| d.join("bin").join(name)).find(|p| p.exists()).ok_or_else(|| format!("{name} not found in {dirs:?}: run scripts/setup.sh"))
}

fn validator_cmd(tool: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.current_dir(cwd);
    for v in ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        cmd.env_remove(v);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    cmd
}

/// The DMTF Service Validator (0 FAIL) and Protocol Validator (0 FAIL) against keeld in the guest,
/// and the inventory: every disk and NIC QEMU was given.
fn conformance(ctx: &mut Ctx) -> Outcome {
    let work = ctx.work.join("conformance");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let m = ctx.booted()?;
    let spec = m.spec.clone();
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let url = m.client().url();

    // Inventory: every drive by its serial number, every NIC by its MAC address.
    let storage = c.members("/redfish/v1/Systems/system/Storage")?;
    let mut serials = Vec::new();
    for s in &storage {
        for d in s["Drives"].as_array().cloned().unwrap_or_default() {
            let drive = c.get_json(d["@odata.id"].as_str().unwrap_or(""))?;
            serials.push(drive["SerialNumber"].as_str().unwrap_or("").to_string());
        }
    }
    eprintln!("drives: {serials:?}");
    let mut want: Vec<(String, Bus)> = spec.disks.iter().map(|d| (d.serial.clone(), d.bus)).collect();
    want.push((spec.boot_serial.clone(), Bus::Virtio));
    for (serial, bus) in &want {
        check(serials.iter().any(|s| s == serial), format!("drive {serial} ({bus:?}) is not in the inventory: {serials:?}"))?;
    }
    let nics = c.members("/redfish/v1/Systems/system/EthernetInterfaces")?;
    let macs: Vec<String> = nics.iter().map(|n| n["MACAddress"].as_str().unwrap_or("").to_lowercase()).collect();
    eprintln!("NICs: {macs:?}");
    for mac in &spec.nics {
        check(macs.contains(&mac.to_lowercase()), format!("NIC {mac} is not in the inventory: {macs:?}"))?;
    }

    // Service Validator, as the administrator, with the DMTF CSDL plus Keel's OEM CSDL.
    let schemas = work.join("schemas");
    std::fs::create_dir_all(&schemas).map_err(|e| e.to_string())?;
    let csdl = shared_schemas().join("csdl");
    let mut n = 0;
    for dir in [csdl.clone(), repo_root().join("schemas")] {
        for f in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e} (set KEEL_SHARED)", dir.display()))? {
            let p = f.map_err(|e| e.to_string())?.path();
            if p.extension().is_some_and(|x| x == "xml") {
                std::os::unix::fs::symlink(&p, schemas.join(p.file_name().unwrap())).map_err(|e| e.to_string())?;
                n += 1;
            }
        }
    }
    check(n > 100, format!("only {n} CSDL files found under {}", csdl.display()))?;
    let rsv_dir = work.join("rsv");
    std::fs::create_dir_all(&rsv_dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = validator_cmd(&venv_tool("rf_service_validator")?, &rsv_dir)
        .args(["-r", &url, "-u", ADMIN.0, "-p", ADMIN.1, "--authtype", "Session", "--skipschema", "--timeout", "60"])
        .arg("--schema_directory")
        .arg(&schemas)
        .arg("--logdir")
        .arg(&rsv_dir)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = keel_qemu_tests::machine::strip_ansi(&String::from_utf8_lossy(&out.stdout));
    std::fs::write(work.join("rsv-output.txt"), &stdout).ok();
    let table = validator_table(&stdout).ok_or_else(|| format!("no result table from the Service Validator:\n{}", tail(&stdout, 60)))?;
    eprintln!("Service Validator: {table:?} in {:.0} s (reports: {})", t.elapsed().as_secs_f64(), rsv_dir.display());
    ctx.figures.push(format!("Service Validator against the guest: {table:?}"));
    if table.2 != 0 || !out.status.success() {
        let errors: Vec<String> = walk_files(&rsv_dir)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("RedfishServiceValidatorDebug")))
            .flat_map(|p| std::fs::read_to_string(p).unwrap_or_default().lines().filter(|l| l.contains(" - ERROR - ")).map(String::from).collect::<Vec<_>>())
            .collect();
        return Err(format!("Service Validator: {} FAIL (exit {:?})\n{}", table.2, out.status.code(), errors.join("\n")));
    }

    // Protocol Validator: this whole process is in a private network namespace, as
    // tests/conformance requires (its event subscription and SSDP probes reach nothing), and the
    // guest's own user networking is restricted.
    let rpv = work.join("rpv");
    let cwd = work.join("rpv-cwd");
    std::fs::create_dir_all(&cwd).map_err(|e| e.to_string())?;
    let ca = work.join("keeld-cert.pem");
    std::fs::write(&ca, m_client_cert(&url)?).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = validator_cmd(&venv_tool("rf_protocol_validator")?, &cwd)
        .args(["-r", &url, "-u", ADMIN.0, "-p", ADMIN.1, "--avoid-http-redirect", "--report-type", "tsv"])
        .arg("--ca-bundle")
        .arg(&ca)
        .arg("--report-dir")
        .arg(&rpv)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = keel_qemu_tests::machine::strip_ansi(&String::from_utf8_lossy(&out.stdout));
    std::fs::write(work.join("rpv-output.txt"), format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr))).ok();
    let results: Value = std::fs::read_to_string(rpv.join("results.json"))
        .map_err(|e| format!("no results.json from the Protocol Validator ({e}):\n{}", tail(&stdout, 40)))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))?;
    let counts = &results["TestResults"]["Protocol Validations"];
    eprintln!("Protocol Validator: {counts} in {:.0} s (reports: {})", t.elapsed().as_secs_f64(), rpv.display());
    ctx.figures.push(format!("Protocol Validator against the guest: {counts}"));
    if counts["fail"] != 0 {
        let fails: Vec<String> = walk_files(&rpv)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
            .flat_map(|p| std::fs::read_to_string(p).unwrap_or_default().lines().filter(|l| l.contains("\tFAIL\t")).map(String::from).collect::<Vec<_>>())
            .collect();
        return Err(format!("Protocol Validator: {} FAIL\n{}", counts["fail"], fails.join("\n")));
    }
    check(out.status.success(), format!("rf_protocol_validator exited {:?}", out.status.code()))
}

// ------------------------------------------------------------------------------------ bundles

/// Build N+1: `$KEEL_NEXT_IMAGE_ENV`, else build/image-next/keel-image.env (qemu-tests/run.sh
/// makes it with `scripts/image.sh --version <N>.1 --out build/image-next`, same keys).
fn next_image(ctx: &mut Ctx) -> Result<(String, PathBuf), String> {
    let path = std::env::var_os("KEEL_NEXT_IMAGE_ENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join("build/image-next/keel-image.env"));
    let next = ImageEnv::load(&path)?;
    let n = ctx.env()?.version;
    let bundle = next.bundle.clone().filter(|b| b.exists()).ok_or_else(|| format!("{}: no update bundle", path.display()))?;
    check(next.version != n, format!("{} is version {n}, the running one: build N+1 with --version", path.display()))?;
    Ok((next.version, bundle))
}

/// Where the artifacts start in a bundle: magic, format, manifest and signature (see
/// service/src/slots/bundle.rs), and the manifest.
fn bundle_head(file: &Path) -> Result<(u64, Vec<u8>), String> {
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    check(&head[..8] == b"KEELBNDL", format!("{} is not a Keel bundle", file.display()))?;
    let mlen = u32::from_be_bytes(head[12..16].try_into().unwrap()) as u64;
    let mut manifest = vec![0u8; mlen as usize];
    f.read_exact(&mut manifest).map_err(|e| e.to_string())?;
    let mut slen = [0u8; 4];
    f.read_exact(&mut slen).map_err(|e| e.to_string())?;
    Ok((16 + mlen + 4 + u32::from_be_bytes(slen) as u64, manifest))
}

/// The same bundle, its manifest signed by a key the machine has never seen (a fresh
/// self-signed certificate): the header bytes to send instead of the first `skip` bytes.
fn foreign_head(file: &Path, work: &Path) -> Result<(Vec<u8>, u64), String> {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    let (skip, manifest) = bundle_head(file)?;
    let key = work.join("foreign.key");
    let crt = work.join("foreign.crt");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Not the Keel update key/"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    check(out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&key).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let cert = openssl::x509::X509::from_pem(&std::fs::read(&crt).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let sig = CmsContentInfo::sign(Some(&cert), Some(&pkey), None, Some(&manifest), CMSOptions::DETACHED | CMSOptions::BINARY)
        .and_then(|c| c.to_der())
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    head.extend_from_slice(b"KEELBNDL");
    head.extend_from_slice(&2u32.to_be_bytes());
    head.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
    head.extend_from_slice(&manifest);
    head.extend_from_slice(&(sig.len() as u32).to_be_bytes());
    head.extend_from_slice(&sig);
    Ok((head, skip))
}

/// A reader that flips one bit at byte `at` of what it passes on.
struct FlipAt<R> {
    inner: R,
    pos: u64,
    at: u64,
}

impl<R: Read> Read for FlipAt<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.at >= self.pos && self.at < self.pos + n as u64 {
            buf[(self.at - self.pos) as usize] ^= 0x01;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Push through MultipartHttpPushUri; the final task (the response comes once keeld has read
/// the whole upload).
fn push(c: &Client, params: &Value, name: &str, body: &mut dyn Read, len: u64) -> Result<(u16, Value), String> {
    let mut up = c.clone();
    up.timeout = Duration::from_secs(3600);
    let svc = c.get_json("/redfish/v1/UpdateService")?;
    let uri = svc["MultipartHttpPushUri"].as_str().ok_or("no MultipartHttpPushUri")?.to_string();
    let t = Instant::now();
    let r = up.push_multipart(&uri, params, name, body, len)?;
    eprintln!("push of {name} ({len} bytes): HTTP {} after {:.0} s", r.status, t.elapsed().as_secs_f64());
    if r.status != 202 {
        return Ok((r.status, r.json().unwrap_or(Value::Null)));
    }
    let loc = r.header("Location").ok_or("202 without Location")?.to_string();
    Ok((202, c.wait_task(&loc, Duration::from_secs(3600))?))
}

fn task_messages(task: &Value) -> String {
    task["Messages"].as_array().map(|ms| ms.iter().map(|m| format!("{} {} {}", m["MessageId"], m["Message"], m["Resolution"])).collect::<Vec<_>>().join(" | ")).unwrap_or_default()
}

/// The software inventory's `os` version, the slot holding it and the other slot.
fn slots(c: &Client) -> Result<(String, Vec<Value>), String> {
    let sw = c.members("/redfish/v1/UpdateService/SoftwareInventory")?;
    let os = ctx_version(&sw)?;
    Ok((os, sw.into_iter().filter(|x| x["Id"].as_str().is_some_and(|i| i.starts_with("Slot_"))).collect()))
}

fn reset(c: &Client, kind: &str) -> Outcome {
    let r = c.request("POST", "/redfish/v1/Systems/system/Actions/ComputerSystem.Reset", Some(&serde_json::json!({ "ResetType": kind })))?;
    check(r.status == 204 || r.status == 200 || r.status == 202, format!("ComputerSystem.Reset {kind}: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))
}

/// The console since `from` (one boot): no passphrase prompt, root unlocked, /usr on verity,
/// Secure Boot on, no failed unit.
fn check_boot_console(text: &str) -> Outcome {
    for prompt in ["Please enter passphrase", "Enter passphrase", "recovery key"] {
        check(!text.contains(prompt), format!("the console asked: {prompt:?}"))?;
    }
    for line in ["Finished systemd-cryptsetup@root.s", "Finished systemd-veritysetup@usr.s", "UEFI Secure Boot is enabled"] {
        check(text.contains(line), format!("this boot's console never showed {line:?}"))?;
    }
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("[FAILED]")).collect();
    check(failed.is_empty(), format!("units failed during boot:\n{}", failed.join("\n")))
}

// ------------------------------------------------------------------------------------ scenario 6

/// Refusals: the next version's bundle signed by a foreign key, and with one flipped bit in its
/// usr image, are refused with an extended error; the other slot stays empty, and after a reset
/// the machine boots the version it ran.
fn refusals(ctx: &mut Ctx) -> Outcome {
    let (_, bundle) = next_image(ctx)?;
    let work = ctx.work.join("refusals");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let n = ctx.env()?.version;
    let m = ctx.booted()?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let len = std::fs::metadata(&bundle).map_err(|e| e.to_string())?.len();
    let params = serde_json::json!({ "@Redfish.OperationApplyTime": "OnReset" });

    let (head, skip) = foreign_head(&bundle, &work)?;
    let mut f = std::fs::File::open(&bundle).map_err(|e| e.to_string())?;
    f.seek(std::io::SeekFrom::Start(skip)).map_err(|e| e.to_string())?;
    let total = head.len() as u64 + len - skip;
    let (status, task) = push(&c, &params, "foreign.bundle", &mut std::io::Cursor::new(head).chain(f), total)?;
    eprintln!("foreign key: HTTP {status}, {} {}", task["TaskState"], task_messages(&task));
    check(status == 202 && task["TaskState"] == "Exception", format!("a foreign-key bundle was not refused: HTTP {status} {task}"))?;
    check(task_messages(&task).contains("signer") || task_messages(&task).contains("signature"), format!("the refusal does not name the signature: {}", task_messages(&task)))?;

    let (skip, _) = bundle_head(&bundle)?;
    let flip = skip + 100 * 4096 + 17;
    let f = std::fs::File::open(&bundle).map_err(|e| e.to_string())?;
    let (status, task) = push(&c, &params, "tampered.bundle", &mut FlipAt { inner: f, pos: 0, at: flip }, len)?;
    eprintln!("tampered: HTTP {status}, {} {}", task["TaskState"], task_messages(&task));
    check(status == 202 && task["TaskState"] == "Exception", format!("a tampered bundle was not refused: HTTP {status} {task}"))?;
    check(task_messages(&task).contains("usr"), format!("the refusal does not name the usr artifact: {}", task_messages(&task)))?;

    let (os, sl) = slots(&c)?;
    eprintln!("slots after the refusals: {:?}", sl.iter().map(|x| format!("{} {} {}", x["Id"], x["Version"], x["Status"]["State"])).collect::<Vec<_>>());
    check(os == n, format!("running {os}, expected {n}"))?;
    check(sl.iter().filter(|x| x["Version"].is_null()).count() == 1, "the other slot is not empty after the refusals")?;

    // The machine still boots, into the same version.
    let from = m.serial_text().len();
    reset(&c, "GracefulRestart")?;
    let took = m.wait_reboot(Ctx::boot_timeout())?;
    ctx.figures.push(format!("reboot after the refusals: {:.0} s", took.as_secs_f64()));
    let m = ctx.machine.as_mut().unwrap();
    check_boot_console(&m.serial_text()[from..])?;
    let (os, _) = slots(&m.client().with_auth(ADMIN.0, ADMIN.1))?;
    check(os == n, format!("after the reset keeld reports {os}, expected {n}"))
}

// ------------------------------------------------------------------------------------ scenario 3

/// A/B update: N+1 pulled by SimpleUpdate from the harness's file server, then pushed through
/// MultipartHttpPushUri, both staged OnReset; ComputerSystem.Reset; N+1 runs from the other slot
/// with root still unlocked by the TPM.
fn ab_update(ctx: &mut Ctx) -> Outcome {
    let (next, bundle) = next_image(ctx)?;
    let n = ctx.env()?.version;
    let m = ctx.booted()?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let (os, before) = slots(&c)?;
    check(os == n, format!("running {os}, expected {n}"))?;
    let running_slot = before.iter().find(|x| x["Version"] == n.as_str()).and_then(|x| x["Id"].as_str()).ok_or("no slot holds the running version")?.to_string();

    // Pull.
    let uri = m.serve_file("next.bundle", &bundle)?;
    let t = Instant::now();
    let r = c.request(
        "POST",
        "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
        Some(&serde_json::json!({ "ImageURI": uri, "TransferProtocol": "HTTP", "@Redfish.OperationApplyTime": "OnReset" })),
    )?;
    check(r.status == 202, format!("SimpleUpdate: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let loc = r.header("Location").ok_or("SimpleUpdate: 202 without Location")?.to_string();
    let task = c.wait_task(&loc, Duration::from_secs(3600))?;
    eprintln!("SimpleUpdate: {} in {:.0} s: {}", task["TaskState"], t.elapsed().as_secs_f64(), task_messages(&task));
    ctx.figures.push(format!("SimpleUpdate of {} MB through guestfwd: {:.0} s", std::fs::metadata(&bundle).map(|x| x.len() >> 20).unwrap_or(0), t.elapsed().as_secs_f64()));
    let m = ctx.machine.as_mut().unwrap();
    check(task["TaskState"] == "Completed", format!("SimpleUpdate task: {task}"))?;
    check(m.served_requests().iter().any(|l| l == "GET /next.bundle"), format!("the file server saw {:?}", m.served_requests()))?;
    let (_, staged) = slots(&c)?;
    let target = staged.iter().find(|x| x["Version"] == next.as_str()).ok_or_else(|| format!("no slot holds {next} after SimpleUpdate: {}", Value::from(staged.clone())))?;
    let target_slot = target["Id"].as_str().unwrap_or("").to_string();
    check(target_slot != running_slot, format!("{next} was written to the running slot {running_slot}"))?;

    // Push (the same version again, into the same slot).
    let len = std::fs::metadata(&bundle).map_err(|e| e.to_string())?.len();
    let f = std::fs::File::open(&bundle).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (status, task) = push(&c, &serde_json::json!({ "@Redfish.OperationApplyTime": "OnReset" }), "next.bundle", &mut std::io::BufReader::new(f), len)?;
    ctx.figures.push(format!("MultipartHttpPushUri of {} MB: {:.0} s", len >> 20, t.elapsed().as_secs_f64()));
    check(status == 202 && task["TaskState"] == "Completed", format!("push: HTTP {status}: {task}"))?;

    // Reset: the next boot tries N+1.
    let m = ctx.machine.as_mut().unwrap();
    let from = m.serial_text().len();
    reset(&c, "GracefulRestart")?;
    let took = m.wait_reboot(Ctx::boot_timeout())?;
    ctx.figures.push(format!("reboot into {next}: {:.0} s", took.as_secs_f64()));
    let m = ctx.machine.as_mut().unwrap();
    let console = m.serial_text()[from..].to_string();
    check_boot_console(&console)?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let (os, after) = slots(&c)?;
    eprintln!("slots after the update: {:?}", after.iter().map(|x| format!("{} {} {}", x["Id"], x["Version"], x["Status"]["State"])).collect::<Vec<_>>());
    check(os == next, format!("after the reset keeld reports {os}, expected {next}"))?;
    let now = after.iter().find(|x| x["Id"] == target_slot.as_str()).ok_or("the target slot vanished")?;
    check(now["Version"] == next.as_str(), format!("slot {target_slot}: {now}"))?;
    check(after.iter().any(|x| x["Id"] == running_slot.as_str() && x["Version"] == n.as_str()), format!("slot {running_slot} no longer holds {n}"))?;
    let sb = c.get_json("/redfish/v1/Systems/system/SecureBoot")?;
    check(sb["SecureBootEnable"] == true && sb["SecureBootCurrentBoot"] == "Enabled", format!("Secure Boot after the update: {sb}"))?;
    // The new entry was blessed once the boot was good.
    check(console.contains("Finished systemd-bless-boot.s"), "systemd-bless-boot did not mark the new version good")?;
    Ok(())
}

// ------------------------------------------------------------------------------------ scenario 5

/// Power cut: QEMU is killed at spread-out moments while an update is being written
/// (`KEEL_POWER_CUTS` trials, default 5); every time the machine boots, keeld answers, the version
/// is the one it ran, the other slot is empty, and root was unlocked by the TPM.
fn power_cut(ctx: &mut Ctx) -> Outcome {
    let (_, bundle) = next_image(ctx)?;
    let trials: u64 = std::env::var("KEEL_POWER_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let m = ctx.booted()?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let (before, _) = slots(&c)?;
    let len = std::fs::metadata(&bundle).map_err(|e| e.to_string())?.len();
    // A push takes 40-60 s here (reading, hashing and writing); cut between 3 s and 30 s in, spread
    // over the trials with a little jitter, so the cut never falls after the slot was activated.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1);
    eprintln!("power cuts: {trials} trials, jitter seed {seed}");
    for i in 0..trials {
        let m = ctx.machine.as_mut().unwrap();
        let jitter = (seed.wrapping_mul(6364136223846793005).wrapping_add(i * 1442695040888963407) >> 33) % 2000;
        let at = Duration::from_millis(3000 + i * 27_000 / trials.max(1) + jitter);
        let c = m.client().with_auth(ADMIN.0, ADMIN.1);
        let b = bundle.clone();
        let pusher = std::thread::spawn(move || {
            let f = std::fs::File::open(&b).map_err(|e| e.to_string())?;
            push(&c, &serde_json::json!({ "@Redfish.OperationApplyTime": "OnReset" }), "next.bundle", &mut std::io::BufReader::new(f), len)
        });
        std::thread::sleep(at);
        let from = m.serial_text().len();
        m.power_cut();
        let pushed = pusher.join().map_err(|_| "push thread panicked")?;
        check(pushed.is_err(), format!("trial {i}: the push finished before the cut at {at:?}: {pushed:?}"))?;
        m.power_on()?;
        let t = Instant::now();
        m.wait_redfish(Ctx::boot_timeout()).map_err(|e| format!("trial {i} (cut {at:?} into the push): {e}"))?;
        eprintln!("trial {i}: cut {:.1} s into the push; keeld answered {:.0} s after power-on", at.as_secs_f64(), t.elapsed().as_secs_f64());
        check_boot_console(&m.serial_text()[from..]).map_err(|e| format!("trial {i}: {e}"))?;
        let c = m.client().with_auth(ADMIN.0, ADMIN.1);
        let (os, sl) = slots(&c)?;
        check(os == before, format!("trial {i}: after the cut keeld reports {os}, it ran {before}"))?;
        check(sl.iter().filter(|x| x["Version"].is_null()).count() == 1, format!("trial {i}: the slot being written is not empty: {}", Value::from(sl.clone())))?;
    }
    ctx.figures.push(format!("power cuts during an update: {trials}, each booted {before}"));
    Ok(())
}

// ------------------------------------------------------------------------------------ scenario 4

/// Rollback: version N+2 (build/image-bad: its command line sends it to reboot.target, so it
/// never finishes booting) is pushed and the machine reset; after its three tries systemd-boot
/// falls back by itself, keeld answers on the version that ran before and reports N+2's slot as
/// failed.
fn rollback(ctx: &mut Ctx) -> Outcome {
    let path = std::env::var_os("KEEL_BAD_IMAGE_ENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join("build/image-bad/keel-image.env"));
    let bad = ImageEnv::load(&path)?;
    let bundle = bad.bundle.clone().filter(|b| b.exists()).ok_or_else(|| format!("{}: no update bundle", path.display()))?;
    let m = ctx.booted()?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let (before, _) = slots(&c)?;
    check(before != bad.version, format!("already running {before}"))?;
    let len = std::fs::metadata(&bundle).map_err(|e| e.to_string())?.len();
    let f = std::fs::File::open(&bundle).map_err(|e| e.to_string())?;
    let (status, task) = push(&c, &serde_json::json!({ "@Redfish.OperationApplyTime": "OnReset" }), "bad.bundle", &mut std::io::BufReader::new(f), len)?;
    check(status == 202 && task["TaskState"] == "Completed", format!("push of {}: HTTP {status}: {task}", bad.version))?;
    let from = m.serial_text().len();
    reset(&c, "GracefulRestart")?;
    let took = m.wait_reboot(Ctx::boot_timeout() * 3)?;
    ctx.figures.push(format!("reset, three failed boots of {} and the fallback: {:.0} s", bad.version, took.as_secs_f64()));
    let m = ctx.machine.as_mut().unwrap();
    let console = m.serial_text()[from..].to_string();
    let boots = console.matches("UEFI Secure Boot is enabled").count();
    let failed = console.matches("Reached target reboot.target").count();
    eprintln!("since the reset: {boots} boots, {failed} of them ended at reboot.target");
    check(boots >= 4 && failed >= 4, format!("expected three failed boots of {} and the fallback: {boots} boots, {failed} reboots", bad.version))?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let (os, sl) = slots(&c)?;
    eprintln!("slots after the rollback: {:?}", sl.iter().map(|x| format!("{} {} {} {}", x["Id"], x["Version"], x["Status"]["State"], x["Status"]["Health"])).collect::<Vec<_>>());
    check(os == before, format!("after the fallback keeld reports {os}, expected {before}"))?;
    let failed_slot = sl.iter().find(|x| x["Version"] == bad.version.as_str()).ok_or_else(|| format!("no slot reports {}", bad.version))?;
    check(failed_slot["Status"]["Health"] == "Critical" && failed_slot["Status"]["State"] == "UnavailableOffline", format!("the failed slot: {failed_slot}"))?;
    // The last part of the console is the good boot: root unlocked by the TPM again.
    let last = console.rfind("UEFI Secure Boot is enabled").unwrap_or(0);
    check_boot_console(&console[last..])
}

// ------------------------------------------------------------------------------------ scenario 7

/// Recovery key: keeld took charge of root and swap (its service key); a recovery key is set
/// through the API (a task); the machine is powered off and started with Secure Boot off (the
/// firmware's blank variable store), so PCR 7 differs and the TPM refuses to unseal; the harness
/// types the recovery key at the console prompt and the machine boots; keeld reports the boot as
/// unlocked by the recovery key and allows RebindTPM; after it the next boot unlocks with the TPM
/// alone again.
fn recovery_key(ctx: &mut Ctx) -> Outcome {
    const KEY: &str = "Keel-Recovery-Key-2026!";
    let blank = ctx.env()?.tools.map(|t| t.join("usr/share/OVMF/OVMF_VARS_4M.fd")).filter(|p| p.exists()).ok_or("no blank OVMF variable store in the tools tree")?;
    let m = ctx.booted()?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let sys = "/redfish/v1/Systems/system";
    let security = |c: &Client| -> Result<Value, String> { Ok(c.get_json(sys)?["Oem"]["Keel"]["Security"].clone()) };
    let sec = security(&c)?;
    eprintln!("security: {sec}");
    check(sec["EncryptionManaged"] == true && sec["BootUnlockedBy"] == "TPM", format!("keeld does not manage root and swap, or the TPM did not unlock them: {sec}"))?;

    let r = c.request("POST", &format!("{sys}/Actions/Oem/KeelComputerSystem.SetRecoveryKeys"), Some(&serde_json::json!({ "RecoveryKeys": [KEY] })))?;
    check(r.status == 202, format!("SetRecoveryKeys: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let task = c.wait_task(r.header("Location").ok_or("202 without Location")?, Duration::from_secs(600))?;
    check(task["TaskState"] == "Completed", format!("SetRecoveryKeys: {task}"))?;
    check(!task.to_string().contains(KEY), "the task shows the recovery key")?;
    check(security(&c)?["RecoveryKeyCount"] == 1, format!("RecoveryKeyCount after SetRecoveryKeys: {}", security(&c)?))?;

    // Power off; Secure Boot off from now on.
    reset(&c, "GracefulShutdown")?;
    let t = Instant::now();
    while m.running() {
        check(t.elapsed() < Duration::from_secs(300), "the machine did not power off within 5 minutes")?;
        std::thread::sleep(Duration::from_secs(1));
    }
    m.power_cut();
    std::fs::copy(&blank, m.dir.join("vars.fd")).map_err(|e| format!("{}: {e}", blank.display()))?;
    let from = m.serial_text().len();
    m.power_on()?;
    // The TPM refuses; every passphrase prompt gets the recovery key.
    let t = Instant::now();
    let mut typed = 0;
    loop {
        let prompts = m.serial_text()[from..].matches("Please enter passphrase").count();
        if prompts > typed {
            std::thread::sleep(Duration::from_millis(500));
            m.serial_write(&format!("{KEY}\n"))?;
            typed = prompts;
            eprintln!("typed the recovery key at prompt {typed}");
        }
        if m.client().get("/redfish/v1").is_ok_and(|r| r.status == 200) {
            break;
        }
        check(m.running(), format!("QEMU exited: {}", m.qemu_stderr()))?;
        check(t.elapsed() < Ctx::boot_timeout(), format!("keeld did not answer within {:?} (prompts seen: {prompts})", Ctx::boot_timeout()))?;
        std::thread::sleep(Duration::from_secs(1));
    }
    let console = m.serial_text()[from..].to_string();
    check(typed >= 1, "no passphrase prompt: the TPM unsealed root with Secure Boot off")?;
    check(console.contains("Finished systemd-cryptsetup@root.s"), "root was not unlocked")?;
    check(!console.contains(KEY), "the console echoed the recovery key")?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let sec = security(&c)?;
    eprintln!("security after the recovery boot: {sec}");
    check(sec["BootUnlockedBy"] == "RecoveryKey" && sec["SecureBoot"] == "Disabled", format!("after the recovery boot: {sec}"))?;

    // Bind the TPM to this state; the next boot needs no key.
    let r = c.request("POST", &format!("{sys}/Actions/Oem/KeelComputerSystem.RebindTPM"), Some(&serde_json::json!({})))?;
    check(r.status == 202, format!("RebindTPM: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let task = c.wait_task(r.header("Location").ok_or("202 without Location")?, Duration::from_secs(600))?;
    check(task["TaskState"] == "Completed", format!("RebindTPM: {task}"))?;

    // A data drive (the first NVMe drive, blank): encrypted through the API, opened at once by
    // systemd, and at every boot by the TPM (keeld's /etc/crypttab line).
    let drive = c
        .members("/redfish/v1/Chassis/chassis/Drives")?
        .into_iter()
        .filter_map(|d| d["@odata.id"].as_str().map(String::from))
        .find(|u| u.rsplit('/').next().is_some_and(|id| id.starts_with("nvme")))
        .ok_or("no NVMe drive in the inventory")?;
    let r = c.request("POST", &format!("{sys}/Actions/Oem/KeelComputerSystem.EncryptDataDrive"), Some(&serde_json::json!({ "Drive": { "@odata.id": drive } })))?;
    check(r.status == 202, format!("EncryptDataDrive {drive}: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let task = c.wait_task(r.header("Location").ok_or("202 without Location")?, Duration::from_secs(600))?;
    check(task["TaskState"] == "Completed", format!("EncryptDataDrive: {task}"))?;
    let vol = task["Links"]["CreatedResources"][0]["@odata.id"].as_str().ok_or_else(|| format!("EncryptDataDrive's task names no volume: {task}"))?.to_string();
    let v = c.get_json(&vol)?;
    eprintln!("encrypted {drive}: {vol}: {}", v["Oem"]["Keel"]);
    check(v["Encrypted"] == true && v["Oem"]["Keel"]["ManagedByKeel"] == true, format!("the new data volume: {v}"))?;
    check(v["Links"]["Drives"].as_array().is_some_and(|d| d.iter().any(|x| x["@odata.id"] == drive.as_str())), format!("the new data volume does not link {drive}: {v}"))?;

    let from = m.serial_text().len();
    reset(&c, "GracefulRestart")?;
    m.wait_reboot(Ctx::boot_timeout())?;
    let console = m.serial_text()[from..].to_string();
    check(!console.contains("Please enter passphrase"), "after RebindTPM the console still asks for a passphrase")?;
    check(console.contains("Finished systemd-cryptsetup@root.s"), "root was not unlocked after RebindTPM")?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let sec = security(&c)?;
    check(sec["BootUnlockedBy"] == "TPM", format!("after RebindTPM: {sec}"))?;
    let v = c.get_json(&vol)?;
    eprintln!("after the restart: {vol}: {}", v["Oem"]["Keel"]);
    check(v["Oem"]["Keel"]["UnlockedBy"] == "TPM", format!("the data volume after the restart: {v}"))
}

/// Factory reset on the image. `Manager.ResetToDefaults` (`ResetAll`) wipes keeld's configuration:
/// an account made before is gone once keeld has restarted, and the root volume is the same.
/// `ComputerSystem.Decommission` (`UserData`) wipes the disks: keeld removes root and swap from
/// the table, crypto-erases them and restarts the machine; the next boot is a first boot again
/// (systemd-repart makes new LUKS2 volumes bound to the TPM, with no prompt), so the root volume
/// has a new LUKS UUID, the account made before is gone, keeld has a new identity, and the
/// bootstrap administrator from the SMBIOS credential is back; the TPM was not cleared.
/// `Decommission` `TPM` alone is refused; `All` also has the firmware clear the TPM (F12 at its
/// prompt), after which the attestation key differs and new volumes are sealed to the new TPM.
fn factory_reset(ctx: &mut Ctx) -> Outcome {
    let m = ctx.booted()?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let root_uuid = |c: &Client| -> Result<String, String> {
        for s in c.members("/redfish/v1/Systems/system/Storage")? {
            if let Some(v) = s["Volumes"]["@odata.id"].as_str() {
                for vol in c.members(v)? {
                    if vol["DisplayName"] == "root" {
                        return vol["Oem"]["Keel"]["LUKSUUID"].as_str().map(String::from).ok_or_else(|| format!("root without LUKSUUID: {vol}"));
                    }
                }
            }
        }
        Err("no root volume".into())
    };
    let accounts = |c: &Client| -> Result<Vec<String>, String> { Ok(c.members("/redfish/v1/AccountService/Accounts")?.iter().filter_map(|a| a["UserName"].as_str().map(String::from)).collect()) };
    let make_account = |c: &Client, name: &str| -> Outcome {
        let r = c.request("POST", "/redfish/v1/AccountService/Accounts", Some(&serde_json::json!({ "UserName": name, "Password": "Keel-Operator-Pass2", "RoleId": "Operator" })))?;
        check(r.status == 201, format!("creating account {name}: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))
    };
    let before = root_uuid(&c)?;
    make_account(&c, "before-reset")?;

    let r = c.request("POST", "/redfish/v1/Managers/keel/Actions/Manager.ResetToDefaults", Some(&serde_json::json!({ "ResetType": "ResetAll" })))?;
    check(r.status == 202, format!("ResetToDefaults: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let t = Instant::now();
    loop {
        if let Ok(list) = accounts(&c) {
            if !list.iter().any(|a| a == "before-reset") {
                eprintln!("accounts after ResetToDefaults: {list:?} ({:.0} s)", t.elapsed().as_secs_f64());
                break;
            }
        }
        check(t.elapsed() < Duration::from_secs(300), "the account made before ResetToDefaults is still there after 5 minutes")?;
        std::thread::sleep(Duration::from_secs(2));
    }
    check(root_uuid(&c)? == before, "ResetToDefaults changed the root volume")?;
    let sec = c.get_json("/redfish/v1/Systems/system")?["Oem"]["Keel"]["Security"].clone();
    check(sec["BootUnlockedBy"] != "Unknown", format!("after ResetToDefaults: {sec}"))?;

    // The disks.
    make_account(&c, "before-wipe")?;
    let ak_before = ak_key(&c)?;
    let uuid_before = c.get_json("/redfish/v1")?["UUID"].clone();
    let cert_before = m.client().peer_cert_pem()?;
    let from = m.serial_text().len();
    let r = c.request("POST", "/redfish/v1/Systems/system/Actions/ComputerSystem.Decommission", Some(&serde_json::json!({ "DecommissionTypes": ["UserData"] })))?;
    check(r.status == 202, format!("Decommission UserData: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let took = m.wait_reboot(Ctx::boot_timeout())?;
    eprintln!("back after Decommission UserData in {:.0} s", took.as_secs_f64());
    let console = m.serial_text()[from..].to_string();
    check(!console.contains("Please enter passphrase"), "after the wipe the console asks for a passphrase")?;
    check(console.contains("Finished systemd-repart.service"), "systemd-repart did not run after the wipe")?;
    check(console.contains("Finished systemd-cryptsetup@root.s"), "root was not unlocked after the wipe")?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let after = root_uuid(&c)?;
    eprintln!("root LUKS UUID {before} -> {after}");
    check(after != before, "the root volume is the same after Decommission UserData")?;
    let list = accounts(&c)?;
    check(!list.iter().any(|a| a == "before-wipe" || a == "before-reset") && list.iter().any(|a| a == ADMIN.0), format!("accounts after the wipe: {list:?}"))?;
    check(c.get_json("/redfish/v1")?["UUID"] != uuid_before, "keeld's service UUID survived the wipe")?;
    // A data drive encrypted before (the recovery_key scenario leaves one) is erased and not
    // opened any more: its /etc/crypttab line went with root.
    for s in c.members("/redfish/v1/Systems/system/Storage")? {
        if let Some(v) = s["Volumes"]["@odata.id"].as_str() {
            let left: Vec<Value> = c.members(v)?.into_iter().filter(|x| x["Id"].as_str().is_some_and(|id| id.starts_with("keel_"))).collect();
            check(left.is_empty(), format!("data volumes still open after the wipe: {left:?}"))?;
        }
    }
    check(m.client().peer_cert_pem()? != cert_before, "keeld's TLS certificate survived the wipe")?;
    let sec = c.get_json("/redfish/v1/Systems/system")?["Oem"]["Keel"]["Security"].clone();
    eprintln!("security after the wipe: {sec}");
    check(sec["BootUnlockedBy"] == "TPM" && sec["RecoveryKeyCount"] == 0, format!("after the wipe: {sec}"))?;
    let status = c.get_json("/redfish/v1/UpdateService/FirmwareInventory")?;
    check(status["Members@odata.count"].as_u64().unwrap_or(0) > 0, format!("the firmware inventory after the wipe: {status}"))?;
    let ak_after_wipe = ak_key(&c)?;
    check(ak_after_wipe == ak_before, "the TPM's attestation key changed, though the TPM was not part of the wipe")?;

    // The TPM: alone it is refused (root and swap are sealed to it); with the disks (All) the
    // firmware asks at the console for F12 (pressed on the PS/2 keyboard through QMP), clears it,
    // and the machine comes back on new volumes sealed to the cleared TPM.
    let r = c.request("POST", "/redfish/v1/Systems/system/Actions/ComputerSystem.Decommission", Some(&serde_json::json!({ "DecommissionTypes": ["TPM"] })))?;
    let body = String::from_utf8_lossy(&r.body).to_string();
    check(r.status == 409 && body.contains("sealed to this TPM"), format!("Decommission TPM alone: HTTP {}: {body}", r.status))?;
    check(ak_key(&c)? == ak_after_wipe && root_uuid(&c)? == after, "a refused Decommission changed something")?;
    let from = m.serial_text().len();
    let r = c.request("POST", "/redfish/v1/Systems/system/Actions/ComputerSystem.Decommission", Some(&serde_json::json!({ "DecommissionTypes": ["All"] })))?;
    check(r.status == 202, format!("Decommission All: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)))?;
    let t = Instant::now();
    let mut probe = m.client();
    probe.timeout = Duration::from_secs(5);
    while probe.get("/redfish/v1").is_ok_and(|r| r.status == 200) {
        check(t.elapsed() < Duration::from_secs(300), "keeld still answers 5 minutes after Decommission All")?;
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut pressed = false;
    loop {
        if !pressed && m.serial_text()[from..].contains("Press F12") {
            std::thread::sleep(Duration::from_secs(1));
            m.send_key(&["f12"])?;
            pressed = true;
            eprintln!("pressed F12 at the firmware's TPM clear prompt ({:.0} s)", t.elapsed().as_secs_f64());
        }
        if pressed && probe.get("/redfish/v1").is_ok_and(|r| r.status == 200) {
            break;
        }
        check(m.running(), format!("QEMU exited: {}", m.qemu_stderr()))?;
        check(t.elapsed() < Ctx::boot_timeout(), format!("keeld did not come back within {:?} after Decommission All (F12 pressed: {pressed})", Ctx::boot_timeout()))?;
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("back after Decommission All in {:.0} s", t.elapsed().as_secs_f64());
    let console = m.serial_text()[from..].to_string();
    check(!console.contains("Please enter passphrase"), "after Decommission All the console asks for a passphrase")?;
    let c = m.client().with_auth(ADMIN.0, ADMIN.1);
    let last = root_uuid(&c)?;
    check(last != after && last != before, "the root volume is the same after Decommission All")?;
    check(ak_key(&c)? != ak_after_wipe, "the TPM's attestation key is the same after Decommission All: the TPM was not cleared")?;
    let sec = c.get_json("/redfish/v1/Systems/system")?["Oem"]["Keel"]["Security"].clone();
    eprintln!("security after Decommission All: {sec}");
    check(sec["BootUnlockedBy"] == "TPM" && sec["TPMPresent"] == true, format!("after Decommission All: {sec}"))
}

/// The public key (DER) of the TPM's attestation key, from keeld's AK certificate. The AK is a
/// primary key of the owner hierarchy: it changes exactly when the TPM is cleared.
fn ak_key(c: &Client) -> Result<Vec<u8>, String> {
    let cert = c.get_json("/redfish/v1/Chassis/chassis/TrustedComponents/TPM/Certificates/AK")?;
    let pem = cert["CertificateString"].as_str().ok_or_else(|| format!("AK certificate without CertificateString: {cert}"))?;
    let x = openssl::x509::X509::from_pem(pem.as_bytes()).map_err(|e| format!("AK certificate: {e}"))?;
    x.public_key().and_then(|k| k.public_key_to_der()).map_err(|e| format!("AK certificate: {e}"))
}

fn m_client_cert(url: &str) -> Result<Vec<u8>, String> {
    let addr = url.trim_start_matches("https://").parse().map_err(|e| format!("{url}: {e}"))?;
    Client::new(addr).peer_cert_pem()
}

/// (PASS, WARN, FAIL, NOT TESTED) from the Service Validator's closing table.
fn validator_table(out: &str) -> Option<(u64, u64, u64, u64)> {
    let lines: Vec<&str> = out.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        if cells.contains(&"PASS") && cells.contains(&"FAIL") && i + 2 < lines.len() {
            let nums: Vec<u64> = lines[i + 2].split('|').map(str::trim).filter(|c| !c.is_empty()).filter_map(|c| c.parse().ok()).collect();
            if nums.len() == 4 {
                return Some((nums[0], nums[1], nums[2], nums[3]));
            }
        }
    }
    None
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk_files(&p)) } else { out.push(p) }
        }
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------------------------ the runner

/// Scenarios that need work from other issues; listed so that a run says what it did not test.
const NOT_YET: &[(&str, &str)] = &[
];

type Scenario = fn(&mut Ctx) -> Outcome;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let scenarios: &[(&str, Scenario)] = &[("accel_probe", accel_probe), ("boot", boot), ("conformance", conformance), ("refusals", refusals), ("power_cut", power_cut), ("ab_update", ab_update), ("rollback", rollback), ("recovery_key", recovery_key), ("factory_reset", factory_reset)];
    let selected = |name: &str| args.is_empty() || args.iter().any(|a| name.contains(a.as_str()));

    // Before any thread exists: every socket, QEMU and validator of this run lives in here.
    if let Err(e) = netns::enter_private() {
        eprintln!("qemu-tests: cannot enter a private network namespace ({e}); run as root");
        println!("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        std::process::exit(1);
    }
    let ifaces = netns::interfaces();
    eprintln!("qemu-tests: private network namespace with {ifaces:?}");
    if ifaces != ["lo"] {
        eprintln!("qemu-tests: the network namespace is not private: {ifaces:?}");
        std::process::exit(1);
    }
    let work = std::env::var_os("KEEL_QEMU_WORKDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp/keel-qemu"));
    std::fs::create_dir_all(&work).expect("work directory");
    let mut ctx = Ctx { work, env: None, accel: None, machine: None, figures: Vec::new() };

    let t_all = Instant::now();
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, f) in scenarios.iter().filter(|(n, _)| selected(n)) {
        eprintln!("\n=============================== scenario {name}");
        let t = Instant::now();
        let r = f(&mut ctx);
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({secs:.0} s)");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED ({secs:.0} s)");
                failures.push((name.to_string(), e));
            }
        }
    }
    for (name, why) in NOT_YET.iter().filter(|(n, _)| selected(n)) {
        ignored += 1;
        println!("test {name} ... ignored, {why}");
    }
    if let Some(m) = ctx.machine.as_mut() {
        m.power_cut();
        eprintln!("serial log of the standard machine: {}", m.serial_log_path().display());
    }
    for (name, e) in &failures {
        println!("\n---- {name} ----\n{e}");
    }
    if !ctx.figures.is_empty() {
        println!("\nfigures:");
        for f in &ctx.figures {
            println!("  {f}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; 0 filtered out; finished in {:.2}s",
        if failed == 0 { "ok" } else { "FAILED" },
        t_all.elapsed().as_secs_f64()
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
