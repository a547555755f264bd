//! Trusted peers and per-call permissions (`cluster.trusted_peers`): real
//! peers on 127.0.0.1 that list each other as trusted, and callers that
//! hold the cluster secret but are not listed. Every wait has a deadline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use openraft::Vote;
use openraft::raft::VoteRequest;
use pinfleet::consensus::{
    CallError, ClusterError, Method, PeerNode, Permission, RemoteFailure, Rpc, RpcReply,
};
use pinfleet::ipfs::rpc::{Gc, GcReply, Id};
use pinfleet::manifest::{Owner, PinOptions, PinSpec};
use pinfleet::p2p::{self, P2pConfig, P2pHandle};
use pinfleet::pinsets;
use pinfleet::state::{Command, Op};
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cluster::{
    Peer, SECRET, apply, cid, leader_index, pinset, trusted_cluster_with, wait_for,
};

/// `n` peers whose trusted list names exactly the `n` of them.
async fn trusted_cluster(n: usize, root: &Path) -> (Vec<Peer>, Vec<PeerId>) {
    trusted_cluster_with(n, root, |_| {}).await
}

/// A bare p2p peer holding the cluster secret: connected, not trusted.
async fn outsider(cancel: &CancellationToken, tasks: &TaskTracker) -> P2pHandle<Rpc, RpcReply> {
    let mut config = P2pConfig::new(Keypair::generate_ed25519(), SECRET);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let (handle, _events) = p2p::spawn::<Rpc, RpcReply>(config, cancel.clone(), tasks)
        .await
        .unwrap();
    handle
}

fn pin_command(i: u64) -> Command {
    Command::Apply {
        owner: Owner::Api,
        ops: vec![Op::Set {
            cid: cid(i),
            written_as: None,
            spec: PinSpec {
                name: format!("outsider{i}"),
                options: Arc::new(PinOptions::default()),
            },
        }],
    }
}

/// A call of `method` whose request is `()`, as `ClusterNode::call` sends it.
fn call(method: &str) -> Rpc {
    Rpc::Call {
        method: method.into(),
        body: ByteBuf::from(cbor4ii::serde::to_vec(Vec::new(), &()).unwrap()),
    }
}

