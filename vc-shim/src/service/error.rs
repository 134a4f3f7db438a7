//! The task service's errors and their ttrpc status codes, which containerd
//! maps to its own error kinds (NotFound, AlreadyExists, ...).

use containerd_shim::protos::ttrpc;
use vc_host::RuntimeError;

use crate::bundle::BundleError;
use crate::group::GroupError;
use crate::rootfs::RootfsError;

/// Why a task RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No task with this id in this shim.
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// No process with this exec id in the task.
    #[error("exec {exec} of task {task} not found")]
    ExecNotFound {
        /// The task.
        task: String,
        /// The exec id.
        exec: String,
    },
    /// The process has exited.
    #[error("process {0} already finished")]
    Finished(String),
    /// The id is taken.
    #[error("{0} already exists")]
    Exists(String),
    /// The operation does not fit the task's state.
    #[error("{0}")]
    State(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// vc does not do this.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The shim's settings or runtime root are unusable.
    #[error("the shim is not usable: {0}")]
    Setup(String),
    /// A runtime call ran past its deadline.
    #[error("{what} did not finish within {secs} s")]
    Timeout {
        /// The call.
        what: &'static str,
        /// Its deadline.
        secs: u64,
    },
    /// The vc runtime failed.
    #[error("{what} failed")]
    Runtime {
        /// The call.
        what: &'static str,
        /// The runtime's error.
        #[source]
        source: Box<RuntimeError>,
    },
    /// A process operation failed.
    #[error("{what} failed")]
    Process {
        /// The call.
        what: &'static str,
        /// The error.
        #[source]
        source: Box<vc_host::runtime::ProcessError>,
    },
    /// An agent call failed.
    #[error("{what} failed")]
    Agent {
        /// The call.
        what: &'static str,
        /// The agent client's error.
        #[source]
        source: Box<vc_host::agent::AgentClientError>,
    },
    /// A stdio fifo cannot be opened.
    #[error("cannot open the {stream} fifo {path}")]
    Fifo {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// Its path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle is unusable.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The task's ids or grouping are unusable.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The rootfs cannot be mounted or unmounted.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

impl ServiceError {
    /// Wraps an agent error from `what`.
    pub fn agent(what: &'static str) -> impl FnOnce(vc_host::agent::AgentClientError) -> Self {
        move |e| ServiceError::Agent {
            what,
            source: Box::new(e),
        }
    }

    /// Wraps a process error from `what`.
    pub fn process(what: &'static str) -> impl FnOnce(vc_host::runtime::ProcessError) -> Self {
        move |e| ServiceError::Process {
            what,
            source: Box::new(e),
        }
    }

    /// Wraps a runtime error from `what`.
    pub fn runtime(what: &'static str) -> impl FnOnce(RuntimeError) -> Self {
        move |e| ServiceError::Runtime {
            what,
            source: Box::new(e),
        }
    }

    fn code(&self) -> ttrpc::Code {
        use ServiceError::*;
        match self {
            TaskNotFound(_) | ExecNotFound { .. } | Finished(_) => ttrpc::Code::NOT_FOUND,
            Exists(_) => ttrpc::Code::ALREADY_EXISTS,
            State(_) => ttrpc::Code::FAILED_PRECONDITION,
            Invalid(_) | Bundle(_) | Group(_) => ttrpc::Code::INVALID_ARGUMENT,
            Unsupported(_) => ttrpc::Code::UNIMPLEMENTED,
            Timeout { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
            Setup(_) | Runtime { .. } | Process { .. } | Agent { .. } | Fifo { .. } | Rootfs(_) => {
                ttrpc::Code::UNKNOWN
            }
        }
    }
}

/// The error and its sources, one sentence each, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

impl From<ServiceError> for ttrpc::Error {
    fn from(e: ServiceError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_containerd_error_kinds() {
        let status = |e: ServiceError| match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_owned()),
            other => panic!("not a status: {other:?}"),
        };
        let (code, msg) = status(ServiceError::TaskNotFound("t1".into()));
        assert_eq!(code, ttrpc::Code::NOT_FOUND);
        assert_eq!(msg, "task t1 not found");
        assert_eq!(
            status(ServiceError::Unsupported("no checkpoint")).0,
            ttrpc::Code::UNIMPLEMENTED
        );
        assert_eq!(
            status(ServiceError::Exists("task t1".into())).0,
            ttrpc::Code::ALREADY_EXISTS
        );
    }
}
