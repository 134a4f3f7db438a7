//! The specs containerd 1.6 wrote for `ctr run` (captured) and the ones its
//! CRI plugin writes (from its code): see `testdata/README.md`.

use std::path::Path;

use serde_json::Value;

use super::tests::{map_value, parse};
use super::*;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/oci/testdata")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn mapped(name: &str) -> OciContainer {
    map_value(&fixture(name), &OciOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn refused(name: &str) -> OciError {
    map_value(&fixture(name), &OciOptions::default()).expect_err(name)
}

#[test]
fn every_fixture_loads_through_load_spec() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oci/testdata");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !name.ends_with(".json") || name.contains("process") {
            continue;
        }
        let bundle = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&path, bundle.path().join("config.json")).expect("copy");
        load_spec(bundle.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        n += 1;
    }
    assert!(n >= 15, "{n} fixtures");
}

#[test]
fn ctr_run_default() {
    let m = mapped("ctr-default.json");
    let c = &m.container;
    assert_eq!(m.role, PodRole::Standalone);
    assert_eq!(c.command, ["sleep", "1000"]);
    assert_eq!(c.env, ["PATH=/bin"]);
    assert_eq!(
        (c.user.uid, c.user.gid, c.user.additional_gids.clone()),
        (0, 0, vec![0])
    );
    assert!(!c.terminal && c.no_new_privileges && !c.readonly_rootfs);
    assert_eq!(c.rootfs, Path::new("/bundle/rootfs"));
    assert_eq!(c.rlimits.len(), 1);
    assert_eq!(
        (c.rlimits[0].resource.as_str(), c.rlimits[0].hard),
        ("nofile", 1024)
    );
    assert_eq!(c.capabilities.as_ref().map(Vec::len), Some(14));
    assert_eq!(c.shm_size_bytes, Some(64 << 20));
    assert_eq!(c.tmpfs.len(), 1, "containerd's /run");
    assert!(c.volumes.is_empty());
    assert_eq!(c.resources.cpu_weight, Some(39), "shares 1024");
    assert_eq!(
        c.seccomp,
        Seccomp::Default,
        "no linux.seccomp: vc's default"
    );
    assert_eq!(c.masked_paths.len(), 10);
    assert_eq!(c.readonly_paths.len(), 5);
    assert_eq!(m.pod.netns, None);
    assert!(m.pod.annotations.is_empty());
    c.resources.validate().expect("valid resources");
}

#[test]
fn ctr_run_variants() {
    assert!(mapped("ctr-tty.json").container.terminal);
    let s = mapped("ctr-seccomp.json").container.seccomp;
    let Seccomp::Profile(p) = s else {
        panic!("{s:?}")
    };
    assert_eq!(p.default_action, vc_proto::SeccompAction::Errno);
    assert!(p
        .syscalls
        .iter()
        .any(|r| r.names.iter().any(|n| n == "read")));
    assert_eq!(
        mapped("ctr-memory.json")
            .container
            .resources
            .memory_limit_bytes,
        Some(64 << 20)
    );
    let cpus = mapped("ctr-cpus.json").container.resources;
    assert_eq!(
        (cpus.cpu_quota_us, cpus.cpu_period_us),
        (Some(50_000), Some(100_000))
    );
    let m = mapped("ctr-mount.json").container;
    assert_eq!(m.volumes.len(), 1);
    assert_eq!(m.volumes[0].container_path, "/data");
    assert!(m.volumes[0].readonly);
    assert!(m
        .tmpfs
        .iter()
        .any(|t| t.path == "/scratch" && t.size_bytes == Some(1 << 20)));
    let misc = mapped("ctr-misc.json");
    let c = &misc.container;
    assert_eq!(c.env, ["PATH=/bin", "FOO=bar"]);
    assert_eq!(c.cwd, "/tmp");
    assert!(c.readonly_rootfs && !c.no_new_privileges);
    assert!(c
        .capabilities
        .iter()
        .flatten()
        .any(|c| c == "CAP_SYS_ADMIN"));
    assert_eq!(
        (c.resources.cpu_quota_us, c.resources.cpu_period_us),
        (Some(20_000), Some(50_000))
    );
    assert_eq!(c.resources.cpu_weight, Some(1 + 510 * 9999 / 262_142));
    assert_eq!(
        misc.pod
            .annotations
            .get("org.example/a")
            .map(String::as_str),
        Some("b")
    );
    assert_eq!(
        mapped("ctr-withns.json").pod.netns.as_deref(),
        Some(Path::new("/var/run/netns/test"))
    );
}

