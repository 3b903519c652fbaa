//! The metadata state machine in LMDB: the pure `meta::apply` run over an LMDB write
//! transaction, snapshots of the tables, and snapshot installation.
//!
//! Exactly-once apply: the applied log id is written in the same transaction as the
//! state it produced, one transaction per apply batch, so after a crash the state and the
//! pointer agree and a restart neither skips nor repeats an entry. Freed object ids are
//! recorded in the node's freed queue (`super::freed`) in that same transaction and announced
//! only after it commits, so the reclaimer never deletes shards a rolled-back state still
//! references, and a crash before it deletes them loses nothing.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use hamster_protocol::layout::{Revisit, StaleShard};
use hamster_protocol::meta::{
    self, upload_storage_key, AccessKey, Applied, BucketRecord, Command, JoinTokenRecord,
    MetaStore, ObjectId, Upload, VersionList,
};
use hamster_protocol::placement::Layout;
use hamster_protocol::scrub::ScrubState;
use heed::RwTxn;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::db::{get_json, object_key, put_json, stale_key, DbError, MetaDb};
use super::log_store;
use super::query;
use super::snapshot::{self, Filling, InstallTap, SnapFile};
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const APPLIED_KEY: &[u8] = b"applied";
pub(crate) const MEMBERSHIP_KEY: &[u8] = b"membership";
/// Where the data-plane layout is kept, in the state machine pointers table.
pub(crate) const LAYOUT_KEY: &[u8] = b"layout";
/// Where the scrubber's state is kept, in the state machine pointers table.
pub(crate) const SCRUB_KEY: &[u8] = b"scrub";
/// The snapshot table key of the current snapshot's [`CurrentSnapshot`].
const SNAPSHOT_CURRENT_KEY: &[u8] = b"current";
/// Where stores written before snapshots were files kept the snapshot's meta and its bytes.
const LEGACY_META_KEY: &[u8] = b"meta";
const LEGACY_DATA_KEY: &[u8] = b"data";

/// Format marker of [`SnapshotBody`], the format-1 snapshot.
const SNAPSHOT_FORMAT_V1: u32 = 1;

/// A format-1 snapshot: the state machine tables as one JSON document. Snapshots are framed
/// files now (`snapshot`); this is still read from a member that sends one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// [`SNAPSHOT_FORMAT_V1`].
    pub format: u32,
    /// Every bucket, in name order.
    pub buckets: Vec<BucketRecord>,
    /// Every `bucket/key` with its versions, in key order.
    pub objects: Vec<(String, VersionList)>,
    /// Every access key, in id order.
    pub keys: Vec<AccessKey>,
    /// Every multipart upload in progress, in storage-key order.
    #[serde(default)]
    pub uploads: Vec<Upload>,
    /// Every join token record, in hash order.
    #[serde(default)]
    pub tokens: Vec<JoinTokenRecord>,
    /// The data-plane layout, once one was stored.
    #[serde(default)]
    pub layout: Option<Layout>,
    /// Shards unlinked by layout moves and not yet deleted, in key order.
    #[serde(default)]
    pub stale: Vec<StaleShard>,
    /// Parts a transition must look at again, with their sequence numbers.
    #[serde(default)]
    pub revisits: Vec<(u64, Revisit)>,
    /// The scrubber's state, once it stored one.
    #[serde(default)]
    pub scrub: Option<ScrubState>,
}

/// `MetaStore` over an open write transaction: what `meta::apply` mutates.
struct TxnStore<'a, 'e> {
    db: &'a MetaDb,
    txn: &'a mut RwTxn<'e>,
}

impl MetaStore for TxnStore<'_, '_> {
    type Error = DbError;

    fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, DbError> {
        query::bucket(self.db, self.txn, name)
    }

    fn put_bucket(&mut self, bucket: &BucketRecord) -> Result<(), DbError> {
        put_json(
            &self.db.state(self.txn)?.buckets,
            self.txn,
            bucket.name.as_bytes(),
            bucket,
        )
    }

