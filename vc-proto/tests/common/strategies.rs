//! proptest strategies for vc-proto messages: every field generated, sizes kept
//! small so that a case stays fast.

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use vc_proto::{
    AgentError, ContainerSpec, ContainerStats, ContainerStatus, Dns, ErrorCode, Event,
    GuestDetails, GuestInterface, Health, Hello, HostEntry, Interface, IpNet, Mount, Neighbour,
    NetworkUpdate, PodSetup, ProcessRef, ProcessSpec, ProcessState, Request, Resources, Response,
    Rlimit, Rootfs, Route, Seccomp, SeccompAction, SeccompArg, SeccompFlag, SeccompOp,
    SeccompProfile, SeccompSyscall, SharedMount, StreamAttach, StreamKind, StreamPark, User,
};

/// Short strings of any Unicode scalar values, including empty ones.
pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

pub fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

pub fn ip_net() -> impl Strategy<Value = IpNet> {
    (ip(), any::<u8>()).prop_map(|(addr, prefix_len)| IpNet { addr, prefix_len })
}

pub fn interface() -> impl Strategy<Value = Interface> {
    (text(), any::<[u8; 6]>(), any::<u32>(), vec(ip_net(), 0..3)).prop_map(
        |(name, mac, mtu, addresses)| Interface {
            name,
            mac,
            mtu,
            addresses,
        },
    )
}

pub fn route() -> impl Strategy<Value = Route> {
    (
        option::of(ip_net()),
        option::of(ip()),
        option::of(any::<[u8; 6]>()),
        option::of(ip()),
        option::of(any::<u32>()),
    )
        .prop_map(|(destination, gateway, device_mac, source, metric)| Route {
            destination,
            gateway,
            device_mac,
            source,
            metric,
        })
}

pub fn neighbour() -> impl Strategy<Value = Neighbour> {
    (ip(), any::<[u8; 6]>(), any::<[u8; 6]>()).prop_map(|(ip, mac, device_mac)| Neighbour {
        ip,
        mac,
        device_mac,
    })
}

pub fn pod_setup() -> impl Strategy<Value = PodSetup> {
    let dns = (vec(ip(), 0..3), texts(), texts()).prop_map(|(servers, search, options)| Dns {
        servers,
        search,
        options,
    });
    let host = (ip(), texts()).prop_map(|(ip, names)| HostEntry { ip, names });
    let mount = (text(), text(), text(), texts()).prop_map(|(fstype, source, target, options)| {
        SharedMount {
            fstype,
            source,
            target,
            options,
        }
    });
    (
        (text(), text(), dns, vec(host, 0..3)),
        (
            vec(mount, 0..3),
            vec(interface(), 0..3),
            vec(route(), 0..3),
            vec(neighbour(), 0..3),
        ),
    )
        .prop_map(
            |((pod_id, hostname, dns, hosts), (shared_mounts, interfaces, routes, neighbours))| {
                PodSetup {
                    pod_id,
                    hostname,
                    dns,
                    hosts,
                    shared_mounts,
                    interfaces,
                    routes,
                    neighbours,
                }
            },
        )
}

