//! The freed queue: bodies that applied commits stopped referencing and whose shard files this
//! node has not deleted yet, kept in the `freed` table of the metadata store.
//!
//! The state machine records a batch's freed bodies in the same write transaction as the apply
//! that frees them, so a stop or crash between the commit and the deletion loses nothing: the
//! reclaimer (`crate::reclaim`) drains the queue in pages and removes an entry only after its
//! files are gone. The queue is this node's own: every member applies the same log, so each
//! records the same frees and deletes its own shards of them. It is not part of the replicated
//! snapshot, and a snapshot install adds nothing to it (bodies freed inside a compacted range
//! are left to the orphan sweep).
//!
//! Layout of the table:
//! - key [`COUNT_KEY`] (sequence 0): how many bodies the entries hold, big-endian u64, so the
//!   queue's length is one read;
//! - key = big-endian u64 sequence from 1: one entry of at most [`ENTRY_BODIES_MAX`] bodies, as
//!   [`ENTRY_FORMAT_V1`] followed by the 16-byte ids.

use std::collections::BTreeSet;
use std::ops::Bound;

use hamster_protocol::meta::ObjectId;
use heed::{RoTxn, RwTxn};

use super::db::{DbError, MetaDb};

/// Version byte that opens every entry value.
pub const ENTRY_FORMAT_V1: u8 = 1;
/// Most bodies one entry holds; a batch that frees more is split over several entries, so the
/// reclaimer's pages stay bounded whatever one commit freed.
pub const ENTRY_BODIES_MAX: usize = 256;
/// The key of the body count (sequence numbers of entries start at 1).
pub const COUNT_KEY: [u8; 8] = 0u64.to_be_bytes();

const ID_BYTES: usize = 16;

/// One queue entry: its sequence number and the bodies it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreedEntry {
    /// Where it sits in the queue.
    pub seq: u64,
    /// Bodies to delete.
    pub ids: Vec<ObjectId>,
}

