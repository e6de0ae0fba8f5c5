//! **At most one value is chosen** (Lamport, "Paxos Made Simple" §2.1, the safety
//! requirement: "only a single value is chosen"; TLA+ `Paxos.tla`, `Consistency`).
//!
//! A value is chosen when a quorum of acceptors has durably accepted it at one ballot. The
//! checker remembers the first value it sees chosen — by a durable quorum, by a node's
//! learned value, or by an `Apply` effect — and fails if any other value is ever chosen,
//! learned or applied. Acceptances of crashed nodes are remembered from their last durable
//! state (a crash loses only unconfirmed writes).

use std::collections::BTreeMap;
use std::fmt::Debug;

use concord_core::{ClusterInvariant, Effect, EffectOf, NodeId, Violation};

use super::{Proposal, SinglePaxos};
use crate::Ballot;

const NAME: &str = "at-most-one-value-chosen";

/// The chosen value, once seen, and each acceptor's last durable acceptance.
#[derive(Debug)]
pub struct AtMostOneChosen<V> {
    chosen: Option<V>,
    durable: Vec<Option<Proposal<V>>>,
}

impl<V> Default for AtMostOneChosen<V> {
    fn default() -> Self {
        AtMostOneChosen {
            chosen: None,
            durable: Vec::new(),
        }
    }
}

impl<V: Clone + Debug + PartialEq> AtMostOneChosen<V> {
    fn see(&mut self, value: &V, how: &str, node: Option<NodeId>) -> Result<(), Violation> {
        match &self.chosen {
            None => {
                self.chosen = Some(value.clone());
                Ok(())
            }
            Some(chosen) if chosen == value => Ok(()),
            Some(chosen) => Err(Violation {
                invariant: NAME,
                node,
                detail: format!("{value:?} {how}, but {chosen:?} was chosen"),
            }),
        }
    }
}

impl<V: Clone + Debug + PartialEq> ClusterInvariant<SinglePaxos<V>> for AtMostOneChosen<V> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(
        &mut self,
        nodes: &[Option<&SinglePaxos<V>>],
        stepped: NodeId,
        effects: &[EffectOf<SinglePaxos<V>>],
    ) -> Result<(), Violation> {
        if self.durable.len() < nodes.len() {
            self.durable.resize(nodes.len(), None);
        }
        for (index, node) in nodes.iter().enumerate() {
            if let Some(node) = node {
                self.durable[index] = node.durable().accepted.clone();
                if let Some(value) = node.decided() {
                    self.see(value, "learned", Some(node_id(index)))?;
                }
            }
        }
        for effect in effects {
            if let Effect::Apply { command, .. } = effect {
                self.see(command, "applied", Some(stepped))?;
            }
        }
        let mut votes: BTreeMap<Ballot, (usize, &V)> = BTreeMap::new();
        for proposal in self.durable.iter().flatten() {
            votes
                .entry(proposal.ballot)
                .or_insert((0, &proposal.value))
                .0 += 1;
        }
        let quorum = nodes.len() / 2 + 1;
        let chosen: Vec<V> = votes
            .values()
            .filter(|(count, _)| *count >= quorum)
            .map(|(_, value)| (*value).clone())
            .collect();
        for value in &chosen {
            self.see(value, "accepted by a durable quorum", None)?;
        }
        Ok(())
    }
}

fn node_id(index: usize) -> NodeId {
    NodeId::try_from(index).unwrap_or(NodeId::MAX)
}

/// **Only a proposed value is chosen** ("Paxos Made Simple" §2.1): every value a node learns
/// was the value of some client's `Propose`.
#[derive(Debug)]
pub struct OnlyProposedChosen<V> {
    proposed: crate::proposed::Proposed<V>,
}

impl<V> Default for OnlyProposedChosen<V> {
    fn default() -> Self {
        OnlyProposedChosen {
            proposed: crate::proposed::Proposed::default(),
        }
    }
}

impl<V: Clone + Debug + PartialEq + 'static> ClusterInvariant<SinglePaxos<V>>
    for OnlyProposedChosen<V>
{
    fn name(&self) -> &'static str {
        "only-proposed-chosen"
    }

    fn observe_request(&mut self, _node: NodeId, request: &super::Request<V>) {
        let super::Request::Propose(value) = request;
        self.proposed.record(value);
    }

    fn check(
        &mut self,
        nodes: &[Option<&SinglePaxos<V>>],
        stepped: NodeId,
        _effects: &[EffectOf<SinglePaxos<V>>],
    ) -> Result<(), Violation> {
        let Some(node) = nodes.get(stepped as usize).copied().flatten() else {
            return Ok(());
        };
        match node.decided() {
            Some(value) => self
                .proposed
                .check("only-proposed-chosen", stepped, value, "learned"),
            None => Ok(()),
        }
    }
}
