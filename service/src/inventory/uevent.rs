//! The live hot-plug monitor: the kernel's device events (netlink `NETLINK_KOBJECT_UEVENT`, the
//! stream udevd itself listens to). A drive, NIC, PCI device, sensor chip or power supply that
//! comes or goes makes the inventory be read again at once, and the resulting ResourceAdded /
//! ResourceRemoved events go out.
//!
//! Why the kernel stream and not libudev's (the `udev` crate's `MonitorBuilder`): libudev's
//! monitor hears only what udevd re-broadcasts, so it is silent wherever udevd does not run (an
//! initrd, containers, this project's CI machine); the inventory reads sysfs and commands itself,
//! so it needs nothing udevd adds. Events are namespace-scoped for network devices, as keeld sees them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Subsystems whose devices the inventory shows.
const SUBSYSTEMS: &[&str] = &["block", "net", "nvme", "pci", "hwmon", "power_supply", "scsi", "scsi_disk", "cpu", "memory"];

/// One kernel event: `ACTION@DEVPATH\0KEY=VALUE\0…`.
#[derive(Debug, PartialEq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: Option<String>,
}

pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut parts = buf.split(|b| *b == 0).filter(|p| !p.is_empty());
    let head = std::str::from_utf8(parts.next()?).ok()?;
    // udevd's re-broadcasts start with "libudev" and a binary header: not kernel events.
    let (action, devpath) = head.split_once('@')?;
    let mut ev = Uevent { action: action.to_string(), devpath: devpath.to_string(), subsystem: None };
    for p in parts {
        if let Some(v) = p.strip_prefix(b"SUBSYSTEM=") {
            ev.subsystem = std::str::from_utf8(v).ok().map(str::to_string);
        }
    }
    Some(ev)
}

/// Whether the event can change what the inventory shows.
pub fn relevant(ev: &Uevent) -> bool {
    matches!(ev.action.as_str(), "add" | "remove" | "move" | "change" | "online" | "offline")
        && ev.subsystem.as_deref().is_some_and(|s| SUBSYSTEMS.contains(&s))
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2)/bind(2) calls on a zeroed sockaddr_nl; the fd is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_KOBJECT_UEVENT);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = 1; // the kernel's multicast group
        if libc::bind(fd.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Wait for a datagram for at most `timeout`; `Ok(None)` on timeout.
fn recv(fd: &OwnedFd, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<Option<usize>> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: one valid pollfd; recv into a buffer of the given length.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    if n == 0 {
        return Ok(None);
    }
    let r = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENOBUFS: events were lost in a burst; treat it as "something changed".
        return if e.raw_os_error() == Some(libc::ENOBUFS) { Ok(Some(0)) } else { Err(e) };
    }
    Ok(Some(r as usize))
}

/// Start the monitor thread: after a relevant event, wait until the burst is over (quiet for
/// `settle`, at most 2 s), then call `changed` once.
pub fn spawn(settle: Duration, changed: impl Fn() + Send + 'static) -> io::Result<()> {
    let fd = socket()?;
    std::thread::Builder::new().name("uevent".into()).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match recv(&fd, &mut buf, None) {
                Ok(Some(n)) if n == 0 || parse(&buf[..n]).is_some_and(|e| relevant(&e)) => {}
                Ok(_) => continue,
                Err(e) => {
                    log::warn!("uevent monitor stopped: {e}; hot-plug is seen by the periodic re-read only");
                    return;
                }
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                match recv(&fd, &mut buf, Some(settle)) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            changed();
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_events_parse_and_filter() {
        let e = parse(b"add@/devices/virtual/net/br7\0ACTION=add\0DEVPATH=/devices/virtual/net/br7\0SUBSYSTEM=net\0INTERFACE=br7\0SEQNUM=4711\0").unwrap();
        assert_eq!((e.action.as_str(), e.devpath.as_str(), e.subsystem.as_deref()), ("add", "/devices/virtual/net/br7", Some("net")));
        assert!(relevant(&e));
        let q = parse(b"change@/devices/virtual/workqueue/writeback\0ACTION=change\0SUBSYSTEM=workqueue\0").unwrap();
        assert!(!relevant(&q));
        let b = parse(b"bind@/devices/pci0000:00/0000:00:1f.2\0ACTION=bind\0SUBSYSTEM=pci\0").unwrap();
        assert!(!relevant(&b), "bind follows add; the add already counted");
        assert!(parse(b"garbage-without-at\0").is_none());
        assert!(parse(b"").is_none());
    }

    #[test]
    fn the_kernel_stream_reports_a_new_network_device() {
        // Only root may make a network namespace; the test thread gets its own, so the bridge it
        // creates exists for nobody else.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        std::thread::spawn(|| {
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", io::Error::last_os_error());
            let fd = socket().unwrap();
            let st = std::process::Command::new("ip").args(["link", "add", "kt0", "type", "bridge"]).status().unwrap();
            assert!(st.success());
            let mut buf = vec![0u8; 16384];
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(n)) = recv(&fd, &mut buf, Some(Duration::from_millis(200))) {
                    if let Some(e) = parse(&buf[..n]).filter(|e| e.devpath.ends_with("/net/kt0")) {
                        assert!(relevant(&e), "{e:?}");
                        return;
                    }
                }
            }
            panic!("no uevent for the new bridge");
        })
        .join()
        .unwrap();
    }
}
