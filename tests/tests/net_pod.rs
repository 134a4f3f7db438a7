//! Pod networking on real VMs: a pod's network namespace mirrored into the
//! guest. A peer namespace joined to the pod's by a veth talks TCP both ways
//! with a container (byte-exact), pings it and is pinged; the guest interface
//! has the veth's MAC, addresses and the namespace's default route; two
//! interfaces are each reachable on their own subnet; after stop, delete, a
//! refused start and a failed launch the namespace is exactly as the test
//! made it; `virtc run --netns` does the same from the command line.
//!
//! Addresses: 192.0.2.0/24 and 198.51.100.0/24 only, in namespaces the test made.

mod support;

use std::net::IpAddr;

use anyhow::{bail, ensure, Context as _, Result};
use support::net::{mac, tcp_both_ways, Pair, POD_MAC, POD_MAC2};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use vc_host::hypervisor::HypervisorError;
use vc_host::runtime::RuntimeError;
use vc_proto::IpNet;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_talks_tcp_and_ping_with_a_peer_namespace() -> Result<()> {
    let t = TestRuntime::new()?;
    let net = Pair::new()?;
    let mut config = t.pod("net1");
    config.netns = Some(net.pod.path());
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;

    // The guest sees the veth's MAC, MTU, address and the default route.
    let agent = t.rt.pod_agent(&pod).await?;
    let interfaces = agent.list_interfaces().await?;
    let eth = interfaces
        .iter()
        .find(|i| i.mac == mac(POD_MAC))
        .with_context(|| format!("no guest interface with the veth's MAC: {interfaces:?}"))?;
    ensure!(eth.up && eth.mtu == 1500, "{eth:?}");
    ensure!(
        eth.addresses.contains(&IpNet {
            addr: "192.0.2.2".parse()?,
            prefix_len: 24
        }),
        "{eth:?}"
    );
    let routes = agent.list_routes().await?;
    let gateway: IpAddr = "192.0.2.1".parse()?;
    ensure!(
        routes.iter().any(|r| r.destination.is_none()
            && r.gateway == Some(gateway)
            && r.device_mac == Some(mac(POD_MAC))),
        "no default route via 192.0.2.1 on the guest interface: {routes:?}"
    );

    // TCP both ways, byte-exact.
    tcp_both_ways(&t, &pod, &net.peer, "192.0.2.2", "192.0.2.1").await?;

    // Ping both ways.
    net.peer
        .exec("busybox", &["ping", "-c", "3", "-W", "10", "192.0.2.2"])
        .context("peer pings the container")?;
    let out = t
        .run_container(
            &pod,
            t.container("ping", &["ping", "-c", "3", "-W", "10", "192.0.2.1"]),
        )
        .await?;
    ensure!(
        out.exit_code == 0,
        "container pings the peer: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_interfaces_each_reachable_and_the_namespace_restored() -> Result<()> {
    let t = TestRuntime::new()?;
    let net = Pair::new()?;
    net.second_link()?;
    let before = net.pod.snapshot()?;
    let mut config = t.pod("net2");
    config.netns = Some(net.pod.path());
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;

    let during = net.pod.snapshot()?;
    ensure!(
        during.contains("vctap0") && during.contains("vctap1") && during.contains("ingress"),
        "taps and ingress qdiscs while running:\n{during}"
    );
    let interfaces = t.rt.pod_agent(&pod).await?.list_interfaces().await?;
    for (m, a) in [(POD_MAC, "192.0.2.2"), (POD_MAC2, "198.51.100.2")] {
        ensure!(
            interfaces.iter().any(|i| i.mac == mac(m)
                && i.addresses
                    .iter()
                    .any(|n| n.addr == a.parse::<IpAddr>().expect("ip"))),
            "no guest interface {m} with {a}: {interfaces:?}"
        );
    }
    for a in ["192.0.2.2", "198.51.100.2"] {
        net.peer
            .exec("busybox", &["ping", "-c", "2", "-W", "10", a])
            .with_context(|| format!("peer pings {a}"))?;
    }

    t.rt.stop_pod(&pod).await?;
    let stopped = net.pod.snapshot()?;
    t.rt.delete_pod(&pod).await?;
    let after = net.pod.snapshot()?;
    ensure!(
        stopped == before,
        "after stop:\n{stopped}\nbefore:\n{before}"
    );
    ensure!(after == before, "after delete:\n{after}\nbefore:\n{before}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_vm_starts_and_a_failed_launch_leave_the_namespace_as_found(
) -> Result<()> {
    let t = TestRuntime::new()?;
    // Missing at create time: refused by the configuration check.
    let mut config = t.pod("nonet");
    config.netns = Some("/var/run/netns/vc-test-does-not-exist".into());
    match t.rt.create_pod(config).await {
        Err(RuntimeError::Config(e)) => ensure!(e.to_string().contains("does-not-exist"), "{e}"),
        other => bail!("expected a configuration error, got {other:?}"),
    }

    // Someone else's ingress qdisc on the interface: refused at start, with
    // no VM launched and the namespace untouched.
    let net = Pair::new()?;
    net.pod
        .exec("tc", &["qdisc", "add", "dev", "eth0", "ingress"])?;
    let before = net.pod.snapshot()?;
    let mut config = t.pod("taken");
    config.netns = Some(net.pod.path());
    let pod = config.id.clone();
    t.rt.create_pod(config).await?;
    match t.rt.start_pod(&pod).await {
        Err(RuntimeError::Network(e)) => ensure!(
            e.to_string() == "interface eth0 has an ingress qdisc already and cannot be mirrored",
            "{e}"
        ),
        other => bail!("expected a network error, got {other:?}"),
    }
    let status = t.rt.pod_status(&pod).await?;
    ensure!(status.processes.is_empty(), "{status:?}");
    ensure!(net.pod.snapshot()? == before, "namespace changed");
    t.rt.delete_pod(&pod).await?;

    // Mirrored, then QEMU fails to launch: the mirroring is undone.
    net.pod
        .exec("tc", &["qdisc", "del", "dev", "eth0", "ingress"])?;
    let before = net.pod.snapshot()?;
    let mut config = t.pod("noqemu");
    config.netns = Some(net.pod.path());
    config.vm.binaries.qemu = Some("/bin/false".into());
    let pod = config.id.clone();
    t.rt.create_pod(config).await?;
    match t.rt.start_pod(&pod).await {
        // Launched (so the network was set up first) and exited at once.
        Err(RuntimeError::Hypervisor(HypervisorError::QemuExited { .. })) => {}
        other => bail!("expected QEMU to exit while starting, got {other:?}"),
    }
    let after = net.pod.snapshot()?;
    ensure!(
        after == before,
        "after a failed launch:\n{after}\nbefore:\n{before}"
    );
    t.rt.delete_pod(&pod).await?;
    Ok(())
}

#[test]
fn virtc_run_with_netns_gives_the_container_the_namespaces_network() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = Virtc::new(t.root(), &t.image.dir)?;
    let net = Pair::new()?;
    let before = net.pod.snapshot()?;
    let netns = net.pod.path();
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;
    let ran = v.run([
        "run",
        "--netns",
        netns.to_str().context("netns path is UTF-8")?,
        "--rootfs",
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        "ip -o -4 addr show; ip route; ping -c 1 -W 10 192.0.2.1 >/dev/null && echo pinged",
    ])?;
    ensure!(ran.code == Some(0), "{ran}");
    for line in ["inet 192.0.2.2/24", "default via 192.0.2.1", "pinged"] {
        ensure!(ran.stdout.contains(line), "no {line:?} in: {ran}");
    }
    ensure!(
        !ran.stderr.contains("netlink_packet_route"),
        "netlink warnings on stderr: {ran}"
    );
    let after = net.pod.snapshot()?;
    ensure!(after == before, "after run:\n{after}\nbefore:\n{before}");
    ensure!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}
