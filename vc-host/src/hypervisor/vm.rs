//! A launched VM: its persistent [`VmRecord`] and the [`Vm`] handle that any
//! process can rebuild from it to query, pause, resume and stop the VM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::cgroup::CgroupRecord;
use super::config::{Accel, Machine, VsockKind};
use super::daemons::DaemonKind;
use super::nic::NicSpec;
use super::process::ProcessRecord;
use super::qmp::{Qmp, QmpError, RunState};
use super::HypervisorError;
use crate::vsock::VsockAddr;

/// Version of the [`VmRecord`] layout.
pub const VM_RECORD_FORMAT: u32 = 1;

/// Timeout of one QMP call made by [`Vm`] methods.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long plugging or unplugging a disk may take: an unplug waits for the
/// guest to release the device (PCIe hotplug waits 5 s before powering a
/// slot off), slower under TCG.
pub const HOTPLUG_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a process gets to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long a helper daemon gets after SIGTERM.
const DAEMON_GRACE: Duration = Duration::from_secs(1);

/// Most bytes read from the end of a log for a tail.
const TAIL_BYTES: u64 = 64 * 1024;

/// A helper daemon of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// Which daemon.
    pub kind: DaemonKind,
    /// Its process.
    pub process: ProcessRecord,
    /// Its vhost-user socket (QEMU's side).
    pub socket: PathBuf,
    /// Its stdout/stderr.
    pub log: PathBuf,
}

/// Everything needed to find a running VM again, from any process: persist it
/// (JSON) in the pod's directory and pass it to [`Vm::from_record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Layout version ([`VM_RECORD_FORMAT`]).
    pub format: u32,
    /// The name given at launch.
    pub name: Option<String>,
    /// Machine type in use.
    pub machine: Machine,
    /// Accelerator in use.
    pub accel: Accel,
    /// vsock form in use.
    pub vsock: VsockKind,
    /// Guest CID (kernel vsock only).
    pub cid: Option<u32>,
    /// Where the agent is reached.
    pub agent: VsockAddr,
    /// The agent's vsock port.
    pub agent_port: u32,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The QEMU process.
    pub qemu: ProcessRecord,
    /// Helper daemons.
    pub daemons: Vec<DaemonRecord>,
    /// QMP monitor socket.
    pub qmp_socket: PathBuf,
    /// Guest serial console.
    pub console_log: PathBuf,
    /// QEMU's stdout/stderr.
    pub qemu_log: PathBuf,
    /// Sockets and temporary files removed by [`Vm::stop`] (logs are kept).
    pub cleanup: Vec<PathBuf>,
    /// The host cgroup of QEMU and the helpers, removed by [`Vm::stop`].
    #[serde(default)]
    pub cgroup: Option<CgroupRecord>,
}

/// `path` with its prefix `from` replaced by `to`; other paths unchanged.
pub(crate) fn relocated(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
        Ok(rest) => to.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

impl VmRecord {
    /// Rewrites every path under `from` to the same path under `to`: the
    /// record of a VM whose run directory was moved while it runs (a pooled
    /// VM adopted by a pod). Its processes are unaffected: QEMU and the
    /// daemons hold their sockets and logs open, the console logger rotates
    /// relative to its directory, and a Unix socket is reached by whichever
    /// path names it.
    pub fn relocate(&mut self, from: &Path, to: &Path) {
        let r = |p: &mut PathBuf| *p = relocated(p, from, to);
        r(&mut self.run_dir);
        if let VsockAddr::Hybrid { uds } = &mut self.agent {
            r(uds);
        }
        for d in &mut self.daemons {
            r(&mut d.socket);
            r(&mut d.log);
        }
        r(&mut self.qmp_socket);
        r(&mut self.console_log);
        r(&mut self.qemu_log);
        self.cleanup.iter_mut().for_each(r);
    }
}

/// What a VM is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// vCPUs run.
    Running,
    /// Paused by [`Vm::pause`].
    Paused,
    /// The guest shut down or panicked; QEMU is exiting.
    ShuttingDown,
    /// QEMU is gone.
    Exited,
    /// Another QEMU state, by its QAPI name.
    Other(String),
}

