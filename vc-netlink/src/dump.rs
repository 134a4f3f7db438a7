//! What a namespace has, as plain records parsed from rtnetlink's messages.
//! Parsing is total: an attribute this crate does not know is skipped, and a
//! message without what a record needs (an address without an IP) is dropped.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};

/// A link (network interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Kernel name.
    pub name: String,
    /// Link-layer address, when it is 6 bytes long.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// An Ethernet link (ARPHRD_ETHER).
    pub ethernet: bool,
}

impl Link {
    /// The link a `RTM_NEWLINK` message describes.
    pub fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(&LinkFlag::Up),
            ethernet: m.header.link_layer_type == LinkLayerType::Ether,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Address(b) => link.mac = <[u8; 6]>::try_from(&b[..]).ok(),
                _ => {}
            }
        }
        link
    }
}

/// An address of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The link's index.
    pub index: u32,
    /// The link's own address (`IFA_LOCAL` when present: on point-to-point
    /// links `IFA_ADDRESS` is the peer's).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Scope link (IPv6 `fe80::/10` and the like).
    pub link_scope: bool,
}

impl Address {
    /// The address a `RTM_NEWADDR` message describes, if it names one.
    pub fn from_message(m: &AddressMessage) -> Option<Self> {
        let mut found = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => {
                    found = Some(*ip);
                    break;
                }
                AddressAttribute::Address(ip) => found = Some(*ip),
                _ => {}
            }
        }
        Some(Address {
            index: m.header.index,
            addr: found?,
            prefix_len: m.header.prefix_len,
            link_scope: m.header.scope == AddressScope::Link,
        })
    }
}

/// A route of any table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The routing table (`RTA_TABLE` when present, else the header's).
    pub table: u32,
    /// A unicast route (not local, broadcast, blackhole...).
    pub unicast: bool,
    /// Made by the kernel (from an address), not by a person or a daemon.
    pub kernel_made: bool,
    /// Destination and prefix length; `None` is the default route.
    pub destination: Option<(IpAddr, u8)>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// Metric (priority).
    pub metric: Option<u32>,
}

/// The main routing table's id.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Route {
    /// The route a `RTM_NEWROUTE` message describes.
    pub fn from_message(m: &RouteMessage) -> Self {
        let mut r = Route {
            table: u32::from(m.header.table),
            unicast: m.header.kind == RouteType::Unicast,
            kernel_made: m.header.protocol == RouteProtocol::Kernel,
            destination: None,
            gateway: None,
            oif: None,
            source: None,
            metric: None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::Destination(d) => {
                    r.destination = route_ip(d).map(|ip| (ip, m.header.destination_prefix_length));
                }
                RouteAttribute::Gateway(g) => r.gateway = route_ip(g),
                RouteAttribute::PrefSource(s) => r.source = route_ip(s),
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                _ => {}
            }
        }
        r
    }

    /// In the main table.
    pub fn in_main_table(&self) -> bool {
        self.table == MAIN_TABLE
    }
}

/// A neighbour (ARP or NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The link's index.
    pub index: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, when it is 6 bytes long.
    pub mac: Option<[u8; 6]>,
    /// A permanent (static) entry.
    pub permanent: bool,
}

impl Neighbour {
    /// The entry a `RTM_NEWNEIGH` message describes, if it names an IP.
    pub fn from_message(m: &NeighbourMessage) -> Option<Self> {
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    ip = Some(IpAddr::V4(*v4));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    ip = Some(IpAddr::V6(*v6));
                }
                NeighbourAttribute::LinkLocalAddress(b) => {
                    mac = <[u8; 6]>::try_from(&b[..]).ok();
                }
                _ => {}
            }
        }
        Some(Neighbour {
            index: m.header.ifindex,
            ip: ip?,
            mac,
            permanent: m.header.state == NeighbourState::Permanent,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
    use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkLayerType, LinkMessage};
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
    };

    use super::{Address, Link, Route, MAIN_TABLE};

    #[test]
    fn a_link_keeps_name_mtu_mac_and_flags() {
        let mut m = LinkMessage::default();
        m.header.index = 4;
        m.header.link_layer_type = LinkLayerType::Ether;
        m.header.flags = vec![LinkFlag::Up];
        m.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
        ];
        let link = Link::from_message(&m);
        assert_eq!(
            link,
            Link {
                index: 4,
                name: "eth0".into(),
                mac: Some([2, 0, 0, 0, 0, 9]),
                mtu: 1400,
                up: true,
                ethernet: true,
            }
        );
        m.attributes = vec![LinkAttribute::Address(vec![0; 20])];
        assert_eq!(Link::from_message(&m).mac, None, "not a 6-byte address");
    }

    #[test]
    fn an_address_prefers_the_local_one_and_needs_one() {
        let local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let mut m = AddressMessage::default();
        m.header.index = 2;
        m.header.prefix_len = 24;
        m.header.scope = AddressScope::Universe;
        m.attributes = vec![
            AddressAttribute::Address(peer),
            AddressAttribute::Local(local),
        ];
        let a = Address::from_message(&m).expect("an address");
        assert_eq!(
            (a.index, a.addr, a.prefix_len, a.link_scope),
            (2, local, 24, false)
        );
        m.attributes.clear();
        assert_eq!(Address::from_message(&m), None);
    }

    #[test]
    fn a_route_takes_its_table_from_the_attribute() {
        let mut m = RouteMessage::default();
        m.header.table = 0;
        m.header.kind = RouteType::Unicast;
        m.header.protocol = RouteProtocol::Boot;
        m.header.destination_prefix_length = 24;
        m.attributes = vec![
            RouteAttribute::Table(MAIN_TABLE),
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(198, 51, 100, 0))),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 1))),
            RouteAttribute::Oif(3),
            RouteAttribute::Priority(100),
        ];
        let r = Route::from_message(&m);
        assert!(r.in_main_table() && r.unicast && !r.kernel_made);
        assert_eq!(
            r.destination,
            Some((IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24))
        );
        assert_eq!(r.gateway, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!((r.oif, r.metric, r.source), (Some(3), Some(100), None));
    }
}
