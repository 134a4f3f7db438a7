//! Which capabilities a container process keeps: the spec's list or the default
//! set, as one bit mask computed before the fork (names through the `caps` crate).
//!
//! The child then (see `child.rs`) drops every other capability from the
//! bounding set, keeps the mask as permitted and effective across `setuid`, and
//! leaves inheritable and ambient empty, as Docker and containerd do since
//! CVE-2022-24769: a non-root process gets no capabilities after `execve`, root
//! gets exactly the mask.

use std::str::FromStr;

use caps::Capability;

use super::error::ContainerError;

/// The default set: the one of Docker and of containerd's OCI defaults.
pub(crate) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The capabilities of a process, ready for the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapPlan {
    /// Bit `n` set: capability `n` is kept (bounding, permitted, effective).
    pub keep: u64,
    /// The highest capability number the running kernel knows.
    pub last_cap: u8,
}

/// Parses one name: `CAP_CHOWN`, `cap_chown` or `chown`.
pub(crate) fn parse_capability(name: &str) -> Result<Capability, ContainerError> {
    Capability::from_str(&caps::to_canonical(name.trim()))
        .map_err(|_| ContainerError::UnknownCapability(name.to_string()))
}

/// The mask of `list`, or of [`DEFAULT_CAPS`] for `None`.
pub(crate) fn keep_mask(list: Option<&[String]>) -> Result<u64, ContainerError> {
    match list {
        None => Ok(DEFAULT_CAPS.iter().fold(0, |m, c| m | c.bitmask())),
        Some(names) => names
            .iter()
            .try_fold(0u64, |m, n| Ok(m | parse_capability(n)?.bitmask())),
    }
}

/// The highest capability number of the running kernel, from
/// `/proc/sys/kernel/cap_last_cap`, or the highest the `caps` crate knows when
/// that file cannot be read.
pub(crate) fn kernel_last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|n| *n < 64)
        .unwrap_or_else(|| caps::all().iter().map(|c| c.index()).max().unwrap_or(40))
}

/// The plan for a process: capabilities the kernel does not know are left
/// out of the mask (`capset` would refuse them), as runc does.
pub(crate) fn plan_caps(list: Option<&[String]>, last_cap: u8) -> Result<CapPlan, ContainerError> {
    let known = if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    };
    Ok(CapPlan {
        keep: keep_mask(list)? & known,
        last_cap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_mask_is_the_docker_set() {
        let m = keep_mask(None).expect("default");
        assert_eq!(m.count_ones(), 14);
        // CAP_CHOWN = 0, CAP_KILL = 5, CAP_AUDIT_WRITE = 29.
        assert_ne!(m & (1 << 0), 0);
        assert_ne!(m & (1 << 5), 0);
        assert_ne!(m & (1 << 29), 0);
        // CAP_SYS_ADMIN = 21, CAP_NET_ADMIN = 12, CAP_SYS_MODULE = 16 are not kept.
        assert_eq!(m & (1 << 21), 0);
        assert_eq!(m & (1 << 12), 0);
        assert_eq!(m & (1 << 16), 0);
    }

    #[test]
    fn spec_list_accepts_the_usual_spellings() {
        let m = keep_mask(Some(&names(&["CAP_NET_ADMIN", "sys_admin", "cap_kill"])))
            .expect("valid names");
        assert_eq!(m, (1 << 12) | (1 << 21) | (1 << 5));
        assert_eq!(keep_mask(Some(&[])).expect("empty list"), 0);
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = keep_mask(Some(&names(&["CAP_CHOWN", "CAP_FLY"]))).expect_err("unknown");
        assert_eq!(err.to_string(), "unknown capability \"CAP_FLY\"");
    }

    #[test]
    fn caps_beyond_the_kernel_are_left_out() {
        // CAP_CHECKPOINT_RESTORE = 40, CAP_BPF = 39.
        let list = names(&["CAP_CHOWN", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]);
        let plan = plan_caps(Some(&list), 39).expect("valid");
        assert_eq!(plan.keep, 1 | (1 << 39));
        let plan = plan_caps(Some(&list), 40).expect("valid");
        assert_eq!(plan.keep, 1 | (1 << 39) | (1 << 40));
    }

    #[test]
    fn last_cap_of_this_kernel_is_plausible() {
        let last = kernel_last_cap();
        assert!((36..64).contains(&last), "cap_last_cap = {last}");
    }
}
