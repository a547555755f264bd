//! A small W3C WebDriver client for the browser tests: Debian's headless
//! Chromium driven by `chromedriver` over HTTP with the tests' reqwest
//! client. Every wait is a poll on a condition with a deadline.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C WebDriver names an element reference with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// WebDriver's key code for Enter (the "\u{E007}" of the spec's key table).
pub const ENTER: &str = "\u{E007}";

/// How long the driver and the browser get to start, and one command to
/// answer (a navigation waits for the page to load).
const START: Duration = Duration::from_secs(60);
const COMMAND: Duration = Duration::from_secs(60);

/// Chromium's flags: headless, no sandbox (tests may run as root), and
/// nothing that talks to the network on its own (this machine's network is
/// closed; a browser waiting on it would be slow and flaky).
const CHROMIUM_ARGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
];

/// A WebDriver error answer (`no such element`, `stale element
/// reference`, …) or a transport failure.
#[derive(Debug)]
pub struct WdError {
    /// The spec's error code; `transport` when the request itself failed.
    pub error: String,
    /// What the driver said.
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// Installs Debian's `chromium` and `chromium-driver` when either is
/// missing (as the Kubo tests fetch their wheel: `cargo test` needs nothing
/// set up by hand), once per test process; panics with what to do when
/// that fails. The browser tests never skip.
pub fn require_chromium() {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let present = || Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    let _one = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !present() {
        install_chromium();
    }
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing (Debian package {package}) and installing it failed: the \
             browser tests need headless Chromium. Install it with \
             sudo apt-get install -y chromium chromium-driver"
        );
    }
}

/// `apt-get install chromium chromium-driver` (through sudo when not root),
/// after `apt-get update` when the first try fails.
fn install_chromium() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            std::process::Command::new("apt-get")
        } else {
            let mut c = std::process::Command::new("sudo");
            c.arg("-n").arg("apt-get");
            c
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-qq", "chromium", "chromium-driver"];
    eprintln!("installing Debian's chromium and chromium-driver for the browser tests");
    if !apt(&install) {
        let _ = apt(&["update", "-qq"]);
        apt(&install);
    }
}

