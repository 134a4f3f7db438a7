//! The guest's network, over rtnetlink: loopback up, each interface the host
//! describes (matched by MAC address) given its MTU and addresses and brought
//! up, then routes and permanent neighbour entries; and the listings of what the
//! guest has (`ListInterfaces`, `ListRoutes`).
//!
//! Everything already in place (an address or route that exists) is accepted, so
//! that a repeated setup converges instead of failing.

mod links;
mod routes;

use std::fmt;

use vc_proto::{Interface, Neighbour, Route};

pub use links::Link;

/// A MAC address formatted as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why the network could not be configured or read.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("cannot {action}")]
    Netlink {
        /// What was being done.
        action: String,
        /// rtnetlink's error (boxed: it is large).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// No guest interface carries the MAC of an interface, route or neighbour.
    #[error("no guest interface has the MAC address {0}")]
    NoInterfaceWithMac(Mac),
    /// The description asks for something this agent cannot do.
    #[error("unsupported network setting: {0}")]
    Unsupported(String),
}

/// The errno of a failed netlink request, if the kernel gave one.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(-message.raw_code()),
        _ => None,
    }
}

/// True when the kernel said the object exists already.
fn exists(error: &rtnetlink::Error) -> bool {
    errno(error) == Some(libc::EEXIST)
}

fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let action = action.into();
    move |source| NetworkError::Netlink {
        action,
        source: Box::new(source),
    }
}

/// A netlink connection; its I/O runs on a task of the current runtime.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a route netlink socket (in the calling thread's network
    /// namespace) and spawns its connection task.
    pub fn connect() -> Result<Self, NetworkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
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
