//! One simulated run and the batch runner around it.
//!
//! A run is a fresh actix `System` on a tokio `current_thread` runtime with a paused clock and
//! a seeded scheduler RNG, so every timer, task wake-up and random draw follows from the seed
//! (STYLE determinism rules 1–8). Everything that happens is written to a [`Trace`] stamped with
//! simulated time only; the BLAKE3 of the trace is the run's fingerprint.
//!
//! [`check`] runs a scenario over a batch of seeds, each twice, and fails with the seed and the
//! command that replays it if a run fails or the two runs of one seed diverge.
//!
//! Knobs (environment):
//! - `HAMSTER_SEED=N`: run only seed N (twice, fingerprints compared).
//! - `HAMSTER_SEEDS=N`: run seeds 1..=N instead of the scenario's CI batch (a local soak).
//! - `HAMSTER_TRACE=1`: print each run's whole trace to stderr.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Sim;

/// Longest simulated time one run may take; a run that has not finished by then failed.
pub const RUN_SIM_MAX: Duration = Duration::from_secs(30 * 60);
/// Trace lines kept for a failure report.
const TAIL_LINES: usize = 60;

/// Derives an independent seed for one component (and node, and restart) from the run's seed.
pub fn fork(seed: u64, label: &str, a: u64, b: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(label.as_bytes());
    h.update(&a.to_le_bytes());
    h.update(&b.to_le_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Everything that happened in a run, in order, with simulated time.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<TraceInner>>,
}

struct TraceInner {
    start: Instant,
    hasher: blake3::Hasher,
    events: u64,
    tail: VecDeque<String>,
    print: bool,
}

impl Trace {
    /// A trace starting now (simulated time zero of the run).
    pub fn new() -> Self {
        let print = std::env::var_os("HAMSTER_TRACE").is_some();
        Trace {
            inner: Arc::new(Mutex::new(TraceInner {
                start: Instant::now(),
                hasher: blake3::Hasher::new(),
                events: 0,
                tail: VecDeque::new(),
                print,
            })),
        }
    }

    /// Simulated milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        let start = self.inner.lock().expect("trace lock").start;
        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records one event.
    pub fn event(&self, what: std::fmt::Arguments<'_>) {
        let ms = self.now_ms();
        let line = format!("{ms:>8} {what}");
        let mut t = self.inner.lock().expect("trace lock");
        t.hasher.update(line.as_bytes());
        t.hasher.update(b"\n");
        t.events += 1;
        if t.print {
            eprintln!("{line}");
        }
        if t.tail.len() == TAIL_LINES {
            t.tail.pop_front();
        }
        t.tail.push_back(line);
    }

    fn summary(&self) -> (String, u64, Vec<String>) {
        let t = self.inner.lock().expect("trace lock");
        let fingerprint = t.hasher.finalize().to_hex()[..16].to_string();
        (fingerprint, t.events, t.tail.iter().cloned().collect())
    }
}

/// Writes one event to a trace with `format!` syntax.
#[macro_export]
macro_rules! event {
    ($trace:expr, $($arg:tt)*) => {
        $trace.event(format_args!($($arg)*))
    };
}

/// How one run ended.
pub struct Outcome {
    /// `Err` with the first violated invariant or failed step.
    pub result: Result<(), String>,
    /// BLAKE3 of the trace, 16 hex digits.
    pub fingerprint: String,
    /// Trace events.
    pub events: u64,
    /// Simulated milliseconds the run took.
    pub sim_ms: u64,
    /// The last trace lines.
    pub tail: Vec<String>,
}

/// Whether a run draws its network faults from the seed or, for the negative control, from
/// the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entropy {
    /// Everything from the seed.
    Seeded,
    /// Network faults from OS randomness: two runs of one seed must diverge.
    Os,
}

thread_local! {
    /// Panics on this thread since the current run began, wherever they were caught (a task
    /// that panics is only logged by tokio; the run must still fail).
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Installs (once per process) a panic hook that also notes each panic on its thread.
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = format!("{info}");
            PANICS.with(|p| p.borrow_mut().push(text));
            previous(info);
        }));
    });
}

