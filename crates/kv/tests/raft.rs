//! `RaftNode<KvStore>` replicates the database: three nodes driven by hand in virtual time,
//! one of them cut off long enough to need a snapshot (the store's `snapshot`/`restore`
//! travelling in InstallSnapshot chunks). Every replica ends with the same digest.

use std::collections::VecDeque;

use concord_core::time::MILLISECOND;
use concord_core::{seeded_rng, Effect, Env, Input, Node, NodeId, RequestId, Rng, Time};
use concord_kv::{
    Command, KvStore, LeaseGrantResponse, Output, PutRequest, Query, RangeRequest, ResponseHeader,
    TxnRequest,
};
use concord_raft::{Config, Message, RaftNode, Request, Response, Storage};

type KvNode = RaftNode<KvStore>;

struct Harness {
    nodes: Vec<KvNode>,
    storage: Vec<Storage<Command>>,
    rngs: Vec<Rng>,
    now: Time,
    network: VecDeque<(NodeId, NodeId, Message<Command>)>,
    isolated: Option<NodeId>,
    replies: Vec<(RequestId, Response<Output>)>,
    next_request: RequestId,
}

impl Harness {
    fn new(size: u64, config: &Config) -> Self {
        let members: Vec<NodeId> = (0..size).collect();
        let mut rngs: Vec<Rng> = (0..size).map(|id| seeded_rng(7, id)).collect();
        let storage = vec![Storage::default(); size as usize];
        let nodes = members
            .iter()
            .map(|&id| {
                KvNode::restore(
                    id,
                    &members,
                    config,
                    &storage[id as usize],
                    0,
                    &mut rngs[id as usize],
                )
            })
            .collect();
        Self {
            nodes,
            storage,
            rngs,
            now: 0,
            network: VecDeque::new(),
            isolated: None,
            replies: Vec::new(),
            next_request: 1,
        }
    }

    fn cut(&self, from: NodeId, to: NodeId) -> bool {
        self.isolated
            .is_some_and(|isolated| from == isolated || to == isolated)
    }

    /// Steps a node; writes become durable at once and are confirmed right after the step.
    fn step(&mut self, id: NodeId, input: Input<Message<Command>, Request<Command, Query>>) {
        let index = id as usize;
        let mut effects = Vec::new();
        let mut env = Env {
            now: self.now,
            rng: &mut self.rngs[index],
        };
        self.nodes[index].step(&mut env, input, &mut effects);
        self.nodes[index].check_invariants().unwrap();
        let mut last_token = None;
        for effect in effects {
            match effect {
                Effect::Send { to, message } => {
                    if !self.cut(id, to) {
                        self.network.push_back((id, to, message));
                    }
                }
                Effect::Persist { token, write } => {
                    KvNode::apply_write(&mut self.storage[index], &write);
                    last_token = Some(token);
                }
                Effect::Apply { .. } => {}
                Effect::Reply { id, response } => self.replies.push((id, response)),
            }
        }
        if let Some(token) = last_token {
            self.step(id, Input::Persisted { token });
        }
    }

    /// Runs the cluster for `duration` of virtual time.
    fn run_for(&mut self, duration: Time) {
        let end = self.now + duration;
        for _ in 0..1_000_000 {
            let mut delivered = 0;
            while let Some((from, to, message)) = self.network.pop_front() {
                if !self.cut(from, to) {
                    self.step(to, Input::Message { from, message });
                }
                delivered += 1;
                assert!(delivered < 1_000_000, "message storm");
            }
            let next = self
                .nodes
                .iter()
                .filter_map(Node::next_deadline)
                .min()
                .unwrap_or(end)
                .max(self.now);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            for id in 0..self.nodes.len() as NodeId {
                if self.nodes[id as usize]
                    .next_deadline()
                    .is_some_and(|d| d <= self.now)
                {
                    self.step(id, Input::Tick);
                }
            }
        }
        panic!("the cluster never went quiet");
    }

    fn leader(&self) -> NodeId {
        let leaders: Vec<NodeId> = (0..self.nodes.len() as NodeId)
            .filter(|&id| self.nodes[id as usize].is_leader() && Some(id) != self.isolated)
            .collect();
        assert_eq!(leaders.len(), 1, "one leader among the connected nodes");
        leaders[0]
    }

    fn request(&mut self, request: Request<Command, Query>) -> Output {
        let id = self.next_request;
        self.next_request += 1;
        let leader = self.leader();
        self.step(leader, Input::Request { id, request });
        self.run_for(200 * MILLISECOND);
        let (_, response) = self
            .replies
            .iter()
            .find(|(reply, _)| *reply == id)
            .expect("the request was answered");
        match response {
            Response::Applied { output, .. } | Response::Read { output, .. } => output.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn propose(&mut self, command: Command) -> Output {
        self.request(Request::Propose(command))
    }
}

#[test]
fn a_three_node_cluster_replicates_the_store_and_catches_up_by_snapshot() {
    let config = Config {
        snapshot_threshold: 8,
        snapshot_chunk_size: 64,
        ..Config::default()
    };
    config.validate().unwrap();
    let mut cluster = Harness::new(3, &config);
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader();

    let granted = cluster.propose(Command::LeaseGrant { id: 42, ttl: 5 });
    assert_eq!(
        granted,
        Output::LeaseGrant(LeaseGrantResponse {
            header: ResponseHeader { revision: 1 },
            id: 42,
            ttl: 5
        })
    );
    cluster.propose(Command::Put(PutRequest {
        lease: 42,
        ..PutRequest::new("leased", "x")
    }));

    cluster.isolated = Some((leader + 1) % 3);
    for i in 0..30 {
        let output = cluster.propose(Command::Put(PutRequest::new(format!("key/{i:02}"), "v")));
        assert!(matches!(output, Output::Put(_)), "{output:?}");
    }
    let txn = cluster.propose(Command::Txn(TxnRequest::default()));
    assert!(matches!(txn, Output::Txn(ref response) if response.succeeded));
    cluster.propose(Command::LeaseRevoke { id: 42 });

    let read = cluster.request(Request::Read(Query::Range(RangeRequest {
        count_only: true,
        ..RangeRequest::range("\0", "\0")
    })));
    let Output::Range(read) = read else {
        panic!("{read:?}")
    };
    assert_eq!(read.count, 30, "the leased key was revoked");
    assert_eq!(read.header.revision, 33);

    let lagging = cluster.isolated.take().unwrap();
    assert!(cluster.storage[lagging as usize].snapshot.is_none());
    cluster.run_for(3_000 * MILLISECOND);
    assert!(
        cluster.storage[lagging as usize].snapshot.is_some(),
        "the lagging node caught up by snapshot"
    );
    let digests: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| node.state_machine().digest())
        .collect();
    assert!(
        digests.iter().all(|digest| *digest == digests[0]),
        "replicas differ: {digests:?}"
    );
    for node in &cluster.nodes {
        node.state_machine().check_invariants().unwrap();
        assert_eq!(node.state_machine().revision(), 33);
    }
}
