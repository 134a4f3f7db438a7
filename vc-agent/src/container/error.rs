//! Errors of the container module: [`ContainerError`] for everything done in the
//! agent's own process, [`ChildSetupError`] for what fails in a forked child,
//! where there is no room for strings.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// A container operation failed in the agent.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The id cannot name a directory and a cgroup.
    #[error("container id {0:?} is not valid: use 1 to 64 letters, digits, '_', '.' or '-'")]
    InvalidId(String),

    /// A container with this id exists already.
    #[error("a container with id {0:?} exists already")]
    Exists(String),

    /// The rootfs directory or device is not there.
    #[error("the container rootfs {} does not exist", .0.display())]
    RootfsMissing(PathBuf),

    /// A bind mount's source is not there.
    #[error("the source {} of the mount on {destination} does not exist", source_path.display())]
    MountSourceMissing {
        /// The mount's source path in the guest.
        source_path: PathBuf,
        /// The mount's destination in the container.
        destination: String,
    },

    /// A mount of the spec cannot be done as written.
    #[error("the mount on {destination:?} is not valid: {reason}")]
    InvalidMount {
        /// The mount's destination in the container.
        destination: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A masked or read-only path of the spec cannot be used.
    #[error("the {field} entry {path:?} is not valid: {reason}")]
    InvalidPath {
        /// `masked_paths` or `readonly_paths`.
        field: &'static str,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The device allow-list (a cgroup BPF program) could not be set up.
    #[error("could not {action} the device allow-list of the cgroup {}", path.display())]
    DeviceFilter {
        /// What was being done.
        action: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The error of the `bpf` system call.
        #[source]
        source: Errno,
    },

    /// A string of the spec holds a NUL byte.
    #[error("the {what} holds a NUL byte")]
    NulByte {
        /// Which string.
        what: &'static str,
    },

    /// The hostname cannot be set.
    #[error("the hostname {0:?} is longer than 64 bytes")]
    HostnameTooLong(String),

    /// The process has no program.
    #[error("the process has no arguments: args[0] names the program")]
    NoProgram,

    /// The working directory is not an absolute path.
    #[error("the working directory {0:?} is not an absolute path")]
    RelativeCwd(String),

    /// A capability name is unknown.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),

    /// An rlimit name is unknown.
    #[error("unknown rlimit {0:?}")]
    UnknownRlimit(String),

    /// An rlimit's soft limit is above its hard limit.
    #[error("the rlimit {0} has a soft limit above its hard limit")]
    RlimitSoftAboveHard(String),

    /// A resource limit is out of the range the kernel accepts.
    #[error("the resource limit {field} = {value} is out of range ({range})")]
    InvalidResource {
        /// Field of `Resources`.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range.
        range: &'static str,
    },

    /// A limit was asked for a cgroup controller the guest kernel does not offer.
    #[error("the {0} cgroup controller is not available in {1}")]
    ControllerUnavailable(&'static str, PathBuf),

    /// The cgroup2 hierarchy is not mounted where expected.
    #[error("{} is not a cgroup2 mount", .0.display())]
    NotCgroup2(PathBuf),

    /// A cgroups-rs call failed.
    #[error("could not {action} the cgroup {}", path.display())]
    Cgroup {
        /// What was being done.
        action: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// What cgroups-rs reported.
        #[source]
        source: CgroupsRsError,
    },

    /// Reading or writing a file (cgroupfs, rootfs, state directory) failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// A mount or unmount in the agent's namespace failed.
    #[error("could not {action} {}", path.display())]
    Mount {
        /// What was being done.
        action: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: Errno,
    },

    /// A cgroup file held something unexpected.
    #[error("could not parse {} ({what})", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },

    /// The cgroup did not reach the frozen (or thawed) state in time.
    #[error("the cgroup {} did not become {state} within {millis} ms", path.display())]
    FreezeTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// `frozen` or `thawed`.
        state: &'static str,
        /// How long we waited.
        millis: u64,
    },

    /// Processes were still in the cgroup after killing them.
    #[error("processes of the cgroup {} did not exit within {millis} ms", path.display())]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How long we waited.
        millis: u64,
    },

    /// The rootfs block device did not show up.
    #[error("the block device {} did not appear within {millis} ms", path.display())]
    DeviceTimeout {
        /// The device path.
        path: PathBuf,
        /// How long we waited.
        millis: u64,
    },

    /// The agent runs on the initramfs itself, where `pivot_root` cannot work.
    #[error(
        "the agent's root is the root of its mount namespace (the initramfs), where pivot_root \
         cannot work: PID 1 must call container::leave_initramfs() before mounting anything"
    )]
    RootIsInitramfs,

    /// The seccomp choice cannot be turned into filters.
    #[error("the container's seccomp filter is refused")]
    Seccomp(#[from] super::seccomp::SeccompError),

    /// The main process whose namespaces an exec joins is gone.
    #[error("the container's main process {pid} is not running")]
    MainProcessGone {
        /// Its pid in the agent's PID namespace.
        pid: i32,
        /// Opening its namespace failed so.
        #[source]
        source: Errno,
    },
}

