//! The network module against the real kernel, inside a network namespace the
//! test creates (needs root, as the agent has in the guest). Only documentation
//! addresses (192.0.2.0/24, 198.51.100.0/24) on a veth pair in that namespace.

use std::net::IpAddr;

use vc_agent::network::Netlink;
use vc_proto::{Interface, IpNet, Neighbour, Route};

const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x02];

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn net(text: &str, prefix_len: u8) -> IpNet {
    IpNet {
        addr: ip(text),
        prefix_len,
    }
}

/// Runs `test` on a thread of its own in a new network namespace, on a
/// current-thread runtime (the netlink socket belongs to the thread's namespace).
fn in_new_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): run the tests as root");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test());
    })
    .join()
    .expect("test thread");
}

#[test]
fn setup_configures_by_mac_and_lists_back() {
    in_new_netns(|| async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(connection);
        handle
            .link()
            .add()
            .veth("veth0".into(), "veth1".into())
            .execute()
            .await
            .expect("veth pair");
        let veth0 = Netlink::connect()
            .expect("connect")
            .links()
            .await
            .expect("links")
            .into_iter()
            .find(|l| l.name == "veth0")
            .expect("veth0");
        handle
            .link()
            .set(veth0.index)
            .address(MAC.to_vec())
            .execute()
            .await
            .expect("set the MAC");

        let netlink = Netlink::connect().expect("connect");
        let interfaces = [Interface {
            name: "eth0".into(),
            mac: MAC,
            mtu: 1400,
            addresses: vec![net("192.0.2.10", 24)],
        }];
        let routes = [
            Route {
                destination: Some(net("198.51.100.0", 24)),
                gateway: Some(ip("192.0.2.1")),
                device_mac: Some(MAC),
                source: None,
                metric: Some(50),
            },
            Route {
                destination: None,
                gateway: Some(ip("192.0.2.1")),
                device_mac: None,
                source: None,
                metric: None,
            },
        ];
        let neighbours = [Neighbour {
            ip: ip("192.0.2.1"),
            mac: PEER_MAC,
            device_mac: MAC,
        }];
        netlink
            .setup(&interfaces, &routes, &neighbours)
            .await
            .expect("setup");
        // A second run converges instead of failing on what exists.
        netlink
            .setup(&interfaces, &routes, &neighbours)
            .await
            .expect("setup again");

        let listed = netlink.interfaces().await.expect("interfaces");
        let lo = listed.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.up);
        let eth = listed.iter().find(|i| i.mac == MAC).expect("veth0");
        assert_eq!(eth.name, "veth0");
        assert!(eth.up);
        assert_eq!(eth.mtu, 1400);
        // The kernel adds an IPv6 link-local address of its own.
        assert!(
            eth.addresses.contains(&net("192.0.2.10", 24)),
            "{:?}",
            eth.addresses
        );

        let listed = netlink.routes().await.expect("routes");
        let via = listed
            .iter()
            .find(|r| r.destination == Some(net("198.51.100.0", 24)))
            .expect("the 198.51.100.0/24 route");
        assert_eq!(via.gateway, Some(ip("192.0.2.1")));
        assert_eq!(via.device_mac, Some(MAC));
        assert_eq!(via.metric, Some(50));
        let default = listed
            .iter()
            .find(|r| r.destination.is_none() && r.gateway.is_some())
            .expect("default route");
        assert_eq!(default.gateway, Some(ip("192.0.2.1")));
    });
}

#[test]
fn an_unknown_mac_is_named() {
    in_new_netns(|| async {
        let netlink = Netlink::connect().expect("connect");
        let interfaces = [Interface {
            name: "eth0".into(),
            mac: PEER_MAC,
            mtu: 1500,
            addresses: vec![],
        }];
        let err = netlink
            .setup(&interfaces, &[], &[])
            .await
            .expect_err("no such link");
        assert_eq!(
            err.to_string(),
            "no guest interface has the MAC address 02:00:5e:00:53:02"
        );
    });
}
