//! The one stream path of virtc (`run`, `container exec`, and so the demo):
//! relays a [`Process`]'s streams to virtc's own stdin, stdout and stderr and
//! returns the process's exit code.
//!
//! With a terminal, the local terminal (when stdin is one) is put in raw mode
//! for the relay and restored by a drop guard on every way out (normal exit,
//! error, panic unwinding, SIGTERM/SIGHUP/SIGINT to virtc); window size changes
//! (SIGWINCH) are forwarded as resizes.

use std::convert::Infallible;
use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;

use anyhow::Context;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use vc_host::runtime::{Process, ProcessError};

/// Relays the streams of `process` until it exits and every byte of its
/// output is written; returns its exit code (255 when the VM went away).
/// With `interactive`, virtc's stdin goes to the process (end-of-file too).
pub async fn relay(mut process: Process, interactive: bool) -> anyhow::Result<i32> {
    let _raw = match (&process.tty, std::io::stdin().is_terminal()) {
        (Some(_), true) => Some(RawMode::enter()?),
        _ => None,
    };
    if process.is_terminal() {
        if let Some((rows, cols)) = window_size() {
            process.resize(rows, cols).await?;
        }
    }
    let input = interactive.then(stdin_chunks);
    let mut stop = [
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
        signal(SignalKind::interrupt())?,
    ];
    let mut winch = signal(SignalKind::window_change())?;

    let tty = process.tty.take();
    let (tty_read, tty_write) = match tty {
        Some(tty) => {
            let (r, w) = tokio::io::split(tty);
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let stdin_writer: Option<Box<dyn AsyncWrite + Unpin + Send>> =
        match (tty_write, process.stdin.take()) {
            (Some(w), _) => Some(Box::new(w)),
            (None, Some(s)) => Some(Box::new(s)),
            (None, None) => None,
        };
    let stdout = process.stdout.take();
    let stderr = process.stderr.take();
    let terminal = process.is_terminal();

    let feed = async move {
        let (Some(mut input), Some(mut to)) = (input, stdin_writer) else {
            return std::future::pending::<Infallible>().await;
        };
        while let Some(chunk) = input.recv().await {
            if to.write_all(&chunk).await.is_err() || to.flush().await.is_err() {
                break;
            }
        }
        if !terminal {
            // End-of-file for the process.
            let _ = to.shutdown().await;
        }
        std::future::pending::<Infallible>().await
    };
    let outputs = async {
        let out = async {
            if let Some(mut r) = tty_read {
                copy_out(&mut r, tokio::io::stdout()).await
            } else if let Some(mut r) = stdout {
                copy_out(&mut r, tokio::io::stdout()).await
            } else {
                Ok(())
            }
        };
        let err = async {
            match stderr {
                Some(mut r) => copy_out(&mut r, tokio::io::stderr()).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(out, err)
    };
    let resizes = async {
        while winch.recv().await.is_some() {
            if let Some((rows, cols)) = window_size() {
                if let Err(e) = process.resize(rows, cols).await {
                    tracing::warn!(error = %e, "cannot forward the window size");
                }
            }
        }
        std::future::pending::<Infallible>().await
    };
    let [term, hup, int] = &mut stop;
    let stopped = async {
        tokio::select! {
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
            _ = int.recv() => libc::SIGINT,
        }
    };
    let finished = async {
        let (copied, code) = tokio::join!(outputs, process.wait());
        copied.context("cannot relay the process's output")?;
        Ok::<_, anyhow::Error>(code)
    };
    let code = tokio::select! {
        done = finished => match done? {
            Ok(code) => code,
            Err(e) => return gone(e),
        },
        gone_err = process.closed() => return gone(gone_err),
        sig = stopped => return Ok(128 + sig),
        never = feed => match never {},
        never = resizes => match never {},
    };
    Ok(code)
}

/// A wait that failed: 255 with a message when the VM is gone, else the error.
fn gone(e: ProcessError) -> anyhow::Result<i32> {
    match e.exit_code() {
        Some(code) => {
            eprintln!("virtc: {}", crate::shown(&e));
            Ok(code)
        }
        None => Err(e.into()),
    }
}

async fn copy_out(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(from, &mut buf).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await?;
        // Interactive output must show at once.
        to.flush().await?;
    }
    to.flush().await
}

/// virtc's stdin as chunks, read by a thread of its own (a blocking read of a
/// terminal cannot be cancelled; the thread ends with the process). The
/// channel closes at end-of-file.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// The local terminal's size (rows, columns), from stdout or stdin.
fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
        // points to a live local for the whole call.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// The local terminal in raw mode; the previous mode is restored on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("cannot read the terminal's mode")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if let Err(e) = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved) {
            eprintln!("virtc: cannot restore the terminal's mode: {e}");
        }
    }
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMode")
    }
}
