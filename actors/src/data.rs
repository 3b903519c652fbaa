//! The data plane seen from the node that took an S3 request (DESIGN §5): it places each part's
//! `k + m` shards on distinct nodes, codes the body stripe by stripe and streams the chunks to
//! their homes with a bounded window, applies the write-ack rule, and reads parts back from any
//! `k` verified shards. Object bytes travel only between this node and the shard homes, never
//! through the leader or the Raft log (INV-1); the caller commits the metadata afterwards.
//!
//! - Placement comes from the cluster's layout (`protocol::placement`) and is recorded in the
//!   part's metadata (`PartLayout::homes`), so a part stays readable however the cluster changes.
//! - Writes: each shard has its own sender task fed through a channel of [`WINDOW_BLOCKS`]
//!   chunks, so memory per request is bounded by `(k + m) × window × block` whatever the size.
//!   A home known to be down is not tried.
//! - Down knowledge comes from the node's liveness detector ([`crate::liveness`]): every shard
//!   request reports its outcome there, the detector decides, and its probes are this plane's
//!   cheap shard request, so client writes never serve as the probe. New parts are placed over
//!   the nodes not known down whenever there are enough of them for all `k + m` shards; the
//!   homes used are recorded in the part.
//! - Warnings a request can cause (a shard not stored, a slice that failed) are rate-limited
//!   ([`crate::throttle`]): with a home down they would otherwise come once per request.
//! - The ack rule (INV-2): all `k + m` shards durable is the healthy path; fewer is accepted
//!   down to the profile's floor (`k + 1`, or all shards for 1+0 and 1+1); below it the write is
//!   refused with `503 SlowDown`, its shards are deleted, and nothing becomes visible.
//! - Reads fetch only the data-shard slices that cover the range; a slice that fails (missing,
//!   corrupt, unreachable) switches that stripe to decoding from any `k` verified chunks (INV-5:
//!   every chunk is checked against the replicated BLAKE3 and its block CRCs before use).

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::Addr;
use futures_util::future::{join_all, BoxFuture};
use hamster_protocol::meta::{NodeInfo, ObjectId, PartLayout};
use hamster_protocol::placement::{self, Layout, Profile};
use hamster_protocol::s3err::S3ErrorCode;
use hamster_protocol::stripe::{Coder, Geometry};
use hamster_protocol::transfer::{
    decode_message, encode_message, ShardFailure, ShardName, ShardRequest, ShardResponse,
};
use openraft::RaftMetrics;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::clock::IdSource;
use crate::liveness::{LivenessHandle, Prober};
use crate::peer::{PeerError, PeerLink, PeerRequest};
use crate::raft::node::{GetLayout, RaftNode};
use crate::raft::types::NodeId;
use crate::s3::Offload;
use crate::throttle::Throttle;
use crate::transfer::{ShardService, READ_BYTES_MAX};
use hamster_protocol::s3err::S3Error;

/// Chunks queued or in flight per shard of one write.
pub const WINDOW_BLOCKS: usize = 4;

/// How often a node known to be down is asked whether it is back (the detector's pace).
pub const PROBE_EVERY: Duration = crate::liveness::PROBE_EVERY;

/// Time allowed for one probe of a down node: short, since the probe moves no data.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a read waits for a data slice before decoding its stripe from other shards.
pub const SLOW_SLICE: Duration = Duration::from_secs(2);

/// Stripes up to this size are coded on the request's own thread.
const INLINE_CODING_BYTES: usize = 64 * 1024;

/// Time allowed for one shard request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How this node cuts parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataConfig {
    /// Bytes per chunk of a full stripe (and per block of a shard file).
    pub block_bytes: u32,
    /// Parts smaller than this are stored as replicas (k = 1).
    pub small_object_bytes: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            block_bytes: hamster_protocol::shard::BLOCK_BYTES_DEFAULT,
            small_object_bytes: placement::SMALL_OBJECT_BYTES,
        }
    }
}

/// The cluster membership as the local Raft member sees it.
pub type Members = watch::Receiver<RaftMetrics<NodeId, NodeInfo>>;

struct Inner {
    me: NodeId,
    /// The local metadata member, for the stored layout.
    raft: Addr<RaftNode>,
    service: ShardService,
    /// The shard link to other nodes; `None` on a node that has never had peers.
    link: Option<PeerLink>,
    members: Members,
    ids: Arc<IdSource>,
    offload: Offload,
    config: DataConfig,
    /// The one answer to "is node X up?".
    liveness: LivenessHandle,
    /// Shards a write could not store or stored wrong.
    warn_write: Throttle,
    /// Writes acknowledged with fewer than all shards.
    warn_degraded: Throttle,
    /// Shard slices a read could not use.
    warn_read: Throttle,
    /// Reads that found fewer than `k` verified shards.
    warn_lost: Throttle,
    /// Per-part findings of the sweeps (shards rebuilt, parts at risk): a member that comes
    /// back empty would otherwise log one line per shard it held.
    warn_sweep: Throttle,
    /// Parts a sweep of this node is verifying or rebuilding right now (see [`PartGuard`]).
    healing: std::sync::Mutex<BTreeSet<(ObjectId, u32)>>,
    /// Bodies written here with fewer than all their shards, until their write commits.
    degraded: std::sync::Mutex<BTreeSet<ObjectId>>,
    /// Keys committed with a degraded body, for this node's scrubber to heal soon.
    heal_soon: std::sync::Mutex<VecDeque<HealSoon>>,
}

/// A key whose current version was written with fewer than all its shards: the scrubber of the
/// node that wrote it rebuilds the missing shards as soon as their homes answer, rather than at
/// its next pass (which would find them too, should this note be lost with the process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealSoon {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Tries so far.
    pub tries: u32,
    /// Not before this.
    pub due: tokio::time::Instant,
}

