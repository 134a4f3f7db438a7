//! What a VM is made of, as data: [`VmConfig`] (what a caller writes, with
//! working defaults) and [`VmSettings`] (the same, validated and resolved
//! against the host: accelerator, vsock form and binary paths decided).
//!
//! Validation happens before anything is spawned and fails with a typed
//! [`ConfigError`] naming what is wrong and how to fix it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::host::{choose_accel, choose_vsock, HostFacts};
pub use super::host::{Accel, AccelChoice, HostError, VsockChoice, VsockKind};
pub use super::tools::ToolError;
use super::tools::{ToolSearch, CONSOLE_LOG, QEMU, VHOST_DEVICE_VSOCK, VIRTIOFSD};

/// Smallest guest memory accepted: the Debian cloud kernel with the vc initrd
/// needs about 100 MiB to reach init; below this the guest dies in ways that
/// are hard to read from a console log.
pub const MIN_MEMORY_MIB: u32 = 128;

/// Largest vCPU count accepted (the x86 xAPIC limit without interrupt
/// remapping).
pub const MAX_VCPUS: u32 = 255;

/// QEMU machine type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Machine {
    /// `microvm`: virtio-mmio devices, no PCI, no hotplug; fastest boot.
    #[default]
    Microvm,
    /// `q35`: PCI(e) devices; slower boot, room for hotplug.
    Q35,
}

impl Machine {
    /// QEMU's name for the machine type.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        }
    }
}

/// The guest kernel's lockdown level (`lockdown=` on its command line).
///
/// Lockdown keeps even a privileged process in the guest (a privileged
/// container) from reading or changing the running guest kernel: no
/// `/dev/mem` or `/proc/kcore`, no unsigned modules, no kprobes, and at
/// `confidentiality` no tracefs and no BPF reads of kernel memory. At that
/// level the guest also never builds tracefs' event tree, which on the 6.1
/// cloud kernel holds about 10,000 inodes and dentries (8 to 9 MiB of every
/// pod; see docs/density.md). It needs a kernel with the lockdown LSM and,
/// when modules are loaded, signed modules: Debian's cloud kernel has both;
/// choose `none` for a kernel of your own build without signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestLockdown {
    /// No lockdown: the kernel's default.
    None,
    /// `lockdown=integrity`: the running kernel cannot be changed.
    Integrity,
    /// `lockdown=confidentiality`: nor read.
    #[default]
    Confidentiality,
}

impl GuestLockdown {
    /// The kernel argument, if any.
    pub fn kernel_arg(self) -> Option<&'static str> {
        match self {
            GuestLockdown::None => None,
            GuestLockdown::Integrity => Some("lockdown=integrity"),
            GuestLockdown::Confidentiality => Some("lockdown=confidentiality"),
        }
    }
}

/// virtiofsd's `--cache` policy for the pod's shared directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtiofsCache {
    /// Short (1 s) metadata timeouts, page cache kept while a file is
    /// unchanged: a bind mount made on the host after boot is seen by the
    /// guest at its next lookup.
    #[default]
    Auto,
    /// Cache everything for long: only for shares nobody else changes.
    Always,
    /// No caching: every access goes to the host.
    Never,
    /// Cache metadata, not data.
    Metadata,
}

impl VirtiofsCache {
    /// virtiofsd's name for the policy.
    pub fn as_arg(self) -> &'static str {
        match self {
            VirtiofsCache::Auto => "auto",
            VirtiofsCache::Always => "always",
            VirtiofsCache::Never => "never",
            VirtiofsCache::Metadata => "metadata",
        }
    }
}

/// How `virtiofsd` confines itself to the share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtiofsSandbox {
    /// New mount, pid and network namespaces with the share as the root
    /// (`--sandbox namespace`): the daemon sees no other host file and no
    /// host process or network.
    #[default]
    Namespace,
    /// `chroot` into the share (`--sandbox chroot`), for hosts where the
    /// daemon cannot make namespaces (inside some containers).
    Chroot,
}

