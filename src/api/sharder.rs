//! Sharding content already in IPFS (a PinSet pin with `shard: {size}`,
//! docs/sharding.md): once a PinSet apply recorded such a meta pin, this
//! peer lists the content's blocks through its node ([`dag_layout`]:
//! nothing stored), groups them into shards as a sharded add does
//! ([`ShardWriter`] with [`ShardContext::fetched`]: only the shard nodes
//! are kept here, the shards' peers fetch the blocks themselves when they
//! pin), and writes the shards, the cluster DAG and the meta pin with its
//! cluster DAG, all held by the PinSet.
//!
//! A meta pin that already has parts (added with `pinfleet add --shard`,
//! or sharded by an earlier apply) is left as it is. A job that fails is
//! logged and tried again by the next apply that declares the pin (the
//! controller re-applies every interval). One job per pin at a time on
//! this peer. This module must not decide what a PinSet wants (the plan
//! did) nor how blocks are grouped (the writer does).
//!
//! [`dag_layout`]: crate::ipfs::IpfsBackend::dag_layout

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use futures::StreamExt;

use super::ApiState;
use super::add::shard::{ShardContext, ShardPlan, ShardWriter, shard_error};
use crate::manifest::{CidKey, Owner, ShardKind};

/// Jobs running in this process: (this peer, owner, meta pin).
static RUNNING: LazyLock<Mutex<HashSet<(String, Owner, CidKey)>>> = LazyLock::new(Mutex::default);

/// Starts a job for each of `metas` that `owner` holds as a meta pin
/// without parts, unless one runs already. Returns at once.
pub(super) fn shard_pending(state: &ApiState, owner: &Owner, metas: Vec<CidKey>) {
    for meta in metas {
        let key = (state.node.peer_id().to_string(), owner.clone(), meta);
        let fresh = RUNNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone());
        if !fresh {
            continue;
        }
        let (state, owner) = (state.clone(), owner.clone());
        tokio::spawn(async move {
            match shard_one(&state, &owner, meta).await {
                Ok(true) => tracing::info!(%meta, %owner, "sharded content already in IPFS"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    %meta, %owner, error = %e,
                    "cannot shard content already in IPFS; the next apply tries again"
                ),
            }
            RUNNING
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        });
    }
}

/// Shards `meta` for `owner` when it still needs it: `Ok(false)` when
/// there was nothing to do.
async fn shard_one(state: &ApiState, owner: &Owner, meta: CidKey) -> Result<bool, String> {
    let store = state.node.store().clone();
    let (pin, parts) = tokio::task::spawn_blocking(move || {
        let pin = store.get(&meta).map_err(|e| e.to_string())?;
        let parts = store.shard_members(&meta).map_err(|e| e.to_string())?;
        Ok::<_, String>((pin, parts))
    })
    .await
    .map_err(|e| e.to_string())??;
    let Some(pin) = pin else { return Ok(false) };
    let Some(spec) = pin.owners.get(owner).cloned() else {
        return Ok(false);
    };
    let Some(role) = spec.options.shard_role.clone() else {
        return Ok(false);
    };
    if role.kind != ShardKind::Meta || !parts.is_empty() {
        return Ok(false);
    }
    let backend = state
        .ipfs
        .clone()
        .ok_or("this peer has no IPFS node to read the content with")?;
    let embedded = backend
        .embedded()
        .cloned()
        .ok_or("sharding content already in IPFS needs the embedded IPFS node")?;
    let metrics = state
        .monitor
        .clone()
        .ok_or("this peer keeps no informer metrics to place shards with")?;
    let plan = ShardPlan::on(state, role.shard_size, spec.options.replication)?;
    let text = pin.display_cid();
    let ctx = ShardContext {
        node: state.node.clone(),
        embedded,
        metrics,
        handle: tokio::runtime::Handle::current(),
        plan,
        spec: spec.clone(),
        declared: None,
        owner: owner.clone(),
        fetched: true,
    };
    let mut layout = backend.dag_layout(meta);
    // The writer blocks (consensus calls, the store): its own thread,
    // reading the layout through the runtime.
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut writer = ShardWriter::new(ctx);
        while let Some(block) = handle.block_on(layout.next()) {
            let (cid, size) = block.map_err(|e| e.to_string())?;
            writer
                .put_ref(cid, size)
                .map_err(|e| shard_error(e).to_string())?;
        }
        writer.finish(meta, &text).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(true)
}

/// The pins of `pins` that ask to be kept sharded.
pub(super) fn sharded_metas<'a>(
    pins: impl Iterator<Item = (&'a CidKey, &'a crate::manifest::PinSpec)>,
) -> Vec<CidKey> {
    pins.filter(|(_, spec)| {
        spec.options
            .shard_role
            .as_ref()
            .is_some_and(|r| r.kind == ShardKind::Meta)
    })
    .map(|(cid, _)| *cid)
    .collect()
}