/// The window of the sweeps' per-part lines: a few a minute are enough to see what happens;
/// the counts are in `hamster scrub` and `/metrics`.
const SWEEP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Bodies written degraded remembered until their commit; beyond it the scrubber's pass heals.
const DEGRADED_NOTED_MAX: usize = 4_096;
/// Keys on the heal-soon list at most.
pub const HEAL_SOON_MAX: usize = 4_096;
/// How long after a degraded write commits its heal is first tried (a node that just failed
/// is rarely back sooner).
const HEAL_SOON_FIRST: Duration = Duration::from_secs(2);

/// How often a sweep waiting for a part another sweep holds looks again.
const PART_CLAIM_RETRY: Duration = Duration::from_millis(20);

/// One sweep's claim on a part ([`DataPlane::claim_part`]).
pub struct PartGuard {
    plane: Arc<Inner>,
    at: (ObjectId, u32),
}

impl Drop for PartGuard {
    fn drop(&mut self) {
        self.plane
            .healing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.at);
    }
}

/// A cheap clonable handle on this node's data plane.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

/// Why a shard request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The node could not be reached (or did not answer in time).
    Unreachable(String),
    /// The node answered with a failure.
    Failed(ShardFailure, String),
    /// The node answered something that makes no sense for the request.
    Unexpected(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Failed(kind, why) => write!(f, "{kind:?}: {why}"),
            CallError::Unexpected(why) => write!(f, "unexpected answer: {why}"),
        }
    }
}

