//! Configuration as data: what a caller asks for, as serde types readable from
//! TOML or JSON, with defaults that work. Unknown fields are refused, so a typo
//! is an error instead of a silently ignored setting.
//!
//! A caller who gives only a root filesystem and a command gets a running
//! container:
//!
//! ```
//! let c: vc_host::config::ContainerConfig =
//!     toml::from_str(r#"id = "c1"
//! rootfs = "/srv/busybox"
//! command = ["/bin/sh", "-c", "echo hello"]"#).unwrap();
//! assert_eq!(c.cwd, "/");
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;
pub use vc_proto::{Seccomp, SeccompProfile};

use crate::hypervisor::{HypervisorKind, VmConfig};
use crate::id::{ContainerId, PodId};
use crate::storage::{ContainerStorage, StorageConfigError};
pub use crate::storage::{DiskConfig, TmpfsConfig, VolumeConfig};

/// The `PATH` a container gets when its environment names none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the library keeps state and finds its guest image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Runtime root: one directory per pod. Default `/run/vc`, or `$VC_ROOT`.
    pub root: PathBuf,
    /// Directory holding `vmlinuz`, `initrd.img` and `manifest.json` (made by
    /// `cargo xtask guest-image`, installed by `cargo xtask install`). Default
    /// `$VC_GUEST_IMAGE_DIR`, else the first of
    /// `<program's directory>/../share/vc/guest-image`,
    /// `/usr/local/share/vc/guest-image` and `/usr/share/vc/guest-image` that
    /// holds an image ([`crate::host_defaults::image_search_dirs`]).
    pub guest_image_dir: PathBuf,
    /// The hypervisor backend pods' VMs are launched with. Default (and the
    /// only one so far) `qemu`.
    pub hypervisor: HypervisorKind,
    /// The unprivileged host user that QEMU and the vsock daemon run as
    /// (`cargo xtask deps` creates the default, `vc-vmm`).
    pub vmm_user: String,
    /// The host cgroup each pod's QEMU and helpers run in.
    pub host_cgroup: HostCgroupConfig,
    /// How many VMs may boot at once on this host, among every process that
    /// uses this root (see `docs/reliability.md`). Default: the host's CPU
    /// count.
    pub boot_width: u32,
}

/// Where pods' host cgroups go (their limits are in
/// [`VmConfig`]: `host_memory_overhead_mib`,
/// `host_pids_max`). See `docs/hypervisor.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostCgroupConfig {
    /// Put each pod's host processes in a cgroup of their own with memory
    /// and pids limits. Default true; false leaves them in the caller's
    /// cgroups without limits.
    pub enabled: bool,
    /// Parent of the pods' cgroups. Absolute: from the hierarchy's root.
    /// Relative (the default, `vc`): on cgroup v1 under the cgroup of the
    /// process that starts the pod, on v2 from the root.
    pub parent: PathBuf,
}

impl Default for HostCgroupConfig {
    fn default() -> Self {
        HostCgroupConfig {
            enabled: true,
            parent: PathBuf::from("vc"),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let env_path = |key: &str| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            root: env_path("VC_ROOT").unwrap_or_else(|| PathBuf::from(crate::store::DEFAULT_ROOT)),
            guest_image_dir: crate::host_defaults::default_image_dir(),
            hypervisor: HypervisorKind::default(),
            vmm_user: crate::hypervisor::DEFAULT_VMM_USER.to_owned(),
            host_cgroup: HostCgroupConfig::default(),
            boot_width: crate::host_defaults::default_boot_width(),
        }
    }
}

/// DNS settings written to the containers' `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<std::net::IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}

