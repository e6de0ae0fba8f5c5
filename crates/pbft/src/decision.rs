//! The new primary's decision (TOCS 2002 §4.5, Figure 4; Castro's thesis §3.2.4): from a set
//! of view changes, which checkpoint the new view starts from and which batch each sequence
//! number above it gets.
//!
//! A view change reports what its sender prepared (`P`) and pre-prepared (`Q`); Byzantine
//! senders may lie in both. For a sequence number `n` above the checkpoint, batch `d` prepared
//! in view `v` (reported in some `P`) is chosen when
//!
//! * **A1** a quorum of the view changes report nothing prepared at `n`, or something
//!   prepared in an earlier view, or `d` itself in `v`; and
//! * **A2** `f + 1` of them (so at least one correct replica) report `d` pre-prepared at `n`
//!   in `v` or later.
//!
//! The null request (the empty batch) is chosen when **B** a quorum report nothing prepared at
//! `n`. When neither holds yet the primary waits for more view changes. A batch that committed
//! in an earlier view prepared at `f + 1` correct replicas of every quorum, so A1 rules out any
//! other batch of a later view, and B never holds for it: it is the one chosen.
//!
//! The checkpoint is the highest stable checkpoint any of them proves (each carries a quorum of
//! signed CHECKPOINT messages, checked before the view change is accepted).

use serde::Serialize;

use crate::auth::Digest;
use crate::config::Quorums;
use crate::message::{AuthenticatedRequest, CheckpointProof, PreparedEntry, Sequence, ViewChange};
use crate::replica::batch_digest;

/// One sequence number of a decision: its digest and batch.
pub type DecidedEntry<C, Q> = (Sequence, Digest, Vec<AuthenticatedRequest<C, Q>>);

/// What a new view starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<C, Q> {
    /// The checkpoint: the new view's low watermark.
    pub checkpoint: CheckpointProof,
    /// Per sequence number above it, in order: the digest and batch re-proposed (the empty
    /// batch for a null request).
    pub entries: Vec<DecidedEntry<C, Q>>,
}

