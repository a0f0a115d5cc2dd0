//! Where the slot engine finds the disk, the ESP and the boot loader's variables.
//!
//! - simulated: `DIR/disk.img` (a GPT image file), `DIR/esp/` (standing in for the mounted ESP)
//!   and `DIR/loader.json` (standing in for systemd-boot's EFI variables).
//! - real: the disk holding the booted `/usr` partition (found through sysfs), the ESP mounted at
//!   `/efi` or `/boot`, and the loader variables in efivarfs.
//!
//! Every path of the real platform is taken under a host root (`/` in production, a fixture
//! directory in the tests), as the inventory does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// systemd-boot's vendor GUID for its variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
pub const ENTRY_SELECTED: &str = "LoaderEntrySelected";
pub const ENTRY_DEFAULT: &str = "LoaderEntryDefault";
pub const ENTRY_ONESHOT: &str = "LoaderEntryOneShot";
pub const BOOT_COUNT_PATH: &str = "LoaderBootCountPath";

/// The loader variables: efivarfs on a real machine, a JSON file in simulation.
#[derive(Clone, Debug)]
pub enum Loader {
    EfiVars(PathBuf),
    File(PathBuf),
}

/// The simulated loader state (`loader.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SimLoader {
    /// The EFI variables systemd-boot reads and sets, by name.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Which usr partition the simulated kernel mounted (`A`/`B`); on a real machine this is
    /// what sysfs says backs `/usr`.
    #[serde(default)]
    pub booted_slot: Option<String>,
}

impl SimLoader {
    pub fn load(path: &Path) -> io::Result<SimLoader> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SimLoader::default()),
            Err(e) => Err(e),
        }
    }
    pub fn save(&self, path: &Path) -> io::Result<()> {
        crate::store::write_atomic(path, &serde_json::to_vec_pretty(self)?, 0o644)
    }
}

/// Decode an efivarfs file: 4 bytes of attributes, then a NUL-terminated UTF-16LE string.
pub fn decode_efivar_string(raw: &[u8]) -> Option<String> {
    if raw.len() < 4 {
        return None;
    }
    let units: Vec<u16> = raw[4..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
    String::from_utf16(&units).ok()
}

/// Encode a string variable as efivarfs wants it written: attributes NON_VOLATILE |
/// BOOTSERVICE_ACCESS | RUNTIME_ACCESS, then UTF-16LE with a terminating NUL.
pub fn encode_efivar_string(value: &str) -> Vec<u8> {
    let mut out = 7u32.to_le_bytes().to_vec();
    for u in value.encode_utf16().chain(std::iter::once(0)) {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

/// efivarfs marks variable files immutable; clear that flag before changing or removing one.
fn clear_immutable(path: &Path) {
    use std::os::unix::io::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    if let Ok(f) = fs::File::open(path) {
        let mut flags: libc::c_long = 0;
        // SAFETY: both ioctls read/write one long through the pointer.
        unsafe {
            if libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) == 0 && flags & FS_IMMUTABLE_FL != 0 {
                flags &= !FS_IMMUTABLE_FL;
                libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS as _, &flags);
            }
        }
    }
}

impl Loader {
    fn efivar(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}-{LOADER_GUID}"))
    }

    pub fn get(&self, name: &str) -> io::Result<Option<String>> {
        match self {
            Loader::EfiVars(dir) => match fs::read(Self::efivar(dir, name)) {
                Ok(raw) => Ok(decode_efivar_string(&raw).filter(|s| !s.is_empty())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Loader::File(p) => Ok(SimLoader::load(p)?.vars.get(name).cloned()),
        }
    }

    /// Set (`Some`) or delete (`None`) a variable.
    pub fn set(&self, name: &str, value: Option<&str>) -> io::Result<()> {
        match self {
            Loader::EfiVars(dir) => {
                let path = Self::efivar(dir, name);
                clear_immutable(&path);
                match value {
                    // efivarfs needs the whole variable in one write().
                    Some(v) => {
                        use std::io::Write;
                        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
                        f.write_all(&encode_efivar_string(v))
                    }
                    None => match fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    },
                }
            }
            Loader::File(p) => {
                let mut s = SimLoader::load(p)?;
                match value {
                    Some(v) => s.vars.insert(name.to_string(), v.to_string()),
                    None => s.vars.remove(name),
                };
                s.save(p)
            }
        }
    }
}

/// Is the machine under `root` a Keel image? `ID=keel` in os-release.
pub fn is_keel_image(root: &Path) -> bool {
    ["etc/os-release", "usr/lib/os-release"].iter().any(|p| {
        fs::read_to_string(root.join(p))
            .map(|s| s.lines().any(|l| matches!(l.trim().strip_prefix("ID="), Some(v) if v.trim_matches(|c| c == '"' || c == '\'') == "keel")))
            .unwrap_or(false)
    })
}

/// `major:minor` of the filesystem mounted at `mount_point`, from a mountinfo text.
pub fn mount_device(mountinfo: &str, mount_point: &str) -> Option<(u32, u32)> {
    // Fields: id parent major:minor root mount-point ...; the last mount at a point wins.
    mountinfo.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 || f[4] != mount_point {
            return None;
        }
        let (ma, mi) = f[2].split_once(':')?;
        Some((ma.parse().ok()?, mi.parse().ok()?))
    }).last()
}