/// A pod: one VM and the containers that run in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    /// The pod's id, unique on the host.
    pub id: PodId,
    /// Hostname of the VM and default hostname of its containers; default: the id.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The virtual machine.
    #[serde(default)]
    pub vm: VmConfig,
    /// A network namespace (such as `/var/run/netns/NAME`) whose interfaces the
    /// VM gets; none means the VM has no network.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// DNS for the containers.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Containers created with the pod and started with it.
    #[serde(default)]
    pub containers: Vec<ContainerConfig>,
    /// Free-form annotations kept with the pod.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl PodConfig {
    /// A pod with default settings.
    pub fn new(id: PodId) -> Self {
        Self {
            id,
            hostname: None,
            vm: VmConfig::default(),
            netns: None,
            dns: DnsConfig::default(),
            containers: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The hostname the VM gets.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(self.id.as_str())
    }

    /// Checks what can be checked before anything is created.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(h) = &self.hostname {
            validate_hostname(h)?;
        }
        if let Some(ns) = &self.netns {
            if !ns.exists() {
                return Err(ConfigError::MissingPath {
                    what: "network namespace",
                    path: ns.clone(),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.containers {
            if !seen.insert(&c.id) {
                return Err(ConfigError::DuplicateContainer(c.id.clone()));
            }
            c.validate()?;
        }
        Ok(())
    }
}

/// The user a container's processes run as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// User id (default 0).
    pub uid: u32,
    /// Group id (default 0).
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

/// cgroup limits of a container. Unset fields mean no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// CPU quota in microseconds per period.
    pub cpu_quota_us: Option<u64>,
    /// CPU period in microseconds (default 100000 when a quota is set).
    pub cpu_period_us: Option<u64>,
    /// CPU weight, 1..=10000.
    pub cpu_weight: Option<u64>,
    /// Most processes at once.
    pub pids_limit: Option<u64>,
}

impl ResourcesConfig {
    /// Checks each set limit's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(ConfigError::Invalid {
                    field: "resources.cpu_weight",
                    reason: format!("{w} is outside 1..=10000"),
                });
            }
        }
        // The ranges the guest's cgroup v2 accepts; `u64::MAX` means no limit.
        let checks: [(
            &'static str,
            Option<u64>,
            std::ops::RangeInclusive<u64>,
            bool,
        ); 4] = [
            (
                "resources.memory_limit_bytes",
                self.memory_limit_bytes,
                4096..=i64::MAX as u64,
                true,
            ),
            (
                "resources.cpu_quota_us",
                self.cpu_quota_us,
                1000..=i64::MAX as u64,
                true,
            ),
            (
                "resources.cpu_period_us",
                self.cpu_period_us,
                1000..=1_000_000,
                false,
            ),
            ("resources.pids_limit", self.pids_limit, 1..=4_194_304, true),
        ];
        for (field, value, range, unlimited) in checks {
            match value {
                None => {}
                Some(u64::MAX) if unlimited => {}
                Some(v) if range.contains(&v) => {}
                Some(v) => {
                    let max = if unlimited {
                        " (or u64::MAX for no limit)"
                    } else {
                        ""
                    };
                    return Err(ConfigError::Invalid {
                        field,
                        reason: format!("{v} is outside {}..={}{max}", range.start(), range.end()),
                    });
                }
            }
        }
        if self.cpu_period_us.is_some() && self.cpu_quota_us.is_none() {
            return Err(ConfigError::Invalid {
                field: "resources.cpu_period_us",
                reason: "a period needs a quota".to_owned(),
            });
        }
        Ok(())
    }

    /// These limits with every field that `update` sets replaced.
    pub fn merged(&self, update: &ResourcesConfig) -> ResourcesConfig {
        ResourcesConfig {
            memory_limit_bytes: update.memory_limit_bytes.or(self.memory_limit_bytes),
            cpu_quota_us: update.cpu_quota_us.or(self.cpu_quota_us),
            cpu_period_us: update.cpu_period_us.or(self.cpu_period_us),
            cpu_weight: update.cpu_weight.or(self.cpu_weight),
            pids_limit: update.pids_limit.or(self.pids_limit),
        }
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == ResourcesConfig::default()
    }
}

