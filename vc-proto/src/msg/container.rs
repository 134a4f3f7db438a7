//! Container and process messages: what to run, with which limits, and what the
//! agent reports back.

use serde::{Deserialize, Serialize};

/// The user a process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

/// A resource limit (`setrlimit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Resource name as in `getrlimit(2)` without the prefix, lower case:
    /// `nofile`, `nproc`, `core`, ...
    pub resource: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A process to start: a container's main process, or one more with `Exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program and arguments; `args[0]` is looked up in `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// Environment as `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// User and groups.
    pub user: User,
    /// Whether the process gets a pseudo-terminal (then stdout and stderr are one
    /// stream, [`StreamKind::Tty`]).
    pub terminal: bool,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Capabilities kept (names such as `CAP_CHOWN`); `None` means the default
    /// set. Every other capability is dropped.
    pub capabilities: Option<Vec<String>>,
    /// Set `no_new_privs`.
    pub no_new_privileges: bool,
}

/// A mount inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Source: a path in the guest (for binds), or a device, or a name.
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    /// Filesystem type (`bind`, `tmpfs`, `ext4`, ...).
    pub fstype: String,
    /// Options as for `mount -o`, plus `bind`, `rbind`, `ro`, `rw`.
    pub options: Vec<String>,
}

/// Resource limits of a container's cgroup. `None` leaves a limit unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `memory.max` in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// CPU quota in microseconds per period (`cpu.max`).
    pub cpu_quota_us: Option<u64>,
    /// CPU period in microseconds (`cpu.max`, default 100000).
    pub cpu_period_us: Option<u64>,
    /// `cpu.weight`, 1..=10000.
    pub cpu_weight: Option<u64>,
    /// `pids.max`.
    pub pids_limit: Option<u64>,
}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// A directory in the guest (inside the pod's shared filesystem).
    Path(String),
    /// A block device in the guest holding a filesystem of the given type.
    Block {
        /// Device path or a `/dev/disk/by-*` link.
        device: String,
        /// Filesystem type, such as `ext4`.
        fstype: String,
    },
}

/// Everything the agent needs to create a container
/// (the payload of [`Request::CreateContainer`](crate::Request::CreateContainer)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container id, unique in the pod.
    pub id: String,
    /// Root filesystem.
    pub rootfs: Rootfs,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Hostname inside the container's UTS namespace.
    pub hostname: String,
    /// The main process.
    pub process: ProcessSpec,
    /// Extra mounts, in order.
    pub mounts: Vec<Mount>,
    /// cgroup limits.
    pub resources: Resources,
    /// Absolute paths made unreadable in the container: a file gets
    /// `/dev/null` bound over it, a directory an empty read-only tmpfs; a path
    /// that does not exist is skipped. See [`DEFAULT_MASKED_PATHS`].
    pub masked_paths: Vec<String>,
    /// Absolute paths bound read-only (recursively) over themselves in the
    /// container; a path that does not exist is skipped. See
    /// [`DEFAULT_READONLY_PATHS`].
    pub readonly_paths: Vec<String>,
}

/// The paths runc and containerd mask by default (OCI `linux.maskedPaths`).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths runc and containerd make read-only by default (OCI
/// `linux.readonlyPaths`).
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// State of a container or process in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessState {
    /// Created, main process not started.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Exited.
    Stopped,
}

/// A process in the guest: a container's main process (`exec_id` `None`), one of
/// its exec'ed processes, or a process run in the VM outside any container
/// (`container_id` empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Container id; empty for a process outside any container.
    pub container_id: String,
    /// Exec id; `None` for the container's main process.
    pub exec_id: Option<String>,
}

/// What the agent knows of a container (the reply to
/// [`Request::ContainerState`](crate::Request::ContainerState)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// State.
    pub state: ProcessState,
    /// Pid of the main process in the guest, once started.
    pub pid: Option<u32>,
    /// Exit code once stopped: the exit status, or 128 + signal number.
    pub exit_code: Option<i32>,
    /// Whether the kernel OOM-killed a process of the container.
    pub oom_killed: bool,
}

