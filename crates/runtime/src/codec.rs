//! How the runtime encodes messages and log records: CBOR (`ciborium`).
//!
//! A self-describing format, because the cores' types use serde's internally tagged and
//! untagged enums (`concord_core::KvOperation`, `Value`), which compact formats such as
//! postcard or bincode cannot decode.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec error: {0}")]
pub struct CodecError(String);

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| CodecError(e.to_string()))?;
    Ok(bytes)
}

/// Decodes a value made by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    ciborium::from_reader(bytes).map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::KvOperation;
    use concord_raft::{Entry, Message, Payload};
    use std::sync::Arc;

    #[test]
    fn raft_messages_with_kv_commands_round_trip() {
        let message: Message<KvOperation> = Message::AppendEntries {
            term: 3,
            prev_log_index: 7,
            prev_log_term: 2,
            entries: Arc::from(vec![Entry {
                index: 8,
                term: 3,
                payload: Payload::Command(Arc::new(KvOperation::Write {
                    key: "k".into(),
                    value: 5,
                })),
            }]),
            leader_commit: 7,
            round: 9,
        };
        let bytes = encode(&message).unwrap();
        assert_eq!(decode::<Message<KvOperation>>(&bytes).unwrap(), message);
    }
}
