//! Issue 13, item 4: one deadline per operation. A pod whose guest stalls
//! (QEMU SIGSTOPped, by the pid vc records): status answers at once, a
//! container status and an exec fail with a timeout error within their
//! connect deadline, and stop waits on the agent once, then kills the VM:
//! it takes the grace period plus a few seconds and leaves nothing behind.
//!
//! The figures printed are the ones in docs/reliability.md.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use nix::sys::signal::Signal;
use support::faults::{self, assert_nothing_left, failed_exec, pids, pod_with_sleeper};
use support::pod::TestRuntime;
use vc_host::agent::AgentClientError;
use vc_host::hypervisor::ProcessRecord;
use vc_host::runtime::DEFAULT_STOP_GRACE;
use vc_host::state::State;
use vc_host::RuntimeError;

/// The connect deadline of a running pod's verbs (10 s), plus slack.
const VERB_WITHIN: Duration = Duration::from_secs(15);

/// Continues a stopped process when the test ends, however it ends.
struct Cont(ProcessRecord);

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = self.0.signal(Signal::SIGCONT);
    }
}

/// True for the errors of an agent that did not answer in time.
fn is_agent_timeout(e: &RuntimeError) -> bool {
    matches!(
        e,
        RuntimeError::Agent(a) if matches!(
            **a,
            AgentClientError::ConnectDeadline { .. } | AgentClientError::Timeout { .. }
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_costs_one_timeout_per_operation() -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, c1, status) = pod_with_sleeper(&t, "stalled").await?;
    let helpers = pids(&status);
    let qemu = faults::helper(&status, "qemu")?;
    ensure!(qemu.signal(Signal::SIGSTOP)?, "QEMU was alive");
    let _cont = Cont(qemu);

    // Status reads the record and the pidfds: a stalled guest is still
    // running as far as the host can tell, and status does not wait on it.
    let asked = Instant::now();
    let status = t.rt.pod_status(&id).await?;
    ensure!(status.state == State::Running, "{}", status.state);
    ensure!(asked.elapsed() < Duration::from_secs(2));

    // Container status asks the agent: a timeout error within its bound.
    let asked = Instant::now();
    let err = match t.rt.container_status(&id, &c1).await {
        Ok(s) => bail!("a stalled agent answered: {s:?}"),
        Err(e) => e,
    };
    let container_status_took = asked.elapsed();
    ensure!(is_agent_timeout(&err), "not a timeout: {err:?}");
    ensure!(
        container_status_took < VERB_WITHIN,
        "{container_status_took:?}"
    );

    // So does an exec.
    let (err, exec_took) = failed_exec(&t, &id, &c1).await?;
    ensure!(is_agent_timeout(&err), "not a timeout: {err:?}");
    ensure!(exec_took < VERB_WITHIN, "{exec_took:?}");

    // Stop: one wait on the agent, then QEMU is killed.
    let asked = Instant::now();
    let stopped = t.rt.stop_pod(&id).await?;
    let stop_took = asked.elapsed();
    ensure!(stopped.state == State::Stopped);
    let grace = DEFAULT_STOP_GRACE.min(Duration::from_secs(5));
    eprintln!(
        "stalled agent: container status failed after {} ms, exec failed after {} ms, \
         stop took {} ms (grace {} s)",
        container_status_took.as_millis(),
        exec_took.as_millis(),
        stop_took.as_millis(),
        grace.as_secs()
    );
    ensure!(
        stop_took < grace + Duration::from_secs(8),
        "stop took {stop_took:?}"
    );
    t.rt.delete_pod(&id).await?;
    assert_nothing_left(&t, &helpers)
}
