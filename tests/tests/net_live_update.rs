//! A running pod's network follows its namespace (`update_pod_network`,
//! `virtc pod network update|list`), on real VMs.
//!
//! - microvm: an address added to the namespace's interface, a route added
//!   and the default route removed, and a permanent neighbour reach the
//!   guest; an address removed goes from the guest; through virtc.
//! - microvm: a new interface in the namespace is refused
//!   (`HotplugUnsupported`) with nothing changed, neither the namespace nor
//!   the record.
//! - q35: a veth added to the namespace is hot-plugged, carries TCP both ways
//!   byte-exact, and is gone from the guest once the veth is deleted and the
//!   network updated again; after stop the namespace is as the test made it.
//! - q35: five veths added at once, one more than the VM's hotplug ports:
//!   the fifth NIC finds no port and the four plugged before it are unplugged
//!   again, their taps removed, the record and the namespace as before the
//!   update; with one veth fewer the same update plugs all four; then the
//!   launch interface deleted is refused (`LaunchInterface`), and stop still
//!   removes every tap and ingress qdisc.
//!
//! Each update's time is printed (`update took N ms`) for docs/networking.md.
//!
//! Addresses: 192.0.2.0/24 and 198.51.100.0/24 only, in namespaces the test made.

mod support;

use std::net::IpAddr;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use support::leaks::{assert_no_leak, on_disk, OnDisk};
use support::net::{mac, tcp_both_ways, veth, End, Pair, POD_MAC, POD_MAC2};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use vc_host::hypervisor::{HypervisorError, Machine, QmpError};
use vc_host::id::PodId;
use vc_host::runtime::{HotplugRefusal, RuntimeError};
use vc_proto::{GuestInterface, Route};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

async fn guest_view(t: &TestRuntime, pod: &PodId) -> Result<(Vec<GuestInterface>, Vec<Route>)> {
    let agent = t.rt.pod_agent(pod).await?;
    Ok((agent.list_interfaces().await?, agent.list_routes().await?))
}

