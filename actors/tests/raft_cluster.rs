//! Three metadata Raft members on one machine, talking over real loopback mutual TLS through
//! the peer link: node 1 founds the group alone, adds 2 and 3 as learners and promotes them,
//! every committed command reaches every replica, and when the leader stops the other two
//! elect a new one that keeps committing. The link also refuses to talk to a node whose
//! certificate is not the one dialled, and the serving side refuses a request whose claimed
//! sender is not the certificate's node (INV-6: identity comes from certificates only).
//!
//! Every wait is bounded by [`WAIT_MAX`] so a broken cluster fails the test rather than hangs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use hamster_actors::control::{bind_routes, ClusterPort, ControlHandler, Routes};
use hamster_actors::peer::{
    node_id_hex, raft_protocol, PeerError, PeerLink, PeerRequest, RaftService,
};
use hamster_actors::raft::network::{RaftRequest, RaftResponse};
use hamster_actors::raft::node::{AddLearner, CatchUp, ChangeMembership, Network, StartOptions};
use hamster_actors::raft::{
    GetBucket, ListBuckets, NodeInfo, Propose, ProposeError, ProposeHere, RaftNode, RaftNodeConfig,
    RaftStatus, Shutdown,
};
use hamster_actors::tls::{mint_cluster_ca, mint_node_cert, ClusterCa, TlsMaterial};
use hamster_protocol::meta::{BucketRecord, Command, ObjectId};
use hamster_protocol::wire::{decode_message, ControlResponse, ALPN_RAFT};
use openraft::raft::VoteRequest;
use openraft::Vote;
use tempfile::TempDir;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const MAP_SIZE_BYTES: usize = 1 << 30;
/// Longest any step may take: elections and catch-up on loopback take well under a second.
const WAIT_MAX: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// Time allowed for one direct request over the link.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

