//! Defaults of the runtime configuration that depend on this host: where
//! the guest image is looked for, and how many VMs may boot at once. The
//! configuration (`config`) and the runtime both use them; neither owns them.
//!
//! Without `$VC_GUEST_IMAGE_DIR`, the default image directory is the first of
//! these that holds a kernel (`vmlinuz`):
//!
//! 1. `<directory of the running program>/../share/vc/guest-image`: where
//!    `cargo xtask install --prefix PREFIX` puts it, next to `PREFIX/bin`;
//! 2. `/usr/local/share/vc/guest-image`;
//! 3. `/usr/share/vc/guest-image`.
//!
//! When none does, the last is used.

use std::path::{Path, PathBuf};

use guest_image::IMAGE_DIR_ENV;

/// The most boot slots a configuration may ask for.
pub const MAX_BOOT_WIDTH: u32 = 256;

/// The default boot width: one boot per host CPU.
pub fn default_boot_width() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(MAX_BOOT_WIDTH))
        .unwrap_or(1)
        .clamp(1, MAX_BOOT_WIDTH)
}

/// `$VC_GUEST_IMAGE_DIR` when set and not empty.
pub(crate) fn env_image_dir() -> Option<PathBuf> {
    std::env::var_os(IMAGE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The directories searched for a guest image when `$VC_GUEST_IMAGE_DIR` is
/// not set, in order (see the module documentation).
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
}
