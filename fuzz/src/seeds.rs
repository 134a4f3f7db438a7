//! Seeds: real encodings of what each target reads, built from the current
//! code (so they follow the protocol and config types as those change).
//! `cargo xtask fuzz` writes them into the corpus before fuzzing as
//! `seed-<name>`, and the corpus test runs them besides the saved files.

use std::future::Future;

use serde::Serialize;
use vc_proto::{
    ContainerSpec, ContainerStats, ContainerStatus, ErrorCode, Event, FrameKind, FrameWriter,
    GuestDetails, Health, Hello, PodSetup, ProcessRef, ProcessState, Request, Response, Rootfs,
    StreamAttach, StreamKind, StreamPark,
};

use crate::agent_client;

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target it is for.
    pub target: &'static str,
    /// Its name (the corpus file is `seed-<name>`).
    pub name: &'static str,
    /// The input.
    pub bytes: Vec<u8>,
}

fn ready<F: Future>(future: F) -> F::Output {
    crate::frame::ready(future)
}

/// Frames written by vc-proto's own writer.
#[derive(Default)]
struct Frames(Vec<u8>);

impl Frames {
    fn add<T: Serialize>(mut self, kind: FrameKind, id: u64, value: &T) -> Self {
        let mut writer = FrameWriter::new(std::mem::take(&mut self.0));
        ready(writer.write_message(kind, id, value)).expect("a seed frame encodes");
        self.0 = writer.into_inner();
        self
    }

    fn hello(self, software: &str) -> Self {
        self.add(FrameKind::Hello, 0, &Hello::ours(software))
    }

    fn request(self, id: u64, request: &Request) -> Self {
        self.add(FrameKind::Request, id, request)
    }

