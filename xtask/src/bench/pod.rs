//! `cargo xtask bench pod [--pool]`: `create_pod + start_pod + create_container +
//! start_container` to the first byte of the container's stdout, through the library's
//! [`Runtime`], one pod at a time. With `--pool`, the same again with each pod adopting a VM of
//! the warm pool, the ratio of the medians, and the pool's idle cost per slot ([`super::pool`]).
//! Each step is timed on its own too; `start_pod` is the boot (VM launch, agent handshake, pod
//! setup) that `bench boot` measures the first part of. Every pod is stopped and deleted (not
//! timed), even when a run fails.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::AsyncReadExt as _;
use vc_host::config::{ContainerConfig, PodConfig};
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::{PoolShape, StartOptions};
use vc_host::Runtime;
use vc_proto::{ProcessRef, StreamKind};

use super::inputs::{rootfs, scratch, tokio_runtime, vc_runtime, Image};
use super::report::{Figure, Goal, Outcome, Unit};
use super::stats::{ms, Summary};
use crate::ctx::{self, Ctx};

/// How long the container gets to write its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// The container's id in every pod.
const CONTAINER: &str = "c";
/// Names of the timed steps, in order; the last one ends at the first byte of stdout.
const STEPS: [&str; 5] = [
    "create_pod",
    "start_pod",
    "create_container",
    "start_container",
    "first byte",
];

/// Goal of issue 15: warm pod to first byte at most this fraction of a cold one.
const WARM_GOAL: f64 = 0.30;

pub(crate) fn run(ctx: &Ctx, runs: u32, pool: bool) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    let rootfs = rootfs(ctx)?;
    tokio_runtime()?.block_on(async {
        // Short paths: the VM's sockets must fit in sun_path.
        let tmp = scratch("vp")?;
        let rt = vc_runtime(tmp.path(), &image.dir)?;
        let measured = async {
            let mut outcome = Outcome::new(
                "pod",
                format!(
                    "create_pod + start_pod + create_container + start_container to the first \
                     byte of `/bin/echo hi` in the container, {runs} runs, one pod at a time{}.",
                    if pool {
                        "; then the same with each pod adopting a VM of the warm pool (filled \
                         before each run, not timed), and the idle cost of pool slots"
                    } else {
                        ""
                    }
                ),
            );
            let cold = bench(&rt, &rootfs, runs, Start::Cold).await?;
            outcome.figures.push(Figure::ms("pod to first byte, cold, median", cold.total.median));
            outcome.figures.push(Figure::ms("start_pod, cold, median", cold.start_pod));
            outcome.durations_ms("pod to first byte", "cold boot", &cold.totals);
            if pool {
                let warm = bench(&rt, &rootfs, runs, Start::Warm).await?;
                let (w, c) = (warm.total.median, cold.total.median);
                println!(
                    "\nwarm / cold, pod to first byte: {:.2} (medians {} / {}; goal <= {WARM_GOAL})",
                    w.as_secs_f64() / c.as_secs_f64(),
                    ms(w),
                    ms(c)
                );
                outcome.figures.push(
                    Figure::ms("pod to first byte, warm pool, median", w)
                        .floor_ms("cold boot (pod to first byte, median)", c)
                        .goal(Goal::RatioAtMost(WARM_GOAL)),
                );
                outcome.figures.push(Figure::ms("start_pod, warm pool, median", warm.start_pod));
                outcome.durations_ms("pod to first byte", "warm pool", &warm.totals);
                for (i, slot) in super::pool::idle_cost(&rt).await?.iter().enumerate() {
                    outcome.figures.push(Figure::new(
                        format!("idle pool slot {}: PSS", i + 1),
                        Unit::Mib,
                        slot.pss_mib,
                    ));
                    outcome.figures.push(Figure::new(
                        format!("idle pool slot {}: CPU", i + 1),
                        Unit::CpuPercent,
                        slot.cpu_percent,
                    ));
                }
            }
            Ok::<_, anyhow::Error>(outcome)
        }
        .await;
        // Not measured: whatever a failed run left in the pool.
        let drained = rt.drain_pool().await;
        let outcome = measured?;
        drained.context("cannot drain the pool")?;
        drop(rt);
        tmp.close()
            .context("cannot remove the temporary directory")?;
        Ok(outcome)
    })
}

/// What [`bench()`] measured.
#[derive(Debug)]
struct Measured {
    /// Pod to first byte, per run.
    totals: Vec<Duration>,
    /// Their summary.
    total: Summary,
    /// The median of `start_pod` alone.
    start_pod: Duration,
}

/// How the measured pods start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A VM booted for the pod (the pool is not used).
    Cold,
    /// A VM of the pool, filled (not timed) before each run.
    Warm,
}

