//! How the runtime encodes messages and log records: CBOR (`cbor4ii`).
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
    cbor4ii::serde::to_vec(Vec::new(), &value).map_err(|e| CodecError(e.to_string()))
}

/// Encodes `value` into `writer` as it goes (the same bytes as [`encode`]).
pub fn encode_to<T: Serialize + ?Sized>(
    writer: impl std::io::Write,
    value: &T,
) -> Result<(), CodecError> {
    cbor4ii::serde::to_writer(writer, &value).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a value made by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
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

    /// Logs and peers written with the earlier encoder (`ciborium`, before the codec moved to
    /// `cbor4ii` for speed) still decode: write-ahead logs on disk keep working.
    #[test]
    fn bytes_from_the_earlier_encoder_still_decode() {
        fn old<T: Serialize>(value: &T) -> Vec<u8> {
            let mut bytes = Vec::new();
            ciborium::into_writer(value, &mut bytes).unwrap();
            bytes
        }
        let entries = vec![
            Entry {
                index: 1,
                term: 1,
                payload: Payload::Noop,
            },
            Entry {
                index: 2,
                term: 1,
                payload: Payload::Membership(Arc::new(concord_raft::Membership::new([1, 2, 3]))),
            },
            Entry {
                index: 3,
                term: 2,
                payload: Payload::Command(Arc::new(KvOperation::Cas {
                    key: "k".into(),
                    from: -1,
                    to: i64::MAX,
                })),
            },
        ];
        let writes: Vec<concord_raft::Write<KvOperation>> = vec![
            concord_raft::Write::HardState(concord_raft::HardState {
                current_term: 2,
                voted_for: Some(3),
            }),
            concord_raft::Write::Append {
                entries: entries.clone(),
                by_leader: true,
            },
        ];
        for write in &writes {
            assert_eq!(
                &decode::<concord_raft::Write<KvOperation>>(&old(write)).unwrap(),
                write
            );
        }
        let message: Message<KvOperation> = Message::AppendEntries {
            term: 2,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: Arc::from(entries),
            leader_commit: 1,
            round: u64::MAX,
        };
        assert_eq!(
            decode::<Message<KvOperation>>(&old(&message)).unwrap(),
            message
        );
        // And the other way: what the codec writes now, the earlier decoder read alike.
        let now = encode(&message).unwrap();
        let back: Message<KvOperation> = ciborium::from_reader(now.as_slice()).unwrap();
        assert_eq!(back, message);
    }
}
