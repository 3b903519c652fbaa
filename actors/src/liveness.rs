//! The liveness detector (DESIGN §2, `Liveness`; issue 17): one actor per node, the only
//! answer this node has to "is node X up?".
//!
//! - It is fed passively: every shard request of the data plane and every Raft RPC reports
//!   its outcome ([`LivenessHandle::observe`]); nobody asks a node whether it is up on a
//!   client's time. Background probes fill the gaps: every [`PROBE_EVERY`] the actor asks the
//!   data plane to probe each node whose last request failed, and on a serving node
//!   ([`LivenessHandle::probe_all_members`]) every member, so a node that dies is found
//!   without a client paying for the discovery and a node that returns is found at once.
//! - The rules (how many failures or how long a silence make a node down, an answer brings it
//!   back) are the pure [`hamster_protocol::liveness::Tracker`]; this actor only moves
//!   observations into it and publishes what it decides.
//! - Hot paths never wait for the actor: it publishes a snapshot (`View`) behind a lock that
//!   [`LivenessHandle::is_down`] reads in place. Observations are posted, not awaited, into a
//!   bounded mailbox; when it is full an observation is dropped, which at worst delays a
//!   verdict by one request.
//! - A change of state is logged once, here (WARN down, INFO back), and counted; each member
//!   has a gauge `hamster_member_up{node="<hex id>"}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use hamster_protocol::liveness::{Outcome, Tracker, Transition};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::peer::PeerError;
use crate::raft::types::NodeId;

/// How often failing nodes (and, on a serving node, all members) are probed, and how often
/// the silence rule is applied.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Observations queued for the actor before new ones are dropped.
pub const OBSERVATIONS_QUEUED_MAX: usize = 4_096;

/// What the detector needs from the data plane: who the members are and a cheap request to
/// one of them. The probe reports its own outcome through [`LivenessHandle::observe`], as any
/// request does. Both answer `None` once the data plane is gone, which stops the detector.
pub trait Prober: Send + Sync {
    /// The members of the cluster other than this node.
    fn members(&self) -> Option<BTreeSet<NodeId>>;
    /// A probe of `node`, to be run by the detector.
    fn probe(&self, node: NodeId) -> Option<BoxFuture<'static, ()>>;
}

/// What the detector has decided, for readers that must not wait for it.
#[derive(Debug, Default)]
struct View {
    down: BTreeSet<NodeId>,
    /// When each node last answered anything.
    answered: BTreeMap<NodeId, Instant>,
}

/// A request's outcome, as observed by whoever made it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Observed {
    /// The node asked.
    pub node: NodeId,
    /// What came of it.
    pub outcome: Outcome,
    /// Why it failed, for the line that reports the node down.
    pub why: Option<String>,
}

/// Whether `node` is up, as the detector decides it now.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "bool")]
pub struct IsUp(pub NodeId);

/// Gives the detector its prober.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetProber(pub Arc<dyn Prober>);

/// Probe every member each [`PROBE_EVERY`], not only the failing ones.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ProbeAllMembers;

/// The detector's metrics.
#[derive(Clone)]
struct Gauges {
    up: IntGaugeVec,
    transitions: IntCounterVec,
}

impl Gauges {
    fn register(metrics: &Metrics) -> Option<Self> {
        let up = IntGaugeVec::new(
            Opts::new(
                "hamster_member_up",
                "1 while this node takes the member for up, 0 while for down",
            ),
            &["node"],
        )
        .ok()?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "hamster_member_transitions_total",
                "Times this node took a member for down (to=\"down\") or up again (to=\"up\")",
            ),
            &["node", "to"],
        )
        .ok()?;
        let registered = metrics
            .register(Box::new(up.clone()))
            .and_then(|()| metrics.register(Box::new(transitions.clone())));
        if let Err(e) = registered {
            warn!(error = %e, "liveness metrics not registered");
            return None;
        }
        Some(Gauges { up, transitions })
    }
}

/// The detector actor; see the module docs.
pub struct Liveness {
    me: NodeId,
    tracker: Tracker,
    view: Arc<RwLock<View>>,
    born: Instant,
    prober: Option<Arc<dyn Prober>>,
    probe_all: bool,
    /// Nodes with a probe in flight, so a slow probe is not stacked with more.
    probing: BTreeSet<NodeId>,
    /// Each failing node's latest reason, for the line that reports it down.
    why: BTreeMap<NodeId, String>,
    gauges: Option<Gauges>,
}

