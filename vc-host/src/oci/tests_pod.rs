//! Unit tests of the mapping: namespaces, seccomp, masked and read-only
//! paths, fields accepted without effect, the pod, exec processes, and
//! `load_spec`.

use std::path::Path;

use oci_spec::runtime::Process;
use serde_json::{json, Value};

use super::tests::{map_value, set, with, DEFAULT};
use super::*;

#[test]
fn namespaces_give_the_pods_network() {
    let m = with(|v| {
        set(
            v,
            "/linux/namespaces/4",
            json!({"type": "network", "path": "/var/run/netns/n1"}),
        )
    })
    .expect("maps");
    assert_eq!(m.pod.netns.as_deref(), Some(Path::new("/var/run/netns/n1")));
    // A new empty network namespace: the VM has no network either.
    assert_eq!(with(|_| {}).expect("maps").pod.netns, None);
    // The cgroup namespace and no network namespace at all are fine.
    let m = with(|v| {
        set(
            v,
            "/linux/namespaces",
            json!([{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}]),
        );
    })
    .expect("host network: no network");
    assert_eq!(m.pod.netns, None);
}

#[test]
fn seccomp_absent_follows_the_options_and_present_carries_over() {
    assert_eq!(
        with(|_| {}).expect("maps").container.seccomp,
        Seccomp::Default
    );
    let v: Value = serde_json::from_str(DEFAULT).expect("json");
    let opts = OciOptions {
        seccomp_when_absent: Seccomp::Unconfined,
        ..OciOptions::default()
    };
    assert_eq!(
        map_value(&v, &opts).expect("maps").container.seccomp,
        Seccomp::Unconfined
    );
    let c = with(|v| {
        set(
            v,
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}),
        );
    })
    .expect("maps")
    .container;
    let Seccomp::Profile(p) = &c.seccomp else {
        panic!("{:?}", c.seccomp)
    };
    assert_eq!(p.default_errno_ret, Some(38));
    assert_eq!(p.syscalls.len(), 2);
    assert_eq!(p.syscalls[1].args[0].value, 8);
}

#[test]
fn masked_and_readonly_paths_are_the_specs_or_the_defaults() {
    let c = with(|_| {}).expect("maps").container;
    assert!(
        c.masked_paths.iter().any(|p| p == "/proc/asound"),
        "the spec's own list"
    );
    let c = with(|v| {
        set(v, "/linux/maskedPaths", json!([]));
        set(v, "/linux/readonlyPaths", json!(["/etc/ssl"]));
    })
    .expect("maps")
    .container;
    assert!(c.masked_paths.is_empty());
    assert_eq!(c.readonly_paths, ["/etc/ssl"]);
    let strip = |v: &mut Value| {
        let l = v["linux"].as_object_mut().expect("linux");
        l.remove("maskedPaths");
        l.remove("readonlyPaths");
    };
    let c = with(strip).expect("maps").container;
    assert_eq!(c.masked_paths.len(), vc_proto::DEFAULT_MASKED_PATHS.len());
    let mut v: Value = serde_json::from_str(DEFAULT).expect("json");
    strip(&mut v);
    let opts = OciOptions {
        default_paths_when_absent: false,
        ..OciOptions::default()
    };
    let c = map_value(&v, &opts).expect("maps").container;
    assert!(c.masked_paths.is_empty() && c.readonly_paths.is_empty());
}

