//! A cgroups-rs [`Hierarchy`] for a cgroup2 mount at any path.
//!
//! cgroups-rs' own `V2` hierarchy is fixed to `/sys/fs/cgroup` and reads the
//! controller list from there. That is right in the guest, but privileged tests
//! on a host in hybrid mode find cgroup2 at `/sys/fs/cgroup/unified`. This type
//! hands cgroups-rs the same controllers for any root, so the limits, freezer and
//! removal still go through cgroups-rs.

use std::path::{Path, PathBuf};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Hierarchy, Subsystem};

/// cgroup2 mounted at `root`.
#[derive(Debug, Clone)]
pub(crate) struct Unified {
    root: PathBuf,
}

impl Unified {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
}

/// The controllers listed in `<dir>/cgroup.controllers` (empty when unreadable).
pub(crate) fn controllers_of(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Hierarchy for Unified {
    fn subsystems(&self) -> Vec<Subsystem> {
        let root = self.root.clone();
        let base = PathBuf::new();
        let mut subs: Vec<Subsystem> = controllers_of(&self.root)
            .iter()
            .filter_map(|c| match c.as_str() {
                "cpu" => Some(Subsystem::Cpu(CpuController::new(
                    root.clone(),
                    base.clone(),
                    true,
                ))),
                "memory" => Some(Subsystem::Mem(MemController::new(
                    root.clone(),
                    base.clone(),
                    true,
                ))),
                "pids" => Some(Subsystem::Pid(PidController::new(
                    root.clone(),
                    base.clone(),
                    true,
                ))),
                _ => None,
            })
            .collect();
        // The cgroup2 freezer is core functionality (cgroup.freeze), not a
        // controller: always there.
        subs.push(Subsystem::Freezer(FreezerController::new(root, base, true)));
        subs
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        true
    }
}
