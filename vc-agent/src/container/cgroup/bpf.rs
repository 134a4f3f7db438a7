//! The `bpf(2)` calls of the device allow-list: load the program of
//! `devices.rs` as `BPF_PROG_TYPE_CGROUP_DEVICE` and attach it to a cgroup with
//! `BPF_PROG_ATTACH` and `BPF_F_ALLOW_MULTI` (as runc does: a program attached
//! below it later still runs ours too). The cgroup holds the program from then
//! on, so the descriptor is closed after attaching; removing the cgroup frees
//! it. The kernel needs `CONFIG_CGROUP_BPF` (Debian's kernels have it).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::devices::{program, DeviceRule, Insn};
use crate::container::error::ContainerError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The verifier's log, read only after a failed load; its end is cut off when
/// it is longer.
const LOG_SIZE: usize = 16 * 1024;

const LICENSE: &CStr = c"Apache-2.0";
const NAME: [u8; 16] = *b"vc_devices\0\0\0\0\0\0";

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (up to
/// `expected_attach_type`; the kernel takes a shorter attr as zero-filled).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// How many times a load interrupted by a signal is tried (libbpf: 5).
const LOAD_ATTEMPTS: u32 = 5;

fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a properly laid out (repr(C)) prefix of `union
    // bpf_attr` for `cmd`, valid for `size_of::<T>()` bytes; every pointer it
    // holds points to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn load_with_log(code: &[u8], insn_cnt: u32, log: Option<&mut [u8]>) -> Result<OwnedFd, Errno> {
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: code.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: NAME,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    // The verifier gives up with EAGAIN when a signal is pending (the agent
    // gets a SIGCHLD for every process that ends); retry as libbpf does.
    let mut attempts = LOAD_ATTEMPTS;
    let fd = loop {
        match bpf(BPF_PROG_LOAD, &attr) {
            Err(Errno::EAGAIN) if attempts > 1 => attempts -= 1,
            other => break other?,
        }
    };
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads the program for `rules`. On failure the verifier's log goes to the
/// agent's log.
fn load(rules: &[DeviceRule]) -> Result<OwnedFd, Errno> {
    let insns: Vec<Insn> = program(rules);
    let code: Vec<u8> = insns.iter().flat_map(Insn::encode).collect();
    let count = u32::try_from(insns.len()).map_err(|_| Errno::E2BIG)?;
    match load_with_log(&code, count, None) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let mut log = vec![0u8; LOG_SIZE];
            // Again, for the verifier's words; its own error is the one
            // reported.
            let _ = load_with_log(&code, count, Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            tracing::warn!(error = %e, verifier = %String::from_utf8_lossy(&log[..end]), "the device allow-list program was refused");
            Err(e)
        }
    }
}

/// Loads the allow-list of `rules` and attaches it to the cgroup at `dir`.
pub(crate) fn attach_device_filter(dir: &Path, rules: &[DeviceRule]) -> Result<(), ContainerError> {
    let err = |action| {
        let path = dir.to_path_buf();
        move |source| ContainerError::DeviceFilter {
            action,
            path,
            source,
        }
    };
    let prog = load(rules).map_err(err("load"))?;
    let cgroup = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open"))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let cgroup = unsafe { OwnedFd::from_raw_fd(cgroup) };
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &attr).map_err(err("attach"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::size_of::<ProgAttachAttr>(), 20);
    }
}
