//! The Byzantine hook: rewrite the outgoing messages of up to `f` nodes.
//!
//! The simulator hands every message a Byzantine node sends to its [`ByzantineBehavior`], which
//! returns what really goes on the wire: nothing (drop), copies (duplicate), an older message
//! (replay), the message with a forged sender, or a corrupted message. The node itself stays
//! honest: only what others see of it changes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use concord_core::{Node, NodeId, Rng};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// One message as it leaves a Byzantine node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<M> {
    /// The destination.
    pub to: NodeId,
    /// The sender the receiver will be told about.
    pub claimed_from: NodeId,
    /// The content.
    pub message: M,
}

/// Rewrites the outgoing messages of one node.
pub trait ByzantineBehavior<N: Node>: fmt::Debug {
    /// A short name for traces.
    fn name(&self) -> &'static str;

    /// `from` wants to send `message` to `to`; returns what is actually sent. `nodes` is the
    /// cluster size, `rng` the simulator's Byzantine stream.
    fn on_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: N::Message,
        nodes: usize,
        rng: &mut Rng,
    ) -> Vec<Outgoing<N::Message>>;
}

/// A function that changes a message's content in place.
pub type CorruptFn<M> = dyn Fn(&mut M, &mut Rng) + Send + Sync;

/// A protocol-supplied corruption of message content, for [`ByzantineKind::Corrupt`].
pub struct Corruptor<M>(pub Arc<CorruptFn<M>>);

impl<M> Clone for Corruptor<M> {
    fn clone(&self) -> Self {
        Corruptor(Arc::clone(&self.0))
    }
}

impl<M> fmt::Debug for Corruptor<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Corruptor(..)")
    }
}

/// The built-in behaviours a nemesis plan can switch on by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ByzantineKind {
    /// Send nothing.
    Drop,
    /// Send every message twice.
    Duplicate,
    /// Half the time, send a message this node sent earlier instead of the new one.
    Replay,
    /// Claim to be another node.
    Forge,
    /// Let the protocol's [`Corruptor`] change the content.
    Corrupt,
}

impl ByzantineKind {
    /// The name used in plan files.
    pub fn name(self) -> &'static str {
        match self {
            ByzantineKind::Drop => "drop",
            ByzantineKind::Duplicate => "duplicate",
            ByzantineKind::Replay => "replay",
            ByzantineKind::Forge => "forge",
            ByzantineKind::Corrupt => "corrupt",
        }
    }
}

/// A built-in behaviour; see [`ByzantineKind`].
pub struct BuiltIn<M> {
    kind: ByzantineKind,
    sent: VecDeque<(NodeId, M)>,
    corruptor: Option<Corruptor<M>>,
}

impl<M> fmt::Debug for BuiltIn<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltIn")
            .field("kind", &self.kind)
            .field("remembered", &self.sent.len())
            .finish()
    }
}

/// How many past messages the replay behaviour remembers.
const REPLAY_MEMORY: usize = 32;

impl<M> BuiltIn<M> {
    /// The behaviour `kind`. `Corrupt` needs a corruptor; without one it returns `None`.
    pub fn new(kind: ByzantineKind, corruptor: Option<Corruptor<M>>) -> Option<Self> {
        if kind == ByzantineKind::Corrupt && corruptor.is_none() {
            return None;
        }
        Some(BuiltIn {
            kind,
            sent: VecDeque::new(),
            corruptor,
        })
    }
}

impl<N: Node> ByzantineBehavior<N> for BuiltIn<N::Message> {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn on_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: N::Message,
        nodes: usize,
        rng: &mut Rng,
    ) -> Vec<Outgoing<N::Message>> {
        let plain = |message| Outgoing {
            to,
            claimed_from: from,
            message,
        };
        match self.kind {
            ByzantineKind::Drop => Vec::new(),
            ByzantineKind::Duplicate => vec![plain(message.clone()), plain(message)],
            ByzantineKind::Replay => {
                let replayed = if !self.sent.is_empty() && rng.gen_bool(0.5) {
                    let index = rng.gen_range(0..self.sent.len());
                    Some(self.sent[index].clone())
                } else {
                    None
                };
                self.sent.push_back((to, message.clone()));
                if self.sent.len() > REPLAY_MEMORY {
                    self.sent.pop_front();
                }
                match replayed {
                    Some((_, old)) => vec![plain(old)],
                    None => vec![plain(message)],
                }
            }
            ByzantineKind::Forge => {
                let others: Vec<NodeId> = (0..nodes as NodeId)
                    .filter(|&n| n != from && n != to)
                    .collect();
                let claimed_from = if others.is_empty() {
                    from
                } else {
                    others[rng.gen_range(0..others.len())]
                };
                vec![Outgoing {
                    to,
                    claimed_from,
                    message,
                }]
            }
            ByzantineKind::Corrupt => {
                let mut message = message;
                if let Some(corruptor) = &self.corruptor {
                    (corruptor.0)(&mut message, rng);
                }
                vec![plain(message)]
            }
        }
    }
}
