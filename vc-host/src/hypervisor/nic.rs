//! Network interfaces hot-plugged into a running q35 VM through QMP.
//!
//! QEMU runs unprivileged and outside any right to open `/dev/net/tun`: the
//! host opens a queue of the tap (in the pod's network namespace) and passes
//! the descriptor with `getfd` (`SCM_RIGHTS`) on the monitor connection that
//! then runs `netdev_add tap,fd=<name>` (QEMU takes the named descriptor) and
//! `device_add virtio-net-pci` on the first free hotplug port (see
//! [`super::hotplug`]), with the NIC's id as device id. A failed step undoes
//! the ones before it (`netdev_del`, `closefd`) before returning.
//!
//! Unplugging is `device_del`, which waits for `DEVICE_DELETED` (the guest
//! released the device), then `netdev_del`, which closes QEMU's descriptor of
//! the tap.

use std::os::fd::OwnedFd;
use std::time::Duration;

use qapi::qmp;
use serde_json::{json, Map, Value};

use super::hotplug::{failed, within};
use super::qmp::{Qmp, QmpError};
use super::spec::MacAddr;

/// A NIC to hot-plug: its device id (also the base of its netdev and fd
/// names; at most 24 bytes, letters, digits, `-`, `.` and `_`) and the
/// guest's MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// Device id.
    pub id: String,
    /// Guest MAC address.
    pub mac: MacAddr,
}

impl NicSpec {
    /// The id of its netdev.
    pub fn netdev(&self) -> String {
        netdev_id(&self.id)
    }

    /// The name its tap's descriptor gets in the monitor.
    fn fdname(&self) -> String {
        format!("fd-{}", self.id)
    }
}

fn netdev_id(id: &str) -> String {
    format!("nd-{id}")
}

/// The `netdev_add` of `nic`: a tap backend over the monitor's descriptor
/// named `fdname`, with virtio-net headers (as the boot NICs have).
pub fn netdev_add(nic: &NicSpec) -> Result<qmp::netdev_add, serde_json::Error> {
    let netdev: qmp::Netdev = serde_json::from_value(json!({
        "type": "tap",
        "id": nic.netdev(),
        "fd": nic.fdname(),
    }))?;
    Ok(qmp::netdev_add(netdev))
}

/// The `device_add` of `nic` on hotplug port `port`.
pub fn device_add(nic: &NicSpec, port: &str) -> qmp::device_add {
    let mut arguments = Map::new();
    arguments.insert("netdev".to_owned(), Value::String(nic.netdev()));
    arguments.insert("mac".to_owned(), Value::String(nic.mac.to_string()));
    qmp::device_add {
        bus: Some(port.to_owned()),
        id: Some(nic.id.clone()),
        driver: "virtio-net-pci".to_owned(),
        arguments,
    }
}

impl Qmp {
    /// Plugs `nic`, backed by the tap queue `tap`, into the first free
    /// hotplug port and returns that port. On failure nothing of the NIC is
    /// left in QEMU, and `tap` is closed.
    pub async fn hotplug_nic(
        &self,
        nic: &NicSpec,
        tap: OwnedFd,
        timeout: Duration,
    ) -> Result<String, QmpError> {
        let call = async {
            let (mut stream, fds, port) = self.open_for_plug().await?;
            let netdev = netdev_add(nic).map_err(|e| QmpError::Command {
                command: "netdev_add",
                source: qapi::ExecuteError::Io(std::io::Error::other(e)),
            })?;
            fds.attach(vec![tap]);
            stream
                .execute(qmp::getfd {
                    fdname: nic.fdname(),
                })
                .await
                .map_err(failed("getfd"))?;
            let closefd = qmp::closefd {
                fdname: nic.fdname(),
            };
            if let Err(e) = stream.execute(netdev).await {
                // QEMU may have taken the descriptor before failing; then
                // there is nothing left to close.
                let _ = stream.execute(closefd).await;
                return Err(failed("netdev_add")(e));
            }
            if let Err(e) = stream.execute(device_add(nic, &port)).await {
                let _ = stream.execute(qmp::netdev_del { id: nic.netdev() }).await;
                return Err(failed("device_add")(e));
            }
            Ok(port)
        };
        within("device_add", timeout, call).await
    }