/// Decides the new view from `view_changes` (all for one view, from distinct replicas, each
/// already checked), or `None` when they do not settle every sequence number yet.
pub fn decide<C: Clone + Serialize, Q: Clone + Serialize>(
    view_changes: &[&ViewChange<C, Q>],
    quorums: Quorums,
) -> Option<Decision<C, Q>> {
    if view_changes.len() < quorums.quorum() {
        return None;
    }
    let checkpoint = view_changes
        .iter()
        .map(|vc| &vc.checkpoint)
        .max_by_key(|proof| proof.sequence)?
        .clone();
    let low = checkpoint.sequence;
    let high = view_changes
        .iter()
        .flat_map(|vc| vc.prepared.iter().map(|p| p.sequence))
        .max()
        .unwrap_or(low)
        .max(low);
    let empty: Vec<AuthenticatedRequest<C, Q>> = Vec::new();
    let null = batch_digest(&empty);
    let mut entries = Vec::new();
    for sequence in low + 1..=high {
        fn reported<C, Q>(
            vc: &ViewChange<C, Q>,
            sequence: Sequence,
        ) -> Option<&PreparedEntry<C, Q>> {
            vc.prepared.iter().find(|p| p.sequence == sequence)
        }
        let mut candidates: Vec<_> = view_changes
            .iter()
            .filter_map(|vc| reported(vc, sequence))
            .collect();
        candidates.sort_by(|a, b| b.view.cmp(&a.view).then(a.digest.cmp(&b.digest)));
        let chosen = candidates.into_iter().find(|candidate| {
            let a1 = view_changes
                .iter()
                .filter(|vc| match reported(vc, sequence) {
                    None => true,
                    Some(p) => {
                        p.view < candidate.view
                            || (p.view == candidate.view && p.digest == candidate.digest)
                    }
                })
                .count();
            let a2 = view_changes
                .iter()
                .filter(|vc| {
                    vc.pre_prepared.iter().any(|q| {
                        q.sequence == sequence
                            && q.digest == candidate.digest
                            && q.view >= candidate.view
                    })
                })
                .count();
            a1 >= quorums.quorum() && a2 >= quorums.weak()
        });
        if let Some(chosen) = chosen {
            entries.push((sequence, chosen.digest, chosen.batch.clone()));
            continue;
        }
        let b = view_changes
            .iter()
            .filter(|vc| reported(vc, sequence).is_none())
            .count();
        if b >= quorums.quorum() {
            entries.push((sequence, null, Vec::new()));
            continue;
        }
        return None;
    }
    Some(Decision {
        checkpoint,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientRequest, Operation, PrePreparedEntry};

    type Vc = ViewChange<u64, u64>;

    const FOUR: Quorums = Quorums {
        replicas: 4,
        faults: 1,
    };

    fn genesis() -> CheckpointProof {
        CheckpointProof {
            sequence: 0,
            digest: [0; 32],
            signatures: Vec::new(),
        }
    }

    fn batch(value: u64) -> Vec<AuthenticatedRequest<u64, u64>> {
        vec![AuthenticatedRequest {
            request: ClientRequest {
                client: 1,
                timestamp: value,
                operation: Operation::Command(value),
                read_only: false,
            },
            authenticator: Vec::new(),
        }]
    }

    fn view_change(replica: u64) -> Vc {
        ViewChange {
            view: 5,
            checkpoint: genesis(),
            prepared: Vec::new(),
            pre_prepared: Vec::new(),
            replica,
        }
    }

    fn prepared(vc: &mut Vc, sequence: u64, view: u64, value: u64) {
        let batch = batch(value);
        vc.prepared.push(PreparedEntry {
            sequence,
            view,
            digest: batch_digest(&batch),
            batch,
        });
        pre_prepared(vc, sequence, view, value);
    }

    fn pre_prepared(vc: &mut Vc, sequence: u64, view: u64, value: u64) {
        vc.pre_prepared.push(PrePreparedEntry {
            sequence,
            view,
            digest: batch_digest(&batch(value)),
        });
    }

    fn digests(decision: &Decision<u64, u64>) -> Vec<(u64, Digest)> {
        decision.entries.iter().map(|(n, d, _)| (*n, *d)).collect()
    }

    #[test]
    fn a_batch_prepared_by_a_quorum_is_kept_and_gaps_become_null_requests() {
        let mut vcs: Vec<Vc> = (0..3).map(view_change).collect();
        for vc in &mut vcs[..2] {
            prepared(vc, 2, 3, 7);
        }
        pre_prepared(&mut vcs[2], 2, 3, 7);
        let refs: Vec<&Vc> = vcs.iter().collect();
        let decision = decide(&refs, FOUR).unwrap();
        let null = batch_digest::<u64, u64>(&[]);
        assert_eq!(
            digests(&decision),
            vec![(1, null), (2, batch_digest(&batch(7)))]
        );
    }

    #[test]
    fn a_lie_about_a_later_view_is_not_chosen_without_f_plus_one_pre_prepares() {
        // Replicas 0, 1 and 2 prepared 7 at n=1 in view 2 (it may have committed); replica 3
        // lies that 9 prepared in view 4. A2 fails for the lie (one pre-prepare report), so 7
        // stays.
        let mut vcs: Vec<Vc> = (0..4).map(view_change).collect();
        for vc in &mut vcs[..3] {
            prepared(vc, 1, 2, 7);
        }
        prepared(&mut vcs[3], 1, 4, 9);
        let refs: Vec<&Vc> = vcs.iter().collect();
        let decision = decide(&refs, FOUR).unwrap();
        assert_eq!(digests(&decision), vec![(1, batch_digest(&batch(7)))]);
        // With the liar among only three view changes, nothing is decided yet: the primary
        // waits for the fourth.
        let three: Vec<&Vc> = vec![&vcs[0], &vcs[1], &vcs[3]];
        assert_eq!(decide(&three, FOUR), None);
    }

    #[test]
    fn undecided_until_more_view_changes_arrive() {
        // Only one replica reports 7 prepared, nobody else pre-prepared it: neither A (A2
        // fails) nor B (two of three report nothing) holds.
        let mut vcs: Vec<Vc> = (0..3).map(view_change).collect();
        prepared(&mut vcs[0], 1, 2, 7);
        let refs: Vec<&Vc> = vcs.iter().collect();
        assert_eq!(decide(&refs, FOUR), None);
        // A fourth view change with nothing prepared settles it as a null request.
        let fourth = view_change(3);
        let mut refs = refs;
        refs.push(&fourth);
        let decision = decide(&refs, FOUR).unwrap();
        assert_eq!(decision.entries[0].2, Vec::new());
    }

    #[test]
    fn the_highest_proven_checkpoint_is_the_start() {
        let mut vcs: Vec<Vc> = (0..3).map(view_change).collect();
        vcs[1].checkpoint = CheckpointProof {
            sequence: 16,
            digest: [1; 32],
            signatures: Vec::new(),
        };
        prepared(&mut vcs[0], 3, 1, 7);
        let refs: Vec<&Vc> = vcs.iter().collect();
        let decision = decide(&refs, FOUR).unwrap();
        assert_eq!(decision.checkpoint.sequence, 16);
        assert!(decision.entries.is_empty());
        assert_eq!(decide(&refs[..2], FOUR), None, "fewer than a quorum");
    }
}