/// A handle on a launched VM. Holds no resources: dropping it leaves the VM
/// running; [`Vm::stop`] ends it.
#[derive(Debug, Clone)]
pub struct Vm {
    record: VmRecord,
}

impl Vm {
    pub(crate) fn new(record: VmRecord) -> Self {
        Vm { record }
    }

    /// Reopens a VM from its record (written by another process, perhaps).
    pub fn from_record(record: VmRecord) -> Result<Vm, HypervisorError> {
        if record.format != VM_RECORD_FORMAT {
            return Err(HypervisorError::RecordFormat {
                found: record.format,
                expected: VM_RECORD_FORMAT,
            });
        }
        Ok(Vm { record })
    }

    /// The record to persist.
    pub fn record(&self) -> &VmRecord {
        &self.record
    }

    /// Where the agent is reached.
    pub fn agent_addr(&self) -> &VsockAddr {
        &self.record.agent
    }

    /// The agent's vsock port.
    pub fn agent_port(&self) -> u32 {
        self.record.agent_port
    }

    /// True while the QEMU process lives (not a zombie, not a reused pid).
    pub fn is_running(&self) -> bool {
        self.record.qemu.is_alive()
    }

    fn qmp(&self) -> Qmp {
        Qmp::new(&self.record.qmp_socket)
    }

    /// The guest run state, or [`VmStatus::Exited`] when QEMU is gone. A
    /// paused VM's QEMU is stopped and does not answer QMP: its process
    /// state says so first.
    pub async fn status(&self) -> Result<VmStatus, HypervisorError> {
        if !self.is_running() {
            return Ok(VmStatus::Exited);
        }
        if self.record.qemu.is_stopped() {
            return Ok(VmStatus::Paused);
        }
        match self.qmp().query_status(QMP_TIMEOUT).await {
            Ok(state) => Ok(match state {
                RunState::Running => VmStatus::Running,
                RunState::Paused => VmStatus::Paused,
                RunState::Shutdown => VmStatus::ShuttingDown,
                RunState::Other(s) => VmStatus::Other(s),
            }),
            Err(_) if !self.is_running() => Ok(VmStatus::Exited),
            Err(e) => Err(e.into()),
        }
    }

