//! The metadata Raft node on one machine: it founds a one-voter cluster on an empty store,
//! commits and applies commands through openraft into LMDB, answers reads from the local
//! replica, survives a restart without re-applying anything, group-commits concurrent
//! proposals, lists with pagination over an LMDB cursor, and round-trips snapshots.
//!
//! Every test runs inside its own actix System over its own temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use hamster_actors::metrics::Metrics;
use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::node::OpenFreedQueue;
use hamster_actors::raft::query;
use hamster_actors::raft::snapshot::SnapFile;
use hamster_actors::raft::state_machine::StateMachine;
use hamster_actors::raft::{
    GetAccessKey, GetBucket, GetObject, ListBuckets, ListObjects, NodeInfo, Propose, ProposeError,
    RaftNode, RaftNodeConfig, RaftStatus, ReferencedObjects, Shutdown, TakeSnapshot,
};
use hamster_actors::reclaim::Reclaimer;
use hamster_actors::s3::Offload;
use hamster_actors::shards::ShardStore;
use hamster_protocol::listing::{paginate, BTreeCursor, ListParams, Page};
use hamster_protocol::meta::{
    AccessKey, Applied, BucketRecord, Command, ObjectId, ObjectVersion, Refusal, VersionList,
};
use openraft::storage::RaftStateMachine;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const MAP_SIZE_BYTES: usize = 1 << 30;
const NODE_ID: u64 = 1;

fn node_info() -> NodeInfo {
    NodeInfo {
        cluster_addr: "127.0.0.1:9400".into(),
        zone: "z1".into(),
        host: "h1".into(),
        capacity_bytes: 1 << 40,
        replaces: None,
    }
}

async fn start(dir: &Path, seed: u64) -> (Addr<RaftNode>, UnboundedReceiver<Vec<ObjectId>>) {
    let (freed_tx, freed_rx) = unbounded_channel();
    let cfg = RaftNodeConfig {
        node_id: NODE_ID,
        meta_dir: dir.join("meta"),
        node: node_info(),
        seed,
        freed_tx,
        map_size_bytes: MAP_SIZE_BYTES,
        epoch: hamster_actors::raft::epoch::Epoch::new(0, None),
    };
    let addr = RaftNode::start(cfg).await.expect("raft node starts");
    (addr, freed_rx)
}

fn version(id: u8) -> ObjectVersion {
    ObjectVersion {
        version_id: "null".into(),
        object_id: ObjectId([id; 16]),
        size: 3,
        etag: format!("etag{id}"),
        last_modified_ms: 1_700_000_000_000,
        content_type: "binary/octet-stream".into(),
        headers: BTreeMap::new(),
        user_meta: BTreeMap::new(),
        checksums: BTreeMap::new(),
        parts: vec![],
    }
}

fn bucket(name: &str) -> BucketRecord {
    BucketRecord {
        name: name.into(),
        created_ms: 1,
        region: "us-east-1".into(),
    }
}

fn put(bucket: &str, key: &str, id: u8) -> Command {
    Command::PutObject {
        bucket: bucket.into(),
        key: key.into(),
        version: version(id),
    }
}

async fn propose(addr: &Addr<RaftNode>, cmd: Command) -> Applied {
    addr.send(Propose(cmd))
        .await
        .expect("mailbox")
        .expect("commits")
}

async fn object(addr: &Addr<RaftNode>, b: &str, k: &str) -> Option<VersionList> {
    let msg = GetObject {
        bucket: b.into(),
        key: k.into(),
    };
    addr.send(msg).await.expect("mailbox").expect("reads")
}

async fn list(addr: &Addr<RaftNode>, b: &str, params: ListParams) -> Page<ObjectVersion> {
    let msg = ListObjects {
        bucket: b.into(),
        params,
    };
    addr.send(msg).await.expect("mailbox").expect("lists")
}

async fn stop(addr: Addr<RaftNode>) {
    addr.send(Shutdown).await.expect("mailbox");
}

/// A fresh store founds a one-voter cluster led by this node.
#[actix_rt::test]
async fn t10_empty_store_becomes_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _freed) = start(dir.path(), 1).await;
    let s = addr.send(RaftStatus).await.unwrap();
    assert_eq!(s.node_id, NODE_ID);
    assert_eq!(s.leader, Some(NODE_ID));
    assert_eq!(s.state, "Leader");
    assert_eq!(s.voters, vec![(NODE_ID, node_info())]);
    assert!(s.learners.is_empty());
    assert!(s.term >= 1);
    assert_eq!(s.applied_index, s.last_log_index);
    assert_eq!(s.commit_index, s.applied_index);
    stop(addr).await;
}

