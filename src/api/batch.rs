//! `POST /pins/batch`: many pins by hand (owner `api`) in few log entries,
//! what `pinfleet state import` sends. The body is IPFS Cluster `Pin` JSON
//! objects (as `ipfs-cluster-service state export` writes them, or as the
//! REST API answers them), either newline-delimited or as one JSON array.
//!
//! The body lands whole or not at all: a bad object answers 400 naming its
//! line (NDJSON) or its position (array) and nothing changes. A body that
//! fits one log entry is written as one `Apply` entry. A larger one is one
//! revision ([`StagedWrite`]): an NDJSON body is parsed as it arrives and
//! staged in chunks meanwhile (each allocated by the leader as it is
//! staged), and the commit applies all of it in one transaction on each
//! peer, so a million-pin import rewrites each page of the state once
//! instead of once per entry.
//! This module must not decide allocations or what a pin's options mean
//! beyond IPFS Cluster's own rules (shared with `POST /pins/{cid}`).
//!
//! Records of a sharded pin (`meta-pin`, `clusterdag-pin`, `shard-pin`)
//! are taken as they are, with their `reference`, `shard_size` and
//! `max_depth`. IPFS Cluster's shard record does not name its meta pin: a
//! shard named `<name>-shard-<n>` belongs to the meta pin named `<name>`
//! in the same body (pinfleet's own exports carry it in `owners`); a shard
//! whose meta pin cannot be found is refused.

use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use libp2p::PeerId;

use super::pins::check_replication;
use super::{ApiError, ApiState, Shared};
use crate::consensus::{MAX_ENTRY_BYTES, entry_bytes};
use crate::manifest::{CidKey, Owner, shown, written_as_of};
use crate::pinsets::StagedWrite;
use crate::state::{Command, Op};
use crate::wire::{BatchPinReport, PinRecord};

/// Largest body `POST /pins/batch` reads as one JSON array (an NDJSON body
/// streams: [`MAX_STREAM_BYTES`]).
pub const MAX_BATCH_BODY_BYTES: usize = 16 << 20;
/// Largest NDJSON body (the route's bound): about ten million pins.
pub const MAX_STREAM_BYTES: usize = 4 << 30;
/// Longest line of an NDJSON body.
const MAX_LINE_BYTES: usize = 1 << 20;
/// NDJSON bytes gathered before their lines are parsed (off the runtime).
const PARSE_BYTES: usize = 1 << 20;

/// `POST /pins/batch`: pins every object of the body for owner `api`.
///
/// An NDJSON body is read as it arrives: its pins go out as staged chunks
/// of one revision while the rest is still coming, and the revision is
/// committed once the body ended well (a bad line drops what was staged).
/// A body that fits one log entry is written as that entry.
pub(super) async fn post(
    State(state): State<Shared>,
    request: axum::extract::Request,
) -> Result<Json<BatchPinReport>, ApiError> {
    let max_ops = state.node.batch_max_pins();
    let mut read = BodyRead {
        body: request.into_body().into_data_stream(),
        buf: Vec::new(),
        parser: Parser::default(),
        ops: Vec::new(),
        writer: None,
        pins: 0,
    };
    if let Err(e) = read.run(&state, max_ops).await {
        if let Some(w) = read.writer.take() {
            w.abort().await;
        }
        return Err(e);
    }
    let mut report = BatchPinReport {
        pins: read.pins,
        ..BatchPinReport::default()
    };
    let ops = std::mem::take(&mut read.ops);
    let mut writer = read.writer.take();
    if writer.is_none() {
        if ops.is_empty() {
            return Ok(Json(report));
        }
        let n = ops.len();
        let command = Command::Apply {
            owner: Owner::Api,
            ops,
        };
        if n <= max_ops.max(1) && (n == 1 || entry_bytes(&command) <= MAX_ENTRY_BYTES) {
            // One entry: written as it is, allocated by the leader.
            let out = state.node.write(command).await?;
            if let Some(why) = out.refused {
                return Err(ApiError::new(axum::http::StatusCode::CONFLICT, why));
            }
            report.created = out.created;
            report.changed = out.changed;
            return Ok(Json(report));
        }
        let mut w = StagedWrite::new(&state.node, Owner::Api, &None)?;
        if let Command::Apply { ops, .. } = command {
            for op in ops {
                if let Err(e) = w.push(op).await {
                    w.abort().await;
                    return Err(e.into());
                }
            }
        }
        writer = Some(w);
    }
    if let Some(w) = writer {
        let (out, _) = w.commit(None, None).await?;
        if let Some(why) = out.refused {
            return Err(ApiError::new(axum::http::StatusCode::CONFLICT, why));
        }
        report.created = out.created;
        report.changed = out.changed;
    }
    Ok(Json(report))
}

