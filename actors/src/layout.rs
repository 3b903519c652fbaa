//! The layout manager (DESIGN §3, §6): the one actor that changes the data-plane layout. It
//! runs on every node and acts only where it leads the metadata group:
//!
//! - it stores the first layout, and opens a transition of its own when the membership and the
//!   layout disagree (a member joined: grow; a member left the group: its shards move away);
//! - it opens the transitions operators ask for ([`ChangeLayout`]: drain, undrain, remove,
//!   optimize) and refuses a second while one is open (the guard itself is in the replicated
//!   state, [`hamster_protocol::layout`]);
//! - it runs the migration walk of the open transition: every part of every object and of every
//!   multipart upload whose homes differ from what the new layout gives is moved — each shard
//!   copied from its home when that home answers, rebuilt from `k` verified shards when it does
//!   not, checked against the recorded BLAKE3 — and the new homes are committed with one
//!   compare-and-set command per part. Parts wider than the new layout (a shrink) or narrower
//!   than its profile (`optimize`) are re-encoded under a fresh body instead. The shards a
//!   commit unlinks are deleted on their old homes afterwards and listed as stale in the
//!   replicated state until then, so a crash anywhere leaves nothing behind; a node that is down
//!   keeps its list until it answers again. Parts committed during the transition by the old
//!   layout are listed for a revisit, and the transition closes only once they have moved too.
//!   The walk is paced by a byte rate and checkpointed in the replicated state, so a new leader
//!   resumes where the old one stopped.
//!
//! Nothing else proposes a layout change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use hamster_protocol::layout::{
    Cursor, LayoutOp, PartAt, Progress, Rehome, Retired, Revisit, StaleShard, Transition,
};
use hamster_protocol::membership::Situation;
use hamster_protocol::meta::{Command, ObjectId, PartLayout, Refusal};
use hamster_protocol::placement::{self, Layout, LayoutNode};
use hamster_protocol::stripe::Geometry;
use hamster_protocol::transfer::{ShardName, ShardRequest};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::data::{DataPlane, ShardSender};
use crate::metrics::Metrics;
use crate::peer::node_id_hex;
use crate::raft::node::{
    CountStored, GetLayout, GetObject, GetUpload, ListBuckets, ListUploads, MembershipView,
    ProposeError, ProposeHere, RaftNode, RemoveMember, RevisitPage, StaleCount, StaleNodes,
    StalePage,
};
use crate::repair::{list_page, rebuild_onto, verifies};

/// How often the manager looks at the membership and the layout.
pub const LAYOUT_TICK: Duration = Duration::from_secs(1);
/// Default pace of a migration, bytes of shard data written per second.
pub const MIGRATE_BYTES_PER_S_DEFAULT: u64 = 64 << 20;
/// Parts moved at once.
pub const MIGRATE_PARALLEL: usize = 4;
/// Keys per listing page of the walk; the walk checkpoints between pages.
const PAGE_KEYS: usize = 100;
/// Pause before another pass when parts could not be moved (a home down, too few shards).
const FAILED_PASS_PAUSE: Duration = Duration::from_secs(5);
/// Passes that end with only stale shards on unreachable nodes left before the transition
/// closes anyway (those nodes are drained or gone; a removed node is wiped before reuse).
const STALE_PASSES_MAX: u32 = 3;
/// Passes a part must be found beyond saving, its missing shards on leaving nodes that are
/// down, before it counts as lost (with [`FAILED_PASS_PAUSE`] between passes).
const HOPELESS_PASSES: u32 = 3;
/// Stale shards deleted between two commits that forget them.
const STALE_BATCH_MAX: usize = 256;
/// Stale shards deleted at once.
const STALE_PARALLEL: usize = 8;
/// Most stale shards one manager tick deletes while no transition is open (the rest wait for
/// the next tick, so a long list never holds the manager up for long).
const STALE_PER_TICK_MAX: usize = 4 * STALE_BATCH_MAX;
/// Bytes read per step when a part is re-encoded (whole stripes are read whatever this is).
const REENCODE_STEP_BYTES: u64 = 4 << 20;

/// How the manager migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutConfig {
    /// Shard bytes written per second, at most, by the walk.
    pub bytes_per_s: u64,
    /// Parts moved at once.
    pub parallel: usize,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            bytes_per_s: MIGRATE_BYTES_PER_S_DEFAULT,
            parallel: MIGRATE_PARALLEL,
        }
    }
}

/// A layout change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutChange {
    /// Steer writes off `node` and move its shards away; `shrink` confirms a drain that crosses
    /// a profile boundary (parts are re-encoded narrower).
    Drain {
        /// The node.
        node: u64,
        /// The operator accepted the trade a shrink makes.
        shrink: bool,
        /// Allow a shrink below one-failure tolerance.
        force: bool,
    },
    /// Take `node` back (ends an open drain of it, or brings back a drained node).
    Undrain {
        /// The node.
        node: u64,
    },
    /// Evict a drained node for good.
    Remove {
        /// The node.
        node: u64,
    },
    /// Re-encode parts up to the profile the current node count gives.
    Optimize,
}

/// Asks the leader's manager for a change; answers what was done, or why not in one line.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<String, String>")]
pub struct ChangeLayout {
    /// The change.
    pub change: LayoutChange,
    /// Who asked, for the transition record.
    pub asked_by: String,
}

/// The nodes removed from the cluster for good, as this node last read its layout: a cheap
/// shared view for the places that refuse their certificates (the shard port).
#[derive(Debug, Clone, Default)]
pub struct Removed(Arc<Mutex<std::collections::BTreeSet<u64>>>);

impl Removed {
    /// Whether `node` was removed for good.
    pub fn contains(&self, node: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&node)
    }

    fn set_from(&self, layout: &Layout) {
        let removed = layout
            .retired
            .iter()
            .filter(|(_, r)| matches!(r, Retired::Tombstoned { .. }))
            .map(|(id, _)| *id)
            .collect();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = removed;
    }
}

/// The manager; see the module docs.
pub struct LayoutManager {
    node: Addr<RaftNode>,
    data: DataPlane,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    config: LayoutConfig,
    busy: bool,
    walker: Option<WalkerHandle>,
    removed: Removed,
}

