//! Causal consistency of register and key-value histories whose written values are unique per
//! key, by the bad patterns of Bouajjani, Enea, Guerraoui and Hamza ("On Verifying Causal
//! Consistency", POPL 2017).
//!
//! With unique values a read names the write it observed (its *read-from* edge, `rf`), so the
//! causal order is fixed: `co = (po ∪ rf)+`, where `po` is each process's own order. The paper
//! shows that such a history is causally consistent (its CC: every operation's causal past can
//! be ordered so that the operation's output is legal) iff none of these bad patterns occurs:
//!
//! * `CyclicCO`: `co` is cyclic;
//! * `WriteCOInitRead`: a read of the initial value has a write of its key in its causal past;
//! * `ThinAirRead`: a read returns a value no write of its key wrote;
//! * `WriteCORead`: a read observes `w1` while another write `w2` of its key lies between:
//!   `w1 →co w2 →co r`.
//!
//! Causal convergence (CCv: CC plus one arbitration order that every process's view agrees
//! with) forbids one more, `CyclicCF`: a cycle in `co ∪ cf`, where `w1 →cf w2` when `w1` and
//! `w2` write the same key and `w1` is in the causal past of a read of `w2`'s value (whoever
//! read `w2` had already seen `w1`, so `w1` is arbitrated before `w2`).
//!
//! Which operations count is shared with the session check ([`crate::registers`]). Unknown
//! (`info`) writes count only if some read observed them; such a write follows its process's
//! earlier operations in program order but does not precede its later ones (its effect may have
//! been delayed past them). Failed operations did not happen and are left out.
//!
//! The causal past of every operation is kept as a vector clock over chains (one per process,
//! plus one per unknown write that its process outlived): `co` restricted to a chain is a
//! prefix, so a clock entry is the length of that prefix. The clocks are computed in one pass
//! over the strongly connected components of `po ∪ rf` in topological order, so cycles are
//! handled too. Every pattern is then a few clock look-ups per read. The rules, what is
//! reported and the limits are in `docs/checkers.md`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::history::History;
use crate::linearizability::{operations, MalformedHistory, Operation};
use crate::registers::{Index, Observed, Role, Version};

/// At most this many violations of each pattern are reported with their witnesses; the rest
/// are counted.
pub const EXAMPLES: usize = 16;

/// How many breadth-first steps the search for one shortest cycle may take before it keeps the
/// shortest found so far.
const CYCLE_STEPS: usize = 4_000_000;

/// A bad pattern of Bouajjani et al. 2017.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Pattern {
    /// The causal order `(po ∪ rf)+` is cyclic.
    CyclicCO,
    /// A read of the initial value has a write of its key in its causal past.
    WriteCOInitRead,
    /// A read returns a value no write of its key wrote.
    ThinAirRead,
    /// A read observes `w1` although another write `w2` of its key is causally between them.
    WriteCORead,
    /// `co ∪ cf` is cyclic (breaks causal convergence, not causal consistency).
    CyclicCF,
}

impl Pattern {
    /// The pattern's name, as in the paper and the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::CyclicCO => "CyclicCO",
            Pattern::WriteCOInitRead => "WriteCOInitRead",
            Pattern::ThinAirRead => "ThinAirRead",
            Pattern::WriteCORead => "WriteCORead",
            Pattern::CyclicCF => "CyclicCF",
        }
    }

    /// Does the pattern break causal consistency (CC)? All but `CyclicCF` do; every pattern
    /// breaks causal convergence (CCv).
    pub fn breaks_causal_consistency(self) -> bool {
        self != Pattern::CyclicCF
    }
}

/// An edge of a witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Edge {
    /// Program order: the same process did the first operation, then the second.
    #[serde(rename = "po")]
    ProgramOrder,
    /// Read-from: the second operation read the value the first wrote.
    #[serde(rename = "rf")]
    ReadFrom,
    /// Conflict: both write one key and the first is in the causal past of a read of the
    /// second's value ([`Step::read`]).
    #[serde(rename = "cf")]
    Conflict,
}

impl Edge {
    /// The edge's short name: `po`, `rf` or `cf`.
    pub fn name(self) -> &'static str {
        match self {
            Edge::ProgramOrder => "po",
            Edge::ReadFrom => "rf",
            Edge::Conflict => "cf",
        }
    }
}

/// One operation of a witness and the edge that leads to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// The edge from the previous step's operation; `None` for the first step.
    pub via: Option<Edge>,
    /// The operation.
    pub operation: Operation,
    /// For a `cf` edge: the read of this write's value that the previous write is in the causal
    /// past of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<Operation>,
}

/// One occurrence of a bad pattern.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// The pattern.
    pub pattern: Pattern,
    /// The operations that form it: the cycle (`CyclicCO`, `CyclicCF`); the write and the read
    /// of the initial value (`WriteCOInitRead`); the read (`ThinAirRead`); the write observed,
    /// the write between and the read (`WriteCORead`).
    pub operations: Vec<Operation>,
    /// A shortest chain of edges that shows it: the cycle, from one operation back to itself,
    /// or the chain `w →co r`, or `w1 →co w2 →co r`. For `ThinAirRead`, the read alone.
    pub witness: Vec<Step>,
}

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No bad pattern of the model occurs.
    Consistent,
    /// Some does.
    Violated,
}

