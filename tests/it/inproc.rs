//! An in-process one-peer cluster serving the REST API on 127.0.0.1:0,
//! optionally with an embedded IPFS node: what the bounded-input, limits
//! and REST-fuzz tests start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pinfleet::api::ApiState;
use pinfleet::ipfs::IpfsBackend;
use pinfleet::ipfs::embedded::{EmbeddedConfig, EmbeddedNode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One in-process peer serving the API with `state` adjusted by `tune`.
pub struct Api {
    pub peer: crate::cluster::Peer,
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub state: ApiState,
    pub uploads: PathBuf,
    pub ipfs: Option<Arc<dyn IpfsBackend>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Api {
    pub async fn start(
        root: &Path,
        embedded: bool,
        tune: impl FnOnce(ApiState) -> ApiState,
    ) -> Api {
        let peer = crate::cluster::cluster(1, root, 10_000).await.remove(0);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut state = ApiState::new(peer.node.clone(), "0.0.0-it", "p0");
        let mut ipfs = None;
        if embedded {
            let node = EmbeddedNode::start(
                EmbeddedConfig::new(&root.join("ipfs"), [5; 32]),
                cancel.clone(),
                &tasks,
            )
            .await
            .unwrap();
            let backend: Arc<dyn IpfsBackend> = Arc::new(node);
            state.ipfs = Some(Arc::clone(&backend));
            ipfs = Some(backend);
        }
        let uploads = root.join("uploads");
        state.upload_dir = uploads.clone();
        let state = tune(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tasks.spawn(pinfleet::api::serve(
            listener,
            state.clone(),
            cancel.clone(),
        ));
        Api {
            peer,
            url: format!("http://{addr}"),
            addr,
            state,
            uploads,
            ipfs,
            cancel,
            tasks,
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.peer.stop().await;
    }

    /// Everything under the upload directory.
    pub fn uploads_left(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(&self.uploads) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Pins in the cluster state.
    pub async fn allocations(&self) -> usize {
        let text = crate::support::http()
            .get(format!("{}/allocations", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // One pin per line (NDJSON).
        text.lines().filter(|l| !l.trim().is_empty()).count()
    }

    pub async fn ipfs_size(&self) -> u64 {
        self.ipfs
            .as_ref()
            .unwrap()
            .repo_stat()
            .await
            .unwrap()
            .repo_size
    }

    pub async fn healthy(&self) -> bool {
        crate::support::http()
            .get(format!("{}/health", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}
