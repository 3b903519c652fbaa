//! The `RaftNode` actor: owns the metadata Raft instance and the LMDB environment under
//! `<data>/meta`, turns `Propose` into a Raft client write (the commit is the linearization
//! point, INV-2), and answers metadata reads from the local replica. On a follower, proposals
//! go to the leader over the peer link, and are answered when applied here too; those that
//! certainly did not commit there (the leader changed) go once more to the next leader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use hamster_protocol::layout::{PartAt, Revisit, StaleShard};
use hamster_protocol::listing::{ListParams, Page};
use hamster_protocol::membership::{MemberView, Situation};
use hamster_protocol::meta::{
    AccessKey, Applied, Batch, BucketRecord, Command, ObjectId, ObjectVersion, Upload, VersionList,
};
use hamster_protocol::placement::Layout;
use hamster_protocol::readiness::MetaFacts;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::db::{DbError, MetaDb};
use super::epoch::{Admission, Epoch};
use super::log_store::LogStore;
use super::network::{encode_request, NoPeers, PeerNetwork, Proposed, RaftRequest, RaftResponse};
use super::query;
use super::runtime;
use super::snapshot::InstallTap;
use super::state_machine::{AppliedEntry, StateMachine};
use super::types::{NodeInfo, Raft};
use crate::liveness::LivenessHandle;
use crate::peer::{PeerLink, PeerRequest};
use crate::supervise::Supervision;
use hamster_protocol::wire::{decode_message, MemberStatus};

/// Leader heartbeat period.
pub const HEARTBEAT_MS: u64 = 100;
/// Election timeouts are drawn (from the seeded stream) in this range.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
/// Upper end of the election timeout range.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// The log grows by at least this many bytes between two snapshots (ADR-0009)...
pub const SNAPSHOT_LOG_BYTES_MIN: u64 = 64 << 20;
/// ...and by at most this many, whatever the state's size.
pub const SNAPSHOT_LOG_BYTES_MAX: u64 = 1 << 30;
/// How often a member checks whether its log has grown enough for a snapshot.
pub const SNAPSHOT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Entries kept behind a snapshot so a briefly lagging follower catches up from the log.
pub const SNAPSHOT_LOGS_KEPT: u64 = 1000;
/// How long `start` waits for this node to lead with everything committed applied.
pub const START_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long `TakeSnapshot` waits for the snapshot to be stored.
pub const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long `Shutdown` waits for LMDB to close once Raft has stopped.
pub const CLOSE_WAIT_MAX: Duration = Duration::from_secs(5);
const CLOSE_POLL: Duration = Duration::from_millis(10);
/// How long `AddLearner` and `ChangeMembership` wait for the change to commit.
pub const MEMBERSHIP_WAIT_MAX: Duration = Duration::from_secs(10);
/// Bound on queued messages; senders wait when it is full.
pub const MAILBOX_MAX: usize = 1024;
/// How long a follower waits for the leader to commit proposals it forwarded.
pub const FORWARD_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long a follower then waits to apply the leader's entry itself (read-your-writes).
pub const FORWARD_APPLY_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader's read index, and then to apply up to it.
pub const READ_INDEX_WAIT_MAX: Duration = Duration::from_secs(3);
/// How long a follower that knows no leader waits for one before refusing a read.
pub const LEADER_WAIT_MAX: Duration = Duration::from_secs(3);
/// Snapshot bytes per `InstallSnapshot` chunk: with JSON's worst case of four characters per
/// byte a chunk stays well inside one peer-link frame, and memory per transfer is bounded.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Time one snapshot chunk may take to send and install (openraft's default, 200 ms, is too
/// short for a 1 MiB chunk as JSON on a loaded machine, and a timed-out chunk is resent).
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// Most entries one `AppendEntries` carries (each a batch of up to [`BATCH_COMMANDS_MAX`]
/// commands), so a catching-up follower's frames stay bounded.
pub const APPEND_ENTRIES_MAX: u64 = 16;

/// What a node needs to start its Raft member.
pub struct RaftNodeConfig {
    /// This node's Raft id.
    pub node_id: u64,
    /// The LMDB directory, `<data>/meta`.
    pub meta_dir: PathBuf,
    /// How peers reach this node and where it sits.
    pub node: NodeInfo,
    /// This node's fork of the run's seed (elections draw from it).
    pub seed: u64,
    /// Receives the object ids each committed command freed (the shard reclaimer listens).
    pub freed_tx: UnboundedSender<Vec<ObjectId>>,
    /// LMDB map size; sparse, so it may be far larger than the data (e.g. 16 GiB).
    pub map_size_bytes: usize,
    /// The cluster epoch this node is in (raised only by `hamster recover`).
    pub epoch: Epoch,
}

/// How the Raft member reaches its peers.
#[derive(Debug, Clone)]
pub enum Network {
    /// No peers: every RPC is unreachable (the single-node `hamster serve`).
    Solo,
    /// Raft RPC over the peer link, peers addressed by their membership `cluster_addr`.
    Peers(PeerLink),
}

/// How a node joins its group, beyond [`RaftNodeConfig`]. [`RaftNode::start`] uses
/// [`StartOptions::solo`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The network Raft uses.
    pub network: Network,
    /// On an empty store, found a one-voter cluster of this node (and wait to lead it). When
    /// false the node waits, uninitialised, for a leader to add it as a learner.
    pub bootstrap: bool,
    /// Where to report every applied entry, if anyone watches (the simulation does).
    pub applied_tap: Option<UnboundedSender<AppliedEntry>>,
    /// Where to report the progress of snapshot installs, if anyone watches (the simulation
    /// does, to crash a node in the middle of one).
    pub install_tap: Option<InstallTap>,
    /// The node's liveness detector, fed by every Raft RPC; a private one when not given.
    pub liveness: Option<LivenessHandle>,
}

impl StartOptions {
    /// A one-node cluster without peers: found it on an empty store, then lead it.
    pub fn solo() -> Self {
        StartOptions {
            network: Network::Solo,
            bootstrap: true,
            applied_tap: None,
            install_tap: None,
            liveness: None,
        }
    }
}

/// Why a membership change did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This node does not lead the group; ask the leader.
    #[error("not the metadata leader (leader: {leader:?}); ask the leader")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// The change is not allowed as asked (e.g. a voter that is not a learner yet).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// It did not commit within [`MEMBERSHIP_WAIT_MAX`]; check the new members are reachable.
    #[error("membership change did not commit in time; check the new members are reachable")]
    Timeout,
    /// The member is stopping or failed.
    #[error("the metadata group failed: {0}")]
    Fatal(String),
}

/// Why a proposal did not commit, and what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposeError {
    /// This node does not lead the metadata group; retry later (S3 503 ServiceUnavailable).
    #[error("not the metadata leader (leader: {leader:?}); retry later")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// The Raft member is shutting down; retry later, possibly elsewhere (S3 503).
    #[error("the metadata group is stopping; retry later")]
    Stopping,
    /// A key is longer than the metadata store can index; the request is at fault (S3
    /// KeyTooLongError). Refused before proposing, so the log never holds an entry that
    /// could not apply.
    #[error("key of {len} bytes exceeds the metadata key limit of {max} bytes")]
    KeyTooLong {
        /// The stored key's length (`bucket/key`).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The Raft member failed (storage error, panic); give up (S3 500 InternalError).
    #[error("the metadata group failed: {0}")]
    Fatal(String),
}

impl ProposeError {
    /// Whether the same proposal may succeed later (503) rather than never (500/400).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProposeError::NotLeader { .. } | ProposeError::Stopping
        )
    }
}

/// Why a metadata read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The node has shut down and closed its store.
    #[error("the metadata store is closed")]
    Closed,
    /// LMDB or a record failed (S3 500 InternalError).
    #[error("metadata read failed: {0}")]
    Storage(String),
}

/// A read of the local replica that needs nothing from the Raft actor: any holder of a
/// [`MetaReader`] answers it on its own thread, from one LMDB read transaction. Whether the
/// replica is current enough is the caller's business (`CatchUp` first where it must be).
pub trait LocalRead {
    /// What the read answers.
    type Output;
    /// Answers from `txn`.
    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError>;
}

