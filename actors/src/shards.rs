//! Shard files on this node's disk (DESIGN §3): the store under `<data>/shards`, a streaming
//! writer that makes a shard durable and visible atomically, and a reader that verifies exactly
//! the blocks a range touches. The format itself is pure and lives in `protocol::shard`.
//!
//! Everything here is blocking file work on a [`Disk`] (the machine's, or the simulation's);
//! the caller decides which thread runs it. Memory per writer or reader is bounded by one
//! block, whatever the shard's size.
//!
//! The store keeps a running count of its finished shards and their bytes ([`ShardTally`]):
//! taken from the directory walk that opening the store does anyway, then moved by every
//! finish and delete, so `hamster status` can report it without walking the store.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile, RealDisk};

use hamster_protocol::meta::ObjectId;
use hamster_protocol::shard::{
    block_checksum, block_count, block_data_bytes, block_file_offset, blocks_covering, file_len,
    parse_shard_file_name, shard_file_name, shard_rel_dir, ShardFormatError, ShardHeader,
    BLOCK_CRC_BYTES, DATA_BYTES_MAX, HEADER_BYTES,
};

/// Where shard writes in progress lived before they moved next to their shards; still swept
/// at open for data directories written by older builds.
const LEGACY_TMP_DIR: &str = "tmp";

/// How the name of a shard write in progress ends: `<shard name>.<seq>.tmp`, in the shard's
/// own fan-out directory. (A temp file next to its final name keeps the rename in one
/// directory and spreads new inodes over the file system's groups like the shards themselves;
/// a single temp directory made every create search one crowded inode group.)
pub const TMP_SUFFIX: &str = ".tmp";

/// How many temp names `create` tries before giving up; collisions need another store on the
/// same root, so more than a few means something is badly wrong.
const TMP_NAME_ATTEMPTS_MAX: u32 = 64;

/// How many bytes a shard writer lets pile up in the page cache before it starts their
/// write-back, so the fsync that ends a large shard does not flush it all at once.
const WRITEBACK_BYTES: u64 = 8 * 1024 * 1024;

/// Why a shard could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// No such shard on this node; fetch it from another or rebuild it.
    #[error("shard not found on this node")]
    NotFound,
    /// The disk failed; the shard may be fine on retry or on another node.
    #[error("shard I/O error: {0}")]
    Io(#[from] io::Error),
    /// The header is unreadable or names another shard; treat the shard as missing.
    #[error("shard header: {0}")]
    Format(#[from] ShardFormatError),
    /// A block failed its checksum (or is cut short); rebuild the shard from survivors.
    #[error("shard block {block} is corrupt")]
    Corrupt {
        /// Index of the first bad block.
        block: u64,
    },
    /// The file is not as long as its header says; rebuild the shard from survivors.
    #[error("shard file is {actual_bytes} bytes, its header implies {expected_bytes}")]
    LengthMismatch {
        /// Length implied by the header.
        expected_bytes: u64,
        /// Length on disk.
        actual_bytes: u64,
    },
    /// Every block verifies but the whole-data BLAKE3 differs from the header's.
    #[error("shard data does not match the BLAKE3 in its header")]
    HashMismatch,
    /// The requested range reaches past the shard's data; a caller bug.
    #[error("range is outside the shard's data")]
    RangeOutOfBounds,
}

/// A finished shard as found on disk by [`ShardStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredShard {
    /// The object body it belongs to.
    pub id: ObjectId,
    /// Part number.
    pub part: u32,
    /// Shard index within the part.
    pub index: u16,
    /// Size of the file, header and checksums included.
    pub file_bytes: u64,
}

/// What [`ShardWriter::finish`] made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Bytes of shard data.
    pub data_len: u64,
    /// BLAKE3 of the data, lowercase hex, for the replicated metadata (INV-5).
    pub blake3_hex: String,
    /// Size of the file, header and checksums included.
    pub file_bytes: u64,
}

/// How many finished shards the store holds and their size on disk, as counted by
/// [`ShardStore::tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardTally {
    /// Finished shard files.
    pub shards: u64,
    /// Their size, headers and checksums included.
    pub bytes: u64,
}

