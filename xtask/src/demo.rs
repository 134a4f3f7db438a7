//! `cargo xtask demo`: the README's first command. It prepares the host, the guest image and the
//! rootfs, then runs the demo proper: `virtc run` boots a pod VM and runs a busybox container that
//! prints something about itself, showing how long each step took, and cleans up.

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

/// The script the demo's container runs: something about itself.
const DEMO_SCRIPT: &str = "echo \"hello from container $(hostname)\"; \
    echo \"kernel: $(uname -r)\"; \
    echo \"pid 1: $(cat /proc/1/comm) (this shell is pid $$)\"; \
    echo \"uid: $(id -u)\"";

/// The demo proper: `virtc run` boots a pod VM, runs one busybox container in
/// it, prints its output and how long each step took, and removes everything.
fn run_demo(ctx: &Ctx, prepared: &Prepared) -> Result<()> {
    ctx::step("demo: a pod VM with one busybox container (virtc run)");
    let root = std::env::temp_dir().join(format!("vc-demo-{}", std::process::id()));
    let path = std::env::join_paths(std::iter::once(prepared.tools_bin.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let mut cmd = ctx.cargo();
    cmd.args([
        "run",
        "--quiet",
        "--package",
        "vc-host",
        "--bin",
        "virtc",
        "--",
    ])
    .arg("--root")
    .arg(&root)
    .arg("--image-dir")
    .arg(&prepared.image_dir)
    .arg("run")
    .arg("--rootfs")
    .arg(&prepared.rootfs)
    .args(["--", "/bin/sh", "-c", DEMO_SCRIPT])
    .env("PATH", path)
    .env("VC_TIMINGS", "1");
    let result = ctx::run(&mut cmd);
    let _ = std::fs::remove_dir_all(&root);
    result.context("the demo failed")?;
    println!("demo done: the pod was booted, the container ran, and everything was removed");
    Ok(())
}
