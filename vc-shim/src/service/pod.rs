//! The pod's VM: booted by the task that makes the pod, watched for OOM
//! events and for its death, and torn down with that task.
//!
//! When the VM dies under running tasks, each running process's wait ends
//! with exit code 255 (its supervisor reports the TaskExit after draining),
//! each process not yet started is reported exited with 255 here, the pod's
//! vc state is removed, and the shim exits once containerd has deleted the
//! tasks, or after the stop deadline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use tracing::{info, info_span, warn, Instrument};
use vc_host::id::PodId;
use vc_host::runtime::PodEvent;
use vc_host::state::State;

use super::events::timestamp;
use super::state::lock;
use super::{call, PodHandle, ServiceError, Shared};
use crate::bundle::Bundle;
use crate::group;

/// How often a lost event stream is re-opened while the VM still runs.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// How many times in a row the event stream may fail while the VM runs.
const MAX_RESUBSCRIBE: u32 = 10;

impl Shared {
    /// Creates and boots the pod of `owner` (a sandbox or plain container)
    /// with the bundle's pod settings. On failure nothing of the pod is left.
    pub(super) async fn boot_pod(
        self: &Arc<Self>,
        owner: &str,
        bundle: &Bundle,
    ) -> Result<PodHandle, ServiceError> {
        let setup = self.setup()?;
        let id = group::pod_id(owner)?;
        let span = info_span!("pod", pod_id = %id);
        async {
            let config = bundle.pod_config(id.clone(), setup.config.vm.clone())?;
            let rt = &setup.runtime;
            let boot = async {
                rt.create_pod(config).await?;
                rt.start_pod(&id).await?;
                rt.pod_agent(&id).await
            };
            let agent = match call("booting the pod", setup.config.timeouts.boot(), boot).await {
                Ok(agent) => agent,
                Err(e) => {
                    self.remove_pod(&id).await;
                    return Err(e);
                }
            };
            info!("pod running");
            let handle = PodHandle {
                id: id.clone(),
                agent,
                owner: owner.to_owned(),
            };
            *lock(&self.pod) = Some(handle.clone());
            tokio::spawn(watch(self.clone(), id.clone()).in_current_span());
            Ok(handle)
        }
        .instrument(span)
        .await
    }

    /// Stops and deletes the pod on purpose (its owner's Delete, Shutdown).
    pub(super) async fn teardown_pod(&self) {
        let Some(pod) = lock(&self.pod).take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        self.remove_pod(&pod.id).await;
    }

    /// Stops the pod and removes its state; forced when the orderly way
    /// fails or runs late. Never fails: failures are logged.
    pub(super) async fn remove_pod(&self, id: &PodId) {
        let Ok(rt) = self.runtime() else { return };
        let stop = self.timeouts().stop();
        let orderly = async {
            match rt.stop_pod(id).await {
                Ok(_) => {}
                // Never started, or already stopped: delete says which.
                Err(e) => tracing::debug!(error = %e, "stop before delete"),
            }
            rt.delete_pod(id).await
        };
        match call("stopping the pod", stop, orderly).await {
            Ok(()) => info!(pod_id = %id, "pod removed"),
            Err(e) => {
                warn!(pod_id = %id, error = %super::error::chain(&e), "orderly pod removal failed; forcing it");
                match call("force-deleting the pod", stop, rt.force_delete_pod(id)).await {
                    Ok(()) => info!(pod_id = %id, "pod removed (forced)"),
                    Err(e) => {
                        warn!(pod_id = %id, error = %super::error::chain(&e), "cannot remove the pod")
                    }
                }
            }
        }
    }

    /// The VM died on its own: report every process not yet started as
    /// exited with 255, remove the pod's state, and exit the shim once
    /// containerd has deleted every task (or after the stop deadline).
    async fn on_vm_death(self: &Arc<Self>, id: &PodId) {
        if self.stopping.load(Ordering::SeqCst) || self.vm_gone.swap(true, Ordering::SeqCst) {
            return;
        }
        warn!(pod_id = %id, "the pod's VM is gone; every task exits with 255");
        let tasks: Vec<_> = lock(&self.tasks).values().cloned().collect();
        for task in tasks {
            for proc in task.processes() {
                if proc.phase() != super::state::Phase::Created {
                    continue;
                }
                if let Some(exit) = proc.set_exited(vc_proto::EXIT_CODE_VM_GONE as u32) {
                    self.events
                        .publish(TaskExit {
                            container_id: task.id.clone(),
                            id: if proc.exec_id.is_empty() {
                                task.id.clone()
                            } else {
                                proc.exec_id.clone()
                            },
                            pid: proc.pid(),
                            exit_status: exit.code,
                            exited_at: Some(timestamp(exit.at)).into(),
                            ..TaskExit::default()
                        })
                        .await;
                }
            }
        }
        if lock(&self.pod).take().is_some() {
            self.stopping.store(true, Ordering::SeqCst);
            self.remove_pod(id).await;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + shared.timeouts().stop();
            while !lock(&shared.tasks).is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            info!("the pod's VM is gone and its tasks are reported; the shim exits");
            shared.exit.signal();
        });
    }
}

/// Follows the pod's events: OOM kills become TaskOOM; the end of the
/// stream while the shim did not stop the pod is the VM's death.
async fn watch(shared: Arc<Shared>, id: PodId) {
    let Ok(rt) = shared.runtime() else { return };
    let mut failures = 0;
    loop {
        let call_deadline = shared.timeouts().call();
        let mut events = match call(
            "subscribing to pod events",
            call_deadline,
            rt.pod_events(&id),
        )
        .await
        {
            Ok(events) => events,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                warn!(error = %super::error::chain(&e), "cannot follow the pod's events");
                if !pod_running(&shared, &id).await || failures >= MAX_RESUBSCRIBE {
                    break;
                }
                failures += 1;
                tokio::time::sleep(RESUBSCRIBE).await;
                continue;
            }
        };
        loop {
            match events.next().await {
                Ok(Some(PodEvent::Oom { container })) => {
                    let task = lock(&shared.tasks)
                        .values()
                        .find(|t| t.container == container)
                        .map(|t| t.id.clone());
                    if let Some(task) = task {
                        warn!(container_id = %task, "OOM kill in the container");
                        shared
                            .events
                            .publish(TaskOOM {
                                container_id: task,
                                ..TaskOOM::default()
                            })
                            .await;
                    }
                }
                // Exits are reported by each process's supervisor.
                Ok(Some(PodEvent::Exited { .. })) => {}
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "the pod's event stream failed");
                    break;
                }
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if !pod_running(&shared, &id).await || failures >= MAX_RESUBSCRIBE {
            break;
        }
        failures += 1;
        tokio::time::sleep(RESUBSCRIBE).await;
    }
    if !shared.stopping.load(Ordering::SeqCst) {
        shared.on_vm_death(&id).await;
    }
}

async fn pod_running(shared: &Shared, id: &PodId) -> bool {
    let Ok(rt) = shared.runtime() else {
        return false;
    };
    matches!(
        call("reading the pod's status", shared.timeouts().call(), rt.pod_status(id)).await,
        Ok(status) if status.state == State::Running || status.state == State::Paused
    )
}