struct WalkerHandle {
    transition: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl LayoutManager {
    /// A manager for the member `node` whose data plane is `data`.
    pub fn new(
        node: Addr<RaftNode>,
        data: DataPlane,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        config: LayoutConfig,
    ) -> Self {
        LayoutManager {
            node,
            data,
            clock,
            metrics,
            config,
            busy: false,
            walker: None,
            removed: Removed::default(),
        }
    }

    /// Keeps `removed` in step with the layout this node applies (every tick, on every node).
    pub fn with_removed(mut self, removed: Removed) -> Self {
        self.removed = removed;
        self
    }

    /// Whether a walk started here has not ended yet (it may be stopping).
    fn walking(&self) -> bool {
        self.walker
            .as_ref()
            .is_some_and(|w| !w.done.load(Ordering::SeqCst))
    }

    fn stop_walker(&mut self) {
        if let Some(w) = self.walker.take() {
            w.stop.store(true, Ordering::SeqCst);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let node = self.node.clone();
        let data = self.data.clone();
        let now_ms = self.clock.now_ms();
        // Stale shards are deleted here only while no walk runs: a walk may be moving a copy
        // back onto the node one names (the walk deletes them itself, between passes).
        let walking = self.walking();
        let work = async move {
            let situation = node.send(MembershipView).await.ok().flatten();
            let stored = match node.send(GetLayout).await {
                Ok(Ok(l)) => l,
                // Not known: leave any walk as it is.
                _ => return (Look::Unknown, None),
            };
            let Some(situation) = situation else {
                return (Look::Follows, stored);
            };
            let Some(layout) = stored else {
                propose_first_layout(&node, &situation).await;
                return (Look::Leads, None);
            };
            if layout.transition.is_none() && !walking {
                let deposed = || false;
                match sweep_stale(&node, &data, STALE_PER_TICK_MAX, &deposed).await {
                    Ok(s) if s.deleted > 0 => {
                        info!(
                            count = s.deleted,
                            "moved shards left on a node that was down are deleted"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "deleting stale shards failed; will retry"),
                }
            }
            if layout.transition.is_none() {
                if let Some((op, nodes)) = automatic_change(&layout, &situation) {
                    let cmd = Command::BeginTransition {
                        version: layout.version + 1,
                        nodes,
                        op: op.clone(),
                        asked_by: "layout manager".into(),
                        now_ms,
                    };
                    match node.send(ProposeHere(cmd)).await {
                        Ok(Ok(a)) if a.refused.is_none() => {
                            info!(op = %op.describe(), version = layout.version + 1, "layout transition opened")
                        }
                        Ok(Ok(a)) => {
                            debug!(refused = ?a.refused, "layout change refused; will retry")
                        }
                        Ok(Err(e)) => debug!(error = %e, "layout change failed; will retry"),
                        Err(_) => {}
                    }
                }
            }
            (Look::Leads, Some(layout))
        };
        ctx.spawn(work.into_actor(self).map(|(look, layout), act, _| {
            act.busy = false;
            if let Some(l) = &layout {
                act.removed.set_from(l);
                act.metrics
                    .layout_version
                    .set(i64::try_from(l.version).unwrap_or(i64::MAX));
                act.metrics
                    .layout_transition_open
                    .set(i64::from(l.transition.is_some()));
            }
            match look {
                Look::Unknown => return,
                Look::Follows => {
                    act.stop_walker();
                    return;
                }
                Look::Leads => {}
            }
            let open = layout.and_then(|l| l.transition.map(|t| (t, l.nodes)));
            act.keep_walker(open);
        }));
    }

    /// Starts the walk of the open transition if none runs for it; stops a walk whose
    /// transition is over.
    fn keep_walker(&mut self, open: Option<(Transition, BTreeMap<u64, LayoutNode>)>) {
        let running = self
            .walker
            .as_ref()
            .filter(|w| !w.done.load(Ordering::SeqCst))
            .map(|w| w.transition);
        match (&open, running) {
            (Some((t, _)), Some(id)) if t.id == id => return,
            (None, None) => return,
            _ => {}
        }
        // A walk of another transition (or of none) must end before a new one starts: two
        // walks could delete a copy the other has just made live. It is told to stop now and
        // replaced at a later tick, once it has.
        if running.is_some() {
            if let Some(w) = &self.walker {
                w.stop.store(true, Ordering::SeqCst);
            }
            return;
        }
        self.walker = None;
        let Some((transition, nodes)) = open else {
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        self.walker = Some(WalkerHandle {
            transition: transition.id,
            stop: stop.clone(),
            done: done.clone(),
        });
        let walker = Walker {
            node: self.node.clone(),
            data: self.data.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            layout: Layout {
                version: transition.id,
                nodes,
                ..Layout::default()
            },
            op: transition.op.clone(),
            id: transition.id,
            stop,
            pacer: Pacer::new(self.config.bytes_per_s),
            parallel: self.config.parallel.max(1),
            dropped: Mutex::new(Vec::new()),
            hopeless: Mutex::new(BTreeMap::new()),
        };
        info!(op = %transition.op.describe(), id = transition.id, "migration walk starting");
        actix_rt::spawn(async move {
            let walker = Arc::new(walker);
            let outcome = walker.clone().run(transition).await;
            match outcome {
                Ok(()) => {}
                Err(e) => {
                    info!(error = %e, "migration walk stopped; it resumes on the next leader tick")
                }
            }
            done.store(true, Ordering::SeqCst);
        });
    }
}

impl Actor for LayoutManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // At once, so a new cluster stores its first layout without waiting a tick.
        self.tick(ctx);
        ctx.run_interval(LAYOUT_TICK, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.stop_walker();
    }
}

impl Supervised for LayoutManager {
    /// The tick that was out died with the old context: let the next one run. A walk runs on
    /// its own task and its handle is kept, so a restart neither stops it nor starts a second.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.busy = false;
    }
}

impl Handler<ChangeLayout> for LayoutManager {
    type Result = ResponseFuture<Result<String, String>>;

    fn handle(&mut self, msg: ChangeLayout, _ctx: &mut Self::Context) -> Self::Result {
        let node = self.node.clone();
        let now_ms = self.clock.now_ms();
        Box::pin(async move { change_layout(&node, msg, now_ms).await })
    }
}

/// Silence after which a member is not taken into the layout (it may have stopped).
const HEARD_WITHIN_MS: u64 = 5_000;

/// Whether a member is ready to take shards: the layout lists it already, or it has caught up
/// with the leader's log and was heard from lately. Raft reaches a member over the same
/// cluster port as shards, and a node opens that port only once its shard store is ready, so a
/// caught-up member answers shard requests: new writes never go to a node still starting.
fn ready_for_shards(layout: Option<&Layout>, situation: &Situation, id: u64) -> bool {
    if layout.is_some_and(|l| l.nodes.contains_key(&id)) || id == situation.leader {
        return true;
    }
    let Some(m) = situation.members.get(&id) else {
        return false;
    };
    let floor = situation
        .last_log_index
        .saturating_sub(hamster_protocol::membership::CATCHUP_LAG_ENTRIES);
    m.silent_ms < HEARD_WITHIN_MS && m.matched.is_some_and(|i| i >= floor)
}

/// The nodes the members imply, without retired ones and without members not ready for
/// shards yet: zone, host and a weight from capacity.
fn member_nodes(layout: Option<&Layout>, situation: &Situation) -> BTreeMap<u64, LayoutNode> {
    let members = situation
        .members
        .iter()
        .filter(|(id, _)| layout.is_none_or(|l| !l.retired.contains_key(id)))
        .filter(|(id, _)| ready_for_shards(layout, situation, **id))
        .map(|(id, m)| {
            (
                *id,
                m.info.zone.as_str(),
                m.info.host.as_str(),
                m.info.capacity_bytes,
            )
        });
    placement::layout_nodes(members)
}

/// What a tick learnt about this node's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// It leads the metadata group.
    Leads,
    /// It does not lead.
    Follows,
    /// The layout could not be read: change nothing.
    Unknown,
}

/// What one [`sweep_stale`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Swept {
    /// Stale shards deleted (and forgotten).
    deleted: usize,
    /// Whether stale shards remain: on nodes that do not answer, or beyond the budget.
    left: bool,
}