impl From<&ResourcesConfig> for vc_proto::Resources {
    fn from(r: &ResourcesConfig) -> Self {
        vc_proto::Resources {
            memory_limit_bytes: r.memory_limit_bytes,
            cpu_quota_us: r.cpu_quota_us,
            cpu_period_us: r.cpu_period_us,
            cpu_weight: r.cpu_weight,
            pids_limit: r.pids_limit,
        }
    }
}

/// A resource limit of a container's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlimitConfig {
    /// `nofile`, `nproc`, `core`, ...
    pub resource: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A container: a process tree in the pod's VM with its own root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// The container's id, unique in its pod.
    pub id: ContainerId,
    /// Host directory holding the root filesystem (leave it out with
    /// `rootfs_image`).
    #[serde(default)]
    pub rootfs: PathBuf,
    /// A raw ext4 image holding the root filesystem, given to the VM as a
    /// virtio-blk disk instead of sharing `rootfs` (see `docs/storage.md`).
    #[serde(default)]
    pub rootfs_image: Option<PathBuf>,
    /// Program and arguments of the main process.
    pub command: Vec<String>,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Environment as `KEY=VALUE`; a `PATH` is added when none is given.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (default `/`).
    #[serde(default = "default_cwd")]
    pub cwd: String,
    /// User and groups (default root).
    #[serde(default)]
    pub user: UserConfig,
    /// Hostname (default: the pod's).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Give the main process a terminal.
    #[serde(default)]
    pub terminal: bool,
    /// cgroup limits.
    #[serde(default)]
    pub resources: ResourcesConfig,
    /// Resource limits.
    #[serde(default)]
    pub rlimits: Vec<RlimitConfig>,
    /// Capabilities kept (such as `CAP_NET_BIND_SERVICE`); default: the usual
    /// container default set.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// Set `no_new_privs` (default true).
    #[serde(default = "default_true")]
    pub no_new_privileges: bool,
    /// Host paths mounted into the container (see `docs/storage.md`).
    #[serde(default)]
    pub volumes: Vec<VolumeConfig>,
    /// tmpfs mounts.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsConfig>,
    /// Size of `/dev/shm` in bytes (default 64 MiB).
    #[serde(default)]
    pub shm_size_bytes: Option<u64>,
    /// Raw disk images mounted in the container, as virtio-blk disks.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// The seccomp filter of every process of the container: `"default"`
    /// (Docker's and containerd's default profile, built into the agent),
    /// `"unconfined"` (none), or `{ profile = ... }` with a profile in the OCI
    /// `LinuxSeccomp` form (see `docs/containers.md`).
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Paths made unreadable in the container (OCI `linux.maskedPaths`): a
    /// file gets `/dev/null` bound over it, a directory an empty read-only
    /// tmpfs. Default: runc's and containerd's list
    /// ([`vc_proto::DEFAULT_MASKED_PATHS`]); an empty list masks nothing.
    #[serde(default = "default_masked_paths")]
    pub masked_paths: Vec<String>,
    /// Paths made read-only, recursively, in the container (OCI
    /// `linux.readonlyPaths`). Default: runc's and containerd's list
    /// ([`vc_proto::DEFAULT_READONLY_PATHS`]).
    #[serde(default = "default_readonly_paths")]
    pub readonly_paths: Vec<String>,
}

/// At most this many masked or read-only paths, each at most
/// [`MAX_GUEST_PATH_LEN`] bytes.
pub const MAX_GUEST_PATHS: usize = 256;

/// The longest masked or read-only path, in bytes (`PATH_MAX`).
pub const MAX_GUEST_PATH_LEN: usize = 4096;

fn default_masked_paths() -> Vec<String> {
    vc_proto::DEFAULT_MASKED_PATHS
        .iter()
        .map(|p| (*p).to_owned())
        .collect()
}

