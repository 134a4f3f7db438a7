//! The guest image a pod boots: kernel, initrd and manifest, checked before use.

use std::path::{Path, PathBuf};

use guest_image::Manifest;

use super::RuntimeError;

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
        let missing =
            |what: &'static str, path: PathBuf| RuntimeError::GuestImageMissing { what, path };
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        if !kernel.is_file() {
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
