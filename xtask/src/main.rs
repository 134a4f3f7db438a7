//! `cargo xtask`: the project's own commands. Each subcommand lives in its own module:
//! host preparation ([`deps`]), the guest image ([`image`], with [`agent`] and [`kernel`]), the
//! container test rootfs ([`rootfs`]), OCI image archives of it ([`oci`]), the installation
//! ([`install`]), the full test run ([`test`](mod@test)), the demo ([`demo`]), the benchmarks
//! ([`bench`](mod@bench)), the soak ([`soak`]) and the fuzzers ([`fuzz`]). Shared paths and
//! process helpers are in [`ctx`].

mod agent;
mod bench;
mod ctx;
mod demo;
mod deps;
mod fuzz;
mod image;
mod install;
mod kernel;
mod oci;
mod rootfs;
mod soak;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::ctx::Ctx;

/// Project commands of vc.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Make this host ready: QEMU, busybox-static, build libraries (apt, as root on Debian/Ubuntu),
    /// vhost-device-vsock and virtiofsd (cargo install into the cache directory).
    Deps,
    /// Build the guest image: static vc-agent, Debian cloud kernel (or your own), modules, initrd,
    /// manifest.
    GuestImage(image::Args),
    /// Build the busybox container rootfs used by tests and the demo.
    Rootfs(rootfs::Args),
    /// Write OCI image archives for `ctr image import`: target/oci/busybox.tar
    /// (localhost/vc/busybox:latest) and target/oci/pause.tar (localhost/vc/pause:latest).
    OciImage(oci::Args),
    /// Install virtc, containerd-shim-vc-v2, their helpers and the guest image under a prefix,
    /// and print the containerd configuration for the runtime `vc`.
    Install(install::Args),
    /// Everything: deps, guest image, rootfs, fmt and clippy checks, then all tests of the workspace.
    Test(test::Args),
    /// Prepare everything and run the demo.
    Demo,
    /// Benchmarks.
    Bench(bench::Args),
    /// Cycle pods through every verb (create, start, exec, a volume, update, stop, delete; every
    /// other pod in a network namespace) and account for leaks after every 10 cycles.
    Soak(soak::Args),
    /// Run the fuzz targets of fuzz/ with libFuzzer (nightly), each for a bounded time.
    Fuzz(fuzz::Args),
}

/// Where outputs go unless `--out` says otherwise, and the default rootfs path.
pub(crate) fn default_rootfs_dir(ctx: &Ctx) -> PathBuf {
    ctx.workspace.join("target").join("rootfs").join("busybox")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Ctx::new().and_then(|ctx| match cli.cmd {
        Cmd::Deps => deps::run(&ctx),
        Cmd::GuestImage(args) => image::run(&ctx, &args).map(|_| ()),
        Cmd::Rootfs(args) => rootfs::run(&ctx, &args).map(|_| ()),
        Cmd::OciImage(args) => oci::run(&ctx, &args).map(|_| ()),
        Cmd::Install(args) => install::run(&ctx, &args),
        Cmd::Test(args) => test::run(&ctx, &args),
        Cmd::Demo => demo::run(&ctx),
        Cmd::Bench(args) => bench::run(&ctx, &args),
        Cmd::Soak(args) => soak::run(&ctx, &args),
        Cmd::Fuzz(args) => fuzz::run(&ctx, &args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