/// A `POST /pins/batch` body being read: what is buffered, what is parsed
/// and not yet sent, and the revision once the ops outgrew one entry.
struct BodyRead {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
    parser: Parser,
    ops: Vec<Op>,
    writer: Option<StagedWrite>,
    pins: u64,
}

impl BodyRead {
    /// Reads the whole body, staging NDJSON ops as they come.
    async fn run(&mut self, state: &ApiState, max_ops: usize) -> Result<(), ApiError> {
        let mut array: Option<bool> = None;
        loop {
            let chunk = self.body.next().await;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                let chunk = chunk.map_err(|e| body_error(&e))?;
                self.buf.extend_from_slice(&chunk);
            }
            if array.is_none() {
                array = self
                    .buf
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .map(|b| *b == b'[');
            }
            if array == Some(true) {
                if self.buf.len() > MAX_BATCH_BODY_BYTES {
                    return Err(ApiError::new(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "a JSON array body takes at most {MAX_BATCH_BODY_BYTES} bytes; send NDJSON (one pin per line) for more"
                        ),
                    ));
                }
                if end {
                    let body = std::mem::take(&mut self.buf);
                    let ops =
                        super::blocking(move || parse_body(&body).map_err(ApiError::bad_request))
                            .await?;
                    self.pins = ops.iter().filter(|o| matches!(o, Op::Set { .. })).count() as u64;
                    self.ops = ops;
                    return Ok(());
                }
                continue;
            }
            if !end && self.buf.len() < PARSE_BYTES {
                continue;
            }
            let cut = if end {
                self.buf.len()
            } else {
                match self.buf.iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if self.buf.len() > MAX_LINE_BYTES => {
                        return Err(ApiError::bad_request(format!(
                            "line {}: longer than {MAX_LINE_BYTES} bytes",
                            self.parser.line + 1
                        )));
                    }
                    None => continue,
                }
            };
            let rest = self.buf.split_off(cut);
            let text = std::mem::replace(&mut self.buf, rest);
            let mut parser = std::mem::take(&mut self.parser);
            let (parser, parsed) = super::blocking(move || {
                let parsed = parser.lines(&text);
                Ok((parser, parsed))
            })
            .await?;
            self.parser = parser;
            let mut parsed = parsed.map_err(ApiError::bad_request)?;
            if end {
                let deferred = std::mem::take(&mut self.parser)
                    .finish()
                    .map_err(ApiError::bad_request)?;
                parsed.extend(deferred);
            }
            self.pins += parsed.len() as u64;
            self.ops.extend(parsed);
            if self.writer.is_none() && self.ops.len() > max_ops {
                self.writer = Some(StagedWrite::new(&state.node, Owner::Api, &None)?);
            }
            if let Some(w) = self.writer.as_mut() {
                for op in self.ops.drain(..) {
                    w.push(op).await?;
                }
            }
            if end {
                return Ok(());
            }
        }
    }
}

/// A body that could not be read: over the route's bound (413), or cut.
fn body_error(e: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("length limit exceeded") {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body takes more than {MAX_STREAM_BYTES} bytes"),
            );
        }
        source = s.source();
    }
    ApiError::bad_request(format!("cannot read the body: {e}"))
}

/// Reads NDJSON lines into ops. IPFS Cluster's shard records name their
/// meta pin only by name, which may come later: they wait for the end.
#[derive(Default)]
struct Parser {
    /// Lines read so far.
    line: usize,
    /// Names of the meta pins seen → their CIDs.
    metas: std::collections::HashMap<String, String>,
    /// Shard records, with where they were.
    deferred: Vec<(String, PinRecord)>,
}

