//! Every route of the REST API with the access it needs, in one table: the
//! router is built from it, so a route cannot exist without declaring who
//! may call it, and the access test walks it (route × identity).
//!
//! This module owns the table only; handlers live in their modules and the
//! checks in `access`.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::access::Access;
use super::{
    Shared, add, batch, followers, gateway, gc, health, metrics, monitor, openapi, paths, peers,
    pins, pinset_patch, pinset_status, pinsets, reconcile, status, token,
};
use crate::auth::Role::{Admin, Reader, Writer};

/// One method of one path, who may call it, and its handler.
#[derive(Debug)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, in axum's syntax (`/pins/{cid}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Which limit on its input applies beyond the defaults.
    pub bound: Bound,
    pub(super) endpoint: MethodRouter<Shared>,
}

/// Limits on a route's input beyond axum's default 2 MB body cap and the
/// server's read timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The defaults.
    Default,
    /// A PinSet write: takes one of `max_concurrent_pinset_writes` slots.
    PinSetWrite,
    /// An upload: `max_upload_bytes` instead of the default cap.
    Upload,
    /// A batch of pins: an NDJSON body of up to
    /// [`MAX_STREAM_BYTES`](super::batch::MAX_STREAM_BYTES) (a JSON array:
    /// [`MAX_BATCH_BODY_BYTES`](super::batch::MAX_BATCH_BODY_BYTES)), and
    /// one of the `max_concurrent_pinset_writes` slots.
    PinBatch,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, Shared>,
    T: 'static,
{
    // Every method used below is one of the standard ones a MethodFilter
    // names; `routes_build_a_router` runs this for each entry.
    #[allow(clippy::expect_used)]
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        access,
        bound: Bound::Default,
        endpoint: on(filter, handler),
    }
}

/// The REST API's routes (webhook receivers, which authenticate with their
/// own signatures, are merged in beside them).
pub fn routes() -> Vec<Route> {
    use Access::{Open, Role};
    vec![
        route(Method::GET, "/health", Open, peers::health),
        route(Method::GET, "/openapi.json", Open, openapi::get),
        route(Method::GET, "/id", Role(Reader), peers::id),
        route(Method::GET, "/version", Role(Reader), peers::version),
        route(Method::GET, "/health/graph", Role(Reader), health::graph),
        route(Method::GET, "/health/alerts", Role(Reader), health::alerts),
        route(
            Method::GET,
            "/health/bandwidth",
            Role(Reader),
            health::bandwidth,
        ),
        route(Method::GET, "/peers", Role(Reader), peers::list),
        route(Method::GET, "/followers", Role(Reader), followers::list),
        route(Method::POST, "/peers", Role(Admin), peers::add),
        route(Method::DELETE, "/peers/{peer}", Role(Admin), peers::remove),
        route(Method::GET, "/allocations", Role(Reader), pins::allocations),
        route(
            Method::GET,
            "/allocations/{cid}",
            Role(Reader),
            pins::allocation,
        ),
        route(Method::GET, "/pins", Role(Reader), status::list),
        route(
            Method::POST,
            "/pins/recover",
            Role(Writer),
            status::recover_all,
        ),
        Route {
            bound: Bound::PinBatch,
            ..route(Method::POST, "/pins/batch", Role(Writer), batch::post)
        },
        route(Method::GET, "/pins/{cid}", Role(Reader), status::get),
        route(Method::POST, "/pins/{cid}", Role(Writer), pins::pin),
        route(Method::DELETE, "/pins/{cid}", Role(Writer), pins::unpin),
        route(Method::POST, "/pins/ipfs/{*path}", Role(Writer), paths::pin),
        route(
            Method::DELETE,
            "/pins/ipfs/{*path}",
            Role(Writer),
            paths::unpin,
        ),
        route(Method::POST, "/pins/ipns/{*path}", Role(Writer), paths::pin),
        route(
            Method::DELETE,
            "/pins/ipns/{*path}",
            Role(Writer),
            paths::unpin,
        ),
        route(Method::POST, "/pins/ipld/{*path}", Role(Writer), paths::pin),
        route(
            Method::DELETE,
            "/pins/ipld/{*path}",
            Role(Writer),
            paths::unpin,
        ),
        route(
            Method::POST,
            "/pins/{cid}/recover",
            Role(Writer),
            status::recover_one,
        ),
        route(Method::GET, "/pinsets", Role(Reader), pinsets::list),
        route(
            Method::GET,
            "/pinsets/{namespace}/{name}",
            Role(Reader),
            pinsets::get_one,
        ),
        Route {
            bound: Bound::PinSetWrite,
            ..route(
                Method::PUT,
                "/pinsets/{namespace}/{name}",
                Role(Writer),
                pinsets::put,
            )
        },
        Route {
            bound: Bound::PinSetWrite,
            ..route(
                Method::PATCH,
                "/pinsets/{namespace}/{name}",
                Role(Writer),
                pinset_patch::patch,
            )
        },
        route(
            Method::DELETE,
            "/pinsets/{namespace}/{name}",
            Role(Writer),
            pinsets::remove,
        ),
        route(
            Method::PUT,
            "/pinsets/{namespace}/{name}/conditions",
            Role(Admin),
            pinsets::put_conditions,
        ),
        route(
            Method::GET,
            "/pinsets/{namespace}/{name}/status",
            Role(Reader),
            pinset_status::get,
        ),
        route(
            Method::POST,
            "/pinsets/{namespace}/{name}/reconcile",
            Role(Writer),
            reconcile::post,
        ),
        route(Method::GET, "/state/export", Role(Reader), pins::export),
        route(Method::GET, "/metrics", Role(Reader), metrics::get),
        route(
            Method::GET,
            "/monitor/metrics",
            Role(Reader),
            monitor::names,
        ),
        route(
            Method::GET,
            "/monitor/metrics/{name}",
            Role(Reader),
            monitor::get,
        ),
        route(Method::POST, "/ipfs/gc", Role(Admin), gc::gc),
        route(Method::GET, "/ipfs/{cid}", Role(Reader), gateway::get_root),
        route(
            Method::GET,
            "/ipfs/{cid}/{*path}",
            Role(Reader),
            gateway::get_path,
        ),
        Route {
            bound: Bound::Upload,
            ..route(Method::POST, "/add", Role(Writer), add::add)
        },
        route(Method::POST, "/token", Role(Reader), token::post),
    ]
}
