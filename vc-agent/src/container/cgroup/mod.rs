//! One cgroup2 group per container, `<root>/<parent>/<id>` (in the guest
//! `/sys/fs/cgroup/vc/<id>`), with cgroups-rs.
//!
//! Through cgroups-rs: the limits (`memory.max`, `cpu.max`, `cpu.weight`,
//! `pids.max`), `cgroup.freeze`, `cgroup.kill` and the removal. The device
//! allow-list is a BPF program attached to the group (`devices.rs`, `bpf.rs`).
//! Straight to the files, each for a reason:
//! - enabling controllers in `cgroup.subtree_control`: cgroups-rs' `create()`
//!   enables whatever `/sys/fs/cgroup/cgroup.controllers` lists and ignores
//!   write errors, so a missing controller would only show later as a missing
//!   file; here each wanted controller is enabled and a failure reported;
//! - creating the directory: cgroups-rs uses `create_dir_all`, which would
//!   silently reuse a leftover group of the same id;
//! - stats, `memory.events`, `cgroup.events`, `cgroup.procs`: cgroups-rs' getters
//!   turn read errors into zeros or empty lists and return `cpu.stat` unparsed.
//!   Here a file that does not exist (its controller is not enabled) reads as
//!   zero / no limit, and any other error is an error.

mod bpf;
mod devices;
pub(crate) mod files;
mod hierarchy;
mod limits;

use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::Cgroup;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use vc_proto::{ContainerStats, Resources};

pub(crate) use self::devices::{disk_rule, DeviceRule};
use self::hierarchy::{controllers_of, Unified};
pub(crate) use self::limits::Limits;
use super::error::{CgroupsRsError, ContainerError};

/// The controllers enabled for containers.
const WANTED: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// How long [`ContainerCgroup::freeze`] waits for `cgroup.events` to agree.
const FREEZE_WAIT: Duration = Duration::from_secs(5);
/// How long [`ContainerCgroup::kill_and_remove`] waits for the processes to go.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Polling interval of the waits above.
const POLL: Duration = Duration::from_millis(5);

/// A container's cgroup.
#[derive(Debug)]
pub(crate) struct ContainerCgroup {
    cgroup: Cgroup,
    dir: PathBuf,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io {
        action,
        path,
        source,
    }
}

/// Reads a file of the cgroup; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ContainerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Checks that `root` is a cgroup2 mount.
pub(crate) fn check_cgroup2(root: &Path) -> Result<(), ContainerError> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    let st = statfs(root).map_err(|e| ContainerError::Io {
        action: "statfs",
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    if st.filesystem_type() == CGROUP2_SUPER_MAGIC {
        Ok(())
    } else {
        Err(ContainerError::NotCgroup2(root.to_path_buf()))
    }
}

/// Enables `controllers` in `dir/cgroup.subtree_control`, one at a time so
/// that the error names the one that failed.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), ContainerError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).map_err(io_err("read", &file))?;
    for c in controllers {
        if enabled.split_whitespace().any(|e| e == *c) {
            continue;
        }
        std::fs::write(&file, format!("+{c}")).map_err(io_err("enable a controller in", &file))?;
    }
    Ok(())
}

