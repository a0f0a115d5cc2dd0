//! One virtual Keel machine: its disks, firmware variables and TPM state in a work directory, and
//! the QEMU and swtpm processes that run it.
//!
//! The boot disk is a qcow2 overlay on the built raw image (the image itself is never written),
//! grown so that first-boot systemd-repart has room for swap and root. OVMF runs its Secure Boot
//! build with SMM and a copy of the variable store that has our keys enrolled; the TPM is swtpm
//! behind QEMU's `tpm-crb`. NICs use QEMU user networking with `restrict=on` (the guest reaches
//! nothing outside) and keeld's port 443 forwarded from 127.0.0.1. The serial console (the
//! kernel's and systemd's console) is QEMU's stdio: it is read into `serial.log` and the test log,
//! and can be written to.

use crate::accel::Accel;
use crate::image::ImageEnv;
use crate::redfish::Client;
use crate::tools::Tools;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Nvme,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub bus: Bus,
    pub size_mb: u64,
    pub serial: String,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Virtual size of the boot disk overlay (the image plus room for swap and root).
    pub boot_disk_gb: u64,
    pub boot_serial: String,
    /// Disks besides the boot disk.
    pub disks: Vec<Disk>,
    /// One NIC per MAC address; the first carries the forwarded HTTPS port.
    pub nics: Vec<String>,
    /// More NICs after `nics`, of other QEMU models: (device, MAC), e.g. ("e1000e", "52:54:...").
    pub other_nics: Vec<(String, String)>,
    /// QEMU's `-smbios type=1,...` fields (system identity); `None` keeps QEMU's own
    /// (manufacturer QEMU, product "Standard PC (Q35 + ICH9, 2009)").
    pub smbios_system: Option<String>,
    /// `user:password` passed as the systemd credential keel.bootstrap-admin (SMBIOS type 11).
    pub bootstrap_admin: Option<(String, String)>,
}

impl Spec {
    /// The machine the scenarios use: boot disk on virtio, two more virtio disks, two NVMe
    /// drives, two NICs.
    pub fn standard(name: &str, admin: (&str, &str)) -> Spec {
        let d = |bus, size_mb, serial: &str| Disk { bus, size_mb, serial: serial.into() };
        Spec {
            name: name.into(),
            memory_mb: 2048,
            cpus: 2,
            boot_disk_gb: 12,
            boot_serial: "KEELBOOT0".into(),
            disks: vec![
                d(Bus::Virtio, 1024, "KEELVIRTIO1"),
                d(Bus::Virtio, 2048, "KEELVIRTIO2"),
                d(Bus::Nvme, 1024, "KEELNVME1"),
                d(Bus::Nvme, 3072, "KEELNVME2"),
            ],
            nics: vec!["52:54:00:4b:45:01".into(), "52:54:00:4b:45:02".into()],
            other_nics: vec![],
            smbios_system: Some(format!("manufacturer=Keel,product=qemu-tests,serial={name}")),
            bootstrap_admin: Some((admin.0.into(), admin.1.into())),
        }
    }
}

/// The guest-side address of the harness's file server.
pub const GUEST_HTTP: &str = "10.0.2.100";

/// One HTTP/1.1 GET per connection, on stdin/stdout (QEMU's guestfwd `cmd:`): serves the files
/// linked into `files/` next to this script, logs the request line to `requests.log`.
const SERVE_SH: &str = r#"#!/bin/sh
here=$(dirname "$0")
cr=$(printf '\r')
IFS=' ' read -r method path _
while IFS= read -r h; do
    case "$h" in ""|"$cr") break ;; esac
done
echo "$method $path" >>"$here/requests.log"
name=${path#/}
f="$here/files/$name"
case "$name" in
    ""|*[!A-Za-z0-9._-]*) f="" ;;
esac
if [ "$method" = GET ] && [ -n "$f" ] && [ -f "$f" ]; then
    printf 'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$(stat -L -c %s "$f")"
    exec cat "$f"
fi
printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
"#;

