//! `SetupPod`, `UpdateNetwork`, `ListInterfaces`, `ListRoutes`: the pod-wide
//! state of the guest.
//!
//! Setup runs in order: hostname, shared mounts (created targets, in the given
//! order), the files containers get (`resolv.conf`, `hosts`, `hostname` under the
//! run directory), then the network. A pod is set up once; a setup that failed
//! may be retried. `UpdateNetwork` (only once set up, serialized with setup)
//! replaces the network part of the setup. As a normal process ([`AgentOptions::guest`] false) only
//! the files are written: the hostname, mounts and network of the machine the
//! tests run on are left alone.
//!
//! [`AgentOptions::guest`]: super::AgentOptions::guest

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use nix::mount::MsFlags;
use tracing::Instrument;
use vc_proto::{AgentError, ErrorCode, NetworkUpdate, PodSetup, Response, SharedMount};

use super::errors::{fail, wire};
use super::Agent;
use crate::network::Netlink;

/// How long `UpdateNetwork` waits for a listed interface to appear: a NIC
/// hot-plugged just before is probed by the guest's PCIe hotplug driver
/// (seconds under TCG). Below the host's 30 s call timeout.
const INTERFACE_APPEAR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Whether the pod was set up (and with what).
#[derive(Debug, Default)]
pub(super) struct PodState {
    setup: tokio::sync::Mutex<Option<PodSetup>>,
}

