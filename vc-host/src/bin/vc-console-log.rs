//! vc-console-log: the bounded guest console of one VM. Listens on a Unix
//! socket, takes QEMU's connection (`-chardev socket`), and writes what the
//! guest prints to a log file that rotates once, keeping at most
//! `--max-bytes` on disk. Exits when QEMU closes the connection. Started,
//! recorded and stopped by `vc_host::hypervisor` like the helper daemons;
//! see `vc_host::hypervisor::console`.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use vc_host::hypervisor::console::{serve, RotatingLog};

/// Bounded guest console for one VM.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unix socket for QEMU's console (created here; the launcher connects
    /// and hands the connection to QEMU).
    #[arg(long)]
    socket: PathBuf,
    /// The console file; the previous one is kept as `<log>.1`.
    #[arg(long)]
    log: PathBuf,
    /// Most bytes kept in both files together.
    #[arg(long)]
    max_bytes: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vc-console-log: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut log = RotatingLog::create(&args.log, args.max_bytes)
        .with_context(|| format!("cannot create {}", args.log.display()))?;
    let listener = UnixListener::bind(&args.socket)
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    let served = serve(&listener, &mut log).context("copying the console failed");
    let _ = std::fs::remove_file(&args.socket);
    served
}