impl VirtiofsSandbox {
    /// virtiofsd's name for the sandbox.
    pub fn as_arg(self) -> &'static str {
        match self {
            VirtiofsSandbox::Namespace => "namespace",
            VirtiofsSandbox::Chroot => "chroot",
        }
    }
}

/// Paths of the programs a VM needs; `None` means: search `PATH`, then the
/// project's tools cache (`<cache>/tools/bin`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Binaries {
    /// `qemu-system-x86_64`.
    pub qemu: Option<PathBuf>,
    /// `vhost-device-vsock` (hybrid vsock only).
    pub vhost_device_vsock: Option<PathBuf>,
    /// `virtiofsd` (only when the VM has a shared directory).
    pub virtiofsd: Option<PathBuf>,
    /// `vc-console-log`, the console logger (a binary of this crate; also
    /// looked for next to the running program).
    pub console_log: Option<PathBuf>,
}

/// A VM as a caller describes it. Every field has a default that boots, except
/// the kernel and initrd, which the caller fills from the guest image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Machine type.
    pub machine: Machine,
    /// Accelerator.
    pub accel: AccelChoice,
    /// vsock form.
    pub vsock: VsockChoice,
    /// Guest kernel (`vmlinuz` of the guest image).
    pub kernel: Option<PathBuf>,
    /// Guest initrd (`initrd.img` of the guest image).
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments, appended after the ones vc sets. One argument
    /// per entry, without whitespace.
    pub kernel_args: Vec<String>,
    /// vsock port the agent listens on (`vc.port`).
    pub agent_port: u32,
    /// Agent log level (`vc.log`).
    pub agent_log: String,
    /// Agent debug flags (`vc.debug`, comma-separated in the kernel
    /// command line); empty for none.
    pub agent_debug: Vec<String>,
    /// virtiofsd cache policy.
    pub virtiofs_cache: VirtiofsCache,
    /// virtiofsd sandbox.
    pub virtiofs_sandbox: VirtiofsSandbox,
    /// Program paths.
    pub binaries: Binaries,
    /// Most bytes of guest console kept on the host: the current file and
    /// one rotated file, each at most half of this.
    pub console_max_bytes: u64,
    /// Memory the pod's host processes may use beyond the guest's memory
    /// (QEMU itself, its TCG translation cache, the helper daemons), in MiB:
    /// the host cgroup's memory limit is `memory_mib` plus this.
    pub host_memory_overhead_mib: u32,
    /// Most tasks (processes and threads) of the pod's host processes
    /// together: the host cgroup's `pids.max`.
    pub host_pids_max: u32,
    /// The most a boot may take, in seconds, counted from its admission
    /// (see `docs/reliability.md`): until then a boot whose console keeps
    /// making progress is waited for. At least 1.
    pub boot_timeout_secs: u32,
    /// Size of TCG's translation cache in MiB (`-accel tcg,tb-size=`);
    /// ignored under KVM. QEMU's own default (an eighth of host memory up to
    /// 1 GiB) grows with what the guest runs; see docs/density.md for how
    /// the default was chosen. At least [`MIN_TCG_TB_SIZE_MIB`].
    pub tcg_tb_size_mib: u32,
    /// Give the guest a virtio-balloon with free page reporting, through
    /// which it returns the memory it frees to the host (see
    /// docs/density.md). The balloon is never inflated by vc.
    pub free_page_reporting: bool,
    /// The guest kernel's lockdown level (default `confidentiality`).
    pub guest_lockdown: GuestLockdown,
}

/// Default of [`VmConfig::boot_timeout_secs`]: two minutes, several times
/// the slowest TCG boot measured with admission on a loaded host.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u32 = 120;

/// Default of [`VmConfig::console_max_bytes`]: 4 MiB.
pub const DEFAULT_CONSOLE_MAX_BYTES: u64 = 4 << 20;

