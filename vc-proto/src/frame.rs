//! The frame header: what every message on a vc-proto connection starts with.
//!
//! A frame is a fixed 20-byte header followed by `length` bytes of payload.
//! All integers are little-endian.
//!
//! ```text
//!  byte   0      1      2      3      4      5      6      7
//!       +------+------+------+------+------+------+------+------+
//!     0 |  'v'    'c'    'p'    '!'  |   version   | kind | flags|
//!       +------+------+------+------+------+------+------+------+
//!     8 |                 request id (u64 LE)                   |
//!       +------+------+------+------+------+------+------+------+
//!    16 |  payload length (u32 LE)   |  payload (length bytes) ...
//!       +------+------+------+------+------ ...
//! ```
//!
//! - **magic** (bytes 0..4): `b"vcp!"`. Anything else is [`FrameError::BadMagic`]:
//!   the peer is not speaking vc-proto, and the connection must be dropped.
//! - **version** (bytes 4..6): the protocol version the frame is encoded with. A
//!   reader refuses versions it does not know ([`FrameError::UnsupportedVersion`]).
//!   The [`Hello`](crate::Hello) frames of the handshake are always sent with
//!   version [`HANDSHAKE_VERSION`] so that peers of any version can read them.
//! - **kind** (byte 6): a [`FrameKind`]; it tells which payload type follows:
//!   1 `Hello`, 2 `Request`, 3 `Response`, 4 `StreamAttach`, and from version 3
//!   on 5 `StreamPark` (a kind-5 frame of an older version is refused as an
//!   unknown kind).
//! - **flags** (byte 7): reserved, must be zero on send and is ignored on receive,
//!   so that a later version can give it meaning without breaking older readers.
//! - **request id** (bytes 8..16): chosen by the side that sends a request, echoed in
//!   the response, so several requests can be in flight on one connection. Zero for
//!   frames that are not part of an exchange (handshake, stream attach).
//! - **payload length** (bytes 16..20): checked against the reader's cap *before*
//!   any buffer is allocated ([`FrameError::Oversized`]).
//!
//! The payload is the bincode encoding of the type the kind names (see
//! [`codec`](crate::codec)).

use thiserror::Error;

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 20;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"vcp!";

/// Version used for the handshake frames, readable by every protocol version.
pub const HANDSHAKE_VERSION: u16 = 1;

/// Largest payload accepted by default (4 MiB). Process output does not travel in
/// frames (it has its own raw streams), so no legitimate message comes close.
pub const DEFAULT_MAX_PAYLOAD: u32 = 4 * 1024 * 1024;

/// What the payload of a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A [`Hello`](crate::Hello): the first frame each side sends.
    Hello = 1,
    /// A [`Request`](crate::Request), host to agent.
    Request = 2,
    /// A [`Response`](crate::Response), agent to host, carrying the request's id.
    Response = 3,
    /// A [`StreamAttach`](crate::StreamAttach): turns the connection into a raw
    /// byte stream of one process after the agent's [`Response`](crate::Response).
    StreamAttach = 4,
    /// A [`StreamPark`](crate::StreamPark) (version 3 and later): parks the
    /// connection as an output stream of a process not started yet; after the
    /// agent's [`Response`](crate::Response) it carries the process's raw
    /// bytes once a [`Request::ExecDirect`](crate::Request::ExecDirect)
    /// claims it. A frame of this kind with a version below
    /// [`DIRECT_STREAMS_VERSION`](crate::DIRECT_STREAMS_VERSION) is
    /// [`FrameError::UnknownKind`].
    StreamPark = 5,
}

