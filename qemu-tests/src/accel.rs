//! Which accelerator QEMU gets: KVM when it can really run a guest, TCG otherwise.
//!
//! `/dev/kvm` existing is not enough: some hosts have a KVM (e.g. a paravirtualised one) that
//! refuses System Management Mode, which OVMF's Secure Boot build needs, or fails on ordinary
//! instructions. So the probe boots the same machine type with SMM on and a 512-byte boot sector
//! that runs a few x87 instructions and then asks QEMU to exit with a known code through the
//! `isa-debug-exit` device. It answers in well under a second either way.

use crate::tools::Tools;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `-machine`'s accel= value.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
    /// The `-cpu` model: the host's with KVM, everything TCG emulates otherwise.
    pub fn cpu(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

/// Written to the debug-exit port: QEMU exits with (value << 1) | 1.
const EXIT_VALUE: u8 = 0x31;
pub const PROBE_EXIT_CODE: i32 = ((EXIT_VALUE as i32) << 1) | 1;

/// A BIOS boot sector: fninit; fld1; fldpi; faddp; fstp dword [0x600]; out 0xf4, EXIT_VALUE; hlt.
pub fn boot_sector() -> [u8; 512] {
    let code: &[u8] = &[
        0xDB, 0xE3, // fninit
        0xD9, 0xE8, // fld1
        0xD9, 0xEB, // fldpi
        0xDE, 0xC1, // faddp st(1), st
        0xD9, 0x1E, 0x00, 0x06, // fstp dword [0x600]
        0xB0, EXIT_VALUE, // mov al, EXIT_VALUE
        0xE6, 0xF4, // out 0xf4, al
        0xF4, // hlt
        0xEB, 0xFD, // jmp back to hlt
    ];
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(code);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// Boots the probe sector under `accel` with SMM on; true when QEMU exits with the probe's code
/// within `limit`.
pub fn runs_guest(tools: &Tools, accel: Accel, dir: &Path, limit: Duration) -> Result<bool, String> {
    let disk = dir.join(format!("accel-probe-{}.img", accel.name()));
    // A whole MiB: SeaBIOS cannot read a disk that is only the boot sector long.
    std::fs::write(&disk, boot_sector())
        .and_then(|_| std::fs::OpenOptions::new().write(true).open(&disk)?.set_len(1 << 20))
        .map_err(|e| format!("{}: {e}", disk.display()))?;
    let mut child = tools
        .command("qemu-system-x86_64")
        .args(["-machine", &format!("q35,smm=on,accel={}", accel.name()), "-cpu", accel.cpu()])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "none", "-no-reboot", "-m", "64"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-drive", &format!("file={},format=raw,if=ide,snapshot=on", disk.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64 ({}): {e}", tools.describe()))?;
    let start = Instant::now();
    let result = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code() == Some(PROBE_EXIT_CODE),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let _ = std::fs::remove_file(&disk);
    Ok(result)
}

/// KVM if /dev/kvm opens and boots the probe in under a second, else TCG. `KEEL_QEMU_ACCEL=tcg`
/// or `=kvm` overrides the probe.
pub fn choose(tools: &Tools, dir: &Path) -> (Accel, String) {
    match std::env::var("KEEL_QEMU_ACCEL").as_deref() {
        Ok("tcg") => return (Accel::Tcg, "KEEL_QEMU_ACCEL=tcg".into()),
        Ok("kvm") => return (Accel::Kvm, "KEEL_QEMU_ACCEL=kvm".into()),
        _ => {}
    }
    let t = Instant::now();
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return (Accel::Tcg, format!("/dev/kvm: {e}"));
    }
    match runs_guest(tools, Accel::Kvm, dir, Duration::from_millis(900)) {
        Ok(true) => (Accel::Kvm, format!("KVM ran the probe guest in {} ms", t.elapsed().as_millis())),
        Ok(false) => (Accel::Tcg, format!("KVM could not run the probe guest (SMM, x87) within 0.9 s ({} ms)", t.elapsed().as_millis())),
        Err(e) => (Accel::Tcg, format!("KVM probe failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_is_bootable_and_exits_through_the_debug_port() {
        let s = boot_sector();
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        // the value written to the port is the one the exit code is derived from
        let out = s.windows(2).position(|w| w == [0xE6, 0xF4]).expect("out 0xf4, al");
        assert_eq!(&s[out - 2..out], &[0xB0, EXIT_VALUE]);
        assert_eq!(PROBE_EXIT_CODE, 99);
    }
}
