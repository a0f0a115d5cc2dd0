use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "keeld", version, about = "Keel's Redfish service daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum HostCmd {
    /// Capture what keeld reads of this machine into DIR (a fixture for --host-root).
    Record { dir: PathBuf },
    /// Time `Inventory::build` on a recorded machine (bench/inventory.sh): min/median of N runs.
    #[command(hide = true)]
    BenchInventory {
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Make a signed update bundle: manifest, CMS signature, then the artifacts.
    Create {
        #[arg(long)]
        version: String,
        #[arg(long)]
        usr: PathBuf,
        #[arg(long)]
        usr_verity: PathBuf,
        #[arg(long)]
        usr_verity_sig: PathBuf,
        #[arg(long)]
        uki: PathBuf,
        /// The signing key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The signing certificate (PEM; further certificates in the file are included as chain).
        #[arg(long)]
        cert: PathBuf,
        /// Architecture in systemd's naming.
        #[arg(long, default_value = "x86-64")]
        arch: String,
        /// The oldest running version this bundle may update.
        #[arg(long)]
        min_version: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Check a bundle's signature against CA and every artifact's size and SHA-256.
    Verify {
        #[arg(long)]
        ca: PathBuf,
        file: PathBuf,
    },
    /// Apply a bundle (FILE, or `-` for standard input) to a simulated machine in DIR.
    #[command(hide = true)]
    ApplySim {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        ca: PathBuf,
        /// The running version when DIR is new.
        #[arg(long, default_value = keeld::slots::SIM_VERSION)]
        running: String,
        #[arg(long, default_value_t = keeld::slots::DEFAULT_SIM_USR_SIZE)]
        usr_size: u64,
        #[arg(long, default_value = "x86-64")]
        arch: String,
        #[arg(long)]
        allow_downgrade: bool,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SimCmd {
    /// Print the slots, boot entries and next boot as JSON.
    Status,
    /// Simulated reboot by systemd-boot's rules.
    Reboot,
    /// Bless the booted entry.
    Bless,
    /// Make VERSION's entry the default.
    SetDefault { version: String },
}

#[derive(Subcommand)]
enum Cmd {
    /// Make and check update bundles.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// Work with a simulated machine's slots (DIR as made by `serve --platform simulated` in
    /// STATE/sim, or by `bundle apply-sim`).
    #[command(hide = true)]
    Sim {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = keeld::slots::SIM_VERSION)]
        running: String,
        #[arg(long, default_value_t = keeld::slots::DEFAULT_SIM_USR_SIZE)]
        usr_size: u64,
        #[command(subcommand)]
        cmd: SimCmd,
    },
    /// Serve the Redfish API over HTTPS.
    Serve {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Where accounts, sessions, subscriptions, settings and the TLS certificate live.
        #[arg(long, default_value = "/var/lib/keel")]
        state_dir: PathBuf,
        /// PEM certificate chain (with --tls-key); without both a self-signed one is made.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA whose client certificates log in as the account named by their subject CN.
        #[arg(long)]
        tls_client_ca: Option<PathBuf>,
        /// A `user:password` line: the first Administrator when no account exists.
        #[arg(long)]
        bootstrap_admin_file: Option<PathBuf>,
        /// A systemd credential NAME holding that `user:password` line
        /// (`$CREDENTIALS_DIRECTORY/NAME`, e.g. from `ImportCredential=`); ignored when absent or
        /// when --bootstrap-admin-file is given.
        #[arg(long, value_name = "NAME")]
        bootstrap_admin_credential: Option<String>,
        /// HTTP worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Most members returned in one collection page.
        #[arg(long, default_value_t = 1000)]
        page_size: usize,
        /// Largest request body accepted, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body: usize,
        /// Serve a machine recorded by `keeld host record` instead of this one.
        #[arg(long)]
        host_root: Option<PathBuf>,
        /// Seconds between inventory re-reads that find hot-plugged and removed devices (0: off).
        #[arg(long, default_value_t = 10)]
        inventory_refresh: u64,
        /// Seconds between smartctl runs for one drive (at start, for a new drive at once; then
        /// at most this often; a drive in standby is not woken). 0: on every inventory refresh.
        #[arg(long, default_value_t = 600)]
        smart_interval: u64,
        /// The TPM's TCTI, e.g. `swtpm:host=127.0.0.1,port=2321` (default: device:/dev/tpmrm0 if present).
        #[arg(long)]
        tpm_tcti: Option<String>,
        /// How ComputerSystem.Reset acts: `logind` resets this machine (systemd-logind and
        /// systemd over D-Bus), `simulated` only records it in the state directory, `auto` is
        /// logind on a Keel image booted by systemd and simulated everywhere else.
        #[arg(long, default_value = "auto", value_parser = ["auto", "logind", "simulated"])]
        power: String,
        /// The D-Bus address logind and systemd are reached at (default: the system bus).
        #[arg(long)]
        power_bus: Option<String>,
        /// A simulated LUKS2 volume or blank data drive: a disk image keeld manages as NAME
        /// (repeatable; simulated platform only, the machine's own volumes are never touched).
        #[arg(long = "crypt-volume", value_name = "NAME=PATH")]
        crypt_volume: Vec<keeld::crypt::SimDisk>,
        /// Where updates act: `simulated` (a GPT image in STATE/sim), `real` (this machine's boot
        /// disk; a Keel image) or `auto` (real on a Keel image, simulated with --host-root).
        #[arg(long, default_value = "auto", value_parser = ["auto", "simulated", "real"])]
        platform: String,
        /// The CA (PEM) an update bundle's signer must chain to.
        #[arg(long, default_value = keeld::slots::DEFAULT_UPDATE_CA)]
        update_ca: PathBuf,
        /// Size in bytes of each usr partition when the simulated disk is created.
        #[arg(long, default_value_t = keeld::slots::DEFAULT_SIM_USR_SIZE)]
        sim_usr_size: u64,
    },
    /// Work with the host root.
    Host {
        #[command(subcommand)]
        cmd: HostCmd,
    },
    /// Print the OpenAPI document (YAML).
    Openapi,
}

/// Keep the heap small: argon2 allocates 19 MiB per verification, and glibc's dynamic mmap
/// threshold would otherwise keep such blocks in per-thread arenas for good.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Times `Inventory::build` on a fixture, three ways: cold (a new SMART cache each time, so every
/// drive's smartctl output is replayed from its file and parsed), SMART skipped, and a refresh
/// within `--smart-interval` (the kept SMART results, no smartctl). One `name min median` line each.
fn bench_inventory(dir: &std::path::Path, runs: usize) {
    use keeld::inventory::{storage::SmartCache, Inventory};
    use std::time::{Duration, Instant};
    let host = keeld::host::Host::fixture(dir);
    let time = |f: &dyn Fn() -> Inventory| {
        let mut t: Vec<Duration> = (0..runs)
            .map(|_| {
                let s = Instant::now();
                std::hint::black_box(f());
                s.elapsed()
            })
            .collect();
        t.sort();
        (t[0], t[t.len() / 2])
    };
    let warm = SmartCache::new(Duration::from_secs(3600));
    let inv = Inventory::build(&host, Some(&warm));
    let drives: usize = inv.storage.iter().map(|c| c.drives.len()).sum();
    let with_smart = inv.storage.iter().flat_map(|c| &c.drives).filter(|d| d.smart.is_some()).count();
    println!("# {} drives ({} with SMART data), {} runs each", drives, with_smart, runs);
    for (name, (min, median)) in [
        ("cold_smart_replayed", time(&|| Inventory::build(&host, Some(&SmartCache::new(Duration::ZERO))))),
        ("smart_skipped", time(&|| Inventory::build(&host, None))),
        ("refresh_smart_kept", time(&|| Inventory::build(&host, Some(&warm)))),
    ] {
        println!("{name} {:.3} {:.3}", min.as_secs_f64() * 1e3, median.as_secs_f64() * 1e3);
    }
}

/// `$CREDENTIALS_DIRECTORY/NAME` when systemd passed that credential to the service.
fn credential_file(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        log::warn!("--bootstrap-admin-credential {name:?}: not a credential name");
        return None;
    }
    let path = PathBuf::from(std::env::var_os("CREDENTIALS_DIRECTORY")?).join(name);
    path.is_file().then_some(path)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("keeld: {msg}");
    std::process::exit(1);
}

