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

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use support::net::{veth, End, Netns};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use vc_host::agent::{collect_output, Output};
use vc_host::config::ContainerConfig;
use vc_host::hypervisor::HypervisorError;
use vc_host::id::PodId;
use vc_host::runtime::RuntimeError;
use vc_proto::{IpNet, ProcessRef};

const POD_MAC: &str = "02:00:c0:00:02:02";
const PEER_MAC: &str = "02:00:c0:00:02:01";
const POD_MAC2: &str = "02:00:c6:33:64:02";
const PEER_MAC2: &str = "02:00:c6:33:64:01";

fn mac(s: &str) -> [u8; 6] {
    s.parse::<vc_host::hypervisor::MacAddr>()
        .expect("test MAC")
        .0
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A pod namespace and a peer namespace joined by a veth:
/// pod `eth0` 192.0.2.2/24 (default route via the peer), peer `p0` 192.0.2.1/24.
struct Pair {
    pod: Netns,
    peer: Netns,
}

impl Pair {
    fn new() -> Result<Self> {
        let pod = Netns::new("p")?;
        let peer = Netns::new("q")?;
        veth(
            &End {
                ns: &pod,
                name: "eth0",
                mac: POD_MAC,
                addr: "192.0.2.2/24",
            },
            &End {
                ns: &peer,
                name: "p0",
                mac: PEER_MAC,
                addr: "192.0.2.1/24",
            },
        )?;
        pod.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "eth0"])?;
        Ok(Self { pod, peer })
    }
}

/// Starts a container and returns a future for its output.
async fn start(t: &TestRuntime, pod: &PodId, config: ContainerConfig) -> Result<ProcessRef> {
    let id = config.id.clone();
    t.rt.create_container(pod, config).await?;
    t.rt.start_container(pod, &id).await?;
    Ok(ProcessRef {
        container_id: id.to_string(),
        exec_id: None,
    })
}

async fn output(t: &TestRuntime, pod: &PodId, process: &ProcessRef) -> Result<Output> {
    let agent = t.rt.pod_agent(pod).await?;
    Ok(
        tokio::time::timeout(Duration::from_secs(60), collect_output(&agent, process))
            .await
            .context("the container did not finish")??,
    )
}

async fn run(t: &TestRuntime, pod: &PodId, config: ContainerConfig) -> Result<Output> {
    let main = start(t, pod, config).await?;
    output(t, pod, &main).await
}

/// Connects from the current namespace, retrying while the server starts.
fn connect(addr: &str) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {addr}")),
        }
    }
}

/// Sends `payload` to an echo server and returns what came back until EOF.
fn echo_through(addr: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
    let stream = connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&payload)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    Ok(back)
}

fn payload(len: usize) -> Vec<u8> {
    // Every byte value, in an order that is not a plain cycle.
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
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

    // Peer -> container: an echo server in the container, 1 MiB each way.
    let server = start(
        &t,
        &pod,
        t.container("echo", &["nc", "-l", "-p", "5000", "-e", "cat"]),
    )
    .await?;
    let sent = payload(1 << 20);
    let expected = sent.clone();
    let back = net
        .peer
        .run(move || echo_through("192.0.2.2:5000", sent))
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    ensure!(
        back.len() == expected.len() && back == expected,
        "echo differs: sent {} bytes, got {}",
        expected.len(),
        back.len()
    );
    let out = output(&t, &pod, &server).await?;
    ensure!(out.exit_code == 0, "echo server: {}", text(&out.stderr));

    // Container -> peer: a server in the peer namespace.
    let listener = net
        .peer
        .run(|| Ok(TcpListener::bind("192.0.2.1:6000")?))
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    let peer_server = std::thread::spawn(move || -> Result<String> {
        let (conn, from) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line)?;
        (&conn).write_all(b"hello from the peer\n")?;
        conn.shutdown(Shutdown::Both)?;
        Ok(format!("{from} {line}"))
    });
    let out = run(
        &t,
        &pod,
        t.container(
            "client",
            &[
                "sh",
                "-c",
                "echo hello from the container | nc 192.0.2.1 6000",
            ],
        ),
    )
    .await?;
    ensure!(out.exit_code == 0, "client: {}", text(&out.stderr));
    ensure!(
        text(&out.stdout) == "hello from the peer\n",
        "{}",
        text(&out.stdout)
    );
    let got = peer_server
        .join()
        .map_err(|_| anyhow::anyhow!("peer server panicked"))??;
    ensure!(
        got.starts_with("192.0.2.2:") && got.ends_with(" hello from the container\n"),
        "{got}"
    );

    // Ping both ways.
    net.peer
        .exec("busybox", &["ping", "-c", "3", "-W", "10", "192.0.2.2"])
        .context("peer pings the container")?;
    let out = run(
        &t,
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
    veth(
        &End {
            ns: &net.pod,
            name: "eth1",
            mac: POD_MAC2,
            addr: "198.51.100.2/24",
        },
        &End {
            ns: &net.peer,
            name: "p1",
            mac: PEER_MAC2,
            addr: "198.51.100.1/24",
        },
    )?;
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
