//! Pod verbs: create, start, stop, delete, run, list, status, pause, resume, enter.

use std::time::Duration;

use tracing::{debug, info, info_span, warn, Instrument};
use vc_proto::{PodSetup, ProcessRef, ProcessSpec, SharedMount};

use super::admission::{BootAdmission, BootDeadline, BootExpiry, BootPermit, BOOT_STALL};
use super::net;
use super::pool::StartOptions;
use super::record::{now, PodRecord, PodStatus, StartPhase};
use super::share::GUEST_SHARED_DIR;
use super::supervise;
use super::{GuestImage, Runtime, RuntimeError, SHUTDOWN_GRACE};
use crate::agent::{collect_output, AgentClient, AgentClientError, ConnectOptions, Output};
use crate::blocking;
use crate::config::PodConfig;
use crate::hypervisor::cgroup::{self, CgroupSpec};
use crate::hypervisor::console::ConsoleWatch;
use crate::hypervisor::{
    Capabilities, HelperWatch, HypervisorError, Vm, VmSettings, VmSpec, VmmUser, SHARED_FS_TAG,
};
use crate::id::PodId;
use crate::state::{State, Transition};
use crate::store::{PodDir, PodLock};

/// A pod's files, loaded under its lock.
pub(super) struct LockedPod {
    pub dir: PodDir,
    pub lock: PodLock,
    pub config: PodConfig,
    pub record: PodRecord,
}

impl LockedPod {
    /// Writes the record (atomically, fsynced) on the blocking pool. The
    /// write holds the pod's lock until it is done, even if this future is
    /// dropped first: no later holder's write can be overtaken by it.
    pub async fn save(&self) -> Result<(), RuntimeError> {
        let (dir, lock) = (self.dir.clone(), self.lock.clone());
        let record = self.record.clone();
        blocking::run(move || {
            let _held = lock;
            dir.write(&dir.state_path(), &record)
        })
        .await?;
        Ok(())
    }

    /// The running VM, if the record has one and it is still alive.
    pub fn live_vm(&self) -> Option<Vm> {
        let vm = Vm::from_record(self.record.vm.clone()?).ok()?;
        vm.is_running().then_some(vm)
    }

    /// The state to report: a pod whose QEMU or helper died is broken.
    pub fn effective_state(&self) -> State {
        effective_state(&self.record)
    }

    /// Mirrors the pod's namespace, if it has one, and saves the record.
    async fn setup_network(&mut self) -> Result<(), RuntimeError> {
        // A record left by a crashed start: undo it first, or its taps and
        // ingress qdiscs would make the namespace look taken.
        net::teardown(&mut self.record.network).await;
        let Some(netns) = self.config.netns.clone() else {
            return Ok(());
        };
        self.record.network = Some(net::mirror(&netns).await?);
        if let Err(e) = self.save().await {
            net::teardown(&mut self.record.network).await;
            return Err(e);
        }
        Ok(())
    }
}

fn effective_state(record: &PodRecord) -> State {
    match (record.state, &record.vm) {
        (State::Running | State::Paused, None) => State::Stopped,
        (State::Running | State::Paused, Some(_)) if supervise::pod_death(record).is_some() => {
            State::Broken
        }
        (state, _) => state,
    }
}

/// Reads a pod's configuration and record on the blocking pool.
async fn read_records(dir: PodDir) -> Result<(PodDir, PodConfig, PodRecord), RuntimeError> {
    blocking::run(move || {
        let config = dir.read(&dir.config_path())?;
        let record = dir.read(&dir.state_path())?;
        Ok((dir, config, record))
    })
    .await
}

impl Runtime {
    pub(super) async fn lock(&self, id: &PodId) -> Result<LockedPod, RuntimeError> {
        let (dir, lock) = self.store.lock_pod(id).await?;
        let (dir, config, record) = read_records(dir).await?;
        let mut pod = LockedPod {
            dir,
            lock,
            config,
            record,
        };
        pod.notice_death().await?;
        self.recover_container_op(&mut pod).await?;
        Ok(pod)
    }

    /// The host's boot slots (shared by every process using this root).
    pub(super) fn admission(&self) -> BootAdmission {
        BootAdmission::new(self.store.root(), self.config.boot_width)
    }

