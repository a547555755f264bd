//! The web dashboard (issue 21) in a real browser: headless Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by the test when missing)
//! driven over WebDriver (`webdriver.rs`) against a 3-peer testbed with
//! API users and the quickstart applied. Screenshots go to
//! `target/ui-screenshots/`.

use std::time::Duration;

use crate::webdriver::{Browser, ENTER, poll, screenshot_dir, try_poll};

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
    // The PNG is the whole viewport (IHDR: width and height at 16..24).
    let png = std::fs::read(&shot).unwrap();
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    let viewport = browser
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await;
    assert_eq!(
        serde_json::json!([size(16), size(20)]),
        viewport,
        "the screenshot is not the viewport"
    );
    browser.quit().await;
    server.abort();
}

/// The quickstart's `hello.txt` (examples/quickstart/pinset.yaml).
const HELLO: &str = "QmTSvsV3Q3NucdnnxREZhjNt3Xcj2WP854tLJaP3hEJMTm";

/// The overview's pins by status (`dl#pin-status`): (status, count) pairs;
/// `None` when the page changed while reading.
async fn pin_status(browser: &Browser) -> Option<Vec<(String, String)>> {
    let names = browser.find_all("dl#pin-status dt").await.ok()?;
    let counts = browser.find_all("dl#pin-status dd").await.ok()?;
    let mut pairs = Vec::new();
    for (n, c) in names.iter().zip(&counts) {
        let n = n.text().await.ok()?.trim().to_lowercase();
        pairs.push((n, c.text().await.ok()?.trim().to_string()));
    }
    Some(pairs)
}

