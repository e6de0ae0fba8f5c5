//! Ballot leader election with quorum connectivity (Ng, Haridi, Carbone, "Omni-Paxos: Breaking
//! the Barriers of Partial Connectivity", EuroSys 2023, §4 "BLE").
//!
//! Every node runs heartbeat rounds of `Config::election_round`. At the start of a round it
//! asks every peer ([`Message::HeartbeatRequest`]); a peer answers at once with the ballot it
//! stands with, whether it is quorum-connected, and the leader it heard directly in its last
//! round ([`Message::HeartbeatReply`]). A reply proves the link works both ways. At the end of
//! the round the node knows which peers it is connected to and decides:
//!
//! 1. **Quorum connectivity.** It is *quorum-connected* when the peers that answered, with
//!    itself, make a quorum. A node that is not never raises its ballot and never campaigns;
//!    a leader (or candidate) that is not steps down (as Raft's CheckQuorum).
//! 2. **Is a leader alive?** A node that leads (or campaigns) at the ballot it stands with and
//!    is quorum-connected says so in its replies (`follows` names its own ballot). A leader is
//!    alive for a node that hears that claim directly, or hears a peer that heard it directly
//!    (one relayed hop: what keeps a chained `a – b – c` cluster on `a` instead of letting `c`
//!    depose it). Two quorum-connected nodes share a peer (two quorums intersect), so a
//!    quorum-connected node always hears of a quorum-connected leader, directly or through
//!    that peer, and never deposes it. A live leader is kept even when a higher ballot is about
//!    (stickiness). A leader just elected is given [`CAMPAIGN_GRACE`] rounds to start
//!    claiming, as long as it stands with the elected ballot and is quorum-connected.
//! 3. **Elect.** Without a live leader, the highest ballot among quorum-connected nodes (the
//!    paper's `max(ballots of qc heartbeats)`) becomes the leader; if that is the node's own,
//!    it campaigns (Paxos phase 1 at that ballot). If the highest ballot is no higher than the
//!    dead leader's, the node raises its own above it (the paper's `increment`), so that one
//!    round later the highest quorum-connected node takes over. Under leases
//!    (`ReadMode::Lease`), a node still bound by a lease it acknowledged waits a round before
//!    it campaigns (the `read` module).
//!
//! Unlike randomized election timeouts, the ballots order the candidates, so duels do not
//! recur; unlike Raft, the new leader need not have the longest log: Paxos phase 1 brings it
//! up to date, so a quorum-connected node with an outdated log can still lead (the paper's
//! constrained-election scenario).

use std::collections::{BTreeMap, BTreeSet};

use concord_core::{Env, NodeId, StateMachine, Time};

use super::node::{MultiEffect, Phase};
use super::{Message, MultiPaxos};
use crate::Ballot;

/// Heartbeat rounds a newly elected leader has to start campaigning before it is taken for
/// dead: rounds are not synchronized, so it may end its round (and learn it won) up to a round
/// after the nodes that elected it, and a reply may have left before that.
pub(super) const CAMPAIGN_GRACE: u64 = 3;

/// What one peer answered in the current round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Heartbeat {
    ballot: Ballot,
    quorum_connected: bool,
    follows: Option<Ballot>,
}

impl Heartbeat {
    /// A heartbeat reply's fields as the election keeps them.
    pub(super) fn new(ballot: Ballot, quorum_connected: bool, follows: Option<Ballot>) -> Self {
        Heartbeat {
            ballot,
            quorum_connected,
            follows,
        }
    }
}

/// The volatile state of ballot leader election (rebuilt from nothing after a restart: a
/// restarted node raises no ballot before it has heard a quorum).
#[derive(Clone, Debug)]
pub(super) struct LeaderElection {
    /// The current heartbeat round.
    round: u64,
    /// When the current round ends (local time).
    pub(super) round_deadline: Time,
    /// The ballot this node stands with; raised only while quorum-connected.
    own: Ballot,
    /// The elected leader, as this node sees it.
    leader: Option<Ballot>,
    /// The round in which `leader` was elected by this node's own choice.
    elected_round: u64,
    /// The replies of the current round.
    replies: BTreeMap<NodeId, Heartbeat>,
    /// The peers that answered in the last complete round.
    connected: BTreeSet<NodeId>,
    /// Whether the last complete round heard a quorum.
    quorum_connected: bool,
    /// The leader heard directly (or this node itself) in the last complete round.
    heard_leader: Option<Ballot>,
}

impl LeaderElection {
    /// Fresh state standing with `own`; the first round ends at `round_deadline`.
    pub(super) fn new(own: Ballot, round_deadline: Time) -> Self {
        LeaderElection {
            round: 0,
            round_deadline,
            own,
            leader: None,
            elected_round: 0,
            replies: BTreeMap::new(),
            connected: BTreeSet::new(),
            quorum_connected: false,
            heard_leader: None,
        }
    }
}

