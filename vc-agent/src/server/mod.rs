//! Connections: the vc-proto handshake, then either a request loop
//! (`requests`), or, when the first frame is a `StreamAttach`, one raw process
//! stream (`stream`), or, when it is a `StreamPark`, a connection handed to a
//! process yet to start (`park`). `listen` accepts connections on vsock (the
//! guest) or a unix socket (tests, a normal process).

mod listen;
mod park;
mod requests;
mod stream;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::{AsyncRead, AsyncWrite};
use vc_proto::{
    handshake_server, FrameError, FrameKind, FrameReader, FrameWriter, HandshakeError, Hello,
};

use crate::agent::Agent;

pub use listen::{serve_unix, serve_vsock};

/// Why a connection or a listener ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The version handshake failed.
    #[error("handshake failed")]
    Handshake(#[from] HandshakeError),
    /// A frame could not be read or written; the connection is dropped.
    #[error("connection failed")]
    Frame(#[from] FrameError),
    /// Copying a process stream failed.
    #[error("process stream failed")]
    Stream(#[source] std::io::Error),
    /// The listening socket could not be created.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A connection the agent serves. A socket can also become a process's own
/// stdout or stderr (protocol version 3's parked streams): [`into_fd`](Self::into_fd)
/// gives its descriptor, in blocking mode, with the async runtime's
/// registration dropped. An in-memory stream has none, and a park on it is
/// refused as unsupported.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Whether [`into_fd`](Self::into_fd) gives a descriptor.
    const HANDOFF: bool = false;

    /// The connection's socket as a descriptor of its own, or `None` when it
    /// is not backed by one.
    fn into_fd(self) -> std::io::Result<Option<OwnedFd>>
    where
        Self: Sized,
    {
        Ok(None)
    }
}

/// Detaches a socket from the runtime: a close-on-exec duplicate of its
/// descriptor survives dropping the async stream (which deregisters it), then
/// goes back to blocking mode, since the process that gets it expects a
/// blocking stdout.
fn detach_socket<S: AsFd>(stream: S) -> std::io::Result<Option<OwnedFd>> {
    let fd = stream.as_fd().try_clone_to_owned()?;
    drop(stream);
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(Some(fd))
}

impl Connection for tokio_vsock::VsockStream {
    const HANDOFF: bool = true;

    fn into_fd(self) -> std::io::Result<Option<OwnedFd>> {
        detach_socket(self)
    }
}

impl Connection for tokio::net::UnixStream {
    const HANDOFF: bool = true;

    fn into_fd(self) -> std::io::Result<Option<OwnedFd>> {
        detach_socket(self)
    }
}

impl Connection for tokio::io::DuplexStream {}

/// Serves one connection until the peer closes it (or, for a process stream,
/// until the stream ends).
///
/// After the handshake, the first frame decides what the connection is: a
/// `StreamAttach` makes it the raw byte stream of one process; anything else
/// starts the request loop, where every request is answered with its id, many
/// in flight at once.
pub async fn serve_connection<S>(agent: Arc<Agent>, stream: S) -> Result<(), ServeError>
where
    S: Connection,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let negotiated =
        handshake_server(&mut reader, &mut writer, &Hello::ours(crate::software())).await?;
    tracing::debug!(
        version = negotiated.version,
        peer = %negotiated.peer.software,
        "handshake done"
    );
    let first = match reader.read_frame().await {
        Ok(frame) => frame,
        Err(e) if e.is_clean_eof() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if first.header.kind == FrameKind::StreamAttach {
        return stream::serve_stream(agent, first, reader, writer).await;
    }
    if first.header.kind == FrameKind::StreamPark {
        return park::park_stream(agent, first, reader, writer).await;
    }
    requests::serve_requests(agent, negotiated.version, first, reader, writer).await
}
