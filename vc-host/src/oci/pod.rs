//! The pod a spec belongs to: its role from containerd's CRI annotations
//! (`io.kubernetes.cri.container-type`, `io.kubernetes.cri.sandbox-id`), and
//! the pod settings a spec names (network namespace, hostname, annotations,
//! the VM size annotations `io.vc.pod.vcpus` and `io.vc.pod.memory_mib`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::OciError;
use crate::config::{DnsConfig, PodConfig};
use crate::hypervisor::config::{MAX_VCPUS, MIN_MEMORY_MIB};
use crate::hypervisor::VmConfig;
use crate::id::PodId;

/// CRI: `sandbox` or `container`.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI: the id of the sandbox a container belongs to (and a sandbox's own).
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod VM's vCPUs, overriding the configured default (1..=255).
pub const ANNOTATION_VCPUS: &str = "io.vc.pod.vcpus";
/// The pod VM's memory in MiB, overriding the configured default
/// (128..=1048576).
pub const ANNOTATION_MEMORY_MIB: &str = "io.vc.pod.memory_mib";

/// The most memory an annotation may ask for: 1 TiB.
const MAX_MEMORY_MIB: u32 = 1 << 20;

/// Which pod a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// No CRI annotations (`ctr run`): a pod of its own.
    Standalone,
    /// A CRI sandbox: it makes the pod; its id is the pod's.
    Sandbox,
    /// A CRI container of the pod made by the sandbox `sandbox_id`.
    Container {
        /// The sandbox's id.
        sandbox_id: String,
    },
}

/// The role the annotations give. A type without a sandbox id, a sandbox id
/// without a type, an unknown type, or an empty id are refused.
pub fn pod_role(annotations: &HashMap<String, String>) -> Result<PodRole, OciError> {
    let field = |name: &str| format!("annotations.{name:?}");
    let typ = annotations.get(ANNOTATION_CONTAINER_TYPE);
    let sandbox = annotations.get(ANNOTATION_SANDBOX_ID);
    match (typ.map(String::as_str), sandbox) {
        (None, None) => Ok(PodRole::Standalone),
        (_, Some(id)) if id.is_empty() => Err(OciError::invalid(
            field(ANNOTATION_SANDBOX_ID),
            "the sandbox id is empty",
        )),
        (Some("sandbox"), Some(_)) => Ok(PodRole::Sandbox),
        (Some("container"), Some(id)) => Ok(PodRole::Container {
            sandbox_id: id.clone(),
        }),
        (Some(other), Some(_)) => Err(OciError::invalid(
            field(ANNOTATION_CONTAINER_TYPE),
            format!("{other:?} is neither \"sandbox\" nor \"container\""),
        )),
        (Some(_), None) => Err(OciError::missing(field(ANNOTATION_SANDBOX_ID))),
        (None, Some(_)) => Err(OciError::missing(field(ANNOTATION_CONTAINER_TYPE))),
    }
}

/// The pod settings a spec names. For a [`PodRole::Container`] the pod exists
/// already (its sandbox made it): `netns` is `None` (the spec names the
/// sandbox's namespace through `/proc`), and the rest is informative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciPod {
    /// The network namespace whose interfaces the VM gets
    /// (`linux.namespaces` `network` with a path).
    pub netns: Option<PathBuf>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `annotations`, kept with the pod.
    pub annotations: BTreeMap<String, String>,
}

impl OciPod {
    /// The pod's configuration: `vm` (the caller's defaults) with the size the
    /// annotations ask for, the netns, hostname and annotations. DNS comes
    /// from the spec's `/etc/resolv.conf` bind, if any, so it is left empty.
    pub fn pod_config(&self, id: PodId, mut vm: VmConfig) -> Result<PodConfig, OciError> {
        if let Some(v) = self.number(ANNOTATION_VCPUS, 1, MAX_VCPUS)? {
            vm.vcpus = v;
        }
        if let Some(m) = self.number(ANNOTATION_MEMORY_MIB, MIN_MEMORY_MIB, MAX_MEMORY_MIB)? {
            vm.memory_mib = m;
        }
        Ok(PodConfig {
            id,
            hostname: self.hostname.clone(),
            vm,
            netns: self.netns.clone(),
            dns: DnsConfig::default(),
            containers: Vec::new(),
            annotations: self.annotations.clone(),
        })
    }

    /// Checks the VM size annotations.
    pub(super) fn check(&self) -> Result<(), OciError> {
        self.number(ANNOTATION_VCPUS, 1, MAX_VCPUS)?;
        self.number(ANNOTATION_MEMORY_MIB, MIN_MEMORY_MIB, MAX_MEMORY_MIB)?;
        Ok(())
    }

    fn number(&self, key: &str, min: u32, max: u32) -> Result<Option<u32>, OciError> {
        let Some(text) = self.annotations.get(key) else {
            return Ok(None);
        };
        match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(OciError::invalid(
                format!("annotations.{key:?}"),
                format!("{text:?} is not a whole number in {min}..={max}"),
            )),
        }
    }
}
