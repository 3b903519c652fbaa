//! Admission of uploads: how many request bodies may stream into part writers at once, and how
//! much memory their writers may hold together. An upload is admitted before any byte of its
//! body is read; beyond either cap it is refused with `503 SlowDown`, which S3 clients retry
//! with backoff, so a flood of slow or stalled uploads cannot grow the node without bound.
//!
//! Each admitted upload is charged the most its part writer can hold at once
//! ([`crate::data::PartWriter::footprint_bytes`]), not what it holds now, so the sum of the
//! charges bounds the writers' memory whatever the clients do next. When the last upload of a
//! burst ends, the allocator is asked to hand freed memory back to the system (glibc keeps
//! freed arena pages otherwise), at most once per [`TRIM_EVERY_MS`].

use std::sync::{Arc, Mutex, MutexGuard};

use hamster_protocol::s3err::{S3Error, S3ErrorCode};

/// Uploads streaming at once, by default.
pub const UPLOADS_IN_FLIGHT_MAX: usize = 1024;
/// Memory the writers of all uploads may hold together, by default.
pub const UPLOAD_MEMORY_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Shortest time between two hand-backs of freed memory to the system.
pub const TRIM_EVERY_MS: u64 = 2_000;
/// How long after the last upload of a burst ends its memory is returned.
const TRIM_DELAY_MS: u64 = 1_000;
/// Charged bytes freed since the last hand-back below which a hand-back is not worth its cost.
const TRIM_FREED_BYTES_MIN: u64 = 64 * 1024 * 1024;

/// The caps an upload is admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Uploads streaming at once.
    pub in_flight_max: usize,
    /// Bytes all admitted uploads may be charged together.
    pub memory_bytes_max: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            in_flight_max: UPLOADS_IN_FLIGHT_MAX,
            memory_bytes_max: UPLOAD_MEMORY_BYTES_MAX,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    in_flight: usize,
    charged: u64,
    /// Charges given back since the allocator last returned memory to the system.
    freed_since_trim: u64,
    /// When that was, in milliseconds of the tokio clock since the gate was made.
    last_trim_ms: Option<u64>,
}

/// The uploads admitted now, shared by every request of the S3 front.
#[derive(Debug)]
pub struct UploadGate {
    limits: UploadLimits,
    tally: Mutex<Tally>,
    born: tokio::time::Instant,
}

impl UploadGate {
    /// A gate with no upload admitted.
    pub fn new(limits: UploadLimits) -> Arc<Self> {
        Arc::new(UploadGate {
            limits,
            tally: Mutex::new(Tally::default()),
            born: tokio::time::Instant::now(),
        })
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        // A panic while holding the lock leaves plain counters behind; they are still usable.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits an upload whose writer can hold up to `bytes`, or refuses it with `SlowDown`.
    pub fn admit(self: &Arc<Self>, bytes: u64) -> Result<UploadTicket, S3Error> {
        let mut t = self.tally();
        if t.in_flight >= self.limits.in_flight_max {
            return Err(S3Error::with_message(
                S3ErrorCode::SlowDown,
                format!(
                    "{} uploads are already streaming to this node; retry shortly",
                    t.in_flight
                ),
            ));
        }
        // One upload larger than the whole budget is still let through when it is alone, so
        // a small budget never makes an upload impossible.
        if t.in_flight > 0 && t.charged.saturating_add(bytes) > self.limits.memory_bytes_max {
            return Err(S3Error::with_message(
                S3ErrorCode::SlowDown,
                "the uploads already streaming to this node hold its upload memory; retry shortly",
            ));
        }
        t.in_flight += 1;
        t.charged = t.charged.saturating_add(bytes);
        Ok(UploadTicket {
            gate: self.clone(),
            bytes,
        })
    }

    /// Uploads admitted now and the bytes they are charged.
    pub fn in_flight(&self) -> (usize, u64) {
        let t = self.tally();
        (t.in_flight, t.charged)
    }

    fn release(self: &Arc<Self>, bytes: u64) {
        let trim = {
            let mut t = self.tally();
            t.in_flight = t.in_flight.saturating_sub(1);
            t.charged = t.charged.saturating_sub(bytes);
            t.freed_since_trim = t.freed_since_trim.saturating_add(bytes);
            let now_ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
            let due = t
                .last_trim_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= TRIM_EVERY_MS);
            let trim = t.in_flight == 0 && t.freed_since_trim >= TRIM_FREED_BYTES_MIN && due;
            if trim {
                t.freed_since_trim = 0;
                t.last_trim_ms = Some(now_ms);
            }
            trim
        };
        if trim {
            self.trim_soon();
        }
    }

    /// Returns freed memory to the system a moment from now, if no upload started meanwhile:
    /// the connections of the last uploads free their buffers only after their tickets.
    fn trim_soon(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return_freed_memory();
            return;
        };
        let gate = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(TRIM_DELAY_MS)).await;
            if gate.in_flight().0 == 0 {
                return_freed_memory();
            }
        });
    }
}

/// An admitted upload; dropping it gives its charge back.
#[derive(Debug)]
pub struct UploadTicket {
    gate: Arc<UploadGate>,
    bytes: u64,
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        self.gate.release(self.bytes);
    }
}

/// Asks glibc to give freed heap pages back to the system. Without it a burst of uploads leaves
/// the process holding its peak memory after the uploads are gone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(in_flight_max: usize, memory_bytes_max: u64) -> UploadLimits {
        UploadLimits {
            in_flight_max,
            memory_bytes_max,
        }
    }

    #[tokio::test]
    async fn count_cap_refuses_with_slowdown_and_frees_on_drop() {
        let gate = UploadGate::new(limits(2, u64::MAX));
        let a = gate.admit(10).unwrap();
        let _b = gate.admit(10).unwrap();
        let refused = gate.admit(10).unwrap_err();
        assert_eq!(refused.code, S3ErrorCode::SlowDown);
        drop(a);
        assert!(gate.admit(10).is_ok());
    }

    #[tokio::test]
    async fn memory_cap_counts_charges() {
        let gate = UploadGate::new(limits(100, 100));
        let a = gate.admit(60).unwrap();
        assert_eq!(gate.admit(50).unwrap_err().code, S3ErrorCode::SlowDown);
        let _b = gate.admit(40).unwrap();
        assert_eq!(gate.in_flight(), (2, 100));
        drop(a);
        assert_eq!(gate.in_flight(), (1, 40));
    }

    #[tokio::test]
    async fn a_lone_upload_larger_than_the_budget_is_admitted() {
        let gate = UploadGate::new(limits(100, 10));
        let _a = gate.admit(1_000).unwrap();
        assert_eq!(gate.admit(1).unwrap_err().code, S3ErrorCode::SlowDown);
    }
}
