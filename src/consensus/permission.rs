//! Who may ask this peer for what. Peers listed in `cluster.trusted_peers`
//! are trusted (the Raft voters); any other peer holding the cluster
//! secret may only make follower-allowed calls. Every request names a
//! [`Permission`] — Raft's messages, writes and membership changes are
//! trusted-only, service methods say theirs ([`super::Method::PERMISSION`])
//! — and the receiving peer checks the caller against it before it runs
//! anything (a service method's body is not even decoded; the request
//! itself was, by the p2p codec, within its size bound). A refusal is an answer the caller sees
//! ([`RemoteFailure::Forbidden`]) and a warning logged once per caller and
//! request.
//!
//! An empty trusted list trusts every peer that holds the secret (what
//! clusters did before there were followers).
//!
//! It must not decide what a trusted peer may do: only whether a caller
//! may make a request at all.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Mutex;

use libp2p::PeerId;

use super::{ClusterNode, RemoteFailure, Rpc, RpcReply};

/// Who may call a request on this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Only trusted peers (writes, membership, Raft, gc, …).
    Trusted,
    /// Any peer connected to this one (it holds the secret): followers too.
    Follower,
    /// Only this peer itself: every remote caller is refused, trusted ones
    /// too.
    Local,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Trusted => "trusted-only",
            Permission::Follower => "follower-allowed",
            Permission::Local => "local-only",
        })
    }
}

/// Refusals remembered so that each (caller, request) is logged once; past
/// this many the memory starts over (a caller inventing method names
/// cannot grow it).
const REFUSALS_REMEMBERED: usize = 4096;

/// What a joiner that is not trusted is told to do instead.
const JOIN_HINT: &str = "add it to cluster.trusted_peers or run it as a follower";

/// This peer's view of who is trusted.
#[derive(Debug)]
pub(super) struct Trust {
    local: PeerId,
    /// Empty: every peer is trusted.
    trusted: BTreeSet<PeerId>,
    /// (caller, request) pairs already logged as refused.
    refused: Mutex<HashSet<(PeerId, String)>>,
}

impl Trust {
    /// The trust of the peer `local` given `cluster.trusted_peers`.
    pub(super) fn new(local: PeerId, trusted: impl IntoIterator<Item = PeerId>) -> Self {
        Self {
            local,
            trusted: trusted.into_iter().collect(),
            refused: Mutex::new(HashSet::new()),
        }
    }

    /// True when `peer` is trusted: listed, or any peer when the list is
    /// empty.
    pub(super) fn is_trusted(&self, peer: &PeerId) -> bool {
        self.trusted.is_empty() || self.trusted.contains(peer)
    }

    /// Whether `caller` may make the request `what` of `permission`; the
    /// refusal is logged the first time for this caller and request.
    pub(super) fn check(
        &self,
        caller: &PeerId,
        what: &str,
        permission: Permission,
    ) -> Result<(), RemoteFailure> {
        let allowed = *caller == self.local
            || match permission {
                Permission::Follower => true,
                Permission::Trusted => self.is_trusted(caller),
                Permission::Local => false,
            };
        if allowed {
            return Ok(());
        }
        let message = match permission {
            Permission::Local => format!("{what} is local-only: peer {caller} may not call it"),
            _ => format!("peer {caller} is not trusted by this cluster: {what} is trusted-only"),
        };
        Err(self.refuse(caller, what, message))
    }

    /// Whether `joiner` may become a voter (a join may arrive forwarded
    /// by a trusted peer, so the joiner itself is checked).
    pub(super) fn check_joiner(&self, joiner: &PeerId) -> Result<(), RemoteFailure> {
        if self.is_trusted(joiner) {
            return Ok(());
        }
        let message = format!(
            "peer {joiner} is not in this cluster's trusted peers and cannot become a voter: {JOIN_HINT}"
        );
        Err(self.refuse(joiner, "consensus.join", message))
    }

    /// The refusal of `what` to `caller`, logged once per pair.
    fn refuse(&self, caller: &PeerId, what: &str, message: String) -> RemoteFailure {
        if let Ok(mut seen) = self.refused.lock() {
            if seen.len() >= REFUSALS_REMEMBERED {
                seen.clear();
            }
            if seen.insert((*caller, what.to_owned())) {
                tracing::warn!(peer = %caller, request = what, "refused: {message}");
            }
        }
        RemoteFailure::Forbidden(message)
    }
}