/// Commands commit and read back; refusals are answers in `Applied.refused`, not errors.
#[actix_rt::test]
async fn t20_propose_read_back_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _freed) = start(dir.path(), 2).await;

    assert_eq!(
        propose(&addr, Command::CreateBucket(bucket("photos"))).await,
        Applied::default()
    );
    let again = propose(&addr, Command::CreateBucket(bucket("photos"))).await;
    assert_eq!(again.refused, Some(Refusal::BucketAlreadyOwnedByYou));
    let missing = propose(&addr, put("nope", "k", 1)).await;
    assert_eq!(missing.refused, Some(Refusal::NoSuchBucket));

    assert_eq!(
        propose(&addr, put("photos", "a/b.jpg", 1)).await,
        Applied::default()
    );
    let got = object(&addr, "photos", "a/b.jpg").await.expect("stored");
    assert_eq!(got.current(), Some(&version(1)));
    assert_eq!(object(&addr, "photos", "a/c.jpg").await, None);

    let full = propose(
        &addr,
        Command::DeleteBucket {
            name: "photos".into(),
        },
    )
    .await;
    assert_eq!(full.refused, Some(Refusal::BucketNotEmpty));

    let buckets = addr.send(ListBuckets).await.unwrap().unwrap();
    assert_eq!(buckets, vec![bucket("photos")]);
    assert_eq!(
        addr.send(GetBucket("photos".into()))
            .await
            .unwrap()
            .unwrap(),
        Some(bucket("photos"))
    );

    let del = Command::DeleteObject {
        bucket: "photos".into(),
        key: "a/b.jpg".into(),
    };
    assert_eq!(propose(&addr, del).await.freed, vec![ObjectId([1; 16])]);
    assert_eq!(object(&addr, "photos", "a/b.jpg").await, None);
    assert_eq!(
        propose(
            &addr,
            Command::DeleteBucket {
                name: "photos".into()
            }
        )
        .await,
        Applied::default()
    );
    assert_eq!(
        addr.send(GetBucket("photos".into()))
            .await
            .unwrap()
            .unwrap(),
        None
    );

    let key = AccessKey {
        access_key: "AKID".into(),
        secret_key: "secret".into(),
        name: "root".into(),
        root: true,
        grants: Default::default(),
        created_ms: 1,
    };
    propose(&addr, Command::PutAccessKey(key.clone())).await;
    assert_eq!(
        addr.send(GetAccessKey("AKID".into()))
            .await
            .unwrap()
            .unwrap(),
        Some(key)
    );
    assert_eq!(
        addr.send(GetAccessKey("other".into()))
            .await
            .unwrap()
            .unwrap(),
        None
    );
    stop(addr).await;
}

/// A key too long for LMDB to index is refused before it is proposed, so the log never holds
/// an entry that could not apply, and the node keeps serving.
#[actix_rt::test]
async fn t25_overlong_key_is_refused_before_proposing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _freed) = start(dir.path(), 10).await;
    propose(&addr, Command::CreateBucket(bucket("b"))).await;
    let before = addr.send(RaftStatus).await.unwrap();
    let long = "k".repeat(4096);
    let err = addr
        .send(Propose(put("b", &long, 1)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ProposeError::KeyTooLong { len: 4098, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let after = addr.send(RaftStatus).await.unwrap();
    assert_eq!(after.last_log_index, before.last_log_index);
    assert_eq!(
        propose(&addr, put("b", "short", 1)).await,
        Applied::default()
    );
    stop(addr).await;
}

/// An overwrite announces the replaced body on the freed channel, after the commit.
#[actix_rt::test]
async fn t30_overwrite_sends_freed_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut freed) = start(dir.path(), 3).await;
    propose(&addr, Command::CreateBucket(bucket("b"))).await;
    propose(&addr, put("b", "k", 1)).await;
    assert!(freed.try_recv().is_err(), "a first PUT frees nothing");
    let over = propose(&addr, put("b", "k", 2)).await;
    assert_eq!(over.freed, vec![ObjectId([1; 16])]);
    assert_eq!(freed.recv().await, Some(vec![ObjectId([1; 16])]));
    // Writing the same body again frees nothing (it is still referenced).
    assert!(propose(&addr, put("b", "k", 2)).await.freed.is_empty());
    assert!(freed.try_recv().is_err());
    let refs = addr.send(ReferencedObjects).await.unwrap().unwrap();
    assert_eq!(refs, BTreeSet::from([ObjectId([2; 16])]));
    stop(addr).await;
}

