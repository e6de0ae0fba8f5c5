//! **State Machine Safety** (paper Figure 3, §5.4.3): if a server has applied a log entry at a
//! given index to its state machine, no other server will ever apply a different log entry for
//! the same index. The check is protocol-independent (it reads only `Apply` effects), so it
//! lives in `concord-core`; Raft runs it as one of its cluster invariants.

pub use concord_core::StateMachineSafety;
