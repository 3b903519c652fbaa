//! Snapshots of the metadata state machine as files (ADR-0009).
//!
//! A snapshot is the state tables copied record by record, as stored, from one LMDB read
//! transaction into a file under `<meta>/snapshots`:
//!
//! ```text
//! header  "HMSNAP\0\0"  format: u32 BE (= 2)
//! record  table: u8 (1..=8)  key_len: u32 BE  value_len: u32 BE  key  value
//! ...
//! end     0u8  records: u64 BE  BLAKE3 of every byte before the digest (32 bytes)
//! ```
//!
//! Tables 1–7 are [`StateTables::numbered`]; table 8 holds the state pointers (`layout`,
//! `scrub`). Building reads in slices and yields between them, so applies and client reads
//! go on while it runs; memory is one slice and one write buffer, whatever the state's size.
//! Installing fills the spare table set in bounded write transactions and makes it live in
//! one commit only after the end record's count and digest check out, so a crash or a bad
//! stream at any point leaves the old state whole.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use heed::PutFlags;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::db::{DbError, MetaDb, StateTables, Table, LIVE_SET_KEY};
use super::state_machine::{LAYOUT_KEY, SCRUB_KEY};

/// First bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"HMSNAP\0\0";
/// The framing described in the module documentation.
pub const FORMAT: u32 = 2;
/// The table number of the state pointers (`layout`, `scrub`).
const POINTERS: u8 = 8;
/// The end record's tag.
const END: u8 = 0;
/// The state pointers a snapshot carries.
const POINTER_KEYS: [&[u8]; 2] = [LAYOUT_KEY, SCRUB_KEY];
/// Largest value a snapshot record may carry (a version list of a key with very many
/// versions is the largest record there is); bounds what a bad stream can make us allocate.
const VALUE_BYTES_MAX: u32 = 64 << 20;
/// Records read per slice of a build before it yields.
const BUILD_SLICE_RECORDS: usize = 1024;
/// Record bytes per install write transaction.
const INSTALL_BATCH_BYTES: usize = 2 << 20;
/// A snapshot file is synced each time this many bytes were written since the last sync, so
/// the final sync (and any one stall) stays short.
const SYNC_EVERY_BYTES: u64 = 2 << 20;

/// Makes file names unique within the process (two builds at one log index).
static FILE_SEQ: AtomicU64 = AtomicU64::new(1);

/// A snapshot file as openraft reads it (sending) and writes it (receiving). The file is
/// local and reads and writes are at most a chunk, so each call does its I/O at once.
#[derive(Debug)]
pub struct SnapFile {
    file: File,
    path: PathBuf,
    unsynced: u64,
    seeked: Option<u64>,
    /// A file being received is removed if it is dropped before it was installed.
    remove_on_drop: bool,
}

impl SnapFile {
    /// Opens a finished snapshot file to read.
    pub fn open(path: &Path) -> io::Result<SnapFile> {
        Ok(SnapFile {
            file: File::open(path)?,
            path: path.to_path_buf(),
            unsynced: 0,
            seeked: None,
            remove_on_drop: false,
        })
    }

    /// Creates a new file in `dir` to receive a snapshot into.
    pub fn receive(dir: &Path) -> io::Result<SnapFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "receiving.{}.part",
            FILE_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(SnapFile {
            file,
            path,
            unsynced: 0,
            seeked: None,
            remove_on_drop: true,
        })
    }

    /// The underlying file.
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `to` (same directory) and keeps it from now on.
    fn keep_as(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        self.remove_on_drop = false;
        Ok(())
    }
}

impl Drop for SnapFile {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Write for SnapFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl AsyncRead for SnapFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.file.read(buf.initialize_unfilled())?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.unsynced = 0;
        Poll::Ready(this.file.sync_data())
    }
}

impl AsyncSeek for SnapFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        this.seeked = Some(this.file.seek(position)?);
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        Poll::Ready(match this.seeked.take() {
            Some(at) => Ok(at),
            None => this.file.stream_position(),
        })
    }
}

/// Writes records in the snapshot framing, hashing as it goes.
struct FrameWriter {
    out: BufWriter<SnapFile>,
    hash: blake3::Hasher,
    records: u64,
}