#[test]
fn ctr_run_variants_vc_refuses() {
    // --privileged: sysfs read-write comes first, the host devices after it.
    assert_eq!(
        refused("ctr-privileged.json").field(),
        Some("mounts[5].options")
    );
    assert_eq!(
        refused("ctr-uidmap.json").field(),
        Some("linux.uidMappings")
    );
    assert_eq!(
        refused("ctr-rootfsprop.json").field(),
        Some("linux.rootfsPropagation")
    );
    assert_eq!(refused("ctr-device.json").field(), Some("linux.devices"));
}

#[test]
fn cri_sandbox() {
    let m = mapped("cri-sandbox.json");
    assert_eq!(m.role, PodRole::Sandbox);
    assert_eq!(
        m.pod.netns.as_deref(),
        Some(Path::new(
            "/var/run/netns/cni-6c3d2a1b-0e9f-8d7c-6b5a-4f3e2d1c0b9a"
        ))
    );
    assert_eq!(m.pod.hostname.as_deref(), Some("web-0"));
    let c = &m.container;
    assert_eq!(c.command, ["/pause"]);
    assert_eq!((c.user.uid, c.user.gid), (65535, 65535));
    assert!(c.readonly_rootfs);
    assert_eq!(c.resources.cpu_weight, Some(1), "shares 2");
    // The sandbox's shm bind becomes its own tmpfs; resolv.conf a file volume.
    assert_eq!(c.shm_size_bytes, None);
    assert_eq!(c.volumes.len(), 1);
    assert_eq!(c.volumes[0].container_path, "/etc/resolv.conf");
    assert!(c.volumes[0].readonly);
    assert!(matches!(c.seccomp, Seccomp::Profile(_)));
    assert!(m
        .pod
        .annotations
        .contains_key("io.kubernetes.cri.sandbox-log-directory"));

    let host = mapped("cri-sandbox-hostnet.json");
    assert_eq!(host.role, PodRole::Sandbox);
    assert_eq!(host.pod.netns, None, "host network: the VM has none");
    assert_eq!(host.pod.hostname.as_deref(), Some("node-1"));
}

#[test]
fn cri_container() {
    let m = mapped("cri-container.json");
    let sandbox = "8d4b7e0a51c3f2e6a9d0c1b2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2";
    assert_eq!(
        m.role,
        PodRole::Container {
            sandbox_id: sandbox.into()
        }
    );
    assert_eq!(m.pod.netns, None, "the sandbox's, through /proc");
    let c = &m.container;
    assert_eq!(c.hostname, None, "the pod's");
    assert!(!c.no_new_privileges);
    assert!(c.rlimits.is_empty());
    assert_eq!(c.user.additional_gids, [0, 10]);
    let dests: Vec<&str> = c
        .volumes
        .iter()
        .map(|v| v.container_path.as_str())
        .collect();
    assert_eq!(
        dests,
        [
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/dev/termination-log",
            "/var/run/secrets/kubernetes.io/serviceaccount"
        ]
    );
    assert!(c.volumes[4].readonly && !c.volumes[0].readonly);
    assert_eq!(c.shm_size_bytes, None, "the sandbox's shm: its own tmpfs");
    assert!(c.tmpfs.is_empty());
    assert_eq!(c.resources.memory_limit_bytes, Some(128 << 20));
    assert_eq!(c.masked_paths.len(), 9);
    assert_eq!(c.readonly_paths.len(), 6);
    assert!(matches!(c.seccomp, Seccomp::Profile(_)));
    assert_eq!(
        m.pod
            .annotations
            .get("io.kubernetes.cri.container-name")
            .map(String::as_str),
        Some("app")
    );

    let p: oci_spec::runtime::Process =
        serde_json::from_value(fixture("cri-exec-process.json")).expect("process");
    let e = exec_from_oci(&p, c).expect("ExecSync");
    assert_eq!(e.args, ["cat", "/etc/hostname"]);
    assert_eq!(e.env, c.env);
}

#[test]
fn cri_pid_sharing_is_refused() {
    let mut v = fixture("cri-container.json");
    v["linux"]["namespaces"][0] = serde_json::json!({"type": "pid", "path": "/proc/4242/ns/pid"});
    let err = map_value(&v, &OciOptions::default()).expect_err("shareProcessNamespace");
    assert_eq!(err.field(), Some("linux.namespaces[0]"));
    assert!(parse(&v).is_ok());
}
