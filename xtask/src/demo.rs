//! `cargo xtask demo`: the README's first command. It prepares the host, the guest image and the
//! rootfs, then runs the demo proper. The pod lifecycle does not exist yet, so for now the demo
//! proper only says what was prepared; once `virtc` can run a container, [`run_demo`] runs
//! `cargo run -p vc-host --bin virtc -- run ...` with the prepared image and rootfs.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::ctx::{self, Ctx};
use crate::{deps, image, rootfs};

/// What the demo runs with.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The guest image directory.
    pub image_dir: PathBuf,
    /// The container rootfs.
    pub rootfs: PathBuf,
    /// The helper tools' directory.
    pub tools_bin: PathBuf,
}

/// Deps, guest image and rootfs.
pub(crate) fn prepare(ctx: &Ctx) -> Result<Prepared> {
    deps::run(ctx)?;
    let image = image::run(ctx, &image::Args::default())?;
    let rootfs = rootfs::run(ctx, &rootfs::Args::default())?;
    Ok(Prepared {
        image_dir: image
            .paths
            .manifest
            .parent()
            .map(Path::to_owned)
            .context("the image has no directory")?,
        rootfs,
        tools_bin: ctx.tools_bin(),
    })
}

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    let prepared = prepare(ctx)?;
    run_demo(ctx, &prepared)
}

/// The demo proper.
fn run_demo(_ctx: &Ctx, prepared: &Prepared) -> Result<()> {
    ctx::step("demo");
    println!("Prepared everything a pod VM needs:");
    println!(
        "  helper tools:  {} (vhost-device-vsock, virtiofsd)",
        prepared.tools_bin.display()
    );
    println!(
        "  guest image:   {} (vmlinuz, initrd.img, manifest.json)",
        prepared.image_dir.display()
    );
    println!("  rootfs:        {}", prepared.rootfs.display());
    println!(
        "The demo itself (run a container in a pod VM with virtc) is not implemented yet: \
         nothing was booted."
    );
    Ok(())
}
