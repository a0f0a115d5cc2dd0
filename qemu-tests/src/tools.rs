//! Programs of the image's tools tree (trixie: QEMU 10, swtpm, qemu-img, OVMF, SeaBIOS), run on
//! the build machine by bind-mounting the tree's /usr over / usr in a private mount namespace of
//! the child (what `mkosi sandbox` does). Without a tools tree the host's programs are used.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub root: Option<PathBuf>,
}

impl Tools {
    pub fn new(root: Option<PathBuf>) -> Tools {
        Tools { root: root.filter(|r| r.join("usr/bin").is_dir()) }
    }

    /// `program` from the tools tree's /usr/bin (or the host's PATH).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(root) = &self.root {
            cmd = Command::new(Path::new("/usr/bin").join(program));
            let usr = CString::new(root.join("usr").as_os_str().as_bytes()).expect("tools path");
            let target = CString::new("/usr").unwrap();
            let slash = CString::new("/").unwrap();
            unsafe {
                cmd.pre_exec(move || {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::mount(std::ptr::null(), slash.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::mount(usr.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    pub fn describe(&self) -> String {
        match &self.root {
            Some(r) => format!("tools tree {}", r.display()),
            None => "host programs".into(),
        }
    }
}