/// Deletes the stale shards listed on the nodes that answer now, at most `budget` of them,
/// and forgets those deleted, a batch per commit. Stops early when `stopped` says so (the
/// leader was deposed, or the walk was told to stop).
async fn sweep_stale(
    node: &Addr<RaftNode>,
    data: &DataPlane,
    budget: usize,
    stopped: &dyn Fn() -> bool,
) -> Result<Swept, String> {
    let nodes = read(node.send(StaleNodes).await)?;
    let mut swept = Swept::default();
    for holder in nodes {
        if !data.is_member(holder) || data.is_down(holder) {
            swept.left = true;
            continue;
        }
        let mut after = None;
        loop {
            if stopped() || node.send(MembershipView).await.ok().flatten().is_none() {
                // A leader deposed meanwhile stops: the next one may be moving shards.
                swept.left = true;
                return Ok(swept);
            }
            let limit = STALE_BATCH_MAX.min(budget - swept.deleted);
            if limit == 0 {
                swept.left = true;
                return Ok(swept);
            }
            let page = read(
                node.send(StalePage {
                    node: holder,
                    after,
                    limit,
                })
                .await,
            )?;
            let Some(last) = page.last().copied() else {
                break;
            };
            let full = page.len() == limit;
            let results: Vec<(StaleShard, bool)> = stream::iter(page)
                .map(|s| async move { (s, delete_shard(data, s).await) })
                .buffer_unordered(STALE_PARALLEL)
                .collect()
                .await;
            let dropped: Vec<StaleShard> = results
                .iter()
                .filter(|(_, ok)| *ok)
                .map(|(s, _)| *s)
                .collect();
            swept.left |= dropped.len() < results.len();
            if !dropped.is_empty() {
                swept.deleted += dropped.len();
                if let Some(r) = propose_here(node, Command::DropStale { dropped }).await? {
                    return Err(format!("forgetting deleted shards was refused: {r:?}"));
                }
            }
            if !full {
                break;
            }
            after = Some(last);
        }
    }
    Ok(swept)
}

/// Deletes one shard copy on its node; answers whether the node confirmed.
async fn delete_shard(data: &DataPlane, s: StaleShard) -> bool {
    let request = ShardRequest::DeleteShard {
        name: ShardName {
            id: s.body,
            part: s.part,
            index: s.index,
        },
    };
    match data.call(s.node, request, Vec::new()).await {
        Ok(_) => true,
        Err(e) => {
            debug!(node = %node_id_hex(s.node), error = %e, "cannot delete a moved shard there yet");
            false
        }
    }
}

/// A local read's answer, or why it failed in one line.
fn read<T, E: std::fmt::Display>(answer: Result<Result<T, E>, MailboxError>) -> Result<T, String> {
    match answer {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the Raft node is not running".into()),
    }
}

async fn propose_first_layout(node: &Addr<RaftNode>, situation: &Situation) {
    let nodes = member_nodes(None, situation);
    if nodes.is_empty() {
        return;
    }
    let first = Layout {
        version: 1,
        nodes,
        ..Layout::default()
    };
    match node
        .send(ProposeHere(Command::SetLayout(Box::new(first))))
        .await
    {
        Ok(Ok(a)) if a.refused.is_none() => info!("first data-plane layout stored"),
        Ok(Ok(a)) => debug!(refused = ?a.refused, "first layout refused; will retry"),
        Ok(Err(e)) => debug!(error = %e, "first layout failed; will retry"),
        Err(_) => {}
    }
}

/// The transition the membership asks for, if any: a node of the layout that left the group is
/// drained (its shards are rebuilt elsewhere); members that joined are grown onto; changed
/// zones, hosts or capacities are reweighed.
pub fn automatic_change(
    layout: &Layout,
    situation: &Situation,
) -> Option<(LayoutOp, BTreeMap<u64, LayoutNode>)> {
    let gone: Vec<u64> = layout
        .nodes
        .keys()
        .filter(|id| !situation.members.contains_key(id))
        .copied()
        .collect();
    if !gone.is_empty() {
        let mut nodes = layout.nodes.clone();
        nodes.retain(|id, _| !gone.contains(id));
        if nodes.is_empty() {
            return None;
        }
        return Some((LayoutOp::Forget { nodes: gone }, nodes));
    }
    // A member that joined to replace a node of the layout takes its place.
    let replacing = situation.members.iter().find_map(|(id, m)| {
        let old = m.info.replaces?;
        let fresh = !layout.nodes.contains_key(id)
            && !layout.retired.contains_key(id)
            && ready_for_shards(Some(layout), situation, *id);
        (fresh && layout.nodes.contains_key(&old)).then_some((old, *id))
    });
    if let Some((old, new)) = replacing {
        let mut nodes = member_nodes(Some(layout), situation);
        nodes.retain(|id, _| *id == new || (layout.nodes.contains_key(id) && *id != old));
        return Some((LayoutOp::Replace { old, new }, nodes));
    }
    let desired = member_nodes(Some(layout), situation);
    if desired.is_empty() || desired == layout.nodes {
        return None;
    }
    let added: Vec<u64> = desired
        .keys()
        .filter(|id| !layout.nodes.contains_key(id))
        .copied()
        .collect();
    Some((LayoutOp::Grow { added }, desired))
}

