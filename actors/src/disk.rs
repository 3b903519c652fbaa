//! The disk as the shard store sees it: a seam with a production twin ([`RealDisk`], `std::fs`)
//! and a simulated one (the simulation's `SimDisk`, in memory, which can lose what was not
//! synced, tear a write and rot bits). Only the few operations the store needs are here, each
//! with the durability meaning the store relies on: file data is durable after
//! [`DiskFile::sync_all`], a directory's entries (creations, renames, removals) after
//! [`Disk::sync_dir`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

/// Shard data is tenant data: only the node's own user may read it.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (not UTF-8 names come through lossily and match nothing).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// File length in bytes (0 for directories).
    pub len: u64,
}

/// An open file, read and written at explicit offsets (no shared cursor).
pub trait DiskFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at `at`.
    fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()>;
    /// Fills `buf` from `at`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()>;
    /// The file's length.
    fn file_len(&self) -> io::Result<u64>;
    /// Makes the file's data durable.
    fn sync_all(&self) -> io::Result<()>;
    /// A hint: start writing `len` bytes from `at` back to the device now, without waiting,
    /// so the `sync_all` that ends a long write has little left to do. Durability still comes
    /// only from `sync_all`.
    fn start_writeback(&self, _at: u64, _len: u64) {}
}

/// A file system.
pub trait Disk: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `dir` and its missing parents (owner-only).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir`, whose parent exists; `AlreadyExists` if it does.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Creates a new file for reading and writing (owner-only); `AlreadyExists` if taken.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing file for reading; `NotFound` if there is none.
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The entries of `dir`, in name order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Makes `dir`'s entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The machine's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile(File);

impl DiskFile for RealFile {
    fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.0.write_all_at(buf, at)
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, at)
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn start_writeback(&self, at: u64, len: u64) {
        let (Ok(at), Ok(len)) = (libc::off64_t::try_from(at), libc::off64_t::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor is owned by `self.0` and open for the whole call; the call
        // reads no memory of ours. A failure only loses the hint: `sync_all` reports errors.
        unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new().mode(DIR_MODE).create(dir)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(RealFile(File::open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                len: if meta.is_file() { meta.len() } else { 0 },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
