//! The metadata state machine in LMDB: the pure `meta::apply` run over an LMDB write
//! transaction, snapshots of the tables, and snapshot installation.
//!
//! Exactly-once apply: the applied log id is written in the same transaction as the
//! state it produced, one transaction per apply batch, so after a crash the state and the
//! pointer agree and a restart neither skips nor repeats an entry. Freed object ids are
//! recorded in the node's freed queue (`super::freed`) in that same transaction and announced
//! only after it commits, so the reclaimer never deletes shards a rolled-back state still
//! references, and a crash before it deletes them loses nothing.

use std::io::Cursor;
use std::ops::Bound;

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

use super::db::{get_json, object_key, put_json, stale_from_key, stale_key, DbError, MetaDb};
use super::query;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const APPLIED_KEY: &[u8] = b"applied";
pub(crate) const MEMBERSHIP_KEY: &[u8] = b"membership";
/// Where the data-plane layout is kept, in the state machine pointers table.
pub(crate) const LAYOUT_KEY: &[u8] = b"layout";
/// Where the scrubber's state is kept, in the state machine pointers table.
pub(crate) const SCRUB_KEY: &[u8] = b"scrub";
const SNAPSHOT_META_KEY: &[u8] = b"meta";
const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// Format marker of [`SnapshotBody`]; bumped when the layout changes.
const SNAPSHOT_FORMAT_V1: u32 = 1;