impl DataPlane {
    /// The data plane of node `me`: local shards through `service`, other nodes through `link`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeId,
        raft: Addr<RaftNode>,
        service: ShardService,
        link: Option<PeerLink>,
        members: Members,
        ids: Arc<IdSource>,
        offload: Offload,
        config: DataConfig,
        liveness: LivenessHandle,
    ) -> Self {
        let plane = DataPlane {
            inner: Arc::new(Inner {
                me,
                raft,
                service,
                link,
                members,
                ids,
                offload,
                config,
                liveness,
                warn_write: Throttle::per_minute(),
                warn_degraded: Throttle::per_minute(),
                warn_read: Throttle::per_minute(),
                warn_lost: Throttle::per_minute(),
                warn_sweep: Throttle::new(SWEEP_WARN_EVERY),
                healing: std::sync::Mutex::new(BTreeSet::new()),
                degraded: std::sync::Mutex::new(BTreeSet::new()),
                heal_soon: std::sync::Mutex::new(VecDeque::new()),
            }),
        };
        // Held weakly, so the detector stops with the plane rather than keep it alive.
        let prober = PlaneProber {
            plane: Arc::downgrade(&plane.inner),
        };
        plane.inner.liveness.set_prober(Arc::new(prober));
        plane
    }

    /// Whether to log a read that found its data unreadable now, and the note about those
    /// held back ([`Throttle::admit`]): with too many homes down every read would log one.
    pub fn admit_lost_warning(&self) -> Option<String> {
        self.inner.warn_lost.admit()
    }

    /// Claims part `part` of `body` for one sweep (repair, the scrubber, a layout walk) on this
    /// node, waiting while another sweep holds it: the second to come verifies after the first
    /// rebuilt, finds the shards good and rebuilds nothing. Released when the guard drops.
    pub async fn claim_part(&self, body: ObjectId, part: u32) -> PartGuard {
        loop {
            {
                let mut held = self.inner.healing.lock().unwrap_or_else(|e| e.into_inner());
                if held.insert((body, part)) {
                    return PartGuard {
                        plane: self.inner.clone(),
                        at: (body, part),
                    };
                }
            }
            tokio::time::sleep(PART_CLAIM_RETRY).await;
        }
    }

    /// Whether to log a sweep's per-part finding now, and the note about those held back
    /// ([`Throttle::admit`]).
    pub fn admit_sweep_warning(&self) -> Option<String> {
        self.inner.warn_sweep.admit()
    }

    /// Notes that `body` was written with fewer than all its shards (see [`HealSoon`]).
    fn note_degraded(&self, body: ObjectId) {
        let mut d = self
            .inner
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Bounded: beyond it the scrubber's pass is what heals (it finds every part).
        if d.len() < DEGRADED_NOTED_MAX {
            d.insert(body);
        }
    }

    /// Tells the plane that `bucket/key` now references `bodies` (a write committed): any of
    /// them written degraded puts the key on the heal-soon list.
    pub fn committed(&self, bucket: &str, key: &str, bodies: &[ObjectId]) {
        let hit = {
            let mut d = self
                .inner
                .degraded
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if d.is_empty() {
                return;
            }
            // Every body is taken off the list (no short cut): each is committed now.
            let mut hit = false;
            for b in bodies {
                hit |= d.remove(b);
            }
            hit
        };
        if hit {
            self.heal_later(HealSoon {
                bucket: bucket.to_string(),
                key: key.to_string(),
                tries: 0,
                due: tokio::time::Instant::now() + HEAL_SOON_FIRST,
            });
        }
    }

    /// Puts `h` (back) on the heal-soon list.
    pub fn heal_later(&self, h: HealSoon) {
        let mut q = self
            .inner
            .heal_soon
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if q.len() < HEAL_SOON_MAX {
            q.push_back(h);
        }
    }

    /// Takes up to `max` heal-soon entries that are due.
    pub fn due_heals(&self, max: usize) -> Vec<HealSoon> {
        let now = tokio::time::Instant::now();
        let mut q = self
            .inner
            .heal_soon
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(q.len());
        while let Some(h) = q.pop_front() {
            if out.len() < max && h.due <= now {
                out.push(h);
            } else {
                keep.push_back(h);
            }
        }
        *q = keep;
        out
    }

    /// Keys waiting on the heal-soon list.
    pub fn heals_waiting(&self) -> usize {
        self.inner
            .heal_soon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// This node's liveness detector.
    pub fn liveness(&self) -> &LivenessHandle {
        &self.inner.liveness
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.inner.me
    }

    /// The local shard service.
    pub fn service(&self) -> &ShardService {
        &self.inner.service
    }

    /// The layout new writes are placed by: the one stored in the metadata (only the layout
    /// manager changes it, [`crate::layout`]), or, in a new cluster's first moments before the
    /// first one is committed, every member of the metadata group with its failure domain and
    /// a weight from its capacity.
    pub async fn layout(&self) -> Layout {
        match self.inner.raft.send(GetLayout).await {
            Ok(Ok(Some(stored))) if !stored.nodes.is_empty() => stored,
            _ => self.member_layout(),
        }
    }

    /// The layout the current membership implies (version: the membership's log index).
    pub fn member_layout(&self) -> Layout {
        let metrics = self.inner.members.borrow();
        let stored = &metrics.membership_config;
        let mut layout = Layout {
            version: stored.log_id().map(|l| l.index).unwrap_or(0),
            nodes: placement::layout_nodes(
                stored
                    .nodes()
                    .map(|(id, n)| (*id, n.zone.as_str(), n.host.as_str(), n.capacity_bytes)),
            ),
            ..Layout::default()
        };
        if layout.nodes.is_empty() {
            // A member that has not loaded its membership yet stores on itself.
            layout.nodes = placement::layout_nodes([(self.inner.me, "", "", 0)]);
        }
        layout
    }

    /// Whether the liveness detector takes `node` for down (never this node).
    pub fn is_down(&self, node: NodeId) -> bool {
        self.inner.liveness.is_down(node)
    }

    /// The nodes known to be down, at one instant.
    fn down_nodes(&self) -> BTreeSet<NodeId> {
        self.inner.liveness.down_nodes()
    }

    /// Asks `node` whether its shard service is there; the outcome reaches the detector
    /// through the call itself. Aborting a transfer nobody has open touches no disk and
    /// answers at once, and any answer at all will do.
    async fn probe(&self, node: NodeId) {
        let request = ShardRequest::Abort {
            transfer: self.inner.ids.next_u64(),
        };
        let _ = self
            .call_remote(node, request, Vec::new(), PROBE_TIMEOUT)
            .await;
    }

    /// Has the detector probe every member each [`PROBE_EVERY`], so a node that dies is known
    /// down within seconds without a client write paying for the discovery. The serving node
    /// asks for it; the simulation, whose schedules must not depend on it, does not.
    pub fn watch_members(&self) {
        self.inner.liveness.probe_all_members();
    }

    /// The members other than this node.
    fn other_members(&self) -> BTreeSet<NodeId> {
        let me = self.inner.me;
        self.inner
            .members
            .borrow()
            .membership_config
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect()
    }

    /// Whether `node` is in the metadata group's membership as this node knows it.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.inner
            .members
            .borrow()
            .membership_config
            .nodes()
            .any(|(id, _)| *id == node)
    }

    /// Sends one shard request to `node` (this node is served directly) and returns the answer
    /// and its body; failures come back as [`CallError`].
    pub async fn call(
        &self,
        node: NodeId,
        request: ShardRequest,
        body: Vec<u8>,
    ) -> Result<(ShardResponse, Vec<u8>), CallError> {
        let answer = if node == self.inner.me {
            self.inner.service.handle(node, request, body).await
        } else {
            self.call_remote(node, request, body, REQUEST_TIMEOUT)
                .await?
        };
        match answer {
            (ShardResponse::Failed { failure, message }, _) => {
                Err(CallError::Failed(failure, message))
            }
            ok => Ok(ok),
        }
    }

    async fn call_remote(
        &self,
        node: NodeId,
        request: ShardRequest,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(ShardResponse, Vec<u8>), CallError> {
        let addr = self
            .inner
            .members
            .borrow()
            .membership_config
            .nodes()
            .find(|(id, _)| **id == node)
            .map(|(_, n)| n.cluster_addr.clone());
        let (Some(addr), Some(link)) = (addr, self.inner.link.as_ref()) else {
            return Err(CallError::Unreachable(format!(
                "node {node:016x} is not a member this node knows"
            )));
        };
        let payload =
            encode_message(&request, &body).map_err(|e| CallError::Unexpected(e.to_string()))?;
        let mut retried = false;
        let answer = loop {
            let sent = link
                .send(PeerRequest {
                    to: node,
                    addr: addr.clone(),
                    payload: payload.clone(),
                    timeout,
                })
                .await;
            match sent {
                Ok(answer) => break answer,
                // A pooled connection the peer dropped (it restarted) fails its first request;
                // one retry on a fresh connection tells that apart from a peer that is down.
                // Requests are safe to repeat: the shard service answers a replay again.
                Err(PeerError::Network { .. }) if !retried => retried = true,
                Err(e) => {
                    self.inner.liveness.observe_link_error(node, &e);
                    return Err(CallError::Unreachable(e.to_string()));
                }
            }
        };
        self.inner.liveness.observe(node, Ok(()));
        let (head, body) = decode_message::<ShardResponse>(&answer)
            .map_err(|e| CallError::Unexpected(e.to_string()))?;
        Ok((head, body.to_vec()))
    }

    /// Starts writing part `part` of body `id`; `size_hint` is its length when known (the
    /// declared Content-Length). Refuses at once with `SlowDown` if too few of the part's homes
    /// are up to reach the ack floor, before any byte of the body is read.
    pub async fn begin_part(
        &self,
        id: ObjectId,
        part: u32,
        size_hint: Option<u64>,
    ) -> Result<PartWriter, S3Error> {
        let layout = self.layout().await;
        // The widest profile the part can get: a small part only narrows k.
        let widest = self.profile(&layout, size_hint.unwrap_or(u64::MAX));
        let homes = self.homes(&layout, id, part, widest)?;
        let up = homes.iter().filter(|h| !self.is_down(**h)).count();
        if up < widest.ack_floor() {
            return Err(below_floor(widest, up));
        }
        let mut writer = PartWriter {
            plane: self.clone(),
            id,
            part,
            layout,
            started: None,
            coding: None,
            stripe: 0,
            buf: Vec::new(),
            received: 0,
            size_hint,
        };
        if let Some(size) = size_hint {
            writer.start(size)?;
        }
        Ok(writer)
    }

    /// The ids this node mints (object bodies, transfers).
    pub fn ids(&self) -> &Arc<IdSource> {
        &self.inner.ids
    }

    /// Chunk `stripe` of shard `index` of a part, as its home holds it (verified there against
    /// the block checksums).
    pub async fn shard_chunk(
        &self,
        body: ObjectId,
        part: &PartLayout,
        index: u16,
        stripe: u64,
    ) -> Result<Vec<u8>, CallError> {
        let geometry = Geometry::of_part(part);
        let offset = stripe * u64::from(geometry.block_bytes);
        let len = geometry.chunk_bytes(stripe);
        self.read_slice(body, part, index, offset, len).await
    }

    /// The profile of a part of `size` bytes: the ladder's, with k = 1 for a small part.
    pub fn profile(&self, layout: &Layout, size: u64) -> Profile {
        let ladder = placement::profile_for_nodes(layout.nodes.len());
        if size < self.inner.config.small_object_bytes {
            Profile { k: 1, m: ladder.m }
        } else {
            ladder
        }
    }

    /// Where the shards of a new part go. The canonical homes (placement over the whole
    /// layout) when none of them is known down; otherwise, when the nodes not known down are
    /// enough for every shard, placement over those alone, so the part gets all `k + m`
    /// shards on live nodes rather than being acknowledged at the floor (or refused) while
    /// live nodes stand idle. With fewer live nodes than shards the canonical homes stand and
    /// the ack floor decides. The profile comes from the whole layout either way.
    fn homes(
        &self,
        layout: &Layout,
        id: ObjectId,
        part: u32,
        profile: Profile,
    ) -> Result<Vec<NodeId>, S3Error> {
        let canonical = self.place(layout, id, part, profile)?;
        let mut down = self.down_nodes();
        down.remove(&self.inner.me);
        if canonical.iter().all(|h| !down.contains(h)) {
            return Ok(canonical);
        }
        let mut live = layout.clone();
        live.nodes.retain(|id, _| !down.contains(id));
        if live.nodes.len() < profile.shards() {
            return Ok(canonical);
        }
        self.place(&live, id, part, profile)
    }

    fn place(
        &self,
        layout: &Layout,
        id: ObjectId,
        part: u32,
        profile: Profile,
    ) -> Result<Vec<NodeId>, S3Error> {
        placement::place(layout, &id, part, profile.shards()).map_err(|e| {
            warn!(error = %e, "cannot place a part");
            S3Error::with_message(S3ErrorCode::SlowDown, e.to_string())
        })
    }

    /// Removes every shard of `ids` on every node of the layout, in the background and best
    /// effort: what a node misses (it is down) its start-up sweep removes later.
    pub fn discard(&self, ids: Vec<ObjectId>) {
        if ids.is_empty() {
            return;
        }
        let plane = self.clone();
        let nodes: Vec<NodeId> = self.member_layout().nodes.keys().copied().collect();
        tokio::spawn(async move {
            for node in nodes {
                let request = ShardRequest::Delete { ids: ids.clone() };
                if let Err(e) = plane.call(node, request, Vec::new()).await {
                    debug!(node, error = %e, "could not discard shards there");
                }
            }
        });
    }

    /// Reads `range` (relative to the part) of a part of `body`. `avoid` collects shards found
    /// bad so far in this read, so later stripes go straight to the survivors.
    pub async fn read_part(
        &self,
        body: ObjectId,
        part: &PartLayout,
        range: Range<u64>,
        avoid: &mut BTreeSet<u16>,
    ) -> Result<Vec<u8>, ReadError> {
        let geometry = Geometry::of_part(part);
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let s = pos / geometry.stripe_bytes();
            let stripe = geometry.stripe_range(s);
            let end = range.end.min(stripe.end);
            let got = self
                .read_in_stripe(body, part, &geometry, pos..end, avoid)
                .await?;
            if pos == range.start && end == range.end {
                // One stripe covers the whole range: no need to copy it again.
                return Ok(got);
            }
            out.extend_from_slice(&got);
            pos = end;
        }
        Ok(out)
    }

    fn home(&self, part: &PartLayout, index: u16) -> NodeId {
        self.home_of(part, usize::from(index))
    }

    /// The node holding shard `index` of `part` (this node for parts from before placement).
    pub fn home_of(&self, part: &PartLayout, index: usize) -> NodeId {
        part.homes.get(index).copied().unwrap_or(self.inner.me)
    }

    /// Whether shard `index` of `part` is worth asking for.
    fn usable(&self, part: &PartLayout, index: u16, avoid: &BTreeSet<u16>) -> bool {
        let recorded = part
            .shard_blake3
            .get(usize::from(index))
            .is_some_and(|h| !h.is_empty());
        recorded && !avoid.contains(&index)
    }

    async fn read_slice(
        &self,
        body: ObjectId,
        part: &PartLayout,
        index: u16,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, CallError> {
        let mut out = Vec::new();
        let mut at = offset;
        let end = offset + u64::from(len);
        while at < end {
            let take = u32::try_from((end - at).min(u64::from(READ_BYTES_MAX)))
                .expect("bounded by READ_BYTES_MAX");
            let request = ShardRequest::Read {
                name: ShardName {
                    id: body,
                    part: part.part,
                    index,
                },
                blake3: part.shard_blake3[usize::from(index)].clone(),
                offset: at,
                len: take,
            };
            let (head, data) = self
                .call(self.home(part, index), request, Vec::new())
                .await?;
            if head != ShardResponse::Data || data.len() != take as usize {
                return Err(CallError::Unexpected(format!(
                    "asked for {take} bytes, got {head:?} with {}",
                    data.len()
                )));
            }
            if out.is_empty() && at + u64::from(take) == end {
                // The whole slice came in one answer: hand it on as it is.
                return Ok(data);
            }
            out.extend_from_slice(&data);
            at += u64::from(take);
        }
        Ok(out)
    }

    /// Reads `range`, which lies inside one stripe.
    async fn read_in_stripe(
        &self,
        body: ObjectId,
        part: &PartLayout,
        geometry: &Geometry,
        range: Range<u64>,
        avoid: &mut BTreeSet<u16>,
    ) -> Result<Vec<u8>, ReadError> {
        let slices = geometry.slices(range.clone());
        // The healthy path: only the data-shard slices covering the range. A data shard whose
        // home is known to be down sends the stripe straight to decoding, which asks it last,
        // rather than failing (and logging) once per read while the node is away.
        let healthy = slices
            .iter()
            .all(|s| self.usable(part, s.shard, avoid) && !self.is_down(self.home(part, s.shard)));
        if healthy {
            // A data shard that is slow to answer is as good as missing: past SLOW_SLICE the
            // stripe is decoded from the others rather than waited for.
            let reads = slices.iter().map(|s| async move {
                let read = self.read_slice(body, part, s.shard, s.shard_offset, s.len);
                match tokio::time::timeout(SLOW_SLICE, read).await {
                    Ok(r) => r,
                    Err(_) => Err(CallError::Unreachable(format!(
                        "no answer within {} ms",
                        SLOW_SLICE.as_millis()
                    ))),
                }
            });
            let results = join_all(reads).await;
            if results.iter().all(Result::is_ok) {
                if results.len() == 1 {
                    return Ok(results.into_iter().flatten().next().expect("one slice"));
                }
                let mut out = Vec::with_capacity((range.end - range.start) as usize);
                for r in results {
                    out.extend_from_slice(&r.expect("checked above"));
                }
                return Ok(out);
            }
            for (s, r) in slices.iter().zip(&results) {
                if let Err(e) = r {
                    if let Some(held) = self.inner.warn_read.admit() {
                        warn!(object = %body, part = part.part, shard = s.shard, error = %e, "shard read failed; decoding from the others{held}");
                    }
                    avoid.insert(s.shard);
                }
            }
        }
        // Degraded: whole chunks of this stripe from any k verified shards.
        let s = range.start / geometry.stripe_bytes();
        let chunks = self.stripe_chunks(body, part, geometry, s, avoid).await?;
        let coder = Coder::new(part.k, part.m).map_err(|e| ReadError::Lost(e.to_string()))?;
        let mut chunks = chunks;
        coder
            .reconstruct(&mut chunks)
            .map_err(|e| ReadError::Lost(e.to_string()))?;
        let stripe = geometry.stripe_range(s);
        let data = coder.join(&chunks, (stripe.end - stripe.start) as usize);
        let from = (range.start - stripe.start) as usize;
        let to = (range.end - stripe.start) as usize;
        Ok(data[from..to].to_vec())
    }

    /// Fetches chunk `s` from at least `k` shards (data shards first), or fails if fewer than
    /// `k` verify. Shards that fail are added to `avoid`.
    pub async fn stripe_chunks(
        &self,
        body: ObjectId,
        part: &PartLayout,
        geometry: &Geometry,
        s: u64,
        avoid: &mut BTreeSet<u16>,
    ) -> Result<Vec<Option<Vec<u8>>>, ReadError> {
        let n = usize::from(part.k) + usize::from(part.m);
        let k = usize::from(part.k);
        let chunk = geometry.chunk_bytes(s);
        let offset = s * u64::from(geometry.block_bytes);
        let mut chunks: Vec<Option<Vec<u8>>> = vec![None; n];
        // Candidates: usable shards, nodes not known down first, data before parity.
        let mut candidates: Vec<u16> = (0..n as u16)
            .filter(|i| self.usable(part, *i, avoid))
            .collect();
        candidates.sort_by_key(|i| (self.is_down(self.home(part, *i)), *i));
        let mut next = 0usize;
        let mut have = 0usize;
        // Shards that failed only because their node did not answer.
        let mut away = 0usize;
        while have < k {
            let want = k - have;
            let batch: Vec<u16> = candidates.iter().skip(next).take(want).copied().collect();
            if batch.is_empty() {
                // Shards set aside before this stripe (an earlier stripe or the data-shard
                // path failed on them) count as away when their node is known to be down.
                let earlier = avoid
                    .iter()
                    .filter(|i| !candidates.contains(i) && self.is_down(self.home(part, **i)))
                    .count();
                let why = format!("only {have} of the {k} shards needed verify");
                if have + away + earlier >= k {
                    return Err(ReadError::Unavailable(why));
                }
                return Err(ReadError::Lost(why));
            }
            next += batch.len();
            let reads = batch
                .iter()
                .map(|i| self.read_slice(body, part, *i, offset, chunk));
            for (i, r) in batch.iter().zip(join_all(reads).await) {
                match r {
                    Ok(c) => {
                        chunks[usize::from(*i)] = Some(c);
                        have += 1;
                    }
                    Err(e) => {
                        if let Some(held) = self.inner.warn_read.admit() {
                            warn!(object = %body, part = part.part, shard = i, error = %e, "shard unusable{held}");
                        }
                        if matches!(e, CallError::Unreachable(_)) {
                            away += 1;
                        }
                        avoid.insert(*i);
                    }
                }
            }
        }
        Ok(chunks)
    }
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Fewer than `k` shards of a stripe could be read and verified.
    Lost(String),
    /// Fewer than `k` shards could be read, but with the ones on nodes that are down or did
    /// not answer there would be enough: the read can succeed once those nodes are back.
    Unavailable(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Lost(why) => write!(f, "object data unreadable: {why}"),
            ReadError::Unavailable(why) => {
                write!(f, "object data unreadable while nodes are away: {why}")
            }
        }
    }
}

