//! Pin status routes (IPFS Cluster): `GET /pins` (stream of
//! `GlobalPinInfo`; `filter=`, `local=`, `cids=`), `GET /pins/{cid}`,
//! `POST /pins/recover`, `POST /pins/{cid}/recover`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::pins::{Params, RawParams, parse_cid, storage};
use super::{ApiError, ApiState, stream};
use crate::manifest::shown;
use crate::state::StatePin;
use crate::tracker::{StatusService, global::PAGE};
use crate::wire::{GlobalPinInfo, TrackerStatus};

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
                ApiError::bad_request(format!(
                    "invalid filter value {}: not a pin status",
                    shown(s)
                ))
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
    // Three stages so that a large answer keeps every core busy: a blocking
    // thread reads pages of pins from the state, up to `IN_FLIGHT` pages ask
    // the peers at once (in order), and this producer writes the lines.
    const IN_FLIGHT: usize = 3;
    let (page_tx, page_rx) = tokio::sync::mpsc::channel::<Vec<StatePin>>(IN_FLIGHT);
    let (res_tx, mut res_rx) =
        tokio::sync::mpsc::channel::<Result<Vec<GlobalPinInfo>, String>>(IN_FLIGHT);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let mut page: Vec<StatePin> = Vec::with_capacity(PAGE);
        let mut alive = true;
        match cids {
            Some(cids) => {
                for c in cids {
                    if let Some(pin) = store.get(&c).map_err(storage)? {
                        page.push(pin);
                    }
                }
            }
            None => {
                store
                    .for_each_pin(|pin| {
                        page.push(pin);
                        if page.len() >= PAGE {
                            let full = std::mem::replace(&mut page, Vec::with_capacity(PAGE));
                            alive = page_tx.blocking_send(full).is_ok();
                        }
                        alive
                    })
                    .map_err(storage)?;
            }
        }
        if alive && !page.is_empty() {
            let _ = page_tx.blocking_send(page);
        }
        Ok(())
    });
    handle.spawn(async move {
        use futures::StreamExt;
        let mut answers = tokio_stream::wrappers::ReceiverStream::new(page_rx)
            .map(|page| {
                let svc = Arc::clone(&svc);
                async move {
                    if local {
                        svc.local_infos(&page).await
                    } else {
                        svc.global(&page).await
                    }
                }
            })
            .buffered(IN_FLIGHT);
        while let Some(r) = answers.next().await {
            if res_tx.send(r).await.is_err() {
                break;
            }
        }
    });
    Ok(stream::ndjson(move |sink| {
        while let Some(r) = res_rx.blocking_recv() {
            for info in r
                .map_err(ApiError::internal)?
                .iter()
                .filter(|i| keep(i, &filters))
            {
                if !sink.json(info) {
                    return Ok(());
                }
            }
        }
        // The reader's own failure (storage) surfaces here.
        match handle.block_on(reader) {
            Ok(r) => r,
            Err(e) => Err(storage(e)),
        }
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
