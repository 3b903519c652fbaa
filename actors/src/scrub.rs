//! The scrubber (DESIGN §3 `Scrubber`; issue 17; seed v0.4): the background walk that keeps
//! stored data whole without an operator. It runs on every node and moves only where this node
//! leads the metadata group:
//!
//! - a pass walks every bucket — the objects (every version of every key), then the multipart
//!   uploads in progress — part by part. Each shard's home verifies its shard against the
//!   replicated BLAKE3 where it lies (shard bytes cross the network only for a rebuild), and
//!   missing or rotted shards are rebuilt from `k` verified survivors onto their home, as
//!   `hamster repair` does ([`crate::repair::heal_part`], shared);
//! - progress is a cursor in the replicated state ([`hamster_protocol::scrub`]), moved one page
//!   at a time by compare-and-set together with what the page found, so a new leader resumes
//!   where the last one stopped and a deposed leader's late step is refused;
//! - it is paced by a byte budget per node (shard bytes hashed per second, times the nodes in
//!   the layout, since each home hashes its own shards), and steps aside while this node is
//!   busy with clients (more than [`ScrubConfig::yield_in_flight`] S3 requests in flight),
//!   while a layout transition is open (its walk moves and rebuilds parts), while another sweep
//!   holds it (`hamster repair`), and while an operator has paused it;
//! - passes begin [`ScrubConfig::every`] apart (an operator's `hamster scrub --now` begins one
//!   at once); what the last complete pass found is the durability `status` and `/metrics`
//!   report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use hamster_protocol::meta::{Command, ObjectId, PartLayout};
use hamster_protocol::scrub::{Cursor, Health, ScrubState, Stage, Tally};
use hamster_protocol::stripe::Geometry;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::data::{DataPlane, HealSoon};
use crate::layout::Pacer;
use crate::metrics::Metrics;
use crate::raft::node::{
    GetLayout, GetObject, GetScrub, ListBuckets, ListUploads, MembershipView, Propose, RaftNode,
};
use crate::repair::{heal_part, list_page, Problem};

/// How often the actor looks whether this node leads and whether a pass should move.
pub const SCRUB_TICK: Duration = Duration::from_secs(1);
/// Shard bytes each node hashes per second for the scrubber, by default (32 MiB/s).
pub const SCRUB_BYTES_PER_S_DEFAULT: u64 = 32 << 20;
/// How long after one pass began the next may begin, by default.
pub const SCRUB_EVERY_DEFAULT: Duration = Duration::from_secs(3600);
/// S3 requests in flight on the leader above which the scrubber waits, by default.
pub const SCRUB_YIELD_IN_FLIGHT_DEFAULT: i64 = 64;
/// Keys listed (and parts at most verified) per step: one replicated command per step.
const STEP_KEYS: usize = 64;
/// Parts verified at once.
const SCRUB_PARALLEL: usize = 4;
/// How long the scrubber waits while it is told to (paused, held, a transition, busy).
const IDLE: Duration = Duration::from_secs(1);
/// Heal-soon keys taken per tick.
const HEALS_PER_TICK: usize = 16;
/// Tries of one heal-soon key before it is left to the scrub pass.
const HEAL_SOON_TRIES_MAX: u32 = 40;
/// The first wait before a heal-soon key is tried again; doubled each try.
const HEAL_SOON_FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries of a heal-soon key.
const HEAL_SOON_RETRY_MAX: Duration = Duration::from_secs(60);
/// How long it waits between looks while clients keep this node busy.
const YIELD_WAIT: Duration = Duration::from_millis(200);
/// The longest it keeps yielding before it takes one step anyway, so a node that is never
/// idle is still scrubbed (slowly).
const YIELD_MAX: Duration = Duration::from_secs(10);

