//! Boots under load and against their deadline: sixteen `virtc pod start`
//! processes at once on this small host all succeed (the host-wide boot
//! admission serves them `boot_width` at a time, and each boot's deadline
//! counts from its admission), and a boot that passes the ceiling its pod
//! sets fails with a timeout error that says so, leaving nothing behind.

mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use support::leaks::{assert_no_leak, on_disk, OnDisk};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use vc_host::runtime::admission::BootExpiry;
use vc_host::RuntimeError;

/// Pods in the storm.
const STORM: usize = 16;

/// A generous bound on the whole storm: the issue measured 32 s for these 16
/// pods started two at a time on this host; ten times that, for a loaded CI
/// machine.
const STORM_BOUND: Duration = Duration::from_secs(320);

#[test]
fn a_storm_of_sixteen_starts_all_succeed() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = Virtc::new(t.root(), &t.image.dir)?;
    let ids: Vec<String> = (0..STORM).map(|i| format!("st{i}")).collect();
    for id in &ids {
        v.ok(["pod", "create", id])?;
    }
    let t0 = Instant::now();
    let mut running = Vec::new();
    for id in &ids {
        let (line, mut cmd) = v.command(["pod", "start", id]);
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {line}"))?;
        running.push((line, child));
    }
    let mut failed = Vec::new();
    for (line, child) in running {
        let ran = Virtc::finish(line, child)?;
        if ran.code != Some(0) {
            failed.push(ran.to_string());
        }
    }
    let total = t0.elapsed();
    eprintln!(
        "storm: {STORM} concurrent `virtc pod start` took {:.1} s",
        total.as_secs_f64()
    );
    ensure!(
        failed.is_empty(),
        "{} of {STORM} starts failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    let mut left = OnDisk::default();
    for id in &ids {
        let s = v.ok(["pod", "status", id, "--json"])?.json()?;
        ensure!(s["state"] == "running", "{id}: {s}");
        let d = on_disk(&t, id);
        left.pids.extend(d.pids);
        left.cgroups.extend(d.cgroups);
    }
    ensure!(
        total < STORM_BOUND,
        "the storm took {total:?}, over {STORM_BOUND:?}"
    );
    for id in &ids {
        v.ok(["pod", "stop", id])?;
        v.ok(["pod", "delete", id])?;
    }
    assert_no_leak(&t, &left, "storm")?;
    Ok(())
}

/// A pod whose boot timeout is shorter than any TCG boot: its start fails
/// with [`RuntimeError::BootTimeout`] naming the ceiling, the pod is ready
/// again, and no process, cgroup or mount is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_past_its_ceiling_fails_with_a_timeout_and_cleans_up() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut config = t.pod("tight");
    config.vm.boot_timeout_secs = 1;
    let id = config.id.clone();
    t.rt.create_pod(config).await?;
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), t.rt.start_pod(&id))
        .await
        .context("start_pod hung past its boot timeout")?
        .expect_err("no TCG boot takes under a second");
    let elapsed = started.elapsed();
    match &err {
        RuntimeError::BootTimeout { expiry, .. } => {
            assert_eq!(*expiry, BootExpiry::Ceiling(Duration::from_secs(1)))
        }
        other => panic!("expected a boot timeout, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("did not boot in time") && message.contains("boot timeout of 1 s"),
        "{message}"
    );
    // The deadline counts from admission: a start with a free slot fails
    // about then, plus the launch and the cleanup.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let status = t.rt.pod_status(&id).await?;
    assert_eq!(status.state, vc_host::state::State::Ready);
    assert!(status.processes.is_empty(), "{:?}", status.processes);
    assert!(t.cgroup_pids().is_empty(), "{:?}", t.cgroup_pids());
    assert!(t.leftover_binds().is_empty(), "{:?}", t.leftover_binds());
    t.rt.delete_pod(&id).await?;
    assert!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}

/// `virtc --boot-timeout` sets the ceiling, and its failure reads clearly.
#[test]
fn virtc_boot_timeout_sets_the_ceiling() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = Virtc::new(t.root(), &t.image.dir)?;
    v.ok(["pod", "create", "bt", "--boot-timeout", "1"])?;
    let s = v.ok(["pod", "status", "bt", "--json"])?.json()?;
    ensure!(s["config"]["vm"]["boot_timeout_secs"] == 1, "{s}");
    let ran = v.run(["pod", "start", "bt", "--log", "info"])?;
    ensure!(
        ran.code == Some(125) && ran.stderr.contains("boot timeout of 1 s"),
        "{ran}"
    );
    // QEMU's pid, from the launch's log line.
    let qemu: i32 = strip_ansi(&ran.stderr)
        .lines()
        .filter(|l| l.contains("VM launched"))
        .find_map(|l| l.split_once(" pid=")?.1.split(' ').next()?.parse().ok())
        .with_context(|| format!("no launch logged: {ran}"))?;
    let mut left = OnDisk::default();
    left.pids.insert(qemu);
    let s = v.ok(["pod", "status", "bt", "--json"])?.json()?;
    ensure!(s["state"] == "ready", "{s}");
    v.ok(["pod", "delete", "bt"])?;
    assert_no_leak(&t, &left, "boot timeout")?;
    Ok(())
}

/// Log text without its terminal colours (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
