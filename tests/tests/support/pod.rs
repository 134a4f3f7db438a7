//! A test harness around [`vc_host::Runtime`]: a private runtime root, the guest
//! image and rootfs located (or a failure naming the command that builds them),
//! and a guard that, when the test ends, prints every pod's console and daemon
//! logs if the test failed (panicked, or returned before deleting its pods),
//! then stops and deletes whatever pods are left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use vc_host::agent::{collect_output, Output};
use vc_host::config::{ContainerConfig, HostCgroupConfig, PodConfig, RuntimeConfig};
use vc_host::id::{ContainerId, PodId};
use vc_host::Runtime;
use vc_proto::ProcessRef;

use super::{find_tool, log_tail, rootfs_dir, GuestImage};

/// When set to a number N, every [`TestRuntime`] fills its warm pool with N
/// slots of the default shape before the test uses it, so that the test's
/// pods adopt pooled VMs (`cargo xtask test` runs some suites this way).
pub const POOL_ENV: &str = "VC_TEST_POOL";

/// Generous bound for the cleanup on drop (stop and delete every pod left,
/// drain the pool).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// A runtime with its own root, cleaned up on drop.
#[derive(Debug)]
pub struct TestRuntime {
    /// The runtime under test.
    pub rt: Runtime,
    /// The guest image in use.
    pub image: GuestImage,
    /// The busybox rootfs.
    pub rootfs: PathBuf,
    root: tempfile::TempDir,
}

impl TestRuntime {
    /// Finds QEMU, the helper daemons, the guest image and the rootfs, and opens
    /// a runtime on a fresh root under /tmp (kept short: socket paths live there).
    pub fn new() -> Result<Self> {
        Self::with_image(GuestImage::locate()?)
    }

    /// [`TestRuntime::new`] booting `image`.
    pub fn with_image(image: GuestImage) -> Result<Self> {
        for tool in ["qemu-system-x86_64", "vhost-device-vsock", "virtiofsd"] {
            find_tool(tool)?;
        }
        // Builds vc-console-log too, which the library finds beside the
        // test binary's profile directory.
        super::virtc::virtc_path()?;
        let rootfs = rootfs_dir()?;
        let root = tempfile::Builder::new()
            .prefix("vc")
            .tempdir_in("/tmp")
            .context("cannot create a runtime root")?;
        // Pods' host cgroups go under a parent of this runtime's own, so
        // leak checks see only its pods.
        let cgroup_name = root
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rt = Runtime::new(RuntimeConfig {
            root: root.path().to_owned(),
            guest_image_dir: image.dir.clone(),
            host_cgroup: HostCgroupConfig {
                enabled: true,
                parent: format!("vc-test-{cgroup_name}").into(),
            },
            ..RuntimeConfig::default()
        })?;
        let t = Self {
            rt,
            image,
            rootfs,
            root,
        };
        if let Some(n) = pool_size()? {
            t.fill_pool(n)?;
        }
        Ok(t)
    }

