//! Shard files on a real disk (DESIGN §3): they round-trip byte for byte, a rotten block is
//! found by exactly the reads that touch it (INV-5), unfinished writes leave nothing, and the
//! store's listing and deletion see exactly the finished shards.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use hamster_actors::shards::{ShardError, ShardStore, ShardTally, StoredShard, TMP_SUFFIX};
use hamster_protocol::meta::ObjectId;
use hamster_protocol::shard::{block_file_offset, file_len, shard_file_name, HEADER_BYTES};

/// Small blocks so that a few MiB span many blocks and every boundary case is cheap.
const BLOCK_BYTES: u32 = 4096;

/// Deterministic test data and offsets (xorshift64*): failures replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn oid(seed: u8) -> ObjectId {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
    }
    ObjectId(id)
}

/// Writes `data` as one shard, in uneven pieces so writes straddle block boundaries.
fn put(store: &ShardStore, id: ObjectId, part: u32, index: u16, data: &[u8], rng: &mut Rng) {
    let mut w = store
        .create(id, part, index, 3, 2, BLOCK_BYTES)
        .expect("create");
    let mut rest = data;
    while !rest.is_empty() {
        let take = (1 + rng.below(3 * u64::from(BLOCK_BYTES)) as usize).min(rest.len());
        w.write(&rest[..take]).expect("write");
        rest = &rest[take..];
    }
    assert_eq!(w.data_len(), data.len() as u64);
    let info = w.finish().expect("finish");
    assert_eq!(info.data_len, data.len() as u64);
    assert_eq!(info.blake3_hex, blake3::hash(data).to_hex().to_string());
    assert_eq!(info.file_bytes, file_len(data.len() as u64, BLOCK_BYTES));
    let on_disk = fs::metadata(store.path(&id, part, index))
        .expect("stat")
        .len();
    assert_eq!(on_disk, info.file_bytes);
}

/// Files of writes in progress (or left by a crash), anywhere under the store.
fn tmp_entries(root: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for e in fs::read_dir(dir).expect("read dir") {
            let e = e.expect("entry");
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.to_string_lossy().ends_with(TMP_SUFFIX) {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(root, &mut n);
    n
}

/// Every boundary size round-trips whole and through random ranges, with a verified header.
#[test]
fn t10_sizes_round_trip_whole_and_ranged() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path()).unwrap();
    let mut rng = Rng(0x5eed_0001);
    let bb = BLOCK_BYTES as usize;
    let sizes = [0, 1, bb - 1, bb, bb + 1, 3 * 1024 * 1024 + 17];
    for (i, &size) in sizes.iter().enumerate() {
        let id = oid(i as u8);
        let data = rng.bytes(size);
        put(&store, id, 1, 0, &data, &mut rng);

        let mut r = store.open_reader(&id, 1, 0).expect("open");
        assert_eq!(r.header().object_id, id);
        assert_eq!(r.header().data_len, size as u64);
        assert_eq!(r.header().blake3, *blake3::hash(&data).as_bytes());
        r.verify_all().expect("verify");

        let mut whole = Vec::new();
        r.read_range(0, size as u64, &mut whole).expect("whole");
        assert!(whole == data, "size {size}: whole read differs");

        for _ in 0..200 {
            let off = rng.below(size as u64 + 1);
            let len = rng.below(size as u64 - off + 1);
            // read_range appends, so a prefix in `out` must survive untouched.
            let mut out = vec![0xee];
            r.read_range(off, len, &mut out).expect("range");
            assert_eq!(out[0], 0xee);
            assert!(
                out[1..] == data[off as usize..(off + len) as usize],
                "size {size} {off}+{len}"
            );
        }
        let mut out = Vec::new();
        assert!(matches!(
            r.read_range(size as u64, 1, &mut out),
            Err(ShardError::RangeOutOfBounds)
        ));
        assert!(matches!(
            r.read_range(1, u64::MAX, &mut out),
            Err(ShardError::RangeOutOfBounds)
        ));
        assert!(out.is_empty());
    }
    assert_eq!(
        tmp_entries(dir.path()),
        0,
        "finished writes leave no temp files"
    );
}

