//! A private containerd 1.6 per test, with vc's shim on its `PATH`.
//!
//! [`Containerd::start`] writes a `config.toml` (version 2) into a fresh temporary directory: its
//! own root, state and sockets; the CRI plugin with a runtime `vc` of type `io.containerd.vc.v2`,
//! the sandbox image `localhost/vc/pause:latest`, empty CNI directories (sandboxes use the node
//! network) and the overlayfs snapshotter. It writes the shim's settings (`shim.toml`, given
//! through `VC_SHIM_CONFIG`) with a vc state root inside the same directory, starts the daemon in
//! its own process group with the shim's directory first on `PATH`, and waits until the socket
//! answers.
//!
//! [`Containerd::finish`] is how a test ends: it checks that the test left nothing behind (no
//! task, no process of its pods, no mount under the directory, no vc state), then stops the
//! daemon. A test that fails (panics or returns early) drops the guard instead, which prints
//! containerd's log (where the shims' logs go too), every log file under the directory (guest
//! consoles, QEMU's and the helpers' logs, CRI container logs), then stops what runs: tasks
//! through `ctr`, the daemon (SIGTERM, then SIGKILL, by pid), whatever process of the directory
//! is left (by pid), and unmounts what is left under the directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::pod::{cgroup_parents, cgroups_under, pid_gone};
use super::virtc::Ran;
use super::{find_tool, log_tail, workspace_root, ChildGuard, GuestImage};

/// The runtime type of vc's shim.
pub const RUNTIME: &str = "io.containerd.vc.v2";
/// The CRI runtime handler the config maps to [`RUNTIME`].
pub const HANDLER: &str = "vc";
/// The shim's binary.
pub const SHIM: &str = "containerd-shim-vc-v2";
/// The command that builds the shim, for messages.
pub const BUILD_SHIM: &str = "cargo build -p vc-shim --bin containerd-shim-vc-v2";
/// The namespace the ctr tests use.
pub const NAMESPACE: &str = "vc-test";
/// The namespace of the CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The busybox image's name (`cargo xtask oci-image`).
pub const BUSYBOX: &str = "localhost/vc/busybox:latest";
/// The CRI sandbox image's name (`cargo xtask oci-image`).
pub const PAUSE: &str = "localhost/vc/pause:latest";
/// Environment variable naming the directory of the OCI image tarballs.
pub const OCI_DIR_ENV: &str = "VC_OCI_DIR";
/// The environment variable the shim reads its settings from.
pub const SHIM_CONFIG_ENV: &str = "VC_SHIM_CONFIG";

/// How long the daemon gets to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a ctr call that does not boot a VM gets.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a ctr call that boots a VM (run, start) gets: TCG on two shared cores.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the shims and the pods' processes get to go once their tasks are deleted.
const GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon gets after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// The OCI image tarballs.
#[derive(Debug, Clone)]
pub struct OciImages {
    /// `busybox.tar` ([`BUSYBOX`]).
    pub busybox: PathBuf,
    /// `pause.tar` ([`PAUSE`]).
    pub pause: PathBuf,
}

/// The tarballs of `$VC_OCI_DIR`, else `<workspace>/target/oci`; an error naming
/// `cargo xtask oci-image` when one is missing.
pub fn oci_images() -> Result<OciImages> {
    let dir = std::env::var_os(OCI_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/oci"));
    let images = OciImages {
        busybox: dir.join("busybox.tar"),
        pause: dir.join("pause.tar"),
    };
    for tar in [&images.busybox, &images.pause] {
        if !tar.is_file() {
            bail!(
                "the OCI image {} is missing: build it with `cargo xtask oci-image` (or point \
                 {OCI_DIR_ENV} at a directory with busybox.tar and pause.tar)",
                tar.display()
            );
        }
    }
    Ok(images)
}

/// Builds the shim (and vc-host's binaries: the console logger every pod runs is found next to
/// the shim) once per test binary, and returns the shim's path.
pub fn shim_path() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_shim().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_shim() -> Result<PathBuf> {
    // vc-host's binaries first (virtc and vc-console-log).
    let virtc = super::virtc::virtc_path()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let status = Command::new(&cargo)
        .args(["build", "-q", "-p", "vc-shim", "--bin", SHIM])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cargo:?} to build the shim"))?;
    if !status.success() {
        bail!("building the shim failed ({status}); try `{BUILD_SHIM}`");
    }
    let dir = virtc.parent().context("virtc has no directory")?;
    let shim = dir.join(SHIM);
    if !shim.is_file() {
        bail!("{SHIM} is not in {} after `{BUILD_SHIM}`", dir.display());
    }
    Ok(shim)
}

