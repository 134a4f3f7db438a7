//! How the client opens more connections to the agent (one per process
//! stream): the [`Dialer`] trait, its vsock implementation and a closure
//! adapter for tests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::vsock::VsockAddr;

/// A byte stream to the agent: anything readable and writable that can move
/// between tasks.
pub trait AgentIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AgentIo for T {}

/// A connection to the agent of any transport, as a [`Dialer`] returns it and
/// as [`AgentClient::attach`](super::AgentClient::attach) hands it out.
pub struct RawStream(Box<dyn AgentIo>);

impl RawStream {
    /// Boxes a connection.
    pub fn new(io: impl AgentIo) -> Self {
        Self(Box::new(io))
    }
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawStream(..)")
    }
}

impl AsyncRead for RawStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RawStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// Opens a new raw connection to the agent's port (no handshake yet).
pub trait Dialer: Send + Sync + std::fmt::Debug {
    /// Opens one connection.
    fn dial(&self) -> BoxFuture<'_, io::Result<RawStream>>;
}

/// Dials a guest port over vsock, in either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockDialer {
    /// The guest's vsock address.
    pub addr: VsockAddr,
    /// The agent's port.
    pub port: u32,
}

impl Dialer for VsockDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<RawStream>> {
        async move {
            let stream = self
                .addr
                .connect(self.port)
                .await
                .map_err(io::Error::other)?;
            Ok(RawStream::new(stream))
        }
        .boxed()
    }
}

/// A [`Dialer`] made from a closure returning a future, for in-memory tests
/// and for embedders with their own transport.
pub struct FnDialer<F>(F);

impl<F> std::fmt::Debug for FnDialer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnDialer(..)")
    }
}

impl<F, Fut> Dialer for FnDialer<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = io::Result<RawStream>> + Send + 'static,
{
    fn dial(&self) -> BoxFuture<'_, io::Result<RawStream>> {
        (self.0)().boxed()
    }
}

/// Makes a [`Dialer`] from a closure.
pub fn dialer_fn<F, Fut>(f: F) -> FnDialer<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = io::Result<RawStream>> + Send + 'static,
{
    FnDialer(f)
}
