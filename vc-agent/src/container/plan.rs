//! [`LaunchPlan`]: everything a forked child needs, built before the fork.
//!
//! Strings are `CString`s, `argv` and `envp` are ready `NULL`-terminated pointer
//! arrays, the candidates for `args[0]` are listed from `PATH`, and the
//! descriptors the child writes to or joins (`cgroup.procs`, the main process's
//! namespaces) are already open (close-on-exec). What the child does with it is
//! in `child/`.

use std::ffi::CString;
use std::fmt;
use std::os::fd::OwnedFd;

use nix::sched::CloneFlags;
use vc_proto::ProcessSpec;

use super::caps::{kernel_last_cap, plan_caps, CapPlan};
use super::error::ContainerError;
use super::mounts::MountOp;
use super::rlimit::{plan_rlimits, RlimitPlan};
use super::seccomp::SeccompPlan;

/// `PATH` when the process's environment has none (Docker's default).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Owned C strings and a `NULL`-terminated array of pointers into them.
pub(crate) struct CStrArray {
    strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into the heap buffers of `strings`, which the array
// owns and never changes; moving the array does not move those buffers, and
// sharing it only allows reading them.
unsafe impl Send for CStrArray {}
// SAFETY: see `Send`: nothing is ever written through the pointers.
unsafe impl Sync for CStrArray {}

impl CStrArray {
    pub(crate) fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Self { strings, ptrs }
    }

    /// The array for `execve`.
    pub(crate) fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }

    pub(crate) fn strings(&self) -> &[CString] {
        &self.strings
    }
}

impl fmt::Debug for CStrArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.strings.iter()).finish()
    }
}

fn cstring(what: &'static str, s: &str) -> Result<CString, ContainerError> {
    CString::new(s).map_err(|_| ContainerError::NulByte { what })
}

/// Where `execvp` would look for `arg0`: `arg0` itself when it has a `/`,
/// otherwise `dir/arg0` for each directory of `path` (an empty entry is the
/// working directory).
pub(crate) fn exec_candidates(arg0: &str, path: &str) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                format!("./{arg0}")
            } else {
                format!("{}/{arg0}", dir.trim_end_matches('/'))
            }
        })
        .collect()
}

