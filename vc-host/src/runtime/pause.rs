//! Per-container pause and resume: the container's cgroup in the guest is
//! frozen (`cgroup.freeze`), the VM and the pod's other containers run on.
//! This is what a containerd task's Pause and Resume mean; freezing the whole
//! VM is [`Runtime::pause_pod`].

use tracing::{info, info_span, Instrument};

use super::pod::{connect_agent, CONNECT_DEADLINE};
use super::{ContainerStatus, Runtime, RuntimeError};
use crate::id::{ContainerId, PodId};
use crate::state::Transition;

impl Runtime {
    /// Freezes every process of a running container.
    pub async fn pause_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<ContainerStatus, RuntimeError> {
        self.freeze_or_thaw(pod_id, id, Transition::Pause).await
    }

    /// Thaws a paused container.
    pub async fn resume_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<ContainerStatus, RuntimeError> {
        self.freeze_or_thaw(pod_id, id, Transition::Resume).await
    }

    async fn freeze_or_thaw(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        t: Transition,
    ) -> Result<ContainerStatus, RuntimeError> {
        let span = info_span!("container", pod_id = %pod_id, container_id = %id);
        async move {
            let mut pod = self.refreshed(pod_id, id).await?;
            let next = pod.container(id)?.state.apply("container", t)?;
            let vm = self.running_vm(&pod, "pause/resume container")?;
            let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
            match t {
                Transition::Pause => agent.pause_container(id.as_str()).await?,
                _ => agent.resume_container(id.as_str()).await?,
            }
            pod.container_mut(id)?.state = next;
            pod.save().await?;
            info!(state = %next, "container {t}d");
            Ok(pod.container(id)?.status(pod_id))
        }
        .instrument(span)
        .await
    }
}