/// A handle for reading the local replica without queueing behind the Raft actor's
/// proposals and Raft traffic. Cloning is cheap. It holds the store only while a read runs,
/// so a [`Shutdown`] still closes the store; reads after that answer [`ReadError::Closed`].
#[derive(Clone, Default)]
pub struct MetaReader {
    slot: Arc<std::sync::RwLock<Option<MetaDb>>>,
}

impl MetaReader {
    fn over(db: MetaDb) -> MetaReader {
        MetaReader {
            slot: Arc::new(std::sync::RwLock::new(Some(db))),
        }
    }

    /// The store, unless a [`Shutdown`] let go of it.
    fn db(&self) -> Result<MetaDb, ReadError> {
        self.slot
            .read()
            .map_err(|_| ReadError::Closed)?
            .clone()
            .ok_or(ReadError::Closed)
    }

    /// Answers `q` from the local replica as it is now.
    pub fn read<Q: LocalRead>(&self, q: &Q) -> Result<Q::Output, ReadError> {
        let db = self.db()?;
        let txn = db
            .env
            .read_txn()
            .map_err(|e| ReadError::Storage(e.to_string()))?;
        q.read_in(&db, &txn)
            .map_err(|e| ReadError::Storage(e.to_string()))
    }

    /// Every body the local replica's state references, as one read transaction sees it,
    /// in a [`query::BodyFilter`]. Reads in slices and lets other work run between them, so
    /// the scan neither stalls this thread nor holds memory in proportion to the store; a
    /// [`Shutdown`] meanwhile ends it with `Closed`. `seed` places the filter's false claims.
    pub async fn referenced_bodies(&self, seed: u64) -> Result<query::BodyFilter, ReadError> {
        let storage = |e: DbError| ReadError::Storage(e.to_string());
        let db = self.db()?;
        let txn = db
            .env
            .clone()
            .static_read_txn()
            .map_err(|e| storage(e.into()))?;
        let expected = {
            let state = db.state(&txn).map_err(storage)?;
            let objects = state.objects.len(&txn).map_err(|e| storage(e.into()))?;
            let uploads = state.uploads.len(&txn).map_err(|e| storage(e.into()))?;
            // Most keys hold one version of one body; an upload holds a few parts.
            objects + uploads * 8
        };
        let mut filter = query::BodyFilter::with_capacity(expected, seed);
        for uploads in [false, true] {
            let mut after = None;
            while query::referenced_slice(&db, &txn, uploads, &mut after, &mut filter)
                .map_err(storage)?
                == query::REFERENCED_SLICE_RECORDS
            {
                tokio::task::yield_now().await;
                if self.slot.read().map_or(true, |s| s.is_none()) {
                    return Err(ReadError::Closed);
                }
            }
        }
        Ok(filter)
    }

    /// Lets go of the store: later reads answer `Closed`.
    fn close(&self) {
        if let Ok(mut slot) = self.slot.write() {
            *slot = None;
        }
    }
}

/// This node's [`MetaReader`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "MetaReader")]
pub struct GetReader;

impl LocalRead for GetBucket {
    type Output = Option<BucketRecord>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::bucket(db, txn, &self.0)
    }
}

impl LocalRead for ListBuckets {
    type Output = Vec<BucketRecord>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::buckets(db, txn)
    }
}

impl LocalRead for GetObject {
    type Output = Option<VersionList>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::versions(db, txn, &self.bucket, &self.key)
    }
}

impl LocalRead for ListObjects {
    type Output = Page<ObjectVersion>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::list_objects(db, txn, &self.bucket, &self.params)
    }
}

impl LocalRead for GetUpload {
    type Output = Option<Upload>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::upload(db, txn, &self.bucket, &self.key, &self.upload_id)
    }
}

impl LocalRead for ListUploads {
    type Output = Vec<Upload>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::list_uploads(db, txn, self)
    }
}

impl LocalRead for GetAccessKey {
    type Output = Option<AccessKey>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::access_key(db, txn, &self.0)
    }
}

impl LocalRead for ListAccessKeys {
    type Output = Vec<AccessKey>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::access_keys(db, txn)
    }
}

impl LocalRead for GetLayout {
    type Output = Option<Layout>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::layout(db, txn)
    }
}

impl LocalRead for GetScrub {
    type Output = hamster_protocol::scrub::ScrubState;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::scrub(db, txn)
    }
}

impl LocalRead for GetAdmitted {
    type Output = BTreeMap<u64, NodeInfo>;

    fn read_in(&self, db: &MetaDb, txn: &heed::RoTxn) -> Result<Self::Output, DbError> {
        query::admitted(db, txn)
    }
}

/// Commit `Command` through Raft and return what applying it answered. A `Refusal` is an
/// answer (`Applied.refused`), not an error.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Applied, ProposeError>")]
pub struct Propose(pub Command);

/// Like [`Propose`], but only where this node leads: never forwarded, answers `NotLeader`
/// on a follower (for changes that must commit together with leader-only steps, as a join's
/// token with the membership change after it).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Applied, ProposeError>")]
pub struct ProposeHere(pub Command);

/// One bucket by name.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<BucketRecord>, ReadError>")]
pub struct GetBucket(pub String);

/// Every bucket, in name order.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<BucketRecord>, ReadError>")]
pub struct ListBuckets;

/// The versions of one key.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<VersionList>, ReadError>")]
pub struct GetObject {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
}

/// One page of a bucket listing; each object comes with its current version.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Page<ObjectVersion>, ReadError>")]
pub struct ListObjects {
    /// Bucket name.
    pub bucket: String,
    /// Prefix, delimiter, start and page size.
    pub params: ListParams,
}

/// One multipart upload in progress.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<Upload>, ReadError>")]
pub struct GetUpload {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
}

/// Up to `max` uploads of a bucket whose keys start with `prefix`, in (key, upload id) order,
/// after the markers as ListMultipartUploads defines them.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Upload>, ReadError>")]
pub struct ListUploads {
    /// Bucket name.
    pub bucket: String,
    /// Only keys starting with this.
    pub prefix: String,
    /// Only keys after this one (or this key with an upload id after `upload_id_marker`).
    pub key_marker: String,
    /// With `key_marker`: uploads of that key after this id.
    pub upload_id_marker: String,
    /// Page size bound.
    pub max: usize,
}

/// One access key by id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<AccessKey>, ReadError>")]
pub struct GetAccessKey(pub String);

/// Every access key, in access key id order.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<AccessKey>, ReadError>")]
pub struct ListAccessKeys;

/// The stored data-plane layout (`None` before the first one is stored).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Option<Layout>, ReadError>")]
pub struct GetLayout;

/// The scrubber's replicated state, as this node has applied it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<hamster_protocol::scrub::ScrubState, ReadError>")]
pub struct GetScrub;

/// The nodes that have stale shards listed (moved away, not yet deleted there).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<u64>, ReadError>")]
pub struct StaleNodes;

/// One page of the stale shards listed on one node.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<StaleShard>, ReadError>")]
pub struct StalePage {
    /// The node.
    pub node: u64,
    /// The last shard of the previous page.
    pub after: Option<StaleShard>,
    /// Most shards answered.
    pub limit: usize,
}

/// How many stale shards are listed, cluster-wide.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, ReadError>")]
pub struct StaleCount;

/// One page of the parts listed for a revisit, with their sequence numbers.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<(u64, Revisit)>, ReadError>")]
pub struct RevisitPage {
    /// The last sequence number of the previous page (0 for the first).
    pub after: u64,
    /// Most revisits answered.
    pub limit: usize,
}

/// Nodes a join token admitted, with where they run: pending joiners and, until their tokens
/// are pruned, nodes that have since become members.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<BTreeMap<u64, NodeInfo>, ReadError>")]
pub struct GetAdmitted;

/// How many keys and uploads are stored, from the store's own counts (no walk): the size of
/// a migration walk, for its progress.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, ReadError>")]
pub struct CountStored;

/// Every object id any stored version references (orphan-shard recovery at startup).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<BTreeSet<ObjectId>, ReadError>")]
pub struct ReferencedObjects;

/// A handle on this node's freed queue (`super::freed`), for the reclaimer.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<super::freed::FreedQueue, ReadError>")]
pub struct OpenFreedQueue;

/// This member's view of the group.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "RaftStatusReport")]
pub struct RaftStatus;

