//! The smallest program that embeds vc-host: a pod (a VM) with one container,
//! whose output it prints.
//!
//! ```text
//! cargo xtask guest-image && cargo xtask rootfs
//! VC_GUEST_IMAGE_DIR=target/guest-image \
//!     cargo run -p vc-host --example hello_pod -- target/rootfs/busybox
//! ```
//!
//! The container's root filesystem is the first argument, else `$VC_ROOTFS`.
//! The guest image is where `RuntimeConfig::default()` finds it:
//! `$VC_GUEST_IMAGE_DIR`, else an installed image (`cargo xtask install`).
//! Pod state goes to `$VC_ROOT`, else `/run/vc`. It runs as root, and
//! `RUST_LOG=info` shows each lifecycle step.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use vc_host::config::{ContainerConfig, PodConfig, RuntimeConfig};
use vc_host::id::{ContainerId, PodId};
use vc_host::Runtime;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rootfs = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("VC_ROOTFS"))
        .map(PathBuf::from)
        .context("usage: hello_pod ROOTFS (or set VC_ROOTFS)")?;

    let runtime = Runtime::new(RuntimeConfig::default())?;
    // Creating a pod checks its configuration and the guest image and records
    // it; no VM runs yet.
    let pod = PodId::new(format!("hello-{}", std::process::id()))?;
    runtime.create_pod(PodConfig::new(pod.clone())).await?;
    let result = run_container(&runtime, &pod, rootfs).await;
    // Stopping the pod stops its containers and the VM and its helpers
    // (a pod whose start failed is stopped already, so that error is not
    // the one to report); deleting removes its state, and refuses a pod
    // that still runs.
    let _ = runtime.stop_pod(&pod).await;
    runtime.delete_pod(&pod).await?;
    let code = result?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Boots the pod, runs one container in it and prints its output; returns
/// the container's exit code.
async fn run_container(runtime: &Runtime, pod: &PodId, rootfs: PathBuf) -> anyhow::Result<i32> {
    // Boots the VM and waits for the agent inside it.
    runtime.start_pod(pod).await?;
    let id = ContainerId::new("hello")?;
    let command = [
        "/bin/sh",
        "-c",
        "echo hello from $(hostname), kernel $(uname -r)",
    ]
    .map(String::from)
    .to_vec();
    runtime
        .create_container(pod, ContainerConfig::new(id.clone(), rootfs, command))
        .await?;
    runtime.start_container(pod, &id).await?;
    // The output waits in the guest until someone attaches; `output` reads
    // stdout and stderr to their end and waits for the exit code.
    let output = runtime
        .attach_container(pod, &id, false)
        .await?
        .output()
        .await?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    println!("exit code {}", output.exit_code);
    // The container has exited: it is stopped, and can be deleted.
    runtime.delete_container(pod, &id).await?;
    Ok(output.exit_code)
}