/// One flipped data byte: reads covering its block fail naming that block, verify_all fails,
/// and reads of other blocks still succeed.
#[test]
fn t20_flipped_byte_is_found_by_covering_reads_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path()).unwrap();
    let mut rng = Rng(0x5eed_0002);
    let id = oid(42);
    let data = rng.bytes(10 * BLOCK_BYTES as usize + 5);
    put(&store, id, 3, 0, &data, &mut rng);

    let bad_block = 4u64;
    let path = store.path(&id, 3, 0);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = block_file_offset(bad_block, BLOCK_BYTES) + 100;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
    drop(f);

    let bb = u64::from(BLOCK_BYTES);
    let mut r = store.open_reader(&id, 3, 0).expect("header is intact");
    let mut out = vec![7u8];
    let err = r.read_range(bad_block * bb + 100, 1, &mut out).unwrap_err();
    assert!(
        matches!(err, ShardError::Corrupt { block } if block == bad_block),
        "{err:?}"
    );
    assert_eq!(out, vec![7u8], "a failed read leaves out as it was");
    let err = r.read_range(0, data.len() as u64, &mut out).unwrap_err();
    assert!(
        matches!(err, ShardError::Corrupt { block } if block == bad_block),
        "{err:?}"
    );
    assert!(matches!(r.verify_all(), Err(ShardError::Corrupt { block }) if block == bad_block));

    // Ranges ending just before and starting just after the bad block never touch it.
    let mut before = Vec::new();
    r.read_range(0, bad_block * bb, &mut before)
        .expect("before");
    assert!(before == data[..(bad_block * bb) as usize]);
    let mut after = Vec::new();
    let from = (bad_block + 1) * bb;
    r.read_range(from, data.len() as u64 - from, &mut after)
        .expect("after");
    assert!(after == data[from as usize..]);
}

/// A corrupt header, a truncated file and a file under the wrong name are all refused.
#[test]
fn t30_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path()).unwrap();
    let mut rng = Rng(0x5eed_0003);
    let id = oid(7);
    let data = rng.bytes(3 * BLOCK_BYTES as usize);
    put(&store, id, 1, 0, &data, &mut rng);
    let path = store.path(&id, 1, 0);

    // Truncation: the length check catches it, and a read of the lost block says which.
    let full = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - 10)
        .unwrap();
    let mut r = store.open_reader(&id, 1, 0).unwrap();
    assert!(matches!(
        r.verify_all(),
        Err(ShardError::LengthMismatch { .. })
    ));
    let mut out = Vec::new();
    let err = r
        .read_range(data.len() as u64 - 1, 1, &mut out)
        .unwrap_err();
    assert!(matches!(err, ShardError::Corrupt { block: 2 }), "{err:?}");
    r.read_range(0, 10, &mut out)
        .expect("intact block still reads");

    // A file moved under another shard's name is not served as that shard.
    let other = store.path(&id, 1, 1);
    fs::rename(&path, &other).unwrap();
    assert!(matches!(
        store.open_reader(&id, 1, 1),
        Err(ShardError::Format(_))
    ));
    assert!(matches!(
        store.open_reader(&id, 1, 0),
        Err(ShardError::NotFound)
    ));

    // A header byte flipped.
    let f = OpenOptions::new().write(true).open(&other).unwrap();
    f.write_all_at(&[0xff], 20).unwrap();
    assert!(matches!(
        store.open_reader(&id, 1, 1),
        Err(ShardError::Format(_))
    ));
    f.set_len(HEADER_BYTES as u64 - 1).unwrap();
    assert!(matches!(
        store.open_reader(&id, 1, 1),
        Err(ShardError::Format(_))
    ));
}

/// An unfinished writer dropped (an aborted upload) leaves no file anywhere.
#[test]
fn t40_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path()).unwrap();
    let id = oid(9);
    let mut w = store.create(id, 1, 0, 1, 0, BLOCK_BYTES).unwrap();
    w.write(&vec![1u8; 3 * BLOCK_BYTES as usize + 1]).unwrap();
    assert_eq!(tmp_entries(dir.path()), 1);
    assert!(
        store.bytes_on_disk().unwrap() > 0,
        "in-flight writes count as used disk"
    );
    drop(w);
    assert_eq!(tmp_entries(dir.path()), 0);
    assert!(!store.path(&id, 1, 0).exists());
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.bytes_on_disk().unwrap(), 0);
}

/// Temp files left by a crash are swept at open; finished shards are kept.
#[test]
fn t50_open_removes_stale_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_0005);
    let id = oid(11);
    {
        let store = ShardStore::open(dir.path()).unwrap();
        put(&store, id, 1, 0, b"kept", &mut rng);
        let mut w = store.create(oid(12), 1, 0, 1, 0, BLOCK_BYTES).unwrap();
        w.write(b"never acknowledged").unwrap();
        // Simulate a crash: the writer never runs its drop.
        std::mem::forget(w);
        // A data directory from before temp files moved beside their shards.
        fs::create_dir(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp").join("junk"), b"x").unwrap();
        assert_eq!(tmp_entries(dir.path()), 1);
    }
    let store = ShardStore::open(dir.path()).unwrap();
    assert_eq!(tmp_entries(dir.path()), 0);
    assert!(
        !dir.path().join("tmp").exists(),
        "the old temp area is gone"
    );
    let listed: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![id]);
}

