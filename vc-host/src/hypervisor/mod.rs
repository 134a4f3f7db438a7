//! The hypervisor: a pod's VM as QEMU plus its vhost-user helper daemons.
//!
//! This module owns everything between a [`VmConfig`] and a running VM that
//! any host process can find again:
//!
//! - [`backend`]: the seam the pod layer sees, the object-safe
//!   [`Hypervisor`] trait, its [`Capabilities`] and the [`HypervisorKind`]
//!   a runtime is configured with;
//! - [`config`]: the config as data and its validation into [`VmSettings`];
//! - [`host`]: accelerator (KVM/TCG) and vsock form (kernel/hybrid) choice;
//! - [`tools`]: where the programs are found;
//! - [`spec`]: what one launch is asked for ([`VmSpec`]) and the run
//!   directory's layout;
//! - [`argv`]: the QEMU command line as typed parts;
//! - [`confine`]: the unprivileged user, the sandboxes, and the descriptors
//!   handed to QEMU instead of paths;
//! - [`daemons`]: `vhost-device-vsock`, `virtiofsd` and the console logger;
//! - [`console`]: the bounded guest console and its readers;
//! - [`cgroup`]: the per-pod host cgroup (memory and pids limits);
//! - [`cid`]: guest CIDs for kernel vsock, unique among pods;
//! - [`journal`]: what a launch in progress has started, so that a launcher
//!   killed on the way leaves nothing unnamed;
//! - [`process`]: detached processes, pid + start time, zombie-aware liveness;
//! - [`qmp`]: QMP over the monitor socket (`qapi` crate), with [`scm`]
//!   passing descriptors to it;
//! - [`hotplug`]: block devices plugged into and out of a running q35 guest
//!   over QMP;
//! - [`qemu`]: [`QemuHypervisor`], the launch sequence;
//! - [`vm`]: [`Vm`] and its persistent [`VmRecord`];
//! - [`watch`]: [`HelperWatch`], pidfds on QEMU and every helper, to learn
//!   at once that one died and how.
//!
//! The pod layer holds an `Arc<dyn Hypervisor>`, calls
//! [`Hypervisor::launch`], persists [`Vm::record`] in the pod's directory,
//! reopens it with [`Vm::from_record`] from later processes, asks the agent
//! to shut down, then calls [`Vm::stop`].

pub mod argv;
pub mod backend;
pub mod cgroup;
pub mod cid;
pub mod config;
pub mod confine;
pub mod console;
pub mod daemons;
pub mod host;
pub mod hotplug;
pub mod journal;
pub mod nic;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod scm;
pub mod spec;
pub mod tools;
pub mod vm;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use backend::{BoxFuture, Capabilities, Hypervisor, HypervisorKind};
pub use cgroup::{CgroupError, CgroupLimits, CgroupRecord, CgroupSpec, CgroupVersion};
pub use cid::{CidAllocator, CidError};
pub use config::{
    Accel, AccelChoice, Binaries, ConfigError, GuestLockdown, Machine, VirtiofsCache,
    VirtiofsSandbox, VmConfig, VmSettings, VsockChoice, VsockKind,
};
pub use confine::{ConfineError, VmmUser, DEFAULT_VMM_USER};
pub use daemons::DaemonKind;
pub use host::HostFacts;
pub use nic::NicSpec;
pub use process::{ProcessError, ProcessRecord};
pub use qemu::QemuHypervisor;
pub use qmp::QmpError;
pub use spec::{DiskSpec, MacAddr, TapSpec, VmSpec, SHARED_FS_TAG};
pub use vm::{DaemonRecord, Vm, VmRecord, VmStatus};
pub use watch::{HelperDeath, HelperExit, HelperWatch};

