//! No verb holds the async runtime's thread: a whole pod lifecycle (create,
//! start, a container with a volume, an exec, stop, delete, and a launch
//! that fails half-way) runs on a single-threaded runtime beside a task that
//! ticks every 10 ms, and no step keeps that task from running for long.
//! Store writes (fsynced), mounts, process spawning, cgroup removal and the
//! waits of the kill paths run on the blocking pool or are async sleeps
//! (`docs/reliability.md`, "What runs where").

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use support::leaks::{assert_no_leak, on_disk};
use support::pod::TestRuntime;
use vc_host::config::VolumeConfig;
use vc_host::runtime::ProcessConfig;
use vc_host::state::State;
use vc_host::testing::Ticker;

/// The longest the ticker may be kept waiting by one step: generous, for a
/// 2-core machine running TCG guests beside the test; a blocking call of the
/// kind this guards against (a cgroup drain, a kill-and-wait, an fsync
/// under load) holds the thread for hundreds of milliseconds to seconds.
const MAX_GAP: Duration = Duration::from_millis(500);

/// One step: how long it took and the longest gap between ticks meanwhile.
struct Step {
    name: &'static str,
    took: Duration,
    gap: Duration,
}

#[tokio::test(flavor = "current_thread")]
async fn a_pod_lifecycle_never_holds_the_runtime_thread() -> Result<()> {
    let t = TestRuntime::new()?;
    let ticker = Ticker::start();
    ticker.wait_ticks(2).await;
    let mut steps = Vec::new();
    macro_rules! step {
        ($name:expr, $e:expr) => {{
            ticker.reset();
            let started = Instant::now();
            let out = $e;
            steps.push(Step {
                name: $name,
                took: started.elapsed(),
                gap: ticker.longest(),
            });
            out
        }};
    }

    let data = tempfile::tempdir()?;
    std::fs::write(data.path().join("in"), "from the host\n")?;
    let id = t.pod("workers").id;
    let mut c = t.container("c", &["sh", "-c", "exec sleep 600"]);
    c.volumes = vec![VolumeConfig {
        host_path: data.path().to_owned(),
        container_path: "/data".to_owned(),
        readonly: false,
    }];
    let cid = c.id.clone();

    let result = async {
        step!("create pod", t.rt.create_pod(t.pod("workers")).await?);
        let started = step!("start pod", t.rt.start_pod(&id).await?);
        ensure!(started.state == State::Running, "{:?}", started.state);
        let named = on_disk(&t, id.as_str());
        step!("create container", t.rt.create_container(&id, c).await?);
        step!("start container", t.rt.start_container(&id, &cid).await?);
        let out = step!("exec", {
            let p =
                t.rt.exec_process(&id, &cid, ProcessConfig::new(["cat", "/data/in"]))
                    .await?;
            tokio::time::timeout(Duration::from_secs(120), p.output())
                .await
                .context("cat /data/in did not finish within 2 minutes")??
        });
        ensure!(out.exit_code == 0, "{out:?}");
        ensure!(out.stdout == b"from the host\n", "{out:?}");
        step!("status", t.rt.pod_status(&id).await?);
        let stopped = step!("stop pod", t.rt.stop_pod(&id).await?);
        ensure!(stopped.state == State::Stopped, "{:?}", stopped.state);
        step!("delete pod", t.rt.delete_pod(&id).await?);
        assert_no_leak(&t, &named, "lifecycle")?;

        // A launch that fails after its helpers started (a "QEMU" that
        // exits at once): the helpers are killed and the cgroup removed.
        let fake_qemu = data.path().join("fake-qemu");
        std::fs::write(&fake_qemu, "#!/bin/sh\nexit 1\n")?;
        std::fs::set_permissions(&fake_qemu, std::fs::Permissions::from_mode(0o755))?;
        let mut broken = t.pod("workers-fail");
        broken.vm.binaries.qemu = Some(fake_qemu);
        let bid = broken.id.clone();
        step!("create pod (bad QEMU)", t.rt.create_pod(broken).await?);
        let failed = step!("failed start", t.rt.start_pod(&bid).await);
        ensure!(failed.is_err(), "a start without QEMU succeeded");
        // Stopped before the start returned, not in the background.
        ensure!(
            t.cgroup_pids().is_empty() && t.leftover_cgroups().is_empty(),
            "a failed start left processes {:?} in cgroups {:?}",
            t.cgroup_pids(),
            t.leftover_cgroups()
        );
        step!("delete pod (bad QEMU)", t.rt.delete_pod(&bid).await?);
        assert_no_leak(&t, &on_disk(&t, bid.as_str()), "failed start")
    }
    .await;
    if result.is_err() {
        t.print_logs();
        let _ = t.rt.force_delete_pod(&id).await;
    }
    ticker.stop();
    println!("{:<24} {:>10} {:>14}", "step", "took", "longest gap");
    for s in &steps {
        println!(
            "{:<24} {:>8} ms {:>11} ms",
            s.name,
            s.took.as_millis(),
            s.gap.as_millis()
        );
    }
    result?;
    for s in &steps {
        assert!(
            s.gap < MAX_GAP,
            "{} held the runtime's thread for {:?} (at most {MAX_GAP:?})",
            s.name,
            s.gap
        );
    }
    Ok(())
}