    /// Pauses the VM by stopping QEMU's process (SIGSTOP), and returns once
    /// it is stopped.
    ///
    /// Not QMP `stop`: that also stops the vrings of the vhost-user devices,
    /// and vhost-device-vsock did not always come back from it: with traffic
    /// in flight at the pause, the guest never again answered on vsock after
    /// `cont` (see docs/reliability.md, "Pause and resume"). A stopped
    /// process keeps every device's state; the guest merely is not run, and
    /// the helpers keep their side until it runs again.
    pub async fn pause(&self) -> Result<(), HypervisorError> {
        let qemu = self.record.qemu;
        let freeze = |source| HypervisorError::Freeze {
            action: "stop",
            source,
        };
        if !qemu
            .signal(nix::sys::signal::Signal::SIGSTOP)
            .map_err(freeze)?
        {
            return Err(HypervisorError::NotRunning { pid: qemu.pid });
        }
        // SIGSTOP takes effect asynchronously, and only a parent can wait
        // for it (QEMU is not our child): read its state until it shows.
        let deadline = Instant::now() + QMP_TIMEOUT;
        while !qemu.is_stopped() {
            if !qemu.is_alive() {
                return Err(HypervisorError::NotRunning { pid: qemu.pid });
            }
            if Instant::now() >= deadline {
                let _ = qemu.signal(nix::sys::signal::Signal::SIGCONT);
                return Err(freeze(super::ProcessError::Signal {
                    pid: qemu.pid,
                    signal: nix::sys::signal::Signal::SIGSTOP,
                    source: std::io::Error::other(format!("not stopped after {QMP_TIMEOUT:?}")),
                }));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        info!(vm = self.name(), pid = qemu.pid, "VM paused");
        Ok(())
    }

    /// Resumes the VM (SIGCONT to QEMU). A VM paused by QMP `stop` (by an
    /// earlier version) is continued with `cont` as well.
    pub async fn resume(&self) -> Result<(), HypervisorError> {
        let qemu = self.record.qemu;
        let resumed = qemu
            .signal(nix::sys::signal::Signal::SIGCONT)
            .map_err(|source| HypervisorError::Freeze {
                action: "continue",
                source,
            })?;
        if !resumed {
            return Err(HypervisorError::NotRunning { pid: qemu.pid });
        }
        if matches!(self.status().await?, VmStatus::Paused) {
            self.live_qmp(|q| async move { q.cont(QMP_TIMEOUT).await })
                .await?;
        }
        info!(vm = self.name(), pid = qemu.pid, "VM resumed");
        Ok(())
    }

    async fn live_qmp<F, Fut>(&self, f: F) -> Result<(), HypervisorError>
    where
        F: FnOnce(Qmp) -> Fut,
        Fut: std::future::Future<Output = Result<(), QmpError>>,
    {
        if !self.is_running() {
            return Err(HypervisorError::NotRunning {
                pid: self.record.qemu.pid,
            });
        }
        match f(self.qmp()).await {
            Ok(()) => Ok(()),
            Err(_) if !self.is_running() => Err(HypervisorError::NotRunning {
                pid: self.record.qemu.pid,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Hot-plugs a disk (q35 only; see [`super::hotplug`]) and returns the
    /// port it went to.
    pub async fn hotplug_disk(&self, disk: &super::DiskSpec) -> Result<String, HypervisorError> {
        if !self.is_running() {
            return Err(HypervisorError::NotRunning {
                pid: self.record.qemu.pid,
            });
        }
        let port = self.qmp().hotplug_disk(disk, HOTPLUG_TIMEOUT).await?;
        info!(vm = self.name(), disk = %disk.id, port = %port, "disk hot-plugged");
        Ok(port)
    }

    /// Unplugs a hot-plugged disk and waits until QEMU has removed it
    /// (`DEVICE_DELETED`); a disk that is not there is fine.
    pub async fn unplug_disk(&self, id: &str) -> Result<(), HypervisorError> {
        if !self.is_running() {
            return Err(HypervisorError::NotRunning {
                pid: self.record.qemu.pid,
            });
        }
        self.qmp().unplug_disk(id, HOTPLUG_TIMEOUT).await?;
        info!(vm = self.name(), disk = id, "disk unplugged");
        Ok(())
    }

    /// Hot-plugs a NIC (q35 only; see [`super::nic`]) backed by the tap
    /// `tap` of the network namespace `netns`, whose queue is opened here
    /// and handed to QEMU; returns the port it went to. On failure QEMU has
    /// nothing of it and the queue is closed (the tap itself is the
    /// caller's).
    pub async fn hotplug_nic(
        &self,
        nic: &NicSpec,
        netns: &Path,
        tap: &str,
    ) -> Result<String, HypervisorError> {
        if !self.is_running() {
            return Err(HypervisorError::NotRunning {
                pid: self.record.qemu.pid,
            });
        }
        let ns = std::fs::File::open(netns).map_err(|source| HypervisorError::Tap {
            ifname: tap.to_owned(),
            source,
        })?;
        let queue = super::qemu::open_tap_queues(vec![tap.to_owned()], Some(&ns))
            .await?
            .pop()
            .ok_or_else(|| HypervisorError::Tap {
                ifname: tap.to_owned(),
                source: std::io::Error::other("no queue was opened"),
            })?;
        let port = self.qmp().hotplug_nic(nic, queue, HOTPLUG_TIMEOUT).await?;
        info!(vm = self.name(), nic = %nic.id, mac = %nic.mac, port = %port, "NIC hot-plugged");
        Ok(port)
    }

    /// Unplugs a hot-plugged NIC and waits until QEMU has removed it
    /// (`DEVICE_DELETED`) and closed its tap queue; a NIC that is not there
    /// is fine.
    pub async fn unplug_nic(&self, id: &str) -> Result<(), HypervisorError> {
        if !self.is_running() {
            return Err(HypervisorError::NotRunning {
                pid: self.record.qemu.pid,
            });
        }
        self.qmp().unplug_nic(id, HOTPLUG_TIMEOUT).await?;
        info!(vm = self.name(), nic = id, "NIC unplugged");
        Ok(())
    }

    /// Waits for QEMU to exit; `true` when it is gone within `timeout`.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        self.record.qemu.wait_gone(timeout).await
    }

    /// The last `lines` lines of the guest console (across its rotated
    /// file), control characters escaped, for boot-failure reports.
    pub fn console_tail(&self, lines: usize) -> String {
        console_tail(&self.record.console_log, lines)
    }

    /// The last `lines` lines of the console, QEMU's log and every daemon's
    /// log, each under a heading: what to print when a test fails.
    pub fn diagnostics(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut section = |title: &str, path: &Path, tail: String| {
            out.push_str(&format!("--- {title} ({}) ---\n", path.display()));
            out.push_str(&tail);
            if !out.ends_with('\n') {
                out.push('\n');
            }
        };
        let console = &self.record.console_log;
        section("console", console, console_tail(console, lines));
        let qemu = &self.record.qemu_log;
        section("qemu", qemu, tail_file(qemu, lines));
        for d in &self.record.daemons {
            section(d.kind.name(), &d.log, tail_file(&d.log, lines));
        }
        out
    }

    fn name(&self) -> &str {
        self.record.name.as_deref().unwrap_or("")
    }

    /// Stops the VM: QMP `quit` and up to `timeout` for QEMU to exit, then
    /// SIGKILL; then every helper daemon (SIGTERM, then SIGKILL); then the
    /// sockets and temporary files, and the host cgroup once every process
    /// is gone. Logs stay in the run directory.
    /// Idempotent, and works when QEMU has already died. Asking the agent to
    /// shut the guest down first is the caller's business.
    pub async fn stop(&self, timeout: Duration) -> Result<(), HypervisorError> {
        let started = Instant::now();
        let qemu = self.record.qemu;
        let mut how = "already exited";
        if qemu.is_alive() {
            match self.qmp().quit(timeout).await {
                Ok(()) => {
                    let left = timeout.saturating_sub(started.elapsed());
                    if qemu.wait_gone(left).await {
                        how = "quit";
                    }
                }
                Err(e) => debug!(vm = self.name(), error = %e, "QMP quit failed, killing QEMU"),
            }
        }
        let mut first_error = None;
        if qemu.is_alive() {
            how = "killed";
            if let Err(source) = qemu.kill(KILL_WAIT).await {
                first_error.get_or_insert(HypervisorError::Stop {
                    what: "QEMU",
                    source,
                });
            }
        }
        for d in &self.record.daemons {
            if let Err(source) = d.process.terminate(DAEMON_GRACE, KILL_WAIT).await {
                warn!(vm = self.name(), daemon = %d.kind, error = %source, "helper daemon would not stop");
                first_error.get_or_insert(HypervisorError::Stop {
                    what: d.kind.name(),
                    source,
                });
            }
        }
        let cleanup = self.record.cleanup.clone();
        crate::blocking::run(move || remove_files(&cleanup)).await;
        if let Some(cgroup) = &self.record.cgroup {
            if first_error.is_none() {
                if let Err(e) = super::cgroup::remove(cgroup).await {
                    first_error = Some(e.into());
                }
            }
        }
        match first_error {
            None => {
                info!(
                    vm = self.name(),
                    pid = qemu.pid,
                    how,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "VM stopped"
                );
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

/// Removes files, and directories once empty (list them after their
/// files), ignoring the ones already gone. Links are removed, never followed.
pub(crate) fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let removed = match std::fs::remove_file(p) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => std::fs::remove_dir(p),
            other => other,
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %p.display(), error = %e, "cannot remove VM file"),
        }
    }
}

/// The last `lines` lines of a file (at most the last 64 KiB read), with
/// control characters other than newlines escaped (the guest writes the
/// console, and daemons log what the guest sent): ready to print on a
/// terminal. Empty when the file cannot be read.
pub fn tail_file(path: &Path, lines: usize) -> String {
    tail_of(&[path.to_path_buf()], lines)
}

/// [`tail_file`] of the guest console: its rotated file and the current
/// one, read as one text.
pub fn console_tail(console_log: &Path, lines: usize) -> String {
    tail_of(&super::console::console_files(console_log), lines)
}

fn tail_of(paths: &[PathBuf], lines: usize) -> String {
    let bytes = super::console::tail_bytes(paths, TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut out = all[from..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    vc_proto::text::escape_text(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocate_moves_every_path_under_the_run_directory_only() {
        let mut r = record(Path::new("/r/pool/s1/vm"));
        r.cleanup = vec![
            PathBuf::from("/r/pool/s1/vm/qmp.sock"),
            PathBuf::from("/elsewhere/file"),
        ];
        r.relocate(Path::new("/r/pool/s1"), Path::new("/r/pods/p"));
        assert_eq!(r.run_dir, Path::new("/r/pods/p/vm"));
        assert_eq!(
            r.agent,
            VsockAddr::Hybrid {
                uds: PathBuf::from("/r/pods/p/vm/vsock.sock")
            }
        );
        assert!(r
            .daemons
            .iter()
            .all(|d| d.socket.starts_with("/r/pods/p/vm")));
        assert_eq!(
            r.cleanup,
            [
                PathBuf::from("/r/pods/p/vm/qmp.sock"),
                PathBuf::from("/elsewhere/file")
            ]
        );
        // A path that only shares a prefix string is not under the directory.
        assert_eq!(
            relocated(
                Path::new("/r/pool/s10/vm"),
                Path::new("/r/pool/s1"),
                Path::new("/x")
            ),
            Path::new("/r/pool/s10/vm")
        );
    }

    fn record(dir: &Path) -> VmRecord {
        VmRecord {
            format: VM_RECORD_FORMAT,
            name: Some("p".to_owned()),
            machine: Machine::Microvm,
            accel: Accel::Tcg,
            vsock: VsockKind::Hybrid,
            cid: None,
            agent: VsockAddr::Hybrid {
                uds: dir.join("vsock.sock"),
            },
            agent_port: 1024,
            run_dir: dir.to_path_buf(),
            // A pid that cannot exist with this start time.
            qemu: ProcessRecord {
                pid: i32::MAX,
                start_time: 1,
            },
            daemons: vec![DaemonRecord {
                kind: DaemonKind::VhostDeviceVsock,
                process: ProcessRecord {
                    pid: i32::MAX - 1,
                    start_time: 1,
                },
                socket: dir.join("vhost-vsock.sock"),
                log: dir.join("vsock.log"),
            }],
            qmp_socket: dir.join("qmp.sock"),
            console_log: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            cleanup: vec![dir.join("qmp.sock"), dir.join("vsock.sock")],
            cgroup: None,
        }
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\nd\n").expect("write");
        assert_eq!(tail_file(&p, 2), "c\nd\n");
        assert_eq!(tail_file(&p, 10), "a\nb\nc\nd\n");
        assert_eq!(tail_file(&dir.path().join("none"), 3), "");
        std::fs::write(&p, "ok\n\x1b]0;owned\x07\r\x1b[2Jgone\n").expect("write");
        assert_eq!(tail_file(&p, 5), "ok\n\\x1b]0;owned\\x07\\r\\x1b[2Jgone\n");
    }

    #[test]
    fn record_round_trips_and_format_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = record(dir.path());
        let json = serde_json::to_string(&rec).expect("ser");
        let back: VmRecord = serde_json::from_str(&json).expect("de");
        assert_eq!(back, rec);
        let vm = Vm::from_record(back).expect("reopen");
        assert_eq!(vm.agent_port(), 1024);
        let bad = VmRecord { format: 99, ..rec };
        assert!(matches!(
            Vm::from_record(bad),
            Err(HypervisorError::RecordFormat { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn a_dead_vm_stops_cleanly_and_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = record(dir.path());
        std::fs::write(dir.path().join("qmp.sock"), "").expect("fake socket");
        std::fs::write(dir.path().join("console.log"), "boot\n").expect("console");
        let vm = Vm::from_record(rec).expect("vm");
        assert!(!vm.is_running());
        assert_eq!(vm.status().await.expect("status"), VmStatus::Exited);
        assert!(matches!(
            vm.pause().await,
            Err(HypervisorError::NotRunning { .. })
        ));
        vm.stop(Duration::from_secs(1)).await.expect("stop");
        vm.stop(Duration::from_secs(1)).await.expect("stop again");
        assert!(!dir.path().join("qmp.sock").exists());
        assert_eq!(vm.console_tail(5), "boot\n");
        assert!(vm.diagnostics(5).contains("--- console"));
    }
}
