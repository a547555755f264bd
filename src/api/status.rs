//! Pin status routes (IPFS Cluster): `GET /pins` (stream of
//! `GlobalPinInfo`; `filter=`, `local=`, `cids=`), `GET /pins/{cid}`,
//! `POST /pins/recover`, `POST /pins/{cid}/recover`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::pins::{Params, RawParams, parse_cid, storage};
use super::{ApiError, ApiState, stream};
use crate::state::StatePin;
use crate::tracker::{GlobalPinInfo, StatusService, TrackerStatus, global::PAGE};

fn service(state: &ApiState) -> Result<Arc<StatusService>, ApiError> {
    state.status.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "this peer tracks no pins",
        )
    })
}

fn filters(p: &Params) -> Result<Vec<TrackerStatus>, ApiError> {
    let Some(f) = p.get("filter") else {
        return Ok(Vec::new());
    };
    f.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            TrackerStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!("invalid filter value {s:?}: not a pin status"))
            })
        })
        .collect()
}

fn keep(info: &GlobalPinInfo, filters: &[TrackerStatus]) -> bool {
    filters.is_empty()
        || info
            .peer_map
            .values()
            .any(|s| filters.iter().any(|f| s.status.matches(*f)))
}

/// `GET /pins`: every pin's status, streamed a page at a time.
pub(super) async fn list(
    State(state): State<ApiState>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let p = Params::from_query(query)?;
    let svc = service(&state)?;
    let filters = filters(&p)?;
    let local = p.flag("local")?;
    let cids = match p.get("cids") {
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_cid)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let store = state.node.store().clone();
    let handle = tokio::runtime::Handle::current();
    Ok(stream::ndjson(move |sink| {
        let mut page: Vec<StatePin> = Vec::with_capacity(PAGE);
        let mut alive = true;
        let flush =
            |page: &mut Vec<StatePin>, sink: &mut stream::LineSink| -> Result<bool, ApiError> {
                if page.is_empty() {
                    return Ok(true);
                }
                let infos = handle
                    .block_on(async {
                        if local {
                            svc.local_infos(page).await
                        } else {
                            svc.global(page).await
                        }
                    })
                    .map_err(ApiError::internal)?;
                page.clear();
                for info in infos.iter().filter(|i| keep(i, &filters)) {
                    if !sink.json(info) {
                        return Ok(false);
                    }
                }
                Ok(true)
            };
        match cids {
            Some(cids) => {
                for c in cids {
                    if let Some(pin) = store.get(&c).map_err(storage)? {
                        page.push(pin);
                    }
                }
                flush(&mut page, sink)?;
            }
            None => {
                let mut failed = None;
                store
                    .for_each_pin(|pin| {
                        page.push(pin);
                        if page.len() >= PAGE {
                            match flush(&mut page, sink) {
                                Ok(true) => {}
                                Ok(false) => alive = false,
                                Err(e) => {
                                    failed = Some(e);
                                    alive = false;
                                }
                            }
                        }
                        alive
                    })
                    .map_err(storage)?;
                if let Some(e) = failed {
                    return Err(e);
                }
                if alive {
                    flush(&mut page, sink)?;
                }
            }
        }
        Ok(())
    })
    .await)
}

async fn one(state: &ApiState, cid: &str) -> Result<GlobalPinInfo, ApiError> {
    let svc = service(state)?;
    let key = parse_cid(cid)?;
    let store = state.node.store().clone();
    let pin = tokio::task::spawn_blocking(move || store.get(&key).map_err(|e| e.to_string()))
        .await
        .map_err(storage)?
        .map_err(storage)?
        .ok_or_else(|| ApiError::not_found("cid not found"))?;
    let mut infos = svc
        .global(std::slice::from_ref(&pin))
        .await
        .map_err(ApiError::internal)?;
    let mut info = infos.pop().ok_or_else(|| ApiError::internal("no status"))?;
    // Echo the CID as the client wrote it.
    info.cid = cid.to_string();
    Ok(info)
}

/// `GET /pins/{cid}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(one(&state, &cid).await?).into_response())
}

/// `POST /pins/{cid}/recover`: retry this CID's failed operations on every peer.
pub(super) async fn recover_one(
    State(state): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    let key = parse_cid(&cid)?;
    svc.recover(Some(key)).await;
    Ok(Json(one(&state, &cid).await?).into_response())
}

/// `POST /pins/recover`: retry every failed operation on every peer, then
/// answer like `GET /pins`.
pub(super) async fn recover_all(
    State(state): State<ApiState>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    svc.recover(None).await;
    list(State(state), query).await
}
