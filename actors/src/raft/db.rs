//! The one LMDB environment under `<data>/meta` (DESIGN §3) and the named databases in it: the
//! Raft log and its pointers, and the metadata state machine tables. The log store, the state
//! machine and the node's readers all share one [`MetaDb`]; they differ only in which tables
//! they touch.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hamster_protocol::layout::StaleShard;
use hamster_protocol::meta::ObjectId;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};

/// Named databases we create; `max_dbs` is set from this: the log, its pointers, the state
/// machine pointers, the snapshot pointer, the freed queue, and two sets of [`StateTables`].
const TABLE_COUNT: u32 = 5 + 2 * StateTables::COUNT;

/// The map size a node's metadata store is opened with. The map is address space, not disk:
/// the file grows only as pages are used. It is sized for the state twice over, because an
/// installing snapshot fills the spare table set beside the live one (ADR-0009): about 20 GiB
/// at 10^7 objects.
pub const META_MAP_BYTES: usize = 256 << 30;

/// The `sm_meta` key naming the live set of [`StateTables`] (one byte, 0 or 1; absent is 0).
pub const LIVE_SET_KEY: &[u8] = b"live_set";

/// How long [`MetaDb::open`] waits for a previous environment on the same path (a node that is
/// still shutting down in this process) to close before giving up.
const REOPEN_WAIT_MAX: Duration = Duration::from_secs(10);
const REOPEN_POLL: Duration = Duration::from_millis(20);

/// An untyped table: keys and values are our own encodings (big-endian integers, UTF-8 names,
/// JSON records), so the encoding lives next to the code that reads it.
pub type Table = Database<'static, Bytes, Bytes>;

/// Why a storage operation failed. Every one of these is a fault, not an answer: the caller
/// stops (Raft) or reports a server error (reads).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// LMDB refused (full map, I/O error, ...).
    #[error("lmdb: {0}")]
    Lmdb(#[from] heed::Error),
    /// A stored record did not decode, or a record did not encode.
    #[error("record encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// A snapshot file could not be read or written.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// A stored key or record broke a format rule.
    #[error("corrupt metadata store: {0}")]
    Corrupt(String),
}

/// The replicated state machine's record tables. The environment holds two sets: the live one,
/// named by `sm_meta` [`LIVE_SET_KEY`], and a spare one a snapshot install fills before it
/// makes it live in one commit (ADR-0009). Every reader picks the live set inside its own
/// transaction, so a read never mixes the two.
#[derive(Clone, Copy)]
pub struct StateTables {
    /// Buckets: name → JSON `BucketRecord`.
    pub buckets: Table,
    /// Objects: `bucket + "/" + key` → JSON `VersionList`. Bucket names hold no '/', so the
    /// keys of one bucket are exactly the range [`bucket/`, `bucket0`) ('0' follows '/').
    pub objects: Table,
    /// Access keys: access key id → JSON `AccessKey`.
    pub keys: Table,
    /// Multipart uploads: `bucket/key/upload_id` → JSON `Upload`.
    pub uploads: Table,
    /// Join tokens: SHA-256 of the secret (64 hex digits) → JSON `JoinTokenRecord`.
    pub tokens: Table,
    /// Shards unlinked by layout moves and not yet deleted on their nodes:
    /// [`stale_key`] → empty. Node first, so one node's list is one range.
    pub stale: Table,
    /// Parts a layout transition must look at again: big-endian u64 sequence → JSON `Revisit`.
    pub revisits: Table,
}

impl StateTables {
    /// Tables in one set.
    pub const COUNT: u32 = 7;

    /// The set's tables in snapshot order, each with its snapshot table number.
    pub fn numbered(&self) -> [(u8, Table); Self::COUNT as usize] {
        [
            (1, self.buckets),
            (2, self.objects),
            (3, self.keys),
            (4, self.uploads),
            (5, self.tokens),
            (6, self.stale),
            (7, self.revisits),
        ]
    }

    /// The table a snapshot numbers `n`.
    pub fn by_number(&self, n: u8) -> Option<Table> {
        self.numbered()
            .into_iter()
            .find_map(|(i, t)| (i == n).then_some(t))
    }
}

