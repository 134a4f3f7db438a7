//! `linux`: namespaces, seccomp, masked and read-only paths, device rules,
//! and the fields with no meaning in a VM. The resource limits are in
//! `resources.rs`.
//!
//! Namespaces: the guest gives every container its own mount, PID, IPC, UTS
//! and cgroup namespaces and the VM's network, whatever the spec lists. A
//! `network` path is the pod's network namespace on the host (its interfaces
//! go into the VM). A CRI container's `ipc`, `uts` and `network` paths name its
//! sandbox's namespaces: its pod is the sandbox's VM, so they are accepted
//! (the UTS name is the pod's; IPC is not shared between the containers of a
//! pod, see `docs/containerd.md`). Other paths, user and time namespaces are
//! refused.

use std::path::PathBuf;

use oci_spec::runtime::{Linux, LinuxNamespaceType};

use super::{resources, HostNetwork, OciError, OciOptions, PodRole};
use crate::config::{ResourcesConfig, Seccomp, SeccompProfile};

/// What `linux` becomes.
#[derive(Debug)]
pub(super) struct LinuxParts {
    pub resources: ResourcesConfig,
    pub netns: Option<PathBuf>,
    pub seccomp: Seccomp,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

/// Maps `linux` (absent: the same as empty).
pub(super) fn map(
    linux: Option<&Linux>,
    role: &PodRole,
    opts: &OciOptions,
) -> Result<LinuxParts, OciError> {
    let default = Linux::default();
    let l = linux.unwrap_or(&default);
    unsupported_fields(l)?;
    let resources = match l.resources() {
        Some(r) => resources::map(r, "linux.resources")?,
        None => ResourcesConfig::default(),
    };
    let netns = namespaces(l, role, opts)?;
    let seccomp = match l.seccomp() {
        None => opts.seccomp_when_absent.clone(),
        Some(s) => seccomp(s)?,
    };
    let paths = |field: &str, list: &Option<Vec<String>>, defaults: &[&str]| match list {
        Some(list) => check_paths(field, list),
        None if opts.default_paths_when_absent => {
            Ok(defaults.iter().map(|p| (*p).to_owned()).collect())
        }
        None => Ok(Vec::new()),
    };
    Ok(LinuxParts {
        resources,
        netns,
        seccomp,
        masked_paths: paths(
            "linux.maskedPaths",
            l.masked_paths(),
            &vc_proto::DEFAULT_MASKED_PATHS,
        )?,
        readonly_paths: paths(
            "linux.readonlyPaths",
            l.readonly_paths(),
            &vc_proto::DEFAULT_READONLY_PATHS,
        )?,
    })
}

/// Fields vc has no way to honour when they are set.
fn unsupported_fields(l: &Linux) -> Result<(), OciError> {
    let nonempty = |o: Option<usize>| o.is_some_and(|n| n > 0);
    let checks: [(&str, bool, &str); 10] = [
        (
            "linux.uidMappings",
            nonempty(l.uid_mappings().as_ref().map(Vec::len)),
            "user namespaces are not supported",
        ),
        (
            "linux.gidMappings",
            nonempty(l.gid_mappings().as_ref().map(Vec::len)),
            "user namespaces are not supported",
        ),
        (
            "linux.devices",
            nonempty(l.devices().as_ref().map(Vec::len)),
            "host devices cannot be passed into the VM",
        ),
        (
            "linux.sysctl",
            nonempty(l.sysctl().as_ref().map(|m| m.len())),
            "the agent does not set sysctls",
        ),
        (
            "linux.netDevices",
            nonempty(l.net_devices().as_ref().map(|m| m.len())),
            "host network devices cannot be moved into the VM",
        ),
        (
            "linux.intelRdt",
            l.intel_rdt().is_some(),
            "the guest has no resctrl",
        ),
        (
            "linux.memoryPolicy",
            l.memory_policy().is_some(),
            "the guest has one NUMA node",
        ),
        (
            "linux.personality",
            l.personality().is_some(),
            "the agent does not set it",
        ),
        (
            "linux.timeOffsets",
            nonempty(l.time_offsets().as_ref().map(|m| m.len())),
            "time namespaces are not supported",
        ),
        (
            "linux.rootfsPropagation",
            l.rootfs_propagation()
                .as_deref()
                .is_some_and(|p| !matches!(p, "" | "private" | "rprivate")),
            "the container's mounts are private; mount propagation is not supported",
        ),
    ];
    match checks.iter().find(|(_, set, _)| *set) {
        Some((field, _, why)) => Err(OciError::unsupported(*field, *why)),
        None => Ok(()),
    }
}

/// `linux.namespaces`: the pod's network namespace, if the spec names one.
fn namespaces(l: &Linux, role: &PodRole, opts: &OciOptions) -> Result<Option<PathBuf>, OciError> {
    let mut netns = None;
    let mut network = false;
    for (i, ns) in l.namespaces().iter().flatten().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        let path = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty());
        let typ = ns.typ();
        let refuse = |why: &str| {
            Err(OciError::unsupported(
                field.clone(),
                format!("{typ:?}: {why}"),
            ))
        };
        match (typ, path) {
            (LinuxNamespaceType::User, _) => return refuse("user namespaces are not supported"),
            (LinuxNamespaceType::Time, _) => return refuse("time namespaces are not supported"),
            (LinuxNamespaceType::Network, p) => {
                network = true;
                netns = p.cloned();
            }
            (LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts, Some(p)) => {
                if !matches!(role, PodRole::Container { .. }) {
                    return refuse(&format!(
                        "joining {} is possible only for a CRI container (its sandbox's)",
                        p.display()
                    ));
                }
            }
            (_, Some(p)) => {
                return refuse(&format!(
                    "the guest gives every container its own; it cannot join {}",
                    p.display()
                ))
            }
            (_, None) => {}
        }
    }
    if !network && opts.host_network == HostNetwork::Refuse {
        return Err(OciError::unsupported(
            "linux.namespaces",
            "no network namespace (the host's network) cannot be shared with a VM",
        ));
    }
    // A CRI container joins its sandbox's namespace by `/proc/<pid>/ns/net`:
    // the pod exists, its network is the sandbox's.
    if matches!(role, PodRole::Container { .. }) {
        netns = None;
    }
    Ok(netns)
}