/// The result of checking a whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Causal consistency (CC): none of `CyclicCO`, `WriteCOInitRead`, `ThinAirRead`,
    /// `WriteCORead`.
    pub verdict: Verdict,
    /// Causal convergence (CCv): causal consistency and no `CyclicCF`.
    pub convergence: Verdict,
    /// Violations with their witnesses, by pattern, at most [`EXAMPLES`] of each.
    pub violations: Vec<Violation>,
    /// How many violations of each pattern were found: reads for the read patterns, strongly
    /// connected components for the cycles.
    pub counts: BTreeMap<Pattern, usize>,
    /// How many reads were checked (they observed one known write or the initial value).
    pub reads_checked: usize,
    /// Reads left out: their value was written more than once to the key.
    pub reads_ambiguous: usize,
    /// Reads left out: their key is also changed by an operation this check does not model.
    pub reads_unsupported: usize,
    /// Writes whose outcome is unknown that some checked read observed: they happened.
    pub unknown_writes_read: usize,
    /// Writes whose outcome is unknown that no checked read observed: left out.
    pub unknown_writes_dropped: usize,
    /// Operations left out: not a `read`/`get`, `write`/`put` or `cas`.
    pub operations_ignored: usize,
    /// How many operations were considered (failed ones are left out).
    pub operations: usize,
}

/// "No node".
const NONE: u32 = u32::MAX;

/// An edge `(from, to, kind, read)` between nodes; `read` is a `cf` edge's read, or [`NONE`].
type Arrow = (u32, u32, Edge, u32);

/// A chain's writes of one key: the chain, and its writes' `(position, node)` in order.
type ChainWrites = (u32, Vec<(u32, u32)>);

/// What a node of the graph is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    /// A read of the initial value.
    ReadInitial,
    /// A read of the write node given.
    ReadFrom(u32),
}

/// An operation that takes part: a write that happened or a checked read.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Its operation (an index into [`Index::ops`]).
    op: usize,
    /// Its key, interned.
    key: u32,
    kind: Kind,
    /// Its chain and its 1-based position on it.
    chain: u32,
    position: u32,
}

/// Forward adjacency lists: `(target, edge, read)` where `read` is the cf edge's read node.
struct Adjacency {
    start: Vec<usize>,
    out: Vec<(u32, Edge, u32)>,
}

impl Adjacency {
    fn new(nodes: usize, edges: &[Arrow]) -> Adjacency {
        let mut start = vec![0usize; nodes + 1];
        for &(from, ..) in edges {
            start[from as usize + 1] += 1;
        }
        for i in 0..nodes {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut out = vec![(NONE, Edge::ProgramOrder, NONE); edges.len()];
        for &(from, to, edge, read) in edges {
            out[fill[from as usize]] = (to, edge, read);
            fill[from as usize] += 1;
        }
        Adjacency { start, out }
    }

    fn of(&self, node: u32) -> &[(u32, Edge, u32)] {
        &self.out[self.start[node as usize]..self.start[node as usize + 1]]
    }
}

/// Strongly connected components (Tarjan, iterative). Returns each node's component; components
/// are numbered in reverse topological order (a component's successors have smaller numbers).
fn components(adjacency: &Adjacency, nodes: usize) -> (Vec<u32>, usize) {
    let mut index = vec![NONE; nodes];
    let mut low = vec![0u32; nodes];
    let mut on_stack = vec![false; nodes];
    let mut stack: Vec<u32> = Vec::new();
    let mut component = vec![NONE; nodes];
    let mut calls: Vec<(u32, usize)> = Vec::new();
    let mut counter = 0u32;
    let mut count = 0usize;
    for root in 0..nodes as u32 {
        if index[root as usize] != NONE {
            continue;
        }
        index[root as usize] = counter;
        low[root as usize] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root as usize] = true;
        calls.push((root, 0));
        while let Some(&(v, next)) = calls.last() {
            let out = adjacency.of(v);
            if next < out.len() {
                calls.last_mut().expect("a call is open").1 += 1;
                let w = out[next].0;
                if index[w as usize] == NONE {
                    index[w as usize] = counter;
                    low[w as usize] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w as usize] = true;
                    calls.push((w, 0));
                } else if on_stack[w as usize] {
                    low[v as usize] = low[v as usize].min(index[w as usize]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent as usize] = low[parent as usize].min(low[v as usize]);
            }
            if low[v as usize] == index[v as usize] {
                loop {
                    let w = stack.pop().expect("the component is on the stack");
                    on_stack[w as usize] = false;
                    component[w as usize] = count as u32;
                    if w == v {
                        break;
                    }
                }
                count += 1;
            }
        }
    }
    (component, count)
}

/// The history as a graph of reads and writes with program-order and read-from edges, and the
/// causal past of every node.
struct Graph<'a> {
    index: &'a Index,
    nodes: Vec<Node>,
    /// Each node's program-order predecessor, or [`NONE`].
    po: Vec<u32>,
    /// `po ∪ rf`.
    causal: Adjacency,
    /// How many chains; the clock of node `v` is `clocks[v * chains..][..chains]`.
    chains: usize,
    clocks: Vec<u32>,
    /// Per key: for each chain with writes of the key, its writes' `(position, node)` in order.
    writes: Vec<Vec<ChainWrites>>,
}