/// The environment and its tables. Cloning is cheap (the environment is reference counted).
#[derive(Clone)]
pub struct MetaDb {
    /// The environment. Read transactions are not tied to a thread (`WithoutTls`) so a read
    /// may be taken in one task and finished in another.
    pub env: Env<WithoutTls>,
    /// The directory of the environment; snapshot files live in its `snapshots` folder.
    pub dir: Arc<PathBuf>,
    /// Raft log: big-endian u64 index → JSON entry.
    pub log: Table,
    /// Raft log pointers: `vote`, `committed`, `purged` → JSON.
    pub raft: Table,
    /// State machine pointers: `applied`, `membership`, `layout`, `scrub`, [`LIVE_SET_KEY`].
    pub sm_meta: Table,
    /// The current snapshot: which file holds it and what it covers.
    pub snapshot: Table,
    /// The two sets of state tables; [`MetaDb::state`] picks the live one.
    pub sets: [StateTables; 2],
    /// Bodies applied commits freed whose shard files this node has not deleted yet
    /// (`super::freed`): local to the node, never in a snapshot.
    pub freed: Table,
    /// Bytes of log entries appended since the store was opened: what the snapshot policy
    /// measures the log's growth by.
    pub log_bytes: Arc<AtomicU64>,
    /// Size of the newest snapshot file built or installed here (0 before the first).
    pub snapshot_bytes: Arc<AtomicU64>,
}

impl MetaDb {
    /// Opens (creating if needed) the environment in `dir`. If this process still has the
    /// environment open from a node that is shutting down, waits (bounded) for it to close.
    pub async fn open(dir: &Path, map_size_bytes: usize) -> anyhow::Result<MetaDb> {
        std::fs::create_dir_all(dir)?;
        let mut waited = Duration::ZERO;
        loop {
            match Self::open_once(dir, map_size_bytes) {
                Err(DbError::Lmdb(heed::Error::EnvAlreadyOpened)) if waited < REOPEN_WAIT_MAX => {
                    tokio::time::sleep(REOPEN_POLL).await;
                    waited += REOPEN_POLL;
                }
                other => return Ok(other?),
            }
        }
    }

    fn open_once(dir: &Path, map_size_bytes: usize) -> Result<MetaDb, DbError> {
        // LMDB needs a whole number of pages. Rounding to 64 KiB covers every page size in use
        // (4, 16 and 64 KiB), and the map is sparse, so rounding up costs nothing.
        let granule = 64 * 1024;
        let map_size = map_size_bytes.div_ceil(granule).max(1) * granule;
        // SAFETY: the environment is opened once per process (heed refuses a second open of
        // the same path) and nothing else maps these files; we keep the default durable sync
        // mode, so a committed write transaction is on disk. NO_READ_AHEAD only changes how
        // pages are brought in: B-tree lookups touch scattered pages, and with read-ahead each
        // one also pulled its neighbours into this process's resident set (peak RSS after
        // the small-object workloads: 146 MiB with it, 118 MiB without; docs/PERF.md).
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .flags(EnvFlags::NO_READ_AHEAD)
                .map_size(map_size)
                .max_dbs(TABLE_COUNT)
                .open(dir)?
        };
        let wtxn = env.write_txn()?;
        let tables = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, DbError> {
                let mut t = |name: &str| opener.create_database::<Bytes, Bytes>(wtxn, Some(name));
                let (log, raft, sm_meta, snapshot) = (
                    t("raft_log")?,
                    t("raft_state")?,
                    t("sm_meta")?,
                    t("snapshot")?,
                );
                // The first set keeps the names the tables had before there were two.
                let mut set = |suffix: &str| {
                    let mut n = |name: &str| t(&format!("{name}{suffix}"));
                    Ok::<_, heed::Error>((
                        n("buckets")?,
                        n("objects")?,
                        n("keys")?,
                        n("uploads")?,
                        n("tokens")?,
                        n("stale_shards")?,
                        n("revisits")?,
                    ))
                };
                let sets = [set("")?, set(".b")?];
                let freed = t("freed_bodies")?;
                Ok(CommitOrAbort::<_, ()>::Commit((
                    log, raft, sm_meta, snapshot, sets, freed,
                )))
            })?
            .unwrap_commit();
        let (log, raft, sm_meta, snapshot, sets, freed) = tables;
        let sets = sets.map(
            |(buckets, objects, keys, uploads, tokens, stale, revisits)| StateTables {
                buckets,
                objects,
                keys,
                uploads,
                tokens,
                stale,
                revisits,
            },
        );
        Ok(MetaDb {
            env,
            dir: Arc::new(dir.to_path_buf()),
            log,
            raft,
            sm_meta,
            snapshot,
            sets,
            freed,
            log_bytes: Arc::default(),
            snapshot_bytes: Arc::default(),
        })
    }

    /// The index of the live set of state tables as `txn` sees it.
    pub fn live_set(&self, txn: &heed::RoTxn) -> Result<usize, DbError> {
        match self.sm_meta.get(txn, LIVE_SET_KEY)? {
            None | Some([0]) => Ok(0),
            Some([1]) => Ok(1),
            Some(other) => Err(DbError::Corrupt(format!("live table set {other:?}"))),
        }
    }

    /// The live state tables as `txn` sees them.
    pub fn state(&self, txn: &heed::RoTxn) -> Result<StateTables, DbError> {
        Ok(self.sets[self.live_set(txn)?])
    }

    /// Where snapshot files are kept.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// The longest key LMDB accepts in this build.
    pub fn max_key_bytes(&self) -> usize {
        self.env.max_key_size()
    }

    /// Gives up this handle and returns the event that fires once every other handle is gone
    /// and LMDB has closed the files.
    pub fn into_closing_event(self) -> heed::EnvClosingEvent {
        self.env.prepare_for_closing()
    }
}