/// Resource usage of a container, from its cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Total CPU time in microseconds (`cpu.stat usage_usec`).
    pub cpu_usage_us: u64,
    /// User CPU time in microseconds.
    pub cpu_user_us: u64,
    /// System CPU time in microseconds.
    pub cpu_system_us: u64,
    /// `memory.current` in bytes.
    pub memory_usage_bytes: u64,
    /// `memory.max` in bytes; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// `pids.current`.
    pub pids: u64,
    /// `pids.max`; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices.
    pub blkio_read_bytes: u64,
    /// Bytes written to block devices.
    pub blkio_write_bytes: u64,
}

/// Which byte stream of a process a stream connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamKind {
    /// Host to process; the host shutting down its write side is end-of-file.
    Stdin,
    /// Process to host.
    Stdout,
    /// Process to host.
    Stderr,
    /// Both ways, for a process with a terminal.
    Tty,
}

/// The first frame of a process stream connection
/// ([`FrameKind::StreamAttach`](crate::FrameKind::StreamAttach)).
///
/// After the handshake the host sends this, the agent answers with a
/// [`Response::Ok`](crate::Response::Ok) or an error, and from then on the
/// connection carries raw bytes of the named stream. For output streams the agent
/// closes the connection after the last byte the process wrote (end-of-stream);
/// for stdin the host shuts down its write side to signal end-of-file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAttach {
    /// The process.
    pub process: ProcessRef,
    /// The stream.
    pub stream: StreamKind,
}

/// The first frame of a parked output connection
/// ([`FrameKind::StreamPark`](crate::FrameKind::StreamPark), protocol version
/// 3 and later).
///
/// After the handshake the host sends this for a process that does not exist
/// yet; the agent answers [`Response::Ok`](crate::Response::Ok) once the
/// connection is parked, or an error. A later
/// [`Request::ExecDirect`](crate::Request::ExecDirect) for the same process
/// claims it, and the agent gives the connection itself to the process as
/// its stdout or stderr: the bytes that follow the `Ok` are exactly what the
/// process wrote, and the stream ends (EOF) when the process and everything it
/// handed the descriptor to have closed it. A parked connection that no exec
/// claims within `timeout_ms` (the agent caps it at
/// [`MAX_PARK_TIMEOUT_MS`]) is closed by the agent with no byte after the
/// `Ok`; the exec that names it afterwards fails with `NotFound`.
///
/// Payload, in bincode's standard encoding (see [`codec`](crate::codec)):
///
/// ```text
/// process.container_id   varint length, UTF-8 bytes
/// process.exec_id        0 (None) | 1, varint length, UTF-8 bytes
/// stream                 varint variant index: 1 Stdout, 2 Stderr
///                        (0 Stdin and 3 Tty are refused: InvalidArgument)
/// timeout_ms             varint u32
/// ```
///
/// For example container `c`, exec `e`, stdout, 30000 ms is the 9 bytes
/// `01 63 | 01 01 65 | 01 | fb 30 75` (`fb`: a `u16` follows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPark {
    /// The process that will be started with
    /// [`Request::ExecDirect`](crate::Request::ExecDirect).
    pub process: ProcessRef,
    /// [`StreamKind::Stdout`] or [`StreamKind::Stderr`].
    pub stream: StreamKind,
    /// How long the agent keeps the connection waiting for its exec, in
    /// milliseconds.
    pub timeout_ms: u32,
}

/// The longest an agent keeps a parked stream waiting for its exec (two
/// minutes); a longer [`StreamPark::timeout_ms`] is cut to this.
pub const MAX_PARK_TIMEOUT_MS: u32 = 120_000;

/// The most streams one agent (one pod) keeps parked at once; a park beyond
/// it is refused with `WrongState`.
pub const MAX_PARKED_STREAMS: usize = 128;

/// An event the agent reports (the reply to
/// [`Request::NextEvent`](crate::Request::NextEvent)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The kernel OOM-killed a process of this container.
    Oom {
        /// Container id.
        container_id: String,
    },
    /// A process exited.
    Exited {
        /// The process.
        process: ProcessRef,
        /// Exit code: the exit status, or 128 + signal number.
        code: i32,
    },
}