/// Smallest [`VmConfig::console_max_bytes`]: room for a boot log.
pub const MIN_CONSOLE_MAX_BYTES: u64 = 128 << 10;

/// Default of [`VmConfig::host_memory_overhead_mib`] (see docs/hypervisor.md
/// for what was measured).
pub const DEFAULT_HOST_MEMORY_OVERHEAD_MIB: u32 = 256;

/// Smallest [`VmConfig::host_memory_overhead_mib`].
pub const MIN_HOST_MEMORY_OVERHEAD_MIB: u32 = 64;

/// Default of [`VmConfig::tcg_tb_size_mib`] (measured: docs/density.md).
pub const DEFAULT_TCG_TB_SIZE_MIB: u32 = 32;

/// Smallest [`VmConfig::tcg_tb_size_mib`]: below a few MiB TCG flushes its
/// cache so often that the guest barely progresses.
pub const MIN_TCG_TB_SIZE_MIB: u32 = 4;

/// Default of [`VmConfig::host_pids_max`].
pub const DEFAULT_HOST_PIDS_MAX: u32 = 512;

/// Smallest [`VmConfig::host_pids_max`]: QEMU and the helpers start about
/// a dozen threads.
pub const MIN_HOST_PIDS_MAX: u32 = 32;

impl VmConfig {
    /// The limits of the pod's host cgroup.
    pub fn host_limits(&self) -> super::cgroup::CgroupLimits {
        super::cgroup::CgroupLimits {
            memory_bytes: (u64::from(self.memory_mib) + u64::from(self.host_memory_overhead_mib))
                << 20,
            pids_max: u64::from(self.host_pids_max),
        }
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 1,
            memory_mib: 256,
            machine: Machine::default(),
            accel: AccelChoice::default(),
            vsock: VsockChoice::default(),
            kernel: None,
            initrd: None,
            kernel_args: Vec::new(),
            agent_port: vc_proto::AGENT_VSOCK_PORT,
            agent_log: "info".to_owned(),
            agent_debug: Vec::new(),
            virtiofs_cache: VirtiofsCache::default(),
            virtiofs_sandbox: VirtiofsSandbox::default(),
            binaries: Binaries::default(),
            console_max_bytes: DEFAULT_CONSOLE_MAX_BYTES,
            host_memory_overhead_mib: DEFAULT_HOST_MEMORY_OVERHEAD_MIB,
            host_pids_max: DEFAULT_HOST_PIDS_MAX,
            boot_timeout_secs: DEFAULT_BOOT_TIMEOUT_SECS,
            tcg_tb_size_mib: DEFAULT_TCG_TB_SIZE_MIB,
            free_page_reporting: true,
            guest_lockdown: GuestLockdown::default(),
        }
    }
}

/// A [`VmConfig`] validated and resolved against the host: what
/// [`super::Hypervisor::launch`] consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSettings {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Machine type.
    pub machine: Machine,
    /// Accelerator in use.
    pub accel: Accel,
    /// vsock form in use.
    pub vsock: VsockKind,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments.
    pub kernel_args: Vec<String>,
    /// Agent vsock port.
    pub agent_port: u32,
    /// Agent log level.
    pub agent_log: String,
    /// Agent debug flags.
    pub agent_debug: Vec<String>,
    /// virtiofsd cache policy.
    pub virtiofs_cache: VirtiofsCache,
    /// virtiofsd sandbox.
    pub virtiofs_sandbox: VirtiofsSandbox,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// `vhost-device-vsock`; always set for hybrid vsock.
    pub vhost_device_vsock: Option<PathBuf>,
    /// `virtiofsd`, when found; required only by a VM with a shared directory.
    pub virtiofsd: Option<PathBuf>,
    /// Host TSC frequency (kHz), told to a microvm guest under TCG.
    pub tsc_khz: Option<u64>,
    /// `vc-console-log`.
    pub console_log: PathBuf,
    /// Most bytes of guest console kept on the host.
    pub console_max_bytes: u64,
    /// TCG translation cache size in MiB.
    #[serde(default = "default_tcg_tb_size_mib")]
    pub tcg_tb_size_mib: u32,
    /// A virtio-balloon with free page reporting.
    #[serde(default)]
    pub free_page_reporting: bool,
    /// The guest kernel's lockdown level (records written before it existed
    /// read as `none`, which is how those VMs were booted).
    #[serde(default = "no_lockdown")]
    pub guest_lockdown: GuestLockdown,
}

