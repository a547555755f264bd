//! TLS in and out against certificates made at test time (rcgen): a daemon
//! serving https to the CLI, certificate reloads, the commit-status reporter
//! and the Kubo connector over https with an extra CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post};
use pinfleet::controller::reporter::{Forge, Reporter};
use pinfleet::controller::{ConditionType, PinSetOutcome, Reason, ReconcileOutcome};
use pinfleet::ipfs::{IpfsBackend, KuboClient, PinOpts};
use pinfleet::manifest::CidKey;
use pinfleet::testkit::MockKubo;
use pinfleet::tls::{ServerTls, TlsListener};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{cid_v1, init_peer, spawn_daemon, stop_daemon, wait_running};

/// No wait in these tests is longer.
const LIMIT: Duration = Duration::from_secs(30);

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("pinfleet test ca {name}"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        leaf.distinguished_name
            .push(DnType::CommonName, format!("pinfleet test server {name}"));
        let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        Self {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`-style files as `<prefix>ca.pem`, `<prefix>cert.pem`,
    /// `<prefix>key.pem` into `dir`; returns (ca, cert, key) paths.
    fn write(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf, PathBuf) {
        let paths = (
            dir.join(format!("{prefix}ca.pem")),
            dir.join(format!("{prefix}cert.pem")),
            dir.join(format!("{prefix}key.pem")),
        );
        std::fs::write(&paths.0, &self.ca).unwrap();
        std::fs::write(&paths.1, &self.cert).unwrap();
        std::fs::write(&paths.2, &self.key).unwrap();
        paths
    }

    /// Replaces the server certificate and key at `cert` and `key` with
    /// this PKI's, each by an atomic rename (as rotation tools do).
    fn install(&self, cert: &Path, key: &Path) {
        for (path, text) in [(key, &self.key), (cert, &self.cert)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

fn client(ca: Option<&Path>) -> reqwest::Client {
    pinfleet::tls::client(ca)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Polls `GET url` with a client trusting only `ca` (and the public roots)
/// until it answers 200, within [`LIMIT`].
async fn wait_trusted(url: &str, ca: &Path) {
    let http = client(Some(ca));
    let start = Instant::now();
    loop {
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return,
            other => assert!(
                start.elapsed() < LIMIT,
                "{url} never trusted with {}: {other:?}",
                ca.display()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `pinfleet ARGS…` with a clean environment for `--host`/`--ca-file`.
fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(args)
        .env_remove("PINFLEET_HOST")
        .env_remove("PINFLEET_CA_FILE")
        .output()
        .unwrap()
}

#[test]
fn daemon_serves_https_to_the_cli_with_the_ca_and_reloads_its_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    init_peer(d);
    let first = Pki::new("one");
    // Relative paths are under the peer directory.
    let (ca1, cert, key) = first.write(d, "");
    let mut child = spawn_daemon(
        d,
        &[
            ("PINFLEET_IPFS_BACKEND", "none"),
            ("PINFLEET_API_TLS_CERT_FILE", "cert.pem"),
            ("PINFLEET_API_TLS_KEY_FILE", "key.pem"),
        ],
    );
    let info = wait_running(d, &mut child);
    assert!(info.api.starts_with("https://127.0.0.1:"), "{}", info.api);
    let ca1_text = ca1.to_str().unwrap();

    let out = cli(&["id", "--host", &info.api, "--ca-file", ca1_text]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&info.id), "{stdout}");

    let out = cli(&["id", "--host", &info.api]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("certificate"), "{stderr}");

    let plain = info.api.replacen("https://", "http://", 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answered = rt.block_on(async { client(None).get(format!("{plain}/id")).send().await });
    assert!(
        answered.is_err(),
        "plain http to the tls port: {answered:?}"
    );

    // Rotate to a certificate from another CA, then SIGHUP.
    let second = Pki::new("two");
    let ca2 = d.join("two-ca.pem");
    std::fs::write(&ca2, &second.ca).unwrap();
    second.install(&cert, &key);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    rt.block_on(wait_trusted(&format!("{}/id", info.api), &ca2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the daemon"
    );
    let out = cli(&["id", "--host", &info.api, "--ca-file", ca1_text]);
    assert!(!out.status.success(), "the old CA no longer verifies");
    stop_daemon(&mut child);
}

/// Starts a daemon in `d` with `env` that must refuse to start; returns
/// its stderr.
fn refused(d: &Path, env: &[(&str, &str)]) -> String {
    let mut env = env.to_vec();
    env.push(("PINFLEET_IPFS_BACKEND", "none"));
    let mut child = spawn_daemon(d, &env);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < LIMIT, "daemon kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(pinfleet::daemon::read_run_file(d).is_none());
    stderr
}

#[test]
fn daemon_refuses_to_start_with_an_unusable_certificate_key_or_ca_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    init_peer(d);
    let (_, cert, key) = Pki::new("k").write(d, "");
    let key_text = key.to_str().unwrap();
    let stderr = refused(
        d,
        &[
            ("PINFLEET_API_TLS_CERT_FILE", "no-such-cert.pem"),
            ("PINFLEET_API_TLS_KEY_FILE", key_text),
        ],
    );
    assert!(stderr.contains("no-such-cert.pem"), "{stderr}");
    // The key file given as the certificate: no certificate in it.
    let stderr = refused(
        d,
        &[
            ("PINFLEET_API_TLS_CERT_FILE", key_text),
            ("PINFLEET_API_TLS_KEY_FILE", key_text),
        ],
    );
    assert!(stderr.contains("key.pem: no pem certificate"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    let stderr = refused(d, &[("PINFLEET_TLS_CA_FILE", "missing-ca.pem")]);
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
    // Only one of the pair: a config error naming both keys.
    let stderr = refused(d, &[("PINFLEET_API_TLS_CERT_FILE", cert.to_str().unwrap())]);
    assert!(
        stderr.contains("api.tls_key_file") && stderr.contains("tls_cert_file"),
        "{stderr}"
    );
}

/// Serves `router` over TLS with `tls` on a free loopback port; returns its
/// https base URL.
async fn serve_tls(router: Router, tls: ServerTls, cancel: &CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(pinfleet::api::serve_router(
        listener,
        router,
        Some(tls),
        Duration::from_secs(30),
        cancel.clone(),
    ));
    url
}

#[tokio::test]
async fn a_tls_listener_picks_up_replaced_certificate_files_without_a_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca1, cert, key) = Pki::new("one").write(tmp.path(), "");
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let tls = ServerTls::load(&cert, &key).unwrap();
    let router = Router::new().route("/ping", get(|| async { "pong" }));
    let url = format!("{}/ping", serve_tls(router, tls, &cancel).await);
    wait_trusted(&url, &ca1).await;

    let second = Pki::new("two");
    let ca2 = tmp.path().join("two-ca.pem");
    std::fs::write(&ca2, &second.ca).unwrap();
    second.install(&cert, &key);
    wait_trusted(&url, &ca2).await;
    let old = client(Some(&ca1)).get(&url).send().await;
    assert!(old.is_err(), "the old certificate is gone: {old:?}");
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_other_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = Pki::new("one").write(tmp.path(), "");
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let router = Router::new().route("/ping", get(|| async { "pong" }));
    let url = serve_tls(router, ServerTls::load(&cert, &key).unwrap(), &cancel).await;
    // Connections that never say a word hold a handshake each.
    let addr = url.trim_start_matches("https://").to_string();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        client(Some(&ca)).get(format!("{url}/ping")).send(),
    )
    .await
    .expect("a real client is served while others stall");
    assert_eq!(answered.unwrap().text().await.unwrap(), "pong");
}

/// One request the mock forge received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    auth: String,
    body: serde_json::Value,
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn outcome() -> ReconcileOutcome {
    ReconcileOutcome {
        revision: Some(format!("main@sha1:{SHA}")),
        skipped: false,
        source_error: None,
        pinsets: vec![PinSetOutcome {
            namespace: "mirrors".into(),
            name: "debian".into(),
            condition: ConditionType::Ready,
            reason: Reason::Succeeded,
            message: String::new(),
            revision: format!("main@sha1:{SHA}"),
            add: 1,
            update: 0,
            release: 0,
        }],
    }
}

#[tokio::test]
async fn the_commit_status_reporter_posts_to_an_https_forge_trusting_the_extra_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = Pki::new("forge").write(tmp.path(), "");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let forge = Router::new()
        .route(
            "/repos/{owner}/{name}/statuses/{sha}",
            post(
                |State(seen): State<Arc<Mutex<Vec<Seen>>>>,
                 uri: Uri,
                 headers: HeaderMap,
                 body: String| async move {
                    seen.lock().unwrap().push(Seen {
                        path: uri.path().to_string(),
                        auth: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                        body: serde_json::from_str(&body).unwrap_or_default(),
                    });
                    (axum::http::StatusCode::CREATED, "{}")
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let base = serve_tls(forge, ServerTls::load(&cert, &key).unwrap(), &cancel).await;

    let r = Reporter::with_ca(Forge::GitHub, &base, "acme/mirrors", "gh-token", Some(&ca)).unwrap();
    r.report(SHA, &outcome()).await.unwrap();
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, format!("/repos/acme/mirrors/statuses/{SHA}"));
    assert_eq!(reqs[0].auth, "Bearer gh-token");
    assert_eq!(reqs[0].body["state"], "success");

    let untrusting = Reporter::new(Forge::GitHub, &base, "acme/mirrors", "gh-token").unwrap();
    let e = untrusting.report(SHA, &outcome()).await.unwrap_err();
    assert!(
        format!("{:?}", anyhow::Error::from(e)).contains("certificate"),
        "an unknown CA is a certificate error"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "nothing posted without trust"
    );
}

/// Terminates TLS with `tls` in front of the plain-http `upstream`
/// (`host:port`), as a proxy in front of Kubo would; returns the https URL.
async fn tls_front(upstream: String, tls: ServerTls, cancel: &CancellationToken) -> String {
    use axum::serve::Listener;
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let mut listener = TlsListener::new(tcp, tls).unwrap();
    let cancel = cancel.clone();
    tokio::spawn(async move {
        loop {
            let (mut tls_stream, _) = tokio::select! {
                () = cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls_stream, &mut plain).await;
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn the_kubo_connector_works_over_https_with_the_extra_ca_and_fails_without() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = Pki::new("kubo").write(tmp.path(), "");
    let (mock, plain) = MockKubo::start().await.unwrap();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let upstream = plain.trim_start_matches("http://").to_string();
    let url = tls_front(upstream, ServerTls::load(&cert, &key).unwrap(), &cancel).await;

    let kubo = KuboClient::with_ca(&url, Duration::from_secs(5), Some(&ca)).unwrap();
    let id = tokio::time::timeout(LIMIT, kubo.id())
        .await
        .unwrap()
        .unwrap();
    assert!(!id.id.is_empty());
    let cid = CidKey::parse(&cid_v1("over-tls")).unwrap();
    let opts = PinOpts {
        progress_timeout: Duration::from_secs(5),
        ..PinOpts::default()
    };
    tokio::time::timeout(LIMIT, kubo.pin(cid, opts, None))
        .await
        .unwrap()
        .unwrap();
    assert!(mock.pinned(cid).is_some(), "the pin reached kubo");

    let calls = mock.calls().len();
    let untrusting = KuboClient::new(&url, Duration::from_secs(5)).unwrap();
    let e = tokio::time::timeout(LIMIT, untrusting.id())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        format!("{:?}", anyhow::Error::from(e)).contains("certificate"),
        "an unknown CA is a certificate error"
    );
    assert_eq!(
        mock.calls().len(),
        calls,
        "nothing reached kubo without trust"
    );
    mock.stop().await;
}

/// The Pinning Service API is served over https with the REST API's
/// certificate, on its own listener, and still wants its token.
#[test]
fn the_pinning_service_api_is_served_with_the_api_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    init_peer(d);
    let pki = Pki::new("pinsvc");
    let (ca, _, _) = pki.write(d, "");
    let mut child = spawn_daemon(
        d,
        &[
            ("PINFLEET_IPFS_BACKEND", "none"),
            ("PINFLEET_API_TLS_CERT_FILE", "cert.pem"),
            ("PINFLEET_API_TLS_KEY_FILE", "key.pem"),
            ("PINFLEET_PINSVC_LISTEN", "127.0.0.1:0"),
            ("PINFLEET_PINSVC_TOKENS", "it=reader:0123456789abcdef"),
        ],
    );
    let info = wait_running(d, &mut child);
    let url = info.pinsvc.clone().expect("the pinning service is served");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_ne!(url, info.api, "a listener of its own");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let trusted = client(Some(&ca));
        let listed = trusted
            .get(format!("{url}/pins"))
            .bearer_auth("0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status().as_u16(), 200);
        let body: serde_json::Value = listed.json().await.unwrap();
        assert_eq!(body["count"], 0, "{body}");
        let anonymous = trusted.get(format!("{url}/pins")).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401);
        let plain = url.replacen("https://", "http://", 1);
        assert!(
            client(None)
                .get(format!("{plain}/pins"))
                .send()
                .await
                .is_err()
        );
    });
    stop_daemon(&mut child);
}