/// `linux.seccomp`: vc's profile type is the OCI `LinuxSeccomp` form, so the
/// JSON carries over; what vc refuses (a listener, `SCMP_ACT_NOTIFY`, other
/// ABIs' flags) is named by [`SeccompProfile::validate`].
fn seccomp(s: &oci_spec::runtime::LinuxSeccomp) -> Result<Seccomp, OciError> {
    let value =
        serde_json::to_value(s).map_err(|e| OciError::invalid("linux.seccomp", e.to_string()))?;
    let profile: SeccompProfile = serde_json::from_value(value)
        .map_err(|e| OciError::unsupported("linux.seccomp", e.to_string()))?;
    profile.validate().map_err(|e| {
        OciError::unsupported(format!("linux.seccomp.{}", e.field), e.reason.clone())
    })?;
    Ok(Seccomp::Profile(profile))
}

/// Masked or read-only paths, checked as vc checks them.
fn check_paths(field: &str, list: &[String]) -> Result<Vec<String>, OciError> {
    if list.len() > crate::config::MAX_GUEST_PATHS {
        return Err(OciError::unsupported(
            field,
            format!(
                "{} paths, at most {}",
                list.len(),
                crate::config::MAX_GUEST_PATHS
            ),
        ));
    }
    for (i, p) in list.iter().enumerate() {
        let normal = p.len() <= crate::config::MAX_GUEST_PATH_LEN
            && p.strip_prefix('/').is_some_and(|rest| {
                !rest.is_empty()
                    && !p.contains('\0')
                    && rest
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != "..")
            });
        if !normal {
            return Err(OciError::invalid(
                format!("{field}[{i}]"),
                format!("{p:?} is not a normalized absolute path below /"),
            ));
        }
    }
    Ok(list.to_vec())
}
