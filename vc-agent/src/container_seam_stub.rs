//! TEMPORARY stand-in for `crate::container` (owned by the container helper)
//! until its `mod.rs` exists: the seam's signatures, with only the in-VM host
//! launch implemented. Removed when the real module lands.
#![allow(missing_docs, clippy::missing_errors_doc, dead_code)]

use std::convert::Infallible;
use std::ffi::CString;

use nix::errno::Errno;
use nix::sched::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("a container with id {0:?} exists already")]
    Exists(String),
    #[error("container id {0:?} is not valid")]
    InvalidId(String),
    #[error("rootfs {0:?} missing")]
    RootfsMissing(std::path::PathBuf),
    #[error("mount source missing")]
    MountSourceMissing { destination: String },
    #[error("invalid mount")]
    InvalidMount { destination: String },
    #[error("the {what} holds a NUL byte")]
    NulByte { what: &'static str },
    #[error("the process has no arguments: args[0] names the program")]
    NoProgram,
    #[error("relative cwd {0:?}")]
    RelativeCwd(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("unknown rlimit {0:?}")]
    UnknownRlimit(String),
    #[error("rlimit {0}")]
    RlimitSoftAboveHard(String),
    #[error("invalid resource")]
    InvalidResource { field: &'static str },
    #[error("controller {0} unavailable")]
    ControllerUnavailable(&'static str, std::path::PathBuf),
    #[error("main process {pid} gone")]
    MainProcessGone { pid: i32 },
    #[error("containers are not available yet")]
    NotYet,
}

#[derive(Debug, Clone, Copy)]
pub struct ChildSetupError {
    exec: bool,
    errno: Errno,
}

impl ChildSetupError {
    pub fn is_exec(&self) -> bool {
        self.exec
    }
    pub fn errno(&self) -> Errno {
        self.errno
    }
    pub fn index(&self) -> u16 {
        0
    }
    pub fn step(&self) -> &'static str {
        if self.exec {
            "execute the program"
        } else {
            "change to the working directory"
        }
    }
}

#[derive(Debug)]
pub struct Container;

#[derive(Debug, Clone, Copy)]
pub enum LaunchKind {
    Main,
    Exec { main_pid: i32 },
}

#[derive(Debug)]
pub struct LaunchPlan {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: Option<CString>,
}

impl Container {
    pub fn create(_spec: &vc_proto::ContainerSpec) -> Result<Container, ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn launch_plan(
        &self,
        _p: &vc_proto::ProcessSpec,
        _k: LaunchKind,
    ) -> Result<LaunchPlan, ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn update(&self, _r: &vc_proto::Resources) -> Result<(), ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn stats(&self) -> Result<vc_proto::ContainerStats, ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn freeze(&self, _f: bool) -> Result<(), ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn pids(&self) -> Result<Vec<i32>, ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn oom_kills(&self) -> Result<u64, ContainerError> {
        Err(ContainerError::NotYet)
    }
    pub fn destroy(self) -> Result<(), ContainerError> {
        Err(ContainerError::NotYet)
    }
}

fn cstring(s: &str, what: &'static str) -> Result<CString, ContainerError> {
    CString::new(s).map_err(|_| ContainerError::NulByte { what })
}

impl LaunchPlan {
    pub fn host(process: &vc_proto::ProcessSpec) -> Result<LaunchPlan, ContainerError> {
        let first = process.args.first().ok_or(ContainerError::NoProgram)?;
        let argv = process
            .args
            .iter()
            .map(|a| cstring(a, "argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let env = process
            .env
            .iter()
            .map(|a| cstring(a, "environment"))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = if process.cwd.is_empty() {
            None
        } else {
            Some(cstring(&process.cwd, "cwd")?)
        };
        Ok(LaunchPlan {
            program: cstring(first, "program")?,
            argv,
            env,
            cwd,
        })
    }

    pub fn clone_flags(&self) -> CloneFlags {
        CloneFlags::empty()
    }

    pub fn enter_in_child(&self) -> Result<Infallible, ChildSetupError> {
        if let Some(cwd) = &self.cwd {
            nix::unistd::chdir(cwd.as_c_str())
                .map_err(|errno| ChildSetupError { exec: false, errno })?;
        }
        let errno = nix::unistd::execvpe(&self.program, &self.argv, &self.env)
            .err()
            .unwrap_or(Errno::EINVAL);
        Err(ChildSetupError { exec: true, errno })
    }
}
