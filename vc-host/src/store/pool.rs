//! Warm-pool slots on disk: VMs booted ahead of time, before any pod.
//!
//! ```text
//! <root>/pool/<slot>/          0700, laid out as a pod directory, so that a pod can adopt it
//!   slot.json                  the slot's record (shape, VM record, binds), rewritten atomically
//!   vm/  mounts/  shared/      as in a pod directory
//! <root>/locks/pool/<slot>.lock  flock(2), held by whoever fills, claims or discards the slot
//! ```
//!
//! A slot's lock is held for the whole of its fill, so a slot whose lock is
//! free and whose record says it never became ready was left by a filler
//! that died. A claim takes the lock without waiting: a held lock means the
//! slot is someone else's, and the claimer moves on. Adoption swaps the
//! slot's directory with the pod's in one `renameat2(RENAME_EXCHANGE)`
//! ([`Store::exchange_with_slot`]): the pod's path then holds the running
//! VM's files, and the slot's path the pod's old (empty) directory, which is
//! removed with the slot's lock.

use std::path::{Path, PathBuf};

use nix::fcntl::RenameFlags;

use super::{refuse_mounted, PodDir, PodLock, Store, StoreError, DIR_MODE, POD_SUBDIRS};
use crate::beneath::{BeneathError, Dir};

/// The pool's directory under the root, and its lock directory under `locks`.
const POOL_DIR: &str = "pool";

/// The slot's record, in its directory.
pub const SLOT_RECORD: &str = "slot.json";

/// The directory of one pool slot.
#[derive(Debug, Clone)]
pub struct SlotDir {
    /// The slot's name (a file name: letters, digits and `-`).
    pub name: String,
    /// `<root>/pool/<name>`.
    pub path: PathBuf,
}

impl SlotDir {
    /// `slot.json`.
    pub fn record_path(&self) -> PathBuf {
        self.path.join(SLOT_RECORD)
    }
    /// The hypervisor's run directory.
    pub fn vm_dir(&self) -> PathBuf {
        self.path.join("vm")
    }
    /// What virtiofsd exports.
    pub fn shared_dir(&self) -> PathBuf {
        self.path.join(super::EXPORT_DIR)
    }
}

/// True for the names this module gives slots.
fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
}

impl Store {
    fn pool_path(&self) -> PathBuf {
        self.root.join(POOL_DIR)
    }

    fn pool_locks(&self) -> Result<PathBuf, StoreError> {
        let locks = self.locks();
        Dir::open(&locks)?.mkdir(Path::new(POOL_DIR), DIR_MODE, true)?;
        Ok(locks.join(POOL_DIR))
    }

    fn pool(&self) -> Result<Dir, StoreError> {
        Ok(Dir::open(&self.root)?.mkdir(Path::new(POOL_DIR), DIR_MODE, true)?)
    }

    fn slot_dir(&self, name: &str) -> SlotDir {
        SlotDir {
            name: name.to_owned(),
            path: self.pool_path().join(name),
        }
    }

    /// Makes the directory of a new slot `name` (unique: the caller makes it
    /// so) and returns it locked.
    pub async fn create_slot(&self, name: &str) -> Result<(SlotDir, PodLock), StoreError> {
        if !valid_slot_name(name) {
            return Err(StoreError::io(
                "create the pool slot",
                &self.pool_path().join(name),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a slot name"),
            ));
        }
        let lock = PodLock::acquire(&self.pool_locks()?, &format!("{name}.lock")).await?;
        let slot = self.pool()?.mkdir(Path::new(name), DIR_MODE, false)?;
        for sub in POD_SUBDIRS {
            slot.mkdir(Path::new(sub), DIR_MODE, false)?;
        }
        Ok((self.slot_dir(name), lock))
    }

