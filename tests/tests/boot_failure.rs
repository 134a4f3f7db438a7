//! A guest whose agent cannot start ends its VM, and the host reports a boot
//! failure with the console's last lines, within a bounded time, leaving
//! nothing behind.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use guest_image::cpio::CpioWriter;
use support::pod::TestRuntime;
use vc_host::config::RuntimeConfig;
use vc_host::{Runtime, RuntimeError};

/// Copies the real image into `dir`, with an initrd whose module list names a
/// module that does not exist. The kernel unpacks concatenated archives in
/// order, so a second archive overrides `/etc/vc/modules`.
fn broken_image(real: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    for file in ["vmlinuz", "manifest.json"] {
        std::fs::copy(real.join(file), dir.join(file)).with_context(|| format!("copy {file}"))?;
    }
    let mut initrd = std::fs::read(real.join("initrd.img"))?;
    let mut cpio = CpioWriter::new(Vec::new());
    cpio.dir("etc", 0o755)?;
    cpio.dir("etc/vc", 0o755)?;
    cpio.file("etc/vc/modules", 0o644, b"no_such_module.ko\n")?;
    let archive = cpio.finish()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive)?;
    initrd.extend_from_slice(&gz.finish()?);
    std::fs::write(dir.join("initrd.img"), initrd)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_start_is_a_boot_failure_with_the_console_tail() -> Result<()> {
    let t = TestRuntime::new()?;
    let image = tempfile::tempdir()?;
    broken_image(&t.image.dir, image.path())?;
    let rt = Runtime::new(RuntimeConfig {
        root: t.root().to_owned(),
        guest_image_dir: image.path().to_owned(),
        host_cgroup: t.rt.config().host_cgroup.clone(),
        ..RuntimeConfig::default()
    })?;
    let id = t.pod("broken").id;
    rt.create_pod(t.pod("broken")).await?;
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), rt.start_pod(&id))
        .await
        .context("start_pod hung on a guest whose agent cannot start")?
        .expect_err("a guest without its modules cannot boot");
    let elapsed = started.elapsed();
    match &err {
        RuntimeError::BootFailed { console_tail, .. } => assert!(
            console_tail.contains("no_such_module"),
            "the console tail names the module:\n{console_tail}"
        ),
        other => panic!("expected a boot failure, got {other:?}"),
    }
    // The VM ended by itself (power off), so the host did not wait for the
    // whole connect deadline.
    assert!(
        elapsed < Duration::from_secs(25),
        "reported after {elapsed:?}"
    );

    // Nothing of the VM is left; the pod is back to ready and can be deleted.
    let status = rt.pod_status(&id).await?;
    assert_eq!(status.state, vc_host::state::State::Ready);
    assert!(status.processes.is_empty());
    rt.delete_pod(&id).await?;
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty());
    assert!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    Ok(())
}