impl LeaderElection {
    /// Starts over standing with `own` (a new configuration): no leader, no connectivity known.
    /// The round count goes on, so late replies to an earlier round are not taken for new ones.
    pub(super) fn restart(&mut self, own: Ballot) {
        *self = LeaderElection {
            round: self.round,
            ..LeaderElection::new(own, self.round_deadline)
        };
    }
}

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// The peers that answered this node's heartbeats in the last complete round.
    pub fn connected(&self) -> &BTreeSet<NodeId> {
        &self.election.connected
    }

    /// Whether this node heard a quorum (itself included) in the last complete round.
    pub fn is_quorum_connected(&self) -> bool {
        self.election.quorum_connected
    }

    /// The leader ballot leader election settled on, as this node sees it.
    pub fn elected(&self) -> Option<Ballot> {
        self.election.leader
    }

    /// The ballot this node stands with in leader election.
    pub fn candidacy(&self) -> Ballot {
        self.election.own
    }

    pub(super) fn on_heartbeat_request(
        &mut self,
        from: NodeId,
        round: u64,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        let quorum_connected = self.election.quorum_connected;
        let follows = if quorum_connected && self.leads_own_ballot() {
            Some(self.election.own)
        } else {
            self.election.heard_leader
        };
        let reply = Message::HeartbeatReply {
            round,
            ballot: self.election.own,
            quorum_connected,
            follows,
        };
        Self::send(from, reply, effects);
    }

    pub(super) fn on_heartbeat_reply(&mut self, from: NodeId, round: u64, heartbeat: Heartbeat) {
        if round == self.election.round && self.configuration.contains(from) {
            self.max_round = self.max_round.max(heartbeat.ballot.round);
            self.election.replies.insert(from, heartbeat);
        }
    }

    /// Whether this node leads (or is campaigning) at the ballot it stands with.
    fn leads_own_ballot(&self) -> bool {
        self.phase != Phase::Follower && self.ballot == Some(self.election.own)
    }

    /// The end of a heartbeat round: connectivity, the leader's liveness, and maybe a
    /// candidacy; then the next round starts.
    pub(super) fn end_round(&mut self, env: &mut Env<'_>, effects: &mut Vec<MultiEffect<S>>) {
        if !self.is_member() {
            // Idle: not a member of its configuration, so never a candidate.
            if self.phase != Phase::Follower {
                self.become_follower(effects);
            }
            self.election.restart(self.election.own);
            self.election.round += 1;
            self.election.round_deadline = env.now.saturating_add(self.config.election_round);
            return;
        }
        let replies = std::mem::take(&mut self.election.replies);
        let connected: BTreeSet<NodeId> = replies.keys().copied().collect();
        let quorum_connected = connected.len() + 1 >= self.connectivity_quorum();
        let own = self.election.own;
        let leader = self.election.leader;
        // Claims of leadership heard directly: this node's own, or a peer's at its own ballot.
        let direct = if quorum_connected && self.leads_own_ballot() {
            Some(own)
        } else {
            replies
                .iter()
                .filter(|(from, r)| {
                    r.quorum_connected && r.follows == Some(r.ballot) && r.ballot.node == **from
                })
                .map(|(_, r)| r.ballot)
                .max()
        };
        let relayed = replies.values().filter_map(|r| r.follows).max();
        let in_grace = self.election.round < self.election.elected_round + CAMPAIGN_GRACE;
        let campaigning = leader.filter(|l| {
            in_grace
                && replies
                    .get(&l.node)
                    .is_some_and(|r| r.ballot == *l && r.quorum_connected)
        });
        self.election.connected = connected;
        self.election.quorum_connected = quorum_connected;
        self.election.heard_leader = direct;
        if !quorum_connected {
            if self.phase != Phase::Follower {
                self.become_follower(effects);
            }
        } else if let Some(live) = direct.max(relayed).max(campaigning) {
            self.election.leader = Some(live);
            if self.phase == Phase::Candidate {
                self.retransmit_prepare(effects);
            }
        } else {
            let top = replies
                .values()
                .filter(|r| r.quorum_connected)
                .map(|r| r.ballot)
                .fold(own, Ballot::max);
            if Some(top) > leader {
                // Under a lease this node acknowledged, its own candidacy waits a round.
                if top != own || !self.lease_guarded(env.now) {
                    self.election.leader = Some(top);
                    self.election.elected_round = self.election.round;
                    if top == own {
                        self.campaign(env, effects);
                    }
                }
            } else {
                let above = leader
                    .map_or(0, |l| l.round)
                    .max(top.round)
                    .max(self.max_round);
                let epoch = self.configuration.epoch;
                self.election.own = Ballot::in_epoch(epoch, above.saturating_add(1), self.id);
            }
        }
        self.start_round(env, effects);
    }

    fn start_round(&mut self, env: &mut Env<'_>, effects: &mut Vec<MultiEffect<S>>) {
        self.election.round += 1;
        self.election.round_deadline = env.now.saturating_add(self.config.election_round);
        let round = self.election.round;
        for to in self.followers() {
            Self::send(to, Message::HeartbeatRequest { round }, effects);
        }
    }

    /// Paxos phase 1 at the ballot this node stands with, raised first above every round seen
    /// (raising keeps it the highest, so the election's choice stands).
    fn campaign(&mut self, env: &mut Env<'_>, effects: &mut Vec<MultiEffect<S>>) {
        let epoch = self.configuration.epoch;
        let mut ballot = self.election.own;
        if ballot.epoch != epoch || ballot.round <= self.max_round {
            ballot = Ballot::in_epoch(epoch, self.max_round, self.id).next_for(self.id);
        }
        self.election.own = ballot;
        self.election.leader = Some(ballot);
        self.start_election(env, ballot, effects);
    }
}

#[cfg(test)]
impl<S: StateMachine + Default> MultiPaxos<S> {
    /// Makes the node stand with `ballot` (tests build "a node with a higher ballot").
    pub(super) fn stand_with(&mut self, ballot: Ballot) {
        self.election.own = ballot;
    }
}
