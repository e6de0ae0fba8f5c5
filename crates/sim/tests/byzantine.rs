//! The Byzantine hook rewrites a node's outgoing messages; the node itself stays honest.

mod common;

use std::sync::Arc;

use common::{toy, ToyMessage, ToyNode, PRIMARY};
use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{NodeId, Rng};
use concord_sim::{
    ByzantineBehavior, ByzantineKind, Corruptor, NemesisAction, Outgoing, SimError, Simulation,
};

fn byzantine_primary(kind: ByzantineKind) -> Simulation<ToyNode> {
    let mut sim = toy(4, 21);
    sim.set_corruptor(Corruptor(Arc::new(
        |message: &mut ToyMessage, _: &mut Rng| {
            if let ToyMessage::Heartbeat { sequence } = message {
                *sequence = 9_999;
            }
        },
    )));
    sim.apply_action(&NemesisAction::Byzantine {
        nodes: vec![PRIMARY],
        behavior: kind,
    })
    .unwrap();
    // 100 heartbeat rounds, all delivered.
    sim.run_for(10 * SECOND + 50 * MILLISECOND).unwrap();
    sim
}

fn heartbeats(sim: &Simulation<ToyNode>, node: NodeId) -> Vec<(NodeId, Vec<u64>)> {
    sim.node(node)
        .unwrap()
        .heartbeats
        .iter()
        .map(|(from, seen)| (*from, seen.clone()))
        .collect()
}

#[test]
fn drop_sends_nothing() {
    let sim = byzantine_primary(ByzantineKind::Drop);
    assert!(sim.is_byzantine(PRIMARY));
    assert!(heartbeats(&sim, 1).is_empty());
    assert_eq!(sim.stats().messages_sent, 300);
}

#[test]
fn duplicate_sends_everything_twice() {
    let sim = byzantine_primary(ByzantineKind::Duplicate);
    let seen = &heartbeats(&sim, 1)[0].1;
    assert_eq!(seen.len(), 200);
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn replay_resends_older_messages() {
    let sim = byzantine_primary(ByzantineKind::Replay);
    let seen = &heartbeats(&sim, 2)[0].1;
    assert_eq!(seen.len(), 100);
    let out_of_order = seen.windows(2).filter(|w| w[1] <= w[0]).count();
    assert!(out_of_order > 10, "{seen:?}");
}

#[test]
fn forge_claims_another_sender() {
    let sim = byzantine_primary(ByzantineKind::Forge);
    let claimed: Vec<NodeId> = heartbeats(&sim, 1).iter().map(|(from, _)| *from).collect();
    assert!(!claimed.contains(&PRIMARY));
    assert!(!claimed.contains(&1), "never claims to be the receiver");
    assert_eq!(claimed, vec![2, 3]);
}

#[test]
fn corrupt_uses_the_protocol_corruptor() {
    let sim = byzantine_primary(ByzantineKind::Corrupt);
    let seen = &heartbeats(&sim, 3)[0].1;
    assert!(seen.iter().all(|&s| s == 9_999));
    // The Byzantine node's own state is untouched.
    assert_eq!(sim.node(PRIMARY).unwrap().heartbeat_sequence, 100);
}

#[test]
fn corrupt_without_a_corruptor_and_over_budget_are_errors() {
    let mut sim = toy(4, 1);
    let corrupt = NemesisAction::Byzantine {
        nodes: vec![1],
        behavior: ByzantineKind::Corrupt,
    };
    assert_eq!(sim.apply_action(&corrupt), Err(SimError::NoCorruptor));
    let two = NemesisAction::Byzantine {
        nodes: vec![1, 2],
        behavior: ByzantineKind::Drop,
    };
    assert_eq!(
        sim.apply_action(&two),
        Err(SimError::ByzantineBudget {
            max: 1,
            requested: 2
        })
    );
}

/// A user-supplied behaviour: send every heartbeat to node 3 instead.
#[derive(Debug)]
struct Redirect;

impl ByzantineBehavior<ToyNode> for Redirect {
    fn name(&self) -> &'static str {
        "redirect"
    }

    fn on_send(
        &mut self,
        from: NodeId,
        _to: NodeId,
        message: ToyMessage,
        _nodes: usize,
        _rng: &mut Rng,
    ) -> Vec<Outgoing<ToyMessage>> {
        vec![Outgoing {
            to: 3,
            claimed_from: from,
            message,
        }]
    }
}

#[test]
fn user_behaviours_plug_in_and_can_be_switched_off() {
    let mut sim = toy(4, 2);
    sim.set_byzantine(PRIMARY, Some(Box::new(Redirect)))
        .unwrap();
    sim.run_for(SECOND + 50 * MILLISECOND).unwrap();
    assert!(heartbeats(&sim, 1).is_empty());
    assert_eq!(heartbeats(&sim, 3)[0].1.len(), 30);
    sim.apply_action(&NemesisAction::ByzantineOff { nodes: None })
        .unwrap();
    sim.run_for(SECOND).unwrap();
    assert_eq!(heartbeats(&sim, 1)[0].1.len(), 10);
}
