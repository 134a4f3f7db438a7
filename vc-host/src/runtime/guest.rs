//! The guest image a pod boots: kernel, initrd and manifest, checked before use;
//! and where the default configuration looks for it.
//!
//! Without `$VC_GUEST_IMAGE_DIR`, the default image directory is the first of
//! these that holds a kernel (`vmlinuz`):
//!
//! 1. `<directory of the running program>/../share/vc/guest-image`: where
//!    `cargo xtask install --prefix PREFIX` puts it, next to `PREFIX/bin`;
//! 2. `/usr/local/share/vc/guest-image`;
//! 3. `/usr/share/vc/guest-image`.
//!
//! When none does, the last is used and the error of a pod's creation lists
//! every directory searched.

use std::path::{Path, PathBuf};

use guest_image::{Manifest, IMAGE_DIR_ENV};

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

/// `$VC_GUEST_IMAGE_DIR` when set and not empty.
fn env_image_dir() -> Option<PathBuf> {
    std::env::var_os(IMAGE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The directories searched for a guest image when `$VC_GUEST_IMAGE_DIR` is
/// not set, in order (see the [module documentation](self)).
pub fn image_search_dirs() -> Vec<PathBuf> {
    search_dirs(std::env::current_exe().ok().as_deref())
}

/// The search order for a program at `exe`.
fn search_dirs(exe: Option<&Path>) -> Vec<PathBuf> {
    let installed = exe
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share").join("vc").join("guest-image"));
    let mut dirs: Vec<PathBuf> = installed.into_iter().collect();
    for fixed in [
        "/usr/local/share/vc/guest-image",
        "/usr/share/vc/guest-image",
    ] {
        let fixed = PathBuf::from(fixed);
        if !dirs.contains(&fixed) {
            dirs.push(fixed);
        }
    }
    dirs
}

/// The first of `dirs` holding a kernel, else the last of them.
fn first_with_image(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| d.join("vmlinuz").is_file())
        .or(dirs.last())
        .cloned()
}

/// The default guest image directory: `$VC_GUEST_IMAGE_DIR`, else the first
/// of [`image_search_dirs`] that holds an image, else the last of them.
pub fn default_image_dir() -> PathBuf {
    env_image_dir()
        .or_else(|| first_with_image(&image_search_dirs()))
        .unwrap_or_else(|| PathBuf::from("/usr/share/vc/guest-image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_starts_next_to_the_program() {
        assert_eq!(
            search_dirs(Some(Path::new("/opt/vc/bin/virtc"))),
            [
                PathBuf::from("/opt/vc/share/vc/guest-image"),
                PathBuf::from("/usr/local/share/vc/guest-image"),
                PathBuf::from("/usr/share/vc/guest-image"),
            ]
        );
        // Installed in /usr/local or /usr: each directory once.
        assert_eq!(
            search_dirs(Some(Path::new("/usr/local/bin/containerd-shim-vc-v2"))),
            [
                PathBuf::from("/usr/local/share/vc/guest-image"),
                PathBuf::from("/usr/share/vc/guest-image"),
            ]
        );
        // A program in /usr/bin prefers its own prefix's image.
        assert_eq!(
            search_dirs(Some(Path::new("/usr/bin/virtc"))),
            [
                PathBuf::from("/usr/share/vc/guest-image"),
                PathBuf::from("/usr/local/share/vc/guest-image"),
            ]
        );
        assert_eq!(search_dirs(None).len(), 2);
    }

    #[test]
    fn the_first_directory_with_a_kernel_wins() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|d| tmp.path().join(d)).collect();
        for d in &dirs {
            std::fs::create_dir(d).expect("mkdir");
        }
        // None has an image: the last.
        assert_eq!(first_with_image(&dirs), Some(dirs[2].clone()));
        std::fs::write(dirs[2].join("vmlinuz"), "k").expect("write");
        assert_eq!(first_with_image(&dirs), Some(dirs[2].clone()));
        std::fs::write(dirs[1].join("vmlinuz"), "k").expect("write");
        assert_eq!(first_with_image(&dirs), Some(dirs[1].clone()));
        // A directory named vmlinuz is not a kernel.
        std::fs::create_dir(dirs[0].join("vmlinuz")).expect("mkdir");
        assert_eq!(first_with_image(&dirs), Some(dirs[1].clone()));
        assert_eq!(first_with_image(&[]), None);
    }

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
