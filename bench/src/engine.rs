//! The load engine: workers that each own one connection and the keys they wrote, the
//! operations they repeat, and [`drive`], which runs a set of workers against one operation
//! until a deadline, a count or the keys run out, and merges what they measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::output::Counters;
use crate::s3::{Conn, OpError};
use crate::stats::Tally;

/// Keys per ListObjectsV2 page (the S3 maximum).
pub const LIST_PAGE_KEYS: u32 = 1000;
/// Objects a fill worker writes under one "directory" (`PREFIX-BLOCK/N`), so a delimiter
/// listing of the fill has one common prefix per this many objects.
pub const FILL_DIR_OBJECTS: u64 = 100;
/// Consecutive transport failures after which a worker gives up: the endpoint is gone, and
/// spinning on refused connections until the deadline would only inflate the error count.
const TRANSPORT_STREAK_MAX: u32 = 20;
/// Extra pattern bytes beyond the largest object, so bodies can start at different offsets
/// and no two objects need be identical (a deduplicating store must not get a free ride).
pub const BODY_SKEW_BYTES: usize = 64 << 10;

/// Deterministic pseudo-random bytes: objects that do not compress, made once and shared.
pub fn pattern(len: usize, seed: u64) -> Bytes {
    let mut state = seed;
    let mut buf = vec![0u8; len];
    for chunk in buf.chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    Bytes::from(buf)
}

/// SplitMix64: a tiny, good-enough generator for choosing keys, sizes and offsets.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a worker does once per turn.
#[derive(Debug, Clone)]
pub enum Op {
    /// PUT a new object, its size drawn from `sizes` (equal entries for a fixed size).
    Put {
        /// The candidate sizes.
        sizes: [u64; 2],
    },
    /// GET the worker's objects in turn, checking each body's length.
    Get,
    /// HEAD the worker's objects in turn, checking each `Content-Length`.
    Head,
    /// DELETE the worker's objects one by one; the worker stops when none are left.
    Delete,
    /// DELETE the worker's objects and any whose state is unknown; no figure is taken.
    Cleanup,
    /// PUT a new object of `size` bytes at `PREFIX-BLOCK/N` and forget it: a fill of millions
    /// of objects keeps no key in memory, and nothing deletes them afterwards.
    Fill {
        /// The object size.
        size: u64,
    },
    /// Page through ListObjectsV2 under `prefix` again and again; a complete pass must
    /// return `expect_keys` when given. With a delimiter, common prefixes count as items
    /// beside keys.
    List {
        /// The listed prefix.
        prefix: String,
        /// The delimiter, if the listing rolls keys up into common prefixes.
        delimiter: Option<String>,
        /// Keys (and common prefixes) a full pass must return.
        expect_keys: Option<u64>,
    },
    /// 70% GET, 20% PUT (of `sizes`), 10% DELETE over the worker's own objects.
    Mixed {
        /// The candidate PUT sizes.
        sizes: [u64; 2],
    },
}

impl Op {
    /// PUT of one fixed size.
    pub fn put(size: u64) -> Op {
        Op::Put { sizes: [size; 2] }
    }
}

/// What one turn came to.
enum Step {
    /// Nothing left to do (no objects to read or delete).
    Done,
    /// Success: payload bytes moved and items (listed keys) seen.
    Ok { bytes: u64, items: u64 },
    /// Failure.
    Err(OpError),
}

/// One connection and the objects written through it. Workers never share keys, so a GET
/// never races a DELETE of the same object.
pub struct Worker {
    conn: Conn,
    bucket: Arc<str>,
    body: Bytes,
    /// This worker's key prefix, `RUN/WORKLOAD/ID`.
    prefix: String,
    seq: u64,
    rng: u64,
    /// Objects known to exist, with their sizes.
    keys: Vec<(String, u64)>,
    /// Keys whose state is unknown after a failed PUT or DELETE; cleanup deletes them.
    orphans: Vec<String>,
    cursor: usize,
    list_token: Option<String>,
    list_pass_keys: u64,
}

impl Worker {
    /// A worker writing under `prefix`; `body` must be at least the largest object plus
    /// [`BODY_SKEW_BYTES`].
    pub fn new(conn: Conn, bucket: Arc<str>, body: Bytes, prefix: String, seed: u64) -> Worker {
        Worker {
            conn,
            bucket,
            body,
            prefix,
            seq: 0,
            rng: seed,
            keys: Vec::new(),
            orphans: Vec::new(),
            cursor: 0,
            list_token: None,
            list_pass_keys: 0,
        }
    }

    /// Dials the worker's connection.
    pub async fn connect(&mut self) -> Result<(), OpError> {
        self.conn.connect().await
    }

