//! Sample messages shared by the test binaries: at least one value of every
//! `Request` and `Response` variant, with the nested types fully populated, and
//! the exhaustive matches that make a new variant fail to compile here until it
//! has a sample.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod strategies;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use vc_proto::{
    AgentError, ContainerSpec, ContainerStats, ContainerStatus, Dns, ErrorCode, Event,
    GuestDetails, GuestInterface, Health, HostEntry, Interface, IpNet, Mount, Neighbour,
    NetworkUpdate, PodSetup, ProcessRef, ProcessSpec, ProcessState, Request, Resources, Response,
    Rlimit, Rootfs, Route, Seccomp, SeccompAction, SeccompArg, SeccompFlag, SeccompOp,
    SeccompProfile, SeccompSyscall, SharedMount, StreamAttach, StreamKind, User,
};

pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
pub const V4_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
pub const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
pub const MAC: [u8; 6] = [0x02, 0x42, 0xc0, 0x00, 0x02, 0x0a];
pub const PEER_MAC: [u8; 6] = [0x02, 0x42, 0xc0, 0x00, 0x02, 0x01];

pub fn interface() -> Interface {
    Interface {
        name: "eth0".into(),
        mac: MAC,
        mtu: 1500,
        addresses: vec![
            IpNet {
                addr: V4,
                prefix_len: 24,
            },
            IpNet {
                addr: V6,
                prefix_len: 64,
            },
        ],
    }
}

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            destination: None,
            gateway: Some(V4_PEER),
            device_mac: Some(MAC),
            source: Some(V4),
            metric: Some(100),
        },
        Route {
            destination: Some(IpNet {
                addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
                prefix_len: 24,
            }),
            gateway: None,
            device_mac: None,
            source: None,
            metric: None,
        },
    ]
}

pub fn pod_setup() -> PodSetup {
    PodSetup {
        pod_id: "pod-1".into(),
        hostname: "pod-1.example".into(),
        dns: Dns {
            servers: vec![V4_PEER, V6],
            search: vec!["example.".into(), "svc.example.".into()],
            options: vec!["ndots:2".into()],
        },
        hosts: vec![HostEntry {
            ip: V4,
            names: vec!["pod-1".into(), "pod-1.example".into()],
        }],
        shared_mounts: vec![SharedMount {
            fstype: "virtiofs".into(),
            source: "vcshare".into(),
            target: "/run/vc/shared".into(),
            options: vec!["rw".into()],
        }],
        interfaces: vec![interface()],
        routes: routes(),
        neighbours: vec![Neighbour {
            ip: V4_PEER,
            mac: PEER_MAC,
            device_mac: MAC,
        }],
    }
}

pub fn process_spec() -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), "echo héllo; exit 3".into()],
        env: vec!["PATH=/bin:/usr/bin".into(), "TERM=xterm".into()],
        cwd: "/".into(),
        user: User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10, 20, 4_000_000_000],
        },
        terminal: true,
        rlimits: vec![Rlimit {
            resource: "nofile".into(),
            soft: 1024,
            hard: u64::MAX,
        }],
        capabilities: Some(vec!["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()]),
        no_new_privileges: true,
    }
}

pub fn resources() -> Resources {
    Resources {
        memory_limit_bytes: Some(256 << 20),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(100_000),
        cpu_weight: None,
        pids_limit: Some(64),
    }
}

pub fn container_spec() -> ContainerSpec {
    ContainerSpec {
        id: "c1".into(),
        rootfs: Rootfs::Path("/run/vc/shared/c1/rootfs".into()),
        readonly_rootfs: true,
        hostname: "c1".into(),
        process: process_spec(),
        mounts: vec![Mount {
            source: "tmpfs".into(),
            destination: "/tmp".into(),
            fstype: "tmpfs".into(),
            options: vec!["nosuid".into(), "size=65536k".into()],
        }],
        resources: resources(),
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
    }
}

pub fn main_process() -> ProcessRef {
    ProcessRef {
        container_id: "c1".into(),
        exec_id: None,
    }
}

pub fn exec_process() -> ProcessRef {
    ProcessRef {
        container_id: "c1".into(),
        exec_id: Some("exec-7".into()),
    }
}

