//! The dependency graph of transactions (Adya's direct serialization graph, plus process and
//! real-time order), its strongly connected components (Tarjan), and the search for the
//! smallest cycle of each anomaly class inside a component: a breadth-first search over
//! (transaction, what the path has used so far), restricted to the edge kinds the class allows,
//! as Elle does (Kingsbury & Alvaro 2020, §4.3).

use std::fmt;

use serde::Serialize;

use crate::txn::transaction::{KeyId, Value};

/// A transaction's position in [`crate::txn::transaction::Transactions::txns`].
pub type TxnId = u32;

/// The kind of a dependency edge `T1 -> T2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Write-write: T2 installed the version of a key right after T1's.
    Ww,
    /// Write-read: T2 read the version of a key T1 installed.
    Wr,
    /// Read-write (anti-dependency): T1 read a version of a key, T2 installed the next one.
    Rw,
    /// Process order: T2 is the next transaction of T1's process.
    Process,
    /// Real-time order: T1 completed before T2 was invoked.
    Realtime,
}

impl EdgeKind {
    /// The kind's name: `ww`, `wr`, `rw`, `process`, `realtime`.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::Ww => "ww",
            EdgeKind::Wr => "wr",
            EdgeKind::Rw => "rw",
            EdgeKind::Process => "process",
            EdgeKind::Realtime => "realtime",
        }
    }

    /// The bit a path sets when it uses this kind (`rw` edges are counted instead, `ww`
    /// edges are allowed by every class and not tracked).
    fn flag(self) -> u8 {
        match self {
            EdgeKind::Ww | EdgeKind::Rw => 0,
            EdgeKind::Wr => 1 << 2,
            EdgeKind::Process => 1 << 3,
            EdgeKind::Realtime => 1 << 4,
        }
    }
}

/// A version of a key: its initial state (empty list, `null` register) or the one a write made
/// (for list-append, the state ending in that element).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// The initial state.
    Initial,
    /// The state made by writing (appending) this value.
    Of(Value),
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Initial => f.write_str("init"),
            Version::Of(value) => write!(f, "{value}"),
        }
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Version::Initial => serializer.serialize_none(),
            Version::Of(value) => value.serialize(serializer),
        }
    }
}

/// Why a data edge exists: the key and the versions involved. For `ww`, `from` is the source's
/// version and `to` the target's next one; for `wr`, both are the version read; for `rw`,
/// `from` is the version the source read and `to` the target's later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Why {
    /// The key.
    pub key: KeyId,
    /// The earlier version.
    pub from: Version,
    /// The later version.
    pub to: Version,
}

/// One edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The source transaction.
    pub from: TxnId,
    /// The target transaction.
    pub to: TxnId,
    /// The kind.
    pub kind: EdgeKind,
    /// The justification of a data edge; `None` for process and real-time edges.
    pub why: Option<Why>,
}

/// A graph in compressed adjacency form: the edges sorted by source, one per (source, target,
/// kind), self-edges dropped.
#[derive(Debug)]
pub struct Graph {
    edges: Vec<Edge>,
    /// `edges[first[v]..first[v + 1]]` leave `v`.
    first: Vec<usize>,
}

impl Graph {
    /// Builds the graph over `nodes` transactions. Of several edges with the same source,
    /// target and kind, the first one given is kept.
    pub fn new(nodes: usize, mut edges: Vec<Edge>) -> Graph {
        edges.retain(|e| e.from != e.to);
        edges.sort_by_key(|e| (e.from, e.to, e.kind));
        edges.dedup_by_key(|e| (e.from, e.to, e.kind));
        let mut first = vec![0; nodes + 1];
        for edge in &edges {
            first[edge.from as usize + 1] += 1;
        }
        for v in 0..nodes {
            first[v + 1] += first[v];
        }
        Graph { edges, first }
    }

    /// How many transactions.
    pub fn nodes(&self) -> usize {
        self.first.len() - 1
    }

