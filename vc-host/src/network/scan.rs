//! Reading the namespace: links, addresses, routes and neighbours, turned from
//! netlink messages into the plain records [`super::plan`] works on.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::IpVersion;

use super::netns::{netlink, Nl};
use super::NetworkError;

/// A link of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScannedLink {
    pub index: u32,
    pub name: String,
    /// Link-layer address, when it is 6 bytes long.
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// ARPHRD_ETHER.
    pub ethernet: bool,
}

/// An address of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScannedAddress {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// Scope link (IPv6 `fe80::/10`): the guest makes its own.
    pub link_scope: bool,
}

/// A route of any table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScannedRoute {
    /// Main table, unicast, not made by the kernel from an address.
    pub copyable: bool,
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub source: Option<IpAddr>,
    pub metric: Option<u32>,
}

/// A neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScannedNeighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

/// Everything read from the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Scan {
    pub links: Vec<ScannedLink>,
    pub addresses: Vec<ScannedAddress>,
    pub routes: Vec<ScannedRoute>,
    pub neighbours: Vec<ScannedNeighbour>,
}

fn link(m: &LinkMessage) -> ScannedLink {
    let mut l = ScannedLink {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        ethernet: m.header.link_layer_type == LinkLayerType::Ether,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) => l.mac = <[u8; 6]>::try_from(&b[..]).ok(),
            _ => {}
        }
    }
    l
}

fn address(m: &AddressMessage) -> Option<ScannedAddress> {
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
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
    Some(ScannedAddress {
        index: m.header.index,
        addr: found?,
        prefix_len: m.header.prefix_len,
        link_scope: m.header.scope == AddressScope::Link,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route(m: &RouteMessage) -> ScannedRoute {
    let mut table = u32::from(m.header.table);
    let mut r = ScannedRoute {
        copyable: false,
        destination: None,
        gateway: None,
        oif: None,
        source: None,
        metric: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
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
    r.copyable = table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && m.header.kind == RouteType::Unicast
        && m.header.protocol != RouteProtocol::Kernel;
    r
}

fn neighbour(m: &NeighbourMessage) -> Option<ScannedNeighbour> {
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
            NeighbourAttribute::LinkLocalAddress(b) => mac = <[u8; 6]>::try_from(&b[..]).ok(),
            _ => {}
        }
    }
    Some(ScannedNeighbour {
        index: m.header.ifindex,
        ip: ip?,
        mac,
        permanent: m.header.state == NeighbourState::Permanent,
    })
}

impl Nl {
    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<ScannedLink>, NetworkError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the links"))?;
        Ok(messages.iter().map(link).collect())
    }

    /// Links, addresses, routes (IPv4 and IPv6) and neighbours.
    pub async fn scan(&self) -> Result<Scan, NetworkError> {
        let links = self.links().await?;
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the addresses"))?;
        let mut routes = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let messages: Vec<RouteMessage> = self
                .handle
                .route()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(netlink("list the routes"))?;
            routes.extend(messages.iter().map(route));
        }
        let neighbours: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the neighbours"))?;
        Ok(Scan {
            links,
            addresses: addresses.iter().filter_map(address).collect(),
            routes,
            neighbours: neighbours.iter().filter_map(neighbour).collect(),
        })
    }
}