impl FrameWriter {
    fn new(file: SnapFile) -> io::Result<FrameWriter> {
        let mut w = FrameWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            hash: blake3::Hasher::new(),
            records: 0,
        };
        w.bytes(MAGIC)?;
        w.bytes(&FORMAT.to_be_bytes())?;
        Ok(w)
    }

    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.hash.update(b);
        self.out.write_all(b)
    }

    fn record(&mut self, table: u8, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let too_long = |what: &str, n: usize| DbError::Corrupt(format!("{what} of {n} bytes"));
        let klen = u32::try_from(key.len()).map_err(|_| too_long("key", key.len()))?;
        let vlen = u32::try_from(value.len())
            .ok()
            .filter(|&n| n <= VALUE_BYTES_MAX)
            .ok_or_else(|| too_long("value", value.len()))?;
        let mut head = [0u8; 9];
        head[0] = table;
        head[1..5].copy_from_slice(&klen.to_be_bytes());
        head[5..].copy_from_slice(&vlen.to_be_bytes());
        self.bytes(&head)?;
        self.bytes(key)?;
        self.bytes(value)?;
        self.records += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<SnapFile> {
        self.bytes(&[END])?;
        let records = self.records.to_be_bytes();
        self.bytes(&records)?;
        let digest = *self.hash.finalize().as_bytes();
        self.out.write_all(&digest)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.file.sync_data()?;
        Ok(file)
    }
}

/// Copies the live state as `txn` sees it into a new snapshot file in `dir`, named after
/// `id`; returns the file, synced and opened for reading from the start.
pub async fn write(
    db: &MetaDb,
    mut txn: heed::RoTxn<'static, heed::WithoutTls>,
    dir: &Path,
    id: &str,
) -> Result<SnapFile, DbError> {
    std::fs::create_dir_all(dir)?;
    let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let part = dir.join(format!("{id}.{seq}.part"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)?;
    let mut out = FrameWriter::new(SnapFile {
        file,
        path: part.clone(),
        unsynced: 0,
        seeked: None,
        remove_on_drop: true,
    })?;
    let tables = db.state(&txn)?;
    for (n, table) in tables.numbered() {
        txn = copy_table(&mut out, txn, n, table).await?;
    }
    for key in POINTER_KEYS {
        if let Some(v) = db.sm_meta.get(&txn, key)? {
            out.record(POINTERS, key, v)?;
        }
    }
    let mut file = out.finish()?;
    let done = dir.join(format!("{id}.{seq}.snap"));
    file.keep_as(&done)?;
    sync_dir(dir)?;
    let mut file = SnapFile::open(&done)?;
    file.file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Copies one table in slices, yielding between them. The transaction is moved in and
/// handed back so no borrow of it is held across a yield.
async fn copy_table(
    out: &mut FrameWriter,
    txn: heed::RoTxn<'static, heed::WithoutTls>,
    n: u8,
    table: Table,
) -> Result<heed::RoTxn<'static, heed::WithoutTls>, DbError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let copied = copy_slice(out, &txn, n, table, &mut after)?;
        if copied < BUILD_SLICE_RECORDS {
            return Ok(txn);
        }
        tokio::task::yield_now().await;
    }
}

/// Copies up to [`BUILD_SLICE_RECORDS`] records after `after`, and moves `after` to the last.
fn copy_slice(
    out: &mut FrameWriter,
    txn: &heed::RoTxn<'static, heed::WithoutTls>,
    n: u8,
    table: Table,
    after: &mut Option<Vec<u8>>,
) -> Result<usize, DbError> {
    let lower = match after.as_deref() {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    };
    let mut copied = 0;
    let mut last = None;
    for item in table
        .range(txn, &(lower, Bound::Unbounded))?
        .take(BUILD_SLICE_RECORDS)
    {
        let (k, v) = item?;
        out.record(n, k, v)?;
        copied += 1;
        if copied == BUILD_SLICE_RECORDS {
            last = Some(k.to_vec());
        }
    }
    if last.is_some() {
        *after = last;
    }
    Ok(copied)
}

/// One snapshot record: table number, key, value.
pub type Record = (u8, Vec<u8>, Vec<u8>);

/// The state pointers a snapshot carried, to be written when its tables go live.
#[derive(Debug, Default)]
pub struct Pointers(Vec<(Vec<u8>, Vec<u8>)>);

impl Pointers {
    /// Writes the pointers the snapshot carried and removes those it did not.
    pub fn store(&self, db: &MetaDb, txn: &mut heed::RwTxn) -> Result<(), DbError> {
        for key in POINTER_KEYS {
            match self.0.iter().find(|(k, _)| k.as_slice() == key) {
                Some((_, v)) => db.sm_meta.put(txn, key, v)?,
                None => {
                    db.sm_meta.delete(txn, key)?;
                }
            }
        }
        Ok(())
    }
}

