//! How internal errors become the wire's [`AgentError`]: an [`ErrorCode`] a
//! caller can act on, and the error's whole chain of causes as the message.

use vc_proto::{AgentError, ErrorCode};

use crate::power::error_chain;
use crate::process::{ParkError, ProcessError, SpawnError, StdioError};

/// An error that knows its [`ErrorCode`].
pub trait ToAgentError: std::error::Error {
    /// The class of failure.
    fn code(&self) -> ErrorCode;

    /// The wire error: the code and the chain of causes.
    fn to_agent_error(&self) -> AgentError
    where
        Self: Sized,
    {
        AgentError::new(self.code(), error_chain(self))
    }
}

impl ToAgentError for SpawnError {
    fn code(&self) -> ErrorCode {
        match self {
            SpawnError::Exec { .. } => ErrorCode::ExecFailed,
            SpawnError::Timeout { .. } => ErrorCode::ExecFailed,
            _ => ErrorCode::System,
        }
    }
}

impl ToAgentError for ProcessError {
    fn code(&self) -> ErrorCode {
        match self {
            ProcessError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            ProcessError::NotFound(_) => ErrorCode::NotFound,
            ProcessError::Spawn(e) => e.code(),
            ProcessError::Join(_) => ErrorCode::Internal,
        }
    }
}

impl ToAgentError for StdioError {
    fn code(&self) -> ErrorCode {
        match self {
            StdioError::AlreadyAttached(_) | StdioError::StdinClosed | StdioError::Direct(_) => {
                ErrorCode::WrongState
            }
            StdioError::NoSuchStream(..) | StdioError::NoTerminal => ErrorCode::InvalidArgument,
            StdioError::Sys(_) => ErrorCode::System,
        }
    }
}

impl ToAgentError for ParkError {
    fn code(&self) -> ErrorCode {
        match self {
            ParkError::NotOutput(_) | ParkError::Duplicate(_) => ErrorCode::InvalidArgument,
            ParkError::AlreadyParked(..) => ErrorCode::AlreadyExists,
            ParkError::Full(_) => ErrorCode::WrongState,
            ParkError::NotParked(..) => ErrorCode::NotFound,
        }
    }
}

impl ToAgentError for crate::network::NetworkError {
    fn code(&self) -> ErrorCode {
        use crate::network::NetworkError;
        match self {
            NetworkError::NoInterfaceWithMac(_) => ErrorCode::NotFound,
            NetworkError::Unsupported(_) => ErrorCode::InvalidArgument,
            _ => ErrorCode::System,
        }
    }
}

/// Shorthand: any error with a code as a wire error.
pub(crate) fn wire<E: ToAgentError>(error: E) -> AgentError {
    error.to_agent_error()
}

/// An error with a code and a message, for checks done in the handlers.
pub(crate) fn fail(code: ErrorCode, message: impl Into<String>) -> AgentError {
    AgentError::new(code, message)
}