/// Builds a snapshot of everything applied now and waits (bounded) until it is stored;
/// answers the last log index it covers.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, ProposeError>")]
pub struct TakeSnapshot;

/// Builds a snapshot (as [`TakeSnapshot`]) and drops the log up to it, so a member that
/// needs older entries catches up from the snapshot; answers the last purged index.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, ProposeError>")]
pub struct CompactLog;

/// Adds node `id` as a learner (the leader replicates to it; it does not vote) and waits,
/// bounded by [`MEMBERSHIP_WAIT_MAX`], for the change to commit (not for the learner to catch
/// up: the steward promotes it once it has). Leader only.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), MembershipError>")]
pub struct AddLearner {
    /// The new node's id.
    pub id: u64,
    /// Where it listens and sits.
    pub node: NodeInfo,
}

/// Makes `voters` the voting members (each already a member or learner); voters left out
/// stay on as learners. Waits, bounded by [`MEMBERSHIP_WAIT_MAX`], for the change to commit.
/// Leader only.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), MembershipError>")]
pub struct ChangeMembership {
    /// The new voter set.
    pub voters: BTreeSet<u64>,
}

/// Takes member `id` out of the group entirely (a voter is not kept as a learner), so that
/// when it is added again the leader replicates to it from nothing, as to a new node. Used
/// when a member lost its metadata: it must not vote or count toward a commit until it has
/// caught up again. Waits, bounded by [`MEMBERSHIP_WAIT_MAX`], for the change to commit.
/// Leader only.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), MembershipError>")]
pub struct RemoveMember {
    /// The member to remove.
    pub id: u64,
}

/// Waits until this node's replica holds every write committed before the call: on the
/// leader (or a node without peers) at once; on a follower once it has applied up to the
/// leader's commit index, asked over the peer link (a read index), and asked once more of the
/// next leader if that one cannot answer. Refused with `NotLeader` when no leader answers,
/// each wait bounded by [`LEADER_WAIT_MAX`] and [`READ_INDEX_WAIT_MAX`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), ProposeError>")]
pub struct CatchUp;

/// The membership as the leader sees it, for the steward; `None` when this node does not lead.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<Situation>")]
pub struct MembershipView;

/// One Raft RPC from a peer, already authenticated by the peer link; answered by the member
/// unless the peer is of an older cluster epoch ([`super::epoch`]).
#[derive(Debug, Clone, Message)]
#[rtype(result = "RaftResponse")]
pub struct RaftRpc {
    /// The request.
    pub request: RaftRequest,
    /// The sender's cluster epoch.
    pub epoch: u64,
    /// The sender, as its certificate names it.
    pub from: u64,
}

/// Moves this node into the given cluster epoch (never back): `hamster recover` tells the members it
/// keeps, so that they refuse the dropped ones before the recovered node even starts.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), String>")]
pub struct AdoptEpoch(pub u64);

/// Stops Raft, then closes LMDB and stops the actor; replies once the store is closed, so the
/// same directory can be opened again at once.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A live view of this member's Raft metrics (state, term, leader, log and membership), as
/// openraft publishes them; every change wakes the receiver.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, NodeInfo>>")]
pub struct WatchMetrics;

/// What `/ready` needs from this member: whether its core runs, the leader it knows, its
/// applied index, and the leader's commit index as the leader confirms it now (a read index,
/// bounded by [`READY_CONFIRM_WAIT_MAX`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "MetaFacts")]
pub struct ReadyProbe;

/// How long [`ReadyProbe`] waits for the leader to confirm its commit index; a leader that
/// cannot answer within this is, for a reader, as good as none.
pub const READY_CONFIRM_WAIT_MAX: Duration = Duration::from_millis(1_500);

/// Whether this member's Raft core task runs (cheap: no network; for `/health`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct CoreRunning;

/// Test builds only: the Raft core's next log append panics, as a bug in it would.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PanicCoreOnNextAppend;

/// Whether the core behind `metrics` runs: it has not reported a fatal error, and its task
/// still holds the sending end (a panicked core drops it without a last report).
pub fn core_running(
    metrics: &tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, NodeInfo>>,
) -> bool {
    metrics.has_changed().is_ok() && metrics.borrow().running_state.is_ok()
}

/// The answer to [`RaftStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaftStatusReport {
    /// This node's id.
    pub node_id: u64,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Last committed log index (last applied if the member could not be asked); 0 before
    /// the first entry.
    pub commit_index: u64,
    /// Last applied log index; 0 before the first entry.
    pub applied_index: u64,
    /// Last log index present; 0 before the first entry.
    pub last_log_index: u64,
    /// Voters, by id.
    pub voters: Vec<(u64, NodeInfo)>,
    /// Learners, by id.
    pub learners: Vec<(u64, NodeInfo)>,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
}

impl RaftStatusReport {
    /// The members as the control protocol reports them, voters first; per-member state is
    /// left for the caller to ask each member for.
    pub fn members(&self) -> Vec<MemberStatus> {
        let one = |(id, n): &(u64, NodeInfo), role: &str| MemberStatus {
            node_id: format!("{id:016x}"),
            cluster_addr: n.cluster_addr.clone(),
            role: role.to_string(),
            zone: n.zone.clone(),
            host: n.host.clone(),
            capacity_bytes: n.capacity_bytes,
            state: None,
            term: None,
            last_log_index: None,
            shard_count: None,
            shard_bytes: None,
        };
        let mut out: Vec<MemberStatus> = self.voters.iter().map(|m| one(m, "voter")).collect();
        out.extend(self.learners.iter().map(|m| one(m, "learner")));
        out
    }
}

/// The actor owning the metadata Raft member and its store.
pub struct RaftNode {
    node_id: u64,
    raft: Raft,
    /// `None` once shut down.
    db: Option<MetaDb>,
    /// Reads of the same store from other threads.
    reader: MetaReader,
    max_key_bytes: usize,
    /// Proposals waiting for the batch in flight to land.
    pending: Vec<Pending>,
    /// Whether a batch is in the log pipeline.
    in_flight: bool,
    /// Where proposals go when this node does not lead; `None` when running solo.
    link: Option<PeerLink>,
    /// The cluster epoch, checked on every inbound RPC and sent with every outbound one.
    epoch: Epoch,
    /// The node's liveness detector: when peers last answered.
    liveness: LivenessHandle,
    /// The term this node leads in and since when (as first seen by [`MembershipView`]).
    leading_since: Option<(u64, Instant)>,
    /// Reads waiting for the next read-index round (see [`CatchUp`]).
    catch_up_waiting: Vec<oneshot::Sender<Result<(), ProposeError>>>,
    /// Whether a read-index round is out.
    catch_up_in_flight: bool,
    /// The store's `log_bytes` when the last snapshot was asked for.
    log_bytes_at_snapshot: u64,
    /// Test builds only: makes the Raft core's next log append panic.
    #[cfg(feature = "fault-injection")]
    panic_switch: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a batched proposal's answer goes: what applying it answered and the log index of
/// the entry that carried it.
type Waiter = oneshot::Sender<Result<(Applied, u64), ProposeError>>;

/// One queued proposal.
struct Pending {
    cmd: Command,
    waiter: Waiter,
    /// Whether it may go to the leader when this node does not lead. False for proposals a
    /// follower forwarded here (a proposal travels at most once) and for [`ProposeHere`].
    forward: bool,
}

/// Most commands one log entry carries; bounds entry size and apply-transaction length.
pub const BATCH_COMMANDS_MAX: usize = 256;

/// Whether a log that grew by `log_bytes` since the last snapshot calls for a new one, when
/// that snapshot was `snapshot_bytes` long: once the log has grown by half the state's size
/// (so building costs at most about twice what the log wrote), within
/// [`SNAPSHOT_LOG_BYTES_MIN`]..=[`SNAPSHOT_LOG_BYTES_MAX`].
pub fn snapshot_due(log_bytes: u64, snapshot_bytes: u64) -> bool {
    log_bytes >= (snapshot_bytes / 2).clamp(SNAPSHOT_LOG_BYTES_MIN, SNAPSHOT_LOG_BYTES_MAX)
}

fn raft_config() -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "hamster-meta".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        // Snapshots are triggered by log bytes (`snapshot_due`), not by entry count.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: SNAPSHOT_LOGS_KEPT,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        max_payload_entries: APPEND_ENTRIES_MAX,
        ..Default::default()
    };
    Ok(config.validate()?)
}

