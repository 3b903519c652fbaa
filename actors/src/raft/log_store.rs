//! The Raft log in LMDB: entries keyed by big-endian index (so key order is index order), the
//! vote, the committed pointer and the last purged log id. Every durable write is one LMDB
//! write transaction, and LMDB's commit is the fsync.
//!
//! Fsync budget: openraft 0.9 appends one client write per `append` call and waits for it to
//! be flushed before taking the next (`RaftCore::append_to_log`), so a log write costs one
//! fsync per entry whatever this store does. The committed pointer therefore gets no fsync of
//! its own: it rides along in the next log write. Losing the latest value in a crash is safe —
//! it only ever moves forward, the state machine keeps its own applied id, and openraft takes
//! the larger of the two at start-up.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};

use super::db::{get_json, put_json, DbError, MetaDb};
use super::state_machine::applied_index_in;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

pub(crate) const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
pub(crate) const PURGED_KEY: &[u8] = b"purged";

/// The log key of `index`.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, DbError> {
    let raw: [u8; 8] = key
        .try_into()
        .map_err(|_| DbError::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(raw))
}

/// The log storage (and, cloned, its reader).
#[derive(Clone)]
pub struct LogStore {
    db: MetaDb,
    /// The committed log id openraft reported last and no transaction has written yet.
    unsaved_committed: Arc<Mutex<Option<Option<LogId>>>>,
    /// Test builds only: the next append panics, taking the Raft core's task down with it.
    #[cfg(feature = "fault-injection")]
    panic_next_append: Arc<std::sync::atomic::AtomicBool>,
}

impl LogStore {
    /// A log store over `db`'s log tables.
    pub fn new(db: MetaDb) -> Self {
        LogStore {
            db,
            unsaved_committed: Arc::default(),
            #[cfg(feature = "fault-injection")]
            panic_next_append: Arc::default(),
        }
    }

    /// Test builds only: the switch that makes the next append panic inside the Raft core.
    #[cfg(feature = "fault-injection")]
    pub fn panic_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.panic_next_append.clone()
    }

    /// Runs `f` in one write transaction that also carries any unsaved committed pointer, and
    /// commits it (fsync).
    fn write(
        &self,
        f: impl FnOnce(&mut heed::RwTxn) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let mut txn = self.db.env.write_txn()?;
        f(&mut txn)?;
        // The lock only guards a small value; a panic elsewhere cannot leave it half-written.
        let committed = self
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = committed {
            put_json(&self.db.raft, &mut txn, COMMITTED_KEY, &c)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn pointer<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        let txn = self.db.env.read_txn()?;
        get_json(&self.db.raft, &txn, key)
    }

    fn read_range<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, DbError> {
        let start = range.start_bound().map(|i| index_key(*i));
        let end = range.end_bound().map(|i| index_key(*i));
        let bounds = (start.as_ref().map(|k| &k[..]), end.as_ref().map(|k| &k[..]));
        let txn = self.db.env.read_txn()?;
        let mut out: Vec<Entry> = Vec::new();
        for item in self.db.log.range(&txn, &bounds)? {
            let (key, bytes) = item?;
            let entry: Entry = serde_json::from_slice(bytes)?;
            // Pair check on decode: an entry sits under its own index, with no holes.
            let index = key_index(key)?;
            let expected = out.last().map_or(index, |e| e.log_id.index + 1);
            if entry.log_id.index != index || index != expected {
                return Err(DbError::Corrupt(format!(
                    "log entry {} stored at index {index}, expected {expected}",
                    entry.log_id
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, DbError> {
        let txn = self.db.env.read_txn()?;
        let purged: Option<LogId> = get_json(&self.db.raft, &txn, PURGED_KEY)?;
        let last = match self.db.log.last(&txn)? {
            Some((_, bytes)) => Some(serde_json::from_slice::<Entry>(bytes)?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    fn append_batch(&self, entries: impl Iterator<Item = Entry>) -> Result<(), DbError> {
        let mut bytes = 0u64;
        self.write(|txn| {
            let mut prev: Option<u64> = None;
            for entry in entries {
                let index = entry.log_id.index;
                // openraft hands us consecutive entries; a gap would be a hole in the log.
                if prev.is_some_and(|p| p + 1 != index) {
                    return Err(DbError::Corrupt(format!(
                        "append of {index} after {prev:?}"
                    )));
                }
                let encoded = serde_json::to_vec(&entry)?;
                self.db.log.put(txn, &index_key(index), &encoded)?;
                bytes += encoded.len() as u64;
                prev = Some(index);
            }
            Ok(())
        })?;
        self.db
            .log_bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn truncate_from(&self, index: u64) -> Result<(), DbError> {
        let from = index_key(index);
        self.write(|txn| {
            self.db
                .log
                .delete_range(txn, &(Bound::Included(&from[..]), Bound::Unbounded))?;
            Ok(())
        })
    }

    fn purge_upto(&self, log_id: &LogId) -> Result<(), DbError> {
        self.write(|txn| {
            // openraft asks for the purge that follows a snapshot install as soon as it hands
            // the install to the state machine, not once the install is done. Purged then, a
            // crash in the middle of a long install would leave a log that starts past what the
            // (old) state has applied, and a node that cannot start. Such a purge is left to
            // the install, which does it in the commit that makes the snapshot live.
            if applied_index_in(&self.db, txn)? < Some(log_id.index) {
                tracing::debug!(upto = %log_id, "log purge left to the snapshot install");
                return Ok(());
            }
            purge_in(&self.db, txn, log_id)
        })
    }
}

/// In `txn`, drops every log entry up to `log_id` and records it as the last purged, unless
/// the log was purged that far already. The pointer moves in the same transaction as the
/// deletion, so after a crash the log state never claims entries that are gone.
pub(crate) fn purge_in(db: &MetaDb, txn: &mut heed::RwTxn, log_id: &LogId) -> Result<(), DbError> {
    let purged: Option<LogId> = get_json(&db.raft, txn, PURGED_KEY)?;
    if purged.is_some_and(|p| p.index >= log_id.index) {
        return Ok(());
    }
    put_json(&db.raft, txn, PURGED_KEY, log_id)?;
    let upto = index_key(log_id.index);
    db.log
        .delete_range(txn, &(Bound::Unbounded, Bound::Included(&upto[..])))?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write(|txn| put_json(&self.db.raft, txn, VOTE_KEY, vote))
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.pointer(VOTE_KEY)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Parked for the next write transaction; see the module notes for why no fsync.
        *self
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let parked = *self
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = parked {
            return Ok(c);
        }
        let stored: Option<Option<LogId>> = self
            .pointer(COMMITTED_KEY)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        #[cfg(feature = "fault-injection")]
        if self
            .panic_next_append
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("fault injection: the metadata log append panics");
        }
        // Every entry openraft handed over goes into one transaction; its commit returns only
        // once LMDB has synced, so the entries are durable when we report them flushed.
        self.append_batch(entries.into_iter())
            .map_err(|e| StorageIOError::write_logs(&e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.purge_upto(&log_id)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
