//! The QEMU command line as data: typed options ([`QemuOpt`]) built from the
//! settings and the launch spec, rendered to argv at the last moment.
//!
//! Option values that QEMU parses as `key=value,...` lists (paths, names)
//! have their commas doubled, QEMU's escape, so a path with a comma cannot
//! inject options.
//!
//! QEMU is handed descriptors, not paths ([`QemuFds`], see
//! [`super::confine`]): it runs as an unprivileged user under
//! `-sandbox` ([`QEMU_SANDBOX`]) and opens nothing of the VM's by path.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::config::{Accel, Machine, VmSettings, VsockKind};
use super::confine::QEMU_SANDBOX;
use super::hotplug::{HOTPLUG_PORTS, HOTPLUG_PORT_PREFIX};
use super::spec::{DiskSpec, MacAddr, VmSpec, SHARED_FS_TAG};

/// Id of the shared memory backend (vhost-user daemons map guest memory).
const MEM_ID: &str = "mem";
const CONSOLE_ID: &str = "console";
const QMP_ID: &str = "qmp";
const VSOCK_ID: &str = "vsock";
const FS_ID: &str = "fs";
const BALLOON_ID: &str = "balloon";

/// The `-add-fd` set of boot disk `i` is `DISK_FDSET_BASE + i`.
pub const DISK_FDSET_BASE: u32 = 2;

/// What QEMU gets instead of paths: descriptors opened by the launching
/// process and inherited by QEMU (numbers as in that process).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuFds {
    /// The kernel, as `/proc/self/fd/N`.
    pub kernel: PathBuf,
    /// The initrd, as `/proc/self/fd/N`.
    pub initrd: Option<PathBuf>,
    /// A connection to the console logger's socket.
    pub console: RawFd,
    /// The monitor's listening socket.
    pub qmp: RawFd,
    /// A connection to the vsock daemon (hybrid vsock).
    pub vsock: Option<RawFd>,
    /// A connection to virtiofsd (with a shared directory).
    pub fs: Option<RawFd>,
    /// One open queue per tap of the spec, in order.
    pub taps: Vec<RawFd>,
    /// One descriptor per disk of the spec, in order, opened read-only or
    /// read-write as the disk is.
    pub disks: Vec<RawFd>,
}

/// The path by which QEMU opens a descriptor of fd set `set`.
pub fn fdset_path(set: u32) -> PathBuf {
    PathBuf::from(format!("/dev/fdset/{set}"))
}

/// How devices attach: virtio-mmio on microvm, PCI on q35.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `virtio-*-device` on the microvm's virtio-mmio slots.
    Mmio,
    /// `virtio-*-pci`.
    Pci,
}

impl Transport {
    /// The transport of a machine type.
    pub fn of(machine: Machine) -> Self {
        match machine {
            Machine::Microvm => Transport::Mmio,
            Machine::Q35 => Transport::Pci,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Transport::Mmio => "device",
            Transport::Pci => "pci",
        }
    }
}

/// A character device backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chardev {
    /// A Unix socket handed over open: listening (QEMU accepts, and does
    /// not wait for a client) when `server`, else connected.
    Socket {
        /// Chardev id.
        id: &'static str,
        /// The descriptor.
        fd: RawFd,
        /// A listening socket.
        server: bool,
    },
}

