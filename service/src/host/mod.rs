//! The host root: the only way keeld reads the machine.
//!
//! Every file is read under a path prefix (`/` on a real machine, a recorded fixture directory in
//! tests and with `keeld serve --host-root DIR`), and every command goes through one runner that
//! either runs the real program or replays its recorded output. The parsers above never know which.

pub mod record;

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A command's result, live or recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CmdOutput {
    /// The exit status (`-1` when the program could not be started or was killed).
    pub status: i32,
    pub stdout: String,
}

#[derive(Clone, Debug)]
enum Runner {
    Live,
    /// Outputs recorded by `keeld host record`, under `<root>/.keel-commands/`.
    Recorded,
}

#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
    runner: Runner,
}

/// Where recorded command outputs live inside a fixture.
pub const COMMANDS_DIR: &str = ".keel-commands";

/// A file name for a command line: readable, unique, and free of `/`.
pub fn command_key(program: &str, args: &[&str]) -> String {
    let mut key = String::new();
    for part in std::iter::once(program).chain(args.iter().copied()) {
        if !key.is_empty() {
            key.push_str("__");
        }
        key.extend(part.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=".contains(c) { c } else { '+' }));
    }
    key.push_str(".json");
    key
}

impl Host {
    /// The machine keeld runs on.
    pub fn live() -> Host {
        Host { root: PathBuf::from("/"), runner: Runner::Live }
    }

    /// A recorded machine.
    pub fn fixture(dir: &Path) -> Host {
        Host { root: dir.to_path_buf(), runner: Runner::Recorded }
    }

    pub fn is_live(&self) -> bool {
        matches!(self.runner, Runner::Live)
    }

    /// The real path of a machine path such as `/proc/cpuinfo`.
    pub fn path(&self, machine_path: &str) -> PathBuf {
        self.root.join(machine_path.trim_start_matches('/'))
    }

    pub fn read(&self, machine_path: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(machine_path))
    }

    pub fn read_bytes(&self, machine_path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(machine_path))
    }

    /// A sysfs-style one-value file, trimmed; `None` when absent, unreadable or empty.
    pub fn attr(&self, machine_path: &str) -> Option<String> {
        let v = self.read(machine_path).ok()?;
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    /// The entries of a directory, sorted by name (empty when it does not exist).
    pub fn list(&self, machine_dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(machine_dir))
            .map(|rd| rd.filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok())).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The target of a symbolic link (sysfs links such as `device/driver`), as stored.
    pub fn link(&self, machine_path: &str) -> Option<PathBuf> {
        std::fs::read_link(self.path(machine_path)).ok()
    }

    /// Run a program (or replay its recording). A program that is missing, fails to start, or
    /// was not recorded gives status -1 and no output: callers degrade that one property.
    pub fn run(&self, program: &str, args: &[&str]) -> CmdOutput {
        match self.runner {
            Runner::Live => run_live(program, args, COMMAND_TIMEOUT),
            Runner::Recorded => {
                let p = self.root.join(COMMANDS_DIR).join(command_key(program, args));
                std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(CmdOutput { status: -1, stdout: String::new() })
            }
        }
    }
}

/// How long a program keeld reads the machine with may take (smartctl, ethtool, incus, ...).
/// One that hangs (Incus still starting after a power cut, a drive that does not answer) is
/// stopped, and only what it would have described is missing until the next refresh.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run a program with no input, its standard output collected and standard error dropped; after
/// `timeout` it is killed and the result is status `-1` with no output.
pub fn run_live(program: &str, args: &[&str], timeout: std::time::Duration) -> CmdOutput {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::Instant;
    let failed = CmdOutput { status: -1, stdout: String::new() };
    let deadline = Instant::now() + timeout;
    let Ok(mut child) = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn() else { return failed };
    let mut out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        let _ = tx.send(b);
    });
    let stop = |child: &mut std::process::Child| {
        log::warn!("{program} {}: no answer within {timeout:?}, stopped", args.join(" "));
        let _ = child.kill();
        let _ = child.wait();
    };
    // The end of its output comes with its exit (or not at all, if it hangs).
    let Ok(bytes) = rx.recv_timeout(timeout) else {
        stop(&mut child);
        return failed;
    };
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return CmdOutput { status: st.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&bytes).into_owned() },
            Ok(None) if Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => {
                stop(&mut child);
                return failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_command_that_hangs_is_stopped_at_its_timeout() {
        let t = std::time::Instant::now();
        assert_eq!(run_live("sh", &["-c", "echo partial; sleep 30"], std::time::Duration::from_millis(300)), CmdOutput { status: -1, stdout: String::new() });
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
        // One that closes its output and then hangs is stopped too.
        let t = std::time::Instant::now();
        assert_eq!(run_live("sh", &["-c", "exec >/dev/null; sleep 30"], std::time::Duration::from_millis(300)).status, -1);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(run_live("sh", &["-c", "echo out; echo err >&2; exit 3"], std::time::Duration::from_secs(10)), CmdOutput { status: 3, stdout: "out\n".into() });
        assert_eq!(run_live("/nonexistent/program", &[], std::time::Duration::from_secs(1)).status, -1);
    }

    #[test]
    fn fixture_reads_under_its_root_and_replays_commands() {
        let dir = std::env::temp_dir().join(format!("keel-host-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        std::fs::write(dir.join("proc/cpuinfo"), "processor\t: 0\n").unwrap();
        std::fs::create_dir_all(dir.join(COMMANDS_DIR)).unwrap();
        let out = CmdOutput { status: 4, stdout: "{\"x\":1}".into() };
        std::fs::write(dir.join(COMMANDS_DIR).join(command_key("smartctl", &["--json", "-a", "/dev/sda"])), serde_json::to_vec(&out).unwrap()).unwrap();
        let h = Host::fixture(&dir);
        assert_eq!(h.read("/proc/cpuinfo").unwrap(), "processor\t: 0\n");
        assert_eq!(h.attr("/proc/cpuinfo").as_deref(), Some("processor\t: 0"));
        assert_eq!(h.attr("/sys/missing"), None);
        assert_eq!(h.list("/proc"), vec!["cpuinfo"]);
        assert_eq!(h.run("smartctl", &["--json", "-a", "/dev/sda"]), out);
        assert_eq!(h.run("smartctl", &["--json", "-a", "/dev/sdb"]).status, -1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_keys_are_flat_file_names() {
        assert_eq!(command_key("smartctl", &["--json", "-a", "/dev/nvme0"]), "smartctl__--json__-a__+dev+nvme0.json");
    }

    #[test]
    fn live_runner_reports_missing_programs_as_failures() {
        assert_eq!(Host::live().run("/nonexistent/keel-test-program", &[]).status, -1);
    }
}
