//! A running pod's network follows its namespace: [`Runtime::update_pod_network`]
//! reads the namespace again and applies the difference to the VM, and
//! [`Runtime::pod_network`] shows what is mirrored.
//!
//! Under the pod's lock, like every verb that changes a pod: the namespace is
//! rescanned and compared with the record's [`PodNetwork`]. When interfaces
//! came or went, the VM must be able to hot-plug NICs (the backend's
//! [`Capabilities::hotplug_net`](crate::hypervisor::Capabilities), q35) and
//! every interface that went away must have been hot-plugged (a q35 VM's
//! launch NICs sit on its root bus); otherwise the update is refused before
//! anything changes. Then, in order:
//!
//! 1. each new interface is mirrored into a new tap, recorded (so that a stop
//!    removes it whatever happens next), and its NIC hot-plugged with the tap
//!    queue passed to QEMU by descriptor;
//! 2. the agent converges the guest to the namespace's interfaces,
//!    addresses, routes and neighbours (`UpdateNetwork`);
//! 3. the NICs of interfaces that went away are unplugged (waiting for
//!    `DEVICE_DELETED`) and their taps removed;
//! 4. the record gets the new description.
//!
//! A failure in 1 or 2 unplugs and unmirrors what 1 added and leaves the
//! record as it was. A failure in 3 keeps the links it could not remove in
//! the record (a stop removes them) and is reported after the others were
//! tried.

use std::time::Instant;

use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};
use vc_proto::NetworkUpdate;

use super::pod::{connect_agent, LockedPod, CONNECT_DEADLINE};
use super::{HotplugRefusal, Runtime, RuntimeError};
use crate::hypervisor::{NicSpec, Vm};
use crate::id::PodId;
use crate::network::{self, AddedLink, MirroredLink, NetworkChange, PodNetwork};

/// What [`Runtime::update_pod_network`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkUpdateReport {
    /// Interfaces that appeared and were plugged into the VM.
    pub added: Vec<String>,
    /// Interfaces that went away and were unplugged.
    pub removed: Vec<String>,
    /// Whether anything differed from what the pod had.
    pub changed: bool,
    /// How long the update took, lock to record, in milliseconds.
    pub elapsed_ms: u64,
    /// The pod's network afterwards; `None` for a pod without a namespace.
    pub network: Option<PodNetwork>,
}

impl Runtime {
    /// The pod's mirrored network as recorded (interfaces with their taps
    /// and hot-plugged NICs, the guest's addresses, routes and neighbours);
    /// `None` when the pod has no namespace or is not running.
    pub async fn pod_network(&self, id: &PodId) -> Result<Option<PodNetwork>, RuntimeError> {
        let pod = self.lock(id).await?;
        Ok(pod.record.network.clone())
    }

