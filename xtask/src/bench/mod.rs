//! `cargo xtask bench <boot|pod|io|net|storm|density|all> [--report DIR]`: benchmarks (not timed
//! tests). Each prints its results and the floor or goal it compares against, and returns them
//! as a [`report::Outcome`]; `--report DIR` writes the outcomes of the run as `report.md`,
//! `results.json` and SVG plots ([`report`], [`plot`]), and `all` runs every bench in turn
//! (`density` at 1, 2, 4, ... up to `--pods` pods). The benches: `boot` ([`boot`], with its floor image
//! in [`floor`]), `pod` ([`pod`]), `io` ([`io`], floor in [`io_floor`]), `net` ([`net`], floor in
//! [`net_floor`], namespaces in [`net_ns`]), `storm`
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
mod net_floor;
mod net_ns;
mod plot;
mod pod;
mod pool;
mod procfs;
mod report;
mod stats;
mod storm;

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::ctx::{self, Ctx};

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
    /// Write `report.md`, `results.json` and SVG plots of this run into DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
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
    /// Every bench above, one after another (`pod` with `--pool`; `density` at 1, 2, 4, ...
    /// up to `--pods` pods).
    All,
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let mut host = report::Host::probe(&ctx.workspace, command_line());
    let (outcomes, failures) = match args.which {
        Bench::All => all(ctx, args),
        one => (vec![one_bench(ctx, args, one, args.pods)?], Vec::new()),
    };
    host.finish();
    if let Some(dir) = &args.report {
        report::write(dir, &host, &outcomes, &failures)
            .with_context(|| format!("cannot write the report into {}", dir.display()))?;
        ctx::step(format!(
            "report written: {}",
            dir.join("report.md").display()
        ));
    }
    if !failures.is_empty() {
        let names: Vec<&str> = failures.iter().map(|f| f.bench.as_str()).collect();
        anyhow::bail!("{} bench(es) failed: {}", failures.len(), names.join(", "));
    }
    Ok(())
}

/// Every bench in turn. A bench that fails is recorded as failed, with its error, and the
/// others still run: the report shows the failure, and the command fails at the end.
fn all(ctx: &Ctx, args: &Args) -> (Vec<report::Outcome>, Vec<report::Failure>) {
    let mut runs: Vec<(Bench, u32, String)> = [Bench::Boot, Bench::Pod, Bench::Io, Bench::Net]
        .into_iter()
        .chain([Bench::Storm])
        .map(|b| (b, args.pods, format!("{b:?}").to_lowercase()))
        .collect();
    runs.extend(
        density_scales(args.pods)
            .into_iter()
            .map(|n| (Bench::Density, n, report::scaled_name("density", Some(n)))),
    );
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (which, pods, name) in runs {
        ctx::step(format!("bench {name}"));
        match one_bench(ctx, args, which, pods) {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                eprintln!("bench {name} failed: {e:#}");
                failures.push(report::Failure {
                    bench: name,
                    error: format!("{e:#}"),
                });
            }
        }
    }
    (outcomes, failures)
}

/// Rounds of `storm` in `all`: one round is 32 pod starts.
const ALL_STORM_ROUNDS: u32 = 2;

/// 1, 2, 4, ... below `max`, then `max`.
fn density_scales(max: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
        .take_while(|n| *n < max)
        .collect();
    v.push(max);
    v
}

fn one_bench(ctx: &Ctx, args: &Args, which: Bench, pods: u32) -> Result<report::Outcome> {
    match which {
        Bench::Boot => boot::run(ctx, args.runs),
        Bench::Pod => pod::run(ctx, args.runs, args.pool || args.which == Bench::All),
        Bench::Io => io::run(ctx, args.runs),
        Bench::Net => net::run(ctx, args.runs),
        Bench::Storm if args.which == Bench::All => {
            storm::run(ctx, args.runs.min(ALL_STORM_ROUNDS))
        }
        Bench::Storm => storm::run(ctx, args.runs),
        Bench::Density => density::run(
            ctx,
            &density::Knobs {
                pods,
                tb_size_mib: args.tb_size_mib,
                no_free_page_reporting: args.no_free_page_reporting,
                kernel_args: args.kernel_arg.clone(),
            },
        ),
        Bench::All => anyhow::bail!("`all` is not one bench"),
    }
}

/// The arguments after `bench`, for the report's header.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let from = args.iter().position(|a| a == "bench").map_or(0, |i| i + 1);
    args[from..].join(" ")
}

#[cfg(test)]
mod tests {
    use super::density_scales;

    #[test]
    fn density_scales_double_up_to_the_maximum() {
        assert_eq!(density_scales(1), [1]);
        assert_eq!(density_scales(4), [1, 2, 4]);
        assert_eq!(density_scales(6), [1, 2, 4, 6]);
        assert_eq!(density_scales(8), [1, 2, 4, 8]);
    }
}
