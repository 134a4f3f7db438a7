//! What every benchmark starts from: the guest image and the busybox rootfs
//! (found, or a failure naming the command that builds them), an async
//! runtime, and a scratch directory with short paths for VM sockets.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use guest_image::{default_image_dir, ImagePaths, Manifest, IMAGE_DIR_ENV};
use vc_host::config::RuntimeConfig;
use vc_host::Runtime;

use crate::ctx::{Ctx, ROOTFS_ENV};

/// The guest image: its directory and files.
#[derive(Debug)]
pub(super) struct Image {
    /// The directory (`$VC_GUEST_IMAGE_DIR` or the workspace's).
    pub dir: PathBuf,
    /// Its kernel, initrd and manifest.
    pub paths: ImagePaths,
}

impl Image {
    /// Finds the guest image; fails naming `cargo xtask guest-image` when a
    /// file is missing.
    pub fn locate(ctx: &Ctx) -> Result<Self> {
        let dir = std::env::var_os(IMAGE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| default_image_dir(&ctx.workspace));
        let paths = ImagePaths::in_dir(&dir);
        for f in [&paths.kernel, &paths.initrd, &paths.manifest] {
            if !f.is_file() {
                bail!(
                    "the guest image is missing {}: build it with `cargo xtask guest-image`",
                    f.display()
                );
            }
        }
        Ok(Self { dir, paths })
    }

    /// The image's manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        Manifest::load(&self.dir).with_context(|| {
            format!(
                "cannot read the guest image manifest in {}",
                self.dir.display()
            )
        })
    }
}

/// The busybox rootfs (`$VC_ROOTFS` or the workspace's); fails naming
/// `cargo xtask rootfs` when it is missing.
pub(super) fn rootfs(ctx: &Ctx) -> Result<PathBuf> {
    let rootfs = std::env::var_os(ROOTFS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::default_rootfs_dir(ctx));
    if !rootfs.join("bin/busybox").is_file() {
        bail!(
            "no busybox rootfs in {}: build it with `cargo xtask rootfs`",
            rootfs.display()
        );
    }
    Ok(rootfs)
}

/// A two-thread tokio runtime for a benchmark's async part.
pub(super) fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A scratch directory under `/tmp` whose name starts with `prefix`: short,
/// because the VMs' sockets live below it and must fit in `sun_path`.
pub(super) fn scratch(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .context("cannot create a temporary directory in /tmp")
}

/// A vc runtime rooted at `<scratch>/r`, booting pods from `image_dir`.
pub(super) fn vc_runtime(scratch: &Path, image_dir: &Path) -> Result<Runtime> {
    Runtime::new(RuntimeConfig {
        root: scratch.join("r"),
        guest_image_dir: image_dir.to_owned(),
        ..RuntimeConfig::default()
    })
    .context("cannot open the runtime root")
}
