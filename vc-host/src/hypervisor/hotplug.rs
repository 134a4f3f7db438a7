//! Block devices hot-plugged into a running q35 VM through QMP.
//!
//! A q35 VM boots with [`HOTPLUG_PORTS`] empty PCIe root ports
//! (`vchp0`, `vchp1`, ...; the root bus itself takes no hotplug). Plugging a
//! disk is `query-pci` (the first port with nothing behind it), `blockdev-add`
//! (a raw node over the image file) and `device_add virtio-blk-pci` on that
//! port, with the disk's id as node name, device id and virtio serial.
//! Unplugging is `device_del`, which only *asks* the guest to release the
//! device: QEMU removes it when the guest agrees and then emits
//! `DEVICE_DELETED`, which this module waits for on the same monitor
//! connection before `blockdev-del` frees the image. microvm has no hotplug.
//!
//! QEMU runs unprivileged and cannot open the image: the host opens it and
//! passes the descriptor with `add-fd` (`SCM_RIGHTS`) on the connection that
//! then adds the node over `/dev/fdset/<id>`. QEMU drops the fd set by itself
//! once the node is deleted and no monitor is connected.

use std::time::Duration;

use futures::StreamExt as _;
use qapi::qmp;
use serde_json::{Map, Value};

use super::confine::open_disk;
use super::qmp::{Qmp, QmpError, Stream};
use super::scm::FdSender;
use super::spec::DiskSpec;

/// How many hotplug ports a q35 VM gets at boot.
pub const HOTPLUG_PORTS: u32 = 4;

/// Id prefix of the hotplug ports (`vchp0`, ...).
pub const HOTPLUG_PORT_PREFIX: &str = "vchp";

/// The `blockdev-add` of `disk`: a raw node over the file QEMU opens as
/// `filename` (the disk's fd set).
pub fn blockdev_add(disk: &DiskSpec, filename: String) -> qmp::blockdev_add {
    let file = qmp::BlockdevOptions::file {
        base: qmp::BlockdevOptionsBase {
            auto_read_only: None,
            cache: None,
            detect_zeroes: None,
            discard: None,
            force_share: None,
            node_name: None,
            read_only: Some(disk.readonly),
        },
        file: qmp::BlockdevOptionsFile {
            aio: None,
            aio_max_batch: None,
            drop_cache: None,
            locking: None,
            pr_manager: None,
            x_check_cache_dropped: None,
            filename,
        },
    };
    qmp::blockdev_add(qmp::BlockdevOptions::raw {
        base: qmp::BlockdevOptionsBase {
            auto_read_only: None,
            cache: None,
            detect_zeroes: None,
            discard: None,
            force_share: None,
            node_name: Some(disk.id.clone()),
            read_only: Some(disk.readonly),
        },
        raw: qmp::BlockdevOptionsRaw {
            base: qmp::BlockdevOptionsGenericFormat {
                file: qmp::BlockdevRef::definition(Box::new(file)),
            },
            offset: None,
            size: None,
        },
    })
}

/// The `device_add` of `disk` on hotplug port `port`.
pub fn device_add(disk: &DiskSpec, port: &str) -> qmp::device_add {
    let mut arguments = Map::new();
    arguments.insert("drive".to_owned(), Value::String(disk.id.clone()));
    arguments.insert("serial".to_owned(), Value::String(disk.id.clone()));
    qmp::device_add {
        bus: Some(port.to_owned()),
        id: Some(disk.id.clone()),
        driver: "virtio-blk-pci".to_owned(),
        arguments,
    }
}

/// The first hotplug port of `pci` (a `query-pci` answer) with no device
/// behind it.
pub fn free_port(pci: &[qmp::PciInfo]) -> Option<String> {
    let mut free: Vec<&str> = pci
        .iter()
        .flat_map(|bus| &bus.devices)
        .filter(|d| d.qdev_id.starts_with(HOTPLUG_PORT_PREFIX))
        .filter(|d| {
            d.pci_bridge
                .as_ref()
                .is_some_and(|b| b.devices.as_ref().is_none_or(Vec::is_empty))
        })
        .map(|d| d.qdev_id.as_str())
        .collect();
    free.sort_unstable();
    free.first().map(|s| (*s).to_owned())
}

