//! Privileged tests against the real kernel, in network namespaces the tests
//! create (bind-mounted under a temporary directory, removed by a guard), with
//! addresses from 192.0.2.0/24 only.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use netlink_packet_route::neighbour::NeighbourState;
use vc_proto::IpNet;

use super::netns::{run_in, Nl};
use super::*;

/// A fresh, empty network namespace at a path; unmounted on drop.
struct TestNetns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNetns {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ns");
        std::fs::write(&path, "").expect("mount point");
        let target = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind the namespace");
        })
        .join()
        .expect("namespace thread");
        Self { path, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

const MAC_A: [u8; 6] = [0x02, 0, 0xc0, 0, 0x02, 0x0a];
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn nl_err(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    super::netns::netlink(what)
}

/// A veth pair `va`/`vb` in the namespace; `va` with a MAC, MTU 1400,
/// 192.0.2.10/24, a default route via 192.0.2.1 and a permanent neighbour.
async fn veth_pair(nl: Nl) -> Result<(), NetworkError> {
    let h = nl.handle();
    h.link()
        .add()
        .veth("va".into(), "vb".into())
        .execute()
        .await
        .map_err(nl_err("add veth"))?;
    let links = nl.links().await?;
    let index = |n: &str| links.iter().find(|l| l.name == n).map(|l| l.index);
    let (a, b) = (index("va").expect("va"), index("vb").expect("vb"));
    h.link()
        .set(a)
        .address(MAC_A.to_vec())
        .mtu(1400)
        .execute()
        .await
        .map_err(nl_err("set va"))?;
    for i in [a, b] {
        h.link().set(i).up().execute().await.map_err(nl_err("up"))?;
    }
    h.address()
        .add(a, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 24)
        .execute()
        .await
        .map_err(nl_err("address"))?;
    h.route()
        .add()
        .v4()
        .gateway(GW)
        .execute()
        .await
        .map_err(nl_err("route"))?;
    h.neighbours()
        .add(a, IpAddr::V4(GW))
        .link_local_address(&[2, 0, 0, 0, 0, 1])
        .state(NeighbourState::Permanent)
        .execute()
        .await
        .map_err(nl_err("neighbour"))?;
    Ok(())
}

/// Link names and the indices with an ingress qdisc.
async fn snapshot(ns: &Path) -> (Vec<String>, Vec<u32>) {
    run_in(ns, |nl| async move {
        let mut names: Vec<_> = nl.links().await?.into_iter().map(|l| l.name).collect();
        names.sort();
        let mut ingress = nl.ingress_links().await?;
        ingress.sort();
        Ok((names, ingress))
    })
    .await
    .expect("snapshot")
}

#[tokio::test]
async fn setup_mirrors_each_interface_and_teardown_restores_the_namespace() {
    let ns = TestNetns::new();
    run_in(ns.path(), veth_pair).await.expect("fixture");
    let before = snapshot(ns.path()).await;
    assert_eq!(before.1, Vec::<u32>::new());

    let net = setup(ns.path()).await.expect("setup");
    let names: Vec<_> = net
        .links
        .iter()
        .map(|l| (l.interface.as_str(), l.tap.as_str()))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let va = net.links.iter().find(|l| l.interface == "va").expect("va");
    assert_eq!(va.mac, MacAddr(MAC_A));
    let iface = net.interfaces.iter().find(|i| i.name == "va").expect("va");
    assert_eq!(iface.mtu, 1400);
    assert_eq!(
        iface.addresses,
        [IpNet {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            prefix_len: 24
        }]
    );
    assert!(
        net.routes.iter().any(|r| r.destination.is_none()
            && r.gateway == Some(IpAddr::V4(GW))
            && r.device_mac == Some(MAC_A)),
        "{:?}",
        net.routes
    );
    assert_eq!(net.neighbours.len(), 1, "{:?}", net.neighbours);
    assert_eq!(net.links.len(), 2);

    let during = snapshot(ns.path()).await;
    assert!(during.0.contains(&"vctap0".to_owned()), "{during:?}");
    assert!(during.0.contains(&"vctap1".to_owned()), "{during:?}");
    assert_eq!(during.1.len(), 4, "ingress on both veths and both taps");

    // A second setup sees its own taps and the taken ingress: refused, and
    // the first setup's state is untouched.
    let again = setup(ns.path()).await.expect_err("taken");
    assert!(
        matches!(again, NetworkError::IngressTaken { .. }),
        "{again}"
    );
    assert_eq!(snapshot(ns.path()).await, during);

    teardown(&net).await.expect("teardown");
    assert_eq!(snapshot(ns.path()).await, before);
    teardown(&net).await.expect("teardown twice is fine");
}

#[tokio::test]
async fn an_interface_that_cannot_be_mirrored_fails_and_leaves_nothing() {
    let ns = TestNetns::new();
    run_in(ns.path(), veth_pair).await.expect("fixture");
    // Someone else's ingress qdisc on vb (index order puts va first, so va is
    // mirrored before vb fails and must be undone).
    run_in(ns.path(), |nl| async move {
        let vb = nl
            .links()
            .await?
            .into_iter()
            .find(|l| l.name == "vb")
            .expect("vb");
        nl.handle()
            .qdisc()
            .add(vb.index as i32)
            .ingress()
            .execute()
            .await
            .map_err(nl_err("ingress"))
    })
    .await
    .expect("foreign ingress");
    let before = snapshot(ns.path()).await;
    let err = setup(ns.path()).await.expect_err("taken");
    assert!(
        matches!(&err, NetworkError::IngressTaken { interface } if interface == "vb"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "interface vb has an ingress qdisc already and cannot be mirrored"
    );
    assert_eq!(snapshot(ns.path()).await, before);
}

#[tokio::test]
async fn a_missing_namespace_or_the_hosts_own_is_refused() {
    let err = setup(Path::new("/nonexistent/vc-netns"))
        .await
        .expect_err("missing");
    assert!(matches!(err, NetworkError::OpenNetns { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "cannot open the network namespace /nonexistent/vc-netns"
    );
    let err = setup(Path::new("/proc/self/ns/net"))
        .await
        .expect_err("host");
    assert!(matches!(err, NetworkError::HostNamespace { .. }), "{err}");
}

#[tokio::test]
async fn an_empty_namespace_mirrors_nothing() {
    let ns = TestNetns::new();
    let net = setup(ns.path()).await.expect("setup");
    assert!(net.links.is_empty() && net.interfaces.is_empty() && net.routes.is_empty());
    teardown(&net).await.expect("teardown");
}