pub struct Machine {
    pub spec: Spec,
    pub dir: PathBuf,
    pub accel: Accel,
    pub tools: Tools,
    pub https: SocketAddr,
    env: ImageEnv,
    run: Option<Running>,
    serial: Arc<Mutex<Vec<u8>>>,
}

struct Running {
    qemu: Child,
    swtpm: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The child dies with the harness (SIGKILL when the thread that started it ends), so a failed
/// or interrupted test leaves no QEMU behind.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Machine {
    /// Lays out the machine's files in `dir` (emptied first): boot overlay, extra disks, the
    /// firmware variable store and the TPM state directory.
    pub fn create(env: &ImageEnv, spec: Spec, dir: &Path, accel: Accel, tools: &Tools) -> Result<Machine, String> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("tpm")).map_err(|e| format!("{}: {e}", dir.display()))?;
        run(tools
            .command("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&env.image)
            .arg(dir.join("boot.qcow2"))
            .arg(format!("{}G", spec.boot_disk_gb)))?;
        for (i, d) in spec.disks.iter().enumerate() {
            run(tools.command("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(dir.join(format!("disk{i}.qcow2"))).arg(format!("{}M", d.size_mb)))?;
        }
        fs::copy(&env.ovmf_vars, dir.join("vars.fd")).map_err(|e| format!("{}: {e}", env.ovmf_vars.display()))?;
        fs::create_dir_all(dir.join("http/files")).map_err(|e| e.to_string())?;
        fs::write(dir.join("http/serve.sh"), SERVE_SH).map_err(|e| e.to_string())?;
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Ok(Machine { spec, dir: dir.to_path_buf(), accel, tools: tools.clone(), https, env: env.clone(), run: None, serial: Arc::new(Mutex::new(Vec::new())) })
    }

    pub fn serial_log_path(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    fn qemu_args(&self, tpm_sock: &Path) -> Vec<String> {
        let s = &self.spec;
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
        push(&["-name", &format!("keel-{}", s.name)]);
        push(&["-machine", &format!("q35,smm=on,accel={}", self.accel.name()), "-cpu", self.accel.cpu()]);
        push(&["-m", &s.memory_mb.to_string(), "-smp", &s.cpus.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none"]);
        // QMP, for keys the firmware reads from the PS/2 keyboard (send_key).
        push(&["-qmp", &format!("unix:{},server=on,wait=off", self.dir.join("qmp.sock").display())]);
        // OVMF: Secure Boot build (needs SMM), our vars with PK/KEK/db enrolled.
        push(&["-global", "driver=cfi.pflash01,property=secure,value=on", "-global", "ICH9-LPC.disable_s3=1"]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", self.env.ovmf_code.display())]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", self.dir.join("vars.fd").display())]);
        // Serial console on stdio.
        push(&["-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0"]);
        // TPM 2.0 (CRB interface) from swtpm.
        push(&["-chardev", &format!("socket,id=chrtpm,path={}", tpm_sock.display()), "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0"]);
        push(&["-device", "virtio-rng-pci"]);
        // Disks.
        push(&["-drive", &format!("if=none,id=boot,format=qcow2,cache=unsafe,discard=unmap,file={}", self.dir.join("boot.qcow2").display())]);
        push(&["-device", &format!("virtio-blk-pci,drive=boot,serial={},bootindex=0", s.boot_serial)]);
        for (i, d) in s.disks.iter().enumerate() {
            push(&["-drive", &format!("if=none,id=d{i},format=qcow2,cache=unsafe,file={}", self.dir.join(format!("disk{i}.qcow2")).display())]);
            match d.bus {
                Bus::Virtio => push(&["-device", &format!("virtio-blk-pci,drive=d{i},serial={}", d.serial)]),
                Bus::Nvme => push(&["-device", &format!("nvme,drive=d{i},serial={}", d.serial)]),
            }
        }
        // NICs: user networking, nothing reachable from the guest; keeld's 443 from loopback. Each
        // NIC gets its own subnet (10.0.2.0/24, 10.0.3.0/24, ...): with the same subnet twice the
        // guest would answer the forwarded connection through whichever default route it prefers.
        let nics = s.nics.iter().map(|m| ("virtio-net-pci", m.as_str())).chain(s.other_nics.iter().map(|(d, m)| (d.as_str(), m.as_str())));
        for (i, (model, mac)) in nics.enumerate() {
            // The first NIC also reaches the harness's file server at http://10.0.2.100/ (QEMU
            // runs http/serve.sh for each connection; restrict=on keeps explicit forwards).
            let fwd = if i == 0 {
                format!(",hostfwd=tcp:127.0.0.1:{}-:443,guestfwd=tcp:{GUEST_HTTP}:80-cmd:/bin/sh {}", self.https.port(), self.dir.join("http/serve.sh").display())
            } else {
                String::new()
            };
            push(&["-netdev", &format!("user,id=n{i},net=10.0.{}.0/24,restrict=on{fwd}", 2 + i), "-device", &format!("{model},netdev=n{i},mac={mac},romfile=")]);
        }
        if let Some(t1) = &s.smbios_system {
            push(&["-smbios", &format!("type=1,{t1}")]);
        }
        if let Some((u, p)) = &s.bootstrap_admin {
            use base64::Engine;
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            push(&["-smbios", &format!("type=11,value=io.systemd.credential.binary:keel.bootstrap-admin={v}")]);
        }
        a
    }

    /// Starts swtpm and QEMU. The serial console is read into serial.log from here on.
    pub fn power_on(&mut self) -> Result<(), String> {
        if self.run.is_some() {
            return Err("already running".into());
        }
        let sock = self.dir.join("tpm.sock");
        let _ = fs::remove_file(&sock);
        let mut swtpm = self.tools.command("swtpm");
        swtpm
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.dir.join("tpm").display()))
            .args(["--ctrl"])
            .arg(format!("type=unixio,path={}", sock.display()))
            .args(["--terminate", "--log"])
            .arg(format!("file={},level=1", self.dir.join("swtpm.log").display()))
            .stdin(Stdio::null());
        die_with_parent(&mut swtpm);
        let mut swtpm = swtpm.spawn().map_err(|e| format!("swtpm: {e} (install the swtpm package)"))?;
        let t = Instant::now();
        while !sock.exists() {
            if let Ok(Some(st)) = swtpm.try_wait() {
                return Err(format!("swtpm exited with {st}: {}", fs::read_to_string(self.dir.join("swtpm.log")).unwrap_or_default()));
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = swtpm.kill();
                return Err("swtpm did not create its socket in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let args = self.qemu_args(&sock);
        fs::write(self.dir.join("qemu.cmdline"), format!("# {}\nqemu-system-x86_64 {}\n", self.tools.describe(), args.join(" "))).ok();
        let qerr = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("qemu.stderr")).map_err(|e| e.to_string())?;
        let mut qemu = self.tools.command("qemu-system-x86_64");
        qemu.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(qerr);
        die_with_parent(&mut qemu);
        let mut qemu = match qemu.spawn() {
            Ok(q) => q,
            Err(e) => {
                let _ = swtpm.kill();
                return Err(format!("qemu-system-x86_64 ({}): {e}", self.tools.describe()));
            }
        };
        let started = Instant::now();
        let mut out = qemu.stdout.take().unwrap();
        let stdin = qemu.stdin.take();
        let buf = self.serial.clone();
        let mut file = fs::OpenOptions::new().create(true).append(true).open(self.serial_log_path()).map_err(|e| e.to_string())?;
        let tag = format!("[{} serial +", self.spec.name);
        let echo = std::env::var("KEEL_QEMU_ECHO").map(|v| v != "0").unwrap_or(true);
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let _ = file.write_all(&chunk[..n]);
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                if echo {
                    for &b in &chunk[..n] {
                        if b == b'\n' {
                            let text = strip_ansi(&String::from_utf8_lossy(&line));
                            eprintln!("{tag}{:6.1}s] {}", started.elapsed().as_secs_f64(), text.trim_end_matches('\r'));
                            line.clear();
                        } else {
                            line.push(b);
                        }
                    }
                }
            }
        });
        self.run = Some(Running { qemu, swtpm, stdin, started, reader: Some(reader) });
        Ok(())
    }

    /// Time since QEMU started.
    pub fn uptime(&self) -> Option<Duration> {
        self.run.as_ref().map(|r| r.started.elapsed())
    }

    pub fn running(&mut self) -> bool {
        match self.run.as_mut() {
            Some(r) => matches!(r.qemu.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the serial console printed since the machine was created (all boots).
    pub fn serial_text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.serial.lock().unwrap()))
    }

    /// Types text on the serial console (e.g. a passphrase at a prompt).
    pub fn serial_write(&mut self, text: &str) -> Result<(), String> {
        let r = self.run.as_mut().ok_or("not running")?;
        let w = r.stdin.as_mut().ok_or("no console input")?;
        w.write_all(text.as_bytes()).and_then(|_| w.flush()).map_err(|e| e.to_string())
    }

    /// Presses keys together on the machine's PS/2 keyboard (QMP `send-key`; QEMU key codes such
    /// as `f12`, `esc`): for firmware prompts, which read every console, not only the serial one.
    pub fn send_key(&self, keys: &[&str]) -> Result<(), String> {
        use std::io::BufRead;
        let path = self.dir.join("qmp.sock");
        let err = |e: std::io::Error| format!("QMP at {}: {e}", path.display());
        let mut sock = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
        sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(err)?;
        let mut reader = std::io::BufReader::new(sock.try_clone().map_err(err)?);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(err)?;
        let keys: Vec<serde_json::Value> = keys.iter().map(|k| serde_json::json!({ "type": "qcode", "data": k })).collect();
        for cmd in [serde_json::json!({ "execute": "qmp_capabilities" }), serde_json::json!({ "execute": "send-key", "arguments": { "keys": keys } })] {
            writeln!(sock, "{cmd}").map_err(err)?;
            loop {
                line.clear();
                if reader.read_line(&mut line).map_err(err)? == 0 {
                    return Err(format!("QMP closed the connection after {cmd}"));
                }
                let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("QMP answered {line:?}: {e}"))?;
                if let Some(e) = v.get("error") {
                    return Err(format!("QMP {cmd}: {e}"));
                }
                if v.get("return").is_some() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Waits until the serial console shows `needle` (in this boot or an earlier one).
    pub fn wait_serial(&mut self, needle: &str, timeout: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            if self.serial_text().contains(needle) {
                return Ok(t.elapsed());
            }
            if !self.running() {
                return Err(format!("QEMU exited before the console showed {needle:?}: {}", self.qemu_stderr()));
            }
            if t.elapsed() > timeout {
                return Err(format!("the console did not show {needle:?} within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Offers `file` to the guest as `http://10.0.2.100/<name>` (a symbolic link, nothing copied).
    pub fn serve_file(&self, name: &str, file: &Path) -> Result<String, String> {
        let link = self.dir.join("http/files").join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(file, &link).map_err(|e| format!("{}: {e}", link.display()))?;
        Ok(format!("http://{GUEST_HTTP}/{name}"))
    }

    /// The request lines the file server answered (`GET /name`), oldest first.
    pub fn served_requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("http/requests.log")).unwrap_or_default().lines().map(String::from).collect()
    }

    /// After the guest was asked to reboot: waits for keeld to stop answering, then for it to
    /// answer again; returns how long the reboot took from the call.
    pub fn wait_reboot(&mut self, timeout: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        let mut c = self.client();
        c.timeout = Duration::from_secs(5);
        while c.get("/redfish/v1").is_ok_and(|r| r.status == 200) {
            if t.elapsed() > Duration::from_secs(300) {
                return Err("keeld still answers 5 minutes after the reset".into());
            }
            if !self.running() {
                return Err(format!("QEMU exited: {}", self.qemu_stderr()));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.wait_redfish(timeout.saturating_sub(t.elapsed()))?;
        Ok(t.elapsed())
    }

    pub fn client(&self) -> Client {
        Client::new(self.https)
    }

    /// Polls keeld's service root until it answers 200; returns the time since QEMU started.
    pub fn wait_redfish(&mut self, timeout: Duration) -> Result<Duration, String> {
        let mut c = self.client();
        c.timeout = Duration::from_secs(5);
        let t = Instant::now();
        loop {
            let last = match c.get("/redfish/v1") {
                Ok(r) if r.status == 200 => return Ok(self.uptime().unwrap_or_default()),
                Ok(r) => format!("HTTP {}", r.status),
                Err(e) => e,
            };
            if !self.running() {
                return Err(format!("QEMU exited while waiting for keeld: {}", self.qemu_stderr()));
            }
            if t.elapsed() > timeout {
                return Err(format!("keeld did not answer on {} within {timeout:?} (last: {last})", self.https));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    pub fn qemu_stderr(&self) -> String {
        fs::read_to_string(self.dir.join("qemu.stderr")).unwrap_or_default()
    }

    /// Pulls the plug: QEMU and swtpm are killed at once (the disks keep whatever was written).
    pub fn power_cut(&mut self) {
        if let Some(mut r) = self.run.take() {
            let _ = r.qemu.kill();
            let _ = r.qemu.wait();
            let _ = r.swtpm.kill();
            let _ = r.swtpm.wait();
            drop(r.stdin.take());
            if let Some(h) = r.reader.take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.power_cut();
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                while let Some(&n) = it.peek() {
                    it.next();
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(strip_ansi("[\u{1b}[0;32m  OK  \u{1b}[0m] Finished x"), "[  OK  ] Finished x");
    }

    #[test]
    fn qemu_command_line_has_every_device_and_hides_nothing_outside() {
        let env = ImageEnv::for_test();
        let spec = Spec::standard("t", ("admin", "Pass-word-1"));
        let m = Machine { spec: spec.clone(), dir: "/tmp/x".into(), accel: Accel::Tcg, tools: Tools::default(), https: "127.0.0.1:4443".parse().unwrap(), env, run: None, serial: Default::default() };
        let a = m.qemu_args(Path::new("/tmp/x/tpm.sock")).join(" ");
        assert!(a.contains("q35,smm=on,accel=tcg") && a.contains("-cpu max"));
        assert!(a.contains("driver=cfi.pflash01,property=secure,value=on"));
        assert!(a.contains("tpm-crb,tpmdev=tpm0"));
        assert_eq!(a.matches("virtio-blk-pci").count(), 3);
        assert_eq!(a.matches("-device nvme,").count(), 2);
        for d in &spec.disks {
            assert!(a.contains(&format!("serial={}", d.serial)));
        }
        // every NIC is restricted; only the first forwards, and only from loopback
        assert_eq!(a.matches("user,id=n").count(), 2);
        assert_eq!(a.matches("restrict=on").count(), 2);
        assert_eq!(a.matches("hostfwd=").count(), 1);
        assert!(a.contains("hostfwd=tcp:127.0.0.1:4443-:443"));
        assert!(a.contains("id=n0,net=10.0.2.0/24,") && a.contains("id=n1,net=10.0.3.0/24,"));
        // the password travels base64-encoded in the SMBIOS credential, never in clear
        assert!(a.contains("io.systemd.credential.binary:keel.bootstrap-admin=YWRtaW46UGFzcy13b3JkLTE="));
        assert!(!a.contains("Pass-word-1"));
    }

    #[test]
    fn other_nic_models_and_qemus_own_identity() {
        let mut spec = Spec::standard("t", ("admin", "Pass-word-1"));
        spec.other_nics = vec![("e1000e".into(), "52:54:00:4b:52:15".into())];
        spec.smbios_system = None;
        spec.bootstrap_admin = None;
        let m = Machine { spec, dir: "/tmp/x".into(), accel: Accel::Tcg, tools: Tools::default(), https: "127.0.0.1:4443".parse().unwrap(), env: ImageEnv::for_test(), run: None, serial: Default::default() };
        let a = m.qemu_args(Path::new("/tmp/x/tpm.sock")).join(" ");
        assert_eq!(a.matches("-device virtio-net-pci,").count(), 2);
        assert!(a.contains("-netdev user,id=n2,net=10.0.4.0/24,restrict=on -device e1000e,netdev=n2,mac=52:54:00:4b:52:15,romfile="));
        assert!(!a.contains("-smbios"), "no type 1 override, no credential: {a}");
    }
}
