//! Free disk space on a node's two filesystems (metadata and shards), and what the node does
//! when it runs low: a full disk degrades the node, it does not wedge it.
//!
//! - Below the reserve ([`SpaceConfig::reserve_bytes`]) on either filesystem, S3 operations that
//!   store more are refused before they read a body (507 `InsufficientStorage` on a one-node
//!   cluster, 503 `SlowDown` naming this node in a cluster), while reads, lists and deletes go
//!   on, so space can be freed; writes come back by themselves once it is.
//! - A headroom file (`meta/headroom`) holds space back for the metadata store. It is released
//!   when the metadata filesystem runs low, so that the Raft log can still take the deletes
//!   that free space (and a restart on a full disk can still open its store), and it is taken
//!   again once there is room.
//!
//! The checks run on a timer in the [`SpaceMonitor`] actor; the S3 front only reads a flag.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use tracing::{info, warn};

/// How often free space is measured.
pub const SPACE_TICK: Duration = Duration::from_secs(1);
/// Default free space kept on each filesystem: writes stop below it.
pub const RESERVE_BYTES_DEFAULT: u64 = 1 << 30;
/// Default size of the metadata headroom file.
pub const HEADROOM_BYTES_DEFAULT: u64 = 64 << 20;
/// The headroom file, inside `meta/`.
pub const HEADROOM_FILE: &str = "headroom";

/// Where to measure and how much to keep.
#[derive(Debug, Clone)]
pub struct SpaceConfig {
    /// `<data>/meta`.
    pub meta_dir: PathBuf,
    /// `<data>/shards`.
    pub shards_dir: PathBuf,
    /// Writes stop when either filesystem has less free than this.
    pub reserve_bytes: u64,
    /// Space the headroom file holds for the metadata store (0: none).
    pub headroom_bytes: u64,
}

#[derive(Debug, Default)]
struct Levels {
    low: AtomicBool,
    meta_free_bytes: AtomicU64,
    shards_free_bytes: AtomicU64,
}

/// The latest measurement, shared with the S3 front. `Space::unlimited()` never refuses (the
/// simulation, whose disks are simulated, and tests).
#[derive(Debug, Clone, Default)]
pub struct Space {
    levels: Arc<Levels>,
    /// What to measure when a write asks (none: never low).
    cfg: Option<Arc<SpaceConfig>>,
}

impl Space {
    /// A view that never reports low space.
    pub fn unlimited() -> Self {
        Space::default()
    }

    /// A view of the filesystems `cfg` names.
    pub fn measured(cfg: SpaceConfig) -> Self {
        Space {
            levels: Arc::default(),
            cfg: Some(Arc::new(cfg)),
        }
    }

    /// Whether writes were refused at the last measurement.
    pub fn is_low(&self) -> bool {
        self.levels.low.load(Ordering::SeqCst)
    }

    /// Measures now (two statvfs calls) and records it; whether space is low.
    pub fn measure_now(&self) -> bool {
        let Some(cfg) = &self.cfg else {
            return false;
        };
        let meta = free_bytes(&cfg.meta_dir).unwrap_or(u64::MAX);
        let shards = free_bytes(&cfg.shards_dir).unwrap_or(u64::MAX);
        let low = meta < cfg.reserve_bytes || shards < cfg.reserve_bytes;
        self.set(meta, shards, low);
        low
    }

    /// Refuses a write while space is low: `solo` (a one-node cluster) gets 507, a member of a
    /// larger cluster 503 SlowDown naming itself (another node may take the write).
    pub fn check_write(&self, solo: bool, node: &str) -> Result<(), S3Error> {
        if !self.is_low() {
            return Ok(());
        }
        self.refusal(solo, node)
    }

    fn refusal(&self, solo: bool, node: &str) -> Result<(), S3Error> {
        let meta = self.levels.meta_free_bytes.load(Ordering::SeqCst) >> 20;
        let shards = self.levels.shards_free_bytes.load(Ordering::SeqCst) >> 20;
        let detail = format!(
            "node {node} is low on disk space ({meta} MiB free for metadata, {shards} MiB for object data); reads and deletes still work"
        );
        Err(if solo {
            S3Error::with_message(S3ErrorCode::InsufficientStorage, detail)
        } else {
            S3Error::with_message(S3ErrorCode::SlowDown, detail)
        })
    }

    fn set(&self, meta_free: u64, shards_free: u64, low: bool) {
        self.levels
            .meta_free_bytes
            .store(meta_free, Ordering::SeqCst);
        self.levels
            .shards_free_bytes
            .store(shards_free, Ordering::SeqCst);
        self.levels.low.store(low, Ordering::SeqCst);
    }
}

/// Size and space available to this process, in bytes, of the filesystem holding `path` (or
/// its nearest existing ancestor); `None` if it cannot be measured.
pub fn filesystem_bytes(path: &Path) -> Option<FilesystemBytes> {
    let probe = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: all-zero is a valid `statvfs` (plain integers), filled in by the call below.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some(FilesystemBytes {
        total: s.f_blocks as u64 * frsize,
        available: s.f_bavail as u64 * frsize,
    })
}