impl std::error::Error for ReadError {}

fn below_floor(profile: Profile, durable: usize) -> S3Error {
    below_floor_because(profile, durable, &[])
}

/// Most failed homes named in a refusal (the message stays one readable line).
const FAILED_HOMES_NAMED_MAX: usize = 4;

/// [`below_floor`], naming the homes that failed and why (a full disk, a down node), so the
/// operator knows which node to look at.
fn below_floor_because(profile: Profile, durable: usize, failed: &[String]) -> S3Error {
    let mut message = format!(
        "only {durable} of the {} shard homes can store this write and {} are needed",
        profile.shards(),
        profile.ack_floor()
    );
    if failed.is_empty() {
        message.push_str("; retry when more nodes are up");
    } else {
        let named: Vec<&str> = failed
            .iter()
            .take(FAILED_HOMES_NAMED_MAX)
            .map(String::as_str)
            .collect();
        message.push_str(&format!("; failed: {}", named.join("; ")));
    }
    S3Error::with_message(S3ErrorCode::SlowDown, message)
}

/// One chunk for one shard's sender.
struct Block {
    data: Vec<u8>,
    last: bool,
}

/// What a shard's sender reports when its channel closes.
type SenderOutcome = Result<String, CallError>;

/// Feeds one shard's chunks to its home, one request at a time, with up to
/// [`WINDOW_BLOCKS`] chunks queued.
pub struct ShardSender {
    blocks: Option<mpsc::Sender<Block>>,
    done: oneshot::Receiver<SenderOutcome>,
}

