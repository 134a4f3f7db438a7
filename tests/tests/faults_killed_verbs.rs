//! Killed callers of the verbs other than pod start, stop and delete
//! (`faults_killed.rs` has those): `virtc` (built with the
//! `fault-injection` feature) SIGKILLs itself at each point of a pod create,
//! a container create, start or delete, and an exec; the next verb, in a new
//! process, must recover the pod (roll the create back, finish the delete,
//! record the start), the pod must work, every record must parse, and after
//! stop and delete nothing is left.
//!
//! The container points share one running pod (one boot): each is killed in
//! turn on a container of its own.

mod support;

use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use support::leaks::{assert_no_leak, on_disk, OnDisk};
use support::pod::TestRuntime;
use support::records::check_records;
use support::virtc::Virtc;

fn virtc(t: &TestRuntime) -> Result<Virtc> {
    Virtc::new(t.root(), &t.image.dir)
}

/// True when pod `id` is listed.
fn listed(v: &Virtc, id: &str) -> Result<bool> {
    let list = v.ok(["pod", "list", "--json"])?.json()?;
    Ok(list
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["id"] == id)))
}

const CREATE_POINTS: [&str; 2] = ["create.dir-made", "create.state-written"];

const CONTAINER_CREATE_POINTS: [&str; 3] = [
    "container-create.recorded",
    "container-create.bound",
    "container-create.guest-created",
];

const CONTAINER_DELETE_POINTS: [&str; 2] =
    ["container-delete.guest-removed", "container-delete.unbound"];

#[test]
fn every_verb_fault_point_is_known_to_the_library() {
    for p in CREATE_POINTS
        .iter()
        .chain(&CONTAINER_CREATE_POINTS)
        .chain(&CONTAINER_DELETE_POINTS)
        .chain(&["container-start.guest-started", "exec.spawned"])
    {
        assert!(vc_host::fault::POINTS.contains(p), "{p}");
    }
}

/// A pod create killed at each point leaves a directory without a
/// configuration: the pod is not listed, a new create of the same id
/// replaces it, and a delete removes it. No VM is involved.
#[test]
fn a_create_killed_anywhere_is_recovered_by_create_or_delete() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    for (i, point) in CREATE_POINTS.iter().enumerate() {
        let id = format!("kc{i}");
        // Recovered by the next create.
        v.killed_at(point, &["pod", "create", &id])?;
        ensure!(
            t.root().join("pods").join(&id).is_dir(),
            "{point}: the killed create left no directory to recover"
        );
        ensure!(!listed(&v, &id)?, "{point}: a half-made pod is listed");
        let status = v.run(["pod", "status", &id])?;
        ensure!(
            status.code != Some(0) && status.stderr.contains("does not exist"),
            "{point}: {status}"
        );
        v.ok(["pod", "create", &id])
            .with_context(|| format!("create after a create killed at {point}"))?;
        let s = v.ok(["pod", "status", &id, "--json"])?.json()?;
        ensure!(s["state"] == "ready", "{point}: {s}");
        ensure!(check_records(t.root())? == 1, "{point}: records");
        v.ok(["pod", "delete", &id])?;
        // Recovered by delete.
        v.killed_at(point, &["pod", "create", &id])?;
        v.ok(["pod", "delete", &id])
            .with_context(|| format!("delete after a create killed at {point}"))?;
        assert_no_leak(&t, &OnDisk::default(), point)?;
        ensure!(
            !t.root().join("locks").join(format!("{id}.lock")).exists(),
            "{point}: lock file left"
        );
        eprintln!("{point}: the next create replaced it; a delete removed it");
    }
    Ok(())
}