impl Graph<'_> {
    /// The causal predecessors of `v`: its program-order predecessor and the write it read.
    fn predecessors(&self, v: u32) -> impl Iterator<Item = (u32, Edge)> + '_ {
        let node = &self.nodes[v as usize];
        let rf = match node.kind {
            Kind::ReadFrom(w) => Some((w, Edge::ReadFrom)),
            _ => None,
        };
        let po = self.po[v as usize];
        (po != NONE)
            .then_some((po, Edge::ProgramOrder))
            .into_iter()
            .chain(rf)
    }

    fn clock(&self, v: u32) -> &[u32] {
        &self.clocks[v as usize * self.chains..][..self.chains]
    }

    /// Is `a` in the causal past of `b` (`a →co b`)?
    fn before(&self, a: u32, b: u32) -> bool {
        let node = &self.nodes[a as usize];
        node.position <= self.clock(b)[node.chain as usize]
    }

    /// The last write of `key` on each chain that is in the causal past of `v`, other than
    /// `except` (the one before it if the last is `except`).
    fn latest_writes(&self, key: u32, v: u32, except: u32) -> impl Iterator<Item = u32> + '_ {
        let clock = self.clock(v);
        self.writes[key as usize]
            .iter()
            .filter_map(move |(chain, writes)| {
                let seen =
                    writes.partition_point(|&(position, _)| position <= clock[*chain as usize]);
                let mut last = writes[..seen].iter().rev().map(|&(_, w)| w);
                match last.next() {
                    Some(w) if w == except => last.next(),
                    other => other,
                }
            })
    }

    fn operation(&self, v: u32) -> Operation {
        self.index.ops[self.nodes[v as usize].op].clone()
    }

    fn step(&self, via: Option<Edge>, v: u32, read: u32) -> Step {
        Step {
            via,
            operation: self.operation(v),
            read: (read != NONE).then(|| self.operation(read)),
        }
    }
}

/// Breadth-first search over `po ∪ rf` from `from`, forwards or backwards; returns each node's
/// distance and the edge it was reached by (the node it came from and the edge's kind).
fn search(graph: &Graph, from: u32, forwards: bool) -> (Vec<u32>, Vec<(u32, Edge)>) {
    let n = graph.nodes.len();
    let mut distance = vec![NONE; n];
    let mut parent = vec![(NONE, Edge::ProgramOrder); n];
    let mut queue = VecDeque::from([from]);
    distance[from as usize] = 0;
    while let Some(v) = queue.pop_front() {
        let next: Vec<(u32, Edge)> = if forwards {
            graph.causal.of(v).iter().map(|&(w, e, _)| (w, e)).collect()
        } else {
            graph.predecessors(v).collect()
        };
        for (w, edge) in next {
            if distance[w as usize] == NONE {
                distance[w as usize] = distance[v as usize] + 1;
                parent[w as usize] = (v, edge);
                queue.push_back(w);
            }
        }
    }
    (distance, parent)
}

/// The path `from →co ... → to` found by a forward search from `from` (as steps, `from` first).
fn path_forwards(graph: &Graph, parent: &[(u32, Edge)], from: u32, to: u32) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut v = to;
    while v != from {
        let (previous, edge) = parent[v as usize];
        steps.push(graph.step(Some(edge), v, NONE));
        v = previous;
    }
    steps.push(graph.step(None, from, NONE));
    steps.reverse();
    steps
}

/// The path `from →co ... → to` found by a backward search from `to` (as steps, `from` first,
/// `from` itself left out).
fn path_backwards(graph: &Graph, parent: &[(u32, Edge)], from: u32, to: u32) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut v = from;
    while v != to {
        let (next, edge) = parent[v as usize];
        steps.push(graph.step(Some(edge), next, NONE));
        v = next;
    }
    steps
}

/// The shortest cycle through one of `marked` (edges `(from, to, edge, read)` inside the
/// component `component` of `adjacency`): the cycle as steps from the marked edge's source back
/// to it. Searches from every distinct target until [`CYCLE_STEPS`] steps are spent.
fn shortest_cycle(
    graph: &Graph,
    adjacency: &Adjacency,
    in_component: &dyn Fn(u32) -> bool,
    marked: &[Arrow],
) -> Vec<Step> {
    let n = graph.nodes.len();
    let mut by_target: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &(_, to, ..)) in marked.iter().enumerate() {
        by_target.entry(to).or_default().push(i);
    }
    let mut distance = vec![NONE; n];
    let mut parent = vec![(NONE, Edge::ProgramOrder, NONE); n];
    let mut best: Option<(u32, Vec<Step>)> = None;
    let mut steps = 0usize;
    for (&target, edges) in &by_target {
        if steps > CYCLE_STEPS && best.is_some() {
            break;
        }
        let mut visited = vec![target];
        distance[target as usize] = 0;
        let mut queue = VecDeque::from([target]);
        while let Some(v) = queue.pop_front() {
            for &(w, edge, read) in adjacency.of(v) {
                steps += 1;
                if in_component(w) && distance[w as usize] == NONE {
                    distance[w as usize] = distance[v as usize] + 1;
                    parent[w as usize] = (v, edge, read);
                    visited.push(w);
                    queue.push_back(w);
                }
            }
        }
        for &i in edges {
            let (source, _, edge, read) = marked[i];
            let length = distance[source as usize].saturating_add(1);
            if distance[source as usize] == NONE || best.as_ref().is_some_and(|b| b.0 <= length) {
                continue;
            }
            // source --edge--> target --...--> source
            let mut back = Vec::new();
            let mut v = source;
            while v != target {
                let (previous, e, r) = parent[v as usize];
                back.push(graph.step(Some(e), v, r));
                v = previous;
            }
            back.reverse();
            let mut cycle = vec![
                graph.step(None, source, NONE),
                graph.step(Some(edge), target, read),
            ];
            cycle.extend(back);
            best = Some((length, cycle));
        }
        for v in visited {
            distance[v as usize] = NONE;
        }
        if best.as_ref().is_some_and(|b| b.0 <= 2) {
            break;
        }
    }
    best.map(|(_, cycle)| cycle).unwrap_or_default()
}

