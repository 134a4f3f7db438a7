//! Recovery from a start whose caller died (`docs/reliability.md`, "Killed
//! callers").
//!
//! A start holds the pod's lock from beginning to end and writes how far it
//! got in the record ([`StartPhase`]); the launch writes what it has spawned
//! in the run directory's journal ([`crate::hypervisor::journal`]). The
//! kernel releases the lock of a killed caller, so the next operation that
//! takes it and finds a phase recorded knows that start will never finish.
//! Stop and delete clean up after it as after any VM (the journal included);
//! a new start either adopts the VM, when the record says the guest booted
//! and its agent answers, or cleans everything up and starts afresh.

use tracing::{info, warn};

use super::pod::{connect_agent, LockedPod, CONNECT_DEADLINE};
use super::record::{now, PodRecord, StartPhase};
use super::{PodStatus, Runtime, RuntimeError, SHUTDOWN_GRACE};
use crate::state::State;

impl Runtime {
    /// Under the pod's lock, before a start: finishes what an interrupted
    /// start left. Returns the pod's status when its booted VM was adopted
    /// (the start is then done).
    pub(super) async fn recover_interrupted_start(
        &self,
        pod: &mut LockedPod,
    ) -> Result<Option<PodStatus>, RuntimeError> {
        let Some(phase) = pod.record.start else {
            return Ok(None);
        };
        if phase == StartPhase::Booted {
            if let Some(vm) = pod.live_vm() {
                match connect_agent(&vm, CONNECT_DEADLINE).await {
                    Ok(_) => {
                        pod.record.state = State::Running;
                        pod.record.start = None;
                        pod.record.started_at = Some(now());
                        pod.save().await?;
                        info!(
                            pid = vm.record().qemu.pid,
                            "adopted the booted VM of an interrupted start; pod started"
                        );
                        return Ok(Some(self.status_of(&pod.config, &pod.record)));
                    }
                    Err(e) => warn!(error = %e, "the VM of an interrupted start does not answer"),
                }
            }
        }
        warn!(%phase, "a start of this pod was interrupted; cleaning up what it left");
        // Its guest was never set up: no agent to ask for a clean shutdown.
        if let Some(vm) = pod.live_vm() {
            if let Err(e) = vm.stop(SHUTDOWN_GRACE).await {
                warn!(error = %e, "cannot stop the VM of an interrupted start");
            }
        }
        self.shutdown_vm(pod).await;
        containers_back_to_ready(&mut pod.record);
        pod.save().await?;
        Ok(None)
    }
}

/// After a start that did not finish: the containers it may have started
/// are ready again, as configured.
pub(super) fn containers_back_to_ready(record: &mut PodRecord) {
    for c in record.containers.values_mut() {
        c.state = State::Ready;
        c.pid = None;
        c.exit_code = None;
        c.started_at = None;
        c.finished_at = None;
    }
}
