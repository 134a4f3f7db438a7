//! Shared steps of the fault tests (`faults_*.rs`): a running pod with one
//! sleeping container, its helpers by the pids vc records, an exec that must
//! fail (and how long it took), and the leak checks after delete.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use vc_host::hypervisor::ProcessRecord;
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::{PodStatus, ProcessConfig};
use vc_host::RuntimeError;

use super::pod::{wait_pids_gone, TestRuntime};

/// A running pod `name` whose container `c1` sleeps.
pub async fn pod_with_sleeper(
    t: &TestRuntime,
    name: &str,
) -> Result<(PodId, ContainerId, PodStatus)> {
    let mut config = t.pod(name);
    config.containers = vec![t.container("c1", &["/bin/sleep", "600"])];
    let id = config.id.clone();
    let status = t.rt.run_pod(config).await?;
    Ok((id, "c1".parse()?, status))
}

/// The process vc records as `helper` (pid and start time: signals through
/// it reach that process and no other).
pub fn helper(status: &PodStatus, helper: &str) -> Result<ProcessRecord> {
    let pid = status
        .processes
        .iter()
        .find(|p| p.name == helper)
        .with_context(|| format!("no {helper} in {:?}", status.processes))?
        .pid;
    ProcessRecord::of(pid).with_context(|| format!("{helper} (pid {pid}) is not running"))
}

/// Every pid of the pod's VM.
pub fn pids(status: &PodStatus) -> Vec<i32> {
    status.processes.iter().map(|p| p.pid).collect()
}

/// Runs `/bin/true` in `c1`, which must fail: the error and how long it took.
pub async fn failed_exec(
    t: &TestRuntime,
    id: &PodId,
    c1: &ContainerId,
) -> Result<(RuntimeError, Duration)> {
    let asked = Instant::now();
    match t
        .rt
        .exec_process(id, c1, ProcessConfig::new(["/bin/true"]))
        .await
    {
        Ok(_) => bail!("an exec started in pod {id}"),
        Err(e) => Ok((e, asked.elapsed())),
    }
}

/// After delete: no helper, pod directory, mount or cgroup left.
pub fn assert_nothing_left(t: &TestRuntime, helpers: &[i32]) -> Result<()> {
    ensure!(
        wait_pids_gone(helpers, Duration::from_secs(2)),
        "helpers left: {helpers:?}"
    );
    ensure!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    ensure!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    ensure!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    Ok(())
}
