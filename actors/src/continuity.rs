//! Continuity of a node's state across starts, so that lost metadata is never mistaken for a
//! new cluster and never turns into deleted shards.
//!
//! Three small files beside `meta/` (never inside it, so they survive when it is lost):
//!
//! - `first-start`: written before anything else when a node is founded or joins, removed once
//!   its Raft store holds state. Only a node with this marker may found a group on an empty
//!   store, and a data dir without `node.json` but with this marker is an interrupted first
//!   start that can safely begin again (nothing in it was ever served).
//! - `meta-rebuild`: written by `hamster recover-meta` after the cluster re-admitted this node
//!   as a learner; allows one start on an empty store, which then fetches the metadata from
//!   the leader.
//! - `watermark.json`: the highest Raft index this node has applied (with the member
//!   addresses at that time). It only ever grows. A store that has applied less than it
//!   records is younger than the shards on this disk, and the orphan sweep does not trust it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::node::{write_atomic, DataDir};
use crate::raft::db::MetaDb;
use crate::raft::node::{RaftNode, RaftStatus};
use crate::raft::recover::inspect;
use crate::s3::Offload;

/// Marker of a first start (founding or joining) that has not reached a stored Raft state yet.
pub const FIRST_START_FILE: &str = "first-start";
/// Marker of a metadata rebuild allowed by `hamster recover-meta`.
pub const META_REBUILD_FILE: &str = "meta-rebuild";
/// The applied-index watermark.
pub const WATERMARK_FILE: &str = "watermark.json";
/// This node's cluster epoch (a decimal number; absent means 0). See [`crate::raft::epoch`].
pub const EPOCH_FILE: &str = "epoch";
/// Written when a member of a newer epoch told this node that a recover dropped it.
pub const FENCED_FILE: &str = "fenced";
/// Version of `watermark.json`; bumped additively.
pub const WATERMARK_VERSION: u32 = 1;
/// How often the keeper records the applied index.
pub const WATERMARK_TICK: Duration = Duration::from_secs(5);
/// The LMDB data file inside `meta/`.
const META_DATA_FILE: &str = "data.mdb";
/// What an interrupted first start may have left, besides its marker. Anything else in the
/// directory is not ours, and the directory is left alone.
const FIRST_START_LEFTOVERS: [&str; 10] = [
    "first-start.tmp",
    "tls",
    "credentials",
    "credentials.tmp",
    // `write_atomic` names its temp file after the final one with the extension swapped.
    "node.tmp",
    "node.json.tmp",
    "meta",
    "shards",
    WATERMARK_FILE,
    "watermark.tmp",
];

/// `watermark.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Format version.
    pub version: u32,
    /// The cluster the index belongs to.
    pub cluster_id: String,
    /// The highest Raft log index this node has applied.
    pub applied_index: u64,
    /// Cluster addresses of the members when it was written (where `recover-meta` asks).
    #[serde(default)]
    pub members: Vec<String>,
}

fn marker(dir: &DataDir, name: &str) -> PathBuf {
    dir.root.join(name)
}

/// Whether a first start is in progress (or was interrupted) in `dir`.
pub fn first_start_pending(dir: &DataDir) -> bool {
    marker(dir, FIRST_START_FILE).is_file()
}

/// Whether `hamster recover-meta` allowed this node to rebuild its metadata.
pub fn rebuild_pending(dir: &DataDir) -> bool {
    marker(dir, META_REBUILD_FILE).is_file()
}

/// Creates `dir` if needed and marks a first start in it. Call on an empty directory, before
/// writing anything else.
pub fn begin_first_start(dir: &DataDir) -> anyhow::Result<()> {
    fs::create_dir_all(&dir.root)
        .with_context(|| format!("cannot create data dir {}", dir.root.display()))?;
    write_atomic(
        &marker(dir, FIRST_START_FILE),
        b"a first start is in progress; removed once the node holds Raft state\n",
        0o644,
    )
}

/// Marks that this node may start once on an empty metadata store (`hamster recover-meta`).
pub fn allow_rebuild(dir: &DataDir) -> anyhow::Result<()> {
    write_atomic(
        &marker(dir, META_REBUILD_FILE),
        b"the metadata store is rebuilt from the cluster; removed once caught up\n",
        0o644,
    )
}

