//! Leak checks of pods driven through `virtc` (another process, with its own
//! cgroup parent): what a pod's files name on disk, read while it exists,
//! and a check that none of it outlives the pod.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;

use super::pod::{pid_gone, wait_pids_gone, TestRuntime};

/// What the pod's files name on disk: host processes (of the record's VM and
/// of the launch journal, and whatever is in their cgroups) and cgroup
/// directories.
#[derive(Debug, Default)]
pub struct OnDisk {
    /// Host processes.
    pub pids: BTreeSet<i32>,
    /// Cgroup directories.
    pub cgroups: BTreeSet<PathBuf>,
    /// QEMU's pid.
    pub qemu: Option<i32>,
}

/// Reads what pod `id` names now (nothing once it is deleted).
pub fn on_disk(t: &TestRuntime, id: &str) -> OnDisk {
    let dir = t.root().join("pods").join(id);
    let read = |p: PathBuf| -> Value {
        std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let state = read(dir.join("state.json"));
    let journal = read(dir.join("vm/launch.json"));
    let mut out = OnDisk::default();
    let vm = &state["vm"];
    out.qemu = vm["qemu"]["pid"]
        .as_i64()
        .or_else(|| journal["qemu"]["pid"].as_i64())
        .map(|p| p as i32);
    let pids = vm["daemons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["process"]["pid"].as_i64())
        .chain(
            journal["daemons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["pid"].as_i64()),
        )
        .map(|p| p as i32)
        .chain(out.qemu);
    out.pids.extend(pids);
    for cg in [&vm["cgroup"], &journal["cgroup"]] {
        for d in cg["dirs"].as_array().into_iter().flatten() {
            if let Some(d) = d.as_str() {
                out.cgroups.insert(PathBuf::from(d));
            }
        }
    }
    for cg in &out.cgroups {
        if let Ok(text) = std::fs::read_to_string(cg.join("cgroup.procs")) {
            out.pids
                .extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    out
}

/// Nothing of `left` remains, and the runtime root holds no pod and no mount.
pub fn assert_no_leak(t: &TestRuntime, left: &OnDisk, what: &str) -> Result<()> {
    let pids: Vec<i32> = left.pids.iter().copied().collect();
    ensure!(
        wait_pids_gone(&pids, Duration::from_secs(10)),
        "{what}: processes left: {:?}",
        pids.iter().filter(|p| !pid_gone(**p)).collect::<Vec<_>>()
    );
    let cgroups: Vec<_> = left.cgroups.iter().filter(|c| c.exists()).collect();
    ensure!(cgroups.is_empty(), "{what}: cgroups left: {cgroups:?}");
    ensure!(
        t.leftover_pods().is_empty(),
        "{what}: pods left: {:?}",
        t.leftover_pods()
    );
    ensure!(
        t.leftover_mounts().is_empty(),
        "{what}: mounts left: {:?}",
        t.leftover_mounts()
    );
    Ok(())
}
