//! Supervision of the node's long-lived actors (docs/adr/0007): each one runs inside a
//! [`Supervisor`] future that restarts it in place when it fails, after a back-off, keeping its
//! address and its mailbox, and gives up (so that the process exits non-zero and systemd starts
//! it afresh) when it keeps failing.
//!
//! actix 0.13's own `actix::Supervisor` restarts an actor only when the actor stops itself; a
//! panic inside a handler unwinds out of the actor's task, tokio drops the task with its
//! mailbox, and every address of the actor answers `MailboxError::Closed` from then on, with
//! nothing logged beyond the panic message. Our supervisor catches that unwind around each poll
//! of the actor's context, and then does what actix's supervisor does on a stop: it drops the
//! actor's spawned futures, resets its context and calls [`Supervised::restarting`], where the
//! actor clears its in-flight bookkeeping. A deliberate stop (`ctx.stop()`, or every address
//! gone) ends the actor for good, as it would without supervision.
//!
//! Every supervised actor also answers [`Ping`], which `/health` sends with a short timeout, and
//! its restarts are counted in `hamster_actor_restarts_total{actor}`.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{self, Poll};
use std::time::Duration;

use actix::dev::ContextFut;
use actix::prelude::*;
use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::error;

use crate::metrics::Metrics;

/// The pause before the first restart of an actor that failed.
pub const RESTART_BACKOFF_MIN_MS: u64 = 100;
/// The longest pause between restarts; the pause doubles with each failure in the window.
pub const RESTART_BACKOFF_MAX_MS: u64 = 5_000;
/// The window in which failures count towards giving up.
pub const RESTART_WINDOW_MS: u64 = 60_000;
/// Failures within [`RESTART_WINDOW_MS`] that are restarted; one more and the supervisor gives
/// up: an actor that fails this often is not helped by another restart in this process.
pub const RESTARTS_IN_WINDOW_MAX: usize = 5;
/// How long `/health` waits for each supervised actor to answer a [`Ping`].
pub const PING_TIMEOUT_MS: u64 = 1_000;

/// The pause before restarting an actor that has now failed `failures` times within the
/// window (this failure included), or `None` when the supervisor should give up.
pub fn restart_delay_ms(failures: usize) -> Option<u64> {
    if failures == 0 || failures > RESTARTS_IN_WINDOW_MAX {
        return None;
    }
    let doublings = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(16);
    Some(
        RESTART_BACKOFF_MIN_MS
            .saturating_mul(1u64 << doublings)
            .min(RESTART_BACKOFF_MAX_MS),
    )
}

/// A cheap question every supervised actor answers at once: `/health` asks it to learn that the
/// actor is running and its mailbox moves.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Ping {
    /// Test builds only: the actor panics in its handler instead of answering.
    #[cfg(feature = "fault-injection")]
    crash: bool,
}

impl Ping {
    /// A plain ping.
    pub fn new() -> Self {
        Ping {
            #[cfg(feature = "fault-injection")]
            crash: false,
        }
    }

    /// Answers the ping (in test builds, panics when asked to).
    pub fn answer(self) {
        #[cfg(feature = "fault-injection")]
        if self.crash {
            panic!("fault injection: this actor was told to panic");
        }
    }
}

impl Default for Ping {
    fn default() -> Self {
        Self::new()
    }
}

/// Implements [`Ping`] for a supervised actor.
macro_rules! answers_ping {
    ($($actor:ty),* $(,)?) => {$(
        impl Handler<Ping> for $actor {
            type Result = ();

            fn handle(&mut self, msg: Ping, _ctx: &mut Self::Context) {
                msg.answer();
            }
        }
    )*};
}

answers_ping!(
    crate::raft::node::RaftNode,
    crate::layout::LayoutManager,
    crate::steward::Steward,
    crate::continuity::WatermarkKeeper,
    crate::space::SpaceMonitor,
    crate::reclaim::Reclaimer,
    crate::liveness::Liveness,
    crate::scrub::Scrubber,
);

