//! Authentication (OSDI 1999 §5.1; TOCS 2002 §3.2): HMAC-SHA256 on every message between two
//! parties, ed25519 signatures on what is forwarded as proof (checkpoints, view changes, new
//! views), SHA-256 digests of batches and states.
//!
//! Keys are derived deterministically from a cluster secret (`Config::key_seed`): the pairwise
//! MAC key of two replicas, the key a client shares with each replica, and every replica's
//! signing key. A replica only ever uses its own keys; anyone can check a signature with the
//! public keys. The simulator sets the secret from the run's seed, so runs replay bit for bit.

use std::collections::BTreeMap;
use std::fmt;

use concord_core::NodeId;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::message::ClientId;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// An HMAC-SHA256 tag.
pub type Mac = [u8; 32];

/// An ed25519 signature (64 bytes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(pub Vec<u8>);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", short(&self.0))
    }
}

/// The first bytes of `bytes` in hex, for debug output.
pub fn short(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The canonical encoding of `value` (postcard): what digests, MACs and signatures cover.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes every message type into a vector")
}

/// The SHA-256 digest of `value`'s canonical encoding.
pub fn digest_of<T: Serialize>(value: &T) -> Digest {
    Sha256::digest(encode(value)).into()
}

/// The SHA-256 digest of `bytes`.
pub fn digest_bytes(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn derive(secret: u64, label: &str, a: u64, b: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"concord-pbft/");
    hasher.update(label.as_bytes());
    hasher.update(secret.to_le_bytes());
    hasher.update(a.to_le_bytes());
    hasher.update(b.to_le_bytes());
    hasher.finalize().into()
}

/// An HMAC-SHA256 state keyed once (the key's inner and outer pads hashed), cloned per tag.
type Keyed = Hmac<Sha256>;

fn keyed(key: &[u8; 32]) -> Keyed {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac(key: &Keyed, parts: &[&[u8]]) -> Mac {
    let mut mac = key.clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The keys one replica (and the client proxy it hosts) holds.
#[derive(Clone)]
pub struct Keys {
    secret: u64,
    id: NodeId,
    /// `pairwise[j]`: the MAC key shared with replica `j`.
    pairwise: Vec<Keyed>,
    /// Keys shared by a client and a replica, made in advance for this replica's clients and
    /// for every client's key with this replica (others are derived when needed).
    clients: BTreeMap<(ClientId, NodeId), Keyed>,
    signing: SigningKey,
    /// Every replica's public key.
    public: Vec<VerifyingKey>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").field("id", &self.id).finish()
    }
}

impl Keys {
    /// The keys of replica `id` in a cluster of `replicas`, from the cluster secret.
    pub fn new(secret: u64, id: NodeId, replicas: usize) -> Self {
        Keys::with_clients(secret, id, replicas, 0)
    }

    /// [`Keys::new`], with the client keys made in advance for `client_lanes` clients per
    /// node (client `c` lives on node `c / client_lanes`).
    pub fn with_clients(secret: u64, id: NodeId, replicas: usize, client_lanes: u64) -> Self {
        let pairwise = (0..replicas as u64)
            .map(|j| keyed(&derive(secret, "pair", id.min(j), id.max(j))))
            .collect();
        let mut clients = BTreeMap::new();
        for client in 0..replicas as u64 * client_lanes {
            let key = keyed(&derive(secret, "client", client, id));
            clients.insert((client, id), key);
        }
        for client in id * client_lanes..(id + 1) * client_lanes {
            for replica in 0..replicas as u64 {
                let key = keyed(&derive(secret, "client", client, replica));
                clients.insert((client, replica), key);
            }
        }
        let signing_key = |node: u64| SigningKey::from_bytes(&derive(secret, "sign", node, 0));
        let public = (0..replicas as u64)
            .map(|node| signing_key(node).verifying_key())
            .collect();
        Keys {
            secret,
            id,
            pairwise,
            clients,
            signing: signing_key(id),
            public,
        }
    }

    /// The replica these keys belong to.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The MAC of `bytes` from this replica to replica `to`.
    pub fn mac_to(&self, to: NodeId, bytes: &[u8]) -> Mac {
        match self.pairwise.get(to as usize) {
            Some(key) => hmac(key, &[&self.id.to_le_bytes(), &to.to_le_bytes(), bytes]),
            None => [0; 32],
        }
    }

    /// Whether `mac` is replica `from`'s MAC of `bytes` for this replica.
    pub fn verify_from(&self, from: NodeId, bytes: &[u8], mac: &Mac) -> bool {
        let Some(key) = self.pairwise.get(from as usize) else {
            return false;
        };
        hmac(key, &[&from.to_le_bytes(), &self.id.to_le_bytes(), bytes]) == *mac
    }

    /// The MAC of `bytes` between `client` and `replica`, under their shared key (requests
    /// and replies).
    pub fn client_mac(&self, client: ClientId, replica: NodeId, bytes: &[u8]) -> Mac {
        let parts: [&[u8]; 3] = [&client.to_le_bytes(), &replica.to_le_bytes(), bytes];
        match self.clients.get(&(client, replica)) {
            Some(key) => hmac(key, &parts),
            None => hmac(
                &keyed(&derive(self.secret, "client", client, replica)),
                &parts,
            ),
        }
    }

    /// Signs `bytes` with this replica's key.
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature(self.signing.sign(bytes).to_bytes().to_vec())
    }

    /// Whether `signature` is replica `signer`'s signature of `bytes`.
    pub fn verify_signature(&self, signer: NodeId, bytes: &[u8], signature: &Signature) -> bool {
        let Some(public) = self.public.get(signer as usize) else {
            return false;
        };
        let Ok(bytes64) = <[u8; 64]>::try_from(signature.0.as_slice()) else {
            return false;
        };
        public
            .verify(bytes, &ed25519_dalek::Signature::from_bytes(&bytes64))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_sender_receiver_and_content() {
        let a = Keys::new(7, 0, 4);
        let b = Keys::new(7, 1, 4);
        let c = Keys::new(7, 2, 4);
        let mac = a.mac_to(1, b"hello");
        assert!(b.verify_from(0, b"hello", &mac));
        assert!(!b.verify_from(0, b"hullo", &mac));
        assert!(!b.verify_from(2, b"hello", &mac), "another sender's key");
        assert!(!c.verify_from(0, b"hello", &mac), "another receiver");
        let other_cluster = Keys::new(8, 1, 4);
        assert!(!other_cluster.verify_from(0, b"hello", &mac));
    }

    #[test]
    fn signatures_verify_only_for_their_signer_and_content() {
        let a = Keys::new(7, 0, 4);
        let b = Keys::new(7, 1, 4);
        let signature = a.sign(b"checkpoint");
        assert!(b.verify_signature(0, b"checkpoint", &signature));
        assert!(!b.verify_signature(1, b"checkpoint", &signature));
        assert!(!b.verify_signature(0, b"checkpoinT", &signature));
        assert!(!b.verify_signature(9, b"checkpoint", &signature));
        assert!(!b.verify_signature(0, b"checkpoint", &Signature(vec![1, 2, 3])));
    }

    #[test]
    fn client_keys_are_shared_by_client_and_replica_only() {
        let proxy = Keys::new(7, 3, 4);
        let replica = Keys::new(7, 1, 4);
        assert_eq!(
            proxy.client_mac(30, 1, b"op"),
            replica.client_mac(30, 1, b"op")
        );
        assert_ne!(
            proxy.client_mac(30, 1, b"op"),
            proxy.client_mac(31, 1, b"op")
        );
    }
}