impl RaftNode {
    /// Opens LMDB and Raft; on a fresh store initialises a one-voter cluster of this node;
    /// waits (at most [`START_WAIT_MAX`]) until this node leads and has applied everything
    /// committed, then returns the started actor's address. Must be called inside a running
    /// actix System.
    pub async fn start(cfg: RaftNodeConfig) -> anyhow::Result<Addr<RaftNode>> {
        Self::start_with(cfg, StartOptions::solo()).await
    }

    /// Like [`RaftNode::start`] with a choice of network and of founding or joining. A node
    /// that founds (`bootstrap` on an empty store), runs solo, or restarts as its group's only
    /// voter waits to lead before returning; a joiner, or a restarted member of a multi-node
    /// group, returns at once.
    pub async fn start_with(
        cfg: RaftNodeConfig,
        opts: StartOptions,
    ) -> anyhow::Result<Addr<RaftNode>> {
        Self::start_supervised(cfg, opts, &Supervision::default()).await
    }

    /// Like [`RaftNode::start_with`], with the actor registered in `supervision` (which counts
    /// its restarts and pings it for `/health`).
    pub async fn start_supervised(
        cfg: RaftNodeConfig,
        opts: StartOptions,
        supervision: &Supervision,
    ) -> anyhow::Result<Addr<RaftNode>> {
        runtime::seed_rng(cfg.seed);
        let db = MetaDb::open(&cfg.meta_dir, cfg.map_size_bytes)
            .await
            .with_context(|| format!("opening metadata store {}", cfg.meta_dir.display()))?;
        let config = Arc::new(raft_config()?);
        let log_store = LogStore::new(db.clone());
        #[cfg(feature = "fault-injection")]
        let panic_switch = log_store.panic_switch();
        let state_machine = StateMachine::new(db.clone(), cfg.freed_tx)
            .with_applied_tap(opts.applied_tap)
            .with_install_tap(opts.install_tap);
        let solo = matches!(opts.network, Network::Solo);
        let liveness = opts
            .liveness
            .unwrap_or_else(|| LivenessHandle::start(cfg.node_id, None));
        let (raft, link) = match opts.network {
            Network::Solo => (
                Raft::new(cfg.node_id, config, NoPeers, log_store, state_machine).await?,
                None,
            ),
            Network::Peers(link) => {
                let network = PeerNetwork::new(link.clone(), liveness.clone(), cfg.epoch.clone());
                let raft =
                    Raft::new(cfg.node_id, config, network, log_store, state_machine).await?;
                (raft, Some(link))
            }
        };
        let ready = async {
            let fresh = !raft.is_initialized().await?;
            // A restarted member that is the group's only voter leads alone, as a fresh
            // founder does; wait for that so it serves writes as soon as it returns.
            let sole_voter = {
                let m = raft.metrics().borrow().clone();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                voters == [cfg.node_id]
            };
            if solo || (opts.bootstrap && fresh) || sole_voter {
                Self::become_ready(&raft, cfg.node_id, cfg.node).await
            } else {
                Ok(())
            }
        };
        if let Err(e) = ready.await {
            // Release the store so a retry can open it again.
            let _ = raft.shutdown().await;
            return Err(e);
        }
        let max_key_bytes = db.max_key_bytes();
        let node = RaftNode {
            node_id: cfg.node_id,
            raft,
            reader: MetaReader::over(db.clone()),
            db: Some(db),
            max_key_bytes,
            pending: Vec::new(),
            in_flight: false,
            link,
            epoch: cfg.epoch.clone(),
            liveness,
            leading_since: None,
            catch_up_waiting: Vec::new(),
            catch_up_in_flight: false,
            log_bytes_at_snapshot: 0,
            #[cfg(feature = "fault-injection")]
            panic_switch,
        };
        Ok(supervision.start("raft_node", node))
    }

    async fn become_ready(raft: &Raft, node_id: u64, node: NodeInfo) -> anyhow::Result<()> {
        if !raft.is_initialized().await? {
            raft.initialize(BTreeMap::from([(node_id, node)])).await?;
        }
        raft.wait(Some(START_WAIT_MAX))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.current_leader == Some(node_id)
                        && m.last_applied.map(|l| l.index) == m.last_log_index
                },
                "leading with every entry applied",
            )
            .await
            .context("metadata Raft did not become a ready leader")?;
        Ok(())
    }

    /// The Raft handle, for operations the messages do not cover (tests trigger snapshots).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&MetaDb, &heed::RoTxn) -> Result<T, DbError>,
    ) -> Result<T, ReadError> {
        let db = self.db.as_ref().ok_or(ReadError::Closed)?;
        let txn = db
            .env
            .read_txn()
            .map_err(|e| ReadError::Storage(e.to_string()))?;
        f(db, &txn).map_err(|e| ReadError::Storage(e.to_string()))
    }
}

/// The longest LMDB key a command would write.
fn longest_key_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::CreateBucket(b) => b.name.len(),
        Command::DeleteBucket { name } => name.len(),
        Command::PutObject { bucket, key, .. }
        | Command::PutObjectIf { bucket, key, .. }
        | Command::DeleteObject { bucket, key } => bucket.len() + 1 + key.len(),
        Command::PutAccessKey(k) => k.access_key.len(),
        Command::DeleteAccessKey { access_key } => access_key.len(),
        Command::SetGrant {
            access_key, bucket, ..
        } => access_key.len().max(bucket.len()),
        Command::CreateUpload(u) => u.bucket.len() + u.key.len() + u.upload_id.len() + 2,
        Command::PutUploadPart {
            upload_id,
            bucket,
            key,
            ..
        }
        | Command::CompleteUpload {
            upload_id,
            bucket,
            key,
            ..
        }
        | Command::CompleteUploadIf {
            upload_id,
            bucket,
            key,
            ..
        }
        | Command::AbortUpload {
            upload_id,
            bucket,
            key,
        } => bucket.len() + key.len() + upload_id.len() + 2,
        Command::AddJoinToken { secret_sha256, .. }
        | Command::ConsumeJoinToken { secret_sha256, .. } => secret_sha256.len(),
        Command::Rehome(r) => match &r.at {
            PartAt::Object {
                bucket,
                key,
                version_id,
            } => bucket.len() + key.len() + version_id.len() + 2,
            PartAt::Upload {
                bucket,
                key,
                upload_id,
            } => bucket.len() + key.len() + upload_id.len() + 2,
        },
        Command::ForgetAdmissions
        | Command::SetLayout(_)
        | Command::BeginTransition { .. }
        | Command::TransitionCheckpoint { .. }
        | Command::EndTransition { .. }
        | Command::DropStale { .. }
        | Command::DropRevisits { .. }
        | Command::ScrubBegin { .. }
        | Command::ScrubStep { .. }
        | Command::ScrubSet(_)
        | Command::ScrubHold { .. }
        | Command::Tombstone { .. } => 0,
    }
}

fn propose_error(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ProposeError::Fatal(e.to_string())
        }
        RaftError::Fatal(Fatal::Stopped) => ProposeError::Stopping,
        RaftError::Fatal(f) => ProposeError::Fatal(f.to_string()),
    }
}

impl Actor for RaftNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_MAX);
        ctx.run_interval(SNAPSHOT_CHECK_EVERY, |act, ctx| act.snapshot_if_due(ctx));
        // A member of a newer cluster epoch said a recover dropped this node: its state is
        // stale, so its Raft member stops taking part at once (no votes, no proposals).
        let mut fenced = self.epoch.fenced();
        let raft = self.raft.clone();
        ctx.spawn(
            async move {
                while fenced.borrow_and_update().is_none() {
                    if fenced.changed().await.is_err() {
                        return;
                    }
                }
                tracing::error!("dropped from the cluster by a recover; the Raft member stops");
                let _ = raft.shutdown().await;
            }
            .into_actor(self),
        );
    }
}

