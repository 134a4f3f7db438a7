//! The version handshake both sides run first on every connection.
//!
//! The host (the side that connected) sends a [`Hello`] frame; the agent answers
//! with its own. Each side then uses the highest version both support. Hello
//! frames are always encoded at [`HANDSHAKE_VERSION`](crate::frame::HANDSHAKE_VERSION)
//! and the `Hello` struct never changes, so that peers of any version can read it.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{FrameError, FrameKind};
use crate::io::{FrameReader, FrameWriter};
use crate::{MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION};

/// What each side announces in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Lowest protocol version this side speaks.
    pub min_version: u16,
    /// Highest protocol version this side speaks.
    pub max_version: u16,
    /// Name and version of the software, such as `vc-agent 0.1.0`.
    pub software: String,
}

impl Hello {
    /// This crate's versions, with the given software name.
    pub fn ours(software: impl Into<String>) -> Self {
        Self {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
            software: software.into(),
        }
    }

    /// The highest version both `self` and `peer` speak, if any.
    pub fn negotiate(&self, peer: &Hello) -> Option<u16> {
        let high = self.max_version.min(peer.max_version);
        let low = self.min_version.max(peer.min_version);
        (high >= low).then_some(high)
    }
}

/// The outcome of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Version both sides now use.
    pub version: u16,
    /// What the peer announced.
    pub peer: Hello,
}

/// Why the handshake failed.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The Hello exchange itself failed.
    #[error("handshake frame exchange failed")]
    Frame(#[from] FrameError),
    /// The two sides have no version in common.
    #[error(
        "no common protocol version: we speak {ours_min}..={ours_max}, \
         the peer ({peer_software}) speaks {peer_min}..={peer_max}"
    )]
    NoCommonVersion {
        /// Our lowest version.
        ours_min: u16,
        /// Our highest version.
        ours_max: u16,
        /// Peer's lowest version.
        peer_min: u16,
        /// Peer's highest version.
        peer_max: u16,
        /// Peer's software string.
        peer_software: String,
    },
}

fn settle<R, W>(
    ours: &Hello,
    peer: Hello,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
) -> Result<Negotiated, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let version = ours
        .negotiate(&peer)
        .ok_or_else(|| HandshakeError::NoCommonVersion {
            ours_min: ours.min_version,
            ours_max: ours.max_version,
            peer_min: peer.min_version,
            peer_max: peer.max_version,
            peer_software: peer.software.clone(),
        })?;
    reader.set_version(version);
    writer.set_version(version);
    Ok(Negotiated { version, peer })
}

/// Runs the handshake as the connecting side (the host): send, then receive.
pub async fn handshake_client<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    ours: &Hello,
) -> Result<Negotiated, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_message(FrameKind::Hello, 0, ours).await?;
    let (_, peer) = reader.read_message::<Hello>(FrameKind::Hello).await?;
    settle(ours, peer, reader, writer)
}

/// Runs the handshake as the accepting side (the agent): receive, then send.
/// The agent always answers with its Hello, even when there is no common version,
/// so that the host can report what the agent speaks.
pub async fn handshake_server<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    ours: &Hello,
) -> Result<Negotiated, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (_, peer) = reader.read_message::<Hello>(FrameKind::Hello).await?;
    writer.write_message(FrameKind::Hello, 0, ours).await?;
    settle(ours, peer, reader, writer)
}