/// Clears what an interrupted first start left (no `node.json`, the marker present), so the
/// directory is empty again. Returns false, touching nothing, when the directory holds
/// anything a first start does not write, or shard files.
pub fn clear_interrupted_first_start(dir: &DataDir) -> anyhow::Result<bool> {
    // A crash while the marker itself was written leaves only its temp file.
    let marker_tmp = dir.root.join("first-start.tmp");
    if dir.is_initialised() || !(first_start_pending(dir) || marker_tmp.is_file()) {
        return Ok(false);
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir.root)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy().into_owned();
        if name != FIRST_START_FILE && !FIRST_START_LEFTOVERS.contains(&name.as_str()) {
            return Ok(false);
        }
        found.push(name);
    }
    if has_files(&dir.shards())? {
        return Ok(false);
    }
    // The marker's temp file is removed first, with the rest; the marker itself last.
    for name in found.iter().filter(|n| n.as_str() != FIRST_START_FILE) {
        let path = dir.root.join(name);
        if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    // The marker goes last: until it is gone, a crash here is still recognised.
    if first_start_pending(dir) {
        fs::remove_file(marker(dir, FIRST_START_FILE))?;
    }
    Ok(true)
}

/// Whether `path` (a directory tree) holds any regular file.
fn has_files(path: &Path) -> anyhow::Result<bool> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() || (kind.is_dir() && has_files(&entry.path())?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Counts shard files under `path` (for messages only; bounded by the tree).
fn count_files(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(k) if k.is_file() => 1,
            Ok(k) if k.is_dir() => count_files(&e.path()),
            _ => 0,
        })
        .sum()
}

