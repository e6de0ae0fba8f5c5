//! A replica's local invariants, checked after every step in the simulator.

use concord_core::Violation;

use crate::replica::{Pbft, Service};

/// Checks one replica's state.
pub(crate) fn check<S: Service>(replica: &Pbft<S>) -> Result<(), Violation> {
    let fail = |invariant: &'static str, detail: String| {
        Err(Violation::on_node(invariant, replica.id, detail))
    };
    if let Some(error) = &replica.config_error {
        return fail("pbft-config", error.to_string());
    }
    if let Some(conflict) = &replica.conflict {
        return fail("committed-batch-kept", conflict.clone());
    }
    if replica.active && replica.view_change_deadline.is_some() {
        return fail(
            "pbft-view-change-timer",
            format!(
                "active {} with view-change deadline {:?}",
                replica.active, replica.view_change_deadline
            ),
        );
    }
    let low = replica.stable.sequence;
    let high = replica.high_watermark();
    if let (Some(first), Some(last)) = (replica.log.keys().next(), replica.log.keys().last()) {
        if *first <= low || *last > high {
            return fail(
                "pbft-watermarks",
                format!("log holds {first}..={last} outside ({low}, {high}]"),
            );
        }
    }
    for (sequence, slot) in &replica.log {
        let accepted = slot.pre_prepare.as_ref().map(|pp| pp.digest);
        if slot.prepared && accepted.is_none() {
            return fail(
                "pbft-certificates",
                format!("{sequence} prepared without a pre-prepare"),
            );
        }
        if slot.committed.is_some() && accepted != slot.committed {
            return fail(
                "pbft-certificates",
                format!("{sequence} committed a digest other than the accepted pre-prepare's"),
            );
        }
    }
    if replica.executed < low && replica.stable_snapshot.is_some() {
        return fail(
            "pbft-execution",
            format!(
                "executed {} below the stable checkpoint {low} whose state it has",
                replica.executed
            ),
        );
    }
    if replica.pending.len() > replica.config.max_pending_requests {
        return fail(
            "pbft-bounds",
            format!("{} requests pending", replica.pending.len()),
        );
    }
    if replica.client.outstanding()
        > replica.config.max_pending_requests + replica.config.client_lanes as usize
    {
        return fail(
            "pbft-bounds",
            format!(
                "{} client requests outstanding",
                replica.client.outstanding()
            ),
        );
    }
    Ok(())
}
