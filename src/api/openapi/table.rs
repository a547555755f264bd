//! The documentation of every route of `routes::routes()`, one entry per
//! method and path: summary, query parameters, request body and answers.
//! The OpenAPI document is built from the route table and this one; a
//! test fails when either has an entry the other lacks.
//!
//! Adding a route's documentation is one [`doc`] entry in [`docs`]. Path
//! parameters (`{cid}`, `{peer}`, …) are described from their name (see
//! `super::path_param`), the role from the route table, and 401/403 and the
//! generic error answer are added to every route that needs them. This
//! module only states facts about routes; it must not serve anything.

use axum::http::Method;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::super::peers::PeerAddBody;
use super::super::token::TokenAnswer;
use crate::wire::{
    AddedOutput, Alert, ApplyReport, Bandwidth, BatchPinReport, ConditionsReport, ConnectGraph,
    ErrorBody, FollowerInfo, GlobalPinInfo, GlobalRepoGc, IpfsDirEntry, MonitorMetric,
    PatchDocument, PeerInfo, PinRecord, PinSetInfo, PinSetStatus, ReconcileAnswer, RefusedApply,
    VersionInfo,
};

/// A schema of a Rust type, generated when the document is built.
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// `T`'s schema (a `$ref` to `#/components/schemas/T` for named types).
pub(crate) fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The type of a query parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ty {
    /// Any text.
    Str,
    /// `true`/`false` (also `1`/`0`); absent is false.
    Bool,
    /// A 32-bit integer.
    Int,
    /// A number between 0 and 1.
    Fraction,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A duration such as `30s`, `2m`, `1h30m`.
    Duration,
    /// RFC 3339 time.
    Time,
    /// A comma-separated list.
    List,
}

/// One query parameter (or request header).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Param {
    /// Its name in the query string (or the header's name).
    pub name: &'static str,
    /// `query` or `header`.
    pub location: &'static str,
    /// Its type.
    pub ty: Ty,
    /// What it does.
    pub description: &'static str,
}

/// A query parameter.
const fn q(name: &'static str, ty: Ty, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description,
    }
}

/// An optional request header.
const fn h(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "header",
        ty: Ty::Str,
        description,
    }
}

/// What an answer (or a request) carries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Content {
    /// Nothing.
    Empty,
    /// One JSON value.
    Json(SchemaFn),
    /// NDJSON: one JSON value of this schema per line, `Content-Type:
    /// application/json`, `Trailer: X-Stream-Error`.
    Stream(SchemaFn),
    /// Text of this media type (OpenMetrics, a YAML manifest, …).
    Text(&'static str),
    /// A file's bytes (`application/octet-stream`), or for a directory
    /// one JSON value of this schema.
    FileOrJson(SchemaFn),
}

/// One documented answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    /// HTTP status.
    pub status: u16,
    /// When it is sent.
    pub description: &'static str,
    /// What it carries; error statuses always carry `ErrorBody`.
    pub content: Content,
}

/// A request body.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Body {
    /// A JSON document of this type.
    Json(SchemaFn),
    /// A PinSet manifest document, YAML or JSON.
    Manifest,
    /// `multipart/form-data` files, as `ipfs add` sends them.
    Multipart,
    /// Any JSON (a forge's event), read as bytes.
    AnyJson,
}

/// The documentation of one route.
#[derive(Clone, Debug)]
pub(crate) struct RouteDoc {
    /// Method.
    pub method: Method,
    /// Path, as in the route table.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// More, in Markdown (may be empty).
    pub description: &'static str,
    /// Query parameters.
    pub params: Vec<Param>,
    /// Request body, if any.
    pub body: Option<Body>,
    /// Answers besides 401/403 (added by role) and the generic error.
    pub replies: Vec<Reply>,
}

/// One entry of [`docs`].
fn doc(method: Method, path: &'static str, summary: &'static str) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        description: "",
        params: Vec::new(),
        body: None,
        replies: Vec::new(),
    }
}

