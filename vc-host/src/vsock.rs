//! How the host reaches a port of the guest's vsock: the address in its two forms
//! and the connection that results.
//!
//! - **Kernel vsock**: the host kernel has `vhost-vsock`; QEMU gets a
//!   `vhost-vsock` device with a guest CID, and the host connects with `AF_VSOCK`
//!   to `(cid, port)`.
//! - **Hybrid vsock**: a vhost-user daemon (`vhost-device-vsock`) implements the
//!   device and exposes the guest's ports on a Unix socket. The host connects to
//!   that socket, writes `CONNECT <port>\n`, and reads `OK <host port>\n`; from
//!   then on the stream is raw. When nothing listens on the port in the guest,
//!   the daemon closes the connection instead of answering.
//!
//! A hybrid `CONNECT` is never closed before the daemon answered it:
//! vhost-device-vsock 0.3 writes the guest's `OK` with `write_all(..).unwrap()`
//! on its vring worker thread, so an `OK` written to a socket the host already
//! closed fails with `EPIPE` and kills that thread; the daemon stays up but no
//! later `CONNECT` is ever answered (docs/agent-client.md). A connect that is
//! cancelled (a timeout, a `select!`) hands its socket to a task that waits for
//! the answer ([`ABANDONED_REPLY_WAIT`] at most) before closing it.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;

/// Longest reply line accepted from a hybrid vsock daemon.
const MAX_HYBRID_REPLY: usize = 64;

/// How long the socket of a cancelled hybrid `CONNECT` stays open waiting for
/// the daemon's answer. The daemon answers (or closes, when its VM stops) as
/// soon as the guest's vsock driver takes the request; a guest that never
/// does is not answering at all, and closing then is harmless.
pub const ABANDONED_REPLY_WAIT: Duration = Duration::from_secs(60);

/// Where the guest's vsock is reachable from the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockAddr {
    /// Kernel vhost-vsock: the guest's context id.
    Kernel {
        /// Guest CID (3 or more).
        cid: u32,
    },
    /// Hybrid vsock through a vhost-user daemon's Unix socket.
    Hybrid {
        /// The daemon's `--uds-path` socket.
        uds: PathBuf,
    },
}

impl std::fmt::Display for VsockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VsockAddr::Kernel { cid } => write!(f, "vsock cid {cid}"),
            VsockAddr::Hybrid { uds } => write!(f, "hybrid vsock {}", uds.display()),
        }
    }
}

/// Why a vsock connection could not be made.
#[derive(Debug, Error)]
pub enum VsockError {
    /// The socket could not be connected.
    #[error("cannot connect to {addr} port {port}")]
    Connect {
        /// Address tried.
        addr: VsockAddr,
        /// Guest port.
        port: u32,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The hybrid vsock daemon did not accept the `CONNECT` (nothing listens on
    /// the port in the guest yet, or the daemon is not a vsock daemon).
    #[error("hybrid vsock daemon at {uds} refused port {port}: {reply:?}")]
    Refused {
        /// The daemon's socket.
        uds: PathBuf,
        /// Guest port.
        port: u32,
        /// What the daemon answered (empty when it closed the connection).
        reply: String,
    },
}

impl VsockError {
    /// True when retrying later may succeed (the guest is still booting).
    pub fn is_transient(&self) -> bool {
        match self {
            VsockError::Refused { .. } => true,
            VsockError::Connect { source, .. } => {
                matches!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::UnexpectedEof
                ) || source.raw_os_error() == Some(libc::ENODEV)
                    || source.raw_os_error() == Some(libc::EHOSTUNREACH)
            }
        }
    }
}

/// A connected stream to a guest port, in either form.
#[derive(Debug)]
pub enum VsockStream {
    /// `AF_VSOCK` stream.
    Kernel(tokio_vsock::VsockStream),
    /// Unix stream to the hybrid vsock daemon, past the `CONNECT` exchange.
    Hybrid(UnixStream),
}

impl VsockAddr {
    /// Connects to `port` in the guest. One attempt; callers that wait for a
    /// booting guest retry while [`VsockError::is_transient`] holds.
    ///
    /// The attempt has no bound of its own: a hybrid `CONNECT` that reaches
    /// the daemon while the guest's vsock driver is still being set up may
    /// stay unanswered. Bound each attempt with a timeout and retry, as the
    /// agent client does; cancelling is safe (see the module docs).
    pub async fn connect(&self, port: u32) -> Result<VsockStream, VsockError> {
        match self {
            VsockAddr::Kernel { cid } => {
                let addr = tokio_vsock::VsockAddr::new(*cid, port);
                tokio_vsock::VsockStream::connect(addr)
                    .await
                    .map(VsockStream::Kernel)
                    .map_err(|source| VsockError::Connect {
                        addr: self.clone(),
                        port,
                        source,
                    })
            }
            VsockAddr::Hybrid { uds } => {
                let io_err = |source| VsockError::Connect {
                    addr: self.clone(),
                    port,
                    source,
                };
                let stream = UnixStream::connect(uds).await.map_err(io_err)?;
                let mut pending = PendingConnect(Some(stream));
                let stream = pending.stream();
                stream
                    .write_all(format!("CONNECT {port}\n").as_bytes())
                    .await
                    .map_err(io_err)?;
                let reply = read_reply_line(stream).await.map_err(io_err)?;
                // Answered: closing is safe from here on.
                let stream = pending.answered();
                if reply.starts_with("OK ") {
                    Ok(VsockStream::Hybrid(stream))
                } else {
                    Err(VsockError::Refused {
                        uds: uds.clone(),
                        port,
                        reply,
                    })
                }
            }
        }
    }
}

/// The socket of a hybrid `CONNECT` the daemon has not answered yet. Dropped
/// before [`answered`](Self::answered) (the connect future was cancelled), it
/// keeps the socket open on a task until the answer comes, so that the daemon
/// never writes its `OK` to a closed socket (see the module docs).
struct PendingConnect(Option<UnixStream>);

impl PendingConnect {
    fn stream(&mut self) -> &mut UnixStream {
        self.0
            .as_mut()
            .expect("a pending connect holds its stream until answered")
    }

