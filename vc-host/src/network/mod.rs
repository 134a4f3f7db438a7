//! Host side of pod networking: the pod's network namespace mirrored into the
//! VM (the tc-mirroring model, Kata's default).
//!
//! For each interface of the namespace that carries Ethernet (loopback and the
//! taps made here are skipped), [`setup`] reads its MAC, MTU and addresses, and
//! the namespace's routes and permanent neighbours; creates a persistent tap in
//! the namespace (`vctap<N>`, a queue of which the launcher opens and hands to
//! QEMU); and adds an ingress
//! qdisc with a u32 `mirred egress redirect` filter on each of the interface
//! and the tap, so every frame that arrives on one leaves through the other.
//! The interface keeps its MAC and addresses in the namespace: its ingress is
//! stolen by the filter, so the namespace's own stack never sees the guest's
//! traffic, and the namespace looks to its creator (a CNI plugin, a test) as
//! it left it. The guest interface gets the same MAC, MTU and addresses.
//!
//! Everything runs inside the namespace, on a dedicated thread that enters it
//! with `setns(2)` and drives rtnetlink on a current-thread runtime
//! (module `netns`). [`teardown`] removes the taps and the interfaces' ingress
//! qdiscs (their filters go with them), leaving the namespace as it was found.
//! A failed [`setup`] undoes what it did before returning.
//!
//! A running pod's namespace may change: [`rescan`] reads it again and
//! compares it with what is mirrored ([`NetworkChange`], module `change`);
//! [`mirror_added`] mirrors one new interface and [`unmirror`] undoes the
//! mirroring of interfaces that went away, each leaving nothing behind on
//! failure.

mod change;
mod mac;
mod mirror;
mod netns;
mod plan;
mod scan;
mod tap;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vc_proto::{Interface, Neighbour, Route};

pub use change::{AddedLink, NetworkChange};
pub use mac::{MacAddr, MacAddrError};
pub use plan::{tap_name, TAP_PREFIX};
pub use tap::open_queues as open_tap_queues;

/// Why the pod's network could not be mirrored or cleaned up.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The namespace path cannot be opened.
    #[error("cannot open the network namespace {}", path.display())]
    OpenNetns {
        /// The namespace path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: std::io::Error,
    },
    /// The namespace is the one this process runs in.
    #[error("{} is the host's own network namespace; mirroring it would take the host's interfaces away", path.display())]
    HostNamespace {
        /// The namespace path.
        path: PathBuf,
    },
    /// `setns(2)` into the namespace failed.
    #[error("cannot enter the network namespace {}", path.display())]
    EnterNetns {
        /// The namespace path.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The thread that works in the namespace could not start or died.
    #[error("the network namespace worker thread failed")]
    Worker(#[source] std::io::Error),
    /// A netlink connection or request failed.
    #[error(transparent)]
    Netlink(#[from] vc_netlink::NetlinkError),
    /// An interface has no Ethernet address.
    #[error("interface {interface} has no MAC address and cannot be mirrored")]
    NoMac {
        /// The interface.
        interface: String,
    },
    /// An interface already has an ingress qdisc (someone else's tc setup).
    #[error("interface {interface} has an ingress qdisc already and cannot be mirrored")]
    IngressTaken {
        /// The interface.
        interface: String,
    },
    /// A tap could not be created.
    #[error("cannot create the tap {name}")]
    Tap {
        /// The tap's name.
        name: String,
        /// The ioctl or open error.
        #[source]
        source: std::io::Error,
    },
}

/// One interface of the namespace and the tap mirroring it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredLink {
    /// The interface's name in the namespace.
    pub interface: String,
    /// Its index in the namespace.
    pub index: u32,
    /// Its MAC address, which the guest interface gets.
    pub mac: MacAddr,
    /// The tap's name.
    pub tap: String,
    /// The id of the NIC hot-plugged for it into the running VM; `None` for
    /// a NIC the VM got at launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A mirrored namespace: what was made in it (to undo on stop) and what the
/// guest gets (for `SetupPod`). Kept in the pod's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The namespace.
    pub netns: PathBuf,
    /// The interfaces and their taps, in the order of the VM's NICs.
    pub links: Vec<MirroredLink>,
    /// The guest's interfaces.
    pub interfaces: Vec<Interface>,
    /// The guest's routes.
    pub routes: Vec<Route>,
    /// The guest's permanent neighbours.
    pub neighbours: Vec<Neighbour>,
}

/// Mirrors every Ethernet interface of the namespace at `netns` into taps.
/// On failure nothing made here is left.
pub async fn setup(netns: &Path) -> Result<PodNetwork, NetworkError> {
    let path = netns.to_path_buf();
    netns::run_in(netns, move |nl| async move {
        let found = nl.scan().await?;
        let plan = plan::plan(&found)?;
        let links = nl.mirror_all(&plan.links).await?;
        Ok(PodNetwork {
            netns: path,
            links,
            interfaces: plan.interfaces,
            routes: plan.routes,
            neighbours: plan.neighbours,
        })
    })
    .await
}

/// Removes the taps and the interfaces' ingress qdiscs that [`setup`] made.
/// Keeps going after an error and reports the first one.
pub async fn teardown(network: &PodNetwork) -> Result<(), NetworkError> {
    let links = network.links.clone();
    netns::run_in(&network.netns, move |nl| async move {
        nl.unmirror_all(&links).await
    })
    .await
}

/// Reads the namespace of `current` again and compares it with what is
/// mirrored. Changes nothing.
pub async fn rescan(current: &PodNetwork) -> Result<NetworkChange, NetworkError> {
    let links = current.links.clone();
    netns::run_in(&current.netns, move |nl| async move {
        let found = nl.scan().await?;
        Ok(change::diff(&links, plan::plan(&found)?))
    })
    .await
}

/// Mirrors one interface found by [`rescan`] into its tap. On failure
/// nothing made here is left.
pub async fn mirror_added(netns: &Path, link: &AddedLink) -> Result<MirroredLink, NetworkError> {
    let planned = link.planned.clone();
    netns::run_in(netns, move |nl| async move {
        let mut done = nl.mirror_all(std::slice::from_ref(&planned)).await?;
        done.pop().ok_or_else(|| NetworkError::Tap {
            name: planned.tap.clone(),
            source: std::io::Error::other("the mirroring returned no link"),
        })
    })
    .await
}

/// Removes the taps and ingress qdiscs of `links` (interfaces that went
/// away, or whose plug failed). What is already gone is fine.
pub async fn unmirror(netns: &Path, links: &[MirroredLink]) -> Result<(), NetworkError> {
    let links = links.to_vec();
    netns::run_in(
        netns,
        move |nl| async move { nl.unmirror_all(&links).await },
    )
    .await
}