/// How the scrubber paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Shard bytes each node hashes per second for the scrubber, at most.
    pub bytes_per_s: u64,
    /// How long after one pass began the next may begin.
    pub every: Duration,
    /// S3 requests in flight on this node above which the scrubber waits (0: never waits).
    pub yield_in_flight: i64,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            bytes_per_s: SCRUB_BYTES_PER_S_DEFAULT,
            every: SCRUB_EVERY_DEFAULT,
            yield_in_flight: SCRUB_YIELD_IN_FLIGHT_DEFAULT,
        }
    }
}

/// The scrubber actor; see the module docs.
pub struct Scrubber {
    node: Addr<RaftNode>,
    data: DataPlane,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    config: ScrubConfig,
    gauges: Option<Gauges>,
    busy: bool,
    walk: Option<WalkHandle>,
    /// A round of heal-soon work is running.
    healing_soon: bool,
}

struct WalkHandle {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Scrubber {
    /// A scrubber for the member `node` whose data plane is `data`.
    pub fn new(
        node: Addr<RaftNode>,
        data: DataPlane,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        config: ScrubConfig,
    ) -> Self {
        let gauges = Gauges::register(&metrics);
        Scrubber {
            node,
            data,
            clock,
            metrics,
            config,
            gauges,
            busy: false,
            walk: None,
            healing_soon: false,
        }
    }

    /// Heals the keys this node wrote degraded (see [`crate::data::HealSoon`]), on every node,
    /// leader or not: the missing shards are rebuilt as soon as their homes answer.
    fn heal_soon(&mut self, ctx: &mut Context<Self>) {
        if self.healing_soon {
            return;
        }
        let due = self.data.due_heals(HEALS_PER_TICK);
        if let Some(g) = &self.gauges {
            g.heal_soon
                .set(i64::try_from(self.data.heals_waiting() + due.len()).unwrap_or(i64::MAX));
        }
        if due.is_empty() {
            return;
        }
        self.healing_soon = true;
        let (node, data, clock, metrics) = (
            self.node.clone(),
            self.data.clone(),
            self.clock.clone(),
            self.metrics.clone(),
        );
        let work = async move {
            for h in due {
                heal_key(&node, &data, clock.as_ref(), &metrics, h).await;
            }
        };
        ctx.spawn(work.into_actor(self).map(|(), act, _| {
            act.healing_soon = false;
        }));
    }

    fn walking(&self) -> bool {
        self.walk
            .as_ref()
            .is_some_and(|w| !w.done.load(Ordering::SeqCst))
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let node = self.node.clone();
        let work = async move {
            let leads = node.send(MembershipView).await.ok().flatten().is_some();
            let state = node.send(GetScrub).await.ok().and_then(Result::ok);
            (leads, state)
        };
        ctx.spawn(work.into_actor(self).map(|(leads, state), act, _| {
            act.busy = false;
            if let (Some(g), Some(s)) = (&act.gauges, &state) {
                g.show(s);
            }
            if !leads {
                if let Some(w) = act.walk.take() {
                    w.stop.store(true, Ordering::SeqCst);
                }
                return;
            }
            if act.walking() {
                return;
            }
            act.start_walk();
        }));
    }

    fn start_walk(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        self.walk = Some(WalkHandle {
            stop: stop.clone(),
            done: done.clone(),
        });
        let walk = Walk {
            node: self.node.clone(),
            data: self.data.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            config: self.config,
            stop,
            pacer: Pacer::new(self.config.bytes_per_s),
            nodes: 1,
        };
        actix_rt::spawn(async move {
            let mut walk = walk;
            if let Err(e) = walk.run().await {
                info!(error = %e, "scrubber stopped; it resumes from the replicated cursor on the next tick");
            }
            done.store(true, Ordering::SeqCst);
        });
    }
}

impl Actor for Scrubber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SCRUB_TICK, |act, ctx| {
            act.tick(ctx);
            act.heal_soon(ctx);
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(w) = self.walk.take() {
            w.stop.store(true, Ordering::SeqCst);
        }
    }
}