/// A process started by a test (`ctr`, most often), in its own process group, with its output
/// going to files; killed with its group if dropped before it ends.
#[derive(Debug)]
pub struct Spawned {
    line: String,
    guard: ChildGuard,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Spawned {
    /// Its pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Its exit code once it has ended (None while it runs; `Some(None)` when signalled).
    pub fn try_code(&mut self) -> Result<Option<Option<i32>>> {
        Ok(self.guard.try_wait()?.map(|s| s.code()))
    }

    /// What it wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Waits up to `timeout` for it to end; kills its group and fails (with what it wrote) when
    /// it does not.
    pub fn wait(mut self, timeout: Duration) -> Result<Ran> {
        let status = self.guard.wait_timeout(timeout)?;
        if status.is_none() {
            self.guard.kill();
        }
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let ran = Ran {
            line: self.line.clone(),
            code: status.and_then(|s| s.code()),
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
        };
        match status {
            Some(_) => Ok(ran),
            None => bail!("did not end within {timeout:?}; killed\n{ran}"),
        }
    }
}

/// A running containerd of one test.
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
    ctr: PathBuf,
    daemon: ChildGuard,
    /// The guest image the shim boots.
    pub image: GuestImage,
    /// The shim's binary.
    pub shim: PathBuf,
    /// The parent of the pods' host cgroups (the shim's `runtime.host_cgroup.parent`).
    cgroup_parent: PathBuf,
    finished: bool,
    counter: AtomicU32,
}

/// The directory's layout.
const VC_ROOT: &str = "vc";
const CONFIG: &str = "config.toml";
const SHIM_CONFIG: &str = "shim.toml";
const LOG: &str = "containerd.log";

