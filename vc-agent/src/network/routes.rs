//! Routes of the main table and permanent neighbour entries.

use std::net::IpAddr;

use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::RouteScope;
use vc_proto::{IpNet, Neighbour, Route};

use super::links::{by_mac, Link};
use vc_netlink::exists;

use super::{netlink, Netlink, NetworkError};

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// A route of the main table in vc-proto's terms.
fn from_dump(route: &vc_netlink::Route, links: &[Link]) -> Option<Route> {
    if !route.in_main_table() {
        return None;
    }
    Some(Route {
        destination: route
            .destination
            .map(|(addr, prefix_len)| IpNet { addr, prefix_len }),
        gateway: route.gateway,
        device_mac: route
            .oif
            .and_then(|index| links.iter().find(|l| l.index == index))
            .and_then(|l| l.mac),
        source: route.source,
        metric: route.metric,
    })
}

impl Netlink {
    /// Adds a route; one that exists already is fine.
    pub async fn add_route(&self, route: &Route, links: &[Link]) -> Result<(), NetworkError> {
        let family_of = route
            .destination
            .as_ref()
            .map(|d| d.addr)
            .or(route.gateway)
            .or(route.source)
            .ok_or_else(|| {
                NetworkError::Unsupported(
                    "a route needs a destination, a gateway or a source to tell its family".into(),
                )
            })?;
        for other in [route.gateway, route.source].into_iter().flatten() {
            if !same_family(family_of, other) {
                return Err(NetworkError::Unsupported(format!(
                    "route mixes IPv4 and IPv6 addresses ({family_of} and {other})"
                )));
            }
        }
        let mut request = self.handle().route().add();
        if let Some(mac) = route.device_mac {
            request = request.output_interface(by_mac(links, mac)?.index);
        }
        if let Some(metric) = route.metric {
            request = request.priority(metric);
        }
        if route.gateway.is_none() {
            // A directly connected route: on the link, no next hop.
            request = request.scope(RouteScope::Link);
        }
        let added = match family_of {
            IpAddr::V4(_) => {
                let mut r = request.v4();
                if let Some(IpNet {
                    addr: IpAddr::V4(d),
                    prefix_len,
                }) = route.destination
                {
                    r = r.destination_prefix(d, prefix_len);
                }
                if let Some(IpAddr::V4(g)) = route.gateway {
                    r = r.gateway(g);
                }
                if let Some(IpAddr::V4(s)) = route.source {
                    r = r.pref_source(s);
                }
                r.execute().await
            }
            IpAddr::V6(_) => {
                let mut r = request.v6();
                if let Some(IpNet {
                    addr: IpAddr::V6(d),
                    prefix_len,
                }) = route.destination
                {
                    r = r.destination_prefix(d, prefix_len);
                }
                if let Some(IpAddr::V6(g)) = route.gateway {
                    r = r.gateway(g);
                }
                if let Some(IpAddr::V6(s)) = route.source {
                    r = r.pref_source(s);
                }
                r.execute().await
            }
        };
        match added {
            Ok(()) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(netlink(format!("add the route {route:?}"))(e)),
        }
    }

    /// Adds a permanent neighbour entry (replacing one for the same address).
    pub async fn add_neighbour(
        &self,
        neighbour: &Neighbour,
        links: &[Link],
    ) -> Result<(), NetworkError> {
        let link = by_mac(links, neighbour.device_mac)?;
        self.handle()
            .neighbours()
            .add(link.index, neighbour.ip)
            .link_local_address(&neighbour.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "add the neighbour {} on {}",
                neighbour.ip, link.name
            )))
    }

    /// The routes of the main table, IPv4 then IPv6.
    pub async fn routes(&self) -> Result<Vec<Route>, NetworkError> {
        let links = self.links().await?;
        let routes = self.inner.routes().await?;
        Ok(routes.iter().filter_map(|r| from_dump(r, &links)).collect())
    }
}