/// What going from `before` to `after` data-plane nodes costs when it crosses a profile
/// boundary (a shrink: parts are re-encoded narrower), as one line; `None` when the profile
/// stays.
pub fn shrink_trade(before: usize, after: usize) -> Option<String> {
    let (from, to) = (
        placement::profile_for_nodes(before),
        placement::profile_for_nodes(after),
    );
    if from == to {
        return None;
    }
    // Rounded to the nearest percent: 4 of 6 is 67%.
    let efficiency = |p: placement::Profile| {
        let n = u32::from(p.k) + u32::from(p.m);
        (u32::from(p.k) * 100 + n / 2) / n
    };
    let tolerance = |p: placement::Profile| match p.m {
        0 => "no failure tolerance".to_string(),
        1 => "one-failure tolerance".to_string(),
        2 => "two-failure tolerance".to_string(),
        m => format!("{m}-failure tolerance"),
    };
    let verb = if to.m == from.m { "keeps" } else { "drops to" };
    Some(format!(
        "{before}→{after} nodes re-encodes {}+{} parts to {}+{}: {verb} {}; efficiency {}% → {}%",
        from.k,
        from.m,
        to.k,
        to.m,
        tolerance(to),
        efficiency(from),
        efficiency(to)
    ))
}

async fn stored_layout(node: &Addr<RaftNode>) -> Result<Layout, String> {
    match node.send(GetLayout).await {
        Ok(Ok(Some(l))) => Ok(l),
        Ok(Ok(None)) => Err("no data-plane layout is stored yet; retry in a few seconds".into()),
        Ok(Err(e)) => Err(format!("cannot read the layout: {e}")),
        Err(_) => Err("the Raft node is not running".into()),
    }
}

async fn propose_here(node: &Addr<RaftNode>, cmd: Command) -> Result<Option<Refusal>, String> {
    match node.send(ProposeHere(cmd)).await {
        Ok(Ok(a)) => Ok(a.refused),
        Ok(Err(ProposeError::NotLeader { .. })) => {
            Err("this node no longer leads the metadata group; retry".into())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the Raft node is not running".into()),
    }
}

fn open_transition_refusal(layout: &Layout) -> String {
    match &layout.transition {
        Some(t) => format!(
            "a layout transition is open ({}, layout version {}); one layout change at a time: wait for it to finish (hamster status)",
            t.op.describe(),
            t.id
        ),
        None => "a layout transition is open; one layout change at a time".into(),
    }
}

async fn change_layout(
    node: &Addr<RaftNode>,
    msg: ChangeLayout,
    now_ms: u64,
) -> Result<String, String> {
    let Some(situation) = node.send(MembershipView).await.ok().flatten() else {
        return Err("this node does not lead the metadata group; retry".into());
    };
    let layout = stored_layout(node).await?;
    let describe = |id: u64| node_id_hex(id);
    let begin = |op: LayoutOp, nodes: BTreeMap<u64, LayoutNode>| Command::BeginTransition {
        version: layout.version + 1,
        nodes,
        op,
        asked_by: msg.asked_by.clone(),
        now_ms,
    };
    let (cmd, done) = match msg.change {
        LayoutChange::Drain {
            node: target,
            shrink,
            force,
        } => {
            if !layout.nodes.contains_key(&target) {
                return Err(match layout.retired.get(&target) {
                    Some(Retired::Drained { .. }) => {
                        format!("node {} is drained already", describe(target))
                    }
                    Some(Retired::Tombstoned { .. }) => {
                        format!("node {} was removed", describe(target))
                    }
                    None => format!("node {} is not in the data-plane layout", describe(target)),
                });
            }
            if let Some(open) = &layout.transition {
                if !hamster_protocol::layout::may_replace(
                    &open.op,
                    &LayoutOp::Drain { node: target },
                ) {
                    return Err(open_transition_refusal(&layout));
                }
            }
            let mut nodes = layout.nodes.clone();
            nodes.remove(&target);
            if nodes.is_empty() {
                return Err("the last node of the layout cannot be drained".into());
            }
            let before = layout.nodes.len();
            if let Some(trade) = shrink_trade(before, nodes.len()) {
                let after = placement::profile_for_nodes(nodes.len());
                if after.m == 0 && !force {
                    return Err(format!(
                        "{trade}; refusing to drop below one-failure tolerance without --force"
                    ));
                }
                if !shrink {
                    return Err(format!(
                        "this drain is a shrink: {trade}; confirm with --yes"
                    ));
                }
            }
            (
                begin(LayoutOp::Drain { node: target }, nodes),
                format!(
                    "draining node {}: new writes avoid it and its shards move away",
                    describe(target)
                ),
            )
        }
        LayoutChange::Undrain { node: target } => {
            let draining = layout
                .transition
                .as_ref()
                .is_some_and(|t| t.op == LayoutOp::Drain { node: target });
            let drained = matches!(layout.retired.get(&target), Some(Retired::Drained { .. }));
            if !draining && !drained {
                if layout.transition.is_some() {
                    return Err(open_transition_refusal(&layout));
                }
                return Err(format!(
                    "node {} is neither draining nor drained",
                    describe(target)
                ));
            }
            let Some(member) = situation.members.get(&target) else {
                return Err(format!("node {} is no longer a member", describe(target)));
            };
            let mut retired = layout.clone();
            retired.retired.remove(&target);
            let mut nodes = member_nodes(Some(&retired), &situation);
            nodes.retain(|id, _| layout.nodes.contains_key(id) || *id == target);
            if !nodes.contains_key(&target) {
                return Err(format!(
                    "node {} ({}) is not answering the leader or is behind; start it (or wait for it to catch up) and undrain again",
                    describe(target),
                    member.info.cluster_addr
                ));
            }
            (
                begin(LayoutOp::Undrain { node: target }, nodes),
                format!("node {} takes shards again", describe(target)),
            )
        }
        LayoutChange::Optimize => {
            if layout.transition.is_some() {
                return Err(open_transition_refusal(&layout));
            }
            (
                begin(LayoutOp::Optimize, layout.nodes.clone()),
                format!(
                    "re-encoding parts up to {}+{} on {} nodes",
                    placement::profile_for_nodes(layout.nodes.len()).k,
                    placement::profile_for_nodes(layout.nodes.len()).m,
                    layout.nodes.len()
                ),
            )
        }
        LayoutChange::Remove { node: target } => {
            return remove(node, &layout, &situation, target, now_ms).await;
        }
    };
    match propose_here(node, cmd).await? {
        None => Ok(done),
        Some(Refusal::TransitionOpen) => Err(open_transition_refusal(&stored_layout(node).await?)),
        Some(Refusal::LayoutStale) => Err("the layout changed meanwhile; retry".into()),
        Some(Refusal::NodeTombstoned) => Err("the layout would name a removed node".into()),
        Some(r) => Err(format!("refused: {r:?}")),
    }
}

async fn remove(
    node: &Addr<RaftNode>,
    layout: &Layout,
    situation: &Situation,
    target: u64,
    now_ms: u64,
) -> Result<String, String> {
    let who = node_id_hex(target);
    if target == situation.leader {
        return Err(format!(
            "node {who} leads the metadata group; drain it, stop it so another node leads, then remove it"
        ));
    }
    match layout.retired.get(&target) {
        Some(Retired::Drained { .. }) => {}
        Some(Retired::Tombstoned { .. }) if !situation.members.contains_key(&target) => {
            return Ok(format!("node {who} was removed already"));
        }
        Some(Retired::Tombstoned { .. }) => {}
        None if layout.transition.as_ref().and_then(|t| t.op.emptied()) == Some(target) => {
            return Err(format!(
                "node {who} is still draining; remove it once `hamster status` shows it drained"
            ));
        }
        // A member that joined but never entered the layout (it never caught up: a join cut
        // short, a node that died while starting) holds no shards.
        None if !layout.nodes.contains_key(&target)
            && !layout
                .transition
                .as_ref()
                .is_some_and(|t| t.from.contains_key(&target)) => {}
        None => {
            return Err(format!(
                "node {who} still holds shards; drain it first (hamster drain {who})"
            ));
        }
    }
    let addr = situation
        .members
        .get(&target)
        .map(|m| m.info.cluster_addr.clone())
        .unwrap_or_default();
    let tomb = Command::Tombstone {
        node: target,
        cluster_addr: addr,
        now_ms,
    };
    match propose_here(node, tomb).await? {
        None => {}
        Some(r) => return Err(format!("node {who} cannot be removed: {r:?}")),
    }
    if situation.members.contains_key(&target) {
        match node.send(RemoveMember { id: target }).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(format!(
                "node {who} is tombstoned but still in the metadata group: {e}; run remove again"
            ))
            }
            Err(_) => return Err("the Raft node is not running".into()),
        }
    }
    Ok(format!(
        "node {who} removed for good; its id can never rejoin (wipe its data dir before reusing the machine)"
    ))
}