fn hex(node: NodeId) -> String {
    format!("{node:016x}")
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn view(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        // Every change to the view is one assignment: a panicking writer leaves it whole.
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&mut self, t: Transition) {
        match t {
            Transition::Down {
                node,
                failures,
                failing_ms,
            } => {
                self.view().down.insert(node);
                let why = self.why.get(&node).cloned().unwrap_or_default();
                warn!(
                    node = %hex(node),
                    failures,
                    failing_ms,
                    last_error = %why,
                    "node {} is down ({failures} failed requests over {:.1} s); new shards go around it and reads use the other shards until it answers",
                    hex(node),
                    failing_ms as f64 / 1000.0
                );
                self.count(node, false);
            }
            Transition::Up { node, down_ms } => {
                self.view().down.remove(&node);
                self.why.remove(&node);
                info!(
                    node = %hex(node),
                    down_ms,
                    "node {} is up again after {:.1} s down",
                    hex(node),
                    down_ms as f64 / 1000.0
                );
                self.count(node, true);
            }
        }
    }

    fn count(&self, node: NodeId, up: bool) {
        if let Some(g) = &self.gauges {
            let label = hex(node);
            g.up.with_label_values(&[label.as_str()]).set(i64::from(up));
            let to = if up { "up" } else { "down" };
            g.transitions.with_label_values(&[label.as_str(), to]).inc();
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        for t in self.tracker.tick(self.now_ms()) {
            self.apply(t);
        }
        let Some(prober) = self.prober.clone() else {
            return;
        };
        let Some(members) = prober.members() else {
            debug!("the data plane is gone; liveness detector stops");
            ctx.stop();
            return;
        };
        self.forget_all_but(&members);
        if let Some(g) = &self.gauges {
            for m in &members {
                let up = !self.tracker.is_down(*m);
                g.up.with_label_values(&[hex(*m).as_str()])
                    .set(i64::from(up));
            }
        }
        let mut targets = self.tracker.failing();
        targets.extend(self.tracker.down());
        if self.probe_all {
            targets.extend(members.iter().copied());
        }
        for node in targets {
            if node == self.me || !members.contains(&node) || self.probing.contains(&node) {
                continue;
            }
            let Some(probe) = prober.probe(node) else {
                ctx.stop();
                return;
            };
            self.probing.insert(node);
            ctx.spawn(probe.into_actor(self).map(move |(), act, _| {
                act.probing.remove(&node);
            }));
        }
    }

    /// Drops the records of nodes that left the membership: nobody will ask about them.
    fn forget_all_but(&mut self, members: &BTreeSet<NodeId>) {
        for node in self.tracker.known() {
            if members.contains(&node) {
                continue;
            }
            if self.tracker.forget(node) {
                debug!(node = %hex(node), "a down node left the membership; no longer watched");
            }
            self.why.remove(&node);
            let mut view = self.view();
            view.down.remove(&node);
            view.answered.remove(&node);
            drop(view);
            if let Some(g) = &self.gauges {
                let _ = g.up.remove_label_values(&[hex(node).as_str()]);
            }
        }
    }
}

impl Liveness {
    /// A detector of node `me` and the view it publishes.
    fn new(me: NodeId, metrics: Option<&Metrics>) -> (Self, Arc<RwLock<View>>) {
        let view = Arc::new(RwLock::new(View::default()));
        let actor = Liveness {
            me,
            tracker: Tracker::default(),
            view: view.clone(),
            born: Instant::now(),
            prober: None,
            probe_all: false,
            probing: BTreeSet::new(),
            why: BTreeMap::new(),
            gauges: metrics.and_then(Gauges::register),
        };
        (actor, view)
    }
}

/// What it knew survives a restart (it lives in the actor, which is kept); only the probes
/// that were out are forgotten, so the next tick sends them again.
impl actix::Supervised for Liveness {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.probing.clear();
    }
}

impl Actor for Liveness {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(OBSERVATIONS_QUEUED_MAX);
        ctx.run_interval(PROBE_EVERY, |act, ctx| act.tick(ctx));
    }
}

impl Handler<Observed> for Liveness {
    type Result = ();

    fn handle(&mut self, msg: Observed, _ctx: &mut Self::Context) {
        let now = self.now_ms();
        match msg.outcome {
            Outcome::Answered => {
                self.view().answered.insert(msg.node, Instant::now());
            }
            Outcome::Failed | Outcome::Refused => {
                if let Some(why) = msg.why {
                    self.why.insert(msg.node, why);
                }
            }
        }
        if let Some(t) = self.tracker.observe(msg.node, msg.outcome, now) {
            self.apply(t);
        }
    }
}

impl Handler<IsUp> for Liveness {
    type Result = bool;

    fn handle(&mut self, msg: IsUp, _ctx: &mut Self::Context) -> bool {
        msg.0 == self.me || !self.tracker.is_down(msg.0)
    }
}

impl Handler<SetProber> for Liveness {
    type Result = ();

    fn handle(&mut self, msg: SetProber, _ctx: &mut Self::Context) {
        self.prober = Some(msg.0);
    }
}

impl Handler<ProbeAllMembers> for Liveness {
    type Result = ();

    fn handle(&mut self, _msg: ProbeAllMembers, _ctx: &mut Self::Context) {
        self.probe_all = true;
    }
}

