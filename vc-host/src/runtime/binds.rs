//! The pod's bind mounts, kept by record: each bind's target is written to the
//! pod's state before the bind is made, and a bind is undone by that record
//! (never by searching the share). A record leaves only once its bind is gone,
//! so a bind that cannot be undone stays named in the state and the pod's
//! directory is not deleted under it.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::pod::LockedPod;
use super::share::{self, PodShare, ShareError, EXPORT_TARGETS};
use super::RuntimeError;
use crate::id::ContainerId;

impl LockedPod {
    /// The pod's share, from its directory.
    pub(super) fn share(&self) -> Result<PodShare, RuntimeError> {
        Ok(PodShare::open(&self.dir.path)?)
    }

    /// Records `target` in the pod's state and saves it, then makes the bind
    /// with `make`. If `make` fails the record stays until an unbind finds
    /// nothing there.
    pub(super) fn bind(
        &mut self,
        target: PathBuf,
        make: impl FnOnce(&PodShare) -> Result<(), ShareError>,
    ) -> Result<(), RuntimeError> {
        let share = self.share()?;
        if !self.record.binds.contains(&target) {
            self.record.binds.push(target);
            self.save()?;
        }
        make(&share)?;
        Ok(())
    }

    /// Makes the pod's export (`mounts` shared, `shared` its read-only view),
    /// before virtiofsd starts.
    pub(super) fn export_share(&mut self) -> Result<(), RuntimeError> {
        for target in EXPORT_TARGETS {
            self.bind(PathBuf::from(target), |s| s.export(target))?;
        }
        Ok(())
    }

    /// Undoes the recorded binds that `which` selects, the last made first;
    /// each record is dropped once its bind is gone and the state saved. The
    /// first bind that cannot be undone ends it with that error.
    fn unbind_recorded(&mut self, which: impl Fn(&Path) -> bool) -> Result<(), RuntimeError> {
        let share = self.share()?;
        let targets: Vec<PathBuf> = self
            .record
            .binds
            .iter()
            .filter(|t| which(t))
            .cloned()
            .collect();
        let mut result = Ok(());
        for target in targets.iter().rev() {
            if let Err(e) = share.unbind(target) {
                result = Err(e.into());
                break;
            }
            self.record.binds.retain(|b| b != target);
        }
        if !targets.is_empty() {
            self.save()?;
        }
        result
    }

    /// Undoes a container's binds and removes its directory in the share.
    pub(super) fn unbind_container(&mut self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.unbind_recorded(|t| share::is_container_target(t, id))?;
        self.share()?.remove_dir(&share::container_dir(id))?;
        Ok(())
    }

    /// Undoes every bind of the pod: the containers', then the export; and
    /// removes the containers' directories.
    pub(super) fn unbind_all(&mut self) -> Result<(), RuntimeError> {
        self.unbind_recorded(|t| !is_export(t))?;
        self.share()?.remove_container_dirs()?;
        self.unbind_recorded(is_export)
    }

    /// [`Self::unbind_all`] where a failure must not stop the caller (stop,
    /// failed starts): the error is logged, and the binds left stay recorded
    /// so that delete finds them and refuses.
    pub(super) fn unbind_all_logged(&mut self) {
        if let Err(e) = self.unbind_all() {
            warn!(error = %e, binds = ?self.record.binds, "cannot undo the pod's bind mounts; they stay recorded");
        }
    }
}

fn is_export(target: &Path) -> bool {
    EXPORT_TARGETS.iter().any(|t| target == Path::new(t))
}