/// The freed queue survives a crash between the commit that frees a body and the deletion of
/// its shard files. The delete commits while no reclaimer runs (its wake-ups are dropped); the
/// store is copied as a crash at that instant leaves it; a node started on the copy has the
/// body queued, and its reclaimer deletes exactly that body's files (the live body's stay) and
/// empties the queue.
#[actix_rt::test]
async fn t35_freed_queue_survives_a_crash_before_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let shards = Arc::new(ShardStore::open(&dir.path().join("shards")).unwrap());
    for id in [1u8, 2] {
        for index in 0..2u16 {
            let mut w = shards
                .create(ObjectId([id; 16]), 1, index, 1, 1, 4096)
                .unwrap();
            w.write(b"body").unwrap();
            w.finish().unwrap();
        }
    }
    let (addr, wakeups) = start(dir.path(), 12).await;
    drop(wakeups);
    propose(&addr, Command::CreateBucket(bucket("b"))).await;
    propose(&addr, put("b", "gone", 1)).await;
    propose(&addr, put("b", "kept", 2)).await;
    let del = Command::DeleteObject {
        bucket: "b".into(),
        key: "gone".into(),
    };
    assert_eq!(propose(&addr, del).await.freed, vec![ObjectId([1; 16])]);
    // The crash: the store exactly as committed now, in a directory of its own.
    let crashed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(crashed.path().join("meta")).unwrap();
    std::fs::copy(
        dir.path().join("meta").join("data.mdb"),
        crashed.path().join("meta").join("data.mdb"),
    )
    .unwrap();
    stop(addr).await;
    assert_eq!(shards.list().unwrap().len(), 4, "nothing was deleted yet");

    let (addr, wakeups) = start(crashed.path(), 13).await;
    let queue = addr.send(OpenFreedQueue).await.unwrap().unwrap();
    assert_eq!(queue.pending_bodies().unwrap(), 1);
    let metrics = Metrics::new();
    let _reclaimer = Reclaimer::new(
        queue.clone(),
        shards.clone(),
        metrics.clone(),
        Offload::Inline,
        wakeups,
    )
    .spawn(&Default::default());
    for _ in 0..500 {
        if queue.pending_bodies().unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queue.pending_bodies().unwrap(), 0, "the queue drained");
    let left: BTreeSet<ObjectId> = shards.list().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(left, BTreeSet::from([ObjectId([2; 16])]));
    assert_eq!(metrics.reclaim_pending_bodies.get(), 0);
    assert_eq!(metrics.shards_reclaimed.get(), 1);
    drop(queue);
    stop(addr).await;
}

/// A restart on the same directory resumes exactly: same state, same applied index, nothing
/// re-applied (no freed id is announced twice).
#[actix_rt::test]
async fn t40_restart_resumes_without_reapplying() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut freed) = start(dir.path(), 4).await;
    propose(&addr, Command::CreateBucket(bucket("b"))).await;
    for i in 0..20u8 {
        propose(&addr, put("b", &format!("k{}", i % 5), i)).await;
    }
    let mut announced = Vec::new();
    while let Ok(ids) = freed.try_recv() {
        announced.extend(ids);
    }
    assert_eq!(
        announced.len(),
        15,
        "each of the 15 overwrites frees one body"
    );
    let before = addr.send(RaftStatus).await.unwrap();
    let refs_before = addr.send(ReferencedObjects).await.unwrap().unwrap();
    let all = ListParams {
        prefix: String::new(),
        delimiter: None,
        after: None,
        max_keys: 1000,
    };
    let listing_before = list(&addr, "b", all.clone()).await;
    stop(addr).await;

    let (addr, mut freed) = start(dir.path(), 5).await;
    let after = addr.send(RaftStatus).await.unwrap();
    // Everything before the restart was already applied and nothing new was needed: a sole
    // voter whose vote was committed resumes leading in the same term, so the applied index is
    // exactly where it was.
    assert!(after.term >= before.term);
    assert_eq!(after.applied_index, before.applied_index);
    assert_eq!(after.commit_index, before.commit_index);
    assert_eq!(after.last_log_index, after.applied_index);
    assert!(freed.try_recv().is_err(), "no entry was applied twice");
    assert_eq!(
        addr.send(ReferencedObjects).await.unwrap().unwrap(),
        refs_before
    );
    assert_eq!(list(&addr, "b", all).await, listing_before);
    assert_eq!(
        addr.send(ListBuckets).await.unwrap().unwrap(),
        vec![bucket("b")]
    );
    // The restarted node keeps serving writes.
    assert_eq!(propose(&addr, put("b", "k0", 200)).await.freed.len(), 1);
    assert_eq!(freed.recv().await.map(|v| v.len()), Some(1));
    stop(addr).await;
}