    fn guest_image(&self) -> Result<GuestImage, RuntimeError> {
        GuestImage::load(&self.config.guest_image_dir)
    }

    /// The pod's VM settings, with the kernel and initrd of the guest image
    /// unless the configuration names its own.
    fn vm_settings(&self, config: &PodConfig) -> Result<VmSettings, RuntimeError> {
        self.vm_settings_of(&config.vm)
    }

    /// [`Self::vm_settings`] of a VM configuration.
    pub(super) fn vm_settings_of(
        &self,
        config: &crate::hypervisor::VmConfig,
    ) -> Result<VmSettings, RuntimeError> {
        let image = self.guest_image()?;
        let mut vm = config.clone();
        vm.kernel.get_or_insert(image.kernel);
        vm.initrd.get_or_insert(image.initrd);
        Ok(self.hypervisor.settings(&vm)?)
    }

    /// What the pod's VM can do, as its hypervisor says.
    pub(super) fn capabilities(&self, config: &PodConfig) -> Capabilities {
        self.hypervisor.capabilities(&config.vm)
    }

    /// The host user QEMU and the vsock daemon run as.
    pub(super) fn vmm_user(&self) -> Result<VmmUser, RuntimeError> {
        VmmUser::lookup(&self.config.vmm_user)
            .map_err(|e| RuntimeError::Hypervisor(HypervisorError::Confine(e)))
    }

    /// Prepares a pod without starting its VM. Everything that can be checked
    /// (ids, configuration, guest image, paths) is checked before anything is
    /// created; a duplicate id is refused.
    pub async fn create_pod(&self, config: PodConfig) -> Result<PodStatus, RuntimeError> {
        let span = info_span!("pod", pod_id = %config.id);
        async move {
            config.validate()?;
            self.vm_settings(&config)?;
            self.vmm_user()?;
            let (dir, lock) = self.store.create_pod(&config.id).await?;
            crate::fault::point("create.dir-made");
            let mut record = PodRecord::new();
            for c in &config.containers {
                record
                    .containers
                    .insert(c.id.clone(), super::record::ContainerRecord::new(c.clone()));
            }
            let pod = LockedPod {
                dir,
                lock,
                config,
                record,
            };
            let (dir, record, config) = (pod.dir.clone(), pod.record.clone(), pod.config.clone());
            let held = pod.lock.clone();
            let written = blocking::run(move || {
                let _held = held;
                dir.write(&dir.state_path(), &record)
                    .inspect(|_| crate::fault::point("create.state-written"))
                    .and_then(|()| dir.write(&dir.config_path(), &config))
            })
            .await;
            if let Err(e) = written {
                let LockedPod { dir, lock, .. } = pod;
                let store = self.store.clone();
                if let Err(cleanup) = blocking::run(move || store.remove_pod(dir, lock)).await {
                    warn!(error = %cleanup, "cannot remove the half-created pod");
                }
                return Err(e.into());
            }
            info!("pod created");
            Ok(self.status_of(&pod.config, &pod.record))
        }
        .instrument(span)
        .await
    }

    /// Creates and starts a pod.
    pub async fn run_pod(&self, config: PodConfig) -> Result<PodStatus, RuntimeError> {
        let id = config.id.clone();
        self.create_pod(config).await?;
        match self.start_pod(&id).await {
            Ok(status) => Ok(status),
            Err(e) => {
                let _ = self.delete_pod(&id).await;
                Err(e)
            }
        }
    }

    /// Boots the pod's VM (or adopts a matching VM of the warm pool, see
    /// [`Self::fill_pool`]), sets the pod up in the guest, and creates and starts
    /// the containers of its configuration.
    pub async fn start_pod(&self, id: &PodId) -> Result<PodStatus, RuntimeError> {
        self.start_pod_with(id, StartOptions::default()).await
    }

