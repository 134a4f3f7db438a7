//! Container verbs: create, start, stop, delete, kill, status, and the
//! process streams of a container's main process.

use std::time::Duration;

use tracing::{debug, info, info_span, warn, Instrument};
use vc_proto::{ContainerSpec, ProcessRef, ProcessState, Rootfs};

use super::pod::{connect_agent, LockedPod, CONNECT_DEADLINE};
use super::record::{now, ContainerOp, ContainerRecord, ContainerStatus, ContainerVerb};
use super::{mountpoints, share};
use super::{HotplugRefusal, Runtime, RuntimeError};
use crate::agent::AgentClient;
use crate::blocking;
use crate::config::ContainerConfig;
use crate::id::{ContainerId, PodId};
use crate::state::{State, Transition};
use crate::storage;

impl LockedPod {
    /// Records that a container verb is under way (see
    /// [`PodRecord::container_op`](super::record::PodRecord::container_op)).
    pub(super) async fn begin_container_op(
        &mut self,
        id: &ContainerId,
        verb: ContainerVerb,
    ) -> Result<(), RuntimeError> {
        self.record.container_op = Some(ContainerOp {
            container: id.clone(),
            verb,
        });
        self.save().await
    }

    pub(super) fn container(&self, id: &ContainerId) -> Result<&ContainerRecord, RuntimeError> {
        self.record
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                pod: self.config.id.clone(),
                container: id.clone(),
            })
    }

    pub(super) fn container_mut(
        &mut self,
        id: &ContainerId,
    ) -> Result<&mut ContainerRecord, RuntimeError> {
        let pod = self.config.id.clone();
        self.record
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                pod,
                container: id.clone(),
            })
    }
}

fn main_process(id: &ContainerId) -> ProcessRef {
    ProcessRef {
        container_id: id.to_string(),
        exec_id: None,
    }
}

impl Runtime {
    /// Bind-mounts the container's rootfs and volumes into the share,
    /// hot-plugs its block devices when the VM can (q35; otherwise, as on
    /// microvm, they were attached at boot), and creates the container in the guest. On error no bind mount and no
    /// hot-plugged disk is left.
    pub(super) async fn create_in_guest(
        &self,
        pod: &mut LockedPod,
        agent: &AgentClient,
        id: &ContainerId,
    ) -> Result<(), RuntimeError> {
        let config = pod.container(id)?.config.clone();
        let mut plugged = Vec::new();
        let result = async {
            if self.capabilities(&pod.config).hotplug_block {
                for disk in storage::container_disks(&config.storage()) {
                    let vm = pod.live_vm().ok_or_else(|| RuntimeError::PodNotRunning {
                        pod: pod.config.id.clone(),
                        state: pod.effective_state(),
                        operation: "hot-plug a disk",
                    })?;
                    vm.hotplug_disk(&disk).await?;
                    plugged.push((vm, disk.id));
                }
            }
            let rootfs = match &config.rootfs_image {
                Some(_) => Rootfs::Block {
                    device: storage::guest_device(&storage::disk_id(id, None)),
                    fstype: "ext4".to_owned(),
                },
                None => {
                    if config.readonly_rootfs {
                        // The agent cannot make them in a read-only share.
                        let (rootfs, points) = (config.rootfs.clone(), mountpoints::needed(&config));
                        let failed =
                            blocking::run(move || mountpoints::prepare(&rootfs, &points)).await;
                        for (path, error) in failed {
                            debug!(container_id = %id, path, %error, "mount point not made in the read-only rootfs");
                        }
                    }
                    let (cid, rootfs, readonly) =
                        (id.clone(), config.rootfs.clone(), config.readonly_rootfs);
                    pod.bind(share::rootfs_target(id), move |s| {
                        s.bind_rootfs(&cid, &rootfs, readonly)
                    })
                    .await?;
                    Rootfs::Path(share::guest_rootfs_path(id))
                }
            };
            for (i, v) in config.volumes.iter().enumerate() {
                let (cid, host_path, readonly) = (id.clone(), v.host_path.clone(), v.readonly);
                pod.bind(share::volume_target(id, i), move |s| {
                    s.bind_volume(&cid, i, &host_path, readonly)
                })
                .await?;
            }
            if pod.record.container_op.is_some() {
                crate::fault::point("container-create.bound");
            }
            let spec = ContainerSpec {
                id: id.to_string(),
                rootfs,
                readonly_rootfs: config.readonly_rootfs,
                hostname: config
                    .hostname
                    .clone()
                    .unwrap_or_else(|| pod.config.hostname().to_owned()),
                process: config.process_spec(),
                mounts: storage::container_mounts(&config.storage(), |i| {
                    share::guest_volume_path(id, i)
                }),
                resources: (&config.resources).into(),
                masked_paths: config.masked_paths.clone(),
                readonly_paths: config.readonly_paths.clone(),
            };
            agent.create_container(spec, config.seccomp.clone()).await?;
            Ok::<(), RuntimeError>(())
        }
        .await;
        if let Err(e) = result {
            if let Err(undo) = pod.unbind_container(id).await {
                warn!(container_id = %id, error = %undo, "cannot undo the binds of a failed create; they stay recorded");
            }
            for (vm, disk) in plugged.iter().rev() {
                if let Err(e) = vm.unplug_disk(disk).await {
                    warn!(container_id = %id, disk = %disk, error = %e, "cannot unplug a disk after a failed create");
                }
            }
            return Err(e);
        }
        info!(container_id = %id, "container created");
        Ok(())
    }