/// The space monitor keeps no in-flight state: a restart only starts its timer again.
impl Supervised for crate::space::SpaceMonitor {}

/// Where a supervised actor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Running = 0,
    /// Failed and waiting out its back-off.
    Restarting = 1,
    /// Stopped on purpose, or every address is gone.
    Stopped = 2,
    /// Failed too often; the node must restart.
    GaveUp = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Running,
            1 => Phase::Restarting,
            2 => Phase::Stopped,
            _ => Phase::GaveUp,
        }
    }
}

type Probe = Box<dyn Fn(Ping) -> BoxFuture<'static, bool> + Send + Sync>;

/// One supervised actor as the registry sees it.
struct Entry {
    name: &'static str,
    phase: Arc<AtomicU8>,
    probe: Probe,
}

struct Inner {
    restarts: IntCounterVec,
    entries: Mutex<Vec<Entry>>,
    gave_up: watch::Sender<Option<String>>,
}

/// The node's supervision: starts actors under a [`Supervisor`], counts their restarts, answers
/// whether they all run, and tells whoever watches [`Supervision::gave_up`] when one cannot be
/// restarted any more. Clones share one registry.
#[derive(Clone)]
pub struct Supervision {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervision").finish_non_exhaustive()
    }
}

impl Supervision {
    /// Supervision whose restarts are counted in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self::with_counter(metrics.actor_restarts.clone())
    }

    fn with_counter(restarts: IntCounterVec) -> Self {
        let (gave_up, _) = watch::channel(None);
        Supervision {
            inner: Arc::new(Inner {
                restarts,
                entries: Mutex::new(Vec::new()),
                gave_up,
            }),
        }
    }

    /// Starts `actor` under a supervisor, registered as `name`.
    pub fn start<A>(&self, name: &'static str, actor: A) -> Addr<A>
    where
        A: Actor<Context = Context<A>> + Supervised + Handler<Ping>,
    {
        let ctx = Context::new();
        let addr = ctx.address();
        let phase = Arc::new(AtomicU8::new(Phase::Running as u8));
        // Zero from the start, so a dashboard sees the series before the first restart.
        let _ = self.inner.restarts.with_label_values(&[name]);
        let weak = addr.downgrade();
        let probe: Probe = Box::new(move |ping| {
            let Some(addr) = weak.upgrade() else {
                return Box::pin(async { false });
            };
            Box::pin(async move { addr.send(ping).await.is_ok() })
        });
        self.inner
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Entry {
                name,
                phase: phase.clone(),
                probe,
            });
        let supervisor = Supervisor {
            fut: Some(ctx.into_future(actor)),
            name,
            phase,
            supervision: self.clone(),
            backoff: None,
            failures: VecDeque::new(),
        };
        actix_rt::spawn(supervisor);
        addr
    }

    /// Resolves with a one-line reason once a supervised actor has failed too often to be
    /// restarted (the caller exits so that the service manager restarts the node).
    pub fn gave_up(&self) -> watch::Receiver<Option<String>> {
        self.inner.gave_up.subscribe()
    }

    /// `Ok` when every supervised actor runs and answers a [`Ping`] within
    /// [`PING_TIMEOUT_MS`]; otherwise the first problem, in one line.
    pub async fn check(&self) -> Result<(), String> {
        let asks: Vec<_> = {
            let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
            for e in entries.iter() {
                match Phase::from_u8(e.phase.load(Ordering::SeqCst)) {
                    Phase::Running => {}
                    Phase::Restarting => {
                        return Err(format!("actor {} is restarting after a failure", e.name))
                    }
                    Phase::Stopped => return Err(format!("actor {} has stopped", e.name)),
                    Phase::GaveUp => {
                        return Err(format!(
                            "actor {} failed too often and is not restarted",
                            e.name
                        ))
                    }
                }
            }
            entries
                .iter()
                .map(|e| (e.name, (e.probe)(Ping::new())))
                .collect()
        };
        let wait = Duration::from_millis(PING_TIMEOUT_MS);
        let answers = futures::future::join_all(
            asks.into_iter()
                .map(|(name, ask)| async move { (name, tokio::time::timeout(wait, ask).await) }),
        )
        .await;
        for (name, answer) in answers {
            match answer {
                Ok(true) => {}
                Ok(false) => return Err(format!("actor {name} is not running")),
                Err(_) => {
                    return Err(format!(
                        "actor {name} did not answer a ping within {PING_TIMEOUT_MS} ms"
                    ))
                }
            }
        }
        Ok(())
    }

    /// The names of the supervised actors, in the order they were started.
    pub fn names(&self) -> Vec<&'static str> {
        let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().map(|e| e.name).collect()
    }

    /// Test builds only: makes the actor registered as `name` panic inside its `Ping` handler.
    /// `false` if no actor has that name.
    #[cfg(feature = "fault-injection")]
    pub fn inject_panic(&self, name: &str) -> bool {
        let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.iter().find(|e| e.name == name) else {
            return false;
        };
        let ask = (entry.probe)(Ping { crash: true });
        actix_rt::spawn(async move {
            let _ = ask.await;
        });
        true
    }
}

