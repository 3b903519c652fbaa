//! Reads of the metadata state machine from one LMDB read transaction: buckets, a key's
//! versions, access keys, listings, and every object id still referenced. A read transaction
//! sees one committed state, so a page or a scan never mixes two applies.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use hamster_protocol::layout::{Revisit, StaleShard};
use hamster_protocol::listing::{paginate, KeyCursor, ListParams, Page};
use hamster_protocol::meta::{
    upload_storage_key, AccessKey, BucketRecord, JoinTokenRecord, NodeInfo, ObjectId,
    ObjectVersion, Upload, VersionList,
};
use hamster_protocol::placement::Layout;
use heed::types::Bytes;
use heed::{RoRange, RoTxn};

use super::db::{
    bucket_range, get_json, object_key, stale_from_key, stale_key, DbError, MetaDb, Table,
};
use super::node::ListUploads;

/// One bucket.
pub fn bucket(db: &MetaDb, txn: &RoTxn, name: &str) -> Result<Option<BucketRecord>, DbError> {
    get_json(&db.state(txn)?.buckets, txn, name.as_bytes())
}

/// Every bucket, in name order.
pub fn buckets(db: &MetaDb, txn: &RoTxn) -> Result<Vec<BucketRecord>, DbError> {
    let mut out = Vec::new();
    for item in db.state(txn)?.buckets.iter(txn)? {
        let (name, bytes) = item?;
        let b: BucketRecord = serde_json::from_slice(bytes)?;
        // Pair check: the record under a name is that name's record.
        if b.name.as_bytes() != name {
            return Err(DbError::Corrupt(format!(
                "bucket record {} stored under another name",
                b.name
            )));
        }
        out.push(b);
    }
    Ok(out)
}

/// The versions of one key.
pub fn versions(
    db: &MetaDb,
    txn: &RoTxn,
    bucket: &str,
    key: &str,
) -> Result<Option<VersionList>, DbError> {
    get_json(&db.state(txn)?.objects, txn, &object_key(bucket, key))
}

/// Nodes admitted by a join token, with where they run (tokens used before that was recorded
/// are left out).
pub fn admitted(db: &MetaDb, txn: &RoTxn) -> Result<BTreeMap<u64, NodeInfo>, DbError> {
    let mut out = BTreeMap::new();
    for item in db.state(txn)?.tokens.iter(txn)? {
        let (_, bytes) = item?;
        let t: JoinTokenRecord = serde_json::from_slice(bytes)?;
        if let (Some(id), Some(info)) = (t.used_by, t.joined) {
            out.insert(id, info);
        }
    }
    Ok(out)
}

/// One access key.
pub fn access_key(db: &MetaDb, txn: &RoTxn, id: &str) -> Result<Option<AccessKey>, DbError> {
    get_json(&db.state(txn)?.keys, txn, id.as_bytes())
}

/// Every access key, in access key id order.
pub fn access_keys(db: &MetaDb, txn: &RoTxn) -> Result<Vec<AccessKey>, DbError> {
    let mut out = Vec::new();
    for item in db.state(txn)?.keys.iter(txn)? {
        let (id, bytes) = item?;
        let k: AccessKey = serde_json::from_slice(bytes)?;
        // Pair check: the record under an id is that id's record.
        if k.access_key.as_bytes() != id {
            return Err(DbError::Corrupt(format!(
                "access key {} stored under another id",
                k.access_key
            )));
        }
        out.push(k);
    }
    Ok(out)
}