/// The running counters behind [`ShardTally`], shared by the store and its writers.
#[derive(Debug, Default)]
struct Counters {
    shards: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn add(&self, shards: u64, bytes: u64) {
        self.shards.fetch_add(shards, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Takes away, stopping at zero: a file removed behind the store's back must not make
    /// the counts wrap.
    fn sub(&self, shards: u64, bytes: u64) {
        let down = |by: u64| move |v: u64| Some(v.saturating_sub(by));
        // The closures always return Some, so the updates cannot fail.
        let _ = self
            .shards
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, down(shards));
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, down(bytes));
    }
}

/// The shard files of this node, rooted at `<data>/shards`.
#[derive(Debug)]
pub struct ShardStore {
    disk: Arc<dyn Disk>,
    root: PathBuf,
    /// Makes temp names unique among concurrent writers of the same shard.
    tmp_seq: AtomicU64,
    /// Finished shards and their bytes, kept up to date by finish and delete.
    counters: Arc<Counters>,
}

impl ShardStore {
    /// Opens (creating if needed) the store at `root`. Temp files left by a crash are removed:
    /// their writes were never acknowledged, so nobody expects them.
    pub fn open(root: &Path) -> io::Result<ShardStore> {
        Self::open_on(Arc::new(RealDisk), root)
    }

    /// Like [`ShardStore::open`], on `disk`.
    pub fn open_on(disk: Arc<dyn Disk>, root: &Path) -> io::Result<ShardStore> {
        disk.create_dir_all(root)?;
        let mut removed = 0usize;
        let legacy = root.join(LEGACY_TMP_DIR);
        if disk.is_dir(&legacy) {
            removed += disk.read_dir(&legacy)?.len();
            disk.remove_dir_all(&legacy)?;
            disk.sync_dir(root)?;
        }
        let counters = Counters::default();
        for dir in leaf_dirs(&*disk, root)? {
            let mut here = 0usize;
            for entry in disk.read_dir(&dir)? {
                if !entry.is_dir && entry.name.ends_with(TMP_SUFFIX) {
                    disk.remove_file(&dir.join(&entry.name))?;
                    here += 1;
                } else if !entry.is_dir && is_shard_in(root, &dir, &entry.name) {
                    counters.add(1, entry.len);
                }
            }
            if here > 0 {
                disk.sync_dir(&dir)?;
            }
            removed += here;
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished shard writes left by a crash");
        }
        Ok(ShardStore {
            disk,
            root: root.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
            counters: Arc::new(counters),
        })
    }

