//! `cargo xtask bench <boot|pod|io|net>`: benchmarks (not timed tests). Each prints its results and
//! the floor it compares against. None is implemented yet.

use anyhow::{bail, Result};

use crate::ctx::Ctx;

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Which benchmark.
    #[arg(value_enum)]
    pub which: Bench,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Bench {
    /// QEMU spawn to agent handshake, against a minimal static init.
    Boot,
    /// Pod lifecycle.
    Pod,
    /// Exec latency and stdout throughput, against raw vsock.
    Io,
    /// Pod network throughput and latency.
    Net,
}

pub(crate) fn run(_ctx: &Ctx, args: &Args) -> Result<()> {
    let name = match args.which {
        Bench::Boot => "boot",
        Bench::Pod => "pod",
        Bench::Io => "io",
        Bench::Net => "net",
    };
    bail!("`cargo xtask bench {name}` is not implemented yet")
}
