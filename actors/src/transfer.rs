//! The shard service: this node's side of the shard protocol ([`ALPN_SHARD`]). Other nodes (and
//! this node's own data plane, through [`ShardService::handle`]) write, read, verify and delete
//! the shard files of [`ShardStore`] with it.
//!
//! A write arrives as a sequence of blocks under a transfer id. The unfinished shard lives in a
//! session keyed by (sender, transfer); a session left idle for [`SESSION_IDLE_MAX`] is dropped,
//! which removes its temp file, so a sender that died mid-write leaves nothing behind. Blocks
//! are accepted strictly in order; a repeated block or finish (a retransmission) is answered
//! again without writing twice.
//!
//! Until [`ShardService::set_ready`] (the node is assembled) writes are refused with
//! [`ShardFailure::NotReady`]. The start-up orphan sweep runs while writes go on: the
//! [`SweepFence`] given with [`ShardService::set_fence`] notes every body a write starts on, so
//! the sweep spares it, and refuses (also with `NotReady`) a write of a body the sweep is
//! deleting, so the sweep never races a shard that is still being committed.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hamster_protocol::meta::ObjectId;
use hamster_protocol::transfer::{
    decode_message, encode_message, ShardFailure, ShardName, ShardRequest, ShardResponse,
};
use hamster_protocol::wire::{encode_frame, FRAME_BYTES_MAX};
use tokio::time::Instant;
use tracing::debug;

use crate::control::{read_frame, write_frame, ClusterStream, ProtocolHandler};
use crate::peer::parse_node_id;
use crate::raft::types::NodeId;
use crate::reclaim::SweepFence;
use crate::s3::Offload;
use crate::shards::{ShardError, ShardStore, ShardWriter};

/// How long an unfinished write may sit without a block before it is dropped.
pub const SESSION_IDLE_MAX: Duration = Duration::from_secs(60);

/// How many finished transfers are remembered to answer a retransmitted finish.
const FINISHED_REMEMBERED: usize = 4096;

/// How long a shard connection may sit idle before the server closes it.
const SHARD_IDLE_MS_MAX: u64 = 120_000;

/// The bytes a read may ask for in one request: below the frame limit with room for the head.
pub const READ_BYTES_MAX: u32 = (FRAME_BYTES_MAX / 2) as u32;

type SessionKey = (NodeId, u64);

enum Session {
    /// Waiting for block `next_seq`.
    Idle {
        writer: Box<ShardWriter>,
        next_seq: u64,
        touched: Instant,
    },
    /// A block is being written; `next_seq` is the one after it.
    Busy { next_seq: u64 },
}

struct Inner {
    shards: Arc<ShardStore>,
    offload: Offload,
    ready: AtomicBool,
    /// This node's free-space view: new shard writes are refused while it is low.
    space: std::sync::OnceLock<crate::space::Space>,
    /// Nodes removed from the cluster for good, whose connections are refused.
    removed: std::sync::OnceLock<crate::layout::Removed>,
    /// What this start's orphan sweep lets new writes do (see [`SweepFence`]).
    fence: std::sync::OnceLock<SweepFence>,
    sessions: Mutex<BTreeMap<SessionKey, Session>>,
    /// Answers of recently finished transfers, oldest first.
    finished: Mutex<VecDeque<(SessionKey, ShardResponse)>>,
    /// Shard reads and writes being answered now: the load a sweep's checks give way to.
    busy: std::sync::atomic::AtomicUsize,
}

/// Reads and writes in flight above which a shard check (a sweep's `Verify`) waits: hashing a
/// whole shard competes for the disk and the CPU with the requests clients are waiting for.
const VERIFY_YIELD_BUSY: usize = 2;
/// How long a check waits for the load to fall before it goes ahead anyway (a node that is
/// never idle is still checked, slowly).
const VERIFY_YIELD_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a waiting check looks at the load again.
const VERIFY_YIELD_STEP: std::time::Duration = std::time::Duration::from_millis(10);

/// One read or write counted in [`Inner::busy`] until dropped.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Busy<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A cheap clonable handle on this node's shard service.
#[derive(Clone)]
pub struct ShardService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShardService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardService")
            .field("ready", &self.inner.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn failed(failure: ShardFailure, message: impl Into<String>) -> ShardResponse {
    ShardResponse::Failed {
        failure,
        message: message.into(),
    }
}

fn io_failure(e: &io::Error) -> ShardResponse {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
        failed(ShardFailure::Full, "the disk is full")
    } else {
        failed(ShardFailure::Io, e.to_string())
    }
}

