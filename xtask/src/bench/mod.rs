//! `cargo xtask bench <boot|pod|io|net|storm|density>`: benchmarks (not timed tests). Each prints
//! its results and the floor or goal it compares against: `boot` ([`boot`], with its floor image
//! in [`floor`]), `pod` ([`pod`]), `io` ([`io`], floor in [`io_floor`]), `net` ([`net`]), `storm`
//! ([`storm`], 16 starts at once against one after another) and `density` ([`density`], host
//! memory and CPU of N idle pods, read from `/proc` by [`procfs`]); `pod --pool` adds warm pool
//! starts ([`pool`]); [`inputs`] finds what they start from and [`stats`] summarizes samples.

mod boot;
mod density;
mod floor;
mod inputs;
mod io;
mod io_floor;
mod net;
mod pod;
mod pool;
mod procfs;
mod stats;
mod storm;

use anyhow::Result;

use crate::ctx::Ctx;

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Which benchmark.
    #[arg(value_enum)]
    pub which: Bench,
    /// How many runs of each measured path.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// `pod` only: also measure pods that adopt a warm pool slot, against cold boots in the
    /// same run, and the pool's idle cost per slot.
    #[arg(long)]
    pub pool: bool,
    /// density: how many idle pods (keep it low on a small or shared host).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pods: u32,
    /// density: TCG translation cache size in MiB (default: the library's).
    #[arg(long, value_name = "MIB")]
    pub tb_size_mib: Option<u32>,
    /// density: boot the pods without the free page reporting balloon.
    #[arg(long)]
    pub no_free_page_reporting: bool,
    /// density: an extra guest kernel argument (repeatable).
    #[arg(long, value_name = "ARG")]
    pub kernel_arg: Vec<String>,
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
    /// 16 pod starts at once against the same 16 one after another (`--runs` rounds).
    Storm,
    /// Host memory (PSS), CPU, start and exec time of `--pods` idle pods, before and after
    /// each frees 100 MiB.
    Density,
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    match args.which {
        Bench::Boot => boot::run(ctx, args.runs),
        Bench::Pod => pod::run(ctx, args.runs, args.pool),
        Bench::Io => io::run(ctx, args.runs),
        Bench::Net => net::run(ctx, args.runs),
        Bench::Storm => storm::run(ctx, args.runs),
        Bench::Density => density::run(
            ctx,
            &density::Knobs {
                pods: args.pods,
                tb_size_mib: args.tb_size_mib,
                no_free_page_reporting: args.no_free_page_reporting,
                kernel_args: args.kernel_arg.clone(),
            },
        ),
    }
}
