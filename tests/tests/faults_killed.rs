//! Killed callers: `virtc` (built with the `fault-injection` feature) is run
//! with `VC_FAULT=<point>` and SIGKILLs itself at that point of a start, stop
//! or delete; the next verb, in a new process, must recover the pod, and at
//! the end nothing is left: no process the killed caller started (found from
//! the pod's record, its launch journal and its host cgroup), no cgroup, no
//! mount, no pod directory.

mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use support::leaks::{assert_no_leak, on_disk, OnDisk};
use support::pod::{pid_gone, wait_pids_gone, TestRuntime};
use support::virtc::Virtc;

fn virtc(t: &TestRuntime) -> Result<Virtc> {
    Virtc::new(t.root(), &t.image.dir)
}

fn status(v: &Virtc, id: &str) -> Result<Value> {
    v.ok(["pod", "status", id, "--json"])?.json()
}

fn qemu_pid(status: &Value) -> Option<i32> {
    status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "qemu")
        .and_then(|p| p["pid"].as_i64())
        .map(|p| p as i32)
}

/// The start points, and whether the next start adopts the VM (the record
/// says it booted) rather than killing what was left and starting afresh.
const START_POINTS: [(&str, bool); 6] = [
    ("start.recorded", false),
    ("start.helpers-spawned", false),
    ("start.qemu-spawned", false),
    ("start.vm-recorded", false),
    ("start.booted", false),
    ("start.booted-recorded", true),
];

#[test]
fn every_fault_point_is_known_to_the_library() {
    assert!(vc_host::fault::POINTS.len() >= 11);
    for (p, _) in START_POINTS {
        assert!(vc_host::fault::POINTS.contains(&p), "{p}");
    }
    for p in STOP_POINTS.iter().chain(&DELETE_POINTS) {
        assert!(vc_host::fault::POINTS.contains(p), "{p}");
    }
}

/// A start killed at each point: the next start cleans up what it left and
/// starts the pod, or adopts the VM that had booted; the pod works; stop and
/// delete leave nothing.
#[test]
fn a_start_killed_anywhere_is_recovered_by_the_next_start() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;
    for (i, (point, adopt)) in START_POINTS.iter().enumerate() {
        let id = format!("ks{i}");
        v.ok(["pod", "create", &id])?;
        v.killed_at(point, &["pod", "start", &id])?;
        let left = on_disk(&t, &id);
        if *point != "start.recorded" {
            ensure!(
                left.pids.iter().any(|p| !pid_gone(*p)),
                "{point}: the killed start left nothing running to recover: {left:?}"
            );
        }
        let t0 = Instant::now();
        v.ok(["pod", "start", &id])
            .with_context(|| format!("start after a start killed at {point}"))?;
        let recovered = t0.elapsed();
        let s = status(&v, &id)?;
        ensure!(s["state"] == "running", "{point}: {s}");
        let qemu = qemu_pid(&s).with_context(|| format!("{point}: no qemu: {s}"))?;
        if *adopt {
            ensure!(
                Some(qemu) == left.qemu,
                "{point}: the booted VM (qemu {:?}) was not adopted (now {qemu})",
                left.qemu
            );
        } else {
            let orphans: Vec<i32> = left.pids.iter().copied().collect();
            ensure!(
                wait_pids_gone(&orphans, Duration::from_secs(5)),
                "{point}: orphans of the killed start still run: {orphans:?}"
            );
        }
        // The pod works: a container runs in it.
        v.ok([
            "container",
            "create",
            &id,
            "c",
            "--rootfs",
            rootfs,
            "--",
            "/bin/true",
        ])?;
        v.ok(["container", "start", &id, "c"])?;
        let waited = v.run(["container", "wait", &id, "c"])?;
        ensure!(waited.code == Some(0), "{point}: {waited}");
        let running = on_disk(&t, &id);
        v.ok(["pod", "stop", &id])?;
        v.ok(["pod", "delete", &id])?;
        let mut all = left;
        all.pids.extend(running.pids);
        all.cgroups.extend(running.cgroups);
        assert_no_leak(&t, &all, point)?;
        eprintln!(
            "{point}: the next start {} in {:.1} s",
            if *adopt {
                "adopted the booted VM"
            } else {
                "cleaned up and started afresh"
            },
            recovered.as_secs_f64()
        );
    }
    Ok(())
}