fn no_lockdown() -> GuestLockdown {
    GuestLockdown::None
}

fn default_tcg_tb_size_mib() -> u32 {
    DEFAULT_TCG_TB_SIZE_MIB
}

/// Why a [`VmConfig`] cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// vCPU count of zero or above [`MAX_VCPUS`].
    #[error("vcpus must be between 1 and {MAX_VCPUS}, not {0}")]
    Vcpus(u32),
    /// Memory below [`MIN_MEMORY_MIB`].
    #[error("memory_mib must be at least {MIN_MEMORY_MIB}, not {0}")]
    MemoryTooSmall(u32),
    /// No kernel given.
    #[error("no guest kernel configured: build the guest image with `cargo xtask guest-image` and pass its vmlinuz")]
    NoKernel,
    /// The kernel or initrd file is not there.
    #[error("guest {what} {path} is not a readable file (build the guest image with `cargo xtask guest-image`)")]
    ImageFile {
        /// `kernel` or `initrd`.
        what: &'static str,
        /// Path given.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// A kernel argument that would not survive as one argument.
    #[error("kernel argument {0:?} is empty or contains whitespace or control characters")]
    KernelArg(String),
    /// An extra kernel argument that would override a setting of the agent
    /// (`vc.port`, `vc.log`, `vc.debug`): the host would then connect to
    /// another port than the agent listens on.
    #[error(
        "kernel argument {0:?} sets an agent key (vc.*); use agent_port, agent_log or agent_debug"
    )]
    AgentKernelArg(String),
    /// An extra kernel argument that sets the lockdown level, which has a
    /// field of its own.
    #[error("kernel argument {0:?} sets the lockdown level; use guest_lockdown")]
    LockdownKernelArg(String),
    /// A size or count below what a VM needs.
    #[error("{field} must be at least {min}, not {value}")]
    TooSmall {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The smallest accepted.
        min: u64,
    },
    /// Agent port 0 or above the vsock port range we use.
    #[error("agent_port {0} is not a usable vsock port")]
    AgentPort(u32),
    /// A forced accelerator or vsock form this host does not offer.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A program is missing or not executable.
    #[error(transparent)]
    Tool(#[from] ToolError),
}

impl VmConfig {
    /// Validates the config against this host (`/dev/kvm`, `/proc/cpuinfo`,
    /// `/dev/vhost-vsock`, `PATH` and the tools cache).
    pub fn validate(&self) -> Result<VmSettings, ConfigError> {
        self.validate_with(&HostFacts::probe(), &ToolSearch::from_env())
    }

