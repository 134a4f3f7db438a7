//! Process streams on the host: one extra connection per stream of a process
//! (stdin, stdout, stderr or a terminal), opened with a
//! [`StreamAttach`](vc_proto::StreamAttach) frame and raw bytes after the
//! agent's `Ok`, or, for stdout and stderr of a process about to start with
//! [`AgentClient::exec_direct`], parked in advance with a
//! [`StreamPark`](vc_proto::StreamPark) frame (protocol version 3);
//! [`ProcessIo`] bundles them and [`collect_output`] reads a whole process's
//! output and exit code.
//!
//! End of stream: the agent closes an output stream after the last byte the
//! process wrote, so reading to end-of-file gets every byte. For stdin, shutting
//! down the writer ([`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt::shutdown))
//! is end-of-file for the process.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tracing::{debug, debug_span, Instrument};
use vc_proto::{
    ErrorCode, FrameKind, FrameReader, FrameWriter, ProcessRef, Response, StreamAttach, StreamKind,
    StreamPark,
};

use super::client::{hello, AgentClient};
use super::dial::RawStream;
use super::error::{AgentClientError, LinkDown, StreamError};
use super::methods::response_name;
use super::options::vm_gone;

impl AgentClient {
    /// Opens a new connection to the agent, attaches it to `stream` of
    /// `process`, and returns it carrying raw bytes.
    ///
    /// Needs a dialer: a client made by [`connect`](Self::connect) dials the
    /// same vsock address and port; one made by
    /// [`from_stream_with`](Self::from_stream_with) uses the dialer given
    /// there. Bounded by the call timeout and the liveness probe.
    pub async fn attach(
        &self,
        process: &ProcessRef,
        stream: StreamKind,
    ) -> Result<RawStream, AgentClientError> {
        let attach = StreamAttach {
            process: process.clone(),
            stream,
        };
        self.open_stream(process, stream, FrameKind::StreamAttach, &attach, "attach")
            .await
    }

    /// Parks a new connection as `stream` (stdout or stderr) of a process
    /// that is not started yet (protocol version 3): a later
    /// [`exec_direct`](Self::exec_direct) of that process makes the
    /// connection the process's own stdout or stderr, and the returned stream
    /// then carries exactly what the process writes. Unclaimed, the agent
    /// closes it after twice the call timeout (the exec may wait in the agent
    /// behind its late module loading); [`park_for`](Self::park_for) takes
    /// another time.
    pub async fn park(
        &self,
        process: &ProcessRef,
        stream: StreamKind,
    ) -> Result<RawStream, AgentClientError> {
        self.park_for(process, stream, self.inner.opts.call_timeout * 2)
            .await
    }

    /// As [`park`](Self::park), closed by the agent when no exec claims it
    /// within `unclaimed` (cut to
    /// [`MAX_PARK_TIMEOUT_MS`](vc_proto::MAX_PARK_TIMEOUT_MS)).
    pub async fn park_for(
        &self,
        process: &ProcessRef,
        stream: StreamKind,
        unclaimed: Duration,
    ) -> Result<RawStream, AgentClientError> {
        let timeout_ms = u32::try_from(unclaimed.as_millis())
            .unwrap_or(u32::MAX)
            .min(vc_proto::MAX_PARK_TIMEOUT_MS);
        let park = StreamPark {
            process: process.clone(),
            stream,
            timeout_ms,
        };
        self.open_stream(process, stream, FrameKind::StreamPark, &park, "park")
            .await
    }

    /// Parks stdout and stderr of a process about to be started with
    /// [`exec_direct`](Self::exec_direct), both at once.
    pub async fn park_output(&self, process: &ProcessRef) -> Result<ProcessIo, AgentClientError> {
        let (stdout, stderr) = tokio::try_join!(
            self.park(process, StreamKind::Stdout),
            self.park(process, StreamKind::Stderr),
        )?;
        Ok(ProcessIo {
            stdout: Some(ProcessOutput(stdout)),
            stderr: Some(ProcessOutput(stderr)),
            ..ProcessIo::default()
        })
    }

    /// Attaches the stdin of a started process.
    pub async fn attach_stdin(
        &self,
        process: &ProcessRef,
    ) -> Result<ProcessStdin, AgentClientError> {
        self.attach(process, StreamKind::Stdin)
            .await
            .map(ProcessStdin)
    }