pub fn process_spec() -> impl Strategy<Value = ProcessSpec> {
    let user = (any::<u32>(), any::<u32>(), vec(any::<u32>(), 0..4)).prop_map(
        |(uid, gid, additional_gids)| User {
            uid,
            gid,
            additional_gids,
        },
    );
    let rlimit = (text(), any::<u64>(), any::<u64>()).prop_map(|(resource, soft, hard)| Rlimit {
        resource,
        soft,
        hard,
    });
    (
        (texts(), texts(), text(), user),
        (
            any::<bool>(),
            vec(rlimit, 0..3),
            option::of(texts()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((args, env, cwd, user), (terminal, rlimits, capabilities, no_new_privileges))| {
                ProcessSpec {
                    args,
                    env,
                    cwd,
                    user,
                    terminal,
                    rlimits,
                    capabilities,
                    no_new_privileges,
                }
            },
        )
}

pub fn resources() -> impl Strategy<Value = Resources> {
    (
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(memory_limit_bytes, cpu_quota_us, cpu_period_us, cpu_weight, pids_limit)| Resources {
                memory_limit_bytes,
                cpu_quota_us,
                cpu_period_us,
                cpu_weight,
                pids_limit,
            },
        )
}

pub fn container_spec() -> impl Strategy<Value = ContainerSpec> {
    let rootfs = prop_oneof![
        text().prop_map(Rootfs::Path),
        (text(), text()).prop_map(|(device, fstype)| Rootfs::Block { device, fstype }),
    ];
    let mount =
        (text(), text(), text(), texts()).prop_map(|(source, destination, fstype, options)| {
            Mount {
                source,
                destination,
                fstype,
                options,
            }
        });
    (
        (text(), rootfs, any::<bool>(), text()),
        (process_spec(), vec(mount, 0..3), resources()),
        (texts(), texts()),
    )
        .prop_map(
            |(
                (id, rootfs, readonly_rootfs, hostname),
                (process, mounts, resources),
                (masked_paths, readonly_paths),
            )| {
                ContainerSpec {
                    id,
                    rootfs,
                    readonly_rootfs,
                    hostname,
                    process,
                    mounts,
                    resources,
                    masked_paths,
                    readonly_paths,
                }
            },
        )
}

pub fn process_ref() -> impl Strategy<Value = ProcessRef> {
    (text(), option::of(text())).prop_map(|(container_id, exec_id)| ProcessRef {
        container_id,
        exec_id,
    })
}

pub fn stream_kind() -> impl Strategy<Value = StreamKind> {
    prop_oneof![
        Just(StreamKind::Stdin),
        Just(StreamKind::Stdout),
        Just(StreamKind::Stderr),
        Just(StreamKind::Tty),
    ]
}

pub fn stream_attach() -> impl Strategy<Value = StreamAttach> {
    (process_ref(), stream_kind()).prop_map(|(process, stream)| StreamAttach { process, stream })
}

pub fn stream_park() -> impl Strategy<Value = StreamPark> {
    (process_ref(), stream_kind(), any::<u32>()).prop_map(|(process, stream, timeout_ms)| {
        StreamPark {
            process,
            stream,
            timeout_ms,
        }
    })
}

pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        text().prop_map(|container_id| Event::Oom { container_id }),
        (process_ref(), any::<i32>()).prop_map(|(process, code)| Event::Exited { process, code }),
    ]
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), any::<u16>(), text()).prop_map(|(min_version, max_version, software)| Hello {
        min_version,
        max_version,
        software,
    })
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::GuestDetails),
        Just(Request::Health),
        Just(Request::NextEvent),
        Just(Request::ListInterfaces),
        Just(Request::ListRoutes),
        Just(Request::Shutdown),
        pod_setup().prop_map(Request::SetupPod),
        container_spec().prop_map(Request::CreateContainer),
        text().prop_map(|container_id| Request::StartContainer { container_id }),
        (text(), any::<u64>()).prop_map(|(container_id, grace_ms)| Request::StopContainer {
            container_id,
            grace_ms
        }),
        text().prop_map(|container_id| Request::RemoveContainer { container_id }),
        text().prop_map(|container_id| Request::PauseContainer { container_id }),
        text().prop_map(|container_id| Request::ResumeContainer { container_id }),
        text().prop_map(|container_id| Request::ContainerState { container_id }),
        (process_ref(), process_spec()).prop_map(|(process, spec)| Request::Exec { process, spec }),
        (process_ref(), any::<i32>(), any::<bool>()).prop_map(|(process, signal, all)| {
            Request::Signal {
                process,
                signal,
                all,
            }
        }),
        process_ref().prop_map(|process| Request::Wait { process }),
        (process_ref(), any::<u16>(), any::<u16>()).prop_map(|(process, rows, cols)| {
            Request::ResizeTerminal {
                process,
                rows,
                cols,
            }
        }),
        process_ref().prop_map(|process| Request::CloseStdin { process }),
        (text(), resources()).prop_map(|(container_id, resources)| {
            Request::UpdateResources {
                container_id,
                resources,
            }
        }),
        text().prop_map(|container_id| Request::Stats { container_id }),
        (container_spec(), seccomp())
            .prop_map(|(spec, seccomp)| Request::CreateContainerV2 { spec, seccomp }),
        text().prop_map(|container_id| Request::ContainerPids { container_id }),
        (
            vec(interface(), 0..3),
            vec(route(), 0..3),
            vec(neighbour(), 0..3)
        )
            .prop_map(|(interfaces, routes, neighbours)| {
                Request::UpdateNetwork(NetworkUpdate {
                    interfaces,
                    routes,
                    neighbours,
                })
            }),
        (process_ref(), process_spec(), vec(stream_kind(), 0..3)).prop_map(
            |(process, spec, streams)| Request::ExecDirect {
                process,
                spec,
                streams
            }
        ),
    ]
}

pub fn seccomp_action() -> impl Strategy<Value = SeccompAction> {
    prop_oneof![
        Just(SeccompAction::Kill),
        Just(SeccompAction::KillProcess),
        Just(SeccompAction::KillThread),
        Just(SeccompAction::Trap),
        Just(SeccompAction::Errno),
        Just(SeccompAction::Trace),
        Just(SeccompAction::Allow),
        Just(SeccompAction::Log),
        Just(SeccompAction::Notify),
    ]
}

