//! The command line of virtc.
//!
//! The doc comments here are clap's help text, where brackets mark optional
//! parts (`UID[:GID]`), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vc_host::config::{DiskConfig, TmpfsConfig, VolumeConfig};
use vc_host::hypervisor::config::Machine;
use vc_host::id::{ContainerId, PodId};

/// virtc: create and run pods (VMs) and containers (processes in them) with vc.
#[derive(Debug, Parser)]
#[command(name = "virtc", version)]
pub struct Cli {
    /// Runtime root holding the state of every pod [env: VC_ROOT; default /run/vc].
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Guest image directory (vmlinuz, initrd.img, manifest.json)
    /// [env: VC_GUEST_IMAGE_DIR].
    #[arg(long, global = true)]
    pub image_dir: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log level or filter on stderr (default warn; RUST_LOG overrides).
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage pods.
    #[command(subcommand)]
    Pod(PodCommand),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Create a pod with one container, print its output, clean up, and exit
    /// with the container's exit code.
    Run(Box<RunArgs>),
    /// Manage the warm pool: VMs booted ahead of time that pods adopt at start.
    #[command(subcommand)]
    Pool(PoolCommand),
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Boot VMs of a shape until the pool holds COUNT of them.
    Fill {
        /// How many slots of this shape the pool should hold.
        count: usize,
        /// Virtual CPUs (default: a pod's default).
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB (default: a pod's default).
        #[arg(long)]
        memory_mib: Option<u32>,
        /// Machine type: microvm or q35 (default: a pod's default).
        #[arg(long, value_parser = parse_machine)]
        machine: Option<Machine>,
    },
    /// List the pool's slots with their shape, age and health.
    Status,
    /// Stop and remove every slot.
    Drain,
}

/// Parses a machine type by its configuration name.
pub fn parse_machine(s: &str) -> Result<Machine, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown machine type {s:?} (microvm or q35)"))
}

/// VM settings shared by `pod create` and `run`.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// Virtual CPUs.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    pub memory_mib: Option<u32>,
    /// Machine type: microvm or q35 (default microvm).
    #[arg(long, value_parser = parse_machine)]
    pub machine: Option<Machine>,
    /// Network namespace whose interfaces the VM gets (such as /var/run/netns/NAME).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// The most the VM's boot may take, in seconds from its admission
    /// (default 120); a boot whose console stays silent for 30 s fails sooner.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub boot_timeout: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Prepare a pod without starting its VM.
    Create {
        /// Pod id.
        id: PodId,
        /// A pod configuration file (TOML or JSON) instead of flags.
        #[arg(long, conflicts_with_all = ["vcpus", "memory_mib", "machine", "netns", "hostname", "boot_timeout"])]
        config: Option<PathBuf>,
        /// Hostname (default: the id).
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Boot a pod's VM (or adopt a matching VM of the warm pool) and start
    /// its containers.
    Start {
        id: PodId,
        /// Boot a new VM even when the pool has a matching one.
        #[arg(long)]
        no_pool: bool,
    },
    /// Stop a pod's containers and its VM.
    Stop { id: PodId },
    /// Delete a stopped or never started pod.
    Delete {
        id: PodId,
        /// Delete whatever state the pod is in, even with corrupt or
        /// half-written records: stop what its record names, undo its binds,
        /// remove its directory; nothing else.
        #[arg(long)]
        force: bool,
    },
    /// List every pod on the host.
    List,
    /// Show a pod's state, processes and containers.
    Status { id: PodId },
    /// Freeze a pod's VM.
    Pause { id: PodId },
    /// Thaw a pod's VM.
    Resume { id: PodId },
    /// Print the pod's events (OOM kills, process exits), one per line, until
    /// the pod stops.
    Events { id: PodId },
    /// Run a command in the pod's VM, outside any container (for debugging).
    Enter {
        id: PodId,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The pod's network: what is mirrored into its VM, and updates after
    /// its network namespace changed.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Rescan the running pod's network namespace and apply the difference
    /// to its VM (interfaces plugged or unplugged on q35; addresses, routes
    /// and neighbours on every machine).
    Update { id: PodId },
    /// List the interfaces mirrored into the pod's VM, with their taps, and
    /// the guest's routes.
    List { id: PodId },
}

/// What a container runs, shared by `container create` and `run`.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Host directory with the container's root filesystem.
    #[arg(
        long,
        required_unless_present = "rootfs_image",
        conflicts_with = "rootfs_image"
    )]
    pub rootfs: Option<PathBuf>,
    /// A raw ext4 image holding the root filesystem, attached as a virtio-blk
    /// disk instead of a shared directory.
    #[arg(long)]
    pub rootfs_image: Option<PathBuf>,
    /// A raw disk image mounted in the container,
    /// IMAGE:CONTAINER[:ro|rw][:FSTYPE] (repeatable; FSTYPE ext4 by default).
    #[arg(long = "disk")]
    pub disks: Vec<DiskConfig>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub readonly: bool,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// User as UID[:GID].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Hostname of the container.
    #[arg(long)]
    pub hostname: Option<String>,
    /// A host path mounted in the container, HOST:CONTAINER[:ro] (repeatable).
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<VolumeConfig>,
    /// A tmpfs, PATH[:size=SIZE,mode=OCTAL] (repeatable; SIZE as 64m).
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<TmpfsConfig>,
    /// Size of /dev/shm (bytes, or with a k, m or g suffix).
    #[arg(long, value_parser = vc_host::storage::parse_size)]
    pub shm_size: Option<u64>,
    /// Seccomp filter: default (Docker's default profile), unconfined, or
    /// the path of a JSON profile in the OCI LinuxSeccomp form.
    #[arg(
        long,
        default_value = "default",
        value_name = "default|unconfined|PATH"
    )]
    pub seccomp: String,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// cgroup limits, shared by `container create`, `container update` and `run`.