/// Spaces the walk's writes to a byte rate.
pub(crate) struct Pacer {
    bytes_per_s: u64,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub(crate) fn new(bytes_per_s: u64) -> Self {
        Pacer {
            bytes_per_s: bytes_per_s.max(1),
            next: Mutex::new(None),
        }
    }

    /// Waits until `bytes` more may be written.
    pub(crate) async fn take(&self, bytes: u64) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            let cost = Duration::from_micros(bytes.saturating_mul(1_000_000) / self.bytes_per_s);
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What happened to one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    /// Already where the layout wants it.
    InPlace,
    /// Moved or re-encoded and committed.
    Done,
    /// Could not be moved now (retried next pass).
    Failed,
    /// Beyond saving: too few shards verify and the rest were on nodes leaving and down.
    Lost,
    /// Changed under the move (overwrite, delete); nothing to do.
    Gone,
}

/// The walk of one transition.
struct Walker {
    node: Addr<RaftNode>,
    data: DataPlane,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// The transition's new layout.
    layout: Layout,
    op: LayoutOp,
    id: u64,
    stop: Arc<AtomicBool>,
    pacer: Pacer,
    parallel: usize,
    /// Stale shards deleted since the last checkpoint.
    dropped: Mutex<Vec<StaleShard>>,
    /// Passes in which each part was found unreadable with only leaving, down nodes missing.
    hopeless: Mutex<BTreeMap<(ObjectId, u32), u32>>,
}

