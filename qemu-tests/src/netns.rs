//! The harness runs in a network namespace of its own holding only loopback: QEMU's user
//! networking, the forwarded HTTPS port and the DMTF validators all live there, so nothing the
//! guest or the Protocol Validator sends (event deliveries, SSDP multicast, NTP) can leave
//! this machine.

use std::io;

/// Moves the calling thread (call it first, before any thread exists) into a new network
/// namespace and brings `lo` up. Needs CAP_SYS_ADMIN (root).
pub fn enter_private() -> io::Result<()> {
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let r = if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) != 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        r
    }
}

/// Interfaces of this thread's network namespace (/proc/thread-self/net/dev; /sys/class/net
/// would show the namespace sysfs was mounted in).
pub fn interfaces() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    let mut v: Vec<String> = text.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_string()).collect();
    v.sort();
    v
}