/// Builds the graph: chains, program-order and read-from edges, and the clocks.
fn graph<'a>(index: &'a Index, observed: &[Option<Version>]) -> Graph<'a> {
    let ops = &index.ops;
    // Unknown writes count only when read.
    let mut read_writes = vec![false; ops.len()];
    for version in observed.iter().flatten() {
        if let Version::Write(w) = version {
            read_writes[*w] = true;
        }
    }
    let mut keys: HashMap<Option<String>, u32> = HashMap::new();
    let mut node_of = vec![NONE; ops.len()];
    let mut nodes: Vec<Node> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let kind = match (&index.roles[i], observed[i]) {
            (Role::Write(_), _) if op.output.is_some() || read_writes[i] => Kind::Write,
            (Role::Read(_), Some(Version::Initial)) => Kind::ReadInitial,
            (Role::Read(_), Some(Version::Write(w))) => Kind::ReadFrom(w as u32),
            _ => continue,
        };
        let next = keys.len() as u32;
        let key = *keys.entry(op.key.clone()).or_insert(next);
        node_of[i] = nodes.len() as u32;
        nodes.push(Node {
            op: i,
            key,
            kind,
            chain: NONE,
            position: 0,
        });
    }
    for node in &mut nodes {
        if let Kind::ReadFrom(w) = node.kind {
            node.kind = Kind::ReadFrom(node_of[w as usize]);
        }
    }
    // Chains: one per process; an unknown write that its process outlived gets its own.
    let mut last_of_process: HashMap<u64, u32> = HashMap::new();
    for (v, node) in nodes.iter().enumerate() {
        last_of_process.insert(ops[node.op].process, v as u32);
    }
    let mut chain_of_process: HashMap<u64, (u32, u32, u32)> = HashMap::new(); // chain, length, last
    let mut chains = 0u32;
    let mut po = vec![NONE; nodes.len()];
    for v in 0..nodes.len() {
        let process = ops[nodes[v].op].process;
        let outlived = ops[nodes[v].op].output.is_none() && last_of_process[&process] != v as u32;
        let entry = chain_of_process.entry(process).or_insert_with(|| {
            chains += 1;
            (chains - 1, 0, NONE)
        });
        po[v] = entry.2;
        if outlived {
            nodes[v].chain = chains;
            nodes[v].position = 1;
            chains += 1;
        } else {
            entry.1 += 1;
            entry.2 = v as u32;
            nodes[v].chain = entry.0;
            nodes[v].position = entry.1;
        }
    }
    let chains = chains as usize;
    let mut edges: Vec<Arrow> = Vec::with_capacity(nodes.len() * 2);
    for (v, node) in nodes.iter().enumerate() {
        if po[v] != NONE {
            edges.push((po[v], v as u32, Edge::ProgramOrder, NONE));
        }
        if let Kind::ReadFrom(w) = node.kind {
            edges.push((w, v as u32, Edge::ReadFrom, NONE));
        }
    }
    let causal = Adjacency::new(nodes.len(), &edges);
    let mut writes: Vec<BTreeMap<u32, Vec<(u32, u32)>>> = vec![BTreeMap::new(); keys.len()];
    for (v, node) in nodes.iter().enumerate() {
        if node.kind == Kind::Write {
            writes[node.key as usize]
                .entry(node.chain)
                .or_default()
                .push((node.position, v as u32));
        }
    }
    let mut graph = Graph {
        index,
        nodes,
        po,
        causal,
        chains,
        clocks: Vec::new(),
        writes: writes
            .into_iter()
            .map(|chains| chains.into_iter().collect())
            .collect(),
    };
    graph.clocks = clocks(&graph);
    graph
}