impl ShardSender {
    /// A sender writing shard `name` of `part` (its profile and block size) to `home`.
    pub fn start_for(plane: &DataPlane, home: NodeId, name: ShardName, part: &PartLayout) -> Self {
        let profile = Profile {
            k: part.k,
            m: part.m,
        };
        Self::start(plane.clone(), home, name, profile, part.block_bytes)
    }

    /// Queues the next chunk, waiting while the window is full; `last` ends the shard. A
    /// sender that failed drops what it is given (its outcome says why).
    pub async fn push(&mut self, data: Vec<u8>, last: bool) {
        if let Some(tx) = &self.blocks {
            // A closed channel means the sender is gone; its outcome says why.
            let _ = tx.send(Block { data, last }).await;
        }
        if last {
            self.blocks = None;
        }
    }

    /// Waits for the shard to be stored: its BLAKE3 as the home computed it.
    pub async fn outcome(self) -> Result<String, CallError> {
        drop(self.blocks);
        self.done
            .await
            .unwrap_or_else(|_| Err(CallError::Unexpected("sender vanished".into())))
    }

    fn start(
        plane: DataPlane,
        home: NodeId,
        name: ShardName,
        profile: Profile,
        block_bytes: u32,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Block>(WINDOW_BLOCKS);
        let (done_tx, done) = oneshot::channel();
        let transfer = plane.inner.ids.next_u64();
        tokio::spawn(async move {
            let mut outcome: Option<SenderOutcome> = None;
            if plane.is_down(home) {
                outcome = Some(Err(CallError::Unreachable("known down".into())));
            }
            let mut seq = 0u64;
            let mut finished = false;
            while let Some(block) = rx.recv().await {
                if outcome.is_some() {
                    // Failed already: drain so the coder never waits on this shard.
                    continue;
                }
                let request = ShardRequest::Write {
                    transfer,
                    seq,
                    name,
                    k: profile.k,
                    m: profile.m,
                    block_bytes,
                    finish: block.last,
                };
                seq += 1;
                match plane.call(home, request, block.data).await {
                    Ok((ShardResponse::Written, _)) if !block.last => {}
                    Ok((ShardResponse::Finished { blake3, .. }, _)) if block.last => {
                        finished = true;
                        outcome = Some(Ok(blake3));
                    }
                    Ok((other, _)) => {
                        outcome = Some(Err(CallError::Unexpected(format!("{other:?}"))));
                    }
                    Err(e) => outcome = Some(Err(e)),
                }
            }
            let outcome = outcome.unwrap_or_else(|| {
                Err(CallError::Unexpected(
                    "the write ended before its last block".into(),
                ))
            });
            if !finished && seq > 0 {
                // Drop the unfinished shard there now rather than when its session idles out.
                let _ = plane
                    .call(home, ShardRequest::Abort { transfer }, Vec::new())
                    .await;
            }
            let _ = done_tx.send(outcome);
        });
        ShardSender {
            blocks: Some(tx),
            done,
        }
    }
}

