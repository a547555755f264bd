//! Pins by hand and pin listings: `POST`/`DELETE /pins/{cid}` (owner `api`;
//! an unpin of a CID a PinSet also owns is refused unless forced by an admin),
//! `/allocations[/{cid}]` and `/state/export`, in IPFS Cluster's Pin JSON
//! plus pinfleet's `owners`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use libp2p::{Multiaddr, PeerId};

use super::{ApiError, ApiState, Shared, stream};
use crate::consensus::ClusterNode;
use crate::manifest::duration::parse_duration;
use crate::manifest::shown;
use crate::manifest::{
    CidKey, Owner, PinMode, PinOptions, PinSpec, ReplicationFactors, ShardKind, written_as_of,
};
use crate::state::{StatePin, unpin_refusal, write_pin_record};
use crate::wire::PinRecord;

/// Query parameters in the order sent; the first of repeated keys wins, as
/// Go's `url.Values.Get`.
pub(super) struct Params(Vec<(String, String)>);

pub(super) type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

impl Params {
    pub(super) fn from_query(q: RawParams) -> Result<Self, ApiError> {
        q.map(|Query(v)| Params(v))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }

    /// A parameter's value; empty values count as absent, as in IPFS Cluster.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A boolean flag: absent is false; `true`/`1`/`false`/`0` otherwise.
    pub(super) fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "invalid {key} {}: expected true or false",
                shown(v)
            ))),
        }
    }
}

pub(super) fn parse_cid(s: &str) -> Result<CidKey, ApiError> {
    CidKey::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub(super) fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("cannot read the state: {e}"))
}

/// `GET /allocations?filter=`: the pins of the shared state of the types
/// the filter names (IPFS Cluster's: `pin`, `meta-pin`, `clusterdag-pin`,
/// `shard-pin`, `all`, comma separated; none or empty: every pin).
pub(super) async fn allocations(
    State(state): State<Shared>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let params = Params::from_query(query)?;
    let types = PinTypes::parse(params.get("filter"))?;
    if types == PinTypes::ALL {
        return Ok(pin_stream(state.node.store().clone()).await);
    }
    let store = state.node.store().clone();
    Ok(stream::ndjson(move |sink| {
        store
            .for_each_pin(|pin| {
                !types.includes(&pin) || sink.line(|buf| write_pin_record(&mut *buf, &pin))
            })
            .map_err(storage)
    })
    .await)
}

/// `GET /state/export`: the state file (one `PinRecord` per line).
pub(super) async fn export(State(state): State<Shared>) -> Response {
    pin_stream(state.node.store().clone()).await
}

async fn pin_stream(store: crate::consensus::StateStore) -> Response {
    stream::ndjson(move |sink| {
        store
            .for_each_pin(|pin| sink.line(|buf| write_pin_record(&mut *buf, &pin)))
            .map_err(storage)
    })
    .await
}

/// The pin types an `/allocations` filter selects (IPFS Cluster's
/// `type`): data pins, and the meta pins, cluster DAGs and shards of
/// sharded pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PinTypes {
    data: bool,
    meta: bool,
    cluster_dag: bool,
    shard: bool,
}

impl PinTypes {
    const ALL: PinTypes = PinTypes {
        data: true,
        meta: true,
        cluster_dag: true,
        shard: true,
    };

