//! **Only a proposed value may be chosen** (Lamport, "Paxos Made Simple" §2.1, the first
//! safety requirement; TLA+ `Voting.tla`'s nontriviality): the values clients asked to propose,
//! recorded as their requests arrive ([`concord_core::ClusterInvariant::observe_request`]),
//! against which every chosen value is looked up.

use std::collections::HashMap;
use std::fmt::Debug;

use concord_core::{digest, NodeId, Violation};

/// Every value proposed so far, bucketed by a digest of its debug form (values need only be
/// `PartialEq`).
#[derive(Debug)]
pub(crate) struct Proposed<V> {
    by_digest: HashMap<u64, Vec<V>>,
}

impl<V> Default for Proposed<V> {
    fn default() -> Self {
        Proposed {
            by_digest: HashMap::new(),
        }
    }
}

impl<V: Clone + Debug + PartialEq> Proposed<V> {
    fn key(value: &V) -> u64 {
        digest(format!("{value:?}").as_bytes())
    }

    /// Records a value a client asked to propose.
    pub(crate) fn record(&mut self, value: &V) {
        let bucket = self.by_digest.entry(Self::key(value)).or_default();
        if !bucket.contains(value) {
            bucket.push(value.clone());
        }
    }

    /// Fails if `value`, chosen at `node` (`what` says where), was never proposed.
    pub(crate) fn check(
        &self,
        name: &'static str,
        node: NodeId,
        value: &V,
        what: &str,
    ) -> Result<(), Violation> {
        let known = self
            .by_digest
            .get(&Self::key(value))
            .is_some_and(|bucket| bucket.contains(value));
        if known {
            Ok(())
        } else {
            Err(Violation::on_node(
                name,
                node,
                format!("{what} {value:?}, which no client proposed"),
            ))
        }
    }
}
