//! The state's rules for the parts of a sharded DAG (IPFS Cluster's meta
//! pin, cluster DAG and shards; docs/sharding.md): which pin is a meta pin
//! and why a part may not be unpinned alone. The cascade itself is in
//! `machine::apply_ops`: releasing a meta pin releases the same owner's hold
//! on its parts, and once the meta pin has left the state (its last owner
//! released it, or a forced unpin) every part goes, whoever wrote it. The
//! parts are found through the state's shard index (`PinStore::shard_members`).
//! Pure: no I/O.

use super::StatePin;
use super::machine::PinStore;
use crate::manifest::{CidKey, ShardKind};

/// Whether some owner of `pin` recorded it as a sharded DAG's meta pin.
pub(crate) fn is_meta(pin: &StatePin) -> bool {
    pin.owners.values().any(|s| {
        s.options
            .shard_role
            .as_ref()
            .is_some_and(|r| r.kind == ShardKind::Meta)
    })
}

/// Why `DELETE /pins/{cid}` must leave `pin` alone when it is the cluster
/// DAG or a shard of a sharded pin whose meta pin is still in the state:
/// releasing the meta pin releases it. (Once the meta pin is gone, a left
/// over part can be unpinned alone.)
pub fn part_refusal<S: PinStore>(store: &S, pin: &StatePin) -> Result<Option<String>, S::Error> {
    for spec in pin.owners.values() {
        let Some(role) = spec.options.shard_role.as_ref() else {
            continue;
        };
        if role.kind == ShardKind::Meta {
            continue;
        }
        let Ok(meta) = role.meta.parse::<CidKey>() else {
            continue;
        };
        if store.get(&meta)?.is_some() {
            return Ok(Some(format!(
                "{} is the {} of sharded pin {}: unpin {} to release it with the rest of its shards",
                pin.display_cid(),
                role.kind.as_str(),
                role.meta,
                role.meta
            )));
        }
    }
    Ok(None)
}
