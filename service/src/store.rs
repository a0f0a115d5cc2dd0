//! Crash-safe persistence: every write is write-temp + fsync + rename + fsync(dir).

use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Write `data` to `path` atomically with the given mode: a reader (or a crash) sees either the
/// old file or the new one, never a mix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// A state directory holding JSON documents.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(StateDir { root: root.to_path_buf() })
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    /// Load a JSON document, `None` when it does not exist yet.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        match fs::read(self.path(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Save a JSON document atomically, readable by the owner only (it may hold hashes).
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(value)?;
        write_atomic(&self.path(name), &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn save_then_load_roundtrips_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("keel-store-{}", uuid::Uuid::new_v4()));
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(s.load::<Vec<u32>>("x.json").unwrap(), None);
        s.save("x.json", &vec![1u32, 2, 3]).unwrap();
        s.save("x.json", &vec![4u32]).unwrap();
        assert_eq!(s.load::<Vec<u32>>("x.json").unwrap(), Some(vec![4]));
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.join("x.json")).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }
}
