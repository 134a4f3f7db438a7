//! Which pod a containerd task belongs to, and the vc ids it gets.
//!
//! containerd's CRI plugin marks every bundle with
//! `io.kubernetes.cri.container-type` (`sandbox` or `container`) and
//! `io.kubernetes.cri.sandbox-id` (read by `vc_host::oci::pod_role`). A sandbox and its containers form one
//! group, served by one shim process that runs one vc pod; the group's id is
//! the sandbox id. A bundle without the annotations (a plain `ctr run`) is a
//! group, and a pod, of its own: its id is the container's.
//!
//! containerd allows ids of up to 76 characters from `[A-Za-z0-9._-]`; vc
//! allows 64 from the same set. An id that fits is used as it is; a longer
//! one is mapped deterministically to its first 47 characters, `-`, and the
//! first 16 hex digits of its SHA-256, so that every process computing it
//! (the serving shim, a later `delete`) finds the same pod.

use sha2::{Digest, Sha256};
use vc_host::id::{ContainerId, IdError, PodId, MAX_ID_LEN};

/// The length of the hash suffix of a mapped id.
const HASH_HEX: usize = 16;

/// What a bundle is to its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A plain container (`ctr run`): a pod of its own.
    Standalone,
    /// A CRI sandbox: it makes the pod.
    Sandbox,
    /// A CRI container, in the pod of the sandbox named.
    Container {
        /// The sandbox's containerd id.
        sandbox_id: String,
    },
}

/// Why a bundle's grouping cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    /// An id is not valid even after mapping.
    #[error("containerd id {id:?} cannot be a vc id")]
    Id {
        /// The containerd id.
        id: String,
        /// Why.
        #[source]
        source: IdError,
    },
}

impl Role {
    /// The group (the shim process, the pod) a task of this role belongs
    /// to, given the task's containerd id.
    pub fn group<'a>(&'a self, id: &'a str) -> &'a str {
        match self {
            Role::Standalone | Role::Sandbox => id,
            Role::Container { sandbox_id } => sandbox_id,
        }
    }

    /// Whether a task of this role makes (and owns) the pod.
    pub fn owns_pod(&self) -> bool {
        !matches!(self, Role::Container { .. })
    }
}

/// A containerd id as a vc id: itself when it fits, else mapped (see the
/// module documentation).
pub fn map_id(id: &str) -> String {
    if id.len() <= MAX_ID_LEN {
        return id.to_owned();
    }
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest
        .iter()
        .take(HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    // containerd ids are ASCII; `get` keeps this total on anything else.
    let keep = MAX_ID_LEN - HASH_HEX - 1;
    let prefix = id.get(..keep).unwrap_or("x");
    format!("{prefix}-{hex}")
}

/// The vc pod id of a group.
pub fn pod_id(group: &str) -> Result<PodId, GroupError> {
    PodId::new(map_id(group)).map_err(|source| GroupError::Id {
        id: group.to_owned(),
        source,
    })
}

/// The vc container id of a containerd task.
pub fn container_id(id: &str) -> Result<ContainerId, GroupError> {
    ContainerId::new(map_id(id)).map_err(|source| GroupError::Id {
        id: id.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bundles_are_pods_of_their_own() {
        let role = Role::Standalone;
        assert_eq!(role.group("t1"), "t1");
        assert!(role.owns_pod());
    }

    #[test]
    fn cri_sandboxes_and_containers_share_the_sandbox_group() {
        assert_eq!(Role::Sandbox.group("sb1"), "sb1");
        assert!(Role::Sandbox.owns_pod());
        let c = Role::Container {
            sandbox_id: "sb1".into(),
        };
        assert_eq!(c.group("c1"), "sb1");
        assert!(!c.owns_pod());
    }

    #[test]
    fn short_ids_are_kept_and_long_ids_mapped_deterministically() {
        let short = "a".repeat(64);
        assert_eq!(map_id(&short), short);
        let long = format!("{}x", "a".repeat(75));
        let other = format!("{}y", "a".repeat(75));
        let mapped = map_id(&long);
        assert_eq!(mapped.len(), 64);
        assert_eq!(mapped, map_id(&long), "deterministic");
        assert_ne!(mapped, map_id(&other), "distinct ids stay distinct");
        assert!(mapped.starts_with(&"a".repeat(47)));
        assert!(container_id(&long).is_ok());
        assert!(pod_id(&long).is_ok());
    }

    #[test]
    fn ids_vc_refuses_are_named() {
        let e = container_id("a/b").expect_err("slash");
        assert!(e.to_string().contains("a/b"), "{e}");
    }
}