    /// Fills the pool with `n` slots of the default shape, from a thread of
    /// its own (this may run inside the test's async runtime).
    fn fill_pool(&self, n: usize) -> Result<()> {
        let rt = self.rt.clone();
        std::thread::spawn(move || -> Result<()> {
            let tokio_rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = tokio_rt.block_on(rt.fill_pool(n, &Default::default()))?;
            anyhow::ensure!(status.ready() == n, "the pool did not fill: {status:?}");
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the pool filler panicked"))?
        .with_context(|| format!("cannot fill the warm pool ({POOL_ENV}={n})"))
    }

    /// The runtime root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A pod configuration with defaults.
    pub fn pod(&self, id: &str) -> PodConfig {
        PodConfig::new(PodId::new(id).expect("valid pod id"))
    }

    /// A busybox container running `command`.
    pub fn container(&self, id: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig::new(
            ContainerId::new(id).expect("valid container id"),
            &self.rootfs,
            command.iter().map(|s| s.to_string()).collect(),
        )
    }

    /// Creates and starts a container in a running pod and collects its
    /// output (two minutes at most).
    pub async fn run_container(&self, pod: &PodId, config: ContainerConfig) -> Result<Output> {
        let main = self.start_container(pod, config).await?;
        self.output(pod, &main).await
    }

    /// Creates and starts a container in a running pod; returns its main
    /// process.
    pub async fn start_container(
        &self,
        pod: &PodId,
        config: ContainerConfig,
    ) -> Result<ProcessRef> {
        let id = config.id.clone();
        self.rt.create_container(pod, config).await?;
        self.rt.start_container(pod, &id).await?;
        Ok(ProcessRef {
            container_id: id.to_string(),
            exec_id: None,
        })
    }

    /// Collects a process's output until it exits (two minutes at most).
    pub async fn output(&self, pod: &PodId, process: &ProcessRef) -> Result<Output> {
        let agent = self.rt.pod_agent(pod).await?;
        let output =
            tokio::time::timeout(Duration::from_secs(120), collect_output(&agent, process))
                .await
                .context("the container did not finish")??;
        Ok(output)
    }

    /// Every file under the pods directory (for leak checks).
    pub fn leftover_pods(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root().join("pods"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Every pool slot directory (for leak checks).
    pub fn leftover_slots(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root().join("pool"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Mount points under the runtime root, but the export of each idle
    /// pool slot (`mounts` on itself and `shared`), which the pool owns and
    /// drains when the runtime is dropped (see [`POOL_ENV`];
    /// [`Self::leftover_slots`] lists the slots).
    pub fn leftover_mounts(&self) -> Vec<PathBuf> {
        use vc_host::runtime::share::EXPORT_TARGETS;
        let pool = self.root().join("pool");
        vc_host::runtime::share::mounts_under(self.root())
            .into_iter()
            .filter(|m| {
                !(EXPORT_TARGETS.iter().any(|t| m.ends_with(t))
                    && m.parent().and_then(|p| p.parent()) == Some(pool.as_path()))
            })
            .collect()
    }

    /// Container bind mounts under the runtime root: every mount but each
    /// pod's export (`mounts` on itself and `shared`), which a running pod has.
    pub fn leftover_binds(&self) -> Vec<PathBuf> {
        use vc_host::runtime::share::EXPORT_TARGETS;
        self.leftover_mounts()
            .into_iter()
            .filter(|m| {
                !EXPORT_TARGETS.iter().any(|t| {
                    m.ends_with(t)
                        && m.parent().and_then(|p| p.parent()) == Some(&self.root().join("pods"))
                })
            })
            .collect()
    }

    /// This runtime's parent cgroup directories (one per hierarchy on v1).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        cgroup_parents(&self.rt.config().host_cgroup.parent)
    }

    /// Pod cgroups left under this runtime's parent cgroups.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroups_under(&self.cgroup_parents())
    }

    /// The processes in this runtime's pod cgroups: every QEMU and helper
    /// its pods run, whether or not a record names them.
    pub fn cgroup_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .leftover_cgroups()
            .iter()
            .filter_map(|c| std::fs::read_to_string(c.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Prints the console and daemon logs of every pod.
    pub fn print_logs(&self) {
        for pod in self
            .leftover_pods()
            .into_iter()
            .chain(self.leftover_slots())
        {
            let vm = pod.join("vm");
            let Ok(entries) = std::fs::read_dir(&vm) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "log") {
                    eprintln!("{}", log_tail(&path, 80));
                }
            }
        }
    }
}

/// The directories of the parent cgroup `parent` of pods (one per hierarchy on v1), as a
/// runtime started by this process places it.
pub fn cgroup_parents(parent: &Path) -> Vec<PathBuf> {
    let spec = vc_host::hypervisor::CgroupSpec {
        parent: parent.to_owned(),
        name: "probe".to_owned(),
        limits: vc_host::hypervisor::CgroupLimits {
            memory_bytes: 0,
            pids_max: 0,
        },
    };
    vc_host::hypervisor::cgroup::CgroupFacts::probe()
        .and_then(|facts| vc_host::hypervisor::cgroup::plan(&facts, &spec))
        .map(|plan| {
            plan.dirs
                .iter()
                .filter_map(|d| d.parent().map(Path::to_path_buf))
                .collect()
        })
        .unwrap_or_default()
}

/// The pool size [`POOL_ENV`] asks for, if any.
fn pool_size() -> Result<Option<usize>> {
    match std::env::var(POOL_ENV) {
        Ok(v) if v.is_empty() || v == "0" => Ok(None),
        Ok(v) => Ok(Some(v.parse().with_context(|| {
            format!("{POOL_ENV}={v:?} is not a number of slots")
        })?)),
        Err(_) => Ok(None),
    }
}

/// The cgroups (directories) under these parent cgroups.
pub fn cgroups_under(parents: &[PathBuf]) -> Vec<PathBuf> {
    parents
        .iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect()
}

/// True when no process has this pid (a zombie counts as gone).
pub fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Waits up to `timeout` for every pid to be gone.
pub fn wait_pids_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if pids.iter().all(|p| pid_gone(*p)) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        // A test that failed panicked, or returned an error before deleting
        // its pods: either way, show what the guests and daemons said.
        if std::thread::panicking() || !self.leftover_pods().is_empty() {
            eprintln!("test failed or left pods behind; logs of its pods follow");
            self.print_logs();
        }
        // Clean up on a fresh runtime in its own thread: drop may run inside
        // the test's async runtime, which cannot be blocked on.
        // Bounded: a cleanup stuck (on a pod lock a hung verb still holds,
        // say) is reported and left behind rather than hanging the test.
        let rt = self.rt.clone();
        let (done, cleaned) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok(tokio_rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            tokio_rt.block_on(async {
                let Ok(pods) = rt.list_pods().await else {
                    return;
                };
                for pod in pods {
                    let _ = rt.stop_pod(&pod.id).await;
                    let _ = rt.delete_pod(&pod.id).await;
                }
                let _ = rt.drain_pool().await;
            });
            let _ = done.send(());
        });
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            cleaned.recv_timeout(CLEANUP_TIMEOUT)
        {
            eprintln!("the test runtime's cleanup did not end within {CLEANUP_TIMEOUT:?}");
        }
        // The parent cgroups are this runtime's own; empty now unless a pod
        // leaked, which the test's own checks report.
        for dir in self.cgroup_parents() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
