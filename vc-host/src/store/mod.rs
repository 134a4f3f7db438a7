//! The state store: where pods live on disk so that any process can find them.
//!
//! ```text
//! <root>/                      runtime root, default /run/vc; 0700, canonicalized once
//!   locks/<pod-id>.lock        flock(2) target, held exclusively for each operation;
//!                              outside the pod directory, so delete never removes a
//!                              lock someone holds
//!   pods/<pod-id>/             0700
//!     config.json              the pod's configuration, written once at create (0600)
//!     state.json               state, VM record, containers, binds: rewritten atomically (0600)
//!     calls.lock               the call gate: shared by short agent calls made after the
//!                              pod's lock is released, exclusive during a pause (see gate)
//!     vm/                      hypervisor run directory: sockets, logs, pid files
//!     mounts/                  host-only mount points of the share (see runtime::share)
//!     shared/                  the read-only export of mounts/ given to virtiofsd
//!   pool/<slot>/               a VM booted ahead for a pod to adopt (see [`pool`])
//! ```
//!
//! Every write goes to a temporary file made `O_EXCL | O_NOFOLLOW` in the same
//! directory, is fsynced, and renamed over the target, so a reader never sees
//! half a file. Readers that only list do not take the lock; everything that
//! changes a pod does, for the whole operation, so that concurrent processes
//! on one pod serialize. Nothing under the root is reached through a link:
//! see [`crate::beneath`]. Removing a pod refuses while anything is mounted
//! under its directory and never crosses a mount point.

mod atomic;
mod gate;
mod lock;
pub mod pool;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use crate::beneath::{BeneathError, Dir};
use crate::id::PodId;

pub use atomic::{read_json, read_json_at, write_json_at, write_json_atomic, RECORD_MODE};
pub use gate::{CallLease, Quiesced};
pub use lock::PodLock;
pub use pool::SlotDir;

/// Default runtime root.
pub const DEFAULT_ROOT: &str = "/run/vc";

/// The mode of the root and of every directory the store makes.
pub const DIR_MODE: u32 = 0o700;

/// The host-only tree of mount points of a pod's share, relative to the pod
/// directory (the runtime's `share` module binds into it).
pub const MOUNTS_DIR: &str = "mounts";

/// The directory virtiofsd exports, relative to the pod directory.
pub const EXPORT_DIR: &str = "shared";

/// The pod subdirectories made at create.
const POD_SUBDIRS: [&str; 3] = ["vm", MOUNTS_DIR, EXPORT_DIR];

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A pod with this id already exists.
    #[error("pod {0} already exists")]
    PodExists(PodId),
    /// No pod with this id.
    #[error("pod {0} does not exist")]
    PodNotFound(PodId),
    /// A file could not be read, written, locked or removed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A path under the root could not be reached without following a link,
    /// or removing it would have crossed a mount point.
    #[error(transparent)]
    Path(#[from] BeneathError),
    /// A JSON file did not parse.
    #[error("{} is not valid", path.display())]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Something is still mounted under a pod's directory: it is kept rather
    /// than deleted through the mount.
    #[error("{} is still mounted; not removing {}", mount.display(), dir.display())]
    StillMounted {
        /// The mount point found.
        mount: PathBuf,
        /// The pod directory kept.
        dir: PathBuf,
    },
    /// mountinfo could not be read.
    #[error(transparent)]
    MountInfo(#[from] crate::mountinfo::MountInfoError),
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The runtime root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The directory of one pod.
#[derive(Debug, Clone)]
pub struct PodDir {
    /// The pod's id.
    pub id: PodId,
    /// `<root>/pods/<id>`, canonical.
    pub path: PathBuf,
}

impl PodDir {
    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }
    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
    }
    /// The hypervisor's run directory.
    pub fn vm_dir(&self) -> PathBuf {
        self.path.join("vm")
    }
    /// What virtiofsd exports: the read-only view of the share.
    pub fn shared_dir(&self) -> PathBuf {
        self.path.join(EXPORT_DIR)
    }
    /// Reads a JSON file of this pod.
    pub fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<T, StoreError> {
        read_json(path)
    }
    /// Writes a JSON file of this pod atomically (mode 0600).
    pub fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        write_json_atomic(path, value)
    }
}