impl ClusterNode {
    /// The refusal of `rpc` from `caller` when it may not make it here:
    /// Raft's messages, writes, membership changes and read positions are
    /// trusted-only. `None` lets it through; service methods are checked
    /// by the registry, against their own permission.
    pub(super) fn refusal(&self, caller: &PeerId, rpc: &Rpc) -> Option<RpcReply> {
        let permission = match rpc {
            // A method's own permission is checked by the registry.
            Rpc::Call { .. } => return None,
            // The state feed is what followers are for; what it serves is
            // signed, and a follower verifies it.
            Rpc::FeedPull(_) | Rpc::FeedChunk(_) => Permission::Follower,
            _ => Permission::Trusted,
        };
        let trust = &self.inner.trust;
        match trust.check(caller, rpc.name(), permission) {
            Ok(()) => None,
            Err(RemoteFailure::Forbidden(m)) if matches!(rpc, Rpc::Join(_)) => Some(
                RpcReply::Refused(RemoteFailure::Forbidden(format!("{m}; {JOIN_HINT}"))),
            ),
            Err(f) => Some(RpcReply::Refused(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Method;
    use super::super::rpc::{Registry, encode};
    use super::*;

    struct Restart;
    impl Method for Restart {
        const NAME: &'static str = "test.restart";
        const PERMISSION: Permission = Permission::Local;
        type Request = ();
        type Reply = ();
    }

    struct Write;
    impl Method for Write {
        const NAME: &'static str = "test.write";
        type Request = ();
        type Reply = ();
    }

    struct Status;
    impl Method for Status {
        const NAME: &'static str = "test.status";
        const PERMISSION: Permission = Permission::Follower;
        type Request = ();
        type Reply = ();
    }

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn registry() -> Registry {
        let r = Registry::default();
        r.serve::<Restart, _, _>(|()| async { Ok(()) });
        r.serve::<Write, _, _>(|()| async { Ok(()) });
        r.serve::<Status, _, _>(|()| async { Ok(()) });
        r
    }

    async fn call(
        r: &Registry,
        trust: &Trust,
        caller: &PeerId,
        method: &str,
    ) -> Result<(), String> {
        let body = encode(method, &()).map_err(|e| e.to_string())?;
        match r.dispatch(caller, trust, method, body).await {
            Ok(_) => Ok(()),
            Err(RemoteFailure::Forbidden(m)) => Err(m),
            Err(other) => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn an_empty_trusted_list_trusts_every_peer_and_a_list_only_its_peers() {
        let (me, listed, other) = (peer(), peer(), peer());
        let open = Trust::new(me, []);
        assert!(open.is_trusted(&other));
        let closed = Trust::new(me, [listed]);
        assert!(closed.is_trusted(&listed));
        assert!(!closed.is_trusted(&other));
        assert!(
            closed
                .check(&me, "consensus.write", Permission::Trusted)
                .is_ok()
        );
        assert!(closed.check_joiner(&listed).is_ok());
        let refused = closed.check_joiner(&other).unwrap_err().to_string();
        assert!(refused.contains(&other.to_string()), "{refused}");
        assert!(refused.contains("cluster.trusted_peers"), "{refused}");
    }

    #[tokio::test]
    async fn a_local_method_refuses_a_remote_trusted_caller_and_answers_this_peer() {
        let (me, trusted) = (peer(), peer());
        let trust = Trust::new(me, [me, trusted]);
        let r = registry();
        let refused = call(&r, &trust, &trusted, Restart::NAME).await.unwrap_err();
        assert_eq!(
            refused,
            format!("test.restart is local-only: peer {trusted} may not call it")
        );
        call(&r, &trust, &me, Restart::NAME).await.unwrap();
        // The same trusted caller may call a trusted-only method.
        call(&r, &trust, &trusted, Write::NAME).await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_outside_the_list_reaches_only_follower_allowed_methods() {
        let (me, trusted, outsider) = (peer(), peer(), peer());
        let trust = Trust::new(me, [trusted]);
        let r = registry();
        call(&r, &trust, &outsider, Status::NAME).await.unwrap();
        let refused = call(&r, &trust, &outsider, Write::NAME).await.unwrap_err();
        assert_eq!(
            refused,
            format!("peer {outsider} is not trusted by this cluster: test.write is trusted-only")
        );
        assert!(call(&r, &trust, &outsider, Restart::NAME).await.is_err());
        // With no list every caller is trusted (but local-only stays local).
        let open = Trust::new(me, []);
        call(&r, &open, &outsider, Write::NAME).await.unwrap();
        assert!(call(&r, &open, &outsider, Restart::NAME).await.is_err());
    }

    #[test]
    fn refusals_are_remembered_once_per_caller_and_request_within_a_bound() {
        let trust = Trust::new(peer(), [peer()]);
        let outsider = peer();
        for _ in 0..3 {
            assert!(trust.check(&outsider, "a", Permission::Trusted).is_err());
        }
        assert!(trust.check(&outsider, "b", Permission::Trusted).is_err());
        assert_eq!(trust.refused.lock().unwrap().len(), 2);
        for i in 0..REFUSALS_REMEMBERED * 2 {
            let _ = trust.check(&outsider, &format!("m{i}"), Permission::Trusted);
        }
        assert!(trust.refused.lock().unwrap().len() <= REFUSALS_REMEMBERED);
    }
}