    /// How many objects this worker holds (known and unknown state).
    pub fn object_count(&self) -> usize {
        self.keys.len() + self.orphans.len()
    }

    fn rand(&mut self) -> u64 {
        splitmix64(&mut self.rng)
    }

    /// A body of `size` bytes: a slice of the shared pattern, not a copy.
    fn body(&mut self, size: u64) -> Bytes {
        let offset = (self.rand() % BODY_SKEW_BYTES as u64) as usize;
        let size = usize::try_from(size).expect("object sizes fit in memory");
        assert!(
            offset + size <= self.body.len(),
            "the pattern must cover the largest object"
        );
        self.body.slice(offset..offset + size)
    }

    async fn step(&mut self, op: &Op) -> Step {
        match op {
            Op::Put { sizes } => {
                let size = sizes[(self.rand() & 1) as usize];
                self.put(size).await
            }
            Op::Get => match self.next_key() {
                Some((key, size)) => self.get(&key, size).await,
                None => Step::Done,
            },
            Op::Head => match self.next_key() {
                Some((key, size)) => self.head(&key, size).await,
                None => Step::Done,
            },
            Op::Delete => match self.keys.pop() {
                Some((key, _)) => self.delete(key).await,
                None => Step::Done,
            },
            Op::Cleanup => match self
                .keys
                .pop()
                .map(|(k, _)| k)
                .or_else(|| self.orphans.pop())
            {
                Some(key) => self.delete(key).await,
                None => Step::Done,
            },
            Op::Fill { size } => self.fill(*size).await,
            Op::List {
                prefix,
                delimiter,
                expect_keys,
            } => self.list(prefix, delimiter.as_deref(), *expect_keys).await,
            Op::Mixed { sizes } => self.mixed(*sizes).await,
        }
    }

    /// Whether a turn of `op` has anything to act on. Asked before a turn takes one of the
    /// figure's `--count` requests, so a worker without objects does not use one up.
    fn has_work(&self, op: &Op) -> bool {
        match op {
            Op::Get | Op::Head | Op::Delete => !self.keys.is_empty(),
            Op::Cleanup => self.object_count() > 0,
            Op::Put { .. } | Op::Fill { .. } | Op::List { .. } | Op::Mixed { .. } => true,
        }
    }

    /// The next key for GET/HEAD, round-robin over the worker's objects.
    fn next_key(&mut self) -> Option<(String, u64)> {
        if self.keys.is_empty() {
            return None;
        }
        let i = self.cursor % self.keys.len();
        self.cursor = self.cursor.wrapping_add(1);
        Some(self.keys[i].clone())
    }

    async fn put(&mut self, size: u64) -> Step {
        let key = format!("{}/{}", self.prefix, self.seq);
        self.seq += 1;
        let body = self.body(size);
        match self.conn.put_object(&self.bucket, &key, body).await {
            Ok(()) => {
                self.keys.push((key, size));
                Step::Ok {
                    bytes: size,
                    items: 0,
                }
            }
            Err(e) => {
                self.orphans.push(key);
                Step::Err(e)
            }
        }
    }

    /// The key of the fill's next object: [`FILL_DIR_OBJECTS`] to a directory.
    fn fill_key(&mut self) -> String {
        let seq = self.seq;
        self.seq += 1;
        format!(
            "{}-{}/{}",
            self.prefix,
            seq / FILL_DIR_OBJECTS,
            seq % FILL_DIR_OBJECTS
        )
    }

    async fn fill(&mut self, size: u64) -> Step {
        let key = self.fill_key();
        let body = self.body(size);
        match self.conn.put_object(&self.bucket, &key, body).await {
            Ok(()) => Step::Ok {
                bytes: size,
                items: 0,
            },
            Err(e) => Step::Err(e),
        }
    }

    async fn get(&mut self, key: &str, size: u64) -> Step {
        match self.conn.get_object(&self.bucket, key, size).await {
            Ok(n) if n == size => Step::Ok { bytes: n, items: 0 },
            Ok(n) => Step::Err(OpError::Mismatch(format!(
                "GET {key} returned {n} bytes, {size} were stored"
            ))),
            Err(e) => Step::Err(e),
        }
    }

    async fn head(&mut self, key: &str, size: u64) -> Step {
        match self.conn.head_object(&self.bucket, key).await {
            Ok(n) if n == size => Step::Ok { bytes: 0, items: 0 },
            Ok(n) => Step::Err(OpError::Mismatch(format!(
                "HEAD {key} reported {n} bytes, {size} were stored"
            ))),
            Err(e) => Step::Err(e),
        }
    }

