//! Bytes on the wire: the binary codec (default) and JSON (for debugging).
//!
//! Binary frame: `b'V'`, the protocol version byte, then the postcard encoding of a
//! [`Message`]. JSON frame: `{"v":1,"msg":{...}}`. [`decode`] accepts either (a frame
//! starting with `{` is JSON), enforces [`MESSAGE_LEN_MAX`] before parsing, rejects
//! trailing bytes and unknown versions, and validates the decoded message.
//!
//! # Invariants
//! - [`decode`] never panics, whatever the bytes; it returns a [`DecodeError`].
//! - `decode(encode_binary(m)) == Ok(m)` and `decode(encode_json(m)) == Ok(m)` for
//!   every valid message `m` (proptest in `tests/codec.rs`).

use serde::{Deserialize, Serialize};

use crate::message::{Message, ProtocolError};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame accepted, in bytes (either encoding).
pub const MESSAGE_LEN_MAX: usize = 64 * 1024;
/// First byte of a binary frame.
const BINARY_MAGIC: u8 = b'V';

/// Why bytes could not be decoded into a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty frame")]
    Empty,
    /// More than [`MESSAGE_LEN_MAX`] bytes.
    #[error("frame of {len} bytes exceeds MESSAGE_LEN_MAX")]
    TooLong {
        /// Frame length.
        len: usize,
    },
    /// Neither a binary frame nor JSON.
    #[error("unknown frame type (first byte {0:#04x})")]
    UnknownFrame(u8),
    /// A protocol version this agent or platform does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The payload does not parse.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// Bytes left after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The message parses but breaks a protocol rule.
    #[error(transparent)]
    Invalid(#[from] ProtocolError),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message breaks a protocol rule; it is never put on the wire.
    #[error(transparent)]
    Invalid(#[from] ProtocolError),
    /// The encoded frame would exceed [`MESSAGE_LEN_MAX`].
    #[error("encoded frame of {len} bytes exceeds MESSAGE_LEN_MAX")]
    TooLong {
        /// Frame length.
        len: usize,
    },
    /// Serialisation failed.
    #[error("serialisation failed: {0}")]
    Serialise(String),
}

#[derive(Serialize)]
struct JsonFrameOut<'a> {
    v: u8,
    msg: &'a Message,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFrameIn {
    v: u8,
    msg: Message,
}

/// Encodes a valid message as a binary frame.
///
/// # Errors
/// The message is invalid or the frame too long.
pub fn encode_binary(message: &Message) -> Result<Vec<u8>, EncodeError> {
    message.validate()?;
    let frame = postcard::to_extend(message, vec![BINARY_MAGIC, PROTOCOL_VERSION])
        .map_err(|error| EncodeError::Serialise(error.to_string()))?;
    if frame.len() > MESSAGE_LEN_MAX {
        return Err(EncodeError::TooLong { len: frame.len() });
    }
    Ok(frame)
}

/// Encodes a valid message as a JSON frame (for debugging and tooling).
///
/// # Errors
/// The message is invalid or the frame too long.
pub fn encode_json(message: &Message) -> Result<Vec<u8>, EncodeError> {
    message.validate()?;
    let frame = serde_json::to_vec(&JsonFrameOut {
        v: PROTOCOL_VERSION,
        msg: message,
    })
    .map_err(|error| EncodeError::Serialise(error.to_string()))?;
    if frame.len() > MESSAGE_LEN_MAX {
        return Err(EncodeError::TooLong { len: frame.len() });
    }
    Ok(frame)
}

/// Decodes and validates one frame, binary or JSON.
///
/// # Errors
/// See [`DecodeError`]; never panics.
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    if frame.len() > MESSAGE_LEN_MAX {
        return Err(DecodeError::TooLong { len: frame.len() });
    }
    let message = match frame {
        [] => return Err(DecodeError::Empty),
        [b'{', ..] => {
            let parsed: JsonFrameIn = serde_json::from_slice(frame)
                .map_err(|error| DecodeError::Malformed(error.to_string()))?;
            if parsed.v != PROTOCOL_VERSION {
                return Err(DecodeError::UnsupportedVersion(parsed.v));
            }
            parsed.msg
        }
        [BINARY_MAGIC, version, payload @ ..] => {
            if *version != PROTOCOL_VERSION {
                return Err(DecodeError::UnsupportedVersion(*version));
            }
            let (message, rest) = postcard::take_from_bytes::<Message>(payload)
                .map_err(|error| DecodeError::Malformed(error.to_string()))?;
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes(rest.len()));
            }
            message
        }
        [BINARY_MAGIC] => return Err(DecodeError::Malformed("frame ends after magic".into())),
        [first, ..] => return Err(DecodeError::UnknownFrame(*first)),
    };
    message.validate()?;
    Ok(message)
}