/// Reads `watermark.json`, if there is one.
pub fn load_watermark(dir: &DataDir) -> anyhow::Result<Option<Watermark>> {
    let path = marker(dir, WATERMARK_FILE);
    let raw = match fs::read(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let w: Watermark = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is damaged; delete it to start anyway", path.display()))?;
    if w.version > WATERMARK_VERSION {
        bail!(
            "{} was written by a newer hamster (format {}); upgrade this binary",
            path.display(),
            w.version
        );
    }
    Ok(Some(w))
}

/// Records `w` unless the file already holds an index at least as high (it never goes back).
pub fn raise_watermark(dir: &DataDir, w: &Watermark) -> anyhow::Result<bool> {
    if let Some(old) = load_watermark(dir)? {
        if old.applied_index >= w.applied_index && old.cluster_id == w.cluster_id {
            return Ok(false);
        }
    }
    let body = serde_json::to_vec_pretty(w)?;
    write_atomic(&marker(dir, WATERMARK_FILE), &body, 0o644)?;
    Ok(true)
}

/// This node's cluster epoch as recorded (0 when never raised).
pub fn load_epoch(dir: &DataDir) -> anyhow::Result<u64> {
    let path = marker(dir, EPOCH_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{} is damaged (not a number); restore it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records this node's cluster epoch durably.
pub fn save_epoch(dir: &DataDir, epoch: u64) -> std::io::Result<()> {
    write_atomic(
        &marker(dir, EPOCH_FILE),
        format!("{epoch}\n").as_bytes(),
        0o644,
    )
    .map_err(std::io::Error::other)
}

/// Why a node that a `hamster recover` dropped does not start (or stops).
#[derive(Debug, thiserror::Error)]
#[error("this node was dropped from its cluster by `hamster recover` (the cluster is now in epoch {epoch}); its data is stale and it must not serve. Wipe its data dir {dir} and join the cluster again with a token from `hamster token`")]
pub struct FencedError {
    /// The cluster's newer epoch.
    pub epoch: u64,
    /// The data dir.
    pub dir: String,
}

/// Records that a member of epoch `epoch` fenced this node, so it stays stopped.
pub fn mark_fenced(dir: &DataDir, epoch: u64) -> anyhow::Result<()> {
    write_atomic(
        &marker(dir, FENCED_FILE),
        format!("{epoch}\n").as_bytes(),
        0o644,
    )
}

/// Refuses to start a node that was fenced.
pub fn check_not_fenced(dir: &DataDir) -> Result<(), FencedError> {
    match fs::read_to_string(marker(dir, FENCED_FILE)) {
        Ok(text) => Err(FencedError {
            epoch: text.trim().parse().unwrap_or(0),
            dir: dir.root.display().to_string(),
        }),
        Err(_) => Ok(()),
    }
}

/// How a node may open its metadata store this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// A first start: an empty store is expected, and a founder founds its group on it.
    First,
    /// After `recover-meta`: an empty store is expected and filled from the leader.
    Rebuild,
    /// A restart: the store holds this node's Raft state.
    Restart,
}

/// Decides how this node's metadata store may be opened, and refuses (with the way out) a
/// store that is missing, empty or unreadable when the node has held state before. Must run
/// before anything opens the store, because opening creates an empty one.
pub async fn check_meta(dir: &DataDir, cluster_id: &str) -> anyhow::Result<StartMode> {
    let mode = if first_start_pending(dir) {
        StartMode::First
    } else if rebuild_pending(dir) {
        StartMode::Rebuild
    } else {
        StartMode::Restart
    };
    if mode != StartMode::Restart {
        return Ok(mode);
    }
    let data = dir.meta().join(META_DATA_FILE);
    let size = fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        bail!("{}", lost_message(dir, cluster_id, "is missing or empty"));
    }
    let db = MetaDb::open(&dir.meta(), crate::raft::db::META_MAP_BYTES)
        .await
        .with_context(|| {
            lost_message(dir, cluster_id, "cannot be opened (damaged or truncated?)")
        })?;
    let state = inspect(&db);
    // Close the environment before the Raft node opens it again.
    db.into_closing_event().wait_timeout(Duration::from_secs(5));
    let state =
        state.with_context(|| lost_message(dir, cluster_id, "cannot be read (damaged?)"))?;
    if state.vote.is_none() && state.last_log.is_none() && state.membership.nodes().count() == 0 {
        bail!("{}", lost_message(dir, cluster_id, "holds no Raft state"));
    }
    Ok(mode)
}

fn lost_message(dir: &DataDir, cluster_id: &str, what: &str) -> String {
    let shards = count_files(&dir.shards());
    format!(
        "the metadata store {} {what}, but this data dir belongs to a member of cluster {cluster_id} ({shards} shard file(s) on disk); refusing to start so that nothing is deleted. If other members are running, rebuild this node's metadata from them with `hamster recover-meta --data {}`; on a one-node cluster restore {} from a backup (docs/operations.md, \"Lost metadata\")",
        dir.meta().display(),
        dir.root.display(),
        dir.meta().display(),
    )
}

/// Records this node's applied index in `watermark.json` every [`WATERMARK_TICK`] (and when
/// asked with [`Flush`]), and retires the start markers once they have done their job: the
/// first-start marker as soon as the store holds state, the rebuild marker once the rebuilt
/// store has applied as far as the watermark recorded before it was lost.
pub struct WatermarkKeeper {
    dir: DataDir,
    cluster_id: String,
    raft: Addr<RaftNode>,
    offload: Offload,
    /// The index the rebuild must reach before its marker goes (read at start).
    rebuild_target: Option<u64>,
    busy: bool,
    /// Whether the last write failed (so a failure is logged once, not every tick).
    failing: bool,
}

impl WatermarkKeeper {
    /// A keeper for the node whose data dir is `dir`.
    pub fn new(dir: DataDir, cluster_id: String, raft: Addr<RaftNode>, offload: Offload) -> Self {
        let rebuild_target = rebuild_pending(&dir).then(|| {
            load_watermark(&dir)
                .ok()
                .flatten()
                .map_or(0, |w| w.applied_index)
        });
        WatermarkKeeper {
            dir,
            cluster_id,
            raft,
            offload,
            rebuild_target,
            busy: false,
            failing: false,
        }
    }

    fn record(&mut self) -> ResponseActFuture<Self, ()> {
        let raft = self.raft.clone();
        let dir = self.dir.clone();
        let cluster_id = self.cluster_id.clone();
        let offload = self.offload;
        let target = self.rebuild_target;
        self.busy = true;
        let work = async move {
            let status = raft.send(RaftStatus).await.ok()?;
            if status.applied_index == 0 {
                return None;
            }
            let members = status
                .members()
                .into_iter()
                .map(|m| m.cluster_addr)
                .collect();
            let w = Watermark {
                version: WATERMARK_VERSION,
                cluster_id,
                applied_index: status.applied_index,
                members,
            };
            let applied = status.applied_index;
            let done = offload
                .run(move || -> anyhow::Result<bool> {
                    raise_watermark(&dir, &w)?;
                    let first = marker(&dir, FIRST_START_FILE);
                    if first.exists() {
                        fs::remove_file(&first)?;
                    }
                    let rebuilt = target.is_some_and(|t| applied >= t);
                    if rebuilt {
                        fs::remove_file(marker(&dir, META_REBUILD_FILE))?;
                    }
                    Ok(rebuilt)
                })
                .await;
            match done {
                Ok(Ok(rebuilt)) => Some(Ok(rebuilt)),
                Ok(Err(e)) => Some(Err(format!("{e:#}"))),
                Err(_) => None,
            }
        };
        Box::pin(work.into_actor(self).map(|outcome, act, _| {
            act.busy = false;
            let rebuilt = match outcome {
                Some(Ok(rebuilt)) => {
                    act.failing = false;
                    Some(rebuilt)
                }
                Some(Err(e)) => {
                    // Once per streak: a full disk would otherwise log this every tick.
                    if !act.failing {
                        warn!(error = %e, "cannot record the applied-index watermark");
                    }
                    act.failing = true;
                    None
                }
                None => None,
            };
            if rebuilt == Some(true) {
                info!("metadata rebuilt from the cluster up to the recorded watermark");
                act.rebuild_target = None;
            }
        }))
    }
}

impl Actor for WatermarkKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Tick);
        ctx.run_interval(WATERMARK_TICK, |_, ctx| ctx.notify(Tick));
    }
}

