//! The async runtime openraft runs on: tokio's timers, tasks and channels, with one change —
//! the random numbers openraft draws (election timeouts) come from a seeded ChaCha stream, so
//! the same seed replays the same elections (STYLE determinism rule 3, INV-8).
//!
//! The stream is thread-local: a simulated cluster runs on one thread, and each node seeds it
//! through [`seed_rng`] when it starts, forking the run's seed per node and restart.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::{AsyncRuntime, TokioOneShotSender};
use openraft::{OptionalSend, TokioInstant};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seed used before any [`seed_rng`] call. Fixed rather than drawn from the OS so that even
/// a forgotten seeding stays reproducible.
const DEFAULT_SEED: u64 = 0x4841_4d53_5445_5221;

thread_local! {
    static RNG: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(DEFAULT_SEED));
}

/// Restarts this thread's Raft random stream from `seed`.
pub fn seed_rng(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = ChaCha8Rng::seed_from_u64(seed));
}

/// A handle on this thread's seeded stream. It holds no state itself: each draw borrows the
/// thread-local generator, so handles openraft keeps or drops never fork the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeededRng;

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        RNG.with(|r| r.borrow_mut().next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        RNG.with(|r| r.borrow_mut().next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        RNG.with(|r| r.borrow_mut().fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        RNG.with(|r| r.borrow_mut().try_fill_bytes(dest))
    }
}

/// openraft's tokio runtime with a seeded `thread_rng`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HamsterRuntime;

impl AsyncRuntime for HamsterRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = SeededRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // Spawned onto the current runtime: inside an actix System that is its one thread, so
        // the simulation keeps a single thread per cluster (determinism rule 1).
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SeededRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_reseeding_restarts_it() {
        seed_rng(7);
        let a: Vec<u64> = (0..4)
            .map(|_| HamsterRuntime::thread_rng().next_u64())
            .collect();
        seed_rng(7);
        let b: Vec<u64> = (0..4)
            .map(|_| HamsterRuntime::thread_rng().next_u64())
            .collect();
        assert_eq!(a, b);
        seed_rng(8);
        let c: Vec<u64> = (0..4)
            .map(|_| HamsterRuntime::thread_rng().next_u64())
            .collect();
        assert_ne!(a, c);
    }
}
