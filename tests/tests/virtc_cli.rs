//! The `virtc` command line, driven as separate processes: state made by one
//! invocation is seen by the next (create in one process, list and status in
//! another, delete in a third), `virtc run` relays output and the exit code,
//! and errors exit non-zero with a message on stderr.

mod support;

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use support::pod::{wait_pids_gone, TestRuntime};
use support::virtc::Virtc;

fn virtc(t: &TestRuntime) -> Result<Virtc> {
    Virtc::new(t.root(), &t.image.dir)
}

/// The pod with id `id` in `pod list --json`, if any.
fn listed<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|p| p["id"] == id)
}

#[test]
fn pod_and_container_verbs_across_processes() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;

    v.ok(["pod", "create", "cli"])?;

    let list = v.ok(["pod", "list", "--json"])?.json()?;
    let pod = listed(&list, "cli").with_context(|| format!("pod cli not listed: {list}"))?;
    assert_eq!(pod["state"], "ready", "{pod}");

    v.ok(["pod", "start", "cli"])?;
    let status = v.ok(["pod", "status", "cli", "--json"])?.json()?;
    assert_eq!(status["state"], "running", "{status}");
    let processes = status["processes"]
        .as_array()
        .with_context(|| format!("no processes: {status}"))?;
    let qemu = processes
        .iter()
        .find(|p| p["name"] == "qemu")
        .and_then(|p| p["pid"].as_i64())
        .with_context(|| format!("no qemu pid: {status}"))?;
    assert!(qemu > 0, "{status}");
    let pids: Vec<i32> = processes
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    assert_eq!(pids.len(), 4, "qemu and three helpers: {status}");

    let created = v
        .ok([
            "container",
            "create",
            "cli",
            "c",
            "--rootfs",
            rootfs,
            "--json",
            "--",
            "/bin/sh",
            "-c",
            "echo hi",
        ])?
        .json()?;
    assert_eq!(created["state"], "ready", "{created}");
    let started = v.ok(["container", "start", "cli", "c", "--json"])?.json()?;
    assert!(started["pid"].as_u64().is_some(), "{started}");

    let waited = v.run(["container", "wait", "cli", "c"])?;
    assert_eq!(waited.code, Some(0), "{waited}");

    let c = v
        .ok(["container", "status", "cli", "c", "--json"])?
        .json()?;
    assert_eq!(c["state"], "stopped", "{c}");
    assert_eq!(c["exit_code"], 0, "{c}");

    v.ok(["container", "delete", "cli", "c"])?;
    let status = v.ok(["pod", "status", "cli", "--json"])?.json()?;
    assert_eq!(status["containers"], Value::Array(Vec::new()), "{status}");

    let stopped = v.ok(["pod", "stop", "cli", "--json"])?.json()?;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(
        wait_pids_gone(&pids, Duration::from_secs(5)),
        "helpers left after `pod stop`: {pids:?}"
    );
    v.ok(["pod", "delete", "cli"])?;

    let list = v.ok(["pod", "list", "--json"])?.json()?;
    assert_eq!(list, Value::Array(Vec::new()), "{list}");
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}

#[test]
fn run_relays_output_and_exit_code_and_leaves_no_pod() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;

    let ran = v.run([
        "run",
        "--rootfs",
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ])?;
    assert_eq!(ran.code, Some(5), "{ran}");
    assert_eq!(ran.stdout, "out\n", "{ran}");
    assert!(
        ran.stderr.lines().any(|l| l == "err"),
        "stderr has no line \"err\": {ran}"
    );

    let list = v.ok(["pod", "list", "--json"])?.json()?;
    assert_eq!(list, Value::Array(Vec::new()), "{list}");
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}

#[test]
fn errors_exit_non_zero_with_a_message() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = virtc(&t)?;

    let missing = v.run(["pod", "start", "nonexistent"])?;
    assert_ne!(missing.code, Some(0), "{missing}");
    assert!(missing.stderr.contains("nonexistent"), "{missing}");
    assert!(missing.stdout.is_empty(), "{missing}");

    let bad = v.run(["pod", "create", "bad/id"])?;
    assert_ne!(bad.code, Some(0), "{bad}");
    assert!(
        bad.stderr.contains("\"bad/id\"") && bad.stderr.contains("is invalid"),
        "{bad}"
    );

    let list = v.ok(["pod", "list", "--json"])?.json()?;
    assert_eq!(list, Value::Array(Vec::new()), "{list}");
    Ok(())
}