impl Walker {
    fn stopped(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            return Err("this node stopped leading".into());
        }
        Ok(())
    }

    async fn run(self: Arc<Self>, t: Transition) -> Result<(), String> {
        let mut walk = t.progress.clone();
        // A walk resumed part way through may have moved parts it did not count: another pass
        // must show that nothing is left.
        let mut changed = walk.cursor.is_some();
        if walk.pass == 0 {
            walk.pass = 1;
        }
        let mut stale_passes = 0u32;
        loop {
            self.stopped()?;
            if walk.cursor.is_none() || walk.parts_total == 0 {
                // Keys and uploads stand in for parts: most objects have one.
                if let Ok(Ok(n)) = self.node.send(CountStored).await {
                    walk.parts_total = n;
                }
            }
            let (moved, mut failed) = self.clone().pass(&mut walk).await?;
            changed |= moved > 0;
            // Parts committed by the old layout after the walk passed their keys.
            failed += self.clone().revisits(&mut walk).await?;
            let stale = self.delete_stale().await?;
            self.checkpoint(&walk).await?;
            let clean = !changed && failed == 0;
            if clean && (!stale.left || stale_passes >= STALE_PASSES_MAX) {
                if self.close(&mut walk).await? {
                    return Ok(());
                }
            } else if clean {
                stale_passes += 1;
            }
            if failed > 0 || (clean && stale.left) {
                if failed > 0 {
                    warn!(op = %self.op.describe(), failed, pass = walk.pass, "parts could not be moved yet; another pass follows");
                }
                tokio::time::sleep(FAILED_PASS_PAUSE).await;
            }
            walk.pass += 1;
            walk.cursor = None;
            walk.parts_seen = 0;
            walk.parts_failed = 0;
            walk.parts_lost = 0;
            changed = false;
            self.checkpoint(&walk).await?;
        }
    }

    /// Closes the transition; answers `false` when revisits listed meanwhile could not all be
    /// moved (another pass follows).
    async fn close(self: &Arc<Self>, walk: &mut Progress) -> Result<bool, String> {
        loop {
            self.stopped()?;
            let end = Command::EndTransition {
                id: self.id,
                now_ms: self.clock.now_ms(),
            };
            match propose_here(&self.node, end).await? {
                None => {
                    if walk.parts_lost > 0 {
                        warn!(op = %self.op.describe(), lost = walk.parts_lost, "layout transition finished with parts beyond saving");
                    }
                    let stale_left = read(self.node.send(StaleCount).await).unwrap_or(0);
                    info!(op = %self.op.describe(), id = self.id, passes = walk.pass, stale_left, "layout transition finished");
                    return Ok(true);
                }
                // A write placed by the old layout committed since the last look.
                Some(Refusal::RevisitPending) => {
                    if self.clone().revisits(walk).await? > 0 {
                        return Ok(false);
                    }
                }
                Some(r) => return Err(format!("closing the transition was refused: {r:?}")),
            }
        }
    }

    /// Moves the parts listed for a revisit and forgets those dealt with; answers how many
    /// could not be moved yet (they stay listed).
    async fn revisits(self: Arc<Self>, walk: &mut Progress) -> Result<u64, String> {
        let mut after = 0;
        let mut failed = 0;
        loop {
            self.stopped()?;
            let page = read(
                self.node
                    .send(RevisitPage {
                        after,
                        limit: PAGE_KEYS,
                    })
                    .await,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(failed);
            };
            after = *last;
            let mut done = Vec::new();
            let mut jobs = Vec::new();
            let mut seqs = Vec::new();
            for (seq, r) in page {
                match self.recorded_part(&r).await? {
                    Some((body, part)) => {
                        jobs.push((r.at, body, part));
                        seqs.push(seq);
                    }
                    // Overwritten, deleted or completed since: nothing to move.
                    None => done.push(seq),
                }
            }
            let results = self.clone().move_all(jobs).await;
            for (seq, r) in seqs.into_iter().zip(&results) {
                if *r == Moved::Failed {
                    failed += 1;
                } else {
                    done.push(seq);
                }
            }
            self.tally(&results, walk);
            if !done.is_empty() {
                if let Some(r) =
                    propose_here(&self.node, Command::DropRevisits { seqs: done }).await?
                {
                    return Err(format!("forgetting revisits was refused: {r:?}"));
                }
            }
        }
    }

    /// The part a revisit names, with its body, as recorded now (`None` once it is gone).
    async fn recorded_part(&self, r: &Revisit) -> Result<Option<(ObjectId, PartLayout)>, String> {
        match &r.at {
            PartAt::Object {
                bucket,
                key,
                version_id,
            } => {
                let list = read(
                    self.node
                        .send(GetObject {
                            bucket: bucket.clone(),
                            key: key.clone(),
                        })
                        .await,
                )?;
                Ok(list.and_then(|l| {
                    let v = l
                        .versions
                        .into_iter()
                        .find(|v| &v.version_id == version_id)?;
                    let p = v.parts.iter().find(|p| p.part == r.part)?;
                    Some((v.part_body(p), p.clone()))
                }))
            }
            PartAt::Upload {
                bucket,
                key,
                upload_id,
            } => {
                let upload = read(
                    self.node
                        .send(GetUpload {
                            bucket: bucket.clone(),
                            key: key.clone(),
                            upload_id: upload_id.clone(),
                        })
                        .await,
                )?;
                Ok(upload.and_then(|u| {
                    let p = u.parts.get(&r.part)?;
                    Some((p.layout.body?, p.layout.clone()))
                }))
            }
        }
    }

    async fn checkpoint(&self, walk: &Progress) -> Result<(), String> {
        let dropped = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()));
        let mut walk = walk.clone();
        walk.updated_ms = self.clock.now_ms();
        let cmd = Command::TransitionCheckpoint {
            id: self.id,
            walk,
            dropped,
        };
        match propose_here(&self.node, cmd).await? {
            None => Ok(()),
            Some(r) => Err(format!("the transition ended elsewhere: {r:?}")),
        }
    }

    /// Deletes the stale shards listed on the nodes that answer (this transition's and any
    /// left by earlier ones).
    async fn delete_stale(&self) -> Result<Swept, String> {
        let stop = self.stop.clone();
        let stopped = move || stop.load(Ordering::SeqCst);
        let swept = sweep_stale(&self.node, &self.data, usize::MAX, &stopped).await?;
        self.stopped()?;
        Ok(swept)
    }

    async fn delete_old(&self, s: StaleShard) -> bool {
        delete_shard(&self.data, s).await
    }

    /// One walk over every bucket from the cursor; answers (parts moved, parts failed).
    async fn pass(self: Arc<Self>, walk: &mut Progress) -> Result<(u64, u64), String> {
        let buckets = match self.node.send(ListBuckets).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the Raft node is not running".into()),
        };
        let (mut moved, mut failed) = (0u64, 0u64);
        for b in buckets {
            let after = match &walk.cursor {
                Some(c) if c.bucket > b.name => continue,
                Some(c) if c.bucket == b.name => Some(c.key.clone()),
                _ => None,
            };
            let mut after = after;
            loop {
                self.stopped()?;
                let page = list_page(&self.node, &b.name, after.clone(), PAGE_KEYS).await?;
                let mut jobs = Vec::new();
                for (key, v) in &page.objects {
                    for p in &v.parts {
                        let at = PartAt::Object {
                            bucket: b.name.clone(),
                            key: key.clone(),
                            version_id: v.version_id.clone(),
                        };
                        jobs.push((at, v.part_body(p), p.clone()));
                    }
                }
                let (m, f) = self.clone().run_jobs(jobs, walk).await;
                moved += m;
                failed += f;
                match (page.is_truncated, page.objects.last()) {
                    (true, Some((k, _))) => {
                        after = Some(k.clone());
                        walk.cursor = Some(Cursor {
                            bucket: b.name.clone(),
                            key: k.clone(),
                        });
                        self.checkpoint(walk).await?;
                    }
                    _ => break,
                }
            }
            let (m, f) = self.clone().uploads(&b.name, walk).await?;
            moved += m;
            failed += f;
            walk.cursor = Some(Cursor {
                bucket: b.name.clone(),
                key: char::MAX.to_string(),
            });
            self.checkpoint(walk).await?;
        }
        Ok((moved, failed))
    }

    async fn uploads(
        self: Arc<Self>,
        bucket: &str,
        walk: &mut Progress,
    ) -> Result<(u64, u64), String> {
        let (mut key_marker, mut upload_id_marker) = (String::new(), String::new());
        let (mut moved, mut failed) = (0, 0);
        loop {
            self.stopped()?;
            let uploads = match self
                .node
                .send(ListUploads {
                    bucket: bucket.to_string(),
                    prefix: String::new(),
                    key_marker: key_marker.clone(),
                    upload_id_marker: upload_id_marker.clone(),
                    max: PAGE_KEYS,
                })
                .await
            {
                Ok(Ok(u)) => u,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("the Raft node is not running".into()),
            };
            let Some(last) = uploads.last() else {
                break;
            };
            (key_marker, upload_id_marker) = (last.key.clone(), last.upload_id.clone());
            let mut jobs = Vec::new();
            for u in &uploads {
                for part in u.parts.values() {
                    let Some(body) = part.layout.body else {
                        continue;
                    };
                    let at = PartAt::Upload {
                        bucket: bucket.to_string(),
                        key: u.key.clone(),
                        upload_id: u.upload_id.clone(),
                    };
                    jobs.push((at, body, part.layout.clone()));
                }
            }
            let (m, f) = self.clone().run_jobs(jobs, walk).await;
            moved += m;
            failed += f;
            if uploads.len() < PAGE_KEYS {
                break;
            }
        }
        Ok((moved, failed))
    }

    async fn run_jobs(
        self: Arc<Self>,
        jobs: Vec<(PartAt, ObjectId, PartLayout)>,
        walk: &mut Progress,
    ) -> (u64, u64) {
        let results = self.clone().move_all(jobs).await;
        self.tally(&results, walk)
    }

    /// Moves each part, a few at once; answers what happened to each, in order.
    async fn move_all(self: Arc<Self>, jobs: Vec<(PartAt, ObjectId, PartLayout)>) -> Vec<Moved> {
        stream::iter(jobs)
            .map(|(at, body, part)| {
                let w = self.clone();
                async move { w.move_part(at, body, part).await }
            })
            .buffered(self.parallel)
            .collect()
            .await
    }

    /// Counts what happened to parts into the walk; answers (parts moved, parts failed).
    fn tally(&self, results: &[Moved], walk: &mut Progress) -> (u64, u64) {
        let (mut moved, mut failed) = (0, 0);
        for r in results {
            walk.parts_seen += 1;
            match r {
                Moved::Done => moved += 1,
                Moved::Failed => {
                    failed += 1;
                    walk.parts_failed += 1;
                    self.metrics.migration_parts_failed.inc();
                }
                Moved::Lost => walk.parts_lost += 1,
                Moved::InPlace | Moved::Gone => {}
            }
        }
        (moved, failed)
    }

    /// Whether a part must be re-encoded rather than moved: it has more shards than the layout
    /// has nodes (a shrink), or `optimize` runs and the layout gives its size a wider profile.
    fn needs_reencode(&self, part: &PartLayout) -> bool {
        let shards = usize::from(part.k) + usize::from(part.m);
        if shards > self.layout.nodes.len() {
            return true;
        }
        if self.op == LayoutOp::Optimize {
            let want = self.data.profile(&self.layout, part.size);
            return want.shards() > shards || (want.m > part.m);
        }
        false
    }

    async fn move_part(&self, at: PartAt, body: ObjectId, part: PartLayout) -> Moved {
        if self.stop.load(Ordering::SeqCst) {
            // Not looked at: the pass must not count as clean.
            return Moved::Failed;
        }
        if part.homes.is_empty() {
            return Moved::InPlace;
        }
        if self.needs_reencode(&part) {
            return self.reencode(at, body, part).await;
        }
        if self.op == LayoutOp::Optimize {
            return Moved::InPlace;
        }
        let Ok(mut targets) =
            placement::rehome_targets(&self.layout, &body, part.part, &part.homes)
        else {
            return Moved::Failed;
        };
        // A target known down would stall the part until it is back (or forever, if it is
        // dead too): place over the live nodes instead while there are enough of them.
        if targets.iter().any(|t| self.data.is_down(*t)) {
            let mut live = self.layout.clone();
            live.nodes.retain(|id, _| !self.data.is_down(*id));
            if let Ok(t) = placement::rehome_targets(&live, &body, part.part, &part.homes) {
                targets = t;
            }
        }
        if targets == part.homes {
            return Moved::InPlace;
        }
        let geometry = Geometry::of_part(&part);
        let moves: Vec<(usize, u64)> = (0..part.homes.len())
            .filter(|i| targets[*i] != part.homes[*i])
            .map(|i| (i, targets[i]))
            .collect();
        let shard_bytes = geometry.shard_data_len();
        self.pacer.take(shard_bytes * moves.len() as u64).await;
        let mut landed = Vec::new();
        let mut to_rebuild = Vec::new();
        for (i, to) in &moves {
            match self.copy_shard(body, &part, *i, *to).await {
                Ok(()) => landed.push(*i),
                Err(e) => {
                    debug!(object = %body, part = part.part, shard = i, error = %e, "copy failed; rebuilding from the other shards");
                    to_rebuild.push((*i, *to));
                }
            }
        }
        if !to_rebuild.is_empty() {
            let checks = (0..part.homes.len()).map(|i| verifies(&self.data, body, &part, i));
            let found = futures_util::future::join_all(checks).await;
            let good: Vec<usize> = (0..part.homes.len())
                .filter(|i| found[*i] && !to_rebuild.iter().any(|(r, _)| r == i))
                .collect();
            if good.len() >= usize::from(part.k) {
                match rebuild_onto(&self.data, body, &part, &good, &to_rebuild).await {
                    Ok(done) => landed.extend(done),
                    Err(e) => debug!(object = %body, error = %e, "rebuild failed"),
                }
            } else {
                warn!(object = %body, part = part.part, good = good.len(), k = part.k, "too few verified shards to move this part");
                return self.unreadable(body, &part, &found);
            }
        }
        if landed.is_empty() {
            return Moved::Failed;
        }
        let mut homes = part.homes.clone();
        for i in &landed {
            homes[*i] = targets[*i];
        }
        let mut layout = part.clone();
        layout.homes = homes;
        let bytes = shard_bytes * landed.len() as u64;
        let cmd = Command::Rehome(Rehome {
            at: at.clone(),
            expect_body: body,
            expect_homes: part.homes.clone(),
            layout,
            transition: self.id,
            shards: landed.len() as u64,
            bytes,
        });
        match propose_here(&self.node, cmd).await {
            Ok(None) => {
                self.metrics
                    .migration_shards_moved
                    .inc_by(landed.len() as u64);
                self.metrics.migration_bytes_moved.inc_by(bytes);
                for i in &landed {
                    let stale = StaleShard {
                        node: part.homes[*i],
                        body,
                        part: part.part,
                        index: u16::try_from(*i).unwrap_or(u16::MAX),
                    };
                    if self.delete_old(stale).await {
                        self.dropped
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(stale);
                    }
                }
                if landed.len() < moves.len() {
                    Moved::Failed
                } else {
                    Moved::Done
                }
            }
            // The transition was replaced or ended: this walk is over; the copies stay (the
            // part still names its body) until the next walk moves it or the body goes.
            Ok(Some(Refusal::NoTransition)) => Moved::Failed,
            Ok(Some(_)) => {
                // Overwritten, deleted or moved meanwhile. A body no longer recorded can have
                // no reader, so the copies are removed; otherwise they are left alone (another
                // record may name them) and go with the body when it is deleted.
                if !self.still_recorded(&at, body).await {
                    for i in &landed {
                        let copy = StaleShard {
                            node: targets[*i],
                            body,
                            part: part.part,
                            index: u16::try_from(*i).unwrap_or(u16::MAX),
                        };
                        self.delete_old(copy).await;
                    }
                }
                Moved::Gone
            }
            Err(e) => {
                debug!(error = %e, "committing a move failed");
                Moved::Failed
            }
        }
    }

    /// A part of `body` too few of whose shards verify (`found`, by index): lost when every
    /// shard that does not verify is on a node leaving the layout that is no longer a member,
    /// or that has been down through [`HOPELESS_PASSES`] passes (a node that is only
    /// restarting is back long before); else only failed for now.
    fn unreadable(&self, body: ObjectId, part: &PartLayout, found: &[bool]) -> Moved {
        let leaving = |home: u64| !self.layout.nodes.contains_key(&home);
        let gone = |home: u64| leaving(home) && !self.data.is_member(home);
        let down = |home: u64| leaving(home) && self.data.is_down(home);
        let missing = part.homes.iter().zip(found).filter(|(_, ok)| !**ok);
        let (mut all_gone, mut all_down) = (true, true);
        for (home, _) in missing {
            all_gone &= gone(*home);
            all_down &= gone(*home) || down(*home);
        }
        let seen = {
            let mut hopeless = self.hopeless.lock().unwrap_or_else(|e| e.into_inner());
            let n = hopeless.entry((body, part.part)).or_insert(0);
            *n += 1;
            *n
        };
        if all_gone || (all_down && seen >= HOPELESS_PASSES) {
            warn!(
                part = part.part,
                "part lost: its surviving shards are too few to rebuild it"
            );
            Moved::Lost
        } else {
            Moved::Failed
        }
    }

    /// Whether the part at `at` still names `body`.
    async fn still_recorded(&self, at: &PartAt, body: ObjectId) -> bool {
        match at {
            PartAt::Object {
                bucket,
                key,
                version_id,
            } => match self
                .node
                .send(GetObject {
                    bucket: bucket.clone(),
                    key: key.clone(),
                })
                .await
            {
                Ok(Ok(Some(list))) => list.versions.iter().any(|v| {
                    &v.version_id == version_id && v.parts.iter().any(|p| v.part_body(p) == body)
                }),
                Ok(Ok(None)) => false,
                // When in doubt, keep the copies.
                _ => true,
            },
            PartAt::Upload {
                bucket,
                key,
                upload_id,
            } => match self
                .node
                .send(GetUpload {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    upload_id: upload_id.clone(),
                })
                .await
            {
                Ok(Ok(Some(u))) => u.parts.values().any(|p| p.layout.body == Some(body)),
                // Completed meanwhile: the object's version may name the part now.
                Ok(Ok(None)) => match self
                    .node
                    .send(GetObject {
                        bucket: bucket.clone(),
                        key: key.clone(),
                    })
                    .await
                {
                    Ok(Ok(Some(list))) => list
                        .versions
                        .iter()
                        .any(|v| v.parts.iter().any(|p| v.part_body(p) == body)),
                    Ok(Ok(None)) => false,
                    _ => true,
                },
                _ => true,
            },
        }
    }

    /// Copies shard `i` of a part from its home to `to`, stripe by stripe, and checks the copy
    /// against the recorded BLAKE3.
    async fn copy_shard(
        &self,
        body: ObjectId,
        part: &PartLayout,
        i: usize,
        to: u64,
    ) -> Result<(), String> {
        let from = self.data.home_of(part, i);
        if self.data.is_down(from) {
            return Err("its home is down".into());
        }
        let index = u16::try_from(i).map_err(|_| "shard index out of range".to_string())?;
        let name = ShardName {
            id: body,
            part: part.part,
            index,
        };
        let mut sender = ShardSender::start_for(&self.data, to, name, part);
        let stripes = Geometry::of_part(part).stripes();
        if stripes == 0 {
            sender.push(Vec::new(), true).await;
        }
        for s in 0..stripes {
            let chunk = self
                .data
                .shard_chunk(body, part, index, s)
                .await
                .map_err(|e| e.to_string())?;
            sender.push(chunk, s + 1 == stripes).await;
        }
        match sender.outcome().await {
            Ok(h) if Some(&h) == part.shard_blake3.get(i) => Ok(()),
            Ok(h) => Err(format!("the copy hashes to {h}, not the recorded checksum")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Re-encodes a part under a fresh body at the profile the new layout gives its size.
    async fn reencode(&self, at: PartAt, body: ObjectId, part: PartLayout) -> Moved {
        let fresh = self.data.ids().object_id();
        let Ok(mut writer) = self
            .data
            .begin_part(fresh, part.part, Some(part.size))
            .await
        else {
            return Moved::Failed;
        };
        let geometry = Geometry::of_part(&part);
        let step = REENCODE_STEP_BYTES.div_ceil(geometry.stripe_bytes().max(1))
            * geometry.stripe_bytes().max(1);
        let mut avoid = std::collections::BTreeSet::new();
        let mut pos = 0u64;
        while pos < part.size {
            let end = (pos + step).min(part.size);
            let bytes = match self.data.read_part(body, &part, pos..end, &mut avoid).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(object = %body, part = part.part, error = %e, "cannot read a part to re-encode it");
                    self.data.discard(vec![fresh]);
                    let checks =
                        (0..part.homes.len()).map(|i| verifies(&self.data, body, &part, i));
                    let found = futures_util::future::join_all(checks).await;
                    return self.unreadable(body, &part, &found);
                }
            };
            // Paced by the shard bytes this writes: (k + m) / k of the data read.
            let profile = self.data.profile(&self.layout, part.size);
            let written =
                bytes.len() as u64 * profile.shards() as u64 / u64::from(profile.k.max(1));
            self.pacer.take(written).await;
            if writer.write(&bytes).await.is_err() {
                return Moved::Failed;
            }
            pos = end;
        }
        let mut layout = match writer.finish().await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = ?e, "re-encoded part could not be stored");
                self.data.discard(vec![fresh]);
                return Moved::Failed;
            }
        };
        layout.md5 = part.md5.clone();
        layout.body = Some(fresh);
        let shards = layout.homes.len() as u64;
        let bytes = Geometry::of_part(&layout).shard_data_len() * shards;
        let cmd = Command::Rehome(Rehome {
            at,
            expect_body: body,
            expect_homes: part.homes.clone(),
            layout,
            transition: self.id,
            shards,
            bytes,
        });
        match propose_here(&self.node, cmd).await {
            Ok(None) => {
                self.metrics.migration_shards_moved.inc_by(shards);
                self.metrics.migration_bytes_moved.inc_by(bytes);
                Moved::Done
            }
            Ok(Some(Refusal::NoTransition)) => {
                self.data.discard(vec![fresh]);
                Moved::Failed
            }
            Ok(Some(_)) => {
                self.data.discard(vec![fresh]);
                Moved::Gone
            }
            // The outcome is unknown (the entry may still commit): the fresh body stays. If it
            // never commits, nothing names it and the orphan sweep removes it.
            Err(_) => Moved::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrink_says_what_it_trades() {
        assert_eq!(shrink_trade(7, 6), None);
        assert_eq!(
            shrink_trade(6, 5).as_deref(),
            Some("6→5 nodes re-encodes 4+2 parts to 3+2: keeps two-failure tolerance; efficiency 67% → 60%")
        );
        assert_eq!(
            shrink_trade(5, 4).as_deref(),
            Some("5→4 nodes re-encodes 3+2 parts to 3+1: drops to one-failure tolerance; efficiency 60% → 75%")
        );
        assert!(shrink_trade(2, 1).unwrap().contains("no failure tolerance"));
    }
}
