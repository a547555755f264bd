//! The web dashboard (issue 21) in a real browser: headless Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`)
//! driven over WebDriver (`webdriver.rs`) against a 3-peer testbed with
//! API users and the quickstart applied. Screenshots go to
//! `target/ui-screenshots/`.

use std::time::Duration;

use crate::webdriver::{Browser, ENTER, poll, screenshot_dir};

/// How long a page gets to show what it should (the quickstart's pins are
/// fetched over bitswap and the dashboard polls).
const SHOWS: Duration = Duration::from_secs(90);

/// The WebDriver client itself, on a page served here: find, type, press
/// Enter, read the answer, screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webdriver_client_types_into_a_form_submits_it_with_enter_and_reads_the_answer() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                axum::response::Html(
                    "<form id=f action=/hello><input name=who><button>Go</button></form>",
                )
            }),
        )
        .route(
            "/hello",
            get(
                |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    let who = q.get("who").cloned().unwrap_or_default();
                    axum::response::Html(format!("<p id=greeting class=x>hello {who}</p>"))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    assert!(browser.find("p#greeting").await.unwrap().is_none());
    let input = browser.must_find("form#f input[name=who]").await;
    input.send_keys("chromium").await;
    input.send_keys(ENTER).await;
    let text = poll("the greeting", SHOWS, || browser.text_of("p#greeting")).await;
    assert_eq!(text, "hello chromium");
    assert!(browser.url().await.ends_with("/hello?who=chromium"));
    let p = browser.must_find("p#greeting").await;
    assert_eq!(p.attr("class").await.unwrap().as_deref(), Some("x"));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("webdriver-selftest.png");
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 100);
    browser.quit().await;
    server.abort();
}
