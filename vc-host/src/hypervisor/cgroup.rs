//! The per-pod host cgroup: QEMU and every helper of one VM run in one
//! cgroup with a memory limit (guest memory plus a stated overhead) and a
//! limit on tasks, so a guest that drives its device emulation into using
//! memory or threads without bound hits its own pod's limit, not the host's.
//!
//! Works on cgroup v1 (one hierarchy per controller: the pod gets a directory
//! in the `memory` and in the `pids` hierarchy) and on v2 (one directory in
//! the unified hierarchy, with `+memory +pids` enabled on its ancestors).
//!
//! Where: `<base>/<parent>/<name>`. An absolute `parent` is taken from the
//! hierarchy's root. A relative one is taken, on v1, from the cgroup of the
//! process that launches the VM (so a runtime confined by its own service
//! manager keeps its pods inside its confinement), and on v2 from the root
//! (a v2 cgroup that holds processes, as the caller's does, cannot have
//! children with controllers).
//!
//! The processes join from their child before `exec` (see
//! [`CgroupJoin`] and [`super::process::Detached`]): none of them runs a
//! single instruction outside the cgroup. The cgroup directories are recorded
//! in the VM's record and removed by [`super::Vm::stop`] and by every failed
//! launch.
//!
//! Planning ([`plan`]) is a pure function of the host's facts
//! ([`CgroupFacts`], read from `/proc/self/mountinfo` and
//! `/proc/self/cgroup`), so the layouts of both versions are unit-tested here.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::debug;

use crate::mountinfo::MountInfoError;

/// The controllers the pod's cgroup needs.
pub const CONTROLLERS: [&str; 2] = ["memory", "pids"];

/// How long removing a cgroup waits for its last tasks to leave.
const REMOVE_WAIT: Duration = Duration::from_secs(3);

/// How often a busy cgroup's removal is retried.
const REMOVE_POLL: Duration = Duration::from_millis(10);

/// Which cgroup interface the host offers for memory and pids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// The limits of one pod's host cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// Most memory (bytes, a multiple of the page size) the pod's host
    /// processes may use together, guest memory included.
    pub memory_bytes: u64,
    /// Most tasks (processes and threads) at once.
    pub pids_max: u64,
}

/// What the launch is asked to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSpec {
    /// Parent path; see the module documentation for relative and absolute.
    pub parent: PathBuf,
    /// The pod's cgroup name: one path component.
    pub name: String,
    /// Its limits.
    pub limits: CgroupLimits,
}

/// A cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup it shows at its mount point (`/` unless a sub-tree is
    /// bind-mounted or a cgroup namespace is in use).
    pub root: PathBuf,
    /// `None` for v2; the v1 controllers (from the super options) otherwise.
    pub v1_controllers: Option<Vec<String>>,
}

/// The host facts planning needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupFacts {
    /// Every cgroup and cgroup2 mount.
    pub mounts: Vec<CgroupMount>,
    /// `/proc/self/cgroup`: (v1 controllers, or empty for v2; path).
    pub own: Vec<(Vec<String>, PathBuf)>,
    /// The controllers of the v2 root (`cgroup.controllers`), when mounted.
    pub v2_controllers: Vec<String>,
}

/// What [`create`] does, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlan {
    /// Version in use.
    pub version: CgroupVersion,
    /// The pod's cgroup directories (one per v1 hierarchy, one on v2).
    pub dirs: Vec<PathBuf>,
    /// v2: the `cgroup.subtree_control` files that get `+memory +pids`, from
    /// the root down to the parent.
    pub enable: Vec<PathBuf>,
    /// Limit files and the values written to them, in order.
    pub limits: Vec<(PathBuf, String)>,
}

/// The recorded cgroup of a launched VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// Version in use.
    pub version: CgroupVersion,
    /// The pod's cgroup directories.
    pub dirs: Vec<PathBuf>,
    /// The limits set.
    pub limits: CgroupLimits,
}

