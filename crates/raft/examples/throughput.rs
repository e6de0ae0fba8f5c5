//! Measures committed proposals per second of wall time for an in-process 5-node cluster with
//! zero network latency and instant persistence:
//! `cargo run --release -p concord-raft --example throughput -- [PROPOSALS] [WINDOW]`.
#![allow(clippy::disallowed_methods)] // a driver may read the wall clock; the core does not

use std::collections::VecDeque;

use concord_core::{seeded_rng, Effect, Env, Input, KvOperation, KvStateMachine, Node, Rng};
use concord_raft::{Config, Message, RaftNode, Request, Response, Storage};

type Raft = RaftNode<KvStateMachine>;
type Event = (
    u64,
    Input<Message<KvOperation>, Request<KvOperation, KvOperation>>,
);

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(200_000);
    let window = args.get(1).copied().unwrap_or(1_000);
    let size = 5;
    let members: Vec<u64> = (0..size).collect();
    let config = Config::default();
    let mut rngs: Vec<Rng> = members.iter().map(|&id| seeded_rng(1, id)).collect();
    let mut nodes: Vec<Raft> = members
        .iter()
        .map(|&id| {
            Raft::restore(
                id,
                &members,
                &config,
                &Storage::default(),
                0,
                &mut rngs[id as usize],
            )
        })
        .collect();
    let mut now = 0;
    let mut queue: VecDeque<Event> = VecDeque::new();
    let mut effects = Vec::new();
    let (mut proposed, mut applied, mut steps) = (0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    while applied < total {
        let leader = nodes.iter().find(|n| n.is_leader()).map(|n| n.id());
        if let Some(leader) = leader {
            while proposed - applied < window && proposed < total {
                proposed += 1;
                let command = KvOperation::Write {
                    key: format!("k{}", proposed % 64),
                    value: proposed as i64,
                };
                queue.push_back((
                    leader,
                    Input::Request {
                        id: proposed,
                        request: Request::Propose(command),
                    },
                ));
            }
        }
        let Some((id, input)) = queue.pop_front() else {
            now = nodes
                .iter()
                .filter_map(|n| n.next_deadline())
                .min()
                .unwrap_or(now)
                .max(now);
            for node in 0..size {
                queue.push_back((node, Input::Tick));
            }
            continue;
        };
        let index = id as usize;
        let mut env = Env {
            now,
            rng: &mut rngs[index],
        };
        nodes[index].step(&mut env, input, &mut effects);
        steps += 1;
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => {
                    queue.push_back((to, Input::Message { from: id, message }))
                }
                Effect::Persist { token, .. } => queue.push_back((id, Input::Persisted { token })),
                Effect::Reply {
                    response: Response::Applied { .. },
                    ..
                } => applied += 1,
                Effect::Reply { .. } => proposed -= 1,
                Effect::Apply { .. } => {}
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{applied} proposals committed and applied in {wall:.2}s: {:.0} proposals/s, {steps} steps ({:.0} steps/s)",
        applied as f64 / wall,
        steps as f64 / wall
    );
}