impl RaftNode {
    /// Asks openraft for a snapshot once the log has grown enough ([`snapshot_due`]); the
    /// build streams from a read transaction while applies go on.
    fn snapshot_if_due(&mut self, ctx: &mut Context<Self>) {
        let Some(db) = &self.db else { return };
        let logged = db.log_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let since = logged.saturating_sub(self.log_bytes_at_snapshot);
        if !snapshot_due(
            since,
            db.snapshot_bytes.load(std::sync::atomic::Ordering::Relaxed),
        ) {
            return;
        }
        self.log_bytes_at_snapshot = logged;
        let raft = self.raft.clone();
        ctx.spawn(
            async move {
                if let Err(e) = raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "could not start a snapshot");
                }
            }
            .into_actor(self),
        );
    }
}

impl Supervised for RaftNode {
    /// The futures that carried the batch in flight and the read-index round died with the old
    /// context (their callers got an error, as for a lost answer); proposals and reads still
    /// queued go out now.
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        self.in_flight = false;
        self.catch_up_in_flight = false;
        self.flush(ctx);
        self.catch_up_round(ctx);
    }
}

impl Handler<Propose> for RaftNode {
    type Result = ResponseFuture<Result<Applied, ProposeError>>;

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) -> Self::Result {
        let answer = self.enqueue(msg.0, true, ctx);
        Box::pin(async move { answer.await.map(|(applied, _)| applied) })
    }
}

impl Handler<ProposeHere> for RaftNode {
    type Result = ResponseFuture<Result<Applied, ProposeError>>;

    fn handle(&mut self, msg: ProposeHere, ctx: &mut Self::Context) -> Self::Result {
        let answer = self.enqueue(msg.0, false, ctx);
        Box::pin(async move { answer.await.map(|(applied, _)| applied) })
    }
}

impl RaftNode {
    /// Queues one proposal for the next batch; the future answers once it landed.
    fn enqueue(
        &mut self,
        cmd: Command,
        forward: bool,
        ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = Result<(Applied, u64), ProposeError>> + 'static {
        let len = longest_key_bytes(&cmd);
        let max = self.max_key_bytes;
        let rx = if len > max {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            self.pending.push(Pending {
                cmd,
                waiter: tx,
                forward,
            });
            self.flush(ctx);
            Some(rx)
        };
        async move {
            match rx {
                None => Err(ProposeError::KeyTooLong { len, max }),
                Some(rx) => rx.await.unwrap_or(Err(ProposeError::Stopping)),
            }
        }
    }

    /// Commits `cmds` through the leader (`leader`, or the first one known within
    /// [`LEADER_WAIT_MAX`] when none is yet), then waits (bounded) until this node has applied
    /// the entry that carried them. Commands that certainly did not commit there (the request
    /// never left, or that node no longer led and refused them) go once more to the leader
    /// after it, which may be this node; a request that may have reached the leader is never
    /// sent again, so a command cannot apply twice. Answers one result per command.
    fn forward(
        &self,
        leader: Option<u64>,
        cmds: Vec<Command>,
    ) -> impl std::future::Future<Output = Vec<Result<Applied, ProposeError>>> + 'static {
        let raft = self.raft.clone();
        let link = self.link.clone();
        let epoch = self.epoch.clone();
        let me = self.node_id;
        async move {
            let refuse = |leader| vec![Err(ProposeError::NotLeader { leader }); cmds.len()];
            let Some(link) = link else {
                return refuse(leader);
            };
            let first = match leader {
                Some(l) => Some(l),
                None => next_leader(&raft, None, 0).await,
            };
            let Some(first) = first else {
                return refuse(None);
            };
            // The term `first` leads in, as far as this node knows; a change after it is what
            // a second try waits for.
            let term = raft.metrics().borrow().current_term;
            let mut results = match propose_at(&raft, &link, &epoch, me, first, cmds.clone()).await
            {
                Attempt::Answered(results) => results,
                Attempt::NotSent => refuse(Some(first)),
                Attempt::Lost => return refuse(Some(first)),
            };
            let again: Vec<usize> = (0..results.len())
                .filter(|i| matches!(results[*i], Err(ProposeError::NotLeader { .. })))
                .collect();
            if again.is_empty() {
                return results;
            }
            let Some(next) = next_leader(&raft, Some(first), term).await else {
                return results;
            };
            tracing::debug!(
                first,
                next,
                commands = again.len(),
                "proposals not taken by the leader; once more to the next one"
            );
            let retry: Vec<Command> = again.iter().map(|i| cmds[*i].clone()).collect();
            let answers = match propose_at(&raft, &link, &epoch, me, next, retry).await {
                Attempt::Answered(answers) => answers,
                Attempt::NotSent | Attempt::Lost => return results,
            };
            for (i, answer) in again.into_iter().zip(answers) {
                results[i] = answer;
            }
            results
        }
    }
}

/// Resolves, with the reason, once this member's Raft core has stopped: by a fatal error
/// (storage failed, a panic) or a shutdown. `metrics` comes from [`WatchMetrics`].
pub async fn core_stopped(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, NodeInfo>>,
) -> String {
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the metadata core ended".to_string();
        }
    }
}

/// What became of commands sent to a leader.
enum Attempt {
    /// One result per command, in order.
    Answered(Vec<Result<Applied, ProposeError>>),
    /// The request never left this node; none of the commands can have committed.
    NotSent,
    /// It may have reached the leader; whether the commands committed is unknown.
    Lost,
}

/// Proposes `cmds` at `leader`: here with a direct client write when that is this node,
/// otherwise over the peer link, then waits (bounded) to apply the entry that carried them so
/// that the writer reads its write on this node.
async fn propose_at(
    raft: &Raft,
    link: &PeerLink,
    epoch: &Epoch,
    me: u64,
    leader: u64,
    cmds: Vec<Command>,
) -> Attempt {
    let count = cmds.len();
    if leader == me {
        return match raft.client_write(Batch(cmds)).await {
            Ok(r) => Attempt::Answered(r.data.into_iter().map(Ok).collect()),
            Err(e) => Attempt::Answered(vec![Err(propose_error(e)); count]),
        };
    }
    let payload = match encode_request(epoch.get(), RaftRequest::Propose(cmds)) {
        Ok(p) => p,
        Err(e) => return Attempt::Answered(vec![Err(ProposeError::Fatal(e.to_string())); count]),
    };
    let proposed = match ask_node(raft, link, epoch, leader, payload, FORWARD_WAIT_MAX).await {
        Ok(RaftResponse::Proposed(p)) if p.results.len() == count => p,
        Ok(other) => {
            tracing::debug!(leader, answer = ?other, "unusable answer to forwarded proposals");
            return Attempt::Lost;
        }
        Err(Asked::NotSent) => return Attempt::NotSent,
        Err(Asked::Lost) => return Attempt::Lost,
    };
    let applied = raft
        .wait(Some(FORWARD_APPLY_WAIT_MAX))
        .applied_index_at_least(Some(proposed.log_index), "forwarded proposals applied")
        .await;
    if let Err(e) = applied {
        // Committed all the same; only reading it back here may lag.
        tracing::warn!(error = %e, index = proposed.log_index, "forwarded proposals committed but not applied here yet");
    }
    Attempt::Answered(proposed.results)
}

/// Waits (bounded by [`LEADER_WAIT_MAX`]) until a leader other than `tried` is known, or
/// `tried` again in a term after `term` (it was re-elected), and answers the leader known
/// then, if any; on timeout that may be `tried` still.
async fn next_leader(raft: &Raft, tried: Option<u64>, term: u64) -> Option<u64> {
    let changed = raft
        .wait(Some(LEADER_WAIT_MAX))
        .metrics(
            |m| {
                m.current_leader
                    .is_some_and(|l| Some(l) != tried || m.current_term > term)
            },
            "a new leader is known",
        )
        .await;
    match changed {
        Ok(m) => m.current_leader,
        Err(_) => raft.metrics().borrow().current_leader,
    }
}

/// Why asking a member gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// The request never left this node (the member has no address, or no connection to it
    /// could be opened).
    NotSent,
    /// It may have reached the member; the answer did not come back or was garbled.
    Lost,
}