/// list() finds exactly the finished shards, sorted; delete_object removes all of one object's
/// shards and nothing else, and deleting again is fine.
#[test]
fn t60_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path()).unwrap();
    let mut rng = Rng(0x5eed_0006);
    let a = oid(1);
    let mut b = a;
    // Same fan-out directory as `a`, so deletion must tell them apart by id.
    b.0[15] ^= 0xff;
    let c = oid(200);
    let mut expected = Vec::new();
    for (id, part, index, size) in [(a, 1, 0, 10), (a, 2, 0, 5000), (b, 1, 0, 0), (c, 1, 2, 1)] {
        let data = rng.bytes(size);
        put(&store, id, part, index, &data, &mut rng);
        let file_bytes = file_len(size as u64, BLOCK_BYTES);
        expected.push(StoredShard {
            id,
            part,
            index,
            file_bytes,
        });
    }
    // An unfinished write and stray files are not shards.
    let _pending = store.create(oid(99), 1, 0, 1, 0, BLOCK_BYTES).unwrap();
    let fan = dir.path().join("ab").join("cd");
    fs::create_dir_all(&fan).unwrap();
    fs::write(fan.join("not-a-shard"), b"x").unwrap();
    fs::write(fan.join(shard_file_name(&a, 9, 0)), b"misplaced").unwrap();

    expected.sort();
    assert_eq!(store.list().unwrap(), expected);
    let listed_bytes: u64 = expected.iter().map(|s| s.file_bytes).sum();
    assert!(store.bytes_on_disk().unwrap() >= listed_bytes);

    assert_eq!(store.delete_object(&a).unwrap(), 2);
    assert!(store.list().unwrap().iter().all(|s| s.id != a));
    assert_eq!(store.list().unwrap().len(), 2);
    assert!(matches!(
        store.open_reader(&a, 1, 0),
        Err(ShardError::NotFound)
    ));
    assert_eq!(store.delete_object(&a).unwrap(), 0);
    assert_eq!(store.delete_object(&oid(77)).unwrap(), 0);
    store
        .open_reader(&b, 1, 0)
        .unwrap()
        .verify_all()
        .expect("neighbour untouched");
}

/// Paths are built from the id, part and index alone, and shard files are private to the node.
#[test]
fn t70_paths_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path()).unwrap();
    let mut rng = Rng(0x5eed_0007);
    let id = ObjectId([0xab, 0xcd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    put(&store, id, 4, 2, b"hello", &mut rng);
    let path = store.path(&id, 4, 2);
    let rel = path.strip_prefix(dir.path()).unwrap();
    assert_eq!(rel, Path::new(&format!("ab/cd/{}.4.2", id.to_hex())));
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "shard file mode {mode:o} is readable by others"
    );

    // Nonsense coding parameters are refused before anything is written.
    assert!(store.create(id, 1, 0, 0, 0, BLOCK_BYTES).is_err());
    assert!(store.create(id, 1, 3, 2, 1, BLOCK_BYTES).is_err());
    assert!(store.create(id, 1, 0, 1, 0, 0).is_err());
    assert_eq!(tmp_entries(dir.path()), 0);
}

/// The store's running tally (what `hamster status` reports per node) counts exactly the
/// finished shards and their file bytes, through writes, a rewrite in place, unfinished
/// writes and deletes, and a fresh open counts the same from the disk.
#[test]
fn t80_tally_follows_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_0008);
    let listed = |store: &ShardStore| {
        let shards = store.list().unwrap();
        ShardTally {
            shards: shards.len() as u64,
            bytes: shards.iter().map(|s| s.file_bytes).sum(),
        }
    };
    let store = ShardStore::open(dir.path()).unwrap();
    assert_eq!(store.tally(), ShardTally::default());
    let (a, b) = (oid(21), oid(22));
    for (id, part, index, size) in [(a, 1, 0, 100), (a, 1, 1, 9000), (b, 1, 0, 0)] {
        let data = rng.bytes(size);
        put(&store, id, part, index, &data, &mut rng);
    }
    assert_eq!(store.tally().shards, 3);
    assert_eq!(store.tally(), listed(&store));
    // A rebuild writes a shard again under the same name: replaced, not added.
    let data = rng.bytes(20_000);
    put(&store, a, 1, 0, &data, &mut rng);
    assert_eq!(store.tally().shards, 3);
    assert_eq!(store.tally(), listed(&store));
    // An unfinished write is not a shard.
    let pending = store.create(oid(23), 1, 0, 1, 0, BLOCK_BYTES).unwrap();
    assert_eq!(store.tally(), listed(&store));
    drop(pending);
    assert_eq!(store.delete_object(&a).unwrap(), 2);
    assert_eq!(store.tally(), listed(&store));
    assert_eq!(store.tally().shards, 1);
    put(&store, oid(24), 2, 1, b"again", &mut rng);
    let before = store.tally();
    drop(store);
    let reopened = ShardStore::open(dir.path()).unwrap();
    assert_eq!(reopened.tally(), before);
    assert_eq!(reopened.tally(), listed(&reopened));
}