    /// IPFS Cluster's filter: types separated by commas; none, an empty
    /// one, or `all` means every type.
    fn parse(filter: Option<&str>) -> Result<Self, ApiError> {
        let Some(filter) = filter.filter(|f| !f.trim().is_empty()) else {
            return Ok(Self::ALL);
        };
        let mut t = PinTypes {
            data: false,
            meta: false,
            cluster_dag: false,
            shard: false,
        };
        for part in filter.split(',') {
            match part.trim() {
                "all" => return Ok(Self::ALL),
                "pin" => t.data = true,
                "meta-pin" => t.meta = true,
                "clusterdag-pin" => t.cluster_dag = true,
                "shard-pin" => t.shard = true,
                "" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter value {}: expected pin, meta-pin, clusterdag-pin, shard-pin or all",
                        shown(other)
                    )));
                }
            }
        }
        Ok(t)
    }

    /// Whether `pin`'s type is selected.
    fn includes(&self, pin: &StatePin) -> bool {
        let eff = pin.effective();
        match eff.options.shard_role.as_ref().map(|r| r.kind) {
            None => self.data,
            Some(ShardKind::Meta) => self.meta,
            Some(ShardKind::ClusterDag) => self.cluster_dag,
            Some(ShardKind::Shard) => self.shard,
        }
    }
}

/// `GET /allocations/{cid}`: one pin, its CID as the client wrote it.
pub(super) async fn allocation(
    State(state): State<Shared>,
    Path(cid): Path<String>,
) -> Result<Json<PinRecord>, ApiError> {
    let key = parse_cid(&cid)?;
    let pin = get_pin(&state.node, key)
        .await?
        .ok_or_else(|| ApiError::not_found("cid not found"))?;
    Ok(Json(record_as_sent(&pin, cid)))
}

/// `POST /pins/{cid}`: pins for owner `api` with IPFS Cluster's query
/// options; answers the pin as it now stands.
pub(super) async fn pin(
    State(state): State<Shared>,
    Path(cid): Path<String>,
    query: RawParams,
) -> Result<Json<PinRecord>, ApiError> {
    let key = parse_cid(&cid)?;
    let params = Params::from_query(query)?;
    pin_key(&state, key, cid, &params).await
}

/// Pins `key` (written `cid` by the client) for owner `api` with the
/// options in `params`; answers the pin as it now stands.
pub(super) async fn pin_key(
    state: &ApiState,
    key: CidKey,
    cid: String,
    params: &Params,
) -> Result<Json<PinRecord>, ApiError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut spec = pin_spec(params, now_ms)?;
    // `pin-update=OLD`: the new pin takes the old one's options and
    // allocations, as IPFS Cluster's `PinUpdate`.
    let update_from = match params.get("pin-update") {
        Some(v) => Some((parse_cid(v)?, v.to_string())).filter(|(from, _)| *from != key),
        None => None,
    };
    if let Some((from, shown_from)) = &update_from {
        let old = get_pin(&state.node, *from).await?.ok_or_else(|| {
            ApiError::not_found(format!(
                "cannot update from {}: not in the pinset",
                shown(shown_from)
            ))
        })?;
        spec = updated_spec(&old, spec, params, now_ms);
    }
    let written_as = written_as_of(&key, &cid);
    let out = state
        .node
        .pin(key, written_as.clone(), spec.clone())
        .await?;
    if let Some(r) = out.refused {
        return Err(ApiError::new(StatusCode::CONFLICT, r));
    }
    // `write` returns once this peer applied the write too.
    let pin = match get_pin(&state.node, key).await? {
        Some(p) => p,
        // Unpinned again in between: answer what was pinned.
        None => StatePin {
            cid: key,
            written_as,
            owners: BTreeMap::from([(Owner::Api, spec)]),
            allocations: Vec::new(),
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
        },
    };
    let mut rec = record_as_sent(&pin, cid);
    rec.pin_update = update_from.map(|(_, shown_from)| shown_from);
    Ok(Json(rec))
}

/// The spec of a pin that replaces `old`: `old`'s options, its allocations
/// as user allocations (unless some were given), the name and a future
/// expiry from `asked` when the query set them.
fn updated_spec(old: &StatePin, asked: PinSpec, params: &Params, now_ms: i64) -> PinSpec {
    let eff = old.effective();
    let mut options = (*eff.options).clone();
    if options.user_allocations.is_empty() {
        options.user_allocations = old.allocations.clone();
    }
    if let Some(at) = asked.options.expire_at_ms.filter(|at| *at > now_ms) {
        options.expire_at_ms = Some(at);
    }
    let name = match params.get("name") {
        Some(_) => asked.name,
        None => eff.name.clone(),
    };
    PinSpec {
        name,
        options: Arc::new(options),
    }
}