impl FrameKind {
    /// Parses the kind byte of a header.
    pub fn from_u8(byte: u8) -> Result<Self, FrameError> {
        Ok(match byte {
            1 => Self::Hello,
            2 => Self::Request,
            3 => Self::Response,
            4 => Self::StreamAttach,
            5 => Self::StreamPark,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version the payload is encoded with.
    pub version: u16,
    /// What the payload is.
    pub kind: FrameKind,
    /// Request id; zero outside request/response exchanges.
    pub id: u64,
    /// Payload length in bytes.
    pub length: u32,
}

impl Header {
    /// Encodes the header into its 20 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6] = self.kind as u8;
        out[7] = 0;
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..20].copy_from_slice(&self.length.to_le_bytes());
        out
    }

    /// Decodes and validates a header: magic, kind, version range and the
    /// payload length against `max_payload`. Nothing is allocated.
    pub fn decode(
        bytes: &[u8; HEADER_LEN],
        versions: std::ops::RangeInclusive<u16>,
        max_payload: u32,
    ) -> Result<Self, FrameError> {
        if bytes[0..4] != MAGIC {
            return Err(FrameError::BadMagic([
                bytes[0], bytes[1], bytes[2], bytes[3],
            ]));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        let kind = FrameKind::from_u8(bytes[6])?;
        if kind == FrameKind::StreamPark && version < crate::DIRECT_STREAMS_VERSION {
            return Err(FrameError::UnknownKind(bytes[6]));
        }
        let handshake = kind == FrameKind::Hello && version == HANDSHAKE_VERSION;
        if !(versions.contains(&version) || handshake) {
            return Err(FrameError::UnsupportedVersion {
                version,
                min: *versions.start(),
                max: *versions.end(),
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..16]);
        let length = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        if length > max_payload {
            return Err(FrameError::Oversized {
                length,
                max: max_payload,
            });
        }
        Ok(Self {
            version,
            kind,
            id: u64::from_le_bytes(id),
            length,
        })
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The first four bytes were not [`MAGIC`].
    #[error("bad frame magic {0:02x?}: the peer does not speak vc-proto")]
    BadMagic([u8; 4]),
    /// The frame's version is outside what this side supports.
    #[error("unsupported protocol version {version} (supported: {min}..={max})")]
    UnsupportedVersion {
        /// Version found in the frame.
        version: u16,
        /// Lowest supported version.
        min: u16,
        /// Highest supported version.
        max: u16,
    },
    /// The kind byte names no known frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The payload length is above the reader's cap.
    #[error("frame payload of {length} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Announced payload length.
        length: u32,
        /// The reader's cap.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({got} of {expected} bytes read)")]
    Truncated {
        /// Bytes of the header or payload that arrived.
        got: usize,
        /// Bytes that were expected.
        expected: usize,
    },
    /// The frame's kind is not the one the reader expected at this point.
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedKind {
        /// Kind the protocol state called for.
        expected: FrameKind,
        /// Kind that arrived.
        got: FrameKind,
    },
    /// The payload did not decode as the type its kind names.
    #[error("undecodable {kind:?} payload")]
    Undecodable {
        /// Kind of the frame.
        kind: FrameKind,
        /// The codec's error.
        #[source]
        source: crate::codec::CodecError,
    },
    /// A message to send could not be encoded.
    #[error("cannot encode {kind:?} payload")]
    Unencodable {
        /// Kind of the frame.
        kind: FrameKind,
        /// The codec's error.
        #[source]
        source: crate::codec::CodecError,
    },
    /// A message to send does not fit in a frame.
    #[error("message of {length} bytes is too large to send (limit {max} bytes)")]
    TooLargeToSend {
        /// Encoded payload length.
        length: usize,
        /// The writer's cap.
        max: u32,
    },
    /// The connection failed.
    #[error("connection I/O failed")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the peer closed the connection cleanly between frames.
    pub fn is_clean_eof(&self) -> bool {
        matches!(self, FrameError::Truncated { got: 0, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: std::ops::RangeInclusive<u16> = 1..=1;

    fn header() -> Header {
        Header {
            version: 1,
            kind: FrameKind::Request,
            id: 0x0102_0304_0506_0708,
            length: 42,
        }
    }

    #[test]
    fn layout_is_byte_exact() {
        let bytes = header().encode();
        assert_eq!(
            bytes,
            [b'v', b'c', b'p', b'!', 1, 0, 2, 0, 8, 7, 6, 5, 4, 3, 2, 1, 42, 0, 0, 0]
        );
        assert_eq!(Header::decode(&bytes, V, 100).expect("decodes"), header());
    }

    #[test]
    fn bad_magic() {
        let mut bytes = header().encode();
        bytes[0] = b'X';
        assert!(matches!(
            Header::decode(&bytes, V, 100),
            Err(FrameError::BadMagic(_))
        ));
    }

    #[test]
    fn unsupported_version() {
        let mut bytes = header().encode();
        bytes[4] = 9;
        assert!(matches!(
            Header::decode(&bytes, V, 100),
            Err(FrameError::UnsupportedVersion { version: 9, .. })
        ));
    }

    #[test]
    fn hello_readable_at_handshake_version() {
        let h = Header {
            kind: FrameKind::Hello,
            version: HANDSHAKE_VERSION,
            ..header()
        };
        assert!(Header::decode(&h.encode(), 5..=7, 100).is_ok());
    }

    #[test]
    fn unknown_kind() {
        let mut bytes = header().encode();
        bytes[6] = 200;
        assert!(matches!(
            Header::decode(&bytes, V, 100),
            Err(FrameError::UnknownKind(200))
        ));
    }

    #[test]
    fn oversized() {
        let bytes = header().encode();
        assert!(matches!(
            Header::decode(&bytes, V, 41),
            Err(FrameError::Oversized {
                length: 42,
                max: 41
            })
        ));
    }

    #[test]
    fn stream_park_exists_from_version_3() {
        let park = |version| Header {
            version,
            kind: FrameKind::StreamPark,
            id: 0,
            length: 0,
        };
        let bytes = park(3).encode();
        assert_eq!(bytes[4..7], [3, 0, 5]);
        assert_eq!(
            Header::decode(&bytes, 2..=3, 100).expect("decodes"),
            park(3)
        );
        assert!(matches!(
            Header::decode(&park(2).encode(), 2..=3, 100),
            Err(FrameError::UnknownKind(5))
        ));
    }

    #[test]
    fn flags_are_ignored_on_receive() {
        let mut bytes = header().encode();
        bytes[7] = 0xff;
        assert_eq!(Header::decode(&bytes, V, 100).expect("decodes"), header());
    }
}