/// A device on the guest's bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// vsock through a vhost-user daemon.
    VhostUserVsock {
        /// Bus.
        transport: Transport,
        /// Chardev connected to the daemon.
        chardev: &'static str,
    },
    /// vsock through the host kernel's vhost-vsock.
    VhostVsock {
        /// Bus.
        transport: Transport,
        /// Guest context id.
        cid: u32,
    },
    /// virtio-fs through a vhost-user daemon (virtiofsd).
    VhostUserFs {
        /// Bus.
        transport: Transport,
        /// Chardev connected to the daemon.
        chardev: &'static str,
        /// Mount tag seen by the guest.
        tag: &'static str,
    },
    /// virtio-net on a netdev.
    VirtioNet {
        /// Bus.
        transport: Transport,
        /// Netdev id.
        netdev: String,
        /// Guest MAC address.
        mac: MacAddr,
    },
    /// virtio-blk on a `-blockdev` node of the same id, with that id as its
    /// serial.
    VirtioBlk {
        /// Bus.
        transport: Transport,
        /// Node name, device id and serial.
        id: String,
    },
    /// virtio-balloon with free page reporting: the guest tells the host
    /// which pages it freed and QEMU discards them from the memory backend.
    /// vc never inflates it.
    Balloon {
        /// Bus.
        transport: Transport,
    },
    /// A PCIe root port (q35) that a device can be hot-plugged into later.
    PcieRootPort {
        /// Port id.
        id: String,
        /// Chassis number, unique per port.
        chassis: u32,
    },
}

