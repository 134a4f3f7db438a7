//! Unit tests of the mapping, field by field, from specs built on
//! containerd's default (`testdata/ctr-default.json`): the helpers, the
//! process, root, hostname, mounts and resources. Namespaces, seccomp, paths,
//! the pod, exec and loading are in `tests_pod.rs`; refusals in
//! `tests_refusals*.rs`; the captured and CRI specs in `tests_fixtures.rs`.

use std::path::Path;

use oci_spec::runtime::{LinuxResources, Spec};
use serde_json::{json, Value};

use super::*;
use crate::config::{ResourcesConfig, RlimitConfig, UserConfig};

pub(super) const DEFAULT: &str = include_str!("testdata/ctr-default.json");

/// Sets the value at a JSON pointer, making missing objects on the way;
/// a last segment `-` appends to an array.
pub(super) fn set(v: &mut Value, pointer: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Value::Array(a) = cur {
            if *part == "-" {
                a.push(value);
                return;
            }
            let idx: usize = part.parse().expect("array index");
            if last {
                a[idx] = value;
                return;
            }
            cur = &mut a[idx];
            continue;
        }
        let obj = cur.as_object_mut().expect("object on the way");
        if last {
            obj.insert((*part).to_owned(), value);
            return;
        }
        cur = obj.entry(*part).or_insert_with(|| json!({}));
    }
}

/// Parses spec JSON as `load_spec` does.
pub(super) fn parse(v: &Value) -> Result<Spec, OciError> {
    spec::parse_spec(v.to_string().as_bytes()).map_err(|e| match e {
        spec::ParseError::Json(e) => OciError::invalid("(json)", e.to_string()),
        spec::ParseError::Unknown(f) => OciError::unsupported(f, "unknown"),
    })
}

pub(super) fn map_value(v: &Value, opts: &OciOptions) -> Result<OciContainer, OciError> {
    let spec = parse(v)?;
    container_from_spec(
        ContainerId::new("c1").expect("id"),
        Path::new("/bundle"),
        &spec,
        opts,
    )
}

/// The default spec with `patch` applied, mapped with default options.
pub(super) fn with(patch: impl FnOnce(&mut Value)) -> Result<OciContainer, OciError> {
    let mut v: Value = serde_json::from_str(DEFAULT).expect("fixture");
    patch(&mut v);
    map_value(&v, &OciOptions::default())
}

#[test]
fn process_fields_map_one_to_one() {
    let c = with(|v| {
        set(v, "/process/args", json!(["/bin/sh", "-c", "true"]));
        set(v, "/process/env", json!(["PATH=/bin", "A=1"]));
        set(v, "/process/cwd", json!("/work"));
        set(
            v,
            "/process/user",
            json!({"uid": 1000, "gid": 100, "additionalGids": [5, 7], "umask": 18}),
        );
        set(v, "/process/terminal", json!(true));
        set(
            v,
            "/process/rlimits",
            json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]),
        );
        set(v, "/process/noNewPrivileges", json!(false));
    })
    .expect("maps")
    .container;
    assert_eq!(c.command, ["/bin/sh", "-c", "true"]);
    assert_eq!(c.env, ["PATH=/bin", "A=1"]);
    assert_eq!(c.cwd, "/work");
    assert_eq!(
        c.user,
        UserConfig {
            uid: 1000,
            gid: 100,
            additional_gids: vec![5, 7]
        }
    );
    assert!(c.terminal);
    assert_eq!(
        c.rlimits,
        [
            RlimitConfig {
                resource: "nofile".into(),
                soft: 512,
                hard: 1024
            },
            RlimitConfig {
                resource: "core".into(),
                soft: 0,
                hard: 0
            }
        ]
    );
    assert!(!c.no_new_privileges);
}

#[test]
fn capabilities_are_the_bounding_set_and_absent_means_none() {
    let c = with(|_| {}).expect("maps").container;
    let caps = c.capabilities.expect("a list");
    assert_eq!(caps.len(), 14);
    assert!(caps.iter().any(|c| c == "CAP_NET_BIND_SERVICE"));
    assert!(caps.iter().all(|c| c.starts_with("CAP_")));

    let none = with(|v| {
        v["process"]
            .as_object_mut()
            .expect("process")
            .remove("capabilities");
    })
    .expect("maps");
    assert_eq!(none.container.capabilities, Some(Vec::new()));
    // No `noNewPrivileges` is false in OCI.
    let nnp = with(|v| {
        v["process"]
            .as_object_mut()
            .expect("process")
            .remove("noNewPrivileges");
    })
    .expect("maps");
    assert!(!nnp.container.no_new_privileges);
}

