//! Helpers for the tests that run processes in a pod's container: a pod
//! with one sleeping busybox container, an exec bounded in time, a script's
//! whole output, a file written through stdin, and the pod's teardown.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use tokio::io::AsyncWriteExt;
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::{Process, ProcessConfig};

use super::pod::TestRuntime;

/// Generous bound for one exec and its short output.
pub const SHORT: Duration = Duration::from_secs(60);
/// Generous bound for a transfer of hundreds of MiB under TCG.
pub const LONG: Duration = Duration::from_secs(300);

/// A running pod with one busybox container `c` that sleeps.
pub async fn pod(t: &TestRuntime, name: &str) -> Result<(PodId, ContainerId)> {
    let mut config = t.pod(name);
    config
        .containers
        .push(t.container("c", &["sleep", "1000000"]));
    t.rt.run_pod(config).await?;
    Ok((name.parse()?, "c".parse()?))
}

/// `sh -c script`.
pub fn sh(script: &str) -> ProcessConfig {
    ProcessConfig::new(["sh", "-c", script])
}

/// Starts `cfg` in container `c`, bounded by [`SHORT`].
pub async fn exec(
    t: &TestRuntime,
    pod: &PodId,
    c: &ContainerId,
    cfg: ProcessConfig,
) -> Result<Process> {
    let started = tokio::time::timeout(SHORT, t.rt.exec_process(pod, c, cfg))
        .await
        .context("exec did not answer")??;
    Ok(started)
}

/// Runs `script` and returns its whole output.
pub async fn run(
    t: &TestRuntime,
    pod: &PodId,
    c: &ContainerId,
    script: &str,
) -> Result<vc_host::agent::Output> {
    let p = exec(t, pod, c, sh(script)).await?;
    Ok(tokio::time::timeout(SHORT, p.output())
        .await
        .with_context(|| format!("{script:?} did not finish"))??)
}

/// Writes `bytes` to `path` in the container through stdin.
pub async fn put(
    t: &TestRuntime,
    pod: &PodId,
    c: &ContainerId,
    path: &str,
    bytes: &[u8],
) -> Result<()> {
    let mut p = exec(t, pod, c, sh(&format!("cat > {path}")).stdin(true)).await?;
    let mut stdin = p.stdin.take().context("no stdin")?;
    tokio::time::timeout(LONG, async {
        stdin.write_all(bytes).await?;
        stdin.shutdown().await
    })
    .await
    .with_context(|| {
        format!(
            "writing {} bytes to `cat > {path}` did not end",
            bytes.len()
        )
    })??;
    let out = tokio::time::timeout(SHORT, p.output())
        .await
        .with_context(|| format!("cat > {path} did not finish"))??;
    ensure!(out.exit_code == 0, "cat > {path}: {out:?}");
    Ok(())
}

/// Stops and deletes the pod.
pub async fn finish(t: TestRuntime, pod: &PodId) -> Result<()> {
    t.rt.stop_pod(pod).await?;
    t.rt.delete_pod(pod).await?;
    Ok(())
}
