//! The vhost-user helper daemons of a VM: `vhost-device-vsock` (hybrid
//! vsock) and `virtiofsd` (the pod's shared directory). Their command lines,
//! and waiting for their sockets while watching that they stay alive.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::VirtiofsCache;
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
}

impl DaemonKind {
    /// Program name.
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::VhostDeviceVsock => super::tools::VHOST_DEVICE_VSOCK,
            DaemonKind::Virtiofsd => super::tools::VIRTIOFSD,
        }
    }
}

impl std::fmt::Display for DaemonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `vhost-device-vsock` arguments: vhost-user socket for QEMU, Unix socket
/// for the host side. (The single-VM flags, not `--vm k=v,...`, so that paths
/// need no escaping.)
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

/// `virtiofsd` arguments. `--sandbox none`: the namespace sandbox needs
/// privileges that containers and CI sandboxes often lack; the daemon still
/// confines lookups to the shared directory.
pub fn virtiofsd_args(socket: &Path, shared_dir: &Path, cache: VirtiofsCache) -> Vec<OsString> {
    vec![
        "--socket-path".into(),
        socket.into(),
        "--shared-dir".into(),
        shared_dir.into(),
        "--sandbox".into(),
        "none".into(),
        "--cache".into(),
        cache.as_arg().into(),
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
        DaemonKind::VhostDeviceVsock => Vec::new(),
    }
}

/// Why waiting for a socket ended without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketWait {
    /// The process exited first.
    Died,
    /// The deadline passed.
    TimedOut,
}

/// Polls until `path` is a socket, failing early when `process` exits.
pub async fn wait_for_socket(
    path: &Path,
    process: &ProcessRecord,
    timeout: Duration,
) -> Result<(), SocketWait> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(());
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
                Path::new("/r/vhost-vsock.sock"),
                Path::new("/r/vsock.sock")
            )),
            [
                "--guest-cid",
                "3",
                "--socket",
                "/r/vhost-vsock.sock",
                "--uds-path",
                "/r/vsock.sock"
            ]
        );
        assert_eq!(
            strs(virtiofsd_args(
                Path::new("/r/fs.sock"),
                Path::new("/pod/shared"),
                VirtiofsCache::Auto
            )),
            [
                "--socket-path",
                "/r/fs.sock",
                "--shared-dir",
                "/pod/shared",
                "--sandbox",
                "none",
                "--cache",
                "auto"
            ]
        );
        assert_eq!(
            side_files(DaemonKind::Virtiofsd, Path::new("/r/fs.sock")),
            [PathBuf::from("/r/fs.sock.pid")]
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
        }
        .spawn()
        .expect("spawn");
        let r = wait_for_socket(&dir.path().join("never.sock"), &rec, Duration::from_secs(5)).await;
        assert_eq!(r, Err(SocketWait::Died));
    }
}
