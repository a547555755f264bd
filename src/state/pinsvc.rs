//! Pinning Service API requests as replicated state (issue 15): the record
//! one request leaves, the commands that create, replace and delete one,
//! and their apply. Each command writes the record and the pin's ownership
//! (owner `pinsvc:<token name>`) in the same apply, so the two never
//! disagree; a CID another owner (a PinSet, `api`, another token, or
//! another request of the same token) still holds stays pinned.
//!
//! Pure like the rest of `state`: no clock (the proposer's `now_ms` stamps
//! `created`), no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::machine::{Op, Outcome, PinStore};
use crate::manifest::{CidKey, Owner, PinMode, PinOptions, PinSpec};

/// What the refusal of a replace or delete of an unknown request says
/// (the API answers it as 404).
pub const NO_SUCH_REQUEST: &str = "no such pin request";

/// One request of the Pinning Service API, as the state keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSvcRequest {
    /// Opaque id chosen by the peer that took the request.
    pub requestid: String,
    /// Name of the `[pinsvc]` token that made it: only that token sees it.
    pub token: String,
    /// When the request entered the state, Unix nanoseconds; unique over
    /// every request (set at apply, 0 in a command).
    #[serde(default)]
    pub created_ns: i64,
    /// The pin.
    pub cid: CidKey,
    /// The CID exactly as the client sent it.
    pub cid_as_sent: String,
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Multiaddrs the client says have the data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    /// Client metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl PinSvcRequest {
    /// The owner its pin is held by.
    pub fn owner(&self) -> Owner {
        Owner::PinSvc(Arc::from(self.token.as_str()))
    }

    /// What its owner asks of the pin: a recursive pin with the cluster's
    /// replication, the request's name, origins and meta.
    pub fn spec(&self) -> PinSpec {
        PinSpec {
            name: self.name.clone().unwrap_or_default(),
            options: Arc::new(PinOptions {
                mode: PinMode::Recursive,
                metadata: self.meta.clone(),
                origins: self.origins.clone(),
                ..PinOptions::default()
            }),
        }
    }

    /// The op that makes its owner hold the pin.
    pub fn set_op(&self) -> Op {
        let written = (self.cid_as_sent != self.cid.to_string())
            .then(|| self.cid_as_sent.clone().into_boxed_str());
        Op::Set {
            cid: self.cid,
            written_as: written,
            spec: self.spec(),
        }
    }
}

/// A change to the Pinning Service requests: one log entry each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinSvcChange {
    /// `POST /pins`: a new request (refused when its id exists).
    Add {
        /// The request (`created_ns` is set at apply).
        request: PinSvcRequest,
    },
    /// `POST /pins/{old}`: `request` replaces `old` (of the same token) in
    /// one step; the pins both hold are never released in between.
    Replace {
        /// The request replaced.
        old: String,
        /// The new request (a new id).
        request: PinSvcRequest,
    },
    /// `DELETE /pins/{requestid}`.
    Remove {
        /// The token acting.
        token: String,
        /// The request removed.
        requestid: String,
    },
}

impl PinSvcChange {
    /// Pin ops it carries at most (for batching bounds).
    pub fn op_count(&self) -> usize {
        match self {
            PinSvcChange::Replace { .. } => 2,
            _ => 1,
        }
    }

    /// The request it creates, if any (for allocation at write time).
    pub fn created(&self) -> Option<&PinSvcRequest> {
        match self {
            PinSvcChange::Add { request } | PinSvcChange::Replace { request, .. } => Some(request),
            PinSvcChange::Remove { .. } => None,
        }
    }
}

/// Applies one change. `apply_ops` is the machine's own op apply (so
/// ownership changes count into `out` as any other).
pub(super) fn apply_change<S: PinStore>(
    store: &mut S,
    now_ms: i64,
    change: &PinSvcChange,
    out: &mut Outcome,
    apply_ops: impl Fn(&mut S, &Owner, &[Op], i64, &mut Outcome) -> Result<(), S::Error>,
) -> Result<(), S::Error> {
    match change {
        PinSvcChange::Add { request } => {
            if store.pinsvc_get(&request.requestid)?.is_some() {
                out.refused = Some(format!("pin request {} exists", request.requestid));
                return Ok(());
            }
            add(store, now_ms, request, out, &apply_ops)?;
        }
        PinSvcChange::Replace { old, request } => {
            let Some(before) = owned(store, &request.token, old)? else {
                out.refused = Some(NO_SUCH_REQUEST.into());
                return Ok(());
            };
            if store.pinsvc_get(&request.requestid)?.is_some() {
                out.refused = Some(format!("pin request {} exists", request.requestid));
                return Ok(());
            }
            store.pinsvc_remove(&before)?;
            add(store, now_ms, request, out, &apply_ops)?;
            release_unheld(store, now_ms, &before, out, &apply_ops)?;
        }
        PinSvcChange::Remove { token, requestid } => {
            let Some(before) = owned(store, token, requestid)? else {
                out.refused = Some(NO_SUCH_REQUEST.into());
                return Ok(());
            };
            store.pinsvc_remove(&before)?;
            release_unheld(store, now_ms, &before, out, &apply_ops)?;
        }
    }
    Ok(())
}

/// The request `id` when `token` made it.
fn owned<S: PinStore>(store: &S, token: &str, id: &str) -> Result<Option<PinSvcRequest>, S::Error> {
    Ok(store.pinsvc_get(id)?.filter(|r| r.token == token))
}