fn read_failure(e: &ShardError) -> ShardResponse {
    match e {
        ShardError::NotFound => failed(ShardFailure::NotFound, "no such shard here"),
        ShardError::Io(e) => io_failure(e),
        ShardError::RangeOutOfBounds => failed(ShardFailure::Refused, e.to_string()),
        ShardError::Format(_)
        | ShardError::Corrupt { .. }
        | ShardError::LengthMismatch { .. }
        | ShardError::HashMismatch => failed(ShardFailure::Corrupt, e.to_string()),
    }
}

impl ShardService {
    /// A service over `shards`, refusing writes until [`ShardService::set_ready`].
    pub fn new(shards: Arc<ShardStore>, offload: Offload) -> Self {
        ShardService {
            inner: Arc::new(Inner {
                shards,
                offload,
                ready: AtomicBool::new(false),
                space: std::sync::OnceLock::new(),
                removed: std::sync::OnceLock::new(),
                fence: std::sync::OnceLock::new(),
                sessions: Mutex::new(BTreeMap::new()),
                finished: Mutex::new(VecDeque::new()),
                busy: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Refuses new shard writes while `space` is below its reserve (set once, at start).
    pub fn set_space(&self, space: crate::space::Space) {
        let _ = self.inner.space.set(space);
    }

    /// Refuses connections from the nodes `removed` lists (kept current by the layout manager).
    pub fn set_removed(&self, removed: crate::layout::Removed) {
        let _ = self.inner.removed.set(removed);
    }

    /// Lets `fence` note and hold back new writes for this start's orphan sweep (set once,
    /// before [`ShardService::set_ready`]).
    pub fn set_fence(&self, fence: SweepFence) {
        let _ = self.inner.fence.set(fence);
    }

    /// Whether `peer` was removed from the cluster for good.
    fn refuses(&self, peer: u64) -> bool {
        self.inner.removed.get().is_some_and(|r| r.contains(peer))
    }

    /// Starts taking writes.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::SeqCst);
    }

    /// The shard files behind the service.
    pub fn store(&self) -> &Arc<ShardStore> {
        &self.inner.shards
    }

    /// Answers one encoded request from `peer` with one frame (header and payload).
    pub async fn answer_frame(&self, peer: NodeId, payload: &[u8]) -> Option<Vec<u8>> {
        let (response, body) = match decode_message::<ShardRequest>(payload) {
            Ok((request, body)) => self.handle(peer, request, body.to_vec()).await,
            Err(e) => (failed(ShardFailure::Refused, e.to_string()), Vec::new()),
        };
        let payload = match encode_message(&response, &body) {
            Ok(p) => p,
            Err(e) => {
                debug!(peer, error = %e, "shard: cannot encode the answer");
                return None;
            }
        };
        encode_frame(&payload).ok()
    }

    /// Answers one request from `peer` (another node, or this one): the answer and its body.
    pub async fn handle(
        &self,
        peer: NodeId,
        request: ShardRequest,
        body: Vec<u8>,
    ) -> (ShardResponse, Vec<u8>) {
        match request {
            ShardRequest::Write {
                transfer,
                seq,
                name,
                k,
                m,
                block_bytes,
                finish,
            } => {
                let key = (peer, transfer);
                let open = OpenArgs {
                    name,
                    k,
                    m,
                    block_bytes,
                };
                let _busy = Busy::new(&self.inner.busy);
                (self.write(key, seq, open, finish, body).await, Vec::new())
            }
            ShardRequest::Abort { transfer } => {
                let dropped = self
                    .inner
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .remove(&(peer, transfer));
                if let Some(Session::Idle { writer, .. }) = dropped {
                    // Dropping removes the temp file: blocking work.
                    let _ = self.inner.offload.run(move || drop(writer)).await;
                }
                (ShardResponse::Aborted, Vec::new())
            }
            ShardRequest::Read {
                name,
                blake3,
                offset,
                len,
            } => {
                let _busy = Busy::new(&self.inner.busy);
                self.read(name, blake3, offset, len).await
            }
            ShardRequest::Verify { name, blake3 } => {
                self.yield_to_load().await;
                (self.verify(name, blake3).await, Vec::new())
            }
            ShardRequest::Delete { ids } => (self.delete(ids).await, Vec::new()),
            ShardRequest::DeleteShard { name } => (self.delete_shard(name).await, Vec::new()),
        }
    }

    async fn write(
        &self,
        key: SessionKey,
        seq: u64,
        open: OpenArgs,
        finish: bool,
        body: Vec<u8>,
    ) -> ShardResponse {
        if !self.inner.ready.load(Ordering::SeqCst) {
            return failed(ShardFailure::NotReady, "this node is still starting");
        }
        let writer = match self.take_session(key, seq) {
            Taken::Writer(w) => Some(w),
            Taken::Fresh => {
                // A shard already being written finishes; a new one is not started on a disk
                // below its reserve (the coordinator names this node in its refusal).
                if self.inner.space.get().is_some_and(|s| s.measure_now()) {
                    return failed(
                        ShardFailure::Full,
                        "this node's disk is below its free-space reserve (--min-free)",
                    );
                }
                if !self
                    .inner
                    .fence
                    .get()
                    .is_none_or(|f| f.admit(&open.name.id))
                {
                    return failed(
                        ShardFailure::NotReady,
                        "this node is removing the shards of this body as orphans",
                    );
                }
                None
            }
            Taken::Answer(a) => return a,
        };
        let shards = self.inner.shards.clone();
        let work = move || -> io::Result<(Option<Box<ShardWriter>>, ShardResponse)> {
            let mut writer = match writer {
                Some(w) => w,
                None => Box::new(shards.create(
                    open.name.id,
                    open.name.part,
                    open.name.index,
                    open.k,
                    open.m,
                    open.block_bytes,
                )?),
            };
            writer.write(&body)?;
            if !finish {
                return Ok((Some(writer), ShardResponse::Written));
            }
            let info = (*writer).finish()?;
            Ok((
                None,
                ShardResponse::Finished {
                    data_len: info.data_len,
                    blake3: info.blake3_hex,
                    file_bytes: info.file_bytes,
                },
            ))
        };
        let outcome = self
            .inner
            .offload
            .run(work)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the blocking pool dropped the write")));
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        match outcome {
            Ok((Some(writer), answer)) => {
                sessions.insert(
                    key,
                    Session::Idle {
                        writer,
                        next_seq: seq + 1,
                        touched: Instant::now(),
                    },
                );
                answer
            }
            Ok((None, answer)) => {
                sessions.remove(&key);
                drop(sessions);
                let mut done = self.inner.finished.lock().expect("finished lock");
                if done.len() >= FINISHED_REMEMBERED {
                    done.pop_front();
                }
                done.push_back((key, answer.clone()));
                answer
            }
            Err(e) => {
                // The writer (if any) was dropped with its temp file; the transfer is over.
                sessions.remove(&key);
                io_failure(&e)
            }
        }
    }

    /// Claims the session for block `seq`, or says how to answer without writing.
    fn take_session(&self, key: SessionKey, seq: u64) -> Taken {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        // Writes whose sender went quiet are dropped (their temp files with them).
        sessions.retain(|_, s| match s {
            Session::Idle { touched, .. } => now.duration_since(*touched) < SESSION_IDLE_MAX,
            Session::Busy { .. } => true,
        });
        match sessions.remove(&key) {
            None if seq == 0 => {
                sessions.insert(key, Session::Busy { next_seq: 1 });
                Taken::Fresh
            }
            None => {
                drop(sessions);
                let done = self.inner.finished.lock().expect("finished lock");
                match done.iter().rev().find(|(k, _)| *k == key) {
                    Some((_, answer)) => Taken::Answer(answer.clone()),
                    None => Taken::Answer(failed(
                        ShardFailure::NotFound,
                        "no such transfer (dropped after idling, or never started)",
                    )),
                }
            }
            Some(Session::Idle {
                writer, next_seq, ..
            }) if next_seq == seq => {
                sessions.insert(key, Session::Busy { next_seq: seq + 1 });
                Taken::Writer(writer)
            }
            Some(s) => {
                let next_seq = match &s {
                    Session::Idle { next_seq, .. } | Session::Busy { next_seq } => *next_seq,
                };
                sessions.insert(key, s);
                if seq + 1 == next_seq {
                    Taken::Answer(ShardResponse::Written)
                } else {
                    Taken::Answer(failed(
                        ShardFailure::Refused,
                        format!("block {seq} is out of order; expected {next_seq}"),
                    ))
                }
            }
        }
    }

    async fn read(
        &self,
        name: ShardName,
        blake3: String,
        offset: u64,
        len: u32,
    ) -> (ShardResponse, Vec<u8>) {
        if len > READ_BYTES_MAX {
            return (
                failed(ShardFailure::Refused, "read larger than one frame"),
                Vec::new(),
            );
        }
        let shards = self.inner.shards.clone();
        let work = move || -> Result<Vec<u8>, ShardError> {
            let mut reader = shards.open_reader(&name.id, name.part, name.index)?;
            if reader.header().blake3_hex() != blake3 {
                return Err(ShardError::HashMismatch);
            }
            let mut out = Vec::with_capacity(len as usize);
            reader.read_range(offset, u64::from(len), &mut out)?;
            Ok(out)
        };
        match self.inner.offload.run(work).await {
            Ok(Ok(data)) => (ShardResponse::Data, data),
            Ok(Err(e)) => (read_failure(&e), Vec::new()),
            Err(_) => (
                failed(ShardFailure::Io, "the blocking pool dropped the read"),
                Vec::new(),
            ),
        }
    }

    /// Waits, up to [`VERIFY_YIELD_MAX`], while this node answers more than
    /// [`VERIFY_YIELD_BUSY`] shard reads and writes: the scrubber, driven from the leader,
    /// gives way to client load on every home this way, not only on the leader.
    async fn yield_to_load(&self) {
        let mut waited = std::time::Duration::ZERO;
        while self.inner.busy.load(Ordering::SeqCst) > VERIFY_YIELD_BUSY
            && waited < VERIFY_YIELD_MAX
        {
            tokio::time::sleep(VERIFY_YIELD_STEP).await;
            waited += VERIFY_YIELD_STEP;
        }
    }

    async fn verify(&self, name: ShardName, blake3: String) -> ShardResponse {
        let shards = self.inner.shards.clone();
        let work = move || -> Result<(), ShardError> {
            let mut reader = shards.open_reader(&name.id, name.part, name.index)?;
            if reader.header().blake3_hex() != blake3 {
                return Err(ShardError::HashMismatch);
            }
            reader.verify_all()
        };
        match self.inner.offload.run(work).await {
            Ok(Ok(())) => ShardResponse::Verified,
            Ok(Err(e)) => read_failure(&e),
            Err(_) => failed(ShardFailure::Io, "the blocking pool dropped the check"),
        }
    }

    async fn delete(&self, ids: Vec<ObjectId>) -> ShardResponse {
        let shards = self.inner.shards.clone();
        let work = move || -> io::Result<u64> {
            let mut count = 0u64;
            for id in &ids {
                count += shards.delete_object(id)? as u64;
            }
            Ok(count)
        };
        match self.inner.offload.run(work).await {
            Ok(Ok(count)) => ShardResponse::Deleted { count },
            Ok(Err(e)) => io_failure(&e),
            Err(_) => failed(ShardFailure::Io, "the blocking pool dropped the delete"),
        }
    }
}

impl ShardService {
    async fn delete_shard(&self, name: ShardName) -> ShardResponse {
        let shards = self.inner.shards.clone();
        let work = move || shards.delete_shard(&name.id, name.part, name.index);
        match self.inner.offload.run(work).await {
            Ok(Ok(found)) => ShardResponse::Deleted {
                count: u64::from(found),
            },
            Ok(Err(e)) => io_failure(&e),
            Err(_) => failed(ShardFailure::Io, "the blocking pool dropped the delete"),
        }
    }
}

/// What a write needs to create its shard.
struct OpenArgs {
    name: ShardName,
    k: u8,
    m: u8,
    block_bytes: u32,
}

enum Taken {
    Writer(Box<ShardWriter>),
    Fresh,
    Answer(ShardResponse),
}

/// The cluster port's handler for [`ALPN_SHARD`]: answers shard requests from a peer.
///
/// [`ALPN_SHARD`]: hamster_protocol::wire::ALPN_SHARD
pub fn shard_protocol(service: ShardService) -> ProtocolHandler {
    Arc::new(move |stream, peer| Box::pin(serve_shards(stream, peer, service.clone())))
}

/// Answers requests on one connection until the peer closes it, goes idle, or breaks framing.
async fn serve_shards(mut stream: ClusterStream, peer: String, service: ShardService) {
    let Some(peer_id) = parse_node_id(&peer) else {
        debug!(%peer, "shard: certificate node id is not a number; closing");
        return;
    };
    if service.refuses(peer_id) {
        debug!(%peer, "shard: refusing a node removed from the cluster");
        return;
    }
    loop {
        let payload = match read_frame(&mut stream, SHARD_IDLE_MS_MAX).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(e) => {
                debug!(%peer, error = %e, "shard: connection ended");
                return;
            }
        };
        let Some(frame) = service.answer_frame(peer_id, &payload).await else {
            return;
        };
        if let Err(e) = write_frame(&mut stream, &frame).await {
            debug!(%peer, error = %e, "shard: cannot send the answer");
            return;
        }
    }
}
