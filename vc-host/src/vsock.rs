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

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;

/// Longest reply line accepted from a hybrid vsock daemon.
const MAX_HYBRID_REPLY: usize = 64;

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
                let mut stream = UnixStream::connect(uds).await.map_err(io_err)?;
                stream
                    .write_all(format!("CONNECT {port}\n").as_bytes())
                    .await
                    .map_err(io_err)?;
                let reply = read_reply_line(&mut stream).await.map_err(io_err)?;
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

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let addr = VsockAddr::Hybrid {
            uds: PathBuf::from("/nonexistent/vc/vsock.sock"),
        };
        let err = addr.connect(1024).await.expect_err("no socket");
        assert!(matches!(err, VsockError::Connect { .. }), "{err:?}");
    }
}