/// `DELETE /pins/{cid}[?force=true]`: releases owner `api`. While a PinSet
/// also owns the pin: 409 naming the PinSets, nothing written; with `force`
/// (admin, enforced by `access`) the pin leaves the state, every owner
/// released. The answer shows the pin as it now stands (no owners once gone).
pub(super) async fn unpin(
    State(state): State<Shared>,
    Path(cid): Path<String>,
    query: RawParams,
) -> Result<Json<PinRecord>, ApiError> {
    let key = parse_cid(&cid)?;
    let force = Params::from_query(query)?.flag("force")?;
    unpin_key(&state, key, cid, force).await
}

/// Releases owner `api` of `key` (written `cid` by the client), every
/// owner with `force`; answers the pin as it now stands.
pub(super) async fn unpin_key(
    state: &ApiState,
    key: CidKey,
    cid: String,
    force: bool,
) -> Result<Json<PinRecord>, ApiError> {
    // A follower may not have applied a recent pin yet: not-found must be true.
    catch_up(&state.node).await;
    let Some(before) = get_pin(&state.node, key).await? else {
        return Err(ApiError::not_found("cid not found"));
    };
    // Refused here without a log entry; the state machine checks again at
    // apply, for a PinSet that takes the CID in between.
    if !force && let Some(why) = unpin_refusal(&cid, &before) {
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    let out = state.node.unpin(key, force).await?;
    if let Some(r) = out.refused {
        return Err(ApiError::new(StatusCode::CONFLICT, r));
    }
    if force {
        let pinsets: Vec<String> = before
            .owners
            .keys()
            .filter(|o| **o != Owner::Api)
            .map(ToString::to_string)
            .collect();
        if !pinsets.is_empty() {
            tracing::info!(cid = %key, owners = ?pinsets, "forced unpin released pinsets");
        }
    }
    let pin = match get_pin(&state.node, key).await? {
        Some(p) => p,
        None => {
            let mut gone = before;
            gone.owners.clear();
            gone
        }
    };
    Ok(Json(record_as_sent(&pin, cid)))
}

pub(super) async fn get_pin(node: &ClusterNode, key: CidKey) -> Result<Option<StatePin>, ApiError> {
    // One key: a few B-tree pages, mostly cached; microseconds, so read
    // here rather than pay a hand-off to a blocking thread and back on
    // every pin answered.
    node.store().get(&key).map_err(storage)
}

/// A write committed on the leader may not be applied here yet; wait so the
/// answer shows it. Failing that, answer from what is here.
pub(super) async fn catch_up(node: &ClusterNode) {
    if node.leader() != Some(node.id())
        && let Err(e) = node.read_barrier().await
    {
        tracing::debug!(error = %e, "read barrier after a write failed");
    }
}

fn record_as_sent(pin: &StatePin, cid: String) -> PinRecord {
    let mut rec = PinRecord::from_pin(pin);
    rec.cid = cid;
    rec
}

/// Name and options from IPFS Cluster's pin query parameters. `now_ms`
/// anchors `expire-in`.
pub(super) fn pin_spec(p: &Params, now_ms: i64) -> Result<PinSpec, ApiError> {
    let bad = ApiError::bad_request;
    // An unknown mode pins recursively, as IPFS Cluster's
    // `PinModeFromString` (which logs a warning and defaults).
    let mode = match p.get("mode") {
        None | Some("recursive") => PinMode::Recursive,
        Some("direct") => PinMode::Direct,
        Some(other) => {
            tracing::warn!(mode = %shown(other), "unknown pin mode: pinning recursively");
            PinMode::Recursive
        }
    };
    let int = |key: &str| -> Result<i32, ApiError> {
        match p.get(key) {
            None => Ok(0),
            Some(v) => v
                .parse::<i32>()
                .map_err(|_| bad(format!("invalid {key} {}: expected an integer", shown(v)))),
        }
    };
    let (min, max) = if p.get("replication").is_some() {
        let r = int("replication")?;
        (r, r)
    } else {
        (int("replication-min")?, int("replication-max")?)
    };
    check_replication(min, max).map_err(bad)?;
    if let Some(v) = p.get("shard-size") {
        // Accepted for compatibility; pinfleet does not shard.
        v.parse::<u64>().map_err(|_| {
            bad(format!(
                "invalid shard-size {}: expected an integer",
                shown(v)
            ))
        })?;
    }
    let user_allocations = comma_list(p.get("user-allocations"), |s| {
        s.parse::<PeerId>().map(|id| id.to_string()).map_err(|e| {
            bad(format!(
                "invalid user-allocations peer id {}: {e}",
                shown(s)
            ))
        })
    })?;
    let expire_at_ms = match (p.get("expire-at"), p.get("expire-in")) {
        (Some(at), _) => Some(
            chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| {
                    bad(format!(
                        "invalid expire-at {}: {e} (expected RFC 3339)",
                        shown(at)
                    ))
                })?
                .timestamp_millis(),
        ),
        (None, Some(d)) => {
            let d = parse_duration(d).map_err(|e| bad(format!("invalid expire-in: {e}")))?;
            if d < std::time::Duration::from_secs(1) {
                return Err(bad("expire-in duration too short".into()));
            }
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            Some(now_ms.saturating_add(ms))
        }
        (None, None) => None,
    };
    let origins = comma_list(p.get("origins"), |s| {
        s.parse::<Multiaddr>()
            .map(|_| s.to_string())
            .map_err(|e| bad(format!("invalid origins multiaddress {}: {e}", shown(s))))
    })?;
    let mut metadata = BTreeMap::new();
    for (k, v) in &p.0 {
        if let Some(key) = k.strip_prefix("meta-")
            && !key.is_empty()
        {
            // The first of repeated keys wins, as everywhere else.
            metadata.entry(key.to_string()).or_insert_with(|| v.clone());
        }
    }
    Ok(PinSpec {
        name: p.get("name").unwrap_or_default().to_string(),
        options: Arc::new(PinOptions {
            mode,
            replication: ReplicationFactors { min, max },
            metadata,
            origins,
            user_allocations,
            expire_at_ms,
            ..PinOptions::default()
        }),
    })
}

