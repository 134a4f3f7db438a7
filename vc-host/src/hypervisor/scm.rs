//! A monitor connection that can pass descriptors: [`FdStream`] is a tokio
//! Unix stream whose next write after [`FdSender::attach`] carries the
//! attached descriptors (`SCM_RIGHTS`), which is how QMP's `add-fd` receives
//! a file the unprivileged QEMU could not open itself.
//!
//! QEMU's socket chardev keeps the descriptors that came with a read until
//! the command that wants them (`add-fd`) takes them, so they are attached to
//! the first bytes of that command.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Descriptors waiting for the next write of their [`FdStream`].
#[derive(Debug, Clone, Default)]
pub struct FdSender {
    pending: Arc<Mutex<Vec<OwnedFd>>>,
}

impl FdSender {
    /// Sends `fds` with the next bytes written.
    pub fn attach(&self, fds: Vec<OwnedFd>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(fds);
    }

    fn take(&self) -> Vec<OwnedFd> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }

    fn put_back(&self, fds: Vec<OwnedFd>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let later = std::mem::replace(&mut *pending, fds);
        pending.extend(later);
    }
}

/// A Unix stream that sends [`FdSender`]'s pending descriptors with its next
/// write.
#[derive(Debug)]
pub struct FdStream {
    inner: UnixStream,
    sender: FdSender,
}

impl FdStream {
    /// Wraps `inner`; descriptors attached to the returned sender go with
    /// the next write.
    pub fn new(inner: UnixStream) -> (Self, FdSender) {
        let sender = FdSender::default();
        (
            FdStream {
                inner,
                sender: sender.clone(),
            },
            sender,
        )
    }
}

fn send_with_fds(socket: RawFd, buf: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let iov = [IoSlice::new(buf)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map_err(std::io::Error::from)
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let fds = this.sender.take();
        if fds.is_empty() || buf.is_empty() {
            this.sender.put_back(fds);
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let socket = this.inner.as_raw_fd();
        loop {
            match this.inner.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                // Kept for the retry (or the error's caller).
                other => {
                    this.sender.put_back(fds);
                    return other.map(|r| r.map(|()| 0));
                }
            }
            match this
                .inner
                .try_io(Interest::WRITABLE, || send_with_fds(socket, buf, &raw))
            {
                // Sent: the receiver holds its own copies; ours close here.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    this.sender.put_back(fds);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::FromRawFd;

    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn attached_descriptors_go_with_the_next_write_only() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let (mut stream, sender) = FdStream::new(UnixStream::from_std(a).expect("tokio"));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"payload").expect("write");
        sender.attach(vec![std::fs::File::open(&file).expect("open").into()]);
        stream.write_all(b"first").await.expect("write");
        stream.write_all(b"second").await.expect("write");

        let recv = |len: usize| {
            let mut buf = vec![0u8; len];
            let mut space = nix::cmsg_space!([RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(b.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                .expect("recvmsg");
            let fds: Vec<RawFd> = msg
                .cmsgs()
                .expect("cmsgs")
                .flat_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds,
                    _ => Vec::new(),
                })
                .collect();
            let n = msg.bytes;
            (buf[..n].to_vec(), fds)
        };
        let (data, fds) = recv(5);
        assert_eq!(data, b"first");
        assert_eq!(fds.len(), 1, "the descriptor came with the first write");
        // SAFETY: the kernel just installed this descriptor for us.
        let got = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &got, &mut text).expect("read");
        assert_eq!(text, "payload");
        let (data, fds) = recv(16);
        assert_eq!(data, b"second");
        assert!(fds.is_empty(), "nothing attached to later writes");
    }
}