impl RouteDoc {
    fn about(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
    fn params(mut self, params: &[Param]) -> Self {
        self.params.extend_from_slice(params);
        self
    }
    fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }
    fn reply(mut self, status: u16, description: &'static str, content: Content) -> Self {
        self.replies.push(Reply {
            status,
            description,
            content,
        });
        self
    }
    /// An error answer (its body is `ErrorBody`).
    fn error(self, status: u16, description: &'static str) -> Self {
        self.reply(status, description, Content::Empty)
    }
}

/// IPFS Cluster's pin options (`POST /pins/{cid}`, `POST /add`).
const PIN_OPTIONS: &[Param] = &[
    q("name", Ty::Str, "Pin name."),
    q(
        "mode",
        Ty::OneOf(&["recursive", "direct"]),
        "Pin mode (default `recursive`).",
    ),
    q(
        "replication",
        Ty::Int,
        "Sets both `replication-min` and `replication-max`.",
    ),
    q(
        "replication-min",
        Ty::Int,
        "Fewest peers (0: the cluster's default, -1: every peer).",
    ),
    q(
        "replication-max",
        Ty::Int,
        "Most peers (0: the cluster's default, -1: every peer).",
    ),
    q(
        "shard-size",
        Ty::Int,
        "With `POST /add?shard=true`: most bytes of blocks per shard (absent or 0: 104857600, IPFS Cluster's 100 MiB). Elsewhere accepted for compatibility.",
    ),
    q(
        "user-allocations",
        Ty::List,
        "Peer ids to allocate to first, separated by commas.",
    ),
    q("expire-at", Ty::Time, "Unpin at this time."),
    q(
        "expire-in",
        Ty::Duration,
        "Unpin after this long (at least 1s); ignored with `expire-at`.",
    ),
    q(
        "origins",
        Ty::List,
        "Multiaddresses that have the content, separated by commas.",
    ),
];

/// The prune guard of PinSet writes.
const GUARD: &[Param] = &[
    q(
        "force",
        Ty::Bool,
        "Lift the prune guard (needs the admin role).",
    ),
    q(
        "maxPruneFraction",
        Ty::Fraction,
        "Largest fraction of the PinSet's pins one write may release (default 0.5).",
    ),
    q(
        "dryRun",
        Ty::Bool,
        "Only plan: answer what would change, write nothing.",
    ),
];

const STATUS_QUERY: &[Param] = &[
    q(
        "filter",
        Ty::List,
        "Only pins with one of these statuses on some peer (`pinned`, `pin_error`, …, or the aliases `error` and `queued`), separated by commas.",
    ),
    q("local", Ty::Bool, "Only this peer's status."),
    q(
        "cids",
        Ty::List,
        "Only these CIDs, separated by commas; a CID not in the pinset is answered with every peer `unpinned`.",
    ),
];

const NO_TRACKER: &str = "This peer tracks no pins.";

