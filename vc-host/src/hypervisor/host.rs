//! What the host offers a VM (KVM, kernel vsock) and the pure choice of
//! accelerator and vsock form made from it.
//!
//! KVM counts as usable only when `/dev/kvm` opens read-write *and* the CPU
//! flags show `vmx` or `svm`: a `/dev/kvm` backed by PVM (as on the
//! development machines) opens, but a stock kernel hangs under it.
//!
//! The host's TSC frequency is measured too: under TCG the guest's TSC runs
//! at the host's rate, and a microvm guest (no HPET, no ACPI PM timer) whose
//! PIT calibration fails on a loaded host marks its TSC unstable and hangs in
//! early boot. Telling the guest the rate (`tsc_early_khz=`) avoids that.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Which accelerator the caller asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelChoice {
    /// KVM where `/dev/kvm` opens read-write and the CPU shows vmx or svm,
    /// TCG otherwise.
    #[default]
    Auto,
    /// KVM, an error where `/dev/kvm` cannot be opened.
    Kvm,
    /// TCG (software emulation), always available.
    Tcg,
}

/// The accelerator a VM runs with, once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name for the accelerator.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Which vsock form the caller asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockChoice {
    /// Kernel vhost-vsock where `/dev/vhost-vsock` exists, hybrid otherwise.
    #[default]
    Auto,
    /// Kernel vhost-vsock with a guest CID, an error without `/dev/vhost-vsock`.
    Kernel,
    /// Hybrid vsock through the `vhost-device-vsock` daemon.
    Hybrid,
}

/// The vsock form a VM runs with, once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockKind {
    /// `vhost-vsock` in the host kernel, reached with `AF_VSOCK`.
    Kernel,
    /// `vhost-device-vsock`, reached through a Unix socket.
    Hybrid,
}

/// A forced choice this host cannot honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HostError {
    /// KVM forced but unusable.
    #[error("KVM was asked for but /dev/kvm cannot be opened read-write")]
    KvmUnavailable,
    /// Kernel vsock forced but unusable.
    #[error("kernel vsock was asked for but /dev/vhost-vsock does not exist (load vhost_vsock, or use hybrid vsock)")]
    KernelVsockUnavailable,
}

/// Facts about the host that decide the accelerator and the vsock form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// `/dev/kvm` opened read-write.
    pub kvm_read_write: bool,
    /// `/proc/cpuinfo` shows `vmx` or `svm`.
    pub cpu_virt_flags: bool,
    /// `/dev/vhost-vsock` exists.
    pub vhost_vsock: bool,
    /// The host's TSC frequency in kHz, when it could be measured.
    pub tsc_khz: Option<u64>,
}

impl HostFacts {
    /// Looks at this host.
    pub fn probe() -> Self {
        let kvm_read_write = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let cpu_virt_flags = std::fs::read_to_string("/proc/cpuinfo")
            .map(|text| cpuinfo_has_virt(&text))
            .unwrap_or(false);
        let vhost_vsock = Path::new("/dev/vhost-vsock").exists();
        HostFacts {
            kvm_read_write,
            cpu_virt_flags,
            vhost_vsock,
            tsc_khz: host_tsc_khz(),
        }
    }

    /// KVM is usable for a stock guest kernel.
    pub fn kvm_usable(&self) -> bool {
        self.kvm_read_write && self.cpu_virt_flags
    }
}

/// The host's TSC frequency in kHz, measured once per process (about 20 ms)
/// against the monotonic clock. `None` where there is no TSC.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(measure_tsc_khz)
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    fn rdtsc() -> u64 {
        // SAFETY: RDTSC is available on every x86_64 CPU and has no memory
        // effects.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    // The (TSC, time) pair read in the shortest window out of a few, so
    // that a preemption between the two reads does not skew the result.
    fn sample() -> (u64, Instant) {
        let mut best: Option<(u64, u64, Instant)> = None;
        for _ in 0..16 {
            let before = rdtsc();
            let now = Instant::now();
            let after = rdtsc();
            let width = after.wrapping_sub(before);
            if best.is_none_or(|(w, _, _)| width < w) {
                best = Some((width, before + width / 2, now));
            }
        }
        let (_, tsc, now) = best.expect("at least one sample");
        (tsc, now)
    }
    let (tsc0, t0) = sample();
    std::thread::sleep(Duration::from_millis(20));
    let (tsc1, t1) = sample();
    let ticks = tsc1.checked_sub(tsc0)?;
    let nanos = u64::try_from(t1.duration_since(t0).as_nanos()).ok()?;
    let khz = u128::from(ticks) * 1_000_000 / u128::from(nanos.max(1));
    u64::try_from(khz).ok().filter(|&k| k > 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}

/// True when a `flags` line of `/proc/cpuinfo` text lists `vmx` (Intel VT-x)
/// or `svm` (AMD-V).
pub fn cpuinfo_has_virt(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        key.trim() == "flags" && value.split_whitespace().any(|f| f == "vmx" || f == "svm")
    })
}

