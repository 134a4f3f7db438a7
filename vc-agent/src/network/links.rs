//! Links and their addresses.

use vc_netlink::exists;
use vc_proto::{GuestInterface, Interface, IpNet};

use super::{netlink, Mac, Netlink, NetworkError};

pub use vc_netlink::Link;

/// The link carrying `mac`.
pub(super) fn by_mac(links: &[Link], mac: [u8; 6]) -> Result<&Link, NetworkError> {
    links
        .iter()
        .find(|l| l.mac == Some(mac))
        .ok_or(NetworkError::NoInterfaceWithMac(Mac(mac)))
}

impl Netlink {
    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetworkError> {
        Ok(self.inner.links().await?)
    }

    /// Brings `lo` up.
    pub async fn loopback_up(&self) -> Result<(), NetworkError> {
        let links = self.links().await?;
        let lo = links
            .iter()
            .find(|l| l.name == "lo")
            .ok_or_else(|| NetworkError::Unsupported("the guest has no loopback link".into()))?;
        self.handle()
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
            self.handle()
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
                .handle()
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
        self.handle()
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
        let addresses = self.inner.addresses().await?;
        Ok(links
            .into_iter()
            .map(|link| GuestInterface {
                addresses: addresses
                    .iter()
                    .filter(|a| a.index == link.index)
                    .map(|a| IpNet {
                        addr: a.addr,
                        prefix_len: a.prefix_len,
                    })
                    .collect(),
                name: link.name,
                mac: link.mac.unwrap_or_default(),
                mtu: link.mtu,
                up: link.up,
            })
            .collect())
    }
}
