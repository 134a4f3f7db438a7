//! The runtime's pod start driven through the hypervisor seam by a fake
//! backend: no VM, no QEMU. The fake's "VMM" is a real child process
//! (`sleep`, or a shell that exits at once), so what the runtime does with a
//! VM that fails (stop it, kill it, remove its files, undo the share's binds,
//! clear the record) really runs and is checked afterwards.
//!
//! What this cannot reach: anything after the agent answers (pod setup,
//! containers in the guest, hot-plug calls), which needs a guest; the
//! end-to-end suites cover those with real VMs.
//!
//! Privileged, like the share's tests: the start binds the pod's export.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::record::PodRecord;
use super::share;
use super::{Runtime, RuntimeError};
use crate::config::{ContainerConfig, HostCgroupConfig, PodConfig, RuntimeConfig};
use crate::hypervisor::process::Detached;
use crate::hypervisor::vm::VM_RECORD_FORMAT;
use crate::hypervisor::{
    Accel, BoxFuture, Capabilities, ConfigError, Hypervisor, HypervisorError, ProcessRecord,
    VirtiofsCache, VirtiofsSandbox, Vm, VmConfig, VmRecord, VmSettings, VmSpec, VsockKind,
};
use crate::id::{ContainerId, PodId};
use crate::state::State;
use crate::storage::DiskConfig;
use crate::vsock::VsockAddr;

/// Where the fake fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The VM configuration is refused: nothing may be created.
    Settings,
    /// The launch fails: nothing was started, the start's preparations
    /// (share export) must be undone.
    Launch,
    /// The VMM exits as soon as it is launched: the boot finds it gone.
    VmmExits,
    /// The VMM runs, the guest never says it is ready: the boot times out.
    NeverReady,
}

/// A file the fake puts among the VM's cleanup files: `Vm::stop` must
/// remove it.
const FAKE_SOCKET: &str = "fake.sock";

#[derive(Debug)]
struct FakeHypervisor {
    failure: Mutex<Failure>,
    hotplug_block: bool,
    /// The VMM processes launched.
    launched: Mutex<Vec<ProcessRecord>>,
    /// The disks of the last launch asked for.
    disks: Mutex<Option<usize>>,
    /// Calls of `reap_interrupted_launch`.
    reaps: AtomicUsize,
}

impl FakeHypervisor {
    fn new(failure: Failure, hotplug_block: bool) -> Arc<Self> {
        Arc::new(FakeHypervisor {
            failure: Mutex::new(failure),
            hotplug_block,
            launched: Mutex::new(Vec::new()),
            disks: Mutex::new(None),
            reaps: AtomicUsize::new(0),
        })
    }

    fn failure(&self) -> Failure {
        *self.failure.lock().expect("lock")
    }

    fn launched(&self) -> Vec<ProcessRecord> {
        self.launched.lock().expect("lock").clone()
    }

    async fn launch_fake(&self, spec: &VmSpec) -> Result<Vm, HypervisorError> {
        *self.disks.lock().expect("lock") = Some(spec.disks.len());
        let (program, args): (&str, &[&str]) = match self.failure() {
            Failure::Settings | Failure::Launch => {
                return Err(HypervisorError::QemuNotReady {
                    timeout: Duration::ZERO,
                    qemu_log: "injected".to_owned(),
                    source: None,
                })
            }
            Failure::VmmExits => ("/bin/sh", &["-c", "exit 3"]),
            Failure::NeverReady => ("/bin/sleep", &["120"]),
        };
        let run = &spec.run_dir;
        std::fs::create_dir_all(run).map_err(|source| HypervisorError::RunDir {
            path: run.clone(),
            source,
        })?;
        std::fs::write(run.join(FAKE_SOCKET), b"").map_err(|source| HypervisorError::RunDir {
            path: run.clone(),
            source,
        })?;
        let log = run.join("vmm.log");
        let process = Detached {
            program: Path::new(program),
            args: args.iter().map(Into::into).collect(),
            log: &log,
            netns: None,
            inherit: Vec::new(),
            user: None,
            cwd: None,
            cgroups: Vec::new(),
        }
        .spawn_async()
        .await
        .map_err(|source| HypervisorError::Start {
            what: "fake VMM",
            source,
        })?;
        self.launched.lock().expect("lock").push(process);
        let s = &spec.settings;
        Ok(Vm::new(VmRecord {
            format: VM_RECORD_FORMAT,
            name: spec.name.clone(),
            machine: s.machine,
            accel: s.accel,
            vsock: s.vsock,
            cid: None,
            agent: VsockAddr::Hybrid {
                uds: run.join("vsock.sock"),
            },
            agent_port: s.agent_port,
            run_dir: run.clone(),
            qemu: process,
            daemons: Vec::new(),
            qmp_socket: run.join("qmp.sock"),
            console_log: run.join("console.log"),
            qemu_log: log,
            cleanup: vec![run.join(FAKE_SOCKET)],
            cgroup: None,
        }))
    }
}