/// Runs `pinfleet <args>` as the testbed's `testbed up --add/--apply` does
/// (the CLI against peer 0, credentials in the environment); it must
/// succeed.
async fn pinfleet_cli(args: &[&str], basic_auth: &str) {
    let out = tokio::time::timeout(
        SHOWS,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .env("PINFLEET_BASIC_AUTH", basic_auth)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("pinfleet {args:?} did not finish"))
    .unwrap();
    assert!(
        out.status.success(),
        "pinfleet {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 21's browser test: on a 3-peer testbed with API users and the
/// quickstart applied, an unauthenticated visitor gets only the login page;
/// a wrong password is refused; the writer logs in with the keyboard (Enter
/// in the form); the overview shows three peers, one leader, and the
/// quickstart Ready with its 3 pins pinned, and 9 pinned across the
/// cluster (3 pins on 3 peers); the PinSet page's "reconcile now"
/// adds a reconcile; the pin search finds hello.txt by name; a peer page
/// draws its metrics; the overview fits a narrow window; a reader sees no
/// reconcile button and may not post one; logging out ends the session.
/// Screenshots: target/ui-screenshots/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_logs_in_shows_the_quickstart_ready_and_reconciles_now() {
    use pinfleet::testbed::{Testbed, TestbedIpfs, TestbedOptions};
    // Before the testbed: without Chromium the test fails at once, saying
    // how to install it.
    crate::webdriver::require_chromium();
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tb = Testbed::up(&TestbedOptions {
        exe: env!("CARGO_BIN_EXE_pinfleet").into(),
        peers: 3,
        dir: dir.path().join("tb"),
        timeout: SHOWS,
        ipfs: TestbedIpfs::Embedded,
        auth: true,
        followers: 0,
        env: Vec::new(),
    })
    .await
    .unwrap();
    let api = tb.file.peers[0].api.trim_end_matches('/').to_string();
    let writer = tb.file.credentials("writer").unwrap().to_string();
    let reader = tb.file.credentials("reader").unwrap().to_string();
    let peer_ids: Vec<String> = tb.file.peers.iter().map(|p| p.id.clone()).collect();
    pinfleet_cli(
        &[
            "add",
            "examples/quickstart/content",
            "--no-pin",
            "--host",
            &api,
        ],
        &writer,
    )
    .await;
    pinfleet_cli(&["apply", "examples/quickstart", "--host", &api], &writer).await;

    // This run's screenshots only.
    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    let browser = Browser::start().await;

    // Unauthenticated: the login page and nothing of the cluster.
    browser.goto(&format!("{api}/ui/")).await;
    let url = browser.url().await;
    assert!(
        url.starts_with(&format!("{api}/ui/login")),
        "/ui/ without a session is not the login page: {url}\n{}",
        browser.source().await
    );
    browser.must_find("form#login").await;
    for data in ["table#peers", "table#pinsets", "dl#pin-status", "#logout"] {
        assert!(browser.find(data).await.unwrap().is_none(), "{data} shown");
    }
    let html = browser.source().await;
    for secret in peer_ids
        .iter()
        .map(String::as_str)
        .chain(["quickstart", HELLO])
    {
        assert!(!html.contains(secret), "the login page shows {secret}");
    }
    browser.screenshot(&shots.join("login.png")).await;

    // A wrong password, submitted with the button: refused, still no data.
    let (user, password) = writer.split_once(':').unwrap();
    browser
        .must_find("form#login input[name=username]")
        .await
        .send_keys(user)
        .await;
    browser
        .must_find("form#login input[name=password]")
        .await
        .send_keys("not-the-password")
        .await;
    browser.must_find("button#login-submit").await.click().await;
    let error = poll("the login error", SHOWS, || async {
        browser
            .text_of("p#login-error")
            .await
            .filter(|t| !t.trim().is_empty())
    })
    .await;
    assert!(browser.find("table#pinsets").await.unwrap().is_none());

    // The writer's password, typed and submitted with Enter.
    let username = browser.must_find("form#login input[name=username]").await;
    username.clear().await;
    username.send_keys(user).await;
    let field = browser.must_find("form#login input[name=password]").await;
    field.clear().await;
    field.send_keys(password).await;
    field.send_keys(ENTER).await;
    poll("the overview after logging in", SHOWS, || async {
        browser.find("table#pinsets").await.ok()?.map(|_| ())
    })
    .await;
    assert_eq!(browser.url().await, format!("{api}/ui/"));

    // Overview: three peers, one leader, the quickstart Ready with its 3
    // pins pinned, 9 copies on the peers (updated live while they pin).
    let row = r#"table#pinsets tr.pinset[data-pinset="default/quickstart"]"#;
    let shown = try_poll(SHOWS, || async {
        let ready = browser.text_of(&format!("{row} td.ready")).await?;
        let progress = browser.text_of(&format!("{row} td.progress")).await?;
        let pinned = progress.contains("3/3 pinned") && progress.contains("9 pinned");
        (ready.trim() == "Ready" && pinned).then_some(())
    })
    .await;
    if shown.is_none() {
        browser.screenshot(&shots.join("overview-failed.png")).await;
        panic!(
            "the overview does not show the quickstart Ready with 3/3 (9) pinned within {SHOWS:?}:\n{}",
            browser.text_of("main#main").await.unwrap_or_default()
        );
    }
    browser
        .must_find(&format!("{row} td.progress progress"))
        .await;
    assert_eq!(browser.count("table#peers tr.peer").await, Some(3));
    assert_eq!(browser.count("table#peers tr.peer.leader").await, Some(1));
    for id in &peer_ids {
        browser
            .must_find(&format!(r#"table#peers tr.peer[data-peer="{id}"]"#))
            .await;
    }
    browser.screenshot(&shots.join("overview.png")).await;

    // The PinSet page, reached through its link; "reconcile now" adds a
    // reconcile to the list (newest first).
    browser
        .must_find(&format!("{row} a.pinset-link"))
        .await
        .click()
        .await;
    let pinset_url = format!("{api}/ui/pinsets/default/quickstart");
    poll("the PinSet page", SHOWS, || async {
        (browser.url().await == pinset_url).then_some(())
    })
    .await;
    for part in [
        "section#conditions tr.condition[data-type=Ready]",
        "section#source",
        "table#peer-counts",
        "table#errors",
        "table#reconciles",
    ] {
        browser.must_find(part).await;
    }
    let reconciles = "table#reconciles tr.reconcile";
    let before = browser.count(reconciles).await.unwrap();
    let newest = browser.text_of(reconciles).await;
    browser
        .must_find("button#reconcile-now")
        .await
        .click()
        .await;
    let after = poll("a new reconcile on the PinSet page", SHOWS, || async {
        let count = browser.count(reconciles).await?;
        let first = browser.text_of(reconciles).await;
        // A list at its length limit drops its oldest: then the newest
        // row changed.
        (count > before || (count == before && count > 0 && first != newest)).then_some(count)
    })
    .await;
    assert_eq!(browser.url().await, pinset_url);
    browser.screenshot(&shots.join("pinset.png")).await;
    // The whole page (per-peer counts, reconciles), once the page's count
    // is in (a reconcile makes it count afresh; the page fills in live).
    poll("the per-peer counts", SHOWS, || async {
        (browser.count("table#peer-counts tbody tr").await? == 3).then_some(())
    })
    .await;
    browser
        .screenshot_page(&shots.join("pinset-full.png"))
        .await;

    // Pin search by name, typed into the search form and sent with Enter.
    browser.goto(&format!("{api}/ui/pins")).await;
    let q = browser.must_find("form#search input[name=q]").await;
    q.send_keys("hello.txt").await;
    q.send_keys(ENTER).await;
    poll("hello.txt in the search results", SHOWS, || async {
        browser
            .find(&format!(r#"table#pins tr.pin[data-cid="{HELLO}"]"#))
            .await
            .ok()?
            .map(|_| ())
    })
    .await;
    browser.screenshot(&shots.join("search.png")).await;

    // A peer page: a chart per metric, its errors.
    browser
        .goto(&format!("{api}/ui/peers/{}", peer_ids[1]))
        .await;
    poll("the peer's charts", SHOWS, || async {
        (browser.count("section#peer-metrics svg.chart").await? > 0).then_some(())
    })
    .await;
    browser.must_find("table#peer-errors").await;
    browser.screenshot(&shots.join("peer.png")).await;

    // A narrow window (a phone's width): the page folds, nothing sticks
    // out sideways (wide tables scroll inside their own box).
    browser.goto(&format!("{api}/ui/")).await;
    browser.set_window_size(400, 800).await;
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await;
    browser.screenshot(&shots.join("overview-narrow.png")).await;
    browser.set_window_size(1280, 800).await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64() && widths[1].as_u64() < Some(420),
        "the overview is wider than a narrow window (page, window): {widths}"
    );

    // Pins by status across the cluster: 9 pinned (3 pins on each of 3
    // peers, as `testbed up --wait` counts them).
    browser.goto(&format!("{api}/ui/")).await;
    let statuses = try_poll(SHOWS, || async {
        let pairs = pin_status(&browser).await?;
        pairs
            .iter()
            .any(|(n, c)| n == "pinned" && c == "9")
            .then_some(pairs)
    })
    .await;
    let Some(statuses) = statuses else {
        let seen = try_poll(Duration::from_secs(5), || pin_status(&browser)).await;
        panic!(
            "the overview's pins by status never said 9 pinned (3 pins x 3 peers) within \
             {SHOWS:?}; it says {seen:?}"
        );
    };

    // Logging out ends the session: the overview asks for a login again.
    browser.must_find("#logout").await.click().await;
    poll("the login page after logging out", SHOWS, || async {
        browser.find("form#login").await.ok()?.map(|_| ())
    })
    .await;
    browser.goto(&format!("{api}/ui/")).await;
    assert!(browser.url().await.starts_with(&format!("{api}/ui/login")));
    browser.quit().await;

    // A reader (Basic auth, as curl sends it) reads the PinSet page without
    // the button and may not reconcile.
    let (ruser, rpassword) = reader.split_once(':').unwrap();
    let http = crate::support::http();
    let page = http
        .get(&pinset_url)
        .basic_auth(ruser, Some(rpassword))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("table") && !page.contains("reconcile-now"));
    let post = http
        .post(format!("{pinset_url}/reconcile"))
        .basic_auth(ruser, Some(rpassword))
        .header("origin", &api)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), reqwest::StatusCode::FORBIDDEN);

    tb.stop().await;
    eprintln!(
        "dashboard browser test: {:?}; login error {error:?}; pin status {statuses:?}; \
         reconciles {before} -> {after}; screenshots in {}",
        started.elapsed(),
        shots.display()
    );
}
