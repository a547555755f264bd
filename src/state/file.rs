//! The state file: NDJSON, one pin per line, written by `state export` and
//! read by `state import` and `plan --state`. Each line is IPFS Cluster's Pin
//! JSON (same fields, same order, every field present as Go sends it) plus
//! `owners`: a map from owner (`api`, `pinset:<ns>/<name>`) to what that
//! owner asked for. Lines are independent, so the file streams both ways.
//! A line without `owners` (an IPFS Cluster export) is owned by `api`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use super::StatePin;
use crate::manifest::{
    CidKey, Owner, PinMode, PinOptions, PinSpec, ReplicationFactors, ShardKind, ShardRole,
};
use crate::wire::{OwnerRecord, PinRecord, ZERO_TIME};

impl PinRecord {
    /// The record of a state pin.
    pub fn from_pin(pin: &StatePin) -> Self {
        let eff = pin.effective();
        let o = &eff.options;
        Self {
            replication_factor_min: o.replication.min,
            replication_factor_max: o.replication.max,
            name: eff.name.clone(),
            mode: o.mode,
            shard_size: o.shard_role.as_ref().map_or(0, |r| r.shard_size),
            user_allocations: (!o.user_allocations.is_empty()).then(|| o.user_allocations.clone()),
            expire_at: format_time(pin.expire_at_ms().unwrap_or(0)),
            metadata: o.metadata.clone(),
            pin_update: None,
            origins: o.origins.clone(),
            cid: pin.display_cid(),
            type_: o
                .shard_role
                .as_ref()
                .map_or("pin", |r| r.kind.as_str())
                .to_string(),
            allocations: pin.allocations.clone(),
            max_depth: match (&o.shard_role, o.mode) {
                (Some(r), _) => r.max_depth,
                (None, PinMode::Recursive) => -1,
                (None, PinMode::Direct) => 0,
            },
            reference: o.shard_role.as_ref().and_then(|r| r.reference.clone()),
            timestamp: format_time(pin.timestamp_ms),
            owners: pin
                .owners
                .iter()
                .map(|(owner, spec)| {
                    (
                        owner.clone(),
                        OwnerRecord {
                            name: spec.name.clone(),
                            options: (*spec.options).clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The part this record plays in a sharded DAG, from its IPFS Cluster
    /// `type`, `reference`, `shard_size` and `max_depth` (none for `pin` or
    /// an unknown type). The meta pin a part belongs to: the meta pin
    /// itself, the cluster DAG's `reference`; a shard's is not in IPFS
    /// Cluster's record: it is taken from the record's `owners` when it has
    /// them (a pinfleet export), else left empty for the caller to find
    /// (`POST /pins/batch` matches `<name>-shard-<n>` to its meta pin).
    pub fn shard_role(&self) -> Option<ShardRole> {
        let kind = match self.type_.as_str() {
            "meta-pin" => ShardKind::Meta,
            "clusterdag-pin" => ShardKind::ClusterDag,
            "shard-pin" => ShardKind::Shard,
            _ => return None,
        };
        let recorded = self
            .owners
            .values()
            .filter_map(|o| o.options.shard_role.as_ref())
            .find(|r| r.kind == kind);
        let meta = match (kind, recorded) {
            (_, Some(r)) => r.meta.clone(),
            (ShardKind::Meta, None) => CidKey::parse(&self.cid)
                .map(|c| c.to_string())
                .unwrap_or_else(|_| self.cid.clone()),
            (ShardKind::ClusterDag, None) => self.reference.clone().unwrap_or_default(),
            (ShardKind::Shard, None) => String::new(),
        };
        Some(ShardRole {
            kind,
            reference: self.reference.clone(),
            meta,
            shard_size: self.shard_size,
            max_depth: self.max_depth,
        })
    }

    /// What an IPFS Cluster pin (a record without `owners`) asks for, as
    /// owner `api`: name, mode, replication, user allocations, expiry,
    /// metadata, origins and its part in a sharded DAG ([`Self::shard_role`]).
    pub fn api_spec(&self) -> PinSpec {
        let expire = parse_time(&self.expire_at);
        let options = PinOptions {
            mode: self.mode,
            replication: ReplicationFactors {
                min: self.replication_factor_min,
                max: self.replication_factor_max,
            },
            metadata: self.metadata.clone(),
            origins: self.origins.clone(),
            user_allocations: self.user_allocations.clone().unwrap_or_default(),
            expire_at_ms: (expire != 0).then_some(expire),
            shard_role: self.shard_role(),
            ..PinOptions::default()
        };
        PinSpec {
            name: self.name.clone(),
            options: Arc::new(options),
        }
    }

    /// The state pin this record describes.
    pub fn into_pin(self) -> Result<StatePin, String> {
        let cid = CidKey::parse(&self.cid).map_err(|e| e.to_string())?;
        let written_as = crate::manifest::written_as_of(&cid, &self.cid);
        let owners = if self.owners.is_empty() {
            // An IPFS Cluster export: the pin was made by hand.
            BTreeMap::from([(Owner::Api, self.api_spec())])
        } else {
            self.owners
                .into_iter()
                .map(|(owner, r)| {
                    (
                        owner,
                        PinSpec {
                            name: r.name,
                            options: Arc::new(r.options),
                        },
                    )
                })
                .collect()
        };
        Ok(StatePin {
            cid,
            written_as,
            owners,
            allocations: self.allocations,
            timestamp_ms: parse_time(&self.timestamp),
        })
    }
}

/// A bad line of a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The line is not a pin record.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading failed.
    #[error("cannot read state")]
    Io(#[source] std::io::Error),
}

/// Reads a state file lazily, one pin per line; blank lines are skipped.
pub fn read_state<R: BufRead>(reader: R) -> impl Iterator<Item = Result<StatePin, StateFileError>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(StateFileError::Io(e))),
        };
        if line.trim().is_empty() {
            return None;
        }
        let bad = |message: String| StateFileError::Line {
            line: i + 1,
            message,
        };
        Some(
            serde_json::from_str::<PinRecord>(&line)
                .map_err(|e| bad(e.to_string()))
                .and_then(|r| r.into_pin().map_err(bad)),
        )
    })
}

/// Writes one pin as one line.
pub fn write_pin_record<W: Write>(mut w: W, pin: &StatePin) -> std::io::Result<()> {
    serde_json::to_writer(&mut w, &PinRecord::from_pin(pin))?;
    w.write_all(b"\n")
}

/// RFC 3339 (UTC, seconds, `Z`) of Unix milliseconds; 0 is Go's zero time.
pub fn format_time(ms: i64) -> String {
    if ms == 0 {
        return ZERO_TIME.to_string();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// Unix milliseconds of an RFC 3339 time; Go's zero time and garbage are 0.
pub fn parse_time(s: &str) -> i64 {
    if s == ZERO_TIME {
        return 0;
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}