/// One QEMU option with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuOpt {
    /// `-name`.
    Name(String),
    /// `-sandbox` (seccomp).
    Sandbox(&'static str),
    /// `-add-fd fd=N,set=S`: descriptor `fd` joins fd set `set`, opened
    /// by QEMU as `/dev/fdset/S`.
    AddFd {
        /// Descriptor number.
        fd: RawFd,
        /// Fd set id.
        set: u32,
    },
    /// `-machine`.
    Machine {
        /// Machine type.
        machine: Machine,
        /// microvm only: `pit=on,pic=on` (needed under TCG, which has no
        /// kvmclock); `None` leaves QEMU's default.
        legacy_timers: Option<bool>,
        /// Memory backend id.
        memory_backend: &'static str,
    },
    /// `-accel`; under TCG with the translation cache size in MiB
    /// (`tb-size`, see [`super::config::VmConfig::tcg_tb_size_mib`]).
    Accel {
        /// The accelerator.
        accel: Accel,
        /// TCG's `tb-size`, ignored under KVM.
        tb_size_mib: u32,
    },
    /// `-cpu`.
    Cpu(&'static str),
    /// `-smp`.
    Smp(u32),
    /// `-m` in MiB.
    Memory(u32),
    /// `-object memory-backend-memfd,...,share=on`.
    MemfdBackend {
        /// Object id.
        id: &'static str,
        /// Size in MiB.
        size_mib: u32,
    },
    /// `-kernel`.
    Kernel(PathBuf),
    /// `-initrd`.
    Initrd(PathBuf),
    /// `-append`.
    Append(String),
    /// `-chardev`.
    Chardev(Chardev),
    /// `-serial chardev:<id>`.
    Serial(&'static str),
    /// `-mon chardev=<id>,mode=control` (QMP).
    QmpMonitor(&'static str),
    /// `-netdev tap,id=..,fd=..`: a tap queue opened by the launcher.
    TapNetdev {
        /// Netdev id.
        id: String,
        /// The open queue.
        fd: RawFd,
    },
    /// `-blockdev driver=raw,...,file.driver=file,file.filename=..`
    /// (`/dev/fdset/S` for a disk handed over).
    Blockdev(DiskSpec),
    /// `-device`.
    Device(Device),
    /// An option without argument such as `-no-reboot`.
    Flag(&'static str),
    /// `-display none`.
    DisplayNone,
}

/// A complete QEMU invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    /// The program.
    pub program: PathBuf,
    /// Its options, in order.
    pub opts: Vec<QemuOpt>,
}

/// The guest kernel command line: `console=ttyS0 panic=-1`, on microvm
/// under TCG the host's TSC rate (`tsc_early_khz`, see [`super::host`]), the
/// lockdown level, the agent's `vc.*` keys, then the caller's extra arguments. (microvm appends
/// its `virtio_mmio.device=` entries itself: `auto-kernel-cmdline` stays on.)
pub fn kernel_cmdline(settings: &VmSettings) -> String {
    let mut args = vec!["console=ttyS0".to_owned(), "panic=-1".to_owned()];
    if let (Machine::Microvm, Accel::Tcg, Some(khz)) =
        (settings.machine, settings.accel, settings.tsc_khz)
    {
        args.push(format!("tsc_early_khz={khz}"));
    }
    args.extend(settings.guest_lockdown.kernel_arg().map(str::to_owned));
    args.extend([
        format!("vc.log={}", settings.agent_log),
        format!("vc.port={}", settings.agent_port),
    ]);
    if !settings.agent_debug.is_empty() {
        args.push(format!("vc.debug={}", settings.agent_debug.join(",")));
    }
    args.extend(settings.kernel_args.iter().cloned());
    args.join(" ")
}

impl QemuCommand {
    /// The command for `spec`, with files handed over as `fds`; `cid` is
    /// the guest CID for kernel vsock (ignored for hybrid).
    pub fn build(spec: &VmSpec, fds: &QemuFds, cid: Option<u32>) -> Self {
        let s = &spec.settings;
        let transport = Transport::of(s.machine);
        let mut opts = Vec::new();
        if let Some(name) = &spec.name {
            opts.push(QemuOpt::Name(name.clone()));
        }
        opts.push(QemuOpt::Sandbox(QEMU_SANDBOX));
        opts.push(QemuOpt::Machine {
            machine: s.machine,
            legacy_timers: match (s.machine, s.accel) {
                (Machine::Microvm, Accel::Tcg) => Some(true),
                _ => None,
            },
            memory_backend: MEM_ID,
        });
        opts.push(QemuOpt::Accel {
            accel: s.accel,
            tb_size_mib: s.tcg_tb_size_mib,
        });
        opts.push(QemuOpt::Cpu(match s.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }));
        opts.push(QemuOpt::Smp(s.vcpus));
        opts.push(QemuOpt::Memory(s.memory_mib));
        opts.push(QemuOpt::MemfdBackend {
            id: MEM_ID,
            size_mib: s.memory_mib,
        });
        opts.push(QemuOpt::Kernel(fds.kernel.clone()));
        if let Some(initrd) = &fds.initrd {
            opts.push(QemuOpt::Initrd(initrd.clone()));
        }
        opts.push(QemuOpt::Append(kernel_cmdline(s)));
        // The console goes to the logger, which bounds it (see
        // [`super::console`]), over a connection the launcher made.
        opts.push(QemuOpt::Chardev(Chardev::Socket {
            id: CONSOLE_ID,
            fd: fds.console,
            server: false,
        }));
        opts.push(QemuOpt::Serial(CONSOLE_ID));
        opts.push(QemuOpt::Chardev(Chardev::Socket {
            id: QMP_ID,
            fd: fds.qmp,
            server: true,
        }));
        opts.push(QemuOpt::QmpMonitor(QMP_ID));
        match (s.vsock, cid) {
            (VsockKind::Kernel, Some(cid)) => {
                opts.push(QemuOpt::Device(Device::VhostVsock { transport, cid }));
            }
            _ => {
                if let Some(fd) = fds.vsock {
                    opts.push(QemuOpt::Chardev(Chardev::Socket {
                        id: VSOCK_ID,
                        fd,
                        server: false,
                    }));
                    opts.push(QemuOpt::Device(Device::VhostUserVsock {
                        transport,
                        chardev: VSOCK_ID,
                    }));
                }
            }
        }
        if let (Some(_), Some(fd)) = (&spec.shared_dir, fds.fs) {
            opts.push(QemuOpt::Chardev(Chardev::Socket {
                id: FS_ID,
                fd,
                server: false,
            }));
            opts.push(QemuOpt::Device(Device::VhostUserFs {
                transport,
                chardev: FS_ID,
                tag: SHARED_FS_TAG,
            }));
        }
        for (i, (disk, &fd)) in spec.disks.iter().zip(&fds.disks).enumerate() {
            let set = DISK_FDSET_BASE + i as u32;
            opts.push(QemuOpt::AddFd { fd, set });
            opts.push(QemuOpt::Blockdev(DiskSpec {
                path: fdset_path(set),
                ..disk.clone()
            }));
            opts.push(QemuOpt::Device(Device::VirtioBlk {
                transport,
                id: disk.id.clone(),
            }));
        }
        if s.free_page_reporting {
            opts.push(QemuOpt::Device(Device::Balloon { transport }));
        }
        if s.machine == Machine::Q35 {
            for i in 0..HOTPLUG_PORTS {
                opts.push(QemuOpt::Device(Device::PcieRootPort {
                    id: format!("{HOTPLUG_PORT_PREFIX}{i}"),
                    chassis: i + 1,
                }));
            }
        }
        for (i, (tap, &fd)) in spec.taps.iter().zip(&fds.taps).enumerate() {
            let id = format!("net{i}");
            opts.push(QemuOpt::TapNetdev { id: id.clone(), fd });
            opts.push(QemuOpt::Device(Device::VirtioNet {
                transport,
                netdev: id,
                mac: tap.mac,
            }));
        }
        for flag in ["-no-reboot", "-nodefaults", "-no-user-config", "-nographic"] {
            opts.push(QemuOpt::Flag(flag));
        }
        opts.push(QemuOpt::DisplayNone);
        QemuCommand {
            program: s.qemu.clone(),
            opts,
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for opt in &self.opts {
            opt.render(&mut out);
        }
        out
    }
}

/// Appends `value` to `out` with commas doubled.
fn push_escaped(out: &mut OsString, value: &OsStr) {
    let bytes = value.as_bytes();
    let mut escaped = Vec::with_capacity(bytes.len());
    for &b in bytes {
        escaped.push(b);
        if b == b',' {
            escaped.push(b',');
        }
    }
    out.push(OsStr::from_bytes(&escaped));
}

/// `prefix` then `value` escaped.
fn kv(prefix: &str, value: &OsStr) -> OsString {
    let mut s = OsString::from(prefix);
    push_escaped(&mut s, value);
    s
}

impl QemuOpt {
    fn render(&self, out: &mut Vec<OsString>) {
        let mut pair = |flag: &str, value: OsString| {
            out.push(flag.into());
            out.push(value);
        };
        match self {
            QemuOpt::Name(name) => pair("-name", kv("", OsStr::new(name))),
            QemuOpt::Sandbox(s) => pair("-sandbox", (*s).into()),
            QemuOpt::AddFd { fd, set } => pair("-add-fd", format!("fd={fd},set={set}").into()),
            QemuOpt::Machine {
                machine,
                legacy_timers,
                memory_backend,
            } => {
                let mut m = machine.qemu_name().to_owned();
                if *machine == Machine::Microvm {
                    if let Some(on) = legacy_timers {
                        let v = if *on { "on" } else { "off" };
                        m.push_str(&format!(",pit={v},pic={v}"));
                    }
                    m.push_str(",auto-kernel-cmdline=on");
                }
                m.push_str(&format!(",memory-backend={memory_backend}"));
                pair("-machine", m.into());
            }
            QemuOpt::Accel {
                accel: Accel::Tcg,
                tb_size_mib,
            } => pair("-accel", format!("tcg,tb-size={tb_size_mib}").into()),
            QemuOpt::Accel { accel, .. } => pair("-accel", accel.qemu_name().into()),
            QemuOpt::Cpu(c) => pair("-cpu", (*c).into()),
            QemuOpt::Smp(n) => pair("-smp", n.to_string().into()),
            QemuOpt::Memory(mib) => pair("-m", format!("{mib}M").into()),
            QemuOpt::MemfdBackend { id, size_mib } => pair(
                "-object",
                format!("memory-backend-memfd,id={id},size={size_mib}M,share=on").into(),
            ),
            QemuOpt::Kernel(p) => pair("-kernel", p.clone().into()),
            QemuOpt::Initrd(p) => pair("-initrd", p.clone().into()),
            QemuOpt::Append(s) => pair("-append", s.into()),
            QemuOpt::Chardev(Chardev::Socket { id, fd, server }) => {
                let mut v = format!("socket,id={id},fd={fd}");
                if *server {
                    v.push_str(",server=on,wait=off");
                }
                pair("-chardev", v.into());
            }
            QemuOpt::Serial(id) => pair("-serial", format!("chardev:{id}").into()),
            QemuOpt::QmpMonitor(id) => pair("-mon", format!("chardev={id},mode=control").into()),
            QemuOpt::TapNetdev { id, fd } => {
                let mut v = kv("tap,id=", OsStr::new(id));
                v.push(format!(",fd={fd}"));
                pair("-netdev", v);
            }
            QemuOpt::Blockdev(disk) => {
                let mut v = kv("driver=raw,node-name=", OsStr::new(&disk.id));
                v.push(if disk.readonly {
                    ",read-only=on"
                } else {
                    ",read-only=off"
                });
                v.push(kv(
                    ",file.driver=file,file.filename=",
                    disk.path.as_os_str(),
                ));
                pair("-blockdev", v);
            }
            QemuOpt::Device(d) => pair("-device", d.render()),
            QemuOpt::Flag(f) => out.push((*f).into()),
            QemuOpt::DisplayNone => pair("-display", "none".into()),
        }
    }
}

impl Device {
    fn render(&self) -> OsString {
        match self {
            Device::VhostUserVsock { transport, chardev } => {
                format!("vhost-user-vsock-{},chardev={chardev}", transport.suffix()).into()
            }
            Device::VhostVsock { transport, cid } => {
                format!("vhost-vsock-{},guest-cid={cid}", transport.suffix()).into()
            }
            Device::VhostUserFs {
                transport,
                chardev,
                tag,
            } => format!(
                "vhost-user-fs-{},chardev={chardev},tag={tag}",
                transport.suffix()
            )
            .into(),
            Device::VirtioNet {
                transport,
                netdev,
                mac,
            } => {
                let mut v = OsString::from(format!("virtio-net-{},netdev=", transport.suffix()));
                push_escaped(&mut v, OsStr::new(netdev));
                v.push(format!(",mac={mac}"));
                v
            }
            Device::VirtioBlk { transport, id } => {
                let mut v = OsString::from(format!("virtio-blk-{},drive=", transport.suffix()));
                push_escaped(&mut v, OsStr::new(id));
                v.push(kv(",id=", OsStr::new(id)));
                v.push(kv(",serial=", OsStr::new(id)));
                v
            }
            Device::Balloon { transport } => format!(
                "virtio-balloon-{},id={BALLOON_ID},free-page-reporting=on",
                transport.suffix()
            )
            .into(),
            Device::PcieRootPort { id, chassis } => {
                let mut v = kv("pcie-root-port,id=", OsStr::new(id));
                v.push(format!(",chassis={chassis}"));
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::config::{GuestLockdown, VirtiofsCache};
    use crate::hypervisor::spec::TapSpec;
    use std::path::Path;

    fn settings(machine: Machine, accel: Accel, vsock: VsockKind) -> VmSettings {
        VmSettings {
            vcpus: 2,
            memory_mib: 256,
            machine,
            accel,
            vsock,
            kernel: "/img/vmlinuz".into(),
            initrd: Some("/img/initrd.img".into()),
            kernel_args: vec!["quiet".to_owned()],
            agent_port: 1024,
            agent_log: "debug".to_owned(),
            agent_debug: Vec::new(),
            virtiofs_cache: VirtiofsCache::Auto,
            virtiofs_sandbox: crate::hypervisor::config::VirtiofsSandbox::Namespace,
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            vhost_device_vsock: Some("/tools/vhost-device-vsock".into()),
            virtiofsd: Some("/tools/virtiofsd".into()),
            tsc_khz: Some(2_600_000),
            console_log: "/bin/vc-console-log".into(),
            console_max_bytes: 4 << 20,
            tcg_tb_size_mib: 32,
            free_page_reporting: true,
            // The command lines below predate lockdown; its argument has a test of its own.
            guest_lockdown: GuestLockdown::None,
        }
    }

    fn spec(machine: Machine, accel: Accel, vsock: VsockKind) -> VmSpec {
        VmSpec {
            name: Some("pod1".to_owned()),
            shared_dir: Some("/run/vc/pods/pod1/shared".into()),
            taps: vec![TapSpec {
                ifname: "tap0".to_owned(),
                mac: "02:00:c0:00:02:0a".parse().expect("mac"),
            }],
            ..VmSpec::new(settings(machine, accel, vsock), "/r")
        }
    }

    /// Descriptor numbers as the launcher would hand them over.
    fn fds(disks: usize) -> QemuFds {
        QemuFds {
            kernel: "/proc/self/fd/10".into(),
            initrd: Some("/proc/self/fd/11".into()),
            console: 12,
            qmp: 13,
            vsock: Some(14),
            fs: Some(15),
            taps: vec![16],
            disks: (0..disks).map(|i| 20 + i as RawFd).collect(),
        }
    }

    fn strings(cmd: &QemuCommand) -> Vec<String> {
        cmd.args()
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect()
    }

    fn argv(machine: Machine, accel: Accel, vsock: VsockKind) -> Vec<String> {
        let spec = spec(machine, accel, vsock);
        let cmd = QemuCommand::build(&spec, &fds(0), Some(7));
        assert_eq!(cmd.program, Path::new("/usr/bin/qemu-system-x86_64"));
        cmd.args()
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect()
    }

    const CMDLINE: &str = "console=ttyS0 panic=-1 vc.log=debug vc.port=1024 quiet";
    const CMDLINE_TSC: &str =
        "console=ttyS0 panic=-1 tsc_early_khz=2600000 vc.log=debug vc.port=1024 quiet";

    fn expected(machine: &str, accel: &str, cpu: &str, vsock: &[&str], bus: &str) -> Vec<String> {
        let accel_arg = if accel == "tcg" {
            "tcg,tb-size=32".to_owned()
        } else {
            accel.to_owned()
        };
        let mut v: Vec<String> = [
            "-name",
            "pod1",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-machine",
            machine,
            "-accel",
            accel_arg.as_str(),
            "-cpu",
            cpu,
            "-smp",
            "2",
            "-m",
            "256M",
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-kernel",
            "/proc/self/fd/10",
            "-initrd",
            "/proc/self/fd/11",
            "-append",
            if machine.starts_with("microvm") && accel == "tcg" {
                CMDLINE_TSC
            } else {
                CMDLINE
            },
            "-chardev",
            "socket,id=console,fd=12",
            "-serial",
            "chardev:console",
            "-chardev",
            "socket,id=qmp,fd=13,server=on,wait=off",
            "-mon",
            "chardev=qmp,mode=control",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(vsock.iter().map(|s| s.to_string()));
        v.extend([
            "-chardev".to_owned(),
            "socket,id=fs,fd=15".to_owned(),
            "-device".to_owned(),
            format!("vhost-user-fs-{bus},chardev=fs,tag=vcfs"),
            "-device".to_owned(),
            format!("virtio-balloon-{bus},id=balloon,free-page-reporting=on"),
        ]);
        if bus == "pci" {
            for i in 0..4 {
                v.push("-device".to_owned());
                v.push(format!("pcie-root-port,id=vchp{i},chassis={}", i + 1));
            }
        }
        v.extend([
            "-netdev".to_owned(),
            "tap,id=net0,fd=16".to_owned(),
            "-device".to_owned(),
            format!("virtio-net-{bus},netdev=net0,mac=02:00:c0:00:02:0a"),
        ]);
        v.extend(
            [
                "-no-reboot",
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-display",
                "none",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    }

    const MICROVM_TCG: &str = "microvm,pit=on,pic=on,auto-kernel-cmdline=on,memory-backend=mem";
    const MICROVM_KVM: &str = "microvm,auto-kernel-cmdline=on,memory-backend=mem";
    const Q35: &str = "q35,memory-backend=mem";
    const HYBRID_MMIO: &[&str] = &[
        "-chardev",
        "socket,id=vsock,fd=14",
        "-device",
        "vhost-user-vsock-device,chardev=vsock",
    ];
    const HYBRID_PCI: &[&str] = &[
        "-chardev",
        "socket,id=vsock,fd=14",
        "-device",
        "vhost-user-vsock-pci,chardev=vsock",
    ];
    const KERNEL_MMIO: &[&str] = &["-device", "vhost-vsock-device,guest-cid=7"];
    const KERNEL_PCI: &[&str] = &["-device", "vhost-vsock-pci,guest-cid=7"];

    #[test]
    fn microvm_tcg_hybrid() {
        assert_eq!(
            argv(Machine::Microvm, Accel::Tcg, VsockKind::Hybrid),
            expected(MICROVM_TCG, "tcg", "max", HYBRID_MMIO, "device")
        );
    }

    #[test]
    fn microvm_tcg_kernel() {
        assert_eq!(
            argv(Machine::Microvm, Accel::Tcg, VsockKind::Kernel),
            expected(MICROVM_TCG, "tcg", "max", KERNEL_MMIO, "device")
        );
    }

    #[test]
    fn microvm_kvm_hybrid() {
        assert_eq!(
            argv(Machine::Microvm, Accel::Kvm, VsockKind::Hybrid),
            expected(MICROVM_KVM, "kvm", "host", HYBRID_MMIO, "device")
        );
    }

    #[test]
    fn microvm_kvm_kernel() {
        assert_eq!(
            argv(Machine::Microvm, Accel::Kvm, VsockKind::Kernel),
            expected(MICROVM_KVM, "kvm", "host", KERNEL_MMIO, "device")
        );
    }

    #[test]
    fn q35_tcg_hybrid() {
        assert_eq!(
            argv(Machine::Q35, Accel::Tcg, VsockKind::Hybrid),
            expected(Q35, "tcg", "max", HYBRID_PCI, "pci")
        );
    }

    #[test]
    fn q35_tcg_kernel() {
        assert_eq!(
            argv(Machine::Q35, Accel::Tcg, VsockKind::Kernel),
            expected(Q35, "tcg", "max", KERNEL_PCI, "pci")
        );
    }

    #[test]
    fn q35_kvm_hybrid() {
        assert_eq!(
            argv(Machine::Q35, Accel::Kvm, VsockKind::Hybrid),
            expected(Q35, "kvm", "host", HYBRID_PCI, "pci")
        );
    }

    #[test]
    fn q35_kvm_kernel() {
        assert_eq!(
            argv(Machine::Q35, Accel::Kvm, VsockKind::Kernel),
            expected(Q35, "kvm", "host", KERNEL_PCI, "pci")
        );
    }

    #[test]
    fn boot_disks_are_raw_blockdevs_with_virtio_blk_named_by_their_id() {
        let mut spec = VmSpec::new(
            settings(Machine::Microvm, Accel::Tcg, VsockKind::Hybrid),
            "/r",
        );
        spec.disks = vec![
            DiskSpec {
                id: "vcabcr".to_owned(),
                path: "/img/root,fs.ext4".into(),
                readonly: true,
            },
            DiskSpec {
                id: "vcabc0".to_owned(),
                path: "/img/data.ext4".into(),
                readonly: false,
            },
        ];
        let args = strings(&QemuCommand::build(&spec, &fds(2), None));
        let start = args
            .iter()
            .position(|a| a == "fd=20,set=2")
            .expect("the first disk's fd set")
            - 1;
        assert_eq!(
            args[start..start + 12],
            [
                "-add-fd",
                "fd=20,set=2",
                "-blockdev",
                "driver=raw,node-name=vcabcr,read-only=on,file.driver=file,file.filename=/dev/fdset/2",
                "-device",
                "virtio-blk-device,drive=vcabcr,id=vcabcr,serial=vcabcr",
                "-add-fd",
                "fd=21,set=3",
                "-blockdev",
                "driver=raw,node-name=vcabc0,read-only=off,file.driver=file,file.filename=/dev/fdset/3",
                "-device",
                "virtio-blk-device,drive=vcabc0,id=vcabc0,serial=vcabc0",
            ]
        );
        assert!(
            !args.iter().any(|a| a.contains("/img/")),
            "QEMU opens no image by path"
        );
        assert!(
            !args.iter().any(|a| a.starts_with("pcie-root-port")),
            "microvm has no hotplug ports"
        );
    }

    #[test]
    fn minimal_spec_has_no_share_no_net_no_name() {
        let spec = VmSpec::new(
            VmSettings {
                initrd: None,
                kernel_args: Vec::new(),
                agent_log: "info".to_owned(),
                agent_debug: vec!["a".to_owned(), "b".to_owned()],
                ..settings(Machine::Microvm, Accel::Tcg, VsockKind::Hybrid)
            },
            "/r",
        );
        let fds = QemuFds {
            initrd: None,
            fs: None,
            taps: Vec::new(),
            ..fds(0)
        };
        let args = strings(&QemuCommand::build(&spec, &fds, None));
        assert!(!args
            .iter()
            .any(|a| a == "-name" || a == "-initrd" || a == "-netdev"));
        assert!(!args.iter().any(|a| a.contains("vhost-user-fs")));
        let append = args
            .iter()
            .position(|a| a == "-append")
            .map(|i| args[i + 1].clone());
        assert_eq!(
            append.as_deref(),
            Some("console=ttyS0 panic=-1 tsc_early_khz=2600000 vc.log=info vc.port=1024 vc.debug=a,b")
        );
    }

    #[test]
    fn lockdown_follows_the_tsc_rate_and_precedes_the_agent_keys() {
        let mut spec = spec(Machine::Microvm, Accel::Tcg, VsockKind::Hybrid);
        spec.settings.guest_lockdown = GuestLockdown::Confidentiality;
        assert_eq!(
            kernel_cmdline(&spec.settings),
            "console=ttyS0 panic=-1 tsc_early_khz=2600000 lockdown=confidentiality \
             vc.log=debug vc.port=1024 quiet"
        );
        spec.settings.guest_lockdown = GuestLockdown::Integrity;
        assert!(kernel_cmdline(&spec.settings).contains(" lockdown=integrity vc.log="));
    }

    #[test]
    fn no_balloon_without_free_page_reporting() {
        let mut spec = spec(Machine::Q35, Accel::Tcg, VsockKind::Hybrid);
        spec.settings.free_page_reporting = false;
        let args = strings(&QemuCommand::build(&spec, &fds(0), None));
        assert!(!args.iter().any(|a| a.contains("balloon")), "{args:?}");
        assert!(args.contains(&"-device".to_owned()));
    }

    #[test]
    fn commas_in_values_are_doubled() {
        let mut spec = spec(Machine::Microvm, Accel::Tcg, VsockKind::Hybrid);
        spec.name = Some("a,b".to_owned());
        let args = strings(&QemuCommand::build(&spec, &fds(0), None));
        assert!(args.contains(&"a,,b".to_owned()));
        let fds = QemuFds {
            kernel: "/k,x".into(),
            ..fds(0)
        };
        let args = strings(&QemuCommand::build(&spec, &fds, None));
        assert!(
            args.contains(&"/k,x".to_owned()),
            "-kernel takes a plain path"
        );
    }
}
