//! The warm pool: VMs booted ahead of time, each waiting with no pod identity
//! (no hostname, no network, an empty share) for one pod to adopt it.
//!
//! - [`Runtime::fill_pool`] boots slots of a [`PoolShape`] until the pool
//!   holds that many; [`Runtime::drain_pool`] stops them all;
//!   [`Runtime::pool_status`] lists them with their age and health.
//! - [`Runtime::start_pod`] adopts a ready slot whose resolved VM settings and
//!   host limits equal the pod's, when the pod has no network namespace and
//!   no boot disks, and boots cold otherwise (or when told not to use the
//!   pool, [`StartOptions`]). Adoption swaps the slot's directory with the
//!   pod's (see [`crate::store::pool`]), rewrites the VM's record to its new
//!   paths, and then sets the pod up in the guest exactly as after a cold
//!   boot: hostname, DNS, the share, the containers.
//! - One VM, one pod, ever: a slot is used once, and a stopped pod's VM is
//!   never returned to the pool.
//! - Claims take the slot's lock without waiting, so two starts (in any
//!   processes) never get one slot; a slot whose VM or helper died is found
//!   at the claim, discarded, and never handed out.
//! - A slot booted from a guest image that has since been rebuilt at the
//!   same paths (a new agent in a new initrd) is discarded at the claim too:
//!   the slot records its kernel's and initrd's identity
//!   ([`ImageStamp`](super::image_stamp)).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn, Instrument};

use super::admission::BootDeadline;
use super::image_stamp::ImageStamp;
use super::pod::{connect_agent, wait_for_agent_ready, BootWait, LockedPod, BOOT_CONNECT_DEADLINE};
use super::record::{now, ProcessInfo, StartPhase};
use super::share::{PodShare, EXPORT_TARGETS};
use super::{Runtime, RuntimeError, SHUTDOWN_GRACE};
use crate::blocking;
use crate::hypervisor::cgroup::{self, CgroupLimits, CgroupSpec};
use crate::hypervisor::config::Machine;
use crate::hypervisor::journal::LaunchJournal;
use crate::hypervisor::{Vm, VmConfig, VmRecord, VmSettings, VmSpec};
use crate::state::State;
use crate::store::pool::SlotDir;
use crate::store::{read_json, write_json_atomic, PodLock, StoreError};

/// Version of the [`SlotRecord`] layout.
const SLOT_RECORD_FORMAT: u32 = 2;

/// The VM shape of pool slots: what differs from [`VmConfig::default`]. A
/// pod adopts a slot when its own VM configuration resolves to the same
/// settings (so the pod's `vm` must differ from the default in the same
/// fields, and no others).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolShape {
    /// vCPUs (default: [`VmConfig::default`]'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Guest memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Machine type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}

impl PoolShape {
    /// The VM configuration of this shape.
    pub fn vm_config(&self) -> VmConfig {
        let mut vm = VmConfig::default();
        if let Some(v) = self.vcpus {
            vm.vcpus = v;
        }
        if let Some(m) = self.memory_mib {
            vm.memory_mib = m;
        }
        if let Some(m) = self.machine {
            vm.machine = m;
        }
        vm
    }
}

/// How [`Runtime::start_pod_with`] starts a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOptions {
    /// Adopt a matching pool slot when there is one (the default); `false`
    /// always boots a new VM.
    pub use_pool: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self { use_pool: true }
    }
}

/// A slot's record (`slot.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotRecord {
    format: u32,
    shape: PoolShape,
    /// What the VM was launched with; a pod must resolve to the same.
    settings: VmSettings,
    /// The kernel and initrd it booted; a pod must find the same files.
    image: ImageStamp,
    /// The VM's host cgroup limits; a pod must ask for the same.
    host_limits: CgroupLimits,
    /// Set once launched.
    vm: Option<VmRecord>,
    /// The share's export binds made, relative to the slot directory.
    binds: Vec<PathBuf>,
    /// When its fill started (ms since the epoch).
    created_at: u64,
    /// When its agent answered (ms since the epoch).
    ready_at: Option<u64>,
}

/// What a slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotHealth {
    /// Booted, its agent answered, its processes alive: it can be adopted.
    Ready,
    /// Being filled (booting) or being adopted or discarded by someone.
    Busy,
    /// Its VM or a helper died, or its filler did: the next claim or drain
    /// removes it.
    Dead,
}