impl Hypervisor for FakeHypervisor {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn capabilities(&self, _config: &VmConfig) -> Capabilities {
        Capabilities {
            hotplug_block: self.hotplug_block,
            hotplug_net: self.hotplug_block,
        }
    }

    fn settings(&self, config: &VmConfig) -> Result<VmSettings, HypervisorError> {
        if self.failure() == Failure::Settings {
            return Err(ConfigError::NoKernel.into());
        }
        Ok(VmSettings {
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            machine: config.machine,
            accel: Accel::Tcg,
            vsock: VsockKind::Hybrid,
            kernel: config.kernel.clone().unwrap_or_default(),
            initrd: config.initrd.clone(),
            kernel_args: Vec::new(),
            agent_port: config.agent_port,
            agent_log: config.agent_log.clone(),
            agent_debug: Vec::new(),
            virtiofs_cache: VirtiofsCache::Auto,
            virtiofs_sandbox: VirtiofsSandbox::Namespace,
            qemu: PathBuf::from("/nonexistent/vmm"),
            vhost_device_vsock: None,
            virtiofsd: None,
            tsc_khz: None,
            console_log: PathBuf::from("/nonexistent/console-log"),
            console_max_bytes: config.console_max_bytes,
            tcg_tb_size_mib: config.tcg_tb_size_mib,
            free_page_reporting: config.free_page_reporting,
            guest_lockdown: config.guest_lockdown,
        })
    }

    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Vm, HypervisorError>> {
        Box::pin(self.launch_fake(spec))
    }

    fn reap_interrupted_launch<'a>(&'a self, _run_dir: &'a Path) -> BoxFuture<'a, ()> {
        self.reaps.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {})
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    rt: Runtime,
    fake: Arc<FakeHypervisor>,
}

/// A failed test leaves neither a VMM process nor a mount behind: the
/// runtime's cleanup is what is tested, this only guards the host.
impl Drop for Fixture {
    fn drop(&mut self) {
        for p in self.fake.launched() {
            if p.is_alive() {
                p.kill_now();
            }
        }
        let mut mounts = share::mounts_under(self.tmp.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn fixture(failure: Failure, hotplug_block: bool) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).expect("mkdir");
    std::fs::write(image.join("vmlinuz"), b"k").expect("kernel");
    std::fs::write(image.join("initrd.img"), b"i").expect("initrd");
    let digest = guest_image::FileDigest {
        size: 0,
        sha256: String::new(),
    };
    let manifest = guest_image::Manifest {
        format: guest_image::manifest::MANIFEST_FORMAT,
        kernel_version: "fake".to_owned(),
        agent_version: "fake".to_owned(),
        protocol_version: vc_proto::PROTOCOL_VERSION,
        modules: Vec::new(),
        builtin_modules: Vec::new(),
        agent: digest,
        files: Default::default(),
        inputs_sha256: String::new(),
    };
    std::fs::write(image.join(guest_image::MANIFEST_FILE), manifest.to_json()).expect("manifest");
    std::fs::create_dir(tmp.path().join("rootfs")).expect("rootfs");
    let fake = FakeHypervisor::new(failure, hotplug_block);
    let rt = Runtime::with_hypervisor(
        RuntimeConfig {
            root: tmp.path().join("root"),
            guest_image_dir: image,
            host_cgroup: HostCgroupConfig {
                enabled: false,
                ..HostCgroupConfig::default()
            },
            ..RuntimeConfig::default()
        },
        fake.clone(),
    )
    .expect("runtime");
    Fixture { tmp, rt, fake }
}

impl Fixture {
    /// A pod with one container, booting within 1 s or timing out.
    fn pod(&self, id: &str, disk: bool) -> PodConfig {
        let mut c = ContainerConfig::new(
            ContainerId::new("c1").expect("id"),
            self.tmp.path().join("rootfs"),
            vec!["/bin/true".to_owned()],
        );
        if disk {
            let image = self.tmp.path().join("disk.img");
            std::fs::write(&image, vec![0u8; 4096]).expect("disk image");
            c.disks.push(DiskConfig {
                image,
                container_path: "/data".to_owned(),
                fstype: "ext4".to_owned(),
                readonly: false,
            });
        }
        let mut pod = PodConfig::new(PodId::new(id).expect("id"));
        pod.vm.boot_timeout_secs = 1;
        pod.containers.push(c);
        pod
    }

