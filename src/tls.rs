//! TLS in and out, with rustls and the `ring` provider only.
//!
//! Out: [`client`] is the one way to start a `reqwest` client: it trusts the
//! webpki roots plus an optional extra CA file (a private CA, a self-signed
//! Kubo or forge). In: [`ServerTls`] holds a certificate chain and key read
//! from PEM files, reloaded on SIGHUP or when the files change
//! ([`ServerTls::watch`]); [`TlsListener`] makes `axum::serve` speak TLS
//! over a `TcpListener`, handshaking in tasks of their own so that one slow
//! client cannot hold up accepts.
//!
//! This module owns certificates, keys, handshakes and the process crypto
//! provider. It must not know routes, handlers, authentication or config
//! files: callers hand it paths.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once; further connections wait in the
/// kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;

/// Completed handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// How long file events settle before the certificate is reloaded.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// Why a certificate, key or CA file could not be used. Messages name the
/// file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{}: no pem certificate found (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key.
    #[error(
        "{}: no pem private key found (expected a pkcs8, rsa or sec1 key)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid PEM, or a certificate in it is unusable.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate and key do not make a server configuration (e.g.
    /// the key does not match the certificate).
    #[error("{} with {}: {reason}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// rustls refused the client configuration.
    #[error("cannot set up tls: {0}")]
    Setup(String),
}

/// Installs rustls's `ring` provider as the process default. Idempotent:
/// a provider already installed (by this or anyone else) is kept. Every
/// `reqwest` client needs one; [`client`] calls this itself.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A `reqwest` client builder that trusts the webpki roots plus every
/// certificate in the PEM file `extra_ca`, if given.
pub fn client(extra_ca: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                path: path.to_path_buf(),
                reason: format!("unusable ca certificate: {e}"),
            })?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // reqwest is built without http2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    #[allow(clippy::disallowed_methods)] // the one place allowed to start a builder
    let builder = reqwest::Client::builder();
    Ok(builder.tls_backend_preconfigured(config))
}

/// Every certificate in the PEM file `path` (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!("invalid pem: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, RSA or SEC1) in the PEM file `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        // No detail: it could quote a line of the key file.
        _ => TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "invalid pem".into(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A server certificate and key from PEM files, reloadable. Cheap to clone:
/// clones share the current configuration.
#[derive(Clone)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Loaded>>,
}

/// The configuration in use and the file contents it came from.
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    files: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain `cert` (leaf first) and the private key
    /// `key`, both PEM.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let loaded = load_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Arc::new(RwLock::new(loaded)),
        })
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard.config)
    }

    /// Reads the files again. On success new handshakes use them (true when
    /// they changed); on failure the configuration in use stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let loaded = load_pair(&self.cert, &self.key)?;
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if guard.files == loaded.files {
            return Ok(false);
        }
        *guard = loaded;
        Ok(true)
    }

    /// Reloads on SIGHUP and whenever the files' directories change (after
    /// the events settle), until `cancel` fires. A failed reload is logged
    /// and keeps the certificate in use.
    pub fn watch(&self, cancel: CancellationToken) {
        let (tx, mut changes) = mpsc::channel::<()>(1);
        let dirs: std::collections::BTreeSet<PathBuf> = [&self.cert, &self.key]
            .into_iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        // Only events about the files themselves count (the directory may
        // be a busy peer directory), and `..`-names: Kubernetes swaps a
        // mounted secret's files through a `..data` symlink.
        let names: Vec<std::ffi::OsString> = [&self.cert, &self.key]
            .into_iter()
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect();
        let concerns_us = move |path: &Path| {
            path.file_name().is_some_and(|n| {
                names.iter().any(|m| m == n) || n.to_string_lossy().starts_with("..")
            })
        };
        let debouncer = notify_debouncer_full::new_debouncer(
            RELOAD_DEBOUNCE,
            None,
            move |res: notify_debouncer_full::DebounceEventResult| {
                let due = match &res {
                    Ok(events) => events
                        .iter()
                        .any(|e| e.paths.iter().any(|p| concerns_us(p))),
                    // A watch error: reread to be safe.
                    Err(_) => true,
                };
                if due {
                    // Full means a reload is already due.
                    let _ = tx.try_send(());
                }
            },
        );
        let debouncer = match debouncer {
            Ok(mut d) => {
                for dir in &dirs {
                    if let Err(e) = d.watch(dir, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch tls files: reload with SIGHUP");
                    }
                }
                Some(d)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch tls files: reload with SIGHUP");
                None
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _debouncer = debouncer;
            let mut hup = hangup();
            loop {
                let why = tokio::select! {
                    () = cancel.cancelled() => return,
                    Some(()) = changes.recv() => "files changed",
                    Some(()) = recv_hangup(&mut hup) => "sighup",
                };
                match this.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %this.cert.display(), why, "tls certificate reloaded")
                    }
                    Ok(false) => tracing::debug!(why, "tls files unchanged"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        why,
                        "tls certificate reload failed: still serving the previous one"
                    ),
                }
            }
        });
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP: tls files reload on change only");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn recv_hangup(hup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = hup {
        return s.recv().await;
    }
    let _ = hup;
    std::future::pending().await
}

fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let cert_bytes = read(cert)?;
    let key_bytes = read(key)?;
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    let pair = |e: rustls::Error| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(pair)?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        files: (cert_bytes, key_bytes),
    })
}

/// A TCP listener whose connections are TLS: an `axum::serve::Listener`.
/// Handshakes run in tasks of their own, each bounded by
/// [`HANDSHAKE_TIMEOUT`]; a failed one is logged at debug level and
/// dropped. Dropping the listener stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// Stops the accept loop and handshakes in progress when dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl TlsListener {
    /// Serves TLS with `tls`'s current configuration (read at each
    /// handshake, so reloads apply to new connections) on `listener`.
    pub fn new(listener: TcpListener, tls: ServerTls) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPTED_QUEUE);
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, tls, tx, stop.clone()));
        Ok(Self {
            local,
            ready,
            _stop: stop.drop_guard(),
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                s = shake => s,
            };
            match stream {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}

/// Per-connection errors are the client's; others (out of file
/// descriptors) are waited out, as axum's own TCP listener does.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(
            e.contains("nope.pem") && e.starts_with("cannot read"),
            "{e}"
        );
        let e = client(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = self_signed();
        let only_key = write(dir.path(), "key-only.pem", &key);
        let e = load_certs(&only_key).unwrap_err().to_string();
        assert!(
            e.contains("key-only.pem") && e.contains("no pem certificate"),
            "{e}"
        );
        let junk = write(dir.path(), "junk.pem", "hello\n");
        assert!(matches!(
            load_certs(&junk),
            Err(TlsError::NoCertificate { .. })
        ));
        let e = client(Some(&junk)).unwrap_err().to_string();
        assert!(e.contains("junk.pem"), "{e}");
    }

    #[test]
    fn a_key_file_without_a_key_is_refused_and_its_text_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cert_path = write(dir.path(), "cert.pem", &cert);
        let e = load_key(&cert_path).unwrap_err().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no pem private key"),
            "{e}"
        );
        let key_path = write(dir.path(), "key.pem", &key);
        let e = ServerTls::load(&key_path, &key_path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key.pem") && e.contains("no pem certificate"),
            "{e}"
        );
        assert!(!e.contains("PRIVATE KEY"), "{e}");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let cert = write(dir.path(), "cert.pem", &cert);
        let key = write(dir.path(), "key.pem", &other_key);
        let e = ServerTls::load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("key.pem"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cert = write(dir.path(), "cert.pem", &cert);
        let key = write(dir.path(), "key.pem", &key);
        let tls = ServerTls::load(&cert, &key).unwrap();
        let before = tls.config();
        assert!(!tls.reload().unwrap(), "unchanged files are not a reload");
        std::fs::write(&cert, "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config()));
        let (cert2, key2) = self_signed();
        std::fs::write(&cert, cert2).unwrap();
        std::fs::write(&key, key2).unwrap();
        assert!(tls.reload().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.config()));
    }
}