    /// Unplugs the NIC `id`: `device_del`, waits for `DEVICE_DELETED`, then
    /// `netdev_del`. A NIC that is not there is not an error.
    pub async fn unplug_nic(&self, id: &str, timeout: Duration) -> Result<(), QmpError> {
        let del = qmp::netdev_del { id: netdev_id(id) };
        self.unplug_then(id, "netdev_del", del, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic() -> NicSpec {
        NicSpec {
            id: "vctap3".to_owned(),
            mac: MacAddr([0x02, 0, 0xc6, 0x33, 0x64, 0x02]),
        }
    }

    #[test]
    fn netdev_add_is_a_tap_over_the_named_fd() {
        let cmd = serde_json::to_value(netdev_add(&nic()).expect("netdev")).expect("json");
        assert_eq!(
            cmd,
            json!({"type": "tap", "id": "nd-vctap3", "fd": "fd-vctap3"})
        );
    }

    #[test]
    fn device_add_names_port_netdev_and_mac() {
        let cmd = serde_json::to_value(device_add(&nic(), "vchp1")).expect("json");
        assert_eq!(
            cmd,
            json!({
                "driver": "virtio-net-pci",
                "bus": "vchp1",
                "id": "vctap3",
                "netdev": "nd-vctap3",
                "mac": "02:00:c6:33:64:02"
            })
        );
    }

    /// A fake monitor with one empty hotplug port that answers `fail` with
    /// an error and everything else with success. Returns the command names
    /// it received, once the client has gone.
    async fn fake_monitor(
        fail: &'static str,
    ) -> (tempfile::TempDir, Qmp, tokio::task::JoinHandle<Vec<String>>) {
        use crate::hypervisor::hotplug::tests::{accept_qmp_client, fake_monitor_socket};
        use tokio::io::AsyncWriteExt;
        let (dir, socket, listener) = fake_monitor_socket();
        let pci = json!({"return": [{"bus": 0, "devices": [
            crate::hypervisor::hotplug::tests::port("vchp0", json!([]))
        ]}]});
        let server = tokio::spawn(async move {
            let (mut lines, mut w) = accept_qmp_client(&listener).await;
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let cmd: Value = serde_json::from_str(&line).expect("json");
                let name = cmd["execute"].as_str().expect("execute").to_owned();
                let reply = if name == "query-pci" {
                    pci.to_string()
                } else if name == fail {
                    r#"{"error": {"class": "GenericError", "desc": "refused"}}"#.to_owned()
                } else {
                    r#"{"return": {}}"#.to_owned()
                };
                seen.push(name);
                w.write_all(format!("{reply}\n").as_bytes())
                    .await
                    .expect("reply");
            }
            seen
        });
        (dir, Qmp::new(socket), server)
    }

    async fn plug_against(fail: &'static str) -> (Result<String, QmpError>, Vec<String>) {
        let (_dir, qmp, server) = fake_monitor(fail).await;
        let tap = std::fs::File::open("/dev/null").expect("a descriptor");
        let result = qmp
            .hotplug_nic(&nic(), tap.into(), Duration::from_secs(10))
            .await;
        drop(qmp);
        (result, server.await.expect("server"))
    }

    #[tokio::test]
    async fn a_plug_runs_getfd_netdev_add_and_device_add_on_a_free_port() {
        let (result, seen) = plug_against("none").await;
        assert_eq!(result.expect("plugged"), "vchp0");
        assert_eq!(seen, ["query-pci", "getfd", "netdev_add", "device_add"]);
    }

    #[tokio::test]
    async fn a_refused_device_add_deletes_the_netdev() {
        let (result, seen) = plug_against("device_add").await;
        assert!(
            matches!(
                result,
                Err(QmpError::Command {
                    command: "device_add",
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(
            seen,
            [
                "query-pci",
                "getfd",
                "netdev_add",
                "device_add",
                "netdev_del"
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_netdev_add_closes_the_passed_descriptor() {
        let (result, seen) = plug_against("netdev_add").await;
        assert!(
            matches!(
                result,
                Err(QmpError::Command {
                    command: "netdev_add",
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(seen, ["query-pci", "getfd", "netdev_add", "closefd"]);
    }
}