/// Why a VM could not be launched or controlled.
#[derive(Debug, Error)]
pub enum HypervisorError {
    /// The configuration is unusable.
    #[error("the VM configuration is invalid")]
    Config(#[from] ConfigError),
    /// QEMU or a daemon cannot be confined as asked, or a file cannot be
    /// handed to it.
    #[error(transparent)]
    Confine(#[from] ConfineError),
    /// A helper daemon's socket could not be connected for QEMU.
    #[error("cannot connect to {daemon}'s socket {socket}")]
    DaemonConnect {
        /// Which daemon.
        daemon: DaemonKind,
        /// The socket.
        socket: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The monitor socket could not be made.
    #[error("cannot listen on the monitor socket {path}")]
    Monitor {
        /// The socket.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A tap could not be opened for QEMU.
    #[error("cannot open tap {ifname} for QEMU")]
    Tap {
        /// The tap.
        ifname: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The run directory could not be created.
    #[error("cannot create run directory {path}")]
    RunDir {
        /// Run directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another VM's monitor answers in the run directory.
    #[error("run directory {path} belongs to a running VM")]
    RunDirInUse {
        /// Run directory.
        path: PathBuf,
    },
    /// A socket path does not fit in `sun_path`.
    #[error("socket path {path} is longer than 107 bytes: use a shorter run directory")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// The shared directory is not a directory.
    #[error("shared directory {path} is not a directory")]
    SharedDir {
        /// The path.
        path: PathBuf,
    },
    /// A tap name QEMU or the kernel would refuse.
    #[error("tap name {ifname:?} must be 1 to 15 bytes without '/'")]
    TapName {
        /// The name.
        ifname: String,
    },
    /// The network namespace could not be opened.
    #[error("cannot open network namespace {path}")]
    Netns {
        /// Namespace path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The pod's host cgroup could not be set up or removed.
    #[error("the VM's host cgroup failed")]
    Cgroup(#[from] CgroupError),
    /// No guest CID could be allocated.
    #[error("cannot allocate a guest CID")]
    Cid(#[from] CidError),
    /// A process could not be started.
    #[error("cannot start {what}")]
    Start {
        /// QEMU or the daemon's name.
        what: &'static str,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// A helper daemon exited while starting.
    #[error("{daemon} exited while starting; its log ends with:\n{log_tail}")]
    DaemonDied {
        /// Which daemon.
        daemon: DaemonKind,
        /// The end of its log.
        log_tail: String,
    },
    /// A helper daemon did not create its socket in time.
    #[error("{daemon} did not create {socket} within {timeout:?}; its log ends with:\n{log_tail}")]
    DaemonTimeout {
        /// Which daemon.
        daemon: DaemonKind,
        /// The socket waited for.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// QEMU exited while starting.
    #[error("QEMU exited while starting; its log ends with:\n{qemu_log}\nand the console with:\n{console}")]
    QemuExited {
        /// The end of QEMU's stdout/stderr.
        qemu_log: String,
        /// The end of the guest console.
        console: String,
    },
    /// QEMU runs but its monitor did not answer.
    #[error(
        "QEMU did not answer on its monitor within {timeout:?}; its log ends with:\n{qemu_log}"
    )]
    QemuNotReady {
        /// How long we waited.
        timeout: Duration,
        /// The end of QEMU's stdout/stderr.
        qemu_log: String,
        /// The last monitor error, if any.
        #[source]
        source: Option<QmpError>,
    },
    /// A monitor command failed.
    #[error("the QEMU monitor failed")]
    Qmp(#[from] QmpError),
    /// The VM is not running (for pause, resume).
    #[error("the VM (QEMU pid {pid}) is not running")]
    NotRunning {
        /// QEMU's pid.
        pid: i32,
    },
    /// A process would not stop.
    #[error("cannot stop {what}")]
    Stop {
        /// QEMU or the daemon's name.
        what: &'static str,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// QEMU could not be stopped or continued (pause and resume).
    #[error("cannot {action} QEMU")]
    Freeze {
        /// `stop` or `continue`.
        action: &'static str,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// The launch journal could not be written.
    #[error("cannot write the launch journal")]
    Journal(#[source] crate::store::StoreError),
    /// A record written by an incompatible version.
    #[error("VM record format {found} is not supported (this build reads {expected})")]
    RecordFormat {
        /// Format found.
        found: u32,
        /// Format understood.
        expected: u32,
    },
}
