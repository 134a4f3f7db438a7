//! Payload encoding: the one place that knows vc-proto payloads are bincode.
//!
//! Payloads use bincode 2 through serde with the *standard* configuration:
//! little-endian, variable-length integers (`varint`: values below 251 take one
//! byte; 251, 252, 253 prefix a `u16`, `u32`, `u64`), enums as a varint variant
//! index followed by the variant's fields, `Option` as one byte (0 or 1) then the
//! value, strings and sequences as a varint length then their items. Struct fields
//! are written in declaration order with no names, which is why reordering or
//! removing fields is a protocol version bump (see the crate docs).
//!
//! Decoding is bounded: everything a decoded value allocates (its strings and the
//! storage of its sequences, with room for `Vec` growth) is charged against
//! [`DECODE_LIMIT`] *before* it is allocated, so no payload, whatever length
//! prefixes it holds, makes [`decode`] allocate more than that (see `budget.rs`).
//! A value that would need more fails with [`CodecError::TooLarge`].

mod budget;

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode payload: {0}")]
    Decode(String),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// The decoded value would take more memory than [`DECODE_LIMIT`].
    #[error("decoded payload would need more than {limit} bytes of memory")]
    TooLarge {
        /// The limit, [`DECODE_LIMIT`].
        limit: usize,
    },
}

/// Most bytes one decode may allocate for strings, byte buffers and containers.
///
/// Equal to the largest frame payload, so that a decoded value never takes more
/// memory than the largest frame a reader accepts, whatever length prefixes the
/// payload holds.
pub const DECODE_LIMIT: usize = crate::frame::DEFAULT_MAX_PAYLOAD as usize;

/// bincode's standard configuration, without bincode's own limit: that limit
/// counts the width of every integer read on top of the string bytes, so it
/// refused a string that fills the largest frame, and it does not count sequence
/// elements at all. The budget of `budget.rs` is the one limit.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a value as a payload.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a whole payload as one value; trailing bytes are an error.
///
/// Allocates at most [`DECODE_LIMIT`] bytes for the value (plus an error
/// message when it fails), whatever `bytes` holds. The bound covers values whose
/// heap is made of strings, byte buffers, sequences and maps, which is every
/// vc-proto message; a `Box` or `Rc` inside `T` would not be charged.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let budget = budget::Budget::new(DECODE_LIMIT);
    let (value, used) = budget::decode_from_slice(bytes, config(), &budget).map_err(|e| {
        if budget.exhausted() {
            CodecError::TooLarge {
                limit: DECODE_LIMIT,
            }
        } else {
            CodecError::Decode(e.to_string())
        }
    })?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}