/// Many proposals in flight at once all commit, each applied exactly once.
#[actix_rt::test]
async fn t50_many_concurrent_proposals_commit_in_few_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _freed) = start(dir.path(), 6).await;
    propose(&addr, Command::CreateBucket(bucket("b"))).await;
    let before = addr.send(RaftStatus).await.unwrap();
    let in_flight = (0..200u32).map(|i| {
        let addr = addr.clone();
        async move {
            addr.send(Propose(put("b", &format!("obj{i:04}"), (i % 251) as u8)))
                .await
        }
    });
    let results = futures::future::join_all(in_flight).await;
    for r in results {
        assert_eq!(r.expect("mailbox").expect("commits"), Applied::default());
    }
    let after = addr.send(RaftStatus).await.unwrap();
    // Group commit: 200 concurrent proposals ride far fewer log entries than 200 (the first
    // goes alone, the rest queue behind it and share entries).
    let entries = after.applied_index - before.applied_index;
    assert!(
        (1..=20).contains(&entries),
        "200 proposals took {entries} log entries; group commit is not batching"
    );
    let all = ListParams {
        prefix: String::new(),
        delimiter: None,
        after: None,
        max_keys: 1000,
    };
    assert_eq!(list(&addr, "b", all).await.objects.len(), 200);
    stop(addr).await;
}

/// Pages the LMDB cursor returns equal the paginator's pages over an in-memory model, for
/// prefixes, delimiters and page sizes; neighbouring buckets never leak into a listing.
#[actix_rt::test]
async fn t60_list_objects_pagination_matches_model() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _freed) = start(dir.path(), 7).await;
    // "pics-old" sorts before "pics/" and "pics0" right after the "pics" range.
    for b in ["pics", "pics-old", "pics0"] {
        propose(&addr, Command::CreateBucket(bucket(b))).await;
        propose(&addr, put(b, "zz-neighbour", 9)).await;
    }
    let mut model: BTreeMap<String, ObjectVersion> = BTreeMap::new();
    model.insert("zz-neighbour".into(), version(9));
    let mut n = 0u32;
    for d in 0..6 {
        for s in 0..5 {
            for f in 0..10 {
                let key = match f % 3 {
                    0 => format!("dir{d}/file{s}{f}"),
                    _ => format!("dir{d}/sub{s}/file{f}"),
                };
                let id = (n % 250) as u8;
                n += 1;
                propose(&addr, put("pics", &key, id)).await;
                model.insert(key, version(id));
            }
        }
    }
    for t in 0..20u8 {
        let key = format!("top{t:02}");
        propose(&addr, put("pics", &key, t)).await;
        model.insert(key, version(t));
    }
    assert!(model.len() > 300);

    let cases: Vec<(&str, Option<&str>, usize)> = vec![
        ("", None, 1000),
        ("", None, 37),
        ("", Some("/"), 5),
        ("dir3/", Some("/"), 4),
        ("dir3/sub", Some("/"), 2),
        ("dir2/sub1/", None, 3),
        ("top", None, 7),
        ("nothing", Some("/"), 10),
        ("dir", Some("sub"), 9),
    ];
    for (prefix, delimiter, max_keys) in cases {
        let mut after = None;
        let mut pages = 0;
        loop {
            let params = ListParams {
                prefix: prefix.into(),
                delimiter: delimiter.map(str::to_string),
                after: after.clone(),
                max_keys,
            };
            let got = list(&addr, "pics", params.clone()).await;
            let want = paginate(&mut BTreeCursor::new(&model), &params);
            assert_eq!(got.common_prefixes, want.common_prefixes, "{params:?}");
            assert_eq!(got.is_truncated, want.is_truncated, "{params:?}");
            assert_eq!(got.next_after, want.next_after, "{params:?}");
            let want_objects: Vec<(String, ObjectVersion)> = want
                .objects
                .into_iter()
                .map(|(k, v)| (k, v.clone()))
                .collect();
            assert_eq!(got.objects, want_objects, "{params:?}");
            pages += 1;
            assert!(pages < 1000, "listing must end");
            if !got.is_truncated {
                break;
            }
            after = got.next_after;
        }
    }

    // An unpaged walk equals a direct computation of the listing.
    let all = ListParams {
        prefix: String::new(),
        delimiter: None,
        after: None,
        max_keys: 1000,
    };
    let keys: Vec<String> = list(&addr, "pics", all)
        .await
        .objects
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
    let only = ListParams {
        prefix: String::new(),
        delimiter: None,
        after: None,
        max_keys: 10,
    };
    let other = list(&addr, "pics0", only).await;
    assert_eq!(other.objects.len(), 1);
    assert_eq!(other.objects[0].0, "zz-neighbour");
    stop(addr).await;
}