fn default_readonly_paths() -> Vec<String> {
    vc_proto::DEFAULT_READONLY_PATHS
        .iter()
        .map(|p| (*p).to_owned())
        .collect()
}

/// Checks masked or read-only paths: at most [`MAX_GUEST_PATHS`], each
/// absolute, normalized (no empty, `.` or `..` component, no trailing `/`), not
/// `/`, without NUL, at most [`MAX_GUEST_PATH_LEN`] bytes.
fn validate_guest_paths(field: &'static str, paths: &[String]) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { field, reason };
    if paths.len() > MAX_GUEST_PATHS {
        return Err(invalid(format!(
            "{} paths, at most {MAX_GUEST_PATHS} are allowed",
            paths.len()
        )));
    }
    for p in paths {
        let why = match p.strip_prefix('/') {
            None => Some("it is not an absolute path"),
            Some("") => Some("it is the root of the container"),
            Some(_) if p.len() > MAX_GUEST_PATH_LEN => Some("it is longer than 4096 bytes"),
            Some(_) if p.contains('\0') => Some("it contains a NUL byte"),
            Some(rest)
                if rest
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..") =>
            {
                Some("it is not normalized (empty, `.` or `..` component, or a trailing `/`)")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(invalid(format!("{p:?}: {why}")));
        }
    }
    Ok(())
}

fn default_cwd() -> String {
    "/".to_owned()
}

fn default_true() -> bool {
    true
}

impl ContainerConfig {
    /// What the storage module needs of this configuration.
    pub fn storage(&self) -> ContainerStorage<'_> {
        ContainerStorage {
            id: &self.id,
            rootfs: &self.rootfs,
            rootfs_image: self.rootfs_image.as_deref(),
            readonly_rootfs: self.readonly_rootfs,
            volumes: &self.volumes,
            tmpfs: &self.tmpfs,
            shm_size_bytes: self.shm_size_bytes,
            disks: &self.disks,
        }
    }

    /// A container with default settings running `command` on `rootfs`.
    pub fn new(id: ContainerId, rootfs: impl Into<PathBuf>, command: Vec<String>) -> Self {
        Self {
            id,
            rootfs: rootfs.into(),
            rootfs_image: None,
            command,
            readonly_rootfs: false,
            env: Vec::new(),
            cwd: default_cwd(),
            user: UserConfig::default(),
            hostname: None,
            terminal: false,
            resources: ResourcesConfig::default(),
            rlimits: Vec::new(),
            capabilities: None,
            no_new_privileges: true,
            volumes: Vec::new(),
            tmpfs: Vec::new(),
            shm_size_bytes: None,
            disks: Vec::new(),
            seccomp: Seccomp::Default,
            masked_paths: default_masked_paths(),
            readonly_paths: default_readonly_paths(),
        }
    }

    /// Checks what can be checked before anything is created.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(ConfigError::EmptyCommand(self.id.clone()));
        }
        crate::storage::validate_disks(&self.storage())?;
        if !self.cwd.starts_with('/') {
            return Err(ConfigError::Invalid {
                field: "cwd",
                reason: format!("{:?} is not an absolute path", self.cwd),
            });
        }
        if let Some(h) = &self.hostname {
            validate_hostname(h)?;
        }
        if let Some(env) = self.env.iter().find(|e| !e.contains('=')) {
            return Err(ConfigError::Invalid {
                field: "env",
                reason: format!("{env:?} is not KEY=VALUE"),
            });
        }
        self.resources.validate()?;
        crate::storage::validate(&self.volumes, &self.tmpfs, self.shm_size_bytes)?;
        if let Seccomp::Profile(p) = &self.seccomp {
            p.validate()?;
        }
        validate_guest_paths("masked_paths", &self.masked_paths)?;
        validate_guest_paths("readonly_paths", &self.readonly_paths)?;
        Ok(())
    }

    /// The main process as the agent receives it.
    pub fn process_spec(&self) -> vc_proto::ProcessSpec {
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_owned());
        }
        vc_proto::ProcessSpec {
            args: self.command.clone(),
            env,
            cwd: self.cwd.clone(),
            user: vc_proto::User {
                uid: self.user.uid,
                gid: self.user.gid,
                additional_gids: self.user.additional_gids.clone(),
            },
            terminal: self.terminal,
            rlimits: self
                .rlimits
                .iter()
                .map(|r| vc_proto::Rlimit {
                    resource: r.resource.clone(),
                    soft: r.soft,
                    hard: r.hard,
                })
                .collect(),
            capabilities: self.capabilities.clone(),
            no_new_privileges: self.no_new_privileges,
        }
    }
}