    /// [`Self::start_pod`], with `options` saying whether the pool may be used.
    pub async fn start_pod_with(
        &self,
        id: &PodId,
        options: StartOptions,
    ) -> Result<PodStatus, RuntimeError> {
        let span = info_span!("pod", pod_id = %id);
        async move {
            let mut pod = self.lock(id).await?;
            if let Some(adopted) = self.recover_interrupted_start(&mut pod).await? {
                return Ok(adopted);
            }
            pod.record.state.apply("pod", Transition::Start)?;
            pod.record.broken = None;
            let settings = self.vm_settings(&pod.config)?;
            let vmm_user = self.vmm_user()?;
            if options.use_pool && self.poolable(&pod) {
                let limits = pod.config.vm.host_limits();
                if let Some(slot) = self.claim_slot(&settings, limits).await? {
                    debug!(slot = slot.name(), "adopting a pool slot");
                    let vm = self.adopt_slot(&mut pod, slot).await?;
                    crate::fault::point("start.vm-recorded");
                    let set_up = match connect_agent(&vm, CONNECT_DEADLINE).await {
                        Ok(agent) => self.setup_adopted(&mut pod, &vm, &agent).await,
                        Err(source) => Err(RuntimeError::BootFailed {
                            pod: pod.config.id.clone(),
                            console_tail: vm.console_tail(30),
                            source: Box::new(source),
                        }),
                    };
                    return self.finish_start(&mut pod, &vm, set_up).await;
                }
            }
            pod.record.start = Some(StartPhase::Launching);
            pod.save().await?;
            crate::fault::point("start.recorded");
            // The export must be a shared mount point before virtiofsd starts.
            let prepared = match pod.export_share().await {
                Ok(()) => pod.setup_network().await,
                Err(e) => Err(e),
            };
            if let Err(e) = prepared {
                pod.record.start = None;
                pod.unbind_all_logged().await;
                pod.save().await?;
                return Err(e);
            }
            // At most `boot_width` VMs boot at once on the host; the boot's
            // deadline counts from here.
            let permit = match self.admission().admit(id.as_str()).await {
                Ok(permit) => permit,
                Err(e) => {
                    undo_prepared(&mut pod).await?;
                    return Err(e.into());
                }
            };
            let spec = VmSpec {
                name: Some(id.to_string()),
                settings,
                run_dir: pod.dir.vm_dir(),
                shared_dir: Some(pod.dir.shared_dir()),
                netns: pod.config.netns.clone(),
                taps: net::taps(pod.record.network.as_ref()),
                disks: boot_disks(&pod, self.capabilities(&pod.config)),
                vmm_user: Some(vmm_user),
                cgroup: self.config.host_cgroup.enabled.then(|| CgroupSpec {
                    parent: self.config.host_cgroup.parent.clone(),
                    name: cgroup::name_for(Some(id.as_str()), &pod.dir.vm_dir()),
                    limits: pod.config.vm.host_limits(),
                }),
            };
            let vm = match self.hypervisor.launch(&spec).await {
                Ok(vm) => vm,
                Err(e) => {
                    undo_prepared(&mut pod).await?;
                    return Err(e.into());
                }
            };
            // Record the VM at once: if anything below fails, stop and delete
            // still find every process to clean up.
            pod.record.vm = Some(vm.record().clone());
            pod.record.start = Some(StartPhase::Booting);
            pod.save().await?;
            crate::fault::point("start.vm-recorded");
            let booted = match self.boot(&mut pod, &vm, permit).await {
                Ok(agent) => self.setup_guest(&mut pod, &agent).await,
                Err(e) => Err(e),
            };
            self.finish_start(&mut pod, &vm, booted).await
        }
        .instrument(span)
        .await
    }

    /// True when the pod may adopt a pool slot: a slot has no disks and
    /// its share has only the export; a slot has no NICs either, so a pod
    /// with a network namespace needs NIC hot-plug (q35), its taps then
    /// handed to the slot's QEMU by descriptor.
    fn poolable(&self, pod: &LockedPod) -> bool {
        (pod.config.netns.is_none() || self.capabilities(&pod.config).hotplug_net)
            && pod.record.network.is_none()
            && pod.record.binds.is_empty()
            && boot_disks(pod, self.capabilities(&pod.config)).is_empty()
    }