    fn delete_bucket(&mut self, name: &str) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .buckets
            .delete(self.txn, name.as_bytes())?;
        Ok(())
    }

    fn bucket_has_keys(&self, name: &str) -> Result<bool, DbError> {
        query::bucket_has_keys(self.db, self.txn, name)
    }

    fn versions(&self, bucket: &str, key: &str) -> Result<Option<VersionList>, DbError> {
        query::versions(self.db, self.txn, bucket, key)
    }

    fn put_versions(&mut self, bucket: &str, key: &str, v: &VersionList) -> Result<(), DbError> {
        put_json(
            &self.db.state(self.txn)?.objects,
            self.txn,
            &object_key(bucket, key),
            v,
        )
    }

    fn delete_versions(&mut self, bucket: &str, key: &str) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .objects
            .delete(self.txn, &object_key(bucket, key))?;
        Ok(())
    }

    fn put_access_key(&mut self, key: &AccessKey) -> Result<(), DbError> {
        put_json(
            &self.db.state(self.txn)?.keys,
            self.txn,
            key.access_key.as_bytes(),
            key,
        )
    }

    fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>, DbError> {
        get_json(
            &self.db.state(self.txn)?.keys,
            self.txn,
            access_key.as_bytes(),
        )
    }

    fn access_keys(&self) -> Result<Vec<AccessKey>, DbError> {
        let mut out = Vec::new();
        for item in self.db.state(self.txn)?.keys.iter(self.txn)? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v)?);
        }
        Ok(out)
    }

    fn delete_access_key(&mut self, access_key: &str) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .keys
            .delete(self.txn, access_key.as_bytes())?;
        Ok(())
    }

    fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Option<Upload>, DbError> {
        get_json(
            &self.db.state(self.txn)?.uploads,
            self.txn,
            upload_storage_key(bucket, key, id).as_bytes(),
        )
    }

    fn put_upload(&mut self, u: &Upload) -> Result<(), DbError> {
        let k = upload_storage_key(&u.bucket, &u.key, &u.upload_id);
        put_json(&self.db.state(self.txn)?.uploads, self.txn, k.as_bytes(), u)
    }

    fn delete_upload(&mut self, bucket: &str, key: &str, id: &str) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .uploads
            .delete(self.txn, upload_storage_key(bucket, key, id).as_bytes())?;
        Ok(())
    }

    fn join_token(&self, secret_sha256: &str) -> Result<Option<JoinTokenRecord>, DbError> {
        get_json(
            &self.db.state(self.txn)?.tokens,
            self.txn,
            secret_sha256.as_bytes(),
        )
    }

    fn put_join_token(&mut self, t: &JoinTokenRecord) -> Result<(), DbError> {
        put_json(
            &self.db.state(self.txn)?.tokens,
            self.txn,
            t.secret_sha256.as_bytes(),
            t,
        )
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, DbError> {
        read_all(&self.db.state(self.txn)?.tokens, self.txn)
    }

    fn delete_join_token(&mut self, secret_sha256: &str) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .tokens
            .delete(self.txn, secret_sha256.as_bytes())?;
        Ok(())
    }

    fn layout(&self) -> Result<Option<Layout>, DbError> {
        get_json(&self.db.sm_meta, self.txn, LAYOUT_KEY)
    }

    fn scrub(&self) -> Result<Option<ScrubState>, DbError> {
        get_json(&self.db.sm_meta, self.txn, SCRUB_KEY)
    }

    fn put_scrub(&mut self, state: &ScrubState) -> Result<(), DbError> {
        put_json(&self.db.sm_meta, self.txn, SCRUB_KEY, state)
    }

    fn put_layout(&mut self, layout: &Layout) -> Result<(), DbError> {
        put_json(&self.db.sm_meta, self.txn, LAYOUT_KEY, layout)
    }

    fn add_stale(&mut self, s: &StaleShard) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .stale
            .put(self.txn, &stale_key(s), &[])?;
        Ok(())
    }

    fn drop_stale(&mut self, s: &StaleShard) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .stale
            .delete(self.txn, &stale_key(s))?;
        Ok(())
    }

    fn drop_stale_of(&mut self, node: u64) -> Result<(), DbError> {
        let first = node.to_be_bytes();
        let end = node.checked_add(1).map(u64::to_be_bytes);
        let upper = match &end {
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Unbounded,
        };
        self.db
            .state(self.txn)?
            .stale
            .delete_range(self.txn, &(Bound::Included(&first[..]), upper))?;
        Ok(())
    }

    fn add_revisit(&mut self, r: &Revisit) -> Result<(), DbError> {
        let next = match self.db.state(self.txn)?.revisits.last(self.txn)? {
            Some((k, _)) => {
                let k: [u8; 8] = k
                    .try_into()
                    .map_err(|_| DbError::Corrupt(format!("revisit key of {} bytes", k.len())))?;
                u64::from_be_bytes(k).saturating_add(1)
            }
            None => 1,
        };
        put_json(
            &self.db.state(self.txn)?.revisits,
            self.txn,
            &next.to_be_bytes(),
            r,
        )
    }

    fn drop_revisit(&mut self, seq: u64) -> Result<(), DbError> {
        self.db
            .state(self.txn)?
            .revisits
            .delete(self.txn, &seq.to_be_bytes())?;
        Ok(())
    }

    fn has_revisit(&self) -> Result<bool, DbError> {
        Ok(self.db.state(self.txn)?.revisits.first(self.txn)?.is_some())
    }
}

