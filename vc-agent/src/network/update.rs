//! `UpdateNetwork`: a set-up guest's network brought to a new description.
//!
//! The guest converges to what the host found in the pod's namespace: it
//! waits (boundedly) for an interface of each listed MAC (a NIC the host has
//! just hot-plugged takes a moment to be probed), configures each as at setup
//! and drops the addresses it has that are not listed; then on the listed
//! interfaces it deletes the main-table routes and permanent neighbours that
//! are not listed and adds those that are. What the kernel made by itself (a
//! prefix route of an address, IPv6 link-local addresses and routes) and
//! interfaces not listed are left alone.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use rtnetlink::IpVersion;
use vc_proto::{Interface, NetworkUpdate, Route};

use super::links::{by_mac, Link};
use super::{netlink, Mac, Netlink, NetworkError};

/// How often the links are listed while waiting for a new interface.
const APPEAR_POLL: Duration = Duration::from_millis(50);

/// What an update changed, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Addresses removed.
    pub addresses_removed: usize,
    /// Routes removed.
    pub routes_removed: usize,
    /// Neighbour entries removed.
    pub neighbours_removed: usize,
}

/// IPv6 link-local: the guest's own, from its MAC.
fn link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Whether the guest's `route` is the listed `wanted` (destination, gateway
/// and device; the metric only when one is asked for).
fn same_route(wanted: &Route, route: &vc_netlink::Route, links: &[Link]) -> bool {
    let device = wanted
        .device_mac
        .and_then(|mac| links.iter().find(|l| l.mac == Some(mac)))
        .map(|l| l.index);
    wanted.destination.as_ref().map(|d| (d.addr, d.prefix_len)) == route.destination
        && wanted.gateway == route.gateway
        && (device.is_none() || device == route.oif)
        && (wanted.metric.is_none() || wanted.metric == route.metric)
}

/// Whether a route of the guest is one an update manages: main table,
/// unicast, not made by the kernel, through a listed interface.
fn managed_route(route: &vc_netlink::Route, managed: &[u32]) -> bool {
    route.in_main_table()
        && route.unicast
        && !route.kernel_made
        && route.oif.is_some_and(|i| managed.contains(&i))
        && !route.destination.is_some_and(|(d, _)| link_local(d))
}

impl Netlink {
    /// Brings the guest's network to `update` (see the module docs), waiting
    /// at most `appear` for the listed interfaces to exist.
    pub async fn update(
        &self,
        update: &NetworkUpdate,
        appear: Duration,
    ) -> Result<UpdateSummary, NetworkError> {
        let links = self.wait_for(&update.interfaces, appear).await?;
        let mut summary = UpdateSummary::default();
        let mut managed = Vec::new();
        for interface in &update.interfaces {
            self.configure(interface, &links).await?;
            let link = by_mac(&links, interface.mac)?;
            managed.push(link.index);
            summary.addresses_removed += self.drop_addresses(interface, link).await?;
        }
        summary.routes_removed = self.drop_routes(&update.routes, &links, &managed).await?;
        for route in &update.routes {
            self.add_route(route, &links).await?;
        }
        summary.neighbours_removed = self.drop_neighbours(update, &links, &managed).await?;
        for neighbour in &update.neighbours {
            self.add_neighbour(neighbour, &links).await?;
        }
        Ok(summary)
    }

    /// The links, once one carries each of `interfaces`' MACs; an interface
    /// still missing after `appear` is [`NetworkError::NoInterfaceWithMac`].
    async fn wait_for(
        &self,
        interfaces: &[Interface],
        appear: Duration,
    ) -> Result<Vec<Link>, NetworkError> {
        let deadline = Instant::now() + appear;
        loop {
            let links = self.links().await?;
            let missing = interfaces
                .iter()
                .find(|i| !links.iter().any(|l| l.mac == Some(i.mac)));
            match missing {
                None => return Ok(links),
                Some(i) if Instant::now() >= deadline => {
                    return Err(NetworkError::NoInterfaceWithMac(Mac(i.mac)))
                }
                Some(_) => tokio::time::sleep(APPEAR_POLL).await,
            }
        }
    }

