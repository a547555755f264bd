//! The dashboard's HTML: one escaping function every interpolated value
//! goes through, the page layout, and small renderers (numbers, times,
//! inline SVG charts). Pure functions of their inputs: no state, no I/O.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Identity;

/// The header the polling script sends: answer `main#main`'s content only.
pub(super) const PARTIAL_HEADER: &str = "x-pinfleet-partial";

/// `s` safe as HTML text and as a quoted attribute value.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one percent-encoded URL path segment or query value.
pub(super) fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Who is looking at a page, as the layout shows it.
#[derive(Clone, Debug)]
pub(super) struct Viewer {
    /// The identity the request proved.
    pub identity: Identity,
    /// Whether this API has users (else there is no login nor logout).
    pub auth: bool,
}

/// One page: its title and what goes in `main#main`.
pub(super) struct Page {
    pub title: String,
    pub main: String,
    /// Whether the script refreshes `main` (not for forms).
    pub poll: bool,
}

/// Whether the request asks for `main`'s content only.
pub(super) fn partial(headers: &HeaderMap) -> bool {
    headers
        .get(PARTIAL_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// A 200 page the script keeps fresh, for `viewer`: the whole document,
/// or just `main`'s content when the request asks for it ([`partial`]).
pub(super) fn live(title: String, main: String, viewer: &Viewer, headers: &HeaderMap) -> Response {
    render(
        StatusCode::OK,
        Page {
            title,
            main,
            poll: true,
        },
        Some(viewer),
        partial(headers),
    )
}

/// The whole document, or with `partial` just `main`'s content.
pub(super) fn render(
    status: StatusCode,
    page: Page,
    viewer: Option<&Viewer>,
    partial: bool,
) -> Response {
    let body = if partial {
        page.main
    } else {
        document(&page, viewer)
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if partial {
        h.insert(PARTIAL_HEADER, HeaderValue::from_static("1"));
    }
    resp
}

fn document(page: &Page, viewer: Option<&Viewer>) -> String {
    let mut nav = String::from("<a href=\"/ui/\">Overview</a><a href=\"/ui/pins\">Pins</a>");
    match viewer {
        Some(v) if v.auth => {
            let _ = write!(
                nav,
                "<span class=\"who\">{} ({})</span>\
                 <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
                 <button id=\"logout\" type=\"submit\">Log out</button></form>",
                esc(&v.identity.user),
                v.identity.role
            );
        }
        _ => {}
    }
    let poll = if page.poll { " data-poll=\"5000\"" } else { "" };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · pinfleet</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/ui.css\">\
         <script src=\"/ui/assets/ui.js\" defer></script></head>\
         <body><header><span class=\"brand\">pinfleet</span>\
         <nav id=\"nav\" aria-label=\"main\">{nav}</nav></header>\
         <main id=\"main\"{poll}>{}</main></body></html>\n",
        esc(&page.title),
        page.main
    )
}

/// A byte count in binary units (`1.5 GiB`); `no limit` for the huge
/// value a repository without a maximum reports.
pub(super) fn bytes(n: f64) -> String {
    if n >= (1u64 << 62) as f64 {
        return "no limit".into();
    }
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Unix milliseconds as RFC 3339 in a `<time>` element.
pub(super) fn time(ms: i64) -> String {
    let t = crate::state::format_time(ms);
    format!("<time datetime=\"{0}\">{0}</time>", esc(&t))
}

/// A small line chart of `points` (Unix ms, value) over `[from_ms, to_ms]`,
/// as inline SVG: no script, readable as its title by a screen reader.
pub(super) fn chart(metric: &str, points: &[(i64, f64)], from_ms: i64, to_ms: i64) -> String {
    const W: f64 = 300.0;
    const H: f64 = 60.0;
    let last = points.last().map(|p| p.1);
    let title = match last {
        Some(v) => format!("{metric} over the last hour, now {}", number(metric, v)),
        None => format!("{metric}: no readings in the last hour"),
    };
    let mut svg = format!(
        "<svg class=\"chart\" data-metric=\"{m}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" class=\"frame\"/>",
        m = esc(metric),
        t = esc(&title)
    );
    if !points.is_empty() {
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let span_y = if hi > lo { hi - lo } else { 1.0 };
        let span_x = (to_ms - from_ms).max(1) as f64;
        let xy = |(at, v): (i64, f64)| {
            let x = ((at - from_ms) as f64 / span_x * W).clamp(0.0, W);
            let y = H - 4.0 - ((v - lo) / span_y * (H - 8.0));
            (x, y)
        };
        let mut line = String::new();
        for p in points {
            let (x, y) = xy(*p);
            let _ = write!(line, "{x:.1},{y:.1} ");
        }
        let _ = write!(
            svg,
            "<polyline points=\"{}\" class=\"line\"/>",
            line.trim_end()
        );
        if let Some(p) = points.last() {
            let (x, y) = xy(*p);
            let _ = write!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" class=\"dot\"/>"
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A metric's value as people read it.
pub(super) fn number(metric: &str, v: f64) -> String {
    if metric == crate::allocator::FREESPACE {
        bytes(v)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            esc("<script>alert('x')&\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn a_chart_scales_its_points_into_the_box() {
        let svg = chart("pinqueue", &[(0, 1.0), (50, 3.0), (100, 2.0)], 0, 100);
        assert!(svg.contains("data-metric=\"pinqueue\""));
        assert!(
            svg.contains("points=\"0.0,56.0 150.0,4.0 300.0,30.0\""),
            "{svg}"
        );
        assert!(chart("x", &[], 0, 1).contains("no readings"));
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(bytes(u64::MAX as f64), "no limit");
    }
}
