//! The agent client's errors: what a caller can tell apart and react to.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use vc_proto::{AgentError, FrameError, HandshakeError, ProcessRef, StreamKind};

use crate::hypervisor::HelperDeath;
use crate::vsock::{VsockAddr, VsockError};

/// Why the control connection to the agent can no longer carry requests.
///
/// Cheap to clone: it is handed to every call that was pending when the
/// connection went down.
#[derive(Debug, Clone, Error)]
pub enum LinkDown {
    /// The agent closed the connection cleanly between two frames.
    #[error("the agent closed the connection")]
    Closed,
    /// Reading from the connection failed, or it ended inside a frame.
    #[error("reading from the agent failed")]
    Read(#[source] Arc<FrameError>),
    /// Writing to the connection failed.
    #[error("writing to the agent failed")]
    Write(#[source] Arc<FrameError>),
    /// The guest sent something that is not a well-formed frame (bad magic,
    /// unknown kind or version, a length above the cap). The connection cannot
    /// be resynchronised and was dropped.
    #[error("the agent broke the frame protocol")]
    Protocol(#[source] Arc<FrameError>),
    /// The VM liveness probe reported the VM dead.
    #[error("the VM is gone")]
    VmGone,
    /// QEMU or one of its helpers died (seen on its pidfd).
    #[error("{0}")]
    HelperDied(HelperDeath),
}

impl LinkDown {
    /// Sorts a reader error into a cause.
    pub(crate) fn from_read(error: FrameError) -> Self {
        match error {
            e if e.is_clean_eof() => LinkDown::Closed,
            e @ (FrameError::Io(_) | FrameError::Truncated { .. }) => LinkDown::Read(Arc::new(e)),
            e => LinkDown::Protocol(Arc::new(e)),
        }
    }

    /// The error a call named `request` gets because of this cause.
    pub(crate) fn for_request(&self, request: &'static str) -> AgentClientError {
        match self {
            LinkDown::VmGone => AgentClientError::VmGone { during: request },
            LinkDown::HelperDied(death) => AgentClientError::HelperDied {
                during: request,
                death: death.clone(),
            },
            cause => AgentClientError::ConnectionLost {
                request,
                cause: cause.clone(),
            },
        }
    }
}

/// Why an agent client operation failed.
#[derive(Debug, Error)]
pub enum AgentClientError {
    /// Connecting failed with an error that retrying cannot fix.
    #[error("cannot connect to the agent")]
    Connect(#[source] VsockError),
    /// The agent did not accept a connection before the connect deadline.
    #[error(
        "the agent at {addr} port {port} did not accept a connection within {after:?} \
         ({attempts} attempts)"
    )]
    ConnectDeadline {
        /// Address tried.
        addr: VsockAddr,
        /// Guest port.
        port: u32,
        /// The deadline.
        after: Duration,
        /// Connection attempts made.
        attempts: u32,
        /// The last transient error, if any attempt finished.
        #[source]
        last: Option<VsockError>,
    },
    /// The version handshake failed.
    #[error("the version handshake with the agent failed")]
    Handshake(#[source] HandshakeError),
    /// The VM liveness probe reported the VM dead while connecting or while a
    /// call was pending. A process waited for is then reported with
    /// [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE).
    #[error("the VM is gone ({during})")]
    VmGone {
        /// The request that was pending, `connect`, or `attach`.
        during: &'static str,
    },
    /// QEMU or one of its helper daemons died while connecting or while the
    /// call was pending (seen on its pidfd, see
    /// [`HelperWatch`](crate::hypervisor::HelperWatch)). A process waited
    /// for is then reported with [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE).
    #[error("{death} ({during})")]
    HelperDied {
        /// The request that was pending, `connect`, or `attach`.
        during: &'static str,
        /// Which process died and how.
        death: HelperDeath,
    },
    /// The control connection went down while the call was pending, or before.
    #[error("the connection to the agent was lost ({request})")]
    ConnectionLost {
        /// The request.
        request: &'static str,
        /// Why the connection went down.
        #[source]
        cause: LinkDown,
    },
    /// The agent did not answer in time. The connection stays usable; a late
    /// answer is dropped.
    #[error("the agent did not answer {request} within {after:?}")]
    Timeout {
        /// The request.
        request: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The agent answered with an error.
    #[error("the agent failed {request}")]
    Agent {
        /// The request.
        request: &'static str,
        /// The agent's error.
        #[source]
        source: AgentError,
    },
    /// The agent answered with a response that does not belong to the request.
    #[error("the agent answered {request} with an unexpected {got} response")]
    UnexpectedResponse {
        /// The request.
        request: &'static str,
        /// Name of the response variant received.
        got: &'static str,
    },
    /// The agent's reply holds more items than the protocol allows.
    #[error("the agent answered {request} with {items} items, more than the {limit} allowed")]
    OversizedReply {
        /// The request.
        request: &'static str,
        /// Items in the reply.
        items: usize,
        /// The protocol's limit.
        limit: usize,
    },
    /// The agent's response frame did not decode.
    #[error("the agent's response to {request} is malformed")]
    BadResponse {
        /// The request.
        request: &'static str,
        /// The decoder's error.
        #[source]
        source: FrameError,
    },
    /// The request could not be encoded into a frame (for example it is larger
    /// than the frame cap). Nothing was sent.
    #[error("cannot send {request}")]
    Encode {
        /// The request.
        request: &'static str,
        /// The encoder's error.
        #[source]
        source: FrameError,
    },
    /// This client has no way to open more connections (it was made with
    /// [`AgentClient::from_stream`](super::AgentClient::from_stream) without a dialer).
    #[error("this agent client cannot open process streams: it has no dialer")]
    NoDialer,
    /// Opening or reading a process stream failed.
    #[error("the {stream:?} stream of {process:?} failed")]
    Stream {
        /// The process.
        process: ProcessRef,
        /// The stream.
        stream: StreamKind,
        /// What failed.
        #[source]
        source: StreamError,
    },
}

/// What failed on a process stream connection.
#[derive(Debug, Error)]
pub enum StreamError {
    /// The dialer could not open a connection.
    #[error("dialing the agent failed")]
    Dial(#[source] std::io::Error),
    /// The handshake on the new connection failed.
    #[error("the version handshake failed")]
    Handshake(#[source] HandshakeError),
    /// Sending the attach frame or reading the answer failed.
    #[error("the attach exchange failed")]
    Frame(#[source] FrameError),
    /// The agent refused the attach.
    #[error("the agent refused the attach")]
    Refused(#[source] AgentError),
    /// The stream carried more than the caller's limit.
    #[error("the stream passed the limit of {0} bytes")]
    TooLarge(usize),
    /// The agent answered with something other than `Ok` or an error.
    #[error("the agent answered the attach with an unexpected {0} response")]
    Unexpected(&'static str),
    /// No answer to the attach within the call timeout.
    #[error("the agent did not answer the attach within {0:?}")]
    Timeout(Duration),
    /// Reading the attached stream failed.
    #[error("reading the stream failed")]
    Read(#[source] std::io::Error),
}

impl AgentClientError {
    /// True when the VM or its agent is gone: the VM liveness probe failed or
    /// the control connection went down. A caller waiting for a process
    /// reports [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE) then.
    pub fn agent_gone(&self) -> bool {
        matches!(
            self,
            AgentClientError::VmGone { .. }
                | AgentClientError::ConnectionLost { .. }
                | AgentClientError::HelperDied { .. }
        )
    }

    /// The exit code to report for a process whose wait failed with this
    /// error: [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE) when the agent
    /// is gone, `None` otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        self.agent_gone().then_some(vc_proto::EXIT_CODE_VM_GONE)
    }
}
