//! Links and their addresses.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkMessage};
use vc_proto::{GuestInterface, Interface, IpNet};

use super::{exists, netlink, Mac, Netlink, NetworkError};

/// A guest link as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Kernel name.
    pub name: String,
    /// MAC address, for Ethernet-like links.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: message.header.flags.contains(&LinkFlag::Up),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
                _ => {}
            }
        }
        link
    }
}

/// The link carrying `mac`.
pub(super) fn by_mac(links: &[Link], mac: [u8; 6]) -> Result<&Link, NetworkError> {
    links
        .iter()
        .find(|l| l.mac == Some(mac))
        .ok_or(NetworkError::NoInterfaceWithMac(Mac(mac)))
}

fn address_of(message: &AddressMessage) -> Option<IpNet> {
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
    let mut found = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => return Some(net(*ip, message.header.prefix_len)),
            AddressAttribute::Address(ip) => found = Some(net(*ip, message.header.prefix_len)),
            _ => {}
        }
    }
    found
}

fn net(addr: IpAddr, prefix_len: u8) -> IpNet {
    IpNet { addr, prefix_len }
}

impl Netlink {
    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetworkError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the links"))?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    /// Brings `lo` up.
    pub async fn loopback_up(&self) -> Result<(), NetworkError> {
        let links = self.links().await?;
        let lo = links
            .iter()
            .find(|l| l.name == "lo")
            .ok_or_else(|| NetworkError::Unsupported("the guest has no loopback link".into()))?;
        self.handle
            .link()
            .set(lo.index)
            .up()
            .execute()
            .await
            .map_err(netlink("bring up lo"))
    }

    /// Gives the link with the interface's MAC its MTU and addresses, and
    /// brings it up.
    pub async fn configure(
        &self,
        interface: &Interface,
        links: &[Link],
    ) -> Result<(), NetworkError> {
        let link = by_mac(links, interface.mac)?;
        let name = &link.name;
        if interface.mtu != 0 && interface.mtu != link.mtu {
            self.handle
                .link()
                .set(link.index)
                .mtu(interface.mtu)
                .execute()
                .await
                .map_err(netlink(format!(
                    "set the MTU of {name} to {}",
                    interface.mtu
                )))?;
        }
        for address in &interface.addresses {
            let added = self
                .handle
                .address()
                .add(link.index, address.addr, address.prefix_len)
                .execute()
                .await;
            match added {
                Ok(()) => {}
                Err(e) if exists(&e) => {}
                Err(e) => {
                    return Err(netlink(format!(
                        "add the address {}/{} to {name}",
                        address.addr, address.prefix_len
                    ))(e))
                }
            }
        }
        self.handle
            .link()
            .set(link.index)
            .up()
            .execute()
            .await
            .map_err(netlink(format!("bring up {name}")))?;
        tracing::info!(interface = %name, mac = %Mac(interface.mac), "interface configured");
        Ok(())
    }

    /// Every link with its addresses.
    pub async fn interfaces(&self) -> Result<Vec<GuestInterface>, NetworkError> {
        let links = self.links().await?;
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the addresses"))?;
        Ok(links
            .into_iter()
            .map(|link| GuestInterface {
                addresses: addresses
                    .iter()
                    .filter(|a| a.header.index == link.index)
                    .filter_map(address_of)
                    .collect(),
                name: link.name,
                mac: link.mac.unwrap_or_default(),
                mtu: link.mtu,
                up: link.up,
            })
            .collect())
    }
}
