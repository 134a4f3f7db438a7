//! `cargo xtask bench storm`: 16 `virtc pod start` processes at once against the same 16 pods
//! started one after another, in the same run and on the same runtime root, as separate processes
//! the way a node's agent would issue them. The ratio storm / sequential is the figure of issue 13
//! (goal at most 1.15): the host-wide boot admission must turn a burst into a queue served at the
//! host's pace, not into sixteen boots that all miss their deadline. Every pod is stopped and
//! deleted, even when a start fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::inputs::{scratch, Image};
use super::report::{Figure, Goal, Outcome};
use super::stats::{ms, Summary};
use crate::ctx::{self, Ctx};

/// Pods in the storm.
const PODS: usize = 16;
/// Goal of issue 13: storm / sequential at most this, in every round.
const GOAL_RATIO: f64 = 1.15;

pub(crate) fn run(ctx: &Ctx, runs: u32) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    ctx::run(ctx.cargo().args(["build", "-q", "-p", "vc-host", "--bins"]))?;
    let virtc = ctx.workspace.join("target/debug/virtc");
    let tmp = scratch("vs")?;
    let bench = Bench {
        virtc,
        root: tmp.path().join("r"),
        image: image.dir.clone(),
    };
    let width = std::thread::available_parallelism().map_or(1, |n| n.get());
    ctx::step(format!(
        "{runs} round(s) of {PODS} pods: started one after another, then all at once \
         (boot width: the default, {width} = the host's CPUs)"
    ));
    let ids: Vec<String> = (0..PODS).map(|i| format!("s{i}")).collect();
    let result = rounds(&bench, &ids, runs);
    // Whatever happened, leave nothing running.
    for id in &ids {
        let _ = bench.virtc(&["pod", "stop", id]);
        let _ = bench.virtc(&["pod", "delete", id]);
    }
    let (sequential, storm) = result?;
    let seq = Summary::of(&sequential).context("no samples")?;
    let sto = Summary::of(&storm).context("no samples")?;
    println!("\n{PODS} pods, {runs} round(s):");
    println!(
        "  one after another  median {:>9}  (min {}, max {})",
        ms(seq.median),
        ms(seq.min),
        ms(seq.max)
    );
    println!(
        "  all at once        median {:>9}  (min {}, max {})",
        ms(sto.median),
        ms(sto.min),
        ms(sto.max)
    );
    let ratios: Vec<f64> = storm
        .iter()
        .zip(&sequential)
        .map(|(s, q)| s.as_secs_f64() / q.as_secs_f64())
        .collect();
    let (worst_round, worst) =
        ratios.iter().copied().enumerate().fold(
            (0, 0.0),
            |best, (i, r)| if r > best.1 { (i, r) } else { best },
        );
    println!(
        "  storm / sequential: {} (worst {worst:.2}x; goal at most {GOAL_RATIO}x), boot width {width}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    tmp.close()
        .context("cannot remove the temporary directory")?;

    let mut outcome = Outcome::new(
        "storm",
        format!(
            "{PODS} `virtc pod start` processes at once against the same {PODS} pods started one \
             after another, {runs} round(s), boot width {width} (the host's CPUs)."
        ),
    );
    const SEQUENTIAL: &str = "the same pods one after another";
    outcome.figures.push(
        Figure::ms(format!("{PODS} at once, median round"), sto.median)
            .floor_ms(SEQUENTIAL, seq.median),
    );
    outcome.figures.push(
        Figure::ms(
            format!("{PODS} at once, worst round (round {})", worst_round + 1),
            storm[worst_round],
        )
        .floor_ms(SEQUENTIAL, sequential[worst_round])
        .goal(Goal::RatioAtMost(GOAL_RATIO)),
    );
    outcome.durations_ms("round time", "one after another", &sequential);
    outcome.durations_ms("round time", "all at once", &storm);
    Ok(outcome)
}

/// virtc bound to the bench's root and image.
struct Bench {
    virtc: PathBuf,
    root: PathBuf,
    image: PathBuf,
}

impl Bench {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.virtc);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--image-dir")
            .arg(&self.image)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs virtc to completion; fails with its stderr.
    fn virtc(&self, args: &[&str]) -> Result<()> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("cannot run {}", self.virtc.display()))?;
        if !out.status.success() {
            bail!(
                "virtc {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Each round: create the pods, start them one after another (timed), stop, delete and create
/// them again, start them all at once (timed), stop and delete them. Returns the sequential and storm totals per round.
fn rounds(b: &Bench, ids: &[String], runs: u32) -> Result<(Vec<Duration>, Vec<Duration>)> {
    // One unmeasured boot first, so that both measured paths start with warm caches.
    b.virtc(&["pod", "create", "warm"])?;
    let warm = b.virtc(&["pod", "start", "warm"]);
    let _ = b.virtc(&["pod", "stop", "warm"]);
    b.virtc(&["pod", "delete", "warm"])?;
    warm.context("the warm-up start failed")?;

    let mut sequential = Vec::new();
    let mut storm = Vec::new();
    for round in 1..=runs {
        for id in ids {
            b.virtc(&["pod", "create", id])?;
        }
        let t0 = Instant::now();
        for id in ids {
            b.virtc(&["pod", "start", id])?;
        }
        let seq = t0.elapsed();
        // A stopped pod cannot start again: the storm gets fresh pods of the same ids.
        stop_all(b, ids)?;
        for id in ids {
            b.virtc(&["pod", "delete", id])?;
            b.virtc(&["pod", "create", id])?;
        }
        let t0 = Instant::now();
        start_all(b, ids)?;
        let sto = t0.elapsed();
        stop_all(b, ids)?;
        for id in ids {
            b.virtc(&["pod", "delete", id])?;
        }
        println!(
            "  round {round}: one after another {:>9}, all at once {:>9} ({:.2}x)",
            ms(seq),
            ms(sto),
            sto.as_secs_f64() / seq.as_secs_f64()
        );
        sequential.push(seq);
        storm.push(sto);
    }
    Ok((sequential, storm))
}

fn stop_all(b: &Bench, ids: &[String]) -> Result<()> {
    for id in ids {
        b.virtc(&["pod", "stop", id])?;
    }
    Ok(())
}

/// Starts every pod at once, each in its own virtc process, and waits for all of them.
fn start_all(b: &Bench, ids: &[String]) -> Result<()> {
    let mut children = Vec::new();
    for id in ids {
        let child = b
            .command(&["pod", "start", id])
            .spawn()
            .with_context(|| format!("cannot run {}", b.virtc.display()))?;
        children.push((id, child));
    }
    let mut failed = Vec::new();
    for (id, child) in children {
        // Each start is bounded by its own boot timeout.
        let out = child
            .wait_with_output()
            .with_context(|| format!("cannot wait for pod start {id}"))?;
        if !out.status.success() {
            failed.push(format!(
                "{id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} starts failed in the storm:\n{}",
            failed.len(),
            ids.len(),
            failed.join("\n")
        );
    }
    Ok(())
}