/// Why the pod's cgroup could not be set up or removed.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` or `/proc/self/cgroup` is unreadable.
    #[error("cannot read {path}")]
    Facts {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/mountinfo` does not parse.
    #[error("cannot read the cgroup mounts")]
    MountInfo(#[from] MountInfoError),
    /// No mounted hierarchy offers both controllers.
    #[error("no mounted cgroup hierarchy offers the memory and pids controllers (v1 hierarchies, or cgroup2 with both in cgroup.controllers); mount them, or disable the pod cgroup (host_cgroup.enabled = false)")]
    NoHierarchy,
    /// The parent or name would leave the hierarchy this process sees.
    #[error("cgroup path {path} is outside the cgroup hierarchy mounted at {mount}")]
    Outside {
        /// The cgroup path.
        path: PathBuf,
        /// The mount point.
        mount: PathBuf,
    },
    /// The name is not one path component.
    #[error("cgroup name {0:?} must be one path component")]
    Name(String),
    /// A directory could not be created.
    #[error("cannot create cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The pod's cgroup exists and holds processes.
    #[error("cgroup {path} already holds processes")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// A control file could not be written.
    #[error("cannot write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be removed.
    #[error("cannot remove cgroup {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

impl CgroupFacts {
    /// Reads this process's view of the host.
    pub fn probe() -> Result<Self, CgroupError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| CgroupError::Facts {
                path: path.into(),
                source,
            })
        };
        let mounts = parse_mountinfo(&read("/proc/self/mountinfo")?)?;
        let own = parse_proc_cgroup(&read("/proc/self/cgroup")?);
        let v2_controllers = mounts
            .iter()
            .find(|m| m.v1_controllers.is_none())
            .and_then(|m| std::fs::read_to_string(m.mount_point.join("cgroup.controllers")).ok())
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(CgroupFacts {
            mounts,
            own,
            v2_controllers,
        })
    }
}

/// The cgroup mounts listed in the text of `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Result<Vec<CgroupMount>, MountInfoError> {
    Ok(crate::mountinfo::parse(text)?
        .into_iter()
        .filter_map(|m| {
            let v1_controllers = match m.fs_type.as_str() {
                "cgroup2" => None,
                "cgroup" => Some(
                    m.super_options
                        .split(',')
                        .filter(|o| CONTROLLERS.contains(o))
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => return None,
            };
            Some(CgroupMount {
                mount_point: m.mount_point,
                root: m.root,
                v1_controllers,
            })
        })
        .collect())
}

/// The lines of `/proc/self/cgroup`: (v1 controllers or empty, path).
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((controllers, PathBuf::from(path)))
        })
        .collect()
}

/// `<base>/<parent>/<name>` as a cgroup path, with `..` and the like refused.
fn cgroup_path(base: &Path, parent: &Path, name: &str) -> Result<PathBuf, CgroupError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(CgroupError::Name(name.to_owned()));
    }
    let mut path = if parent.is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    for c in parent.components() {
        match c {
            Component::Normal(part) => path.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::Name(parent.display().to_string()))
            }
        }
    }
    path.push(name);
    Ok(path)
}

/// Where a cgroup path is in the filesystem, under `mount`.
fn dir_of(mount: &CgroupMount, cgroup: &Path) -> Result<PathBuf, CgroupError> {
    let rel = cgroup
        .strip_prefix(&mount.root)
        .map_err(|_| CgroupError::Outside {
            path: cgroup.to_path_buf(),
            mount: mount.mount_point.clone(),
        })?;
    Ok(mount.mount_point.join(rel))
}

