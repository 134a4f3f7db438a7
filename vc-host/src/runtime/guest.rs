//! The guest image a pod boots: kernel, initrd and manifest, checked before
//! use. Where the default configuration looks for it is
//! [`crate::host_defaults`]'s business; when none of those directories holds
//! an image, the error of a pod's creation lists every one searched.

use std::path::{Path, PathBuf};

use guest_image::Manifest;

use super::RuntimeError;
use crate::host_defaults::env_image_dir;
pub use crate::host_defaults::{default_image_dir, image_search_dirs};

/// A guest image directory made by `cargo xtask guest-image`.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initrd with the agent at `/init`.
    pub initrd: PathBuf,
    /// What the image holds.
    pub manifest: Manifest,
}

impl GuestImage {
    /// Loads and checks the image in `dir`.
    pub fn load(dir: &Path) -> Result<Self, RuntimeError> {
        let searched = if env_image_dir().is_some() {
            Vec::new()
        } else {
            image_search_dirs()
        };
        Self::load_searched(dir, &searched)
    }

    /// As [`load`](Self::load); when `dir` is one of the default locations
    /// `searched` and holds no kernel, the error lists them all.
    fn load_searched(dir: &Path, searched: &[PathBuf]) -> Result<Self, RuntimeError> {
        let missing =
            |what: &'static str, path: PathBuf| RuntimeError::GuestImageMissing { what, path };
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        if !kernel.is_file() {
            if searched.iter().any(|d| d == dir) {
                return Err(RuntimeError::GuestImageNotFound {
                    searched: searched.to_vec(),
                });
            }
            return Err(missing("kernel", kernel));
        }
        if !initrd.is_file() {
            return Err(missing("initrd", initrd));
        }
        let manifest = Manifest::load(dir).map_err(|source| RuntimeError::GuestImage {
            dir: dir.to_owned(),
            source,
        })?;
        if manifest.protocol_version != vc_proto::PROTOCOL_VERSION {
            return Err(RuntimeError::GuestImageProtocol {
                dir: dir.to_owned(),
                image: manifest.protocol_version,
                host: vc_proto::PROTOCOL_VERSION,
            });
        }
        Ok(Self {
            kernel,
            initrd,
            manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_default_image_lists_what_was_searched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = vec![tmp.path().join("a"), tmp.path().join("b")];
        let err = GuestImage::load_searched(&dirs[1], &dirs).expect_err("no image");
        assert!(
            matches!(&err, RuntimeError::GuestImageNotFound { searched } if *searched == dirs),
            "{err:?}"
        );
        let msg = err.to_string();
        for d in &dirs {
            assert!(msg.contains(&d.display().to_string()), "{msg}");
        }
        assert!(msg.contains("cargo xtask install"), "{msg}");
        assert!(msg.contains("VC_GUEST_IMAGE_DIR"), "{msg}");
        // A directory the caller chose names the missing file.
        let chosen = tmp.path().join("chosen");
        let err = GuestImage::load_searched(&chosen, &dirs).expect_err("no image");
        assert!(
            matches!(&err, RuntimeError::GuestImageMissing { what: "kernel", path } if *path == chosen.join("vmlinuz")),
            "{err:?}"
        );
    }
}
