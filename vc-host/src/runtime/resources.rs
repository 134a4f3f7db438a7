//! What a container uses and may use: live limit updates, usage statistics
//! and the list of its processes from its cgroup in the guest, and the pod's
//! event stream (OOM kills and process exits).

use tracing::{debug, info, info_span, Instrument};
use vc_proto::{ContainerStats, Event};

use super::pod::{connect_agent, CONNECT_DEADLINE};
use super::{Runtime, RuntimeError};
use crate::agent::AgentClient;
use crate::config::ResourcesConfig;
use crate::id::{ContainerId, PodId};
use crate::state::State;
use crate::store::CallLease;

/// Something that happened in a pod's VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PodEvent {
    /// The kernel OOM-killed a process of the container.
    Oom {
        /// The container.
        container: ContainerId,
    },
    /// A process of the container exited.
    Exited {
        /// The container.
        container: ContainerId,
        /// The exec id; `None` for the container's main process.
        exec_id: Option<String>,
        /// Exit code: the exit status, or 128 + signal number.
        code: i32,
    },
}

impl PodEvent {
    /// Converts an event from the guest. Container ids come from the guest and
    /// are checked like any other: an event naming no valid container (such
    /// as a process run outside any container) is `None`.
    pub(crate) fn from_guest(event: Event) -> Option<Self> {
        match event {
            Event::Oom { container_id } => Some(PodEvent::Oom {
                container: container_id.parse().ok()?,
            }),
            Event::Exited { process, code } => Some(PodEvent::Exited {
                container: process.container_id.parse().ok()?,
                exec_id: process.exec_id,
                code,
            }),
        }
    }
}

/// The event stream of a running pod, from [`Runtime::pod_events`].
///
/// The agent hands each event to one reader: two streams on one pod split the
/// events between them. While nobody reads, the agent keeps the newest 1024.
#[derive(Debug)]
pub struct PodEvents {
    pod: PodId,
    runtime: Runtime,
    agent: AgentClient,
}

impl PodEvents {
    /// The pod the events come from.
    pub fn pod(&self) -> &PodId {
        &self.pod
    }

    /// Waits for the next event. `None` when the stream has ended because the
    /// pod is no longer running (it was stopped, or its VM died: the pod's
    /// status tells which). Any other failure is an error.
    pub async fn next(&mut self) -> Result<Option<PodEvent>, RuntimeError> {
        loop {
            let event = match self.agent.next_event().await {
                Ok(event) => event,
                Err(e) if e.agent_gone() => return self.ended(e).await,
                Err(e) => return Err(e.into()),
            };
            match PodEvent::from_guest(event) {
                Some(e) => {
                    debug!(pod_id = %self.pod, event = ?e, "pod event");
                    return Ok(Some(e));
                }
                None => debug!(pod_id = %self.pod, "event outside any container skipped"),
            }
        }
    }

    /// The agent went away: the end of the stream if the pod is no longer
    /// running. Taking the pod's lock waits for a stop in progress to finish.
    async fn ended(
        &self,
        cause: crate::agent::AgentClientError,
    ) -> Result<Option<PodEvent>, RuntimeError> {
        let pod = self.runtime.lock(&self.pod).await?;
        if pod.effective_state() == State::Running {
            return Err(cause.into());
        }
        debug!(pod_id = %self.pod, "pod events ended: the pod is no longer running");
        Ok(None)
    }
}

