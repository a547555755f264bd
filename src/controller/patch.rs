//! Sending a PinSet's new revision to the cluster: as a patch (`PATCH
//! /pinsets/{ns}/{name}`, only the pins that changed) when the load says
//! what changed since the revision the cluster holds, otherwise whole
//! (`PUT`). A cluster that does not hold the patch's base revision answers
//! `412` and gets the whole PinSet. A write refused because another writer
//! changed the PinSet meanwhile (a conflict: nothing applied) is sent again
//! whole, once: the cluster plans it against what it holds now, under the
//! same prune guard.

use crate::client::{ApplyOptions, Client, ClientError};
use crate::manifest::incremental::PinSetChanges;
use crate::manifest::{CidKey, DesiredPinSet};
use crate::wire::{ApplyReport, PatchDocument};

/// Applies `ps` at `revision`; `changes` is `(base revision, what changed
/// since)` when known.
pub(super) async fn send(
    client: &Client,
    ps: &DesiredPinSet,
    changes: Option<(&str, &PinSetChanges)>,
    force: bool,
    source: &str,
    revision: &str,
) -> Result<ApplyReport, ClientError> {
    if let Some((base, c)) = changes {
        // Without prune, pins that left the manifest stay (as with PUT).
        let release: &[CidKey] = if ps.prune { &c.release } else { &[] };
        let doc = PatchDocument::new(base.to_string(), revision.to_string(), ps, &c.set, release);
        match client.patch_pinset(&ps.id, &doc, force, source).await {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {
                tracing::debug!(pinset = %ps.id, base, "the cluster does not hold the base revision: sending the whole pinset");
            }
            Err(e) if e.is_conflict() => {
                tracing::debug!(pinset = %ps.id, error = %e, "the pinset changed while the patch was planned: sending the whole pinset");
            }
            Err(e) => return Err(e),
        }
    }
    // Built per request: a large PinSet's document is not kept twice.
    let doc = || crate::wire::to_manifest_json(ps).to_string().into_bytes();
    let opts = ApplyOptions {
        force,
        source: Some(source.to_string()),
        revision: Some(revision.to_string()),
        ..ApplyOptions::default()
    };
    match client.put_pinset(&ps.id, doc(), &opts).await {
        Err(e) if e.is_conflict() => {
            tracing::debug!(pinset = %ps.id, error = %e, "the pinset changed while it was planned: planning it again");
            client.put_pinset(&ps.id, doc(), &opts).await
        }
        other => other,
    }
}
