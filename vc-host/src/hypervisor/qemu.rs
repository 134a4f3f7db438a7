//! The QEMU implementation of [`Hypervisor`]: start the helper daemons, wait
//! for their sockets, open everything QEMU needs and hand it over as
//! descriptors ([`super::confine`]), start QEMU (as the unprivileged VMM user,
//! in the pod's network namespace when given), wait for its monitor to
//! answer, and hand back a [`Vm`]. Any failure on the way stops everything
//! already started and reports the relevant logs.

use std::fs::File;
use std::os::fd::RawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, info_span, warn, Instrument};

use super::argv::{QemuCommand, QemuFds};
use super::backend::{BoxFuture, Capabilities};
use super::cgroup::{self, CgroupFacts, CgroupJoin, CgroupRecord};
use super::cid::CidAllocator;
use super::config::{Accel, ConfigError, Machine, VmConfig, VmSettings, VsockKind};
use super::confine::{daemon_dir, Handoff};
use super::daemons::{
    connect_when_listening, console_log_args, effective_sandbox, side_files,
    vhost_device_vsock_args, virtiofsd_args, DaemonKind, SocketWait,
};
use super::journal::{journal_path, LaunchJournal};
use super::process::{Detached, ProcessRecord};
use super::qmp::{Qmp, QmpError};
use super::spec::{RunLayout, VmSpec};
use super::tools::{ToolError, ToolSearch, VIRTIOFSD};
use super::vm::{
    console_tail, remove_files, tail_file, DaemonRecord, Vm, VmRecord, VM_RECORD_FORMAT,
};
use super::watch::QEMU as QEMU_PROCESS;
use super::{Hypervisor, HypervisorError};
use crate::vsock::VsockAddr;

/// How long a helper daemon gets to create its socket.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long QEMU gets to answer on its monitor.
const QEMU_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of log put into a launch error.
const ERROR_TAIL_LINES: usize = 20;

/// Longest network interface name (`IFNAMSIZ` - 1).
const MAX_IFNAME: usize = 15;

/// Launches VMs with QEMU.
#[derive(Debug, Clone)]
pub struct QemuHypervisor {
    cids: CidAllocator,
}

impl QemuHypervisor {
    /// A hypervisor keeping host-wide state (the kernel vsock CID locks,
    /// `<state_dir>/vsock-cids`) under `state_dir`, normally the runtime
    /// root shared by every pod of the host.
    pub fn new(state_dir: impl AsRef<Path>) -> Self {
        QemuHypervisor {
            cids: CidAllocator::new(state_dir.as_ref().join("vsock-cids")),
        }
    }

    /// A hypervisor with a given CID allocator.
    pub fn with_cid_allocator(cids: CidAllocator) -> Self {
        QemuHypervisor { cids }
    }
}

impl Hypervisor for QemuHypervisor {
    fn name(&self) -> &'static str {
        QEMU_PROCESS
    }

    /// Hot-plug needs PCIe root ports: q35 has them, microvm has no hotplug.
    fn capabilities(&self, config: &VmConfig) -> Capabilities {
        Capabilities {
            hotplug_block: config.machine == Machine::Q35,
            hotplug_net: config.machine == Machine::Q35,
        }
    }

    fn settings(&self, config: &VmConfig) -> Result<VmSettings, HypervisorError> {
        Ok(config.validate()?)
    }

    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Vm, HypervisorError>> {
        Box::pin(self.launch_and_clean_up(spec))
    }

    fn reap_interrupted_launch<'a>(&'a self, run_dir: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            super::journal::reap(run_dir).await;
        })
    }
}

impl QemuHypervisor {
    /// [`Hypervisor::launch`]: a failed launch stops what it started before
    /// returning.
    async fn launch_and_clean_up(&self, spec: &VmSpec) -> Result<Vm, HypervisorError> {
        let span = info_span!("vm", name = spec.name.as_deref().unwrap_or(""));
        let mut started = None;
        let launched = self
            .launch_inner(spec, &mut started)
            .instrument(span.clone())
            .await;
        // A failed launch stops what it started before returning, without
        // blocking the caller's thread; a dropped one leaves it to the
        // guard's `Drop`.
        if let (Err(_), Some(started)) = (&launched, started) {
            started.stop().instrument(span).await;
        }
        launched
    }
}

