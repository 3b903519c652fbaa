//! Snapshot cost at scale: fills a metadata store with N object records shaped like real ones
//! (one version, one 4+2 part), then builds a snapshot of it and installs that snapshot into a
//! second store, printing the time, the snapshot's size, the peak anonymous memory of each
//! step and the longest stall the build caused on its thread.
//!
//! ```text
//! cargo run --release -p hamster-actors --example snapshot_scale -- 1000000 [dir]
//! ```
//!
//! It prints numbers; it is a benchmark, not a test.

#![allow(clippy::disallowed_methods)] // wall time and a sampling thread, outside the simulation

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::snapshot::SnapFile;
use hamster_actors::raft::state_machine::StateMachine;
use hamster_protocol::meta::{ObjectId, ObjectVersion, PartLayout, VersionList};
use heed::PutFlags;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

const MAP_BYTES: usize = 256 << 30;
const FILL_BATCH: usize = 100_000;

fn record(i: u64) -> VersionList {
    let hex = |salt: u64| blake3::hash(&(i ^ salt).to_be_bytes()).to_hex().to_string();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    VersionList {
        versions: vec![ObjectVersion {
            version_id: "null".into(),
            object_id: ObjectId(id),
            size: 4096,
            etag: hex(1)[..32].to_string(),
            last_modified_ms: 1_765_000_000_000 + i,
            content_type: "application/octet-stream".into(),
            headers: Default::default(),
            user_meta: Default::default(),
            checksums: Default::default(),
            parts: vec![PartLayout {
                part: 1,
                size: 4096,
                k: 4,
                m: 2,
                block_bytes: 65536,
                shard_blake3: (0..6).map(|s| hex(s + 10)).collect(),
                md5: hex(2)[..32].to_string(),
                body: None,
                homes: vec![11, 12, 13, 14, 15, 16],
            }],
        }],
    }
}

/// Fills the live `objects` table with `n` records under bucket `bench`.
fn fill(db: &MetaDb, n: u64) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let mut txn = db.env.write_txn()?;
        let objects = db.state(&txn)?.objects;
        for _ in 0..FILL_BATCH {
            if i == n {
                break;
            }
            let key = format!("bench/objects/{i:012}");
            let value = serde_json::to_vec(&record(i))?;
            objects.put_with_flags(&mut txn, PutFlags::APPEND, key.as_bytes(), &value)?;
            i += 1;
        }
        txn.commit()?;
    }
    Ok(())
}

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples RssAnon every 5 ms until stopped; answers the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_anon_kib()));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Runs `work` on this thread while a ticker on the same thread measures the longest gap
/// between its 1 ms ticks: the longest the work kept the thread from anything else.
async fn with_stall_probe<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let worst = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (w, d) = (worst.clone(), done.clone());
    let probe = tokio::task::spawn_local(async move {
        let mut last = Instant::now();
        while !d.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = Instant::now();
            w.fetch_max((now - last).as_micros() as u64, Ordering::Relaxed);
            last = now;
        }
    });
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    let _ = probe.await;
    (out, Duration::from_micros(worst.load(Ordering::Relaxed)))
}

async fn run(n: u64, root: &Path) -> anyhow::Result<()> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let db_a = MetaDb::open(&root.join("a"), MAP_BYTES).await?;
    let started = Instant::now();
    fill(&db_a, n)?;
    let lmdb = db_a.env.real_disk_size()?;
    println!(
        "objects {n}: filled in {:.1} s, LMDB file {:.1} MiB ({:.0} bytes per object)",
        started.elapsed().as_secs_f64(),
        lmdb as f64 / 1048576.0,
        lmdb as f64 / n.max(1) as f64
    );
    let mut sm_a = StateMachine::new(db_a.clone(), tx.clone());

    let base = rss_anon_kib();
    let sampler = Sampler::start();
    let started = Instant::now();
    let mut builder = sm_a.get_snapshot_builder().await;
    let (built, stall) = with_stall_probe(builder.build_snapshot()).await;
    let built = built?;
    let build_s = started.elapsed().as_secs_f64();
    let peak = sampler.finish();
    let mut file = built.snapshot;
    let bytes = file.file_mut().metadata()?.len();
    println!(
        "build: {build_s:.2} s, snapshot {:.1} MiB, {:.0} MiB/s, peak RssAnon +{:.1} MiB, longest stall of its thread {:.1} ms",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / build_s,
        peak.saturating_sub(base) as f64 / 1024.0,
        stall.as_secs_f64() * 1000.0
    );

    let db_b = MetaDb::open(&root.join("b"), MAP_BYTES).await?;
    let mut sm_b = StateMachine::new(db_b.clone(), tx);
    let mut received = SnapFile::receive(&db_b.snapshot_dir())?;
    tokio::io::copy(&mut *file, &mut received).await?;
    let base = rss_anon_kib();
    let sampler = Sampler::start();
    let started = Instant::now();
    let (installed, stall) =
        with_stall_probe(sm_b.install_snapshot(&built.meta, Box::new(received))).await;
    installed?;
    let install_s = started.elapsed().as_secs_f64();
    let peak = sampler.finish();
    let count = {
        let txn = db_b.env.read_txn()?;
        db_b.state(&txn)?.objects.len(&txn)?
    };
    anyhow::ensure!(count == n, "installed {count} objects of {n}");
    println!(
        "install: {install_s:.2} s, {:.0} MiB/s, peak RssAnon +{:.1} MiB, longest stall of its thread {:.1} ms",
        bytes as f64 / 1048576.0 / install_s,
        peak.saturating_sub(base) as f64 / 1024.0,
        stall.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let keep = args.next();
    let temp = tempfile::tempdir()?;
    let root = keep.as_deref().map(Path::new).unwrap_or(temp.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, run(n, root))
}