    /// Starts a created container's main process.
    pub(super) async fn start_in_guest(
        &self,
        pod: &mut LockedPod,
        agent: &AgentClient,
        id: &ContainerId,
    ) -> Result<(), RuntimeError> {
        let pid = agent.start_container(id.as_str()).await?;
        let c = pod.container_mut(id)?;
        c.state = State::Running;
        c.pid = Some(pid);
        c.started_at = Some(now());
        info!(container_id = %id, pid, "container started");
        Ok(())
    }

    /// Creates a container in a ready or running pod. In a running pod it is
    /// created in the guest at once; in a ready pod, when the pod starts.
    pub async fn create_container(
        &self,
        pod_id: &PodId,
        config: ContainerConfig,
    ) -> Result<ContainerStatus, RuntimeError> {
        let span = info_span!("container", pod_id = %pod_id, container_id = %config.id);
        async move {
            config.validate()?;
            let mut pod = self.lock(pod_id).await?;
            let state = pod.effective_state();
            if !matches!(state, State::Ready | State::Running) {
                return Err(RuntimeError::PodNotRunning {
                    pod: pod_id.clone(),
                    state,
                    operation: "create container",
                });
            }
            let id = config.id.clone();
            if state == State::Running
                && !self.capabilities(&pod.config).hotplug_block
                && !storage::container_disks(&config.storage()).is_empty()
            {
                return Err(RuntimeError::HotplugUnsupported {
                    pod: pod_id.clone(),
                    refused: HotplugRefusal::ContainerDisks(id),
                });
            }
            if pod.record.containers.contains_key(&id) {
                return Err(RuntimeError::ContainerExists {
                    pod: pod_id.clone(),
                    container: id,
                });
            }
            pod.record
                .containers
                .insert(id.clone(), ContainerRecord::new(config));
            if state == State::Running {
                let vm = self.running_vm(&pod, "create container")?;
                let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
                pod.begin_container_op(&id, ContainerVerb::Create).await?;
                crate::fault::point("container-create.recorded");
                if let Err(e) = self.create_in_guest(&mut pod, &agent, &id).await {
                    pod.record.containers.remove(&id);
                    pod.record.container_op = None;
                    pod.save().await?;
                    return Err(e);
                }
                crate::fault::point("container-create.guest-created");
            }
            pod.record.container_op = None;
            pod.save().await?;
            info!("container created");
            Ok(pod.container(&id)?.status(pod_id))
        }
        .instrument(span)
        .await
    }

    /// Starts a ready container of a running pod.
    pub async fn start_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<ContainerStatus, RuntimeError> {
        let span = info_span!("container", pod_id = %pod_id, container_id = %id);
        async move {
            let mut pod = self.lock(pod_id).await?;
            pod.container(id)?
                .state
                .apply("container", Transition::Start)?;
            let vm = self.running_vm(&pod, "start container")?;
            let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
            pod.begin_container_op(id, ContainerVerb::Start).await?;
            let started = self.start_in_guest(&mut pod, &agent, id).await;
            if started.is_ok() {
                crate::fault::point("container-start.guest-started");
            }
            pod.record.container_op = None;
            pod.save().await?;
            started?;
            Ok(pod.container(id)?.status(pod_id))
        }
        .instrument(span)
        .await
    }

    /// Stops a container: SIGTERM to its processes, SIGKILL after `grace`.
    pub async fn stop_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<ContainerStatus, RuntimeError> {
        let span = info_span!("container", pod_id = %pod_id, container_id = %id);
        async move {
            let mut pod = self.refreshed(pod_id, id).await?;
            let state = pod.container(id)?.state;
            state.apply("container", Transition::Stop)?;
            let mut code = None;
            if state != State::Ready {
                let vm = self.running_vm(&pod, "stop container")?;
                let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
                code = Some(agent.stop_container(id.as_str(), grace).await?);
            }
            let c = pod.container_mut(id)?;
            c.state = State::Stopped;
            if code.is_some() {
                c.exit_code = code;
                c.finished_at = Some(now());
            }
            pod.save().await?;
            info!(exit_code = ?code, "container stopped");
            Ok(pod.container(id)?.status(pod_id))
        }
        .instrument(span)
        .await
    }

