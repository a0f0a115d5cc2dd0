//! Records inventory fixtures inside the Keel devel image under QEMU (as root):
//!
//!   cargo run -p keel-qemu-tests --bin record-fixture -- [--out DIR] [NAME...]
//!
//! NAME is a machine shape (qemu_tests::record::SHAPES; default: all). Each is booted from
//! $KEEL_IMAGE_ENV (default build/image-devel/keel-image.env, which must be a devel build:
//! `scripts/image.sh --profile devel --out build/image-devel --keeld target/debug/keeld`),
//! recorded with `keeld host record` typed on the debug shell, and unpacked into
//! DIR/NAME (default tests/fixtures/NAME), replacing what was there. Like the scenarios it runs
//! in a private network namespace; QEMU's files go to $KEEL_QEMU_WORKDIR/NAME (default
//! /var/tmp/keel-qemu-record). KEEL_QEMU_ECHO=0 keeps the console out of the output.

use keel_qemu_tests::accel;
use keel_qemu_tests::image::{repo_root, ImageEnv};
use keel_qemu_tests::machine::Machine;
use keel_qemu_tests::record::{self, Console, SHAPES};
use keel_qemu_tests::{netns, tools::Tools};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let mut out = repo_root().join("tests/fixtures");
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(args.next().expect("--out DIR")),
            "-h" | "--help" => {
                eprintln!("record-fixture [--out DIR] [NAME...]; shapes:");
                for s in SHAPES {
                    eprintln!("  {:12} {}", s.name, s.about);
                }
                return;
            }
            n if record::spec(n).is_some() => names.push(n.to_string()),
            n => {
                eprintln!("record-fixture: unknown shape {n} (--help lists them)");
                std::process::exit(2);
            }
        }
    }
    if names.is_empty() {
        names = SHAPES.iter().map(|s| s.name.to_string()).collect();
    }
    // Before any thread exists: QEMU's user networking lives in a namespace with only loopback.
    if let Err(e) = netns::enter_private() {
        eprintln!("record-fixture: cannot enter a private network namespace ({e}); run as root");
        std::process::exit(1);
    }
    if netns::interfaces() != ["lo"] {
        eprintln!("record-fixture: the network namespace is not private: {:?}", netns::interfaces());
        std::process::exit(1);
    }
    let env_path = std::env::var_os("KEEL_IMAGE_ENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join("build/image-devel/keel-image.env"));
    let env = ImageEnv::load(&env_path).unwrap_or_else(|e| fail(&e));
    if env.profile != "devel" {
        fail(&format!("{} is a {} image: recording needs the devel profile's debug shell", env_path.display(), env.profile));
    }
    let work = std::env::var_os("KEEL_QEMU_WORKDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp/keel-qemu-record"));
    std::fs::create_dir_all(&work).unwrap_or_else(|e| fail(&format!("{}: {e}", work.display())));
    let tools = Tools::new(env.tools.clone());
    let (accel, why) = accel::choose(&tools, &work);
    eprintln!("record-fixture: {} ({why}), image {} from {}", accel.name(), env.version, env_path.display());
    let boot_timeout = Duration::from_secs(std::env::var("KEEL_BOOT_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(1200));
    for name in &names {
        let t = Instant::now();
        match record_one(&env, name, &work, &out, accel, &tools, boot_timeout) {
            Ok(summary) => println!("record-fixture: {name}: {summary} in {:.0} s", t.elapsed().as_secs_f64()),
            Err(e) => fail(&format!("{name}: {e}")),
        }
    }
}

fn fail(e: &str) -> ! {
    eprintln!("record-fixture: {e}");
    std::process::exit(1);
}

fn record_one(env: &ImageEnv, name: &str, work: &Path, out: &Path, accel: accel::Accel, tools: &Tools, boot_timeout: Duration) -> Result<String, String> {
    let spec = record::spec(name).ok_or("unknown shape")?;
    let mut m = Machine::create(env, spec, &work.join(name), accel, tools)?;
    eprintln!("record-fixture: booting {name} (serial log {})", m.serial_log_path().display());
    m.power_on()?;
    let ready = m.wait_redfish(boot_timeout)?;
    eprintln!("record-fixture: keeld answered {:.0} s after QEMU started", ready.as_secs_f64());
    let tgz = {
        let mut c = Console::attach(&mut m, Duration::from_secs(300))?;
        c.record()?
    };
    m.power_cut();
    let dir = out.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tar = Command::new("tar")
        .args(["-xzf", "-", "--no-same-owner", "--no-same-permissions", "-C"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    tar.stdin.take().unwrap().write_all(&tgz).map_err(|e| format!("tar: {e}"))?;
    let st = tar.wait().map_err(|e| format!("tar: {e}"))?;
    if !st.success() {
        return Err(format!("tar exited with {st}"));
    }
    // Whatever keeld records is inventory; a private key in it would be a bug to stop on.
    let found = Command::new("grep").args(["-rlI", "PRIVATE KEY"]).arg(&dir).output().map_err(|e| e.to_string())?;
    if !found.stdout.is_empty() {
        return Err(format!("the recording holds a private key: {}", String::from_utf8_lossy(&found.stdout)));
    }
    Ok(format!("{} bytes (.tar.gz) unpacked into {}", tgz.len(), dir.display()))
}