/// Every route's documentation.
pub(crate) fn docs() -> Vec<RouteDoc> {
    use Content::{Empty, Json, Stream, Text};
    vec![
        doc(Method::GET, "/health", "Liveness: 204 while the API serves.")
            .reply(204, "The API serves.", Empty),
        doc(Method::GET, "/openapi.json", "This document (OpenAPI 3.1).")
            .reply(200, "The OpenAPI document.", Text("application/json")),
        doc(Method::GET, "/id", "This peer: ids, addresses, members, IPFS node.")
            .reply(200, "IPFS Cluster's `ID`.", Json(schema::<PeerInfo>)),
        doc(Method::GET, "/version", "pinfleet's version.")
            .reply(200, "IPFS Cluster's `Version`.", Json(schema::<VersionInfo>)),
        doc(Method::GET, "/peers", "Every cluster member, this peer first.")
            .about("Each member is asked; one that does not answer is listed with its `error`.")
            .reply(200, "One `ID` per member.", Stream(schema::<PeerInfo>)),
        doc(Method::GET, "/followers", "The followers this peer knows of (collaborative clusters).")
            .about(
                "Followers that pulled the signed state feed from this peer in the last minute, and \
                 those whose informer metrics (tagged `follower`) have not expired, most recently \
                 heard first: how far behind this peer's state they are and what they report. \
                 pinfleet's own route; IPFS Cluster has none.",
            )
            .reply(200, "One `FollowerInfo` per follower (`[]` when none).", Json(schema::<Vec<FollowerInfo>>)),
        doc(Method::POST, "/peers", "Adds a peer as a cluster member (IPFS Cluster's `PeerAdd`).")
            .about(
                "The body is IPFS Cluster's `{\"peer_id\": …}` plus pinfleet's `addresses` (where to reach \
                 the peer: pinfleet keeps no address book of non-members). The peer must be started with \
                 a bootstrap address, so that it waits to be added.",
            )
            .body(Body::Json(schema::<PeerAddBody>))
            .reply(200, "The new member's `ID`.", Json(schema::<PeerInfo>))
            .error(500, "The peer could not be reached at its addresses.")
            .error(503, "No quorum: the membership change cannot be committed."),
        doc(Method::GET, "/health/graph", "Who is connected to whom (IPFS Cluster's `ConnectGraph`).")
            .about("IPFS swarm links are empty: the IPFS backends do not list their swarm peers.")
            .reply(200, "The graph.", Json(schema::<ConnectGraph>)),
        doc(Method::GET, "/health/alerts", "Members whose metrics expired (IPFS Cluster's `Alert`s).")
            .reply(200, "The alerts now (`[]` when none).", Json(schema::<Vec<Alert>>))
            .error(503, "This peer runs no monitor."),
        doc(Method::GET, "/health/bandwidth", "libp2p bandwidth by protocol.")
            .about("pinfleet counts no libp2p bandwidth: the map is empty.")
            .reply(200, "Bandwidth by protocol.", Json(schema::<std::collections::BTreeMap<String, Bandwidth>>)),
        doc(Method::DELETE, "/peers/{peer}", "Removes a member from the cluster.")
            .reply(204, "Removed.", Empty)
            .error(404, "Not a cluster member.")
            .error(503, "No quorum: the membership change cannot be committed."),
        doc(Method::GET, "/allocations", "Every pin of the shared state.")
            .params(&[q(
                "filter",
                Ty::List,
                "Pin types separated by commas: `pin`, `meta-pin`, `clusterdag-pin`, `shard-pin`, `all`; none, empty or `all`: every pin. `meta-pin` is a sharded pin's root (pinned by no peer), `clusterdag-pin` its cluster DAG, `shard-pin` its shards.",
            )])
            .reply(200, "One `Pin` per line.", Stream(schema::<PinRecord>))
            .reply(204, "No pin.", Empty),
        doc(Method::GET, "/allocations/{cid}", "One pin of the shared state.")
            .reply(200, "IPFS Cluster's `Pin`.", Json(schema::<PinRecord>))
            .error(404, "The CID is not pinned."),
        doc(Method::GET, "/pins", "Every pin's status on every peer.")
            .params(STATUS_QUERY)
            .reply(200, "One `GlobalPinInfo` per line.", Stream(schema::<GlobalPinInfo>))
            .reply(204, "No pin.", Empty)
            .error(503, NO_TRACKER),
        doc(Method::POST, "/pins/recover", "Retries every failed operation on every peer.")
            .about("Answers like `GET /pins` with what was re-queued.")
            .params(STATUS_QUERY)
            .reply(200, "One `GlobalPinInfo` per line.", Stream(schema::<GlobalPinInfo>))
            .reply(204, "Nothing to recover.", Empty)
            .error(503, NO_TRACKER),
        doc(Method::GET, "/pins/{cid}", "One pin's status on every peer.")
            .about(
                "A CID not in the pinset is answered with each member's own status: `unpinned`, or \
                 its unpin still queued or running where the node holds it yet. A sharded pin's \
                 meta pin shows its shards' statuses: `pinned` only once every shard is pinned on \
                 its replication minimum of peers, else each peer's least advanced shard status \
                 (`remote` where it holds none).",
            )
            .params(&[q("local", Ty::Bool, "Only this peer's status.")])
            .reply(200, "IPFS Cluster's `GlobalPinInfo`.", Json(schema::<GlobalPinInfo>))
            .error(503, NO_TRACKER),
        doc(Method::POST, "/pins/batch", "Pins many CIDs in few log entries (owner `api`).")
            .about(
                "The body is IPFS Cluster `Pin` JSON objects, one per line (its `state export` format, \
                 streamed: up to 4 GiB) or one array (up to 16 MiB); each pin's options come from its \
                 object. The body lands whole or not at all: one log entry, or for a larger body one \
                 revision committed in one transaction once the body ended well, its pins allocated \
                 as they are staged. `pinfleet state import` uses it. Types `meta-pin`, \
                 `clusterdag-pin` and `shard-pin` keep their `reference`, `shard_size` and `max_depth`; \
                 a shard belongs to the meta pin of the body whose name it carries (`<name>-shard-<n>`).",
            )
            .body(Body::Json(schema::<Vec<PinRecord>>))
            .reply(200, "How many pins the body held and what writing them did.", Json(schema::<BatchPinReport>))
            .error(409, "Refused: a CID is pinned with other options by a PinSet.")
            .error(413, "The body is larger than its limit (NDJSON 4 GiB, array 16 MiB).")
            .error(503, "No write slot free or no quorum; retry."),
        doc(Method::POST, "/pins/{cid}", "Pins a CID (owner `api`).")
            .about(
                "Query parameters as IPFS Cluster's; `meta-KEY=VALUE` adds metadata. With \
                 `pin-update=OLD` the new pin takes OLD's options, name and allocations.",
            )
            .params(PIN_OPTIONS)
            .params(&[q("pin-update", Ty::Str, "A pinned CID whose options and allocations the new pin takes.")])
            .reply(200, "The pin as now recorded.", Json(schema::<PinRecord>))
            .error(409, "Refused: the CID is pinned with other options by a PinSet.")
            .error(503, "No quorum: the pin cannot be committed."),
        doc(Method::DELETE, "/pins/{cid}", "Unpins a CID (releases owner `api`).")
            .about(
                "While a PinSet also owns the CID the answer is 409 naming the PinSets and nothing is written; \
                 `force=true` (admin) removes it with every owner. Unpinning a sharded pin's meta pin \
                 releases its cluster DAG and every shard; unpinning a cluster DAG or a shard alone is \
                 409, naming its meta pin.",
            )
            .params(&[q(
                "force",
                Ty::Bool,
                "Unpin even while PinSets own the CID (needs the admin role).",
            )])
            .reply(200, "The pin as it now stands (no owners once gone).", Json(schema::<PinRecord>))
            .error(404, "The CID is not pinned.")
            .error(409, "PinSets own the CID, or it is part of a sharded pin.")
            .error(503, "No quorum: the unpin cannot be committed."),
        doc(Method::POST, "/pins/{cid}/recover", "Retries this CID's failed operations.")
            .params(&[q("local", Ty::Bool, "Only on this peer.")])
            .reply(200, "Its status after re-queueing.", Json(schema::<GlobalPinInfo>))
            .error(404, "The CID is not pinned.")
            .error(503, NO_TRACKER),
        path_pin(Method::POST, "/pins/ipfs/{*path}"),
        path_pin(Method::DELETE, "/pins/ipfs/{*path}"),
        path_pin(Method::POST, "/pins/ipns/{*path}"),
        path_pin(Method::DELETE, "/pins/ipns/{*path}"),
        path_pin(Method::POST, "/pins/ipld/{*path}"),
        path_pin(Method::DELETE, "/pins/ipld/{*path}"),
        doc(Method::GET, "/pinsets", "Every applied PinSet.")
            .reply(200, "The PinSets.", Json(schema::<Vec<PinSetInfo>>)),
        doc(Method::GET, "/pinsets/{namespace}/{name}", "One applied PinSet.")
            .reply(200, "The PinSet as recorded.", Json(schema::<PinSetInfo>))
            .error(404, "No such PinSet."),
        doc(Method::PUT, "/pinsets/{namespace}/{name}", "Applies a PinSet document.")
            .about(
                "The body is one PinSet document (YAML or JSON, `pinsFrom` resolved) whose name and \
                 namespace match the path; it is applied atomically.",
            )
            .params(GUARD)
            .params(&[
                q("source", Ty::Str, "Label of where the revision came from (default `api`)."),
                q("revision", Ty::Str, "Label of the revision (default: the body's SHA-256)."),
            ])
            .body(Body::Manifest)
            .reply(200, "What the apply did (or would do).", Json(schema::<ApplyReport>))
            .reply(409, "Refused by the prune guard; nothing written.", Json(schema::<RefusedApply>))
            .error(413, "The body is larger than `api.max_body_bytes`.")
            .error(422, "The document is invalid (located problems in `errors`).")
            .error(503, "No write slot free or no quorum; retry."),
        doc(Method::PATCH, "/pinsets/{namespace}/{name}", "Applies a new revision as a diff.")
            .about("Only the pins that differ from the revision the cluster holds (`baseRevision`).")
            .params(GUARD)
            .params(&[q("source", Ty::Str, "Label of where the revision came from (default `api`).")])
            .body(Body::Json(schema::<PatchDocument>))
            .reply(200, "What the apply did (or would do).", Json(schema::<ApplyReport>))
            .reply(409, "Refused by the prune guard; nothing written.", Json(schema::<RefusedApply>))
            .error(412, "The cluster holds another revision than `baseRevision`.")
            .error(413, "The body is larger than `api.max_body_bytes`.")
            .error(503, "No write slot free or no quorum; retry."),
        doc(Method::DELETE, "/pinsets/{namespace}/{name}", "Deletes a PinSet: releases its pins.")
            .params(GUARD)
            .reply(200, "What the delete did (or would do).", Json(schema::<ApplyReport>))
            .reply(409, "Refused by the prune guard; nothing written.", Json(schema::<RefusedApply>))
            .error(404, "No such PinSet.")
            .error(503, "No quorum: the delete cannot be committed."),
        doc(
            Method::PUT,
            "/pinsets/{namespace}/{name}/conditions",
            "Records the conditions a controller computed.",
        )
        .body(Body::Json(schema::<ConditionsReport>))
        .reply(204, "Committed.", Empty)
        .error(413, "The body is larger than 64 KiB.")
        .error(503, "No quorum: the conditions cannot be committed."),
        doc(Method::GET, "/pinsets/{namespace}/{name}/status", "A PinSet's status.")
            .reply(200, "Conditions and pin counts.", Json(schema::<PinSetStatus>))
            .error(404, "No such PinSet.")
            .error(503, NO_TRACKER),
        doc(
            Method::POST,
            "/pinsets/{namespace}/{name}/reconcile",
            "Asks the PinSet's controller to reconcile now.",
        )
        .params(&[
            q("wait", Ty::Bool, "Answer when the reconcile is done, not when it is queued."),
            q("timeout", Ty::Duration, "How long to wait (default 2m, at most 10m)."),
        ])
        .reply(200, "Done (with `wait=true`).", Json(schema::<ReconcileAnswer>))
        .reply(202, "Queued.", Json(schema::<ReconcileAnswer>))
        .error(404, "No such PinSet.")
        .error(409, "No controller here runs the PinSet's source.")
        .error(503, "No controller runs on this peer.")
        .error(504, "The wait timed out."),
        doc(Method::GET, "/state/export", "The shared state, one `Pin` per line.")
            .reply(200, "The state file.", Stream(schema::<PinRecord>))
            .reply(204, "No pin.", Empty),
        doc(Method::GET, "/metrics", "Prometheus metrics (OpenMetrics text).").reply(
            200,
            "The metrics.",
            Text(super::super::metrics::CONTENT_TYPE),
        ),
        doc(Method::GET, "/monitor/metrics", "Names of the metrics known now.")
            .reply(200, "Sorted names.", Json(schema::<Vec<String>>))
            .error(503, "This peer runs no monitor."),
        doc(Method::GET, "/monitor/metrics/{name}", "One metric's latest reading from every member.")
            .reply(200, "IPFS Cluster's `Metric`s (`[]` for an unknown name).", Json(schema::<Vec<MonitorMetric>>))
            .error(503, "This peer runs no monitor."),
        doc(Method::POST, "/ipfs/gc", "Garbage-collects the IPFS nodes.")
            .params(&[q("local", Ty::Bool, "Only this peer's node.")])
            .reply(200, "IPFS Cluster's `GlobalRepoGC`.", Json(schema::<GlobalRepoGc>)),
        read_doc(Method::GET, "/ipfs/{cid}"),
        read_doc(Method::GET, "/ipfs/{cid}/{*path}"),
        doc(Method::POST, "/add", "Imports files into IPFS and pins the root.")
            .about(
                "IPFS Cluster's adder: a multipart body of files; `AddedOutput` per entry, streamed as \
                 each top-level entry is imported, the root last with its allocations. Several top-level \
                 entries without `wrap-with-directory` are each added; only the last root is pinned. An \
                 error after the first entry ends the stream with its `X-Stream-Error` trailer, and \
                 nothing is pinned.",
            )
            .params(PIN_OPTIONS)
            .params(&[
                q("stream-channels", Ty::Bool, "NDJSON (default) or, with `false`, one JSON array."),
                q("wrap-with-directory", Ty::Bool, "Wrap the files in a directory."),
                q("no-pin", Ty::Bool, "Only import."),
                q("pin", Ty::Bool, "`false`: only import (Kubo's spelling)."),
                q("cid-version", Ty::OneOf(&["0", "1"]), "CID version."),
                q("raw-leaves", Ty::Bool, "Raw leaves (default with CID version 1)."),
                q("chunker", Ty::Str, "`size-N` (default `size-262144`)."),
                q("hash", Ty::OneOf(&["sha2-256"]), "Hash function."),
                q("layout", Ty::OneOf(&["balanced"]), "DAG layout."),
                q(
                    "format",
                    Ty::OneOf(&["unixfs", "car"]),
                    "Import format: `car` imports one CAR v1 file with exactly one root (no wrap).",
                ),
                q("progress", Ty::Bool, "Also stream `{\"name\",\"cid\":null,\"bytes\"}` progress objects."),
                q("local", Ty::Bool, "Accepted: pinfleet always imports on the receiving peer only."),
                q("hidden", Ty::Bool, "Accepted for compatibility."),
                q("trickle", Ty::Bool, "Refused: pinfleet builds balanced DAGs only."),
                q("shard", Ty::Bool, "Sharded add (IPFS Cluster's): the blocks are grouped, in import order, into shards of at most `shard-size` bytes, each sent to the peers with the most free space (`replication-max` of them; -1 refused) and pinned there (`shard-pin`, `user_allocations` = those peers); then the `clusterdag-pin` and the `meta-pin` (the content root) are written. Needs the embedded IPFS node on this peer (400 otherwise)."),
                q("nocopy", Ty::Bool, "Refused: pinfleet has no filestore."),
            ])
            .body(Body::Multipart)
            .reply(200, "One `AddedOutput` per line (or one array).", Stream(schema::<AddedOutput>))
            .error(409, "Refused: the root is pinned with other options by a PinSet.")
            .error(413, "The upload is larger than `api.max_upload_bytes`.")
            .error(507, "Sharded add: the declared upload size times the replication minimum is larger than the cluster's free space (nothing imported), or no peers have room for a shard (nothing pinned).")
            .error(501, "This peer's IPFS backend cannot import.")
            .error(502, "The IPFS node failed.")
            .error(503, "This peer has no IPFS node."),
        doc(Method::POST, "/token", "A bearer token for the caller.")
            .params(&[
                q("user", Ty::Str, "A token for this user instead (needs the admin role)."),
                q("role", Ty::OneOf(&["reader", "writer", "admin"]), "A role no higher than the caller's."),
                q("ttl", Ty::Duration, "A life no longer than `api.token_ttl`."),
            ])
            .reply(200, "The token, as IPFS Cluster answers it.", Json(schema::<TokenAnswer>)),
    ]
}