/// IPFS Cluster's rules, where 0 means "the cluster's default".
pub(super) fn check_replication(min: i32, max: i32) -> Result<(), String> {
    if min < -1 || max < -1 {
        return Err(format!(
            "invalid replication factors {min}/{max}: each must be -1 (every peer), 0 (default) or positive"
        ));
    }
    if min > 0 && max > 0 && min > max {
        return Err(format!(
            "replication-min {min} is greater than replication-max {max}"
        ));
    }
    if (min == -1 && max > 0) || (max == -1 && min > 0) {
        return Err(
            "replication-min and replication-max must both be -1 when one of them is".into(),
        );
    }
    Ok(())
}

/// Parses a comma-separated query value item by item (empty items skipped).
fn comma_list<E>(
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<String, E>,
) -> Result<Vec<String>, E> {
    value
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(&parse)
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn reads_ipfs_cluster_pin_options() {
        let p = params(&[
            ("name", "n"),
            ("mode", "direct"),
            ("replication-min", "2"),
            ("replication-max", "3"),
            ("shard-size", "0"),
            ("expire-at", "2030-01-02T03:04:05Z"),
            ("meta-team", "arch"),
            ("meta-team", "ignored"),
            ("meta-", "ignored"),
            ("origins", "/ip4/1.2.3.4/tcp/4001"),
            (
                "user-allocations",
                "12D3KooWD3gJQfDJ8nCHNMFikDWUERpH7vVkQLkArTg2vxKWKauM",
            ),
        ]);
        let spec = pin_spec(&p, 0).unwrap();
        let o = &spec.options;
        assert_eq!(spec.name, "n");
        assert_eq!(o.mode, PinMode::Direct);
        assert_eq!(o.replication, ReplicationFactors { min: 2, max: 3 });
        assert_eq!(o.metadata.len(), 1);
        assert_eq!(o.metadata["team"], "arch");
        assert_eq!(o.origins.len(), 1);
        assert_eq!(o.user_allocations.len(), 1);
        assert_eq!(o.expire_at_ms, Some(1_893_553_445_000));
    }

    #[test]
    fn replication_sets_both_and_expire_in_is_relative() {
        let p = params(&[("replication", "-1"), ("expire-in", "1h")]);
        let spec = pin_spec(&p, 1000).unwrap();
        assert_eq!(
            spec.options.replication,
            ReplicationFactors { min: -1, max: -1 }
        );
        assert_eq!(spec.options.expire_at_ms, Some(1000 + 3_600_000));
    }

    #[test]
    fn refuses_malformed_options() {
        for bad in [
            ("replication-min", "x"),
            ("replication-min", "-2"),
            ("shard-size", "-1"),
            ("expire-at", "tomorrow"),
            ("expire-in", "10ms"),
            ("origins", "not-a-multiaddr"),
            ("user-allocations", "nobody"),
        ] {
            assert!(pin_spec(&params(&[bad]), 0).is_err(), "{bad:?}");
        }
        let p = params(&[("replication-min", "3"), ("replication-max", "2")]);
        assert!(pin_spec(&p, 0).is_err());
        let p = params(&[("replication-min", "-1"), ("replication-max", "2")]);
        assert!(pin_spec(&p, 0).is_err());
    }

    #[test]
    fn an_unknown_mode_pins_recursively_as_ipfs_cluster() {
        let spec = pin_spec(&params(&[("mode", "sideways")]), 0).unwrap();
        assert_eq!(spec.options.mode, PinMode::Recursive);
    }

    #[test]
    fn filters_select_ipfs_cluster_pin_types() {
        assert_eq!(PinTypes::parse(None).unwrap(), PinTypes::ALL);
        assert_eq!(PinTypes::parse(Some("")).unwrap(), PinTypes::ALL);
        assert_eq!(
            PinTypes::parse(Some("meta-pin,all")).unwrap(),
            PinTypes::ALL
        );
        let t = PinTypes::parse(Some("pin, shard-pin")).unwrap();
        assert!(t.data && t.shard && !t.meta && !t.cluster_dag);
        let t = PinTypes::parse(Some("meta-pin,clusterdag-pin")).unwrap();
        assert!(!t.data && t.meta && t.cluster_dag && !t.shard);
        assert!(PinTypes::parse(Some("bogus")).is_err());
        let pin = |role: Option<ShardKind>| StatePin {
            cid: crate::testkit::seq_cid(1),
            written_as: None,
            owners: [(
                Owner::Api,
                PinSpec {
                    name: String::new(),
                    options: Arc::new(crate::manifest::PinOptions {
                        shard_role: role.map(|kind| crate::manifest::ShardRole {
                            kind,
                            reference: None,
                            meta: String::new(),
                            shard_size: 0,
                            max_depth: 0,
                        }),
                        ..Default::default()
                    }),
                },
            )]
            .into(),
            allocations: Vec::new(),
            timestamp_ms: 0,
        };
        let t = PinTypes::parse(Some("shard-pin")).unwrap();
        assert!(t.includes(&pin(Some(ShardKind::Shard))));
        assert!(!t.includes(&pin(Some(ShardKind::Meta))));
        assert!(!t.includes(&pin(None)));
        assert!(PinTypes::parse(Some("pin")).unwrap().includes(&pin(None)));
    }
}