    /// Deletes a ready or stopped container.
    pub async fn delete_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<(), RuntimeError> {
        let span = info_span!("container", pod_id = %pod_id, container_id = %id);
        async move {
            let mut pod = self.refreshed(pod_id, id).await?;
            pod.container(id)?
                .state
                .apply("container", Transition::Delete)?;
            pod.begin_container_op(id, ContainerVerb::Delete).await?;
            let removed = match self.remove_from_guest(&pod, id).await {
                Ok(()) => {
                    crate::fault::point("container-delete.guest-removed");
                    pod.unbind_container(id).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                pod.record.container_op = None;
                pod.save().await?;
                return Err(e);
            }
            crate::fault::point("container-delete.unbound");
            pod.record.containers.remove(id);
            pod.record.container_op = None;
            pod.save().await?;
            info!("container deleted");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Removes a container from the guest of a running pod and, when its
    /// disks were hot-plugged (q35), unplugs them. A container the guest does not have (created
    /// while the pod was ready, or removed already) is not an error; a pod
    /// that is not running has nothing in a guest to remove.
    pub(super) async fn remove_from_guest(
        &self,
        pod: &LockedPod,
        id: &ContainerId,
    ) -> Result<(), RuntimeError> {
        let Some(vm) = pod.live_vm() else {
            return Ok(());
        };
        match pod.effective_state() {
            State::Running => {}
            // The guest has the container but is frozen: removing only the
            // record would leave the container in the guest.
            State::Paused => {
                return Err(RuntimeError::PodNotRunning {
                    pod: pod.config.id.clone(),
                    state: State::Paused,
                    operation: "delete container",
                })
            }
            _ => return Ok(()),
        }
        let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
        match agent.remove_container(id.as_str()).await {
            Ok(()) => {}
            Err(crate::agent::AgentClientError::Agent { source, .. })
                if source.code == vc_proto::ErrorCode::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if self.capabilities(&pod.config).hotplug_block {
            let config = &pod.container(id)?.config;
            for disk in storage::container_disks(&config.storage()) {
                vm.unplug_disk(&disk.id).await?;
            }
        }
        Ok(())
    }

    /// Sends `signal` to the container's main process, or with `all` to every
    /// process of the container. Signalling a stopped container is not an error.
    pub async fn kill_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        signal: i32,
        all: bool,
    ) -> Result<(), RuntimeError> {
        let pod = self.refreshed(pod_id, id).await?;
        let state = pod.container(id)?.state;
        if state == State::Stopped {
            return Ok(());
        }
        if state == State::Ready {
            return Err(crate::state::TransitionError {
                what: "container",
                transition: Transition::Stop,
                from: state,
            }
            .into());
        }
        let vm = self.running_vm(&pod, "kill container")?;
        let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
        agent.signal(&main_process(id), signal, all).await?;
        info!(pod_id = %pod_id, container_id = %id, signal, all, "container signalled");
        Ok(())
    }

    /// The detailed status of a container, refreshed from the agent when the
    /// pod runs (a container whose process exited is reported stopped, with
    /// its exit code).
    pub async fn container_status(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<ContainerStatus, RuntimeError> {
        let pod = self.refreshed(pod_id, id).await?;
        Ok(pod.container(id)?.status(pod_id))
    }

    /// Waits for a container's main process to exit and returns its exit code.
    /// Works from any process; when the VM goes away first, the error says so
    /// (callers that need a number use [`vc_proto::EXIT_CODE_VM_GONE`]).
    pub async fn wait_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<i32, RuntimeError> {
        let agent = {
            let pod = self.refreshed(pod_id, id).await?;
            let c = pod.container(id)?;
            if let (State::Stopped, Some(code)) = (c.state, c.exit_code) {
                return Ok(code);
            }
            let vm = self.running_vm(&pod, "wait container")?;
            connect_agent(&vm, CONNECT_DEADLINE).await?
        };
        let code = agent.wait(&main_process(id)).await?;
        // Record the exit for other processes.
        let _ = self.refreshed(pod_id, id).await?;
        Ok(code)
    }

    /// An agent connection for the container's pod, for process I/O.
    pub async fn pod_agent(&self, pod_id: &PodId) -> Result<AgentClient, RuntimeError> {
        let pod = self.lock(pod_id).await?;
        let vm = self.running_vm(&pod, "attach")?;
        Ok(connect_agent(&vm, CONNECT_DEADLINE).await?)
    }

    /// Locks the pod and brings the container's record up to date with the
    /// guest: a running container whose process exited becomes stopped.
    pub(super) async fn refreshed(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
    ) -> Result<LockedPod, RuntimeError> {
        let mut pod = self.lock(pod_id).await?;
        let state = pod.container(id)?.state;
        if !matches!(state, State::Running | State::Paused) {
            return Ok(pod);
        }
        match pod.live_vm() {
            Some(vm) if pod.effective_state() == State::Running => {
                let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
                let status = agent.container_state(id.as_str()).await?;
                if status.state == ProcessState::Stopped {
                    let c = pod.container_mut(id)?;
                    c.state = State::Stopped;
                    c.exit_code = status.exit_code;
                    c.oom_killed = status.oom_killed;
                    c.finished_at = Some(now());
                    pod.save().await?;
                }
            }
            Some(_) => {}
            None => {
                // The VM is gone: so is the container.
                let c = pod.container_mut(id)?;
                c.state = State::Stopped;
                c.exit_code.get_or_insert(vc_proto::EXIT_CODE_VM_GONE);
                c.finished_at.get_or_insert_with(now);
                pod.save().await?;
            }
        }
        Ok(pod)
    }
}