fn open_input(file: &std::path::Path) -> Box<dyn std::io::Read> {
    if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).unwrap_or_else(|e| fail(format!("{}: {e}", file.display()))))
    }
}

fn bundle(cmd: BundleCmd) {
    use keeld::slots::{bundle, ApplyOptions, Progress, Slots};
    match cmd {
        BundleCmd::Create { version, usr, usr_verity, usr_verity_sig, uki, key, cert, arch, min_version, output } => {
            let args = bundle::CreateArgs {
                version: &version,
                architecture: &arch,
                min_version: min_version.as_deref(),
                artifacts: vec![("usr", &usr), ("usr-verity", &usr_verity), ("usr-verity-sig", &usr_verity_sig), ("uki", &uki)],
                key: &key,
                cert: &cert,
            };
            match bundle::create(&args, &output) {
                Ok(m) => println!("{}: version {} for {}, {} bytes of artifacts", output.display(), m.version, m.architecture, m.total_bytes()),
                Err(e) => fail(format!("bundle create: {e}")),
            }
        }
        BundleCmd::Verify { ca, file } => match bundle::verify(&mut std::io::BufReader::with_capacity(1 << 20, open_input(&file)), &ca) {
            Ok(m) => {
                println!("{}: good signature, {} artifacts verified", file.display(), m.artifacts.len());
                println!("{}", serde_json::to_string_pretty(&m).unwrap());
            }
            Err(e) => fail(format!("{}: {e}", file.display())),
        },
        BundleCmd::ApplySim { dir, ca, running, usr_size, arch, allow_downgrade, file } => {
            use std::io::Write;
            let slots = Slots::open_simulated(&dir, &running, usr_size).unwrap_or_else(|e| fail(format!("{}: {e}", dir.display())));
            let opts = ApplyOptions { ca, arch, allow_downgrade };
            let mut out = std::io::stdout().lock();
            let mut last_pct = u64::MAX;
            let mut report = |p: Progress| {
                let line = match &p {
                    Progress::Writing { total_written, total_bytes, .. } => {
                        let pct = total_written * 100 / (*total_bytes).max(1);
                        if pct == last_pct {
                            return;
                        }
                        last_pct = pct;
                        serde_json::to_string(&p).unwrap()
                    }
                    _ => serde_json::to_string(&p).unwrap(),
                };
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            };
            match slots.apply(&mut open_input(&file), &opts, &mut report) {
                Ok(a) => println!("applied {} to slot {} ({})", a.version, a.slot, a.entry),
                Err(e) => fail(e),
            }
        }
    }
}

