//! `containerd-shim-vc-v2`: the containerd shim v2 of vc (runtime type
//! `io.containerd.vc.v2`).
//!
//! containerd starts the binary with `start` (which spawns the long-lived
//! shim process serving the task API on a socket), without an action (that
//! process), or with `delete` (cleanup after a shim died). One shim process
//! serves one pod, that is one vc VM. See `docs/shim.md`.

mod bundle;
mod cleanup;
mod config;
mod group;
mod logging;
mod rootfs;
mod service;
mod shim;

/// The runtime type containerd names this shim by.
pub const RUNTIME_TYPE: &str = "io.containerd.vc.v2";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "-v" | "--version" | "-version" | "--v"))
    {
        println!(
            "containerd-shim-vc-v2:\n  Version: {}\n  Runtime: {RUNTIME_TYPE}",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("containerd-shim-vc-v2: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(containerd_shim::asynchronous::run::<shim::VcShim>(
        RUNTIME_TYPE,
        Some(shim::shim_config()),
    ));
}