/// The coding of a part, fixed once its profile is known.
struct Started {
    profile: Profile,
    coder: Arc<Coder>,
    homes: Vec<NodeId>,
    senders: Vec<ShardSender>,
    /// BLAKE3 of each shard's data as coded here: recorded for every shard, stored or not, so
    /// repair can rebuild a shard that missed the write and prove it right. Empty when the
    /// part's only shard lives on this node: its writer hashes the same bytes, in this
    /// process, and if it fails the part fails, so a second hash here would prove nothing.
    hashers: Vec<blake3::Hasher>,
}

/// A part being written: feed it the body with [`PartWriter::write`], then
/// [`PartWriter::finish`]. Dropping it unfinished aborts every shard.
///
/// A stripe is sent once the byte after it arrives (so the last stripe is always known as
/// last), and the profile is fixed once the part is known not to be small, or at the end.
pub struct PartWriter {
    plane: DataPlane,
    id: ObjectId,
    part: u32,
    layout: Layout,
    started: Option<Started>,
    /// The stripe being coded on the pool while the caller reads and hashes the next one;
    /// its chunks are queued to the senders when the next stripe is handed over.
    coding: Option<Coding>,
    stripe: u64,
    buf: Vec<u8>,
    received: u64,
    /// The part's declared length, when known: bounds how much `buf` reserves.
    size_hint: Option<u64>,
}

