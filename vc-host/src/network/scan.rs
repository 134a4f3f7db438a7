//! Reading the namespace: links, addresses, routes and neighbours, as
//! vc-netlink's records, for [`super::plan`] to decide on.

use vc_netlink::{Address, Link, Neighbour, Route};

use super::netns::Nl;
use super::NetworkError;

/// Everything read from the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Scan {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
}

impl Nl {
    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetworkError> {
        Ok(self.net.links().await?)
    }

    /// Links, addresses, routes (IPv4 and IPv6, every table) and neighbours.
    pub async fn scan(&self) -> Result<Scan, NetworkError> {
        Ok(Scan {
            links: self.net.links().await?,
            addresses: self.net.addresses().await?,
            routes: self.net.routes().await?,
            neighbours: self.net.neighbours().await?,
        })
    }
}