/// Lets an observer (the simulation) follow an install batch by batch, with batches as small
/// as it chooses, so that it can crash the node between two of them.
#[derive(Debug, Clone)]
pub struct InstallTap {
    /// Bytes per install transaction, instead of [`INSTALL_BATCH_BYTES`].
    pub batch_bytes: usize,
    /// Counts the committed batches of the install in progress (reset as one begins).
    pub batches: tokio::sync::watch::Sender<u64>,
}

/// Where a snapshot install stands: the spare set being filled, and what it holds so far.
pub struct Filling {
    set: usize,
    tables: StateTables,
    pointers: Pointers,
    txn_bytes: usize,
    batch_bytes: usize,
    tap: Option<InstallTap>,
}

impl Filling {
    /// Empties the spare set (what an interrupted install or the previous state left there).
    pub fn begin(db: &MetaDb, tap: Option<InstallTap>) -> Result<Filling, DbError> {
        let mut txn = db.env.write_txn()?;
        let set = 1 - db.live_set(&txn)?;
        let tables = db.sets[set];
        for (_, t) in tables.numbered() {
            t.clear(&mut txn)?;
        }
        txn.commit()?;
        if let Some(tap) = &tap {
            tap.batches.send_replace(0);
        }
        Ok(Filling {
            set,
            tables,
            pointers: Pointers::default(),
            txn_bytes: 0,
            batch_bytes: tap.as_ref().map_or(INSTALL_BATCH_BYTES, |t| t.batch_bytes),
            tap,
        })
    }

    /// Adds one record; `append` when records come in key order (a framed snapshot), which
    /// lets LMDB fill pages completely.
    fn put(
        &mut self,
        txn: &mut heed::RwTxn,
        table: u8,
        key: &[u8],
        value: &[u8],
        append: bool,
    ) -> Result<(), DbError> {
        self.txn_bytes += key.len() + value.len();
        if table == POINTERS {
            if !POINTER_KEYS.contains(&key) || self.pointers.0.iter().any(|(k, _)| k == key) {
                return Err(DbError::Corrupt(format!(
                    "snapshot state pointer {:?}",
                    String::from_utf8_lossy(key)
                )));
            }
            self.pointers.0.push((key.to_vec(), value.to_vec()));
            return Ok(());
        }
        let t = self
            .tables
            .by_number(table)
            .ok_or_else(|| DbError::Corrupt(format!("snapshot table {table}")))?;
        if table == 2 && !key.contains(&b'/') {
            return Err(DbError::Corrupt(format!(
                "snapshot object key {:?} has no bucket",
                String::from_utf8_lossy(key)
            )));
        }
        if append {
            t.put_with_flags(txn, PutFlags::APPEND, key, value)
                .map_err(|e| match e {
                    heed::Error::Mdb(heed::MdbError::KeyExist) => DbError::Corrupt(format!(
                        "snapshot table {table} out of key order at {:?}",
                        String::from_utf8_lossy(key)
                    )),
                    e => e.into(),
                })?;
        } else {
            t.put(txn, key, value)?;
        }
        Ok(())
    }

