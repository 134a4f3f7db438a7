//! Mirroring one interface into its tap and undoing it: the tap made (MTU of
//! the interface, up), an ingress qdisc on each, and on each a u32 filter
//! matching every frame with the action `mirred egress redirect` to the other.

use netlink_packet_route::tc::TcHandle;
use tracing::{info, warn};

use vc_netlink::errno;

use super::netns::{netlink, Nl};
use super::plan::PlannedLink;
use super::MacAddr;
use super::{tap, MirroredLink, NetworkError};

/// `ETH_P_ALL` in network byte order, as tc's `protocol all`.
const PROTOCOL_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();

/// What one mirroring made so far (what to undo when it fails).
#[derive(Debug, Default)]
struct Made {
    ingress: bool,
    tap: bool,
}

impl Nl {
    async fn index_of(&self, name: &str) -> Result<Option<u32>, NetworkError> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.index))
    }

    async fn add_ingress(&self, index: u32, name: &str) -> Result<(), NetworkError> {
        match self
            .handle()
            .qdisc()
            .add(index as i32)
            .ingress()
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(NetworkError::IngressTaken {
                interface: name.to_owned(),
            }),
            Err(e) => Err(netlink(format!("add an ingress qdisc to {name}"))(e)),
        }
    }

    async fn redirect(&self, from: u32, from_name: &str, to: u32) -> Result<(), NetworkError> {
        self.handle()
            .traffic_filter(from as i32)
            .add()
            .parent(0xffff_0000)
            .protocol(PROTOCOL_ALL)
            .redirect(to)
            .map_err(netlink(format!("build the redirect filter of {from_name}")))?
            .execute()
            .await
            .map_err(netlink(format!("add the redirect filter to {from_name}")))
    }

    async fn del_ingress(&self, index: u32) -> Result<(), rtnetlink::Error> {
        let mut request = self.handle().qdisc().del(index as i32);
        request.message_mut().header.parent = TcHandle::INGRESS;
        request.message_mut().header.handle = TcHandle::from(0xffff_0000);
        request.execute().await
    }

    async fn del_link(&self, name: &str) -> Result<(), NetworkError> {
        if let Some(index) = self.index_of(name).await? {
            self.handle()
                .link()
                .del(index)
                .execute()
                .await
                .map_err(netlink(format!("delete {name}")))?;
        }
        Ok(())
    }

    /// Mirrors one interface. On failure, what this call made is undone.
    async fn mirror(&self, link: &PlannedLink) -> Result<MirroredLink, NetworkError> {
        let mut made = Made::default();
        let done = self.mirror_steps(link, &mut made).await;
        if let Err(e) = &done {
            warn!(interface = %link.name, error = %e, "mirroring failed; undoing it");
            if made.ingress {
                let _ = self.del_ingress(link.index).await;
            }
            if made.tap {
                let _ = self.del_link(&link.tap).await;
            }
        }
        done
    }

    async fn mirror_steps(
        &self,
        link: &PlannedLink,
        made: &mut Made,
    ) -> Result<MirroredLink, NetworkError> {
        // The interface first: a taken ingress is refused before a tap exists.
        self.add_ingress(link.index, &link.name).await?;
        made.ingress = true;
        // TUNSETIFF would attach to an existing persistent tap of that name.
        if self.index_of(&link.tap).await?.is_some() {
            return Err(NetworkError::Tap {
                name: link.tap.clone(),
                source: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        tap::create(&link.tap)?;
        made.tap = true;
        let tap_index = self
            .index_of(&link.tap)
            .await?
            .ok_or_else(|| NetworkError::Tap {
                name: link.tap.clone(),
                source: std::io::Error::other("the tap vanished after it was created"),
            })?;
        let mut set = self.handle().link().set(tap_index).up();
        if link.mtu != 0 {
            set = set.mtu(link.mtu);
        }
        set.execute()
            .await
            .map_err(netlink(format!("bring up {}", link.tap)))?;
        self.add_ingress(tap_index, &link.tap).await?;
        self.redirect(link.index, &link.name, tap_index).await?;
        self.redirect(tap_index, &link.tap, link.index).await?;
        info!(interface = %link.name, tap = %link.tap, "interface mirrored");
        Ok(MirroredLink {
            interface: link.name.clone(),
            index: link.index,
            mac: MacAddr(link.mac),
            tap: link.tap.clone(),
            device: None,
        })
    }

    /// Mirrors every planned interface; on failure, all of them are undone.
    pub async fn mirror_all(
        &self,
        links: &[PlannedLink],
    ) -> Result<Vec<MirroredLink>, NetworkError> {
        let mut done = Vec::new();
        for link in links {
            match self.mirror(link).await {
                Ok(m) => done.push(m),
                Err(e) => {
                    let _ = self.unmirror_all(&done).await;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Removes each tap and each interface's ingress qdisc (with its filter).
    /// What is already gone is fine; the first other error is returned after
    /// everything was tried.
    pub async fn unmirror_all(&self, links: &[MirroredLink]) -> Result<(), NetworkError> {
        let mut first = None;
        for link in links {
            if let Err(e) = self.del_link(&link.tap).await {
                warn!(tap = %link.tap, error = %e, "cannot delete the tap");
                first.get_or_insert(e);
            }
            match self.del_ingress(link.index).await {
                Ok(()) => {}
                // No such qdisc or no such link: already gone.
                Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)) => {
                }
                Err(e) => {
                    let e = netlink(format!("remove the ingress qdisc of {}", link.interface))(e);
                    warn!(interface = %link.interface, error = %e, "cannot remove the ingress qdisc");
                    first.get_or_insert(e);
                }
            }
            info!(interface = %link.interface, tap = %link.tap, "mirroring removed");
        }
        first.map_or(Ok(()), Err)
    }

    /// The indices of the links with an ingress qdisc (for checks).
    #[cfg(test)]
    pub async fn ingress_links(&self) -> Result<Vec<u32>, NetworkError> {
        use futures::TryStreamExt;
        let qdiscs: Vec<_> = self
            .handle()
            .qdisc()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list the qdiscs"))?;
        Ok(qdiscs
            .iter()
            .filter(|q| q.header.parent == TcHandle::INGRESS)
            .map(|q| q.header.index as u32)
            .collect())
    }
}
