//! Issue 13, item 2: supervision of every helper. QEMU, virtiofsd and
//! vhost-device-vsock, each SIGKILLed (by the pid vc records) under a running
//! pod with an exec in flight: the exec is woken with `HelperDied` naming the
//! helper, the pod is reported `broken` (also by virtc), a new exec fails
//! with `HelperDied` at once, and stop and delete finish quickly leaving no
//! process, mount, cgroup or file behind.
//!
//! The figures printed (`death noticed`, `in-flight exec woken`, `new exec
//! failed`, `stop`, `delete`) are the ones in docs/reliability.md.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::Signal;
use support::faults::{self, assert_nothing_left, failed_exec, pids, pod_with_sleeper};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use vc_host::hypervisor::HelperExit;
use vc_host::runtime::ProcessConfig;
use vc_host::state::State;
use vc_host::RuntimeError;

/// Upper bounds (generous: TCG on a loaded 2-core host).
const NOTICED_WITHIN: Duration = Duration::from_secs(1);
const FAILED_WITHIN: Duration = Duration::from_secs(2);
const STOP_DELETE_WITHIN: Duration = Duration::from_secs(5);

/// Asserts that `e` is `HelperDied` naming `helper`, killed by SIGKILL (this
/// process launched the VM, so it reaps the helper and knows how it ended).
fn assert_helper_died(e: &RuntimeError, helper: &str, pid: i32) -> Result<()> {
    match e {
        RuntimeError::HelperDied {
            helper: h,
            pid: p,
            status,
            ..
        } => {
            ensure!(h == helper && *p == pid, "wrong helper named: {e}");
            ensure!(
                *status == HelperExit::Signal(libc::SIGKILL),
                "wrong status: {e}"
            );
            ensure!(
                e.to_string().contains(helper) && e.to_string().contains("SIGKILL"),
                "the message names the helper and how it ended: {e}"
            );
            Ok(())
        }
        other => bail!("expected HelperDied naming {helper}, got {other:?} ({other})"),
    }
}

async fn kill_helper_under_running_pod(helper: &str, pod_name: &str) -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, c1, status) = pod_with_sleeper(&t, pod_name).await?;
    let helpers = pids(&status);
    let victim = faults::helper(&status, helper)?;
    let pid = victim.pid;

    // An exec in flight: its output and exit code are being waited for.
    let process =
        t.rt.exec_process(&id, &c1, ProcessConfig::new(["/bin/sleep", "60"]))
            .await?;
    let output = process.output();
    tokio::pin!(output);
    // Polled once, its reads are pending on the process's streams (each a
    // vsock connection made when the exec started): a call in flight.
    ensure!(
        futures::poll!(&mut output).is_pending(),
        "the exec ended before the kill"
    );

    ensure!(victim.signal(Signal::SIGKILL)?, "{helper} was alive");
    let killed = Instant::now();

    // Noticed by whoever looks (status, without any call timing out), and
    // the exec in flight is woken.
    let noticed = async {
        loop {
            let status = t.rt.pod_status(&id).await?;
            if status.state == State::Broken {
                let death = status.broken.context("a broken pod says why")?;
                ensure!(death.helper == helper, "status names {death}");
                return Ok(killed.elapsed());
            }
            ensure!(
                killed.elapsed() < NOTICED_WITHIN,
                "still {} {:?} after the kill",
                status.state,
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let woken = async {
        let result = tokio::time::timeout(Duration::from_secs(30), &mut output).await;
        (result, killed.elapsed())
    };
    let (noticed, (result, woken)): (Result<Duration>, _) = tokio::join!(noticed, woken);
    let noticed = noticed?;
    let err = match result.context("the in-flight exec was not woken within 30 s")? {
        Ok(out) => bail!("the exec finished: {out:?}"),
        Err(e) => RuntimeError::from(e),
    };
    assert_helper_died(&err, helper, pid)?;
    assert_eq!(err.exit_code(), Some(vc_proto::EXIT_CODE_VM_GONE));
    ensure!(
        woken < FAILED_WITHIN,
        "in-flight exec woken after {woken:?}"
    );

    // A new exec fails at once, naming the helper.
    let (err, refused) = failed_exec(&t, &id, &c1).await?;
    assert_helper_died(&err, helper, pid)?;
    ensure!(refused < FAILED_WITHIN, "new exec failed after {refused:?}");

    // Recorded: another process (virtc) reads the same state and reason.
    let virtc = Virtc::new(t.root(), &t.image.dir)?;
    let pod_arg = id.to_string();
    let (status_json, list_text) = tokio::task::spawn_blocking(move || -> Result<_> {
        let status = virtc.ok(["pod", "status", &pod_arg, "--json"])?.json()?;
        let list = virtc.ok(["pod", "list"])?.stdout;
        Ok((status, list))
    })
    .await??;
    ensure!(status_json["state"] == "broken", "{status_json}");
    ensure!(
        status_json["broken"]["helper"] == helper,
        "virtc names the helper: {status_json}"
    );
    ensure!(
        list_text
            .lines()
            .any(|l| l.contains(id.as_str()) && l.contains("broken")),
        "virtc pod list shows it broken:\n{list_text}"
    );

    // Stop and delete: quick, and nothing left.
    let started = Instant::now();
    let stopped = t.rt.stop_pod(&id).await?;
    let stop_took = started.elapsed();
    ensure!(stopped.state == State::Stopped);
    let deleting = Instant::now();
    t.rt.delete_pod(&id).await?;
    let delete_took = deleting.elapsed();
    let total = started.elapsed();
    eprintln!(
        "{helper} SIGKILLed: death noticed after {} ms, in-flight exec woken after {} ms, \
         new exec failed after {} ms, stop {} ms, delete {} ms",
        noticed.as_millis(),
        woken.as_millis(),
        refused.as_millis(),
        stop_took.as_millis(),
        delete_took.as_millis()
    );
    ensure!(
        total < STOP_DELETE_WITHIN,
        "stop + delete took {total:?} (stop {stop_took:?})"
    );
    assert_nothing_left(&t, &helpers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_under_a_running_pod() -> Result<()> {
    kill_helper_under_running_pod("qemu", "dead-qemu").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtiofsd_killed_under_a_running_pod() -> Result<()> {
    kill_helper_under_running_pod("virtiofsd", "dead-fs").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_device_vsock_killed_under_a_running_pod() -> Result<()> {
    kill_helper_under_running_pod("vhost-device-vsock", "dead-vsock").await
}