/// At least one value of every `Request` variant (checked by `request_index`).
pub fn requests() -> Vec<Request> {
    let id = || "c1".to_string();
    vec![
        Request::Ping,
        Request::GuestDetails,
        Request::Health,
        Request::SetupPod(pod_setup()),
        Request::SetupPod(PodSetup::default()),
        Request::CreateContainer(container_spec()),
        Request::CreateContainer(ContainerSpec {
            rootfs: Rootfs::Block {
                device: "/dev/vdb".into(),
                fstype: "ext4".into(),
            },
            process: ProcessSpec::default(),
            resources: Resources::default(),
            mounts: vec![],
            ..container_spec()
        }),
        Request::StartContainer { container_id: id() },
        Request::StopContainer {
            container_id: id(),
            grace_ms: 10_000,
        },
        Request::RemoveContainer { container_id: id() },
        Request::PauseContainer { container_id: id() },
        Request::ResumeContainer { container_id: id() },
        Request::ContainerState { container_id: id() },
        Request::Exec {
            process: exec_process(),
            spec: process_spec(),
        },
        Request::Signal {
            process: main_process(),
            signal: 15,
            all: true,
        },
        Request::Wait {
            process: exec_process(),
        },
        Request::ResizeTerminal {
            process: exec_process(),
            rows: 50,
            cols: 132,
        },
        Request::CloseStdin {
            process: main_process(),
        },
        Request::UpdateResources {
            container_id: id(),
            resources: resources(),
        },
        Request::Stats { container_id: id() },
        Request::NextEvent,
        Request::ListInterfaces,
        Request::ListRoutes,
        Request::Shutdown,
        Request::CreateContainerV2 {
            spec: container_spec(),
            seccomp: Seccomp::Default,
        },
        Request::CreateContainerV2 {
            spec: container_spec(),
            seccomp: Seccomp::Unconfined,
        },
        Request::CreateContainerV2 {
            spec: container_spec(),
            seccomp: Seccomp::Profile(seccomp_profile()),
        },
        Request::ContainerPids { container_id: id() },
        Request::UpdateNetwork(NetworkUpdate {
            interfaces: vec![interface()],
            routes: routes(),
            neighbours: pod_setup().neighbours,
        }),
        Request::UpdateNetwork(NetworkUpdate::default()),
        Request::ExecDirect {
            process: exec_process(),
            spec: ProcessSpec::default(),
            streams: vec![StreamKind::Stdout, StreamKind::Stderr],
        },
    ]
}

/// A profile using every field: default errno, architectures, flags, a rule
/// with an errno, one with masked and plain argument conditions.
pub fn seccomp_profile() -> SeccompProfile {
    SeccompProfile {
        default_action: SeccompAction::Errno,
        default_errno_ret: Some(1),
        architectures: vec!["SCMP_ARCH_X86_64".into()],
        flags: vec![SeccompFlag::Log],
        syscalls: vec![
            SeccompSyscall {
                names: vec!["read".into(), "write".into()],
                action: SeccompAction::Allow,
                errno_ret: None,
                args: vec![],
            },
            SeccompSyscall {
                names: vec!["clone".into()],
                action: SeccompAction::Allow,
                errno_ret: None,
                args: vec![
                    SeccompArg {
                        index: 0,
                        value: 0x7e02_0000,
                        value_two: 0,
                        op: SeccompOp::MaskedEqual,
                    },
                    SeccompArg {
                        index: 1,
                        value: 5,
                        value_two: 0,
                        op: SeccompOp::NotEqual,
                    },
                ],
            },
            SeccompSyscall {
                names: vec!["clone3".into()],
                action: SeccompAction::Errno,
                errno_ret: Some(38),
                args: vec![],
            },
        ],
    }
}

/// Number of `Request` variants: one more than the highest `request_index`.
pub const REQUEST_VARIANTS: usize = 26;

/// The variant's position; exhaustive, so a new variant must be added here.
pub fn request_index(request: &Request) -> usize {
    match request {
        Request::Ping => 0,
        Request::GuestDetails => 1,
        Request::Health => 2,
        Request::SetupPod(_) => 3,
        Request::CreateContainer(_) => 4,
        Request::StartContainer { .. } => 5,
        Request::StopContainer { .. } => 6,
        Request::RemoveContainer { .. } => 7,
        Request::PauseContainer { .. } => 8,
        Request::ResumeContainer { .. } => 9,
        Request::ContainerState { .. } => 10,
        Request::Exec { .. } => 11,
        Request::Signal { .. } => 12,
        Request::Wait { .. } => 13,
        Request::ResizeTerminal { .. } => 14,
        Request::CloseStdin { .. } => 15,
        Request::UpdateResources { .. } => 16,
        Request::Stats { .. } => 17,
        Request::NextEvent => 18,
        Request::ListInterfaces => 19,
        Request::ListRoutes => 20,
        Request::Shutdown => 21,
        Request::CreateContainerV2 { .. } => 22,
        Request::ContainerPids { .. } => 23,
        Request::UpdateNetwork(_) => 24,
        Request::ExecDirect { .. } => 25,
    }
}