impl Containerd {
    /// Starts a containerd of its own (failing with the command that installs what is missing)
    /// and waits until it answers.
    pub fn start() -> Result<Self> {
        let containerd = find_tool("containerd")?;
        let ctr = find_tool("ctr")?;
        for tool in ["qemu-system-x86_64", "vhost-device-vsock", "virtiofsd"] {
            find_tool(tool)?;
        }
        let image = GuestImage::locate()?;
        let shim = shim_path()?;
        let shim_dir = shim
            .parent()
            .context("the shim has no directory")?
            .to_owned();

        // Short: the daemon's and the pods' sockets live under it.
        let dir = tempfile::Builder::new()
            .prefix("vcc")
            .tempdir_in("/tmp")
            .context("cannot create containerd's directory")?;
        let d = dir.path();
        for sub in [
            "root", "state", "opt", "cni/bin", "cni/conf", "ctr", VC_ROOT,
        ] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let socket = d.join("containerd.sock");
        std::fs::write(d.join(CONFIG), containerd_config(d, &socket))?;
        let cgroup_parent = PathBuf::from(format!(
            "vc-test-{}",
            d.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(
            d.join(SHIM_CONFIG),
            shim_config(&d.join(VC_ROOT), &image.dir, &cgroup_parent),
        )?;

        let mut path = std::ffi::OsString::from(&shim_dir);
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        let log = d.join(LOG);
        let log_file = std::fs::File::create(&log)?;
        let daemon = ChildGuard::spawn(
            "containerd",
            Command::new(&containerd)
                .arg("--config")
                .arg(d.join(CONFIG))
                .args(["--log-level", "debug"])
                .env("PATH", path)
                .env(SHIM_CONFIG_ENV, d.join(SHIM_CONFIG))
                // The shim lets these override its settings: give the same values.
                .env("VC_ROOT", d.join(VC_ROOT))
                .env(guest_image::IMAGE_DIR_ENV, &image.dir)
                .stdout(log_file.try_clone()?)
                .stderr(log_file),
        )?;
        let mut me = Self {
            dir,
            socket,
            log,
            ctr,
            daemon,
            image,
            shim,
            cgroup_parent,
            finished: false,
            counter: AtomicU32::new(0),
        };
        me.wait_ready()?;
        Ok(me)
    }

    /// Polls `ctr version` until the daemon answers.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.daemon.try_wait()? {
                bail!(
                    "containerd ended ({status}) before answering\n{}",
                    log_tail(&self.log, 60)
                );
            }
            if self.socket.exists() {
                let ran = self.ctr(NAMESPACE, ["version"], CTR_TIMEOUT)?;
                if ran.code == Some(0) && ran.stdout.contains("Server:") {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer on {} within {START_TIMEOUT:?}\n{}",
                    self.socket.display(),
                    log_tail(&self.log, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The temporary directory everything of this daemon lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The vc state root the shim uses.
    pub fn vc_root(&self) -> PathBuf {
        self.dir().join(VC_ROOT)
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The bundle directory containerd gives the shim for a task.
    pub fn bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.dir()
            .join("state/io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
    }

    /// The serving shims of this daemon: processes of the test running the shim's binary.
    pub fn shim_pids(&self) -> Vec<i32> {
        self.processes()
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == self.shim)
            })
            .collect()
    }

    /// Starts `ctr --address SOCK --namespace NS ARGS...` with stdin closed.
    pub fn spawn_ctr<I, S>(&self, namespace: &str, args: I) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_ctr_with(namespace, args, Stdio::null())
    }

    /// Starts `ctr` with `stdin` as its standard input.
    pub fn spawn_ctr_with<I, S>(&self, namespace: &str, args: I, stdin: Stdio) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.ctr_command(namespace, args);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let stdout = self.dir().join(format!("ctr/{n}.out"));
        let stderr = self.dir().join(format!("ctr/{n}.err"));
        cmd.stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?)
            .stdin(stdin);
        let line = command_line(&cmd);
        let guard = ChildGuard::spawn_with_stdin("ctr", &mut cmd)?;
        Ok(Spawned {
            line,
            guard,
            stdout,
            stderr,
        })
    }

    /// A `ctr` command against this daemon, for tests that set up its stdio themselves (a pty).
    pub fn ctr_command<I, S>(&self, namespace: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        cmd
    }

    /// Runs `ctr` to its end (killed after `timeout`), stdin closed.
    pub fn ctr<I, S>(&self, namespace: &str, args: I, timeout: Duration) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_ctr(namespace, args)?.wait(timeout)
    }

    /// Runs `ctr` to its end with `input` on its stdin.
    pub fn ctr_stdin<I, S>(
        &self,
        namespace: &str,
        args: I,
        input: &[u8],
        timeout: Duration,
    ) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let file = self.dir().join(format!("ctr/{n}.in"));
        std::fs::write(&file, input)?;
        let stdin = std::fs::File::open(&file)?;
        self.spawn_ctr_with(namespace, args, stdin.into())?
            .wait(timeout)
    }

    /// Runs `ctr` and fails unless it exits 0.
    pub fn ctr_ok<I, S>(&self, namespace: &str, args: I, timeout: Duration) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctr(namespace, args, timeout)?.success()
    }

    /// `ctr image import` of a tarball into a namespace; fails unless `name` is then listed.
    pub fn import(&self, namespace: &str, tar: &Path, name: &str) -> Result<()> {
        self.ctr_ok(
            namespace,
            [OsStr::new("image"), OsStr::new("import"), tar.as_os_str()],
            BOOT_TIMEOUT,
        )?;
        let listed = self.ctr_ok(namespace, ["image", "ls", "-q"], CTR_TIMEOUT)?;
        ensure!(
            listed.stdout.lines().any(|l| l.trim() == name),
            "{} did not give the image {name}:\n{listed}",
            tar.display()
        );
        Ok(())
    }

    /// The state directories of the vc pods under the shim's root.
    pub fn vc_pods(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.vc_root().join("pods"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// The pid of each running pod's QEMU, as vc recorded it (`state.json`, `vm.qemu.pid`).
    pub fn qemu_pids(&self) -> Vec<i32> {
        self.vc_pods()
            .iter()
            .filter_map(|p| std::fs::read(p.join("state.json")).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v.pointer("/vm/qemu/pid").and_then(|p| p.as_i64()))
            .filter_map(|p| i32::try_from(p).ok())
            .filter(|p| !pid_gone(*p))
            .collect()
    }

    /// Live processes other than the daemon that belong to this test: their command line or
    /// environment names the directory (shims, QEMU, its helpers, ctr), as `(pid, command line)`.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let needle = self.dir().as_os_str().as_encoded_bytes();
        let me = std::process::id() as i32;
        let daemon = self.daemon.pid() as i32;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me && *pid != daemon && !pid_gone(*pid))
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let ours = [&cmdline, &environ]
                    .iter()
                    .any(|b| b.windows(needle.len()).any(|w| w == needle));
                ours.then(|| {
                    let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    (pid, line.trim_end().to_owned())
                })
            })
            .collect()
    }

    /// Waits up to `timeout` until no process of this test but the daemon is left.
    pub fn wait_processes_gone(&self, timeout: Duration) -> Vec<(i32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Mount points under the directory.
    pub fn mounts(&self) -> Vec<PathBuf> {
        vc_host::runtime::share::mounts_under(self.dir())
    }

    /// Tasks containerd lists in `namespace`.
    pub fn tasks(&self, namespace: &str) -> Result<Vec<String>> {
        let ran = self.ctr_ok(namespace, ["task", "ls", "-q"], CTR_TIMEOUT)?;
        Ok(ran
            .stdout
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// The status column of `ctr task ls` for a task (RUNNING, PAUSED, STOPPED...).
    pub fn task_status(&self, namespace: &str, id: &str) -> Result<String> {
        let ran = self.ctr_ok(namespace, ["task", "ls"], CTR_TIMEOUT)?;
        ran.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&id))
            .and_then(|cols| cols.get(2).map(|s| s.to_string()))
            .with_context(|| format!("no task {id} in\n{ran}"))
    }

    /// Waits up to `timeout` for a task's status to become `want`.
    pub fn wait_task_status(
        &self,
        namespace: &str,
        id: &str,
        want: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Not listed yet counts as not there yet.
            let status = self.task_status(namespace, id).unwrap_or_default();
            if status == want {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "task {id} is {status:?}, not {want}, after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The namespaces the daemon knows.
    fn namespaces(&self) -> Vec<String> {
        self.ctr(NAMESPACE, ["namespaces", "ls", "-q"], CTR_TIMEOUT)
            .map(|r| {
                r.stdout
                    .lines()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the test: checks that nothing is left (tasks, processes of its pods, mounts, vc
    /// state; the shims get a while to exit), then stops the daemon. On a leak, prints the logs,
    /// cleans up, and fails naming what was left.
    pub fn finish(mut self) -> Result<()> {
        let mut leaks = Vec::new();
        for ns in self.namespaces() {
            match self.tasks(&ns) {
                Ok(tasks) if tasks.is_empty() => {}
                Ok(tasks) => leaks.push(format!("tasks left in namespace {ns}: {tasks:?}")),
                Err(e) => leaks.push(format!("cannot list the tasks of {ns}: {e:#}")),
            }
        }
        let procs = self.wait_processes_gone(GONE_TIMEOUT);
        if !procs.is_empty() {
            leaks.push(format!("processes left: {procs:#?}"));
        }
        let mounts = self.mounts_of_pods();
        if !mounts.is_empty() {
            leaks.push(format!("mounts left: {mounts:#?}"));
        }
        let pods = self.vc_pods();
        if !pods.is_empty() {
            leaks.push(format!("vc pods left: {pods:#?}"));
        }
        let cgroups = cgroups_under(&cgroup_parents(&self.cgroup_parent));
        if !cgroups.is_empty() {
            leaks.push(format!("host cgroups left: {cgroups:#?}"));
        }
        if !leaks.is_empty() {
            self.print_logs();
        }
        self.stop();
        self.finished = true;
        // After the daemon: its own mounts (the snapshotter's) must be gone too.
        let mounts = self.mounts();
        if !mounts.is_empty() {
            leaks.push(format!("mounts left after containerd stopped: {mounts:#?}"));
            unmount_all(&mounts);
        }
        ensure!(
            leaks.is_empty(),
            "the test left things behind:\n{}",
            leaks.join("\n")
        );
        Ok(())
    }

    /// Mounts under the task bundles and the vc root (the daemon's own snapshotter mounts
    /// aside, which live under its root while it runs).
    fn mounts_of_pods(&self) -> Vec<PathBuf> {
        let state = self.dir().join("state");
        let vc = self.vc_root();
        self.mounts()
            .into_iter()
            .filter(|m| m.starts_with(&state) || m.starts_with(&vc))
            .collect()
    }

    /// Prints containerd's log (with the shims' logs in it) and every log file under the
    /// directory: guest consoles, QEMU's and the helpers' logs, CRI container logs.
    pub fn print_logs(&self) {
        eprintln!("{}", log_tail(&self.log, 300));
        let mut logs = Vec::new();
        find_logs(self.dir(), 8, &mut logs);
        for log in logs.iter().filter(|l| **l != self.log) {
            eprintln!("{}", log_tail(log, 80));
        }
    }

    /// Stops everything: the tasks (through ctr, while the daemon runs), the daemon (SIGTERM,
    /// then SIGKILL), then any process of the directory left (SIGKILL by pid), and unmounts
    /// what is left under the directory.
    fn stop(&mut self) {
        if self.daemon.try_wait().ok().flatten().is_none() {
            for ns in self.namespaces() {
                for task in self.tasks(&ns).unwrap_or_default() {
                    let _ = self.ctr(
                        &ns,
                        ["task", "kill", "-a", "-s", "SIGKILL", &task],
                        CTR_TIMEOUT,
                    );
                    let _ = self.ctr(&ns, ["task", "delete", "-f", &task], CTR_TIMEOUT);
                }
                let containers = self
                    .ctr(&ns, ["container", "ls", "-q"], CTR_TIMEOUT)
                    .map(|r| r.stdout)
                    .unwrap_or_default();
                for c in containers.lines().map(str::trim).filter(|c| !c.is_empty()) {
                    let _ = self.ctr(&ns, ["container", "delete", c], CTR_TIMEOUT);
                }
            }
            let pid = Pid::from_raw(self.daemon.pid() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let _ = self.daemon.wait_timeout(TERM_GRACE);
        }
        // SIGKILL to the group, if still there.
        self.daemon.kill();
        for (pid, _) in self.processes() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        unmount_all(&self.mounts());
        // Empty unless a pod leaked, which `finish` reports.
        for dir in cgroup_parents(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        eprintln!("the test failed or did not finish; containerd's and the pods' logs follow");
        self.print_logs();
        self.stop();
        let procs = self.wait_processes_gone(Duration::from_secs(5));
        if !procs.is_empty() {
            eprintln!("processes still alive after cleanup: {procs:#?}");
        }
        let mounts = self.mounts();
        if !mounts.is_empty() {
            eprintln!("mounts still there after cleanup: {mounts:#?}");
        }
    }
}

/// Unmounts (lazily) every mount point, the deepest first.
fn unmount_all(mounts: &[PathBuf]) {
    let mut mounts = mounts.to_vec();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Regular files named `*.log` under `dir`, `depth` levels at most, through no link and into
/// no rootfs or mount tree.
fn find_logs(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let path = e.path();
        let name = e.file_name();
        if kind.is_dir() && depth > 0 {
            let skip = ["rootfs", "mounts", "shared", "root"]
                .iter()
                .any(|s| name == OsStr::new(s));
            if !skip {
                find_logs(&path, depth - 1, out);
            }
        } else if kind.is_file() && path.extension().is_some_and(|x| x == "log") {
            out.push(path);
        }
    }
}

/// The command line of a command, for messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TOML string.
fn q(path: &Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// containerd's configuration: everything under `dir`.
fn containerd_config(dir: &Path, socket: &Path) -> String {
    let ttrpc = dir.join("containerd.sock.ttrpc");
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.{HANDLER}]
  runtime_type = "{RUNTIME}"

[{cri}.cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
"#,
        root = q(&dir.join("root")),
        state = q(&dir.join("state")),
        socket = q(socket),
        ttrpc = q(&ttrpc),
        opt = q(&dir.join("opt")),
        cni_bin = q(&dir.join("cni/bin")),
        cni_conf = q(&dir.join("cni/conf")),
    )
}

/// The shim's settings: its state root, the guest image, the parent of the pods' host cgroups,
/// debug logs, and a boot deadline under the tests' own.
fn shim_config(vc_root: &Path, image_dir: &Path, cgroup_parent: &Path) -> String {
    format!(
        r#"log_level = "debug"

[runtime]
root = {root}
guest_image_dir = {image}

[runtime.host_cgroup]
parent = {cgroup}

[timeouts]
boot_secs = 240
"#,
        root = q(vc_root),
        image = q(image_dir),
        cgroup = q(cgroup_parent),
    )
}
