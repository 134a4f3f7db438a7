//! `cargo xtask bench pod`: `create_pod + start_pod + create_container + start_container` to the
//! first byte of the container's stdout, through the library's [`Runtime`], one pod at a time.
//! Each step is timed on its own too; `start_pod` is the boot (VM launch, agent handshake, pod
//! setup) that `bench boot` measures the first part of. Every pod is stopped and deleted (not
//! timed), even when a run fails.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::AsyncReadExt as _;
use vc_host::config::{ContainerConfig, PodConfig};
use vc_host::id::{ContainerId, PodId};
use vc_host::Runtime;
use vc_proto::{ProcessRef, StreamKind};

use super::inputs::{rootfs, scratch, tokio_runtime, vc_runtime, Image};
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

pub(crate) fn run(ctx: &Ctx, runs: u32) -> Result<()> {
    let image = Image::locate(ctx)?;
    let rootfs = rootfs(ctx)?;
    tokio_runtime()?.block_on(bench(&image.dir, &rootfs, runs))
}

async fn bench(image_dir: &Path, rootfs: &Path, runs: u32) -> Result<()> {
    // Short paths: the VM's sockets must fit in sun_path.
    let tmp = scratch("vp")?;
    let rt = vc_runtime(tmp.path(), image_dir)?;
    ctx::step(format!(
        "{runs} runs of create_pod + start_pod + create_container + start_container to the \
         first byte of `/bin/echo hi` (rootfs {}), one pod at a time",
        rootfs.display()
    ));

    // One unmeasured run first, so that every measured run starts with warm caches.
    run_once(&rt, rootfs, "pw")
        .await
        .context("warm-up run failed")?;
    let mut samples: Vec<[Duration; STEPS.len()]> = Vec::new();
    for i in 0..runs {
        let steps = run_once(&rt, rootfs, &format!("p{i}"))
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
    for (k, name) in STEPS.iter().enumerate() {
        let s =
            Summary::of(&samples.iter().map(|r| r[k]).collect::<Vec<_>>()).context("no samples")?;
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
    drop(rt);
    tmp.close()
        .context("cannot remove the temporary directory")?;
    Ok(())
}

/// One measured run in pod `id`: the duration of each of [`STEPS`]. The pod is stopped and
/// deleted whatever happens.
async fn run_once(rt: &Runtime, rootfs: &Path, id: &str) -> Result<[Duration; STEPS.len()]> {
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
        rt.start_pod(&pod_id).await.context("start_pod failed")?;
        lap(1);
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