/// Every node's causal past as a vector clock: entry `c` is how long a prefix of chain `c`
/// precedes the node in `co`. A node on a cycle is in its own past.
fn clocks(graph: &Graph) -> Vec<u32> {
    let n = graph.nodes.len();
    let chains = graph.chains;
    let (component, count) = components(&graph.causal, n);
    // The nodes grouped by component: those of component `k` are `order[start[k]..start[k + 1]]`.
    let mut start = vec![0usize; count + 1];
    for &k in &component {
        start[k as usize + 1] += 1;
    }
    for k in 0..count {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut order = vec![0u32; n];
    for (v, &k) in component.iter().enumerate() {
        order[fill[k as usize]] = v as u32;
        fill[k as usize] += 1;
    }
    let mut clocks = vec![0u32; n * chains];
    let mut clock = vec![0u32; chains];
    // Higher component numbers come first in topological order.
    for k in (0..count).rev() {
        let members = &order[start[k]..start[k + 1]];
        clock.fill(0);
        for &v in members {
            for (u, _) in graph.predecessors(v) {
                if component[u as usize] as usize == k {
                    continue;
                }
                let past = &clocks[u as usize * chains..][..chains];
                for (c, &p) in clock.iter_mut().zip(past) {
                    *c = (*c).max(p);
                }
                let node = &graph.nodes[u as usize];
                let c = &mut clock[node.chain as usize];
                *c = (*c).max(node.position);
            }
        }
        if members.len() > 1 {
            for &v in members {
                let node = &graph.nodes[v as usize];
                let c = &mut clock[node.chain as usize];
                *c = (*c).max(node.position);
            }
        }
        for &v in members {
            clocks[v as usize * chains..][..chains].copy_from_slice(&clock);
        }
    }
    clocks
}

/// Checks causal consistency (and causal convergence) of a register or key-value history.
pub fn check(history: &History) -> Result<Report, MalformedHistory> {
    let index = Index::new(operations(history)?);
    let mut report = Report {
        verdict: Verdict::Consistent,
        convergence: Verdict::Consistent,
        violations: Vec::new(),
        counts: BTreeMap::new(),
        reads_checked: 0,
        reads_ambiguous: 0,
        reads_unsupported: 0,
        unknown_writes_read: 0,
        unknown_writes_dropped: 0,
        operations_ignored: index.ignored(),
        operations: index.ops.len(),
    };
    let mut found = Found::default();
    let mut observed: Vec<Option<Version>> = vec![None; index.ops.len()];
    for (i, role) in index.roles.iter().enumerate() {
        let Role::Read(value) = role else { continue };
        match index.observed(i, value) {
            Observed::Version(version) => {
                report.reads_checked += 1;
                observed[i] = Some(version);
            }
            Observed::Ambiguous => report.reads_ambiguous += 1,
            Observed::Unsupported => report.reads_unsupported += 1,
            Observed::Unwritten => found.add(Pattern::ThinAirRead, || Violation {
                pattern: Pattern::ThinAirRead,
                operations: vec![index.ops[i].clone()],
                witness: vec![Step {
                    via: None,
                    operation: index.ops[i].clone(),
                    read: None,
                }],
            }),
        }
    }
    let mut read = vec![false; index.ops.len()];
    for version in observed.iter().flatten() {
        if let Version::Write(w) = version {
            read[*w] = true;
        }
    }
    for (i, role) in index.roles.iter().enumerate() {
        if matches!(role, Role::Write(_)) && index.ops[i].output.is_none() {
            match read[i] {
                true => report.unknown_writes_read += 1,
                false => report.unknown_writes_dropped += 1,
            }
        }
    }
    let graph = graph(&index, &observed);
    cyclic_co(&graph, &mut found);
    reads(&graph, &mut found);
    cyclic_cf(&graph, &mut found);

    let Found {
        counts,
        mut examples,
    } = found;
    for pattern in counts.keys() {
        if let Some(list) = examples.remove(pattern) {
            report.violations.extend(list);
        }
    }
    if counts.keys().any(|p| p.breaks_causal_consistency()) {
        report.verdict = Verdict::Violated;
    }
    if !counts.is_empty() {
        report.convergence = Verdict::Violated;
    }
    report.counts = counts;
    Ok(report)
}

/// Violations found so far: counts, and the first [`EXAMPLES`] of each pattern.
#[derive(Default)]
struct Found {
    counts: BTreeMap<Pattern, usize>,
    examples: BTreeMap<Pattern, Vec<Violation>>,
}

impl Found {
    /// Counts one violation of `pattern`, and keeps it (made by `violation`) if there is room.
    fn add(&mut self, pattern: Pattern, violation: impl FnOnce() -> Violation) {
        let count = self.counts.entry(pattern).or_default();
        *count += 1;
        if *count <= EXAMPLES {
            self.examples.entry(pattern).or_default().push(violation());
        }
    }
}

/// `CyclicCO`: one violation per cyclic strongly connected component of `po ∪ rf`, with its
/// shortest cycle (every cycle has an `rf` edge: program order alone is acyclic).
fn cyclic_co(graph: &Graph, found: &mut Found) {
    let mut edges = Vec::new();
    for (v, node) in graph.nodes.iter().enumerate() {
        if let Kind::ReadFrom(w) = node.kind {
            edges.push((w, v as u32, Edge::ReadFrom, NONE));
        }
    }
    cycles(graph, &graph.causal, &edges, Pattern::CyclicCO, found);
}

/// Reports a cycle for every strongly connected component of `adjacency` that holds one of the
/// `marked` edges.
fn cycles(
    graph: &Graph,
    adjacency: &Adjacency,
    marked: &[Arrow],
    pattern: Pattern,
    found: &mut Found,
) {
    let (component, _) = components(adjacency, graph.nodes.len());
    let mut inside: BTreeMap<u32, Vec<Arrow>> = BTreeMap::new();
    for &edge in marked {
        let (from, to, ..) = edge;
        if component[from as usize] == component[to as usize] {
            inside
                .entry(component[from as usize])
                .or_default()
                .push(edge);
        }
    }
    // In order of the first operation involved, for a stable report.
    let mut cyclic: Vec<(u32, Vec<Arrow>)> = inside.into_iter().collect();
    cyclic.sort_by_key(|(_, edges)| edges.iter().map(|e| e.0.min(e.1)).min());
    for (k, edges) in cyclic {
        found.add(pattern, || {
            let witness = shortest_cycle(graph, adjacency, &|v| component[v as usize] == k, &edges);
            Violation {
                pattern,
                operations: witness[1..].iter().map(|s| s.operation.clone()).collect(),
                witness,
            }
        });
    }
}

/// `WriteCOInitRead` and `WriteCORead`, read by read.
fn reads(graph: &Graph, found: &mut Found) {
    for (r, node) in graph.nodes.iter().enumerate() {
        let r = r as u32;
        match node.kind {
            Kind::Write => {}
            Kind::ReadInitial => {
                if graph.latest_writes(node.key, r, NONE).next().is_some() {
                    found.add(Pattern::WriteCOInitRead, || init_read(graph, r));
                }
            }
            Kind::ReadFrom(w1) => {
                let between = graph
                    .latest_writes(node.key, r, w1)
                    .any(|w2| graph.before(w1, w2));
                if between {
                    found.add(Pattern::WriteCORead, || overwritten_read(graph, w1, r));
                }
            }
        }
    }
}

/// The witness of `WriteCOInitRead` at the read `r`: the nearest write of its key behind it.
fn init_read(graph: &Graph, r: u32) -> Violation {
    let key = graph.nodes[r as usize].key;
    let (distance, parent) = search(graph, r, false);
    let w = (0..graph.nodes.len() as u32)
        .filter(|&w| {
            let node = &graph.nodes[w as usize];
            node.kind == Kind::Write && node.key == key && distance[w as usize] != NONE
        })
        .min_by_key(|&w| distance[w as usize])
        .expect("a write of the key is in the read's causal past");
    let mut witness = vec![graph.step(None, w, NONE)];
    witness.extend(path_backwards(graph, &parent, w, r));
    Violation {
        pattern: Pattern::WriteCOInitRead,
        operations: vec![graph.operation(w), graph.operation(r)],
        witness,
    }
}

/// The witness of `WriteCORead` at the read `r` of `w1`: the write `w2` between them with the
/// shortest chain `w1 →co w2 →co r`.
fn overwritten_read(graph: &Graph, w1: u32, r: u32) -> Violation {
    let key = graph.nodes[r as usize].key;
    let (from_w1, forwards) = search(graph, w1, true);
    let (to_r, backwards) = search(graph, r, false);
    let w2 = (0..graph.nodes.len() as u32)
        .filter(|&w| {
            let node = &graph.nodes[w as usize];
            w != w1
                && node.kind == Kind::Write
                && node.key == key
                && from_w1[w as usize] != NONE
                && to_r[w as usize] != NONE
        })
        .min_by_key(|&w| from_w1[w as usize] + to_r[w as usize])
        .expect("a write is between the read and the write it observed");
    let mut witness = path_forwards(graph, &forwards, w1, w2);
    witness.extend(path_backwards(graph, &backwards, w2, r));
    Violation {
        pattern: Pattern::WriteCORead,
        operations: vec![graph.operation(w1), graph.operation(w2), graph.operation(r)],
        witness,
    }
}

/// `CyclicCF`: cycles of `po ∪ rf ∪ cf` through a `cf` edge. For each read `r` of a write `w2`,
/// `w1 →cf w2` for every other write `w1` of the key in `r`'s causal past; only the last such
/// write of each chain gets an edge (the earlier ones reach it along the chain), and only if it
/// is concurrent with `w2`. Every cycle through an edge against `co` is a `WriteCORead`, so
/// this reports the cycles of `co ∪ cf` that causal consistency allows and causal convergence
/// does not; the convergence verdict is the same either way.
fn cyclic_cf(graph: &Graph, found: &mut Found) {
    let mut conflicts: Vec<Arrow> = Vec::new();
    for (r, node) in graph.nodes.iter().enumerate() {
        let Kind::ReadFrom(w2) = node.kind else {
            continue;
        };
        for w1 in graph.latest_writes(node.key, r as u32, w2) {
            // A write already in `w2`'s causal past adds nothing to `co`; one in its causal
            // future closes a cycle that is a `WriteCORead` (`w2 →co w1 →co r`), reported as
            // such.
            if !graph.before(w1, w2) && !graph.before(w2, w1) {
                conflicts.push((w1, w2, Edge::Conflict, r as u32));
            }
        }
    }
    if conflicts.is_empty() {
        return;
    }
    conflicts.sort_unstable_by_key(|&(w1, w2, ..)| (w1, w2));
    conflicts.dedup_by_key(|&mut (w1, w2, ..)| (w1, w2));
    let mut edges: Vec<Arrow> = Vec::new();
    for v in 0..graph.nodes.len() as u32 {
        edges.extend(graph.causal.of(v).iter().map(|&(w, e, r)| (v, w, e, r)));
    }
    edges.extend(&conflicts);
    let adjacency = Adjacency::new(graph.nodes.len(), &edges);
    cycles(graph, &adjacency, &conflicts, Pattern::CyclicCF, found);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Op};
    use crate::model::RegisterModel;
    use crate::{sequential, session};
    use serde_json::{json, Value as Json};

    use EventType::{Fail, Info, Ok as Done};

    /// One operation: `(process, f, key, value, how it ended)`. Operations run one after
    /// another, in the order given.
    type Step = (u64, &'static str, &'static str, Json, EventType);

    fn history(steps: &[Step]) -> History {
        let mut events: Vec<Op> = Vec::new();
        for (i, (process, f, key, value, ending)) in steps.iter().enumerate() {
            let input = if *f == "read" {
                Json::Null
            } else {
                value.clone()
            };
            let time = i as u64 * 10;
            let output = if *ending == Done {
                value.clone()
            } else {
                input.clone()
            };
            for (kind, value, time) in [
                (EventType::Invoke, input, time),
                (*ending, output, time + 1),
            ] {
                events.push(Op {
                    process: *process,
                    kind,
                    f: (*f).into(),
                    key: Some((*key).into()),
                    value,
                    time,
                });
            }
        }
        History { events }
    }

    fn check_steps(steps: &[Step]) -> Report {
        let report = check(&history(steps)).unwrap();
        // The verdicts follow the counts.
        assert_eq!(
            report.verdict == Verdict::Violated,
            report.counts.keys().any(|p| p.breaks_causal_consistency())
        );
        assert_eq!(
            report.convergence == Verdict::Violated,
            !report.counts.is_empty()
        );
        for violation in &report.violations {
            assert!(!violation.witness.is_empty());
            assert_eq!(violation.witness[0].via, None);
            assert!(violation.witness[1..].iter().all(|s| s.via.is_some()));
        }
        report
    }

    fn patterns(report: &Report) -> Vec<(Pattern, usize)> {
        report.counts.iter().map(|(p, n)| (*p, *n)).collect()
    }

    /// A witness as `(edge, process, f, key, value)` per step.
    fn chain(violation: &Violation) -> Vec<(Option<&'static str>, u64, String, Json)> {
        violation
            .witness
            .iter()
            .map(|s| {
                let op = &s.operation;
                let value = op.output.clone().unwrap_or(op.input.clone());
                (
                    s.via.map(Edge::name),
                    op.process,
                    format!("{} {}", op.f, op.key.as_deref().unwrap_or("")),
                    value,
                )
            })
            .collect()
    }

    fn w(process: u64, key: &'static str, value: i64) -> Step {
        (process, "write", key, json!(value), Done)
    }

    fn r(process: u64, key: &'static str, value: Json) -> Step {
        (process, "read", key, value, Done)
    }

    const INIT: Json = Json::Null;

    #[test]
    fn reading_a_value_before_it_is_written_is_cyclic_co() {
        // P0 reads y's 1 and writes x = 1; P1 reads that x and then writes the y P0 read.
        let report = check_steps(&[
            r(0, "y", json!(1)),
            w(0, "x", 1),
            r(1, "x", json!(1)),
            w(1, "y", 1),
        ]);
        assert_eq!(patterns(&report), vec![(Pattern::CyclicCO, 1)]);
        assert_eq!(report.verdict, Verdict::Violated);
        let cycle = chain(&report.violations[0]);
        assert_eq!(cycle.len(), 5, "{cycle:?}");
        let witness = &report.violations[0].witness;
        assert_eq!(witness[0].operation, witness[4].operation);
        assert_eq!(report.violations[0].operations.len(), 4);
        let edges: Vec<_> = cycle[1..].iter().map(|s| s.0.unwrap()).collect();
        assert_eq!(edges.iter().filter(|e| **e == "rf").count(), 2);
        assert_eq!(edges.iter().filter(|e| **e == "po").count(), 2);
    }

    #[test]
    fn reading_ones_own_later_write_is_a_two_step_cycle() {
        let report = check_steps(&[r(0, "x", json!(1)), w(0, "x", 1), w(1, "x", 2)]);
        assert_eq!(patterns(&report), vec![(Pattern::CyclicCO, 1)]);
        let cycle = chain(&report.violations[0]);
        assert_eq!(
            cycle,
            vec![
                (None, 0, "write x".into(), json!(1)),
                (Some("rf"), 0, "read x".into(), json!(1)),
                (Some("po"), 0, "write x".into(), json!(1)),
            ]
        );
    }

    #[test]
    fn reading_the_initial_value_after_a_write_in_the_causal_past_is_write_co_init_read() {
        let report = check_steps(&[w(0, "x", 1), r(1, "x", json!(1)), r(1, "x", INIT)]);
        assert_eq!(patterns(&report), vec![(Pattern::WriteCOInitRead, 1)]);
        let violation = &report.violations[0];
        assert_eq!(violation.operations[0].input, json!(1));
        assert_eq!(violation.operations[1].output, Some(INIT));
        assert_eq!(
            chain(violation),
            vec![
                (None, 0, "write x".into(), json!(1)),
                (Some("rf"), 1, "read x".into(), json!(1)),
                (Some("po"), 1, "read x".into(), INIT),
            ]
        );
    }

    #[test]
    fn a_value_nobody_wrote_is_a_thin_air_read() {
        let report = check_steps(&[w(0, "x", 1), r(1, "x", json!(7)), r(1, "y", json!(1))]);
        assert_eq!(patterns(&report), vec![(Pattern::ThinAirRead, 2)]);
        assert_eq!(report.violations.len(), 2);
        assert_eq!(report.violations[0].operations[0].output, Some(json!(7)));
        assert_eq!(report.violations[1].operations[0].key.as_deref(), Some("y"));
        assert_eq!(report.reads_checked, 0);
    }

    #[test]
    fn reading_an_overwritten_value_is_write_co_read() {
        // P1 sees 2, then goes back to 1, which 2 overwrote in P0's order.
        let report = check_steps(&[
            w(0, "x", 1),
            w(0, "x", 2),
            r(1, "x", json!(2)),
            r(1, "x", json!(1)),
        ]);
        assert_eq!(patterns(&report), vec![(Pattern::WriteCORead, 1)]);
        let violation = &report.violations[0];
        let values: Vec<Json> = violation
            .operations
            .iter()
            .map(|o| o.output.clone().unwrap())
            .collect();
        assert_eq!(values, vec![json!(1), json!(2), json!(1)]);
        assert_eq!(
            chain(violation),
            vec![
                (None, 0, "write x".into(), json!(1)),
                (Some("po"), 0, "write x".into(), json!(2)),
                (Some("rf"), 1, "read x".into(), json!(2)),
                (Some("po"), 1, "read x".into(), json!(1)),
            ]
        );
    }

    #[test]
    fn seeing_ones_own_write_overwritten_by_a_causally_earlier_one_is_write_co_read() {
        // P1 read P0's x = 1, wrote x = 2, and then read 1 again: 1 →co 2 →co the read.
        let report = check_steps(&[
            w(0, "x", 1),
            r(1, "x", json!(1)),
            w(1, "x", 2),
            r(1, "x", json!(1)),
        ]);
        assert_eq!(patterns(&report), vec![(Pattern::WriteCORead, 1)]);
        assert_eq!(report.violations[0].operations[1].input, json!(2));
    }

    #[test]
    fn two_processes_that_each_see_their_own_write_last_break_only_convergence() {
        // Causally consistent (each process may order the concurrent writes its own way), not
        // causally convergent, not sequentially consistent.
        let steps = [
            w(0, "x", 1),
            w(1, "x", 2),
            r(0, "x", json!(2)),
            r(1, "x", json!(1)),
        ];
        let report = check_steps(&steps);
        assert_eq!(report.verdict, Verdict::Consistent);
        assert_eq!(report.convergence, Verdict::Violated);
        assert_eq!(patterns(&report), vec![(Pattern::CyclicCF, 1)]);
        let cycle = chain(&report.violations[0]);
        assert_eq!(cycle.len(), 3, "{cycle:?}");
        assert!(cycle[1..].iter().all(|s| s.0 == Some("cf")));
        let because = report.violations[0].witness[1].read.as_ref().unwrap();
        assert_eq!(because.f, "read");
        assert!(!sequentially_consistent(&steps));
    }

    fn sequentially_consistent(steps: &[Step]) -> bool {
        matches!(
            sequential::check(&history(steps), &RegisterModel, None)
                .unwrap()
                .verdict,
            sequential::Verdict::SequentiallyConsistent
        )
    }

    #[test]
    fn causally_consistent_histories_that_are_not_sequentially_consistent_are_accepted() {
        let cases: [&[Step]; 2] = [
            // Dekker: each process misses the other's write.
            &[w(0, "x", 1), w(1, "y", 1), r(0, "y", INIT), r(1, "x", INIT)],
            // Independent reads of independent writes: P2 and P3 see them in opposite orders.
            &[
                w(0, "x", 1),
                w(1, "y", 1),
                r(2, "x", json!(1)),
                r(2, "y", INIT),
                r(3, "y", json!(1)),
                r(3, "x", INIT),
            ],
        ];
        for steps in cases {
            let report = check_steps(steps);
            assert_eq!(report.verdict, Verdict::Consistent, "{report:?}");
            assert_eq!(report.convergence, Verdict::Consistent, "{report:?}");
            assert!(report.violations.is_empty());
            assert_eq!(report.reads_checked, steps.len() - 2);
            assert!(!sequentially_consistent(steps), "{steps:?}");
        }
    }

    #[test]
    fn causality_carried_over_three_hops_is_caught_where_the_session_check_sees_one() {
        let steps = [
            w(0, "x", 1),
            r(1, "x", json!(1)),
            w(1, "y", 1),
            r(2, "y", json!(1)),
            w(2, "z", 1),
            r(3, "z", json!(1)),
            r(3, "x", INIT),
        ];
        let session = session::check(&history(&steps)).unwrap();
        assert_eq!(session.verdict, session::Verdict::Consistent);
        let report = check_steps(&steps);
        assert_eq!(patterns(&report), vec![(Pattern::WriteCOInitRead, 1)]);
        let witness = chain(&report.violations[0]);
        let path: Vec<(Option<&str>, u64)> = witness.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(
            path,
            vec![
                (None, 0),
                (Some("rf"), 1),
                (Some("po"), 1),
                (Some("rf"), 2),
                (Some("po"), 2),
                (Some("rf"), 3),
                (Some("po"), 3),
            ]
        );
    }

    #[test]
    fn an_unknown_write_nobody_read_is_left_out() {
        let report = check_steps(&[
            (0, "write", "x", json!(1), Info),
            r(1, "x", INIT),
            (2, "write", "x", json!(2), Info),
            r(2, "x", INIT),
        ]);
        assert_eq!(report.verdict, Verdict::Consistent, "{report:?}");
        assert_eq!(report.unknown_writes_dropped, 2);
        assert_eq!(report.unknown_writes_read, 0);
    }

    #[test]
    fn an_unknown_write_that_was_read_follows_its_process_past_but_not_its_future() {
        // Its process went on and read x's initial value: allowed (the write may have taken
        // effect later). Its process's earlier write of y is in the past of whoever read it.
        let report = check_steps(&[
            w(0, "y", 1),
            (0, "write", "x", json!(1), Info),
            r(0, "x", INIT),
            r(1, "x", json!(1)),
            r(1, "y", INIT),
        ]);
        assert_eq!(report.unknown_writes_read, 1);
        assert_eq!(patterns(&report), vec![(Pattern::WriteCOInitRead, 1)]);
        let witness = chain(&report.violations[0]);
        assert_eq!(
            witness.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![None, Some("po"), Some("rf"), Some("po")]
        );
        assert_eq!(witness[0].2, "write y");
    }

    #[test]
    fn failed_writes_did_not_happen() {
        let report = check_steps(&[
            (0, "write", "x", json!(1), Fail),
            r(0, "x", INIT),
            r(1, "x", json!(1)),
        ]);
        assert_eq!(patterns(&report), vec![(Pattern::ThinAirRead, 1)]);
        assert_eq!(report.operations, 2);
    }

    #[test]
    fn the_report_names_patterns_and_edges_in_json() {
        let report = check_steps(&[
            w(0, "x", 1),
            w(0, "x", 2),
            r(1, "x", json!(2)),
            r(1, "x", json!(1)),
        ]);
        let document = serde_json::to_value(&report).unwrap();
        assert_eq!(document["verdict"], "violated");
        assert_eq!(document["convergence"], "violated");
        assert_eq!(document["counts"]["WriteCORead"], 1);
        let violation = &document["violations"][0];
        assert_eq!(violation["pattern"], "WriteCORead");
        assert_eq!(violation["witness"][1]["via"], "po");
        assert_eq!(violation["witness"][2]["via"], "rf");
        assert!(violation["witness"][0]["via"].is_null());
    }

    #[test]
    fn only_the_first_examples_of_a_pattern_are_kept_and_all_are_counted() {
        let mut steps = vec![w(0, "x", 1)];
        for _ in 0..EXAMPLES + 4 {
            steps.push(r(0, "x", INIT));
        }
        let report = check_steps(&steps);
        assert_eq!(
            patterns(&report),
            vec![(Pattern::WriteCOInitRead, EXAMPLES + 4)]
        );
        assert_eq!(report.violations.len(), EXAMPLES);
    }
}