/// The `objects` key of `bucket/key`.
pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key.as_bytes());
    k
}

/// The half-open range of `objects` keys that belong to `bucket`: [`bucket/`, `bucket0`).
pub fn bucket_range(bucket: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = bucket.as_bytes().to_vec();
    let mut end = start.clone();
    start.push(b'/');
    end.push(b'/' + 1);
    (start, end)
}

/// Length of a [`stale_key`].
pub const STALE_KEY_LEN: usize = 8 + 16 + 4 + 2;

/// The `stale` key of a shard: node, body, part and index, big-endian, so keys sort as
/// [`StaleShard`] does and one node's shards are one range.
pub fn stale_key(s: &StaleShard) -> [u8; STALE_KEY_LEN] {
    let mut k = [0u8; STALE_KEY_LEN];
    k[..8].copy_from_slice(&s.node.to_be_bytes());
    k[8..24].copy_from_slice(&s.body.0);
    k[24..28].copy_from_slice(&s.part.to_be_bytes());
    k[28..].copy_from_slice(&s.index.to_be_bytes());
    k
}

/// Decodes a [`stale_key`].
pub fn stale_from_key(k: &[u8]) -> Result<StaleShard, DbError> {
    let bad = || DbError::Corrupt(format!("stale shard key of {} bytes", k.len()));
    if k.len() != STALE_KEY_LEN {
        return Err(bad());
    }
    let node = u64::from_be_bytes(k[..8].try_into().map_err(|_| bad())?);
    let body = ObjectId(k[8..24].try_into().map_err(|_| bad())?);
    let part = u32::from_be_bytes(k[24..28].try_into().map_err(|_| bad())?);
    let index = u16::from_be_bytes(k[28..].try_into().map_err(|_| bad())?);
    Ok(StaleShard {
        node,
        body,
        part,
        index,
    })
}

/// Reads and decodes one JSON record.
pub fn get_json<T: serde::de::DeserializeOwned>(
    table: &Table,
    txn: &heed::RoTxn,
    key: &[u8],
) -> Result<Option<T>, DbError> {
    match table.get(txn, key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes)?)),
        None => Ok(None),
    }
}

/// Encodes and writes one JSON record.
pub fn put_json<T: serde::Serialize>(
    table: &Table,
    txn: &mut heed::RwTxn,
    key: &[u8],
    value: &T,
) -> Result<(), DbError> {
    let bytes = serde_json::to_vec(value)?;
    table.put(txn, key, &bytes)?;
    Ok(())
}