/// Sends `payload` (an encoded [`RaftRequest`]) to member `to` over the peer link and decodes
/// the answer; failures are logged and sorted by whether the request may have arrived.
async fn ask_node(
    raft: &Raft,
    link: &PeerLink,
    epoch: &Epoch,
    to: u64,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<RaftResponse, Asked> {
    let addr = {
        let m = raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_node(&to)
            .map(|n| n.cluster_addr.clone())
    };
    let Some(addr) = addr else {
        tracing::debug!(to, "asking a member the membership has no address for");
        return Err(Asked::NotSent);
    };
    let req = PeerRequest {
        to,
        addr,
        payload,
        timeout,
    };
    match link.send(req).await {
        Ok(answer) => match decode_message::<RaftResponse>(&answer) {
            Ok(RaftResponse::Fenced { epoch: theirs }) => {
                // A recover dropped this node: it must stop, not retry elsewhere.
                epoch.fenced_by(theirs);
                Err(Asked::Lost)
            }
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::debug!(to, error = %e, "undecodable answer from a member");
                Err(Asked::Lost)
            }
        },
        Err(e) => {
            tracing::debug!(to, error = %e, "asking a member failed");
            Err(if e.never_sent() {
                Asked::NotSent
            } else {
                Asked::Lost
            })
        }
    }
}

/// The follower's half of [`CatchUp`]: asks the leader for its read index and waits to apply
/// that far. A read index is only a question, so when the leader cannot answer (unreachable,
/// or no longer leading) the next leader is asked once more.
async fn catch_up(raft: Raft, link: PeerLink, epoch: Epoch, me: u64) -> Result<(), ProposeError> {
    let mut leader = raft.metrics().borrow().current_leader;
    if leader.is_none() {
        leader = next_leader(&raft, None, 0).await;
    }
    let Some(first) = leader else {
        return Err(ProposeError::NotLeader { leader: None });
    };
    let term = raft.metrics().borrow().current_term;
    let failed = match read_index_at(&raft, &link, &epoch, me, first).await {
        Ok(index) => return wait_applied(&raft, index, first).await,
        Err(e) if e.is_retryable() => e,
        Err(e) => return Err(e),
    };
    let Some(next) = next_leader(&raft, Some(first), term).await else {
        return Err(failed);
    };
    tracing::debug!(first, next, error = %failed, "read index not given; asking once more");
    let index = read_index_at(&raft, &link, &epoch, me, next).await?;
    wait_applied(&raft, index, next).await
}

/// The read index of `leader`: asked locally when that is this node, else over the peer link.
async fn read_index_at(
    raft: &Raft,
    link: &PeerLink,
    epoch: &Epoch,
    me: u64,
    leader: u64,
) -> Result<u64, ProposeError> {
    if leader == me {
        return read_index(raft, me).await;
    }
    let payload = encode_request(epoch.get(), RaftRequest::ReadIndex)
        .map_err(|e| ProposeError::Fatal(e.to_string()))?;
    match ask_node(raft, link, epoch, leader, payload, READ_INDEX_WAIT_MAX).await {
        Ok(RaftResponse::ReadIndex(answer)) => answer,
        _ => Err(ProposeError::NotLeader {
            leader: Some(leader),
        }),
    }
}

/// Waits (bounded) until this node has applied up to `index`.
async fn wait_applied(raft: &Raft, index: u64, leader: u64) -> Result<(), ProposeError> {
    raft.wait(Some(READ_INDEX_WAIT_MAX))
        .applied_index_at_least(Some(index), "applied up to the leader's read index")
        .await
        .map_err(|_| ProposeError::NotLeader {
            leader: Some(leader),
        })?;
    Ok(())
}

impl RaftNode {
    /// Group commit: while one batch is in the log pipeline, proposals queue; when it lands,
    /// everything queued goes out as the next single log entry, so N concurrent writers share
    /// one append and one apply transaction.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.pending.is_empty() {
            return;
        }
        // A follower that knows the leader sends the proposals there straight away; trying
        // locally first would only be refused.
        if let Some(leader) = self.other_leader() {
            while !self.pending.is_empty() {
                let take = self.pending.len().min(BATCH_COMMANDS_MAX);
                let batch: Vec<Pending> = self.pending.drain(..take).collect();
                let e = ProposeError::NotLeader {
                    leader: Some(leader),
                };
                self.refused(e, batch, ctx);
            }
            return;
        }
        let take = self.pending.len().min(BATCH_COMMANDS_MAX);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        let cmds: Vec<Command> = batch.iter().map(|p| p.cmd.clone()).collect();
        self.in_flight = true;
        let raft = self.raft.clone();
        let write = async move { raft.client_write(Batch(cmds)).await };
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(r) => {
                    assert_eq!(r.data.len(), batch.len(), "one answer per batched command");
                    let index = r.log_id.index;
                    for (p, a) in batch.into_iter().zip(r.data) {
                        let _ = p.waiter.send(Ok((a, index)));
                    }
                }
                Err(e) => act.refused(propose_error(e), batch, ctx),
            }
            act.in_flight = false;
            act.flush(ctx);
        }));
    }
}

