//! `keeld host record DIR`: capture what keeld reads of this machine into a fixture directory, so
//! `keeld serve --host-root DIR` (and the tests) replay it through the same parsers.

use super::{command_key, CmdOutput, Host, COMMANDS_DIR};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

/// A machine path to capture, how many directory levels below it to copy, and how many levels
/// of symbolic links to follow (1: the path itself; 2: also its entries, as for `/sys/class/*`).
pub struct Capture {
    pub path: &'static str,
    pub depth: usize,
    pub follow: usize,
}

/// Everything the inventory reads. Directories named here are followed even when they are
/// symbolic links (as `/sys/class/*/*` entries are); links found deeper are kept as links.
pub const FILES: &[Capture] = &[
    Capture { path: "/etc/os-release", depth: 0, follow: 1 },
    Capture { path: "/usr/lib/os-release", depth: 0, follow: 1 },
    Capture { path: "/etc/hostname", depth: 0, follow: 1 },
    Capture { path: "/proc/cpuinfo", depth: 0, follow: 1 },
    Capture { path: "/proc/meminfo", depth: 0, follow: 1 },
    Capture { path: "/proc/sys/kernel/hostname", depth: 0, follow: 1 },
    Capture { path: "/proc/sys/kernel/osrelease", depth: 0, follow: 1 },
    Capture { path: "/sys/class/dmi/id", depth: 1, follow: 1 },
    Capture { path: "/sys/firmware/dmi/tables", depth: 1, follow: 1 },
    Capture { path: "/sys/devices/system/cpu", depth: 3, follow: 1 },
    Capture { path: "/sys/class/hwmon", depth: 2, follow: 2 },
    Capture { path: "/sys/class/power_supply", depth: 2, follow: 2 },
    Capture { path: "/sys/bus/pci/devices", depth: 2, follow: 2 },
    Capture { path: "/usr/share/misc/pci.ids", depth: 0, follow: 1 },
    Capture { path: "/usr/share/hwdata/pci.ids", depth: 0, follow: 1 },
    // Network (`*` is each entry of the directory; a NIC's `device` before the interface itself).
    Capture { path: "/sys/class/net/*/device", depth: 1, follow: 1 },
    Capture { path: "/sys/class/net/*", depth: 2, follow: 1 },
    Capture { path: "/proc/net/vlan/config", depth: 0, follow: 1 },
    Capture { path: "/proc/net/bonding", depth: 1, follow: 1 },
    Capture { path: "/etc/resolv.conf", depth: 0, follow: 1 },
    Capture { path: "/run/systemd/resolve/resolv.conf", depth: 0, follow: 1 },
    Capture { path: "/run/systemd/netif/leases", depth: 1, follow: 1 },
    // Secure Boot: the state variables and key databases only, not the other EFI variables.
    Capture { path: "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/AuditMode-8be4df61-93ca-11d2-aa0d-00e098032b8c", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/DeployedMode-8be4df61-93ca-11d2-aa0d-00e098032b8c", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/PK-8be4df61-93ca-11d2-aa0d-00e098032b8c", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/KEK-8be4df61-93ca-11d2-aa0d-00e098032b8c", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f", depth: 0, follow: 1 },
    Capture { path: "/sys/firmware/efi/efivars/dbx-d719b2cb-3d3a-4596-a3bc-dad00e67656f", depth: 0, follow: 1 },
];

/// Commands whose output the inventory parses.
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("incus", &["version"]),
    ("journalctl", &["-o", "json", "-r", "-n", "1000", "--no-pager"]),
    ("ip", &["-details", "-json", "addr", "show"]),
    ("ip", &["-json", "route", "show"]),
    ("ip", &["-json", "-6", "route", "show"]),
    ("networkctl", &["lldp", "--json=short"]),
];

/// Files larger than this are not inventory (and not recorded).
const MAX_FILE: u64 = 4 << 20;

fn copy_entry(src: &Path, dst: &Path, depth: usize, follow: usize) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() && follow == 0 {
        let target = fs::read_link(src)?;
        let _ = fs::remove_file(dst);
        return symlink(target, dst);
    }
    let meta = fs::metadata(src)?;
    if meta.is_dir() {
        fs::create_dir_all(dst)?;
        if depth == 0 {
            return Ok(());
        }
        for e in fs::read_dir(src)?.flatten() {
            let name = e.file_name();
            // Recording may meet files that vanish or refuse reading: skip them, keep going.
            let _ = copy_entry(&src.join(&name), &dst.join(&name), depth - 1, follow.saturating_sub(1));
        }
        Ok(())
    } else if meta.is_file() && meta.len() <= MAX_FILE {
        // sysfs files report a size of 4096 whatever they hold: read, do not trust the length.
        let data = fs::read(src)?;
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(dst, data)
    } else {
        Ok(())
    }
}