/// Container create, start and delete and an exec, each killed at each of
/// its points in one running pod (whose container `main` sleeps): the next
/// verb recovers, the container works or is gone, its binds go with it, and
/// every record parses. Stop and delete leave nothing at the end.
#[test]
fn container_verbs_and_exec_killed_anywhere_are_recovered() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;
    let pod = "kv";
    let create = |id: &str, command: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["container", "create", pod, id, "--rootfs", rootfs, "--"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(command.iter().map(|s| s.to_string()));
        args
    };
    let binds_of = |id: &str| -> Vec<std::path::PathBuf> {
        // The bind under `mounts`, and its propagated copy under `shared`.
        let under = [format!("/mounts/{id}/"), format!("/shared/{id}/")];
        t.leftover_binds()
            .into_iter()
            .filter(|m| {
                let m = m.to_string_lossy();
                under.iter().any(|u| m.contains(u.as_str()))
            })
            .collect()
    };
    v.ok(["pod", "create", pod])?;
    v.ok(create("main", &["/bin/sleep", "3600"]))?;
    v.ok(["pod", "start", pod])?;
    let running = on_disk(&t, pod);

    // Create: rolled back by the next verb; the same create then succeeds
    // and the container runs.
    for (i, point) in CONTAINER_CREATE_POINTS.iter().enumerate() {
        let id = format!("c{i}");
        v.killed_at(point, &create(&id, &["/bin/echo", "hello"]))?;
        check_records(t.root())?;
        let t0 = Instant::now();
        v.ok(create(&id, &["/bin/echo", "hello"]))
            .with_context(|| format!("create after a create killed at {point}"))?;
        let recovered = t0.elapsed();
        v.ok(["container", "start", pod, &id])?;
        let waited = v.run(["container", "wait", pod, &id])?;
        ensure!(waited.code == Some(0), "{point}: {waited}");
        v.ok(["container", "delete", pod, &id])?;
        ensure!(
            binds_of(&id).is_empty(),
            "{point}: binds left: {:?}",
            binds_of(&id)
        );
        eprintln!(
            "{point}: rolled back; the same create succeeded in {:.1} s",
            recovered.as_secs_f64()
        );
    }

    // Start: the next verb (a status) records what the guest did.
    let point = "container-start.guest-started";
    v.ok(create("s0", &["/bin/sleep", "3600"]))?;
    v.killed_at(point, &["container", "start", pod, "s0"])?;
    check_records(t.root())?;
    let s: Value = v.ok(["container", "status", pod, "s0", "--json"])?.json()?;
    ensure!(
        s["state"] == "running" && s["pid"].as_u64().is_some(),
        "{point}: the started container is not recorded running: {s}"
    );
    v.ok(["container", "stop", pod, "s0", "--grace", "1"])?;
    v.ok(["container", "delete", pod, "s0"])?;
    eprintln!(
        "{point}: the next status recorded it running (pid {})",
        s["pid"]
    );

    // Delete: finished by the next verb; the id is free again, in the guest too.
    for (i, point) in CONTAINER_DELETE_POINTS.iter().enumerate() {
        let id = format!("d{i}");
        v.ok(create(&id, &["/bin/true"]))?;
        v.ok(["container", "start", pod, &id])?;
        v.run(["container", "wait", pod, &id])?;
        v.killed_at(point, &["container", "delete", pod, &id])?;
        check_records(t.root())?;
        let status = v.run(["container", "status", pod, &id])?;
        ensure!(
            status.code != Some(0) && status.stderr.contains("does not exist"),
            "{point}: the delete was not finished: {status}"
        );
        ensure!(
            binds_of(&id).is_empty(),
            "{point}: binds left: {:?}",
            binds_of(&id)
        );
        v.ok(create(&id, &["/bin/true"]))
            .with_context(|| format!("{point}: the guest still has {id}"))?;
        v.ok(["container", "delete", pod, &id])?;
        eprintln!("{point}: the next verb finished the delete");
    }

    // Exec: nothing is recorded; the next exec works.
    let point = "exec.spawned";
    v.killed_at(
        point,
        &["container", "exec", pod, "main", "--", "/bin/sleep", "3600"],
    )?;
    let echoed = v.ok(["container", "exec", pod, "main", "--", "/bin/echo", "alive"])?;
    ensure!(echoed.stdout == "alive\n", "{point}: {echoed}");
    eprintln!("{point}: the next exec ran");

    let s = v.ok(["pod", "status", pod, "--json"])?.json()?;
    ensure!(s["state"] == "running", "{s}");
    ensure!(check_records(t.root())? == 1, "records");
    let mut all = running;
    let now = on_disk(&t, pod);
    all.pids.extend(now.pids);
    all.cgroups.extend(now.cgroups);
    v.ok(["pod", "stop", pod])?;
    v.ok(["pod", "delete", pod])?;
    assert_no_leak(&t, &all, "container verbs")
}