async fn stop_all(peers: Vec<Peer>) {
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_outside_the_trusted_list_cannot_write_join_remove_or_gc() {
    let root = tempfile::tempdir().unwrap();
    let (peers, _) = trusted_cluster(2, root.path()).await;
    let l = leader_index(&peers);
    let (leader, other) = (&peers[l], &peers[1 - l]);
    let gc_ran = Arc::new(AtomicBool::new(false));
    let ran = Arc::clone(&gc_ran);
    leader.node.serve::<Gc, _, _>(move |()| {
        ran.store(true, Ordering::SeqCst);
        async { Ok(GcReply::default()) }
    });
    let members = leader.node.members();
    let term = leader.node.metrics().current_term;

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let client = outsider(&cancel, &tasks).await;
    let me = client.local_peer_id();
    let target = client.dial(leader.addr()).await.unwrap();
    let requests = [
        Rpc::Write(pin_command(1)),
        Rpc::WriteBatch(vec![pin_command(2), pin_command(3)]),
        Rpc::Join(PeerNode {
            peer_id: me.to_string(),
            addrs: Vec::new(),
            api: String::new(),
        }),
        Rpc::Remove(other.node.id()),
        Rpc::ReadIndex,
        // An election with a term far ahead would depose the leader.
        Rpc::Vote(VoteRequest {
            vote: Vote::new(term + 1000, 7),
            last_log_id: None,
        }),
    ];
    for rpc in requests {
        let name = rpc.name().to_owned();
        match client.request(target, rpc).await.unwrap() {
            RpcReply::Refused(RemoteFailure::Forbidden(m)) => assert!(
                m.starts_with(&format!(
                    "peer {me} is not trusted by this cluster: {name} is trusted-only"
                )),
                "{m}"
            ),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    match client.request(target, call("ipfs.gc.keys")).await.unwrap() {
        RpcReply::Call(Err(RemoteFailure::Forbidden(m))) => assert_eq!(
            m,
            format!("peer {me} is not trusted by this cluster: ipfs.gc.keys is trusted-only")
        ),
        other => panic!("gc: expected a refusal, got {other:?}"),
    }

    assert!(!gc_ran.load(Ordering::SeqCst), "gc ran for an outsider");
    assert_eq!(leader.node.store().pin_count().unwrap(), 0);
    assert_eq!(leader.node.members(), members);
    assert!(leader.node.metrics().current_term < term + 1000);
    // The trusted peers still write, through either of them.
    pinsets::apply(&other.node, apply(pinset("trusted", 0..3), "r1"))
        .await
        .unwrap();
    wait_for("the trusted write everywhere", || {
        peers
            .iter()
            .all(|p| p.node.store().pin_count().unwrap() == 3)
    })
    .await;
    cancel.cancel();
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_not_in_the_trusted_list_does_not_become_a_voter() {
    let root = tempfile::tempdir().unwrap();
    let (peers, ids) = trusted_cluster(2, root.path()).await;
    let stranger_key = Keypair::generate_ed25519();
    let stranger_id = stranger_key.public().to_peer_id();
    // The stranger shares the cluster's config (and so its trusted list),
    // and asks to join through a member.
    let stranger = Peer::start_with(
        &root.path().join("stranger"),
        stranger_key,
        SECRET,
        vec![peers[0].addr(), peers[1].addr()],
        None,
        move |o| o.trusted = ids,
    )
    .await
    .unwrap();
    // A trusted peer adding it (forwarded to the leader, or on the leader
    // itself) is refused too: the joiner itself is checked.
    for p in &peers {
        match p.node.add_peer(stranger.node.node().clone()).await {
            Err(ClusterError::Forbidden(m)) => {
                assert!(m.contains(&stranger_id.to_string()), "{m}");
                assert!(m.contains("cluster.trusted_peers"), "{m}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(
        stranger
            .node
            .wait_ready(Duration::from_secs(3))
            .await
            .is_err(),
        "the stranger became a voter"
    );
    let stranger_node = stranger.node.id();
    for p in &peers {
        assert_eq!(p.node.members().len(), 2);
        assert!(p.node.members().iter().all(|(id, _)| *id != stranger_node));
    }
    pinsets::apply(&peers[1].node, apply(pinset("after", 0..3), "r1"))
        .await
        .unwrap();
    stranger.stop().await;
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_named_in_the_trusted_list_join_as_voters_and_write() {
    let root = tempfile::tempdir().unwrap();
    let (peers, ids) = trusted_cluster(3, root.path()).await;
    for p in &peers {
        let mut members: Vec<String> = p
            .node
            .members()
            .into_iter()
            .map(|(_, n)| n.peer_id)
            .collect();
        members.sort();
        let mut listed: Vec<String> = ids.iter().map(ToString::to_string).collect();
        listed.sort();
        assert_eq!(members, listed);
    }
    pinsets::apply(&peers[2].node, apply(pinset("trusted", 0..5), "r1"))
        .await
        .unwrap();
    stop_all(peers).await;
}

/// A method only its own peer may call (an admin action, say).
struct Restart;

impl Method for Restart {
    const NAME: &'static str = "it.restart";
    const PERMISSION: Permission = Permission::Local;
    type Request = ();
    type Reply = ();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_allowed_method_answers_an_outsider_and_a_local_one_refuses_a_trusted_peer() {
    let root = tempfile::tempdir().unwrap();
    let (peers, _) = trusted_cluster(2, root.path()).await;
    let (a, b) = (&peers[0].node, &peers[1].node);
    a.serve::<Id, _, _>(|()| async { Ok(None) });
    a.serve::<Restart, _, _>(|()| async { Ok(()) });

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let client = outsider(&cancel, &tasks).await;
    let target = client.dial(peers[0].addr()).await.unwrap();
    match client.request(target, call(Id::NAME)).await.unwrap() {
        RpcReply::Call(Ok(body)) => {
            let id: <Id as Method>::Reply = cbor4ii::serde::from_slice(&body).unwrap();
            assert!(id.is_none());
        }
        other => panic!("ipfs.id: expected an answer, got {other:?}"),
    }
    // A trusted peer through the typed call: refused, and it says why.
    match b.call::<Restart>(a.peer_id(), &()).await {
        Err(CallError::Remote(RemoteFailure::Forbidden(m))) => assert_eq!(
            m,
            format!(
                "it.restart is local-only: peer {} may not call it",
                b.peer_id()
            )
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // …while it may call the others.
    assert!(b.call::<Id>(a.peer_id(), &()).await.unwrap().is_none());
    cancel.cancel();
    stop_all(peers).await;
}
