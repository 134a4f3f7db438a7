//! The contract between the vc host library and the vc agent in the guest.
//!
//! A connection (vsock, or anything that is `AsyncRead + AsyncWrite` in tests)
//! carries *frames*: a fixed 20-byte header ([`frame`] draws it byte by byte) and
//! a bincode payload ([`codec`]). Both sides first run the version [`handshake`];
//! then the host sends [`Request`]s, each with its own request id, and the agent
//! answers each with one [`Response`] carrying the same id, in any order, so
//! several requests can be in flight on one connection.
//!
//! Process output and input do not travel in request frames: the host opens one
//! more connection per process stream and sends a [`StreamAttach`] frame; after
//! the agent's `Response::Ok` that connection carries raw bytes. From version 3
//! the host can instead *park* an output connection with a [`StreamPark`]
//! frame before the process exists and name it in [`Request::ExecDirect`]:
//! the agent then gives the process that connection itself as its stdout or
//! stderr, and no agent copy sits between the process and the host.
//!
//! The rules for growing the messages without breaking older peers are in
//! [`msg`].

pub mod codec;
pub mod frame;
pub mod handshake;
pub mod io;
pub mod msg;
pub mod text;

pub use frame::{FrameError, FrameKind, Header, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
pub use handshake::{handshake_client, handshake_server, HandshakeError, Hello, Negotiated};
pub use io::{Frame, FrameReader, FrameWriter};
pub use msg::*;

/// The protocol version this crate speaks at most; see [`msg`] for what a bump means.
///
/// 2: `ContainerSpec` gained `masked_paths` and `readonly_paths`.
///
/// 3: direct output streams: the [`StreamPark`] frame (kind 5) and
/// [`Request::ExecDirect`], which give a process the stream connections
/// themselves as its stdout and stderr. A connection negotiated at 2 has
/// neither; the host then uses the agent's pipes (`StreamAttach`).
pub const MAX_PROTOCOL_VERSION: u16 = 3;

/// The first protocol version with direct output streams ([`StreamPark`],
/// [`Request::ExecDirect`]).
pub const DIRECT_STREAMS_VERSION: u16 = 3;

/// The oldest protocol version this crate still speaks. Version 1's
/// `ContainerSpec` is not kept: host and agent are built from one tree.
pub const MIN_PROTOCOL_VERSION: u16 = 2;

/// The version a connection between two peers built from this crate uses.
pub const PROTOCOL_VERSION: u16 = MAX_PROTOCOL_VERSION;

/// The vsock port the agent serves requests and process streams on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The line the agent writes to the guest console once it listens on its vsock
/// port. Hosts wait for it before the first connection attempt: a hybrid vsock
/// daemon that gets connection requests while the guest's vsock driver is still
/// starting can leave later requests unanswered.
pub const AGENT_READY_LINE: &str = "vc-agent: ready for connections";

/// Exit code reported for a process whose VM or agent went away before it exited.
pub const EXIT_CODE_VM_GONE: i32 = 255;

/// The exit code of a process killed by `signal`: 128 + the signal number.
pub const fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}
