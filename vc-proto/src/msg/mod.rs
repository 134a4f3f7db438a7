//! The messages of vc-proto: requests the host sends, responses the agent returns,
//! and the types they carry.
//!
//! Every request is answered by exactly one [`Response`] with the same request id:
//! either the reply that the request's documentation names, or
//! [`Response::Error`] carrying an [`ErrorCode`] and a message.
//!
//! # Growing the protocol
//!
//! Payloads are bincode (see [`codec`](crate::codec)), which is compact but not
//! self-describing. The rules that keep old and new peers talking:
//!
//! - **New variants are appended** to [`Request`], [`Response`] and the enums they
//!   carry, never inserted or reordered. An agent that does not know a request
//!   variant cannot decode it; it answers [`ErrorCode::Unsupported`] for that
//!   request id instead of dropping the connection, so a newer host can fall back.
//! - **New fields** are never added to an existing struct within one protocol
//!   version. They go into a new request variant (for example `FooV2`), or wait
//!   for a version bump.
//! - **A version bump** ([`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)) is needed
//!   for any change to an existing struct or variant (adding, removing, retyping
//!   or reordering fields), or to the frame header. Both sides announce the range
//!   of versions they speak in the [`Hello`](crate::Hello) exchange and use the
//!   highest common one; with none in common, the handshake fails with a typed
//!   error on both sides.

mod container;
mod net;
mod pod;
mod request;
mod response;
mod seccomp;

pub use container::*;
pub use net::*;
pub use pod::*;
pub use request::*;
pub use response::*;
pub use seccomp::*;
