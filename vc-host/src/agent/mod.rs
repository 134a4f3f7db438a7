//! The host's client of the in-guest agent (`vc-agent`).
//!
//! This module owns everything the host does on the agent's vsock port:
//!
//! - connecting while the guest boots (deadline and backoff), the version
//!   handshake, and a VM liveness probe so that a dead VM is reported as
//!   [`AgentClientError::VmGone`] instead of a hang ([`AgentClient::connect`],
//!   [`ConnectOptions`]);
//! - one control connection per client with requests multiplexed by id, a
//!   timeout per call, and one typed method per [`vc_proto::Request`];
//! - process streams: one more connection per stdin, stdout, stderr or
//!   terminal ([`AgentClient::attach`], [`ProcessIo`], [`collect_output`]).
//!
//! Everything the guest sends is untrusted: frame sizes are capped by
//! vc-proto's reader before anything is allocated, and malformed input ends
//! the connection with a typed error, never a panic.
//!
//! A process whose VM or agent went away is reported with
//! [`EXIT_CODE_VM_GONE`] (see [`AgentClientError::exit_code`]).
//! `docs/agent-client.md` describes the design.

mod attach;
mod client;
mod dial;
mod error;
mod link;
mod methods;
mod options;

#[cfg(test)]
pub(crate) mod tests;

pub use attach::{
    collect_output, collect_output_limited, park_unsupported, Output, ProcessIo, ProcessOutput,
    ProcessStdin, ProcessTty, COLLECT_OUTPUT_LIMIT,
};
pub use client::AgentClient;
pub use dial::{dialer_fn, AgentIo, Dialer, FnDialer, RawStream, VsockDialer};
pub use error::{AgentClientError, LinkDown, StreamError};
pub use options::{ConnectOptions, VmAlive};
pub use vc_proto::EXIT_CODE_VM_GONE;