    /// Opens a new connection to the agent, sends `first` as a frame of
    /// `kind` (a stream attach or park), and returns the connection carrying
    /// raw bytes after the agent's `Ok`. Needs a dialer (see
    /// [`attach`](Self::attach)); bounded by the call timeout and the
    /// liveness probe.
    async fn open_stream<T: serde::Serialize + Sync>(
        &self,
        process: &ProcessRef,
        stream: StreamKind,
        kind: FrameKind,
        first: &T,
        during: &'static str,
    ) -> Result<RawStream, AgentClientError> {
        let span = debug_span!(
            "agent_attach",
            container = %process.container_id,
            exec = ?process.exec_id,
            stream = ?stream,
            during
        );
        async move {
            let dialer = self
                .inner
                .dialer
                .as_ref()
                .ok_or(AgentClientError::NoDialer)?;
            if let Some(LinkDown::VmGone) = self.inner.shared.down() {
                return Err(AgentClientError::VmGone { during });
            }
            let opts = &self.inner.opts;
            let exchange = async {
                let conn = dialer.dial().await.map_err(StreamError::Dial)?;
                let (read, write) = tokio::io::split(conn);
                let mut reader = FrameReader::new(read);
                let mut writer = FrameWriter::new(write);
                vc_proto::handshake_client(&mut reader, &mut writer, &hello())
                    .await
                    .map_err(StreamError::Handshake)?;
                writer
                    .write_message(kind, 0, first)
                    .await
                    .map_err(StreamError::Frame)?;
                let (_, response) = reader
                    .read_message::<Response>(FrameKind::Response)
                    .await
                    .map_err(StreamError::Frame)?;
                match response {
                    Response::Ok => {}
                    Response::Error(e) => return Err(StreamError::Refused(e)),
                    other => return Err(StreamError::Unexpected(response_name(&other))),
                }
                // The frame reader reads exactly one frame's bytes, so nothing
                // of the raw stream that follows has been consumed.
                Ok(reader.into_inner().unsplit(writer.into_inner()))
            };
            let result = tokio::select! {
                biased;
                _ = vm_gone(opts.vm_alive.as_ref(), opts.liveness_interval) => {
                    return Err(AgentClientError::VmGone { during });
                }
                result = tokio::time::timeout(opts.call_timeout, exchange) => result
                    .unwrap_or(Err(StreamError::Timeout(opts.call_timeout))),
            };
            let conn = result.map_err(|source| AgentClientError::Stream {
                process: process.clone(),
                stream,
                source,
            })?;
            debug!("attached");
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    /// Attaches the streams of a process: with `terminal`, its terminal only;
    /// otherwise stdout and stderr, and stdin when `stdin` is set.
    pub async fn attach_process(
        &self,
        process: &ProcessRef,
        terminal: bool,
        stdin: bool,
    ) -> Result<ProcessIo, AgentClientError> {
        if terminal {
            let tty = self.attach(process, StreamKind::Tty).await?;
            return Ok(ProcessIo {
                tty: Some(ProcessTty(tty)),
                ..ProcessIo::default()
            });
        }
        let open_stdin = async {
            if stdin {
                self.attach(process, StreamKind::Stdin).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (stdin, stdout, stderr) = tokio::try_join!(
            open_stdin,
            self.attach(process, StreamKind::Stdout),
            self.attach(process, StreamKind::Stderr),
        )?;
        Ok(ProcessIo {
            stdin: stdin.map(ProcessStdin),
            stdout: Some(ProcessOutput(stdout)),
            stderr: Some(ProcessOutput(stderr)),
            tty: None,
        })
    }
}

/// Whether `error` is the agent refusing a park because it cannot hand
/// this connection to a process (an in-memory connection), so that the
/// caller falls back to the agent's pipes.
pub fn park_unsupported(error: &AgentClientError) -> bool {
    matches!(
        error,
        AgentClientError::Stream {
            source: StreamError::Refused(e),
            ..
        } if e.code == ErrorCode::Unsupported
    )
}

/// The attached streams of one process.
///
/// The streams are plain connections: they do not watch the VM. To bound a
/// read by the VM's life, race it against [`AgentClient::closed`].
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// Writer to the process's stdin; shutting it down is end-of-file.
    pub stdin: Option<ProcessStdin>,
    /// The process's stdout.
    pub stdout: Option<ProcessOutput>,
    /// The process's stderr.
    pub stderr: Option<ProcessOutput>,
    /// The process's terminal, both ways (terminal mode only).
    pub tty: Option<ProcessTty>,
}

/// A process's stdin. Shutting it down is end-of-file for the process.
#[derive(Debug)]
pub struct ProcessStdin(RawStream);

/// A process's stdout or stderr; end-of-file after the process's last byte.
#[derive(Debug)]
pub struct ProcessOutput(RawStream);

/// A process's terminal: reads give its output, writes are its input.
#[derive(Debug)]
pub struct ProcessTty(RawStream);

macro_rules! forward_read {
    ($t:ident) => {
        impl AsyncRead for $t {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }
    };
}

macro_rules! forward_write {
    ($t:ident) => {
        impl AsyncWrite for $t {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.0).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.0).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.0).poll_shutdown(cx)
            }
        }
    };
}