#[test]
fn fields_without_meaning_in_a_vm_are_accepted() {
    let c = with(|v| {
        set(
            v,
            "/process/apparmorProfile",
            json!("cri-containerd.apparmor.d"),
        );
        set(
            v,
            "/process/selinuxLabel",
            json!("system_u:system_r:container_t:s0"),
        );
        set(v, "/process/oomScoreAdj", json!(-998));
        set(
            v,
            "/process/consoleSize",
            json!({"height": 24, "width": 80}),
        );
        set(
            v,
            "/linux/mountLabel",
            json!("system_u:object_r:container_file_t:s0"),
        );
        set(v, "/linux/cgroupsPath", json!("/kubepods/pod1/c1"));
        set(v, "/linux/rootfsPropagation", json!("rprivate"));
        set(
            v,
            "/linux/resources/memory",
            json!({"useHierarchy": true, "checkBeforeUpdate": true}),
        );
    });
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn annotations_are_kept_and_size_the_vm() {
    let m = with(|v| {
        set(
            v,
            "/annotations",
            json!({"io.vc.pod.vcpus": "2", "io.vc.pod.memory_mib": "512", "x": "y"}),
        );
    })
    .expect("maps");
    assert_eq!(m.role, PodRole::Standalone);
    assert_eq!(m.pod.annotations.get("x").map(String::as_str), Some("y"));
    let pod = m
        .pod
        .pod_config(
            crate::id::PodId::new("p1").expect("id"),
            crate::hypervisor::VmConfig::default(),
        )
        .expect("pod");
    assert_eq!((pod.vm.vcpus, pod.vm.memory_mib), (2, 512));
    assert_eq!(pod.annotations.len(), 3);
    let plain = OciPod::default()
        .pod_config(
            crate::id::PodId::new("p1").expect("id"),
            crate::hypervisor::VmConfig::default(),
        )
        .expect("pod");
    assert_eq!(plain.vm, crate::hypervisor::VmConfig::default());
}

#[test]
fn pod_roles_from_cri_annotations() {
    let map = |pairs: &[(&str, &str)]| {
        pod_role(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    };
    assert_eq!(map(&[]).expect("plain"), PodRole::Standalone);
    assert_eq!(
        map(&[
            (ANNOTATION_CONTAINER_TYPE, "sandbox"),
            (ANNOTATION_SANDBOX_ID, "s1")
        ])
        .expect("sandbox"),
        PodRole::Sandbox
    );
    assert_eq!(
        map(&[
            (ANNOTATION_CONTAINER_TYPE, "container"),
            (ANNOTATION_SANDBOX_ID, "s1")
        ])
        .expect("container"),
        PodRole::Container {
            sandbox_id: "s1".into()
        }
    );
}

#[test]
fn exec_processes() {
    let p: Process =
        serde_json::from_str(include_str!("testdata/ctr-exec-process.json")).expect("process");
    let e = process_from_oci(&p).expect("maps");
    assert_eq!(e.args, ["sh"]);
    assert!(e.terminal && !e.stdin);
    assert_eq!(e.cwd.as_deref(), Some("/"));
    assert_eq!(
        e.user.as_ref().map(|u| u.additional_gids.clone()),
        Some(vec![0])
    );
    let container = with(|_| {}).expect("maps").container;
    assert_eq!(exec_from_oci(&p, &container).expect("same settings"), e);
    let mut other = container.clone();
    other.no_new_privileges = false;
    let err = exec_from_oci(&p, &other).expect_err("differs");
    assert_eq!(err.field(), Some("process.noNewPrivileges"));
    other = container.clone();
    other.capabilities = Some(vec!["CAP_KILL".into()]);
    let err = exec_from_oci(&p, &other).expect_err("differs");
    assert_eq!(err.field(), Some("process.capabilities"));
}

#[test]
fn load_spec_reads_caps_and_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = load_spec(dir.path()).expect_err("no file");
    assert!(matches!(err, OciError::Read { .. }), "{err:?}");
    std::fs::write(dir.path().join("config.json"), DEFAULT).expect("write");
    let spec = load_spec(dir.path()).expect("loads");
    assert_eq!(spec.version(), "1.0.2-dev");
    std::fs::write(dir.path().join("config.json"), "{").expect("write");
    assert!(matches!(load_spec(dir.path()), Err(OciError::Parse { .. })));
    let big = format!(
        "{{\"ociVersion\": \"1.0.2\", \"x\": \"{}\"}}",
        "a".repeat(MAX_SPEC_BYTES as usize)
    );
    std::fs::write(dir.path().join("config.json"), big).expect("write");
    assert!(matches!(
        load_spec(dir.path()),
        Err(OciError::TooLarge { .. })
    ));
    let mut v: Value = serde_json::from_str(DEFAULT).expect("json");
    set(&mut v, "/process/user/uidd", json!(5));
    std::fs::write(dir.path().join("config.json"), v.to_string()).expect("write");
    let err = load_spec(dir.path()).expect_err("unknown field");
    assert_eq!(err.field(), Some("process.user.uidd"));
    // An unknown field with an empty value means nothing.
    set(&mut v, "/process/user/uidd", json!(0));
    set(&mut v, "/linux/futureThing", json!({}));
    std::fs::write(dir.path().join("config.json"), v.to_string()).expect("write");
    load_spec(dir.path()).expect("empty unknown fields pass");
}