#[test]
fn root_is_relative_to_the_bundle_or_absolute_and_readonly() {
    let c = with(|_| {}).expect("maps").container;
    assert_eq!(c.rootfs, Path::new("/bundle/rootfs"));
    assert!(!c.readonly_rootfs);
    let c = with(|v| set(v, "/root", json!({"path": "/srv/root", "readonly": true})))
        .expect("maps")
        .container;
    assert_eq!(c.rootfs, Path::new("/srv/root"));
    assert!(c.readonly_rootfs);
}

#[test]
fn hostname_goes_to_the_container_and_the_pod() {
    let m = with(|v| set(v, "/hostname", json!("web-1"))).expect("maps");
    assert_eq!(m.container.hostname.as_deref(), Some("web-1"));
    assert_eq!(m.pod.hostname.as_deref(), Some("web-1"));
    let m = with(|v| set(v, "/hostname", json!(""))).expect("maps");
    assert_eq!(m.container.hostname, None);
}

#[test]
fn binds_become_volumes_and_tmpfs_stays_tmpfs() {
    let c = with(|v| {
        set(
            v,
            "/mounts/-",
            json!({"destination": "/data", "type": "bind",
            "source": "/srv/data", "options": ["rbind", "rprivate", "ro"]}),
        );
        set(
            v,
            "/mounts/-",
            json!({"destination": "/etc/hosts", "source": "hosts",
            "options": ["bind", "rw"]}),
        );
        set(
            v,
            "/mounts/-",
            json!({"destination": "/scratch", "type": "tmpfs",
            "source": "tmpfs", "options": ["nosuid", "size=1m", "mode=1770"]}),
        );
    })
    .expect("maps")
    .container;
    assert_eq!(c.volumes.len(), 2);
    assert_eq!(c.volumes[0].host_path, Path::new("/srv/data"));
    assert_eq!(c.volumes[0].container_path, "/data");
    assert!(c.volumes[0].readonly);
    // A relative source is the bundle's; a bind without a type is a bind.
    assert_eq!(c.volumes[1].host_path, Path::new("/bundle/hosts"));
    assert!(!c.volumes[1].readonly);
    // containerd's /run tmpfs, then ours.
    assert_eq!(c.tmpfs.len(), 2);
    assert_eq!(c.tmpfs[0].path, "/run");
    assert_eq!(
        (c.tmpfs[0].size_bytes, c.tmpfs[0].mode),
        (Some(64 << 20), Some(0o755))
    );
    assert_eq!(c.tmpfs[1].path, "/scratch");
    assert_eq!(
        (c.tmpfs[1].size_bytes, c.tmpfs[1].mode),
        (Some(1 << 20), Some(0o1770))
    );
}

#[test]
fn dev_shm_size_comes_from_its_tmpfs() {
    let c = with(|_| {}).expect("maps").container;
    assert_eq!(c.shm_size_bytes, Some(64 << 20));
    let c = with(|v| set(v, "/mounts/3/options", json!(["nosuid", "size=8m"])))
        .expect("maps")
        .container;
    assert_eq!(c.shm_size_bytes, Some(8 << 20));
}

