//! Cluster-wide safety properties of Multi-Paxos, checked after every step. All are
//! incremental: a check costs O(new decisions, new applies) plus O(nodes).
//!
//! * [`OneValuePerSlot`] — at most one value is chosen per slot ("Paxos Made Simple" §3: each
//!   instance is a single-decree Paxos; PMMC replica invariant R1: no two different commands
//!   are decided for the same slot). Checked on every node's decided prefix.
//! * [`DecidedPrefixGrows`] — a node's decided prefix never shrinks while it is up, and never
//!   restarts below the last decided prefix it made durable (PMMC invariant R4: `slot_out`
//!   never decreases).
//! * [`StateMachineSafety`] — no two nodes apply different commands at one slot (PMMC R3).
//! * [`OnlyProposedChosen`] — every command decided was proposed by a client (nontriviality,
//!   "Paxos Made Simple" §2.1).
//! * [`SnapshotsAgree`] — two snapshots of one slot hold the same state (what R3 implies for
//!   a deterministic state machine; it covers the slots a node skips by installing a snapshot,
//!   which [`StateMachineSafety`] never sees applied there).
//!
//! Slots at or below a node's compaction point are no longer in its log; [`OneValuePerSlot`]
//! checks each node's decisions only above it.
//!
//! They rely on node ids being the indexes of the `nodes` slice.

use std::fmt::Debug;

use std::collections::BTreeMap;

use concord_core::{digest, ClusterInvariant, Effect, EffectOf, NodeId, StateMachine, Violation};

use super::{Configuration, Entry, MultiPaxos, Slot, Write};

/// Every Multi-Paxos safety checker, fresh.
pub fn invariants<S>() -> Vec<Box<dyn ClusterInvariant<MultiPaxos<S>>>>
where
    S: StateMachine + Default + 'static,
{
    vec![
        Box::new(OneValuePerSlot::<S::Command>::default()),
        Box::new(DecidedPrefixGrows::default()),
        Box::new(StateMachineSafety::<MultiPaxos<S>>::default()),
        Box::new(SnapshotsAgree::default()),
        Box::new(OnlyProposedChosen::<S::Command>::default()),
    ]
}

/// What kind of entry was chosen, comparable without `Query: PartialEq` (a read changes no
/// state, so two reads at one slot are treated alike).
#[derive(Clone, Debug, PartialEq)]
enum Chosen<C> {
    Noop,
    Command(C),
    Read,
    StopSign(Configuration),
}

fn chosen<C: Clone, Q>(entry: &Entry<C, Q>) -> Chosen<C> {
    match entry {
        Entry::Noop => Chosen::Noop,
        Entry::Command(command) => Chosen::Command(command.clone()),
        Entry::Read(_) => Chosen::Read,
        Entry::StopSign(next) => Chosen::StopSign(next.clone()),
    }
}

fn index(id: NodeId) -> usize {
    usize::try_from(id).unwrap_or(usize::MAX)
}

/// The slots `node` (node `stepped`) decided since the last call, above its compaction point,
/// as recorded in `checked` (one entry per node), which moves on to its decided prefix.
fn newly_decided<S: StateMachine + Default>(
    checked: &mut Vec<Slot>,
    stepped: NodeId,
    node: &MultiPaxos<S>,
) -> std::ops::RangeInclusive<Slot> {
    let at = index(stepped);
    if checked.len() <= at {
        checked.resize(at + 1, 0);
    }
    let from = checked[at].min(node.decided()).max(node.compacted());
    checked[at] = node.decided();
    from + 1..=node.decided()
}

/// The value decided at every slot, and how far each node's decisions were checked.
#[derive(Debug)]
pub struct OneValuePerSlot<C> {
    decided: Vec<Option<Chosen<C>>>,
    checked: Vec<Slot>,
}

impl<C> Default for OneValuePerSlot<C> {
    fn default() -> Self {
        OneValuePerSlot {
            decided: Vec::new(),
            checked: Vec::new(),
        }
    }
}

