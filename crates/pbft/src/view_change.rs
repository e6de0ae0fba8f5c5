//! View changes (OSDI 1999 §4.4; TOCS 2002 §4.5): replacing a faulty or slow primary.
//!
//! A backup whose timer for a waiting request expires moves to view `v + 1` and multicasts a
//! signed VIEW-CHANGE with its stable checkpoint proof and its `P` and `Q` sets. A replica that
//! hears of `f + 1` replicas in later views joins the smallest of them (so a view change is not
//! left to a timer when others already moved). The new view's primary collects view changes
//! until the decision procedure (`decision`) settles, and multicasts a signed NEW-VIEW holding
//! the view changes it used and the pre-prepares they imply; backups recompute the decision
//! from those view changes, check it is the one sent, and prepare each batch in the new view.
//! A view change that brings no new view in time is followed by the next one with a doubled
//! timeout (reset when a request executes).

use concord_core::{NodeId, Time};

use crate::auth::encode;
use crate::decision::{decide, Decision};
use crate::message::{
    Body, NewView, PrePreparedEntry, PreparedEntry, SignedNewView, SignedViewChange, View,
    ViewChange, Write,
};
use crate::replica::{batch_digest, Out, Pbft, Service};

impl<S: Service> Pbft<S> {
    /// Moves to view `target` (above the current one): multicasts this replica's VIEW-CHANGE.
    pub(crate) fn start_view_change(&mut self, now: Time, target: View, out: &mut Out<S>) {
        if target <= self.view {
            return;
        }
        self.view = target;
        self.active = false;
        self.counters.view_changes_started += 1;
        self.persist(
            Write::View {
                view: target,
                active: false,
                new_view: None,
            },
            out,
        );
        self.request_timer = None;
        self.view_change_deadline = None;
        self.view_change_attempts = self.view_change_attempts.saturating_add(1);
        let view_change = self.make_view_change(target);
        let signature = self.keys.sign(&encode(&view_change));
        let signed = SignedViewChange {
            view_change,
            signature,
        };
        self.view_changes.insert(self.id, signed.clone());
        self.broadcast(Body::ViewChange(signed), out);
        self.start_view_change_timer(now);
        self.try_new_view(now, out);
    }

    /// Liveness rule 1 (§4.5.2): the timer for the view being changed to starts only once a
    /// quorum of replicas (by their latest view change) is changing to it or beyond.
    fn start_view_change_timer(&mut self, now: Time) {
        if self.active || self.view_change_deadline.is_some() {
            return;
        }
        let changing = self
            .view_changes
            .values()
            .filter(|vc| vc.view_change.view >= self.view)
            .count();
        if changing >= self.quorums.quorum() {
            self.view_change_deadline = Some(now + self.view_change_timeout());
        }
    }

    pub(crate) fn make_view_change(&self, view: View) -> ViewChange<S::Command, S::Query> {
        let above = self.stable.sequence + 1;
        let prepared = self
            .prepared_set
            .range(above..)
            .filter_map(|(&sequence, &(prepared_view, digest))| {
                Some(PreparedEntry {
                    sequence,
                    view: prepared_view,
                    digest,
                    batch: self.batches.get(&digest)?.clone(),
                })
            })
            .collect();
        let pre_prepared = self
            .pre_prepared_set
            .range(above..)
            .flat_map(|(&sequence, views)| {
                views.iter().map(move |(&digest, &view)| PrePreparedEntry {
                    sequence,
                    view,
                    digest,
                })
            })
            .collect();
        ViewChange {
            view,
            checkpoint: self.stable.clone(),
            prepared,
            pre_prepared,
            replica: self.id,
        }
    }

    /// Whether a (signed) view change is well formed: its checkpoint proof holds, its entries
    /// lie in the window above that checkpoint and below its view, each prepared batch matches
    /// its digest.
    fn view_change_valid(&self, view_change: &ViewChange<S::Command, S::Query>) -> bool {
        let low = view_change.checkpoint.sequence;
        let high = low + self.config.log_window;
        let in_window = |sequence| sequence > low && sequence <= high;
        let mut sequences = std::collections::BTreeSet::new();
        view_change.prepared.len() <= self.config.log_window as usize
            && view_change.pre_prepared.len() <= 4 * self.config.log_window as usize
            && view_change.prepared.iter().all(|p| {
                in_window(p.sequence)
                    && p.view < view_change.view
                    && sequences.insert(p.sequence)
                    && batch_digest(&p.batch) == p.digest
            })
            && view_change
                .pre_prepared
                .iter()
                .all(|q| in_window(q.sequence) && q.view < view_change.view)
            && self.verify_proof(&view_change.checkpoint)
    }

    fn view_change_signed(&self, signed: &SignedViewChange<S::Command, S::Query>) -> bool {
        let replica = signed.view_change.replica;
        self.keys
            .verify_signature(replica, &encode(&signed.view_change), &signed.signature)
    }