    /// The daemon answered (or the exchange failed): the stream is the caller's.
    fn answered(mut self) -> UnixStream {
        self.0
            .take()
            .expect("a pending connect holds its stream until answered")
    }
}

impl Drop for PendingConnect {
    fn drop(&mut self) {
        let Some(stream) = self.0.take() else { return };
        // Without a runtime nothing can wait: the socket closes here.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain_abandoned(stream));
        }
    }
}

/// Waits for the daemon's answer to a cancelled `CONNECT`, then closes.
async fn drain_abandoned(mut stream: UnixStream) {
    let answer = tokio::time::timeout(ABANDONED_REPLY_WAIT, read_reply_line(&mut stream)).await;
    tracing::debug!(
        ?answer,
        "abandoned hybrid vsock connect answered; closing it"
    );
}

/// Reads the daemon's reply one byte at a time, so that nothing of the raw
/// stream that follows is consumed. Stops at a newline, end of stream or
/// [`MAX_HYBRID_REPLY`] bytes.
async fn read_reply_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    while line.len() < MAX_HYBRID_REPLY {
        match stream.read(&mut byte).await {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            // The daemon resets the connection when the guest port is closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

impl AsyncRead for VsockStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            VsockStream::Kernel(s) => Pin::new(s).poll_read(cx, buf),
            VsockStream::Hybrid(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for VsockStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            VsockStream::Kernel(s) => Pin::new(s).poll_write(cx, buf),
            VsockStream::Hybrid(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            VsockStream::Kernel(s) => Pin::new(s).poll_flush(cx),
            VsockStream::Hybrid(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            VsockStream::Kernel(s) => Pin::new(s).poll_shutdown(cx),
            VsockStream::Hybrid(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn fake_daemon(reply: &'static str) -> (tempfile::TempDir, VsockAddr) {
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&uds).expect("bind");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).await.expect("read connect");
            assert_eq!(&buf, b"CONNECT 1024\n");
            s.write_all(reply.as_bytes()).await.expect("reply");
            if reply.starts_with("OK") {
                s.write_all(b"raw").await.expect("raw");
            }
        });
        (dir, VsockAddr::Hybrid { uds })
    }

    #[tokio::test]
    async fn hybrid_connect_keeps_the_raw_stream_intact() {
        let (_dir, addr) = fake_daemon("OK 1073741824\n").await;
        let mut s = addr.connect(1024).await.expect("connect");
        let mut raw = [0u8; 3];
        s.read_exact(&mut raw).await.expect("raw bytes");
        assert_eq!(&raw, b"raw");
    }

    #[tokio::test]
    async fn hybrid_closed_connection_is_a_transient_refusal() {
        let (_dir, addr) = fake_daemon("").await;
        let err = addr.connect(1024).await.expect_err("refused");
        assert!(matches!(err, VsockError::Refused { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    /// vhost-device-vsock 0.3 panics when the guest's `OK` meets a closed
    /// socket; a connect cancelled before the answer must leave the socket
    /// open until the answer is written, and close it after.
    #[tokio::test]
    async fn a_cancelled_hybrid_connect_stays_open_until_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&uds).expect("bind");
        let addr = VsockAddr::Hybrid { uds };
        let (cancelled_tx, cancelled) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).await.expect("read connect");
            cancelled.await.expect("the client cancelled");
            // The daemon's `write_all(..).unwrap()`: fails (EPIPE) on a
            // socket the client closed.
            let write = s.write_all(b"OK 1024\n").await;
            let mut rest = Vec::new();
            let closed = s.read_to_end(&mut rest).await;
            (write, closed, rest)
        });
        let attempt = tokio::time::timeout(Duration::from_millis(50), addr.connect(1024)).await;
        assert!(
            attempt.is_err(),
            "the fake daemon does not answer before the cancel"
        );
        cancelled_tx.send(()).expect("daemon waits");
        let (write, closed, rest) = tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .expect("the abandoned socket is closed once answered")
            .expect("daemon task");
        write.expect("the answer reaches an open socket");
        closed.expect("a clean close after the answer");
        assert!(
            rest.is_empty(),
            "nothing is sent on an abandoned connect: {rest:?}"
        );
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let addr = VsockAddr::Hybrid {
            uds: PathBuf::from("/nonexistent/vc/vsock.sock"),
        };
        let err = addr.connect(1024).await.expect_err("no socket");
        assert!(matches!(err, VsockError::Connect { .. }), "{err:?}");
    }
}