impl<S: StateMachine + Default> ClusterInvariant<MultiPaxos<S>> for OneValuePerSlot<S::Command> {
    fn name(&self) -> &'static str {
        "one-value-per-slot"
    }

    fn check(
        &mut self,
        nodes: &[Option<&MultiPaxos<S>>],
        stepped: NodeId,
        _effects: &[EffectOf<MultiPaxos<S>>],
    ) -> Result<(), Violation> {
        let Some(node) = nodes.get(index(stepped)).copied().flatten() else {
            return Ok(());
        };
        for slot in newly_decided(&mut self.checked, stepped, node) {
            let Some(accepted) = node.entry(slot) else {
                return Err(Violation::on_node(
                    "one-value-per-slot",
                    stepped,
                    format!("decided slot {slot} is not in the log"),
                ));
            };
            let value = chosen(&accepted.entry);
            let position = usize::try_from(slot - 1).unwrap_or(usize::MAX);
            if self.decided.len() <= position {
                self.decided.resize(position + 1, None);
            }
            match &self.decided[position] {
                None => self.decided[position] = Some(value),
                Some(known) if *known != value => {
                    return Err(Violation::on_node(
                        "one-value-per-slot",
                        stepped,
                        format!("decided {value:?} at slot {slot}, where {known:?} was decided"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// **Only proposed commands are chosen** ("Paxos Made Simple" §2.1): every command decided at
/// a slot was the command of some client's `Propose`. No-ops (holes a new leader fills),
/// reads and stop-signs are the protocol's own entries and are not looked up.
#[derive(Debug)]
pub struct OnlyProposedChosen<C> {
    proposed: crate::proposed::Proposed<C>,
    checked: Vec<Slot>,
}

impl<C> Default for OnlyProposedChosen<C> {
    fn default() -> Self {
        OnlyProposedChosen {
            proposed: crate::proposed::Proposed::default(),
            checked: Vec::new(),
        }
    }
}

impl<S: StateMachine + Default> ClusterInvariant<MultiPaxos<S>> for OnlyProposedChosen<S::Command> {
    fn name(&self) -> &'static str {
        "only-proposed-chosen"
    }

    fn observe_request(&mut self, _node: NodeId, request: &super::Request<S::Command, S::Query>) {
        if let super::Request::Propose(command) = request {
            self.proposed.record(command);
        }
    }

    fn check(
        &mut self,
        nodes: &[Option<&MultiPaxos<S>>],
        stepped: NodeId,
        _effects: &[EffectOf<MultiPaxos<S>>],
    ) -> Result<(), Violation> {
        let Some(node) = nodes.get(index(stepped)).copied().flatten() else {
            return Ok(());
        };
        for slot in newly_decided(&mut self.checked, stepped, node) {
            if let Some(Entry::Command(command)) = node.entry(slot).map(|a| &a.entry) {
                self.proposed.check(
                    "only-proposed-chosen",
                    stepped,
                    command,
                    &format!("decided at slot {slot}"),
                )?;
            }
        }
        Ok(())
    }
}

/// Each node's decided prefix and durable decided prefix as last seen, with its incarnation.
#[derive(Debug, Default)]
pub struct DecidedPrefixGrows {
    seen: Vec<Option<Seen>>,
}

/// What [`DecidedPrefixGrows`] last saw of one node.
#[derive(Clone, Copy, Debug)]
struct Seen {
    decided: Slot,
    durable: Slot,
    /// `None` while the node is down.
    incarnation: Option<u64>,
}

impl<S: StateMachine + Default> ClusterInvariant<MultiPaxos<S>> for DecidedPrefixGrows {
    fn name(&self) -> &'static str {
        "decided-prefix-grows"
    }

    fn check(
        &mut self,
        nodes: &[Option<&MultiPaxos<S>>],
        stepped: NodeId,
        _effects: &[EffectOf<MultiPaxos<S>>],
    ) -> Result<(), Violation> {
        if self.seen.len() < nodes.len() {
            self.seen.resize(nodes.len(), None);
        }
        for (at, node) in nodes.iter().enumerate() {
            let Some(node) = node else {
                if let Some(seen) = &mut self.seen[at] {
                    seen.incarnation = None;
                }
                continue;
            };
            let now = Seen {
                decided: node.decided(),
                durable: node.durable().decided,
                incarnation: Some(node.incarnation()),
            };
            if let Some(before) = self.seen[at] {
                // While up, the decided prefix never shrinks; across a crash (seen or not: a
                // crash and restart may fall between two checks) only what was durable must
                // survive.
                let restarted = before.incarnation != now.incarnation;
                let floor = if restarted {
                    before.durable
                } else {
                    before.decided
                };
                if now.decided < floor {
                    return Err(Violation::on_node(
                        "decided-prefix-grows",
                        NodeId::try_from(at).unwrap_or(stepped),
                        format!(
                            "decided prefix fell from {floor} to {}{}",
                            now.decided,
                            if restarted { " across a restart" } else { "" }
                        ),
                    ));
                }
            }
            self.seen[at] = Some(now);
        }
        Ok(())
    }
}

/// No two nodes apply different commands at one slot: the protocol-independent checker of
/// `concord-core`, which reads only `Apply` effects.
pub use concord_core::StateMachineSafety;

/// The digest of every snapshot taken or installed, by slot.
#[derive(Debug, Default)]
pub struct SnapshotsAgree {
    digests: BTreeMap<Slot, (u64, NodeId)>,
}

impl<S: StateMachine + Default> ClusterInvariant<MultiPaxos<S>> for SnapshotsAgree {
    fn name(&self) -> &'static str {
        "snapshots-agree"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&MultiPaxos<S>>],
        stepped: NodeId,
        effects: &[EffectOf<MultiPaxos<S>>],
    ) -> Result<(), Violation> {
        for effect in effects {
            let Effect::Persist {
                write: Write::Snapshot(snapshot),
                ..
            } = effect
            else {
                continue;
            };
            let here = digest(&snapshot.data);
            match self.digests.get(&snapshot.slot) {
                None => {
                    self.digests.insert(snapshot.slot, (here, stepped));
                }
                Some(&(known, by)) if known != here => {
                    return Err(Violation::on_node(
                        "snapshots-agree",
                        stepped,
                        format!(
                            "snapshot at slot {} has digest {here:#x}; node {by}'s has {known:#x}",
                            snapshot.slot
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