/// A cheap clonable handle on this node's detector: posts observations, reads the published
/// view in place.
#[derive(Clone)]
pub struct LivenessHandle {
    me: NodeId,
    addr: Addr<Liveness>,
    view: Arc<RwLock<View>>,
}

impl std::fmt::Debug for LivenessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivenessHandle")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl LivenessHandle {
    /// Starts the detector of node `me`, with its gauges in `metrics` when given. Must be
    /// called inside a running actix System.
    pub fn start(me: NodeId, metrics: Option<&Metrics>) -> Self {
        let (actor, view) = Liveness::new(me, metrics);
        LivenessHandle {
            me,
            addr: actor.start(),
            view,
        }
    }

    /// [`LivenessHandle::start`] under `supervision`: a panic restarts the detector in place
    /// with what it knew (docs/adr/0007).
    pub fn start_supervised(
        me: NodeId,
        metrics: Option<&Metrics>,
        supervision: &crate::supervise::Supervision,
    ) -> Self {
        let (actor, view) = Liveness::new(me, metrics);
        LivenessHandle {
            me,
            addr: supervision.start("liveness", actor),
            view,
        }
    }

    /// The detector's address, for callers that want to ask it ([`IsUp`]).
    pub fn addr(&self) -> &Addr<Liveness> {
        &self.addr
    }

    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports one request's outcome: `Ok` if `node` answered, else why not (a failure that
    /// may be passing: a timeout, a connection broken mid-request).
    pub fn observe(&self, node: NodeId, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.post(node, Outcome::Answered, None),
            Err(why) => self.post(node, Outcome::Failed, Some(why)),
        }
    }

    /// Reports a request to `node` that the peer link failed. A connection that could not be
    /// opened at all counts as a refusal, which takes the node for down at once (see
    /// [`hamster_protocol::liveness`]); other failures count toward the usual rules.
    pub fn observe_link_error(&self, node: NodeId, error: &PeerError) {
        let outcome = match error {
            PeerError::NotConnected { .. } => Outcome::Refused,
            _ => Outcome::Failed,
        };
        self.post(node, outcome, Some(error.to_string()));
    }

    fn post(&self, node: NodeId, outcome: Outcome, why: Option<String>) {
        if node == self.me {
            return;
        }
        // A full mailbox drops this observation (see the module docs); a stopped detector
        // means the node is shutting down.
        let _ = self.addr.try_send(Observed { node, outcome, why });
    }

    /// Whether `node` is taken for down (never this node).
    pub fn is_down(&self, node: NodeId) -> bool {
        node != self.me && self.view().down.contains(&node)
    }

    /// The nodes taken for down, at one instant.
    pub fn down_nodes(&self) -> BTreeSet<NodeId> {
        self.view().down.clone()
    }

    /// When `node` last answered a request from this node, if it ever did.
    pub fn last_heard(&self, node: NodeId) -> Option<Instant> {
        self.view().answered.get(&node).copied()
    }

    /// Hands the detector the data plane's probes.
    pub fn set_prober(&self, prober: Arc<dyn Prober>) {
        self.addr.do_send(SetProber(prober));
    }

    /// Has every member probed each [`PROBE_EVERY`] (a serving node; the simulation, whose
    /// schedules must not depend on it, probes only failing nodes).
    pub fn probe_all_members(&self) {
        self.addr.do_send(ProbeAllMembers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamster_protocol::liveness::FAILURES_TO_DOWN;

    /// What a caller reads without waiting (the snapshot) and what an operator reads
    /// (`/metrics`) follow the observations, once the actor has taken them in; the detector's
    /// own node is never taken for down.
    #[actix_rt::test]
    async fn observations_reach_the_snapshot_and_the_gauges() {
        let metrics = Metrics::new();
        let live = LivenessHandle::start(1, Some(&metrics));
        live.observe(2, Ok(()));
        for _ in 0..FAILURES_TO_DOWN {
            live.observe(2, Err("connection refused".into()));
            live.observe(1, Err("this node itself".into()));
        }
        // The mailbox is in order: once this answers, every observation above is in.
        assert!(!live.addr().send(IsUp(2)).await.expect("detector running"));
        assert!(live.is_down(2));
        assert!(!live.is_down(1));
        assert_eq!(live.down_nodes(), BTreeSet::from([2]));
        let text = metrics.render();
        assert!(
            text.contains("hamster_member_up{node=\"0000000000000002\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "hamster_member_transitions_total{node=\"0000000000000002\",to=\"down\"} 1"
            ),
            "{text}"
        );
        live.observe(2, Ok(()));
        assert!(live.addr().send(IsUp(2)).await.expect("detector running"));
        assert!(!live.is_down(2));
        assert!(live.last_heard(2).is_some());
        assert!(metrics
            .render()
            .contains("hamster_member_up{node=\"0000000000000002\"} 1"));
    }
}