/// The pod's cgroup layout for `spec` on a host described by `facts`.
pub fn plan(facts: &CgroupFacts, spec: &CgroupSpec) -> Result<CgroupPlan, CgroupError> {
    let v1 = |controller: &'static str| {
        let mount = facts.mounts.iter().find(|m| {
            m.v1_controllers
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == controller))
        })?;
        let own = facts
            .own
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == controller))
            .map_or_else(|| PathBuf::from("/"), |(_, p)| p.clone());
        Some((controller, mount, own))
    };
    if let (Some(memory), Some(pids)) = (v1("memory"), v1("pids")) {
        let mut dirs = Vec::new();
        let mut limits = Vec::new();
        for (controller, mount, own) in [memory, pids] {
            let dir = dir_of(mount, &cgroup_path(&own, &spec.parent, &spec.name)?)?;
            let (file, value) = match controller {
                "memory" => ("memory.limit_in_bytes", spec.limits.memory_bytes),
                _ => ("pids.max", spec.limits.pids_max),
            };
            limits.push((dir.join(file), value.to_string()));
            dirs.push(dir);
        }
        return Ok(CgroupPlan {
            version: CgroupVersion::V1,
            dirs,
            enable: Vec::new(),
            limits,
        });
    }
    let unified = facts
        .mounts
        .iter()
        .find(|m| m.v1_controllers.is_none())
        .filter(|_| {
            CONTROLLERS
                .iter()
                .all(|c| facts.v2_controllers.iter().any(|have| have == c))
        })
        .ok_or(CgroupError::NoHierarchy)?;
    // A relative parent starts at the root: the caller's own cgroup holds
    // processes, so it cannot have children with controllers.
    let cgroup = cgroup_path(Path::new("/"), &spec.parent, &spec.name)?;
    let dir = dir_of(unified, &cgroup)?;
    let mut enable = Vec::new();
    let mut level = unified.mount_point.clone();
    let rel = dir
        .strip_prefix(&unified.mount_point)
        .map_err(|_| CgroupError::Outside {
            path: cgroup.clone(),
            mount: unified.mount_point.clone(),
        })?;
    for part in rel.components() {
        enable.push(level.join("cgroup.subtree_control"));
        level.push(part);
    }
    Ok(CgroupPlan {
        version: CgroupVersion::V2,
        limits: vec![
            (dir.join("memory.max"), spec.limits.memory_bytes.to_string()),
            (dir.join("pids.max"), spec.limits.pids_max.to_string()),
        ],
        dirs: vec![dir],
        enable,
    })
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    };
    let mut f = OpenOptions::new().write(true).open(path).map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

fn has_procs(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
}