/// The error of a cgroups-rs call, shown without the cause that cgroups-rs
/// already prints in its own message (the cause stays available as the source).
#[derive(Debug)]
pub struct CgroupsRsError(pub cgroups_rs::fs::error::Error);

impl fmt::Display for CgroupsRsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0.kind(), f)
    }
}

impl std::error::Error for CgroupsRsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// One step of a child's setup, to say which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum SetupStep {
    /// Resetting signal dispositions and the signal mask.
    Signals = 1,
    /// Writing to the container cgroup's `cgroup.procs`.
    JoinCgroup,
    /// `setns` into the main process's namespaces.
    JoinNamespaces,
    /// Making every mount private.
    MountPropagation,
    /// Mounting `/proc`.
    MountProc,
    /// Mounting `/sys`.
    MountSys,
    /// `unshare(CLONE_NEWCGROUP)` once in the container's cgroup.
    CgroupNamespace,
    /// Mounting the container's cgroup at `/sys/fs/cgroup`.
    MountCgroup,
    /// Mounting the `/dev` tmpfs.
    MountDev,
    /// Creating a device node in `/dev`.
    DeviceNode,
    /// Mounting `/dev/pts`.
    MountDevPts,
    /// Mounting `/dev/shm`.
    MountShm,
    /// Mounting `/dev/mqueue`.
    MountMqueue,
    /// Creating a symbolic link in `/dev`.
    DevSymlink,
    /// Creating a mount point.
    MountPoint,
    /// One of the spec's mounts (see the index).
    SpecMount,
    /// Bind-mounting `/etc/resolv.conf`, `/etc/hosts` or `/etc/hostname`.
    EtcFile,
    /// `pivot_root` and detaching the old root.
    PivotRoot,
    /// Making the root read-only, recursively.
    ReadonlyRoot,
    /// `sethostname`.
    Hostname,
    /// `setrlimit`.
    Rlimit,
    /// Dropping capabilities from the bounding set.
    CapBounding,
    /// `setgroups`.
    SetGroups,
    /// `setgid`.
    SetGid,
    /// `setuid`.
    SetUid,
    /// `capset` and clearing the ambient set.
    Capabilities,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// `chdir` to the working directory.
    Cwd,
    /// Forking the process that enters the PID namespace (exec).
    Fork,
    /// `PR_SET_PDEATHSIG`.
    ParentDeathSignal,
    /// `execve`.
    Exec,
    /// Installing the seccomp filters.
    Seccomp,
    /// Masking a path (see the index in `masked_paths`).
    MaskPath,
    /// Making a path read-only (see the index in `readonly_paths`).
    ReadonlyPath,
}

impl SetupStep {
    const ALL: [SetupStep; 34] = [
        SetupStep::Signals,
        SetupStep::JoinCgroup,
        SetupStep::JoinNamespaces,
        SetupStep::MountPropagation,
        SetupStep::MountProc,
        SetupStep::MountSys,
        SetupStep::CgroupNamespace,
        SetupStep::MountCgroup,
        SetupStep::MountDev,
        SetupStep::DeviceNode,
        SetupStep::MountDevPts,
        SetupStep::MountShm,
        SetupStep::MountMqueue,
        SetupStep::DevSymlink,
        SetupStep::MountPoint,
        SetupStep::SpecMount,
        SetupStep::EtcFile,
        SetupStep::PivotRoot,
        SetupStep::ReadonlyRoot,
        SetupStep::Hostname,
        SetupStep::Rlimit,
        SetupStep::CapBounding,
        SetupStep::SetGroups,
        SetupStep::SetGid,
        SetupStep::SetUid,
        SetupStep::Capabilities,
        SetupStep::NoNewPrivs,
        SetupStep::Cwd,
        SetupStep::Fork,
        SetupStep::ParentDeathSignal,
        SetupStep::Exec,
        SetupStep::Seccomp,
        SetupStep::MaskPath,
        SetupStep::ReadonlyPath,
    ];

    fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u8 == v)
    }

    /// What the step does, as a verb phrase ("mount /proc").
    pub fn describe(self) -> &'static str {
        match self {
            SetupStep::Signals => "reset signal handling",
            SetupStep::JoinCgroup => "join the container cgroup",
            SetupStep::JoinNamespaces => "join the container namespaces",
            SetupStep::MountPropagation => "make mounts private",
            SetupStep::MountProc => "mount /proc",
            SetupStep::MountSys => "mount /sys",
            SetupStep::CgroupNamespace => "enter a new cgroup namespace",
            SetupStep::MountCgroup => "mount /sys/fs/cgroup",
            SetupStep::MountDev => "mount /dev",
            SetupStep::DeviceNode => "create a device node in /dev",
            SetupStep::MountDevPts => "mount /dev/pts",
            SetupStep::MountShm => "mount /dev/shm",
            SetupStep::MountMqueue => "mount /dev/mqueue",
            SetupStep::DevSymlink => "create a symbolic link in /dev",
            SetupStep::MountPoint => "create a mount point",
            SetupStep::SpecMount => "mount a volume",
            SetupStep::EtcFile => "bind-mount a file of /etc",
            SetupStep::PivotRoot => "pivot_root into the rootfs",
            SetupStep::ReadonlyRoot => "make the rootfs read-only",
            SetupStep::Hostname => "set the hostname",
            SetupStep::Rlimit => "set an rlimit",
            SetupStep::CapBounding => "drop capabilities from the bounding set",
            SetupStep::SetGroups => "set the supplementary groups",
            SetupStep::SetGid => "set the group id",
            SetupStep::SetUid => "set the user id",
            SetupStep::Capabilities => "set the capabilities",
            SetupStep::NoNewPrivs => "set no_new_privs",
            SetupStep::Cwd => "change to the working directory",
            SetupStep::Fork => "fork into the container's PID namespace",
            SetupStep::ParentDeathSignal => "set the parent death signal",
            SetupStep::Exec => "execute the program",
            SetupStep::Seccomp => "install the seccomp filter",
            SetupStep::MaskPath => "mask a path",
            SetupStep::ReadonlyPath => "make a path read-only",
        }
    }
}

impl fmt::Display for SetupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A failure in the forked child: the step, which mount (for mount steps with
/// several items), and the errno. `Copy` and encodable in
/// [`ChildSetupError::ENCODED_LEN`] bytes, so the child can write it to an error
/// pipe without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSetupError {
    step: SetupStep,
    index: u16,
    errno: Errno,
}

impl ChildSetupError {
    /// Size of [`ChildSetupError::encode`]'s output.
    pub const ENCODED_LEN: usize = 8;

    /// A failure of `step` with `errno`.
    pub const fn new(step: SetupStep, errno: Errno) -> Self {
        Self {
            step,
            index: 0,
            errno,
        }
    }

    /// A failure of the `index`-th item of `step` (0-based; for spec mounts, the
    /// index in `ContainerSpec::mounts`).
    pub const fn at(step: SetupStep, index: u16, errno: Errno) -> Self {
        Self { step, index, errno }
    }

    /// The step that failed.
    pub fn step(&self) -> SetupStep {
        self.step
    }

    /// Which item of the step (see [`ChildSetupError::at`]).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The errno of the failed system call.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// Whether `execve` itself failed (the program is missing or not
    /// executable), rather than the setup before it.
    pub fn is_exec(&self) -> bool {
        self.step == SetupStep::Exec
    }

    /// Encodes into a fixed record: errno (4 bytes LE), step, 0, index (2 bytes LE).
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&(self.errno as i32).to_le_bytes());
        out[4] = self.step as u8;
        out[6..8].copy_from_slice(&self.index.to_le_bytes());
        out
    }

    /// Decodes [`ChildSetupError::encode`]'s output; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let errno = Errno::from_raw(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        let step = SetupStep::from_u8(bytes[4])?;
        let index = u16::from_le_bytes([bytes[6], bytes[7]]);
        Some(Self { step, index, errno })
    }
}

impl fmt::Display for ChildSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            SetupStep::SpecMount
            | SetupStep::EtcFile
            | SetupStep::MountPoint
            | SetupStep::MaskPath
            | SetupStep::ReadonlyPath => {
                write!(f, "could not {} (#{})", self.step, self.index)
            }
            _ => write!(f, "could not {}", self.step),
        }
    }
}

impl std::error::Error for ChildSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_error_round_trips() {
        for step in SetupStep::ALL {
            let e = ChildSetupError::at(step, 513, Errno::EACCES);
            assert_eq!(ChildSetupError::decode(&e.encode()), Some(e));
        }
    }

    #[test]
    fn child_error_rejects_garbage() {
        assert_eq!(ChildSetupError::decode(&[0u8; 3]), None);
        assert_eq!(ChildSetupError::decode(&[0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(ChildSetupError::decode(&[0, 0, 0, 0, 200, 0, 0, 0]), None);
    }

    #[test]
    fn child_error_messages_name_the_step_not_the_errno() {
        let e = ChildSetupError::at(SetupStep::SpecMount, 2, Errno::ENOENT);
        assert_eq!(e.to_string(), "could not mount a volume (#2)");
        let e = ChildSetupError::new(SetupStep::PivotRoot, Errno::EINVAL);
        assert_eq!(e.to_string(), "could not pivot_root into the rootfs");
        assert!(std::error::Error::source(&e).is_some());
    }
}