/// One applied log entry as an observer sees it: where it sits in the log and a digest of
/// what it carried. The simulation's state-machine safety check compares these across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedEntry {
    /// Log index.
    pub index: u64,
    /// Term of the leader that wrote it.
    pub term: u64,
    /// BLAKE3 of the entry's payload as JSON.
    pub digest: [u8; 32],
}

/// The state machine.
pub struct StateMachine {
    db: MetaDb,
    freed_tx: UnboundedSender<Vec<ObjectId>>,
    /// Told of every entry once its apply has committed, when someone watches.
    applied_tx: Option<UnboundedSender<AppliedEntry>>,
    /// Follows snapshot installs, when someone watches.
    install_tap: Option<InstallTap>,
}

impl StateMachine {
    /// A state machine over `db`'s tables that reports freed bodies on `freed_tx`.
    pub fn new(db: MetaDb, freed_tx: UnboundedSender<Vec<ObjectId>>) -> Self {
        if let Err(e) = remove_stray_snapshot_files(&db) {
            tracing::warn!(error = %e, "could not clear old snapshot files");
        }
        StateMachine {
            db,
            freed_tx,
            applied_tx: None,
            install_tap: None,
        }
    }

    /// Also reports the progress of every snapshot install on `tap`, in its batch size.
    pub fn with_install_tap(mut self, tap: Option<InstallTap>) -> Self {
        self.install_tap = tap;
        self
    }

    /// Also reports every applied entry on `tx` (after its transaction commits).
    pub fn with_applied_tap(mut self, tx: Option<UnboundedSender<AppliedEntry>>) -> Self {
        self.applied_tx = tx;
        self
    }

    fn applied_state_sync(&self) -> Result<(Option<LogId>, StoredMembership), DbError> {
        let txn = self.db.env.read_txn()?;
        let applied = get_json(&self.db.sm_meta, &txn, APPLIED_KEY)?;
        let membership = get_json(&self.db.sm_meta, &txn, MEMBERSHIP_KEY)?.unwrap_or_default();
        Ok((applied, membership))
    }