/// The environment with `PATH` (and `TERM` for a terminal) added when missing,
/// and the `PATH` in effect.
pub(crate) fn complete_env(env: &[String], terminal: bool) -> (Vec<String>, String) {
    let mut out: Vec<String> = env.to_vec();
    let lookup = |key: &str| {
        env.iter()
            .rev()
            .find_map(|e| e.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    let path = match lookup("PATH") {
        Some(p) => p,
        None => {
            out.push(format!("PATH={DEFAULT_PATH}"));
            DEFAULT_PATH.to_string()
        }
    };
    if terminal && lookup("TERM").is_none() {
        out.push("TERM=xterm".to_string());
    }
    (out, path)
}

/// The process part of a plan: user, limits, capabilities, environment,
/// program.
#[derive(Debug)]
pub(crate) struct ProcessPlan {
    pub argv: CStrArray,
    pub envp: CStrArray,
    pub candidates: Vec<CString>,
    pub cwd: CString,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub rlimits: Vec<RlimitPlan>,
    /// `None`: leave capabilities as they are (a process outside containers
    /// with no list given).
    pub caps: Option<CapPlan>,
    pub no_new_privs: bool,
    /// The seccomp filters, installed last before `execve` (with
    /// `no_new_privs`), or before the capabilities are dropped (without it:
    /// the kernel then needs `CAP_SYS_ADMIN`), as runc does.
    pub seccomp: Option<SeccompPlan>,
}

impl ProcessPlan {
    /// Checks and converts `p`. `container`: capabilities default to the
    /// container set when the spec gives none.
    pub(crate) fn new(p: &ProcessSpec, container: bool) -> Result<Self, ContainerError> {
        let arg0 = p.args.first().ok_or(ContainerError::NoProgram)?;
        if arg0.is_empty() {
            return Err(ContainerError::NoProgram);
        }
        let argv = p
            .args
            .iter()
            .map(|a| cstring("argument", a))
            .collect::<Result<Vec<_>, _>>()?;
        let (env, path) = complete_env(&p.env, p.terminal);
        let envp = env
            .iter()
            .map(|e| cstring("environment", e))
            .collect::<Result<Vec<_>, _>>()?;
        let candidates = exec_candidates(arg0, &path)
            .iter()
            .map(|c| cstring("argument", c))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = if p.cwd.is_empty() {
            "/"
        } else {
            p.cwd.as_str()
        };
        if !cwd.starts_with('/') {
            return Err(ContainerError::RelativeCwd(p.cwd.clone()));
        }
        let caps = match (&p.capabilities, container) {
            (None, false) => None,
            (list, _) => Some(plan_caps(list.as_deref(), kernel_last_cap())?),
        };
        Ok(Self {
            argv: CStrArray::new(argv),
            envp: CStrArray::new(envp),
            candidates,
            cwd: cstring("working directory", cwd)?,
            uid: p.user.uid,
            gid: p.user.gid,
            groups: p.user.additional_gids.clone(),
            rlimits: plan_rlimits(&p.rlimits)?,
            caps,
            no_new_privs: p.no_new_privileges,
            seccomp: None,
        })
    }
}

/// What a launch does besides the process part.
#[derive(Debug)]
pub(crate) enum PlanKind {
    /// A container's main process: new namespaces, mounts, `pivot_root`.
    Main {
        cgroup_procs: OwnedFd,
        root: CString,
        ops: Vec<MountOp>,
        /// Run after `pivot_root`: read-only paths and masks.
        late_ops: Vec<MountOp>,
        readonly_root: bool,
        hostname: Option<CString>,
    },
    /// One more process in a running container: join its namespaces and cgroup.
    Exec {
        cgroup_procs: OwnedFd,
        /// ipc, uts, pid, mnt, in the order they are joined.
        namespaces: Vec<(OwnedFd, CloneFlags)>,
    },
    /// A process in the VM outside any container.
    Host,
}

/// Everything the forked child needs to become the process, prepared before the
/// fork. See [`LaunchPlan::enter_in_child`].
#[derive(Debug)]
pub struct LaunchPlan {
    pub(crate) kind: PlanKind,
    pub(crate) process: ProcessPlan,
    /// The `ptmx` a terminal of this process is opened from: the container's
    /// devpts instance; `None` for the VM's own (`/dev/ptmx`).
    pub(crate) ptmx: Option<CString>,
}

impl LaunchPlan {
    /// The `clone` flags the agent creates the child with:
    /// `CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC` for a main
    /// process, none otherwise. With `CLONE_NEWPID` the child is PID 1 of the
    /// container and the program it executes is the container's init.
    pub fn clone_flags(&self) -> CloneFlags {
        match self.kind {
            PlanKind::Main { .. } => {
                CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWPID
                    | CloneFlags::CLONE_NEWUTS
                    | CloneFlags::CLONE_NEWIPC
            }
            PlanKind::Exec { .. } | PlanKind::Host => CloneFlags::empty(),
        }
    }

    /// A process in the VM outside any container (`enter_pod`): environment,
    /// working directory, user, rlimits, `no_new_privs`, and capabilities only
    /// when the spec lists them.
    pub fn host(process: &ProcessSpec) -> Result<LaunchPlan, ContainerError> {
        Ok(LaunchPlan {
            kind: PlanKind::Host,
            process: ProcessPlan::new(process, false)?,
            ptmx: None,
        })
    }

    /// The program's arguments, for logs and tests.
    pub fn args(&self) -> impl Iterator<Item = &std::ffi::CStr> {
        self.process.argv.strings().iter().map(|s| s.as_c_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_path() {
        assert_eq!(exec_candidates("/bin/sh", "/x"), vec!["/bin/sh"]);
        assert_eq!(exec_candidates("./run", "/x"), vec!["./run"]);
        assert_eq!(
            exec_candidates("sh", "/usr/bin:/bin/::/opt"),
            vec!["/usr/bin/sh", "/bin/sh", "./sh", "/opt/sh"]
        );
    }

    #[test]
    fn env_gets_a_default_path_and_term() {
        let (env, path) = complete_env(&["A=1".to_string()], false);
        assert_eq!(env, vec!["A=1".to_string(), format!("PATH={DEFAULT_PATH}")]);
        assert_eq!(path, DEFAULT_PATH);

        let given = vec![
            "PATH=/a".to_string(),
            "PATHX=1".to_string(),
            "PATH=/b".to_string(),
        ];
        let (env, path) = complete_env(&given, true);
        assert_eq!(
            path, "/b",
            "the last PATH wins, as getenv after putenv would"
        );
        assert_eq!(env.len(), 4);
        assert_eq!(env[3], "TERM=xterm");

        let (env, _) = complete_env(&["TERM=vt100".to_string()], true);
        assert!(!env.iter().any(|e| e == "TERM=xterm"));
    }

    #[test]
    fn process_plans_check_their_input() {
        let ok = ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "true".into()],
            ..ProcessSpec::default()
        };
        let plan = ProcessPlan::new(&ok, true).expect("valid");
        assert_eq!(plan.cwd.to_bytes(), b"/");
        assert!(plan.caps.is_some(), "containers get the default set");
        assert_eq!(plan.candidates.len(), DEFAULT_PATH.split(':').count());
        assert!(ProcessPlan::new(&ok, false).expect("valid").caps.is_none());

        let cases = [
            ProcessSpec::default(),
            ProcessSpec {
                args: vec!["a\0b".into()],
                ..ProcessSpec::default()
            },
            ProcessSpec {
                args: vec!["sh".into()],
                cwd: "relative".into(),
                ..ProcessSpec::default()
            },
            ProcessSpec {
                args: vec!["sh".into()],
                capabilities: Some(vec!["CAP_NOPE".into()]),
                ..ProcessSpec::default()
            },
        ];
        for c in cases {
            assert!(ProcessPlan::new(&c, true).is_err(), "{c:?}");
        }
    }

    #[test]
    fn host_plans_have_no_namespaces() {
        let plan = LaunchPlan::host(&ProcessSpec {
            args: vec!["true".into()],
            ..ProcessSpec::default()
        })
        .expect("valid");
        assert!(plan.clone_flags().is_empty());
        assert_eq!(plan.args().count(), 1);
    }
}