/// What a launch has started so far. A failed launch [`Self::stop`]s it:
/// kills all of it and removes the sockets and the cgroup. Dropped while
/// still armed (the launch future dropped half-way), it does the same on the
/// blocking pool. [`Self::journal`] keeps a copy on disk for a launcher that
/// dies without dropping anything ([`super::journal`]).
#[derive(Debug)]
struct Started {
    run_dir: PathBuf,
    daemons: Vec<DaemonRecord>,
    qemu: Option<ProcessRecord>,
    cleanup: Vec<PathBuf>,
    cgroup: Option<CgroupRecord>,
    /// The cgroup's open `cgroup.procs` files every child joins.
    join: Vec<RawFd>,
    armed: bool,
}

impl Started {
    fn new(run_dir: &Path) -> Self {
        Started {
            run_dir: run_dir.to_path_buf(),
            daemons: Vec::new(),
            qemu: None,
            cleanup: Vec::new(),
            cgroup: None,
            join: Vec::new(),
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Writes what is started so far to the run directory's launch journal
    /// (fsynced, on the blocking pool).
    async fn journal(&self) -> Result<(), HypervisorError> {
        let journal = LaunchJournal {
            qemu: self.qemu,
            daemons: self.daemons.iter().map(|d| d.process).collect(),
            cleanup: self.cleanup.clone(),
            cgroup: self.cgroup.clone(),
        };
        let run_dir = self.run_dir.clone();
        crate::blocking::run(move || journal.write(&run_dir))
            .await
            .map_err(HypervisorError::Journal)
    }

    /// The processes started, QEMU first.
    fn processes(&self) -> Vec<ProcessRecord> {
        self.qemu
            .iter()
            .copied()
            .chain(self.daemons.iter().map(|d| d.process))
            .collect()
    }

    /// Stops what was started (unless disarmed): SIGKILL and an async wait
    /// for each process, then the files and the cgroup. Disarmed only at the
    /// end: if this is dropped half-way, `Drop` does it all again (every
    /// step is idempotent).
    async fn stop(mut self) {
        if !self.armed {
            return;
        }
        for p in self.processes() {
            if let Err(e) = p.kill(FAILED_LAUNCH_KILL_WAIT).await {
                warn!(pid = p.pid, error = %e, "cannot kill a process of a failed launch");
            }
        }
        let files = self.cleanup.clone();
        crate::blocking::run(move || remove_files(&files)).await;
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = cgroup::remove(cgroup).await {
                warn!(error = %e, "cannot remove the VM's host cgroup");
            }
        }
        self.disarm();
    }
}

/// How long each process of a failed launch gets to be gone after SIGKILL.
const FAILED_LAUNCH_KILL_WAIT: Duration = Duration::from_secs(1);

impl Drop for Started {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let processes = self.processes();
        let files = std::mem::take(&mut self.cleanup);
        let cgroup = self.cgroup.take();
        // Killing waits for each process to be reaped: not on the thread
        // that dropped the launch.
        crate::blocking::detach(move || {
            for p in processes {
                p.kill_now();
            }
            remove_files(&files);
            if let Some(cgroup) = &cgroup {
                if let Err(e) = cgroup::remove_blocking(cgroup) {
                    warn!(error = %e, "cannot remove the VM's host cgroup");
                }
            }
        });
    }
}

fn daemon_error(kind: DaemonKind, socket: &Path, log: &Path, why: SocketWait) -> HypervisorError {
    let log_tail = tail_file(log, ERROR_TAIL_LINES);
    match why {
        SocketWait::Died => HypervisorError::DaemonDied {
            daemon: kind,
            log_tail,
        },
        SocketWait::TimedOut => HypervisorError::DaemonTimeout {
            daemon: kind,
            socket: socket.to_path_buf(),
            timeout: DAEMON_START_TIMEOUT,
            log_tail,
        },
        SocketWait::Connect(source) => HypervisorError::DaemonConnect {
            daemon: kind,
            socket: socket.to_path_buf(),
            source,
        },
    }
}

