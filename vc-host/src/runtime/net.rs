//! The pod's network namespace in the pod lifecycle: mirrored before QEMU is
//! launched (the taps must exist when QEMU opens them), recorded in the pod's
//! record at once so that any process can undo it, and undone on stop, on
//! delete and on every failed start. These functions work on the record's
//! [`PodNetwork`]; the pod verbs (`pod.rs`) decide when, and save the record.

use std::path::Path;

use tracing::{info, warn};

use super::RuntimeError;
use crate::hypervisor::TapSpec;
use crate::network::{self, PodNetwork};

/// Mirrors the namespace `netns` into taps and filters.
pub(super) async fn mirror(netns: &Path) -> Result<PodNetwork, RuntimeError> {
    let net = network::setup(netns).await?;
    info!(
        netns = %netns.display(),
        interfaces = net.links.len(),
        routes = net.routes.len(),
        "pod network mirrored"
    );
    Ok(net)
}

/// The taps the VM gets, each with its interface's MAC, in the order of
/// the VM's NICs.
pub(super) fn taps(network: Option<&PodNetwork>) -> Vec<TapSpec> {
    network
        .map(|n| {
            n.links
                .iter()
                .map(|l| TapSpec {
                    ifname: l.tap.clone(),
                    mac: l.mac,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the taps and filters of `network`, if any, and clears it. Never
/// fails: errors are logged (a namespace deleted meanwhile took them with
/// it).
pub(super) async fn teardown(network: &mut Option<PodNetwork>) {
    let Some(net) = network.take() else {
        return;
    };
    match network::teardown(&net).await {
        Ok(()) => info!(netns = %net.netns.display(), "pod network removed"),
        Err(e) => warn!(netns = %net.netns.display(), error = %e, "cannot remove the pod network"),
    }
}