impl actix::Supervised for Scrubber {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.busy = false;
        self.healing_soon = false;
        if let Some(w) = self.walk.take() {
            w.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether a layout transition is open (or the layout cannot be read).
async fn transition_open(node: &Addr<RaftNode>) -> bool {
    match node.send(GetLayout).await {
        Ok(Ok(l)) => l.is_some_and(|l| l.transition.is_some()),
        _ => true,
    }
}

/// Heals every part of every version of `h`'s key; puts it back on the list, later, while a
/// part is short of a shard (its home is still down), until [`HEAL_SOON_TRIES_MAX`].
async fn heal_key(
    node: &Addr<RaftNode>,
    data: &DataPlane,
    clock: &dyn Clock,
    metrics: &Metrics,
    mut h: HealSoon,
) {
    let later = |mut h: HealSoon| {
        h.tries += 1;
        if h.tries >= HEAL_SOON_TRIES_MAX {
            debug!(bucket = %h.bucket, key = %h.key, "degraded write not healed yet; the next scrub pass will");
            return;
        }
        let wait = HEAL_SOON_FIRST_RETRY
            .saturating_mul(1 << h.tries.min(6))
            .min(HEAL_SOON_RETRY_MAX);
        h.due = Instant::now() + wait;
        data.heal_later(h);
    };
    // Another sweep holds the scrubber off, an operator paused it, or a layout transition is
    // moving parts: not now.
    match node.send(GetScrub).await {
        Ok(Ok(s))
            if !s.paused && s.held(clock.now_ms()).is_none() && !transition_open(node).await => {}
        Ok(Ok(_)) => {
            h.tries = h.tries.saturating_sub(1);
            return later(h);
        }
        _ => return later(h),
    }
    let versions = match node
        .send(GetObject {
            bucket: h.bucket.clone(),
            key: h.key.clone(),
        })
        .await
    {
        Ok(Ok(v)) => v,
        _ => return later(h),
    };
    let mut whole = true;
    let mut rebuilt = 0;
    for v in versions.iter().flat_map(|l| l.versions.iter()) {
        for p in &v.parts {
            let what = format!("{}/{} part {}", h.bucket, h.key, p.part);
            let healed = heal_part(data, v.part_body(p), p, &what).await;
            rebuilt += healed.rebuilt;
            whole &= healed.health == Health::Full;
        }
    }
    metrics.scrub_shards_rebuilt.inc_by(rebuilt as u64);
    if whole {
        if rebuilt > 0 {
            info!(bucket = %h.bucket, key = %h.key, rebuilt, "a write acknowledged degraded is at full redundancy again");
        }
    } else {
        later(h);
    }
}

/// The walk of one leader's term: begins passes when due and steps them forward.
struct Walk {
    node: Addr<RaftNode>,
    data: DataPlane,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    config: ScrubConfig,
    stop: Arc<AtomicBool>,
    pacer: Pacer,
    /// Nodes in the layout: the pace is per node, each hashing its own shards.
    nodes: u64,
}

/// What one step did.
enum Stepped {
    /// It scrubbed its page: the cursor moves to `to`, adding `tally`; `done` ends the pass.
    Moved {
        to: Cursor,
        tally: Tally,
        done: bool,
    },
    /// It was told to stop half way, after rebuilding `rebuilt` shards.
    Stopped { rebuilt: u64 },
}

/// One part to verify, and how to name it in a log line.
struct Item {
    body: ObjectId,
    part: PartLayout,
    what: String,
}

impl Walk {
    fn stopped(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            Err("this node no longer leads the metadata group".into())
        } else {
            Ok(())
        }
    }

    async fn state(&self) -> Result<ScrubState, String> {
        self.node
            .send(GetScrub)
            .await
            .map_err(|_| "the Raft node is not running".to_string())?
            .map_err(|e| e.to_string())
    }

    async fn propose(&self, cmd: Command) -> Result<bool, String> {
        match self.node.send(Propose(cmd)).await {
            Ok(Ok(a)) => Ok(a.refused.is_none()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the Raft node is not running".into()),
        }
    }

    async fn run(&mut self) -> Result<(), String> {
        loop {
            self.stopped()?;
            let state = self.state().await?;
            let now = self.clock.now_ms();
            let layout = self
                .node
                .send(GetLayout)
                .await
                .map_err(|_| "the Raft node is not running".to_string())?
                .map_err(|e| e.to_string())?;
            let transition = layout.as_ref().is_some_and(|l| l.transition.is_some());
            if let Some(l) = &layout {
                self.nodes = (l.nodes.len() as u64).max(1);
            }
            if state.paused || transition || state.held(now).is_some() {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            let Some(run) = state.running.clone() else {
                if !state.due(
                    now,
                    u64::try_from(self.config.every.as_millis()).unwrap_or(u64::MAX),
                ) {
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
                let pass = state.pass + 1;
                if self
                    .propose(Command::ScrubBegin { pass, now_ms: now })
                    .await?
                {
                    info!(pass, "scrub pass begins");
                }
                continue;
            };
            self.yield_to_clients().await;
            self.stopped()?;
            let (to, tally, done) = match self.step(&run.cursor).await? {
                Stepped::Moved { to, tally, done } => (to, tally, done),
                Stepped::Stopped { rebuilt } => {
                    debug!(
                        pass = state.pass,
                        "scrub step stopped half way; looking again"
                    );
                    self.count_rebuilt(state.pass, &run.cursor, rebuilt).await;
                    continue;
                }
            };
            let accepted = self
                .propose(Command::ScrubStep {
                    pass: state.pass,
                    from: run.cursor.clone(),
                    to,
                    tally,
                    done,
                    now_ms: self.clock.now_ms(),
                })
                .await?;
            if !accepted {
                debug!(
                    pass = state.pass,
                    "scrub step refused (the pass moved under it); reading the state again"
                );
                continue;
            }
            self.metrics
                .scrub_shards_verified
                .inc_by(tally.shards_verified);
            self.metrics
                .scrub_shards_rebuilt
                .inc_by(tally.shards_rebuilt);
            self.metrics.scrub_bytes_verified.inc_by(tally.shard_bytes);
            if done {
                let mut total = run.tally;
                total.add(&tally);
                let took_s = self.clock.now_ms().saturating_sub(run.started_ms) as f64 / 1000.0;
                info!(
                    pass = state.pass,
                    parts = total.parts(),
                    full = total.full.parts,
                    degraded = total.degraded.parts,
                    at_risk = total.at_risk.parts,
                    unrecoverable = total.unrecoverable.parts,
                    rebuilt = total.shards_rebuilt,
                    took_s,
                    "scrub pass {} done: {} parts, {} shards rebuilt, {} at risk, {} unrecoverable",
                    state.pass,
                    total.parts(),
                    total.shards_rebuilt,
                    total.at_risk.parts,
                    total.unrecoverable.parts
                );
            }
        }
    }

    /// Waits while this node answers many S3 requests, up to [`YIELD_MAX`].
    async fn yield_to_clients(&self) {
        if self.config.yield_in_flight <= 0 {
            return;
        }
        let since = Instant::now();
        while self.metrics.s3_in_flight.get() > self.config.yield_in_flight
            && since.elapsed() < YIELD_MAX
            && !self.stop.load(Ordering::SeqCst)
        {
            tokio::time::sleep(YIELD_WAIT).await;
        }
    }

    /// Counts the shards a step that stopped half way had already rebuilt: the step is not
    /// committed and, retaken, finds those shards whole, so unless they are counted now no
    /// pass, no total and no metric would ever show them. The cursor stays where it is.
    async fn count_rebuilt(&self, pass: u64, at: &Cursor, rebuilt: u64) {
        if rebuilt == 0 {
            return;
        }
        let tally = Tally {
            shards_rebuilt: rebuilt,
            ..Tally::default()
        };
        let counted = self
            .propose(Command::ScrubStep {
                pass,
                from: at.clone(),
                to: at.clone(),
                tally,
                done: false,
                now_ms: self.clock.now_ms(),
            })
            .await;
        match counted {
            Ok(true) => self.metrics.scrub_shards_rebuilt.inc_by(rebuilt),
            Ok(false) => {
                debug!(
                    pass,
                    rebuilt,
                    "shards rebuilt by a stopped step not counted: the pass moved under it"
                )
            }
            Err(e) => {
                debug!(pass, rebuilt, error = %e, "shards rebuilt by a stopped step not counted")
            }
        }
    }

    /// Scrubs one page after `from`: answers where it ended, what it found and whether the
    /// pass is complete, or, when told to stop half way, how many shards it rebuilt first.
    async fn step(&self, from: &Cursor) -> Result<Stepped, String> {
        let mut buckets: Vec<String> = self
            .node
            .send(ListBuckets)
            .await
            .map_err(|_| "the Raft node is not running".to_string())?
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|b| b.name)
            .collect();
        buckets.sort();
        // The bucket the cursor is in, or the next one if it was deleted.
        let Some(bucket) = buckets.iter().find(|b| **b >= from.bucket).cloned() else {
            return Ok(Stepped::Moved {
                to: from.clone(),
                tally: Tally::default(),
                done: true,
            });
        };
        let mut at = if bucket == from.bucket {
            from.clone()
        } else {
            Cursor {
                bucket: bucket.clone(),
                ..Cursor::default()
            }
        };
        let (items, finished) = match at.stage {
            Stage::Objects => self.object_page(&mut at).await?,
            Stage::Uploads => self.upload_page(&mut at).await?,
        };
        let (tally, stopped) = self.scrub_items(items).await;
        if stopped {
            return Ok(Stepped::Stopped {
                rebuilt: tally.shards_rebuilt,
            });
        }
        if finished {
            match at.stage {
                Stage::Objects => {
                    at.stage = Stage::Uploads;
                    at.key = None;
                    at.upload_id.clear();
                }
                Stage::Uploads => {
                    let next = buckets.iter().find(|b| **b > bucket).cloned();
                    match next {
                        Some(b) => {
                            at = Cursor {
                                bucket: b,
                                ..Cursor::default()
                            }
                        }
                        None => {
                            return Ok(Stepped::Moved {
                                to: at,
                                tally,
                                done: true,
                            })
                        }
                    }
                }
            }
        }
        Ok(Stepped::Moved {
            to: at,
            tally,
            done: false,
        })
    }

    /// The parts of up to [`STEP_KEYS`] keys after the cursor (every version of each), moving
    /// the cursor past them; `true` once the bucket's objects are done.
    async fn object_page(&self, at: &mut Cursor) -> Result<(Vec<Item>, bool), String> {
        let page = list_page(&self.node, &at.bucket, at.key.clone(), STEP_KEYS).await?;
        let mut items = Vec::new();
        for (key, _) in &page.objects {
            let versions = self
                .node
                .send(GetObject {
                    bucket: at.bucket.clone(),
                    key: key.clone(),
                })
                .await
                .map_err(|_| "the Raft node is not running".to_string())?
                .map_err(|e| e.to_string())?;
            for v in versions.iter().flat_map(|l| l.versions.iter()) {
                for p in &v.parts {
                    items.push(Item {
                        body: v.part_body(p),
                        part: p.clone(),
                        what: format!("{}/{key} part {}", at.bucket, p.part),
                    });
                }
            }
        }
        let finished = !page.is_truncated;
        if let Some((k, _)) = page.objects.last() {
            at.key = Some(k.clone());
        }
        Ok((items, finished))
    }

    /// The parts of up to [`STEP_KEYS`] uploads in progress after the cursor; `true` once the
    /// bucket's uploads are done.
    async fn upload_page(&self, at: &mut Cursor) -> Result<(Vec<Item>, bool), String> {
        let uploads = self
            .node
            .send(ListUploads {
                bucket: at.bucket.clone(),
                prefix: String::new(),
                key_marker: at.key.clone().unwrap_or_default(),
                upload_id_marker: at.upload_id.clone(),
                max: STEP_KEYS,
            })
            .await
            .map_err(|_| "the Raft node is not running".to_string())?
            .map_err(|e| e.to_string())?;
        let mut items = Vec::new();
        for u in &uploads {
            for (n, part) in &u.parts {
                items.push(Item {
                    body: part.layout.body.unwrap_or(ObjectId([0; 16])),
                    part: part.layout.clone(),
                    what: format!("{}/{} upload {} part {n}", at.bucket, u.key, u.upload_id),
                });
            }
        }
        if let Some(last) = uploads.last() {
            at.key = Some(last.key.clone());
            at.upload_id = last.upload_id.clone();
        }
        Ok((items, uploads.len() < STEP_KEYS))
    }

    /// Whether the walk must stop taking parts: this node was deposed, an operator paused the
    /// scrubber, another sweep holds it off, or a layout transition opened (its walk moves
    /// parts; a rebuild onto a home the part is leaving would leave a copy nobody tracks).
    async fn told_to_stop(&self) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            return true;
        }
        let held = match self.node.send(GetScrub).await {
            Ok(Ok(s)) => s.paused || s.held(self.clock.now_ms()).is_some(),
            _ => true,
        };
        held || transition_open(&self.node).await
    }

    /// Verifies and heals `items`, [`SCRUB_PARALLEL`] at once, at the pace. Answers what it
    /// found, and `true` when told to stop half way (then the tally covers only the parts
    /// taken before: the step is not committed, the parts already healed stay healed, and the
    /// next step verifies them again).
    async fn scrub_items(&self, items: Vec<Item>) -> (Tally, bool) {
        let budget_nodes = self.nodes;
        let aborted = AtomicBool::new(false);
        let aborted = &aborted;
        let results: Vec<_> = stream::iter(items)
            .map(|item| async move {
                let n = u64::from(item.part.k) + u64::from(item.part.m);
                let per_node = Geometry::of_part(&item.part)
                    .shard_data_len()
                    .saturating_mul(n)
                    / budget_nodes;
                self.pacer.take(per_node).await;
                // Looked at after the wait for the pace, right before the part is touched: a
                // hold that landed meanwhile keeps it untouched.
                if aborted.load(Ordering::SeqCst) || self.told_to_stop().await {
                    aborted.store(true, Ordering::SeqCst);
                    return None;
                }
                let healed = heal_part(&self.data, item.body, &item.part, &item.what).await;
                Some((item, healed))
            })
            .buffer_unordered(SCRUB_PARALLEL)
            .collect()
            .await;
        let mut tally = Tally::default();
        for (item, healed) in results.into_iter().flatten() {
            tally.count(healed.health, item.part.size);
            tally.shards_verified += healed.verified as u64;
            tally.shards_rebuilt += healed.rebuilt as u64;
            tally.shards_unreachable += healed.unreachable as u64;
            tally.shard_bytes += healed.shard_bytes;
            let note = match (&healed.problem, healed.health) {
                (Some(Problem::Unrecoverable(why)), _) => Some(format!("part unrecoverable: {why}")),
                (Some(Problem::Failed(why)), _) => {
                    Some(format!("rebuild failed (the next pass retries): {why}"))
                }
                (None, Health::AtRisk) => Some(format!(
                    "part {} at risk: one more lost shard loses it ({} shards on nodes that did not answer)",
                    item.what, healed.unreachable
                )),
                _ => None,
            };
            if healed.rebuilt > 0 || note.is_some() {
                if let Some(held) = self.data.admit_sweep_warning() {
                    match note {
                        Some(n) => warn!("scrubber: {n}{held}"),
                        None => {
                            info!(part = %item.what, rebuilt = healed.rebuilt, "scrubber rebuilt shards{held}")
                        }
                    }
                }
            }
        }
        (tally, aborted.load(Ordering::SeqCst))
    }
}

/// The scrubber's gauges, set from the replicated state every tick on every node.
struct Gauges {
    parts: prometheus::IntGaugeVec,
    bytes: prometheus::IntGaugeVec,
    pass: prometheus::IntGauge,
    running: prometheus::IntGauge,
    pass_parts: prometheus::IntGauge,
    last_done: prometheus::IntGauge,
    healed: prometheus::IntGauge,
    paused: prometheus::IntGauge,
    heal_soon: prometheus::IntGauge,
}

impl Gauges {
    fn register(metrics: &Metrics) -> Option<Self> {
        use prometheus::{IntGauge, IntGaugeVec, Opts};
        let g = Gauges {
            parts: IntGaugeVec::new(
                Opts::new(
                    "hamster_parts",
                    "Parts by redundancy state as the last complete scrub pass found them (full, degraded, at_risk, unrecoverable)",
                ),
                &["state"],
            )
            .ok()?,
            bytes: IntGaugeVec::new(
                Opts::new(
                    "hamster_part_bytes",
                    "Object bytes by redundancy state as the last complete scrub pass found them",
                ),
                &["state"],
            )
            .ok()?,
            pass: IntGauge::new("hamster_scrub_pass", "Scrub passes begun").ok()?,
            running: IntGauge::new("hamster_scrub_running", "1 while a scrub pass is in progress")
                .ok()?,
            pass_parts: IntGauge::new(
                "hamster_scrub_pass_parts",
                "Parts the scrub pass in progress has verified so far",
            )
            .ok()?,
            last_done: IntGauge::new(
                "hamster_scrub_last_pass_done_timestamp_seconds",
                "When the last complete scrub pass ended (Unix seconds; 0: none yet)",
            )
            .ok()?,
            healed: IntGauge::new(
                "hamster_scrub_shards_healed",
                "Shards the scrubber rebuilt over every pass, cluster-wide",
            )
            .ok()?,
            paused: IntGauge::new("hamster_scrub_paused", "1 while an operator paused the scrubber")
                .ok()?,
            heal_soon: IntGauge::new(
                "hamster_heal_soon_keys",
                "Keys this node wrote with fewer than all shards, waiting for their missing homes to answer",
            )
            .ok()?,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(g.parts.clone()),
            Box::new(g.bytes.clone()),
            Box::new(g.pass.clone()),
            Box::new(g.running.clone()),
            Box::new(g.pass_parts.clone()),
            Box::new(g.last_done.clone()),
            Box::new(g.healed.clone()),
            Box::new(g.paused.clone()),
            Box::new(g.heal_soon.clone()),
        ];
        for c in collectors {
            if let Err(e) = metrics.register(c) {
                warn!(error = %e, "scrubber metrics not registered");
                return None;
            }
        }
        // Every state from the start, so rules and dashboards see zeros, not gaps.
        for h in [
            Health::Full,
            Health::Degraded,
            Health::AtRisk,
            Health::Unrecoverable,
        ] {
            g.parts.with_label_values(&[h.label()]).set(0);
            g.bytes.with_label_values(&[h.label()]).set(0);
        }
        Some(g)
    }

    fn show(&self, s: &ScrubState) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(last) = &s.last {
            for h in [
                Health::Full,
                Health::Degraded,
                Health::AtRisk,
                Health::Unrecoverable,
            ] {
                let c = last.tally.of(h);
                self.parts.with_label_values(&[h.label()]).set(int(c.parts));
                self.bytes.with_label_values(&[h.label()]).set(int(c.bytes));
            }
            self.last_done.set(int(last.done_ms / 1000));
        }
        self.pass.set(int(s.pass));
        self.running.set(i64::from(s.running.is_some()));
        self.pass_parts
            .set(int(s.running.as_ref().map_or(0, |r| r.tally.parts())));
        self.healed.set(int(s.healed_total));
        self.paused.set(i64::from(s.paused));
    }
}
