//! The world's seams for time and randomness: wall-clock time only through a `Clock`, ids only
//! from a seeded `IdSource`, so the simulation can replace both (STYLE determinism rules 2, 3).

use std::sync::Mutex;

use hamster_protocol::meta::ObjectId;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Wall-clock time (Last-Modified, SigV4 date window). Monotonic timing uses tokio timers.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The production wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // Production-only: the simulation supplies its own `Clock`.
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A fixed clock for tests; `set` moves it.
#[derive(Debug, Default)]
pub struct FixedClock(pub std::sync::atomic::AtomicU64);

impl FixedClock {
    /// A clock that reads `ms` until moved.
    pub fn new(ms: u64) -> Self {
        FixedClock(std::sync::atomic::AtomicU64::new(ms))
    }
    /// Moves the clock.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst)
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Every id a node mints (object ids, request ids, node ids, secrets) comes from here: one
/// seeded stream, so a simulated run is replayable from its seed.
pub struct IdSource {
    rng: Mutex<ChaCha20Rng>,
}

impl IdSource {
    /// A stream from an explicit seed (simulation, tests).
    pub fn seeded(seed: u64) -> Self {
        IdSource {
            rng: Mutex::new(ChaCha20Rng::seed_from_u64(seed)),
        }
    }

    /// A stream seeded from the operating system (production only).
    // Production-only: the simulation seeds its ids from the run's seed.
    #[allow(clippy::disallowed_methods)]
    pub fn from_os() -> Self {
        IdSource {
            rng: Mutex::new(ChaCha20Rng::from_entropy()),
        }
    }

    /// Fills `out` with random bytes.
    pub fn fill(&self, out: &mut [u8]) {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(out)
    }

    /// A fresh random u64.
    pub fn next_u64(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64()
    }

    /// A fresh object id.
    pub fn object_id(&self) -> ObjectId {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        ObjectId(b)
    }

    /// A request id: 16 uppercase hex digits, as S3 clients expect to log.
    pub fn request_id(&self) -> String {
        format!("{:016X}", self.next_u64())
    }

    /// `len` characters from `alphabet`, without modulo bias.
    pub fn token(&self, alphabet: &[u8], len: usize) -> String {
        assert!(!alphabet.is_empty() && alphabet.len() <= 256);
        let limit = 256 - (256 % alphabet.len());
        let mut out = String::with_capacity(len);
        while out.len() < len {
            let mut b = [0u8; 1];
            self.fill(&mut b);
            if (b[0] as usize) < limit {
                out.push(alphabet[b[0] as usize % alphabet.len()] as char);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_replay() {
        let a = IdSource::seeded(7);
        let b = IdSource::seeded(7);
        assert_eq!(a.object_id(), b.object_id());
        assert_eq!(a.token(b"ABC", 20), b.token(b"ABC", 20));
        assert_ne!(
            IdSource::seeded(8).object_id(),
            IdSource::seeded(7).object_id()
        );
    }
}
