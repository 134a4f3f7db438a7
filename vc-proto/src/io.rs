//! Async framed reading and writing over any `AsyncRead` / `AsyncWrite`.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec;
use crate::frame::{FrameError, FrameKind, Header, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use crate::{MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION};

/// One frame as read from the wire: its header and raw payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The validated header.
    pub header: Header,
    /// The payload, `header.length` bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes the payload as `T`, after checking the frame is of kind `kind`.
    pub fn decode<T: DeserializeOwned>(&self, kind: FrameKind) -> Result<T, FrameError> {
        if self.header.kind != kind {
            return Err(FrameError::UnexpectedKind {
                expected: kind,
                got: self.header.kind,
            });
        }
        codec::decode(&self.payload).map_err(|source| FrameError::Undecodable { kind, source })
    }
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max_payload: u32,
    versions: std::ops::RangeInclusive<u16>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the default payload cap that accepts every version this
    /// crate speaks (narrowed by [`set_version`](Self::set_version) after the
    /// handshake).
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            max_payload: DEFAULT_MAX_PAYLOAD,
            versions: MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION,
        }
    }

    /// Sets the payload cap; values above [`DEFAULT_MAX_PAYLOAD`] are clamped to
    /// it, the most the codec will decode.
    pub fn with_max_payload(mut self, max_payload: u32) -> Self {
        self.max_payload = max_payload.min(DEFAULT_MAX_PAYLOAD);
        self
    }

    /// Accepts only frames of the negotiated version from now on.
    pub fn set_version(&mut self, version: u16) {
        self.versions = version..=version;
    }

    /// Reads one frame. A clean end of stream between frames is
    /// `FrameError::Truncated { got: 0, .. }` (see [`FrameError::is_clean_eof`]).
    ///
    /// The payload buffer is allocated once the header has been validated, so a
    /// frame never takes more than the cap (plus the 20 header bytes).
    ///
    /// Not cancel-safe: dropping the future part-way through a frame loses the
    /// bytes already read and leaves the stream out of step. Keep one task reading
    /// a connection rather than racing `read_frame` in a `select!`.
    pub async fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut head = [0u8; HEADER_LEN];
        read_full(&mut self.inner, &mut head).await?;
        let header = Header::decode(&head, self.versions.clone(), self.max_payload)?;
        // The length was checked against the cap by `Header::decode`.
        let mut payload = vec![0u8; header.length as usize];
        read_full(&mut self.inner, &mut payload)
            .await
            .map_err(|e| match e {
                FrameError::Truncated { got, expected } => FrameError::Truncated {
                    got: got + HEADER_LEN,
                    expected: expected + HEADER_LEN,
                },
                other => other,
            })?;
        Ok(Frame { header, payload })
    }

    /// Reads one frame and decodes it as `T`, which must be of kind `kind`.
    ///
    /// Allocates at most the payload cap for the frame plus
    /// [`DECODE_LIMIT`](codec::DECODE_LIMIT) for the value. Not cancel-safe (see
    /// [`read_frame`](Self::read_frame)).
    pub async fn read_message<T: DeserializeOwned>(
        &mut self,
        kind: FrameKind,
    ) -> Result<(u64, T), FrameError> {
        let frame = self.read_frame().await?;
        let value = frame.decode(kind)?;
        Ok((frame.header.id, value))
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                got,
                expected: buf.len(),
            });
        }
        got += n;
    }
    Ok(())
}

/// Writes frames to a byte stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    version: u16,
    max_payload: u32,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer that encodes frames with the highest version this crate speaks
    /// until [`set_version`](Self::set_version) is called.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            version: MAX_PROTOCOL_VERSION,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// Encodes frames with the negotiated version from now on.
    pub fn set_version(&mut self, version: u16) {
        self.version = version;
    }

    /// Encodes `value` and writes it as one frame, then flushes.
    pub async fn write_message<T: Serialize>(
        &mut self,
        kind: FrameKind,
        id: u64,
        value: &T,
    ) -> Result<(), FrameError> {
        let payload =
            codec::encode(value).map_err(|source| FrameError::Unencodable { kind, source })?;
        let version = if kind == FrameKind::Hello {
            crate::frame::HANDSHAKE_VERSION
        } else {
            self.version
        };
        self.write_raw(kind, version, id, &payload).await
    }

    async fn write_raw(
        &mut self,
        kind: FrameKind,
        version: u16,
        id: u64,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= self.max_payload)
            .ok_or(FrameError::TooLargeToSend {
                length: payload.len(),
                max: self.max_payload,
            })?;
        let header = Header {
            version,
            kind,
            id,
            length,
        };
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(payload);
        self.inner.write_all(&buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}