    fn response(self, id: u64, response: &Response) -> Self {
        self.add(FrameKind::Response, id, response)
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

fn process() -> ProcessRef {
    ProcessRef {
        container_id: "c".to_owned(),
        exec_id: None,
    }
}

/// What the agent answers to the client's calls in `agent_client`, by id.
fn answers() -> Vec<Response> {
    vec![
        Response::Ok,
        Response::GuestDetails(GuestDetails {
            agent_version: "0.1.0".to_owned(),
            protocol_version: 1,
            kernel_release: "6.1.0-vc".to_owned(),
            modules_loaded: vec!["virtio_blk".to_owned()],
            uptime_ms: 1234,
            cpus: 1,
            memory_bytes: 256 << 20,
        }),
        Response::Health(Health {
            containers: 1,
            memory_available_bytes: 100 << 20,
            load_1m_centi: 3,
        }),
        Response::Pid(42),
        Response::Exited(143),
        Response::ContainerStatus(ContainerStatus {
            id: "c".to_owned(),
            state: ProcessState::Running,
            pid: Some(42),
            exit_code: None,
            oom_killed: false,
        }),
        Response::Stats(ContainerStats {
            cpu_usage_us: 1000,
            memory_usage_bytes: 1 << 20,
            pids: 2,
            ..ContainerStats::default()
        }),
        Response::Exited(0),
        Response::Event(Event::Exited {
            process: process(),
            code: 0,
        }),
        Response::Interfaces(Vec::new()),
        Response::Routes(Vec::new()),
        Response::Exited(0),
    ]
}

fn agent_client_seeds() -> Vec<Seed> {
    let control = answers()
        .iter()
        .zip(1..)
        .fold(Frames::default().hello("vc-agent 0.1.0"), |f, (r, id)| {
            f.response(id, r)
        })
        .0;
    let stream = |text: &[u8]| {
        Frames::default()
            .hello("vc-agent 0.1.0")
            .response(0, &Response::Ok)
            .raw(text)
            .0
    };
    let errors = (1..=12)
        .fold(Frames::default().hello("vc-agent 0.1.0"), |f, id| {
            f.response(
                id,
                &Response::Error(vc_proto::AgentError::new(
                    ErrorCode::NotFound,
                    "no such container",
                )),
            )
        })
        .0;
    let refused = Frames::default()
        .hello("vc-agent 0.1.0")
        .response(
            0,
            &Response::Error(vc_proto::AgentError::new(ErrorCode::NotFound, "gone")),
        )
        .0;
    let oom = Frames::default()
        .hello("vc-agent 0.1.0")
        .response(
            9,
            &Response::Event(Event::Oom {
                container_id: "c".to_owned(),
            }),
        )
        .0;
    vec![
        Seed {
            target: "agent_client",
            name: "every-answer",
            bytes: agent_client::join(&control, &stream(b"hello\n"), &stream(b"oops\n")),
        },
        Seed {
            target: "agent_client",
            name: "errors",
            bytes: agent_client::join(&errors, &refused, &stream(b"")),
        },
        Seed {
            target: "agent_client",
            name: "oom-event",
            bytes: agent_client::join(&oom, &[], &[]),
        },
    ]
}

fn agent_server_seeds() -> Vec<Seed> {
    let requests = [
        Request::Ping,
        Request::GuestDetails,
        Request::Health,
        Request::SetupPod(PodSetup {
            pod_id: "p".to_owned(),
            hostname: "p".to_owned(),
            ..PodSetup::default()
        }),
        // Recorded, not applied: the agent is not a guest here.
        Request::UpdateNetwork(vc_proto::NetworkUpdate::default()),
        Request::ContainerState {
            container_id: "c".to_owned(),
        },
        Request::Stats {
            container_id: "c".to_owned(),
        },
        Request::ContainerPids {
            container_id: "c".to_owned(),
        },
        Request::StartContainer {
            container_id: "c".to_owned(),
        },
        Request::StopContainer {
            container_id: "c".to_owned(),
            grace_ms: 10,
        },
        Request::Signal {
            process: process(),
            signal: 15,
            all: true,
        },
        Request::Wait { process: process() },
        Request::NextEvent,
        Request::ResizeTerminal {
            process: process(),
            rows: 24,
            cols: 80,
        },
        Request::CloseStdin { process: process() },
        Request::UpdateResources {
            container_id: "c".to_owned(),
            resources: vc_proto::Resources::default(),
        },
        // Taken out by the target before the agent sees it.
        Request::CreateContainer(ContainerSpec {
            id: "c".to_owned(),
            rootfs: Rootfs::Path("/nonexistent".to_owned()),
            readonly_rootfs: false,
            hostname: "c".to_owned(),
            process: vc_proto::ProcessSpec::default(),
            mounts: Vec::new(),
            resources: vc_proto::Resources::default(),
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
        }),
        Request::Shutdown,
    ];
    let all = requests
        .iter()
        .zip(1..)
        .fold(Frames::default().hello("vc-host 0.1.0"), |f, (r, id)| {
            f.request(id, r)
        })
        .response(99, &Response::Ok)
        .0;
    let attach = Frames::default()
        .hello("vc-host 0.1.0")
        .add(
            FrameKind::StreamAttach,
            0,
            &StreamAttach {
                process: process(),
                stream: StreamKind::Stdout,
            },
        )
        .0;
    // Version 3: a park (refused over the fuzzer's in-memory connection) and
    // the exec that would claim it (taken out before the agent sees it).
    let park = Frames::default()
        .hello("vc-host 0.1.0")
        .add(
            FrameKind::StreamPark,
            0,
            &StreamPark {
                process: process(),
                stream: StreamKind::Stderr,
                timeout_ms: 1000,
            },
        )
        .0;
    let exec_direct = Frames::default()
        .hello("vc-host 0.1.0")
        .request(
            1,
            &Request::ExecDirect {
                process: process(),
                spec: vc_proto::ProcessSpec::default(),
                streams: vec![StreamKind::Stdout, StreamKind::Stderr],
            },
        )
        .request(2, &Request::Ping)
        .0;
    let pings = (1..=8)
        .fold(Frames::default().hello("vc-host 0.1.0"), |f, id| {
            f.request(id, &Request::Ping)
        })
        .raw(b"garbage")
        .0;
    vec![
        Seed {
            target: "agent_server",
            name: "every-request",
            bytes: all,
        },
        Seed {
            target: "agent_server",
            name: "stream-attach",
            bytes: attach,
        },
        Seed {
            target: "agent_server",
            name: "stream-park",
            bytes: park,
        },
        Seed {
            target: "agent_server",
            name: "exec-direct",
            bytes: exec_direct,
        },
        Seed {
            target: "agent_server",
            name: "pings-then-garbage",
            bytes: pings,
        },
    ]
}

fn frame_seeds() -> Vec<Seed> {
    vec![
        Seed {
            target: "decode_frame",
            name: "hello-and-ping",
            bytes: Frames::default()
                .hello("vc-host 0.1.0")
                .request(1, &Request::Ping)
                .0,
        },
        Seed {
            target: "decode_frame",
            name: "responses",
            bytes: answers()
                .iter()
                .zip(1..)
                .fold(Frames::default(), |f, (r, id)| f.response(id, r))
                .0,
        },
    ]
}

const POD_TOML: &str = r#"id = "p1"
hostname = "web"
netns = "/var/run/netns/p1"

[vm]
vcpus = 2
memory_mib = 512
machine = "q35"
kernel = "/usr/share/vc/guest-image/vmlinuz"
initrd = "/usr/share/vc/guest-image/initrd.img"
kernel_args = ["quiet"]
agent_debug = ["requests"]

[dns]
servers = ["192.0.2.53"]
search = ["example.invalid"]

[[containers]]
id = "c1"
rootfs = "/srv/busybox"
command = ["/bin/sh", "-c", "echo hello"]
env = ["A=1"]
cwd = "/tmp"
shm_size_bytes = 1048576

[containers.resources]
memory_limit_bytes = 268435456
cpu_quota_us = 50000
cpu_period_us = 100000
pids_limit = 64

[[containers.volumes]]
host_path = "/srv/data"
container_path = "/data"
readonly = true

[[containers.tmpfs]]
path = "/scratch"
size_bytes = 1048576
mode = 0o1777

[[containers.disks]]
image = "/srv/disk.img"
container_path = "/mnt/disk"

[[containers.rlimits]]
resource = "nofile"
soft = 1024
hard = 4096
"#;

const CONTAINER_JSON: &str = r#"{"id": "c1", "rootfs": "/", "command": ["/bin/true"],
"user": {"uid": 1000, "gid": 1000, "additional_gids": [10]},
"capabilities": ["CAP_NET_BIND_SERVICE"], "no_new_privileges": false,
"resources": {"cpu_weight": 100, "memory_limit_bytes": 18446744073709551615},
"volumes": [{"host_path": "/", "container_path": "/host"}],
"tmpfs": [{"path": "/t", "mode": 448}], "terminal": true, "hostname": "box"}"#;

fn text_seeds() -> Vec<Seed> {
    let text = |target, name, text: &str| Seed {
        target,
        name,
        bytes: text.as_bytes().to_vec(),
    };
    vec![
        text("config", "pod-toml", POD_TOML),
        text("config", "container-json", CONTAINER_JSON),
        text(
            "config",
            "runtime-toml",
            "root = \"/run/vc\"\nguest_image_dir = \"/usr/share/vc/guest-image\"\n",
        ),
        text(
            "config",
            "vm-json",
            r#"{"vcpus": 1, "memory_mib": 256, "kernel": "/bin/sh", "agent_port": 2000, "agent_log": "debug", "agent_debug": ["requests"], "kernel_args": ["quiet"]}"#,
        ),
        text("cli_args", "volume", "/srv/data:/data:ro"),
        text("cli_args", "tmpfs", "/scratch:size=64m,mode=1777"),
        text("cli_args", "disk", "/srv/disk.img:/mnt/disk:rw:ext4"),
        text("cli_args", "size", "512k"),
        text(
            "procfs",
            "stat",
            "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 1000 0 0 0 10 5 0 0 20 0 3 0 \
             123456 1000000 5000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n",
        ),
        text(
            "procfs",
            "meminfo",
            "MemTotal:         262144 kB\nMemFree:          200000 kB\nMemAvailable:     210000 kB\n",
        ),
        text(
            "procfs",
            "mountinfo",
            "1 1 0:2 / / rw - rootfs rootfs rw\n\
             21 1 0:2 / / rw - rootfs rootfs rw\n\
             22 21 0:19 / /proc rw,nosuid,nodev,noexec - proc proc rw\n\
             30 21 0:25 / /run/vc/shared rw,relatime shared:1 - virtiofs vcshare rw\n\
             31 30 0:25 /c\\0401 /run/vc/shared/c\\0401 rw - virtiofs vcshare rw\n",
        ),
        text(
            "procfs",
            "cgroup",
            "usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\noom_kill 1\npopulated 1\nfrozen 0\n\
             254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        ),
        text(
            "procfs",
            "cmdline",
            "console=ttyS0 panic=-1 vc.log=debug vc.port=1024 vc.debug=requests quiet\n",
        ),
    ]
}

/// The bytes of the seed `name` of `target`.
#[cfg(test)]
pub(crate) fn seed(target: &str, name: &str) -> Vec<u8> {
    seeds()
        .into_iter()
        .find(|s| s.target == target && s.name == name)
        .unwrap_or_else(|| panic!("no seed {name} of {target}"))
        .bytes
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut all = frame_seeds();
    all.extend(agent_client_seeds());
    all.extend(agent_server_seeds());
    all.extend(text_seeds());
    all
}