impl ContainerCgroup {
    /// Creates `<root>/<parent>/<id>` with `resources` applied and the device
    /// allow-list attached: the defaults plus `disks`, the rules for the
    /// container's own block devices (its first process mounts them). The parent is
    /// created when missing; the controllers of [`WANTED`] that the kernel has
    /// are enabled on the way down. A limit whose controller is missing is an
    /// error; nothing is left behind on failure.
    pub(crate) fn create(
        root: &Path,
        parent: &str,
        id: &str,
        resources: &Resources,
        disks: &[devices::DeviceRule],
    ) -> Result<Self, ContainerError> {
        check_cgroup2(root)?;
        let limits = Limits::from_resources(resources)?;
        let available = controllers_of(root);
        let enable: Vec<&str> = WANTED
            .iter()
            .copied()
            .filter(|w| available.iter().any(|a| a == w))
            .collect();
        let parent_dir = root.join(parent);
        for c in limits.controllers() {
            if !enable.contains(&c) {
                return Err(ContainerError::ControllerUnavailable(c, root.to_path_buf()));
            }
        }
        enable_controllers(root, &enable)?;
        match std::fs::create_dir(&parent_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create the cgroup", &parent_dir)(e)),
        }
        enable_controllers(&parent_dir, &enable)?;

        let rel = Path::new(parent).join(id);
        let dir = root.join(&rel);
        std::fs::create_dir(&dir).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                ContainerError::Exists(id.to_string())
            } else {
                io_err("create the cgroup", &dir)(e)
            }
        })?;
        let cg = Self {
            cgroup: Cgroup::load(Box::new(Unified::new(root)), rel),
            dir,
        };
        let set_up = limits.apply(&cg.cgroup, &cg.dir).and_then(|()| {
            let rules: Vec<_> = devices::DEFAULT_RULES
                .iter()
                .chain(disks)
                .copied()
                .collect();
            bpf::attach_device_filter(&cg.dir, &rules)
        });
        if let Err(e) = set_up {
            let _ = std::fs::remove_dir(&cg.dir);
            return Err(e);
        }
        Ok(cg)
    }

    /// The cgroup's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the limits that are set in `r`.
    pub(crate) fn update(&self, r: &Resources) -> Result<(), ContainerError> {
        Limits::from_resources(r)?.apply(&self.cgroup, &self.dir)
    }

    /// Opens `cgroup.procs` for writing (close-on-exec): a child joins the cgroup
    /// by writing `0` to it, even after it entered another mount namespace.
    pub(crate) fn open_procs(&self) -> Result<OwnedFd, ContainerError> {
        let path = self.dir.join("cgroup.procs");
        nix::fcntl::open(&path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map(|fd| {
                // SAFETY: `open` just returned this descriptor and nothing else owns it.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
            .map_err(|e| io_err("open", &path)(e.into()))
    }

    /// Pids (in the agent's PID namespace) of every process in the cgroup.
    pub(crate) fn pids(&self) -> Result<Vec<i32>, ContainerError> {
        let path = self.dir.join("cgroup.procs");
        let s = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        s.lines()
            .map(|l| {
                l.trim().parse::<i32>().map_err(|_| ContainerError::Parse {
                    path: path.clone(),
                    what: "one pid per line",
                })
            })
            .collect()
    }

    /// The `oom_kill` counter of `memory.events`.
    pub(crate) fn oom_kills(&self) -> Result<u64, ContainerError> {
        let path = self.memory_events_path();
        let s = read_optional(&path)?
            .ok_or_else(|| ContainerError::ControllerUnavailable("memory", self.dir.clone()))?;
        files::flat_keyed(&s, "oom_kill").ok_or(ContainerError::Parse {
            path,
            what: "an oom_kill line",
        })
    }

    /// `memory.events`: the kernel signals a change of it to inotify
    /// (`IN_MODIFY`) and `poll` (`POLLPRI`), for an OOM watcher.
    pub(crate) fn memory_events_path(&self) -> PathBuf {
        self.dir.join("memory.events")
    }

    /// Usage from `cpu.stat`, `memory.current`/`max`, `pids.current`/`max` and
    /// `io.stat`.
    pub(crate) fn stats(&self) -> Result<ContainerStats, ContainerError> {
        let read = |name: &str| read_optional(&self.dir.join(name));
        let parse_err = |name: &str, what| ContainerError::Parse {
            path: self.dir.join(name),
            what,
        };
        let number = |name: &str| -> Result<u64, ContainerError> {
            match read(name)? {
                None => Ok(0),
                Some(s) => files::number(&s).ok_or_else(|| parse_err(name, "a number")),
            }
        };
        let max = |name: &str| -> Result<Option<u64>, ContainerError> {
            match read(name)? {
                None => Ok(None),
                Some(s) => files::max_value(&s).map_err(|()| parse_err(name, "a number or max")),
            }
        };
        let cpu = read("cpu.stat")?.unwrap_or_default();
        let (blkio_read_bytes, blkio_write_bytes) =
            files::io_bytes(&read("io.stat")?.unwrap_or_default());
        Ok(ContainerStats {
            cpu_usage_us: files::flat_keyed(&cpu, "usage_usec").unwrap_or(0),
            cpu_user_us: files::flat_keyed(&cpu, "user_usec").unwrap_or(0),
            cpu_system_us: files::flat_keyed(&cpu, "system_usec").unwrap_or(0),
            memory_usage_bytes: number("memory.current")?,
            memory_limit_bytes: max("memory.max")?,
            pids: number("pids.current")?,
            pids_limit: max("pids.max")?,
            blkio_read_bytes,
            blkio_write_bytes,
        })
    }

    /// The `key` of `cgroup.events`.
    fn event(&self, key: &'static str) -> Result<u64, ContainerError> {
        let path = self.dir.join("cgroup.events");
        let s = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        files::flat_keyed(&s, key).ok_or(ContainerError::Parse { path, what: key })
    }

    /// Polls `cgroup.events` until `key` is `want`, for at most `limit`.
    fn wait_event(
        &self,
        key: &'static str,
        want: u64,
        limit: Duration,
    ) -> Result<bool, ContainerError> {
        let start = Instant::now();
        loop {
            if self.event(key)? == want {
                return Ok(true);
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Freezes (or thaws) every process of the cgroup and waits until the kernel
    /// says it is done (`cgroup.events` `frozen`), for a bounded time. Blocking.
    pub(crate) fn freeze(&self, frozen: bool) -> Result<(), ContainerError> {
        let freezer: &FreezerController = self
            .cgroup
            .controller_of()
            .ok_or_else(|| ContainerError::ControllerUnavailable("freezer", self.dir.clone()))?;
        let result = if frozen {
            freezer.freeze()
        } else {
            freezer.thaw()
        };
        result.map_err(|source| ContainerError::Cgroup {
            action: if frozen { "freeze" } else { "thaw" },
            path: self.dir.clone(),
            source: CgroupsRsError(source),
        })?;
        if self.wait_event("frozen", u64::from(frozen), FREEZE_WAIT)? {
            Ok(())
        } else {
            Err(ContainerError::FreezeTimeout {
                path: self.dir.clone(),
                state: if frozen { "frozen" } else { "thawed" },
                millis: FREEZE_WAIT.as_millis() as u64,
            })
        }
    }

    /// Kills whatever still runs in the cgroup (`cgroup.kill`), waits until it
    /// is empty, and removes it. Blocking, bounded.
    pub(crate) fn kill_and_remove(self) -> Result<(), ContainerError> {
        if !self.dir.exists() {
            return Ok(());
        }
        if self.event("populated")? != 0 {
            if let Err(source) = self.cgroup.kill() {
                // Kernels before 5.14 have no cgroup.kill: signal each process.
                tracing::debug!(error = %CgroupsRsError(source), "cgroup.kill failed, killing each process");
                for pid in self.pids()? {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !self.wait_event("populated", 0, KILL_WAIT)? {
                return Err(ContainerError::KillTimeout {
                    path: self.dir.clone(),
                    millis: KILL_WAIT.as_millis() as u64,
                });
            }
        }
        self.cgroup
            .delete()
            .map_err(|source| ContainerError::Cgroup {
                action: "remove",
                path: self.dir.clone(),
                source: CgroupsRsError(source),
            })
    }
}

#[cfg(test)]
mod tests {
    //! The limits written through cgroups-rs, checked on a directory shaped like
    //! a cgroup (no kernel needed): what ends up in each file.

    use super::*;

    fn fake_cgroup() -> (tempfile::TempDir, ContainerCgroup) {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        let dir = root.path().join("vc/c1");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (f, v) in [
            ("memory.max", "max\n"),
            ("cpu.max", "max 100000\n"),
            ("cpu.weight", "100\n"),
            ("pids.max", "max\n"),
            ("cgroup.procs", ""),
        ] {
            std::fs::write(dir.join(f), v).expect("write");
        }
        let cg = ContainerCgroup {
            cgroup: Cgroup::load(Box::new(Unified::new(root.path())), "vc/c1"),
            dir,
        };
        (root, cg)
    }

    fn read(cg: &ContainerCgroup, f: &str) -> String {
        std::fs::read_to_string(cg.dir.join(f)).expect("read")
    }

    #[test]
    fn limits_land_in_the_files() {
        let (_root, cg) = fake_cgroup();
        cg.update(&Resources {
            memory_limit_bytes: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(200_000),
            cpu_weight: Some(500),
            pids_limit: Some(32),
        })
        .expect("update");
        assert_eq!(read(&cg, "memory.max"), "67108864");
        assert_eq!(read(&cg, "cpu.max"), "50000 200000");
        assert_eq!(read(&cg, "cpu.weight"), "500");
        assert_eq!(read(&cg, "pids.max"), "32");
    }

    #[test]
    fn partial_updates_keep_the_rest() {
        let (_root, cg) = fake_cgroup();
        std::fs::write(cg.dir.join("cpu.max"), "20000 100000\n").expect("write");
        cg.update(&Resources {
            cpu_period_us: Some(50_000),
            ..Resources::default()
        })
        .expect("update");
        assert_eq!(read(&cg, "cpu.max"), "20000 50000");
        assert_eq!(read(&cg, "memory.max"), "max\n");
        cg.update(&Resources {
            memory_limit_bytes: Some(u64::MAX),
            cpu_quota_us: Some(u64::MAX),
            pids_limit: Some(u64::MAX),
            ..Resources::default()
        })
        .expect("update");
        assert_eq!(read(&cg, "memory.max"), "max");
        assert_eq!(read(&cg, "cpu.max"), "max 50000");
        assert_eq!(read(&cg, "pids.max"), "max");
    }

    #[test]
    fn stats_read_what_is_there() {
        let (_root, cg) = fake_cgroup();
        for (f, v) in [
            (
                "cpu.stat",
                "usage_usec 300\nuser_usec 200\nsystem_usec 100\n",
            ),
            ("memory.current", "1048576\n"),
            ("memory.max", "2097152\n"),
            ("pids.current", "3\n"),
            (
                "io.stat",
                "254:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n",
            ),
        ] {
            std::fs::write(cg.dir.join(f), v).expect("write");
        }
        let s = cg.stats().expect("stats");
        assert_eq!(
            s,
            ContainerStats {
                cpu_usage_us: 300,
                cpu_user_us: 200,
                cpu_system_us: 100,
                memory_usage_bytes: 1 << 20,
                memory_limit_bytes: Some(2 << 20),
                pids: 3,
                pids_limit: None,
                blkio_read_bytes: 10,
                blkio_write_bytes: 20,
            }
        );
        std::fs::write(cg.dir.join("memory.current"), "lots\n").expect("write");
        assert!(matches!(cg.stats(), Err(ContainerError::Parse { .. })));
    }

    #[test]
    fn missing_controller_files_read_as_unlimited_and_oom_needs_memory() {
        let (_root, cg) = fake_cgroup();
        for f in ["memory.max", "pids.max"] {
            std::fs::remove_file(cg.dir.join(f)).expect("rm");
        }
        let s = cg.stats().expect("stats");
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.pids, 0);
        assert!(matches!(
            cg.oom_kills(),
            Err(ContainerError::ControllerUnavailable("memory", _))
        ));
        std::fs::write(
            cg.memory_events_path(),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("write");
        assert_eq!(cg.oom_kills().expect("oom"), 1);
    }

    #[test]
    fn pids_are_parsed() {
        let (_root, cg) = fake_cgroup();
        std::fs::write(cg.dir.join("cgroup.procs"), "12\n345\n").expect("write");
        assert_eq!(cg.pids().expect("pids"), vec![12, 345]);
    }
}