impl Default for Supervision {
    /// Supervision whose restart counter is registered nowhere (tests and the simulation).
    fn default() -> Self {
        let counter =
            IntCounterVec::new(Opts::new(RESTARTS_METRIC, RESTARTS_HELP), &[RESTARTS_LABEL]);
        match counter {
            Ok(c) => Self::with_counter(c),
            // The name and label are constants that prometheus accepts; this arm is unreachable.
            Err(_) => Self::new(&Metrics::new()),
        }
    }
}

/// The restart counter's name, help and label (also used by [`Metrics`]).
pub const RESTARTS_METRIC: &str = "hamster_actor_restarts_total";
/// Help text of [`RESTARTS_METRIC`].
pub const RESTARTS_HELP: &str = "Restarts of a supervised actor after it failed";
/// The label naming the actor.
pub const RESTARTS_LABEL: &str = "actor";

/// Runs one actor's context, catching a panic in any poll of it and restarting the actor in
/// place after a back-off; see the module docs.
struct Supervisor<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// `None` once the actor is finished.
    fut: Option<ContextFut<A, Context<A>>>,
    name: &'static str,
    phase: Arc<AtomicU8>,
    supervision: Supervision,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the failures still inside the window happened, oldest first.
    failures: VecDeque<Instant>,
}

/// The panic's message, for the log line.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl<A> Supervisor<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Books a failure: schedules the restart, or gives up.
    fn failed(&mut self, why: &str) -> Poll<()> {
        let now = Instant::now();
        let window = Duration::from_millis(RESTART_WINDOW_MS);
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let failures = self.failures.len();
        match restart_delay_ms(failures) {
            Some(delay_ms) => {
                self.supervision
                    .inner
                    .restarts
                    .with_label_values(&[self.name])
                    .inc();
                error!(
                    actor = self.name,
                    reason = %why,
                    delay_ms,
                    failures_in_window = failures,
                    "actor failed; restarting it after a pause"
                );
                self.set_phase(Phase::Restarting);
                self.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(
                    delay_ms,
                ))));
                Poll::Pending
            }
            None => {
                let reason = format!(
                    "actor {} failed {} times within {} s ({why})",
                    self.name,
                    failures,
                    RESTART_WINDOW_MS / 1000
                );
                error!(actor = self.name, reason = %why, "actor failed too often; not restarting it");
                self.set_phase(Phase::GaveUp);
                self.finish();
                self.supervision.inner.gave_up.send_replace(Some(reason));
                Poll::Ready(())
            }
        }
    }

    /// Drops the actor; its `Drop` runs the actor's stopping hooks, which must not take the
    /// supervisor down with them if the actor is in a bad way.
    fn finish(&mut self) {
        let fut = self.fut.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
    }
}