    /// A signed VIEW-CHANGE from `from`.
    pub(crate) fn on_view_change(
        &mut self,
        now: Time,
        from: NodeId,
        signed: SignedViewChange<S::Command, S::Query>,
        out: &mut Out<S>,
    ) {
        let view = signed.view_change.view;
        if view < self.view || (view == self.view && self.active) {
            return;
        }
        if signed.view_change.replica != from {
            self.counters.invalid_messages += 1;
            return;
        }
        if let Some(known) = self.view_changes.get(&from) {
            if known.view_change.view >= view {
                return;
            }
        }
        if !self.view_change_signed(&signed) {
            self.counters.authentication_failures += 1;
            return;
        }
        if !self.view_change_valid(&signed.view_change) {
            self.counters.invalid_messages += 1;
            return;
        }
        self.view_changes.insert(from, signed);
        // Liveness rule (§4.5.2): f + 1 replicas in later views: join the smallest of them.
        let mut later: Vec<View> = self
            .view_changes
            .values()
            .map(|vc| vc.view_change.view)
            .filter(|&v| v > self.view)
            .collect();
        if later.len() >= self.quorums.weak() {
            later.sort_unstable_by(|a, b| b.cmp(a));
            self.start_view_change(now, later[self.quorums.weak() - 1], out);
        }
        self.start_view_change_timer(now);
        self.try_new_view(now, out);
    }

    /// The new primary: with enough view changes to decide, multicasts NEW-VIEW and enters
    /// the view.
    fn try_new_view(&mut self, now: Time, out: &mut Out<S>) {
        if self.active || self.primary_of(self.view) != self.id {
            return;
        }
        let used: Vec<SignedViewChange<S::Command, S::Query>> = self
            .view_changes
            .values()
            .filter(|vc| vc.view_change.view == self.view)
            .cloned()
            .collect();
        let view_changes: Vec<&ViewChange<S::Command, S::Query>> =
            used.iter().map(|vc| &vc.view_change).collect();
        let Some(decision) = decide(&view_changes, self.quorums) else {
            return;
        };
        let new_view = NewView {
            view: self.view,
            view_changes: used,
            pre_prepares: decision.entries.iter().map(|(n, d, _)| (*n, *d)).collect(),
        };
        let signature = self.keys.sign(&encode(&new_view));
        let signed = SignedNewView {
            new_view,
            signature,
        };
        self.broadcast(Body::NewView(signed.clone()), out);
        self.enter_view(now, decision, signed, out);
    }

    /// A signed NEW-VIEW from `from`.
    pub(crate) fn on_new_view(
        &mut self,
        now: Time,
        from: NodeId,
        signed: SignedNewView<S::Command, S::Query>,
        out: &mut Out<S>,
    ) {
        let view = signed.new_view.view;
        if view < self.view || (view == self.view && self.active) {
            return;
        }
        let primary = self.primary_of(view);
        if from != primary {
            self.counters.invalid_messages += 1;
            return;
        }
        if !self
            .keys
            .verify_signature(primary, &encode(&signed.new_view), &signed.signature)
        {
            self.counters.authentication_failures += 1;
            return;
        }
        match self.check_new_view(&signed.new_view) {
            Some(decision) => self.enter_view(now, decision, signed, out),
            None => self.counters.invalid_messages += 1,
        }
    }

    /// Recomputes the decision from a NEW-VIEW's view changes; `Some` when it is the one the
    /// NEW-VIEW carries.
    fn check_new_view(
        &self,
        new_view: &NewView<S::Command, S::Query>,
    ) -> Option<Decision<S::Command, S::Query>> {
        let mut senders = std::collections::BTreeSet::new();
        for signed in &new_view.view_changes {
            let view_change = &signed.view_change;
            if view_change.view != new_view.view
                || !senders.insert(view_change.replica)
                || !self.view_change_signed(signed)
                || !self.view_change_valid(view_change)
            {
                return None;
            }
        }
        let view_changes: Vec<&ViewChange<S::Command, S::Query>> = new_view
            .view_changes
            .iter()
            .map(|vc| &vc.view_change)
            .collect();
        let decision = decide(&view_changes, self.quorums)?;
        let implied: Vec<_> = decision.entries.iter().map(|(n, d, _)| (*n, *d)).collect();
        (implied == new_view.pre_prepares).then_some(decision)
    }

    /// Enters a new view: the chosen checkpoint, then each decided batch pre-prepared in it.
    fn enter_view(
        &mut self,
        now: Time,
        decision: Decision<S::Command, S::Query>,
        signed: SignedNewView<S::Command, S::Query>,
        out: &mut Out<S>,
    ) {
        let view = signed.new_view.view;
        self.view = view;
        self.active = true;
        self.view_change_deadline = None;
        self.persist(
            Write::View {
                view,
                active: true,
                new_view: Some(Box::new(signed.clone())),
            },
            out,
        );
        self.last_new_view = Some(signed);
        self.view_changes.retain(|_, vc| vc.view_change.view > view);
        if decision.checkpoint.sequence > self.stable.sequence {
            self.adopt_checkpoint(decision.checkpoint, out);
        }
        for slot in self.log.values_mut() {
            slot.prepared = false;
        }
        let mut last = self.stable.sequence;
        for (sequence, digest, batch) in decision.entries {
            last = last.max(sequence);
            if sequence <= self.stable.sequence {
                continue;
            }
            let committed = self.log.get(&sequence).and_then(|slot| slot.committed);
            if committed.is_some_and(|c| c != digest) {
                self.conflict = Some(format!(
                    "new view {view} re-proposes another batch at committed sequence number {sequence}"
                ));
                continue;
            }
            self.accept_pre_prepare(view, sequence, digest, batch, out);
        }
        if self.primary_of(view) == self.id {
            self.next_sequence = last + 1;
            let known: Vec<_> = self.waiting.values().cloned().collect();
            for request in known {
                self.enqueue(request);
            }
        } else {
            self.pending.clear();
        }
        self.update_request_timer(now);
    }
}
