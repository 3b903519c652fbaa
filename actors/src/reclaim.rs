//! Garbage in the shard store, and the actor that removes it:
//!
//! - bodies a commit stopped referencing: the state machine records them in this node's freed
//!   queue (`crate::raft::freed`) in the commit that frees them, and the [`Reclaimer`] drains
//!   that queue, deleting an entry only once its shard files are gone, so a stop or crash never
//!   leaves them behind;
//! - orphans: shard files that no committed version references and no queue entry names, left
//!   by PUTs a crash cut short, or by frees this node learnt of only through a snapshot. The
//!   reclaimer sweeps them once per start, in the background while the node serves; a
//!   [`SweepFence`] keeps that sweep from deleting a body being written meanwhile.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use hamster_protocol::meta::ObjectId;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::raft::freed::{FreedEntry, FreedQueue};
use crate::raft::node::{CatchUp, GetReader, RaftNode, RaftStatus};
use crate::s3::Offload;
use crate::shards::ShardStore;
use crate::supervise::Supervision;

/// How long the orphan sweep waits for this node to apply its own log before giving up.
pub const SWEEP_WAIT_MAX: Duration = Duration::from_secs(10);
/// Orphan bodies a sweep may always remove; above this it removes at most half of the bodies
/// on disk unless told otherwise (see [`SweepGuard`]).
pub const SWEEP_ORPHANS_FREE_MAX: usize = 100;
/// Orphan bodies one sweep removes at most (their ids are held until removed); the next start
/// takes the rest.
pub const SWEEP_ORPHANS_PER_START_MAX: usize = 1 << 18;
/// Shard directories the sweep lists per step (of the 65,536 a full store has).
const SWEEP_DIRS_PER_STEP: usize = 64;

/// What keeps the orphan sweep from trusting a state younger than the shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepGuard {
    /// The applied index recorded beside the shards (`watermark.json`): the sweep runs only
    /// once this node has applied at least this far.
    pub watermark: Option<u64>,
    /// Remove every orphan even when they are most of what is stored, or the state is behind
    /// the watermark (`serve --sweep-all-orphans`, after a mass delete the reclaimer could not
    /// finish).
    pub unbounded: bool,
}
const SWEEP_POLL: Duration = Duration::from_millis(20);

/// Bodies the writes of one sweep may start before the sweep stops tracking them and gives up
/// (it runs again at the next start): bounds the fence's memory under a write storm.
pub const FENCE_FRESH_MAX: usize = 1 << 20;

/// What the orphan sweep and this node's shard writes agree on while a sweep runs. Shard
/// writes go on while the node serves; the sweep must neither delete a body whose shards are
/// being written now (a PUT that has not committed yet looks exactly like an orphan) nor let a
/// write begin on a body it is deleting. So from before the node takes its first shard write,
/// the fence notes every body a write starts on; the sweep spares those; and while it deletes,
/// the fence refuses new writes of exactly the bodies it deletes (fresh PUTs use fresh ids, so
/// only a write that was cut short and is retried can be refused). Cloning shares the fence.
#[derive(Debug, Clone, Default)]
pub struct SweepFence {
    state: Arc<Mutex<FenceState>>,
}

#[derive(Debug, Default)]
enum FenceState {
    /// No sweep: every write is admitted.
    #[default]
    Open,
    /// A sweep will judge the bodies on disk: the ones writes start on are spared.
    Watching {
        fresh: BTreeSet<ObjectId>,
        /// More than [`FENCE_FRESH_MAX`] bodies: the sweep cannot tell and gives up.
        overflowed: bool,
    },
    /// The sweep deletes these: writes of them are refused until it is done.
    Deleting { doomed: BTreeSet<ObjectId> },
}