    fn apply_batch(
        &self,
        entries: impl Iterator<Item = Entry>,
    ) -> Result<Vec<Vec<Applied>>, DbError> {
        let mut txn = self.db.env.write_txn()?;
        let mut last: Option<LogId> = get_json(&self.db.sm_meta, &txn, APPLIED_KEY)?;
        let mut membership: Option<StoredMembership> = None;
        let mut replies = Vec::new();
        let mut applied = Vec::new();
        for entry in entries {
            // Entries apply in log order, each exactly once.
            if let Some(prev) = last {
                if entry.log_id.index != prev.index + 1 {
                    return Err(DbError::Corrupt(format!(
                        "apply of {} after applied {prev}",
                        entry.log_id
                    )));
                }
            }
            let reply = match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => batch
                    .0
                    .iter()
                    .map(|cmd| self.apply_command(&mut txn, cmd))
                    .collect::<Result<Vec<_>, _>>()?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Vec::new()
                }
            };
            replies.push(reply);
            last = Some(entry.log_id);
            if self.applied_tx.is_some() {
                applied.push(AppliedEntry {
                    index: entry.log_id.index,
                    term: entry.log_id.leader_id.term,
                    digest: *blake3::hash(&serde_json::to_vec(&entry.payload)?).as_bytes(),
                });
            }
        }
        if let Some(applied) = &last {
            put_json(&self.db.sm_meta, &mut txn, APPLIED_KEY, applied)?;
        }
        if let Some(m) = &membership {
            put_json(&self.db.sm_meta, &mut txn, MEMBERSHIP_KEY, m)?;
        }
        let freed: Vec<ObjectId> = replies
            .iter()
            .flatten()
            .flat_map(|r| r.freed.iter().copied())
            .collect();
        super::freed::record(&self.db, &mut txn, &freed)?;
        txn.commit()?;
        if let Some(tx) = &self.applied_tx {
            for entry in applied {
                let _ = tx.send(entry);
            }
        }
        for reply in replies.iter().flatten() {
            if !reply.freed.is_empty() {
                // Only a wake-up: the ids wait in the freed queue. The reclaimer may be gone
                // (node stopping); it drains the queue at the next start.
                let _ = self.freed_tx.send(reply.freed.clone());
            }
        }
        Ok(replies)
    }

    fn apply_command(&self, txn: &mut RwTxn, cmd: &Command) -> Result<Applied, DbError> {
        let mut store = TxnStore { db: &self.db, txn };
        meta::apply(&mut store, cmd)
    }

    /// Installs a received snapshot: fills the spare table set from the file, then makes it
    /// live together with the applied pointer, the membership and the snapshot pointer, in one
    /// commit. Until that commit the old state is untouched.
    async fn install(&self, meta: &SnapshotMeta, file: &mut SnapFile) -> Result<(), DbError> {
        let started = tokio::time::Instant::now();
        let mut filling = Filling::begin(&self.db, self.install_tap.clone())?;
        let legacy = is_legacy(file)?;
        if legacy {
            let body = read_legacy(file)?;
            filling.put_all(&self.db, legacy_records(&body)?).await?;
        } else {
            filling.read_framed(&self.db, file).await?;
        }
        let dir = self.db.snapshot_dir();
        // A framed file is kept as the current snapshot; an old-format one is replaced by a
        // framed snapshot of the state it installed, built once that state is live.
        let kept = if legacy {
            None
        } else {
            Some(snapshot::keep_received(file, &dir, &meta.snapshot_id)?)
        };
        let mut txn = self.db.env.write_txn()?;
        filling.go_live(&self.db, &mut txn)?;
        match &meta.last_log_id {
            Some(applied) => {
                put_json(&self.db.sm_meta, &mut txn, APPLIED_KEY, applied)?;
                // The purge openraft asked for when the install began (the log store left it
                // for this commit): the log now starts after the snapshot.
                log_store::purge_in(&self.db, &mut txn, applied)?;
            }
            None => {
                self.db.sm_meta.delete(&mut txn, APPLIED_KEY)?;
            }
        }
        put_json(
            &self.db.sm_meta,
            &mut txn,
            MEMBERSHIP_KEY,
            &meta.last_membership,
        )?;
        match &kept {
            Some(path) => set_current(&self.db, &mut txn, meta, path)?,
            None => drop_current(&self.db, &mut txn)?,
        }
        txn.commit()?;
        filling.clear_old(&self.db)?;
        tracing::info!(
            id = %meta.snapshot_id,
            ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        match kept {
            Some(path) => {
                self.db
                    .snapshot_bytes
                    .store(std::fs::metadata(&path)?.len(), Ordering::Relaxed);
                snapshot::remove_others(&dir, Some(&path), false)?;
            }
            None => {
                SnapshotBuilder {
                    db: self.db.clone(),
                }
                .build()
                .await?;
            }
        }
        Ok(())
    }

    async fn current_snapshot(&self) -> Result<Option<Snapshot>, DbError> {
        let (current, legacy) = {
            let txn = self.db.env.read_txn()?;
            let current: Option<CurrentSnapshot> =
                get_json(&self.db.snapshot, &txn, SNAPSHOT_CURRENT_KEY)?;
            let legacy = self.db.snapshot.get(&txn, LEGACY_META_KEY)?.is_some();
            (current, legacy)
        };
        let builder = SnapshotBuilder {
            db: self.db.clone(),
        };
        match current {
            Some(c) => match SnapFile::open(&self.db.snapshot_dir().join(&c.file)) {
                Ok(file) => Ok(Some(Snapshot {
                    meta: c.meta,
                    snapshot: Box::new(file),
                })),
                // The file is gone (removed by hand): a new one of the current state serves.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %c.file, "snapshot file missing; building a new one");
                    Ok(Some(builder.build().await?))
                }
                Err(e) => Err(e.into()),
            },
            // A store written before snapshots were files: replace its stored snapshot with a
            // file of the current state (a later snapshot than the stored one, equally valid).
            None if legacy => Ok(Some(builder.build().await?)),
            None => Ok(None),
        }
    }
}

/// The index of the last entry `db`'s live state has applied, if any (for checks on a
/// stopped node's store).
pub fn applied_index(db: &MetaDb) -> Result<Option<u64>, DbError> {
    let txn = db.env.read_txn()?;
    applied_index_in(db, &txn)
}

/// The index of the last entry the live state has applied, as `txn` sees it.
pub(crate) fn applied_index_in(db: &MetaDb, txn: &heed::RoTxn) -> Result<Option<u64>, DbError> {
    let applied: Option<LogId> = get_json(&db.sm_meta, txn, APPLIED_KEY)?;
    Ok(applied.map(|l| l.index))
}

/// Where the current snapshot is kept: its file in the snapshot directory and what it covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

/// Points the snapshot table at `path` as the snapshot `meta` describes.
fn set_current(
    db: &MetaDb,
    txn: &mut RwTxn,
    meta: &SnapshotMeta,
    path: &std::path::Path,
) -> Result<(), DbError> {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DbError::Corrupt(format!("snapshot file {}", path.display())))?
        .to_string();
    let current = CurrentSnapshot {
        meta: meta.clone(),
        file,
    };
    put_json(&db.snapshot, txn, SNAPSHOT_CURRENT_KEY, &current)?;
    drop_legacy(db, txn)
}