/// One slot, as [`Runtime::pool_status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The slot's name.
    pub name: String,
    /// Its shape.
    pub shape: PoolShape,
    /// Its health.
    pub health: SlotHealth,
    /// Seconds since its fill started.
    pub age_secs: u64,
    /// Seconds its boot took, once ready.
    pub boot_secs: Option<u64>,
    /// QEMU (first, under the hypervisor's name) and its helpers, alive or
    /// not, once launched.
    pub processes: Vec<ProcessInfo>,
}

/// The pool, as [`Runtime::pool_status`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Every slot, oldest first.
    pub slots: Vec<SlotStatus>,
}

impl SlotStatus {
    /// QEMU's pid, once launched.
    pub fn vmm_pid(&self) -> Option<i32> {
        self.processes.first().map(|p| p.pid)
    }
}

impl PoolStatus {
    /// How many slots can be adopted now.
    pub fn ready(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.health == SlotHealth::Ready)
            .count()
    }
}

/// A slot taken by a claim: its directory, lock and record.
pub(super) struct ClaimedSlot {
    dir: SlotDir,
    lock: PodLock,
    record: SlotRecord,
    vm: Vm,
}

impl ClaimedSlot {
    /// The slot's name.
    pub(super) fn name(&self) -> &str {
        &self.dir.name
    }
}

/// A unique slot name that sorts by creation time.
fn slot_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:020}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn write_record(slot: &SlotDir, record: &SlotRecord) -> Result<(), RuntimeError> {
    let (path, record) = (slot.record_path(), record.clone());
    blocking::run(move || write_json_atomic(&path, &record)).await?;
    Ok(())
}

/// The slot's record; `None` when missing or unreadable (a fill that died
/// before writing it, or the directory a pod left at adoption).
async fn read_record(slot: &SlotDir) -> Option<SlotRecord> {
    let path = slot.record_path();
    let record: SlotRecord = blocking::run(move || read_json(&path)).await.ok()?;
    (record.format == SLOT_RECORD_FORMAT).then_some(record)
}

/// True when VMs launched with `a` and `b` are the same to a guest: every
/// setting but where the host found its programs (processes of one runtime
/// root may find the same tools by other paths) and the host's TSC
/// frequency, which each process measures and which differs between them by
/// a few kHz.
fn same_vm(a: &VmSettings, b: &VmSettings) -> bool {
    let guest_view = |s: &VmSettings| VmSettings {
        qemu: PathBuf::new(),
        vhost_device_vsock: None,
        virtiofsd: None,
        console_log: PathBuf::new(),
        tsc_khz: None,
        ..s.clone()
    };
    guest_view(a) == guest_view(b)
}

/// True when the slot's VM and its helpers are all alive.
fn vm_alive(vm: &Vm) -> bool {
    vm.is_running() && super::supervise::vm_death(vm.record()).is_none()
}

impl Runtime {
    /// Boots slots of `shape` until the pool holds `count` of them (ready or
    /// being filled by someone), one at a time, and returns the pool's
    /// status. Two fills running at once may overshoot `count`.
    pub async fn fill_pool(
        &self,
        count: usize,
        shape: &PoolShape,
    ) -> Result<PoolStatus, RuntimeError> {
        let span = info_span!("pool");
        async move {
            let config = shape.vm_config();
            let settings = self.vm_settings_of(&config)?;
            let limits = config.host_limits();
            let status = self.pool_status().await?;
            let have = status
                .slots
                .iter()
                .filter(|s| s.shape == *shape && s.health != SlotHealth::Dead)
                .count();
            for _ in have..count {
                let name = self.fill_slot(shape, &config, &settings, limits).await?;
                info!(slot = %name, "pool slot ready");
            }
            self.pool_status().await
        }
        .instrument(span)
        .await
    }

    /// Boots one slot; on failure nothing of it is left.
    async fn fill_slot(
        &self,
        shape: &PoolShape,
        config: &VmConfig,
        settings: &VmSettings,
        limits: CgroupLimits,
    ) -> Result<String, RuntimeError> {
        let vmm_user = self.vmm_user()?;
        let image = ImageStamp::of(settings)?;
        let name = slot_name();
        let (dir, lock) = self.store.create_slot(&name).await?;
        let mut record = SlotRecord {
            format: SLOT_RECORD_FORMAT,
            shape: shape.clone(),
            settings: settings.clone(),
            image,
            host_limits: limits,
            vm: None,
            binds: Vec::new(),
            created_at: now(),
            ready_at: None,
        };
        let filled = self.boot_slot(&dir, &mut record, config, vmm_user).await;
        match filled {
            Ok(()) => Ok(name),
            Err(e) => {
                warn!(slot = %name, error = %e, "pool slot failed to boot; removing it");
                self.discard_slot(dir, lock, Some(record)).await;
                Err(e)
            }
        }
    }