pub(super) fn failed(command: &'static str) -> impl FnOnce(qapi::ExecuteError) -> QmpError {
    move |source| QmpError::Command { command, source }
}

fn eof() -> qapi::ExecuteError {
    qapi::ExecuteError::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
}

fn is_device_not_found(e: &qapi::ExecuteError) -> bool {
    matches!(e, qapi::ExecuteError::Qapi(q) if q.class == qapi::ErrorClass::DeviceNotFound)
}

impl Qmp {
    /// Plugs `disk` into the first free hotplug port and returns that port.
    /// On failure nothing of the disk is left in QEMU.
    pub async fn hotplug_disk(
        &self,
        disk: &DiskSpec,
        timeout: Duration,
    ) -> Result<String, QmpError> {
        let image = open_disk(&disk.path, disk.readonly).map_err(|source| QmpError::Image {
            path: disk.path.clone(),
            source,
        })?;
        let call = async {
            let (mut stream, fds, port) = self.open_for_plug().await?;
            fds.attach(vec![image.into()]);
            let set = stream
                .execute(qmp::add_fd {
                    fdset_id: None,
                    opaque: Some(disk.id.clone()),
                })
                .await
                .map_err(failed("add-fd"))?
                .fdset_id;
            let remove_set = qmp::remove_fd {
                fdset_id: set,
                fd: None,
            };
            if let Err(e) = stream
                .execute(blockdev_add(disk, format!("/dev/fdset/{set}")))
                .await
            {
                let _ = stream.execute(remove_set).await;
                return Err(failed("blockdev-add")(e));
            }
            if let Err(e) = stream.execute(device_add(disk, &port)).await {
                let del = qmp::blockdev_del {
                    node_name: disk.id.clone(),
                };
                let _ = stream.execute(del).await;
                let _ = stream.execute(remove_set).await;
                return Err(failed("device_add")(e));
            }
            Ok(port)
        };
        within("device_add", timeout, call).await
    }

    /// Unplugs the disk `id`: `device_del`, then waits for QEMU's
    /// `DEVICE_DELETED` (the guest has released it), then `blockdev-del`. A
    /// device that is not there is not an error.
    pub async fn unplug_disk(&self, id: &str, timeout: Duration) -> Result<(), QmpError> {
        let del = qmp::blockdev_del {
            node_name: id.to_owned(),
        };
        self.unplug_then(id, "blockdev-del", del, timeout).await
    }

    /// Unplugs the device `id`: `device_del`, then waits for QEMU's
    /// `DEVICE_DELETED` (the guest has released it), then runs `backend_del`
    /// (the `blockdev-del` or `netdev_del` of its backend). A device that is
    /// not there is not an error, and then neither is a failed `backend_del`
    /// (a plug that failed half-way may have left the backend or not).
    pub(super) async fn unplug_then<C>(
        &self,
        id: &str,
        backend_del_name: &'static str,
        backend_del: C,
        timeout: Duration,
    ) -> Result<(), QmpError>
    where
        C: qmp::QmpCommand + qapi::Command,
    {
        let call = async {
            let stream = self.open().await?;
            let (service, mut events) = stream.into_parts();
            let mut deleted = false;
            let mut absent = false;
            let del = service.execute(qmp::device_del { id: id.to_owned() });
            tokio::pin!(del);
            let mut answered = false;
            while !(answered && deleted) {
                tokio::select! {
                    r = &mut del, if !answered => {
                        answered = true;
                        match r {
                            Ok(_) => {}
                            Err(e) if is_device_not_found(&e) => {
                                absent = true;
                                deleted = true;
                            }
                            Err(e) => return Err(failed("device_del")(e)),
                        }
                    }
                    ev = events.next() => match ev {
                        Some(Ok(qmp::Event::DEVICE_DELETED { data, .. }))
                            if data.device.as_deref() == Some(id) => deleted = true,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(failed("device_del")(qapi::ExecuteError::Io(e))),
                        None => return Err(failed("device_del")(eof())),
                    }
                }
            }
            let bdel = service.execute(backend_del);
            tokio::pin!(bdel);
            loop {
                tokio::select! {
                    r = &mut bdel => return match r {
                        Ok(_) => Ok(()),
                        Err(_) if absent => Ok(()),
                        Err(e) => Err(failed(backend_del_name)(e)),
                    },
                    ev = events.next() => match ev {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(failed(backend_del_name)(qapi::ExecuteError::Io(e))),
                        None => return Err(failed(backend_del_name)(eof())),
                    }
                }
            }
        };
        within("device_del", timeout, call).await
    }