/// The state machine tables as one serialisable value.
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
        put_json(&self.db.buckets, self.txn, bucket.name.as_bytes(), bucket)
    }

    fn delete_bucket(&mut self, name: &str) -> Result<(), DbError> {
        self.db.buckets.delete(self.txn, name.as_bytes())?;
        Ok(())
    }

    fn bucket_has_keys(&self, name: &str) -> Result<bool, DbError> {
        query::bucket_has_keys(self.db, self.txn, name)
    }

    fn versions(&self, bucket: &str, key: &str) -> Result<Option<VersionList>, DbError> {
        query::versions(self.db, self.txn, bucket, key)
    }

    fn put_versions(&mut self, bucket: &str, key: &str, v: &VersionList) -> Result<(), DbError> {
        put_json(&self.db.objects, self.txn, &object_key(bucket, key), v)
    }

    fn delete_versions(&mut self, bucket: &str, key: &str) -> Result<(), DbError> {
        self.db.objects.delete(self.txn, &object_key(bucket, key))?;
        Ok(())
    }

    fn put_access_key(&mut self, key: &AccessKey) -> Result<(), DbError> {
        put_json(&self.db.keys, self.txn, key.access_key.as_bytes(), key)
    }

    fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>, DbError> {
        get_json(&self.db.keys, self.txn, access_key.as_bytes())
    }

    fn access_keys(&self) -> Result<Vec<AccessKey>, DbError> {
        let mut out = Vec::new();
        for item in self.db.keys.iter(self.txn)? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v)?);
        }
        Ok(out)
    }

    fn delete_access_key(&mut self, access_key: &str) -> Result<(), DbError> {
        self.db.keys.delete(self.txn, access_key.as_bytes())?;
        Ok(())
    }

    fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Option<Upload>, DbError> {
        get_json(
            &self.db.uploads,
            self.txn,
            upload_storage_key(bucket, key, id).as_bytes(),
        )
    }

    fn put_upload(&mut self, u: &Upload) -> Result<(), DbError> {
        let k = upload_storage_key(&u.bucket, &u.key, &u.upload_id);
        put_json(&self.db.uploads, self.txn, k.as_bytes(), u)
    }

    fn delete_upload(&mut self, bucket: &str, key: &str, id: &str) -> Result<(), DbError> {
        self.db
            .uploads
            .delete(self.txn, upload_storage_key(bucket, key, id).as_bytes())?;
        Ok(())
    }

    fn join_token(&self, secret_sha256: &str) -> Result<Option<JoinTokenRecord>, DbError> {
        get_json(&self.db.tokens, self.txn, secret_sha256.as_bytes())
    }

    fn put_join_token(&mut self, t: &JoinTokenRecord) -> Result<(), DbError> {
        put_json(&self.db.tokens, self.txn, t.secret_sha256.as_bytes(), t)
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, DbError> {
        read_all(&self.db.tokens, self.txn)
    }

    fn delete_join_token(&mut self, secret_sha256: &str) -> Result<(), DbError> {
        self.db.tokens.delete(self.txn, secret_sha256.as_bytes())?;
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
        self.db.stale.put(self.txn, &stale_key(s), &[])?;
        Ok(())
    }

    fn drop_stale(&mut self, s: &StaleShard) -> Result<(), DbError> {
        self.db.stale.delete(self.txn, &stale_key(s))?;
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
            .stale
            .delete_range(self.txn, &(Bound::Included(&first[..]), upper))?;
        Ok(())
    }

    fn add_revisit(&mut self, r: &Revisit) -> Result<(), DbError> {
        let next = match self.db.revisits.last(self.txn)? {
            Some((k, _)) => {
                let k: [u8; 8] = k
                    .try_into()
                    .map_err(|_| DbError::Corrupt(format!("revisit key of {} bytes", k.len())))?;
                u64::from_be_bytes(k).saturating_add(1)
            }
            None => 1,
        };
        put_json(&self.db.revisits, self.txn, &next.to_be_bytes(), r)
    }

    fn drop_revisit(&mut self, seq: u64) -> Result<(), DbError> {
        self.db.revisits.delete(self.txn, &seq.to_be_bytes())?;
        Ok(())
    }

    fn has_revisit(&self) -> Result<bool, DbError> {
        Ok(self.db.revisits.first(self.txn)?.is_some())
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
}

impl StateMachine {
    /// A state machine over `db`'s tables that reports freed bodies on `freed_tx`.
    pub fn new(db: MetaDb, freed_tx: UnboundedSender<Vec<ObjectId>>) -> Self {
        StateMachine {
            db,
            freed_tx,
            applied_tx: None,
        }
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

    fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), DbError> {
        let body: SnapshotBody = serde_json::from_slice(&data)?;
        if body.format != SNAPSHOT_FORMAT_V1 {
            return Err(DbError::Corrupt(format!("snapshot format {}", body.format)));
        }
        let mut txn = self.db.env.write_txn()?;
        self.db.buckets.clear(&mut txn)?;
        self.db.objects.clear(&mut txn)?;
        self.db.keys.clear(&mut txn)?;
        self.db.uploads.clear(&mut txn)?;
        self.db.tokens.clear(&mut txn)?;
        self.db.stale.clear(&mut txn)?;
        self.db.revisits.clear(&mut txn)?;
        for s in &body.stale {
            self.db.stale.put(&mut txn, &stale_key(s), &[])?;
        }
        for (seq, r) in &body.revisits {
            put_json(&self.db.revisits, &mut txn, &seq.to_be_bytes(), r)?;
        }
        for t in &body.tokens {
            put_json(&self.db.tokens, &mut txn, t.secret_sha256.as_bytes(), t)?;
        }
        for u in &body.uploads {
            let k = upload_storage_key(&u.bucket, &u.key, &u.upload_id);
            put_json(&self.db.uploads, &mut txn, k.as_bytes(), u)?;
        }
        for b in &body.buckets {
            put_json(&self.db.buckets, &mut txn, b.name.as_bytes(), b)?;
        }
        for (k, v) in &body.objects {
            if !k.contains('/') {
                return Err(DbError::Corrupt(format!(
                    "snapshot object key {k:?} has no bucket"
                )));
            }
            put_json(&self.db.objects, &mut txn, k.as_bytes(), v)?;
        }
        for k in &body.keys {
            put_json(&self.db.keys, &mut txn, k.access_key.as_bytes(), k)?;
        }
        match &body.layout {
            Some(l) => put_json(&self.db.sm_meta, &mut txn, LAYOUT_KEY, l)?,
            None => {
                self.db.sm_meta.delete(&mut txn, LAYOUT_KEY)?;
            }
        }
        match &body.scrub {
            Some(s) => put_json(&self.db.sm_meta, &mut txn, SCRUB_KEY, s)?,
            None => {
                self.db.sm_meta.delete(&mut txn, SCRUB_KEY)?;
            }
        }
        put_json(&self.db.sm_meta, &mut txn, APPLIED_KEY, &meta.last_log_id)?;
        put_json(
            &self.db.sm_meta,
            &mut txn,
            MEMBERSHIP_KEY,
            &meta.last_membership,
        )?;
        put_json(&self.db.snapshot, &mut txn, SNAPSHOT_META_KEY, meta)?;
        self.db.snapshot.put(&mut txn, SNAPSHOT_DATA_KEY, &data)?;
        txn.commit()?;
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot>, DbError> {
        let txn = self.db.env.read_txn()?;
        let Some(meta) = get_json::<SnapshotMeta>(&self.db.snapshot, &txn, SNAPSHOT_META_KEY)?
        else {
            return Ok(None);
        };
        let data = self
            .db
            .snapshot
            .get(&txn, SNAPSHOT_DATA_KEY)?
            .ok_or_else(|| DbError::Corrupt("snapshot meta without data".into()))?
            .to_vec();
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        self.install(meta, snapshot.into_inner())
            .map_err(|e| StorageIOError::write_snapshot(signature, &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// Builds a snapshot from one read transaction: a consistent view even while applies go on.
pub struct SnapshotBuilder {
    db: MetaDb,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<Snapshot, DbError> {
        let (meta, data) = {
            let txn = self.db.env.read_txn()?;
            let applied: Option<LogId> = get_json(&self.db.sm_meta, &txn, APPLIED_KEY)?;
            let membership: StoredMembership =
                get_json(&self.db.sm_meta, &txn, MEMBERSHIP_KEY)?.unwrap_or_default();
            let body = read_body(&self.db, &txn)?;
            let snapshot_id = match &applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id,
            };
            (meta, serde_json::to_vec(&body)?)
        };
        let mut txn = self.db.env.write_txn()?;
        let stored: Option<SnapshotMeta> = get_json(&self.db.snapshot, &txn, SNAPSHOT_META_KEY)?;
        // An install may have stored a newer snapshot while we were reading; never go back.
        if stored
            .as_ref()
            .is_none_or(|s| s.last_log_id <= meta.last_log_id)
        {
            put_json(&self.db.snapshot, &mut txn, SNAPSHOT_META_KEY, &meta)?;
            self.db.snapshot.put(&mut txn, SNAPSHOT_DATA_KEY, &data)?;
            txn.commit()?;
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

/// Reads every state machine table.
fn read_body(db: &MetaDb, txn: &heed::RoTxn) -> Result<SnapshotBody, DbError> {
    let buckets = query::buckets(db, txn)?;
    let mut objects = Vec::new();
    for item in db
        .objects
        .range(txn, &(Bound::<&[u8]>::Unbounded, Bound::Unbounded))?
    {
        let (k, v) = item?;
        let key = String::from_utf8(k.to_vec())
            .map_err(|_| DbError::Corrupt("object key is not UTF-8".into()))?;
        objects.push((key, serde_json::from_slice(v)?));
    }
    let mut keys = Vec::new();
    for item in db.keys.iter(txn)? {
        let (_, v) = item?;
        keys.push(serde_json::from_slice(v)?);
    }
    let mut uploads = Vec::new();
    for item in db.uploads.iter(txn)? {
        let (_, v) = item?;
        uploads.push(serde_json::from_slice(v)?);
    }
    Ok(SnapshotBody {
        format: SNAPSHOT_FORMAT_V1,
        buckets,
        objects,
        keys,
        uploads,
        tokens: read_all(&db.tokens, txn)?,
        layout: get_json(&db.sm_meta, txn, LAYOUT_KEY)?,
        stale: {
            let mut out = Vec::new();
            for item in db.stale.iter(txn)? {
                out.push(stale_from_key(item?.0)?);
            }
            out
        },
        revisits: query::revisit_page(db, txn, 0, usize::MAX)?,
        scrub: get_json(&db.sm_meta, txn, SCRUB_KEY)?,
    })
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
    use super::*;

    fn hash(c: char) -> String {
        c.to_string().repeat(64)
    }

    /// Join tokens, used marks included, travel in the snapshot body, and a body written
    /// before tokens existed still installs (with none).
    #[actix_rt::test]
    async fn join_tokens_round_trip_through_a_snapshot() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db_a = MetaDb::open(dir_a.path(), 1 << 26).await.unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let sm_a = StateMachine::new(db_a.clone(), tx.clone());
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
        let body = read_body(&db_a, &db_a.env.read_txn().unwrap()).unwrap();
        assert_eq!(body.tokens.len(), 2);
        assert_eq!(body.tokens[1].used_by, Some(7));

        let db_b = MetaDb::open(dir_b.path(), 1 << 26).await.unwrap();
        let sm_b = StateMachine::new(db_b.clone(), tx);
        let meta = SnapshotMeta::default();
        sm_b.install(&meta, serde_json::to_vec(&body).unwrap())
            .unwrap();
        assert_eq!(
            read_body(&db_b, &db_b.env.read_txn().unwrap()).unwrap(),
            body
        );

        let mut old = serde_json::to_value(&body).unwrap();
        old.as_object_mut().unwrap().remove("tokens");
        sm_b.install(&meta, serde_json::to_vec(&old).unwrap())
            .unwrap();
        let installed = read_body(&db_b, &db_b.env.read_txn().unwrap()).unwrap();
        assert!(installed.tokens.is_empty());
    }
}
