//! A warning that request paths may hit thousands of times a minute (a shard home that is
//! down, a read that falls back to decoding) is logged at most once per window, and the line
//! that goes out says how many were held back since the previous one ("… 1,532 more in the
//! last 60 s"). One [`Throttle`] per kind of warning, owned by whoever emits it, so nothing
//! outlives the node (or the simulated run) that made it. Time is tokio's, so the simulation's
//! paused clock drives it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window warnings on request paths are limited to, unless a caller chooses another.
pub const WARN_EVERY_MS: u64 = 60_000;

/// The pure part of a throttle: which occurrence goes out, and what it reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// When the last line went out, in ms on the caller's scale.
    logged_ms: Option<u64>,
    /// Occurrences held back since.
    held: u64,
}

impl Window {
    /// Counts one occurrence at `now_ms`; returns `Some(held)` when it is to be logged, with
    /// the number held back before it, or `None` when it is held back.
    pub fn admit(&mut self, now_ms: u64, every_ms: u64) -> Option<u64> {
        let open = self
            .logged_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < every_ms);
        if open {
            self.held = self.held.saturating_add(1);
            return None;
        }
        self.logged_ms = Some(now_ms);
        Some(std::mem::take(&mut self.held))
    }
}

/// A rate-limited warning: see the module docs.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    born: Instant,
    window: Mutex<Window>,
}

impl Throttle {
    /// A throttle letting one line out per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            born: Instant::now(),
            window: Mutex::new(Window::default()),
        }
    }

    /// A throttle with the default window, [`WARN_EVERY_MS`].
    pub fn per_minute() -> Self {
        Self::new(Duration::from_millis(WARN_EVERY_MS))
    }

    /// Counts one occurrence; `Some(note)` when this one is to be logged, where `note` is the
    /// text to append about those held back (empty if none were).
    pub fn admit(&self) -> Option<String> {
        let now_ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let every_ms = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        // A panicking holder leaves a window that is still a valid window.
        let held = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now_ms, every_ms)?;
        Some(held_note(held, self.every))
    }
}

/// "" for none held back, else " (… 1,532 more in the last 60 s)".
pub fn held_note(held: u64, every: Duration) -> String {
    if held == 0 {
        return String::new();
    }
    format!(
        " (… {} more in the last {} s)",
        thousands(held),
        every.as_secs()
    )
}

/// `n` with a comma between groups of three digits, as people read counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_and_the_next_counts_the_rest() {
        let mut w = Window::default();
        assert_eq!(w.admit(0, 1_000), Some(0));
        for t in 1..1_533 {
            assert_eq!(w.admit(t * 100 / 1_533, 1_000), None);
        }
        assert_eq!(w.admit(999, 1_000), None);
        assert_eq!(w.admit(1_000, 1_000), Some(1_533));
        assert_eq!(w.admit(1_500, 1_000), None);
        assert_eq!(w.admit(5_000, 1_000), Some(1));
        assert_eq!(w.admit(9_000, 1_000), Some(0));
    }

    #[test]
    fn the_note_reads_as_a_count() {
        let every = Duration::from_secs(60);
        assert_eq!(held_note(0, every), "");
        assert_eq!(held_note(7, every), " (… 7 more in the last 60 s)");
        assert_eq!(held_note(1_532, every), " (… 1,532 more in the last 60 s)");
        assert_eq!(
            held_note(1_234_567, every),
            " (… 1,234,567 more in the last 60 s)"
        );
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(100_000), "100,000");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_follows_the_runtime_clock() {
        let t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.admit().as_deref(), Some(""));
        for _ in 0..41 {
            assert_eq!(t.admit(), None);
        }
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(t.admit().as_deref(), Some(" (… 41 more in the last 60 s)"));
    }
}
