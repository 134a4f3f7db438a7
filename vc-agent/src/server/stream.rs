//! A process stream connection: after the `StreamAttach` frame and the agent's
//! `Response::Ok`, raw bytes.
//!
//! - **Stdout / Stderr**: the pipe is copied to the connection through one fixed
//!   buffer until the pipe's end-of-file (the process and every holder of the
//!   write end closed it), then the connection is closed. After the process
//!   exits, everything it wrote is still in the pipe and is delivered first. A
//!   host that reads slowly leaves the pipe full, which blocks the process.
//! - **Stdin**: the connection is copied to the pipe; the host shutting down its
//!   write side closes the pipe (end-of-file for the process). `CloseStdin`, or the
//!   process's exit, ends the copy too.
//! - **Tty**: both directions on the pty master; the stream ends when the
//!   terminal's output ends (every slave holder closed it).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tracing::Instrument;
use vc_proto::{
    AgentError, ErrorCode, Frame, FrameKind, FrameReader, FrameWriter, Response, StreamAttach,
};

use super::ServeError;
use crate::agent::Agent;
use crate::process::{stdio::set_nonblocking, Process, StreamEnd};

/// Size of the one copy buffer of a stream.
pub const COPY_BUFFER: usize = 128 * 1024;

pub(super) async fn serve_stream<S>(
    agent: Arc<Agent>,
    frame: Frame,
    reader: FrameReader<ReadHalf<S>>,
    mut writer: FrameWriter<WriteHalf<S>>,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = frame.header.id;
    let attached = frame
        .decode::<StreamAttach>(FrameKind::StreamAttach)
        .map_err(|_| {
            AgentError::new(
                ErrorCode::Unsupported,
                "this agent cannot decode the stream attach request",
            )
        })
        .and_then(|attach| {
            let (process, end) = agent.attach(&attach)?;
            Ok((attach, process, end))
        });
    let (attach, process, end) = match attached {
        Ok(found) => found,
        Err(error) => {
            tracing::info!("stream attach refused: {}", error.message);
            writer
                .write_message(FrameKind::Response, id, &Response::Error(error))
                .await?;
            return Ok(());
        }
    };
    writer
        .write_message(FrameKind::Response, id, &Response::Ok)
        .await?;
    let span = tracing::debug_span!(
        "stream",
        container_id = %attach.process.container_id,
        exec_id = ?attach.process.exec_id,
        stream = ?attach.stream,
    );
    let (from_host, to_host) = (reader.into_inner(), writer.into_inner());
    let copied = async {
        match end {
            StreamEnd::Output(fd) => copy_output(fd, to_host).await,
            StreamEnd::Stdin { fd, close } => copy_input(fd, close, &process, from_host).await,
            StreamEnd::Tty(fd) => copy_tty(fd, from_host, to_host).await,
        }
    }
    .instrument(span)
    .await;
    match copied {
        Ok(bytes) => {
            tracing::debug!(bytes, "stream ended");
            Ok(())
        }
        Err(e) => Err(ServeError::Stream(e)),
    }
}

async fn copy_output<S: AsyncWrite + Unpin>(fd: OwnedFd, mut stream: S) -> io::Result<u64> {
    let mut pipe = pipe::Receiver::from_owned_fd(fd)?;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
    stream.shutdown().await?;
    Ok(total)
}

async fn copy_input<S: AsyncRead + Unpin>(
    fd: OwnedFd,
    close: Arc<Notify>,
    process: &Process,
    mut stream: S,
) -> io::Result<u64> {
    let mut pipe = pipe::Sender::from_owned_fd(fd)?;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    let ended = async {
        tokio::select! {
            () = close.notified() => {}
            _ = process.wait() => {}
        }
    };
    tokio::pin!(ended);
    loop {
        let n = tokio::select! {
            read = stream.read(&mut buf) => read?,
            () = &mut ended => break,
        };
        if n == 0 {
            break;
        }
        tokio::select! {
            written = pipe.write_all(&buf[..n]) => match written {
                Ok(()) => total += n as u64,
                // The process closed its stdin: nothing more to deliver.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(e),
            },
            () = &mut ended => break,
        }
    }
    // Dropping the pipe's write end is the end-of-file.
    drop(pipe);
    Ok(total)
}

async fn read_master(master: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = master.readable().await?;
        match ready.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from)) {
            Ok(Ok(n)) => return Ok(n),
            // EIO: every holder of the slave closed it, the terminal has ended.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

async fn write_master(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut ready = master.writable().await?;
        match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

async fn copy_tty<R, W>(fd: OwnedFd, mut from_host: R, mut to_host: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    set_nonblocking(&fd)?;
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, so the descriptor stays
    // open and the same until the `AsyncFd` is dropped.
    let master = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
    let input = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_host.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_master(&master, &buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The host stopped typing; the output goes on.
        std::future::pending::<()>().await;
    };
    let output = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut total = 0u64;
        loop {
            let n = read_master(&master, &mut buf).await?;
            if n == 0 {
                break;
            }
            to_host.write_all(&buf[..n]).await?;
            total += n as u64;
        }
        to_host.shutdown().await?;
        Ok::<u64, io::Error>(total)
    };
    tokio::select! {
        total = output => total,
        () = input => Ok(0),
    }
}