/// Removes every file in the snapshot directory but the current snapshot's: snapshots it
/// replaced, and builds or receipts a stop cut short.
fn remove_stray_snapshot_files(db: &MetaDb) -> Result<(), DbError> {
    let current: Option<CurrentSnapshot> = {
        let txn = db.env.read_txn()?;
        get_json(&db.snapshot, &txn, SNAPSHOT_CURRENT_KEY)?
    };
    let dir = db.snapshot_dir();
    let keep = current.map(|c| dir.join(c.file));
    snapshot::remove_others(&dir, keep.as_deref(), true)?;
    Ok(())
}

/// Forgets the current snapshot (an install whose own file is about to replace it).
fn drop_current(db: &MetaDb, txn: &mut RwTxn) -> Result<(), DbError> {
    db.snapshot.delete(txn, SNAPSHOT_CURRENT_KEY)?;
    drop_legacy(db, txn)
}

fn drop_legacy(db: &MetaDb, txn: &mut RwTxn) -> Result<(), DbError> {
    db.snapshot.delete(txn, LEGACY_META_KEY)?;
    db.snapshot.delete(txn, LEGACY_DATA_KEY)?;
    Ok(())
}

/// Whether `file` holds a format-1 snapshot (one JSON document) rather than a framed one.
fn is_legacy(file: &mut SnapFile) -> Result<bool, DbError> {
    use std::io::{Read, Seek, SeekFrom};
    let f = file.file_mut();
    f.seek(SeekFrom::Start(0))?;
    let mut first = [0u8; 1];
    let n = f.read(&mut first)?;
    Ok(n == 1 && first[0] == b'{')
}

fn read_legacy(file: &mut SnapFile) -> Result<SnapshotBody, DbError> {
    use std::io::{Read, Seek, SeekFrom};
    let f = file.file_mut();
    f.seek(SeekFrom::Start(0))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let body: SnapshotBody = serde_json::from_slice(&data)?;
    if body.format != SNAPSHOT_FORMAT_V1 {
        return Err(DbError::Corrupt(format!("snapshot format {}", body.format)));
    }
    Ok(body)
}

