//! Network description of a pod: interfaces, addresses, routes and neighbours, as
//! the host found them in the pod's network namespace.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An IP address with its prefix length, such as `192.0.2.10/24`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix_len: u8,
}

/// One network interface of the guest, matched by MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name the interface had in the pod's namespace (informational; the guest
    /// renames nothing).
    pub name: String,
    /// MAC address; the guest interface that carries it gets this configuration.
    pub mac: [u8; 6],
    /// MTU in bytes.
    pub mtu: u32,
    /// Addresses to assign.
    pub addresses: Vec<IpNet>,
}

/// One route of the guest's main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination; `None` is the default route.
    pub destination: Option<IpNet>,
    /// Next hop, if the route goes through a gateway.
    pub gateway: Option<IpAddr>,
    /// MAC of the interface the route leaves through; `None` lets the kernel pick.
    pub device_mac: Option<[u8; 6]>,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// Route metric.
    pub metric: Option<u32>,
}

/// A permanent ARP or NDP neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// The neighbour's MAC address.
    pub mac: [u8; 6],
    /// MAC of the guest interface the neighbour is reached through.
    pub device_mac: [u8; 6],
}

/// An interface as the guest sees it (the reply to
/// [`Request::ListInterfaces`](crate::Request::ListInterfaces)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInterface {
    /// Kernel name in the guest, such as `eth0`.
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU in bytes.
    pub mtu: u32,
    /// Whether the interface is administratively up.
    pub up: bool,
    /// Assigned addresses.
    pub addresses: Vec<IpNet>,
}

/// The whole network a running pod's guest should have (the payload of
/// [`Request::UpdateNetwork`](crate::Request::UpdateNetwork)), as the host
/// found it in the pod's namespace after a change.
///
/// The agent converges to it: it waits (boundedly) for an interface of each
/// listed MAC to appear (a NIC the host has just hot-plugged), gives each its
/// MTU and addresses and removes the addresses it has that are not listed
/// (IPv6 link-local ones excepted), then removes the routes and permanent
/// neighbours on listed interfaces that are not listed (routes the kernel made
/// from an address excepted) and adds the listed ones. Interfaces not listed
/// are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkUpdate {
    /// Every interface the guest keeps, matched by MAC.
    pub interfaces: Vec<Interface>,
    /// Every route of the main table on those interfaces.
    pub routes: Vec<Route>,
    /// Every permanent neighbour entry on those interfaces.
    pub neighbours: Vec<Neighbour>,
}
