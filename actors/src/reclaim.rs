//! Garbage in the shard store: bodies a commit stopped referencing (reclaimed as their commits
//! apply), and orphans — shard files no committed version references, left by PUTs that never
//! committed or by a reclaim a crash cut short (swept once at start).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use hamster_protocol::meta::ObjectId;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::raft::node::{CatchUp, RaftNode, RaftStatus, ReferencedObjects};
use crate::s3::Offload;
use crate::shards::ShardStore;
use crate::supervise::Supervision;

/// How long the orphan sweep waits for this node to apply its own log before giving up.
pub const SWEEP_WAIT_MAX: Duration = Duration::from_secs(10);
/// Orphan bodies a sweep may always remove; above this it removes at most half of the bodies
/// on disk unless told otherwise (see [`SweepGuard`]).
pub const SWEEP_ORPHANS_FREE_MAX: usize = 100;

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

/// Removes the shard files no committed version references. The sweep first catches this
/// node up with the leader (a read index): a member that restarts behind the others has not
/// yet applied every commit, and a body committed while it was down is referenced only by
/// entries it has still to apply. Then it waits until it has applied its own whole log: a
/// node that restarts still leading may hold entries it wrote before the crash that commit
/// only now. Without a leader, or without that, the sweep is skipped (and runs at the next
/// start); orphans cost space, never correctness. Returns how many object bodies it removed.
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
    offload: Offload,
    guard: SweepGuard,
) -> anyhow::Result<usize> {
    let listed = shards.clone();
    let stored = offload
        .run(move || listed.list())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot list shard files: {e}"))?;
    if stored.is_empty() {
        // Nothing to sweep (a fresh node): no need to wait for a leader.
        return Ok(0);
    }
    match raft.send(CatchUp).await? {
        Ok(()) => {}
        Err(e) => {
            warn!(error = %e, "not sweeping orphan shards: this node cannot catch up now");
            return Ok(0);
        }
    }
    if !applied_own_log(raft).await? {
        warn!("not sweeping orphan shards: entries in this node's log are not applied yet");
        return Ok(0);
    }
    let applied = raft.send(RaftStatus).await?.applied_index;
    if let Some(mark) = guard.watermark.filter(|m| applied < *m && !guard.unbounded) {
        warn!(
            applied,
            watermark = mark,
            "not sweeping orphan shards: this node's metadata is older than its shards (applied index below the watermark)"
        );
        return Ok(0);
    }
    let referenced = raft
        .send(ReferencedObjects)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bodies: BTreeSet<ObjectId> = stored.iter().map(|s| s.id).collect();
    let orphans: BTreeSet<ObjectId> = bodies
        .iter()
        .filter(|id| !referenced.contains(id))
        .copied()
        .collect();
    if !sweep_allowed(orphans.len(), bodies.len(), guard.unbounded) {
        warn!(
            orphans = orphans.len(),
            stored = bodies.len(),
            "not sweeping orphan shards: the metadata references fewer than half of the bodies on disk, which looks like lost or old metadata rather than interrupted writes; if a mass delete was cut short, start once with --sweep-all-orphans"
        );
        return Ok(0);
    }
    let shards = shards.clone();
    let removed = offload
        .run(move || -> std::io::Result<usize> {
            for id in &orphans {
                shards.delete_object(id)?;
            }
            Ok(orphans.len())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot remove orphan shard files: {e}"))?;
    if removed > 0 {
        info!(
            objects = removed,
            "removed orphan shard files left by interrupted writes"
        );
    }
    Ok(removed)
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

/// The reclaimer actor: deletes the shard files of the bodies each applied commit freed, for
/// as long as the state machine sends them. The receiving end is shared with the actor's own
/// loop rather than moved into it, so that a restarted reclaimer (see [`crate::supervise`])
/// takes up the same stream; a batch it was deleting when it failed is left as orphans, which
/// the next start's sweep removes.
pub struct Reclaimer {
    shards: Arc<ShardStore>,
    metrics: Metrics,
    offload: Offload,
    freed: Arc<tokio::sync::Mutex<UnboundedReceiver<Vec<ObjectId>>>>,
}

impl Reclaimer {
    /// A reclaimer of `shards` fed by `freed`.
    pub fn new(
        shards: Arc<ShardStore>,
        metrics: Metrics,
        offload: Offload,
        freed: UnboundedReceiver<Vec<ObjectId>>,
    ) -> Self {
        Reclaimer {
            shards,
            metrics,
            offload,
            freed: Arc::new(tokio::sync::Mutex::new(freed)),
        }
    }
}

impl actix::Actor for Reclaimer {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::{AsyncContext, WrapFuture};
        let shards = self.shards.clone();
        let metrics = self.metrics.clone();
        let offload = self.offload;
        let freed = self.freed.clone();
        let work = async move {
            loop {
                let Some(ids) = freed.lock().await.recv().await else {
                    return;
                };
                let shards = shards.clone();
                let done = offload
                    .run(move || {
                        ids.iter()
                            .filter(|id| shards.delete_object(id).is_ok())
                            .count()
                    })
                    .await
                    .unwrap_or(0);
                metrics.shards_reclaimed.inc_by(done as u64);
            }
        };
        ctx.spawn(work.into_actor(self));
    }
}

/// Nothing is in flight outside the loop that `started` spawns again.
impl actix::Supervised for Reclaimer {}

/// Starts the [`Reclaimer`] under `supervision`.
pub fn spawn_reclaimer(
    shards: Arc<ShardStore>,
    metrics: Metrics,
    offload: Offload,
    freed: UnboundedReceiver<Vec<ObjectId>>,
    supervision: &Supervision,
) -> Addr<Reclaimer> {
    supervision.start("reclaimer", Reclaimer::new(shards, metrics, offload, freed))
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
}
