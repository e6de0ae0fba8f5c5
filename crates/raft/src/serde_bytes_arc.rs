//! Serializes shared byte buffers (`Arc<[u8]>`) as byte strings, not sequences of integers:
//! snapshot data crosses the network and the write-ahead log in this form.

use std::sync::Arc;

use serde::{Deserializer, Serializer};

/// Writes the bytes as one byte string.
pub(crate) fn serialize<S: Serializer>(
    bytes: &Arc<[u8]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Reads a byte string (or a sequence of bytes) into a shared buffer.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Arc<[u8]>, D::Error> {
    let bytes: serde_bytes::ByteBuf = serde::Deserialize::deserialize(deserializer)?;
    Ok(Arc::from(bytes.into_vec()))
}