impl SweepFence {
    /// A fence that watches writes for a sweep to come; hand it to the shard service before
    /// that takes its first write.
    pub fn watching() -> Self {
        SweepFence {
            state: Arc::new(Mutex::new(FenceState::Watching {
                fresh: BTreeSet::new(),
                overflowed: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new shard write of `body` may start now (noting it if a sweep is to come).
    pub fn admit(&self, body: &ObjectId) -> bool {
        match &mut *self.lock() {
            FenceState::Open => true,
            FenceState::Watching { fresh, overflowed } => {
                if fresh.len() < FENCE_FRESH_MAX {
                    fresh.insert(*body);
                } else if !fresh.contains(body) {
                    *overflowed = true;
                }
                true
            }
            FenceState::Deleting { doomed } => !doomed.contains(body),
        }
    }

    /// The `orphans` no write started on since the fence began watching, now held against
    /// writes until [`SweepFence::lift`]; `None` (and the fence lifted) if it lost track.
    fn doom(&self, orphans: BTreeSet<ObjectId>) -> Option<BTreeSet<ObjectId>> {
        let mut state = self.lock();
        let FenceState::Watching { fresh, overflowed } = &*state else {
            return None;
        };
        if *overflowed {
            *state = FenceState::Open;
            return None;
        }
        let doomed: BTreeSet<ObjectId> = orphans.difference(fresh).copied().collect();
        *state = FenceState::Deleting {
            doomed: doomed.clone(),
        };
        Some(doomed)
    }

    /// Ends the sweep's hold: every write is admitted again.
    fn lift(&self) {
        *self.lock() = FenceState::Open;
    }
}

/// Lifts the fence however the sweep ends (an error, a skip, its task dropped).
struct LiftOnDrop<'a>(&'a SweepFence);

impl Drop for LiftOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lift();
    }
}

/// What the sweep found and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Bodies the sweep judged orphans (and was allowed to remove).
    pub orphans: usize,
    /// Bodies whose shard files it actually removed.
    pub removed: usize,
}

/// Removes the shard files that no committed version references and no entry of the freed
/// queue names (those the reclaimer deletes). The sweep first catches this node up with the
/// leader (a read index): a member that restarts behind the others has not yet applied every
/// commit, and a body committed while it was down is referenced only by entries it has still
/// to apply. Then it waits until it has applied its own whole log: a node that restarts still
/// leading may hold entries it wrote before the crash that commit only now. Without a leader,
/// or without that, the sweep is skipped (and runs at the next start); orphans cost space,
/// never correctness.
///
/// It runs while the node serves: `fence` (watching since before the first shard write) spares
/// every body a write started on since, and refuses writes of the bodies it deletes while it
/// deletes them. The fence is lifted when the sweep ends, however it ends.
///
/// One window remains: a proposal this node forwarded to another leader just before it
/// crashed, still in flight or uncommitted there while the sweep runs.
///
/// Two guards keep a state that is younger than the shards (metadata restored from an old
/// backup, or rebuilt and not caught up) from deleting live bodies: the sweep waits for the
/// applied index to reach the `guard`'s watermark, and it refuses to remove more than half of
/// the bodies on disk (beyond [`SWEEP_ORPHANS_FREE_MAX`]); `guard.unbounded` lifts both.
pub async fn sweep_orphans(
    raft: &Addr<RaftNode>,
    shards: &Arc<ShardStore>,
    queue: &FreedQueue,
    offload: Offload,
    guard: SweepGuard,
    fence: &SweepFence,
) -> anyhow::Result<Swept> {
    let _lift = LiftOnDrop(fence);
    let listed = shards.clone();
    let dirs = offload
        .run(move || listed.shard_dirs())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot list shard directories: {e}"))?;
    if dirs.is_empty() {
        // Nothing to sweep (a fresh node): no need to wait for a leader.
        return Ok(Swept::default());
    }
    match raft.send(CatchUp).await? {
        Ok(()) => {}
        Err(e) => {
            warn!(error = %e, "not sweeping orphan shards: this node cannot catch up now");
            return Ok(Swept::default());
        }
    }
    if !applied_own_log(raft).await? {
        warn!("not sweeping orphan shards: entries in this node's log are not applied yet");
        return Ok(Swept::default());
    }
    let applied = raft.send(RaftStatus).await?.applied_index;
    if let Some(mark) = guard.watermark.filter(|m| applied < *m && !guard.unbounded) {
        warn!(
            applied,
            watermark = mark,
            "not sweeping orphan shards: this node's metadata is older than its shards (applied index below the watermark)"
        );
        return Ok(Swept::default());
    }
    // References first (one read transaction), then the queue: a body freed between the two
    // reads is in the queue. The references are kept in a filter that may claim an orphan is
    // referenced (it stays until a later sweep) but never the reverse; the applied index
    // seeds it, so the next start's sweep errs on other bodies.
    let reader = raft.send(GetReader).await?;
    let referenced = reader
        .referenced_bodies(applied)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = queue.clone();
    let queued = offload
        .run(move || q.all_ids())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot read the freed queue: {e}"))?;
    // The shard files, a few directories at a time: only the orphans found are kept.
    let (mut stored, mut orphans, mut beyond) = (0usize, BTreeSet::new(), 0usize);
    for step in dirs.chunks(SWEEP_DIRS_PER_STEP) {
        let (listed, step) = (shards.clone(), step.to_vec());
        let bodies = offload
            .run(move || listed.bodies_in(&step))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .map_err(|e| anyhow::anyhow!("cannot list shard files: {e}"))?;
        stored += bodies.len();
        for id in bodies {
            if referenced.may_contain(&id) || queued.contains(&id) {
                continue;
            }
            if orphans.len() < SWEEP_ORPHANS_PER_START_MAX {
                orphans.insert(id);
            } else {
                beyond += 1;
            }
        }
    }
    if !sweep_allowed(orphans.len() + beyond, stored, guard.unbounded) {
        warn!(
            orphans = orphans.len() + beyond,
            stored,
            "not sweeping orphan shards: the metadata references fewer than half of the bodies on disk, which looks like lost or old metadata rather than interrupted writes; if that is expected (metadata restored from a backup on purpose, or a mass delete this node learnt of only through a snapshot), start once with --sweep-all-orphans"
        );
        return Ok(Swept::default());
    }
    let Some(doomed) = fence.doom(orphans) else {
        warn!(
            "not sweeping orphan shards: too many writes began during the sweep to tell them apart; the next start sweeps again"
        );
        return Ok(Swept::default());
    };
    let shards = shards.clone();
    let orphans = doomed.len();
    let removed = offload
        .run(move || -> std::io::Result<usize> {
            let mut removed = 0;
            for id in &doomed {
                if shards.delete_object(id)? > 0 {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot remove orphan shard files: {e}"))?;
    if removed > 0 {
        info!(
            bodies = removed,
            "removed the shard files of orphan bodies (no committed version references them and the freed queue does not name them: writes a crash cut short, or frees this node learnt of through a snapshot)"
        );
    }
    if beyond > 0 {
        info!(
            bodies = beyond,
            "more orphan bodies than one sweep removes; the next start removes them"
        );
    }
    Ok(Swept { orphans, removed })
}

/// Whether a sweep may remove `orphans` of the `stored` bodies: always up to
/// [`SWEEP_ORPHANS_FREE_MAX`], beyond that at most half, unless `unbounded`.
pub fn sweep_allowed(orphans: usize, stored: usize, unbounded: bool) -> bool {
    unbounded || orphans <= SWEEP_ORPHANS_FREE_MAX || orphans * 2 <= stored
}

/// Waits (bounded) until this node has applied every entry its log holds now. A node that
/// restarts still leading (its vote survives) may hold entries it wrote before the crash
/// without knowing yet that they committed; a body such an entry references is not an orphan.
/// `false` if that does not happen within [`SWEEP_WAIT_MAX`].
async fn applied_own_log(raft: &Addr<RaftNode>) -> anyhow::Result<bool> {
    let target = raft.send(RaftStatus).await?.last_log_index;
    let mut waited = Duration::ZERO;
    while raft.send(RaftStatus).await?.applied_index < target {
        if waited >= SWEEP_WAIT_MAX {
            return Ok(false);
        }
        tokio::time::sleep(SWEEP_POLL).await;
        waited += SWEEP_POLL;
    }
    Ok(true)
}

/// Queue entries one drain step reads, deletes and removes (at most
/// `PAGE_ENTRIES_MAX * ENTRY_BODIES_MAX` bodies): bounds the time a stopping node waits for the
/// step in progress and the size of each removal's write transaction.
pub const PAGE_ENTRIES_MAX: usize = 4;
/// How long the reclaimer waits before it tries again after a drain step failed (a disk
/// error); the entries it could not finish stay queued.
pub const DRAIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The once-per-start orphan sweep the reclaimer runs after its first drain.
pub struct OrphanSweep {
    /// This node's Raft member (catch-up, references).
    pub raft: Addr<RaftNode>,
    /// The fence the shard service consults; watching since before the first shard write.
    pub fence: SweepFence,
    /// The watermark and `--sweep-all-orphans`.
    pub guard: SweepGuard,
}

/// The reclaimer actor: drains this node's freed queue — at start whatever a stop or crash
/// left, then again whenever the state machine reports a commit that freed bodies — and runs
/// the start's orphan sweep once the queue it found is drained. Its state is shared with the
/// actor's own loop rather than moved into it, so that a restarted reclaimer (see
/// [`crate::supervise`]) takes up the same queue and wake-ups.
pub struct Reclaimer {
    work: Arc<tokio::sync::Mutex<Work>>,
}

struct Work {
    /// `None` once the state machine is gone: the handle is dropped so the store can close.
    queue: Option<FreedQueue>,
    /// Wake-ups: the bodies each commit freed (they are in the queue already).
    freed: UnboundedReceiver<Vec<ObjectId>>,
    shards: Arc<ShardStore>,
    metrics: Metrics,
    offload: Offload,
    /// Taken by the one sweep of this start.
    sweep: Option<OrphanSweep>,
}

/// How one drain ended.
enum Drained {
    /// The queue is empty; `bodies` had their files deleted.
    Empty { bodies: u64 },
    /// A step failed; try again later.
    Failed,
    /// The state machine is gone (the node stops).
    Closed,
}

impl Reclaimer {
    /// A reclaimer of `shards` draining `queue`, woken by `freed`.
    pub fn new(
        queue: FreedQueue,
        shards: Arc<ShardStore>,
        metrics: Metrics,
        offload: Offload,
        freed: UnboundedReceiver<Vec<ObjectId>>,
    ) -> Self {
        Reclaimer {
            work: Arc::new(tokio::sync::Mutex::new(Work {
                queue: Some(queue),
                freed,
                shards,
                metrics,
                offload,
                sweep: None,
            })),
        }
    }

    /// Also runs this start's orphan sweep, once the queue found at start is drained.
    pub fn with_sweep(mut self, sweep: OrphanSweep) -> Self {
        // Not started yet, so this is the only handle on the state.
        if let Some(work) = Arc::get_mut(&mut self.work) {
            work.get_mut().sweep = Some(sweep);
        }
        self
    }

    /// Starts the reclaimer under `supervision`.
    pub fn spawn(self, supervision: &Supervision) -> Addr<Reclaimer> {
        supervision.start("reclaimer", self)
    }
}

impl actix::Actor for Reclaimer {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::{AsyncContext, WrapFuture};
        let work = self.work.clone();
        let run = async move {
            let mut work = work.lock().await;
            work.run().await;
            // The state machine is gone: let go of the store.
            work.queue = None;
        };
        ctx.spawn(run.into_actor(self));
    }
}

/// Nothing is in flight outside the loop that `started` spawns again.
impl actix::Supervised for Reclaimer {}

impl Work {
    async fn run(&mut self) {
        let Some(queue) = self.queue.clone() else {
            return;
        };
        let left = self.count(&queue).await;
        if left > 0 {
            info!(
                bodies = left,
                "deleting the shard files of freed bodies the last stop left queued"
            );
        }
        let mut first = left > 0;
        loop {
            match self.drain(&queue).await {
                Drained::Closed => return,
                Drained::Failed => {
                    tokio::time::sleep(DRAIN_RETRY_AFTER).await;
                    continue;
                }
                Drained::Empty { bodies } => {
                    if first {
                        info!(bodies, "freed queue drained");
                        first = false;
                    }
                }
            }
            if let Some(sweep) = self.sweep.take() {
                self.sweep(&queue, sweep).await;
                // Frees that came in meanwhile are waiting.
                continue;
            }
            if self.freed.recv().await.is_none() {
                return;
            }
            // One drain answers every wake-up that is already here.
            while self.freed.try_recv().is_ok() {}
        }
    }

    async fn count(&self, queue: &FreedQueue) -> u64 {
        let q = queue.clone();
        match self.offload.run(move || q.pending_bodies()).await {
            Ok(Ok(n)) => {
                self.metrics.reclaim_pending_bodies.set(n as i64);
                n
            }
            _ => 0,
        }
    }

    /// Deletes the files of every queued body, a page at a time, removing each entry once its
    /// files are gone.
    async fn drain(&mut self, queue: &FreedQueue) -> Drained {
        let mut bodies = 0u64;
        loop {
            if self.freed.is_closed() {
                return Drained::Closed;
            }
            let q = queue.clone();
            let page = match self.offload.run(move || q.page(PAGE_ENTRIES_MAX)).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the freed queue");
                    return Drained::Failed;
                }
                Err(_) => return Drained::Failed,
            };
            if page.is_empty() {
                self.metrics.reclaim_pending_bodies.set(0);
                return Drained::Empty { bodies };
            }
            let shards = self.shards.clone();
            let Ok((done, failed)) = self.offload.run(move || delete_page(&shards, page)).await
            else {
                return Drained::Failed;
            };
            let deleted: u64 = done.iter().map(|e| e.ids.len() as u64).sum();
            bodies += deleted;
            self.metrics.shards_reclaimed.inc_by(deleted);
            if !done.is_empty() {
                let q = queue.clone();
                match self.offload.run(move || q.remove(&done)).await {
                    Ok(Ok(left)) => self.metrics.reclaim_pending_bodies.set(left as i64),
                    Ok(Err(e)) => {
                        warn!(error = %e, "cannot remove drained entries from the freed queue");
                        return Drained::Failed;
                    }
                    Err(_) => return Drained::Failed,
                }
            }
            if let Some(e) = failed {
                warn!(error = %e, "cannot delete the shard files of a freed body; retrying");
                return Drained::Failed;
            }
        }
    }

    async fn sweep(&self, queue: &FreedQueue, sweep: OrphanSweep) {
        match sweep_orphans(
            &sweep.raft,
            &self.shards,
            queue,
            self.offload,
            sweep.guard,
            &sweep.fence,
        )
        .await
        {
            Ok(swept) => self
                .metrics
                .orphan_bodies_swept
                .inc_by(swept.removed as u64),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "orphan sweep failed; the next start sweeps again")
            }
        }
    }
}