impl Parser {
    /// The ops of `text`'s lines (the last may lack its newline), or the
    /// first bad line: `line N: …`.
    fn lines(&mut self, text: &[u8]) -> Result<Vec<Op>, String> {
        let text = std::str::from_utf8(text).map_err(|e| format!("the body is not UTF-8: {e}"))?;
        let mut ops = Vec::new();
        for line in text.lines() {
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            let r = PinRecord::from_cluster_line(line)
                .map_err(|e| format!("line {}: {e}", self.line))?;
            let at = self.line;
            if let Some(op) = self.op(format_args!("line {at}"), r)? {
                ops.push(op);
            }
        }
        Ok(ops)
    }

    /// The op of one record, or `None` when it waits for the end; `at`
    /// names it in errors.
    fn op(&mut self, at: impl std::fmt::Display, r: PinRecord) -> Result<Option<Op>, String> {
        if r.type_ == "meta-pin" {
            self.metas.insert(r.name.clone(), r.cid.clone());
        }
        if r.type_ == "shard-pin" {
            self.deferred.push((at.to_string(), r));
            return Ok(None);
        }
        op_of(r, &self.metas)
            .map(Some)
            .map_err(|e| format!("{at}: {e}"))
    }

    /// The ops of the records that waited for the end.
    fn finish(self) -> Result<Vec<Op>, String> {
        self.deferred
            .into_iter()
            .map(|(at, r)| op_of(r, &self.metas).map_err(|e| format!("{at}: {e}")))
            .collect()
    }
}

/// The body's pins as ops, or the first bad object: `line N: …` for
/// NDJSON, `pin N: …` for an array (both 1-based).
pub(super) fn parse_body(body: &[u8]) -> Result<Vec<Op>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    if !text.trim_start().starts_with('[') {
        let mut parser = Parser::default();
        let mut ops = parser.lines(body)?;
        ops.extend(parser.finish()?);
        return Ok(ops);
    }
    let values: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON array: {e}"))?;
    let mut parser = Parser::default();
    let mut ops = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let at = format!("pin {}", i + 1);
        let r = PinRecord::from_cluster_json(v).map_err(|e| format!("{at}: {e}"))?;
        ops.extend(parser.op(at, r)?);
    }
    ops.extend(parser.finish()?);
    Ok(ops)
}