    /// Validates the config against given host facts and program search
    /// paths. Pure except for checking that files exist.
    pub fn validate_with(
        &self,
        host: &HostFacts,
        tools: &ToolSearch,
    ) -> Result<VmSettings, ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if self.console_max_bytes < MIN_CONSOLE_MAX_BYTES {
            return Err(ConfigError::TooSmall {
                field: "console_max_bytes",
                value: self.console_max_bytes,
                min: MIN_CONSOLE_MAX_BYTES,
            });
        }
        if self.host_memory_overhead_mib < MIN_HOST_MEMORY_OVERHEAD_MIB {
            return Err(ConfigError::TooSmall {
                field: "host_memory_overhead_mib",
                value: self.host_memory_overhead_mib.into(),
                min: MIN_HOST_MEMORY_OVERHEAD_MIB.into(),
            });
        }
        if self.host_pids_max < MIN_HOST_PIDS_MAX {
            return Err(ConfigError::TooSmall {
                field: "host_pids_max",
                value: self.host_pids_max.into(),
                min: MIN_HOST_PIDS_MAX.into(),
            });
        }
        if self.tcg_tb_size_mib < MIN_TCG_TB_SIZE_MIB {
            return Err(ConfigError::TooSmall {
                field: "tcg_tb_size_mib",
                value: self.tcg_tb_size_mib.into(),
                min: MIN_TCG_TB_SIZE_MIB.into(),
            });
        }
        if self.boot_timeout_secs == 0 {
            return Err(ConfigError::TooSmall {
                field: "boot_timeout_secs",
                value: 0,
                min: 1,
            });
        }
        // Ports below 1024 are privileged in AF_VSOCK; u32::MAX is VMADDR_PORT_ANY.
        if self.agent_port == 0 || self.agent_port == u32::MAX {
            return Err(ConfigError::AgentPort(self.agent_port));
        }
        for arg in self
            .kernel_args
            .iter()
            .chain(std::iter::once(&self.agent_log))
            .chain(&self.agent_debug)
        {
            if !is_single_kernel_arg(arg) {
                return Err(ConfigError::KernelArg(arg.clone()));
            }
        }
        // The agent reads its keys in order, so a later one would win over
        // the host's.
        if let Some(arg) = self.kernel_args.iter().find(|a| a.starts_with("vc.")) {
            return Err(ConfigError::AgentKernelArg(arg.clone()));
        }
        // The kernel only ever raises its level: a second `lockdown=` would
        // be silently ignored or win, depending on the order.
        if let Some(arg) = self.kernel_args.iter().find(|a| a.starts_with("lockdown=")) {
            return Err(ConfigError::LockdownKernelArg(arg.clone()));
        }
        let kernel = self.kernel.as_deref().ok_or(ConfigError::NoKernel)?;
        check_file("kernel", kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        let accel = choose_accel(self.accel, host)?;
        let vsock = choose_vsock(self.vsock, host)?;

        let qemu = tools.resolve(QEMU, self.binaries.qemu.as_deref())?;
        let vhost_device_vsock = match vsock {
            VsockKind::Hybrid => Some(tools.resolve(
                VHOST_DEVICE_VSOCK,
                self.binaries.vhost_device_vsock.as_deref(),
            )?),
            VsockKind::Kernel => None,
        };
        // Only needed with a shared directory, which is part of the launch
        // spec: a configured path must be valid, a missing one is reported by
        // launch when a share is asked for.
        let virtiofsd = match self.binaries.virtiofsd.as_deref() {
            Some(path) => Some(tools.resolve(VIRTIOFSD, Some(path))?),
            None => tools.resolve(VIRTIOFSD, None).ok(),
        };

        Ok(VmSettings {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            machine: self.machine,
            accel,
            vsock,
            kernel: kernel.to_path_buf(),
            initrd: self.initrd.clone(),
            kernel_args: self.kernel_args.clone(),
            agent_port: self.agent_port,
            agent_log: self.agent_log.clone(),
            agent_debug: self.agent_debug.clone(),
            virtiofs_cache: self.virtiofs_cache,
            virtiofs_sandbox: self.virtiofs_sandbox,
            qemu,
            vhost_device_vsock,
            virtiofsd,
            tsc_khz: host.tsc_khz,
            console_log: tools.resolve(CONSOLE_LOG, self.binaries.console_log.as_deref())?,
            console_max_bytes: self.console_max_bytes,
            tcg_tb_size_mib: self.tcg_tb_size_mib,
            free_page_reporting: self.free_page_reporting,
            guest_lockdown: self.guest_lockdown,
        })
    }
}

