//! Supervision of a pod's VM without a daemon: whoever touches the pod
//! notices a dead QEMU or helper.
//!
//! - Every verb that locks the pod checks the pidfds of QEMU and its helpers
//!   ([`HelperWatch`]) and records a death: the pod becomes
//!   [`State::Broken`], with the dead process and how it ended in
//!   [`PodRecord::broken`].
//! - Status and list (which take no lock) report `broken` from the same check.
//! - Verbs that need the VM fail at once with [`RuntimeError::HelperDied`].
//! - Agent clients of a pod carry the watch, so a call in flight (an exec's
//!   wait, a stream) is woken by the death (see
//!   [`ConnectOptions::helpers`](crate::agent::ConnectOptions::helpers)).
//! - Stop and delete of a broken pod skip the agent and go straight to
//!   killing what is left (see `shutdown`).

use tracing::warn;

use super::pod::LockedPod;
use super::record::{PodRecord, ProcessInfo};
use super::RuntimeError;
use crate::hypervisor::{HelperDeath, HelperWatch, VmRecord};
use crate::state::State;

/// The death to report for a VM, if any of its processes died.
pub(super) fn vm_death(vm: &VmRecord) -> Option<HelperDeath> {
    HelperWatch::open(vm).check()
}

/// Why a pod is broken, if it is: the recorded death, or one seen now in a
/// pod recorded running or paused.
pub(super) fn pod_death(record: &PodRecord) -> Option<HelperDeath> {
    match (record.state, &record.vm) {
        (State::Broken, vm) => record
            .broken
            .clone()
            .or_else(|| vm.as_ref().and_then(vm_death)),
        (State::Running | State::Paused, Some(vm)) => vm_death(vm),
        _ => None,
    }
}

/// The processes of a pod to show: all of them while it runs; those still
/// alive while it is broken. The VMM process is listed first, under `vmm`,
/// the hypervisor's name.
pub(super) fn processes(vm: &VmRecord, state: State, vmm: &str) -> Vec<ProcessInfo> {
    let all = std::iter::once((vmm, vm.qemu))
        .chain(vm.daemons.iter().map(|d| (d.kind.name(), d.process)));
    match state {
        State::Running | State::Paused => all
            .map(|(name, p)| ProcessInfo {
                name: name.to_owned(),
                pid: p.pid,
            })
            .collect(),
        State::Broken => all
            .filter(|(_, p)| p.is_alive())
            .map(|(name, p)| ProcessInfo {
                name: name.to_owned(),
                pid: p.pid,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl LockedPod {
    /// Records the death of QEMU or a helper of a pod recorded running or
    /// paused: the pod becomes broken. Called by every verb that locks the
    /// pod, so whoever touches it next notices. The check runs on the
    /// blocking pool: telling how a dead process ended may wait for it to be
    /// reapable.
    pub(super) async fn notice_death(&mut self) -> Result<(), RuntimeError> {
        if !matches!(self.record.state, State::Running | State::Paused) {
            return Ok(());
        }
        let Some(vm) = self.record.vm.clone() else {
            return Ok(());
        };
        let Some(death) = crate::blocking::run(move || vm_death(&vm)).await else {
            return Ok(());
        };
        warn!(pod_id = %self.config.id, helper = %death.helper, pid = death.pid, exit = %death.exit, "pod broken: {death}");
        self.record.state = State::Broken;
        self.record.broken = Some(death);
        self.save().await
    }

    /// [`RuntimeError::HelperDied`] when the pod is broken.
    pub(super) fn broken_error(&self) -> Option<RuntimeError> {
        let death = pod_death(&self.record)?;
        Some(RuntimeError::helper_died(self.config.id.clone(), death))
    }
}
