//! `cargo xtask soak [--cycles N]`: the soak of `tests/tests/soak_cycles.rs` at any length. Builds
//! what the end-to-end tests need (as `cargo xtask test` does), then runs that one test with
//! `VC_SOAK_CYCLES=N`, its output shown as it goes. The engine (the cycles and the leak
//! accounting) lives with the tests, in `tests/tests/support/soak.rs` and `account.rs`, so that
//! the test suite's 20-cycle soak and this command run the same code.

use std::time::Instant;

use anyhow::Result;

use crate::ctx::{self, Ctx};
use crate::deps;
use crate::test::Inputs;

/// Options of `cargo xtask soak`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// How many create-to-delete cycles (an accounting follows every 10th and the last).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: u32,
}

/// The test that holds the soak.
const SOAK_TEST: &str = "soak_cycles";

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let start = Instant::now();
    ctx::step("[1/3] host dependencies");
    deps::run(ctx)?;
    ctx::step("[2/3] guest image, container rootfs, OCI image archives");
    let inputs = Inputs::prepare(ctx)?;
    ctx::step(format!("[3/3] {} soak cycles", args.cycles));
    ctx::run(
        inputs
            .cargo_test(ctx)
            .args(["--workspace", "--test", SOAK_TEST, "--"])
            .args(["--nocapture", "--test-threads=1"])
            .env("VC_SOAK_CYCLES", args.cycles.to_string()),
    )?;
    ctx::step(format!(
        "{} soak cycles ran clean in {:.0} s",
        args.cycles,
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}