fn is_single_kernel_arg(arg: &str) -> bool {
    !arg.is_empty() && !arg.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::ImageFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(ConfigError::ImageFile {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        })
    }
}

/// Settings of a VM that is never started, for unit tests.
#[cfg(test)]
pub(crate) fn test_settings() -> VmSettings {
    VmSettings {
        vcpus: 1,
        memory_mib: 256,
        machine: Machine::Microvm,
        accel: Accel::Tcg,
        vsock: VsockKind::Hybrid,
        kernel: "/nonexistent/vmlinuz".into(),
        initrd: None,
        kernel_args: Vec::new(),
        agent_port: 1024,
        agent_log: "info".to_owned(),
        agent_debug: Vec::new(),
        virtiofs_cache: VirtiofsCache::Auto,
        virtiofs_sandbox: VirtiofsSandbox::Namespace,
        // Never started: the paths do not exist.
        qemu: "/nonexistent/qemu".into(),
        vhost_device_vsock: Some("/nonexistent/vhost-device-vsock".into()),
        virtiofsd: Some("/nonexistent/virtiofsd".into()),
        tsc_khz: None,
        console_log: "/nonexistent/vc-console-log".into(),
        console_max_bytes: 4 << 20,
        tcg_tb_size_mib: 32,
        free_page_reporting: true,
        guest_lockdown: GuestLockdown::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        dir: tempfile::TempDir,
        tools: ToolSearch,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        for name in [QEMU, VHOST_DEVICE_VSOCK, VIRTIOFSD, CONSOLE_LOG] {
            let p = bin.join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("fake tool");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(dir.path().join("vmlinuz"), b"k").expect("kernel");
        std::fs::write(dir.path().join("initrd.img"), b"i").expect("initrd");
        let tools = ToolSearch::new(vec![bin], None);
        Fixture { dir, tools }
    }

    fn tcg_host() -> HostFacts {
        HostFacts {
            kvm_read_write: false,
            cpu_virt_flags: false,
            vhost_vsock: false,
            tsc_khz: Some(2_600_000),
        }
    }

    fn config(f: &Fixture) -> VmConfig {
        VmConfig {
            kernel: Some(f.dir.path().join("vmlinuz")),
            initrd: Some(f.dir.path().join("initrd.img")),
            ..VmConfig::default()
        }
    }

    #[test]
    fn empty_document_gives_the_defaults() {
        let from_json: VmConfig = serde_json::from_str("{}").expect("json");
        let from_toml: VmConfig = toml::from_str("").expect("toml");
        assert_eq!(from_json, VmConfig::default());
        assert_eq!(from_toml, VmConfig::default());
        let d = VmConfig::default();
        assert_eq!((d.vcpus, d.memory_mib), (1, 256));
        assert_eq!(d.machine, Machine::Microvm);
        assert_eq!(d.accel, AccelChoice::Auto);
        assert_eq!(d.vsock, VsockChoice::Auto);
        assert_eq!(d.agent_port, 1024);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<VmConfig>("vcpu = 2").expect_err("typo");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<VmConfig>("[binaries]\nqemu-path = \"/q\"").expect_err("typo");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn partial_toml_keeps_other_defaults() {
        let c: VmConfig = toml::from_str(
            "vcpus = 2\nmachine = \"q35\"\naccel = \"tcg\"\nvsock = \"hybrid\"\n[binaries]\nqemu = \"/opt/qemu\"",
        )
        .expect("toml");
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.memory_mib, 256);
        assert_eq!(c.machine, Machine::Q35);
        assert_eq!(c.accel, AccelChoice::Tcg);
        assert_eq!(c.vsock, VsockChoice::Hybrid);
        assert_eq!(c.binaries.qemu, Some(PathBuf::from("/opt/qemu")));
    }

    #[test]
    fn defaults_resolve_to_tcg_and_hybrid_here() {
        let f = fixture();
        let s = config(&f)
            .validate_with(&tcg_host(), &f.tools)
            .expect("valid");
        assert_eq!(s.accel, Accel::Tcg);
        assert_eq!(s.vsock, VsockKind::Hybrid);
        assert_eq!(s.qemu, f.dir.path().join("bin").join(QEMU));
        assert!(s.vhost_device_vsock.is_some());
        assert!(s.virtiofsd.is_some());
    }

    #[test]
    fn kernel_vsock_needs_no_vsock_daemon() {
        let f = fixture();
        let host = HostFacts {
            vhost_vsock: true,
            ..tcg_host()
        };
        let s = config(&f).validate_with(&host, &f.tools).expect("valid");
        assert_eq!(s.vsock, VsockKind::Kernel);
        assert_eq!(s.vhost_device_vsock, None);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let f = fixture();
        let c = VmConfig {
            vcpus: 0,
            ..config(&f)
        };
        assert!(matches!(
            c.validate_with(&tcg_host(), &f.tools),
            Err(ConfigError::Vcpus(0))
        ));
        let c = VmConfig {
            memory_mib: 64,
            ..config(&f)
        };
        assert!(matches!(
            c.validate_with(&tcg_host(), &f.tools),
            Err(ConfigError::MemoryTooSmall(64))
        ));
        for c in [
            VmConfig {
                console_max_bytes: 1000,
                ..config(&f)
            },
            VmConfig {
                host_memory_overhead_mib: 8,
                ..config(&f)
            },
            VmConfig {
                host_pids_max: 4,
                ..config(&f)
            },
            VmConfig {
                boot_timeout_secs: 0,
                ..config(&f)
            },
            VmConfig {
                tcg_tb_size_mib: 1,
                ..config(&f)
            },
        ] {
            assert!(matches!(
                c.validate_with(&tcg_host(), &f.tools),
                Err(ConfigError::TooSmall { .. })
            ));
        }
    }

    #[test]
    fn host_limits_are_guest_memory_plus_the_overhead() {
        let c = VmConfig {
            memory_mib: 512,
            host_memory_overhead_mib: 100,
            host_pids_max: 64,
            ..VmConfig::default()
        };
        let l = c.host_limits();
        assert_eq!(l.memory_bytes, 612 << 20);
        assert_eq!(l.pids_max, 64);
        let d = VmConfig::default().host_limits();
        assert_eq!(
            d.memory_bytes,
            u64::from(256 + DEFAULT_HOST_MEMORY_OVERHEAD_MIB) << 20
        );
    }

    #[test]
    fn missing_kernel_names_the_image_command() {
        let f = fixture();
        let c = VmConfig {
            kernel: None,
            ..config(&f)
        };
        let err = c
            .validate_with(&tcg_host(), &f.tools)
            .expect_err("no kernel");
        assert!(err.to_string().contains("cargo xtask guest-image"), "{err}");
        let c = VmConfig {
            kernel: Some(f.dir.path().join("nope")),
            ..config(&f)
        };
        let err = c.validate_with(&tcg_host(), &f.tools).expect_err("no file");
        assert!(matches!(err, ConfigError::ImageFile { what: "kernel", .. }));
        assert!(err.to_string().contains("cargo xtask guest-image"), "{err}");
        let c = VmConfig {
            initrd: Some(f.dir.path().to_path_buf()),
            ..config(&f)
        };
        let err = c.validate_with(&tcg_host(), &f.tools).expect_err("a dir");
        assert!(matches!(err, ConfigError::ImageFile { what: "initrd", .. }));
    }

    #[test]
    fn missing_binary_names_the_deps_command() {
        let f = fixture();
        let empty = ToolSearch::new(vec![], Some(f.dir.path().join("cache-bin")));
        let err = config(&f)
            .validate_with(&tcg_host(), &empty)
            .expect_err("no qemu");
        assert!(
            matches!(
                err,
                ConfigError::Tool(ToolError::BinaryNotFound { name: QEMU, .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("cargo xtask deps"), "{err}");
        assert!(err.to_string().contains("cache-bin"), "{err}");

        let mut c = config(&f);
        c.binaries.vhost_device_vsock = Some(f.dir.path().join("vmlinuz"));
        let err = c
            .validate_with(&tcg_host(), &f.tools)
            .expect_err("not executable");
        assert!(matches!(
            err,
            ConfigError::Tool(ToolError::BinaryPath {
                name: VHOST_DEVICE_VSOCK,
                ..
            })
        ));
    }

    #[test]
    fn virtiofsd_is_optional_until_a_share_is_asked_for() {
        let f = fixture();
        std::fs::remove_file(f.dir.path().join("bin").join(VIRTIOFSD)).expect("rm");
        let s = config(&f)
            .validate_with(&tcg_host(), &f.tools)
            .expect("valid");
        assert_eq!(s.virtiofsd, None);
    }

    #[test]
    fn kernel_args_must_be_single_tokens() {
        let f = fixture();
        for bad in ["", "a b", "x\ny"] {
            let c = VmConfig {
                kernel_args: vec![bad.to_owned()],
                ..config(&f)
            };
            assert!(matches!(
                c.validate_with(&tcg_host(), &f.tools),
                Err(ConfigError::KernelArg(_))
            ));
        }
        let c = VmConfig {
            agent_log: "debug info".to_owned(),
            ..config(&f)
        };
        assert!(c.validate_with(&tcg_host(), &f.tools).is_err());
    }

    #[test]
    fn lockdown_is_a_field_not_a_kernel_arg() {
        let config = VmConfig {
            kernel_args: vec!["lockdown=none".to_owned()],
            ..VmConfig::default()
        };
        match config.validate() {
            Err(ConfigError::LockdownKernelArg(arg)) => assert_eq!(arg, "lockdown=none"),
            other => panic!("expected LockdownKernelArg, got {other:?}"),
        }
        assert_eq!(
            VmConfig::default().guest_lockdown,
            GuestLockdown::Confidentiality
        );
        let parsed: VmConfig =
            serde_json::from_str(r#"{"guest_lockdown": "none"}"#).expect("parses");
        assert_eq!(parsed.guest_lockdown.kernel_arg(), None);
        assert!(serde_json::from_str::<VmConfig>(r#"{"guest_lockdown": "full"}"#).is_err());
    }

    #[test]
    fn kernel_args_cannot_override_the_agent_settings() {
        // Caught by the `config` fuzz target: `vc.port=5` after the host's
        // `vc.port=1024` made the agent listen where the host never connects.
        let f = fixture();
        for bad in ["vc.port=5", "vc.log=trace", "vc.debug=requests", "vc.other"] {
            let c = VmConfig {
                kernel_args: vec!["quiet".to_owned(), bad.to_owned()],
                ..config(&f)
            };
            match c.validate_with(&tcg_host(), &f.tools) {
                Err(ConfigError::AgentKernelArg(arg)) => assert_eq!(arg, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let c = VmConfig {
            kernel_args: vec!["vcpu_hint=1".to_owned()],
            ..config(&f)
        };
        c.validate_with(&tcg_host(), &f.tools)
            .expect("not an agent key");
    }

    #[test]
    fn forced_choices_are_checked() {
        let f = fixture();
        let c = VmConfig {
            accel: AccelChoice::Kvm,
            ..config(&f)
        };
        assert!(matches!(
            c.validate_with(&tcg_host(), &f.tools),
            Err(ConfigError::Host(HostError::KvmUnavailable))
        ));
        let c = VmConfig {
            vsock: VsockChoice::Kernel,
            ..config(&f)
        };
        assert!(matches!(
            c.validate_with(&tcg_host(), &f.tools),
            Err(ConfigError::Host(HostError::KernelVsockUnavailable))
        ));
    }
}
