//! Recording inventory fixtures inside the Keel image under QEMU (the `record-fixture` program).
//!
//! The devel image (`scripts/image.sh --profile devel`) has systemd's debug shell on the serial
//! console. The recorder boots it in a chosen machine shape, types `keeld host record` on that
//! shell, and has the guest print the recording as a gzip'd tar in base64 between marker lines
//! with its SHA-256; the host decodes it, checks the digest and unpacks it into the fixture
//! directory (tests/fixtures/<name>). No network is involved: only the serial console.

use crate::machine::{Bus, Disk, Machine, Spec};
use base64::Engine;
use std::time::{Duration, Instant};

/// A machine shape to record: its name (the fixture's directory) and what it is for.
pub struct Shape {
    pub name: &'static str,
    pub about: &'static str,
}

pub const SHAPES: &[Shape] = &[
    Shape { name: "qemu-nvme8", about: "8 NVMe drives (1 to 128 GiB, serials KEELNVME01..08) and the virtio boot disk, one virtio NIC" },
    Shape { name: "qemu-nics5", about: "4 virtio-net NICs and an e1000e NIC (MACs 52:54:00:4b:52:11..15), the virtio boot disk only" },
];

/// The QEMU machine of a shape. No bootstrap administrator credential: the recorded SMBIOS
/// tables must hold no password. QEMU's own system identity, with a fixed serial and UUID.
pub fn spec(name: &str) -> Option<Spec> {
    let mut s = Spec {
        name: name.into(),
        memory_mb: 2048,
        cpus: 2,
        boot_disk_gb: 12,
        boot_serial: "KEELBOOT0".into(),
        disks: vec![],
        nics: vec![],
        other_nics: vec![],
        smbios_system: None,
        bootstrap_admin: None,
    };
    match name {
        "qemu-nvme8" => {
            s.disks = (1..=8u64).map(|i| Disk { bus: Bus::Nvme, size_mb: 1024 << (i - 1), serial: format!("KEELNVME{i:02}") }).collect();
            s.nics = vec!["52:54:00:4b:52:01".into()];
            s.smbios_system = Some("serial=KEEL-REC-NVME8,uuid=4b45454c-0000-4000-8000-000000000008".into());
        }
        "qemu-nics5" => {
            s.nics = (1..=4).map(|i| format!("52:54:00:4b:52:1{i}")).collect();
            s.other_nics = vec![("e1000e".into(), "52:54:00:4b:52:15".into())];
            s.smbios_system = Some("serial=KEEL-REC-NICS5,uuid=4b45454c-0000-4000-8000-000000000005".into());
        }
        _ => return None,
    }
    Some(s)
}

pub const BEGIN: &str = "KEEL-REC-BEGIN";
pub const END: &str = "KEEL-REC-END";
pub const SHA: &str = "KEEL-REC-SHA256=";

/// Splits a marker so that the shell's echo of the typed command never contains it: the
/// command types `KEEL-REC-""BEGIN`, only its output reads `KEEL-REC-BEGIN`.
fn typed(marker: &str) -> String {
    let (a, b) = marker.split_at(marker.len() - 3);
    format!("{a}\"\"{b}")
}

/// The recording the guest printed after `from` (a byte offset into the console text): the
/// base64 lines between the last BEGIN and the END after it, checked against the SHA-256 the
/// guest printed. Lines that are not base64 (console noise) are dropped; the digest catches
/// noise inside a line.
pub fn extract(console: &str, from: usize) -> Result<Vec<u8>, String> {
    let text = console.get(from..).unwrap_or("");
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r').trim()).collect();
    let sha = lines.iter().rev().find_map(|l| l.strip_prefix(SHA)).ok_or("the guest printed no SHA-256")?.to_ascii_lowercase();
    let begin = lines.iter().rposition(|l| *l == BEGIN).ok_or("no begin marker")?;
    let end = lines[begin..].iter().position(|l| *l == END).ok_or("no end marker")? + begin;
    let b64: String = lines[begin + 1..end]
        .iter()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='))
        .copied()
        .collect();
    let data = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|e| format!("base64: {e}"))?;
    let got = hex(&openssl::sha::sha256(&data));
    if got != sha {
        return Err(format!("SHA-256 mismatch: the guest sent {sha}, {} bytes arrived with {got}", data.len()));
    }
    Ok(data)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A root shell on the guest's serial console (the devel image's debug shell).
pub struct Console<'a> {
    pub m: &'a mut Machine,
    step: u32,
}