/// Encodes one entry's value.
pub fn encode_entry(ids: &[ObjectId]) -> Vec<u8> {
    assert!(
        !ids.is_empty() && ids.len() <= ENTRY_BODIES_MAX,
        "a freed entry holds 1..={ENTRY_BODIES_MAX} bodies, not {}",
        ids.len()
    );
    let mut out = Vec::with_capacity(1 + ids.len() * ID_BYTES);
    out.push(ENTRY_FORMAT_V1);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// Decodes one entry's value.
pub fn decode_entry(value: &[u8]) -> Result<Vec<ObjectId>, DbError> {
    let bad = |why: &str| DbError::Corrupt(format!("freed entry of {} bytes: {why}", value.len()));
    let (&format, ids) = value.split_first().ok_or_else(|| bad("empty"))?;
    if format != ENTRY_FORMAT_V1 {
        return Err(bad(&format!("format {format}")));
    }
    if ids.is_empty() || ids.len() % ID_BYTES != 0 || ids.len() / ID_BYTES > ENTRY_BODIES_MAX {
        return Err(bad("not a whole number of ids"));
    }
    let out: Vec<ObjectId> = ids
        .chunks_exact(ID_BYTES)
        .map(|c| ObjectId(c.try_into().expect("chunks are 16 bytes")))
        .collect();
    // Paired with the encoder: the bytes are exactly what encoding the ids produces.
    debug_assert_eq!(encode_entry(&out), value);
    Ok(out)
}

fn seq_of(key: &[u8]) -> Result<u64, DbError> {
    let k: [u8; 8] = key
        .try_into()
        .map_err(|_| DbError::Corrupt(format!("freed key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(k))
}

fn count(db: &MetaDb, txn: &RoTxn) -> Result<u64, DbError> {
    match db.freed.get(txn, &COUNT_KEY)? {
        Some(v) => seq_of(v),
        None => Ok(0),
    }
}

/// Appends `ids` to the queue inside the caller's write transaction (the apply that freed
/// them), so they are recorded exactly when the commit that frees them is.
pub fn record(db: &MetaDb, txn: &mut RwTxn, ids: &[ObjectId]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut next = match db.freed.last(txn)? {
        Some((k, _)) => seq_of(k)?.saturating_add(1),
        None => 1,
    };
    for chunk in ids.chunks(ENTRY_BODIES_MAX) {
        db.freed
            .put(txn, &next.to_be_bytes(), &encode_entry(chunk))?;
        next = next.saturating_add(1);
    }
    let total = count(db, txn)?.saturating_add(ids.len() as u64);
    db.freed.put(txn, &COUNT_KEY, &total.to_be_bytes())?;
    Ok(())
}

/// A handle on this node's freed queue for the reclaimer. Cloning is cheap; the handle keeps
/// the metadata environment open, so its holder drops it when the node stops.
#[derive(Clone)]
pub struct FreedQueue {
    db: MetaDb,
}

impl FreedQueue {
    /// The queue in `db`.
    pub fn new(db: MetaDb) -> Self {
        FreedQueue { db }
    }

    /// The oldest entries, at most `entries_max` of them. Blocking: one read transaction.
    pub fn page(&self, entries_max: usize) -> Result<Vec<FreedEntry>, DbError> {
        let txn = self.db.env.read_txn()?;
        let first = 1u64.to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .db
            .freed
            .range(&txn, &(Bound::Included(&first[..]), Bound::Unbounded))?
            .take(entries_max)
        {
            let (k, v) = item?;
            out.push(FreedEntry {
                seq: seq_of(k)?,
                ids: decode_entry(v)?,
            });
        }
        Ok(out)
    }

    /// Removes the entries `done` (their files are gone) and returns how many bodies are
    /// still queued. Blocking: one write transaction.
    pub fn remove(&self, done: &[FreedEntry]) -> Result<u64, DbError> {
        let mut txn = self.db.env.write_txn()?;
        let mut removed = 0u64;
        for entry in done {
            assert!(entry.seq > 0, "sequence 0 holds the count, not an entry");
            if self.db.freed.delete(&mut txn, &entry.seq.to_be_bytes())? {
                removed += entry.ids.len() as u64;
            }
        }
        let left = count(&self.db, &txn)?.saturating_sub(removed);
        self.db
            .freed
            .put(&mut txn, &COUNT_KEY, &left.to_be_bytes())?;
        txn.commit()?;
        Ok(left)
    }

    /// How many bodies are queued. Blocking: one read.
    pub fn pending_bodies(&self) -> Result<u64, DbError> {
        let txn = self.db.env.read_txn()?;
        count(&self.db, &txn)
    }

    /// Every queued body. Blocking: reads the whole queue (the orphan sweep keeps these, as
    /// the reclaimer will delete them).
    pub fn all_ids(&self) -> Result<BTreeSet<ObjectId>, DbError> {
        let mut out = BTreeSet::new();
        for entry in self.page(usize::MAX)? {
            out.extend(entry.ids);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ObjectId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_be_bytes());
        ObjectId(b)
    }

    #[test]
    fn an_entry_round_trips_and_a_damaged_one_is_refused() {
        let ids: Vec<ObjectId> = (0..3).map(id).collect();
        let bytes = encode_entry(&ids);
        assert_eq!(bytes.len(), 1 + 3 * 16);
        assert_eq!(decode_entry(&bytes).unwrap(), ids);
        assert!(decode_entry(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_entry(&[]).is_err());
        assert!(decode_entry(&[ENTRY_FORMAT_V1]).is_err());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode_entry(&other).is_err());
    }

    /// A large batch is split into bounded entries, the count follows records and removals,
    /// and entries recorded after a page was read survive that page's removal.
    #[actix_rt::test]
    async fn the_queue_pages_in_order_and_counts_its_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path(), 1 << 26).await.unwrap();
        let queue = FreedQueue::new(db.clone());
        let first: Vec<ObjectId> = (0..ENTRY_BODIES_MAX as u32 + 10).map(id).collect();
        let mut txn = db.env.write_txn().unwrap();
        record(&db, &mut txn, &first).unwrap();
        record(&db, &mut txn, &[]).unwrap();
        txn.commit().unwrap();
        assert_eq!(queue.pending_bodies().unwrap(), first.len() as u64);

        let page = queue.page(8).unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2],
            "split into entries of at most ENTRY_BODIES_MAX"
        );
        assert_eq!(page[0].ids.len(), ENTRY_BODIES_MAX);
        let mut txn = db.env.write_txn().unwrap();
        record(&db, &mut txn, &[id(999)]).unwrap();
        txn.commit().unwrap();

        assert_eq!(queue.remove(&page).unwrap(), 1);
        assert_eq!(
            queue.page(8).unwrap(),
            vec![FreedEntry {
                seq: 3,
                ids: vec![id(999)]
            }]
        );
        assert_eq!(queue.all_ids().unwrap(), BTreeSet::from([id(999)]));
    }
}
