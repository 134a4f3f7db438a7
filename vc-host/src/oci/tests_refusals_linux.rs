//! One test per refusal of `linux`, `linux.resources` and the annotations.

use serde_json::{json, Value};

use super::tests::{map_value, put, set, with, DEFAULT};
use super::*;

// linux
refused!(
    uid_mappings,
    "linux.uidMappings",
    put(
        "/linux/uidMappings",
        json!([{"containerID": 0, "hostID": 1000, "size": 1}])
    )
);
refused!(
    gid_mappings,
    "linux.gidMappings",
    put(
        "/linux/gidMappings",
        json!([{"containerID": 0, "hostID": 1000, "size": 1}])
    )
);
refused!(
    host_devices,
    "linux.devices",
    put(
        "/linux/devices",
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}])
    )
);
refused!(
    sysctl,
    "linux.sysctl",
    put("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}))
);
refused!(
    net_devices,
    "linux.netDevices",
    put("/linux/netDevices", json!({"eth1": {}}))
);
refused!(
    intel_rdt,
    "linux.intelRdt",
    put("/linux/intelRdt", json!({"closID": "c1"}))
);
refused!(
    memory_policy,
    "linux.memoryPolicy",
    put("/linux/memoryPolicy", json!({"mode": "MPOL_BIND"}))
);
refused!(
    personality,
    "linux.personality",
    put("/linux/personality", json!({"domain": "LINUX32"}))
);
refused!(
    time_offsets,
    "linux.timeOffsets",
    put("/linux/timeOffsets", json!({"monotonic": {"secs": 10}}))
);
refused!(
    rootfs_propagation,
    "linux.rootfsPropagation",
    put("/linux/rootfsPropagation", json!("rslave"))
);
refused!(
    user_namespace,
    "linux.namespaces[5]",
    put("/linux/namespaces/-", json!({"type": "user"}))
);
refused!(
    time_namespace,
    "linux.namespaces[5]",
    put("/linux/namespaces/-", json!({"type": "time"}))
);
refused!(
    join_ipc_outside_cri,
    "linux.namespaces[1]",
    put(
        "/linux/namespaces/1",
        json!({"type": "ipc", "path": "/proc/1/ns/ipc"})
    )
);
refused!(
    join_pid,
    "linux.namespaces[0]",
    put(
        "/linux/namespaces/0",
        json!({"type": "pid", "path": "/proc/1/ns/pid"})
    )
);
refused!(
    join_mount,
    "linux.namespaces[3]",
    put(
        "/linux/namespaces/3",
        json!({"type": "mount", "path": "/proc/1/ns/mnt"})
    )
);
refused!(
    seccomp_listener,
    "linux.seccomp",
    put(
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/l.sock"})
    )
);
refused!(
    seccomp_notify,
    "linux.seccomp.defaultAction",
    put(
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_NOTIFY"})
    )
);
refused!(
    masked_path_relative,
    "linux.maskedPaths[0]",
    put("/linux/maskedPaths", json!(["proc/kcore"]))
);
refused!(
    readonly_path_dotdot,
    "linux.readonlyPaths[1]",
    put("/linux/readonlyPaths", json!(["/proc/sys", "/proc/../etc"]))
);
refused!(
    too_many_masked_paths,
    "linux.maskedPaths",
    put(
        "/linux/maskedPaths",
        json!(vec!["/x"; crate::config::MAX_GUEST_PATHS + 1])
    )
);

// linux.resources
refused!(
    device_beyond_the_allow_list,
    "linux.resources.devices[10]",
    put(
        "/linux/resources/devices/-",
        json!({"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"})
    )
);
refused!(
    allow_all_devices,
    "linux.resources.devices[10]",
    put(
        "/linux/resources/devices/-",
        json!({"allow": true, "access": "rwm"})
    )
);
refused!(
    deny_a_default_device,
    "linux.resources.devices[10]",
    put(
        "/linux/resources/devices/-",
        json!({"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
    )
);
refused!(
    memory_reservation,
    "linux.resources.memory.reservation",
    put("/linux/resources/memory", json!({"reservation": 1048576}))
);
refused!(
    kernel_memory,
    "linux.resources.memory.kernel",
    put("/linux/resources/memory", json!({"kernel": 1048576}))
);
refused!(
    kernel_tcp,
    "linux.resources.memory.kernelTCP",
    put("/linux/resources/memory", json!({"kernelTCP": 1048576}))
);
refused!(
    swappiness,
    "linux.resources.memory.swappiness",
    put("/linux/resources/memory", json!({"swappiness": 0}))
);
refused!(
    oom_killer_off,
    "linux.resources.memory.disableOOMKiller",
    put("/linux/resources/memory", json!({"disableOOMKiller": true}))
);
refused!(
    swap_below_limit,
    "linux.resources.memory.swap",
    put(
        "/linux/resources/memory",
        json!({"limit": 1048576, "swap": 4096})
    )
);
refused!(
    memory_limit_too_small,
    "linux.resources.memory.limit",
    put("/linux/resources/memory", json!({"limit": 100}))
);
refused!(
    cpuset_cpus,
    "linux.resources.cpu.cpus",
    put("/linux/resources/cpu/cpus", json!("0-1"))
);
refused!(
    cpuset_mems,
    "linux.resources.cpu.mems",
    put("/linux/resources/cpu/mems", json!("0"))
);
refused!(
    realtime_runtime,
    "linux.resources.cpu.realtimeRuntime",
    put("/linux/resources/cpu/realtimeRuntime", json!(950000))
);
refused!(
    cpu_idle,
    "linux.resources.cpu.idle",
    put("/linux/resources/cpu/idle", json!(1))
);
refused!(
    cpu_burst,
    "linux.resources.cpu.burst",
    put("/linux/resources/cpu/burst", json!(1000))
);
refused!(
    cpu_period_out_of_range,
    "linux.resources.cpu.period",
    put(
        "/linux/resources/cpu",
        json!({"quota": 50000, "period": 10})
    )
);
refused!(
    pids_out_of_range,
    "linux.resources.pids.limit",
    put("/linux/resources/pids", json!({"limit": 1_i64 << 40}))
);
refused!(
    block_io,
    "linux.resources.blockIO",
    put("/linux/resources/blockIO", json!({"weight": 100}))
);
refused!(
    hugepages,
    "linux.resources.hugepageLimits[1]",
    put(
        "/linux/resources/hugepageLimits",
        json!([{"pageSize": "2MB", "limit": 0}, {"pageSize": "1GB", "limit": 1073741824}])
    )
);
refused!(
    net_cls,
    "linux.resources.network",
    put("/linux/resources/network", json!({"classID": 1}))
);
refused!(
    rdma,
    "linux.resources.rdma",
    put(
        "/linux/resources/rdma",
        json!({"mlx5_0": {"hcaHandles": 3}})
    )
);
refused!(
    unified,
    "linux.resources.unified",
    put(
        "/linux/resources/unified",
        json!({"memory.high": "1000000"})
    )
);

// annotations
refused!(
    container_type_without_sandbox_id,
    "annotations.\"io.kubernetes.cri.sandbox-id\"",
    put(
        "/annotations",
        json!({"io.kubernetes.cri.container-type": "container"})
    )
);
refused!(
    sandbox_id_without_type,
    "annotations.\"io.kubernetes.cri.container-type\"",
    put(
        "/annotations",
        json!({"io.kubernetes.cri.sandbox-id": "s1"})
    )
);
refused!(
    unknown_container_type,
    "annotations.\"io.kubernetes.cri.container-type\"",
    put(
        "/annotations",
        json!({"io.kubernetes.cri.container-type": "podsandbox", "io.kubernetes.cri.sandbox-id": "s1"})
    )
);
refused!(
    empty_sandbox_id,
    "annotations.\"io.kubernetes.cri.sandbox-id\"",
    put(
        "/annotations",
        json!({"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": ""})
    )
);
refused!(
    vcpus_not_a_number,
    "annotations.\"io.vc.pod.vcpus\"",
    put("/annotations", json!({"io.vc.pod.vcpus": "two"}))
);
refused!(
    vcpus_zero,
    "annotations.\"io.vc.pod.vcpus\"",
    put("/annotations", json!({"io.vc.pod.vcpus": "0"}))
);
refused!(
    memory_too_small,
    "annotations.\"io.vc.pod.memory_mib\"",
    put("/annotations", json!({"io.vc.pod.memory_mib": "64"}))
);

#[test]
fn host_network_can_be_refused() {
    let mut v: Value = serde_json::from_str(DEFAULT).expect("json");
    set(
        &mut v,
        "/linux/namespaces",
        json!([{"type": "pid"}, {"type": "mount"}]),
    );
    let opts = OciOptions {
        host_network: HostNetwork::Refuse,
        ..OciOptions::default()
    };
    let err = map_value(&v, &opts).expect_err("refused");
    assert_eq!(err.field(), Some("linux.namespaces"));
    map_value(&v, &OciOptions::default()).expect("no network by default");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let err = with(|v| set(v, "/linux/resources/cpu/sharez", json!(5))).expect_err("unknown");
    assert_eq!(err.field(), Some("linux.resources.cpu.sharez"));
    let err = with(|v| set(v, "/mounts/0/flags", json!(["x"]))).expect_err("unknown");
    assert_eq!(err.field(), Some("mounts[0].flags"));
}
