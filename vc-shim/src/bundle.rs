//! An OCI bundle as the shim uses it, through `vc_host::oci`: the
//! container's configuration, the pod's settings, and the task's role in its
//! pod. Every field of `config.json` is mapped or refused by name there.

use std::path::{Path, PathBuf};

use vc_host::config::{ContainerConfig, PodConfig, ResourcesConfig};
use vc_host::hypervisor::VmConfig;
use vc_host::id::{ContainerId, PodId};
use vc_host::oci::{self, OciError, OciOptions, OciPod, PodRole};
use vc_host::runtime::ProcessConfig;

use crate::group::Role;

/// What a bundle gives the shim.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The container.
    pub container: ContainerConfig,
    /// Its role in its pod.
    pub role: Role,
    /// The pod's settings the spec names.
    pub pod: OciPod,
}

impl Bundle {
    /// The pod's configuration: the shim's VM settings, sized by the
    /// spec's annotations, with the spec's netns, hostname and annotations.
    pub fn pod_config(&self, id: PodId, vm: VmConfig) -> Result<PodConfig, BundleError> {
        Ok(self.pod.pod_config(id, vm)?)
    }
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The spec cannot be read or mapped (the error names the field).
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A process or resources document from containerd is invalid.
    #[error("the {what} containerd sent is not valid OCI JSON")]
    Document {
        /// `process` or `resources`.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<PodRole> for Role {
    fn from(r: PodRole) -> Self {
        match r {
            PodRole::Standalone => Role::Standalone,
            PodRole::Sandbox => Role::Sandbox,
            PodRole::Container { sandbox_id } => Role::Container { sandbox_id },
        }
    }
}

/// The role of the bundle's task in its pod (what `start` needs).
pub fn role(bundle: &Path) -> Result<Role, BundleError> {
    let spec = oci::load_spec(bundle)?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    Ok(oci::pod_role(&annotations)?.into())
}

/// Where the spec puts the root filesystem: `root.path`, relative to the
/// bundle unless absolute.
pub fn spec_rootfs(bundle: &Path) -> Result<PathBuf, BundleError> {
    let spec = oci::load_spec(bundle)?;
    let path = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    Ok(if path.as_os_str().is_empty() {
        bundle.join("rootfs")
    } else {
        bundle.join(path)
    })
}

/// Reads the bundle: the container (with its root filesystem at `rootfs`),
/// its role and the pod's settings.
pub fn load(id: ContainerId, bundle: &Path, rootfs: &Path) -> Result<Bundle, BundleError> {
    let spec = oci::load_spec(bundle)?;
    let mapped = oci::container_from_spec(id, bundle, &spec, &OciOptions::default())?;
    let mut container = mapped.container;
    container.rootfs = rootfs.to_path_buf();
    Ok(Bundle {
        container,
        role: mapped.role.into(),
        pod: mapped.pod,
    })
}

/// An exec's OCI process (the JSON in `ExecProcessRequest.spec`).
pub fn exec_process(json: &[u8]) -> Result<ProcessConfig, BundleError> {
    Ok(oci::process_from_oci(&document("process", json)?)?)
}

/// New limits (the JSON in `UpdateTaskRequest.resources`).
pub fn resources(json: &[u8]) -> Result<ResourcesConfig, BundleError> {
    let r: oci_spec::runtime::LinuxResources = document("resources", json)?;
    Ok(oci::resources_from_oci(&r)?)
}

/// A JSON document containerd sent (typeurl-encoded OCI types are JSON).
fn document<T: serde::de::DeserializeOwned>(
    what: &'static str,
    json: &[u8],
) -> Result<T, BundleError> {
    serde_json::from_slice(json).map_err(|source| BundleError::Document { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_and_update_documents_are_read() {
        let p = exec_process(
            br#"{"args":["sh","-c","true"],"cwd":"/tmp","user":{"uid":1,"gid":2},"env":["A=1"]}"#,
        )
        .expect("process");
        assert_eq!(p.args, ["sh", "-c", "true"]);
        assert_eq!(p.cwd.as_deref(), Some("/tmp"));
        let r =
            resources(br#"{"memory":{"limit":67108864},"pids":{"limit":10}}"#).expect("resources");
        assert_eq!(r.memory_limit_bytes, Some(64 << 20));
        assert_eq!(r.pids_limit, Some(10));
        let e = exec_process(b"not json").expect_err("refused");
        assert!(e.to_string().contains("process"), "{e}");
    }
}
