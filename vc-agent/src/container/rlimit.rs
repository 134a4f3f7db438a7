//! Resource limits (`setrlimit`) of a process: names from the spec to the
//! kernel's resource numbers, checked before the fork.

use vc_proto::Rlimit;

use super::error::ContainerError;

/// One limit ready for `prlimit64` in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RlimitPlan {
    /// `RLIMIT_*`.
    pub resource: libc::c_uint,
    /// `rlim_cur`; `u64::MAX` is `RLIM_INFINITY`.
    pub soft: u64,
    /// `rlim_max`.
    pub hard: u64,
}

/// The resources by name, lower case without the `RLIMIT_` prefix.
const RESOURCES: [(&str, libc::c_uint); 16] = [
    ("as", libc::RLIMIT_AS as libc::c_uint),
    ("core", libc::RLIMIT_CORE as libc::c_uint),
    ("cpu", libc::RLIMIT_CPU as libc::c_uint),
    ("data", libc::RLIMIT_DATA as libc::c_uint),
    ("fsize", libc::RLIMIT_FSIZE as libc::c_uint),
    ("locks", libc::RLIMIT_LOCKS as libc::c_uint),
    ("memlock", libc::RLIMIT_MEMLOCK as libc::c_uint),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as libc::c_uint),
    ("nice", libc::RLIMIT_NICE as libc::c_uint),
    ("nofile", libc::RLIMIT_NOFILE as libc::c_uint),
    ("nproc", libc::RLIMIT_NPROC as libc::c_uint),
    ("rss", libc::RLIMIT_RSS as libc::c_uint),
    ("rtprio", libc::RLIMIT_RTPRIO as libc::c_uint),
    ("rttime", libc::RLIMIT_RTTIME as libc::c_uint),
    ("sigpending", libc::RLIMIT_SIGPENDING as libc::c_uint),
    ("stack", libc::RLIMIT_STACK as libc::c_uint),
];

/// The resource number of `name`: `nofile`, `NOFILE` and `RLIMIT_NOFILE` all
/// name `RLIMIT_NOFILE`.
pub(crate) fn resource_by_name(name: &str) -> Option<libc::c_uint> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    RESOURCES.iter().find(|(n, _)| *n == bare).map(|(_, r)| *r)
}

/// Checks and converts the spec's limits. A resource named twice keeps the last
/// value, as `setrlimit` called twice would.
pub(crate) fn plan_rlimits(rlimits: &[Rlimit]) -> Result<Vec<RlimitPlan>, ContainerError> {
    let mut out: Vec<RlimitPlan> = Vec::with_capacity(rlimits.len());
    for r in rlimits {
        let resource = resource_by_name(&r.resource)
            .ok_or_else(|| ContainerError::UnknownRlimit(r.resource.clone()))?;
        if r.soft > r.hard {
            return Err(ContainerError::RlimitSoftAboveHard(r.resource.clone()));
        }
        let plan = RlimitPlan {
            resource,
            soft: r.soft,
            hard: r.hard,
        };
        match out.iter_mut().find(|p| p.resource == resource) {
            Some(existing) => *existing = plan,
            None => out.push(plan),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(name: &str, soft: u64, hard: u64) -> Rlimit {
        Rlimit {
            resource: name.to_string(),
            soft,
            hard,
        }
    }

    #[test]
    fn names_with_and_without_prefix() {
        let nofile = libc::RLIMIT_NOFILE as libc::c_uint;
        assert_eq!(resource_by_name("nofile"), Some(nofile));
        assert_eq!(resource_by_name("NOFILE"), Some(nofile));
        assert_eq!(resource_by_name("RLIMIT_NOFILE"), Some(nofile));
        assert_eq!(
            resource_by_name("rlimit_nproc"),
            Some(libc::RLIMIT_NPROC as libc::c_uint)
        );
        assert_eq!(
            resource_by_name("as"),
            Some(libc::RLIMIT_AS as libc::c_uint)
        );
        assert_eq!(resource_by_name("nofiles"), None);
        assert_eq!(resource_by_name(""), None);
        assert_eq!(resource_by_name("rlimit_"), None);
    }

    #[test]
    fn every_table_entry_is_distinct() {
        for (i, (a, ra)) in RESOURCES.iter().enumerate() {
            for (b, rb) in &RESOURCES[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(ra, rb);
            }
        }
    }

    #[test]
    fn plans_checks_and_deduplicates() {
        let plan = plan_rlimits(&[
            rl("nofile", 1024, 4096),
            rl("core", 0, u64::MAX),
            rl("RLIMIT_NOFILE", 10, 20),
        ])
        .expect("valid");
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].soft, 10);
        assert_eq!(plan[0].hard, 20);
        assert_eq!(plan[1].hard, libc::RLIM_INFINITY);

        let err = plan_rlimits(&[rl("nofile", 5, 4)]).expect_err("soft above hard");
        assert!(matches!(err, ContainerError::RlimitSoftAboveHard(_)));
        let err = plan_rlimits(&[rl("files", 1, 1)]).expect_err("unknown");
        assert_eq!(err.to_string(), "unknown rlimit \"files\"");
    }
}