/// One multipart upload.
pub fn upload(
    db: &MetaDb,
    txn: &RoTxn,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<Upload>, DbError> {
    let k = upload_storage_key(bucket, key, upload_id);
    get_json(&db.state(txn)?.uploads, txn, k.as_bytes())
}

/// A page of a bucket's uploads in (key, upload id) order. Storage order is not quite that
/// order (a `/` inside a key sorts against the upload id's hex digits), so the scan walks every
/// upload under the prefix and keeps only the `max` smallest: memory stays bounded by the page.
pub fn list_uploads(db: &MetaDb, txn: &RoTxn, q: &ListUploads) -> Result<Vec<Upload>, DbError> {
    let start = format!("{}/{}", q.bucket, q.prefix);
    let range = (Bound::Included(start.as_bytes()), Bound::Unbounded);
    let mut best: BTreeMap<(String, String), Upload> = BTreeMap::new();
    for item in db.state(txn)?.uploads.range(txn, &range)? {
        let (raw, bytes) = item?;
        if !raw.starts_with(start.as_bytes()) {
            break;
        }
        let u: Upload = serde_json::from_slice(bytes)?;
        // Pair check: the record under a storage key is that key's record.
        if upload_storage_key(&u.bucket, &u.key, &u.upload_id).as_bytes() != raw {
            return Err(DbError::Corrupt(format!(
                "upload {} stored under another key",
                u.upload_id
            )));
        }
        let after = if q.upload_id_marker.is_empty() || q.key_marker.is_empty() {
            u.key.as_str() > q.key_marker.as_str()
        } else {
            (u.key.as_str(), u.upload_id.as_str())
                > (q.key_marker.as_str(), q.upload_id_marker.as_str())
        };
        if !after {
            continue;
        }
        best.insert((u.key.clone(), u.upload_id.clone()), u);
        if best.len() > q.max {
            best.pop_last();
        }
    }
    Ok(best.into_values().collect())
}

/// Whether `bucket` holds any key.
pub fn bucket_has_keys(db: &MetaDb, txn: &RoTxn, bucket: &str) -> Result<bool, DbError> {
    let (start, end) = bucket_range(bucket);
    let range = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
    Ok(db
        .state(txn)?
        .objects
        .range(txn, &range)?
        .next()
        .transpose()?
        .is_some())
}

/// The stored data-plane layout, if any.
pub fn layout(db: &MetaDb, txn: &RoTxn) -> Result<Option<Layout>, DbError> {
    get_json(&db.sm_meta, txn, super::state_machine::LAYOUT_KEY)
}

/// The scrubber's state (the default before it stored one).
pub fn scrub(db: &MetaDb, txn: &RoTxn) -> Result<hamster_protocol::scrub::ScrubState, DbError> {
    Ok(get_json(&db.sm_meta, txn, super::state_machine::SCRUB_KEY)?.unwrap_or_default())
}

/// How many keys and multipart uploads are stored (LMDB keeps the counts: no walk).
pub fn stored_counts(db: &MetaDb, txn: &RoTxn) -> Result<u64, DbError> {
    Ok(db.state(txn)?.objects.len(txn)? + db.state(txn)?.uploads.len(txn)?)
}

/// The nodes that have stale shards listed, in id order: one seek per node, not a walk.
pub fn stale_nodes(db: &MetaDb, txn: &RoTxn) -> Result<Vec<u64>, DbError> {
    let mut out = Vec::new();
    let mut from = 0u64.to_be_bytes();
    loop {
        let range = (Bound::Included(&from[..]), Bound::Unbounded);
        let Some(item) = db.state(txn)?.stale.range(txn, &range)?.next() else {
            return Ok(out);
        };
        let (k, _) = item?;
        let node = stale_from_key(k)?.node;
        out.push(node);
        let Some(next) = node.checked_add(1) else {
            return Ok(out);
        };
        from = next.to_be_bytes();
    }
}

/// Up to `limit` stale shards on `node`, in key order, after `after` (exclusive).
pub fn stale_page(
    db: &MetaDb,
    txn: &RoTxn,
    node: u64,
    after: Option<&StaleShard>,
    limit: usize,
) -> Result<Vec<StaleShard>, DbError> {
    let start = after.map(stale_key);
    let first = node.to_be_bytes();
    let end = node.checked_add(1).map(u64::to_be_bytes);
    let lower = match &start {
        Some(k) => Bound::Excluded(&k[..]),
        None => Bound::Included(&first[..]),
    };
    let upper = match &end {
        Some(k) => Bound::Excluded(&k[..]),
        None => Bound::Unbounded,
    };
    let mut out = Vec::new();
    for item in db
        .state(txn)?
        .stale
        .range(txn, &(lower, upper))?
        .take(limit)
    {
        let (k, _) = item?;
        out.push(stale_from_key(k)?);
    }
    Ok(out)
}

/// How many stale shards are listed (LMDB keeps the count: no walk).
pub fn stale_count(db: &MetaDb, txn: &RoTxn) -> Result<u64, DbError> {
    Ok(db.state(txn)?.stale.len(txn)?)
}

/// Up to `limit` revisits after sequence number `after`, in order.
pub fn revisit_page(
    db: &MetaDb,
    txn: &RoTxn,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Revisit)>, DbError> {
    let from = after.saturating_add(1).to_be_bytes();
    let range = (Bound::Included(&from[..]), Bound::Unbounded);
    let mut out = Vec::new();
    for item in db.state(txn)?.revisits.range(txn, &range)?.take(limit) {
        let (k, v) = item?;
        let k: [u8; 8] = k
            .try_into()
            .map_err(|_| DbError::Corrupt(format!("revisit key of {} bytes", k.len())))?;
        out.push((u64::from_be_bytes(k), serde_json::from_slice(v)?));
    }
    Ok(out)
}

/// Every object id any stored version points to: what orphan-shard recovery must keep.
pub fn referenced_objects(db: &MetaDb, txn: &RoTxn) -> Result<BTreeSet<ObjectId>, DbError> {
    let mut out = BTreeSet::new();
    for item in db.state(txn)?.objects.iter(txn)? {
        let (_, bytes) = item?;
        let list: VersionList = serde_json::from_slice(bytes)?;
        out.extend(list.versions.iter().flat_map(|v| v.bodies()));
    }
    for item in db.state(txn)?.uploads.iter(txn)? {
        let (_, bytes) = item?;
        let upload: hamster_protocol::meta::Upload = serde_json::from_slice(bytes)?;
        out.extend(upload.parts.values().filter_map(|p| p.layout.body));
    }
    Ok(out)
}

/// Bits per expected id in a [`BodyFilter`]: with [`FILTER_PROBES`] probes about 1% of the
/// ids never inserted look present.
const FILTER_BITS_PER_ID: u64 = 10;
/// Bit positions each id sets and checks.
const FILTER_PROBES: u64 = 7;
/// The smallest filter, in bits.
const FILTER_BITS_MIN: u64 = 1 << 16;

/// A set of body ids that never forgets one that was added and wrongly claims a small share
/// (about 1%) of the others, in under two bytes per id: the orphan sweep asks it "may this body
/// be referenced?", so the sweep's memory does not grow with the number of objects. A false
/// claim keeps an orphan until a later sweep, whose different `seed` places it elsewhere.
pub struct BodyFilter {
    words: Vec<u64>,
    /// Bit count minus one (the bit count is a power of two).
    mask: u64,
    seed: u64,
}

impl BodyFilter {
    /// An empty filter sized for about `ids` ids.
    pub fn with_capacity(ids: u64, seed: u64) -> Self {
        let bits = ids
            .saturating_mul(FILTER_BITS_PER_ID)
            .max(FILTER_BITS_MIN)
            .next_power_of_two();
        BodyFilter {
            words: vec![0; (bits / 64) as usize],
            mask: bits - 1,
            seed,
        }
    }

    /// The filter's size in bytes.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn probes(&self, id: &ObjectId) -> impl Iterator<Item = u64> {
        let (lo, hi) = id.0.split_at(8);
        let a = mix(u64::from_le_bytes(lo.try_into().expect("8 bytes")) ^ self.seed);
        let b = mix(u64::from_le_bytes(hi.try_into().expect("8 bytes")) ^ a) | 1;
        let mask = self.mask;
        (0..FILTER_PROBES).map(move |i| a.wrapping_add(i.wrapping_mul(b)) & mask)
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: &ObjectId) {
        for bit in self.probes(id).collect::<Vec<_>>() {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False only when `id` was never added.
    pub fn may_contain(&self, id: &ObjectId) -> bool {
        self.probes(id)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Records one read slice handles.
pub const REFERENCED_SLICE_RECORDS: usize = 1024;

/// Adds the bodies referenced by up to [`REFERENCED_SLICE_RECORDS`] records of the objects
/// (`uploads` false) or uploads table after `after`, and moves `after` to the last record read.
/// Returns how many records it read.
pub fn referenced_slice(
    db: &MetaDb,
    txn: &RoTxn,
    uploads: bool,
    after: &mut Option<Vec<u8>>,
    filter: &mut BodyFilter,
) -> Result<usize, DbError> {
    let state = db.state(txn)?;
    let table = if uploads {
        state.uploads
    } else {
        state.objects
    };
    let lower = match after.as_deref() {
        Some(k) => std::ops::Bound::Excluded(k),
        None => std::ops::Bound::Unbounded,
    };
    let mut read = 0;
    for item in table
        .range(txn, &(lower, std::ops::Bound::Unbounded))?
        .take(REFERENCED_SLICE_RECORDS)
    {
        let (k, bytes) = item?;
        if uploads {
            let upload: hamster_protocol::meta::Upload = serde_json::from_slice(bytes)?;
            for body in upload.parts.values().filter_map(|p| p.layout.body) {
                filter.insert(&body);
            }
        } else {
            let list: VersionList = serde_json::from_slice(bytes)?;
            for body in list.versions.iter().flat_map(|v| v.bodies()) {
                filter.insert(&body);
            }
        }
        read += 1;
        if read == REFERENCED_SLICE_RECORDS {
            *after = Some(k.to_vec());
        }
    }
    Ok(read)
}

/// One page of a bucket listing.
pub fn list_objects(
    db: &MetaDb,
    txn: &RoTxn,
    bucket: &str,
    params: &ListParams,
) -> Result<Page<ObjectVersion>, DbError> {
    let mut cursor = ObjectCursor::new(&db.state(txn)?.objects, txn, bucket);
    let page = paginate(&mut cursor, params);
    // The paginator cannot see storage errors; the cursor keeps the first one and ends early,
    // so a failed read never passes for a short listing.
    match cursor.error {
        Some(e) => Err(e),
        None => Ok(page),
    }
}

/// A [`KeyCursor`] over the `objects` table limited to one bucket. It yields S3 keys (the
/// bucket prefix stripped) with each key's current version, skipping keys with no version.
pub struct ObjectCursor<'t> {
    table: Table,
    txn: &'t RoTxn<'t>,
    bucket: String,
    /// Exclusive end of the bucket's key range.
    end: Vec<u8>,
    iter: Option<RoRange<'t, Bytes, Bytes>>,
    /// The first storage or decoding failure; once set the cursor yields nothing more.
    pub error: Option<DbError>,
}

impl<'t> ObjectCursor<'t> {
    /// A cursor at the bucket's first key.
    pub fn new(table: &Table, txn: &'t RoTxn<'t>, bucket: &str) -> Self {
        let (_, end) = bucket_range(bucket);
        let mut c = ObjectCursor {
            table: *table,
            txn,
            bucket: bucket.to_string(),
            end,
            iter: None,
            error: None,
        };
        c.seek("");
        c
    }

    fn fail(&mut self, e: DbError) {
        self.iter = None;
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn decode(
        &self,
        raw_key: &[u8],
        raw_value: &[u8],
    ) -> Result<Option<(String, ObjectVersion)>, DbError> {
        let prefix_len = self.bucket.len() + 1;
        let key = raw_key
            .get(prefix_len..)
            .filter(|_| raw_key.starts_with(self.bucket.as_bytes()))
            .ok_or_else(|| DbError::Corrupt("object key outside its bucket range".into()))?;
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| DbError::Corrupt("object key is not UTF-8".into()))?;
        let list: VersionList = serde_json::from_slice(raw_value)?;
        Ok(list.current().cloned().map(|v| (key, v)))
    }
}

impl KeyCursor for ObjectCursor<'_> {
    type Item = ObjectVersion;

    fn seek(&mut self, from: &str) {
        if self.error.is_some() {
            return;
        }
        let start = object_key(&self.bucket, from);
        let range = (Bound::Included(&start[..]), Bound::Excluded(&self.end[..]));
        match self.table.range(self.txn, &range) {
            Ok(it) => self.iter = Some(it),
            Err(e) => self.fail(e.into()),
        }
    }

    fn next(&mut self) -> Option<(String, ObjectVersion)> {
        loop {
            let step = self.iter.as_mut()?.next()?;
            let decoded = match step {
                Ok((k, v)) => self.decode(k, v),
                Err(e) => Err(e.into()),
            };
            match decoded {
                Ok(Some(item)) => return Some(item),
                // A key whose list is empty has nothing to list.
                Ok(None) => continue,
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn ids(rng: &mut ChaCha8Rng, n: usize) -> Vec<ObjectId> {
        (0..n).map(|_| ObjectId(rng.gen())).collect()
    }

    /// Every added id is found, and at the load it was sized for the filter wrongly claims
    /// only a few percent of the others; another seed errs on other ids.
    #[test]
    fn the_body_filter_never_forgets_and_rarely_invents() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [0usize, 1, 1_000, 50_000] {
            let added = ids(&mut rng, n);
            let others = ids(&mut rng, 20_000);
            let mut a = BodyFilter::with_capacity(n as u64, 1);
            let mut b = BodyFilter::with_capacity(n as u64, 2);
            for id in &added {
                a.insert(id);
                b.insert(id);
            }
            assert!(added
                .iter()
                .all(|id| a.may_contain(id) && b.may_contain(id)));
            let wrong_a: Vec<_> = others.iter().filter(|id| a.may_contain(id)).collect();
            let wrong_b = others.iter().filter(|id| b.may_contain(id)).count();
            assert!(
                wrong_a.len() * 100 < others.len() * 3,
                "{n}: {}",
                wrong_a.len()
            );
            assert!(wrong_b * 100 < others.len() * 3, "{n}: {wrong_b}");
            let both = wrong_a.iter().filter(|id| b.may_contain(id)).count();
            assert!(
                both * 10 <= wrong_a.len().max(10),
                "{n}: {both} of {}",
                wrong_a.len()
            );
        }
        // Under two bytes per id at ten million ids.
        assert!(BodyFilter::with_capacity(10_000_000, 0).bytes() <= 20_000_000);
    }
}