    /// Deletes the addresses of `link` that `interface` does not list.
    async fn drop_addresses(
        &self,
        interface: &Interface,
        link: &Link,
    ) -> Result<usize, NetworkError> {
        let messages: Vec<AddressMessage> = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(netlink(format!("list the addresses of {}", link.name)))?;
        let mut removed = 0;
        for message in messages {
            let Some(found) = vc_netlink::Address::from_message(&message) else {
                continue;
            };
            let listed = interface
                .addresses
                .iter()
                .any(|a| a.addr == found.addr && a.prefix_len == found.prefix_len);
            if found.index != link.index || listed || link_local(found.addr) {
                continue;
            }
            self.handle()
                .address()
                .del(message)
                .execute()
                .await
                .map_err(netlink(format!(
                    "remove the address {}/{} from {}",
                    found.addr, found.prefix_len, link.name
                )))?;
            tracing::info!(interface = %link.name, address = %found.addr, "address removed");
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes the managed routes that `wanted` does not list.
    async fn drop_routes(
        &self,
        wanted: &[Route],
        links: &[Link],
        managed: &[u32],
    ) -> Result<usize, NetworkError> {
        let mut removed = 0;
        for version in [IpVersion::V4, IpVersion::V6] {
            let messages: Vec<RouteMessage> = self
                .handle()
                .route()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(netlink("list the routes"))?;
            for message in messages {
                let route = vc_netlink::Route::from_message(&message);
                if !managed_route(&route, managed)
                    || wanted.iter().any(|w| same_route(w, &route, links))
                {
                    continue;
                }
                self.handle()
                    .route()
                    .del(message)
                    .execute()
                    .await
                    .map_err(netlink(format!("remove the route {route:?}")))?;
                tracing::info!(destination = ?route.destination, gateway = ?route.gateway, "route removed");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes the permanent neighbours on managed links that `update` does
    /// not list.
    async fn drop_neighbours(
        &self,
        update: &NetworkUpdate,
        links: &[Link],
        managed: &[u32],
    ) -> Result<usize, NetworkError> {
        let messages: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the neighbours"))?;
        let mut removed = 0;
        for message in messages {
            let Some(found) = vc_netlink::Neighbour::from_message(&message) else {
                continue;
            };
            if !found.permanent || !managed.contains(&found.index) {
                continue;
            }
            let listed = update.neighbours.iter().any(|n| {
                n.ip == found.ip
                    && Some(n.mac) == found.mac
                    && by_mac(links, n.device_mac).is_ok_and(|l| l.index == found.index)
            });
            if listed {
                continue;
            }
            self.handle()
                .neighbours()
                .del(message)
                .execute()
                .await
                .map_err(netlink(format!("remove the neighbour {}", found.ip)))?;
            tracing::info!(neighbour = %found.ip, "neighbour removed");
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vc_proto::IpNet;

    const MAC: [u8; 6] = [2, 0, 0xc0, 0, 2, 2];

    fn links() -> Vec<Link> {
        vec![Link {
            index: 2,
            name: "eth0".into(),
            mac: Some(MAC),
            mtu: 1500,
            up: true,
            ethernet: true,
        }]
    }

    fn dumped(dest: Option<(&str, u8)>, gw: Option<&str>, kernel: bool) -> vc_netlink::Route {
        vc_netlink::Route {
            table: vc_netlink::MAIN_TABLE,
            unicast: true,
            kernel_made: kernel,
            destination: dest.map(|(d, p)| (d.parse().expect("ip"), p)),
            gateway: gw.map(|g| g.parse().expect("ip")),
            oif: Some(2),
            source: None,
            metric: Some(1024),
        }
    }

    #[test]
    fn a_listed_route_matches_without_its_metric() {
        let wanted = Route {
            destination: Some(IpNet {
                addr: "203.0.113.0".parse().expect("ip"),
                prefix_len: 24,
            }),
            gateway: Some("192.0.2.1".parse().expect("ip")),
            device_mac: Some(MAC),
            source: None,
            metric: None,
        };
        let route = dumped(Some(("203.0.113.0", 24)), Some("192.0.2.1"), false);
        assert!(same_route(&wanted, &route, &links()));
        let other = dumped(Some(("203.0.113.0", 24)), Some("192.0.2.9"), false);
        assert!(!same_route(&wanted, &other, &links()));
        let default = dumped(None, Some("192.0.2.1"), false);
        assert!(!same_route(&wanted, &default, &links()));
    }

    #[test]
    fn kernel_routes_and_other_links_are_not_managed() {
        assert!(managed_route(&dumped(None, Some("192.0.2.1"), false), &[2]));
        assert!(!managed_route(
            &dumped(Some(("192.0.2.0", 24)), None, true),
            &[2]
        ));
        assert!(!managed_route(
            &dumped(None, Some("192.0.2.1"), false),
            &[3]
        ));
        assert!(!managed_route(
            &dumped(Some(("fe80::", 64)), None, false),
            &[2]
        ));
    }
}
