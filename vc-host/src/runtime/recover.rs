//! Recovery from a start or a container verb whose caller died
//! (`docs/reliability.md`, "Killed callers").
//!
//! A start holds the pod's lock from beginning to end and writes how far it
//! got in the record ([`StartPhase`]); the launch writes what it has spawned
//! in the run directory's journal ([`crate::hypervisor::journal`]). The
//! kernel releases the lock of a killed caller, so the next operation that
//! takes it and finds a phase recorded knows that start will never finish.
//! Stop and delete clean up after it as after any VM (the journal included);
//! a new start either adopts the VM, when the record says the guest booted
//! and its agent answers, or cleans everything up and starts afresh.
//!
//! Container verbs (create in a running pod, start, delete) hold the lock
//! too and record themselves in [`PodRecord::container_op`] before they act.
//! Whoever takes the lock next and finds one ends it: an interrupted create
//! is rolled back (its caller never saw it succeed; the same create can be
//! asked again), an interrupted delete is finished, and an interrupted start
//! is settled from what the guest says of the container.

use tracing::{info, warn};

use super::pod::{connect_agent, LockedPod, CONNECT_DEADLINE};
use super::record::{now, ContainerVerb, PodRecord, StartPhase};
use super::{PodStatus, Runtime, RuntimeError, SHUTDOWN_GRACE};
use crate::id::ContainerId;
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

impl Runtime {
    /// Under the pod's lock, before any verb: ends the container verb whose
    /// caller died. When the guest cannot be asked (its agent does not
    /// answer) the verb stays recorded, a warning is logged, and the next
    /// verb tries again: this never fails the verb that found it, so stop and
    /// delete always work (once the VM is gone no guest needs asking).
    pub(super) async fn recover_container_op(
        &self,
        pod: &mut LockedPod,
    ) -> Result<(), RuntimeError> {
        let Some(op) = pod.record.container_op.clone() else {
            return Ok(());
        };
        let id = &op.container;
        warn!(container_id = %id, verb = %op.verb, "a container {} was interrupted; ending it", op.verb);
        let ended = match op.verb {
            ContainerVerb::Create | ContainerVerb::Delete => self.forget_container(pod, id).await,
            ContainerVerb::Start => self.settle_start(pod, id).await,
        };
        match ended {
            Ok(()) => {
                pod.record.container_op = None;
                pod.save().await?;
                info!(container_id = %id, verb = %op.verb, "interrupted container {} ended", op.verb);
            }
            Err(e) => {
                warn!(container_id = %id, verb = %op.verb, error = %e, "cannot end the interrupted container verb yet; the next verb tries again")
            }
        }
        Ok(())
    }

    /// Removes a container everywhere: the guest, its disks, its binds, its
    /// record.
    async fn forget_container(
        &self,
        pod: &mut LockedPod,
        id: &ContainerId,
    ) -> Result<(), RuntimeError> {
        if pod.record.containers.contains_key(id) {
            self.remove_from_guest(pod, id).await?;
        }
        pod.unbind_container(id).await?;
        pod.record.containers.remove(id);
        Ok(())
    }

    /// Records what the guest says of a container whose start was
    /// interrupted: running (with its pid), stopped (with its exit code), or
    /// still only created.
    async fn settle_start(
        &self,
        pod: &mut LockedPod,
        id: &ContainerId,
    ) -> Result<(), RuntimeError> {
        let vm = match (pod.live_vm(), pod.effective_state()) {
            (Some(vm), State::Running) => vm,
            // The VM is gone or cannot be asked now; `refreshed` records a
            // container of a vanished VM as stopped.
            _ => return Ok(()),
        };
        let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
        let guest = agent.container_state(id.as_str()).await?;
        let Some(c) = pod.record.containers.get_mut(id) else {
            return Ok(());
        };
        match guest.state {
            vc_proto::ProcessState::Created => {}
            vc_proto::ProcessState::Running | vc_proto::ProcessState::Paused => {
                c.state = if guest.state == vc_proto::ProcessState::Paused {
                    State::Paused
                } else {
                    State::Running
                };
                c.pid = guest.pid;
                c.started_at.get_or_insert_with(now);
            }
            vc_proto::ProcessState::Stopped => {
                c.state = State::Stopped;
                c.pid = guest.pid;
                c.exit_code = guest.exit_code;
                c.oom_killed = guest.oom_killed;
                c.started_at.get_or_insert_with(now);
                c.finished_at.get_or_insert_with(now);
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ContainerConfig, PodConfig, RuntimeConfig};
    use crate::id::PodId;
    use crate::runtime::record::{ContainerOp, ContainerRecord};

    /// A ready pod (no VM) whose record says `verb` of container `c1` was
    /// under way when its caller died.
    async fn pod_with_op(verb: ContainerVerb) -> (tempfile::TempDir, Runtime, PodId) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(RuntimeConfig {
            root: tmp.path().join("root"),
            guest_image_dir: tmp.path().join("no-image"),
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let id = PodId::new("p").expect("id");
        let c1 = ContainerId::new("c1").expect("id");
        let (dir, lock) = rt.store.create_pod(&id).await.expect("create");
        let mut record = PodRecord::new();
        let config = ContainerConfig::new(c1.clone(), tmp.path(), vec!["/bin/true".into()]);
        record
            .containers
            .insert(c1.clone(), ContainerRecord::new(config));
        record.container_op = Some(ContainerOp {
            container: c1,
            verb,
        });
        dir.write(&dir.state_path(), &record).expect("write");
        dir.write(&dir.config_path(), &PodConfig::new(id.clone()))
            .expect("write");
        drop(lock);
        (tmp, rt, id)
    }

    fn saved(rt: &Runtime, id: &PodId) -> PodRecord {
        let dir = rt.store.pod(id).expect("pod");
        dir.read(&dir.state_path()).expect("record")
    }

    #[tokio::test]
    async fn an_interrupted_create_or_delete_is_undone_by_the_next_verb() {
        for verb in [ContainerVerb::Create, ContainerVerb::Delete] {
            let (_tmp, rt, id) = pod_with_op(verb).await;
            let c1 = ContainerId::new("c1").expect("id");
            let err = rt.container_status(&id, &c1).await.expect_err("gone");
            assert!(
                matches!(err, RuntimeError::ContainerNotFound { .. }),
                "{verb}: {err}"
            );
            let record = saved(&rt, &id);
            assert!(record.container_op.is_none(), "{verb}");
            assert!(record.containers.is_empty(), "{verb}");
        }
    }

    #[tokio::test]
    async fn an_interrupted_start_without_a_vm_leaves_the_container_created() {
        let (_tmp, rt, id) = pod_with_op(ContainerVerb::Start).await;
        let c1 = ContainerId::new("c1").expect("id");
        let status = rt.container_status(&id, &c1).await.expect("status");
        assert_eq!(status.state, State::Ready);
        assert!(saved(&rt, &id).container_op.is_none());
    }
}
