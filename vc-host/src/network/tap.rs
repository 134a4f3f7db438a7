//! Persistent taps, made with `TUNSETIFF` + `TUNSETPERSIST` on `/dev/net/tun`
//! from the thread inside the pod's namespace (a tap belongs to the namespace
//! of the process that opens the clone device). The launcher later opens a
//! queue of each tap the same way ([`open_queues`]) and hands it to QEMU
//! (`-netdev tap,fd=N`), which runs unprivileged and could neither open
//! `/dev/net/tun` nor attach to a tap; deleting the link (rtnetlink)
//! removes it.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};

use super::NetworkError;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// Frames carry a `virtio_net_hdr` (QEMU's virtio-net offloads).
const IFF_VNET_HDR: libc::c_int = 0x4000;

/// Opens `/dev/net/tun` and attaches it to the tap `name` (made when
/// missing) in the calling thread's namespace.
fn attach(name: &str) -> std::io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call;
    // the descriptor is open.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun)
}

/// Creates the persistent tap `name` in the calling thread's namespace.
pub(super) fn create(name: &str) -> Result<(), NetworkError> {
    let fail = |source| NetworkError::Tap {
        name: name.to_owned(),
        source,
    };
    let tun = attach(name).map_err(fail)?;
    // SAFETY: TUNSETPERSIST takes an integer argument, no memory.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    // Closing the descriptor leaves the persistent device behind.
    Ok(())
}

/// Opens one queue of each existing tap in `names`, inside `netns` (the
/// current namespace when `None`), for handing to QEMU. A failure names the
/// tap.
pub fn open_queues(
    netns: Option<&File>,
    names: &[String],
) -> Result<Vec<OwnedFd>, (String, std::io::Error)> {
    let open_all = |names: &[String]| {
        names
            .iter()
            .map(|n| attach(n).map(OwnedFd::from).map_err(|e| (n.clone(), e)))
            .collect::<Result<Vec<_>, _>>()
    };
    let Some(netns) = netns else {
        return open_all(names);
    };
    let netns = netns.try_clone().map_err(|e| (String::new(), e))?;
    let names = names.to_vec();
    // Only this thread enters the namespace; it ends afterwards.
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| (String::new(), std::io::Error::from(e)))?;
                open_all(&names)
            })
            .join()
            .unwrap_or_else(|_| {
                Err((
                    String::new(),
                    std::io::Error::other("the tap thread panicked"),
                ))
            })
    })
}
