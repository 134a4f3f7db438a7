//! `linux.resources` to [`ResourcesConfig`], for a container's spec and for
//! Update: memory limit, CPU quota and period, shares to weight, pids. The
//! device rules must stay within the agent's fixed allow-list (runc's
//! defaults). Limits vc cannot set (cpusets, block I/O, huge pages, RDMA,
//! `unified`) are refused when set.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::OciError;
use crate::config::{ConfigError, ResourcesConfig};

/// The character devices the agent lets every container use (major, minor;
/// `None` is every minor): `null`, `zero`, `full`, `random`, `urandom`,
/// `tty`, `console`, `ptmx`, the `pts`. The agent's list
/// (`vc-agent/src/container/cgroup/devices.rs`) is the same.
const ALLOWED_DEVICES: [(i64, Option<i64>); 9] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
];

/// Maps resources given in an Update (containerd sends the container's whole
/// `linux.resources`, device rules included).
pub fn resources_from_oci(r: &LinuxResources) -> Result<ResourcesConfig, OciError> {
    map(r, "linux.resources")
}

/// cgroup v1 `cpu.shares` to cgroup v2 `cpu.weight`, as runc and the kernel's
/// documentation convert: shares 2..=262144 onto weight 1..=10000, 1024 to 39.
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + (s - 2) * 9999 / 262_142
}

/// A limit: positive is a value, -1 (any negative) no limit, 0 unset.
fn limit(v: Option<i64>) -> Option<u64> {
    match v {
        None | Some(0) => None,
        Some(n) if n < 0 => Some(u64::MAX),
        Some(n) => Some(n as u64),
    }
}

pub(super) fn map(r: &LinuxResources, prefix: &str) -> Result<ResourcesConfig, OciError> {
    let field = |name: &str| format!("{prefix}.{name}");
    for (i, d) in r.devices().iter().flatten().enumerate() {
        check_device(d, i, prefix)?;
    }
    let mut out = ResourcesConfig::default();
    if let Some(m) = r.memory() {
        out.memory_limit_bytes = limit(m.limit());
        #[allow(deprecated)]
        let kernel = m.kernel();
        let refused = [
            ("memory.reservation", m.reservation().is_some_and(|v| v > 0)),
            ("memory.kernel", kernel.is_some_and(|v| v != 0)),
            ("memory.kernelTCP", m.kernel_tcp().is_some_and(|v| v != 0)),
            ("memory.swappiness", m.swappiness().is_some()),
            (
                "memory.disableOOMKiller",
                m.disable_oom_killer() == Some(true),
            ),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(OciError::unsupported(
                field(name),
                "the agent sets memory.max only",
            ));
        }
        if let (Some(swap), Some(lim)) = (m.swap(), m.limit()) {
            if swap > 0 && lim > 0 && swap < lim {
                return Err(OciError::invalid(
                    field("memory.swap"),
                    format!("{swap} is below the memory limit {lim}"),
                ));
            }
        }
    }
    if let Some(c) = r.cpu() {
        out.cpu_weight = c.shares().filter(|s| *s > 0).map(shares_to_weight);
        out.cpu_quota_us = limit(c.quota());
        // A period alone sets nothing (cgroup v2 `cpu.max` "max PERIOD").
        out.cpu_period_us = c.period().filter(|p| *p > 0 && out.cpu_quota_us.is_some());
        let refused = [
            ("cpu.cpus", c.cpus().as_ref().is_some_and(|s| !s.is_empty())),
            ("cpu.mems", c.mems().as_ref().is_some_and(|s| !s.is_empty())),
            (
                "cpu.realtimeRuntime",
                c.realtime_runtime().is_some_and(|v| v != 0),
            ),
            (
                "cpu.realtimePeriod",
                c.realtime_period().is_some_and(|v| v != 0),
            ),
            ("cpu.idle", c.idle().is_some_and(|v| v != 0)),
            ("cpu.burst", c.burst().is_some_and(|v| v != 0)),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(OciError::unsupported(
                field(name),
                "the agent sets cpu.max and cpu.weight only",
            ));
        }
    }
    if let Some(p) = r.pids() {
        out.pids_limit = limit(Some(p.limit()));
    }
    if let Some(b) = r.block_io() {
        let set = b.weight().is_some()
            || b.leaf_weight().is_some()
            || [
                b.weight_device().as_ref().map(Vec::len),
                b.throttle_read_bps_device().as_ref().map(Vec::len),
                b.throttle_write_bps_device().as_ref().map(Vec::len),
                b.throttle_read_iops_device().as_ref().map(Vec::len),
                b.throttle_write_iops_device().as_ref().map(Vec::len),
            ]
            .iter()
            .any(|n| n.is_some_and(|n| n > 0));
        if set {
            return Err(OciError::unsupported(
                field("blockIO"),
                "block I/O limits are not supported",
            ));
        }
    }
    if let Some(i) = r
        .hugepage_limits()
        .iter()
        .flatten()
        .position(|h| h.limit() != 0)
    {
        return Err(OciError::unsupported(
            field(&format!("hugepageLimits[{i}]")),
            "the guest has no huge pages; only a limit of 0 is accepted",
        ));
    }
    if let Some(n) = r.network() {
        if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(OciError::unsupported(
                field("network"),
                "net_cls and net_prio are not supported",
            ));
        }
    }
    for (name, set) in [
        ("rdma", r.rdma().as_ref().is_some_and(|m| !m.is_empty())),
        (
            "unified",
            r.unified().as_ref().is_some_and(|m| !m.is_empty()),
        ),
    ] {
        if set {
            return Err(OciError::unsupported(
                field(name),
                "the agent does not set it",
            ));
        }
    }
    out.validate().map_err(|e| match e {
        ConfigError::Invalid { field: f, reason } => OciError::invalid(oci_name(prefix, f), reason),
        other => OciError::invalid(prefix.to_owned(), other.to_string()),
    })?;
    Ok(out)
}