/// What [`filesystem_bytes`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemBytes {
    /// The filesystem's size.
    pub total: u64,
    /// Free space this process may use.
    pub available: u64,
}

/// Bytes available to this process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    filesystem_bytes(path).map(|f| f.available)
}

fn headroom_path(cfg: &SpaceConfig) -> PathBuf {
    cfg.meta_dir.join(HEADROOM_FILE)
}

fn headroom_held(cfg: &SpaceConfig) -> u64 {
    fs::metadata(headroom_path(cfg)).map_or(0, |m| m.len())
}

/// Releases the headroom file if the metadata filesystem is below the reserve. Called before
/// the metadata store opens, so a node restarted on a full disk can still open it and serve
/// reads.
pub fn release_headroom_if_low(cfg: &SpaceConfig) {
    let held = headroom_held(cfg);
    if held == 0 {
        return;
    }
    if free_bytes(&cfg.meta_dir).is_some_and(|f| f < cfg.reserve_bytes) {
        match fs::remove_file(headroom_path(cfg)) {
            Ok(()) => warn!(
                released_mib = held >> 20,
                "metadata filesystem is low on space: released the headroom file so the store can still commit deletes"
            ),
            Err(e) => warn!(error = %e, "cannot release the metadata headroom file"),
        }
    }
}

/// Writes the headroom file (real blocks, not a sparse file).
fn take_headroom(cfg: &SpaceConfig) -> std::io::Result<()> {
    let path = headroom_path(cfg);
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = cfg.headroom_bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if let Err(e) = f.write_all(&chunk[..n]) {
            drop(f);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        left -= n as u64;
    }
    f.sync_all()?;
    fs::rename(&tmp, &path)
}

/// Measures free space every [`SPACE_TICK`], publishes it in a [`Space`], and keeps the
/// headroom file: released when the metadata filesystem runs low, taken again when there is
/// room for it and the reserve.
pub struct SpaceMonitor {
    cfg: SpaceConfig,
    space: Space,
    /// Whether the last tick found space low (for logging the changes only).
    was_low: bool,
}

impl SpaceMonitor {
    /// A monitor of `space` (made with [`Space::measured`] from `cfg`).
    pub fn new(cfg: SpaceConfig, space: Space) -> Self {
        SpaceMonitor {
            cfg,
            space,
            was_low: false,
        }
    }

    fn measure(&mut self) {
        let low = self.space.measure_now();
        let meta = self.space.levels.meta_free_bytes.load(Ordering::SeqCst);
        let shards = self.space.levels.shards_free_bytes.load(Ordering::SeqCst);
        if low != self.was_low {
            self.was_low = low;
            if low {
                warn!(
                    meta_free_mib = meta >> 20,
                    shards_free_mib = shards >> 20,
                    reserve_mib = self.cfg.reserve_bytes >> 20,
                    "disk space below the reserve: refusing new writes; reads, lists and deletes go on"
                );
            } else {
                info!(
                    meta_free_mib = meta >> 20,
                    shards_free_mib = shards >> 20,
                    "disk space back above the reserve: taking writes again"
                );
            }
        }
        let held = headroom_held(&self.cfg);
        if held > 0 && meta < self.cfg.reserve_bytes {
            release_headroom_if_low(&self.cfg);
        } else if held == 0
            && self.cfg.headroom_bytes > 0
            && meta >= self.cfg.reserve_bytes + 2 * self.cfg.headroom_bytes
        {
            if let Err(e) = take_headroom(&self.cfg) {
                warn!(error = %e, "cannot write the metadata headroom file");
            }
        }
    }
}

impl Actor for SpaceMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.measure();
        ctx.run_interval(SPACE_TICK, |act, _| act.measure());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_space_refuses_writes_with_the_code_that_fits_the_cluster() {
        let space = Space::unlimited();
        assert!(space.check_write(true, "n1").is_ok());
        space.set(5 << 20, 100 << 20, true);
        let solo = space.check_write(true, "n1").unwrap_err();
        assert_eq!(solo.code, S3ErrorCode::InsufficientStorage);
        let member = space.check_write(false, "n1").unwrap_err();
        assert_eq!(member.code, S3ErrorCode::SlowDown);
        assert!(member.to_string().contains("n1"), "{member}");
        space.set(500 << 20, 500 << 20, false);
        assert!(space.check_write(true, "n1").is_ok());
    }

    #[test]
    fn headroom_is_released_only_when_low() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = SpaceConfig {
            meta_dir: tmp.path().to_path_buf(),
            shards_dir: tmp.path().to_path_buf(),
            reserve_bytes: 0,
            headroom_bytes: 1 << 20,
        };
        take_headroom(&cfg).unwrap();
        assert_eq!(headroom_held(&cfg), 1 << 20);
        release_headroom_if_low(&cfg);
        assert_eq!(headroom_held(&cfg), 1 << 20, "plenty of space: kept");
        cfg.reserve_bytes = u64::MAX;
        release_headroom_if_low(&cfg);
        assert_eq!(headroom_held(&cfg), 0, "below the reserve: released");
    }
}
