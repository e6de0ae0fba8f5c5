//! Process and real-time order between transactions, as extra edge kinds.
//!
//! Process order links each transaction to its process's next one. Real-time order links `T1`
//! to `T2` when `T1` completed `ok` before `T2` was invoked; only its transitive reduction is
//! built, as Elle does: a transaction invoked links from the *frontier*, the completed
//! transactions no later completion is known to follow, so the edges number about the
//! transactions times the concurrency rather than its square. Failed transactions did not
//! happen and take no part; a transaction of unknown outcome has no completion, so nothing
//! follows it in real time.

use std::collections::{HashMap, VecDeque};

use crate::txn::graph::{Edge, EdgeKind, TxnId};
use crate::txn::transaction::{Status, Transactions};

/// Adds an edge from each transaction to its process's next transaction.
pub fn process_edges(parsed: &Transactions, edges: &mut Vec<Edge>) {
    let mut last: HashMap<u64, TxnId> = HashMap::new();
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status == Status::Fail {
            continue;
        }
        let id = id as TxnId;
        if let Some(previous) = last.insert(txn.process, id) {
            edges.push(Edge {
                from: previous,
                to: id,
                kind: EdgeKind::Process,
                why: None,
            });
        }
    }
}

/// Adds the transitive reduction of real-time order.
pub fn realtime_edges(parsed: &Transactions, edges: &mut Vec<Edge>) {
    // (history position, is a completion, transaction)
    let mut events: Vec<(usize, bool, TxnId)> = Vec::with_capacity(parsed.txns.len() * 2);
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status == Status::Fail {
            continue;
        }
        events.push((txn.index, false, id as TxnId));
        if let (Status::Ok, Some(completion)) = (txn.status, txn.completion) {
            events.push((completion, true, id as TxnId));
        }
    }
    events.sort_unstable();
    // The frontier, with the sequence number each entry got when it joined; entries join in
    // order, so the frontier is sorted by it.
    let mut frontier: VecDeque<(u64, TxnId)> = VecDeque::new();
    let mut joined = 0u64;
    // What the frontier's next sequence number was when each transaction was invoked.
    let mut seen_at: Vec<u64> = vec![0; parsed.txns.len()];
    for (_, completion, id) in events {
        if completion {
            // Everything on the frontier when `id` was invoked precedes it; `id` covers them.
            while frontier
                .front()
                .is_some_and(|&(sequence, _)| sequence < seen_at[id as usize])
            {
                frontier.pop_front();
            }
            frontier.push_back((joined, id));
            joined += 1;
        } else {
            seen_at[id as usize] = joined;
            edges.extend(frontier.iter().map(|&(_, before)| Edge {
                from: before,
                to: id,
                kind: EdgeKind::Realtime,
                why: None,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use crate::txn::transaction::transactions;
    use crate::txn::Workload;

    fn parsed(events: &[(u64, &str)]) -> Transactions {
        let text: String = events
            .iter()
            .enumerate()
            .map(|(time, (process, kind))| {
                format!("{{\"process\":{process},\"type\":\"{kind}\",\"f\":\"txn\",\"value\":[],\"time\":{time}}}\n")
            })
            .collect();
        transactions(
            &History::read_jsonl(text.as_bytes()).unwrap(),
            Workload::ListAppend,
        )
        .unwrap()
    }

    fn pairs(edges: &[Edge]) -> Vec<(TxnId, TxnId)> {
        let mut pairs: Vec<_> = edges.iter().map(|e| (e.from, e.to)).collect();
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn realtime_order_is_built_without_transitive_edges() {
        // T0 and T1 overlap; both complete before T2; T2 completes before T3.
        let parsed = parsed(&[
            (0, "invoke"),
            (1, "invoke"),
            (0, "ok"),
            (1, "ok"),
            (0, "invoke"),
            (0, "ok"),
            (1, "invoke"),
            (1, "ok"),
        ]);
        let mut edges = Vec::new();
        realtime_edges(&parsed, &mut edges);
        // No 0 -> 3 nor 1 -> 3: they pass through 2.
        assert_eq!(pairs(&edges), [(0, 2), (1, 2), (2, 3)]);
        let mut edges = Vec::new();
        process_edges(&parsed, &mut edges);
        assert_eq!(pairs(&edges), [(0, 2), (1, 3)]);
    }

    #[test]
    fn unknown_outcomes_precede_nothing_and_failures_take_no_part() {
        let parsed = parsed(&[
            (0, "invoke"),
            (0, "info"),
            (1, "invoke"),
            (1, "fail"),
            (2, "invoke"),
            (2, "ok"),
        ]);
        let mut edges = Vec::new();
        realtime_edges(&parsed, &mut edges);
        assert!(edges.is_empty(), "{edges:?}");
    }
}
