//! The first end-to-end proof: QEMU boots the built guest image under TCG and the kernel runs our
//! agent as init, as seen on the serial console. Plain QEMU, no vc-host; later vc-host based tests
//! replace it.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use support::{ChildGuard, GuestImage};

/// Bound on the whole boot under TCG on a loaded 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn guest_boots_to_the_agent() -> Result<()> {
    let image = GuestImage::locate()?;
    image
        .manifest
        .check_load_order()
        .context("the image manifest lists a module before its dependencies")?;
    let qemu = support::qemu()?;
    let dir = tempfile::tempdir()?;
    let console = dir.path().join("console.log");
    let qemu_log = dir.path().join("qemu.log");
    let qemu_out = std::fs::File::create(&qemu_log)?;

    let mut cmd = Command::new(qemu);
    cmd.arg("-M")
        // microvm under TCG: keep the PIT and PIC (the default); without acpi=off the Debian cloud
        // kernel hangs after "tsc: Marking TSC unstable".
        .arg("microvm,accel=tcg,acpi=off")
        .args(["-m", "256M", "-smp", "1"])
        .arg("-kernel")
        .arg(&image.paths.kernel)
        .arg("-initrd")
        .arg(&image.paths.initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .args(["-no-reboot", "-nographic", "-nodefaults", "-no-user-config"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdout(Stdio::from(qemu_out.try_clone()?))
        .stderr(Stdio::from(qemu_out));

    let start = Instant::now();
    let mut vm = ChildGuard::spawn("qemu", &mut cmd)?;
    let result = (|| -> Result<()> {
        let after_init = support::wait_for_text(
            &console,
            "Run /init as init process",
            0,
            BOOT_TIMEOUT,
            &mut vm,
        )?;
        let init_at = start.elapsed();
        let remaining = BOOT_TIMEOUT.saturating_sub(init_at);
        support::wait_for_text(&console, "vc-agent", after_init, remaining, &mut vm)
            .context("the kernel ran /init but the agent printed no line naming vc-agent")?;
        println!(
            "kernel {}: /init started {:.2} s and the agent printed {:.2} s after QEMU was spawned",
            image.manifest.kernel_version,
            init_at.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    vm.kill();
    if let Err(err) = &result {
        eprintln!("{}", support::log_tail(&console, 200));
        eprintln!("{}", support::log_tail(&qemu_log, 50));
        eprintln!("boot failed: {err:#}");
    }
    result
}