    /// Every edge.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    fn out(&self, v: TxnId) -> &[Edge] {
        &self.edges[self.first[v as usize]..self.first[v as usize + 1]]
    }

    /// The strongly connected components with more than one transaction (Tarjan's algorithm,
    /// iterative), each sorted.
    pub fn cycles_components(&self) -> Vec<Vec<TxnId>> {
        const UNSEEN: u32 = u32::MAX;
        let n = self.nodes();
        let mut order = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<TxnId> = Vec::new();
        let mut components = Vec::new();
        let mut counter = 0u32;
        // (node, next edge to look at)
        let mut calls: Vec<(TxnId, usize)> = Vec::new();
        for root in 0..n as TxnId {
            if order[root as usize] != UNSEEN {
                continue;
            }
            calls.push((root, self.first[root as usize]));
            order[root as usize] = counter;
            low[root as usize] = counter;
            counter += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            while let Some(&mut (v, ref mut next)) = calls.last_mut() {
                let end = self.first[v as usize + 1];
                if *next < end {
                    let w = self.edges[*next].to;
                    *next += 1;
                    if order[w as usize] == UNSEEN {
                        order[w as usize] = counter;
                        low[w as usize] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        calls.push((w, self.first[w as usize]));
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(order[w as usize]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent as usize] = low[parent as usize].min(low[v as usize]);
                }
                if low[v as usize] == order[v as usize] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w as usize] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort_unstable();
                        components.push(component);
                    }
                }
            }
        }
        components.sort();
        components
    }
}

/// Which cycles an anomaly class accepts: the edge kinds it may use, and what it must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CycleClass {
    /// The edge kinds the cycle may use.
    pub allowed: &'static [EdgeKind],
    /// Kinds of which the cycle must use at least one.
    pub required: &'static [EdgeKind],
    /// Exactly this many `rw` edges; `None`: at least `rw_at_least`.
    pub rw_exactly: Option<u8>,
    /// At least this many `rw` edges.
    pub rw_at_least: u8,
}

/// What a path has used: `rw` edges counted up to 2 (two bits), and a bit for each of `wr`,
/// process and real-time edges: 32 states.
type PathState = u8;
const RW_MASK: PathState = 0b11;

fn step(state: PathState, kind: EdgeKind) -> PathState {
    if kind == EdgeKind::Rw {
        let rw = (state & RW_MASK).saturating_add(1).min(2);
        (state & !RW_MASK) | rw
    } else {
        state | kind.flag()
    }
}

impl CycleClass {
    fn allows(&self, kind: EdgeKind) -> bool {
        self.allowed.contains(&kind)
    }

    fn can_still_accept(&self, state: PathState) -> bool {
        match self.rw_exactly {
            Some(n) => state & RW_MASK <= n,
            None => true,
        }
    }

    fn accepts(&self, state: PathState) -> bool {
        let rw = state & RW_MASK;
        let rw_ok = match self.rw_exactly {
            Some(n) => rw == n,
            None => rw >= self.rw_at_least,
        };
        rw_ok && self.required.iter().all(|&k| state & k.flag() == k.flag())
    }
}

/// Node-state pairs one class may visit in one component before the search for a smaller
/// cycle stops (the first cycle found is still reported).
pub const SEARCH_BUDGET: usize = 2_000_000;

