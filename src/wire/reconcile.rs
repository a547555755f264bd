//! `POST /pinsets/{ns}/{name}/reconcile`: reconcile-now's query and answer.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ErrorBody;

/// How long a `wait=true` request waits when the caller gives no timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// The longest a `wait=true` request may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// How the reconcile that handled a request ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Handled {
    /// The source loaded and every PinSet is Ready (none stalled, none
    /// left reconciling by a conflicting writer).
    pub healthy: bool,
    /// The revision reconciled (or tried), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What went wrong first, when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Query of `POST /pinsets/{ns}/{name}/reconcile`.
#[derive(Debug, Default, Deserialize)]
pub struct ReconcileQuery {
    /// Answer when the reconcile is done (200), not when it is queued (202).
    #[serde(default)]
    pub wait: bool,
    /// How long to wait (`30s`, `2m`; default 2m, at most 10m).
    pub timeout: Option<String>,
}

/// The answer of `POST /pinsets/{ns}/{name}/reconcile`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReconcileAnswer {
    /// Namespace of the PinSet.
    pub namespace: String,
    /// Name of the PinSet.
    pub name: String,
    /// The source the request went to.
    pub source: String,
    /// The request's ticket (per source, increasing).
    pub ticket: u64,
    /// Whether the reconcile has run (only ever true with `wait=true`).
    pub handled: bool,
    /// How it ended (with `wait=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Handled>,
}

/// The 409 answer when no controller that answers the route runs the
/// source PinSet `id` was applied from.
pub fn not_run_here(id: &impl std::fmt::Display, source: &str) -> ErrorBody {
    ErrorBody::new(
        409,
        format!(
            "pinset {id} was applied from {source:?}, which no controller here runs \
             (a PinSet applied with `pinfleet apply` is reconciled by applying it again; \
             a standalone `pinfleet controller` answers this route on its --listen address)"
        ),
    )
}