/// Deletes the files of every body of `page`: the entries whose bodies are all gone, and the
/// first error met (its entry and the ones after it stay queued).
fn delete_page(
    shards: &ShardStore,
    page: Vec<FreedEntry>,
) -> (Vec<FreedEntry>, Option<std::io::Error>) {
    let mut done = Vec::with_capacity(page.len());
    for entry in page {
        if let Some(e) = entry
            .ids
            .iter()
            .find_map(|id| shards.delete_object(id).err())
        {
            return (done, Some(e));
        }
        done.push(entry);
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_never_removes_most_of_a_large_store_unless_told() {
        assert!(sweep_allowed(5, 5, false));
        assert!(sweep_allowed(
            SWEEP_ORPHANS_FREE_MAX,
            SWEEP_ORPHANS_FREE_MAX,
            false
        ));
        assert!(!sweep_allowed(
            SWEEP_ORPHANS_FREE_MAX + 1,
            SWEEP_ORPHANS_FREE_MAX + 1,
            false
        ));
        assert!(sweep_allowed(500, 1000, false));
        assert!(!sweep_allowed(501, 1000, false));
        assert!(sweep_allowed(1000, 1000, true));
    }

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 16])
    }

    /// A body a write started on after the fence began watching is never doomed; while the
    /// sweep deletes, only writes of the doomed bodies are refused; lifting admits all again.
    #[test]
    fn the_fence_spares_fresh_writes_and_holds_back_only_doomed_bodies() {
        let fence = SweepFence::watching();
        assert!(fence.admit(&id(1)), "writes go on while the sweep looks");
        let doomed = fence.doom(BTreeSet::from([id(1), id(2), id(3)])).unwrap();
        assert_eq!(doomed, BTreeSet::from([id(2), id(3)]));
        assert!(!fence.admit(&id(2)), "a doomed body is not written again");
        assert!(fence.admit(&id(1)));
        assert!(
            fence.admit(&id(4)),
            "a new body is written while the sweep deletes"
        );
        fence.lift();
        assert!(fence.admit(&id(2)));
        assert_eq!(
            fence.doom(BTreeSet::from([id(5)])),
            None,
            "one sweep per fence"
        );
        assert!(SweepFence::default().admit(&id(9)), "no sweep, no refusal");
    }

    /// A sweep's fence that lost track of the writes (too many) refuses to doom anything, and
    /// a dropped sweep lifts its fence.
    #[test]
    fn a_fence_that_overflowed_dooms_nothing_and_a_dropped_sweep_lifts_it() {
        let fence = SweepFence::watching();
        if let FenceState::Watching { fresh, .. } = &mut *fence.lock() {
            fresh.extend((0..FENCE_FRESH_MAX as u32).map(|n| {
                let mut b = [0xff; 16];
                b[..4].copy_from_slice(&n.to_be_bytes());
                ObjectId(b)
            }));
        }
        assert!(
            fence.admit(&id(1)),
            "writes are never refused for the fence's sake"
        );
        assert_eq!(fence.doom(BTreeSet::from([id(2)])), None);
        assert!(fence.admit(&id(2)));

        let fence = SweepFence::watching();
        drop(LiftOnDrop(&fence));
        assert!(matches!(&*fence.lock(), FenceState::Open));
    }
}
