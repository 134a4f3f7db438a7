//! The vhost-user helper daemons of a VM: `vhost-device-vsock` (hybrid
//! vsock) and `virtiofsd` (the pod's shared directory). Their command lines,
//! and waiting for their sockets while watching that they stay alive.
//!
//! `vhost-device-vsock` runs as the unprivileged VMM user in a directory of
//! its own (see [`super::confine`]), so its sockets are named relative to
//! it. `virtiofsd` stays root inside its sandbox with fewer capabilities.

use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::{VirtiofsCache, VirtiofsSandbox};
use super::confine::VIRTIOFSD_MODCAPS;
use super::process::ProcessRecord;

/// The guest CID `vhost-device-vsock` gives the guest. Hybrid vsock is
/// addressed by socket path, so every VM can use the same one.
pub const HYBRID_GUEST_CID: u32 = 3;

/// Which helper daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonKind {
    /// `vhost-device-vsock`.
    VhostDeviceVsock,
    /// `virtiofsd`.
    Virtiofsd,
    /// `vc-console-log`, the bounded console (see [`super::console`]).
    ConsoleLog,
}

impl DaemonKind {
    /// Program name.
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::VhostDeviceVsock => super::tools::VHOST_DEVICE_VSOCK,
            DaemonKind::Virtiofsd => super::tools::VIRTIOFSD,
            DaemonKind::ConsoleLog => super::tools::CONSOLE_LOG,
        }
    }
}

impl std::fmt::Display for DaemonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `vhost-device-vsock` arguments: vhost-user socket for QEMU, Unix socket
/// for the host side, both relative to the daemon's working directory (so
/// that the unprivileged daemon needs no access to the directories above).
/// (The single-VM flags, not `--vm k=v,...`, so that paths need no escaping.)
pub fn vhost_device_vsock_args(vhost_socket: &Path, uds: &Path) -> Vec<OsString> {
    vec![
        "--guest-cid".into(),
        HYBRID_GUEST_CID.to_string().into(),
        "--socket".into(),
        vhost_socket.into(),
        "--uds-path".into(),
        uds.into(),
    ]
}

/// `virtiofsd` arguments: the share served from inside virtiofsd's sandbox
/// (a private mount, pid and network namespace with the share as its root,
/// or a chroot where namespaces are unavailable), with the capabilities the
/// share does not need dropped ([`VIRTIOFSD_MODCAPS`]): a device node the
/// guest asks for is refused.
pub fn virtiofsd_args(
    socket: &Path,
    shared_dir: &Path,
    cache: VirtiofsCache,
    sandbox: VirtiofsSandbox,
) -> Vec<OsString> {
    vec![
        "--socket-path".into(),
        socket.into(),
        "--shared-dir".into(),
        shared_dir.into(),
        "--sandbox".into(),
        sandbox.as_arg().into(),
        format!("--modcaps={VIRTIOFSD_MODCAPS}").into(),
        "--cache".into(),
        cache.as_arg().into(),
    ]
}

/// The sandbox virtiofsd gets for `shared_dir`. Its namespace sandbox has a
/// private copy of the host's mounts: binds the host makes in the share
/// later (container rootfs, volumes) reach it only when the share is a
/// *shared* mount point when virtiofsd starts (the pod layer makes it one).
/// Elsewhere the namespace sandbox would hide them, so it falls back to the
/// chroot sandbox, with a warning.
pub fn effective_sandbox(asked: VirtiofsSandbox, shared_dir: &Path) -> VirtiofsSandbox {
    if asked != VirtiofsSandbox::Namespace {
        return asked;
    }
    let dir = std::fs::canonicalize(shared_dir).unwrap_or_else(|_| shared_dir.to_owned());
    let mounts = crate::mountinfo::read().unwrap_or_default();
    if is_shared_mount_point(&mounts, &dir) {
        VirtiofsSandbox::Namespace
    } else {
        tracing::warn!(
            share = %dir.display(),
            "the share is not a shared mount point: virtiofsd uses its chroot sandbox, since later binds would not reach its namespace"
        );
        VirtiofsSandbox::Chroot
    }
}

/// True when the last of `mounts` made at `path` is in a peer group
/// (`shared:N`).
pub fn is_shared_mount_point(mounts: &[crate::mountinfo::Mount], path: &Path) -> bool {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == path)
        .is_some_and(|m| m.shared_group().is_some())
}

/// `vc-console-log` arguments: the socket for QEMU's console, the console
/// file, and the most bytes kept.
pub fn console_log_args(socket: &Path, log: &Path, max_bytes: u64) -> Vec<OsString> {
    vec![
        "--socket".into(),
        socket.into(),
        "--log".into(),
        log.into(),
        "--max-bytes".into(),
        max_bytes.to_string().into(),
    ]
}