    async fn delete(&mut self, key: String) -> Step {
        match self.conn.delete_object(&self.bucket, &key).await {
            Ok(()) => Step::Ok { bytes: 0, items: 0 },
            Err(e) => {
                self.orphans.push(key);
                Step::Err(e)
            }
        }
    }

    async fn list(
        &mut self,
        prefix: &str,
        delimiter: Option<&str>,
        expect_keys: Option<u64>,
    ) -> Step {
        let token = self.list_token.take();
        let page = self
            .conn
            .list_page(
                &self.bucket,
                prefix,
                delimiter,
                token.as_deref(),
                LIST_PAGE_KEYS,
            )
            .await;
        match page {
            Ok(page) => {
                let entries = page.keys + page.prefixes;
                self.list_pass_keys += entries;
                match page.next {
                    Some(next) => self.list_token = Some(next),
                    None => {
                        let total = std::mem::take(&mut self.list_pass_keys);
                        if let Some(expect) = expect_keys.filter(|&e| e != total) {
                            return Step::Err(OpError::Mismatch(format!(
                                "a full listing of {prefix} returned {total} keys, {expect} were stored"
                            )));
                        }
                    }
                }
                Step::Ok {
                    bytes: page.bytes,
                    items: entries,
                }
            }
            Err(e) => {
                // Start the pass over rather than resume from a token of unknown standing.
                self.list_pass_keys = 0;
                Step::Err(e)
            }
        }
    }

    async fn mixed(&mut self, sizes: [u64; 2]) -> Step {
        let roll = self.rand() % 100;
        if self.keys.is_empty() || (70..90).contains(&roll) {
            let size = sizes[(self.rand() & 1) as usize];
            return self.put(size).await;
        }
        let i = (self.rand() % self.keys.len() as u64) as usize;
        if roll < 70 {
            let (key, size) = self.keys[i].clone();
            self.get(&key, size).await
        } else {
            let (key, _) = self.keys.swap_remove(i);
            self.delete(key).await
        }
    }
}

/// When a run of turns stops.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Stop starting requests after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests in all.
    pub count_max: Option<u64>,
    /// Stop each worker after this many requests.
    pub per_worker_max: Option<u64>,
    /// Stop when this flag is set (Ctrl-C).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Runs `workers` against `op` within `limits`. Returns the workers (to reuse their
/// connections and objects), their merged tally, and the wall time from the first request
/// to the last answer.
pub async fn drive(
    workers: Vec<Worker>,
    op: Op,
    limits: Limits,
    counters: Arc<Counters>,
) -> (Vec<Worker>, Tally, Duration) {
    let op = Arc::new(op);
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = limits.duration.map(|d| start + d);
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let (op, issued, counters, limits) =
                (op.clone(), issued.clone(), counters.clone(), limits.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut turns = 0u64;
                let mut transport_streak = 0u32;
                loop {
                    let cancelled = limits
                        .cancel
                        .as_ref()
                        .is_some_and(|c| c.load(Ordering::Relaxed));
                    let late = deadline.is_some_and(|d| Instant::now() >= d);
                    let worker_full = limits.per_worker_max.is_some_and(|m| turns >= m);
                    if cancelled || late || worker_full || !worker.has_work(&op) {
                        break;
                    }
                    if let Some(max) = limits.count_max {
                        if issued.fetch_add(1, Ordering::Relaxed) >= max {
                            break;
                        }
                    }
                    turns += 1;
                    let sent = Instant::now();
                    match worker.step(&op).await {
                        Step::Done => break,
                        Step::Ok { bytes, items } => {
                            tally.ok(sent.elapsed(), bytes, items);
                            counters.add(bytes);
                            transport_streak = 0;
                        }
                        Step::Err(e) => {
                            transport_streak = if e.is_transport() {
                                transport_streak + 1
                            } else {
                                0
                            };
                            tally.error(e);
                            counters.add(0);
                            if transport_streak >= TRANSPORT_STREAK_MAX {
                                break;
                            }
                        }
                    }
                }
                (worker, tally)
            })
        })
        .collect();
    let mut workers = Vec::with_capacity(handles.len());
    let mut total = Tally::new();
    for handle in handles {
        match handle.await {
            Ok((worker, tally)) => {
                total.merge(&tally);
                workers.push(worker);
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    (workers, total, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern is deterministic per seed, differs between seeds and does not repeat
    /// at the word level within a small buffer.
    #[test]
    fn pattern_is_deterministic_and_varied() {
        let a = pattern(4099, 7);
        assert_eq!(a.len(), 4099);
        assert_eq!(a, pattern(4099, 7));
        assert_ne!(a, pattern(4099, 8));
        let words: std::collections::BTreeSet<&[u8]> = a.chunks_exact(8).collect();
        assert_eq!(words.len(), 4099 / 8);
    }
}
