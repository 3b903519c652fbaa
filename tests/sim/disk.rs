//! `SimDisk`: a node's disk in memory, behind the same `Disk` seam the shard store uses in
//! production. It keeps what a real disk would keep across a crash and nothing more:
//!
//! - file data is durable once the file is synced; writes since then are lost on a crash, or
//!   with `torn` crashes only a seeded prefix of them survives, the last possibly cut short;
//! - a directory's entries (creations, renames, removals) are durable once the directory is
//!   synced; a crash restores the last synced namespace;
//! - `rot` flips a bit in a stored file, as a failing disk does, for checksums to catch.
//!
//! Handles opened before a crash belong to the dead incarnation: every use fails afterwards, so
//! a task the crash left behind cannot touch what the next incarnation sees.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hamster_actors::disk::{DirEntry, Disk, DiskFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Default)]
struct FileData {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug)]
struct DiskState {
    /// Bumped by each crash; handles of an older epoch are dead.
    epoch: u64,
    files: BTreeMap<u64, FileData>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    rng: ChaCha8Rng,
}

/// One node's simulated disk (cheap to clone; clones share it).
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimDisk {
    /// An empty disk whose crash damage is drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(DiskState {
                epoch: 0,
                files: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::from([PathBuf::from("/")]),
                next_inode: 1,
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().expect("disk lock")
    }

    /// Loses power: the namespace goes back to its last synced state and every file to its
    /// synced data (with `torn`, plus a seeded prefix of the later writes). Returns how many
    /// files lost writes.
    pub fn crash(&self, torn: bool) -> usize {
        let mut s = self.lock();
        s.epoch += 1;
        s.names = s.durable_names.clone();
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.files.retain(|inode, _| live.contains(inode));
        let mut damaged = 0;
        let inodes: Vec<u64> = s.files.keys().copied().collect();
        for inode in inodes {
            let kept = if torn {
                let n = s.files[&inode].pending.len();
                s.rng.gen_range(0..=n)
            } else {
                0
            };
            let cut = s.rng.gen_range(0..=64usize);
            let f = s.files.get_mut(&inode).expect("live inode");
            if !f.pending.is_empty() {
                damaged += 1;
            }
            let mut data = f.durable.clone();
            for (i, (at, bytes)) in f.pending.iter().take(kept).enumerate() {
                // The last surviving write may be torn: only its first bytes made it.
                let bytes = if i + 1 == kept {
                    &bytes[..bytes.len().min(cut.max(1))]
                } else {
                    &bytes[..]
                };
                write_into(&mut data, *at, bytes);
            }
            f.data = data.clone();
            f.durable = data;
            f.pending.clear();
        }
        damaged
    }

    /// Flips one seeded bit in the data of a file under `under` whose name passes `pick`;
    /// returns the file's path, or `None` if there is none.
    pub fn rot(&self, under: &Path, pick: impl Fn(&Path) -> bool) -> Option<PathBuf> {
        let mut s = self.lock();
        let candidates: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.starts_with(under) && pick(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (path, inode) = candidates[s.rng.gen_range(0..candidates.len())].clone();
        let len = s.files[&inode].data.len();
        if len == 0 {
            return None;
        }
        let at = s.rng.gen_range(0..len);
        let bit = 1u8 << s.rng.gen_range(0..8);
        let f = s.files.get_mut(&inode).expect("named inode");
        f.data[at] ^= bit;
        if at < f.durable.len() {
            f.durable[at] ^= bit;
        }
        Some(path)
    }
}

impl SimDisk {
    /// A handle on `inode`, alive until the next crash.
    fn handle(&self, inode: u64, epoch: u64) -> Box<dyn DiskFile> {
        Box::new(SimFile {
            disk: self.clone(),
            inode,
            epoch,
        })
    }
}

fn write_into(data: &mut Vec<u8>, at: u64, bytes: &[u8]) {
    let at = at as usize;
    if data.len() < at + bytes.len() {
        data.resize(at + bytes.len(), 0);
    }
    data[at..at + bytes.len()].copy_from_slice(bytes);
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// An open file of one epoch.
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    epoch: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut FileData) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.disk.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other("the disk crashed under this handle"));
        }
        match s.files.get_mut(&self.inode) {
            Some(data) => f(data),
            None => Err(io::Error::other("the file is gone")),
        }
    }
}

impl DiskFile for SimFile {
    fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.with(|f| {
            write_into(&mut f.data, at, buf);
            f.pending.push((at, buf.to_vec()));
            Ok(())
        })
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.with(|f| {
            let at = at as usize;
            if at + buf.len() > f.data.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"));
            }
            buf.copy_from_slice(&f.data[at..at + buf.len()]);
            Ok(())
        })
    }

    fn file_len(&self) -> io::Result<u64> {
        self.with(|f| Ok(f.data.len() as u64))
    }

    fn sync_all(&self) -> io::Result<()> {
        self.with(|f| {
            f.durable = f.data.clone();
            f.pending.clear();
            Ok(())
        })
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.dirs.contains(&parent(dir)) {
            return Err(not_found(dir));
        }
        if !s.dirs.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "directory exists",
            ));
        }
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().dirs.contains(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.lock();
        if !s.dirs.contains(&parent(path)) {
            return Err(not_found(path));
        }
        if s.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let inode = s.next_inode;
        s.next_inode += 1;
        s.files.insert(inode, FileData::default());
        s.names.insert(path.to_path_buf(), inode);
        let epoch = s.epoch;
        drop(s);
        Ok(self.handle(inode, epoch))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let s = self.lock();
        let inode = *s.names.get(path).ok_or_else(|| not_found(path))?;
        let epoch = s.epoch;
        drop(s);
        Ok(self.handle(inode, epoch))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let inode = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.names.retain(|p, _| !p.starts_with(path));
        s.dirs.retain(|d| !d.starts_with(path));
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut out: Vec<DirEntry> = s
            .dirs
            .iter()
            .filter(|d| d.parent() == Some(dir))
            .map(|d| DirEntry {
                name: d
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                is_dir: true,
                len: 0,
            })
            .collect();
        for (p, inode) in &s.names {
            if p.parent() == Some(dir) {
                out.push(DirEntry {
                    name: p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    is_dir: false,
                    len: s.files[inode].data.len() as u64,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        s.durable_names.extend(current);
        Ok(())
    }
}