/// `ip neigh show` in a container (containers share the VM's network).
async fn neighbours(t: &TestRuntime, pod: &PodId, container: &str) -> Result<String> {
    let out = t
        .run_container(pod, t.container(container, &["ip", "neigh", "show"]))
        .await?;
    ensure!(
        out.exit_code == 0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has_address(interfaces: &[GuestInterface], mac_: [u8; 6], addr: &str) -> bool {
    interfaces
        .iter()
        .any(|i| i.mac == mac_ && i.addresses.iter().any(|a| a.addr == ip(addr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_pod_follows_addresses_routes_and_neighbours() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = Virtc::new(t.root(), &t.image.dir)?;
    let net = Pair::new()?;
    let before = net.pod.snapshot()?;
    let mut config = t.pod("live1");
    config.netns = Some(net.pod.path());
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;
    let left = on_disk(&t, pod.as_str());

    // Nothing changed: nothing to do.
    let report = t.rt.update_pod_network(&pod).await?;
    ensure!(!report.changed, "{report:?}");

    // The namespace changes: a second address, a route instead of the
    // default route, a permanent neighbour.
    net.pod
        .ip(&["addr", "add", "192.0.2.3/24", "dev", "eth0"])?;
    net.pod.ip(&["route", "del", "default"])?;
    net.pod.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.1",
        "dev",
        "eth0",
    ])?;
    net.pod.ip(&[
        "neigh",
        "add",
        "192.0.2.9",
        "lladdr",
        "02:00:c0:00:02:09",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    let ran = v.ok(["--json", "pod", "network", "update", pod.as_str()])?;
    let report = ran.json()?;
    ensure!(report["changed"] == true, "{ran}");
    ensure!(
        report["added"].as_array().is_some_and(Vec::is_empty),
        "{ran}"
    );
    println!(
        "update took {} ms (microvm, addresses and routes)",
        report["elapsed_ms"]
    );

    let (interfaces, routes) = guest_view(&t, &pod).await?;
    ensure!(
        has_address(&interfaces, mac(POD_MAC), "192.0.2.3")
            && has_address(&interfaces, mac(POD_MAC), "192.0.2.2"),
        "{interfaces:?}"
    );
    ensure!(
        routes.iter().any(|r| r
            .destination
            .as_ref()
            .is_some_and(|d| d.addr == ip("198.51.100.0") && d.prefix_len == 24)
            && r.gateway == Some(ip("192.0.2.1"))),
        "no route to 198.51.100.0/24: {routes:?}"
    );
    ensure!(
        !routes.iter().any(|r| r.destination.is_none()),
        "the default route is still there: {routes:?}"
    );
    // The new address answers the peer from the guest (the namespace's own
    // stack never sees the mirrored interface's traffic).
    net.peer
        .exec("busybox", &["ping", "-c", "2", "-W", "10", "192.0.2.3"])
        .context("peer pings the new address")?;
    let neigh = neighbours(&t, &pod, "neigh1").await?;
    ensure!(
        neigh.contains("192.0.2.9") && neigh.contains("02:00:c0:00:02:09"),
        "{neigh}"
    );

    // The address goes away again, and the neighbour.
    net.pod
        .ip(&["addr", "del", "192.0.2.3/24", "dev", "eth0"])?;
    net.pod.ip(&["neigh", "del", "192.0.2.9", "dev", "eth0"])?;
    let report = t.rt.update_pod_network(&pod).await?;
    ensure!(report.changed, "{report:?}");
    let (interfaces, _) = guest_view(&t, &pod).await?;
    ensure!(
        !has_address(&interfaces, mac(POD_MAC), "192.0.2.3")
            && has_address(&interfaces, mac(POD_MAC), "192.0.2.2"),
        "{interfaces:?}"
    );
    let neigh = neighbours(&t, &pod, "neigh2").await?;
    ensure!(!neigh.contains("192.0.2.9"), "{neigh}");

    let listed = v.ok(["pod", "network", "list", pod.as_str()])?;
    ensure!(
        listed.stdout.contains("eth0") && listed.stdout.contains("vctap0"),
        "{listed}"
    );

    // Put the namespace back as the test made it: stop leaves it so.
    net.pod.ip(&["route", "del", "198.51.100.0/24"])?;
    net.pod
        .ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "eth0"])?;
    stop_and_delete(&t, &net, &pod, &before, &left).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_pod_refuses_a_new_interface_and_changes_nothing() -> Result<()> {
    let t = TestRuntime::new()?;
    let net = Pair::new()?;
    let mut config = t.pod("live2");
    config.netns = Some(net.pod.path());
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;

    net.second_link()?;
    let record = t.rt.pod_network(&pod).await?;
    let namespace = net.pod.snapshot()?;
    match t.rt.update_pod_network(&pod).await {
        Err(RuntimeError::HotplugUnsupported {
            refused: HotplugRefusal::Interfaces { added, removed },
            ..
        }) => ensure!(
            added == ["eth1"] && removed.is_empty(),
            "added {added:?}, removed {removed:?}"
        ),
        other => bail!("expected HotplugUnsupported, got {other:?}"),
    }
    ensure!(
        t.rt.pod_network(&pod).await? == record,
        "the record changed"
    );
    ensure!(net.pod.snapshot()? == namespace, "the namespace changed");
    let (interfaces, _) = guest_view(&t, &pod).await?;
    ensure!(
        !interfaces.iter().any(|i| i.mac == mac(POD_MAC2)),
        "{interfaces:?}"
    );

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_pod_gets_a_new_interface_that_carries_tcp_and_loses_it_again() -> Result<()> {
    let t = TestRuntime::new()?;
    let net = Pair::new()?;
    let before = net.pod.snapshot()?;
    let mut config = t.pod("live3");
    config.netns = Some(net.pod.path());
    config.vm.machine = Machine::Q35;
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;
    let left = on_disk(&t, pod.as_str());

    // A veth appears in the namespace: hot-plugged.
    net.second_link()?;
    let report = t.rt.update_pod_network(&pod).await?;
    ensure!(
        report.added == ["eth1"] && report.removed.is_empty(),
        "{report:?}"
    );
    println!(
        "update took {} ms (q35, one NIC hot-plugged)",
        report.elapsed_ms
    );
    let network = t.rt.pod_network(&pod).await?.context("no network")?;
    let plugged = network
        .links
        .iter()
        .find(|l| l.interface == "eth1")
        .with_context(|| format!("eth1 not recorded: {network:?}"))?;
    ensure!(plugged.device.is_some(), "{plugged:?}");
    let tap = plugged.tap.clone();
    ensure!(
        net.pod.snapshot()?.contains(&tap),
        "no {tap} in the namespace"
    );
    let (interfaces, _) = guest_view(&t, &pod).await?;
    ensure!(
        has_address(&interfaces, mac(POD_MAC2), "198.51.100.2"),
        "{interfaces:?}"
    );
    tcp_both_ways(&t, &pod, &net.peer, "198.51.100.2", "198.51.100.1").await?;
    // The interface the pod started with still works.
    tcp_both_ways(&t, &pod, &net.peer, "192.0.2.2", "192.0.2.1").await?;

    // The veth goes away: unplugged, its tap removed.
    net.pod.ip(&["link", "del", "eth1"])?;
    let started = Instant::now();
    let report = t.rt.update_pod_network(&pod).await?;
    ensure!(
        report.removed == ["eth1"] && report.added.is_empty(),
        "{report:?}"
    );
    println!(
        "update took {} ms (q35, one NIC unplugged; {} ms seen by the caller)",
        report.elapsed_ms,
        started.elapsed().as_millis()
    );
    let (interfaces, _) = guest_view(&t, &pod).await?;
    ensure!(
        !interfaces.iter().any(|i| i.mac == mac(POD_MAC2)),
        "the unplugged NIC is still in the guest: {interfaces:?}"
    );
    ensure!(
        !net.pod.snapshot()?.contains(&tap),
        "{tap} is still in the namespace"
    );
    let network = t.rt.pod_network(&pod).await?.context("no network")?;
    ensure!(network.links.len() == 1, "{network:?}");

    stop_and_delete(&t, &net, &pod, &before, &left).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_update_that_cannot_plug_every_interface_is_undone() -> Result<()> {
    let t = TestRuntime::new()?;
    let net = Pair::new()?;
    let mut config = t.pod("live4");
    config.netns = Some(net.pod.path());
    config.vm.machine = Machine::Q35;
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;

    // Five new interfaces; the VM has four hotplug ports.
    let macs: Vec<(String, String)> = (1..=5)
        .map(|i| {
            (
                format!("02:00:c6:33:64:1{i}"),
                format!("02:00:c6:33:64:2{i}"),
            )
        })
        .collect();
    for (i, (pod_mac, peer_mac)) in (1..).zip(&macs) {
        veth(
            &End {
                ns: &net.pod,
                name: &format!("eth{i}"),
                mac: pod_mac,
                addr: &format!("198.51.100.{}/24", 10 + i),
            },
            &End {
                ns: &net.peer,
                name: &format!("p{i}"),
                mac: peer_mac,
                addr: &format!("198.51.100.{}/24", 20 + i),
            },
        )?;
    }
    let namespace = net.pod.snapshot()?;
    let record = t.rt.pod_network(&pod).await?;
    match t.rt.update_pod_network(&pod).await {
        Err(RuntimeError::Hypervisor(HypervisorError::Qmp(QmpError::NoFreePort { ports: 4 }))) => {}
        other => bail!("expected no free hotplug port, got {other:?}"),
    }
    ensure!(
        t.rt.pod_network(&pod).await? == record,
        "the record changed"
    );
    let now = net.pod.snapshot()?;
    ensure!(
        now == namespace,
        "after the undone update:\n{now}\nbefore:\n{namespace}"
    );
    let (interfaces, _) = guest_view(&t, &pod).await?;
    for (m, _) in &macs {
        ensure!(
            !interfaces.iter().any(|i| i.mac == mac(m)),
            "{m} stayed in the guest: {interfaces:?}"
        );
    }

    // The ports were given back: four new interfaces fit.
    net.pod.ip(&["link", "del", "eth5"])?;
    let report = t.rt.update_pod_network(&pod).await?;
    ensure!(
        report.added == ["eth1", "eth2", "eth3", "eth4"],
        "{report:?}"
    );
    println!(
        "update took {} ms (q35, four NICs hot-plugged)",
        report.elapsed_ms
    );
    let (interfaces, _) = guest_view(&t, &pod).await?;
    for (i, (m, _)) in (1..=4).zip(&macs) {
        ensure!(
            has_address(&interfaces, mac(m), &format!("198.51.100.{}", 10 + i)),
            "{m}: {interfaces:?}"
        );
    }

    // The interface the VM was launched with cannot go: its NIC sits on the
    // root bus. Refused, the record unchanged; stop still cleans up after it.
    let record = t.rt.pod_network(&pod).await?;
    net.pod.ip(&["link", "del", "eth0"])?;
    match t.rt.update_pod_network(&pod).await {
        Err(RuntimeError::HotplugUnsupported {
            refused: HotplugRefusal::LaunchInterface(name),
            ..
        }) => ensure!(name == "eth0", "{name}"),
        other => bail!("expected the launch interface refused, got {other:?}"),
    }
    ensure!(
        t.rt.pod_network(&pod).await? == record,
        "the record changed"
    );

    t.rt.stop_pod(&pod).await?;
    let after = net.pod.snapshot()?;
    ensure!(
        !after.contains("vctap") && !after.contains("ingress"),
        "taps or ingress qdiscs left after stop:\n{after}"
    );
    t.rt.delete_pod(&pod).await?;
    Ok(())
}

/// Stops the pod, checks that its namespace is as `before`, deletes it and
/// checks that nothing of it is left.
async fn stop_and_delete(
    t: &TestRuntime,
    net: &Pair,
    pod: &PodId,
    before: &str,
    left: &OnDisk,
) -> Result<()> {
    t.rt.stop_pod(pod).await?;
    let after = net.pod.snapshot()?;
    ensure!(after == before, "after stop:\n{after}\nbefore:\n{before}");
    t.rt.delete_pod(pod).await?;
    assert_no_leak(t, left, "after delete")
}
