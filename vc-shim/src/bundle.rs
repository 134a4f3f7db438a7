//! An OCI bundle as vc sees it: the container's configuration, the pod's
//! settings, and the task's role in its pod.
//!
//! This is a stopgap reading a few fields of `config.json` until
//! `vc_host::oci` lands (see /work/helpers/contracts.md); it then becomes a
//! thin wrapper over that module, which maps (or refuses by name) every field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vc_host::config::{ContainerConfig, ResourcesConfig, UserConfig};
use vc_host::id::ContainerId;
use vc_host::runtime::ProcessConfig;

use crate::group::{GroupError, Role};

/// The largest `config.json` read.
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// What a bundle gives the shim.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The container.
    pub container: ContainerConfig,
    /// Its role in its pod.
    pub role: Role,
    /// The pod's network namespace (`linux.namespaces` of type network).
    pub netns: Option<PathBuf>,
    /// The pod's hostname.
    pub hostname: Option<String>,
    /// The bundle's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// `config.json` cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is too large.
    #[error("{} is larger than {MAX_SPEC_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// `config.json` is not an OCI runtime spec.
    #[error("{} is not a valid OCI runtime spec", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A process or resources document from containerd is invalid.
    #[error("the {what} containerd sent is not valid OCI JSON")]
    Document {
        /// `process` or `resources`.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The spec has no process.
    #[error("the spec has no process")]
    NoProcess,
    /// The grouping annotations are wrong.
    #[error(transparent)]
    Group(#[from] GroupError),
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    process: Option<OciProcess>,
    #[serde(default)]
    root: Option<Root>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciProcess {
    #[serde(default)]
    terminal: bool,
    #[serde(default)]
    user: OciUser,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    cwd: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciUser {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Root {
    #[serde(default)]
    path: PathBuf,
    #[serde(default)]
    readonly: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
    #[serde(default)]
    resources: Option<OciResources>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciResources {
    #[serde(default)]
    memory: Option<Memory>,
    #[serde(default)]
    cpu: Option<Cpu>,
    #[serde(default)]
    pids: Option<Pids>,
}

#[derive(Debug, Deserialize, Default)]
struct Memory {
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
struct Cpu {
    #[serde(default)]
    shares: Option<u64>,
    #[serde(default)]
    quota: Option<i64>,
    #[serde(default)]
    period: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
struct Pids {
    #[serde(default)]
    limit: i64,
}

fn read_spec(bundle: &Path) -> Result<Spec, BundleError> {
    use std::io::Read;
    let path = bundle.join("config.json");
    let read_err = |source| BundleError::Read {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(read_err)?;
    let mut text = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(BundleError::TooLarge { path });
    }
    serde_json::from_slice(&text).map_err(|source| BundleError::Parse { path, source })
}

/// The role of the bundle's task in its pod (what `start` needs).
pub fn role(bundle: &Path) -> Result<Role, BundleError> {
    Ok(Role::from_annotations(&read_spec(bundle)?.annotations)?)
}

/// Where the spec puts the root filesystem: `root.path`, relative to the
/// bundle unless absolute.
pub fn spec_rootfs(bundle: &Path) -> Result<PathBuf, BundleError> {
    let spec = read_spec(bundle)?;
    let path = spec.root.map(|r| r.path).unwrap_or_default();
    Ok(if path.as_os_str().is_empty() {
        bundle.join("rootfs")
    } else {
        bundle.join(path)
    })
}

/// Reads the bundle: the container (with its root filesystem at `rootfs`),
/// its role and the pod's settings.
pub fn load(id: ContainerId, bundle: &Path, rootfs: &Path) -> Result<Bundle, BundleError> {
    let spec = read_spec(bundle)?;
    let role = Role::from_annotations(&spec.annotations)?;
    let process = spec.process.ok_or(BundleError::NoProcess)?;
    let mut container = ContainerConfig::new(id, rootfs, process.args);
    container.env = process.env;
    if !process.cwd.is_empty() {
        container.cwd = process.cwd;
    }
    container.user = UserConfig {
        uid: process.user.uid,
        gid: process.user.gid,
        additional_gids: process.user.additional_gids,
    };
    container.terminal = process.terminal;
    container.readonly_rootfs = spec.root.is_some_and(|r| r.readonly);
    container.hostname = spec.hostname.clone().filter(|h| !h.is_empty());
    let linux = spec.linux.unwrap_or_default();
    if let Some(r) = linux.resources {
        container.resources = map_resources(r);
    }
    let netns = linux
        .namespaces
        .into_iter()
        .find(|n| n.kind == "network")
        .and_then(|n| n.path)
        .filter(|p| !p.as_os_str().is_empty());
    Ok(Bundle {
        container,
        role,
        netns,
        hostname: spec.hostname.filter(|h| !h.is_empty()),
        annotations: spec.annotations.into_iter().collect(),
    })
}

fn map_resources(r: OciResources) -> ResourcesConfig {
    let positive = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0);
    ResourcesConfig {
        memory_limit_bytes: positive(r.memory.and_then(|m| m.limit)),
        cpu_quota_us: positive(r.cpu.as_ref().and_then(|c| c.quota)),
        cpu_period_us: r.cpu.as_ref().and_then(|c| c.period).filter(|p| *p > 0),
        // cgroup v1 shares (2..=262144) to v2 weight (1..=10000), as runc does.
        cpu_weight: r
            .cpu
            .as_ref()
            .and_then(|c| c.shares)
            .filter(|s| *s > 0)
            .map(|s| 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142),
        pids_limit: positive(r.pids.map(|p| p.limit)),
    }
}

/// An exec's OCI process (the JSON in `ExecProcessRequest.spec`).
pub fn exec_process(json: &[u8]) -> Result<ProcessConfig, BundleError> {
    let p: OciProcess = serde_json::from_slice(json).map_err(|source| BundleError::Document {
        what: "process",
        source,
    })?;
    Ok(ProcessConfig {
        args: p.args,
        env: p.env,
        cwd: Some(p.cwd).filter(|c| !c.is_empty()),
        user: Some(UserConfig {
            uid: p.user.uid,
            gid: p.user.gid,
            additional_gids: p.user.additional_gids,
        }),
        terminal: p.terminal,
        stdin: false,
    })
}

/// New limits (the JSON in `UpdateTaskRequest.resources`).
pub fn resources(json: &[u8]) -> Result<ResourcesConfig, BundleError> {
    let r: OciResources = serde_json::from_slice(json).map_err(|source| BundleError::Document {
        what: "resources",
        source,
    })?;
    Ok(map_resources(r))
}
