//! `GET`/`POST /ui/login` and `POST /ui/logout`: a user's password (the
//! API's users, checked as basic auth is) buys the token `POST /token`
//! would give, kept in an HttpOnly, SameSite=Strict cookie for `/ui`.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html::{self, Page, esc};
use super::{SESSION_COOKIE, error_page, same_origin, see_other};
use crate::api::Shared;

/// The login form's fields (and `next` in the login page's query).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Where to go after logging in: `next` when it is a dashboard path,
/// else the overview (never another site).
fn back_to(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/ui/" || n.starts_with("/ui/"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/ui/",
    }
}

fn page(status: StatusCode, next: Option<&str>, error: Option<&str>) -> Response {
    let error = error
        .map(|e| {
            format!(
                "<p id=\"login-error\" class=\"error\" role=\"alert\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let main = format!(
        "<h1>Log in</h1>{error}\
         <form id=\"login\" class=\"stack\" method=\"post\" action=\"/ui/login\">\
         <label for=\"username\">User</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <button id=\"login-submit\" type=\"submit\">Log in</button></form>",
        esc(back_to(next))
    );
    html::render(
        status,
        Page {
            title: "Log in".into(),
            main,
            poll: false,
        },
        None,
        false,
    )
}

/// `GET /ui/login[?next=]`: the form (the overview when the API has no
/// users).
pub(super) async fn form(State(state): State<Shared>, Query(q): Query<LoginForm>) -> Response {
    if !state.access.requires_auth() {
        return see_other("/ui/");
    }
    page(StatusCode::OK, q.next.as_deref(), None)
}

/// `POST /ui/login`: 303 to `next` with the session cookie, or 401 with
/// the form and why.
pub(super) async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return error_page(StatusCode::FORBIDDEN, None, "cross-origin login refused");
    }
    let policy = &state.access;
    if !policy.requires_auth() {
        return see_other("/ui/");
    }
    let Some(identity) = policy.verify(&f.username, &f.password).await else {
        return page(
            StatusCode::UNAUTHORIZED,
            f.next.as_deref(),
            Some("Unknown user or wrong password."),
        );
    };
    let token = match policy.issue(&identity.user, identity.role, None) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(user = %identity.user, error = %e, "cannot issue a dashboard session");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "cannot start a session",
            );
        }
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}",
        policy.token_ttl().as_secs()
    );
    let mut resp = see_other(back_to(f.next.as_deref()));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/logout`: forgets the cookie, 303 to the login page.
pub(super) async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return error_page(StatusCode::FORBIDDEN, None, "cross-origin logout refused");
    }
    let mut resp = see_other("/ui/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "pinfleet_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0",
        ),
    );
    resp.into_response()
}

#[cfg(test)]
mod tests {
    use super::back_to;

    #[test]
    fn only_dashboard_paths_are_returned_to() {
        assert_eq!(back_to(Some("/ui/pins?q=x")), "/ui/pins?q=x");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/id",
            "/ui\\x",
        ] {
            assert_eq!(back_to(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(back_to(None), "/ui/");
    }
}