pub fn seccomp_profile() -> impl Strategy<Value = SeccompProfile> {
    let op = prop_oneof![
        Just(SeccompOp::NotEqual),
        Just(SeccompOp::LessThan),
        Just(SeccompOp::LessOrEqual),
        Just(SeccompOp::Equal),
        Just(SeccompOp::GreaterOrEqual),
        Just(SeccompOp::GreaterThan),
        Just(SeccompOp::MaskedEqual),
    ];
    let arg =
        (any::<u32>(), any::<u64>(), any::<u64>(), op).prop_map(|(index, value, value_two, op)| {
            SeccompArg {
                index,
                value,
                value_two,
                op,
            }
        });
    let rule = (
        texts(),
        seccomp_action(),
        option::of(any::<u32>()),
        vec(arg, 0..3),
    )
        .prop_map(|(names, action, errno_ret, args)| SeccompSyscall {
            names,
            action,
            errno_ret,
            args,
        });
    let flag = prop_oneof![
        Just(SeccompFlag::Tsync),
        Just(SeccompFlag::Log),
        Just(SeccompFlag::SpecAllow),
        Just(SeccompFlag::WaitKillableRecv),
    ];
    (
        seccomp_action(),
        option::of(any::<u32>()),
        texts(),
        vec(flag, 0..3),
        vec(rule, 0..3),
    )
        .prop_map(
            |(default_action, default_errno_ret, architectures, flags, syscalls)| SeccompProfile {
                default_action,
                default_errno_ret,
                architectures,
                flags,
                syscalls,
            },
        )
}

pub fn seccomp() -> impl Strategy<Value = Seccomp> {
    prop_oneof![
        Just(Seccomp::Default),
        Just(Seccomp::Unconfined),
        seccomp_profile().prop_map(Seccomp::Profile),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    let code = prop_oneof![
        Just(ErrorCode::Unsupported),
        Just(ErrorCode::InvalidArgument),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::AlreadyExists),
        Just(ErrorCode::WrongState),
        Just(ErrorCode::ExecFailed),
        Just(ErrorCode::System),
        Just(ErrorCode::Internal),
    ];
    let state = prop_oneof![
        Just(ProcessState::Created),
        Just(ProcessState::Running),
        Just(ProcessState::Paused),
        Just(ProcessState::Stopped),
    ];
    let details = (
        (text(), any::<u16>(), text(), texts()),
        (any::<u64>(), any::<u32>(), any::<u64>()),
    )
        .prop_map(
            |(
                (agent_version, protocol_version, kernel_release, modules_loaded),
                (uptime_ms, cpus, memory_bytes),
            )| GuestDetails {
                agent_version,
                protocol_version,
                kernel_release,
                modules_loaded,
                uptime_ms,
                cpus,
                memory_bytes,
            },
        );
    let health = (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
        |(containers, memory_available_bytes, load_1m_centi)| Health {
            containers,
            memory_available_bytes,
            load_1m_centi,
        },
    );
    let status = (
        text(),
        state,
        option::of(any::<u32>()),
        option::of(any::<i32>()),
        any::<bool>(),
    )
        .prop_map(|(id, state, pid, exit_code, oom_killed)| ContainerStatus {
            id,
            state,
            pid,
            exit_code,
            oom_killed,
        });
    let stats = (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (
            option::of(any::<u64>()),
            any::<u64>(),
            option::of(any::<u64>()),
            any::<u64>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (cpu_usage_us, cpu_user_us, cpu_system_us, memory_usage_bytes),
                (memory_limit_bytes, pids, pids_limit, blkio_read_bytes, blkio_write_bytes),
            )| ContainerStats {
                cpu_usage_us,
                cpu_user_us,
                cpu_system_us,
                memory_usage_bytes,
                memory_limit_bytes,
                pids,
                pids_limit,
                blkio_read_bytes,
                blkio_write_bytes,
            },
        );
    let guest_interface = (
        text(),
        any::<[u8; 6]>(),
        any::<u32>(),
        any::<bool>(),
        vec(ip_net(), 0..3),
    )
        .prop_map(|(name, mac, mtu, up, addresses)| GuestInterface {
            name,
            mac,
            mtu,
            up,
            addresses,
        });
    prop_oneof![
        Just(Response::Ok),
        (code, text()).prop_map(|(code, message)| Response::Error(AgentError::new(code, message))),
        details.prop_map(Response::GuestDetails),
        health.prop_map(Response::Health),
        any::<u32>().prop_map(Response::Pid),
        any::<i32>().prop_map(Response::Exited),
        status.prop_map(Response::ContainerStatus),
        stats.prop_map(Response::Stats),
        event().prop_map(Response::Event),
        vec(guest_interface, 0..3).prop_map(Response::Interfaces),
        vec(route(), 0..4).prop_map(Response::Routes),
        vec(any::<u32>(), 0..8).prop_map(Response::Pids),
    ]
}