fn add<S: PinStore>(
    store: &mut S,
    now_ms: i64,
    request: &PinSvcRequest,
    out: &mut Outcome,
    apply_ops: &impl Fn(&mut S, &Owner, &[Op], i64, &mut Outcome) -> Result<(), S::Error>,
) -> Result<(), S::Error> {
    // Unique and increasing: the proposer's clock in nanoseconds, or one
    // past the latest request when that is not later (same millisecond,
    // or a new leader whose clock is behind).
    let at = now_ms.saturating_mul(1_000_000);
    let created_ns = at.max(store.pinsvc_last_created()?.saturating_add(1));
    let mut record = request.clone();
    record.created_ns = created_ns;
    store.pinsvc_put(&record)?;
    apply_ops(store, &record.owner(), &[record.set_op()], now_ms, out)
}

/// Releases `gone`'s pin for its token unless another request of the token
/// still holds the CID.
fn release_unheld<S: PinStore>(
    store: &mut S,
    now_ms: i64,
    gone: &PinSvcRequest,
    out: &mut Outcome,
    apply_ops: &impl Fn(&mut S, &Owner, &[Op], i64, &mut Outcome) -> Result<(), S::Error>,
) -> Result<(), S::Error> {
    if store.pinsvc_holds(&gone.token, &gone.cid)? {
        return Ok(());
    }
    apply_ops(
        store,
        &gone.owner(),
        &[Op::Release { cid: gone.cid }],
        now_ms,
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, PinState, Request};

    fn cid(i: u64) -> CidKey {
        let mh = cid::multihash::Multihash::<64>::wrap(0x12, &[i as u8; 32]).unwrap();
        CidKey::from_cid(cid::Cid::new_v1(0x70, mh)).unwrap()
    }

    fn req(id: &str, token: &str, c: u64) -> PinSvcRequest {
        PinSvcRequest {
            requestid: id.into(),
            token: token.into(),
            created_ns: 0,
            cid: cid(c),
            cid_as_sent: cid(c).to_string(),
            name: None,
            origins: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    fn run(s: &mut PinState, now_ms: i64, change: PinSvcChange) -> Outcome {
        s.apply_request(&Request {
            now_ms,
            command: Command::PinSvc(change),
        })
    }

    fn owners(s: &PinState, c: u64) -> Vec<String> {
        s.get(&cid(c))
            .map(|p| p.owners.keys().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn requests_in_one_millisecond_get_distinct_increasing_created_times() {
        let mut s = PinState::new();
        for i in 0..3 {
            let r = req(&format!("r{i}"), "t", i);
            run(&mut s, 1_000, PinSvcChange::Add { request: r });
        }
        let c: Vec<i64> = (0..3)
            .map(|i| s.pinsvc_request(&format!("r{i}")).unwrap().created_ns)
            .collect();
        assert_eq!(c, [1_000_000_000, 1_000_000_001, 1_000_000_002]);
        // A clock behind the latest still gives a later time.
        run(
            &mut s,
            5,
            PinSvcChange::Add {
                request: req("late", "t", 9),
            },
        );
        assert_eq!(s.pinsvc_request("late").unwrap().created_ns, 1_000_000_003);
    }

    #[test]
    fn removing_one_of_two_requests_of_a_cid_keeps_it_pinned_until_the_last_goes() {
        let mut s = PinState::new();
        run(
            &mut s,
            1,
            PinSvcChange::Add {
                request: req("a", "t", 1),
            },
        );
        run(
            &mut s,
            2,
            PinSvcChange::Add {
                request: req("b", "t", 1),
            },
        );
        let rm = |id: &str| PinSvcChange::Remove {
            token: "t".into(),
            requestid: id.into(),
        };
        run(&mut s, 3, rm("a"));
        assert_eq!(owners(&s, 1), ["pinsvc:t"]);
        run(&mut s, 4, rm("b"));
        assert!(owners(&s, 1).is_empty(), "last request gone: unpinned");
    }

    #[test]
    fn another_tokens_request_cannot_be_replaced_or_removed() {
        let mut s = PinState::new();
        run(
            &mut s,
            1,
            PinSvcChange::Add {
                request: req("a", "t", 1),
            },
        );
        let out = run(
            &mut s,
            2,
            PinSvcChange::Remove {
                token: "other".into(),
                requestid: "a".into(),
            },
        );
        assert_eq!(out.refused.as_deref(), Some(NO_SUCH_REQUEST));
        let out = run(
            &mut s,
            3,
            PinSvcChange::Replace {
                old: "a".into(),
                request: req("n", "other", 2),
            },
        );
        assert_eq!(out.refused.as_deref(), Some(NO_SUCH_REQUEST));
        assert_eq!(owners(&s, 1), ["pinsvc:t"]);
        assert!(s.pinsvc_request("n").is_none());
    }

    #[test]
    fn replace_moves_the_hold_and_keeps_a_pin_a_pinset_also_owns() {
        let mut s = PinState::new();
        let site = Owner::pinset(crate::manifest::PinSetId::new("ns", "site"));
        s.apply_request(&Request {
            now_ms: 0,
            command: Command::Apply {
                owner: site,
                ops: vec![req("x", "t", 1).set_op()],
            },
        });
        run(
            &mut s,
            1,
            PinSvcChange::Add {
                request: req("a", "t", 1),
            },
        );
        run(
            &mut s,
            2,
            PinSvcChange::Replace {
                old: "a".into(),
                request: req("b", "t", 2),
            },
        );
        assert!(s.pinsvc_request("a").is_none(), "old request gone");
        assert_eq!(owners(&s, 1), ["pinset:ns/site"]);
        assert_eq!(owners(&s, 2), ["pinsvc:t"]);
    }
}
