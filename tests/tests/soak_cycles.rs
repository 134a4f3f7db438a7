//! The soak: pods created, started, given a container with a volume, exec'd
//! into, updated, stopped and deleted over and over through the library in
//! one process, every other one in a network namespace, with a leak
//! accounting after every 10 cycles that must find nothing left: host
//! processes, that process's open fds, mounts, taps and qdiscs, cgroups,
//! files under the state root, CIDs and lock files, temporary files (see
//! `support/soak.rs` and `support/account.rs`).
//!
//! The soak runs in a child process (this test binary again, this test only)
//! whose `TMPDIR` is a fresh directory, so that the temporary files counted
//! are exactly those of the library and the helpers it starts; once the child
//! has exited, that directory must be empty too.
//!
//! 20 cycles in the test suite; `cargo xtask soak --cycles N` runs this test
//! with `VC_SOAK_CYCLES=N`.

mod support;

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use support::soak::{Soak, ACCOUNT_EVERY, CYCLE_DEADLINE};
use support::ChildGuard;

/// Environment variable: how many cycles (default [`DEFAULT_CYCLES`]).
const CYCLES_ENV: &str = "VC_SOAK_CYCLES";

/// Set in the child process that runs the soak.
const CHILD_ENV: &str = "VC_SOAK_CHILD";

/// Cycles in the test suite.
const DEFAULT_CYCLES: u32 = 20;

/// This test's name, for running it alone in the child.
const TEST_NAME: &str = "pods_cycled_through_every_verb_leave_nothing_behind";

#[test]
fn pods_cycled_through_every_verb_leave_nothing_behind() -> Result<()> {
    let cycles = match std::env::var(CYCLES_ENV) {
        Ok(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{CYCLES_ENV}={v:?} is not a positive number"))?,
        Err(_) => DEFAULT_CYCLES,
    };
    if std::env::var_os(CHILD_ENV).is_some() {
        return soak(cycles);
    }
    let tmp = tempfile::Builder::new()
        .prefix("vcsoak-tmp")
        .tempdir_in("/tmp")
        .context("cannot create the soak's temporary directory")?;
    let mut child = ChildGuard::spawn(
        "the soak",
        Command::new(std::env::current_exe()?)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env(CYCLES_ENV, cycles.to_string())
            .env("TMPDIR", tmp.path()),
    )?;
    // Each cycle is bounded by its deadline; the rest (the accountings,
    // the runtime's setup and teardown) gets a generous 10 minutes.
    let bound = CYCLE_DEADLINE * cycles + Duration::from_secs(600);
    let status = child
        .wait_timeout(bound)?
        .with_context(|| format!("the soak did not end within {bound:?}; killed"))?;
    ensure!(
        status.success(),
        "the soak failed ({status}): its output is above"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())?
        .flatten()
        .map(|e| e.path())
        .collect();
    ensure!(
        left.is_empty(),
        "temporary files left in the soak's TMPDIR after it exited: {left:?}"
    );
    Ok(())
}

/// The soak itself, in the child.
fn soak(cycles: u32) -> Result<()> {
    let soak = Soak::new()?;
    eprintln!(
        "soak: {cycles} cycles on the runtime root {}",
        soak.root().display()
    );
    let report = soak.run(cycles)?;
    ensure!(report.cycles.len() == cycles as usize, "{report:?}");
    let expected = cycles.div_ceil(ACCOUNT_EVERY) as usize;
    ensure!(
        report.accountings.len() == expected,
        "{} accountings for {cycles} cycles, not {expected}",
        report.accountings.len()
    );
    for a in &report.accountings {
        a.ledger.ensure_clean(&format!("after cycle {}", a.after))?;
    }
    Ok(())
}
