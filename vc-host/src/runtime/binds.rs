//! The pod's bind mounts, kept by record: each bind's target is written to the
//! pod's state before the bind is made, and a bind is undone by that record
//! (never by searching the share). A record leaves only once its bind is gone,
//! so a bind that cannot be undone stays named in the state and the pod's
//! directory is not deleted under it.
//!
//! Mounts, unmounts and the removal of the share's directories are system
//! calls that can wait (an unmount waits for the filesystem), so they run on
//! the blocking pool ([`crate::blocking`]); the records are saved between
//! them as before.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::pod::LockedPod;
use super::share::{self, PodShare, ShareError, EXPORT_TARGETS};
use super::RuntimeError;
use crate::blocking;
use crate::id::ContainerId;

impl LockedPod {
    /// The pod's share, from its directory.
    pub(super) fn share(&self) -> Result<PodShare, RuntimeError> {
        Ok(PodShare::open(&self.dir.path)?)
    }

    /// Runs `work` on the pod's share, on the blocking pool, holding the
    /// pod's lock until it is done (see [`LockedPod::save`]).
    async fn with_share<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PodShare) -> Result<T, ShareError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let (dir, lock) = (self.dir.path.clone(), self.lock.clone());
        let done = blocking::run(move || {
            let _held = lock;
            let share = PodShare::open(&dir)?;
            work(&share)
        })
        .await?;
        Ok(done)
    }

    /// Records `target` in the pod's state and saves it, then makes the bind
    /// with `make` (on the blocking pool). If `make` fails the record stays
    /// until an unbind finds nothing there.
    pub(super) async fn bind(
        &mut self,
        target: PathBuf,
        make: impl FnOnce(&PodShare) -> Result<(), ShareError> + Send + 'static,
    ) -> Result<(), RuntimeError> {
        self.share()?;
        if !self.record.binds.contains(&target) {
            self.record.binds.push(target);
            self.save().await?;
        }
        self.with_share(make).await
    }

    /// Makes the pod's export (`mounts` shared, `shared` its read-only view),
    /// before virtiofsd starts.
    pub(super) async fn export_share(&mut self) -> Result<(), RuntimeError> {
        for target in EXPORT_TARGETS {
            self.bind(PathBuf::from(target), move |s| s.export(target))
                .await?;
        }
        Ok(())
    }

    /// Undoes the recorded binds that `which` selects, the last made first;
    /// each record is dropped once its bind is gone and the state saved. The
    /// first bind that cannot be undone ends it with that error.
    async fn unbind_recorded(&mut self, which: impl Fn(&Path) -> bool) -> Result<(), RuntimeError> {
        let targets: Vec<PathBuf> = self
            .record
            .binds
            .iter()
            .filter(|t| which(t))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        // Unbound on the blocking pool, the last made first, up to the first
        // that cannot be undone.
        let pending = targets.clone();
        let (undone, result) = self
            .with_share(move |share| {
                let mut undone = Vec::new();
                for target in pending.iter().rev() {
                    if let Err(e) = share.unbind(target) {
                        return Ok((undone, Err(e)));
                    }
                    undone.push(target.clone());
                }
                Ok((undone, Ok(())))
            })
            .await?;
        self.record.binds.retain(|b| !undone.contains(b));
        self.save().await?;
        Ok(result?)
    }

    /// Undoes a container's binds and removes its directory in the share.
    pub(super) async fn unbind_container(&mut self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.unbind_recorded(|t| share::is_container_target(t, id))
            .await?;
        let dir = share::container_dir(id);
        self.with_share(move |s| s.remove_dir(&dir)).await
    }

    /// Undoes every bind of the pod: the containers', then the export; and
    /// removes the containers' directories.
    pub(super) async fn unbind_all(&mut self) -> Result<(), RuntimeError> {
        self.unbind_recorded(|t| !is_export(t)).await?;
        self.with_share(PodShare::remove_container_dirs).await?;
        self.unbind_recorded(is_export).await
    }

    /// [`Self::unbind_all`] where a failure must not stop the caller (stop,
    /// failed starts): the error is logged, and the binds left stay recorded
    /// so that delete finds them and refuses.
    pub(super) async fn unbind_all_logged(&mut self) {
        if let Err(e) = self.unbind_all().await {
            warn!(error = %e, binds = ?self.record.binds, "cannot undo the pod's bind mounts; they stay recorded");
        }
    }
}

fn is_export(target: &Path) -> bool {
    EXPORT_TARGETS.iter().any(|t| target == Path::new(t))
}
