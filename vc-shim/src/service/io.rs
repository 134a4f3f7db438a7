//! Process stdio between the agent's streams and containerd's fifos.
//!
//! containerd creates the fifos and opens its ends around Create or Exec.
//! The shim opens the output fifos read-write (Linux allows it on a fifo):
//! the open never blocks and never fails for want of a reader, and closing
//! the shim's end is end-of-file for containerd. It opens the input fifo
//! read-only and non-blocking: readiness comes only once a writer has
//! connected (Linux reports hang-up only for writers that came after the
//! open), so containerd closing its end (ctr at end of its stdin) is
//! end-of-file for the process; so is CloseIO (the CRI plugin).
//!
//! Each output stream is copied by its own task until the agent ends it,
//! which it does after the last byte the process wrote; an output without a
//! fifo is still read (to nowhere), so the process never blocks on it. The
//! exit is reported only after both outputs ended ([`Pumps::drain`]): no
//! byte is lost at exit. The VM's death, or a deadline for output that never
//! ends (a background child holding it open), bounds the wait.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn, Instrument};
use vc_host::agent::AgentClient;
use vc_host::runtime::Process;

use super::error::ServiceError;
use super::state::Stdio;

/// How long output may still arrive after the VM is gone.
const GONE_GRACE: Duration = Duration::from_secs(1);

/// The copy buffer of one stream.
const BUF: usize = 64 * 1024;

/// containerd's fifos of one process, opened.
#[derive(Debug, Default)]
pub struct Fifos {
    stdin: Option<pipe::Receiver>,
    stdout: Option<pipe::Sender>,
    stderr: Option<pipe::Sender>,
}

fn opener() -> pipe::OpenOptions {
    let mut o = pipe::OpenOptions::new();
    o.read_write(true);
    o
}

impl Fifos {
    /// Opens the fifos `stdio` names (none blocks).
    pub fn open(stdio: &Stdio) -> Result<Self, ServiceError> {
        let err = |stream: &'static str, path: &str| {
            let path = path.to_owned();
            move |source| ServiceError::Fifo {
                stream,
                path,
                source,
            }
        };
        let nonempty = |p: &String| Some(p.clone()).filter(|p| !p.is_empty());
        let stdin = match nonempty(&stdio.stdin) {
            // Read-only: containerd closing its end is end-of-file.
            Some(p) => Some(
                pipe::OpenOptions::new()
                    .open_receiver(&p)
                    .map_err(err("stdin", &p))?,
            ),
            None => None,
        };
        let stdout = match nonempty(&stdio.stdout) {
            Some(p) => Some(opener().open_sender(&p).map_err(err("stdout", &p))?),
            None => None,
        };
        let stderr = match nonempty(&stdio.stderr).filter(|_| !stdio.terminal) {
            Some(p) => Some(opener().open_sender(&p).map_err(err("stderr", &p))?),
            None => None,
        };
        Ok(Fifos {
            stdin,
            stdout,
            stderr,
        })
    }

    /// Whether there is an input.
    pub fn has_stdin(&self) -> bool {
        self.stdin.is_some()
    }
}

/// The copy tasks of one process.
#[derive(Debug)]
pub struct Pumps {
    outputs: Vec<JoinHandle<()>>,
}

/// Starts copying between `process`'s streams (taken out of it) and `fifos`.
/// `close_stdin` ends the input after what containerd already wrote.
pub fn start(process: &mut Process, fifos: Fifos, close_stdin: Arc<Notify>, name: &str) -> Pumps {
    let span = tracing::debug_span!("io", process = %name);
    let mut outputs = Vec::new();
    let mut spawn_out = |reader: Box<dyn AsyncRead + Send + Unpin>,
                         fifo: Option<pipe::Sender>,
                         stream: &'static str| {
        outputs.push(tokio::spawn(
            copy_out(reader, fifo, stream).instrument(span.clone()),
        ));
    };
    if let Some(tty) = process.tty.take() {
        let (r, w) = tokio::io::split(tty);
        spawn_out(Box::new(r), fifos.stdout, "terminal");
        if let Some(fifo) = fifos.stdin {
            tokio::spawn(copy_in(fifo, w, close_stdin).instrument(span.clone()));
        }
    } else {
        if let Some(out) = process.stdout.take() {
            spawn_out(Box::new(out), fifos.stdout, "stdout");
        }
        if let Some(err) = process.stderr.take() {
            spawn_out(Box::new(err), fifos.stderr, "stderr");
        }
        if let (Some(fifo), Some(stdin)) = (fifos.stdin, process.stdin.take()) {
            tokio::spawn(copy_in(fifo, stdin, close_stdin).instrument(span.clone()));
        }
    }
    Pumps { outputs }
}