/// A stripe's coding job: its chunks and the shard hashers it carried along, and whether it
/// was the part's last stripe.
struct Coding {
    job: BoxFuture<'static, Result<Coded, S3Error>>,
    last: bool,
}

/// A coded stripe's chunks, one per shard, and the shard hashers updated with them.
type Coded = (Vec<Vec<u8>>, Vec<blake3::Hasher>);

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("id", &self.id)
            .field("part", &self.part)
            .field("profile", &self.started.as_ref().map(|s| s.profile))
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl PartWriter {
    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Fixes the profile for a part of (at least) `size` bytes and starts the shard senders.
    fn start(&mut self, size: u64) -> Result<(), S3Error> {
        let profile = self.plane.profile(&self.layout, size);
        let homes = self
            .plane
            .homes(&self.layout, self.id, self.part, profile)?;
        let coder = Arc::new(Coder::new(profile.k, profile.m).map_err(|e| {
            warn!(error = %e, "cannot code a part");
            S3Error::new(S3ErrorCode::InternalError)
        })?);
        let block_bytes = self.plane.inner.config.block_bytes;
        let senders = homes
            .iter()
            .enumerate()
            .map(|(index, home)| {
                let name = ShardName {
                    id: self.id,
                    part: self.part,
                    index: u16::try_from(index).expect("at most 255 shards"),
                };
                ShardSender::start(self.plane.clone(), *home, name, profile, block_bytes)
            })
            .collect();
        let only_local = homes.len() == 1 && homes[0] == self.plane.inner.me;
        let hashers = if only_local {
            Vec::new()
        } else {
            vec![blake3::Hasher::new(); profile.shards()]
        };
        self.started = Some(Started {
            profile,
            coder,
            homes,
            senders,
            hashers,
        });
        Ok(())
    }

    /// The most memory this writer can hold at once, whatever the client sends: the stripe
    /// being filled, plus every stripe that can be alive behind it (one coding, up to
    /// [`WINDOW_BLOCKS`] queued and one in flight per shard), never more stripes than the
    /// declared length makes. The upload gate charges an upload this much before its body is
    /// read.
    pub fn footprint_bytes(&self) -> u64 {
        let profile = match &self.started {
            Some(s) => s.profile,
            None => self.plane.profile(&self.layout, u64::MAX),
        };
        let k = u64::from(profile.k);
        let shards = profile.shards() as u64;
        let block = u64::from(self.plane.inner.config.block_bytes);
        let total = self.size_hint.unwrap_or(u64::MAX);
        let filling = (k * block + 1).min(total);
        let chunk = block.min(total.div_ceil(k.max(1)));
        let stripes = total.div_ceil(k * block).clamp(1, WINDOW_BLOCKS as u64 + 2);
        filling.saturating_add(stripes * shards * chunk)
    }

    fn stripe_bytes(&self) -> Option<usize> {
        let s = self.started.as_ref()?;
        Some(usize::from(s.profile.k) * self.plane.inner.config.block_bytes as usize)
    }

    /// How many bytes the stripe buffer will hold before it is sent, once `queued` bytes of
    /// the part went to earlier stripes: a stripe and the byte after it (a stripe goes out once
    /// that byte is here), or for the last stripe what is left of the declared length.
    fn buf_target(&self, queued: u64) -> usize {
        let stripe = self
            .stripe_bytes()
            .unwrap_or(self.plane.inner.config.small_object_bytes as usize);
        let mut target = stripe as u64 + 1;
        if let Some(total) = self.size_hint {
            target = target.min(total.saturating_sub(queued));
        }
        usize::try_from(target).unwrap_or(usize::MAX)
    }

    /// Appends body bytes; every stripe known not to be the last is coded and queued to its
    /// shards (waiting while the window is full).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), S3Error> {
        self.received += data.len() as u64;
        if self.buf.capacity() - self.buf.len() < data.len() {
            // Grown once to what it will hold before it is sent, not doubled (and copied) on
            // the way there.
            let queued = self.received - data.len() as u64 - self.buf.len() as u64;
            let need = self.buf_target(queued).max(self.buf.len() + data.len());
            self.buf.reserve_exact(need - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        let small = self.plane.inner.config.small_object_bytes;
        if self.started.is_none() && self.buf.len() as u64 >= small {
            self.start(self.buf.len() as u64)?;
        }
        while let Some(stripe) = self.stripe_bytes() {
            if self.buf.len() <= stripe {
                break;
            }
            let tail = self.buf.len() - stripe;
            let mut rest =
                Vec::with_capacity(self.buf_target(self.received - tail as u64).max(tail));
            rest.extend_from_slice(&self.buf[stripe..]);
            self.buf.truncate(stripe);
            let full = std::mem::replace(&mut self.buf, rest);
            let block = self.plane.inner.config.block_bytes as usize;
            self.send_stripe(full, block, false).await?;
        }
        Ok(())
    }

    /// Starts coding a stripe on the pool and, meanwhile, queues the previous stripe's chunks
    /// to their senders (waiting while a window is full). The caller goes on reading the body
    /// while this stripe codes: MD5 of the body and the coding overlap.
    async fn send_stripe(
        &mut self,
        data: Vec<u8>,
        chunk: usize,
        last: bool,
    ) -> Result<(), S3Error> {
        let previous = self.take_coded().await?;
        let started = self.started.as_mut().expect("started before a stripe");
        let coder = started.coder.clone();
        let mut hashers = std::mem::take(&mut started.hashers);
        // A small stripe codes in microseconds: cheaper here than a hand-off to the pool.
        let offload = if data.len() <= INLINE_CODING_BYTES {
            Offload::Inline
        } else {
            self.plane.inner.offload
        };
        let job = offload.start(move || {
            let chunks = coder.encode_owned(data, chunk);
            for (h, c) in hashers.iter_mut().zip(&chunks) {
                h.update(c);
            }
            (chunks, hashers)
        });
        self.coding = Some(Coding { job, last });
        if let Some((chunks, last)) = previous {
            self.queue(chunks, last).await;
        }
        self.stripe += 1;
        Ok(())
    }

    /// Waits for the stripe being coded, if any, and takes back its hashers; returns its
    /// chunks for the senders.
    async fn take_coded(&mut self) -> Result<Option<(Vec<Vec<u8>>, bool)>, S3Error> {
        let Some(Coding { job, last }) = self.coding.take() else {
            return Ok(None);
        };
        let (chunks, hashers) = job.await?;
        self.started
            .as_mut()
            .expect("started before a stripe")
            .hashers = hashers;
        Ok(Some((chunks, last)))
    }

    async fn queue(&mut self, chunks: Vec<Vec<u8>>, last: bool) {
        let started = self.started.as_mut().expect("started before a stripe");
        for (sender, data) in started.senders.iter_mut().zip(chunks) {
            sender.push(data, last).await;
        }
    }

    /// Ends the part: sends the last stripe, waits for every shard, applies the ack rule and
    /// returns the part's layout (without its MD5, which the caller knows). Below the floor the
    /// shards written are deleted and the write is refused with `SlowDown`.
    pub async fn finish(mut self) -> Result<PartLayout, S3Error> {
        if self.started.is_none() {
            self.start(self.received)?;
        }
        let k = self.started.as_ref().expect("started").profile.k;
        // The last stripe (empty for an empty part: every home still gets its empty shard).
        let data = std::mem::take(&mut self.buf);
        let chunk = data.len().div_ceil(usize::from(k));
        self.send_stripe(data, chunk, true).await?;
        if let Some((chunks, last)) = self.take_coded().await? {
            self.queue(chunks, last).await;
        }
        let Started {
            profile,
            homes,
            senders,
            hashers,
            ..
        } = self.started.take().expect("started");
        let mut expected: Vec<String> = hashers
            .iter()
            .map(|h| h.finalize().to_hex().to_string())
            .collect();
        let hashed_here = !expected.is_empty();
        expected.resize(profile.shards(), String::new());
        let outcomes = join_all(senders.into_iter().map(ShardSender::outcome)).await;
        let mut durable = 0usize;
        let mut failed = Vec::new();
        for (i, o) in outcomes.into_iter().enumerate() {
            match o {
                Ok(h) if !hashed_here => {
                    expected[i] = h;
                    durable += 1;
                }
                Ok(h) if h == expected[i] => durable += 1,
                Ok(h) => {
                    if let Some(held) = self.plane.inner.warn_write.admit() {
                        warn!(object = %self.id, part = self.part, shard = i, home = homes[i], stored = %h, "shard stored with a different checksum; not counted{held}");
                    }
                }
                Err(e) => {
                    if let Some(held) = self.plane.inner.warn_write.admit() {
                        warn!(object = %self.id, part = self.part, shard = i, home = %format!("{:016x}", homes[i]), error = %e, "shard not stored{held}");
                    }
                    failed.push(format!("node {:016x}: {e}", homes[i]));
                }
            }
        }
        if durable < profile.ack_floor() {
            self.plane.discard(vec![self.id]);
            return Err(below_floor_because(profile, durable, &failed));
        }
        if durable < profile.shards() {
            self.plane.note_degraded(self.id);
            if let Some(held) = self.plane.inner.warn_degraded.admit() {
                warn!(object = %self.id, part = self.part, durable, shards = profile.shards(), "write acknowledged degraded; the scrubber restores the missing shards once their homes answer{held}");
            }
        }
        Ok(PartLayout {
            part: self.part,
            size: self.received,
            k: profile.k,
            m: profile.m,
            block_bytes: self.plane.inner.config.block_bytes,
            shard_blake3: expected,
            md5: String::new(),
            body: None,
            homes,
        })
    }
}

/// The data plane's side of the detector's probes; see [`Prober`].
struct PlaneProber {
    plane: Weak<Inner>,
}

impl Prober for PlaneProber {
    fn members(&self) -> Option<BTreeSet<NodeId>> {
        let inner = self.plane.upgrade()?;
        Some(DataPlane { inner }.other_members())
    }

    fn probe(&self, node: NodeId) -> Option<BoxFuture<'static, ()>> {
        let inner = self.plane.upgrade()?;
        let plane = DataPlane { inner };
        Some(Box::pin(async move { plane.probe(node).await }))
    }
}