/// Files a daemon leaves beside its socket: virtiofsd writes
/// `<socket>.pid`.
pub fn side_files(kind: DaemonKind, socket: &Path) -> Vec<PathBuf> {
    match kind {
        DaemonKind::Virtiofsd => {
            let mut pid = socket.as_os_str().to_owned();
            pid.push(".pid");
            vec![PathBuf::from(pid)]
        }
        DaemonKind::VhostDeviceVsock | DaemonKind::ConsoleLog => Vec::new(),
    }
}

/// Why waiting for a daemon's socket ended without a connection.
#[derive(Debug)]
pub enum SocketWait {
    /// The process exited first.
    Died,
    /// The deadline passed.
    TimedOut,
    /// Connecting failed for another reason than "not there yet".
    Connect(std::io::Error),
}

/// Connects to a daemon's socket as soon as it accepts, failing early when
/// `process` exits. The socket file appears at `bind(2)`, before `listen(2)`,
/// and a connection in between is refused: the file's existence is not the
/// condition, a connection is. The connection returned is the one QEMU is
/// handed (a vhost-user daemon serves one front end), never a probe.
pub async fn connect_when_listening(
    path: &Path,
    process: &ProcessRecord,
    timeout: Duration,
) -> Result<UnixStream, SocketWait> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {}
            Err(e) => return Err(SocketWait::Connect(e)),
        }
        if !process.is_alive() {
            return Err(SocketWait::Died);
        }
        if Instant::now() >= deadline {
            return Err(SocketWait::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::process::Detached;

    #[test]
    fn daemon_command_lines() {
        let strs = |v: Vec<OsString>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.into_string().expect("utf-8"))
                .collect()
        };
        assert_eq!(
            strs(vhost_device_vsock_args(
                Path::new("vhost-vsock.sock"),
                Path::new("vsock.sock")
            )),
            [
                "--guest-cid",
                "3",
                "--socket",
                "vhost-vsock.sock",
                "--uds-path",
                "vsock.sock"
            ]
        );
        assert_eq!(
            strs(virtiofsd_args(
                Path::new("/r/fs.sock"),
                Path::new("/pod/shared"),
                VirtiofsCache::Auto,
                VirtiofsSandbox::Namespace
            )),
            [
                "--socket-path",
                "/r/fs.sock",
                "--shared-dir",
                "/pod/shared",
                "--sandbox",
                "namespace",
                "--modcaps=-mknod:-setfcap",
                "--cache",
                "auto"
            ]
        );
        let chroot = strs(virtiofsd_args(
            Path::new("/r/fs.sock"),
            Path::new("/pod/shared"),
            VirtiofsCache::Never,
            VirtiofsSandbox::Chroot,
        ));
        assert_eq!(chroot[4..6], ["--sandbox", "chroot"]);
        assert_eq!(chroot[7..], ["--cache", "never"]);
        assert_eq!(
            strs(console_log_args(
                Path::new("/r/console.sock"),
                Path::new("/r/console.log"),
                4096
            )),
            [
                "--socket",
                "/r/console.sock",
                "--log",
                "/r/console.log",
                "--max-bytes",
                "4096"
            ]
        );
        assert_eq!(
            side_files(DaemonKind::Virtiofsd, Path::new("/r/fs.sock")),
            [PathBuf::from("/r/fs.sock.pid")]
        );
    }

    #[test]
    fn only_a_shared_mount_point_counts() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 8:1 /p/shared /run/vc/pods/p/shared ro,nosuid,nodev shared:7 master:6 - ext4 /dev/sda1 rw
41 22 8:1 /q /run/vc/pods/q/shared rw - ext4 /dev/sda1 rw
42 22 8:1 /a\\040b /run/a\\040b rw shared:9 - ext4 /dev/sda1 rw
";
        let info = crate::mountinfo::parse(info).expect("parses");
        assert!(is_shared_mount_point(
            &info,
            Path::new("/run/vc/pods/p/shared")
        ));
        assert!(
            !is_shared_mount_point(&info, Path::new("/run/vc/pods/q/shared")),
            "private"
        );
        assert!(
            !is_shared_mount_point(&info, Path::new("/run/vc/pods")),
            "not a mount point"
        );
        assert!(
            is_shared_mount_point(&info, Path::new("/run/a b")),
            "escaped"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            effective_sandbox(VirtiofsSandbox::Namespace, dir.path()),
            VirtiofsSandbox::Chroot,
            "a plain directory gets the chroot sandbox"
        );
        assert_eq!(
            effective_sandbox(VirtiofsSandbox::Chroot, Path::new("/")),
            VirtiofsSandbox::Chroot
        );
    }

    #[tokio::test]
    async fn waiting_for_a_socket_notices_a_dead_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Detached {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), "exit 3".into()],
            log: &dir.path().join("d.log"),
            netns: None,
            inherit: Vec::new(),
            user: None,
            cwd: None,
            cgroups: Vec::new(),
        }
        .spawn()
        .expect("spawn");
        let r =
            connect_when_listening(&dir.path().join("never.sock"), &rec, Duration::from_secs(5))
                .await;
        assert!(matches!(r, Err(SocketWait::Died)), "{r:?}");
    }
}