impl Store {
    /// Opens (and creates when missing) the runtime root. The root is
    /// canonicalized here, once, and made 0700 with its `pods` and `locks`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io("create", &root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io("resolve", &root, e))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| StoreError::io("set the mode of", &root, e))?;
        let dir = Dir::open(&root)?;
        for sub in ["pods", "locks"] {
            dir.mkdir(Path::new(sub), DIR_MODE, true)?;
        }
        Ok(Self { root })
    }

    /// The runtime root (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pods(&self) -> Result<Dir, StoreError> {
        Ok(Dir::open(&self.root.join("pods"))?)
    }

    fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    fn pod_path(&self, id: &PodId) -> PathBuf {
        self.root.join("pods").join(id.as_str())
    }

    async fn lock(&self, id: &PodId) -> Result<PodLock, StoreError> {
        PodLock::acquire(&self.locks(), &format!("{id}.lock")).await
    }

    /// Creates the directory of a new pod and locks it. Fails with
    /// [`StoreError::PodExists`] when the id is taken, so two processes creating
    /// the same pod cannot both succeed.
    ///
    /// A directory without `config.json` found under the lock was left by a
    /// create (or a delete) whose caller died: a live one would still hold
    /// the lock. It is removed (never across a mount point), and the create
    /// proceeds.
    pub async fn create_pod(&self, id: &PodId) -> Result<(PodDir, PodLock), StoreError> {
        // A taken id is refused at once, not after waiting for its lock; the
        // mkdir under the lock below settles a race.
        if self.pod_path(id).join("config.json").exists() {
            return Err(StoreError::PodExists(id.clone()));
        }
        let lock = self.lock(id).await?;
        if self.is_half_made(id) {
            tracing::info!(pod_id = %id, "removing the directory of an interrupted create or delete");
            self.remove_half_made(id)?;
        }
        let pod = match self.pods()?.mkdir(Path::new(id.as_str()), DIR_MODE, false) {
            Ok(pod) => pod,
            Err(BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                return Err(StoreError::PodExists(id.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        for sub in POD_SUBDIRS {
            pod.mkdir(Path::new(sub), DIR_MODE, false)?;
        }
        let dir = PodDir {
            id: id.clone(),
            path: self.pod_path(id),
        };
        Ok((dir, lock))
    }

    /// The directory of an existing pod, without locking it.
    pub fn pod(&self, id: &PodId) -> Result<PodDir, StoreError> {
        let path = self.pod_path(id);
        if !path.join("config.json").exists() {
            return Err(StoreError::PodNotFound(id.clone()));
        }
        Ok(PodDir {
            id: id.clone(),
            path,
        })
    }

    /// True when the pod's directory exists without its configuration: a
    /// create or a delete whose caller died half-way.
    pub fn is_half_made(&self, id: &PodId) -> bool {
        let path = self.pod_path(id);
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
            && std::fs::symlink_metadata(path.join("config.json")).is_err()
    }

    /// Removes a pod directory without configuration (the caller holds its
    /// lock), refusing while anything is mounted under it.
    fn remove_half_made(&self, id: &PodId) -> Result<(), StoreError> {
        refuse_mounted(&self.pod_path(id))?;
        self.pods()?.remove_tree(Path::new(id.as_str()))?;
        Ok(())
    }

    /// Locks an existing pod for one operation.
    pub async fn lock_pod(&self, id: &PodId) -> Result<(PodDir, PodLock), StoreError> {
        let lock = self.lock(id).await?;
        // The pod may have been deleted while we waited for the lock (or
        // never existed): leave no lock file behind for it.
        match self.pod(id) {
            Ok(dir) => Ok((dir, lock)),
            Err(e) => {
                lock.remove(&self.locks())?;
                Err(e)
            }
        }
    }

    /// Locks a pod whose directory exists, whether or not its records are
    /// whole (for a forced delete of a half-created or corrupt pod).
    pub async fn lock_pod_dir(&self, id: &PodId) -> Result<(PodDir, PodLock), StoreError> {
        let lock = self.lock(id).await?;
        match self.pods()?.open_dir(Path::new(id.as_str())) {
            Ok(_) => {}
            Err(BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                lock.remove(&self.locks())?;
                return Err(StoreError::PodNotFound(id.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        let dir = PodDir {
            id: id.clone(),
            path: self.pod_path(id),
        };
        Ok((dir, lock))
    }

    /// Every pod on the host, sorted by id. Directories that are not valid pod
    /// ids or have no configuration (a create in progress) are skipped.
    pub fn list(&self) -> Result<Vec<PodId>, StoreError> {
        let mut ids: Vec<PodId> = self
            .pods()?
            .entries()?
            .iter()
            .filter_map(|n| n.to_str().and_then(|n| PodId::new(n).ok()))
            .filter(|id| self.pod_path(id).join("config.json").exists())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes a pod's directory and its lock file. The caller holds the
    /// pod's lock and has already stopped everything that used it and undone
    /// its mounts: while anything is mounted under the pod's directory it is
    /// refused ([`StoreError::StillMounted`]), and the removal never crosses a
    /// mount point.
    pub fn remove_pod(&self, dir: PodDir, lock: PodLock) -> Result<(), StoreError> {
        refuse_mounted(&dir.path)?;
        let pods = self.pods()?;
        let name = Path::new(dir.id.as_str());
        // Remove the config first so that concurrent lockers see the pod as gone.
        match pods.open_dir(name) {
            Ok(pod) => pod.remove_entry(Path::new("config.json"))?,
            Err(BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        crate::fault::point("delete.config-removed");
        pods.remove_tree(name)?;
        lock.remove(&self.locks())
    }
}

/// Fails with [`StoreError::StillMounted`] while anything is mounted at or
/// under `dir`.
fn refuse_mounted(dir: &Path) -> Result<(), StoreError> {
    let mounts = crate::mountinfo::read()?;
    if let Some(m) = crate::mountinfo::under(&mounts, dir).next() {
        return Err(StoreError::StillMounted {
            mount: m.mount_point.clone(),
            dir: dir.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> PodId {
        PodId::new(s).expect("valid id")
    }

    #[tokio::test]
    async fn create_list_remove() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (dir, lock) = store.create_pod(&id("b")).await.expect("create");
        dir.write(&dir.config_path(), &"cfg").expect("write");
        let (dir_a, lock_a) = store.create_pod(&id("a")).await.expect("create");
        dir_a.write(&dir_a.config_path(), &"cfg").expect("write");
        // A pod whose create is in progress (no config yet) is not listed.
        let (_c, _lc) = store.create_pod(&id("c")).await.expect("create");
        assert_eq!(store.list().expect("list"), vec![id("a"), id("b")]);
        assert!(matches!(
            store.create_pod(&id("a")).await,
            Err(StoreError::PodExists(_))
        ));
        store.remove_pod(dir, lock).expect("remove");
        drop(lock_a);
        assert_eq!(store.list().expect("list"), vec![id("a")]);
        assert!(matches!(
            store.pod(&id("b")),
            Err(StoreError::PodNotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_half_made_pod_is_replaced_by_the_next_create() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        // A create whose caller died: directory and state, no config, no lock.
        let (dir, lock) = store.create_pod(&id("h")).await.expect("create");
        dir.write(&dir.state_path(), &"half").expect("write");
        drop(lock);
        assert!(store.is_half_made(&id("h")));
        let (dir, lock) = store.create_pod(&id("h")).await.expect("create again");
        assert!(!dir.state_path().exists(), "the half-made state was kept");
        assert!(dir.vm_dir().is_dir());
        // A create in progress (its lock held) is waited for, then refused.
        let store2 = store.clone();
        let second = tokio::spawn(async move { store2.create_pod(&id("h")).await.map(drop) });
        wait_until_blocked_on(&tmp.path().join("locks/h.lock")).await;
        dir.write(&dir.config_path(), &"cfg").expect("write");
        drop(lock);
        assert!(matches!(
            second.await.expect("join"),
            Err(StoreError::PodExists(_))
        ));
    }

    #[tokio::test]
    async fn store_is_private_and_the_lock_outside_the_pod() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        // Made through a link: the store keeps the canonical path.
        std::fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(&root, tmp.path().join("link")).expect("symlink");
        let store = Store::open(tmp.path().join("link")).expect("open");
        assert_eq!(store.root(), root.canonicalize().expect("canonical"));
        let (dir, lock) = store.create_pod(&id("p")).await.expect("create");
        dir.write(&dir.config_path(), &"cfg").expect("write");
        dir.write(&dir.state_path(), &"state").expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        for d in [
            root.clone(),
            root.join("pods"),
            root.join("locks"),
            dir.path.clone(),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        for sub in POD_SUBDIRS {
            assert_eq!(mode(&dir.path.join(sub)), 0o700, "{sub}");
        }
        for f in [
            dir.config_path(),
            dir.state_path(),
            root.join("locks/p.lock"),
        ] {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        assert!(
            !dir.path.join("lock").exists(),
            "no lock inside the pod directory"
        );

        // A waiter on a pod being deleted gets PodNotFound, not a lock on a
        // removed file alongside a new pod's holder.
        let store2 = store.clone();
        let waiter = tokio::spawn(async move { store2.lock_pod(&id("p")).await.map(drop) });
        wait_until_blocked_on(&root.join("locks/p.lock")).await;
        store.remove_pod(dir, lock).expect("remove");
        assert!(matches!(
            waiter.await.expect("join"),
            Err(StoreError::PodNotFound(_))
        ));
        assert!(
            !root.join("locks/p.lock").exists(),
            "lock file removed with the pod"
        );
        assert!(!root.join("pods/p").exists());
        let (_again, _l) = store
            .create_pod(&id("p"))
            .await
            .expect("the id is free again");
    }

    /// Privileged: a pod directory with a mount under it is not removed.
    #[tokio::test]
    async fn removal_refuses_a_mounted_pod() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::write(data.path().join("precious"), b"p").expect("write");
        let store = Store::open(tmp.path()).expect("open");
        let (dir, lock) = store.create_pod(&id("p")).await.expect("create");
        dir.write(&dir.config_path(), &"cfg").expect("write");
        let target = dir.path.join("mounts");
        nix::mount::mount(
            Some(data.path()),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind (needs root)");
        let err = store.remove_pod(dir.clone(), lock).expect_err("mounted");
        assert!(matches!(err, StoreError::StillMounted { .. }), "{err}");
        assert!(data.path().join("precious").exists());
        assert!(dir.config_path().exists(), "nothing removed");
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        let (dir, lock) = store.lock_pod(&id("p")).await.expect("lock");
        store.remove_pod(dir, lock).expect("remove");
        assert!(data.path().join("precious").exists());
    }

    #[tokio::test]
    async fn lock_serializes_operations() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (dir, lock) = store.create_pod(&id("p")).await.expect("create");
        dir.write(&dir.config_path(), &"cfg").expect("write");
        let store2 = store.clone();
        let waiter = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let _ = store2.lock_pod(&id("p")).await.expect("lock");
            started.elapsed()
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(lock);
        let waited = waiter.await.expect("join");
        assert!(
            waited >= std::time::Duration::from_millis(150),
            "{waited:?}"
        );
    }

    /// Waits until some process is blocked in `flock` on `path`: `/proc/locks`
    /// lists a waiter as a `->` line naming the file's inode.
    async fn wait_until_blocked_on(path: &Path) {
        use std::os::unix::fs::MetadataExt as _;
        let ino = std::fs::metadata(path).expect("lock file").ino();
        let needle = format!(":{ino} ");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
            if locks
                .lines()
                .any(|l| l.contains("->") && l.contains(&needle))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nobody blocked on {}",
                path.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
