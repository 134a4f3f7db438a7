//! The shim's logs. The serving process writes to the `log` fifo containerd
//! made in the bundle directory (its working directory) and reads into its
//! own log; `delete` writes to stderr, which containerd shows when it fails;
//! `start` logs nothing (containerd reads its stdout and stderr together as
//! the shim's address). `tracing` throughout; the shim library's `log` records
//! are bridged into it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// The fifo containerd reads the shim's log from.
const LOG_FIFO: &str = "log";

/// Sets up logging: `level` (raised to `debug` by containerd's `-debug`),
/// to the log fifo when `serving`, else to stderr. Falls back to stderr when
/// the fifo cannot be opened.
pub fn init(level: &str, debug: bool, serving: bool) {
    let level = if debug { "debug" } else { level };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fifo = serving.then(open_fifo).flatten();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let result = match fifo {
        Some(file) => builder.with_writer(Mutex::new(file)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        eprintln!("containerd-shim-vc-v2: cannot set up logging: {e}");
    }
}

/// Opens the log fifo for writing without waiting for a reader (containerd
/// opened its end before starting the shim; without one there is no fifo
/// to log to).
fn open_fifo() -> Option<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(LOG_FIFO)
        .ok()?;
    // Blocking writes from here on: a log line is never cut short.
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    Some(file)
}