/// `POST`/`DELETE /pins/{ipfs|ipns|ipld}/{path…}`: as `/pins/{cid}` for
/// the CID the path leads to.
/// `GET /ipfs/{cid}[/{path…}]`: reading content back.
fn read_doc(method: Method, path: &'static str) -> RouteDoc {
    use Content::{Empty, FileOrJson, Text};
    doc(method, path, "Reads a file, or lists a directory, through this peer's IPFS node.")
        .about(
            "A file answers its bytes as `application/octet-stream`, streamed as the node reads \
             them (blocks it lacks are fetched from the nodes it is connected to, not stored), \
             with `ETag: \"<cid>\"` and `Accept-Ranges: bytes`. One `Range: bytes=a-b`, `a-` or \
             `-n` answers 206 with `Content-Range`; several ranges or a malformed header answer \
             the whole file. A directory answers a JSON array of its entries (`pinfleet get` walks \
             it). Symlinks are not followed (422).",
        )
        .params(&[
            h("Range", "One byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`."),
            h("If-Range", "The range applies only if this is the file's ETag."),
            h("If-None-Match", "304 when it holds the file's ETag."),
        ])
        .reply(
            200,
            "The file's bytes, or the directory's entries.",
            FileOrJson(schema::<Vec<IpfsDirEntry>>),
        )
        .reply(206, "The range asked for (`Content-Range`).", Text("application/octet-stream"))
        .reply(304, "The file has the ETag of `If-None-Match`.", Empty)
        .error(404, "Neither this node nor a node connected to it has the CID, or a name on the path is missing.")
        .error(416, "The range starts past the file's end (`Content-Range: bytes */<size>`).")
        .error(422, "Not readable: a symlink, not UnixFS, or a malformed DAG.")
        .error(502, "The IPFS node failed.")
        .error(503, "This peer has no IPFS node.")
        .error(504, "The IPFS node did not find the content in time.")
}