/// Splits `mount -o` options into flags and the filesystem's data string.
fn mount_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options.iter().flat_map(|o| o.split(',')) {
        match option {
            "" | "rw" | "defaults" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

fn mount_shared(mount: &SharedMount) -> Result<(), AgentError> {
    if !mount.target.starts_with('/') {
        return Err(fail(
            ErrorCode::InvalidArgument,
            format!(
                "the mount target {:?} is not an absolute path",
                mount.target
            ),
        ));
    }
    std::fs::create_dir_all(&mount.target).map_err(|e| {
        fail(
            ErrorCode::System,
            format!("cannot create the mount point {}: {e}", mount.target),
        )
    })?;
    let (flags, data) = mount_options(&mount.options);
    nix::mount::mount(
        Some(mount.source.as_str()),
        mount.target.as_str(),
        Some(mount.fstype.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|errno| {
        fail(
            ErrorCode::System,
            format!(
                "cannot mount {} {} on {}: {errno}",
                mount.fstype, mount.source, mount.target
            ),
        )
    })?;
    tracing::info!(fstype = %mount.fstype, source = %mount.source, target = %mount.target, "shared filesystem mounted");
    Ok(())
}

fn resolv_conf(setup: &PodSetup) -> String {
    let mut text = String::new();
    for server in &setup.dns.servers {
        let _ = writeln!(text, "nameserver {server}");
    }
    if !setup.dns.search.is_empty() {
        let _ = writeln!(text, "search {}", setup.dns.search.join(" "));
    }
    if !setup.dns.options.is_empty() {
        let _ = writeln!(text, "options {}", setup.dns.options.join(" "));
    }
    text
}

fn hosts(setup: &PodSetup) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !setup.hostname.is_empty() {
        let _ = writeln!(text, "127.0.1.1\t{}", setup.hostname);
    }
    for entry in &setup.hosts {
        let _ = writeln!(text, "{}\t{}", entry.ip, entry.names.join(" "));
    }
    text
}

/// Writes the files containers bind-mount into their `/etc`.
pub(crate) fn write_pod_files(dir: &Path, setup: &PodSetup) -> Result<(), AgentError> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| {
            fail(
                ErrorCode::System,
                format!("cannot write {}: {e}", path.display()),
            )
        })
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        fail(
            ErrorCode::System,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    write("resolv.conf", resolv_conf(setup))?;
    write("hosts", hosts(setup))?;
    write("hostname", format!("{}\n", setup.hostname))?;
    Ok(())
}

impl Agent {
    pub(super) async fn setup_pod(
        self: &Arc<Self>,
        setup: PodSetup,
    ) -> Result<Response, AgentError> {
        let mut done = self.pod.setup.lock().await;
        if let Some(previous) = &*done {
            return Err(fail(
                ErrorCode::AlreadyExists,
                format!("the pod is set up already (as `{}`)", previous.pod_id),
            ));
        }
        let span = tracing::info_span!("setup-pod", pod_id = %setup.pod_id);
        self.apply_pod_setup(&setup).instrument(span).await?;
        *done = Some(setup);
        Ok(Response::Ok)
    }

    async fn apply_pod_setup(&self, setup: &PodSetup) -> Result<(), AgentError> {
        if self.options.guest {
            if !setup.hostname.is_empty() {
                nix::unistd::sethostname(&setup.hostname).map_err(|errno| {
                    fail(
                        ErrorCode::InvalidArgument,
                        format!("cannot set the hostname to {:?}: {errno}", setup.hostname),
                    )
                })?;
            }
            for mount in &setup.shared_mounts {
                mount_shared(mount)?;
            }
        } else if !setup.shared_mounts.is_empty() || !setup.interfaces.is_empty() {
            tracing::warn!("not a guest: hostname, mounts and network left alone");
        }
        write_pod_files(&self.options.run_dir, setup)?;
        if self.options.guest {
            let netlink = Netlink::connect().map_err(wire)?;
            netlink
                .setup(&setup.interfaces, &setup.routes, &setup.neighbours)
                .await
                .map_err(wire)?;
        }
        tracing::info!(
            interfaces = setup.interfaces.len(),
            routes = setup.routes.len(),
            mounts = setup.shared_mounts.len(),
            "pod set up"
        );
        Ok(())
    }

    /// Converges the set-up pod's network to `update`.
    pub(super) async fn update_network(
        self: &Arc<Self>,
        update: NetworkUpdate,
    ) -> Result<Response, AgentError> {
        let mut done = self.pod.setup.lock().await;
        let Some(setup) = done.as_mut() else {
            return Err(fail(
                ErrorCode::WrongState,
                "the pod is not set up: its network cannot be updated",
            ));
        };
        let span = tracing::info_span!("update-network", pod_id = %setup.pod_id);
        if self.options.guest {
            let netlink = Netlink::connect().map_err(wire)?;
            let summary = netlink
                .update(&update, INTERFACE_APPEAR_TIMEOUT)
                .instrument(span.clone())
                .await
                .map_err(wire)?;
            let _entered = span.enter();
            tracing::info!(
                interfaces = update.interfaces.len(),
                routes = update.routes.len(),
                neighbours = update.neighbours.len(),
                addresses_removed = summary.addresses_removed,
                routes_removed = summary.routes_removed,
                neighbours_removed = summary.neighbours_removed,
                "pod network updated"
            );
        } else {
            tracing::warn!("not a guest: the network update is recorded, not applied");
        }
        setup.interfaces = update.interfaces;
        setup.routes = update.routes;
        setup.neighbours = update.neighbours;
        Ok(Response::Ok)
    }

    pub(super) async fn list_interfaces(self: &Arc<Self>) -> Result<Response, AgentError> {
        let netlink = Netlink::connect().map_err(wire)?;
        Ok(Response::Interfaces(
            netlink.interfaces().await.map_err(wire)?,
        ))
    }

    pub(super) async fn list_routes(self: &Arc<Self>) -> Result<Response, AgentError> {
        let netlink = Netlink::connect().map_err(wire)?;
        Ok(Response::Routes(netlink.routes().await.map_err(wire)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vc_proto::{Dns, HostEntry};

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = mount_options(&["ro,nosuid".into(), "cache=auto".into(), "rw".into()]);
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "cache=auto");
    }

    #[test]
    fn files() {
        let setup = PodSetup {
            pod_id: "p".into(),
            hostname: "box".into(),
            dns: Dns {
                servers: vec!["192.0.2.53".parse().expect("ip")],
                search: vec!["example.test".into()],
                options: vec!["ndots:2".into()],
            },
            hosts: vec![HostEntry {
                ip: "198.51.100.7".parse().expect("ip"),
                names: vec!["db".into(), "db.local".into()],
            }],
            ..PodSetup::default()
        };
        assert_eq!(
            resolv_conf(&setup),
            "nameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n"
        );
        let hosts = hosts(&setup);
        assert!(hosts.contains("127.0.1.1\tbox\n"), "{hosts}");
        assert!(hosts.ends_with("198.51.100.7\tdb db.local\n"), "{hosts}");
        let dir = tempfile::tempdir().expect("tempdir");
        write_pod_files(dir.path(), &setup).expect("written");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hostname")).expect("read"),
            "box\n"
        );
    }
}
