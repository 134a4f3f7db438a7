//! The guest's network, over rtnetlink: loopback up, each interface the host
//! describes (matched by MAC address) given its MTU and addresses and brought
//! up, then routes and permanent neighbour entries; and the listings of what the
//! guest has (`ListInterfaces`, `ListRoutes`); `UpdateNetwork` converges a
//! running guest to a new description (module `update`).
//!
//! Everything already in place (an address or route that exists) is accepted, so
//! that a repeated setup converges instead of failing.

mod links;
mod routes;
mod update;

use vc_netlink::request;
use vc_proto::{Interface, Neighbour, Route};

pub use links::Link;
pub use update::UpdateSummary;
pub use vc_netlink::{Mac, NetlinkError};

/// Why the network could not be configured or read.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A netlink connection or request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// No guest interface carries the MAC of an interface, route or neighbour.
    #[error("no guest interface has the MAC address {0}")]
    NoInterfaceWithMac(Mac),
    /// The description asks for something this agent cannot do.
    #[error("unsupported network setting: {0}")]
    Unsupported(String),
}

/// Maps an rtnetlink error to [`NetworkError::Netlink`] with what was being done.
fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let to_error = request(action);
    move |source| NetworkError::Netlink(to_error(source))
}

/// A netlink connection; its I/O runs on a task of the current runtime.
#[derive(Debug, Clone)]
pub struct Netlink {
    inner: vc_netlink::Netlink,
}

impl Netlink {
    /// Opens a route netlink socket (in the calling thread's network
    /// namespace) and spawns its connection task.
    pub fn connect() -> Result<Self, NetworkError> {
        Ok(Self {
            inner: vc_netlink::Netlink::connect()?,
        })
    }

    fn handle(&self) -> &rtnetlink::Handle {
        self.inner.handle()
    }

    /// Brings up loopback, configures `interfaces`, then adds `routes` and
    /// `neighbours`, in that order.
    pub async fn setup(
        &self,
        interfaces: &[Interface],
        routes: &[Route],
        neighbours: &[Neighbour],
    ) -> Result<(), NetworkError> {
        self.loopback_up().await?;
        let found = self.links().await?;
        for interface in interfaces {
            self.configure(interface, &found).await?;
        }
        for route in routes {
            self.add_route(route, &found).await?;
        }
        for neighbour in neighbours {
            self.add_neighbour(neighbour, &found).await?;
        }
        Ok(())
    }
}
