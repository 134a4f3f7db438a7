//! One test per refusal (top level, process, mounts): containerd's default
//! spec with one field changed, refused with an error naming that field.
//! `linux` and the annotations are in `tests_refusals_linux.rs`.

use serde_json::{json, Value};

use super::tests::{mount, put, with};

// Top level.
refused!(
    other_major_version,
    "ociVersion",
    put("/ociVersion", json!("2.0.0"))
);
refused!(
    hooks,
    "hooks",
    put("/hooks", json!({"createRuntime": [{"path": "/bin/true"}]}))
);
refused!(
    domainname,
    "domainname",
    put("/domainname", json!("example.org"))
);
refused!(
    windows_section,
    "windows",
    put("/windows", json!({"layerFolders": []}))
);
refused!(no_process, "process", |v: &mut Value| {
    v.as_object_mut().expect("spec").remove("process");
});
refused!(no_root, "root", |v: &mut Value| {
    v.as_object_mut().expect("spec").remove("root");
});
refused!(
    bad_hostname,
    "hostname",
    put("/hostname", json!("no_underscores"))
);

// process
refused!(no_args, "process.args", put("/process/args", json!([])));
refused!(
    command_line,
    "process.commandLine",
    put("/process/commandLine", json!("sleep 1"))
);
refused!(
    env_without_equals,
    "process.env[1]",
    put("/process/env", json!(["PATH=/bin", "NOPE"]))
);
refused!(
    relative_cwd,
    "process.cwd",
    put("/process/cwd", json!("work"))
);
refused!(
    umask,
    "process.user.umask",
    put("/process/user/umask", json!(0o077))
);
refused!(
    username,
    "process.user.username",
    put("/process/user/username", json!("root"))
);
refused!(
    io_priority,
    "process.ioPriority",
    put(
        "/process/ioPriority",
        json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0})
    )
);
refused!(
    scheduler,
    "process.scheduler",
    put("/process/scheduler", json!({"policy": "SCHED_BATCH"}))
);
refused!(
    exec_cpu_affinity,
    "process.execCPUAffinity",
    put("/process/execCPUAffinity", json!({"initial": "0"}))
);
refused!(
    rlimit_soft_above_hard,
    "process.rlimits[0]",
    put(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}])
    )
);
refused!(
    inheritable_caps,
    "process.capabilities.inheritable",
    put("/process/capabilities/inheritable", json!(["CAP_KILL"]))
);
refused!(
    ambient_caps,
    "process.capabilities.ambient",
    put("/process/capabilities/ambient", json!(["CAP_KILL"]))
);
refused!(
    effective_not_bounding,
    "process.capabilities.effective",
    put("/process/capabilities/effective", json!(["CAP_KILL"]))
);
refused!(
    permitted_not_bounding,
    "process.capabilities.permitted",
    put("/process/capabilities/permitted", json!([]))
);

// mounts
refused!(
    idmapped_mount,
    "mounts[7].uidMappings",
    mount(json!({"destination": "/d", "type": "bind",
    "source": "/s", "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}))
);
refused!(
    mounted_twice,
    "mounts[7].destination",
    mount(json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs"}))
);
refused!(
    proc_of_other_type,
    "mounts[0].type",
    put("/mounts/0/type", json!("tmpfs"))
);
refused!(
    proc_with_exec,
    "mounts[0].options",
    put("/mounts/0/options", json!(["nosuid", "exec"]))
);
refused!(
    sysfs_read_write,
    "mounts[5].options",
    put("/mounts/5/options", json!(["nosuid", "rw"]))
);
refused!(
    dev_tmpfs_other_mode,
    "mounts[1].options",
    put("/mounts/1/options", json!(["nosuid", "mode=777"]))
);
refused!(
    host_dev_shm,
    "mounts[3].source",
    put(
        "/mounts/3",
        json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind"]})
    )
);
refused!(
    dev_shm_bind_outside_cri,
    "mounts[3].type",
    put(
        "/mounts/3",
        json!({"destination": "/dev/shm", "type": "bind", "source": "/srv/shm", "options": ["rbind"]})
    )
);
refused!(
    dev_shm_not_tmpfs,
    "mounts[3].type",
    put("/mounts/3/type", json!("ramfs"))
);
refused!(
    dev_shm_other_mode,
    "mounts[3].options",
    put("/mounts/3/options", json!(["mode=0700"]))
);
refused!(
    dev_shm_size_zero,
    "mounts[3].options",
    put("/mounts/3/options", json!(["size=0"]))
);
refused!(
    bind_without_source,
    "mounts[7].source",
    mount(json!({"destination": "/d", "type": "bind", "options": ["rbind"]}))
);
refused!(
    bind_propagation,
    "mounts[7].options",
    mount(
        json!({"destination": "/d", "type": "bind", "source": "/s", "options": ["rbind", "rshared"]})
    )
);
refused!(
    bind_noexec,
    "mounts[7].options",
    mount(
        json!({"destination": "/d", "type": "bind", "source": "/s", "options": ["rbind", "noexec"]})
    )
);
refused!(
    tmpfs_noexec,
    "mounts[7].options",
    mount(json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["noexec"]}))
);
refused!(
    tmpfs_bad_mode,
    "mounts[7].options",
    mount(
        json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["mode=99999"]})
    )
);
refused!(
    tmpfs_bad_size,
    "mounts[7].options",
    mount(
        json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["size=lots"]})
    )
);
refused!(
    other_filesystem,
    "mounts[7].type",
    mount(json!({"destination": "/o", "type": "overlay", "source": "overlay"}))
);
refused!(
    mount_under_proc,
    "mounts[7].destination",
    mount(json!({"destination": "/proc/sys/x", "type": "bind", "source": "/s"}))
);
refused!(
    relative_destination,
    "mounts[7].destination",
    mount(json!({"destination": "data", "type": "bind", "source": "/s"}))
);