/// A snapshot built through Raft is stored in LMDB, is readable after the store is reopened,
/// and installing it into an empty store reproduces the same state machine, which a node then
/// starts from and serves.
#[actix_rt::test]
async fn t70_snapshot_build_and_install_round_trip() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (addr, _freed) = start(dir_a.path(), 8).await;
    propose(&addr, Command::CreateBucket(bucket("b"))).await;
    propose(&addr, Command::CreateBucket(bucket("c"))).await;
    for i in 0..30u8 {
        propose(&addr, put("b", &format!("x/{i}"), i)).await;
    }
    propose(
        &addr,
        Command::PutAccessKey(AccessKey {
            access_key: "AK".into(),
            secret_key: "S".into(),
            name: "n".into(),
            root: false,
            grants: Default::default(),
            created_ms: 1,
        }),
    )
    .await;
    let covered = addr.send(TakeSnapshot).await.unwrap().expect("snapshot");
    let status = addr.send(RaftStatus).await.unwrap();
    assert_eq!(covered, status.applied_index);
    stop(addr).await;

    // Reopen A's store directly: the snapshot survived the restart.
    let (tx, _rx) = unbounded_channel();
    let db_a = MetaDb::open(&dir_a.path().join("meta"), MAP_SIZE_BYTES)
        .await
        .unwrap();
    let mut sm_a = StateMachine::new(db_a.clone(), tx.clone());
    let snap = sm_a
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("stored snapshot");
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(covered));
    let state_a = dump(&db_a);
    let applied_a = sm_a.applied_state().await.unwrap();

    // Install into an empty store.
    let db_b = MetaDb::open(&dir_b.path().join("meta"), MAP_SIZE_BYTES)
        .await
        .unwrap();
    let mut sm_b = StateMachine::new(db_b.clone(), tx);
    // As a member receives it: copied into a file in its own snapshot directory.
    let mut data = SnapFile::receive(&db_b.snapshot_dir()).unwrap();
    let mut sent = snap.snapshot;
    tokio::io::copy(&mut *sent, &mut data).await.unwrap();
    sm_b.install_snapshot(&snap.meta, Box::new(data))
        .await
        .unwrap();
    assert_eq!(dump(&db_b), state_a);
    assert_eq!(sm_b.applied_state().await.unwrap(), applied_a);
    let again = sm_b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot kept");
    assert_eq!(again.meta, snap.meta);
    drop((sm_a, sm_b, db_a, db_b));

    // A node starts from the installed snapshot alone (no log) and serves the same data.
    let (addr, _freed) = start(dir_b.path(), 9).await;
    let s = addr.send(RaftStatus).await.unwrap();
    assert!(s.applied_index > covered);
    assert_eq!(
        object(&addr, "b", "x/7")
            .await
            .and_then(|l| l.current().cloned()),
        Some(version(7))
    );
    let names: Vec<String> = addr
        .send(ListBuckets)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, vec!["b", "c"]);
    stop(addr).await;
}

type Dump = (
    Vec<BucketRecord>,
    BTreeSet<ObjectId>,
    Vec<(String, Option<VersionList>)>,
);

/// The state machine's contents, for comparing two stores.
fn dump(db: &MetaDb) -> Dump {
    let txn = db.env.read_txn().unwrap();
    let buckets = query::buckets(db, &txn).unwrap();
    let refs = query::referenced_objects(db, &txn).unwrap();
    let mut objects = Vec::new();
    for i in 0..30 {
        let key = format!("x/{i}");
        objects.push((key.clone(), query::versions(db, &txn, "b", &key).unwrap()));
    }
    objects.push((
        "AK".into(),
        query::access_key(db, &txn, "AK")
            .unwrap()
            .map(|_| VersionList::default()),
    ));
    (buckets, refs, objects)
}