impl Supervised for WatermarkKeeper {
    /// The record that was out died with the old context: let the next one run.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.busy = false;
    }
}

/// Record the watermark now (the keeper's own timer sends it).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Tick;

impl Handler<Tick> for WatermarkKeeper {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Tick, _ctx: &mut Self::Context) -> Self::Result {
        if self.busy {
            return Box::pin(actix::fut::ready(()));
        }
        self.record()
    }
}

/// Record the watermark once more and answer when done (at shutdown).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for WatermarkKeeper {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Flush, _ctx: &mut Self::Context) -> Self::Result {
        self.record()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watermark(index: u64) -> Watermark {
        Watermark {
            version: WATERMARK_VERSION,
            cluster_id: "c1".into(),
            applied_index: index,
            members: vec!["127.0.0.1:1".into()],
        }
    }

    #[test]
    fn the_watermark_never_goes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        assert!(raise_watermark(&dir, &watermark(10)).unwrap());
        assert!(!raise_watermark(&dir, &watermark(7)).unwrap());
        assert_eq!(load_watermark(&dir).unwrap().unwrap().applied_index, 10);
        assert!(raise_watermark(&dir, &watermark(11)).unwrap());
        assert_eq!(load_watermark(&dir).unwrap().unwrap().applied_index, 11);
    }

    #[test]
    fn an_interrupted_first_start_is_cleared_and_nothing_else_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("d"));
        begin_first_start(&dir).unwrap();
        fs::create_dir_all(dir.tls()).unwrap();
        fs::write(dir.tls().join("ca.pem"), b"x").unwrap();
        fs::write(dir.credentials(), b"x").unwrap();
        fs::create_dir_all(dir.shards().join("ab")).unwrap();
        // Killed while node.json was written: its temp file, as `write_atomic` names it.
        let node_tmp = dir.node_file().with_extension("tmp");
        fs::write(&node_tmp, b"{").unwrap();
        assert!(clear_interrupted_first_start(&dir).unwrap());
        assert!(dir.is_empty());

        // A shard file means something was stored: leave the directory alone.
        begin_first_start(&dir).unwrap();
        fs::create_dir_all(dir.shards().join("ab")).unwrap();
        fs::write(dir.shards().join("ab").join("s"), b"x").unwrap();
        assert!(!clear_interrupted_first_start(&dir).unwrap());
        assert!(dir.shards().join("ab").join("s").exists());

        // A crash while the marker itself was written leaves only its temp file.
        let torn = DataDir::new(tmp.path().join("t"));
        fs::create_dir_all(&torn.root).unwrap();
        fs::write(torn.root.join("first-start.tmp"), b"x").unwrap();
        assert!(clear_interrupted_first_start(&torn).unwrap());
        assert!(torn.is_empty());

        // So does a file a first start never writes.
        let other = DataDir::new(tmp.path().join("e"));
        begin_first_start(&other).unwrap();
        fs::write(other.root.join("photos.tar"), b"x").unwrap();
        assert!(!clear_interrupted_first_start(&other).unwrap());
        assert!(other.root.join("photos.tar").exists());
    }

    #[test]
    fn init_starts_over_after_an_init_that_was_cut_short() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("d"));
        begin_first_start(&dir).unwrap();
        fs::create_dir_all(dir.tls()).unwrap();
        fs::write(dir.credentials(), b"half").unwrap();
        let opts = crate::node::InitOptions {
            zone: "z".into(),
            host: "h".into(),
            capacity_bytes: 1 << 30,
            cluster_addr: "127.0.0.1:1".into(),
            credentials: None,
        };
        let ids = crate::clock::IdSource::seeded(7);
        let made = crate::node::init(&dir, &opts, &ids).unwrap();
        assert!(dir.is_initialised());
        assert_eq!(
            crate::node::load_credentials(&dir).unwrap(),
            made.credentials
        );
    }

    #[test]
    fn a_completed_node_is_never_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        begin_first_start(&dir).unwrap();
        fs::write(dir.node_file(), b"{}").unwrap();
        assert!(!clear_interrupted_first_start(&dir).unwrap());
        assert!(dir.node_file().exists());
    }
}
