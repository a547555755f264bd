//! Path pins (IPFS Cluster's `PinPath`/`UnpinPath`): `POST` and `DELETE
//! /pins/{ipfs|ipns|ipld}/{path…}`, with the query options of
//! `/pins/{cid}`. The path is resolved by this peer's IPFS node, then the
//! CID is pinned or unpinned exactly as `/pins/{cid}` does; the answer is
//! the Pin of the resolved CID.
//!
//! Owns parsing and resolving only; pin semantics stay in `pins`.

use axum::Json;
use axum::extract::{MatchedPath, Path, State};

use super::pins::{Params, RawParams, pin_key, unpin_key};
use super::{ApiError, ApiState, Shared};
use crate::ipfs::IpfsError;
use crate::ipfs::path::IpfsPath;
use crate::manifest::CidKey;
use crate::wire::PinRecord;

/// How long resolving a path may take before the request fails.
pub(super) const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `POST /pins/{ipfs|ipns|ipld}/{path…}`: pins the CID the path leads to.
pub(super) async fn pin(
    State(state): State<Shared>,
    matched: MatchedPath,
    Path(path): Path<String>,
    query: RawParams,
) -> Result<Json<PinRecord>, ApiError> {
    let path = parse(&matched, &path)?;
    let params = Params::from_query(query)?;
    // Options are checked before the node is asked anything.
    super::pins::pin_spec(&params, 0)?;
    let (key, cid) = resolve(&state, path).await?;
    pin_key(&state, key, cid, &params).await
}

/// `DELETE /pins/{ipfs|ipns|ipld}/{path…}`: unpins the CID the path leads
/// to (`force` as on `DELETE /pins/{cid}`).
pub(super) async fn unpin(
    State(state): State<Shared>,
    matched: MatchedPath,
    Path(path): Path<String>,
    query: RawParams,
) -> Result<Json<PinRecord>, ApiError> {
    let path = parse(&matched, &path)?;
    let force = Params::from_query(query)?.flag("force")?;
    let (key, cid) = resolve(&state, path).await?;
    unpin_key(&state, key, cid, force).await
}

/// The path a request names: the namespace from the route it matched
/// (`/pins/ipfs/{*path}`), the rest from the wildcard.
fn parse(matched: &MatchedPath, rest: &str) -> Result<IpfsPath, ApiError> {
    let namespace = matched
        .as_str()
        .trim_start_matches("/pins/")
        .split('/')
        .next()
        .unwrap_or_default();
    IpfsPath::parse(&format!("/{namespace}/{rest}"))
        .map_err(|e| ApiError::bad_request(format!("error parsing path: {e}")))
}

/// The CID `path` leads to, and how to show it: as the client wrote the
/// root when the path is only a root, else canonical. Failing to resolve
/// answers 500 (`cannot resolve <path>: <why>`), as IPFS Cluster does for
/// every resolve error.
async fn resolve(state: &ApiState, path: IpfsPath) -> Result<(CidKey, String), ApiError> {
    if path.segments().is_empty()
        && let Some(root) = path.root_cid()
    {
        let written = path.to_string();
        let written = written.rsplit('/').next().unwrap_or_default().to_string();
        return Ok((root, written));
    }
    let what = path.to_string();
    let Some(backend) = state.ipfs.clone() else {
        return Err(ApiError::internal(format!(
            "cannot resolve {what}: {}",
            IpfsError::NotConfigured
        )));
    };
    let wait = state.resolve_timeout;
    match tokio::time::timeout(wait, backend.resolve(path)).await {
        Ok(Ok(key)) => Ok((key, key.to_string())),
        Ok(Err(e @ IpfsError::Resolve { .. })) => Err(ApiError::internal(e.to_string())),
        Ok(Err(e)) => Err(ApiError::internal(format!("cannot resolve {what}: {e}"))),
        Err(_) => Err(ApiError::internal(format!(
            "cannot resolve {what}: no answer from the ipfs node within {wait:?}"
        ))),
    }
}