/// Record `host` (normally the live machine) into `dir`; returns how many files and commands.
pub fn record(host: &Host, dir: &Path) -> io::Result<(usize, usize)> {
    fs::create_dir_all(dir)?;
    let dynamic = crate::inventory::storage::captures(host);
    let listed = FILES.iter().map(|c| (c.path.to_string(), c.depth, c.follow));
    for (pattern, depth, follow) in listed.chain(dynamic.into_iter().map(|(p, d)| (p, d, 1))) {
        // `/a/*/b` names `/a/<each entry>/b`.
        let paths: Vec<String> = match pattern.split_once("/*") {
            Some((dir, rest)) => host.list(dir).iter().map(|e| format!("{dir}/{e}{rest}")).collect(),
            None => vec![pattern.clone()],
        };
        for path in paths {
            let src = host.path(&path);
            if fs::symlink_metadata(&src).is_err() {
                continue;
            }
            let dst = dir.join(path.trim_start_matches('/'));
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)?;
            }
            let _ = copy_entry(&src, &dst, depth, follow);
        }

    }
    let cmd_dir = dir.join(COMMANDS_DIR);
    fs::create_dir_all(&cmd_dir)?;
    let mut commands = 0;
    for (prog, args) in COMMANDS {
        let out: CmdOutput = host.run(prog, args);
        fs::write(cmd_dir.join(command_key(prog, args)), serde_json::to_vec_pretty(&out)?)?;
        commands += 1;
    }
    // Storage: smartctl for each drive; network: ethtool for each NIC; LUKS headers and how this
    // boot opened them.
    for (prog, args) in crate::inventory::storage::commands(host).into_iter().chain(crate::inventory::network::commands(host)).chain(crate::crypt::commands(host)) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fs::write(cmd_dir.join(command_key(&prog, &args)), serde_json::to_vec_pretty(&host.run(&prog, &args))?)?;
        commands += 1;
    }
    // The TPM, as keeld reads it (properties and PCRs; nothing secret, no key is made).
    if let Some(tcti) = crate::tpm::default_tcti(None, host.is_live()) {
        match crate::tpm::read(&tcti) {
            Ok(info) => fs::write(dir.join(crate::tpm::RECORDED_FILE), serde_json::to_vec(&info)?)?,
            Err(e) => log::warn!("TPM not recorded: {e}"),
        }
    }
    let files = walk_count(dir);
    Ok((files, commands))
}

fn walk_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_count(&e.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_a_machine_and_the_copy_reads_the_same() {
        // Record a synthetic "machine" (a fixture), then read both through Host.
        let src = std::env::temp_dir().join(format!("keel-rec-src-{}", uuid::Uuid::new_v4()));
        let dst = std::env::temp_dir().join(format!("keel-rec-dst-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(src.join("proc")).unwrap();
        fs::write(src.join("proc/cpuinfo"), "processor\t: 0\nmodel name\t: Test CPU\n").unwrap();
        fs::create_dir_all(src.join("sys/devices/system/cpu/cpu0/topology")).unwrap();
        fs::write(src.join("sys/devices/system/cpu/cpu0/topology/core_id"), "0\n").unwrap();
        symlink("../../devices/virtual", src.join("sys/devices/system/cpu/cpu0/subsystem")).unwrap();
        let (files, _) = record(&Host::fixture(&src), &dst).unwrap();
        assert!(files >= 3, "{files}");
        let copy = Host::fixture(&dst);
        assert_eq!(copy.read("/proc/cpuinfo").unwrap(), Host::fixture(&src).read("/proc/cpuinfo").unwrap());
        assert_eq!(copy.attr("/sys/devices/system/cpu/cpu0/topology/core_id").as_deref(), Some("0"));
        assert_eq!(copy.link("/sys/devices/system/cpu/cpu0/subsystem").unwrap(), Path::new("../../devices/virtual"));
        fs::remove_dir_all(&src).unwrap();
        fs::remove_dir_all(&dst).unwrap();
    }
}