pub(crate) fn validate_hostname(h: &str) -> Result<(), ConfigError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field: "hostname",
            reason: format!("{h:?} is not a valid hostname"),
        })
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The command is empty.
    #[error("container {0} has no command")]
    EmptyCommand(ContainerId),
    /// Two containers share an id.
    #[error("container id {0} is used twice")]
    DuplicateContainer(ContainerId),
    /// A path that must exist does not.
    #[error("{what} {} does not exist", path.display())]
    MissingPath {
        /// What the path is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A field has a value that cannot work.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The seccomp profile cannot work; the source names its field.
    #[error("the container's seccomp profile is refused")]
    Seccomp(#[from] vc_proto::SeccompProfileError),
}

impl From<StorageConfigError> for ConfigError {
    fn from(e: StorageConfigError) -> Self {
        match e {
            StorageConfigError::MissingPath { what, path } => {
                ConfigError::MissingPath { what, path }
            }
            StorageConfigError::Invalid { field, reason } => ConfigError::Invalid { field, reason },
        }
    }
}

/// Reads `--seccomp`'s value: `default`, `unconfined`, or the path of a JSON
/// file holding a profile in the OCI `LinuxSeccomp` form (what
/// `linux.seccomp` holds in an OCI `config.json`). A profile is validated here.
pub fn parse_seccomp(arg: &str) -> Result<Seccomp, ConfigError> {
    match arg {
        "default" => return Ok(Seccomp::Default),
        "unconfined" => return Ok(Seccomp::Unconfined),
        _ => {}
    }
    let invalid = |reason: String| ConfigError::Invalid {
        field: "seccomp",
        reason,
    };
    let text = std::fs::read_to_string(arg)
        .map_err(|e| invalid(format!("cannot read the profile {arg}: {e}")))?;
    let profile: vc_proto::SeccompProfile = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("the profile {arg} is not an OCI LinuxSeccomp: {e}")))?;
    profile.validate()?;
    Ok(Seccomp::Profile(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_config_names_its_hypervisor_and_defaults_to_qemu() {
        let c: RuntimeConfig = toml::from_str("").expect("empty");
        assert_eq!(c.hypervisor, HypervisorKind::Qemu);
        let c: RuntimeConfig = toml::from_str("hypervisor = \"qemu\"").expect("qemu");
        assert_eq!(c.hypervisor, HypervisorKind::Qemu);
        let err = toml::from_str::<RuntimeConfig>("hypervisor = \"firecracker\"")
            .expect_err("no such backend");
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err = toml::from_str::<RuntimeConfig>("hypervisr = \"qemu\"").expect_err("typo");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn minimal_container_config_gets_working_defaults() {
        let c: ContainerConfig =
            serde_json::from_str(r#"{"id": "c1", "rootfs": "/tmp", "command": ["/bin/true"]}"#)
                .expect("parses");
        assert_eq!(
            c,
            ContainerConfig::new(
                ContainerId::new("c1").expect("id"),
                "/tmp",
                vec!["/bin/true".into()]
            )
        );
        let spec = c.process_spec();
        assert_eq!(spec.env, vec![DEFAULT_PATH.to_owned()]);
        assert!(spec.no_new_privileges);
        c.validate().expect("valid");
    }

    #[test]
    fn masked_and_readonly_paths_default_to_runc_and_can_be_changed() {
        let c: ContainerConfig =
            serde_json::from_str(r#"{"id": "c1", "rootfs": "/tmp", "command": ["x"]}"#)
                .expect("parses");
        assert!(c.masked_paths.iter().any(|p| p == "/proc/kcore"));
        assert!(c.masked_paths.iter().any(|p| p == "/sys/firmware"));
        assert_eq!(c.masked_paths.len(), vc_proto::DEFAULT_MASKED_PATHS.len());
        assert!(c.readonly_paths.iter().any(|p| p == "/proc/sys"));
        assert_eq!(
            c.readonly_paths.len(),
            vc_proto::DEFAULT_READONLY_PATHS.len()
        );
        let c: ContainerConfig = serde_json::from_str(
            r#"{"id": "c1", "rootfs": "/tmp", "command": ["x"],
                "masked_paths": [], "readonly_paths": ["/etc/ssl"]}"#,
        )
        .expect("parses");
        assert!(c.masked_paths.is_empty());
        assert_eq!(c.readonly_paths, vec!["/etc/ssl".to_owned()]);
        c.validate().expect("valid");

        for (bad, why) in [
            ("proc/kcore", "absolute"),
            ("/", "root"),
            ("/proc/../etc", "normalized"),
            ("/proc/", "normalized"),
            ("/a\0b", "NUL"),
        ] {
            let mut c = c.clone();
            c.masked_paths = vec![bad.to_owned()];
            let err = c.validate().expect_err(bad);
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
            assert!(err.to_string().contains("masked_paths"), "{err}");
        }
        let mut many = c.clone();
        many.readonly_paths = vec!["/a".to_owned(); MAX_GUEST_PATHS + 1];
        assert!(many.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<ContainerConfig>(
            r#"{"id": "c1", "rootfs": "/tmp", "command": ["x"], "comand": []}"#,
        )
        .expect_err("typo refused");
        assert!(err.to_string().contains("unknown field `comand`"), "{err}");
        assert!(toml::from_str::<PodConfig>("id = \"p\"\nnetnss = \"/x\"").is_err());
    }

    #[test]
    fn pod_config_from_toml() {
        let p: PodConfig = toml::from_str(
            "id = \"p1\"\n[[containers]]\nid = \"c\"\nrootfs = \"/tmp\"\ncommand = [\"sh\"]\n",
        )
        .expect("parses");
        assert_eq!(p.hostname(), "p1");
        assert_eq!(p.containers.len(), 1);
        p.validate().expect("valid");
    }

    #[test]
    fn validation_refuses_bad_input() {
        let id = ContainerId::new("c").expect("id");
        let mut c = ContainerConfig::new(id.clone(), "/nonexistent/rootfs", vec!["sh".into()]);
        assert!(matches!(c.validate(), Err(ConfigError::MissingPath { .. })));
        c.rootfs = "/tmp".into();
        c.command.clear();
        assert!(matches!(c.validate(), Err(ConfigError::EmptyCommand(_))));
        c.command = vec!["sh".into()];
        c.env = vec!["NOEQUALS".into()];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid { field: "env", .. })
        ));
        let mut p = PodConfig::new(PodId::new("p").expect("id"));
        c.env.clear();
        p.containers = vec![c.clone(), c];
        assert!(matches!(
            p.validate(),
            Err(ConfigError::DuplicateContainer(_))
        ));
    }

    #[test]
    fn resource_ranges_and_merge() {
        let ok = ResourcesConfig {
            memory_limit_bytes: Some(u64::MAX),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_weight: Some(100),
            pids_limit: Some(1),
        };
        ok.validate().expect("valid");
        for bad in [
            ResourcesConfig {
                memory_limit_bytes: Some(100),
                ..ResourcesConfig::default()
            },
            ResourcesConfig {
                cpu_period_us: Some(100_000),
                ..ResourcesConfig::default()
            },
            ResourcesConfig {
                cpu_period_us: Some(u64::MAX),
                cpu_quota_us: Some(1000),
                ..ResourcesConfig::default()
            },
            ResourcesConfig {
                pids_limit: Some(0),
                ..ResourcesConfig::default()
            },
            ResourcesConfig {
                cpu_weight: Some(0),
                ..ResourcesConfig::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(ConfigError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let update = ResourcesConfig {
            pids_limit: Some(8),
            ..ResourcesConfig::default()
        };
        let merged = ok.merged(&update);
        assert_eq!(merged.pids_limit, Some(8));
        assert_eq!(merged.cpu_quota_us, Some(50_000));
        assert!(ResourcesConfig::default().is_empty());
        assert!(!update.is_empty());
    }

    #[test]
    fn seccomp_is_default_unconfined_or_an_oci_profile() {
        let parse = |extra: &str| {
            serde_json::from_str::<ContainerConfig>(&format!(
                r#"{{"id": "c1", "rootfs": "/tmp", "command": ["x"]{extra}}}"#
            ))
        };
        assert_eq!(parse("").expect("parses").seccomp, Seccomp::Default);
        assert_eq!(
            parse(r#", "seccomp": "unconfined""#)
                .expect("parses")
                .seccomp,
            Seccomp::Unconfined
        );
        let c = parse(
            r#", "seccomp": {"profile": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                              "errnoRet": 95}]}}"#,
        )
        .expect("parses");
        c.validate().expect("valid");
        let Seccomp::Profile(p) = &c.seccomp else {
            panic!("{:?}", c.seccomp)
        };
        assert_eq!(p.syscalls[0].errno_ret, Some(95));

        let toml_config: ContainerConfig = toml::from_str(
            "id = \"c1\"\nrootfs = \"/tmp\"\ncommand = [\"x\"]\n\
             [seccomp.profile]\ndefaultAction = \"SCMP_ACT_LOG\"\n",
        )
        .expect("TOML parses");
        assert!(matches!(toml_config.seccomp, Seccomp::Profile(_)));

        let unknown = parse(r#", "seccomp": {"profile": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}}"#)
            .expect_err("no listener");
        assert!(unknown.to_string().contains("listenerPath"), "{unknown}");
        let bad_action = parse(r#", "seccomp": {"profile": {"defaultAction": "SCMP_ACT_MAYBE"}}"#)
            .expect_err("unknown action");
        assert!(
            bad_action.to_string().contains("SCMP_ACT_MAYBE"),
            "{bad_action}"
        );

        let refused = parse(
            r#", "seccomp": {"profile": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}}"#,
        )
        .expect("parses")
        .validate()
        .expect_err("index 9");
        match &refused {
            ConfigError::Seccomp(e) => assert_eq!(e.field, "syscalls[0].args[0].index"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seccomp_flag_values() {
        assert_eq!(parse_seccomp("default").expect("keyword"), Seccomp::Default);
        assert_eq!(
            parse_seccomp("unconfined").expect("keyword"),
            Seccomp::Unconfined
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .expect("write");
        assert!(matches!(
            parse_seccomp(good.to_str().expect("utf-8")).expect("valid"),
            Seccomp::Profile(_)
        ));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).expect("write");
        let err = parse_seccomp(bad.to_str().expect("utf-8")).expect_err("notify");
        assert!(
            matches!(&err, ConfigError::Seccomp(e) if e.field == "defaultAction"),
            "{err:?}"
        );
        let missing = parse_seccomp("/no/such/profile.json").expect_err("missing");
        assert!(
            missing.to_string().contains("/no/such/profile.json"),
            "{missing}"
        );
    }
}
