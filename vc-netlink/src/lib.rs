//! The rtnetlink layer that vc-host (in a pod's network namespace) and
//! vc-agent (in the guest) share: a connection ([`Netlink`]), typed dumps of
//! what a namespace has ([`Link`], [`Address`], [`Route`], [`Neighbour`],
//! parsed in [`dump`]), and one error type that keeps the kernel's errno
//! ([`NetlinkError`]).
//!
//! What each side *does* with a namespace (the host mirrors it into a tap, the
//! guest configures its interfaces) stays with that side; this crate only
//! reads and names things. Requests that change a namespace go through
//! [`Netlink::handle`] and map their failure with [`request`].

pub mod dump;
mod mac;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use rtnetlink::IpVersion;

pub use dump::{Address, Link, Neighbour, Route, MAIN_TABLE};
pub use mac::Mac;

/// Why a netlink connection or request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    /// A request failed.
    #[error("cannot {action}")]
    Request {
        /// What was being done, as a verb phrase ("list the links").
        action: String,
        /// rtnetlink's error (boxed: it is large).
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

impl NetlinkError {
    /// The errno the kernel answered a failed request with, if it gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request { source, .. } => errno(source),
            Self::Connect(e) => e.raw_os_error(),
        }
    }
}

/// The errno of a failed rtnetlink request, if the kernel gave one.
pub fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(-message.raw_code()),
        _ => None,
    }
}

/// True when the kernel said the object exists already (`EEXIST`).
pub fn exists(error: &rtnetlink::Error) -> bool {
    const EEXIST: i32 = 17;
    errno(error) == Some(EEXIST)
}

/// Maps an rtnetlink error to [`NetlinkError::Request`] with what was being
/// done: `.map_err(request("list the qdiscs"))`.
pub fn request(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let action = action.into();
    move |source| NetlinkError::Request {
        action,
        source: Box::new(source),
    }
}

/// A route netlink connection in the namespace of the thread that opened it;
/// its I/O runs on a task of the tokio runtime that opened it.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a route netlink socket (in the calling thread's network
    /// namespace) and spawns its connection task on the current runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// rtnetlink's handle, for requests that change the namespace.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request("list the links"))?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    /// Every address of every link (those without an address attribute are
    /// left out).
    pub async fn addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request("list the addresses"))?;
        Ok(messages.iter().filter_map(Address::from_message).collect())
    }

    /// The routes of every table, IPv4 then IPv6.
    pub async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        let mut routes = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let messages: Vec<RouteMessage> = self
                .handle
                .route()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(request("list the routes"))?;
            routes.extend(messages.iter().map(Route::from_message));
        }
        Ok(routes)
    }

    /// Every neighbour entry with an IP address.
    pub async fn neighbours(&self) -> Result<Vec<Neighbour>, NetlinkError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request("list the neighbours"))?;
        Ok(messages
            .iter()
            .filter_map(Neighbour::from_message)
            .collect())
    }
}
