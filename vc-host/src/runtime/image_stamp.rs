//! What a VM booted from, as the host saw the files: the guest kernel and
//! initrd, each by device, inode, size and change times.
//!
//! A pool slot records the stamp it was filled with, and a claim compares it
//! with the stamp of the files the pod would boot now. A guest image rebuilt
//! at the same paths (`cargo xtask guest-image` writes a new initrd, and the
//! agent lives in it) gets a new inode or new times, so a slot booted from
//! the old one is stale: it is discarded, never adopted. The same test as
//! make's or git's index: no file is read, and a rewrite that keeps the size
//! still changes the times.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use crate::hypervisor::VmSettings;

/// The kernel's and initrd's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImageStamp {
    kernel: FileStamp,
    initrd: Option<FileStamp>,
}

/// One file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// Follows links: the image's paths are the host's own configuration,
    /// never anything a guest can write.
    fn of(what: &'static str, path: &Path) -> Result<Self, RuntimeError> {
        let m = std::fs::metadata(path).map_err(|_| RuntimeError::GuestImageMissing {
            what,
            path: path.to_owned(),
        })?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

impl ImageStamp {
    /// The stamp of the files that `settings` boot.
    pub(super) fn of(settings: &VmSettings) -> Result<Self, RuntimeError> {
        Ok(Self {
            kernel: FileStamp::of("kernel", &settings.kernel)?,
            initrd: settings
                .initrd
                .as_deref()
                .map(|p| FileStamp::of("initrd", p))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ImageStamp;

    #[test]
    fn a_rewritten_initrd_changes_the_stamp_and_a_read_does_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (kernel, initrd) = (tmp.path().join("vmlinuz"), tmp.path().join("initrd"));
        std::fs::write(&kernel, b"kernel").expect("write");
        std::fs::write(&initrd, b"agent v1").expect("write");
        let settings = crate::hypervisor::VmSettings {
            kernel: kernel.clone(),
            initrd: Some(initrd.clone()),
            ..crate::hypervisor::config::test_settings()
        };
        let before = ImageStamp::of(&settings).expect("stamp");
        let _ = std::fs::read(&initrd).expect("read");
        assert_eq!(ImageStamp::of(&settings).expect("stamp"), before);
        // Rebuilt as `cargo xtask guest-image` does: a new file renamed over
        // the old one, of the same size.
        let staged = tmp.path().join("initrd.new");
        std::fs::write(&staged, b"agent v2").expect("write");
        std::fs::rename(&staged, &initrd).expect("rename");
        assert_ne!(ImageStamp::of(&settings).expect("stamp"), before);
    }

    #[test]
    fn a_missing_kernel_is_named() {
        let settings = crate::hypervisor::VmSettings {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: None,
            ..crate::hypervisor::config::test_settings()
        };
        let e = ImageStamp::of(&settings).expect_err("missing");
        assert!(
            e.to_string()
                .contains("kernel /nonexistent/vmlinuz is missing"),
            "{e}"
        );
    }
}