    /// Adds records from an in-memory list in bounded transactions (an old-format snapshot).
    pub async fn put_all(
        &mut self,
        db: &MetaDb,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<(), DbError> {
        let mut txn = db.env.write_txn()?;
        for (table, k, v) in records {
            self.put(&mut txn, table, &k, &v, false)?;
            txn = self.next_batch(db, txn).await?;
        }
        txn.commit()?;
        self.txn_bytes = 0;
        Ok(())
    }

    /// Once the open transaction holds enough, commits it, lets the runtime run others and
    /// opens the next one; until then hands `txn` back as it is.
    async fn next_batch<'e>(
        &mut self,
        db: &'e MetaDb,
        txn: heed::RwTxn<'e>,
    ) -> Result<heed::RwTxn<'e>, DbError> {
        if self.txn_bytes < self.batch_bytes {
            return Ok(txn);
        }
        txn.commit()?;
        self.txn_bytes = 0;
        if let Some(tap) = &self.tap {
            tap.batches.send_modify(|n| *n += 1);
        }
        tokio::task::yield_now().await;
        Ok(db.env.write_txn()?)
    }

    /// Reads a framed snapshot from `file` into the spare set, checking its end record.
    pub async fn read_framed(&mut self, db: &MetaDb, file: &mut SnapFile) -> Result<(), DbError> {
        file.file.seek(SeekFrom::Start(0))?;
        let mut r = FrameReader {
            input: BufReader::with_capacity(1 << 20, &file.file),
            hash: blake3::Hasher::new(),
        };
        let mut head = [0u8; 12];
        r.exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(DbError::Corrupt("not a snapshot file".into()));
        }
        let format = u32::from_be_bytes(head[8..].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(DbError::Corrupt(format!("snapshot format {format}")));
        }
        let max_key = db.max_key_bytes();
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut records = 0u64;
        let mut txn = db.env.write_txn()?;
        loop {
            let mut tag = [0u8; 1];
            r.exact(&mut tag)?;
            if tag[0] == END {
                let mut count = [0u8; 8];
                r.exact(&mut count)?;
                let expected = *r.hash.finalize().as_bytes();
                let mut digest = [0u8; 32];
                r.input.read_exact(&mut digest).map_err(truncated)?;
                if u64::from_be_bytes(count) != records || digest != expected {
                    return Err(DbError::Corrupt(
                        "snapshot end record does not match its contents".into(),
                    ));
                }
                if r.input.read(&mut [0u8; 1])? != 0 {
                    return Err(DbError::Corrupt("bytes after the snapshot's end".into()));
                }
                break;
            }
            let mut lens = [0u8; 8];
            r.exact(&mut lens)?;
            let klen = u32::from_be_bytes(lens[..4].try_into().expect("4 bytes")) as usize;
            let vlen = u32::from_be_bytes(lens[4..].try_into().expect("4 bytes"));
            if klen == 0 || klen > max_key || vlen > VALUE_BYTES_MAX {
                return Err(DbError::Corrupt(format!(
                    "snapshot record with a {klen}-byte key and a {vlen}-byte value"
                )));
            }
            key.resize(klen, 0);
            value.resize(vlen as usize, 0);
            r.exact(&mut key)?;
            r.exact(&mut value)?;
            self.put(&mut txn, tag[0], &key, &value, true)?;
            records += 1;
            txn = self.next_batch(db, txn).await?;
        }
        txn.commit()?;
        self.txn_bytes = 0;
        Ok(())
    }

    /// In `txn`, makes the filled set live and stores the pointers the snapshot carried.
    pub fn go_live(&self, db: &MetaDb, txn: &mut heed::RwTxn) -> Result<(), DbError> {
        db.sm_meta.put(txn, LIVE_SET_KEY, &[self.set as u8])?;
        self.pointers.store(db, txn)
    }

    /// Empties the set that was live before (after [`Filling::go_live`] committed), so its
    /// pages are free for the state to grow into.
    pub fn clear_old(&self, db: &MetaDb) -> Result<(), DbError> {
        let mut txn = db.env.write_txn()?;
        for (_, t) in db.sets[1 - self.set].numbered() {
            t.clear(&mut txn)?;
        }
        txn.commit()?;
        Ok(())
    }
}

struct FrameReader<'f> {
    input: BufReader<&'f File>,
    hash: blake3::Hasher,
}

impl FrameReader<'_> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), DbError> {
        self.input.read_exact(buf).map_err(truncated)?;
        self.hash.update(buf);
        Ok(())
    }
}

fn truncated(e: io::Error) -> DbError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DbError::Corrupt("snapshot ends early".into())
    } else {
        DbError::Io(e)
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves a received, installed snapshot file to its kept name in `dir`.
pub fn keep_received(file: &mut SnapFile, dir: &Path, id: &str) -> io::Result<PathBuf> {
    let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let to = dir.join(format!("{id}.{seq}.snap"));
    file.keep_as(&to)?;
    sync_dir(dir)?;
    Ok(to)
}

/// Removes the finished snapshots in `dir` other than `keep` (the ones it replaced); with
/// `everything`, also builds and receipts in progress (only at start, when none can be).
pub fn remove_others(dir: &Path, keep: Option<&Path>, everything: bool) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        let finished = path.extension().is_some_and(|x| x == "snap");
        if Some(path.as_path()) != keep && path.is_file() && (everything || finished) {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// BLAKE3 over every record of the live state and the state pointers, in snapshot order: two
/// stores with the same digest hold the same state byte for byte.
pub fn state_digest(db: &MetaDb, txn: &heed::RoTxn) -> Result<[u8; 32], DbError> {
    let mut hash = blake3::Hasher::new();
    let mut add = |n: u8, k: &[u8], v: &[u8]| {
        hash.update(&[n]);
        hash.update(&(k.len() as u64).to_be_bytes());
        hash.update(k);
        hash.update(&(v.len() as u64).to_be_bytes());
        hash.update(v);
    };
    for (n, table) in db.state(txn)?.numbered() {
        for item in table.iter(txn)? {
            let (k, v) = item?;
            add(n, k, v);
        }
    }
    for key in POINTER_KEYS {
        if let Some(v) = db.sm_meta.get(txn, key)? {
            add(POINTERS, key, v);
        }
    }
    Ok(*hash.finalize().as_bytes())
}