/// The records a format-1 snapshot describes, numbered as a framed snapshot numbers them.
fn legacy_records(body: &SnapshotBody) -> Result<Vec<snapshot::Record>, DbError> {
    fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, DbError> {
        Ok(serde_json::to_vec(v)?)
    }
    let mut out = Vec::new();
    for b in &body.buckets {
        out.push((1, b.name.as_bytes().to_vec(), json(b)?));
    }
    for (k, v) in &body.objects {
        out.push((2, k.as_bytes().to_vec(), json(v)?));
    }
    for k in &body.keys {
        out.push((3, k.access_key.as_bytes().to_vec(), json(k)?));
    }
    for u in &body.uploads {
        let key = upload_storage_key(&u.bucket, &u.key, &u.upload_id);
        out.push((4, key.into_bytes(), json(u)?));
    }
    for t in &body.tokens {
        out.push((5, t.secret_sha256.as_bytes().to_vec(), json(t)?));
    }
    for s in &body.stale {
        out.push((6, stale_key(s).to_vec(), Vec::new()));
    }
    for (seq, r) in &body.revisits {
        out.push((7, seq.to_be_bytes().to_vec(), json(r)?));
    }
    if let Some(l) = &body.layout {
        out.push((8, LAYOUT_KEY.to_vec(), json(l)?));
    }
    if let Some(s) = &body.scrub {
        out.push((8, SCRUB_KEY.to_vec(), json(s)?));
    }
    Ok(out)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.applied_state_sync()
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // A storage error is fatal: the node stops rather than diverge. A refusal is an
        // ordinary reply inside `Applied`.
        self.apply_batch(entries.into_iter())
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapFile>, StorageError> {
        SnapFile::receive(&self.db.snapshot_dir())
            .map(Box::new)
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<SnapFile>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        self.install(meta, &mut snapshot)
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature, &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.current_snapshot()
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// Builds a snapshot from one read transaction: a consistent view even while applies go on.
pub struct SnapshotBuilder {
    db: MetaDb,
}

impl SnapshotBuilder {
    async fn build(&self) -> Result<Snapshot, DbError> {
        let txn = self.db.env.clone().static_read_txn()?;
        let applied: Option<LogId> = get_json(&self.db.sm_meta, &txn, APPLIED_KEY)?;
        let membership: StoredMembership =
            get_json(&self.db.sm_meta, &txn, MEMBERSHIP_KEY)?.unwrap_or_default();
        let snapshot_id = match &applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let dir = self.db.snapshot_dir();
        let started = tokio::time::Instant::now();
        let mut file = snapshot::write(&self.db, txn, &dir, &meta.snapshot_id).await?;
        let bytes = file.file_mut().metadata()?.len();
        tracing::info!(
            id = %meta.snapshot_id,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        self.db.snapshot_bytes.store(bytes, Ordering::Relaxed);
        let mut txn = self.db.env.write_txn()?;
        let stored: Option<CurrentSnapshot> =
            get_json(&self.db.snapshot, &txn, SNAPSHOT_CURRENT_KEY)?;
        // An install may have stored a newer snapshot while we were reading; never go back.
        if stored
            .as_ref()
            .is_none_or(|s| s.meta.last_log_id <= meta.last_log_id)
        {
            set_current(&self.db, &mut txn, &meta, file.path())?;
            txn.commit()?;
            snapshot::remove_others(&dir, Some(file.path()), false)?;
        } else {
            drop(txn);
            // Still readable through the open handle by whoever asked for it. The install
            // that stored the newer one may have removed it already.
            match std::fs::remove_file(file.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

/// Every record of a JSON table, in key order.
fn read_all<T: serde::de::DeserializeOwned>(
    table: &super::db::Table,
    txn: &heed::RoTxn,
) -> Result<Vec<T>, DbError> {
    let mut out = Vec::new();
    for item in table.iter(txn)? {
        let (_, v) = item?;
        out.push(serde_json::from_slice(v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn hash(c: char) -> String {
        c.to_string().repeat(64)
    }

    async fn open(dir: &std::path::Path) -> (MetaDb, StateMachine) {
        let db = MetaDb::open(dir, 1 << 28).await.unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        (db.clone(), StateMachine::new(db, tx))
    }

    fn digest(db: &MetaDb) -> [u8; 32] {
        snapshot::state_digest(db, &db.env.read_txn().unwrap()).unwrap()
    }

    fn applied(db: &MetaDb) -> Option<LogId> {
        get_json(&db.sm_meta, &db.env.read_txn().unwrap(), APPLIED_KEY).unwrap()
    }

    /// Writes `records` random records into the live tables (keys as each table's readers
    /// expect them to look, values arbitrary bytes: the snapshot copies them as stored) and
    /// random state pointers, and stamps an applied log id.
    fn fill_random(db: &MetaDb, rng: &mut ChaCha8Rng, records: usize, index: u64) {
        let mut txn = db.env.write_txn().unwrap();
        let tables = db.state(&txn).unwrap();
        for _ in 0..records {
            let (n, table) = tables.numbered()[rng.gen_range(0..7)];
            let mut key: Vec<u8> = (0..rng.gen_range(1..40))
                .map(|_| rng.gen_range(b'a'..=b'z'))
                .collect();
            if n == 2 {
                key.insert(rng.gen_range(0..key.len()), b'/');
            }
            let len = if rng.gen_ratio(1, 50) {
                rng.gen_range(0..20_000)
            } else {
                rng.gen_range(0..300)
            };
            let value: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            table.put(&mut txn, &key, &value).unwrap();
        }
        if rng.gen_bool(0.7) {
            db.sm_meta
                .put(
                    &mut txn,
                    LAYOUT_KEY,
                    format!("layout {}", rng.gen::<u32>()).as_bytes(),
                )
                .unwrap();
        }
        if rng.gen_bool(0.7) {
            db.sm_meta
                .put(
                    &mut txn,
                    SCRUB_KEY,
                    format!("scrub {}", rng.gen::<u32>()).as_bytes(),
                )
                .unwrap();
        }
        let log_id = LogId::new(openraft::CommittedLeaderId::new(3, 1), index);
        put_json(&db.sm_meta, &mut txn, APPLIED_KEY, &Some(log_id)).unwrap();
        txn.commit().unwrap();
    }

    /// A copy of `file`'s bytes, cut to `len` and with byte `flip` (if any) changed, as a
    /// received snapshot file.
    fn received(db: &MetaDb, file: &mut SnapFile, len: usize, flip: Option<usize>) -> SnapFile {
        use std::io::{Seek, SeekFrom};
        let mut bytes = Vec::new();
        file.file_mut().seek(SeekFrom::Start(0)).unwrap();
        file.file_mut().read_to_end(&mut bytes).unwrap();
        bytes.truncate(len);
        if let Some(i) = flip {
            bytes[i] ^= 0x20;
        }
        let mut out = SnapFile::receive(&db.snapshot_dir()).unwrap();
        out.file_mut().write_all(&bytes).unwrap();
        out
    }

    fn file_len(file: &mut SnapFile) -> usize {
        file.file_mut().metadata().unwrap().len() as usize
    }

    /// Random states, small and large (slices and install batches crossed), built into a
    /// snapshot file and installed over another random state, come out byte for byte equal.
    #[actix_rt::test]
    async fn a_streamed_snapshot_reproduces_the_state() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        for (round, records) in [0usize, 1, 7, 300, 2_500, 6_000].into_iter().enumerate() {
            let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (db_a, _sm_a) = open(dir_a.path()).await;
            let (db_b, sm_b) = open(dir_b.path()).await;
            fill_random(&db_a, &mut rng, records, 100 + round as u64);
            fill_random(&db_b, &mut rng, 200, 5);
            let built = SnapshotBuilder { db: db_a.clone() }.build().await.unwrap();
            assert_eq!(built.meta.last_log_id, applied(&db_a));
            let mut file = built.snapshot;
            let len = file_len(&mut file);
            let mut copy = received(&db_b, &mut file, len, None);
            sm_b.install(&built.meta, &mut copy).await.unwrap();
            assert_eq!(digest(&db_b), digest(&db_a), "{records} records");
            assert_eq!(applied(&db_b), applied(&db_a));
            // The received file is now B's current snapshot, and the only file kept.
            let current = sm_b.current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta.last_log_id, built.meta.last_log_id);
            let kept = std::fs::read_dir(db_b.snapshot_dir()).unwrap().count();
            assert_eq!(kept, 1);
        }
    }

    /// A snapshot cut short at any point, or with any byte changed, is refused, and the member
    /// keeps its old state and can still take the whole snapshot afterwards.
    #[actix_rt::test]
    async fn a_damaged_or_interrupted_install_leaves_the_old_state() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db_a, _sm_a) = open(dir_a.path()).await;
        let (db_b, sm_b) = open(dir_b.path()).await;
        fill_random(&db_a, &mut rng, 120, 40);
        fill_random(&db_b, &mut rng, 30, 9);
        let (before, applied_before) = (digest(&db_b), applied(&db_b));
        let built = SnapshotBuilder { db: db_a.clone() }.build().await.unwrap();
        let mut file = built.snapshot;
        let len = file_len(&mut file);
        let mut cuts: Vec<usize> = (0..len).step_by(len / 97 + 1).collect();
        cuts.extend(len.saturating_sub(40)..len);
        for cut in cuts {
            let mut part = received(&db_b, &mut file, cut, None);
            assert!(
                sm_b.install(&built.meta, &mut part).await.is_err(),
                "cut at {cut}"
            );
            assert_eq!(digest(&db_b), before, "cut at {cut}");
            assert_eq!(applied(&db_b), applied_before);
        }
        for flip in (0..len).step_by(len / 53 + 1) {
            let mut bad = received(&db_b, &mut file, len, Some(flip));
            assert!(
                sm_b.install(&built.meta, &mut bad).await.is_err(),
                "flip at {flip}"
            );
            assert_eq!(digest(&db_b), before, "flip at {flip}");
        }
        let mut whole = received(&db_b, &mut file, len, None);
        sm_b.install(&built.meta, &mut whole).await.unwrap();
        assert_eq!(digest(&db_b), digest(&db_a));
    }

    /// A stop in the middle of an install (batches already committed into the spare tables)
    /// reopens on the old state; the next install replaces it whole.
    #[actix_rt::test]
    async fn a_stop_mid_install_reopens_on_the_old_state() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db_a, _sm_a) = open(dir_a.path()).await;
        fill_random(&db_a, &mut rng, 20_000, 70);
        let built = SnapshotBuilder { db: db_a.clone() }.build().await.unwrap();
        let mut file = built.snapshot;
        let len = file_len(&mut file);
        let before = {
            let (db_b, sm_b) = open(dir_b.path()).await;
            fill_random(&db_b, &mut rng, 50, 3);
            // More than one install batch arrives before the cut.
            let mut part = received(&db_b, &mut file, len - 100, None);
            assert!(sm_b.install(&built.meta, &mut part).await.is_err());
            let spare = db_b.sets[1 - db_b.live_set(&db_b.env.read_txn().unwrap()).unwrap()];
            assert!(spare.objects.len(&db_b.env.read_txn().unwrap()).unwrap() > 0);
            digest(&db_b)
        };
        let (db_b, sm_b) = open(dir_b.path()).await;
        assert_eq!(digest(&db_b), before);
        let mut whole = received(&db_b, &mut file, len, None);
        sm_b.install(&built.meta, &mut whole).await.unwrap();
        assert_eq!(digest(&db_b), digest(&db_a));
    }

    /// openraft asks for the purge covered by a snapshot as the install starts: the log keeps
    /// its entries (and its purge pointer) until the install's own commit, so a crash in
    /// between reopens on a log that still matches the old state.
    #[actix_rt::test]
    async fn the_purge_asked_for_at_an_install_waits_for_its_commit() {
        use openraft::storage::RaftLogStorage;
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db_a, _sm_a) = open(dir_a.path()).await;
        let (db_b, sm_b) = open(dir_b.path()).await;
        fill_random(&db_a, &mut rng, 40, 90);
        fill_random(&db_b, &mut rng, 10, 4);
        let purged = |db: &MetaDb| -> Option<LogId> {
            get_json(&db.raft, &db.env.read_txn().unwrap(), log_store::PURGED_KEY).unwrap()
        };
        let built = SnapshotBuilder { db: db_a.clone() }.build().await.unwrap();
        let upto = built.meta.last_log_id.unwrap();
        let mut log = super::super::log_store::LogStore::new(db_b.clone());
        log.purge(upto).await.unwrap();
        assert_eq!(purged(&db_b), None, "purged ahead of the applied state");
        // Below the applied state, a purge happens at once.
        let mine = applied(&db_b).unwrap();
        log.purge(mine).await.unwrap();
        assert_eq!(purged(&db_b), Some(mine));
        let mut file = built.snapshot;
        let len = file_len(&mut file);
        let mut whole = received(&db_b, &mut file, len, None);
        sm_b.install(&built.meta, &mut whole).await.unwrap();
        assert_eq!(purged(&db_b), Some(upto));
    }

    /// A format-1 snapshot (one JSON document, as members before framed snapshots send) still
    /// installs, join tokens and their used marks included, and a body written before tokens
    /// existed installs with none; the member then keeps a framed snapshot of that state.
    #[actix_rt::test]
    async fn a_format_one_snapshot_still_installs() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db_a, sm_a) = open(dir_a.path()).await;
        let mut txn = db_a.env.write_txn().unwrap();
        for cmd in [
            Command::AddJoinToken {
                secret_sha256: hash('a'),
                expires_ms: 10,
                created_ms: 1,
            },
            Command::AddJoinToken {
                secret_sha256: hash('b'),
                expires_ms: 10,
                created_ms: 1,
            },
            Command::ConsumeJoinToken {
                secret_sha256: hash('b'),
                now_ms: 2,
                node_id: 7,
                joined: None,
            },
        ] {
            assert_eq!(sm_a.apply_command(&mut txn, &cmd).unwrap().refused, None);
        }
        txn.commit().unwrap();
        let tokens: Vec<JoinTokenRecord> = {
            let txn = db_a.env.read_txn().unwrap();
            read_all(&db_a.state(&txn).unwrap().tokens, &txn).unwrap()
        };
        let body = SnapshotBody {
            format: SNAPSHOT_FORMAT_V1,
            buckets: Vec::new(),
            objects: Vec::new(),
            keys: Vec::new(),
            uploads: Vec::new(),
            tokens,
            layout: None,
            stale: Vec::new(),
            revisits: Vec::new(),
            scrub: None,
        };
        let (db_b, sm_b) = open(dir_b.path()).await;
        let meta = SnapshotMeta::default();
        let mut file = SnapFile::receive(&db_b.snapshot_dir()).unwrap();
        file.file_mut()
            .write_all(&serde_json::to_vec(&body).unwrap())
            .unwrap();
        sm_b.install(&meta, &mut file).await.unwrap();
        assert_eq!(digest(&db_b), digest(&db_a));
        let installed = {
            let txn = db_b.env.read_txn().unwrap();
            let tokens: Vec<JoinTokenRecord> =
                read_all(&db_b.state(&txn).unwrap().tokens, &txn).unwrap();
            tokens
        };
        assert_eq!(installed.len(), 2);
        assert_eq!(installed[1].used_by, Some(7));
        assert!(sm_b.current_snapshot().await.unwrap().is_some());

        let mut old = serde_json::to_value(&body).unwrap();
        old.as_object_mut().unwrap().remove("tokens");
        let mut file = SnapFile::receive(&db_b.snapshot_dir()).unwrap();
        file.file_mut()
            .write_all(&serde_json::to_vec(&old).unwrap())
            .unwrap();
        sm_b.install(&meta, &mut file).await.unwrap();
        let txn = db_b.env.read_txn().unwrap();
        assert_eq!(db_b.state(&txn).unwrap().tokens.len(&txn).unwrap(), 0);
    }

    /// A store that kept its snapshot inside LMDB (format 1) serves a framed file of its
    /// current state instead, and drops the old copy.
    #[actix_rt::test]
    async fn a_snapshot_kept_in_lmdb_is_replaced_by_a_file() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let dir = tempfile::tempdir().unwrap();
        let (db, sm) = open(dir.path()).await;
        fill_random(&db, &mut rng, 40, 12);
        let mut txn = db.env.write_txn().unwrap();
        put_json(
            &db.snapshot,
            &mut txn,
            LEGACY_META_KEY,
            &SnapshotMeta::default(),
        )
        .unwrap();
        db.snapshot.put(&mut txn, LEGACY_DATA_KEY, b"{}").unwrap();
        txn.commit().unwrap();
        let current = sm.current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, applied(&db));
        let txn = db.env.read_txn().unwrap();
        assert!(db.snapshot.get(&txn, LEGACY_DATA_KEY).unwrap().is_none());
        assert!(db
            .snapshot
            .get(&txn, SNAPSHOT_CURRENT_KEY)
            .unwrap()
            .is_some());
    }
}
