//! What one launch needs besides the settings ([`VmSpec`]: run directory,
//! shared directory, network namespace, taps) and where the launch puts its
//! files inside the run directory ([`RunLayout`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::CgroupSpec;
use super::config::VmSettings;
use super::confine::VmmUser;
pub use crate::network::{MacAddr, MacAddrError};

/// The virtio-fs tag of the pod's shared directory; the agent mounts it with
/// `mount -t virtiofs vcfs <dir>`.
pub const SHARED_FS_TAG: &str = "vcfs";

/// Longest Unix socket path, in bytes (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// One launch of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Validated settings.
    pub settings: VmSettings,
    /// Directory for sockets, logs and the console (created when missing).
    /// Keep it short: socket paths inside must stay under 108 bytes.
    pub run_dir: PathBuf,
    /// A name for QEMU (`-name`) and the logs, such as the pod id.
    pub name: Option<String>,
    /// Host directory shared with the guest over virtio-fs (tag
    /// [`SHARED_FS_TAG`]), served by one `virtiofsd`.
    pub shared_dir: Option<PathBuf>,
    /// Network namespace QEMU runs in (a path such as `/var/run/netns/NAME`).
    pub netns: Option<PathBuf>,
    /// Taps (already created, in `netns`) given to the guest as virtio-net.
    pub taps: Vec<TapSpec>,
    /// Raw disk images attached at boot as virtio-blk.
    pub disks: Vec<DiskSpec>,
    /// The unprivileged host user QEMU and the vsock daemon run as; `None`
    /// keeps the caller's user (root), for tools that run a throwaway VM.
    pub vmm_user: Option<VmmUser>,
    /// The host cgroup QEMU and every helper run in; `None` leaves them in
    /// the launcher's cgroups.
    pub cgroup: Option<CgroupSpec>,
}

/// A raw disk image given to the guest as virtio-blk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// QEMU node name and device id, and the disk's virtio serial (the guest
    /// finds it by `/sys/block/*/serial`): at most 20 bytes of
    /// `[A-Za-z0-9_-]`, starting with a letter.
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    /// Attach it read-only.
    pub readonly: bool,
}

impl VmSpec {
    /// A spec with no share, no namespace and no taps.
    pub fn new(settings: VmSettings, run_dir: impl Into<PathBuf>) -> Self {
        VmSpec {
            settings,
            run_dir: run_dir.into(),
            name: None,
            shared_dir: None,
            netns: None,
            taps: Vec::new(),
            disks: Vec::new(),
            vmm_user: None,
            cgroup: None,
        }
    }
}

/// A tap device handed to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapSpec {
    /// Interface name of the tap (at most 15 bytes).
    pub ifname: String,
    /// MAC address the guest interface gets.
    pub mac: MacAddr,
}

/// The files of one VM inside its run directory. Names are short on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    /// The run directory.
    pub dir: PathBuf,
    /// Guest serial console (the current file; see [`super::console`]).
    pub console_log: PathBuf,
    /// Socket QEMU sends the console to, served by the console logger.
    pub console_socket: PathBuf,
    /// The console logger's own stdout and stderr.
    pub console_logger_log: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
    /// QMP monitor socket.
    pub qmp_socket: PathBuf,
    /// `vhost-device-vsock`'s own directory (owned by the VMM user), where
    /// it makes its two sockets.
    pub vsock_dir: PathBuf,
    /// vhost-user socket between QEMU and `vhost-device-vsock`.
    pub vsock_vhost_socket: PathBuf,
    /// Hybrid vsock socket the host connects to (`CONNECT <port>`).
    pub vsock_uds: PathBuf,
    /// `vhost-device-vsock`'s log.
    pub vsock_log: PathBuf,
    /// vhost-user socket between QEMU and `virtiofsd`.
    pub fs_socket: PathBuf,
    /// `virtiofsd`'s log.
    pub fs_log: PathBuf,
}

impl RunLayout {
    /// The layout inside `dir`.
    pub fn new(dir: &Path) -> Self {
        RunLayout {
            dir: dir.to_path_buf(),
            console_log: dir.join("console.log"),
            console_socket: dir.join("console.sock"),
            console_logger_log: dir.join("console-logger.log"),
            qemu_log: dir.join("qemu.log"),
            qmp_socket: dir.join("qmp.sock"),
            vsock_dir: dir.join("vsock"),
            vsock_vhost_socket: dir.join("vsock").join("vhost.sock"),
            vsock_uds: dir.join("vsock").join("vsock.sock"),
            vsock_log: dir.join("vsock.log"),
            fs_socket: dir.join("fs.sock"),
            fs_log: dir.join("virtiofsd.log"),
        }
    }

    /// Every socket path of the layout.
    pub fn sockets(&self) -> [&Path; 5] {
        [
            &self.qmp_socket,
            &self.console_socket,
            &self.vsock_vhost_socket,
            &self.vsock_uds,
            &self.fs_socket,
        ]
    }

    /// The first socket path too long for `sun_path`, if any.
    pub fn too_long_socket(&self) -> Option<&Path> {
        self.sockets()
            .into_iter()
            .find(|p| p.as_os_str().len() > MAX_SOCKET_PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_length_is_checked() {
        assert_eq!(
            RunLayout::new(Path::new("/run/vc/pods/p1/vm")).too_long_socket(),
            None
        );
        let long = format!("/run/{}", "x".repeat(100));
        let layout = RunLayout::new(Path::new(&long));
        assert_eq!(layout.too_long_socket(), Some(layout.qmp_socket.as_path()));
    }
}