    /// Rescans the running pod's network namespace and applies the
    /// difference to its VM (see the module docs). A pod without a
    /// namespace has nothing to follow.
    pub async fn update_pod_network(
        &self,
        id: &PodId,
    ) -> Result<NetworkUpdateReport, RuntimeError> {
        let span = info_span!("update-pod-network", pod_id = %id);
        async {
            let started = Instant::now();
            let mut pod = self.lock(id).await?;
            let vm = self.running_vm(&pod, "update the network")?;
            let Some(current) = pod.record.network.clone() else {
                return Ok(NetworkUpdateReport::default());
            };
            let change = network::rescan(&current).await?;
            let mut report = NetworkUpdateReport {
                added: change.added.iter().map(|a| a.interface.clone()).collect(),
                removed: change.removed.iter().map(|l| l.interface.clone()).collect(),
                changed: !change.is_empty(&current),
                ..NetworkUpdateReport::default()
            };
            if report.changed {
                self.check_hotplug(&pod, &change)?;
                self.apply(&mut pod, &vm, &current, &change).await?;
            }
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            report.network = pod.record.network.clone();
            info!(
                changed = report.changed,
                added = report.added.len(),
                removed = report.removed.len(),
                elapsed_ms = report.elapsed_ms,
                "pod network updated"
            );
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Gives an adopted pool VM the pod's network: every interface of the
    /// pod's namespace mirrored and hot-plugged (its tap passed to QEMU by
    /// descriptor, as a live update does), then the guest configured, before
    /// the pod is set up. Nothing to do without a namespace. On failure the
    /// record names what is plugged, for the failed start to tear down.
    pub(super) async fn plug_adopted_network(
        &self,
        pod: &mut LockedPod,
        vm: &Vm,
    ) -> Result<(), RuntimeError> {
        let Some(netns) = pod.config.netns.clone() else {
            return Ok(());
        };
        let current = PodNetwork {
            netns,
            links: Vec::new(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            neighbours: Vec::new(),
        };
        pod.record.network = Some(current.clone());
        pod.save().await?;
        let change = network::rescan(&current).await?;
        self.check_hotplug(pod, &change)?;
        self.apply(pod, vm, &current, &change).await?;
        info!(
            interfaces = change.added.len(),
            "the adopted VM's interfaces plugged"
        );
        Ok(())
    }

    /// Refuses a change the VM cannot take, before anything changes.
    fn check_hotplug(&self, pod: &LockedPod, change: &NetworkChange) -> Result<(), RuntimeError> {
        if !change.changes_interfaces() {
            return Ok(());
        }
        let refuse = |refused| RuntimeError::HotplugUnsupported {
            pod: pod.config.id.clone(),
            refused,
        };
        if !self.capabilities(&pod.config).hotplug_net {
            return Err(refuse(HotplugRefusal::Interfaces {
                added: change.added.iter().map(|a| a.interface.clone()).collect(),
                removed: change.removed.iter().map(|l| l.interface.clone()).collect(),
            }));
        }
        match change.removed.iter().find(|l| l.device.is_none()) {
            Some(launched) => Err(refuse(HotplugRefusal::LaunchInterface(
                launched.interface.clone(),
            ))),
            None => Ok(()),
        }
    }

    async fn apply(
        &self,
        pod: &mut LockedPod,
        vm: &Vm,
        current: &PodNetwork,
        change: &NetworkChange,
    ) -> Result<(), RuntimeError> {
        let agent = connect_agent(vm, CONNECT_DEADLINE).await?;
        let mut plugged = Vec::new();
        let added = async {
            for link in &change.added {
                plugged.push(plug(pod, vm, &current.netns, link).await?);
            }
            agent
                .update_network(NetworkUpdate {
                    interfaces: change.interfaces.clone(),
                    routes: change.routes.clone(),
                    neighbours: change.neighbours.clone(),
                })
                .await?;
            Ok::<_, RuntimeError>(())
        }
        .await;
        if let Err(e) = added {
            for link in plugged.iter().rev() {
                unplug(pod, vm, &current.netns, link).await;
            }
            return Err(e);
        }
        let mut first = None;
        let mut stuck = Vec::new();
        for link in &change.removed {
            if let Err(e) = remove(vm, &current.netns, link).await {
                warn!(interface = %link.interface, error = %e, "cannot remove the interface's NIC and tap");
                stuck.push(link.clone());
                first.get_or_insert(e);
            }
        }
        let mut links = change.kept.clone();
        links.extend(plugged);
        links.extend(stuck);
        pod.record.network = Some(PodNetwork {
            netns: current.netns.clone(),
            links,
            interfaces: change.interfaces.clone(),
            routes: change.routes.clone(),
            neighbours: change.neighbours.clone(),
        });
        pod.save().await?;
        first.map_or(Ok(()), Err)
    }
}

/// Mirrors `link`, records it, and plugs its NIC. On failure nothing of it
/// is left and the record is as before.
async fn plug(
    pod: &mut LockedPod,
    vm: &Vm,
    netns: &std::path::Path,
    link: &AddedLink,
) -> Result<MirroredLink, RuntimeError> {
    let mut mirrored = network::mirror_added(netns, link).await?;
    mirrored.device = Some(mirrored.tap.clone());
    if let Some(net) = pod.record.network.as_mut() {
        net.links.push(mirrored.clone());
    }
    let nic = NicSpec {
        id: mirrored.tap.clone(),
        mac: mirrored.mac,
    };
    let plugged = match pod.save().await {
        Ok(()) => vm
            .hotplug_nic(&nic, netns, &mirrored.tap)
            .await
            .map_err(RuntimeError::from),
        Err(e) => Err(e),
    };
    match plugged {
        Ok(port) => {
            info!(interface = %link.interface, tap = %mirrored.tap, port, "interface plugged");
            Ok(mirrored)
        }
        Err(e) => {
            forget(pod, &mirrored, netns).await;
            Err(e)
        }
    }
}

/// Undoes a [`plug`] whose update failed later.
async fn unplug(pod: &mut LockedPod, vm: &Vm, netns: &std::path::Path, link: &MirroredLink) {
    if let Some(id) = &link.device {
        if let Err(e) = vm.unplug_nic(id).await {
            warn!(nic = %id, error = %e, "cannot unplug the NIC of a failed update; the tap stays recorded");
            return;
        }
    }
    forget(pod, link, netns).await;
}

/// Removes `link`'s tap and filters and drops it from the record.
async fn forget(pod: &mut LockedPod, link: &MirroredLink, netns: &std::path::Path) {
    if let Err(e) = network::unmirror(netns, std::slice::from_ref(link)).await {
        warn!(tap = %link.tap, error = %e, "cannot remove the tap; it stays recorded");
        return;
    }
    if let Some(net) = pod.record.network.as_mut() {
        net.links.retain(|l| l.tap != link.tap);
    }
    if let Err(e) = pod.save().await {
        warn!(error = %e, "cannot save the pod record");
    }
}

/// Unplugs the NIC of an interface that went away and removes its tap.
async fn remove(vm: &Vm, netns: &std::path::Path, link: &MirroredLink) -> Result<(), RuntimeError> {
    if let Some(id) = &link.device {
        vm.unplug_nic(id).await?;
    }
    network::unmirror(netns, std::slice::from_ref(link)).await?;
    info!(interface = %link.interface, tap = %link.tap, "interface unplugged");
    Ok(())
}
