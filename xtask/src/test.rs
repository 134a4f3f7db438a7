//! `cargo xtask test`: the project's one test command (the README's, and `.ci/run`'s). In order:
//! deps, guest image, rootfs, OCI image archives, `cargo fmt --check`, `cargo clippy -D warnings`,
//! `cargo doc` with rustdoc warnings denied, then every test of the workspace with the image, the
//! rootfs, the OCI archives and the tools made known to the test processes, then the lifecycle,
//! process I/O and storage suites once more with a warm pool. Stops at the first failure.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};
use guest_image::IMAGE_DIR_ENV;

use crate::ctx::{self, Ctx, CACHE_DIR_ENV, ROOTFS_ENV};
use crate::{deps, image, oci, rootfs};

/// How many tests of one test binary run at once: end-to-end tests boot VMs, and the machines
/// this runs on have 2 cores.
pub(crate) const TEST_THREADS: u32 = 2;

/// The suites run a second time with a warm pool: every test runtime fills one slot before the
/// test, so a test's first pod of the default shape adopts a pooled VM instead of booting one.
const POOLED_SUITES: [&str; 4] = [
    "pod_lifecycle",
    "process_io",
    "storage_volumes",
    "storage_block",
];

/// The variable that makes the tests' runtimes fill a pool (`tests/tests/support/pod.rs`).
const POOL_ENV: &str = "VC_TEST_POOL";

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Args {
    /// Extra arguments for the test binaries (after `cargo test -- --test-threads=2`), for
    /// example a test name filter.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "TEST ARGS"
    )]
    pub test_args: Vec<String>,
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let start = Instant::now();
    let total = 7;
    let mut n = 0;
    let mut stage = |what: &str| {
        n += 1;
        ctx::step(format!(
            "[{n}/{total}] {what} ({:.0} s so far)",
            start.elapsed().as_secs_f64()
        ));
    };

    stage("host dependencies");
    deps::run(ctx)?;
    stage("guest image, container rootfs, OCI image archives");
    let inputs = Inputs::prepare(ctx)?;

    stage("cargo fmt --check");
    ctx::run(ctx.cargo().args(["fmt", "--all", "--check"]))?;
    stage("cargo clippy");
    ctx::run(ctx.cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    stage("cargo doc");
    ctx::run(
        ctx.cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;

    stage("cargo test");
    ctx::run(
        inputs
            .cargo_test(ctx)
            .args(["--workspace", "--"])
            .arg(format!("--test-threads={TEST_THREADS}"))
            .args(&args.test_args),
    )?;

    stage("the lifecycle, process I/O and storage suites again, each pod adopting a pooled VM");
    let mut pooled = inputs.cargo_test(ctx);
    pooled.arg("--workspace");
    for suite in POOLED_SUITES {
        pooled.args(["--test", suite]);
    }
    ctx::run(
        pooled
            .env(POOL_ENV, "1")
            .arg("--")
            .arg(format!("--test-threads={TEST_THREADS}"))
            .args(&args.test_args),
    )?;
    ctx::step(format!(
        "all checks and tests passed in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// What the end-to-end tests start from: the guest image, the container rootfs and the OCI image
/// archives, built (or found up to date) here.
pub(crate) struct Inputs {
    image_dir: PathBuf,
    rootfs: PathBuf,
    oci_dir: PathBuf,
}

impl Inputs {
    /// Builds the guest image from this checkout's agent, the rootfs and the OCI archives.
    pub(crate) fn prepare(ctx: &Ctx) -> Result<Self> {
        let image = image::run(ctx, &image::Args::default())?;
        let image_dir = image
            .paths
            .manifest
            .parent()
            .context("the image has no directory")?
            .to_owned();
        let rootfs = rootfs::run(ctx, &rootfs::Args::default())?;
        let oci_dir = oci::default_dir(ctx);
        oci::build(&rootfs, &oci_dir)?;
        Ok(Self {
            image_dir,
            rootfs,
            oci_dir,
        })
    }

    /// `cargo test` with the environment the tests need: the image, the rootfs, the OCI
    /// archives, the cache, and the helper tools on `PATH`.
    pub(crate) fn cargo_test(&self, ctx: &Ctx) -> Command {
        let mut path = OsString::from(ctx.tools_bin());
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        let mut cmd = ctx.cargo();
        cmd.arg("test")
            .env(IMAGE_DIR_ENV, &self.image_dir)
            .env(ROOTFS_ENV, &self.rootfs)
            .env(oci::OCI_DIR_ENV, &self.oci_dir)
            .env(CACHE_DIR_ENV, &ctx.cache)
            .env("PATH", path);
        cmd
    }
}
