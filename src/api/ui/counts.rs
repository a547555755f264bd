//! PinSet statuses for the dashboard, counted in the background and kept
//! for a few seconds: a page waits a bounded time for the counts it needs
//! and renders what is known then, so a PinSet of a million pins (whose
//! count walks every pin and asks every peer) never holds a page up, and
//! a hundred PinSets are counted at most [`CONCURRENT`] at a time.
//!
//! Owns the cache only; the counting is `pinset_status`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::api::ApiState;
use crate::manifest::{PinSetId, PinSetStatus};

/// A count younger than this is served as it is; a count that took long
/// is kept nine times as long as it took (as `/metrics` does), so that
/// watching a huge PinSet spends at most a tenth of the time counting it.
const FRESH: Duration = Duration::from_secs(4);

/// Most PinSets counted at once.
const CONCURRENT: usize = 4;

/// A known status and when it was counted.
#[derive(Clone, Debug)]
pub struct Counted {
    /// The status.
    pub status: Arc<PinSetStatus>,
    /// When the count ended.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
}

impl Counted {
    fn fresh(&self) -> bool {
        self.at.elapsed() < FRESH.max(self.took * 9)
    }
}

#[derive(Debug, Default)]
struct Entry {
    last: Option<Counted>,
    counting: bool,
}

/// The cache. Shared behind an `Arc` (counts run in their own tasks).
#[derive(Debug)]
pub struct PinSetCounts {
    entries: Mutex<HashMap<PinSetId, Entry>>,
    slots: Arc<Semaphore>,
}

impl Default for PinSetCounts {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            slots: Arc::new(Semaphore::new(CONCURRENT)),
        }
    }
}

impl PinSetCounts {
    /// The statuses of `ids`: a count that is not fresh is started (unless
    /// one runs), then up to `wait` is spent waiting for the started ones.
    /// A PinSet with no count yet is missing from the answer.
    pub async fn get(
        self: &Arc<Self>,
        state: &ApiState,
        ids: &[PinSetId],
        wait: Duration,
    ) -> HashMap<PinSetId, Counted> {
        let Some(svc) = state.status.clone() else {
            return HashMap::new();
        };
        let mut started = Vec::new();
        {
            let mut entries = self.lock();
            for id in ids {
                let e = entries.entry(id.clone()).or_default();
                let fresh = e.last.as_ref().is_some_and(Counted::fresh);
                if fresh || e.counting {
                    continue;
                }
                e.counting = true;
                let (me, store, svc, id) = (
                    Arc::clone(self),
                    state.node.store().clone(),
                    Arc::clone(&svc),
                    id.clone(),
                );
                // Not joined: a count outlives a page that stopped
                // waiting for it, and ends by itself (its result is cached).
                started.push(tokio::spawn(async move {
                    let _slot = me.slots.acquire().await;
                    let began = Instant::now();
                    let default = svc.default_replication();
                    let counted =
                        super::super::pinset_status::pinset_status(store, &svc, id.clone(), default)
                            .await;
                    let mut entries = me.lock();
                    let e = entries.entry(id.clone()).or_default();
                    e.counting = false;
                    match counted {
                        Ok(Some(status)) => {
                            e.last = Some(Counted {
                                status: Arc::new(status),
                                at: Instant::now(),
                                took: began.elapsed(),
                            });
                        }
                        Ok(None) => e.last = None,
                        Err(err) => {
                            tracing::debug!(pinset = %id, error = %err.body().message, "dashboard count failed");
                        }
                    }
                }));
            }
        }
        if !started.is_empty() {
            let _ = tokio::time::timeout(wait, futures::future::join_all(started)).await;
        }
        let entries = self.lock();
        ids.iter()
            .filter_map(|id| Some((id.clone(), entries.get(id)?.last.clone()?)))
            .collect()
    }

    /// Forgets the count of `id` (it changed: the next page counts anew).
    pub fn forget(&self, id: &PinSetId) {
        if let Some(e) = self.lock().get_mut(id) {
            e.last = None;
        }
    }

    /// Forgets PinSets other than `ids` (deleted ones).
    pub fn keep_only(&self, ids: &[PinSetId]) {
        self.lock().retain(|id, _| ids.contains(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PinSetId, Entry>> {
        // Plain data: a panic while holding the lock leaves it usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
