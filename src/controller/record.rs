//! What a reconcile adds to a PinSet's recent reconciles in the cluster
//! state (`Command::RecordReconcile`, shown by the dashboard).

use std::time::Instant;

use super::PinSetOutcome;
use crate::state::ReconcileEntry;

/// The entry of outcome `o` of a reconcile started at `run.0` by `run.1`.
pub(super) fn entry(
    o: &PinSetOutcome,
    (started, trigger): (Instant, &'static str),
) -> ReconcileEntry {
    ReconcileEntry {
        at_ms: 0,
        trigger: trigger.to_string(),
        ok: o.healthy(),
        message: if o.message.is_empty() {
            o.reason.to_string()
        } else {
            format!("{}: {}", o.reason, o.message)
        },
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        added: o.add,
        removed: o.release,
        revision: o.revision.clone(),
    }
}

/// What started a reconcile: a reconcile-now request, the interval (a
/// drift repair), or a change of the source.
pub(super) fn trigger(requested: bool, drift: bool) -> &'static str {
    if requested {
        "request"
    } else if drift {
        "interval"
    } else {
        "change"
    }
}