/// A killed start is also cleaned up by the verbs that end a pod: delete
/// (of a launch cut short, nothing recorded but the journal) and stop (of a
/// VM that booted but was never recorded running).
#[test]
fn a_killed_start_is_cleaned_up_by_delete_or_stop() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    for (i, (point, verb)) in [
        ("start.qemu-spawned", "delete"),
        ("start.booted-recorded", "stop"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("kd{i}");
        v.ok(["pod", "create", &id])?;
        v.killed_at(point, &["pod", "start", &id])?;
        let left = on_disk(&t, &id);
        ensure!(
            left.pids.iter().any(|p| !pid_gone(*p)),
            "{point}: nothing left running: {left:?}"
        );
        v.ok(["pod", verb, &id])
            .with_context(|| format!("{verb} after a start killed at {point}"))?;
        if verb == "stop" {
            let s = status(&v, &id)?;
            ensure!(s["state"] == "stopped", "{point}: {s}");
            let orphans: Vec<i32> = left.pids.iter().copied().collect();
            ensure!(
                wait_pids_gone(&orphans, Duration::from_secs(5)),
                "{point}: stop left {orphans:?}"
            );
            v.ok(["pod", "delete", &id])?;
        }
        assert_no_leak(&t, &left, point)?;
        eprintln!("{point}: {verb} cleaned up after the killed start");
    }
    Ok(())
}

const STOP_POINTS: [&str; 2] = ["stop.agent-shutdown", "stop.vm-stopped"];

/// A stop killed at each point: the next stop finishes it.
#[test]
fn a_stop_killed_anywhere_is_finished_by_the_next_stop() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    for (i, point) in STOP_POINTS.iter().enumerate() {
        let id = format!("kt{i}");
        v.ok(["pod", "create", &id])?;
        v.ok(["pod", "start", &id])?;
        let running = on_disk(&t, &id);
        v.killed_at(point, &["pod", "stop", &id])?;
        v.ok(["pod", "stop", &id])
            .with_context(|| format!("stop after a stop killed at {point}"))?;
        let s = status(&v, &id)?;
        ensure!(s["state"] == "stopped", "{point}: {s}");
        v.ok(["pod", "delete", &id])?;
        assert_no_leak(&t, &running, point)?;
        eprintln!("{point}: the next stop finished it");
    }
    Ok(())
}

const DELETE_POINTS: [&str; 3] = [
    "delete.vm-stopped",
    "delete.recorded",
    "delete.config-removed",
];

/// A delete killed at each point: the next delete finishes it. The pod has
/// a container, whose record and directory go too.
#[test]
fn a_delete_killed_anywhere_is_finished_by_the_next_delete() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;
    for (i, point) in DELETE_POINTS.iter().enumerate() {
        let id = format!("kx{i}");
        v.ok(["pod", "create", &id])?;
        v.ok([
            "container",
            "create",
            &id,
            "c",
            "--rootfs",
            rootfs,
            "--",
            "/bin/true",
        ])?;
        v.killed_at(point, &["pod", "delete", &id])?;
        v.ok(["pod", "delete", &id])
            .with_context(|| format!("delete after a delete killed at {point}"))?;
        let list = v.ok(["pod", "list", "--json"])?.json()?;
        ensure!(
            !list
                .as_array()
                .is_some_and(|l| l.iter().any(|p| p["id"] == id.as_str())),
            "{point}: still listed: {list}"
        );
        assert_no_leak(&t, &OnDisk::default(), point)?;
        ensure!(
            !t.root().join("locks").join(format!("{id}.lock")).exists(),
            "{point}: lock file left"
        );
        eprintln!("{point}: the next delete finished it");
    }
    Ok(())
}