#[test]
fn the_last_mount_at_dev_shm_wins() {
    // CRI: containerd's default tmpfs (64 MiB), then the sandbox's shm bind,
    // which becomes the container's own tmpfs of the guest's default size.
    let cri = |v: &mut Value| {
        set(
            v,
            "/annotations",
            json!({"io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "s1"}),
        );
        set(
            v,
            "/mounts/-",
            json!({"destination": "/dev/shm", "type": "bind",
            "source": "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/s1/shm",
            "options": ["rbind", "ro"]}),
        );
    };
    let c = with(cri).expect("maps").container;
    assert_eq!(c.shm_size_bytes, None);
    assert!(c.volumes.is_empty(), "the shm bind is no volume");
    // Two tmpfs: the second one's size.
    let c = with(|v| {
        set(
            v,
            "/mounts/-",
            json!({"destination": "/dev/shm", "type": "tmpfs",
            "source": "shm", "options": ["nosuid", "size=8m"]}),
        )
    })
    .expect("maps")
    .container;
    assert_eq!(c.shm_size_bytes, Some(8 << 20));
    // A later mount at /dev/shm is checked like the first: the host's
    // /dev/shm is still refused, naming the second mount.
    let err = with(|v| {
        set(
            v,
            "/mounts/-",
            json!({"destination": "/dev/shm", "type": "bind",
            "source": "/dev/shm", "options": ["rbind"]}),
        )
    })
    .expect_err("host IPC");
    assert_eq!(err.field(), Some("mounts[7].source"), "{err}");
}

#[test]
fn resources_map_with_the_kernels_share_conversion() {
    assert_eq!(resources::shares_to_weight(2), 1);
    assert_eq!(resources::shares_to_weight(1024), 39);
    assert_eq!(resources::shares_to_weight(262_144), 10_000);
    assert_eq!(resources::shares_to_weight(1), 1);
    assert_eq!(resources::shares_to_weight(1 << 30), 10_000);
    let c = with(|v| {
        set(
            v,
            "/linux/resources/memory",
            json!({"limit": 268435456, "swap": 268435456}),
        );
        set(
            v,
            "/linux/resources/cpu",
            json!({"shares": 512, "quota": 25000, "period": 50000}),
        );
        set(v, "/linux/resources/pids", json!({"limit": 64}));
        set(
            v,
            "/linux/resources/hugepageLimits",
            json!([{"pageSize": "2MB", "limit": 0}]),
        );
    })
    .expect("maps")
    .container;
    assert_eq!(
        c.resources,
        ResourcesConfig {
            memory_limit_bytes: Some(256 << 20),
            cpu_quota_us: Some(25_000),
            cpu_period_us: Some(50_000),
            cpu_weight: Some(shares_weight(512)),
            pids_limit: Some(64),
        }
    );
}

fn shares_weight(s: u64) -> u64 {
    1 + (s - 2) * 9999 / 262_142
}

#[test]
fn unlimited_and_unset_resources() {
    let r: LinuxResources = serde_json::from_value(json!({
        "memory": {"limit": -1}, "cpu": {"quota": -1, "period": 100000},
        "pids": {"limit": -1}}))
    .expect("resources");
    let got = resources_from_oci(&r).expect("maps");
    assert_eq!(got.memory_limit_bytes, Some(u64::MAX));
    assert_eq!(got.cpu_quota_us, Some(u64::MAX));
    assert_eq!(got.pids_limit, Some(u64::MAX));
    let r: LinuxResources = serde_json::from_value(json!({
        "memory": {"limit": 0}, "cpu": {"shares": 0, "period": 100000}, "pids": {"limit": 0}}))
    .expect("resources");
    // 0 is unset; a period without a quota sets nothing.
    assert!(resources_from_oci(&r).expect("maps").is_empty());
}

#[test]
fn update_resources_from_a_whole_linux_resources() {
    let spec: Value =
        serde_json::from_str(include_str!("testdata/cri-container.json")).expect("json");
    let r: LinuxResources =
        serde_json::from_value(spec["linux"]["resources"].clone()).expect("resources");
    let got = resources_from_oci(&r).expect("maps");
    assert_eq!(got.memory_limit_bytes, Some(128 << 20));
    assert_eq!(
        (got.cpu_quota_us, got.cpu_period_us),
        (Some(50_000), Some(100_000))
    );
    assert_eq!(got.cpu_weight, Some(shares_weight(512)));
}

/// `refused!(test_name, field, |v| patch)`: the patched default spec is
/// refused, naming `field`.
macro_rules! refused {
    ($name:ident, $field:expr, $patch:expr) => {
        #[test]
        fn $name() {
            let err = with($patch).expect_err("refused");
            assert_eq!(err.field(), Some($field), "{err}");
            assert!(err.to_string().starts_with($field), "{err}");
        }
    };
}

pub(super) fn put(pointer: &'static str, value: Value) -> impl FnOnce(&mut Value) {
    move |v| set(v, pointer, value)
}

pub(super) fn mount(m: Value) -> impl FnOnce(&mut Value) {
    move |v| set(v, "/mounts/-", m)
}