/// Decides the accelerator. A forced KVM needs only `/dev/kvm` (the caller
/// knows what it runs on); the automatic choice also needs the CPU flags.
pub fn choose_accel(choice: AccelChoice, host: &HostFacts) -> Result<Accel, HostError> {
    match choice {
        AccelChoice::Auto if host.kvm_usable() => Ok(Accel::Kvm),
        AccelChoice::Auto | AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm if host.kvm_read_write => Ok(Accel::Kvm),
        AccelChoice::Kvm => Err(HostError::KvmUnavailable),
    }
}

/// Decides the vsock form.
pub fn choose_vsock(choice: VsockChoice, host: &HostFacts) -> Result<VsockKind, HostError> {
    match choice {
        VsockChoice::Auto if host.vhost_vsock => Ok(VsockKind::Kernel),
        VsockChoice::Auto | VsockChoice::Hybrid => Ok(VsockKind::Hybrid),
        VsockChoice::Kernel if host.vhost_vsock => Ok(VsockKind::Kernel),
        VsockChoice::Kernel => Err(HostError::KernelVsockUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str =
        "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\nbugs\t\t: spectre_v1\n";
    const AMD: &str = "flags\t\t: fpu svm lm\n";
    const PVM: &str = "processor\t: 0\nflags\t\t: fpu vme hypervisor lm\nvmx flags\t: foo\n";

    fn host(kvm: bool, flags: bool) -> HostFacts {
        HostFacts {
            kvm_read_write: kvm,
            cpu_virt_flags: flags,
            vhost_vsock: false,
            tsc_khz: None,
        }
    }

    #[test]
    fn cpu_flags_are_read_from_the_flags_line_only() {
        assert!(cpuinfo_has_virt(INTEL));
        assert!(cpuinfo_has_virt(AMD));
        // "vmx flags" is a different key; "hypervisor" is not "vmx".
        assert!(!cpuinfo_has_virt(PVM));
        assert!(!cpuinfo_has_virt(""));
    }

    #[test]
    fn auto_takes_kvm_only_with_device_and_flags() {
        use AccelChoice::Auto;
        assert_eq!(choose_accel(Auto, &host(true, true)).ok(), Some(Accel::Kvm));
        // PVM-backed /dev/kvm: opens, but no vmx/svm.
        assert_eq!(
            choose_accel(Auto, &host(true, false)).ok(),
            Some(Accel::Tcg)
        );
        assert_eq!(
            choose_accel(Auto, &host(false, true)).ok(),
            Some(Accel::Tcg)
        );
        assert_eq!(
            choose_accel(Auto, &host(false, false)).ok(),
            Some(Accel::Tcg)
        );
    }

    #[test]
    fn forced_accelerators() {
        assert_eq!(
            choose_accel(AccelChoice::Tcg, &host(true, true)).ok(),
            Some(Accel::Tcg)
        );
        assert_eq!(
            choose_accel(AccelChoice::Kvm, &host(true, false)).ok(),
            Some(Accel::Kvm)
        );
        assert!(matches!(
            choose_accel(AccelChoice::Kvm, &host(false, true)),
            Err(HostError::KvmUnavailable)
        ));
    }

    #[test]
    fn vsock_form_follows_dev_vhost_vsock() {
        let without = host(false, false);
        let with = HostFacts {
            vhost_vsock: true,
            ..without
        };
        assert_eq!(
            choose_vsock(VsockChoice::Auto, &without).ok(),
            Some(VsockKind::Hybrid)
        );
        assert_eq!(
            choose_vsock(VsockChoice::Auto, &with).ok(),
            Some(VsockKind::Kernel)
        );
        assert_eq!(
            choose_vsock(VsockChoice::Hybrid, &with).ok(),
            Some(VsockKind::Hybrid)
        );
        assert!(matches!(
            choose_vsock(VsockChoice::Kernel, &without),
            Err(HostError::KernelVsockUnavailable)
        ));
    }

    #[test]
    fn tsc_frequency_is_plausible() {
        // Any x86_64 host of the last 15 years runs its TSC between 1 and 6 GHz.
        let khz = host_tsc_khz().expect("x86_64 has a TSC");
        assert!((1_000_000..6_000_000).contains(&khz), "{khz} kHz");
    }

    #[test]
    fn probe_on_this_machine_does_not_pick_kvm() {
        // The development machines have a PVM-backed /dev/kvm and no vmx/svm
        // (DESIGN.md); wherever the flags are missing, auto must mean TCG.
        let facts = HostFacts::probe();
        if !facts.cpu_virt_flags {
            assert_eq!(
                choose_accel(AccelChoice::Auto, &facts).ok(),
                Some(Accel::Tcg)
            );
        }
    }
}