/// The OCI name of a [`ResourcesConfig`] field.
fn oci_name(prefix: &str, vc_field: &str) -> String {
    let name = match vc_field {
        "resources.memory_limit_bytes" => "memory.limit",
        "resources.cpu_quota_us" => "cpu.quota",
        "resources.cpu_period_us" => "cpu.period",
        "resources.cpu_weight" => "cpu.shares",
        "resources.pids_limit" => "pids.limit",
        other => other,
    };
    format!("{prefix}.{name}")
}

/// A device rule: a deny-all before any allow, a deny of a device the agent
/// does not allow anyway, or an allow within [`ALLOWED_DEVICES`].
fn check_device(d: &LinuxDeviceCgroup, i: usize, prefix: &str) -> Result<(), OciError> {
    let field = format!("{prefix}.devices[{i}]");
    let any = |v: Option<i64>| v.is_none_or(|v| v < 0);
    let all_types = matches!(d.typ(), None | Some(LinuxDeviceType::A));
    let default = |major: Option<i64>, minor: Option<i64>| {
        ALLOWED_DEVICES
            .iter()
            .any(|(ma, mi)| major == Some(*ma) && (mi.is_none() || minor == *mi))
    };
    let char_dev = matches!(d.typ(), Some(LinuxDeviceType::C));
    if !d.allow() {
        let deny_all = all_types && any(d.major()) && any(d.minor());
        let touches_default = (all_types || char_dev)
            && ALLOWED_DEVICES.iter().any(|(ma, mi)| {
                d.major().is_none_or(|m| m < 0 || m == *ma)
                    && (d.minor().is_none_or(|m| m < 0)
                        || mi.is_none_or(|mi| d.minor() == Some(mi)))
            });
        if deny_all || !touches_default {
            return Ok(());
        }
        return Err(OciError::unsupported(
            field,
            "it denies a device the agent allows every container",
        ));
    }
    let access_ok = d
        .access()
        .as_deref()
        .unwrap_or("rwm")
        .chars()
        .all(|c| "rwm".contains(c));
    if char_dev && access_ok && default(d.major(), d.minor()) {
        return Ok(());
    }
    Err(OciError::unsupported(
        field,
        "the agent allows null, zero, full, random, urandom, tty, console, ptmx and pts only",
    ))
}
