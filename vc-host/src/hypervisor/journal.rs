//! The launch journal: what a launch in progress has started, on disk.
//!
//! A launch starts the console logger, the vhost-user daemons and QEMU
//! before it can return the [`VmRecord`](super::VmRecord) that the caller
//! persists. A launcher killed on the way (SIGKILL, OOM) runs no drop guard,
//! and its children, in sessions of their own, live on with nothing naming
//! them. So the launch writes `launch.json` in the run directory, atomically,
//! before it creates anything (naming the pod's host cgroup and the files it
//! will make) and again after each process starts (its pid and start time).
//! The file is among the VM's cleanup files: [`Vm::stop`](super::Vm::stop)
//! and a failed launch remove it with the sockets.
//!
//! [`reap`] undoes an interrupted launch from its journal: it kills each
//! recorded process whose pid still has the recorded start time, then any
//! process left in the pod's own cgroup (one that started in the instant
//! between its fork and the journal's update: every child joins the cgroup
//! before it executes anything), removes the files and the cgroup. Nothing
//! is ever found by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::cgroup::{self, CgroupRecord};
use super::process::ProcessRecord;
use super::vm::remove_files;
use crate::store::StoreError;

/// The journal's file name in the run directory.
pub const JOURNAL_FILE: &str = "launch.json";

/// How long a killed process gets to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a launch has started so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchJournal {
    /// QEMU, once spawned.
    pub qemu: Option<ProcessRecord>,
    /// The helper daemons spawned so far, in order.
    pub daemons: Vec<ProcessRecord>,
    /// Sockets and files to remove.
    pub cleanup: Vec<PathBuf>,
    /// The pod's host cgroup, once created.
    pub cgroup: Option<CgroupRecord>,
}

/// The journal of the launch in `run_dir`.
pub fn journal_path(run_dir: &Path) -> PathBuf {
    run_dir.join(JOURNAL_FILE)
}

impl LaunchJournal {
    /// Replaces the journal in `run_dir` (atomically).
    pub fn write(&self, run_dir: &Path) -> Result<(), StoreError> {
        crate::store::write_json_atomic(&journal_path(run_dir), self)
    }

    /// Rewrites the files it names under `from` to the same files under `to`
    /// (see [`super::VmRecord::relocate`]).
    pub fn relocate(&mut self, from: &Path, to: &Path) {
        for p in &mut self.cleanup {
            *p = super::vm::relocated(p, from, to);
        }
    }

    /// Reads the journal in `run_dir`, if there is one.
    pub fn read(run_dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = journal_path(run_dir);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        crate::store::read_json(&path).map(Some)
    }
}

/// Undoes the launch journaled in `run_dir`, if any: kills what it started
/// (QEMU first), removes its files and cgroup, and the journal. Returns how
/// many live processes were killed. Call it only while holding whatever
/// serializes launches in `run_dir` (the pod's lock), after the VM that the
/// caller recorded, if any, is stopped: a live VM's processes are in its
/// journal too.
pub async fn reap(run_dir: &Path) -> usize {
    let dir = run_dir.to_owned();
    let journal = match crate::blocking::run(move || LaunchJournal::read(&dir)).await {
        Ok(Some(j)) => j,
        Ok(None) => return 0,
        Err(e) => {
            // A torn or foreign file names nothing we may act on.
            warn!(error = %e, "unreadable launch journal ignored");
            let journal = journal_path(run_dir);
            crate::blocking::run(move || remove_files(&[journal])).await;
            return 0;
        }
    };
    let mut killed = 0;
    let mut kill = |p: ProcessRecord| {
        let alive = p.is_alive();
        killed += usize::from(alive);
        async move {
            if alive {
                if let Err(e) = p.kill(KILL_WAIT).await {
                    warn!(pid = p.pid, error = %e, "cannot kill an orphan of an interrupted launch");
                }
            }
        }
    };
    for p in journal.qemu.into_iter().chain(journal.daemons) {
        kill(p).await;
    }
    if let Some(cg) = journal.cgroup.clone() {
        for p in crate::blocking::run(move || cgroup_members(&cg)).await {
            kill(p).await;
        }
    }
    let mut files = journal.cleanup.clone();
    files.push(journal_path(run_dir));
    crate::blocking::run(move || remove_files(&files)).await;
    if let Some(cg) = &journal.cgroup {
        if let Err(e) = cgroup::remove(cg).await {
            warn!(error = %e, "cannot remove the host cgroup of an interrupted launch");
        }
    }
    if killed > 0 {
        info!(
            run_dir = %run_dir.display(),
            killed, "killed the processes of an interrupted launch"
        );
    }
    killed
}

/// The processes in the cgroup's directories.
fn cgroup_members(cg: &CgroupRecord) -> Vec<ProcessRecord> {
    let mut out = Vec::new();
    for dir in &cg.dirs {
        let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            continue;
        };
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(p) = ProcessRecord::of(pid) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reap_kills_what_the_journal_names_and_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(reap(dir.path()).await, 0, "no journal: nothing");
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let record = ProcessRecord::of(pid).expect("record");
        let sock = dir.path().join("x.sock");
        std::fs::write(&sock, b"").expect("file");
        let journal = LaunchJournal {
            qemu: None,
            // A pid with a start time that cannot match is left alone.
            daemons: vec![
                ProcessRecord {
                    pid: std::process::id() as i32,
                    start_time: 1,
                },
                record,
            ],
            cleanup: vec![sock.clone()],
            cgroup: None,
        };
        journal.write(dir.path()).expect("write");
        assert_eq!(
            LaunchJournal::read(dir.path()).expect("read"),
            Some(journal)
        );
        assert_eq!(reap(dir.path()).await, 1);
        // Killed and reaped (it is our child) by the reap.
        assert!(!record.is_alive());
        drop(child);
        assert!(!sock.exists() && !journal_path(dir.path()).exists());
        std::fs::write(journal_path(dir.path()), b"{\"qemu\": ").expect("torn");
        assert_eq!(reap(dir.path()).await, 0, "a torn journal names nothing");
        assert!(!journal_path(dir.path()).exists());
    }
}
