//! Log lines that clients cause (malformed heads, abandoned connections, refused floods): any
//! client can produce them at will, so they are logged at WARN, at most one line per kind per
//! [`NOISE_EVERY_MS`], and that line counts the ones held back since the previous.
//!
//! Two ways in: [`ClientNoise::record`] from ordinary code, which logs when the kind's window
//! has passed; and [`ClientNoise::note`] from inside the logging system itself (where a new log
//! event cannot be emitted), which only counts; the count goes out with the kind's next line,
//! or with the next [`ClientNoise::flush_due`].

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing::warn;

/// Shortest time between two log lines of one kind.
pub const NOISE_EVERY_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Kind {
    last_ms: Option<u64>,
    held: u64,
    last_detail: String,
}

/// Rate-limited WARN lines per kind of client mistake.
#[derive(Debug)]
pub struct ClientNoise {
    kinds: Mutex<BTreeMap<&'static str, Kind>>,
    born: tokio::time::Instant,
}

impl ClientNoise {
    /// The process-wide instance (the HTTP layer's own log events reach it from anywhere).
    pub fn global() -> &'static ClientNoise {
        static NOISE: OnceLock<ClientNoise> = OnceLock::new();
        NOISE.get_or_init(|| ClientNoise {
            kinds: Mutex::new(BTreeMap::new()),
            born: tokio::time::Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Logs `detail` at WARN if no line of `kind` went out within the window, else counts it.
    pub fn record(&self, kind: &'static str, detail: &str) {
        let now = self.now_ms();
        let due = {
            let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
            let k = kinds.entry(kind).or_default();
            if k.last_ms
                .is_some_and(|last| now.saturating_sub(last) < NOISE_EVERY_MS)
            {
                k.held += 1;
                k.last_detail = detail.to_string();
                None
            } else {
                k.last_ms = Some(now);
                Some(std::mem::take(&mut k.held))
            }
        };
        if let Some(held) = due {
            warn!(
                kind,
                held_back = held,
                "client request refused: {detail} (at most one such line per {} s)",
                NOISE_EVERY_MS / 1000
            );
        }
    }

    /// Counts one event of `kind` without logging (for callers inside the logging system).
    pub fn note(&self, kind: &'static str, detail: &str) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let k = kinds.entry(kind).or_default();
        k.held += 1;
        k.last_detail = detail.to_string();
    }

    /// Logs the count of every kind whose window has passed and that has events held back.
    pub fn flush_due(&self) {
        let now = self.now_ms();
        let due: Vec<(&'static str, u64, String)> = {
            let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
            kinds
                .iter_mut()
                .filter(|(_, k)| {
                    k.held > 0
                        && k.last_ms
                            .is_none_or(|last| now.saturating_sub(last) >= NOISE_EVERY_MS)
                })
                .map(|(name, k)| {
                    k.last_ms = Some(now);
                    (
                        *name,
                        std::mem::take(&mut k.held),
                        std::mem::take(&mut k.last_detail),
                    )
                })
                .collect()
        };
        for (kind, held, detail) in due {
            warn!(
                kind,
                count = held,
                "client requests refused: {held}, the last: {detail} (at most one such line per {} s)",
                NOISE_EVERY_MS / 1000
            );
        }
    }
}