/// `runs` measured runs (after one unmeasured).
async fn bench(rt: &Runtime, rootfs: &Path, runs: u32, start: Start) -> Result<Measured> {
    ctx::step(format!(
        "{runs} runs of create_pod + start_pod + create_container + start_container to the \
         first byte of `/bin/echo hi` (rootfs {}), one pod at a time, {}",
        rootfs.display(),
        match start {
            Start::Cold => "each pod booting its VM",
            Start::Warm =>
                "each pod adopting a VM of the warm pool (filled before each run, not timed)",
        }
    ));

    // One unmeasured run first, so that every measured run starts with warm caches.
    run_once(rt, rootfs, "pw", start)
        .await
        .context("warm-up run failed")?;
    let mut samples: Vec<[Duration; STEPS.len()]> = Vec::new();
    for i in 0..runs {
        let steps = run_once(rt, rootfs, &format!("p{i}"), start)
            .await
            .with_context(|| format!("run {} failed", i + 1))?;
        let total: Duration = steps.iter().sum();
        let parts: Vec<String> = STEPS
            .iter()
            .zip(steps)
            .map(|(name, d)| format!("{name} {}", ms(d)))
            .collect();
        println!(
            "  run {:>2} {:>9}  ({})",
            i + 1,
            ms(total),
            parts.join(", ")
        );
        samples.push(steps);
    }

    println!("\npod to first byte of container output, {runs} runs:");
    let mut start_pod = Duration::ZERO;
    for (k, name) in STEPS.iter().enumerate() {
        let s =
            Summary::of(&samples.iter().map(|r| r[k]).collect::<Vec<_>>()).context("no samples")?;
        if *name == "start_pod" {
            start_pod = s.median;
        }
        println!(
            "  {name:<16} median {:>9}  p90 {:>9}",
            ms(s.median),
            ms(s.p90)
        );
    }
    let totals: Vec<Duration> = samples.iter().map(|r| r.iter().sum()).collect();
    let t = Summary::of(&totals).context("no samples")?;
    println!(
        "  {:<16} median {:>9}  p90 {:>9}  (min {}, max {})",
        "total",
        ms(t.median),
        ms(t.p90),
        ms(t.min),
        ms(t.max)
    );
    println!(
        "  (start_pod is the boot: VM launch, agent handshake and pod setup; see `cargo xtask \
         bench boot` for the handshake alone against its floor)"
    );
    Ok(Measured {
        totals,
        total: t,
        start_pod,
    })
}

/// One measured run in pod `id`: the duration of each of [`STEPS`]. The pod is stopped and
/// deleted whatever happens.
async fn run_once(
    rt: &Runtime,
    rootfs: &Path,
    id: &str,
    start: Start,
) -> Result<[Duration; STEPS.len()]> {
    if start == Start::Warm {
        let filled = rt.fill_pool(1, &PoolShape::default()).await?;
        anyhow::ensure!(filled.ready() == 1, "the pool did not fill: {filled:?}");
    }
    let pod_id = PodId::new(id).context("invalid pod id")?;
    let cid = ContainerId::new(CONTAINER).context("invalid container id")?;
    let container = ContainerConfig::new(
        cid.clone(),
        rootfs,
        vec!["/bin/echo".to_owned(), "hi".to_owned()],
    );
    let mut steps = [Duration::ZERO; STEPS.len()];
    let mut last = Instant::now();
    let mut lap = |k: usize| {
        let now = Instant::now();
        steps[k] = now - last;
        last = now;
    };
    rt.create_pod(PodConfig::new(pod_id.clone()))
        .await
        .context("create_pod failed")?;
    lap(0);
    let measured = async {
        let options = StartOptions {
            use_pool: start == Start::Warm,
        };
        rt.start_pod_with(&pod_id, options)
            .await
            .context("start_pod failed")?;
        lap(1);
        if start == Start::Warm && rt.pool_status().await?.ready() != 0 {
            bail!("the pod did not adopt the pool's VM");
        }
        rt.create_container(&pod_id, container)
            .await
            .context("create_container failed")?;
        lap(2);
        rt.start_container(&pod_id, &cid)
            .await
            .context("start_container failed")?;
        lap(3);
        let agent = rt.pod_agent(&pod_id).await.context("pod_agent failed")?;
        let process = ProcessRef {
            container_id: CONTAINER.to_owned(),
            exec_id: None,
        };
        let mut stdout = agent
            .attach(&process, StreamKind::Stdout)
            .await
            .context("cannot attach the container's stdout")?;
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stdout.read(&mut byte))
            .await
            .context("no output from the container in time")?
            .context("cannot read the container's stdout")?;
        if n == 0 {
            bail!("the container's stdout closed without output");
        }
        lap(4);
        Ok(())
    }
    .await;
    // Not timed: clean up whatever happened above.
    let stopped = rt.stop_pod(&pod_id).await;
    let deleted = rt.delete_pod(&pod_id).await;
    measured?;
    stopped.context("stop_pod failed")?;
    deleted.context("delete_pod failed")?;
    Ok(steps)
}
