//! The end of the guest: sync and power off, used by `Shutdown` and by every fatal
//! path of PID 1 (setup error, server error, panic).
//!
//! PID 1 must never return: the kernel would panic (`panic=-1` makes it reboot,
//! and QEMU's `-no-reboot` then ends the VM), which is only a backstop. The agent
//! powers off itself, and if the power-off call fails it asks for a restart,
//! which `-no-reboot` also turns into the end of the VM.

use std::fmt::Display;
use std::io::Write;

use nix::sys::reboot::{reboot, RebootMode};

/// Flushes filesystems and powers the VM off. Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let off = reboot(RebootMode::RB_POWER_OFF);
    // Only reached when the call failed.
    let _ = writeln!(
        std::io::stderr(),
        "vc-agent: power off failed ({off:?}); restarting instead"
    );
    let again = reboot(RebootMode::RB_AUTOBOOT);
    let _ = writeln!(std::io::stderr(), "vc-agent: restart failed ({again:?})");
    loop {
        nix::unistd::pause();
    }
}

/// Logs a fatal error, then (PID 1) powers off. Outside PID 1 the process exits
/// with status 1 instead.
pub fn fatal(error: &dyn Display) -> ! {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("fatal: {error}");
    } else {
        // No log yet (early boot): straight to the console.
        let _ = writeln!(std::io::stderr(), "vc-agent: fatal: {error}");
    }
    if nix::unistd::getpid().as_raw() == 1 {
        power_off()
    }
    std::process::exit(1)
}

/// Formats an error with its chain of sources: `outer: inner: innermost`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Makes any panic of PID 1 end the VM: the message is logged, filesystems are
/// synced, and the VM powers off. Nothing is installed outside PID 1.
pub fn install_panic_hook() {
    if nix::unistd::getpid().as_raw() != 1 {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        if tracing::dispatcher::has_been_set() {
            tracing::error!("panic in thread {name}: {info}");
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "vc-agent: panic in thread {name}: {info}"
            );
        }
        power_off();
    }));
}
