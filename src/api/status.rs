//! Pin status routes (IPFS Cluster): `GET /pins` (stream of
//! `GlobalPinInfo`; `filter=`, `local=`, `cids=`), `GET /pins/{cid}`,
//! `POST /pins/recover`, `POST /pins/{cid}/recover` (each with `local=`).
//! A CID not in the pinset is `unpinned` on every member, never 404. A
//! sharded pin's meta pin shows its shards' statuses (`sharded_status`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::pins::{Params, RawParams, parse_cid, storage};
use super::sharded_status::fill_meta;
use super::{ApiError, ApiState, Shared, stream};
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
    State(state): State<Shared>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let p = Params::from_query(query)?;
    let svc = service(&state)?;
    let filters = filters(&p)?;
    let local = p.flag("local")?;
    if let Some(list) = p.get("cids") {
        let cids = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|c| parse_cid(c).map(|k| (k, c.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        return by_cids(&state, svc, cids, local, filters).await;
    }
    let store = state.node.store().clone();
    let shard_store = store.clone();
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
                let store = shard_store.clone();
                async move {
                    let mut infos = if local {
                        svc.local_infos(&page).await?
                    } else {
                        svc.global(&page).await?
                    };
                    fill_meta(&store, &svc, &page, &mut infos, local).await?;
                    Ok(infos)
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

/// `GET /pins?cids=a,b`: each CID's status in the order given, a CID not
/// in the pinset `unpinned` on every member (the list is as long as a
/// query string, so it is answered from memory).
async fn by_cids(
    state: &ApiState,
    svc: Arc<StatusService>,
    cids: Vec<(crate::manifest::CidKey, String)>,
    local: bool,
    filters: Vec<TrackerStatus>,
) -> Result<Response, ApiError> {
    let store = state.node.store().clone();
    let keys: Vec<_> = cids.iter().map(|(k, _)| *k).collect();
    let found = super::blocking(move || {
        keys.iter()
            .map(|k| store.get(k).map_err(storage))
            .collect::<Result<Vec<Option<StatePin>>, _>>()
    })
    .await?;
    let pins: Vec<StatePin> = found.iter().flatten().cloned().collect();
    let mut infos = if local {
        svc.local_infos(&pins).await
    } else {
        svc.global(&pins).await
    }
    .map_err(ApiError::internal)?;
    fill_meta(state.node.store(), &svc, &pins, &mut infos, local)
        .await
        .map_err(ApiError::internal)?;
    let mut infos = infos.into_iter();
    let mut items = Vec::with_capacity(cids.len());
    for ((key, written), pin) in cids.iter().zip(&found) {
        let info = match pin {
            Some(_) => infos.next(),
            None => Some(svc.unknown(*key, written, local).await),
        };
        if let Some(info) = info.filter(|i| keep(i, &filters)) {
            items.push(info);
        }
    }
    Ok(stream::ndjson_items(items).await)
}

async fn one(state: &ApiState, cid: &str, local: bool) -> Result<GlobalPinInfo, ApiError> {
    let svc = service(state)?;
    let key = parse_cid(cid)?;
    let store = state.node.store().clone();
    let pin = tokio::task::spawn_blocking(move || store.get(&key).map_err(|e| e.to_string()))
        .await
        .map_err(storage)?
        .map_err(storage)?;
    // Not in the pinset: unpinned everywhere, as IPFS Cluster answers.
    let Some(pin) = pin else {
        return Ok(svc.unknown(key, cid, local).await);
    };
    let pins = std::slice::from_ref(&pin);
    let mut infos = if local {
        svc.local_infos(pins).await
    } else {
        svc.global(pins).await
    }
    .map_err(ApiError::internal)?;
    fill_meta(state.node.store(), &svc, pins, &mut infos, local)
        .await
        .map_err(ApiError::internal)?;
    let mut info = infos.pop().ok_or_else(|| ApiError::internal("no status"))?;
    // Echo the CID as the client wrote it.
    info.cid = cid.to_string();
    Ok(info)
}

/// `GET /pins/{cid}[?local=true]`: a CID not in the pinset answers 200,
/// `unpinned` on every member.
pub(super) async fn get(
    State(state): State<Shared>,
    Path(cid): Path<String>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let local = Params::from_query(query)?.flag("local")?;
    Ok(Json(one(&state, &cid, local).await?).into_response())
}

/// `POST /pins/{cid}/recover[?local=true]`: retry this CID's failed
/// operations on every member (this peer only with `local`), then answer
/// its status.
pub(super) async fn recover_one(
    State(state): State<Shared>,
    Path(cid): Path<String>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let local = Params::from_query(query)?.flag("local")?;
    let svc = service(&state)?;
    let key = parse_cid(&cid)?;
    svc.recover(Some(key), local).await;
    Ok(Json(one(&state, &cid, local).await?).into_response())
}

/// `POST /pins/recover[?local=true]`: retry every failed operation on
/// every member (this peer only with `local`), then stream the status of
/// what was re-queued, and only that: each pin with the members that
/// re-queued it, as IPFS Cluster's `RecoverAll`.
pub(super) async fn recover_all(
    State(state): State<Shared>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let local = Params::from_query(query)?.flag("local")?;
    let svc = service(&state)?;
    let requeued: Vec<(crate::manifest::CidKey, std::collections::BTreeSet<String>)> =
        svc.recover(None, local).await.into_iter().collect();
    let store = state.node.store().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<GlobalPinInfo>, ApiError>>(2);
    tokio::spawn(async move {
        for page in requeued.chunks(PAGE) {
            let cids: Vec<_> = page.iter().map(|(c, _)| *c).collect();
            let store = store.clone();
            let pins = super::blocking(move || {
                let mut out = Vec::with_capacity(cids.len());
                for c in cids {
                    // Unpinned since: nothing left to show.
                    if let Some(p) = store.get(&c).map_err(storage)? {
                        out.push(p);
                    }
                }
                Ok(out)
            })
            .await;
            let infos = match pins {
                Ok(pins) => if local {
                    svc.local_infos(&pins).await
                } else {
                    svc.global(&pins).await
                }
                .map_err(ApiError::internal)
                .map(|mut infos| {
                    let peers: std::collections::HashMap<_, _> = page.iter().cloned().collect();
                    for (pin, info) in pins.iter().zip(&mut infos) {
                        if let Some(who) = peers.get(&pin.cid) {
                            info.peer_map.retain(|p, _| who.contains(p));
                        }
                    }
                    infos
                }),
                Err(e) => Err(e),
            };
            let failed = infos.is_err();
            if tx.send(infos).await.is_err() || failed {
                break;
            }
        }
    });
    Ok(stream::ndjson(move |sink| {
        while let Some(page) = rx.blocking_recv() {
            for info in page? {
                if !sink.json(&info) {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
    .await)
}