    /// Records the end of a start whose VM is recorded: running when `set_up`
    /// succeeded; otherwise the VM is stopped, the binds and network undone,
    /// and the pod back where it was.
    async fn finish_start(
        &self,
        pod: &mut LockedPod,
        vm: &Vm,
        set_up: Result<(), RuntimeError>,
    ) -> Result<PodStatus, RuntimeError> {
        match set_up {
            Ok(()) => {
                crate::fault::point("start.booted");
                pod.record.start = Some(StartPhase::Booted);
                pod.save().await?;
                crate::fault::point("start.booted-recorded");
                pod.record.state = State::Running;
                pod.record.start = None;
                pod.record.started_at = Some(now());
                pod.save().await?;
                info!("pod started");
                Ok(self.status_of(&pod.config, &pod.record))
            }
            Err(e) => {
                warn!(error = %e, "pod failed to start; stopping its VM");
                let _ = vm.stop(SHUTDOWN_GRACE).await;
                pod.unbind_all_logged().await;
                net::teardown(&mut pod.record.network).await;
                super::recover::containers_back_to_ready(&mut pod.record);
                pod.record.vm = None;
                pod.record.start = None;
                pod.save().await?;
                Err(e)
            }
        }
    }

    /// Waits for the agent (holding the boot's admission until it
    /// answers) and connects to it.
    async fn boot(
        &self,
        pod: &mut LockedPod,
        vm: &Vm,
        permit: BootPermit,
    ) -> Result<AgentClient, RuntimeError> {
        let mut deadline = BootDeadline::new(
            permit.admitted_at(),
            BOOT_STALL,
            Duration::from_secs(pod.config.vm.boot_timeout_secs.into()),
        );
        let failed = |source| RuntimeError::BootFailed {
            pod: pod.config.id.clone(),
            console_tail: vm.console_tail(30),
            source: Box::new(source),
        };
        match wait_for_agent_ready(vm, &mut deadline, pod.config.id.as_str()).await {
            Ok(()) => {}
            Err(BootWait::Agent(source)) => return Err(failed(source)),
            Err(BootWait::Expired(expiry)) => {
                return Err(RuntimeError::BootTimeout {
                    pod: pod.config.id.clone(),
                    expiry,
                    console_tail: vm.console_tail(30),
                })
            }
        }
        let agent = connect_agent(vm, BOOT_CONNECT_DEADLINE)
            .await
            .map_err(failed)?;
        debug!(
            slot = permit.slot(),
            boot_ms = deadline.elapsed(std::time::Instant::now()).as_millis() as u64,
            "agent answered; boot slot released"
        );
        drop(permit);
        Ok(agent)
    }

    /// Sets the pod up in its booted guest (hostname, DNS, the share, the
    /// network), then creates and starts its ready containers.
    async fn setup_guest(
        &self,
        pod: &mut LockedPod,
        agent: &AgentClient,
    ) -> Result<(), RuntimeError> {
        self.setup_pod_in_guest(pod, agent).await?;
        self.start_containers_in_guest(pod, agent).await
    }

    /// [`Self::setup_guest`] for an adopted pool VM, which has no NICs: the
    /// pod is set up without a network, its interfaces are then hot-plugged
    /// and configured (a live update, see `net_update`), and only then are its
    /// containers started.
    async fn setup_adopted(
        &self,
        pod: &mut LockedPod,
        vm: &Vm,
        agent: &AgentClient,
    ) -> Result<(), RuntimeError> {
        self.setup_pod_in_guest(pod, agent).await?;
        self.plug_adopted_network(pod, vm).await?;
        self.start_containers_in_guest(pod, agent).await
    }

    /// Sends `SetupPod`: hostname, DNS, the share, the network recorded.
    async fn setup_pod_in_guest(
        &self,
        pod: &mut LockedPod,
        agent: &AgentClient,
    ) -> Result<(), RuntimeError> {
        let network = pod.record.network.as_ref();
        let setup = PodSetup {
            pod_id: pod.config.id.to_string(),
            hostname: pod.config.hostname().to_owned(),
            dns: vc_proto::Dns {
                servers: pod.config.dns.servers.clone(),
                search: pod.config.dns.search.clone(),
                options: pod.config.dns.options.clone(),
            },
            hosts: Vec::new(),
            shared_mounts: vec![SharedMount {
                fstype: "virtiofs".to_owned(),
                source: SHARED_FS_TAG.to_owned(),
                target: GUEST_SHARED_DIR.to_owned(),
                options: Vec::new(),
            }],
            interfaces: network.map(|n| n.interfaces.clone()).unwrap_or_default(),
            routes: network.map(|n| n.routes.clone()).unwrap_or_default(),
            neighbours: network.map(|n| n.neighbours.clone()).unwrap_or_default(),
        };
        agent.setup_pod(setup).await?;
        Ok(())
    }

