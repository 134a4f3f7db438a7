//! Responses, agent to host.

use serde::{Deserialize, Serialize};

use super::container::{ContainerStats, ContainerStatus, Event};
use super::net::{GuestInterface, Route};
use super::pod::{GuestDetails, Health};

/// The agent's answer to one [`Request`](crate::Request).
///
/// Variants are only ever appended (see the [module docs](crate::msg)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request succeeded and has nothing to return.
    Ok,
    /// The request failed.
    Error(AgentError),
    /// Reply to `GuestDetails`.
    GuestDetails(GuestDetails),
    /// Reply to `Health`.
    Health(Health),
    /// Pid in the guest of a started process.
    Pid(u32),
    /// Exit code of a process: the exit status, or 128 + signal number.
    Exited(i32),
    /// Reply to `ContainerState`.
    ContainerStatus(ContainerStatus),
    /// Reply to `Stats`.
    Stats(ContainerStats),
    /// Reply to `NextEvent`.
    Event(Event),
    /// Reply to `ListInterfaces`.
    Interfaces(Vec<GuestInterface>),
    /// Reply to `ListRoutes`.
    Routes(Vec<Route>),
    /// Reply to `ContainerPids`: guest pids in ascending order, at most
    /// [`MAX_CONTAINER_PIDS`](crate::MAX_CONTAINER_PIDS).
    Pids(Vec<u32>),
}

/// A failure reported by the agent, displayed with the message's control
/// characters escaped: it comes from the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {}", crate::text::Escaped::line(message))]
pub struct AgentError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A sentence for humans.
    pub message: String,
}

impl AgentError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Classes of agent failure, so that callers can react without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The agent does not know this request (an older agent).
    Unsupported,
    /// The request is malformed or its arguments are invalid.
    InvalidArgument,
    /// The container or process does not exist.
    NotFound,
    /// The container or process already exists.
    AlreadyExists,
    /// The object is in a state that does not allow the request.
    WrongState,
    /// The program to execute is missing or not executable.
    ExecFailed,
    /// A system call failed.
    System,
    /// Anything else.
    Internal,
}