impl Pumps {
    /// Waits until every output has ended, the VM is gone (plus a short
    /// grace for bytes in flight), or `deadline` passes.
    pub async fn drain(self, agent: &AgentClient, deadline: Duration) {
        let all = futures::future::join_all(self.outputs);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => return,
            _ = agent.closed() => {}
            _ = tokio::time::sleep(deadline) => {
                warn!(secs = deadline.as_secs(), "output did not end after the process exited; reporting the exit anyway");
                return;
            }
        }
        if tokio::time::timeout(GONE_GRACE, &mut all).await.is_err() {
            debug!("the VM is gone; output streams abandoned");
        }
    }
}

/// Copies one output stream into its fifo (or nowhere) until it ends. A
/// fifo that fails is dropped and the stream still read, so that the process
/// never blocks on it.
async fn copy_out(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    mut fifo: Option<pipe::Sender>,
    stream: &'static str,
) {
    let mut buf = vec![0u8; BUF];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                debug!(stream, error = %e, "output stream failed");
                break;
            }
        };
        total += n as u64;
        if let Some(f) = fifo.as_mut() {
            if let Err(e) = f.write_all(&buf[..n]).await {
                warn!(stream, error = %e, "cannot write to containerd's fifo; discarding the rest");
                fifo = None;
            }
        }
    }
    debug!(stream, bytes = total, "output ended");
}

/// Copies containerd's input into the process until CloseIO (then what is
/// already in the fifo, then end-of-file) or until the process stops reading.
async fn copy_in(mut fifo: pipe::Receiver, mut dst: impl AsyncWrite + Unpin, close: Arc<Notify>) {
    let mut buf = vec![0u8; BUF];
    loop {
        tokio::select! {
            biased;
            _ = close.notified() => {
                // What containerd wrote before CloseIO is in the fifo now.
                // Read it straight from the (non-blocking) descriptor: the
                // runtime may not have seen its readiness yet.
                loop {
                    match nix::unistd::read(fifo.as_raw_fd(), &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if dst.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                break;
            }
            r = fifo.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = dst.write_all(&buf[..n]).await {
                        debug!(error = %e, "the process's input is closed");
                        return;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "stdin fifo failed");
                    break;
                }
            },
        }
    }
    if let Err(e) = dst.shutdown().await {
        debug!(error = %e, "cannot close the process's input");
    }
    debug!("input closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(dir: &std::path::Path, name: &str) -> String {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        p.to_string_lossy().into_owned()
    }

    #[tokio::test]
    async fn output_reaches_the_fifo_and_ends_with_eof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = mkfifo(dir.path(), "out");
        // containerd's reader, opened first as containerd does.
        let mut reader = pipe::OpenOptions::new()
            .open_receiver(&out)
            .expect("reader");
        let fifos = Fifos::open(&Stdio {
            stdout: out.clone(),
            ..Stdio::default()
        })
        .expect("opens");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let copy = tokio::spawn(copy_out(
            Box::new(std::io::Cursor::new(data.clone())),
            fifos.stdout,
            "stdout",
        ));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.expect("reads to EOF");
        copy.await.expect("joins");
        assert_eq!(got, data);
    }

    /// A stdin fifo opened as the shim opens it (before any writer).
    fn shim_stdin(dir: &std::path::Path) -> (String, pipe::Receiver) {
        let inp = mkfifo(dir, "in");
        let fifos = Fifos::open(&Stdio {
            stdin: inp.clone(),
            ..Stdio::default()
        })
        .expect("opens");
        assert!(fifos.has_stdin());
        (inp, fifos.stdin.expect("stdin"))
    }

    #[tokio::test]
    async fn close_io_delivers_pending_input_then_eof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inp, stdin) = shim_stdin(dir.path());
        let mut writer = pipe::OpenOptions::new().open_sender(&inp).expect("writer");
        let (dst, mut from_process) = tokio::io::duplex(1 << 20);
        let close = Arc::new(Notify::new());
        let pump = tokio::spawn(copy_in(stdin, dst, close.clone()));
        writer.write_all(b"hello ").await.expect("write");
        writer.write_all(b"world").await.expect("write");
        close.notify_one();
        let mut got = Vec::new();
        from_process.read_to_end(&mut got).await.expect("EOF");
        pump.await.expect("joins");
        assert_eq!(got, b"hello world");
        drop(writer);
    }

    #[tokio::test]
    async fn the_writer_closing_is_end_of_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The shim opens first, before containerd's writer exists: no
        // premature end-of-file.
        let (inp, stdin) = shim_stdin(dir.path());
        let (dst, mut from_process) = tokio::io::duplex(1 << 20);
        let pump = tokio::spawn(copy_in(stdin, dst, Arc::new(Notify::new())));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!pump.is_finished(), "no end of input before a writer came");
        let mut writer = pipe::OpenOptions::new().open_sender(&inp).expect("writer");
        writer.write_all(b"abc").await.expect("write");
        drop(writer);
        let mut got = Vec::new();
        from_process.read_to_end(&mut got).await.expect("EOF");
        pump.await.expect("joins");
        assert_eq!(got, b"abc");
    }
}
