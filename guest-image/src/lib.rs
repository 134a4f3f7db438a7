//! What goes into the vc guest image, and how it is built.
//!
//! The guest image is one directory holding three files: the kernel ([`KERNEL_FILE`]), the initrd
//! ([`INITRD_FILE`]) and a manifest ([`MANIFEST_FILE`]) describing both. This crate owns:
//!
//! - the list of kernel modules the guest needs ([`modules::GUEST_MODULES`]) and how they are found in
//!   a kernel's module tree ([`modules::ModuleTree`]);
//! - reading a module's `.modinfo` ELF section ([`modinfo`], [`elf`]) and ordering modules so that every
//!   module comes after its dependencies ([`resolve`]);
//! - the initrd: a cpio "newc" archive ([`cpio`]) with the layout the agent expects ([`initrd`]),
//!   gzip-compressed;
//! - the manifest format ([`manifest`]) that the host reads to know what it boots;
//! - the build itself ([`image::build`]), incremental: unchanged inputs rewrite nothing.
//!
//! Fetching the kernel and compiling the agent are not done here; `cargo xtask guest-image` does
//! that and calls [`image::build`].
//!
//! Layout of the initrd (the contract with `vc-agent`):
//!
//! | path | content |
//! | --- | --- |
//! | `/init` | the static `vc-agent` executable |
//! | `/lib/modules/<name>.ko` | the modules, uncompressed |
//! | `/etc/vc/modules` | module file names, one per line, in load order (dependencies first) |
//! | `/dev/console` | character device 5:1, so the kernel can open the console before init runs |
//! | `/dev`, `/proc`, `/sys`, `/run`, `/tmp`, `/mnt` | empty directories the agent mounts onto |

pub mod cpio;
pub mod elf;
pub mod hash;
pub mod image;
pub mod initrd;
pub mod kernel;
pub mod manifest;
pub mod modinfo;
pub mod modules;
pub mod resolve;

use std::path::{Path, PathBuf};

pub use image::{build, BuildOutcome, ImageError, ImageInputs};
pub use manifest::{FileDigest, Manifest, ManifestError, ManifestModule};

/// File name of the kernel in the image directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// File name of the compressed initrd in the image directory.
pub const INITRD_FILE: &str = "initrd.img";
/// File name of the manifest in the image directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Environment variable that overrides where the guest image directory is.
pub const IMAGE_DIR_ENV: &str = "VC_GUEST_IMAGE_DIR";
/// Upper bound of the compressed initrd size: a larger initrd is a build error.
pub const MAX_INITRD_SIZE: u64 = 8 * 1024 * 1024;

/// Path of the agent inside the initrd.
pub const GUEST_INIT_PATH: &str = "/init";
/// Directory of the module files inside the initrd.
pub const GUEST_MODULE_DIR: &str = "/lib/modules";
/// File inside the initrd listing module file names in load order, one per line.
pub const GUEST_MODULE_LIST: &str = "/etc/vc/modules";

/// The default image directory of a workspace: `<workspace>/target/guest-image`.
pub fn default_image_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("target").join("guest-image")
}

/// The three file paths of an image directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePaths {
    /// The kernel.
    pub kernel: PathBuf,
    /// The compressed initrd.
    pub initrd: PathBuf,
    /// The manifest.
    pub manifest: PathBuf,
}

impl ImagePaths {
    /// The files of the image in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            kernel: dir.join(KERNEL_FILE),
            initrd: dir.join(INITRD_FILE),
            manifest: dir.join(MANIFEST_FILE),
        }
    }
}