impl RaftNode {
    /// The leader this node knows of, when that is another node and this one can reach it.
    fn other_leader(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            Some(l) if l != self.node_id && m.state != ServerState::Leader => {
                self.link.as_ref().map(|_| l)
            }
            _ => None,
        }
    }

    /// Answers a batch this node could not commit: when it was refused because another node
    /// leads or none is known yet, proposals that may be forwarded go to the leader (see
    /// [`RaftNode::forward`]); the rest get the error.
    fn refused(&mut self, e: ProposeError, batch: Vec<Pending>, ctx: &mut Context<Self>) {
        let leader = match e {
            ProposeError::NotLeader { leader } if leader != Some(self.node_id) => Some(leader),
            _ => None,
        };
        let (local, stay): (Vec<Pending>, Vec<Pending>) = match leader {
            Some(_) if self.link.is_some() => batch.into_iter().partition(|p| p.forward),
            _ => (Vec::new(), batch),
        };
        for p in stay {
            let _ = p.waiter.send(Err(e.clone()));
        }
        let (Some(leader), false) = (leader, local.is_empty()) else {
            return;
        };
        let (cmds, waiters): (Vec<Command>, Vec<Waiter>) =
            local.into_iter().map(|p| (p.cmd, p.waiter)).unzip();
        let forward = self.forward(leader, cmds);
        ctx.spawn(
            async move {
                let results = forward.await;
                // The index only matters to proposals from peers; these were made here.
                for (w, r) in waiters.into_iter().zip(results) {
                    let _ = w.send(r.map(|a| (a, 0)));
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<GetReader> for RaftNode {
    type Result = MessageResult<GetReader>;

    fn handle(&mut self, _msg: GetReader, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.reader.clone())
    }
}

impl Handler<GetBucket> for RaftNode {
    type Result = Result<Option<BucketRecord>, ReadError>;

    fn handle(&mut self, msg: GetBucket, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<ListBuckets> for RaftNode {
    type Result = Result<Vec<BucketRecord>, ReadError>;

    fn handle(&mut self, msg: ListBuckets, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<GetObject> for RaftNode {
    type Result = Result<Option<VersionList>, ReadError>;

    fn handle(&mut self, msg: GetObject, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<ListObjects> for RaftNode {
    type Result = Result<Page<ObjectVersion>, ReadError>;

    fn handle(&mut self, msg: ListObjects, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<GetUpload> for RaftNode {
    type Result = Result<Option<Upload>, ReadError>;

    fn handle(&mut self, msg: GetUpload, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<ListUploads> for RaftNode {
    type Result = Result<Vec<Upload>, ReadError>;

    fn handle(&mut self, msg: ListUploads, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<GetAccessKey> for RaftNode {
    type Result = Result<Option<AccessKey>, ReadError>;

    fn handle(&mut self, msg: GetAccessKey, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<ListAccessKeys> for RaftNode {
    type Result = Result<Vec<AccessKey>, ReadError>;

    fn handle(&mut self, msg: ListAccessKeys, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl RaftNode {
    /// Whether `peer` was removed from the cluster for good (`hamster remove`). Only a sender
    /// outside the membership is looked up, so members cost nothing.
    fn removed_for_good(&self, peer: u64) -> bool {
        let member = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == peer);
        !member
            && self
                .read(query::layout)
                .ok()
                .flatten()
                .is_some_and(|l| hamster_protocol::layout::is_tombstoned(Some(&l), peer))
    }
}

impl Handler<CountStored> for RaftNode {
    type Result = Result<u64, ReadError>;

    fn handle(&mut self, _msg: CountStored, _ctx: &mut Self::Context) -> Self::Result {
        self.read(query::stored_counts)
    }
}

impl Handler<GetLayout> for RaftNode {
    type Result = Result<Option<Layout>, ReadError>;

    fn handle(&mut self, msg: GetLayout, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<GetScrub> for RaftNode {
    type Result = Result<hamster_protocol::scrub::ScrubState, ReadError>;

    fn handle(&mut self, msg: GetScrub, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<StaleNodes> for RaftNode {
    type Result = Result<Vec<u64>, ReadError>;

    fn handle(&mut self, _msg: StaleNodes, _ctx: &mut Self::Context) -> Self::Result {
        self.read(query::stale_nodes)
    }
}

impl Handler<StalePage> for RaftNode {
    type Result = Result<Vec<StaleShard>, ReadError>;

    fn handle(&mut self, msg: StalePage, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| query::stale_page(db, txn, msg.node, msg.after.as_ref(), msg.limit))
    }
}

impl Handler<StaleCount> for RaftNode {
    type Result = Result<u64, ReadError>;

    fn handle(&mut self, _msg: StaleCount, _ctx: &mut Self::Context) -> Self::Result {
        self.read(query::stale_count)
    }
}

impl Handler<RevisitPage> for RaftNode {
    type Result = Result<Vec<(u64, Revisit)>, ReadError>;

    fn handle(&mut self, msg: RevisitPage, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| query::revisit_page(db, txn, msg.after, msg.limit))
    }
}

impl Handler<GetAdmitted> for RaftNode {
    type Result = Result<BTreeMap<u64, NodeInfo>, ReadError>;

    fn handle(&mut self, msg: GetAdmitted, _ctx: &mut Self::Context) -> Self::Result {
        self.read(|db, txn| msg.read_in(db, txn))
    }
}

impl Handler<ReferencedObjects> for RaftNode {
    type Result = Result<BTreeSet<ObjectId>, ReadError>;

    fn handle(&mut self, _msg: ReferencedObjects, _ctx: &mut Self::Context) -> Self::Result {
        self.read(query::referenced_objects)
    }
}

impl Handler<OpenFreedQueue> for RaftNode {
    type Result = Result<super::freed::FreedQueue, ReadError>;

    fn handle(&mut self, _msg: OpenFreedQueue, _ctx: &mut Self::Context) -> Self::Result {
        let db = self.db.as_ref().ok_or(ReadError::Closed)?;
        Ok(super::freed::FreedQueue::new(db.clone()))
    }
}

impl Handler<RaftStatus> for RaftNode {
    type Result = ResponseFuture<RaftStatusReport>;

    fn handle(&mut self, _msg: RaftStatus, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        let node_id = self.node_id;
        Box::pin(async move {
            let m = raft.metrics().borrow().clone();
            let applied_index = m.last_applied.map_or(0, |l| l.index);
            let commit_index = raft
                .with_raft_state(|st| st.committed.map_or(0, |l| l.index))
                .await
                .unwrap_or(applied_index);
            let membership = m.membership_config.membership();
            let node_of = |id: u64| (id, membership.get_node(&id).cloned().unwrap_or_default());
            RaftStatusReport {
                node_id,
                term: m.current_term,
                leader: m.current_leader,
                commit_index,
                applied_index,
                last_log_index: m.last_log_index.unwrap_or(0),
                voters: membership.voter_ids().map(node_of).collect(),
                learners: membership.learner_ids().map(node_of).collect(),
                state: format!("{:?}", m.state),
            }
        })
    }
}

impl Handler<ReadyProbe> for RaftNode {
    type Result = ResponseFuture<MetaFacts>;

    fn handle(&mut self, _msg: ReadyProbe, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        let link = self.link.clone();
        let epoch = self.epoch.clone();
        let me = self.node_id;
        Box::pin(async move {
            let metrics = raft.metrics();
            let running = core_running(&metrics);
            let (leader, applied_index) = {
                let m = metrics.borrow();
                (m.current_leader, m.last_applied.map_or(0, |l| l.index))
            };
            let confirm = async {
                match (leader, &link) {
                    (Some(l), _) if l == me => read_index(&raft, me).await.ok(),
                    (Some(l), Some(link)) => read_index_at(&raft, link, &epoch, me, l).await.ok(),
                    _ => None,
                }
            };
            let leader_commit_index = if running {
                tokio::time::timeout(READY_CONFIRM_WAIT_MAX, confirm)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            MetaFacts {
                core_running: running,
                leader,
                applied_index,
                leader_commit_index,
            }
        })
    }
}

impl Handler<CoreRunning> for RaftNode {
    type Result = bool;

    fn handle(&mut self, _msg: CoreRunning, _ctx: &mut Self::Context) -> bool {
        core_running(&self.raft.metrics())
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<PanicCoreOnNextAppend> for RaftNode {
    type Result = ();

    fn handle(&mut self, _msg: PanicCoreOnNextAppend, _ctx: &mut Self::Context) {
        tracing::warn!("fault injection: the metadata core panics on its next log append");
        self.panic_switch
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Handler<WatchMetrics> for RaftNode {
    type Result = MessageResult<WatchMetrics>;

    fn handle(&mut self, _msg: WatchMetrics, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.raft.metrics())
    }
}

impl Handler<CatchUp> for RaftNode {
    type Result = ResponseFuture<Result<(), ProposeError>>;

    fn handle(&mut self, _msg: CatchUp, ctx: &mut Self::Context) -> Self::Result {
        // Without peers this node is the whole group. Everywhere else, even on the leader, a
        // read waits for a round: a leader cut off from the others may have been deposed
        // without knowing it, and must not answer from its stale state.
        if self.link.is_none() {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.catch_up_waiting.push(tx);
        self.catch_up_round(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(ProposeError::Stopping)) })
    }
}

impl RaftNode {
    /// Read-index rounds, batched like proposals: reads that arrive while a round is out wait
    /// for the next one (an index asked before a read arrived would not cover writes
    /// acknowledged just before it), and one round answers every read that waited for it.
    fn catch_up_round(&mut self, ctx: &mut Context<Self>) {
        if self.catch_up_in_flight || self.catch_up_waiting.is_empty() {
            return;
        }
        let Some(link) = self.link.clone() else {
            return;
        };
        let waiting = std::mem::take(&mut self.catch_up_waiting);
        self.catch_up_in_flight = true;
        let round = catch_up(self.raft.clone(), link, self.epoch.clone(), self.node_id);
        ctx.spawn(round.into_actor(self).map(move |result, act, ctx| {
            for w in waiting {
                let _ = w.send(result.clone());
            }
            act.catch_up_in_flight = false;
            act.catch_up_round(ctx);
        }));
    }
}

impl Handler<MembershipView> for RaftNode {
    type Result = ResponseFuture<Option<Situation>>;

    fn handle(&mut self, _msg: MembershipView, _ctx: &mut Self::Context) -> Self::Result {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(self.node_id) {
            self.leading_since = None;
            return Box::pin(async { None });
        }
        let now = Instant::now();
        let since = match self.leading_since {
            Some((term, at)) if term == m.current_term => at,
            _ => {
                self.leading_since = Some((m.current_term, now));
                now
            }
        };
        let admitted = self.read(query::admitted);
        let admitted = match admitted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read admitted nodes");
                return Box::pin(async { None });
            }
        };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, info)| {
                let silent_ms = if *id == self.node_id {
                    0
                } else {
                    let heard = self
                        .liveness
                        .last_heard(*id)
                        .map_or(since, |t| t.max(since));
                    u64::try_from(now.saturating_duration_since(heard).as_millis())
                        .unwrap_or(u64::MAX)
                };
                let matched = if *id == self.node_id {
                    m.last_log_index
                } else {
                    matched.get(id).copied().flatten().map(|l| l.index)
                };
                let view = MemberView {
                    info: info.clone(),
                    voter: voters.contains(id),
                    matched,
                    silent_ms,
                };
                (*id, view)
            })
            .collect();
        let situation = Situation {
            leader: self.node_id,
            last_log_index: m.last_log_index.unwrap_or(0),
            members,
            admitted,
        };
        Box::pin(async move { Some(situation) })
    }
}

impl Handler<TakeSnapshot> for RaftNode {
    type Result = ResponseFuture<Result<u64, ProposeError>>;

    fn handle(&mut self, _msg: TakeSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            raft.trigger().snapshot().await.map_err(|f| match f {
                Fatal::Stopped => ProposeError::Stopping,
                f => ProposeError::Fatal(f.to_string()),
            })?;
            let m = raft
                .wait(Some(SNAPSHOT_WAIT_MAX))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "snapshot built",
                )
                .await
                .map_err(|e| ProposeError::Fatal(e.to_string()))?;
            Ok(m.snapshot.map_or(0, |s| s.index))
        })
    }
}

impl Handler<CompactLog> for RaftNode {
    type Result = ResponseActFuture<Self, Result<u64, ProposeError>>;

    fn handle(&mut self, _msg: CompactLog, ctx: &mut Self::Context) -> Self::Result {
        let snapshot = <Self as Handler<TakeSnapshot>>::handle(self, TakeSnapshot, ctx);
        let raft = self.raft.clone();
        let purge = async move {
            let upto = snapshot.await?;
            raft.trigger().purge_log(upto).await.map_err(|f| match f {
                Fatal::Stopped => ProposeError::Stopping,
                f => ProposeError::Fatal(f.to_string()),
            })?;
            let m = raft
                .wait(Some(SNAPSHOT_WAIT_MAX))
                .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "log purged")
                .await
                .map_err(|e| ProposeError::Fatal(e.to_string()))?;
            Ok(m.purged.map_or(0, |p| p.index))
        };
        Box::pin(purge.into_actor(self))
    }
}

impl Handler<Shutdown> for RaftNode {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        let stop_raft = async move {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "metadata Raft did not stop cleanly");
            }
        };
        Box::pin(stop_raft.into_actor(self).then(|_, act, _ctx| {
            act.reader.close();
            let closing = act.db.take().map(MetaDb::into_closing_event);
            wait_closed(closing)
                .into_actor(act)
                .map(|_, _act, ctx| ctx.stop())
        }))
    }
}

/// Waits (bounded) until LMDB has closed the environment, polling so that the actor's thread
/// is never blocked.
async fn wait_closed(closing: Option<heed::EnvClosingEvent>) {
    let Some(event) = closing else { return };
    let mut waited = Duration::ZERO;
    while !event.wait_timeout(Duration::ZERO) {
        if waited >= CLOSE_WAIT_MAX {
            tracing::warn!("metadata store still open after shutdown");
            return;
        }
        tokio::time::sleep(CLOSE_POLL).await;
        waited += CLOSE_POLL;
    }
}

fn membership_error(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MembershipError::Refused(e.to_string())
        }
        RaftError::Fatal(f) => MembershipError::Fatal(f.to_string()),
    }
}

impl Handler<AddLearner> for RaftNode {
    type Result = ResponseFuture<Result<(), MembershipError>>;

    fn handle(&mut self, msg: AddLearner, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            let add = raft.add_learner(msg.id, msg.node, false);
            match tokio::time::timeout(MEMBERSHIP_WAIT_MAX, add).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(membership_error(e)),
                Err(_) => Err(MembershipError::Timeout),
            }
        })
    }
}

impl Handler<AdoptEpoch> for RaftNode {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: AdoptEpoch, _ctx: &mut Self::Context) -> Self::Result {
        self.epoch.adopt(msg.0).map_err(|e| e.to_string())
    }
}

impl Handler<RemoveMember> for RaftNode {
    type Result = ResponseFuture<Result<(), MembershipError>>;

    fn handle(&mut self, msg: RemoveMember, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            let membership = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .clone();
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            let change = if voters.contains(&msg.id) {
                let rest: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != msg.id).collect();
                if rest.is_empty() {
                    return Err(MembershipError::Refused(
                        "the group's only voter cannot be removed".into(),
                    ));
                }
                openraft::ChangeMembers::ReplaceAllVoters(rest)
            } else {
                openraft::ChangeMembers::RemoveNodes(BTreeSet::from([msg.id]))
            };
            // `retain = false`: a removed voter does not stay on as a learner.
            let change = raft.change_membership(change, false);
            match tokio::time::timeout(MEMBERSHIP_WAIT_MAX, change).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(membership_error(e)),
                Err(_) => Err(MembershipError::Timeout),
            }
        })
    }
}

impl Handler<ChangeMembership> for RaftNode {
    type Result = ResponseFuture<Result<(), MembershipError>>;

    fn handle(&mut self, msg: ChangeMembership, _ctx: &mut Self::Context) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            // Voters left out stay learners: a member the steward replaced can come back.
            let change = raft.change_membership(msg.voters, true);
            match tokio::time::timeout(MEMBERSHIP_WAIT_MAX, change).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(membership_error(e)),
                Err(_) => Err(MembershipError::Timeout),
            }
        })
    }
}