impl QemuHypervisor {
    /// Launches the VM; what it starts is kept in `started` (for [`Hypervisor::launch`] to
    /// stop if this fails).
    async fn launch_inner(
        &self,
        spec: &VmSpec,
        started: &mut Option<Started>,
    ) -> Result<Vm, HypervisorError> {
        let t0 = Instant::now();
        let s = &spec.settings;
        let layout = RunLayout::new(&spec.run_dir);

        // Everything that can be checked is checked before anything starts.
        if let Some(path) = layout.too_long_socket() {
            return Err(HypervisorError::SocketPathTooLong {
                path: path.to_path_buf(),
            });
        }
        let vsock_bin = match s.vsock {
            VsockKind::Hybrid => Some(s.vhost_device_vsock.clone().ok_or(ConfigError::Tool(
                ToolError::BinaryNotFound {
                    name: DaemonKind::VhostDeviceVsock.name(),
                    searched: "the settings".to_owned(),
                },
            ))?),
            VsockKind::Kernel => None,
        };
        let fs = match &spec.shared_dir {
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(HypervisorError::SharedDir { path: dir.clone() });
                }
                let bin = match &s.virtiofsd {
                    Some(b) => b.clone(),
                    None => ToolSearch::from_env()
                        .resolve(VIRTIOFSD, None)
                        .map_err(ConfigError::from)?,
                };
                Some((bin, dir.clone()))
            }
            None => None,
        };
        for tap in &spec.taps {
            if tap.ifname.is_empty() || tap.ifname.len() > MAX_IFNAME || tap.ifname.contains('/') {
                return Err(HypervisorError::TapName {
                    ifname: tap.ifname.clone(),
                });
            }
        }
        let netns = match &spec.netns {
            Some(path) => Some(File::open(path).map_err(|source| HypervisorError::Netns {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let user = spec.vmm_user.as_ref();
        if let (Some(user), Accel::Kvm) = (user, s.accel) {
            user.check_kvm()?;
        }
        // 0700 and root's: the sockets control the VM and the logs hold what
        // the guest printed. QEMU reaches nothing in it by path.
        let run_dir_error = |source| HypervisorError::RunDir {
            path: layout.dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&layout.dir)
            .map_err(run_dir_error)?;
        std::fs::set_permissions(&layout.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(run_dir_error)?;

        let started = started.insert(Started::new(&layout.dir));
        started.cleanup.push(layout.qmp_socket.clone());
        started.cleanup.push(layout.console_socket.clone());
        if s.vsock == VsockKind::Hybrid {
            started.cleanup.push(layout.vsock_vhost_socket.clone());
            started.cleanup.push(layout.vsock_uds.clone());
            started.cleanup.push(layout.vsock_dir.clone());
        }
        if fs.is_some() {
            started.cleanup.push(layout.fs_socket.clone());
            started
                .cleanup
                .extend(side_files(DaemonKind::Virtiofsd, &layout.fs_socket));
        }
        // A live monitor means another VM uses this run directory; anything
        // else there is a leftover that would pass for a fresh socket.
        if std::os::unix::net::UnixStream::connect(&layout.qmp_socket).is_ok() {
            started.disarm();
            return Err(HypervisorError::RunDirInUse {
                path: layout.dir.clone(),
            });
        }
        remove_files(&started.cleanup);
        // The journal goes with the sockets: removed by a failed launch and
        // by `Vm::stop`.
        started.cleanup.push(journal_path(&layout.dir));

        // Every process joins the pod's cgroup in its child, before exec.
        let join = match spec.cgroup.clone() {
            Some(cg) => {
                // cgroupfs calls (mkdir, limits) on the blocking pool.
                let record = crate::blocking::run(move || {
                    let plan = cgroup::plan(&CgroupFacts::probe()?, &cg)?;
                    cgroup::create(&plan, cg.limits)
                })
                .await?;
                started.cgroup = Some(record.clone());
                debug!(dirs = ?record.dirs, limits = ?record.limits, "host cgroup created");
                started.journal().await?;
                Some(CgroupJoin::open(&record)?)
            }
            None => None,
        };
        started.join = join.as_ref().map(CgroupJoin::fds).unwrap_or_default();
        let cgroups = started.join.clone();

        let cid_lease = match s.vsock {
            VsockKind::Kernel => Some(self.cids.allocate()?),
            VsockKind::Hybrid => None,
        };

        // The console logger first: it holds the console from QEMU's first
        // byte on.
        // It stays root: the launcher connects to its socket and hands the
        // connection to QEMU, which reaches nothing in the run directory.
        self.start_daemon(
            started,
            DaemonKind::ConsoleLog,
            Detached {
                program: &s.console_log,
                args: console_log_args(
                    &layout.console_socket,
                    &layout.console_log,
                    s.console_max_bytes,
                ),
                log: &layout.console_logger_log,
                netns: None,
                inherit: Vec::new(),
                user: None,
                cwd: None,
                cgroups: cgroups.clone(),
            },
            &layout.console_socket,
        )
        .await?;
        if let Some(bin) = &vsock_bin {
            // The unprivileged daemon makes its sockets in a directory of its
            // own, named relative to it.
            daemon_dir(&layout.vsock_dir, user)?;
            let args = vhost_device_vsock_args(
                Path::new(file_name(&layout.vsock_vhost_socket)),
                Path::new(file_name(&layout.vsock_uds)),
            );
            self.start_daemon(
                started,
                DaemonKind::VhostDeviceVsock,
                Detached {
                    program: bin,
                    args,
                    log: &layout.vsock_log,
                    netns: None,
                    inherit: Vec::new(),
                    user,
                    cwd: Some(&layout.vsock_dir),
                    cgroups: cgroups.clone(),
                },
                &layout.vsock_vhost_socket,
            )
            .await?;
        }
        if let Some((bin, dir)) = &fs {
            // virtiofsd keeps root (it serves files as the guest's uids)
            // inside its own sandbox.
            let sandbox = effective_sandbox(s.virtiofs_sandbox, dir);
            let args = virtiofsd_args(&layout.fs_socket, dir, s.virtiofs_cache, sandbox);
            self.start_daemon(
                started,
                DaemonKind::Virtiofsd,
                Detached {
                    program: bin,
                    args,
                    log: &layout.fs_log,
                    netns: None,
                    inherit: Vec::new(),
                    user: None,
                    cwd: None,
                    cgroups: cgroups.clone(),
                },
                &layout.fs_socket,
            )
            .await?;
        }
        let mut connections = Vec::new();
        for d in &started.daemons {
            let stream = connect_when_listening(&d.socket, &d.process, DAEMON_START_TIMEOUT)
                .await
                .map_err(|why| daemon_error(d.kind, &d.socket, &d.log, why))?;
            connections.push((d.kind, stream));
        }
        let daemons_ready = t0.elapsed();
        crate::fault::point("start.helpers-spawned");

        let cid = cid_lease.as_ref().map(|l| l.cid());
        let taps = open_taps(spec, netns.as_ref()).await?;
        let (mut handoff, fds) = hand_over(spec, &layout, taps, connections)?;
        let cmd = QemuCommand::build(spec, &fds, cid);
        let args = cmd.args();
        debug!(program = %cmd.program.display(), ?args, user = user.map(|u| u.name.as_str()), "starting QEMU");
        if let Some(lease) = &cid_lease {
            handoff.also(lease.fd());
        }
        let qemu = Detached {
            program: &cmd.program,
            args,
            log: &layout.qemu_log,
            netns: netns.as_ref(),
            inherit: handoff.raw(),
            user,
            cwd: None,
            cgroups,
        }
        .spawn_async()
        .await
        .map_err(|source| HypervisorError::Start {
            what: "QEMU",
            source,
        })?;
        started.qemu = Some(qemu);
        started.journal().await?;
        crate::fault::point("start.qemu-spawned");
        // QEMU holds the CID lock and every handed-over descriptor from here
        // on.
        drop(cid_lease);
        drop(handoff);

        wait_for_monitor(&qemu, &layout).await?;
        started.disarm();

        let agent = match cid {
            Some(cid) => VsockAddr::Kernel { cid },
            None => VsockAddr::Hybrid {
                uds: layout.vsock_uds.clone(),
            },
        };
        let record = VmRecord {
            format: VM_RECORD_FORMAT,
            name: spec.name.clone(),
            machine: s.machine,
            accel: s.accel,
            vsock: s.vsock,
            cid,
            agent,
            agent_port: s.agent_port,
            run_dir: layout.dir.clone(),
            qemu,
            daemons: std::mem::take(&mut started.daemons),
            qmp_socket: layout.qmp_socket.clone(),
            console_log: layout.console_log.clone(),
            qemu_log: layout.qemu_log.clone(),
            cleanup: std::mem::take(&mut started.cleanup),
            cgroup: started.cgroup.take(),
        };
        info!(
            pid = qemu.pid,
            machine = ?s.machine,
            accel = ?s.accel,
            agent = %record.agent,
            daemons = record.daemons.len(),
            daemons_ms = daemons_ready.as_millis() as u64,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "VM launched"
        );
        Ok(Vm::new(record))
    }

    async fn start_daemon(
        &self,
        started: &mut Started,
        kind: DaemonKind,
        daemon: Detached<'_>,
        socket: &Path,
    ) -> Result<(), HypervisorError> {
        debug!(
            daemon = %kind,
            program = %daemon.program.display(),
            args = ?daemon.args,
            user = daemon.user.map(|u| u.name.as_str()),
            "starting helper daemon"
        );
        let process = daemon
            .spawn_async()
            .await
            .map_err(|source| HypervisorError::Start {
                what: kind.name(),
                source,
            })?;
        started.daemons.push(DaemonRecord {
            kind,
            process,
            socket: socket.to_path_buf(),
            log: daemon.log.to_path_buf(),
        });
        started.journal().await
    }
}

/// The last component of a run-directory path (always present: the layout
/// makes them).
fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// Opens one queue of each of the VM's taps, inside its network namespace,
/// on a thread of its own (`setns`) that the blocking pool waits for.
async fn open_taps(
    spec: &VmSpec,
    netns: Option<&File>,
) -> Result<Vec<std::os::fd::OwnedFd>, HypervisorError> {
    let names: Vec<String> = spec.taps.iter().map(|t| t.ifname.clone()).collect();
    open_tap_queues(names, netns).await
}

/// Opens one queue of each tap in `names`, inside `netns` (this process's
/// namespace when `None`), as [`open_taps`] does.
pub(super) async fn open_tap_queues(
    names: Vec<String>,
    netns: Option<&File>,
) -> Result<Vec<std::os::fd::OwnedFd>, HypervisorError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let netns = netns
        .map(File::try_clone)
        .transpose()
        .map_err(|source| HypervisorError::Tap {
            ifname: names.join(","),
            source,
        })?;
    crate::blocking::run(move || crate::network::open_tap_queues(netns.as_ref(), &names))
        .await
        .map_err(|(ifname, source)| HypervisorError::Tap { ifname, source })
}

/// Opens everything QEMU uses, in the launching process: kernel and initrd,
/// the connection to the console logger, monitor socket (listening), the connections made to
/// the daemons' sockets (`connections`, by [`connect_when_listening`]), tap queues, disks. QEMU then opens nothing of the VM by path.
fn hand_over(
    spec: &VmSpec,
    layout: &RunLayout,
    taps: Vec<std::os::fd::OwnedFd>,
    mut connections: Vec<(DaemonKind, std::os::unix::net::UnixStream)>,
) -> Result<(Handoff, QemuFds), HypervisorError> {
    let s = &spec.settings;
    let user = spec.vmm_user.as_ref();
    let mut h = Handoff::default();
    let kernel = h.image_file("kernel", &s.kernel, user)?.into();
    let initrd = match &s.initrd {
        Some(p) => Some(h.image_file("initrd", p, user)?.into()),
        None => None,
    };
    let qmp = std::os::unix::net::UnixListener::bind(&layout.qmp_socket).map_err(|source| {
        HypervisorError::Monitor {
            path: layout.qmp_socket.clone(),
            source,
        }
    })?;
    let qmp = h.keep(qmp);
    let mut take = |daemon: DaemonKind, socket: &Path| {
        let at = connections
            .iter()
            .position(|(kind, _)| *kind == daemon)
            .ok_or_else(|| HypervisorError::DaemonConnect {
                daemon,
                socket: socket.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotConnected),
            })?;
        Ok::<_, HypervisorError>(h.keep(connections.swap_remove(at).1))
    };
    // The logger (root) owns the console socket; QEMU gets a connection.
    let console = take(DaemonKind::ConsoleLog, &layout.console_socket)?;
    let vsock = match s.vsock {
        VsockKind::Hybrid => Some(take(
            DaemonKind::VhostDeviceVsock,
            &layout.vsock_vhost_socket,
        )?),
        VsockKind::Kernel => None,
    };
    let fs = match &spec.shared_dir {
        Some(_) => Some(take(DaemonKind::Virtiofsd, &layout.fs_socket)?),
        None => None,
    };
    let taps = taps.into_iter().map(|fd| h.keep(fd)).collect();
    let disks = spec
        .disks
        .iter()
        .map(|d| h.disk(&d.path, d.readonly))
        .collect::<Result<_, _>>()?;
    let fds = QemuFds {
        kernel,
        initrd,
        console,
        qmp,
        vsock,
        fs,
        taps,
        disks,
    };
    Ok((h, fds))
}

/// Waits until QEMU answers `query-status` on its monitor: then the machine
/// is built and every vhost-user device connected. Fails as soon as QEMU
/// exits, with its log and the console's tail.
async fn wait_for_monitor(qemu: &ProcessRecord, layout: &RunLayout) -> Result<(), HypervisorError> {
    let deadline = Instant::now() + QEMU_START_TIMEOUT;
    let qmp = Qmp::new(&layout.qmp_socket);
    let exited = || HypervisorError::QemuExited {
        qemu_log: tail_file(&layout.qemu_log, ERROR_TAIL_LINES),
        console: console_tail(&layout.console_log, ERROR_TAIL_LINES),
    };
    loop {
        if !qemu.is_alive() {
            return Err(exited());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HypervisorError::QemuNotReady {
                timeout: QEMU_START_TIMEOUT,
                qemu_log: tail_file(&layout.qemu_log, ERROR_TAIL_LINES),
                source: None,
            });
        }
        match qmp.query_status(left).await {
            Ok(_) => return Ok(()),
            Err(_) if !qemu.is_alive() => return Err(exited()),
            // The socket is not there yet.
            Err(QmpError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => {
                return Err(HypervisorError::QemuNotReady {
                    timeout: QEMU_START_TIMEOUT,
                    qemu_log: tail_file(&layout.qemu_log, ERROR_TAIL_LINES),
                    source: Some(e),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::config::VmSettings;

    fn settings() -> VmSettings {
        crate::hypervisor::config::test_settings()
    }

    #[tokio::test]
    async fn a_live_monitor_in_the_run_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _live = std::os::unix::net::UnixListener::bind(dir.path().join("qmp.sock"))
            .expect("bind fake monitor");
        let hv = QemuHypervisor::new(dir.path().join("state"));
        let err = hv
            .launch(&VmSpec::new(settings(), dir.path()))
            .await
            .expect_err("in use");
        assert!(
            matches!(err, HypervisorError::RunDirInUse { .. }),
            "{err:?}"
        );
        assert!(
            dir.path().join("qmp.sock").exists(),
            "the live socket is left alone"
        );
    }

    #[tokio::test]
    async fn bad_specs_fail_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hv = QemuHypervisor::new(dir.path().join("state"));
        let long = dir.path().join("x".repeat(100));
        let err = hv
            .launch(&VmSpec::new(settings(), &long))
            .await
            .expect_err("long");
        assert!(
            matches!(err, HypervisorError::SocketPathTooLong { .. }),
            "{err:?}"
        );
        assert!(!long.exists());

        let mut spec = VmSpec::new(settings(), dir.path().join("vm"));
        spec.shared_dir = Some(dir.path().join("missing"));
        let err = hv.launch(&spec).await.expect_err("share");
        assert!(matches!(err, HypervisorError::SharedDir { .. }), "{err:?}");

        let mut spec = VmSpec::new(settings(), dir.path().join("vm"));
        spec.taps = vec![crate::hypervisor::TapSpec {
            ifname: "a-tap-name-too-long".to_owned(),
            mac: "02:00:00:00:00:01".parse().expect("mac"),
        }];
        let err = hv.launch(&spec).await.expect_err("tap");
        assert!(matches!(err, HypervisorError::TapName { .. }), "{err:?}");

        let mut spec = VmSpec::new(settings(), dir.path().join("vm"));
        spec.netns = Some(dir.path().join("no-netns"));
        let err = hv.launch(&spec).await.expect_err("netns");
        assert!(matches!(err, HypervisorError::Netns { .. }), "{err:?}");
        assert!(!dir.path().join("vm").exists(), "nothing created");

        let spec = VmSpec::new(settings(), dir.path().join("vm"));
        let err = hv.launch(&spec).await.expect_err("no daemon binary");
        assert!(matches!(err, HypervisorError::Start { .. }), "{err:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("vm"))
            .expect("run dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(
            left.iter().all(|n| n.to_string_lossy().ends_with(".log")),
            "{left:?}"
        );
    }
}