/// Runs `scenario` once on seed `seed` in a fresh world.
pub fn run_one<F, Fut>(seed: u64, entropy: Entropy, scenario: &F) -> Outcome
where
    F: Fn(Rc<Sim>) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    watch_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    let rt_seed = fork(seed, "tokio", 0, 0);
    let system = actix_rt::System::with_tokio_rt(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .rng_seed(tokio::runtime::RngSeed::from_bytes(&rt_seed.to_le_bytes()))
            .build()
            .expect("a current-thread runtime")
    });
    let (trace, result, sim_ms) = system.block_on(async {
        let trace = Trace::new();
        let sim = Sim::new(seed, trace.clone(), entropy);
        let work = AssertUnwindSafe(scenario(sim.clone()));
        let result = match tokio::time::timeout(RUN_SIM_MAX, futures_catch(work)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the scenario did not finish within {} simulated seconds",
                RUN_SIM_MAX.as_secs()
            )),
        };
        sim.stop_all().await;
        let sim_ms = trace.now_ms();
        (trace, result, sim_ms)
    });
    let (fingerprint, events, tail) = trace.summary();
    let panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let result = match (result, panics.first()) {
        (Ok(()), Some(p)) => Err(format!("a task panicked: {p}")),
        (r, _) => r,
    };
    Outcome {
        result,
        fingerprint,
        events,
        sim_ms,
        tail,
    }
}

/// Awaits `fut`, turning a panic inside it into an error naming the panic.
async fn futures_catch<Fut>(fut: AssertUnwindSafe<Fut>) -> Result<(), String>
where
    Fut: Future<Output = Result<(), String>>,
{
    let mut fut = Box::pin(fut.0);
    std::future::poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(panic) => std::task::Poll::Ready(Err(format!("panicked: {}", panic_text(&panic)))),
        },
    )
    .await
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".into()
    }
}

/// The seeds to run: `HAMSTER_SEED`, else 1..=`HAMSTER_SEEDS`, else 1..=`ci_seeds`.
pub fn seeds(ci_seeds: u64) -> Vec<u64> {
    let var = |name: &str| -> Option<u64> {
        let v = std::env::var(name).ok()?;
        Some(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        )
    };
    if let Some(seed) = var("HAMSTER_SEED") {
        return vec![seed];
    }
    let count = var("HAMSTER_SEEDS").unwrap_or(ci_seeds);
    (1..=count).collect()
}

/// Runs scenario `name` over the seed batch, each seed twice; panics with the seed and the
/// replay command on the first failure or divergence. Prints one line per seed and a total.
pub fn check<F, Fut>(name: &str, ci_seeds: u64, scenario: F)
where
    F: Fn(Rc<Sim>) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let mut total_ms = 0u64;
    let seeds = seeds(ci_seeds);
    for &seed in &seeds {
        let first = run_one(seed, Entropy::Seeded, &scenario);
        if let Err(e) = &first.result {
            fail(name, seed, e, &first.tail);
        }
        let second = run_one(seed, Entropy::Seeded, &scenario);
        if second.fingerprint != first.fingerprint || second.result != first.result {
            let why = format!(
                "the same seed diverged: fingerprints {} ({} events) and {} ({} events)",
                first.fingerprint, first.events, second.fingerprint, second.events
            );
            fail(name, seed, &why, &second.tail);
        }
        total_ms += first.sim_ms;
        println!(
            "sim {name} seed {seed}: ok, {} events, {:.1} simulated s, fingerprint {}",
            first.events,
            first.sim_ms as f64 / 1000.0,
            first.fingerprint
        );
    }
    println!(
        "sim {name}: {} seeds, each twice, {:.2} simulated hours",
        seeds.len(),
        total_ms as f64 / 3_600_000.0
    );
}

fn fail(name: &str, seed: u64, why: &str, tail: &[String]) -> ! {
    panic!(
        "simulation {name} failed at seed {seed}: {why}\n\
         last events:\n{}\n\
         replay: HAMSTER_SEED={seed} HAMSTER_TRACE=1 cargo test --test sim {name} -- --nocapture",
        tail.join("\n")
    )
}