    fn record(&self, id: &PodId) -> PodRecord {
        let dir = self.rt.store().pod(id).expect("pod dir");
        dir.read(&dir.state_path()).expect("record")
    }

    /// What a failed start must leave: the pod ready, no start or VM in its
    /// record, its container ready, nothing mounted under its directory, no
    /// VMM process and no VM file.
    fn assert_clean_after_failed_start(&self, id: &PodId) {
        let record = self.record(id);
        assert_eq!(record.state, State::Ready);
        assert_eq!(record.start, None, "no start recorded as under way");
        assert!(record.vm.is_none(), "no VM recorded");
        assert!(record.binds.is_empty(), "{:?}", record.binds);
        assert!(record.containers.values().all(|c| c.state == State::Ready));
        let dir = self.rt.store().pod(id).expect("pod dir");
        assert!(
            share::mounts_under(&dir.path).is_empty(),
            "{:?}",
            share::mounts_under(&dir.path)
        );
        for p in self.fake.launched() {
            assert!(!p.is_alive(), "the VMM {} was left running", p.pid);
        }
        assert!(!dir.vm_dir().join(FAKE_SOCKET).exists(), "VM files left");
    }

    /// Deletes the pod and checks nothing of it is left.
    async fn delete_and_check(&self, id: &PodId) {
        let dir = self.rt.store().pod(id).expect("pod dir").path;
        let reaps = self.fake.reaps.load(Ordering::Relaxed);
        self.rt.delete_pod(id).await.expect("delete");
        assert!(!dir.exists(), "pod directory left");
        assert!(self.rt.store().list().expect("list").is_empty());
        assert!(
            self.fake.reaps.load(Ordering::Relaxed) > reaps,
            "delete asks the hypervisor to reap an interrupted launch"
        );
    }
}

#[tokio::test]
async fn refused_settings_create_nothing() {
    let f = fixture(Failure::Settings, false);
    let pod = f.pod("refused", false);
    let err = f.rt.create_pod(pod).await.expect_err("refused");
    assert!(
        matches!(err, RuntimeError::Hypervisor(HypervisorError::Config(_))),
        "{err:?}"
    );
    assert!(f.rt.store().list().expect("list").is_empty());
    assert!(f.fake.launched().is_empty());
}

#[tokio::test]
async fn a_failed_launch_undoes_the_start() {
    let f = fixture(Failure::Launch, false);
    let pod = f.pod("launch", false);
    let id = pod.id.clone();
    f.rt.create_pod(pod).await.expect("create");
    let err = f.rt.start_pod(&id).await.expect_err("launch fails");
    assert!(
        matches!(
            err,
            RuntimeError::Hypervisor(HypervisorError::QemuNotReady { .. })
        ),
        "{err:?}"
    );
    f.assert_clean_after_failed_start(&id);
    // The pod can be started again, and fails the same clean way.
    f.rt.start_pod(&id).await.expect_err("launch fails again");
    f.assert_clean_after_failed_start(&id);
    f.delete_and_check(&id).await;
}

#[tokio::test]
async fn a_vmm_that_exits_during_boot_is_cleaned_up() {
    let f = fixture(Failure::VmmExits, false);
    let pod = f.pod("exits", false);
    let id = pod.id.clone();
    f.rt.create_pod(pod).await.expect("create");
    let err = f.rt.start_pod(&id).await.expect_err("boot fails");
    assert!(matches!(err, RuntimeError::BootFailed { .. }), "{err:?}");
    assert_eq!(f.fake.launched().len(), 1);
    f.assert_clean_after_failed_start(&id);
    f.delete_and_check(&id).await;
}

#[tokio::test]
async fn a_boot_that_times_out_kills_the_vmm() {
    let f = fixture(Failure::NeverReady, false);
    let pod = f.pod("silent", false);
    let id = pod.id.clone();
    f.rt.create_pod(pod).await.expect("create");
    let err = f.rt.start_pod(&id).await.expect_err("boot times out");
    assert!(matches!(err, RuntimeError::BootTimeout { .. }), "{err:?}");
    assert_eq!(f.fake.launched().len(), 1);
    f.assert_clean_after_failed_start(&id);
    f.delete_and_check(&id).await;
}

#[tokio::test]
async fn boot_disks_follow_the_hotplug_capability() {
    for (hotplug_block, expected) in [(false, 1), (true, 0)] {
        let f = fixture(Failure::Launch, hotplug_block);
        let pod = f.pod("disks", true);
        let id = pod.id.clone();
        f.rt.create_pod(pod).await.expect("create");
        f.rt.start_pod(&id).await.expect_err("launch fails");
        assert_eq!(
            *f.fake.disks.lock().expect("lock"),
            Some(expected),
            "hotplug_block {hotplug_block}"
        );
        f.assert_clean_after_failed_start(&id);
        f.delete_and_check(&id).await;
    }
}

#[tokio::test]
async fn a_container_with_disks_joins_a_running_pod_only_with_hotplug() {
    // The refusal comes before any guest call, so a pod recorded running
    // is enough; the VMM is a `sleep` the test stops through the runtime.
    let f = fixture(Failure::NeverReady, false);
    let pod = f.pod("running", false);
    let id = pod.id.clone();
    f.rt.create_pod(pod).await.expect("create");
    let vm = f
        .fake
        .launch(&VmSpec::new(
            f.fake.settings(&VmConfig::default()).expect("settings"),
            f.rt.store().pod(&id).expect("dir").vm_dir(),
        ))
        .await
        .expect("fake launch");
    let (dir, lock) = f.rt.store().lock_pod(&id).await.expect("lock");
    let mut record = f.record(&id);
    record.state = State::Running;
    record.vm = Some(vm.record().clone());
    dir.write(&dir.state_path(), &record).expect("write");
    drop(lock);
    let mut c = f.pod("running", true).containers.remove(0);
    c.id = ContainerId::new("c2").expect("id");
    let err = f.rt.create_container(&id, c).await.expect_err("no hotplug");
    assert!(
        matches!(err, RuntimeError::HotplugUnsupported { .. }),
        "{err:?}"
    );
    let status = f.rt.pod_status(&id).await.expect("status");
    assert_eq!(status.state, State::Running);
    assert_eq!(
        status.processes[0].name, "fake",
        "the VMM is listed under the backend's name"
    );
    // The VMM dies: the pod is found broken, and stop cleans up without
    // asking an agent.
    let vmm = f.fake.launched()[0];
    vmm.kill(Duration::from_secs(5))
        .await
        .expect("kill the VMM");
    let status = f.rt.pod_status(&id).await.expect("status");
    assert_eq!(status.state, State::Broken);
    assert_eq!(status.broken.map(|d| d.pid), Some(vmm.pid));
    f.rt.stop_pod(&id).await.expect("stop");
    let record = f.record(&id);
    assert_eq!(record.state, State::Stopped);
    assert!(record.vm.is_none());
    assert!(!vmm.is_alive());
    let vm_dir = f.rt.store().pod(&id).expect("dir").vm_dir();
    assert!(!vm_dir.join(FAKE_SOCKET).exists(), "VM files left");
    f.delete_and_check(&id).await;
}