/// A partition found through sysfs: its kernel name, number and the disk holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysPartition {
    pub name: String,
    pub number: u32,
    pub disk: String,
}

/// Resolve a block device (by `major:minor`) to the partitions backing it: the device itself if
/// it is a partition, else (a device-mapper device such as dm-verity) each of its `slaves/`.
pub fn backing_partitions(root: &Path, dev: (u32, u32)) -> io::Result<Vec<SysPartition>> {
    let node = fs::canonicalize(root.join(format!("sys/dev/block/{}:{}", dev.0, dev.1)))?;
    let part = |node: &Path| -> Option<SysPartition> {
        let number = fs::read_to_string(node.join("partition")).ok()?.trim().parse().ok()?;
        let name = node.file_name()?.to_str()?.to_string();
        let disk = node.parent()?.file_name()?.to_str()?.to_string();
        Some(SysPartition { name, number, disk })
    };
    if let Some(p) = part(&node) {
        return Ok(vec![p]);
    }
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(node.join("slaves")) {
        let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for s in names {
            if let Some(p) = fs::canonicalize(&s).ok().and_then(|c| part(&c)) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} is neither a partition nor backed by one", node.display())));
    }
    Ok(out)
}

/// The ESP's `EFI/Linux` directory under `root`: `/efi` if it holds one, else `/boot`.
pub fn find_esp(root: &Path) -> Option<PathBuf> {
    ["efi", "boot", "boot/efi"].iter().map(|d| root.join(d)).find(|d| d.join("EFI/Linux").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efivar_strings_roundtrip() {
        let raw = encode_efivar_string("keel_1.0.efi");
        assert_eq!(&raw[..4], &[7, 0, 0, 0]);
        assert_eq!(raw.len(), 4 + 2 * 13);
        assert_eq!(decode_efivar_string(&raw).as_deref(), Some("keel_1.0.efi"));
        assert_eq!(decode_efivar_string(&[7, 0, 0]), None);
    }

    #[test]
    fn os_release_detects_keel() {
        let d = std::env::temp_dir().join(format!("keel-osr-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::write(d.join("etc/os-release"), "NAME=Debian\nID=debian\n").unwrap();
        assert!(!is_keel_image(&d));
        fs::write(d.join("etc/os-release"), "NAME=\"Keel\"\nID=\"keel\"\nVERSION_ID=1.0\n").unwrap();
        assert!(is_keel_image(&d));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn mountinfo_gives_the_usr_device() {
        let mi = "22 1 0:21 / / rw,relatime - overlay overlay rw\n\
                  25 22 254:0 / /usr ro,relatime shared:2 - erofs /dev/mapper/usr ro\n\
                  26 22 259:1 / /efi rw - vfat /dev/vda1 rw\n";
        assert_eq!(mount_device(mi, "/usr"), Some((254, 0)));
        assert_eq!(mount_device(mi, "/efi"), Some((259, 1)));
        assert_eq!(mount_device(mi, "/var"), None);
    }
}
