//! The pod's network namespace in the pod lifecycle: mirrored before QEMU is
//! launched (the taps must exist when QEMU opens them), recorded in the pod's
//! record at once so that any process can undo it, and undone on stop, on
//! delete and on every failed start.

use tracing::{info, warn};

use super::pod::LockedPod;
use super::RuntimeError;
use crate::hypervisor::TapSpec;
use crate::network;

/// Mirrors the pod's namespace, if it has one, and saves the record.
pub(super) async fn setup_network(pod: &mut LockedPod) -> Result<(), RuntimeError> {
    // A record left by a crashed start: undo it first, or its taps and
    // ingress qdiscs would make the namespace look taken.
    teardown_network(pod).await;
    let Some(netns) = pod.config.netns.clone() else {
        return Ok(());
    };
    let net = network::setup(&netns).await?;
    info!(
        netns = %netns.display(),
        interfaces = net.links.len(),
        routes = net.routes.len(),
        "pod network mirrored"
    );
    pod.record.network = Some(net);
    if let Err(e) = pod.save().await {
        teardown_network(pod).await;
        return Err(e);
    }
    Ok(())
}

/// The taps QEMU gets.
pub(super) fn taps(pod: &LockedPod) -> Vec<TapSpec> {
    pod.record
        .network
        .as_ref()
        .map(|n| n.taps())
        .unwrap_or_default()
}

/// Removes the pod's taps and filters, if any. Never fails: errors are logged
/// (a namespace deleted meanwhile took them with it).
pub(super) async fn teardown_network(pod: &mut LockedPod) {
    let Some(net) = pod.record.network.take() else {
        return;
    };
    match network::teardown(&net).await {
        Ok(()) => info!(netns = %net.netns.display(), "pod network removed"),
        Err(e) => warn!(netns = %net.netns.display(), error = %e, "cannot remove the pod network"),
    }
}