    /// How many finished shards this store holds and their bytes on disk, without touching
    /// the disk. Exact for everything that goes through the store; a file changed behind its
    /// back (by hand) is counted right again at the next start.
    pub fn tally(&self) -> ShardTally {
        ShardTally {
            shards: self.counters.shards.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether the store is usable: its directory is still there (a disk unmounted or a
    /// directory removed under the node is not). Blocking: one `stat`.
    pub fn is_open(&self) -> bool {
        self.disk.is_dir(&self.root)
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts writing a shard. Nothing is visible under the shard's name until
    /// [`ShardWriter::finish`]; dropping the writer earlier leaves nothing behind.
    pub fn create(
        &self,
        id: ObjectId,
        part: u32,
        index: u16,
        k: u8,
        m: u8,
        block_bytes: u32,
    ) -> io::Result<ShardWriter> {
        let header = ShardHeader {
            object_id: id,
            part,
            index,
            k,
            m,
            block_bytes,
            data_len: 0,
            blake3: [0; 32],
        };
        // Refuse nonsense before touching the disk, with the same checks a reader applies.
        header.validate().map_err(invalid_input)?;
        let final_dir = self.root.join(shard_rel_dir(&id));
        make_dirs_under(&*self.disk, &self.root, &final_dir)?;
        let (file, tmp_path) = self.create_tmp(&final_dir, &id, part, index)?;
        let writer = ShardWriter {
            disk: self.disk.clone(),
            file,
            tmp_path,
            final_dir,
            final_path: self.path(&id, part, index),
            counters: self.counters.clone(),
            header,
            block: Vec::with_capacity(block_bytes as usize + BLOCK_CRC_BYTES as usize),
            hasher: blake3::Hasher::new(),
            blocks_written: 0,
            written_back: 0,
            done: false,
            failed: false,
        };
        // A placeholder header so blocks land at their final offsets; finish rewrites it.
        writer.file.write_all_at(&writer.header.encode(), 0)?;
        Ok(writer)
    }

    /// Opens a fresh temp file, trying the next sequence number if another writer holds one.
    fn create_tmp(
        &self,
        dir: &Path,
        id: &ObjectId,
        part: u32,
        index: u16,
    ) -> io::Result<(Box<dyn DiskFile>, PathBuf)> {
        let name = shard_file_name(id, part, index);
        for _ in 0..TMP_NAME_ATTEMPTS_MAX {
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{name}.{seq}{TMP_SUFFIX}"));
            match self.disk.create_new(&path) {
                Ok(file) => return Ok((file, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temp name for shard",
        ))
    }

    /// Where a finished shard lives: `root/ab/cd/<id>.<part>.<index>`.
    pub fn path(&self, id: &ObjectId, part: u32, index: u16) -> PathBuf {
        self.root
            .join(shard_rel_dir(id))
            .join(shard_file_name(id, part, index))
    }

    /// Opens a finished shard and checks its header names the shard asked for.
    pub fn open_reader(
        &self,
        id: &ObjectId,
        part: u32,
        index: u16,
    ) -> Result<ShardReader, ShardError> {
        let file = match self.disk.open(&self.path(id, part, index)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ShardError::NotFound),
            Err(e) => return Err(ShardError::Io(e)),
        };
        let file_bytes = file.file_len()?;
        let mut head = [0u8; HEADER_BYTES];
        if file_bytes < HEADER_BYTES as u64 {
            return Err(ShardFormatError::TooShort {
                len: file_bytes as usize,
            }
            .into());
        }
        file.read_exact_at(&mut head, 0)?;
        let header = ShardHeader::decode(&head)?;
        // Paired with the encode in the writer: the bytes are exactly what encode produces.
        assert_eq!(
            header.encode(),
            head,
            "decoded header does not re-encode to its bytes"
        );
        if header.object_id != *id || header.part != part || header.index != index {
            return Err(ShardFormatError::IdentityMismatch.into());
        }
        let buf = Vec::with_capacity(header.block_bytes as usize + BLOCK_CRC_BYTES as usize);
        Ok(ShardReader { file, header, buf })
    }

    /// Removes every shard file of `id` (all parts and indices) and returns how many; an object
    /// with no shards here is not an error.
    pub fn delete_object(&self, id: &ObjectId) -> io::Result<usize> {
        let dir = self.root.join(shard_rel_dir(id));
        let entries = match self.disk.read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0usize;
        for entry in entries {
            let Some((found, _, _)) = parse_shard_file_name(&entry.name) else {
                continue;
            };
            if found != *id {
                continue;
            }
            match self.disk.remove_file(&dir.join(&entry.name)) {
                Ok(()) => {
                    removed += 1;
                    self.counters.sub(1, entry.len);
                }
                // A concurrent delete got there first; the outcome is the same.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed > 0 {
            self.disk.sync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Removes one shard file; `false` if it was not there.
    pub fn delete_shard(&self, id: &ObjectId, part: u32, index: u16) -> io::Result<bool> {
        let path = self.path(id, part, index);
        // Its size, for the tally; a file that cannot be opened is not there to remove.
        let len = match self.disk.open(&path).and_then(|f| f.file_len()) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.disk.remove_file(&path) {
            Ok(()) => self.counters.sub(1, len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            self.disk.sync_dir(dir)?;
        }
        Ok(true)
    }

    /// Every finished shard under the fan-out directories, sorted by id, part and index. Temp
    /// files and anything not named like a shard in its own fan-out directory are skipped.
    pub fn list(&self) -> io::Result<Vec<StoredShard>> {
        let mut out = Vec::new();
        for dir in leaf_dirs(&*self.disk, &self.root)? {
            self.list_dir(&dir, &mut out)?;
        }
        out.sort();
        Ok(out)
    }

    /// The fan-out directories shards sit in, for a walk that lists them one at a time.
    pub fn shard_dirs(&self) -> io::Result<Vec<PathBuf>> {
        leaf_dirs(&*self.disk, &self.root)
    }

    /// The distinct bodies with shard files in `dirs` (as [`ShardStore::shard_dirs`] names
    /// them; every shard of a body sits in the same one), in id order.
    pub fn bodies_in(&self, dirs: &[PathBuf]) -> io::Result<Vec<ObjectId>> {
        let mut shards = Vec::new();
        for dir in dirs {
            self.list_dir(dir, &mut shards)?;
        }
        let mut ids: Vec<ObjectId> = shards.into_iter().map(|s| s.id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn list_dir(&self, dir: &Path, out: &mut Vec<StoredShard>) -> io::Result<()> {
        for entry in self.disk.read_dir(dir)? {
            let Some((id, part, index)) = parse_shard_file_name(&entry.name) else {
                continue;
            };
            // A shard outside its own fan-out directory would be invisible to open_reader and
            // delete_object, so listing it would only mislead.
            if self.root.join(shard_rel_dir(&id)) != dir {
                continue;
            }
            if !entry.is_dir {
                out.push(StoredShard {
                    id,
                    part,
                    index,
                    file_bytes: entry.len,
                });
            }
        }
        Ok(())
    }

    /// Bytes used by shard files, finished and in progress (in-flight writes hold disk too).
    pub fn bytes_on_disk(&self) -> io::Result<u64> {
        let mut total = 0u64;
        for dir in leaf_dirs(&*self.disk, &self.root)? {
            for entry in self.disk.read_dir(&dir)? {
                let shard = parse_shard_file_name(&entry.name).is_some();
                if !entry.is_dir && (shard || entry.name.ends_with(TMP_SUFFIX)) {
                    total += entry.len;
                }
            }
        }
        Ok(total)
    }
}

/// Whether `name` in `dir` is a finished shard in its own fan-out directory under `root`.
fn is_shard_in(root: &Path, dir: &Path, name: &str) -> bool {
    parse_shard_file_name(name).is_some_and(|(id, _, _)| root.join(shard_rel_dir(&id)) == dir)
}

/// The subdirectories of `dir` named by two lowercase hex digits, as the fan-out uses.
fn fan_out_dirs(disk: &dyn Disk, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in disk.read_dir(dir)? {
        let s = &entry.name;
        let is_fan_out = s.len() == 2 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if is_fan_out && entry.is_dir {
            out.push(dir.join(s));
        }
    }
    out.sort();
    Ok(out)
}

/// The second-level fan-out directories under `root` (`root/ab/cd`), where shards live.
fn leaf_dirs(disk: &dyn Disk, root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for top in fan_out_dirs(disk, root)? {
        out.extend(fan_out_dirs(disk, &top)?);
    }
    Ok(out)
}

/// Creates `dir` (under `root`) and its missing parents below `root`, each made durable in its
/// parent before a shard can be written into it.
fn make_dirs_under(disk: &dyn Disk, root: &Path, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while at != root && !disk.is_dir(at) {
        missing.push(at.to_path_buf());
        at = at.parent().expect("fan-out dir lies under the root");
    }
    for d in missing.iter().rev() {
        match disk.create_dir(d) {
            Ok(()) => {}
            // Another writer made it meanwhile; it syncs the parent just as we would.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    // A new directory's own entry lives in its parent, up to the root.
    for parent in missing.iter().filter_map(|d| d.parent()) {
        disk.sync_dir(parent)?;
    }
    Ok(())
}

fn invalid_input(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// A shard being written. Data streams through one block of memory; [`ShardWriter::finish`]
/// makes it durable and visible, dropping it unfinished removes the temp file.
#[derive(Debug)]
pub struct ShardWriter {
    disk: Arc<dyn Disk>,
    file: Box<dyn DiskFile>,
    tmp_path: PathBuf,
    final_dir: PathBuf,
    final_path: PathBuf,
    /// The store's counters, moved once the shard is visible.
    counters: Arc<Counters>,
    /// Carries the running `data_len`; `blake3` stays zero until finish.
    header: ShardHeader,
    /// The current, not yet full block.
    block: Vec<u8>,
    hasher: blake3::Hasher,
    blocks_written: u64,
    /// File offset up to which write-back has been started (see [`WRITEBACK_BYTES`]).
    written_back: u64,
    /// Set once the file is under its final name, so drop leaves it alone.
    done: bool,
    /// Set by a failed disk write: the file no longer matches the counters, so the writer
    /// refuses further use rather than finishing a shard with a hole in it.
    failed: bool,
}

impl ShardWriter {
    /// Appends data. At most one block is held in memory; each full block is written with its
    /// checksum as soon as it fills. After an error the writer is spent: drop it.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.check_usable()?;
        let len = data.len() as u64;
        if self.header.data_len.saturating_add(len) > DATA_BYTES_MAX {
            return Err(invalid_input("shard would exceed its maximum data length"));
        }
        self.hasher.update(data);
        self.header.data_len += len;
        let bb = self.header.block_bytes as usize;
        while !data.is_empty() {
            let take = (bb - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() == bb {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("shard writer failed earlier; drop it"));
        }
        Ok(())
    }

    /// Bytes of data written so far.
    pub fn data_len(&self) -> u64 {
        self.header.data_len
    }

    /// Writes the buffered block and its checksum at the block's place in the file.
    fn flush_block(&mut self) -> io::Result<()> {
        assert!(!self.block.is_empty(), "flushing an empty block");
        assert!(
            self.block.len() <= self.header.block_bytes as usize,
            "block overflow"
        );
        let at = block_file_offset(self.blocks_written, self.header.block_bytes);
        let crc = block_checksum(&self.block);
        self.block.extend_from_slice(&crc.to_le_bytes());
        let written = self.file.write_all_at(&self.block, at);
        self.block.clear();
        self.failed = written.is_err();
        written?;
        self.blocks_written += 1;
        let end = block_file_offset(self.blocks_written, self.header.block_bytes);
        if end - self.written_back >= WRITEBACK_BYTES {
            self.file
                .start_writeback(self.written_back, end - self.written_back);
            self.written_back = end;
        }
        Ok(())
    }

    /// Writes the last block and the final header, fsyncs, and renames the file to its shard
    /// name, fsyncing every directory whose entries changed. Only then is the shard visible.
    pub fn finish(mut self) -> io::Result<ShardInfo> {
        self.check_usable()?;
        let info = self.finish_inner()?;
        self.done = true;
        Ok(info)
    }

    fn finish_inner(&mut self) -> io::Result<ShardInfo> {
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        self.header.blake3 = *self.hasher.finalize().as_bytes();
        let h = self.header.clone();
        assert_eq!(self.blocks_written, block_count(h.data_len, h.block_bytes));
        let head = h.encode();
        self.file.write_all_at(&head, 0)?;
        let file_bytes = file_len(h.data_len, h.block_bytes);
        // Paired with the write: the header on disk decodes to what we meant, and the file is
        // exactly as long as the header says.
        let mut back = [0u8; HEADER_BYTES];
        self.file.read_exact_at(&mut back, 0)?;
        assert_eq!(
            ShardHeader::decode(&back).as_ref(),
            Ok(&h),
            "header read-back differs"
        );
        assert_eq!(
            self.file.file_len()?,
            file_bytes,
            "shard file length is off"
        );
        self.file.sync_all()?;
        // A shard written again (a rebuild in place) replaces the old file rather than adding
        // one; a missing file is the usual case and costs one failed open.
        let replaced = self
            .disk
            .open(&self.final_path)
            .and_then(|f| f.file_len())
            .ok();
        self.disk.rename(&self.tmp_path, &self.final_path)?;
        match replaced {
            Some(old) => {
                self.counters.add(0, file_bytes);
                self.counters.sub(0, old);
            }
            None => self.counters.add(1, file_bytes),
        }
        self.disk.sync_dir(&self.final_dir)?;
        Ok(ShardInfo {
            data_len: h.data_len,
            blake3_hex: h.blake3_hex(),
            file_bytes,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // An aborted upload leaves nothing; temp files are also swept at open, so a failure
        // here only costs space until the next restart.
        if let Err(e) = self.disk.remove_file(&self.tmp_path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.tmp_path.display(), error = %e, "cannot remove unfinished shard");
            }
        }
    }
}

/// A finished shard opened for reading. Reads are positioned, so readers never share a cursor;
/// each holds one block of buffer.
#[derive(Debug)]
pub struct ShardReader {
    file: Box<dyn DiskFile>,
    header: ShardHeader,
    buf: Vec<u8>,
}

impl ShardReader {
    /// The shard's verified header.
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    /// Appends `offset..offset+len` of the shard's data to `out`, reading and verifying only the
    /// blocks that cover it. On error `out` is restored to its length on entry.
    pub fn read_range(
        &mut self,
        offset: u64,
        len: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ShardError> {
        let end = offset
            .checked_add(len)
            .ok_or(ShardError::RangeOutOfBounds)?;
        if end > self.header.data_len {
            return Err(ShardError::RangeOutOfBounds);
        }
        let entry_len = out.len();
        let result = self.read_range_into(offset, end, out);
        if result.is_err() {
            out.truncate(entry_len);
        }
        result
    }

    fn read_range_into(
        &mut self,
        offset: u64,
        end: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ShardError> {
        let bb = u64::from(self.header.block_bytes);
        let entry_len = out.len();
        // Room for the range and one block's checksum, which each block read lands after its
        // data before it is cut off: `out` never reallocates (and copies) mid-read.
        out.reserve((end - offset + BLOCK_CRC_BYTES) as usize);
        for block in blocks_covering(
            offset,
            end - offset,
            self.header.block_bytes,
            self.header.data_len,
        ) {
            let block_start = block * bb;
            let from = offset.max(block_start) - block_start;
            let to = end.min(block_start + bb) - block_start;
            let n = block_data_bytes(block, self.header.block_bytes, self.header.data_len);
            if from == 0 && to == u64::from(n) {
                // The whole block is wanted: read it straight into `out`.
                self.read_block_onto(block, out)?;
            } else {
                self.read_block(block)?;
                out.extend_from_slice(&self.buf[from as usize..to as usize]);
            }
        }
        assert_eq!(
            (out.len() - entry_len) as u64,
            end - offset,
            "range read length is off"
        );
        Ok(())
    }

    /// Appends block `block`'s data to `out`, checked against its CRC32C; on an error `out`
    /// may hold part of it (the caller truncates).
    fn read_block_onto(&self, block: u64, out: &mut Vec<u8>) -> Result<(), ShardError> {
        let h = &self.header;
        let n = block_data_bytes(block, h.block_bytes, h.data_len) as usize;
        let at = block_file_offset(block, h.block_bytes);
        let start = out.len();
        out.resize(start + n + BLOCK_CRC_BYTES as usize, 0);
        read_checked(&*self.file, &mut out[start..], at, block)?;
        out.truncate(start + n);
        Ok(())
    }

    /// Reads one block into `buf` (data only) and checks its CRC32C.
    fn read_block(&mut self, block: u64) -> Result<(), ShardError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let read = self.read_block_onto(block, &mut buf);
        self.buf = buf;
        read
    }

    /// Checks the whole shard: the file length, every block's checksum and the BLAKE3 of all
    /// data against the header. The caller still compares the header's BLAKE3 with the
    /// replicated one (INV-5).
    pub fn verify_all(&mut self) -> Result<(), ShardError> {
        let expected_bytes = self.header.file_len();
        let actual_bytes = self.file.file_len()?;
        if actual_bytes != expected_bytes {
            return Err(ShardError::LengthMismatch {
                expected_bytes,
                actual_bytes,
            });
        }
        let mut hasher = blake3::Hasher::new();
        for block in 0..block_count(self.header.data_len, self.header.block_bytes) {
            self.read_block(block)?;
            hasher.update(&self.buf);
        }
        if *hasher.finalize().as_bytes() != self.header.blake3 {
            return Err(ShardError::HashMismatch);
        }
        Ok(())
    }
}

/// Fills `buf` (a block's data and its CRC32C) from `at` and checks the checksum.
fn read_checked(
    file: &dyn DiskFile,
    buf: &mut [u8],
    at: u64,
    block: u64,
) -> Result<(), ShardError> {
    match file.read_exact_at(buf, at) {
        Ok(()) => {}
        // A block cut short by truncation is as unusable as a rotten one.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ShardError::Corrupt { block })
        }
        Err(e) => return Err(ShardError::Io(e)),
    }
    let (data, crc) = buf.split_at(buf.len() - BLOCK_CRC_BYTES as usize);
    let stored = u32::from_le_bytes(crc.try_into().expect("four checksum bytes"));
    if stored != block_checksum(data) {
        return Err(ShardError::Corrupt { block });
    }
    Ok(())
}
