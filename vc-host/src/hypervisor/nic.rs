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
}
