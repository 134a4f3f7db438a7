//! Persistent taps, made with `TUNSETIFF` + `TUNSETPERSIST` on `/dev/net/tun`
//! from the thread inside the pod's namespace (a tap belongs to the namespace
//! of the process that opens the clone device). QEMU later opens the tap by
//! name (`-netdev tap,ifname=...`) and sets its own per-queue flags; deleting
//! the link (rtnetlink) removes it.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use super::NetworkError;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// Frames carry a `virtio_net_hdr` (QEMU's virtio-net offloads).
const IFF_VNET_HDR: libc::c_int = 0x4000;

/// Creates the persistent tap `name` in the calling thread's namespace.
pub(super) fn create(name: &str) -> Result<(), NetworkError> {
    let fail = |source| NetworkError::Tap {
        name: name.to_owned(),
        source,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(fail(std::io::Error::from_raw_os_error(libc::EINVAL)));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(fail)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call;
    // the descriptor is open.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut ifr) } < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument, no memory.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    // Closing the descriptor leaves the persistent device behind.
    Ok(())
}