    async fn boot_slot(
        &self,
        dir: &SlotDir,
        record: &mut SlotRecord,
        config: &VmConfig,
        vmm_user: crate::hypervisor::VmmUser,
    ) -> Result<(), RuntimeError> {
        write_record(dir, record).await?;
        // The export, recorded before each bind, as for a pod.
        for target in EXPORT_TARGETS {
            record.binds.push(PathBuf::from(target));
            write_record(dir, record).await?;
            let path = dir.path.clone();
            blocking::run(move || PodShare::open(&path)?.export(target)).await?;
        }
        let permit = self.admission().admit(&dir.name).await?;
        let spec = VmSpec {
            name: Some(format!("pool-{}", dir.name)),
            settings: record.settings.clone(),
            run_dir: dir.vm_dir(),
            shared_dir: Some(dir.shared_dir()),
            netns: None,
            taps: Vec::new(),
            disks: Vec::new(),
            vmm_user: Some(vmm_user),
            cgroup: self.config.host_cgroup.enabled.then(|| CgroupSpec {
                parent: self.config.host_cgroup.parent.clone(),
                name: cgroup::name_for(Some(&dir.name), &dir.vm_dir()),
                limits: record.host_limits,
            }),
        };
        let vm = self.hypervisor.launch(&spec).await?;
        record.vm = Some(vm.record().clone());
        write_record(dir, record).await?;
        let mut deadline = BootDeadline::new(
            permit.admitted_at(),
            super::admission::BOOT_STALL,
            Duration::from_secs(config.boot_timeout_secs.into()),
        );
        match wait_for_agent_ready(&vm, &mut deadline, &dir.name).await {
            Ok(()) => {}
            Err(BootWait::Agent(source)) => {
                return Err(RuntimeError::PoolBootFailed {
                    slot: dir.name.clone(),
                    console_tail: vm.console_tail(30),
                    source: Box::new(source),
                })
            }
            Err(BootWait::Expired(expiry)) => {
                return Err(RuntimeError::PoolBootTimeout {
                    slot: dir.name.clone(),
                    expiry,
                    console_tail: vm.console_tail(30),
                })
            }
        }
        // The agent answers: the slot is ready for a pod to set up.
        connect_agent(&vm, BOOT_CONNECT_DEADLINE)
            .await
            .map_err(|source| RuntimeError::PoolBootFailed {
                slot: dir.name.clone(),
                console_tail: vm.console_tail(30),
                source: Box::new(source),
            })?;
        drop(permit);
        record.ready_at = Some(now());
        write_record(dir, record).await
    }

    /// Stops a slot's VM (or what its interrupted launch left), undoes its
    /// binds and removes it. Never fails: what cannot be removed is logged
    /// and stays for the next drain.
    async fn discard_slot(&self, dir: SlotDir, lock: PodLock, record: Option<SlotRecord>) {
        if let Some(vm) = record.as_ref().and_then(|r| r.vm.clone()) {
            if let Ok(vm) = Vm::from_record(vm) {
                if let Err(e) = vm.stop(SHUTDOWN_GRACE).await {
                    warn!(slot = %dir.name, error = %e, "cannot stop the pool slot's VM");
                }
            }
        }
        self.hypervisor.reap_interrupted_launch(&dir.vm_dir()).await;
        // A slot's only binds are the export, recorded or not (a filler may
        // die between the two): undone by name, which is harmless where
        // nothing is mounted.
        let path = dir.path.clone();
        let unbound = blocking::run(move || {
            let share = PodShare::open(&path)?;
            for target in EXPORT_TARGETS.iter().rev() {
                share.unbind(Path::new(target))?;
            }
            Ok::<_, RuntimeError>(())
        })
        .await;
        if let Err(e) = unbound {
            warn!(slot = %dir.name, error = %e, "cannot undo the pool slot's binds; keeping it");
            return;
        }
        let store = self.store.clone();
        let name = dir.name.clone();
        if let Err(e) = blocking::run(move || store.remove_slot(dir, lock)).await {
            warn!(slot = %name, error = %e, "cannot remove the pool slot");
        } else {
            debug!(slot = %name, "pool slot removed");
        }
    }