    /// Creates and starts the pod's ready containers in the guest.
    async fn start_containers_in_guest(
        &self,
        pod: &mut LockedPod,
        agent: &AgentClient,
    ) -> Result<(), RuntimeError> {
        let ids: Vec<_> = pod.record.containers.keys().cloned().collect();
        for cid in ids {
            self.create_in_guest(pod, agent, &cid).await?;
            self.start_in_guest(pod, agent, &cid).await?;
        }
        Ok(())
    }

    /// Stops every container, shuts the VM down and cleans up its processes,
    /// sockets and mounts. A pod whose VM already died is cleaned up the same way.
    pub async fn stop_pod(&self, id: &PodId) -> Result<PodStatus, RuntimeError> {
        let span = info_span!("pod", pod_id = %id);
        async move {
            let mut pod = self.lock(id).await?;
            let effective = pod.effective_state();
            if effective != State::Stopped {
                effective.apply("pod", Transition::Stop)?;
            }
            self.shutdown_vm(&mut pod).await;
            crate::fault::point("stop.vm-stopped");
            pod.record.state = State::Stopped;
            pod.record.stopped_at = Some(now());
            pod.save().await?;
            info!("pod stopped");
            Ok(self.status_of(&pod.config, &pod.record))
        }
        .instrument(span)
        .await
    }

    /// Best-effort shutdown: agent first, then the hypervisor, then the
    /// network mirroring. Never fails: whatever the guest does, every host
    /// process, mount, tap and filter is gone afterwards.
    pub(super) async fn shutdown_vm(&self, pod: &mut LockedPod) {
        self.shutdown_vm_processes(pod).await;
        // What a start killed before it recorded its VM left running: the
        // launch journal names it (the recorded VM, stopped above, too).
        self.hypervisor
            .reap_interrupted_launch(&pod.dir.vm_dir())
            .await;
        net::teardown(&mut pod.record.network).await;
        pod.record.start = None;
    }