fn path_pin(method: Method, path: &'static str) -> RouteDoc {
    let pin = method == Method::POST;
    let d = if pin {
        doc(
            method,
            path,
            "Pins the CID an IPFS path leads to (owner `api`).",
        )
        .params(PIN_OPTIONS)
    } else {
        doc(
            method,
            path,
            "Unpins the CID an IPFS path leads to (releases owner `api`).",
        )
        .params(&[q(
            "force",
            Ty::Bool,
            "Unpin even while PinSets own the CID (needs the admin role).",
        )])
    };
    d.about(
        "The path is resolved by this peer's IPFS node (a bare root is not resolved), then \
         answered as for `/pins/{cid}` of the resolved CID.",
    )
    .reply(
        200,
        "The pin of the resolved CID.",
        Content::Json(schema::<PinRecord>),
    )
    .error(
        409,
        "Refused: PinSets own the CID, or pin it with other options.",
    )
    .error(
        500,
        "The path cannot be resolved (`cannot resolve …`), as IPFS Cluster answers.",
    )
    .error(503, "No quorum: the change cannot be committed.")
}

/// Routes served beside the table: the webhook receivers (`[controller]
/// webhooks`), which authenticate with their own signatures. Served on the
/// REST listener only when receivers are configured there.
pub(crate) fn beside() -> Vec<RouteDoc> {
    use Content::Json;
    vec![
        doc(Method::POST, "/hooks/{name}", "A git webhook: fetch the receiver's source now.")
            .about(
                "One header authenticates, by the receiver's kind: GitHub `X-Hub-Signature-256`, \
                 generic `X-Signature-256` (`sha256=` and the hex HMAC-SHA256 of the body keyed with \
                 `PINFLEET_WEBHOOK_SECRET`), GitLab `X-Gitlab-Token` (the secret). Served only when \
                 `[controller] webhooks` names receivers (see docs/guides/gitops.md).",
            )
            .params(&[
                h("X-Hub-Signature-256", "GitHub's signature."),
                h("X-Signature-256", "The generic receiver's signature."),
                h("X-Gitlab-Token", "GitLab's token."),
                h("X-GitHub-Event", "GitHub's event; a signed `ping` is answered 200."),
            ])
            .body(Body::AnyJson)
            .reply(200, "A signed GitHub ping: nothing triggered.", Json(schema::<ErrorBody>))
            .reply(202, "Accepted: a fetch is triggered or already pending.", Json(schema::<ErrorBody>))
            .error(401, "No valid signature or token; nothing triggered.")
            .error(404, "No such receiver.")
            .error(413, "The body is larger than 1 MiB.")
            .error(503, "No controller can act on it now."),
    ]
}