impl Runtime {
    /// Changes the limits of a container: each field set in `update` replaces
    /// the current one, the others stay. `u64::MAX` removes a limit.
    ///
    /// In a running pod the new limits apply at once to the container's cgroup
    /// in the guest; a container not yet in the guest gets them when created.
    /// The merged limits are validated before anything changes, and saved in
    /// the pod's record.
    pub async fn update_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        update: &ResourcesConfig,
    ) -> Result<ResourcesConfig, RuntimeError> {
        let span = info_span!("container", pod_id = %pod_id, container_id = %id);
        async move {
            update.validate()?;
            let mut pod = self.refreshed(pod_id, id).await?;
            let record = pod.container(id)?;
            if record.state == State::Stopped {
                return Err(RuntimeError::ContainerStopped {
                    pod: pod_id.clone(),
                    container: id.clone(),
                    operation: "update",
                });
            }
            let merged = record.config.resources.merged(update);
            merged.validate()?;
            // A frozen guest cannot apply limits, and recording them alone
            // would say they hold when they do not.
            if pod.effective_state() == State::Paused {
                return Err(RuntimeError::PodNotRunning {
                    pod: pod_id.clone(),
                    state: State::Paused,
                    operation: "update container",
                });
            }
            if pod.effective_state() == State::Running {
                let vm = self.running_vm(&pod, "update container")?;
                let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
                if let Err(e) = agent.update_resources(id.as_str(), update.into()).await {
                    tracing::error!(error = %e, "container update failed");
                    return Err(e.into());
                }
            }
            pod.container_mut(id)?.config.resources = merged.clone();
            pod.save().await?;
            info!(resources = ?merged, "container updated");
            Ok(merged)
        }
        .instrument(span)
        .await
    }

    /// A container's resource usage, read from its cgroup in the guest.
    pub async fn container_stats(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<ContainerStats, RuntimeError> {
        let (agent, _lease) = self.container_agent(pod_id, id, "container stats").await?;
        Ok(agent.stats(id.as_str()).await?)
    }

    /// The pids (in the guest) of every process of a container, ascending:
    /// its main process, its execs and whatever they started, read from the
    /// container's cgroup in the guest (what `ctr task ps` lists). At most
    /// [`vc_proto::MAX_CONTAINER_PIDS`].
    pub async fn container_pids(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<Vec<u32>, RuntimeError> {
        let (agent, _lease) = self.container_agent(pod_id, id, "container pids").await?;
        Ok(agent.container_pids(id.as_str()).await?)
    }

    /// The agent of the running pod that holds container `id`, for a
    /// read-only call (`what`), and the lease to hold until it is answered;
    /// the pod's lock is not held during the call.
    async fn container_agent(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        what: &'static str,
    ) -> Result<(AgentClient, CallLease), RuntimeError> {
        let pod = self.lock(pod_id).await?;
        pod.container(id)?;
        let vm = self.running_vm(&pod, what)?;
        let lease = pod.dir.call_lease().await?;
        drop(pod);
        Ok((connect_agent(&vm, CONNECT_DEADLINE).await?, lease))
    }

    /// The event stream of a running pod: OOM kills and process exits.
    pub async fn pod_events(&self, pod_id: &PodId) -> Result<PodEvents, RuntimeError> {
        let pod = self.lock(pod_id).await?;
        let vm = self.running_vm(&pod, "pod events")?;
        let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
        Ok(PodEvents {
            pod: pod_id.clone(),
            runtime: self.clone(),
            agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vc_proto::ProcessRef;

    #[test]
    fn guest_events_with_valid_ids_convert() {
        let oom = PodEvent::from_guest(Event::Oom {
            container_id: "web".into(),
        });
        assert_eq!(
            oom,
            Some(PodEvent::Oom {
                container: "web".parse().expect("valid id")
            })
        );
        let exit = PodEvent::from_guest(Event::Exited {
            process: ProcessRef {
                container_id: "web".into(),
                exec_id: Some("e1".into()),
            },
            code: 137,
        });
        assert_eq!(
            exit,
            Some(PodEvent::Exited {
                container: "web".parse().expect("valid id"),
                exec_id: Some("e1".into()),
                code: 137,
            })
        );
    }

    #[test]
    fn guest_events_with_invalid_ids_are_dropped() {
        for bad in ["", "../x", "a/b", &"x".repeat(10_000)] {
            assert_eq!(
                PodEvent::from_guest(Event::Oom {
                    container_id: bad.to_owned()
                }),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn events_serialize_tagged() {
        let e = PodEvent::Oom {
            container: "web".parse().expect("valid id"),
        };
        let json = serde_json::to_string(&e).expect("serializes");
        assert_eq!(json, r#"{"event":"oom","container":"web"}"#);
    }
}
