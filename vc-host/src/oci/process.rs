//! `process`: the main process of a container, and the process of an exec
//! (containerd sends a whole `process` object for each exec).
//!
//! vc gives a process one capability set (bounding, permitted and effective
//! alike, inheritable and ambient empty) and umask `022`; a spec asking for
//! anything else is refused. `apparmorProfile`, `selinuxLabel`,
//! `oomScoreAdj` and `consoleSize` are accepted without effect (see
//! `docs/containerd.md`).

use std::collections::BTreeSet;

use oci_spec::runtime::{Capabilities, Process};

use super::OciError;
use crate::config::{ContainerConfig, RlimitConfig, UserConfig};
use crate::runtime::ProcessConfig;

/// The umask the agent gives every process.
const AGENT_UMASK: u32 = 0o022;

/// The main process's settings, as [`ContainerConfig`] holds them.
#[derive(Debug)]
pub(super) struct MainProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: UserConfig,
    pub terminal: bool,
    pub rlimits: Vec<RlimitConfig>,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
}

/// Maps and checks every field of `process`.
pub(super) fn main_process(p: &Process) -> Result<MainProcess, OciError> {
    let args = p.args().clone().unwrap_or_default();
    if args.first().is_none_or(|a| a.is_empty()) {
        return Err(OciError::missing("process.args"));
    }
    if p.command_line().is_some() {
        return Err(OciError::unsupported(
            "process.commandLine",
            "it is Windows-only; use process.args",
        ));
    }
    let env = p.env().clone().unwrap_or_default();
    if let Some(i) = env.iter().position(|e| !e.contains('=')) {
        return Err(OciError::invalid(
            format!("process.env[{i}]"),
            format!("{:?} is not KEY=VALUE", env[i]),
        ));
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(OciError::invalid(
            "process.cwd",
            format!("{cwd:?} is not an absolute path"),
        ));
    }
    let u = p.user();
    if u.umask().is_some_and(|m| m != AGENT_UMASK) {
        return Err(OciError::unsupported(
            "process.user.umask",
            format!("the agent gives every process umask {AGENT_UMASK:o}"),
        ));
    }
    if u.username().is_some() {
        return Err(OciError::unsupported(
            "process.user.username",
            "it is Windows-only; use uid and gid",
        ));
    }
    let user = UserConfig {
        uid: u.uid(),
        gid: u.gid(),
        additional_gids: u.additional_gids().clone().unwrap_or_default(),
    };
    for (field, set) in [
        ("process.ioPriority", p.io_priority().is_some()),
        ("process.scheduler", p.scheduler().is_some()),
        ("process.execCPUAffinity", p.exec_cpu_affinity().is_some()),
    ] {
        if set {
            return Err(OciError::unsupported(
                field,
                "the agent does not set it; leave it out",
            ));
        }
    }
    Ok(MainProcess {
        args,
        env,
        cwd,
        user,
        terminal: p.terminal().unwrap_or(false),
        rlimits: rlimits(p)?,
        capabilities: capabilities(p)?,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
    })
}

/// `process.rlimits`: `RLIMIT_NOFILE` becomes `nofile`.
fn rlimits(p: &Process) -> Result<Vec<RlimitConfig>, OciError> {
    let mut out = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let resource = name
            .strip_prefix("RLIMIT_")
            .unwrap_or(&name)
            .to_ascii_lowercase();
        if r.soft() > r.hard() {
            return Err(OciError::invalid(
                format!("process.rlimits[{i}]"),
                format!("{name}: the soft limit is above the hard one"),
            ));
        }
        out.push(RlimitConfig {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    Ok(out)
}

/// `process.capabilities`: the one set vc keeps. No `capabilities` object
/// means no capability, as in runc.
fn capabilities(p: &Process) -> Result<Vec<String>, OciError> {
    let Some(c) = p.capabilities() else {
        return Ok(Vec::new());
    };
    let names = |set: &Option<Capabilities>| -> BTreeSet<String> {
        set.iter()
            .flatten()
            .map(|cap| format!("CAP_{cap}"))
            .collect()
    };
    let bounding = names(c.bounding());
    for (field, set) in [
        ("process.capabilities.inheritable", c.inheritable()),
        ("process.capabilities.ambient", c.ambient()),
    ] {
        if !names(set).is_empty() {
            return Err(OciError::unsupported(
                field,
                "the agent leaves the inheritable and ambient sets empty (as containerd does since CVE-2022-24769)",
            ));
        }
    }
    for (field, set) in [
        ("process.capabilities.effective", c.effective()),
        ("process.capabilities.permitted", c.permitted()),
    ] {
        if names(set) != bounding {
            return Err(OciError::unsupported(
                field,
                "the agent gives a process one set: effective and permitted equal to bounding",
            ));
        }
    }
    Ok(bounding.into_iter().collect())
}

/// An exec's process as [`ProcessConfig`]: args, env, cwd, user, terminal.
/// Its `capabilities`, `rlimits` and `noNewPrivileges` are checked like the
/// main process's, but an exec runs with its container's (the agent applies
/// those); [`exec_from_oci`] refuses a spec where they differ. `stdin` is
/// left false: the caller knows whether the exec has an input stream.
pub fn process_from_oci(p: &Process) -> Result<ProcessConfig, OciError> {
    main_process(p).map(exec_config)
}

fn exec_config(m: MainProcess) -> ProcessConfig {
    ProcessConfig {
        args: m.args,
        env: m.env,
        cwd: Some(m.cwd),
        user: Some(m.user),
        terminal: m.terminal,
        stdin: false,
        pipes: false,
    }
}

/// [`process_from_oci`], refusing a spec whose capabilities, rlimits or
/// `noNewPrivileges` differ from `container`'s (containerd's exec copies the
/// container's `process` and changes the arguments, so they match).
pub fn exec_from_oci(p: &Process, container: &ContainerConfig) -> Result<ProcessConfig, OciError> {
    let m = main_process(p)?;
    let same_caps = container.capabilities.as_ref().is_some_and(|c| {
        c.iter().cloned().collect::<BTreeSet<_>>()
            == m.capabilities.iter().cloned().collect::<BTreeSet<_>>()
    });
    let differs = [
        ("process.capabilities", !same_caps),
        ("process.rlimits", container.rlimits != m.rlimits),
        (
            "process.noNewPrivileges",
            container.no_new_privileges != m.no_new_privileges,
        ),
    ];
    if let Some((field, _)) = differs.iter().find(|(_, d)| *d) {
        return Err(OciError::unsupported(
            *field,
            "an exec runs with its container's; this one differs",
        ));
    }
    Ok(exec_config(m))
}