/// Searches one component for the smallest cycle of `class`: a breadth-first search from every
/// transaction that has an edge of the class's rarest required kind, until the budget runs
/// out. Returns the edges of the cycle, in order.
pub fn smallest_cycle<'g>(
    graph: &'g Graph,
    component: &[TxnId],
    class: &CycleClass,
) -> Option<Vec<&'g Edge>> {
    let local = |v: TxnId| component.binary_search(&v).ok();
    let start_kind = class
        .required
        .first()
        .copied()
        .or_else(|| class.allowed.first().copied())?;
    let starts = component.iter().copied().filter(|&v| {
        graph
            .out(v)
            .iter()
            .any(|e| e.kind == start_kind && local(e.to).is_some())
    });
    const STATES: usize = 32;
    let mut seen = vec![0u32; component.len() * STATES];
    // the edge that reached (node, state) and the state before it
    let mut came_by: Vec<(u32, PathState)> = vec![(0, 0); component.len() * STATES];
    let mut stamp = 0u32;
    let mut visits = 0usize;
    let mut best: Option<Vec<&Edge>> = None;
    let mut queue: std::collections::VecDeque<(TxnId, PathState)> = Default::default();
    for start in starts {
        if visits > SEARCH_BUDGET && (best.is_some() || visits > 10 * SEARCH_BUDGET) {
            break;
        }
        if best.as_ref().is_some_and(|b| b.len() <= 2) {
            break;
        }
        stamp += 1;
        queue.clear();
        queue.push_back((start, 0));
        let mut found: Option<PathState> = None;
        'search: while let Some((v, state)) = queue.pop_front() {
            visits += 1;
            for (offset, edge) in graph.out(v).iter().enumerate() {
                if !class.allows(edge.kind) {
                    continue;
                }
                let Some(w) = local(edge.to) else { continue };
                let next = step(state, edge.kind);
                if !class.can_still_accept(next) {
                    continue;
                }
                let slot = w * STATES + next as usize;
                if edge.to == start {
                    // a path back to the start ends there
                    if class.accepts(next) {
                        came_by[slot] = ((graph.first[v as usize] + offset) as u32, state);
                        found = Some(next);
                        break 'search;
                    }
                    continue;
                }
                if seen[slot] == stamp {
                    continue;
                }
                seen[slot] = stamp;
                came_by[slot] = ((graph.first[v as usize] + offset) as u32, state);
                queue.push_back((edge.to, next));
            }
        }
        let Some(end_state) = found else { continue };
        let mut path = Vec::new();
        let (mut node, mut state) = (start, end_state);
        loop {
            let slot = local(node)? * STATES + state as usize;
            let (edge, before) = came_by[slot];
            let edge = &graph.edges[edge as usize];
            path.push(edge);
            node = edge.from;
            state = before;
            if node == start && state == 0 {
                break;
            }
        }
        path.reverse();
        let mut nodes: Vec<TxnId> = path.iter().map(|e| e.from).collect();
        nodes.sort_unstable();
        let simple = nodes.windows(2).all(|w| w[0] != w[1]);
        let shorter = match &best {
            Some(b) => path.len() < b.len(),
            None => true,
        };
        if simple && shorter {
            best = Some(path);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: TxnId, to: TxnId, kind: EdgeKind) -> Edge {
        Edge {
            from,
            to,
            kind,
            why: None,
        }
    }

    const G0: CycleClass = CycleClass {
        allowed: &[EdgeKind::Ww],
        required: &[],
        rw_exactly: Some(0),
        rw_at_least: 0,
    };
    const G_SINGLE: CycleClass = CycleClass {
        allowed: &[EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Rw],
        required: &[EdgeKind::Rw],
        rw_exactly: Some(1),
        rw_at_least: 1,
    };

    #[test]
    fn components_are_the_nontrivial_strongly_connected_sets() {
        let graph = Graph::new(
            6,
            vec![
                edge(0, 1, EdgeKind::Ww),
                edge(1, 2, EdgeKind::Ww),
                edge(2, 0, EdgeKind::Wr),
                edge(2, 3, EdgeKind::Ww),
                edge(3, 4, EdgeKind::Rw),
                edge(4, 3, EdgeKind::Rw),
                edge(5, 5, EdgeKind::Ww),
            ],
        );
        assert_eq!(graph.cycles_components(), vec![vec![0, 1, 2], vec![3, 4]]);
    }

    #[test]
    fn the_smallest_cycle_of_a_class_uses_only_its_kinds() {
        // 0 -ww-> 1 -ww-> 2 -ww-> 0 is a G0; 0 -rw-> 2 makes a shorter cycle, but not a G0.
        let graph = Graph::new(
            3,
            vec![
                edge(0, 1, EdgeKind::Ww),
                edge(1, 2, EdgeKind::Ww),
                edge(2, 0, EdgeKind::Ww),
                edge(0, 2, EdgeKind::Rw),
            ],
        );
        let component = [0, 1, 2];
        let g0 = smallest_cycle(&graph, &component, &G0).unwrap();
        assert_eq!(g0.len(), 3);
        assert!(g0.iter().all(|e| e.kind == EdgeKind::Ww));
        let single = smallest_cycle(&graph, &component, &G_SINGLE).unwrap();
        let kinds: Vec<EdgeKind> = single.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EdgeKind::Rw, EdgeKind::Ww]);
    }
}