impl<A> Future for Supervisor<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.backoff.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
                let Some(fut) = this.fut.as_mut() else {
                    return Poll::Ready(());
                };
                match catch_unwind(AssertUnwindSafe(|| fut.restart())) {
                    Ok(true) => this.set_phase(Phase::Running),
                    Ok(false) => {
                        // Nobody holds an address any more: nothing to restart for.
                        this.set_phase(Phase::Stopped);
                        this.finish();
                        return Poll::Ready(());
                    }
                    Err(payload) => {
                        let why = format!("restarting it panicked: {}", panic_message(&*payload));
                        if this.failed(&why).is_ready() {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                }
            }
            let Some(fut) = this.fut.as_mut() else {
                return Poll::Ready(());
            };
            match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) => {
                    this.set_phase(Phase::Stopped);
                    this.fut = None;
                    return Poll::Ready(());
                }
                Err(payload) => {
                    let why = format!("panicked: {}", panic_message(&*payload));
                    if this.failed(&why).is_ready() {
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_its_cap_and_then_the_supervisor_gives_up() {
        assert_eq!(restart_delay_ms(0), None);
        assert_eq!(restart_delay_ms(1), Some(RESTART_BACKOFF_MIN_MS));
        assert_eq!(restart_delay_ms(2), Some(2 * RESTART_BACKOFF_MIN_MS));
        let mut last = 0;
        for n in 1..=RESTARTS_IN_WINDOW_MAX {
            let d = restart_delay_ms(n).unwrap();
            assert!(d >= last && d <= RESTART_BACKOFF_MAX_MS);
            last = d;
        }
        assert_eq!(restart_delay_ms(RESTARTS_IN_WINDOW_MAX + 1), None);
    }

    /// An actor whose handler panics on demand and counts how often it was restarted.
    struct Fragile {
        restarted: u32,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
    }

    impl Supervised for Fragile {
        fn restarting(&mut self, _ctx: &mut Context<Self>) {
            self.restarted += 1;
        }
    }

    impl Handler<Ping> for Fragile {
        type Result = ();
        fn handle(&mut self, msg: Ping, _ctx: &mut Context<Self>) {
            msg.answer();
        }
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Crash(bool);

    impl Handler<Crash> for Fragile {
        type Result = u32;
        fn handle(&mut self, msg: Crash, _ctx: &mut Context<Self>) -> u32 {
            assert!(!msg.0, "told to panic");
            self.restarted
        }
    }

    /// Proves that a panic inside a handler costs only the message being handled: the actor is
    /// restarted in place, keeps its address and state, the restart is counted, and a
    /// supervisor that sees the actor fail more than the window allows gives up and says so.
    #[actix_rt::test]
    async fn a_panicking_handler_is_restarted_in_place_and_counted() {
        let sup = Supervision::default();
        let addr = sup.start("fragile", Fragile { restarted: 0 });
        assert_eq!(addr.send(Crash(false)).await.unwrap(), 0);
        assert!(
            addr.send(Crash(true)).await.is_err(),
            "the panicking message fails"
        );
        assert_eq!(
            addr.send(Crash(false)).await.unwrap(),
            1,
            "restarted, same address"
        );
        assert_eq!(
            sup.inner.restarts.with_label_values(&["fragile"]).get(),
            1,
            "the restart is counted"
        );
        assert!(sup.check().await.is_ok());
        let mut gave_up = sup.gave_up();
        for _ in 0..RESTARTS_IN_WINDOW_MAX {
            let _ = addr.send(Crash(true)).await;
        }
        let why = tokio::time::timeout(Duration::from_secs(60), gave_up.wait_for(|g| g.is_some()))
            .await
            .expect("the supervisor gives up")
            .expect("the registry is alive")
            .clone()
            .unwrap();
        assert!(why.contains("fragile"), "{why}");
        assert!(sup.check().await.is_err());
    }
}