/// Creates the cgroup of `plan` with its limits. A leftover directory of an
/// earlier run is reused when it holds no process. On error, whatever this
/// call created is removed.
pub fn create(plan: &CgroupPlan, limits: CgroupLimits) -> Result<CgroupRecord, CgroupError> {
    let record = CgroupRecord {
        version: plan.version,
        dirs: plan.dirs.clone(),
        limits,
    };
    let result: Result<(), CgroupError> = (|| {
        for dir in &plan.dirs {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|source| CgroupError::Create {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
        }
        for file in &plan.enable {
            write_file(file, "+memory +pids")?;
        }
        for dir in &plan.dirs {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !has_procs(dir) => {
                    debug!(dir = %dir.display(), "reusing an empty leftover cgroup");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(CgroupError::InUse { path: dir.clone() })
                }
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        for (file, value) in &plan.limits {
            write_file(file, value)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(record),
        Err(e) => {
            if !matches!(e, CgroupError::InUse { .. }) {
                let _ = remove_blocking(&record);
            }
            Err(e)
        }
    }
}

/// Removes the pod's cgroup directories, waiting (at most
/// `REMOVE_WAIT`, 3 s) for tasks that are still leaving; directories already
/// gone are fine. Each attempt runs on the blocking pool and the waits
/// between them are async sleeps, so the caller's thread keeps serving other
/// tasks while the cgroup drains.
pub async fn remove(record: &CgroupRecord) -> Result<(), CgroupError> {
    let deadline = Instant::now() + REMOVE_WAIT;
    loop {
        let dirs = record.dirs.clone();
        let last = Instant::now() >= deadline;
        match crate::blocking::run(move || remove_dirs(&dirs, last)).await {
            Some(result) => return result,
            None => tokio::time::sleep(REMOVE_POLL).await,
        }
    }
}

/// [`remove`] for callers that cannot await (drop guards, which hand it to
/// the blocking pool): the same bounded wait, sleeping the thread.
pub fn remove_blocking(record: &CgroupRecord) -> Result<(), CgroupError> {
    let deadline = Instant::now() + REMOVE_WAIT;
    loop {
        match remove_dirs(&record.dirs, Instant::now() >= deadline) {
            Some(result) => return result,
            None => std::thread::sleep(REMOVE_POLL),
        }
    }
}

/// One attempt at removing `dirs`: `None` when one is still busy (tasks
/// leaving) and `last` is false, so the caller should try again.
fn remove_dirs(dirs: &[PathBuf], last: bool) -> Option<Result<(), CgroupError>> {
    let mut first = None;
    for dir in dirs {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !last => return None,
            Err(source) => {
                first.get_or_insert(CgroupError::Remove {
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    Some(first.map_or(Ok(()), Err))
}

/// Open `cgroup.procs` files of a pod's cgroup: a child writes `0` to each
/// (itself) between fork and exec.
#[derive(Debug)]
pub struct CgroupJoin {
    files: Vec<File>,
}

impl CgroupJoin {
    /// Opens the `cgroup.procs` file of every directory of `record`.
    pub fn open(record: &CgroupRecord) -> Result<Self, CgroupError> {
        let files = record
            .dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::Write {
                        path,
                        value: "0".to_owned(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(CgroupJoin { files })
    }

    /// The descriptors, for the child.
    pub fn fds(&self) -> Vec<RawFd> {
        self.files.iter().map(|f| f.as_raw_fd()).collect()
    }
}

/// A cgroup name for a VM: its name (the pod id) and a hash of its run
/// directory, so pods of the same id under different runtime roots differ.
pub fn name_for(vm_name: Option<&str>, run_dir: &Path) -> String {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{:08x}", vm_name.unwrap_or("vm"), h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: v1 hierarchies, a hybrid unified mount without
    /// controllers, the caller in a nested memory cgroup.
    const V1_MOUNTINFO: &str = "\
23 1 0:21 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
30 23 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 23 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 23 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 23 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_SELF: &str = "8:pids:/\n4:memory:/session/abc\n1:cpu:/\n0::/\n";

    const V2_MOUNTINFO: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";

    fn spec(parent: &str) -> CgroupSpec {
        CgroupSpec {
            parent: parent.into(),
            name: "pod1-0000abcd".to_owned(),
            limits: CgroupLimits {
                memory_bytes: 512 << 20,
                pids_max: 256,
            },
        }
    }

    #[test]
    fn v1_nests_a_relative_parent_under_the_callers_cgroups() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V1_MOUNTINFO).expect("mountinfo"),
            own: parse_proc_cgroup(V1_SELF),
            v2_controllers: Vec::new(),
        };
        let p = plan(&facts, &spec("vc")).expect("plan");
        assert_eq!(p.version, CgroupVersion::V1);
        assert_eq!(
            p.dirs,
            [
                PathBuf::from("/sys/fs/cgroup/memory/session/abc/vc/pod1-0000abcd"),
                PathBuf::from("/sys/fs/cgroup/pids/vc/pod1-0000abcd"),
            ]
        );
        assert!(p.enable.is_empty());
        assert_eq!(
            p.limits,
            [
                (
                    p.dirs[0].join("memory.limit_in_bytes"),
                    "536870912".to_owned()
                ),
                (p.dirs[1].join("pids.max"), "256".to_owned()),
            ]
        );
        let abs = plan(&facts, &spec("/vc/pods")).expect("plan");
        assert_eq!(
            abs.dirs[0],
            PathBuf::from("/sys/fs/cgroup/memory/vc/pods/pod1-0000abcd")
        );
    }

    #[test]
    fn v2_starts_at_the_root_and_enables_the_controllers_on_the_way() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V2_MOUNTINFO).expect("mountinfo"),
            own: parse_proc_cgroup("0::/user.slice/session-1.scope\n"),
            v2_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
        };
        let p = plan(&facts, &spec("vc")).expect("plan");
        assert_eq!(p.version, CgroupVersion::V2);
        assert_eq!(p.dirs, [PathBuf::from("/sys/fs/cgroup/vc/pod1-0000abcd")]);
        assert_eq!(
            p.enable,
            [
                PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
                PathBuf::from("/sys/fs/cgroup/vc/cgroup.subtree_control"),
            ]
        );
        assert_eq!(
            p.limits,
            [
                (p.dirs[0].join("memory.max"), "536870912".to_owned()),
                (p.dirs[0].join("pids.max"), "256".to_owned()),
            ]
        );
        // Without the controllers in the root there is nothing to use.
        let bare = CgroupFacts {
            v2_controllers: vec!["cpu".into()],
            ..facts
        };
        assert!(matches!(
            plan(&bare, &spec("vc")),
            Err(CgroupError::NoHierarchy)
        ));
    }

    #[test]
    fn escapes_and_bad_names_are_refused() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V1_MOUNTINFO).expect("mountinfo"),
            own: parse_proc_cgroup(V1_SELF),
            v2_controllers: Vec::new(),
        };
        assert!(matches!(
            plan(&facts, &spec("../../escape")),
            Err(CgroupError::Name(_))
        ));
        let mut bad = spec("vc");
        bad.name = "a/b".into();
        assert!(matches!(plan(&facts, &bad), Err(CgroupError::Name(_))));
        // A mount showing only a sub-tree cannot reach outside it.
        let sub = CgroupFacts {
            mounts: parse_mountinfo(
                "30 23 0:26 /ctr /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                 31 23 0:27 /ctr /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
            )
            .expect("mountinfo"),
            own: parse_proc_cgroup("4:memory:/ctr\n8:pids:/ctr/x\n"),
            v2_controllers: Vec::new(),
        };
        let p = plan(&sub, &spec("vc")).expect("inside");
        assert_eq!(
            p.dirs,
            [
                PathBuf::from("/sys/fs/cgroup/memory/vc/pod1-0000abcd"),
                PathBuf::from("/sys/fs/cgroup/pids/x/vc/pod1-0000abcd"),
            ]
        );
        assert!(matches!(
            plan(&sub, &spec("/elsewhere")),
            Err(CgroupError::Outside { .. })
        ));
    }

    #[test]
    fn mountinfo_escapes_and_names() {
        let m = parse_mountinfo(
            "1 2 0:1 / /a\\040b rw - cgroup cgroup rw,pids,memory\n3 4 0:2 / /x rw - ext4 /dev/sda rw\n",
        )
        .expect("mountinfo");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, PathBuf::from("/a b"));
        assert_eq!(
            m[0].v1_controllers,
            Some(vec!["pids".to_owned(), "memory".to_owned()])
        );
        let a = name_for(Some("p"), Path::new("/run/a/pods/p/vm"));
        let b = name_for(Some("p"), Path::new("/run/b/pods/p/vm"));
        assert!(a.starts_with("p-") && a.len() == 10, "{a}");
        assert_ne!(a, b);
        assert_eq!(a, name_for(Some("p"), Path::new("/run/a/pods/p/vm")));
    }

    /// Privileged (root, a memory and a pids hierarchy): removing a cgroup
    /// that still holds a process waits for it to leave without holding the
    /// caller's thread. On this single-threaded runtime the member is killed
    /// by another task once the ticker has ticked 20 times during the
    /// removal: a removal that blocked the thread would keep that task from
    /// ever running and fail with EBUSY after its 3 s.
    #[tokio::test(flavor = "current_thread")]
    async fn removal_waits_for_a_draining_cgroup_without_holding_the_thread() {
        use crate::blocking::Ticker;
        use crate::hypervisor::process::Detached;

        let parent = format!("vc-unit-drain-{}", std::process::id());
        let spec = CgroupSpec {
            parent: PathBuf::from(&parent),
            name: "member".to_owned(),
            limits: CgroupLimits {
                memory_bytes: 64 << 20,
                pids_max: 16,
            },
        };
        let facts = CgroupFacts::probe().expect("cgroup facts");
        let plan = plan(&facts, &spec).expect("plan");
        let record = create(&plan, spec.limits).expect("create (needs root)");
        let join = CgroupJoin::open(&record).expect("cgroup.procs");
        let dir = tempfile::tempdir().expect("tempdir");
        let member = Detached {
            program: Path::new("/bin/sleep"),
            args: vec!["60".into()],
            log: &dir.path().join("sleep.log"),
            netns: None,
            inherit: Vec::new(),
            user: None,
            cwd: None,
            cgroups: join.fds(),
        }
        .spawn()
        .expect("spawn a member");
        drop(join);
        assert!(has_procs(&record.dirs[0]), "the member joined");

        let ticker = std::sync::Arc::new(Ticker::start());
        let counter = std::sync::Arc::clone(&ticker);
        let leaver = tokio::spawn(async move {
            counter.wait_ticks(20).await;
            member.kill(Duration::from_secs(5)).await
        });
        let started = Instant::now();
        let removed = remove(&record).await;
        let took = started.elapsed();
        let longest = ticker.longest();
        // Whatever happened, nothing is left behind.
        let killed = leaver.await.expect("the leaver task");
        let _ = remove(&record).await;
        for d in &record.dirs {
            if let Some(p) = d.parent() {
                let _ = std::fs::remove_dir(p);
            }
        }
        killed.expect("the member was killed");
        removed.expect("removed once the member left");
        assert!(took < REMOVE_WAIT, "took {took:?}");
        assert!(
            longest < Duration::from_millis(500),
            "the thread was held for {longest:?}"
        );
        assert!(record.dirs.iter().all(|d| !d.exists()));
    }
}