fn sim(dir: &std::path::Path, running: &str, usr_size: u64, cmd: SimCmd) {
    let slots = keeld::slots::Slots::open_simulated(dir, running, usr_size).unwrap_or_else(|e| fail(format!("{}: {e}", dir.display())));
    let out = match cmd {
        SimCmd::Status => slots.status().map(|s| serde_json::to_string_pretty(&s).unwrap()),
        SimCmd::Reboot => slots.reboot().map(|s| serde_json::to_string_pretty(&s).unwrap()),
        SimCmd::Bless => slots.bless().map(|s| format!("{s:?}")),
        SimCmd::SetDefault { version } => slots.set_default(&version),
    };
    match out {
        Ok(s) => println!("{s}"),
        Err(e) => fail(e),
    }
}

fn main() {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,actix_server=warn")).format_target(false).init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Openapi => {
            use std::io::Write;
            // A closed pipe (`keeld openapi | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(keeld::openapi::yaml(keeld::tree::global()).as_bytes());
        }
        Cmd::Host { cmd: HostCmd::Record { dir } } => match keeld::host::record::record(&keeld::host::Host::live(), &dir) {
            Ok((files, commands)) => log::info!("recorded {files} files and {commands} command outputs into {}", dir.display()),
            Err(e) => {
                log::error!("recording into {}: {e}", dir.display());
                std::process::exit(1);
            }
        },
        Cmd::Bundle { cmd } => bundle(cmd),
        Cmd::Sim { dir, running, usr_size, cmd } => sim(&dir, &running, usr_size, cmd),
        Cmd::Host { cmd: HostCmd::BenchInventory { dir, runs } } => bench_inventory(&dir, runs.max(1)),
        Cmd::Serve { listen, state_dir, tls_cert, tls_key, tls_client_ca, bootstrap_admin_file, bootstrap_admin_credential, workers, page_size, max_body, host_root, inventory_refresh, smart_interval, tpm_tcti, power, power_bus, crypt_volume, platform, update_ca, sim_usr_size } => {
            let bootstrap_admin_file = bootstrap_admin_file.or_else(|| credential_file(bootstrap_admin_credential.as_deref()?));
            let opts = keeld::server::ServeOpts {
                listen,
                tls_cert,
                tls_key,
                tls_client_ca,
                bootstrap_admin_file,
                workers: workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
                inventory_refresh,
                config: keeld::app::Config {
                    state_dir,
                    max_body,
                    page_size,
                    host_root,
                    smart_interval,
                    tpm_tcti,
                    power: power.parse().expect("checked by clap"),
                    power_bus,
                    crypt_volumes: crypt_volume,
                    platform,
                    update_ca,
                    sim_usr_size,
                    ..Default::default()
                },
            };
            match actix_web::rt::System::new().block_on(keeld::server::run(opts)) {
                Ok(keeld::server::Exit::Stopped) => {}
                Ok(keeld::server::Exit::Restart) => {
                    use std::os::unix::process::CommandExt;
                    let e = std::process::Command::new("/proc/self/exe").args(std::env::args_os().skip(1)).exec();
                    log::error!("re-exec failed: {e}");
                    std::process::exit(1);
                }
                Err(e) => {
                    log::error!("{e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