impl<'a> Console<'a> {
    /// Waits until the debug shell runs commands typed on the console.
    pub fn attach(m: &'a mut Machine, timeout: Duration) -> Result<Console<'a>, String> {
        let t = Instant::now();
        let ready = "KEEL-SHELL-READY";
        loop {
            let from = m.serial_text().len();
            m.serial_write(&format!("\necho {}\n", typed(ready)))?;
            let wait = Instant::now();
            while wait.elapsed() < Duration::from_secs(10) {
                if m.serial_text().get(from..).is_some_and(|s| s.lines().any(|l| l.trim_end_matches('\r').trim() == ready)) {
                    return Ok(Console { m, step: 0 });
                }
                if !m.running() {
                    return Err(format!("QEMU exited: {}", m.qemu_stderr()));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            if t.elapsed() > timeout {
                return Err(format!("no shell answered on the serial console within {timeout:?} (is this the devel image?)"));
            }
        }
    }

    /// Runs one command line; returns its exit status and the console text from the typed line
    /// to the end marker.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        self.step += 1;
        let done = format!("KEEL-DONE-{}", self.step);
        let from = self.m.serial_text().len();
        self.m.serial_write(&format!("{cmd}; echo {} $?\n", typed(&done)))?;
        let t = Instant::now();
        loop {
            let text = self.m.serial_text();
            let out = text.get(from..).unwrap_or("");
            if let Some(rc) = out.lines().find_map(|l| l.trim_end_matches('\r').trim().strip_prefix(&format!("{done} "))) {
                let rc = rc.trim().parse().unwrap_or(-1);
                return Ok((rc, out.to_string()));
            }
            if !self.m.running() {
                return Err(format!("QEMU exited during {cmd:?}: {}", self.m.qemu_stderr()));
            }
            if t.elapsed() > timeout {
                return Err(format!("{cmd:?} did not finish within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Records the guest with `keeld host record` and returns the recording as a .tar.gz.
    pub fn record(&mut self) -> Result<Vec<u8>, String> {
        // Nothing else may write to the console while the recording is printed: the kernel's
        // messages and systemd's status lines are turned off.
        self.run("dmesg -n 1; kill -s RTMIN+21 1", Duration::from_secs(30))?;
        // Every NIC configured (DHCP on each), so the recording has the addresses and routes.
        let (rc, _) = self.run("/usr/lib/systemd/systemd-networkd-wait-online --timeout=180 >/dev/null 2>&1", Duration::from_secs(240))?;
        if rc != 0 {
            eprintln!("record: systemd-networkd-wait-online exited {rc}; recording anyway");
        }
        let (rc, out) = self.run("rm -rf /run/rec /run/rec.tgz; keeld host record /run/rec >/run/rec.log 2>&1", Duration::from_secs(600))?;
        if rc != 0 {
            let (_, log) = self.run("cat /run/rec.log", Duration::from_secs(30))?;
            return Err(format!("keeld host record exited {rc}: {out}\n{log}"));
        }
        // Reproducible archive: sorted, no owners, no times.
        let (rc, out) = self.run("tar -C /run/rec --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - . | gzip -9n >/run/rec.tgz", Duration::from_secs(300))?;
        if rc != 0 {
            return Err(format!("tar exited {rc}: {out}"));
        }
        let mut last = String::new();
        for attempt in 1..=3 {
            let from = self.m.serial_text().len();
            let cmd = format!(
                "echo {sha}$(sha256sum </run/rec.tgz | cut -c1-64); echo {b}; base64 -w 76 /run/rec.tgz; echo {e}",
                sha = typed(SHA.trim_end_matches('=')) + "=",
                b = typed(BEGIN),
                e = typed(END)
            );
            self.run(&cmd, Duration::from_secs(1800))?;
            match extract(&self.m.serial_text(), from) {
                Ok(data) => return Ok(data),
                Err(e) => {
                    eprintln!("record: attempt {attempt}: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(data: &[u8], noise: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let mut s = format!("# echo {}\r\n{SHA}{}\r\n{BEGIN}\r\n", typed(BEGIN), hex(&openssl::sha::sha256(data)));
        for (i, chunk) in b64.as_bytes().chunks(76).enumerate() {
            if i == 1 {
                s.push_str(noise);
            }
            s.push_str(std::str::from_utf8(chunk).unwrap());
            s.push_str("\r\n");
        }
        s + END + "\r\nKEEL-DONE-3 0\r\n"
    }

    #[test]
    fn the_typed_command_never_contains_the_marker() {
        assert_eq!(typed(BEGIN), "KEEL-REC-BE\"\"GIN");
        assert!(!typed(BEGIN).contains(BEGIN) && !typed("KEEL-DONE-12").contains("KEEL-DONE-12"));
    }

    #[test]
    fn a_recording_survives_console_noise_on_its_own_lines_and_is_checked() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let s = printed(&data, "[  OK  ] Started something.\r\n");
        assert_eq!(extract(&s, 0).unwrap(), data);
        // Only what came after `from` counts.
        assert!(extract(&s, s.len() - 5).is_err());
        // Noise inside a line changes the bytes: the digest refuses them.
        let bad = printed(&data, "AAAA");
        assert!(extract(&bad, 0).unwrap_err().contains("SHA-256 mismatch"));
    }

    #[test]
    fn shapes_have_many_nvme_drives_or_several_nics_and_no_credential() {
        let n = spec("qemu-nvme8").unwrap();
        assert_eq!(n.disks.iter().filter(|d| d.bus == Bus::Nvme).count(), 8);
        let serials: std::collections::BTreeSet<_> = n.disks.iter().map(|d| d.serial.clone()).collect();
        assert_eq!(serials.len(), 8);
        let c = spec("qemu-nics5").unwrap();
        assert_eq!(c.nics.len() + c.other_nics.len(), 5);
        for s in SHAPES {
            assert!(spec(s.name).unwrap().bootstrap_admin.is_none());
        }
        assert!(spec("nope").is_none());
    }
}