    /// Deletes a pod that is not running: its directory, share and records.
    pub async fn delete_pod(&self, id: &PodId) -> Result<(), RuntimeError> {
        let span = info_span!("pod", pod_id = %id);
        async move {
            let mut pod = match self.lock(id).await {
                Ok(pod) => pod,
                Err(RuntimeError::Store(crate::store::StoreError::PodNotFound(_)))
                    if self.store.is_half_made(id) =>
                {
                    info!("finishing an interrupted create or delete");
                    return self.force_delete_pod(id).await;
                }
                Err(e) => return Err(e),
            };
            pod.effective_state().apply("pod", Transition::Delete)?;
            // A VM that died on its own still has helpers, sockets and mounts.
            self.shutdown_vm(&mut pod).await;
            crate::fault::point("delete.vm-stopped");
            // A bind that could not be undone is an error here, not a log
            // line: the pod's directory is kept, the bind still recorded.
            pod.unbind_all().await?;
            pod.save().await?;
            crate::fault::point("delete.recorded");
            let LockedPod { dir, lock, .. } = pod;
            let store = self.store.clone();
            blocking::run(move || store.remove_pod(dir, lock)).await?;
            info!("pod deleted");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Every pod on the host, as seen from any process.
    pub async fn list_pods(&self) -> Result<Vec<PodStatus>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.store.list()? {
            match self.pod_status(&id).await {
                Ok(status) => out.push(status),
                // Deleted between the listing and the read.
                Err(RuntimeError::Store(crate::store::StoreError::PodNotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The detailed status of a pod. Reads without locking: state files are
    /// replaced atomically.
    pub async fn pod_status(&self, id: &PodId) -> Result<PodStatus, RuntimeError> {
        let dir = self.store.pod(id)?;
        let (_, config, record) = read_records(dir).await?;
        // The liveness checks of its processes may wait for a dying one.
        let runtime = self.clone();
        Ok(blocking::run(move || runtime.status_of(&config, &record)).await)
    }

    pub(super) fn status_of(&self, config: &PodConfig, record: &PodRecord) -> PodStatus {
        let state = effective_state(record);
        let processes = match &record.vm {
            Some(vm) => supervise::processes(vm, state, self.hypervisor.name()),
            None => Vec::new(),
        };
        PodStatus {
            id: config.id.clone(),
            state,
            broken: match state {
                State::Broken => supervise::pod_death(record),
                _ => None,
            },
            config: config.clone(),
            processes,
            console_log: record.vm.as_ref().map(|vm| vm.console_log.clone()),
            host_cgroup: match (&record.vm, state) {
                (Some(vm), State::Running | State::Paused | State::Broken) => vm.cgroup.clone(),
                _ => None,
            },
            containers: record
                .containers
                .values()
                .map(|c| c.status(&config.id))
                .collect(),
            created_at: record.created_at,
            started_at: record.started_at,
            stopped_at: record.stopped_at,
        }
    }

    /// Freezes the whole VM.
    pub async fn pause_pod(&self, id: &PodId) -> Result<PodStatus, RuntimeError> {
        self.pause_or_resume(id, Transition::Pause).await
    }

    /// Thaws a paused VM.
    pub async fn resume_pod(&self, id: &PodId) -> Result<PodStatus, RuntimeError> {
        self.pause_or_resume(id, Transition::Resume).await
    }

    async fn pause_or_resume(&self, id: &PodId, t: Transition) -> Result<PodStatus, RuntimeError> {
        let span = info_span!("pod", pod_id = %id);
        async move {
            let mut pod = self.lock(id).await?;
            if let Some(e) = pod.broken_error() {
                return Err(e);
            }
            let next = pod.effective_state().apply("pod", t)?;
            let vm = pod.live_vm().ok_or(RuntimeError::PodNotRunning {
                pod: id.clone(),
                state: State::Stopped,
                operation: "pause/resume",
            })?;
            match t {
                Transition::Pause => {
                    // Short calls made without the pod's lock finish first
                    // (see crate::store::CallLease); the gate is released once
                    // the VM is frozen, and the record then refuses new ones.
                    let quiet = pod.dir.quiesce_calls(QUIESCE_DEADLINE).await?;
                    if quiet.is_none() {
                        warn!(
                            waited = ?QUIESCE_DEADLINE,
                            "agent calls still in flight; pausing anyway (they will time out)"
                        );
                    }
                    vm.pause().await?;
                }
                _ => vm.resume().await?,
            }
            pod.record.state = next;
            pod.save().await?;
            info!(state = %next, "pod {t}d");
            Ok(self.status_of(&pod.config, &pod.record))
        }
        .instrument(span)
        .await
    }

    /// Runs a command in the pod's VM, outside any container, and collects its
    /// output and exit code (for debugging).
    pub async fn enter_pod(
        &self,
        id: &PodId,
        command: Vec<String>,
    ) -> Result<Output, RuntimeError> {
        let pod = self.lock(id).await?;
        let vm = self.running_vm(&pod, "enter")?;
        let agent = connect_agent(&vm, CONNECT_DEADLINE).await?;
        drop(pod);
        let process = ProcessRef {
            container_id: String::new(),
            exec_id: Some(unique_exec_id()),
        };
        let spec = ProcessSpec {
            args: command,
            env: vec![crate::config::DEFAULT_PATH.to_owned()],
            cwd: "/".to_owned(),
            ..ProcessSpec::default()
        };
        agent.exec(&process, spec).await?;
        Ok(collect_output(&agent, &process).await?)
    }

    pub(super) fn running_vm(
        &self,
        pod: &LockedPod,
        operation: &'static str,
    ) -> Result<Vm, RuntimeError> {
        if let Some(e) = pod.broken_error() {
            return Err(e);
        }
        let state = pod.effective_state();
        match (state, pod.live_vm()) {
            (State::Running, Some(vm)) => Ok(vm),
            (state, _) => Err(RuntimeError::PodNotRunning {
                pod: pod.config.id.clone(),
                state,
                operation,
            }),
        }
    }
}

/// How long to wait for the agent of a VM that is booting, once it has
/// printed its ready line.
pub(super) const BOOT_CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// How long a pause waits for the short agent calls in flight: a connect and
/// one call, each with its own deadline.
const QUIESCE_DEADLINE: Duration = Duration::from_secs(45);

/// How long to wait for the agent of a running pod.
pub(super) const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Connects to a VM's agent. The pidfds of QEMU and its helpers are watched
/// (and QEMU's liveness is the probe), so a process that dies while we wait
/// or while a call is pending ends the wait at once.
pub(super) async fn connect_agent(
    vm: &Vm,
    deadline: Duration,
) -> Result<AgentClient, AgentClientError> {
    connect_agent_with(vm, deadline, ConnectOptions::default().call_timeout).await
}

/// [`connect_agent`] with the timeout of each call.
pub(super) async fn connect_agent_with(
    vm: &Vm,
    deadline: Duration,
    call_timeout: Duration,
) -> Result<AgentClient, AgentClientError> {
    let probe = vm.clone();
    let opts = ConnectOptions::default()
        .deadline(deadline)
        .call_timeout(call_timeout)
        .helpers(std::sync::Arc::new(HelperWatch::open(vm.record())))
        .vm_alive(move || probe.is_running());
    AgentClient::connect(vm.agent_addr(), &opts).await
}

/// Most console bytes read per poll while waiting for the agent.
const CONSOLE_POLL_BUDGET: u64 = 1 << 20;

/// Why a boot's wait for the agent's ready line ended without it.
pub(super) enum BootWait {
    /// The VM died.
    Agent(AgentClientError),
    /// The deadline passed.
    Expired(BootExpiry),
}

/// Waits until the guest console shows [`vc_proto::AGENT_READY_LINE`], so the
/// first connection attempt reaches a listening agent. Fails when the VM dies
/// or the boot's `deadline` passes; console output extends the deadline up
/// to its ceiling. The console is followed across its rotations, each byte
/// read once.
pub(super) async fn wait_for_agent_ready(
    vm: &Vm,
    deadline: &mut BootDeadline,
    pod: &str,
) -> Result<(), BootWait> {
    let mut watch = ConsoleWatch::new(&vm.record().console_log, CONSOLE_POLL_BUDGET);
    let needle = vc_proto::AGENT_READY_LINE.as_bytes();
    loop {
        if watch.poll(needle) {
            return Ok(());
        }
        let now = std::time::Instant::now();
        deadline.observe(watch.consumed(), now);
        if !vm.is_running() {
            return Err(BootWait::Agent(AgentClientError::VmGone { during: "boot" }));
        }
        if let Some(expiry) = deadline.expired(now) {
            return Err(BootWait::Expired(expiry));
        }
        deadline.report_slow(pod, now);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Undoes what a start prepared before its VM existed (the network and the
/// share's binds) and records that no start is under way.
async fn undo_prepared(pod: &mut LockedPod) -> Result<(), RuntimeError> {
    pod.record.start = None;
    net::teardown(&mut pod.record.network).await;
    pod.unbind_all_logged().await;
    pod.save().await?;
    Ok(())
}

/// The disks a pod boots with: without block hot-plug (microvm), every
/// block device of the containers it knows; with it (q35) none (they are
/// hot-plugged when each container is created in the guest, and unplugged
/// when it is deleted).
fn boot_disks(pod: &LockedPod, caps: Capabilities) -> Vec<crate::hypervisor::DiskSpec> {
    if caps.hotplug_block {
        return Vec::new();
    }
    pod.record
        .containers
        .values()
        .flat_map(|c| crate::storage::container_disks(&c.config.storage()))
        .collect()
}

/// An exec id unique enough for one pod: time and a process-local counter.
pub(super) fn unique_exec_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "exec-{}-{}-{}",
        std::process::id(),
        now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
