//! What changed in a mirrored namespace: a new [`Plan`] compared with the
//! links mirrored so far (pure, unit-tested). An interface is the same one
//! while it keeps its index and MAC; one that changed its MAC is removed and
//! added again.

use super::plan::{Plan, PlannedLink};
use super::{MacAddr, MirroredLink, PodNetwork};
use vc_proto::{Interface, Neighbour, Route};

/// An interface of the namespace that is not mirrored yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLink {
    /// Its name in the namespace.
    pub interface: String,
    /// Its MAC address, which the guest interface gets.
    pub mac: MacAddr,
    /// The tap planned for it.
    pub tap: String,
    pub(super) planned: PlannedLink,
}

/// The difference between a pod's mirrored network and its namespace now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkChange {
    /// Mirrored interfaces still there (with their taps), in NIC order.
    pub kept: Vec<MirroredLink>,
    /// Interfaces to mirror and plug.
    pub added: Vec<AddedLink>,
    /// Mirrored interfaces gone from the namespace (or whose MAC changed).
    pub removed: Vec<MirroredLink>,
    /// What the guest gets once the change is applied.
    pub interfaces: Vec<Interface>,
    /// Its routes.
    pub routes: Vec<Route>,
    /// Its permanent neighbours.
    pub neighbours: Vec<Neighbour>,
}

impl NetworkChange {
    /// Whether interfaces come or go (which needs NIC hot-plug).
    pub fn changes_interfaces(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }

    /// Whether anything at all differs from `current`.
    pub fn is_empty(&self, current: &PodNetwork) -> bool {
        !self.changes_interfaces()
            && self.interfaces == current.interfaces
            && self.routes == current.routes
            && self.neighbours == current.neighbours
    }
}

/// Compares `plan` (the namespace now) with `current` (what is mirrored).
pub(super) fn diff(current: &[MirroredLink], plan: Plan) -> NetworkChange {
    let same = |m: &MirroredLink, p: &PlannedLink| m.index == p.index && m.mac.0 == p.mac;
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for link in current {
        match plan.links.iter().find(|p| same(link, p)) {
            Some(p) => kept.push(MirroredLink {
                interface: p.name.clone(),
                ..link.clone()
            }),
            None => removed.push(link.clone()),
        }
    }
    let added = plan
        .links
        .iter()
        .filter(|p| !current.iter().any(|m| same(m, p)))
        .map(|p| AddedLink {
            interface: p.name.clone(),
            mac: MacAddr(p.mac),
            tap: p.tap.clone(),
            planned: p.clone(),
        })
        .collect();
    NetworkChange {
        kept,
        added,
        removed,
        interfaces: plan.interfaces,
        routes: plan.routes,
        neighbours: plan.neighbours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vc_proto::IpNet;

    const A: [u8; 6] = [2, 0, 0xc0, 0, 2, 2];
    const B: [u8; 6] = [2, 0, 0xc6, 0x33, 0x64, 2];

    fn mirrored(index: u32, name: &str, mac: [u8; 6], tap: &str) -> MirroredLink {
        MirroredLink {
            interface: name.into(),
            index,
            mac: MacAddr(mac),
            tap: tap.into(),
            device: None,
        }
    }

    fn planned(index: u32, name: &str, mac: [u8; 6], tap: &str) -> PlannedLink {
        PlannedLink {
            index,
            name: name.into(),
            mac,
            mtu: 1500,
            tap: tap.into(),
        }
    }

    fn interface(mac: [u8; 6]) -> Interface {
        Interface {
            name: String::new(),
            mac,
            mtu: 1500,
            addresses: vec![IpNet {
                addr: "192.0.2.2".parse().expect("ip"),
                prefix_len: 24,
            }],
        }
    }

    #[test]
    fn kept_added_and_removed_by_index_and_mac() {
        let current = [
            mirrored(3, "eth0", A, "vctap0"),
            mirrored(5, "eth1", B, "vctap1"),
        ];
        let plan = Plan {
            links: vec![
                // eth0 renamed: the same interface, its tap kept.
                planned(3, "lan0", A, "vctap2"),
                // eth1's index now carries another MAC: removed and added.
                planned(5, "eth1", [2, 0, 0, 0, 0, 9], "vctap3"),
                planned(8, "eth2", [2, 0, 0, 0, 0, 8], "vctap4"),
            ],
            interfaces: vec![interface(A)],
            ..Plan::default()
        };
        let change = diff(&current, plan);
        assert_eq!(change.kept, [mirrored(3, "lan0", A, "vctap0")]);
        assert_eq!(change.removed, [mirrored(5, "eth1", B, "vctap1")]);
        let added: Vec<_> = change.added.iter().map(|a| a.tap.as_str()).collect();
        assert_eq!(added, ["vctap3", "vctap4"]);
        assert!(change.changes_interfaces());
    }

    #[test]
    fn only_addresses_changed_is_no_interface_change() {
        let current = PodNetwork {
            netns: "/n".into(),
            links: vec![mirrored(3, "eth0", A, "vctap0")],
            interfaces: vec![interface(A)],
            routes: vec![],
            neighbours: vec![],
        };
        let mut moved = interface(A);
        moved.addresses[0].addr = "192.0.2.7".parse().expect("ip");
        let plan = Plan {
            links: vec![planned(3, "eth0", A, "vctap1")],
            interfaces: vec![moved],
            ..Plan::default()
        };
        let change = diff(&current.links, plan);
        assert!(!change.changes_interfaces());
        assert!(!change.is_empty(&current));
        let same = diff(
            &current.links,
            Plan {
                links: vec![planned(3, "eth0", A, "vctap1")],
                interfaces: vec![interface(A)],
                ..Plan::default()
            },
        );
        assert!(same.is_empty(&current));
    }
}