/// Each takes a number, a size with a K, M or G suffix (powers of 1024), or
/// `max` for no limit.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Memory limit in bytes.
    #[arg(long, value_parser = parse_limit)]
    pub memory_limit: Option<u64>,
    /// Most processes at once.
    #[arg(long, value_parser = parse_limit)]
    pub pids_limit: Option<u64>,
    /// CPU quota in microseconds per period (100 ms unless --cpu-period-us).
    #[arg(long, value_parser = parse_limit)]
    pub cpu_quota_us: Option<u64>,
    /// CPU period in microseconds.
    #[arg(long)]
    pub cpu_period_us: Option<u64>,
    /// CPU weight, 1 to 10000 (100 is the default share).
    #[arg(long)]
    pub cpu_weight: Option<u64>,
}

/// Parses `123`, `64M`, `1G` or `max` (`u64::MAX`, no limit).
pub fn parse_limit(s: &str) -> Result<u64, String> {
    if s == "max" {
        return Ok(u64::MAX);
    }
    vc_host::storage::parse_size(s)
        .map_err(|_| format!("{s:?} is not a number, a size such as 64M, or max"))
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container in a ready or running pod.
    Create {
        pod: PodId,
        id: ContainerId,
        #[command(flatten)]
        args: Box<ContainerArgs>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Start a created container.
    Start { pod: PodId, id: ContainerId },
    /// Stop a container: SIGTERM, then SIGKILL after the grace period.
    Stop {
        pod: PodId,
        id: ContainerId,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, default_value_t = 10)]
        grace: u64,
    },
    /// Delete a ready or stopped container.
    Delete { pod: PodId, id: ContainerId },
    /// Send a signal to a container.
    Kill {
        pod: PodId,
        id: ContainerId,
        /// Signal number or name (TERM, KILL, SIGINT, 9, ...).
        #[arg(long, short = 's', default_value = "TERM")]
        signal: String,
        /// Signal every process of the container, not only the main one.
        #[arg(long)]
        all: bool,
    },
    /// Show a container's state, pid and exit code.
    Status { pod: PodId, id: ContainerId },
    /// Wait for a container's main process and exit with its code.
    Wait { pod: PodId, id: ContainerId },
    /// Change a container's limits while it runs; unset flags stay as they are.
    Update {
        pod: PodId,
        id: ContainerId,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show a container's CPU, memory, pids and block I/O usage.
    Stats { pod: PodId, id: ContainerId },
    /// Run one more process in a running container, relay its streams and
    /// exit with its code.
    Exec(ExecArgs),
}

/// `container exec`: what to run in the container and how to attach.
#[derive(Debug, Args)]
pub struct ExecArgs {
    pub pod: PodId,
    pub id: ContainerId,
    #[command(flatten)]
    pub io: IoArgs,
    /// Environment variable KEY=VALUE (repeatable), after the container's.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    #[arg(long)]
    pub cwd: Option<String>,
    /// User as UID[:GID] (default: the container's).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How a process's streams meet virtc's own (`run`, `container exec`).
#[derive(Debug, Clone, Copy, Args)]
pub struct IoArgs {
    /// Keep stdin open and send virtc's stdin to the process.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the process a terminal; the local terminal goes to raw mode and
    /// window size changes are forwarded.
    #[arg(long, short = 't')]
    pub tty: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pod id (default: generated).
    #[arg(long)]
    pub pod: Option<PodId>,
    /// Container id.
    #[arg(long, default_value = "main")]
    pub name: ContainerId,
    /// Keep the pod and container instead of removing them at the end.
    #[arg(long)]
    pub keep: bool,
    /// Boot a new VM even when the warm pool has a matching one.
    #[arg(long)]
    pub no_pool: bool,
    #[command(flatten)]
    pub vm: VmArgs,
    #[command(flatten)]
    pub container: ContainerArgs,
    #[command(flatten)]
    pub io: IoArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}