/// A running `chromedriver` and one browser session. Dropping it kills the
/// driver's process group (the driver and the Chromium it started);
/// [`Browser::quit`] ends the session cleanly first.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: std::process::Child,
    /// Chromium's fresh profile directory.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port, waits until it is
    /// ready and opens a session of headless Chromium (1280x800).
    pub async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        require_chromium();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(driver_log(port)).unwrap();
        let driver = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: dropping the browser kills the driver
            // and every Chromium process it started, even after a panic.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let profile = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let http = crate::support::http_builder()
            .timeout(COMMAND)
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            _profile: profile,
        };
        poll("chromedriver to be ready", START, || async {
            let resp = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()?;
            let v: Value = resp.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let resp = browser
            .http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver opened no session: {v}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// One WebDriver command: `method` on the session's `path` (`""` is the
    /// session itself) with `body`; its `value`, or the driver's error.
    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let transport = |e: reqwest::Error| WdError {
            error: "transport".into(),
            message: e.to_string(),
        };
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(transport)?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(transport)?;
        let value = v["value"].clone();
        if ok {
            return Ok(value);
        }
        Err(WdError {
            error: value["error"].as_str().unwrap_or("unknown").to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, WdError> {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value, WdError> {
        self.cmd(reqwest::Method::GET, path, None).await
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The URL of the current page.
    pub async fn url(&self) -> String {
        let v = self.get("/url").await.unwrap();
        v.as_str().unwrap_or_default().to_string()
    }

    /// The current page's HTML, as the browser holds it now.
    pub async fn source(&self) -> String {
        let v = self.get("/source").await.unwrap();
        v.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching the CSS selector `css`, if any.
    pub async fn find(&self, css: &str) -> Result<Option<Element<'_>>, WdError> {
        match self.post("/element", locator(css)).await {
            Ok(v) => Ok(Some(self.element(&v))),
            Err(e) if e.error == "no such element" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every element matching the CSS selector `css`.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, WdError> {
        let v = self.post("/elements", locator(css)).await?;
        Ok(v.as_array()
            .map(|a| a.iter().map(|e| self.element(e)).collect())
            .unwrap_or_default())
    }

    /// The element matching `css`, which must be on the page.
    pub async fn must_find(&self, css: &str) -> Element<'_> {
        match self.find(css).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("no {css} on {}:\n{}", self.url().await, self.source().await),
            Err(e) => panic!("cannot look for {css}: {e}"),
        }
    }

    /// The rendered text of the first element matching `css`; `None` when
    /// there is none or the page changed under it (a poll tries again).
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let el = self.find(css).await.ok()??;
        el.text().await.ok()
    }

    /// How many elements match `css`; `None` when the page changed while
    /// counting.
    pub async fn count(&self, css: &str) -> Option<usize> {
        self.find_all(css).await.ok().map(|v| v.len())
    }

    fn element(&self, v: &Value) -> Element<'_> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {v}"));
        Element {
            browser: self,
            id: id.to_string(),
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
            .unwrap_or_else(|e| panic!("cannot run a script: {e}"))
    }

    /// Makes the window `width` x `height` pixels (browser frame included).
    pub async fn set_window_size(&self, width: u64, height: u64) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await
            .unwrap_or_else(|e| panic!("cannot resize the window: {e}"));
    }

    /// Saves a PNG of the whole page to `path`: the window is made as
    /// tall as the page for it, then given its height back.
    pub async fn screenshot_page(&self, path: &Path) {
        let v = self
            .execute(
                "return [document.documentElement.scrollHeight, \
                 window.outerHeight - window.innerHeight, window.outerWidth, window.outerHeight];",
                vec![],
            )
            .await;
        let n = |i: usize| v[i].as_u64().unwrap_or_else(|| panic!("not sizes: {v}"));
        let (page, chrome, width, height) = (n(0), n(1), n(2), n(3));
        let rect = |h: u64| json!({ "width": width, "height": h });
        self.post("/window/rect", rect(page + chrome))
            .await
            .unwrap();
        self.screenshot(path).await;
        self.post("/window/rect", rect(height)).await.unwrap();
    }

    /// Saves a PNG of the window to `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) {
        let v = self.get("/screenshot").await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (Chromium exits) and stops the driver.
    pub async fn quit(self) {
        let _ = self.cmd(reqwest::Method::DELETE, "", None).await;
        // Drop kills the driver's process group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own process group (see `start`): the signal
        // reaches it and the Chromium processes it started, and no other.
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// An element of the current page (stale once the page replaces it).
#[derive(Debug)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Element<'_> {
    /// Its rendered text.
    pub async fn text(&self) -> Result<String, WdError> {
        let v = self
            .browser
            .get(&format!("/element/{}/text", self.id))
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The value of its attribute `name`, if set.
    pub async fn attr(&self, name: &str) -> Result<Option<String>, WdError> {
        let v = self
            .browser
            .get(&format!("/element/{}/attribute/{name}", self.id))
            .await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Clicks it (a navigation it starts is waited for).
    pub async fn click(&self) {
        self.browser
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await
            .unwrap_or_else(|e| panic!("cannot click: {e}"));
    }

    /// Empties it (an input or textarea).
    pub async fn clear(&self) {
        self.browser
            .post(&format!("/element/{}/clear", self.id), json!({}))
            .await
            .unwrap_or_else(|e| panic!("cannot clear: {e}"));
    }

    /// Types `text` into it (WebDriver key codes such as [`ENTER`] press
    /// those keys).
    pub async fn send_keys(&self, text: &str) {
        self.browser
            .post(
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot type: {e}"));
    }
}

fn locator(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

/// The driver's log for the driver on `port` (kept under target/tmp for a
/// failing test's report).
fn driver_log(port: u16) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromedriver-{port}.log"))
}

/// Polls `check` every 100 ms until it gives a value, panicking with
/// `what` after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_poll(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` every 100 ms until it gives a value; `None` after `limit`
/// (for a caller that reports what it saw).
pub async fn try_poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the browser tests save their screenshots: `target/ui-screenshots/`
/// of this build's target directory.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .join("ui-screenshots")
}