    /// The slots' names, sorted (oldest first: names start with their
    /// creation time).
    pub fn slots(&self) -> Result<Vec<String>, StoreError> {
        let path = self.pool_path();
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = Dir::open(&path)?
            .entries()?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| valid_slot_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Takes slot `name`'s lock without waiting. `None` when another process
    /// holds it (filling, claiming or discarding it) or the slot is gone.
    pub fn try_claim_slot(&self, name: &str) -> Result<Option<(SlotDir, PodLock)>, StoreError> {
        if !valid_slot_name(name) {
            return Ok(None);
        }
        let Some(lock) = PodLock::try_acquire(&self.pool_locks()?, &format!("{name}.lock"))? else {
            return Ok(None);
        };
        let slot = self.slot_dir(name);
        if std::fs::symlink_metadata(&slot.path).is_err() {
            // Removed by its last holder: leave no lock file behind.
            lock.remove(&self.pool_locks()?)?;
            return Ok(None);
        }
        Ok(Some((slot, lock)))
    }

    /// Takes the lock of slot `name`, waiting for it (a drain waits for a
    /// fill in progress). `None` when the slot is gone.
    pub async fn lock_slot(&self, name: &str) -> Result<Option<(SlotDir, PodLock)>, StoreError> {
        if !valid_slot_name(name) {
            return Ok(None);
        }
        let locks = self.pool_locks()?;
        let lock = PodLock::acquire(&locks, &format!("{name}.lock")).await?;
        let slot = self.slot_dir(name);
        if std::fs::symlink_metadata(&slot.path).is_err() {
            lock.remove(&locks)?;
            return Ok(None);
        }
        Ok(Some((slot, lock)))
    }

    /// Removes a slot's directory (refusing while anything is mounted under
    /// it, never crossing a mount point) and its lock file.
    pub fn remove_slot(&self, slot: SlotDir, lock: PodLock) -> Result<(), StoreError> {
        refuse_mounted(&slot.path)?;
        match self.pool()?.remove_tree(Path::new(&slot.name)) {
            Ok(()) => {}
            Err(BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        lock.remove(&self.pool_locks()?)
    }

    /// Swaps the directories of `slot` and `pod` atomically (both locked by
    /// the caller): afterwards the pod's path holds what the slot held.
    pub fn exchange_with_slot(&self, slot: &SlotDir, pod: &PodDir) -> Result<(), StoreError> {
        let root = Dir::open(&self.root)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&root));
        let pod_rel = Path::new("pods").join(pod.id.as_str());
        let slot_rel = Path::new(POOL_DIR).join(&slot.name);
        nix::fcntl::renameat2(
            Some(fd),
            &pod_rel,
            Some(fd),
            &slot_rel,
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| StoreError::io("exchange with a pool slot", &pod.path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PodId;

    #[tokio::test]
    async fn a_claimed_slot_is_not_claimed_twice_and_a_removed_one_leaves_no_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("store");
        let (slot, lock) = store.create_slot("1-a").await.expect("slot");
        assert!(slot.vm_dir().is_dir());
        assert!(
            store.try_claim_slot("1-a").expect("try").is_none(),
            "held by its filler"
        );
        drop(lock);
        let (slot, lock) = store.try_claim_slot("1-a").expect("try").expect("free now");
        assert!(
            store.try_claim_slot("1-a").expect("try").is_none(),
            "held by a claimer"
        );
        assert_eq!(store.slots().expect("slots"), vec!["1-a".to_owned()]);
        store.remove_slot(slot, lock).expect("remove");
        assert!(store.slots().expect("slots").is_empty());
        assert!(store.try_claim_slot("1-a").expect("try").is_none());
        let locks = tmp.path().join("locks/pool");
        assert_eq!(std::fs::read_dir(locks).expect("locks").count(), 0);
        assert!(store.try_claim_slot("../pods").expect("try").is_none());
    }

    #[tokio::test]
    async fn exchange_swaps_a_slot_and_a_pod_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("store");
        let id = PodId::new("p").expect("id");
        let (pod, _pod_lock) = store.create_pod(&id).await.expect("pod");
        std::fs::write(pod.path.join("config.json"), "{}").expect("write");
        let (slot, _lock) = store.create_slot("2-b").await.expect("slot");
        std::fs::write(slot.vm_dir().join("marker"), "vm").expect("write");
        store.exchange_with_slot(&slot, &pod).expect("exchange");
        assert!(pod.vm_dir().join("marker").exists());
        assert!(!pod.path.join("config.json").exists());
        assert!(slot.path.join("config.json").exists());
    }
}