fn material(ca: &ClusterCa, id: u64) -> TlsMaterial {
    let (cert_pem, key_pem) = mint_node_cert(ca, &node_id_hex(id)).unwrap();
    TlsMaterial {
        ca_cert_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

fn stub_control() -> ControlHandler {
    Arc::new(|_request, _peer| {
        Box::pin(async {
            ControlResponse::Error {
                message: "this test node has no control protocol".into(),
            }
        })
    })
}

/// One node's cluster port, Raft member and the things that must live as long as they do.
struct Member {
    id: u64,
    info: NodeInfo,
    material: TlsMaterial,
    service: RaftService,
    port: Option<ClusterPort>,
    node: Option<Addr<RaftNode>>,
    /// Kept open so the state machine can report freed bodies.
    freed: Option<UnboundedReceiver<Vec<ObjectId>>>,
    dir: TempDir,
}

impl Member {
    /// Binds the cluster port (so the address is known) with the Raft route not yet bound.
    async fn bind(ca: &ClusterCa, id: u64) -> Member {
        let material = material(ca, id);
        let service = RaftService::new();
        let routes = Routes::new(stub_control()).with(ALPN_RAFT, raft_protocol(service.clone()));
        let port = bind_routes("127.0.0.1:0".parse().unwrap(), &material, routes)
            .await
            .unwrap();
        let info = NodeInfo {
            cluster_addr: port.local_addr().to_string(),
            zone: format!("z{id}"),
            host: format!("h{id}"),
            capacity_bytes: 1 << 30,
            replaces: None,
        };
        Member {
            id,
            info,
            material,
            service,
            port: Some(port),
            node: None,
            freed: None,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts the Raft member over the peer link and routes served requests to it.
    async fn start(&mut self, bootstrap: bool) {
        let (freed_tx, freed_rx) = unbounded_channel();
        let cfg = RaftNodeConfig {
            node_id: self.id,
            meta_dir: self.dir.path().join("meta"),
            node: self.info.clone(),
            seed: 0x5eed_0000 + self.id,
            freed_tx,
            map_size_bytes: MAP_SIZE_BYTES,
            epoch: hamster_actors::raft::epoch::Epoch::new(0, None),
        };
        let opts = StartOptions {
            network: Network::Peers(PeerLink::new(&self.material).unwrap()),
            bootstrap,
            applied_tap: None,
            install_tap: None,
            liveness: None,
        };
        let node = RaftNode::start_with(cfg, opts)
            .await
            .expect("member starts");
        self.service.bind(node.clone());
        self.node = Some(node);
        self.freed = Some(freed_rx);
    }

    fn node(&self) -> &Addr<RaftNode> {
        self.node.as_ref().expect("member running")
    }

    /// Stops the member and closes its port, as a crashed node would look to its peers.
    async fn stop(&mut self) {
        self.service.unbind();
        self.port.take();
        if let Some(node) = self.node.take() {
            node.send(Shutdown).await.expect("mailbox");
        }
    }
}

fn bucket(name: &str) -> BucketRecord {
    BucketRecord {
        name: name.into(),
        created_ms: 1,
        region: "us-east-1".into(),
    }
}

/// Proposes on `leader`, retrying while leadership settles, within [`WAIT_MAX`].
async fn propose(leader: &Addr<RaftNode>, cmd: Command) {
    let mut waited = Duration::ZERO;
    loop {
        match leader.send(Propose(cmd.clone())).await.expect("mailbox") {
            Ok(applied) => {
                assert_eq!(applied.refused, None, "{cmd:?} applies");
                return;
            }
            Err(ProposeError::NotLeader { .. }) if waited < WAIT_MAX => {}
            Err(e) => panic!("proposal failed: {e}"),
        }
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
}

/// Waits until every listed member's replica holds exactly `names`.
async fn converge(members: &[&Member], names: &[&str]) {
    // ListBuckets answers in name order.
    let want: Vec<String> = names
        .iter()
        .map(|n| n.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut waited = Duration::ZERO;
    loop {
        let mut all = true;
        for m in members {
            let got = m.node().send(ListBuckets).await.expect("mailbox").unwrap();
            let got: Vec<String> = got.into_iter().map(|b| b.name).collect();
            all &= got == want;
        }
        if all {
            break;
        }
        assert!(waited < WAIT_MAX, "replicas did not converge on {want:?}");
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
    for m in members {
        for name in names {
            let got = m.node().send(GetBucket(name.to_string())).await.unwrap();
            assert_eq!(got.unwrap(), Some(bucket(name)), "node {} has {name}", m.id);
        }
    }
}

/// Waits until the listed members agree on a leader among them, and returns it.
async fn agreed_leader(members: &[&Member]) -> u64 {
    let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
    let mut waited = Duration::ZERO;
    loop {
        let mut leaders = BTreeSet::new();
        let mut leading = 0;
        for m in members {
            let s = m.node().send(RaftStatus).await.expect("mailbox");
            leaders.insert(s.leader);
            leading += usize::from(s.state == "Leader");
        }
        if let [Some(leader)] = leaders.iter().copied().collect::<Vec<_>>()[..] {
            if ids.contains(&leader) && leading == 1 {
                return leader;
            }
        }
        assert!(
            waited < WAIT_MAX,
            "no agreed leader among {ids:?}: {leaders:?}"
        );
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
}

/// Nodes 1, 2 and 3: 1 founds the group, adds 2 and 3 as learners and makes all three voters.
async fn three_voters(ca: &ClusterCa) -> (Member, Member, Member) {
    let mut m1 = Member::bind(ca, 1).await;
    let mut m2 = Member::bind(ca, 2).await;
    let mut m3 = Member::bind(ca, 3).await;
    m1.start(true).await;
    m2.start(false).await;
    m3.start(false).await;
    let leader = m1.node().clone();
    for m in [&m2, &m3] {
        let add = AddLearner {
            id: m.id,
            node: m.info.clone(),
        };
        leader.send(add).await.unwrap().expect("learner added");
    }
    leader
        .send(ChangeMembership {
            voters: BTreeSet::from([1, 2, 3]),
        })
        .await
        .unwrap()
        .expect("membership changed");
    (m1, m2, m3)
}

/// The whole lifecycle: found, grow to three voters, replicate, lose the leader, fail over.
#[actix_rt::test]
async fn t10_three_members_replicate_and_fail_over() {
    let ca = mint_cluster_ca("c-raft-cluster").unwrap();
    let (mut m1, mut m2, mut m3) = three_voters(&ca).await;
    let leader = m1.node().clone();
    let voters = BTreeSet::from([1, 2, 3]);

    let names = ["b0", "b1", "b2", "b3", "b4"];
    for name in names[..4].iter().copied() {
        propose(&leader, Command::CreateBucket(bucket(name))).await;
    }
    // A proposal on a follower goes to the leader, and the follower answers only once it has
    // applied it: its own replica reads the write at once.
    propose(m2.node(), Command::CreateBucket(bucket("b4"))).await;
    let got = m2.node().send(GetBucket("b4".into())).await.unwrap();
    assert_eq!(
        got.unwrap(),
        Some(bucket("b4")),
        "read-your-writes on the follower"
    );
    // `ProposeHere` never leaves the node.
    let here = m3
        .node()
        .send(ProposeHere(Command::CreateBucket(bucket("never"))))
        .await
        .unwrap();
    assert_eq!(here, Err(ProposeError::NotLeader { leader: Some(1) }));
    // A forwarded proposal that reaches a follower is not forwarded again.
    let link = PeerLink::new(&material(&ca, 3)).unwrap();
    let request = PeerRequest {
        to: 2,
        addr: m2.info.cluster_addr.clone(),
        payload: serde_json::to_vec(&RaftRequest::Propose(vec![Command::CreateBucket(bucket(
            "never",
        ))]))
        .unwrap(),
        timeout: REQUEST_WAIT,
    };
    let answer = link.send(request).await.expect("node 2 answers");
    match decode_message::<RaftResponse>(&answer).unwrap() {
        RaftResponse::Proposed(p) => assert_eq!(
            p.results,
            vec![Err(ProposeError::NotLeader { leader: Some(1) })]
        ),
        other => panic!("expected a proposal answer, got {other:?}"),
    }
    converge(&[&m1, &m2, &m3], &names).await;
    for m in [&m1, &m2, &m3] {
        let s = m.node().send(RaftStatus).await.unwrap();
        let ids: BTreeSet<u64> = s.voters.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, voters, "node {} sees three voters", m.id);
        assert_eq!(s.leader, Some(1));
    }

    // Reads on a follower after catching up see a write the leader just acknowledged, however
    // many arrive at once (they share read-index rounds).
    propose(&leader, Command::CreateBucket(bucket("fresh"))).await;
    let reads = (0..64).map(|_| {
        let follower = m3.node().clone();
        async move {
            follower.send(CatchUp).await.unwrap().expect("caught up");
            follower
                .send(GetBucket("fresh".into()))
                .await
                .unwrap()
                .unwrap()
        }
    });
    for got in futures::future::join_all(reads).await {
        assert_eq!(
            got,
            Some(bucket("fresh")),
            "a read after catch-up sees the write"
        );
    }

    m1.stop().await;
    let new_leader = agreed_leader(&[&m2, &m3]).await;
    assert_ne!(new_leader, 1);
    let survivor = if new_leader == 2 { &m2 } else { &m3 };
    propose(survivor.node(), Command::CreateBucket(bucket("after"))).await;
    let mut after = names.to_vec();
    after.extend(["fresh", "after"]);
    converge(&[&m2, &m3], &after).await;

    m2.stop().await;
    m3.stop().await;
}

/// A follower's write just after the leader it knows has died: the write cannot reach that
/// leader (its port is gone, and with it the follower's pooled connection), so it goes once
/// more to the leader elected next and commits on the caller's first try. A read index on the
/// other follower is answered through the new leader too.
#[actix_rt::test]
async fn t15_follower_write_rides_over_a_leader_change() {
    let ca = mint_cluster_ca("c-raft-next-leader").unwrap();
    let (mut m1, mut m2, mut m3) = three_voters(&ca).await;
    // Node 2 forwards a write first, so it holds a pooled connection to the leader.
    propose(m2.node(), Command::CreateBucket(bucket("before"))).await;
    converge(&[&m1, &m2, &m3], &["before"]).await;

    m1.stop().await;
    let first_try = m2
        .node()
        .send(Propose(Command::CreateBucket(bucket("after"))))
        .await
        .expect("mailbox");
    let applied = first_try.expect("committed through the next leader on the first try");
    assert_eq!(applied.refused, None);
    m3.node()
        .send(CatchUp)
        .await
        .expect("mailbox")
        .expect("caught up through the next leader");
    converge(&[&m2, &m3], &["before", "after"]).await;
    m2.stop().await;
    m3.stop().await;
}

/// Dialling node 2 at an address where node 3 answers is refused by the link, before any
/// request is sent; dialling the right node gets an answer.
#[actix_rt::test]
async fn t20_link_refuses_a_peer_with_another_identity() {
    let ca = mint_cluster_ca("c-raft-identity").unwrap();
    let m2 = Member::bind(&ca, 2).await;
    let m3 = Member::bind(&ca, 3).await;
    let link = PeerLink::new(&material(&ca, 1)).unwrap();

    let to_wrong = PeerRequest {
        to: 2,
        addr: m3.info.cluster_addr.clone(),
        payload: b"{}".to_vec(),
        timeout: REQUEST_WAIT,
    };
    match link.send(to_wrong).await {
        Err(e @ PeerError::WrongPeer { .. }) => {
            assert!(e.is_unreachable());
            assert!(e.to_string().contains(&node_id_hex(3)), "{e}");
        }
        other => panic!("expected a wrong-peer refusal, got {other:?}"),
    }

    // The right node answers; its member is not started, so it refuses the request itself.
    let to_right = PeerRequest {
        to: 2,
        addr: m2.info.cluster_addr.clone(),
        payload: b"{}".to_vec(),
        timeout: REQUEST_WAIT,
    };
    let answer = link.send(to_right).await.expect("node 2 answers");
    let response: RaftResponse = decode_message(&answer).unwrap();
    assert!(
        matches!(response, RaftResponse::Refused { .. }),
        "{response:?}"
    );
}

/// A vote request that claims to come from node 3 over node 1's certificate is refused by the
/// serving side without reaching its member.
#[actix_rt::test]
async fn t30_server_refuses_a_claimed_sender_that_is_not_the_certificate() {
    let ca = mint_cluster_ca("c-raft-claims").unwrap();
    let mut m2 = Member::bind(&ca, 2).await;
    m2.start(false).await;
    let link = PeerLink::new(&material(&ca, 1)).unwrap();

    let forged = RaftRequest::Vote(VoteRequest::new(Vote::new(7, 3), None));
    let request = PeerRequest {
        to: 2,
        addr: m2.info.cluster_addr.clone(),
        payload: serde_json::to_vec(&forged).unwrap(),
        timeout: REQUEST_WAIT,
    };
    let answer = link.send(request).await.expect("node 2 answers");
    match decode_message::<RaftResponse>(&answer).unwrap() {
        RaftResponse::Refused { message } => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let s = m2.node().send(RaftStatus).await.unwrap();
    assert_eq!(s.term, 0, "the forged vote never reached the member");

    // The same request in node 1's own name reaches the member and is answered by it.
    let honest = RaftRequest::Vote(VoteRequest::new(Vote::new(7, 1), None));
    let request = PeerRequest {
        to: 2,
        addr: m2.info.cluster_addr.clone(),
        payload: serde_json::to_vec(&honest).unwrap(),
        timeout: REQUEST_WAIT,
    };
    let answer = link.send(request).await.expect("node 2 answers");
    let response = decode_message::<RaftResponse>(&answer).unwrap();
    assert!(matches!(response, RaftResponse::Vote(_)), "{response:?}");
    m2.stop().await;
}

/// Quorum loss and `recover`: with nodes 1 and 2 gone for good, node 3 — which holds an entry
/// the dead majority committed, perhaps without knowing it committed — rewrites its membership
/// to lead alone, keeps every entry, and commits again.
#[actix_rt::test]
async fn t40_recover_keeps_what_the_survivor_holds() {
    use hamster_actors::raft::db::MetaDb;
    use hamster_actors::raft::recover::{inspect, rewrite_membership};

    let ca = mint_cluster_ca("c-raft-recover").unwrap();
    let (mut m1, mut m2, mut m3) = three_voters(&ca).await;
    let leader = m1.node().clone();
    propose(&leader, Command::CreateBucket(bucket("early"))).await;
    converge(&[&m1, &m2, &m3], &["early"]).await;

    // Node 2 dies; "late" commits on {1, 3}; then 1 and 3 stop at once.
    m2.stop().await;
    propose(&leader, Command::CreateBucket(bucket("late"))).await;
    m1.stop().await;
    m3.stop().await;

    let meta = m3.dir.path().join("meta");
    let db = MetaDb::open(&meta, MAP_SIZE_BYTES).await.unwrap();
    let before = inspect(&db).unwrap();
    assert_eq!(before.voters(), BTreeSet::from([1, 2, 3]));
    let last = before.last_log.expect("a log").index;
    let written = rewrite_membership(&db, 3, &BTreeSet::new()).unwrap();
    assert_eq!(
        written.index,
        last + 1,
        "appended after every entry, nothing truncated"
    );
    let after = inspect(&db).unwrap();
    assert_eq!(after.voters(), BTreeSet::from([3]));
    assert_eq!(
        after.last_log.map(|l| l.index),
        Some(written.index + 1),
        "followed by the entry that forgets pending admissions"
    );
    assert_eq!(after.nodes().keys().copied().collect::<Vec<_>>(), vec![3]);
    drop(db);

    // Node 3 restarts as the only voter, leads, and has both writes.
    m3.start(false).await;
    assert_eq!(agreed_leader(&[&m3]).await, 3);
    propose(m3.node(), Command::CreateBucket(bucket("recovered"))).await;
    converge(&[&m3], &["early", "late", "recovered"]).await;
    m3.stop().await;
}

/// A member that joins after the log was compacted catches up from a snapshot streamed in
/// chunks over the peer link, and the snapshot brings the address book with it.
#[actix_rt::test]
async fn t50_new_member_catches_up_from_a_streamed_snapshot() {
    use hamster_actors::raft::node::CompactLog;

    let ca = mint_cluster_ca("c-raft-snapshot").unwrap();
    let mut m1 = Member::bind(&ca, 1).await;
    let mut m2 = Member::bind(&ca, 2).await;
    m1.start(true).await;
    let leader = m1.node().clone();
    // Enough state that the snapshot spans several 1 MiB chunks on the wire.
    const BUCKETS: usize = 15_000;
    let names: Vec<String> = (0..BUCKETS)
        .map(|i| format!("snapshot-catch-up-bucket-with-a-long-name-{i:06}"))
        .collect();
    let proposals = names.iter().map(|n| {
        let leader = leader.clone();
        let cmd = Command::CreateBucket(bucket(n));
        async move { leader.send(Propose(cmd)).await.unwrap().unwrap() }
    });
    futures::future::join_all(proposals).await;
    let purged = leader.send(CompactLog).await.unwrap().expect("compacted");
    assert!(purged > 0, "the log was purged");

    m2.start(false).await;
    leader
        .send(AddLearner {
            id: 2,
            node: m2.info.clone(),
        })
        .await
        .unwrap()
        .expect("learner added");
    let mut waited = Duration::ZERO;
    loop {
        let got = m2.node().send(ListBuckets).await.unwrap().unwrap();
        if got.len() == BUCKETS {
            break;
        }
        assert!(waited < WAIT_MAX, "the learner has {} buckets", got.len());
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
    let s = m2.node().send(RaftStatus).await.unwrap();
    assert_eq!(
        s.voters,
        vec![(1, m1.info.clone())],
        "address book came with the state"
    );
    assert!(
        s.applied_index >= purged,
        "the state came from the snapshot"
    );
    m2.stop().await;
    m1.stop().await;
}