forward_read!(ProcessOutput);
forward_read!(ProcessTty);
forward_write!(ProcessStdin);
forward_write!(ProcessTty);

impl ProcessOutput {
    /// The underlying connection.
    pub fn into_inner(self) -> RawStream {
        self.0
    }
}

impl ProcessStdin {
    /// The underlying connection.
    pub fn into_inner(self) -> RawStream {
        self.0
    }
}

impl ProcessTty {
    /// The underlying connection.
    pub fn into_inner(self) -> RawStream {
        self.0
    }
}

/// A finished process's whole output and exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Everything the process wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the process wrote to stderr.
    pub stderr: Vec<u8>,
    /// Exit status, or 128 + signal number.
    pub exit_code: i32,
}

/// Attaches stdout and stderr of `process` (not a terminal process), reads
/// both to end-of-file concurrently, and waits for the exit code.
///
/// The wait is sent while the streams are read, so that a dead VM is noticed
/// through the liveness probe at any point; the whole collection is also
/// ended by the control connection going down. Then the error is
/// [`AgentClientError::VmGone`] or [`AgentClientError::ConnectionLost`]
/// ([`AgentClientError::exit_code`] gives
/// [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE) for both).
///
/// Everything is kept in memory, at most [`COLLECT_OUTPUT_LIMIT`] bytes per
/// stream: a guest that writes more gets [`StreamError::TooLarge`], not the
/// host's memory. [`collect_output_limited`] takes another limit.
pub async fn collect_output(
    client: &AgentClient,
    process: &ProcessRef,
) -> Result<Output, AgentClientError> {
    collect_output_limited(client, process, COLLECT_OUTPUT_LIMIT).await
}

/// Most bytes [`collect_output`] keeps of each stream.
pub const COLLECT_OUTPUT_LIMIT: usize = 64 << 20;

/// As [`collect_output`], with at most `limit` bytes per stream.
pub async fn collect_output_limited(
    client: &AgentClient,
    process: &ProcessRef,
    limit: usize,
) -> Result<Output, AgentClientError> {
    let read_all = |output: RawStream, stream: StreamKind| async move {
        let fail = |source| AgentClientError::Stream {
            process: process.clone(),
            stream,
            source,
        };
        let mut bytes = Vec::new();
        // One byte past the limit tells "exactly the limit" from "more".
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        output
            .take(cap)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| fail(StreamError::Read(e)))?;
        if bytes.len() > limit {
            return Err(fail(StreamError::TooLarge(limit)));
        }
        Ok::<_, AgentClientError>(bytes)
    };
    let collect = async {
        let (stdout, stderr) = tokio::try_join!(
            client.attach(process, StreamKind::Stdout),
            client.attach(process, StreamKind::Stderr),
        )?;
        let (stdout, stderr, exit_code) = tokio::try_join!(
            read_all(stdout, StreamKind::Stdout),
            read_all(stderr, StreamKind::Stderr),
            client.wait(process),
        )?;
        Ok(Output {
            stdout,
            stderr,
            exit_code,
        })
    };
    tokio::select! {
        output = collect => output,
        cause = client.closed() => Err(cause.for_request("collect-output")),
    }
}