    /// A negotiated connection that passes descriptors, and the first free
    /// hotplug port of the VM.
    pub(super) async fn open_for_plug(&self) -> Result<(Stream, FdSender, String), QmpError> {
        let (mut stream, fds) = self.open_passing().await?;
        let pci = stream
            .execute(qmp::query_pci {})
            .await
            .map_err(failed("query-pci"))?;
        let port = free_port(&pci).ok_or(QmpError::NoFreePort {
            ports: HOTPLUG_PORTS,
        })?;
        Ok((stream, fds, port))
    }
}

/// Runs `call` under `timeout`, which is reported as `command`'s.
pub(super) async fn within<T>(
    command: &'static str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, QmpError>>,
) -> Result<T, QmpError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| QmpError::Timeout { command, timeout })?
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    fn disk(readonly: bool) -> DiskSpec {
        DiskSpec {
            id: "vc0123456789abcdefr".to_owned(),
            path: "/img/a,b.ext4".into(),
            readonly,
        }
    }

    #[test]
    fn blockdev_add_is_raw_over_file() {
        let cmd = serde_json::to_value(blockdev_add(&disk(true), "/dev/fdset/3".to_owned()))
            .expect("json");
        assert_eq!(
            cmd,
            json!({
                "driver": "raw",
                "node-name": "vc0123456789abcdefr",
                "read-only": true,
                "file": {"driver": "file", "filename": "/dev/fdset/3", "read-only": true}
            })
        );
    }

    #[test]
    fn device_add_names_port_drive_and_serial() {
        let cmd = serde_json::to_value(device_add(&disk(false), "vchp2")).expect("json");
        assert_eq!(
            cmd,
            json!({
                "driver": "virtio-blk-pci",
                "bus": "vchp2",
                "id": "vc0123456789abcdefr",
                "drive": "vc0123456789abcdefr",
                "serial": "vc0123456789abcdefr"
            })
        );
    }

    #[test]
    fn the_first_empty_port_is_chosen() {
        let answer = json!([{
            "bus": 0,
            "devices": [
                port("vchp0", json!([{"bus": 1, "slot": 0, "function": 0, "class_info": {"class": 256},
                    "id": {"device": 4162, "vendor": 6900}, "qdev_id": "vc1", "regions": [], "irq_pin": 1}])),
                port("vchp1", json!([])),
                port("vchp2", Value::Null),
                {"bus": 0, "slot": 1, "function": 0, "class_info": {"class": 768},
                 "id": {"device": 1, "vendor": 2}, "qdev_id": "", "regions": [], "irq_pin": 0}
            ]
        }]);
        let pci: Vec<qmp::PciInfo> = serde_json::from_value(answer).expect("parses");
        assert_eq!(free_port(&pci).as_deref(), Some("vchp1"));
        assert_eq!(free_port(&pci[..0]), None);
    }

    /// A directory holding a listening socket for a fake monitor.
    pub(crate) fn fake_monitor_socket() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        tokio::net::UnixListener,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        (dir, socket, listener)
    }

    /// Accepts a QMP client on a fake monitor and does QEMU's side of the
    /// greeting and capabilities negotiation; returns the client's lines and
    /// the writer for the answers.
    pub(crate) async fn accept_qmp_client(
        listener: &tokio::net::UnixListener,
    ) -> (
        tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (s, _) = listener.accept().await.expect("accept");
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\n")
            .await
            .expect("greet");
        let _caps = lines.next_line().await.expect("caps");
        w.write_all(b"{\"return\": {}}\n").await.expect("caps ok");
        (lines, w)
    }

    /// A fake monitor: answers `device_del` at once, sends `DEVICE_DELETED`
    /// for it `delay` later (an event for another device first), then answers
    /// `blockdev-del`. Returns the command names it received.
    async fn fake_unplug_monitor(
        delay: Duration,
    ) -> (tempfile::TempDir, Qmp, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::AsyncWriteExt;
        let (dir, socket, listener) = fake_monitor_socket();
        let server = tokio::spawn(async move {
            let (mut lines, mut w) = accept_qmp_client(&listener).await;
            let mut seen = Vec::new();
            let del = lines.next_line().await.expect("read").expect("device_del");
            seen.push(del.clone());
            w.write_all(b"{\"return\": {}}\n").await.expect("answer");
            tokio::time::sleep(delay).await;
            let ts = "\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}";
            let other = format!("{{\"event\": \"DEVICE_DELETED\", \"data\": {{\"device\": \"other\", \"path\": \"/x\"}}, {ts}}}\n");
            let ours = format!("{{\"event\": \"DEVICE_DELETED\", \"data\": {{\"device\": \"vcdisk0\", \"path\": \"/machine/peripheral/vcdisk0\"}}, {ts}}}\n");
            w.write_all(other.as_bytes()).await.expect("event");
            w.write_all(ours.as_bytes()).await.expect("event");
            if let Ok(Some(bdel)) = lines.next_line().await {
                seen.push(bdel);
                w.write_all(b"{\"return\": {}}\n").await.expect("answer");
            }
            while let Ok(Some(_)) = lines.next_line().await {}
            seen
        });
        (dir, Qmp::new(socket), server)
    }

    #[tokio::test]
    async fn unplug_waits_for_device_deleted_then_frees_the_node() {
        let delay = Duration::from_millis(300);
        let (_d, qmp, server) = fake_unplug_monitor(delay).await;
        let start = std::time::Instant::now();
        qmp.unplug_disk("vcdisk0", Duration::from_secs(10))
            .await
            .expect("unplugged");
        assert!(start.elapsed() >= delay, "returned before DEVICE_DELETED");
        let seen = server.await.expect("server");
        let names: Vec<Value> = seen
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .collect();
        assert_eq!(names[0]["execute"], "device_del");
        assert_eq!(names[0]["arguments"]["id"], "vcdisk0");
        assert_eq!(names[1]["execute"], "blockdev-del");
        assert_eq!(names[1]["arguments"]["node-name"], "vcdisk0");
    }

    #[tokio::test]
    async fn unplug_without_the_event_times_out() {
        let (_d, qmp, _server) = fake_unplug_monitor(Duration::from_secs(30)).await;
        let err = qmp
            .unplug_disk("vcdisk0", Duration::from_millis(300))
            .await
            .expect_err("no event");
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
    }

    /// A `query-pci` entry of the hotplug port `id` with `devices` behind it.
    pub(in crate::hypervisor) fn port(id: &str, devices: Value) -> Value {
        let range = json!({"base": 0, "limit": 0});
        let mut bridge = json!({"bus": {"number": 1, "secondary": 1, "subordinate": 1,
            "io_range": range, "memory_range": range, "prefetchable_range": range}});
        if !devices.is_null() {
            bridge["devices"] = devices;
        }
        json!({"bus": 0, "slot": 2, "function": 0, "class_info": {"class": 1540},
               "id": {"device": 12, "vendor": 6966}, "qdev_id": id, "regions": [], "irq_pin": 0,
               "pci_bridge": bridge})
    }
}
