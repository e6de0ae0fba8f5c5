//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use concord_core::{Effect, Input, KvCommand, KvOperation};
use concord_raft::testing::{Cluster, KvEffect, KvMessage};
use concord_raft::{Config, Entry, HardState, Message, Payload, Storage, Write};

/// Plain Raft as in the paper: no pre-vote, no check-quorum.
pub fn paper_config() -> Config {
    Config {
        pre_vote: false,
        check_quorum: false,
        ..Config::default()
    }
}

/// The command a test puts at (`index`, `term`), so that equal positions hold equal commands.
pub fn command(index: u64, term: u64) -> KvCommand {
    KvOperation::Write {
        key: "k".into(),
        value: (index * 1000 + term) as i64,
    }
}

/// An entry carrying [`command`].
pub fn entry(index: u64, term: u64) -> Entry<KvCommand> {
    Entry {
        index,
        term,
        payload: Payload::Command(Arc::new(command(index, term))),
    }
}

/// Storage holding a log with the given terms (index 1 first) and the hard state `term`.
pub fn storage(terms: &[u64], term: u64) -> Storage<KvCommand> {
    Storage {
        hard_state: HardState {
            current_term: term,
            voted_for: None,
        },
        snapshot: None,
        entries: terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect(),
    }
}

/// The messages among `effects`, with their destinations.
pub fn sends(effects: &[KvEffect]) -> Vec<(u64, KvMessage)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

/// A short name for each effect, to assert their order.
pub fn kinds(effects: &[KvEffect]) -> Vec<&'static str> {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Send { .. } => "send",
            Effect::Persist {
                write: Write::HardState(_),
                ..
            } => "persist-hard-state",
            Effect::Persist {
                write: Write::Append { .. },
                ..
            } => "persist-append",
            Effect::Persist {
                write: Write::Snapshot(_),
                ..
            } => "persist-snapshot",
            Effect::Persist {
                write: Write::Compact(_),
                ..
            } => "persist-compact",
            Effect::Apply { .. } => "apply",
            Effect::Reply { .. } => "reply",
        })
        .collect()
}

/// The terms of a node's log entries in memory.
pub fn log_terms(node: &concord_raft::testing::KvNode) -> Vec<u64> {
    node.log().entries().iter().map(|e| e.term).collect()
}

/// A three-node cluster led by node 0, with its no-op and one write committed everywhere.
pub fn settled(config: Config) -> Cluster {
    let mut cluster = Cluster::new(3, config);
    cluster.elect(0);
    cluster.propose(0, "x", 1);
    cluster.deliver_all();
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    assert_eq!(cluster.node(1).commit_index(), 2);
    cluster
}

/// Makes leader 0 of [`settled`]'s cluster a follower at once, of the next term (the term
/// returned), with a transfer's vote request from node 2, which overrides stickiness.
pub fn depose_node_0(cluster: &mut Cluster) -> u64 {
    let term = cluster.node(0).current_term() + 1;
    let vote = Message::RequestVote {
        term,
        last_log_index: 2,
        last_log_term: 1,
        pre_vote: false,
        transfer: true,
    };
    cluster.step(
        0,
        Input::Message {
            from: 2,
            message: vote,
        },
    );
    assert!(!cluster.node(0).is_leader());
    term
}
