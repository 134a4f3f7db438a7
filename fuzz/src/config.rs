//! `config`: the configuration a user hands the runtime, from TOML and JSON.
//!
//! The bytes are read as each of [`RuntimeConfig`], [`PodConfig`],
//! [`ContainerConfig`] and [`VmConfig`], in both formats. Whatever parses must
//! come back unchanged through serialize and parse (JSON always; TOML when
//! the value came from TOML, or when TOML can hold it), validate without
//! panicking, and give the agent what the host meant: the kernel command line
//! built from a valid [`VmConfig`] is read back by the agent's own parser
//! with the same port and log level.

use std::fmt::Debug;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use serde::{de::DeserializeOwned, Serialize};
use vc_host::config::{ContainerConfig, PodConfig, RuntimeConfig};
use vc_host::hypervisor::argv::kernel_cmdline;
use vc_host::hypervisor::tools::{ToolSearch, QEMU, VHOST_DEVICE_VSOCK, VIRTIOFSD};
use vc_host::hypervisor::{HostFacts, VmConfig};

/// Which format a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

/// Parses `text` as `T` in `format`, checks the round trips, and returns it.
fn parse<T>(text: &str, format: Format) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value: T = match format {
        Format::Toml => toml::from_str(text).ok()?,
        Format::Json => serde_json::from_str(text).ok()?,
    };
    let json = serde_json::to_string(&value).expect("a parsed config serializes to JSON");
    let back: T = serde_json::from_str(&json).expect("a config's JSON parses");
    assert_eq!(back, value, "the JSON round trip changed the config");
    match toml::to_string(&value) {
        Ok(toml_text) => {
            let back: T = toml::from_str(&toml_text).expect("a config's TOML parses");
            assert_eq!(back, value, "the TOML round trip changed the config");
        }
        // JSON holds integers above i64::MAX, which TOML does not.
        Err(e) => assert_eq!(
            format,
            Format::Json,
            "a config read from TOML does not serialize to TOML: {e}"
        ),
    }
    Some(value)
}

/// A directory holding an executable file for each program a VM needs.
fn fake_tools() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for name in [QEMU, VHOST_DEVICE_VSOCK, VIRTIOFSD] {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("a fake program");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        dir
    })
    .path()
}

/// A host where every program is found in one fake directory and the
/// accelerator is TCG: validation then depends on the config alone (and on
/// which of its paths exist).
fn host() -> (HostFacts, ToolSearch) {
    let facts = HostFacts {
        kvm_read_write: false,
        cpu_virt_flags: false,
        vhost_vsock: false,
        tsc_khz: Some(2_000_000),
    };
    (
        facts,
        ToolSearch::new(vec![fake_tools().to_path_buf()], None),
    )
}

fn check_vm(vm: &VmConfig) {
    let (facts, tools) = host();
    let Ok(settings) = vm.validate_with(&facts, &tools) else {
        return;
    };
    let cmdline = kernel_cmdline(&settings);
    let (agent, _warnings) = vc_agent::config::Config::from_cmdline(&cmdline);
    assert_eq!(
        agent.port, settings.agent_port,
        "the agent reads another port than the host connects to from {cmdline:?}"
    );
    if let Some(level) = vc_agent::config::parse_level(&settings.agent_log) {
        assert_eq!(
            agent.log_level, level,
            "the agent reads another log level from {cmdline:?}"
        );
    }
}

fn check_container(c: &ContainerConfig) {
    let valid = c.validate().is_ok();
    let spec = c.process_spec();
    assert!(
        spec.env.iter().any(|e| e.starts_with("PATH=")),
        "the main process gets a PATH"
    );
    let mounts = vc_host::storage::container_mounts(&c.storage(), |i| {
        vc_host::runtime::share::guest_volume_path(&c.id, i)
    });
    let disks = vc_host::storage::container_disks(&c.storage());
    if valid {
        for m in &mounts {
            assert_eq!(
                vc_host::storage::check_container_path(&m.destination),
                Ok(()),
                "a valid config mounts on {:?}",
                m.destination
            );
        }
        for d in &disks {
            assert!(
                d.id.len() <= 20,
                "disk id {:?} exceeds a virtio serial",
                d.id
            );
        }
    }
}

pub(crate) fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Toml, Format::Json] {
        let _ = parse::<RuntimeConfig>(text, format);
        if let Some(vm) = parse::<VmConfig>(text, format) {
            check_vm(&vm);
        }
        if let Some(c) = parse::<ContainerConfig>(text, format) {
            check_container(&c);
        }
        if let Some(pod) = parse::<PodConfig>(text, format) {
            let _ = pod.validate();
            let _ = pod.hostname();
            check_vm(&pod.vm);
            for c in &pod.containers {
                check_container(c);
            }
        }
    }
}