/// One IPFS Cluster pin as owner `api`'s op, checked as `POST /pins/{cid}`
/// checks its parameters; `metas` maps the names of the body's meta pins
/// to their CIDs (see the module docs).
fn op_of(
    record: PinRecord,
    metas: &std::collections::HashMap<String, String>,
) -> Result<Op, String> {
    if !matches!(
        record.type_.as_str(),
        "pin" | "meta-pin" | "clusterdag-pin" | "shard-pin"
    ) {
        return Err(format!(
            "pin type {} is not supported (pin, meta-pin, clusterdag-pin or shard-pin)",
            shown(&record.type_)
        ));
    }
    let cid = CidKey::parse(&record.cid)
        .map_err(|e| format!("invalid cid {}: {e}", shown(&record.cid)))?;
    check_replication(record.replication_factor_min, record.replication_factor_max)?;
    for peer in record.user_allocations.iter().flatten() {
        peer.parse::<PeerId>()
            .map_err(|e| format!("invalid user_allocations peer id {}: {e}", shown(peer)))?;
    }
    let mut spec = record.api_spec();
    if let Some(role) = spec.options.shard_role.as_ref() {
        let mut role = role.clone();
        if role.meta.is_empty() {
            role.meta = record
                .name
                .rsplit_once("-shard-")
                .and_then(|(name, _)| metas.get(name))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "shard-pin {} names no meta pin of this body (IPFS Cluster names a shard <name>-shard-<n> after its meta pin <name>)",
                        shown(&record.cid)
                    )
                })?;
        }
        let meta = CidKey::parse(&role.meta)
            .map_err(|e| format!("invalid meta pin {}: {e}", shown(&role.meta)))?;
        role.meta = meta.to_string();
        let mut options = (*spec.options).clone();
        options.shard_role = Some(role);
        spec.options = std::sync::Arc::new(options);
    }
    Ok(Op::Set {
        cid,
        written_as: written_as_of(&cid, &record.cid),
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "QmUaFyXjZUNaUwYF8rBtbJc7fEJ46aJXvgV8z2HHs6jvmJ";

    #[test]
    fn reads_current_and_pre_1_0_ipfs_cluster_pins_in_both_body_forms() {
        let old = format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"direct","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"cid":{{"/":"{CID}"}},"type":2,"allocations":[],"max_depth":0,"reference":null}}"#
        );
        let new = r#"{"replication_factor_min":2,"replication_factor_max":3,"name":"n","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"2030-01-01T00:00:00Z","metadata":{"k":"v"},"pin_update":null,"origins":null,"cid":"bafkqaaa","type":"pin","allocations":null,"max_depth":-1,"reference":null,"timestamp":"2024-01-01T00:00:00Z"}"#;
        let ndjson = format!("{old}\n\n{new}\n");
        let ops = parse_body(ndjson.as_bytes()).unwrap();
        assert_eq!(ops.len(), 2);
        let Op::Set {
            spec, written_as, ..
        } = &ops[1]
        else {
            panic!("not a set");
        };
        assert_eq!(written_as, &None);
        assert_eq!(spec.name, "n");
        assert_eq!(
            (spec.options.replication.min, spec.options.replication.max),
            (2, 3)
        );
        assert_eq!(
            spec.options.metadata.get("k").map(String::as_str),
            Some("v")
        );
        assert!(spec.options.expire_at_ms.is_some());
        let Op::Set { written_as, .. } = &ops[0] else {
            panic!("not a set");
        };
        assert_eq!(written_as.as_deref(), Some(CID), "the v0 spelling is kept");
        let array = format!("[{old},{new}]");
        assert_eq!(parse_body(array.as_bytes()).unwrap(), ops);
    }

    #[test]
    fn a_bad_object_is_named_by_its_line_or_position() {
        let good = r#"{"cid":"bafkqaaa","type":"pin"}"#;
        let body = format!("{good}\n{{\"cid\":\"nope\"}}\n");
        let e = parse_body(body.as_bytes()).unwrap_err();
        assert!(e.starts_with("line 2: invalid cid \"nope\""), "{e}");
        let e = parse_body(format!("[{good},{good},{{}}]").as_bytes()).unwrap_err();
        assert!(e.starts_with("pin 3: missing field `cid`"), "{e}");
        let e = parse_body(br#"{"cid":"bafkqaaa","type":"bad-type"}"#).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let e =
            parse_body(br#"{"cid":"bafkqaaa","type":"shard-pin","name":"x-shard-0"}"#).unwrap_err();
        assert!(e.contains("names no meta pin"), "{e}");
        let e = parse_body(
            br#"{"cid":"bafkqaaa","replication_factor_min":3,"replication_factor_max":2}"#,
        )
        .unwrap_err();
        assert!(e.starts_with("line 1: replication-min 3"), "{e}");
    }

    #[test]
    fn ipfs_cluster_sharded_records_keep_their_role_and_shards_find_their_meta_pin_by_name() {
        let meta = crate::testkit::seq_cid(1).to_string();
        let dag = crate::testkit::seq_cid(2).to_string();
        let shard = crate::testkit::seq_cid(3).to_string();
        let body = format!(
            "{{\"cid\":\"{meta}\",\"type\":4,\"name\":\"f\",\"reference\":\"{dag}\",\"shard_size\":100}}\n\
             {{\"cid\":\"{dag}\",\"type\":\"clusterdag-pin\",\"name\":\"f-clusterDAG\",\"reference\":\"{meta}\",\"mode\":\"direct\"}}\n\
             {{\"cid\":\"{shard}\",\"type\":16,\"name\":\"f-shard-0\",\"max_depth\":1,\"shard_size\":60,\"replication_factor_min\":1,\"replication_factor_max\":1}}\n"
        );
        let ops = parse_body(body.as_bytes()).unwrap();
        let roles: Vec<crate::manifest::ShardRole> = ops
            .iter()
            .map(|op| {
                let Op::Set { spec, .. } = op else {
                    panic!("not a set")
                };
                spec.options.shard_role.clone().unwrap()
            })
            .collect();
        use crate::manifest::ShardKind;
        assert_eq!(
            roles.iter().map(|r| r.kind).collect::<Vec<_>>(),
            [ShardKind::Meta, ShardKind::ClusterDag, ShardKind::Shard]
        );
        assert!(roles.iter().all(|r| r.meta == meta), "{roles:?}");
        assert_eq!(roles[0].reference.as_deref(), Some(dag.as_str()));
        assert_eq!((roles[2].max_depth, roles[2].shard_size), (1, 60));
    }
}