pub fn events() -> Vec<Event> {
    vec![
        Event::Oom {
            container_id: "c1".into(),
        },
        Event::Exited {
            process: exec_process(),
            code: vc_proto::signal_exit_code(9),
        },
    ]
}

/// At least one value of every `Response` variant (checked by `response_index`)
/// and of every `ErrorCode`, `ProcessState` and `Event`.
pub fn responses() -> Vec<Response> {
    let mut out = vec![Response::Ok];
    out.extend(error_codes().into_iter().map(|code| {
        Response::Error(AgentError::new(
            code,
            format!("the container c1 is in state {code:?}"),
        ))
    }));
    out.push(Response::GuestDetails(GuestDetails {
        agent_version: "vc-agent 0.1.0".into(),
        protocol_version: vc_proto::PROTOCOL_VERSION,
        kernel_release: "6.1.0-28-cloud-amd64".into(),
        modules_loaded: vec!["virtio_ring.ko".into(), "virtio.ko".into()],
        uptime_ms: 1234,
        cpus: 2,
        memory_bytes: 512 << 20,
    }));
    out.push(Response::Health(Health {
        containers: 3,
        memory_available_bytes: 400 << 20,
        load_1m_centi: 42,
    }));
    out.push(Response::Pid(4242));
    out.push(Response::Exited(0));
    out.push(Response::Exited(vc_proto::EXIT_CODE_VM_GONE));
    out.push(Response::Exited(-1));
    out.extend(
        [
            ProcessState::Created,
            ProcessState::Running,
            ProcessState::Paused,
            ProcessState::Stopped,
        ]
        .into_iter()
        .map(|state| {
            Response::ContainerStatus(ContainerStatus {
                id: "c1".into(),
                state,
                pid: (state != ProcessState::Created).then_some(77),
                exit_code: (state == ProcessState::Stopped).then_some(137),
                oom_killed: state == ProcessState::Stopped,
            })
        }),
    );
    out.push(Response::Stats(ContainerStats {
        cpu_usage_us: 1_000_000,
        cpu_user_us: 700_000,
        cpu_system_us: 300_000,
        memory_usage_bytes: 10 << 20,
        memory_limit_bytes: Some(256 << 20),
        pids: 4,
        pids_limit: None,
        blkio_read_bytes: 4096,
        blkio_write_bytes: 0,
    }));
    out.push(Response::Stats(ContainerStats::default()));
    out.extend(events().into_iter().map(Response::Event));
    out.push(Response::Interfaces(vec![
        GuestInterface {
            name: "lo".into(),
            mac: [0; 6],
            mtu: 65536,
            up: true,
            addresses: vec![IpNet {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                prefix_len: 8,
            }],
        },
        GuestInterface {
            name: "eth0".into(),
            mac: MAC,
            mtu: 1500,
            up: false,
            addresses: vec![],
        },
    ]));
    out.push(Response::Interfaces(vec![]));
    out.push(Response::Routes(routes()));
    out.push(Response::Pids(vec![1, 42, 4_194_303]));
    out.push(Response::Pids(vec![]));
    out
}

pub fn error_codes() -> Vec<ErrorCode> {
    vec![
        ErrorCode::Unsupported,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::WrongState,
        ErrorCode::ExecFailed,
        ErrorCode::System,
        ErrorCode::Internal,
    ]
}

/// Number of `Response` variants: one more than the highest `response_index`.
pub const RESPONSE_VARIANTS: usize = 12;

/// The variant's position; exhaustive, so a new variant must be added here.
pub fn response_index(response: &Response) -> usize {
    match response {
        Response::Ok => 0,
        Response::Error(_) => 1,
        Response::GuestDetails(_) => 2,
        Response::Health(_) => 3,
        Response::Pid(_) => 4,
        Response::Exited(_) => 5,
        Response::ContainerStatus(_) => 6,
        Response::Stats(_) => 7,
        Response::Event(_) => 8,
        Response::Interfaces(_) => 9,
        Response::Routes(_) => 10,
        Response::Pids(_) => 11,
    }
}

/// One `StreamAttach` for every `StreamKind`.
pub fn stream_attaches() -> Vec<StreamAttach> {
    [
        StreamKind::Stdin,
        StreamKind::Stdout,
        StreamKind::Stderr,
        StreamKind::Tty,
    ]
    .into_iter()
    .map(|stream| StreamAttach {
        process: exec_process(),
        stream,
    })
    .collect()
}

/// Runs a future that never waits, such as a `FrameReader` over a byte slice or
/// a `FrameWriter` over a `Vec`, to completion on the current thread, without a
/// runtime (so nothing but the future itself allocates).
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory future returned Pending"),
    }
}