    /// Stops and removes every slot (waiting for fills in progress), and
    /// returns how many were removed.
    pub async fn drain_pool(&self) -> Result<usize, RuntimeError> {
        let span = info_span!("pool");
        async move {
            let mut removed = 0;
            for name in self.store.slots()? {
                let Some((dir, lock)) = self.store.lock_slot(&name).await? else {
                    continue;
                };
                let record = read_record(&dir).await;
                self.discard_slot(dir, lock, record).await;
                removed += 1;
            }
            info!(removed, "pool drained");
            Ok(removed)
        }
        .instrument(span)
        .await
    }

    /// Every slot with its age and health. Reads without locking (records are
    /// replaced atomically); a slot whose lock is held is reported busy.
    pub async fn pool_status(&self) -> Result<PoolStatus, RuntimeError> {
        let mut slots = Vec::new();
        let at = now();
        for name in self.store.slots()? {
            let dir = SlotDir {
                path: self.store.root().join("pool").join(&name),
                name: name.clone(),
            };
            let record = read_record(&dir).await;
            let busy = match self.store.try_claim_slot(&name)? {
                Some(_held) => false,
                None => std::fs::symlink_metadata(&dir.path).is_ok(),
            };
            let Some(record) = record else {
                if std::fs::symlink_metadata(&dir.path).is_ok() {
                    slots.push(SlotStatus {
                        name,
                        shape: PoolShape::default(),
                        health: if busy {
                            SlotHealth::Busy
                        } else {
                            SlotHealth::Dead
                        },
                        age_secs: 0,
                        boot_secs: None,
                        processes: Vec::new(),
                    });
                }
                continue;
            };
            let vm = record.vm.clone().and_then(|r| Vm::from_record(r).ok());
            let alive = vm.as_ref().is_some_and(vm_alive);
            let health = match (busy, record.ready_at, alive) {
                (true, _, _) => SlotHealth::Busy,
                (false, Some(_), true) => SlotHealth::Ready,
                _ => SlotHealth::Dead,
            };
            slots.push(SlotStatus {
                name,
                shape: record.shape.clone(),
                health,
                age_secs: at.saturating_sub(record.created_at) / 1000,
                boot_secs: record
                    .ready_at
                    .map(|r| r.saturating_sub(record.created_at) / 1000),
                processes: vm
                    .map(|v| {
                        super::supervise::processes(
                            v.record(),
                            State::Running,
                            self.hypervisor.name(),
                        )
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(PoolStatus { slots })
    }

    /// Claims a ready slot launched with `settings` and `limits`, discarding
    /// every dead or abandoned slot met on the way. `None` when none matches.
    pub(super) async fn claim_slot(
        &self,
        settings: &VmSettings,
        limits: CgroupLimits,
    ) -> Result<Option<ClaimedSlot>, RuntimeError> {
        // Without its image the pod cannot boot cold either; that boot says
        // so.
        let Ok(image) = ImageStamp::of(settings) else {
            return Ok(None);
        };
        for name in self.store.slots()? {
            let Some((dir, lock)) = self.store.try_claim_slot(&name)? else {
                continue;
            };
            let record = match read_record(&dir).await {
                Some(r) if r.ready_at.is_some() && r.vm.is_some() => r,
                other => {
                    // Its filler died (it held the lock while filling), or a
                    // pod left its old directory here at adoption.
                    debug!(slot = %name, "removing an abandoned pool slot");
                    self.discard_slot(dir, lock, other).await;
                    continue;
                }
            };
            if !same_vm(&record.settings, settings) || record.host_limits != limits {
                continue;
            }
            if record.image != image {
                // Booted from a guest image since rebuilt at the same paths:
                // no pod will ever want it.
                info!(slot = %name, "discarding a pool slot booted from a replaced guest image");
                self.discard_slot(dir, lock, Some(record)).await;
                continue;
            }
            let vm = match record.vm.clone().map(Vm::from_record) {
                Some(Ok(vm)) if vm_alive(&vm) => vm,
                _ => {
                    warn!(slot = %name, "a pool slot's VM or helper died; discarding it");
                    self.discard_slot(dir, lock, Some(record)).await;
                    continue;
                }
            };
            return Ok(Some(ClaimedSlot {
                dir,
                lock,
                record,
                vm,
            }));
        }
        Ok(None)
    }

    /// Makes `slot` the pod's VM: writes the pod's configuration and a record
    /// naming the VM at its new paths into the slot's directory, swaps the
    /// two directories, and removes the pod's old one with the slot's lock.
    /// The caller holds the pod's lock and then sets the pod up in the guest.
    pub(super) async fn adopt_slot(
        &self,
        pod: &mut LockedPod,
        slot: ClaimedSlot,
    ) -> Result<Vm, RuntimeError> {
        let ClaimedSlot {
            dir,
            lock,
            record: slot_record,
            vm,
        } = slot;
        let (from, to) = (dir.path.clone(), pod.dir.path.clone());
        let mut vm_record = vm.record().clone();
        vm_record.relocate(&from, &to);
        let mut record = pod.record.clone();
        record.vm = Some(vm_record.clone());
        record.start = Some(StartPhase::Booting);
        record.binds = slot_record.binds.clone();
        let (config, slot_dir) = (pod.config.clone(), dir.clone());
        let (pod_dir, store) = (pod.dir.clone(), self.store.clone());
        let staged = record.clone();
        blocking::run(move || {
            write_json_atomic(&slot_dir.path.join("config.json"), &config)?;
            write_json_atomic(&slot_dir.path.join("state.json"), &staged)?;
            store.exchange_with_slot(&slot_dir, &pod_dir)?;
            // Only now: a journal naming the pod's paths must never be left
            // in a slot that could still be discarded.
            // A journal left unrelocated names files under the slot's path,
            // which holds only the pod's old directory now: harmless.
            let run_dir = pod_dir.vm_dir();
            let relocated = LaunchJournal::read(&run_dir).and_then(|journal| match journal {
                Some(mut journal) => {
                    journal.relocate(&from, &to);
                    journal.write(&run_dir)
                }
                None => Ok(()),
            });
            if let Err(e) = relocated {
                warn!(error = %e, "cannot relocate the adopted VM's launch journal");
            }
            Ok::<_, StoreError>(())
        })
        .await?;
        pod.record = record;
        // The pod's path now holds the VM; the slot's, the pod's old files.
        let (store, pod_dir) = (self.store.clone(), pod.dir.clone());
        let name = dir.name.clone();
        let cleaned = blocking::run(move || {
            let leftover = pod_dir.path.join(crate::store::pool::SLOT_RECORD);
            if let Err(e) = std::fs::remove_file(&leftover) {
                warn!(error = %e, "cannot remove the adopted slot's record");
            }
            store.remove_slot(dir, lock)
        })
        .await;
        if let Err(e) = cleaned {
            warn!(slot = %name, error = %e, "cannot remove the pod's previous directory; the next claim will");
        }
        info!(slot = %name, pid = vm_record.qemu.pid, "adopted a pool slot");
        Ok(Vm::from_record(vm_record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_on_what_the_guest_sees_not_on_host_tool_paths_or_tsc() {
        let a = VmSettings {
            tsc_khz: Some(2_200_000),
            ..crate::hypervisor::config::test_settings()
        };
        let mut b = a.clone();
        b.qemu = PathBuf::from("/elsewhere/qemu-system-x86_64");
        b.console_log = PathBuf::from("/elsewhere/vc-console-log");
        b.tsc_khz = a.tsc_khz.map(|k| k + 3);
        assert!(same_vm(&a, &b));
        b.memory_mib += 64;
        assert!(!same_vm(&a, &b));
        let mut c = a.clone();
        c.kernel_args.push("quiet".to_owned());
        assert!(!same_vm(&a, &c));
    }

    #[test]
    fn a_shape_changes_only_what_it_names() {
        let shape = PoolShape {
            memory_mib: Some(320),
            ..PoolShape::default()
        };
        let vm = shape.vm_config();
        assert_eq!(vm.memory_mib, 320);
        assert_eq!(
            VmConfig {
                memory_mib: VmConfig::default().memory_mib,
                ..vm
            },
            VmConfig::default()
        );
        let parsed: Result<PoolShape, _> = serde_json::from_str(r#"{"memory": 1}"#);
        assert!(parsed.is_err(), "unknown fields are refused");
    }
}