/// The leader's commit index for a follower's read; the follower serves the read once it has
/// applied this far. Every write acknowledged anywhere was committed at or below it.
/// The leader's read index: the index a read must wait to have applied. The leader first
/// confirms with a quorum that it still leads (a heartbeat round), so a leader that was
/// deposed behind a partition refuses instead of answering with a stale index.
async fn read_index(raft: &Raft, me: u64) -> Result<u64, ProposeError> {
    let leader = raft.metrics().borrow().current_leader;
    if leader != Some(me) {
        return Err(ProposeError::NotLeader { leader });
    }
    match tokio::time::timeout(READ_INDEX_WAIT_MAX, raft.get_read_log_id()).await {
        Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |l| l.index)),
        Ok(Err(RaftError::Fatal(_))) => Err(ProposeError::Stopping),
        Ok(Err(RaftError::APIError(_))) | Err(_) => Err(ProposeError::NotLeader { leader: None }),
    }
}

impl Handler<RaftRpc> for RaftNode {
    type Result = ResponseFuture<RaftResponse>;

    fn handle(&mut self, msg: RaftRpc, ctx: &mut Self::Context) -> Self::Result {
        if let Admission::Fence { ours } = self.epoch.admit(msg.epoch) {
            return Box::pin(async move { RaftResponse::Fenced { epoch: ours } });
        }
        if self.removed_for_good(msg.from) {
            return Box::pin(async { RaftResponse::Removed });
        }
        let raft = self.raft.clone();
        let msg = msg.request;
        if let RaftRequest::ReadIndex = msg {
            let me = self.node_id;
            return Box::pin(async move { RaftResponse::ReadIndex(read_index(&raft, me).await) });
        }
        if let RaftRequest::Propose(cmds) = msg {
            let answers: Vec<_> = cmds
                .into_iter()
                .map(|cmd| self.enqueue(cmd, false, ctx))
                .collect();
            return Box::pin(async move {
                let mut results = Vec::with_capacity(answers.len());
                let mut log_index = 0;
                for answer in answers {
                    results.push(answer.await.map(|(a, index)| {
                        log_index = log_index.max(index);
                        a
                    }));
                }
                RaftResponse::Proposed(Proposed { results, log_index })
            });
        }
        Box::pin(async move {
            match msg {
                RaftRequest::AppendEntries(r) => {
                    RaftResponse::AppendEntries(raft.append_entries(r).await)
                }
                RaftRequest::Vote(r) => RaftResponse::Vote(raft.vote(r).await),
                RaftRequest::InstallSnapshot(r) => {
                    RaftResponse::InstallSnapshot(raft.install_snapshot(r).await)
                }
                RaftRequest::Propose(_) | RaftRequest::ReadIndex => RaftResponse::Refused {
                    message: "answered above".into(),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small states snapshot every 64 MiB of log, large ones once the log reached half their
    /// size, and no state waits for more than 1 GiB of log.
    #[test]
    fn snapshots_follow_the_log_bytes() {
        assert!(!snapshot_due(SNAPSHOT_LOG_BYTES_MIN - 1, 0));
        assert!(snapshot_due(SNAPSHOT_LOG_BYTES_MIN, 10 << 20));
        let state = 600 << 20;
        assert!(!snapshot_due(state / 2 - 1, state));
        assert!(snapshot_due(state / 2, state));
        assert!(snapshot_due(SNAPSHOT_LOG_BYTES_MAX, 40 << 30));
        assert!(!snapshot_due(SNAPSHOT_LOG_BYTES_MAX - 1, 40 << 30));
    }
}
