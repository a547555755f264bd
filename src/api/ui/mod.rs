//! The web dashboard (issue 21): server-rendered pages under `/ui/` on the
//! REST listener, with the API's users and roles (a login page issues the
//! same token as `POST /token`, kept in an HttpOnly cookie), assets
//! compiled in, and a small script that refreshes a page's content.
//!
//! Pages read what the JSON handlers read (the state, the monitor's view,
//! `pinset_status`), never through HTTP to this peer, and never list every
//! pin: searches are paged and PinSet counts come from [`counts`]. The
//! routes are not in the REST table (they answer HTML and redirect to the
//! login page instead of 401); their access check is `gate`, over
//! `AccessPolicy`. This module must not write to the state except through
//! a writer's "reconcile now".

mod counts;
mod history;
mod html;
mod login;
mod overview;
mod peer;
mod pinset;
mod search;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use counts::PinSetCounts;
pub use history::MetricHistory;

use super::ApiState;
use crate::api::Shared;
use html::{Page, Viewer, esc};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pinfleet_session";

/// What the dashboard keeps between requests. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    /// The last hour of every peer's metrics.
    pub history: Arc<MetricHistory>,
    /// PinSet statuses, counted in the background.
    pub counts: Arc<PinSetCounts>,
}

/// The dashboard's routes, or none when `state.ui` is off (then `/ui/`
/// is an unknown route: 404).
pub(super) fn router(state: &Shared) -> Router<Shared> {
    if state.ui.is_none() {
        return Router::new();
    }
    let gated = Router::new()
        .route("/ui/", get(overview::get))
        .route("/ui/pins", get(search::get))
        .route("/ui/peers/{peer}", get(peer::get))
        .route("/ui/pinsets/{namespace}/{name}", get(pinset::get))
        .route(
            "/ui/pinsets/{namespace}/{name}/reconcile",
            post(pinset::reconcile),
        )
        .route("/ui/logout", post(login::logout))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate));
    Router::new()
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/assets/{file}", get(asset))
        .merge(gated)
}

/// Runs the metric history's sampler for `state` until `cancel`, when the
/// dashboard is on and this peer has a monitor.
pub(super) fn sampler(
    state: &ApiState,
    cancel: tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let ui = state.ui.as_ref()?;
    let monitor = state.monitor.clone()?;
    Some(history::run(
        Arc::clone(&ui.history),
        monitor,
        state.node.clone(),
        cancel,
    ))
}

/// Lets a request that proves an identity through (as a [`Viewer`]),
/// sends any other to the login page with its path to come back to.
async fn gate(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let session = cookie(req.headers(), SESSION_COOKIE);
    let policy = &state.access;
    match policy
        .identify_session(req.headers(), session.as_deref())
        .await
    {
        Some(identity) => {
            req.extensions_mut().insert(Viewer {
                identity,
                auth: policy.requires_auth(),
            });
            next.run(req).await
        }
        None => {
            let back = req
                .uri()
                .path_and_query()
                .map_or("/ui/", |p| p.as_str())
                .to_owned();
            see_other(&format!("/ui/login?next={}", html::url(&back)))
        }
    }
}

/// The value of cookie `name` in `headers`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// 303 to `location` (a path of this dashboard).
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/ui/"))],
        )
            .into_response(),
    }
}

/// Whether a browser form post comes from this dashboard's own origin (a
/// request without `Origin`, e.g. curl, is no browser's cross-site post).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    super::access::same_origin(host, origin)
}

/// An error page: `status`, a heading and a message.
fn error_page(status: StatusCode, viewer: Option<&Viewer>, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    let main = format!(
        "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/ui/\">Back to the overview</a></p>",
        esc(&title),
        esc(message)
    );
    html::render(
        status,
        Page {
            title,
            main,
            poll: false,
        },
        viewer,
        false,
    )
}

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// `GET /ui/assets/{file}`: the stylesheet and the script.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return error_page(StatusCode::NOT_FOUND, None, "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
