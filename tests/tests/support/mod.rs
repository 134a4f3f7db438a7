//! Helpers shared by the end-to-end tests: finding the guest image, the container rootfs and QEMU
//! (failing with the command that provides them), a guard that owns a child process in its own
//! process group and kills it by id on drop, and waiting for a line in a log file.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use guest_image::{ImagePaths, Manifest, IMAGE_DIR_ENV};

pub mod account;
pub mod containerd;
pub mod exec;
pub mod faults;
pub mod io;
pub mod leaks;
pub mod net;
pub mod pod;
pub mod records;
pub mod soak;
pub mod virtc;

/// A private copy of a rootfs (`cp -a`), for containers that write to it.
pub fn rootfs_copy(src: &Path, dst: &Path) -> Result<PathBuf> {
    let status = Command::new("cp").arg("-a").arg(src).arg(dst).status()?;
    anyhow::ensure!(status.success(), "cp -a {} failed", src.display());
    Ok(dst.to_owned())
}

/// Environment variable naming the container rootfs directory.
pub const ROOTFS_ENV: &str = "VC_ROOTFS";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The image directory.
    pub dir: PathBuf,
    /// Its files.
    pub paths: ImagePaths,
    /// Its manifest.
    pub manifest: Manifest,
}

impl GuestImage {
    /// The image of `$VC_GUEST_IMAGE_DIR`, else `<workspace>/target/guest-image`.
    pub fn locate() -> Result<Self> {
        let dir = std::env::var_os(IMAGE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| guest_image::default_image_dir(&workspace_root()));
        Self::in_dir(dir)
    }

    /// The image in `dir`.
    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        let paths = ImagePaths::in_dir(&dir);
        for file in [&paths.kernel, &paths.initrd, &paths.manifest] {
            if !file.is_file() {
                bail!(
                    "the guest image is missing {}: build it with `cargo xtask guest-image` \
                     (or point {IMAGE_DIR_ENV} at an image directory)",
                    file.display()
                );
            }
        }
        let manifest = Manifest::load(&dir).with_context(|| {
            format!(
                "the guest image in {} is unreadable: rebuild it with `cargo xtask guest-image`",
                dir.display()
            )
        })?;
        Ok(Self {
            dir,
            paths,
            manifest,
        })
    }
}

/// The busybox rootfs of `$VC_ROOTFS`, else `<workspace>/target/rootfs/busybox`.
pub fn rootfs_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(ROOTFS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/rootfs/busybox"));
    if !dir.join("bin/busybox").is_file() {
        bail!(
            "the container rootfs {} has no bin/busybox: build it with `cargo xtask rootfs` \
             (or point {ROOTFS_ENV} at a rootfs)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The path of executable `name` on `PATH`, or an error naming `cargo xtask deps`.
pub fn find_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} is not on PATH: install it with `cargo xtask deps` (helper daemons land \
                 in <cache>/tools/bin, which `cargo xtask test` puts on PATH)"
            )
        })
}

/// `qemu-system-x86_64`.
pub fn qemu() -> Result<PathBuf> {
    find_tool("qemu-system-x86_64")
}

/// A child process in its own process group, killed (group and all) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` as the leader of a new process group; stdin is closed.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        Self::spawn_with_stdin(name, cmd.stdin(Stdio::null()))
    }

    /// Spawns `cmd` as the leader of a new process group, with the stdin `cmd` was given.
    pub fn spawn_with_stdin(name: &str, cmd: &mut Command) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = cmd
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            reaped: None,
        })
    }

    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to end, on its pidfd (no
    /// polling): its exit status, or `None` while it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.try_wait()?.is_none() && exits_within(self.pid(), timeout)? {
            return self.try_wait();
        }
        Ok(self.reaped)
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.reaped.is_none() {
            self.reaped = self
                .child
                .try_wait()
                .with_context(|| format!("cannot check on {}", self.name))?;
        }
        Ok(self.reaped)
    }

    /// Waits for the process to end.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .with_context(|| format!("cannot wait for {}", self.name))?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// Kills the process group with SIGKILL and reaps the leader.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            // The leader is gone and reaped: its id may be reused, so do not signal it.
            return;
        }
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        self.reaped = self.child.wait().ok();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to `timeout` for child `pid` (not yet reaped) to exit, on its
/// pidfd (readable once the process has exited). True when it has.
pub fn exits_within(pid: u32, timeout: Duration) -> Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
    // memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let wait = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll on a pidfd"),
        }
    }
}

/// Polls `probe` every 200 ms until it returns `Ok(Ok(_))`, failing after
/// `timeout` with `what` and the last value it saw (`Ok(Err(last))`).
pub async fn poll_until<T, L: std::fmt::Debug, F>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<Result<T, L>>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await? {
            Ok(done) => return Ok(done),
            Err(last) => last,
        };
        if start.elapsed() > timeout {
            bail!("never saw {what}; last: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the file at `path` contains `needle` at or after byte `from`; returns the byte
/// offset just past the match. Fails when `timeout` passes or when `guard`'s process ends first.
pub fn wait_for_text(
    path: &Path,
    needle: &str,
    from: usize,
    timeout: Duration,
    guard: &mut ChildGuard,
) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        // Check for exit before reading, so the last read sees everything the process wrote.
        let exited = guard.try_wait()?;
        let text = std::fs::read(path).unwrap_or_default();
        if let Some(pos) = text
            .get(from..)
            .and_then(|t| find_bytes(t, needle.as_bytes()))
        {
            return Ok(from + pos + needle.len());
        }
        if let Some(status) = exited {
            bail!(
                "{} ended ({status}) before {} showed {needle:?}",
                guard.name,
                path.display()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not show {needle:?} within {timeout:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "----- {} (last {} of {} lines) -----\n{}\n-----",
        path.display(),
        all.len() - start,
        all.len(),
        vc_proto::text::escape_text(&all[start..].join("\n"))
    )
}
