//! Connections: the vc-proto handshake, then either a request loop
//! (`requests`) or, when the first frame is a `StreamAttach`, one raw process
//! stream (`stream`). `listen` accepts connections on vsock (the guest) or a
//! unix socket (tests, a normal process).

mod listen;
mod requests;
mod stream;

use std::sync::Arc;

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

/// Serves one connection until the peer closes it (or, for a process stream,
/// until the stream ends).
///
/// After the handshake, the first frame decides what the connection is: a
/// `StreamAttach` makes it the raw byte stream of one process; anything else
/// starts the request loop, where every request is answered with its id, many
/// in flight at once.
pub async fn serve_connection<S>(agent: Arc<Agent>, stream: S) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
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
    requests::serve_requests(agent, negotiated.version, first, reader, writer).await
}
