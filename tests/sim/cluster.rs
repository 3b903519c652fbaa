//! The simulated cluster: real `RaftNode` actors (and, where a scenario asks, their membership
//! `Steward`s, `LayoutManager`s and `Scrubber`s) on the [`SimNet`], each with its own LMDB directory.
//!
//! A crash is modelled on the disk as well as the network: the node's committed LMDB state is
//! copied at the instant of the crash into the directory its next incarnation starts from, so
//! whatever the dying incarnation still does afterwards is lost, as un-synced work is. LMDB
//! commits are atomic and durable, so a commit is either wholly in the copy or not at all.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use hamster_actors::clock::{Clock, IdSource};
use hamster_actors::data::{DataConfig, DataPlane};
use hamster_actors::layout::{ChangeLayout, LayoutChange, LayoutConfig, LayoutManager};
use hamster_actors::liveness::LivenessHandle;
use hamster_actors::metrics::Metrics;
use hamster_actors::peer::RaftService;
use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::epoch::Epoch;
use hamster_actors::raft::node::{
    AddLearner, ChangeMembership, CompactLog, GetLayout, GetObject, GetReader, Network,
    OpenFreedQueue, StartOptions, WatchMetrics,
};
use hamster_actors::raft::snapshot::InstallTap;
use hamster_actors::raft::{NodeInfo, Propose, RaftNode, RaftNodeConfig, Shutdown};
use hamster_actors::reclaim::{OrphanSweep, Reclaimer, SweepFence};
use hamster_actors::s3::uploads::{UploadGate, UploadLimits};
use hamster_actors::s3::{Offload, S3Config, S3State};
use hamster_actors::scrub::{ScrubConfig, Scrubber};
use hamster_actors::shards::ShardStore;
use hamster_actors::steward::Steward;
use hamster_actors::transfer::ShardService;
use hamster_protocol::meta::{Applied, Command, ObjectId, ObjectVersion, PartLayout};
use hamster_protocol::placement::Layout;
use hamster_protocol::shard::{parse_shard_file_name, shard_file_name};
use openraft::ServerState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::TempDir;
use tokio::sync::mpsc::unbounded_channel;

use crate::disk::SimDisk;
use crate::event;
use crate::invariants::{NodeView, Observations};
use crate::net::SimNet;
use crate::world::{fork, Entropy, Trace};

/// LMDB map size per simulated node (sparse).
const MAP_SIZE_BYTES: usize = 256 << 20;
/// Longest a scenario step waits for the cluster (simulated time).
pub const STEP_WAIT_MAX: Duration = Duration::from_secs(60);
/// Where each node's shard store lives on its simulated disk.
const SHARDS_ROOT: &str = "/shards";

/// Small stripes, so the simulated clients' bodies span several stripes and most are coded
/// rather than replicated.
pub const DATA_CONFIG: DataConfig = DataConfig {
    block_bytes: 16 * 1024,
    small_object_bytes: 4 * 1024,
};
/// How often waits look again (simulated time).
const POLL: Duration = Duration::from_millis(20);
/// Time a graceful stop may take.
const STOP_WAIT_MAX: Duration = Duration::from_secs(30);

/// Unix time at simulated time zero: 2026-01-01T00:00:00Z.
const EPOCH_MS: u64 = 1_767_225_600_000;

/// The simulated wall clock: a fixed epoch plus simulated time plus any jumps a scenario
/// makes (the wall clock may jump; monotonic time never does).
pub struct SimClock {
    start: tokio::time::Instant,
    offset_ms: std::sync::atomic::AtomicI64,
}

impl SimClock {
    fn new() -> Self {
        SimClock {
            start: tokio::time::Instant::now(),
            offset_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Moves the wall clock by `ms` (backwards when negative).
    pub fn jump(&self, ms: i64) {
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        (EPOCH_MS + elapsed).saturating_add_signed(offset)
    }
}

/// One simulated node across its incarnations.
struct SimNode {
    info: NodeInfo,
    incarnation: u64,
    /// The data directory (`meta/`, `shards/`) the next (or current) incarnation uses.
    data_dir: PathBuf,
    service: RaftService,
    addr: Option<Addr<RaftNode>>,
    /// The S3 front's shared state, while running.
    s3: Option<Arc<S3State>>,
    /// The node's shard disk, across incarnations.
    disk: SimDisk,
    steward: Option<Addr<Steward>>,
    /// The node's layout manager, while running (if the scenario runs them).
    layout: Option<Addr<LayoutManager>>,
    /// The node's scrubber, while running (if the scenario runs them).
    scrubber: Option<Addr<Scrubber>>,
    /// Replace voters silent this long, if this node runs a steward.
    steward_down_after: Option<Duration>,
    /// The node's recorded cluster epoch, across incarnations (as `<data>/epoch` is).
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// The epoch a member of a newer one fenced this node with, if any (its latest life).
    fenced: Option<tokio::sync::watch::Receiver<Option<u64>>>,
}

/// A simulated cluster and everything observed in it.
pub struct Sim {
    /// The run's seed.
    pub seed: u64,
    /// The run's trace.
    pub trace: Trace,
    /// The network.
    pub net: SimNet,
    /// What the invariants watch.
    pub obs: Rc<Observations>,
    /// The wall clock (timestamps in records, token times).
    pub clock: Arc<SimClock>,
    nodes: RefCell<BTreeMap<u64, SimNode>>,
    rng: RefCell<ChaCha8Rng>,
    root: TempDir,
    /// Nodes a recover dropped and that were fenced: their stale stores are left out of the
    /// final checks (an operator wipes them).
    retired: RefCell<BTreeSet<u64>>,
    /// How every node started from now on runs its layout manager, if the scenario asked.
    layout_config: RefCell<Option<LayoutConfig>>,
    /// How every node started from now on runs its scrubber, if the scenario asked.
    scrub_config: RefCell<Option<ScrubConfig>>,
    /// Nodes whose snapshot installs a scenario follows, from their next start on.
    install_taps: RefCell<BTreeMap<u64, InstallTap>>,
}

/// A temporary directory on a memory file system when there is one (fsync is free there).
fn temp_root() -> TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("hamster-sim-")
        .tempdir_in(shm);
    builder.unwrap_or_else(|_| tempfile::tempdir().expect("a temporary directory"))
}

impl Sim {
    /// An empty cluster for seed `seed`.
    pub fn new(seed: u64, trace: Trace, entropy: Entropy) -> Rc<Sim> {
        Rc::new(Sim {
            seed,
            net: SimNet::new(seed, trace.clone(), entropy),
            obs: Rc::new(Observations::new(trace.clone())),
            trace,
            clock: Arc::new(SimClock::new()),
            nodes: RefCell::new(BTreeMap::new()),
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(fork(seed, "scenario", 0, 0))),
            root: temp_root(),
            retired: RefCell::new(BTreeSet::new()),
            layout_config: RefCell::new(None),
            scrub_config: RefCell::new(None),
            install_taps: RefCell::new(BTreeMap::new()),
        })
    }

    /// A number in `range` from the scenario's own stream.
    pub fn pick(&self, range: std::ops::Range<u64>) -> u64 {
        self.rng.borrow_mut().gen_range(range)
    }

    /// Sleeps for `ms` simulated milliseconds.
    pub async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Every node ever started, in id order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.borrow().keys().copied().collect()
    }

    /// The nodes running now.
    pub fn up(&self) -> Vec<u64> {
        self.nodes
            .borrow()
            .iter()
            .filter(|(_, n)| n.addr.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The running node `id`'s actor.
    pub fn addr(&self, id: u64) -> Option<Addr<RaftNode>> {
        self.nodes.borrow().get(&id).and_then(|n| n.addr.clone())
    }

    /// Starts node `id` (a new one, or the next incarnation of a crashed one). `bootstrap`
    /// founds a one-voter group on an empty store; `steward` runs a membership steward that
    /// replaces voters silent that long.
    pub async fn start(
        &self,
        id: u64,
        bootstrap: bool,
        steward: Option<Duration>,
    ) -> Result<(), String> {
        let (data_dir, service, info, disk, epoch) = {
            let mut nodes = self.nodes.borrow_mut();
            let node = nodes.entry(id).or_insert_with(|| SimNode {
                info: NodeInfo {
                    cluster_addr: format!("sim-{id}:7946"),
                    zone: format!("z{}", id % 3),
                    host: format!("h{id}"),
                    capacity_bytes: 1 << 40,
                    replaces: None,
                },
                incarnation: 0,
                data_dir: self.root.path().join(format!("n{id}-i0")),
                service: RaftService::new(),
                addr: None,
                s3: None,
                disk: SimDisk::new(fork(self.seed, "disk", id, 0)),
                steward: None,
                layout: None,
                scrubber: None,
                steward_down_after: steward,
                epoch: Arc::default(),
                fenced: None,
            });
            if node.addr.is_some() {
                return Err(format!("node {id} is already running"));
            }
            node.steward_down_after = steward;
            let recorded = node.epoch.clone();
            let persist: hamster_actors::raft::epoch::PersistEpoch = Arc::new(move |e| {
                recorded.fetch_max(e, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            });
            let epoch = Epoch::new(
                node.epoch.load(std::sync::atomic::Ordering::SeqCst),
                Some(persist),
            );
            node.fenced = Some(epoch.fenced());
            (
                node.data_dir.clone(),
                node.service.clone(),
                node.info.clone(),
                node.disk.clone(),
                epoch,
            )
        };
        let (incarnation, link) = self.net.attach(id, service.clone());
        event!(self.trace, "node {id} start incarnation {incarnation}");
        let (freed_tx, freed_rx) = unbounded_channel();
        let (applied_tx, mut applied_rx) = unbounded_channel();
        let obs = self.obs.clone();
        actix_rt::spawn(async move {
            while let Some(entry) = applied_rx.recv().await {
                obs.on_applied(id, entry);
            }
        });
        let cfg = RaftNodeConfig {
            node_id: id,
            meta_dir: data_dir.join("meta"),
            node: info,
            seed: fork(self.seed, "raft", id, incarnation),
            freed_tx,
            map_size_bytes: MAP_SIZE_BYTES,
            epoch,
        };
        // One detector per incarnation, fed by Raft and the data plane alike, as in production.
        let node_metrics = Metrics::new();
        let liveness = LivenessHandle::start(id, Some(&node_metrics));
        let opts = StartOptions {
            network: Network::Peers(link),
            bootstrap,
            applied_tap: Some(applied_tx),
            install_tap: self.install_taps.borrow().get(&id).cloned(),
            liveness: Some(liveness.clone()),
        };
        let addr = RaftNode::start_with(cfg, opts)
            .await
            .map_err(|e| format!("node {id} did not start: {e:#}"))?;
        service.bind(addr.clone());
        let mut metrics = addr
            .send(WatchMetrics)
            .await
            .map_err(|e| format!("node {id}: {e}"))?;
        let obs = self.obs.clone();
        actix_rt::spawn(async move {
            loop {
                let view = NodeView::of(incarnation, &metrics.borrow_and_update());
                obs.on_metrics(id, view);
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
        let steward = steward.map(|after| Steward::new(addr.clone(), after).start());
        let shards = ShardStore::open_on(Arc::new(disk), Path::new(SHARDS_ROOT))
            .map(Arc::new)
            .map_err(|e| format!("node {id}'s shard store: {e}"))?;
        let metrics = node_metrics;
        // As production does: the fence watches from before the first shard write, and the
        // reclaimer drains the freed queue and sweeps orphans while the node serves.
        let fence = SweepFence::watching();
        let shard_service = ShardService::new(shards.clone(), Offload::Inline);
        shard_service.set_fence(fence.clone());
        shard_service.set_ready();
        let queue = addr
            .send(OpenFreedQueue)
            .await
            .map_err(|e| format!("node {id}: {e}"))?
            .map_err(|e| format!("node {id}'s freed queue: {e}"))?;
        Reclaimer::new(
            queue,
            shards.clone(),
            metrics.clone(),
            Offload::Inline,
            freed_rx,
        )
        .with_sweep(OrphanSweep {
            raft: addr.clone(),
            fence,
            guard: Default::default(),
        })
        .spawn(&Default::default());
        let shard_link = self
            .net
            .attach_shards(id, incarnation, shard_service.clone());
        let ids = Arc::new(IdSource::seeded(fork(self.seed, "ids", id, incarnation)));
        let members = addr
            .send(WatchMetrics)
            .await
            .map_err(|e| format!("node {id}: {e}"))?;
        let data = DataPlane::new(
            id,
            addr.clone(),
            shard_service,
            Some(shard_link),
            members,
            ids.clone(),
            Offload::Inline,
            DATA_CONFIG,
            liveness,
        );
        let reader = addr
            .send(GetReader)
            .await
            .map_err(|e| format!("node {id}: {e}"))?;
        let s3 = Arc::new(S3State {
            raft: addr.clone(),
            reader,
            shards,
            data,
            metrics,
            clock: self.clock.clone(),
            ids,
            config: S3Config::new(crate::s3client::REGION),
            owner_id: "sim".into(),
            offload: Offload::Inline,
            uploads: UploadGate::new(UploadLimits::default()),
            space: hamster_actors::space::Space::unlimited(),
        });
        let layout_config = *self.layout_config.borrow();
        let layout = layout_config.map(|config| {
            let clock: Arc<dyn Clock> = self.clock.clone();
            LayoutManager::new(
                addr.clone(),
                s3.data.clone(),
                clock,
                s3.metrics.clone(),
                config,
            )
            .start()
        });
        let scrub_config = *self.scrub_config.borrow();
        let scrubber = scrub_config.map(|config| {
            let clock: Arc<dyn Clock> = self.clock.clone();
            Scrubber::new(
                addr.clone(),
                s3.data.clone(),
                clock,
                s3.metrics.clone(),
                config,
            )
            .start()
        });
        let mut nodes = self.nodes.borrow_mut();
        let node = nodes.get_mut(&id).expect("node just registered");
        node.incarnation = incarnation;
        node.addr = Some(addr);
        node.s3 = Some(s3);
        node.steward = steward;
        node.layout = layout;
        node.scrubber = scrubber;
        Ok(())
    }

    /// Crashes node `id`: it drops off the network at once, and its next incarnation starts
    /// from what its store had committed at this instant.
    pub async fn crash(&self, id: u64) -> Result<(), String> {
        let (addr, steward, layout, scrubber, old_dir, new_dir, disk) = {
            let mut nodes = self.nodes.borrow_mut();
            let node = nodes.get_mut(&id).ok_or(format!("no node {id}"))?;
            let Some(addr) = node.addr.take() else {
                return Err(format!("node {id} is not running"));
            };
            let next = self
                .root
                .path()
                .join(format!("n{id}-i{}", node.incarnation + 1));
            let old = std::mem::replace(&mut node.data_dir, next.clone());
            node.s3 = None;
            node.service.unbind();
            (
                addr,
                node.steward.take(),
                node.layout.take(),
                node.scrubber.take(),
                old,
                next,
                node.disk.clone(),
            )
        };
        self.net.crash(id);
        copy_store(&old_dir, &new_dir).map_err(|e| format!("copying node {id}'s store: {e}"))?;
        let damaged = disk.crash(true);
        event!(
            self.trace,
            "node {id} crash ({damaged} shard files lost writes)"
        );
        if let Some(s) = steward {
            s.do_send(StopSteward);
        }
        if let Some(l) = layout {
            l.do_send(StopLayoutManager);
        }
        if let Some(s) = scrubber {
            s.do_send(StopScrubber);
        }
        // The dying incarnation is stopped so that it releases its store; nothing it does
        // from here on reaches the copy its successor starts from.
        let _ = tokio::time::timeout(STOP_WAIT_MAX, addr.send(Shutdown)).await;
        Ok(())
    }

    /// Stops node `id` cleanly (its store closed, everything committed kept).
    pub async fn stop(&self, id: u64) -> Result<(), String> {
        let (addr, steward, layout, scrubber) = {
            let mut nodes = self.nodes.borrow_mut();
            let node = nodes.get_mut(&id).ok_or(format!("no node {id}"))?;
            node.service.unbind();
            node.s3 = None;
            (
                node.addr.take(),
                node.steward.take(),
                node.layout.take(),
                node.scrubber.take(),
            )
        };
        self.net.crash(id);
        if let Some(s) = steward {
            s.do_send(StopSteward);
        }
        if let Some(l) = layout {
            l.do_send(StopLayoutManager);
        }
        if let Some(s) = scrubber {
            s.do_send(StopScrubber);
        }
        if let Some(addr) = addr {
            event!(self.trace, "node {id} stop");
            tokio::time::timeout(STOP_WAIT_MAX, addr.send(Shutdown))
                .await
                .map_err(|_| format!("node {id} did not stop in time"))?
                .map_err(|e| format!("node {id}: {e}"))?;
        }
        Ok(())
    }

    /// Restarts a crashed or stopped node with the steward setting it had.
    pub async fn restart(&self, id: u64) -> Result<(), String> {
        let steward = self
            .nodes
            .borrow()
            .get(&id)
            .ok_or(format!("no node {id}"))?
            .steward_down_after;
        self.start(id, false, steward).await
    }

    /// Stops every running node (closing their stores).
    pub async fn stop_all(&self) {
        for id in self.up() {
            let _ = self.stop(id).await;
        }
    }

    /// Raises node `id`'s recorded cluster epoch (what `hamster recover` writes); takes effect
    /// at its next start.
    pub fn raise_epoch(&self, id: u64) -> u64 {
        let nodes = self.nodes.borrow();
        let Some(node) = nodes.get(&id) else {
            return 0;
        };
        let epoch = node.epoch.load(std::sync::atomic::Ordering::SeqCst) + 1;
        node.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        event!(self.trace, "node {id} moves to cluster epoch {epoch}");
        epoch
    }

    /// Leaves node `id` (dropped by a recover, fenced, to be wiped) out of the final checks.
    pub fn retire(&self, id: u64) {
        event!(self.trace, "node {id} retired (to be wiped)");
        self.retired.borrow_mut().insert(id);
    }

    /// The newer epoch a peer fenced node `id` with in its latest life, if it was.
    pub fn fenced(&self, id: u64) -> Option<u64> {
        let nodes = self.nodes.borrow();
        let rx = nodes.get(&id)?.fenced.as_ref()?;
        let epoch = *rx.borrow();
        epoch
    }

    /// The `meta` directory node `id` starts from next (its store once stopped).
    pub fn meta_dir(&self, id: u64) -> Option<PathBuf> {
        self.nodes
            .borrow()
            .get(&id)
            .map(|n| n.data_dir.join("meta"))
    }

    /// Node `id`'s shard files (for the final checks, once stopped).
    pub fn shard_store(&self, id: u64) -> Option<ShardStore> {
        let disk = self.nodes.borrow().get(&id)?.disk.clone();
        ShardStore::open_on(Arc::new(disk), Path::new(SHARDS_ROOT)).ok()
    }

    /// Flips a bit in one finished shard file on node `id`'s disk; returns the object body and
    /// part it belongs to.
    pub fn rot(&self, id: u64) -> Option<(ObjectId, u32)> {
        let disk = self.nodes.borrow().get(&id)?.disk.clone();
        let path = disk.rot(Path::new(SHARDS_ROOT), |p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| parse_shard_file_name(n).is_some())
        })?;
        let name = path.file_name()?.to_str()?;
        let (object, part, _) = parse_shard_file_name(name)?;
        event!(self.trace, "node {id} disk rots a bit in {name}");
        Some((object, part))
    }

    /// Rots a bit in shard `index` of `part` of body `object` on node `id`'s disk; false if
    /// the disk does not hold that shard.
    pub fn rot_shard(&self, id: u64, object: ObjectId, part: u32, index: u16) -> bool {
        let Some(disk) = self.nodes.borrow().get(&id).map(|n| n.disk.clone()) else {
            return false;
        };
        let name = shard_file_name(&object, part, index);
        let hit = disk.rot(Path::new(SHARDS_ROOT), |p| {
            p.file_name().and_then(|n| n.to_str()) == Some(name.as_str())
        });
        event!(
            self.trace,
            "node {id} disk rots a bit in {name}: {}",
            hit.is_some()
        );
        hit.is_some()
    }

    /// Removes every shard file from node `id`'s disk (a replaced, empty disk); returns how
    /// many there were.
    pub fn wipe_shards(&self, id: u64) -> usize {
        let Some(store) = self.shard_store(id) else {
            return 0;
        };
        let shards = store.list().unwrap_or_default();
        let bodies: BTreeSet<ObjectId> = shards.iter().map(|s| s.id).collect();
        for b in bodies {
            let _ = store.delete_object(&b);
        }
        shards.len()
    }

    /// Removes one shard file from node `id`'s disk.
    pub fn delete_shard(&self, id: u64, object: ObjectId, part: u32, index: u16) {
        if let Some(store) = self.shard_store(id) {
            let path = store.path(&object, part, index);
            let disk = self.nodes.borrow().get(&id).map(|n| n.disk.clone());
            if let Some(disk) = disk {
                let _ = hamster_actors::disk::Disk::remove_file(&disk, &path);
            }
            event!(self.trace, "node {id} loses shard {}", path.display());
        }
    }

    /// The running node `id`'s S3 front.
    pub fn s3(&self, id: u64) -> Option<Arc<S3State>> {
        self.nodes.borrow().get(&id).and_then(|n| n.s3.clone())
    }

    /// Where node `id` runs.
    pub fn info(&self, id: u64) -> Option<NodeInfo> {
        self.nodes.borrow().get(&id).map(|n| n.info.clone())
    }

    /// The node that leads in the highest term any running node knows, if it is running.
    pub fn leader(&self) -> Option<u64> {
        let up: BTreeSet<u64> = self.up().into_iter().collect();
        self.obs
            .views()
            .into_iter()
            .filter(|(id, v)| up.contains(id) && v.state == ServerState::Leader)
            .max_by_key(|(_, v)| v.term)
            .map(|(id, _)| id)
    }

    /// Waits (bounded) for a running leader.
    pub async fn wait_leader(&self) -> Result<u64, String> {
        let mut waited = Duration::ZERO;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if waited >= STEP_WAIT_MAX {
                return Err(format!("no leader after {} s", waited.as_secs()));
            }
            tokio::time::sleep(POLL).await;
            waited += POLL;
        }
    }

    /// Waits (bounded) until `done` holds of the latest views of the running nodes.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&BTreeMap<u64, NodeView>) -> bool,
    ) -> Result<(), String> {
        let mut waited = Duration::ZERO;
        loop {
            let up: BTreeSet<u64> = self.up().into_iter().collect();
            let views: BTreeMap<u64, NodeView> = self
                .obs
                .views()
                .into_iter()
                .filter(|(id, _)| up.contains(id))
                .collect();
            if done(&views) {
                event!(self.trace, "reached: {what}");
                return Ok(());
            }
            if waited >= STEP_WAIT_MAX {
                return Err(format!(
                    "not reached within {} s: {what}; views {views:?}",
                    waited.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
            waited += POLL;
        }
    }

    /// Waits until every running node has applied everything the leader has logged, and the
    /// leader has applied it too.
    pub async fn converge(&self) -> Result<(), String> {
        self.wait_leader().await?;
        self.wait_until("every running node applied the leader's log", |views| {
            let Some(leader) = views.values().find(|v| v.state == ServerState::Leader) else {
                return false;
            };
            views
                .values()
                .all(|v| v.applied == leader.last_log && v.last_log == leader.last_log)
        })
        .await
    }

    /// Proposes `cmd` on node `id` and waits (bounded) for what applying it answered.
    pub async fn propose(&self, id: u64, cmd: Command) -> Result<Applied, String> {
        let addr = self.addr(id).ok_or(format!("node {id} is not running"))?;
        match tokio::time::timeout(STEP_WAIT_MAX, addr.send(Propose(cmd))).await {
            Ok(Ok(Ok(applied))) => Ok(applied),
            Ok(Ok(Err(e))) => Err(format!("proposal on node {id} failed: {e}")),
            Ok(Err(e)) => Err(format!("node {id}: {e}")),
            Err(_) => Err(format!("proposal on node {id} did not finish in time")),
        }
    }

    /// Proposes `cmd` on the leader, retrying through elections, until it commits.
    pub async fn propose_on_leader(&self, cmd: Command) -> Result<Applied, String> {
        let mut last = String::new();
        for _ in 0..20 {
            let leader = self.wait_leader().await?;
            match self.propose(leader, cmd.clone()).await {
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
            self.sleep_ms(200).await;
        }
        Err(format!("could not commit {cmd:?}: {last}"))
    }

    /// Founds a group of `n` voters 1..=n: node 1 alone first, then the others as learners,
    /// then all promoted at once.
    pub async fn form(&self, n: u64) -> Result<(), String> {
        self.start(1, true, None).await?;
        for id in 2..=n {
            self.start(id, false, None).await?;
        }
        let leader = self.addr(1).ok_or("node 1 stopped")?;
        for id in 2..=n {
            let add = AddLearner {
                id,
                node: self.info(id).expect("started"),
            };
            leader
                .send(add)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("adding learner {id}: {e}"))?;
        }
        let voters: BTreeSet<u64> = (1..=n).collect();
        let change = ChangeMembership {
            voters: voters.clone(),
        };
        let mut tries = 0;
        loop {
            match leader
                .send(change.clone())
                .await
                .map_err(|e| e.to_string())?
            {
                Ok(()) => break,
                // Learners that have not caught up yet are refused; give them a moment.
                Err(e) if tries < 20 => {
                    event!(self.trace, "form: {e}; retrying");
                    tries += 1;
                    self.sleep_ms(100).await;
                }
                Err(e) => return Err(format!("forming {voters:?}: {e}")),
            }
        }
        event!(self.trace, "formed {voters:?}");
        Ok(())
    }

    /// Has the leader snapshot its state and drop its log, so members behind it must catch up
    /// from the snapshot.
    pub async fn compact_leader(&self) -> Result<u64, String> {
        let leader = self.wait_leader().await?;
        let addr = self.addr(leader).ok_or("leader stopped")?;
        let purged = addr
            .send(CompactLog)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("compacting node {leader}'s log: {e}"))?;
        event!(self.trace, "node {leader} compacted its log up to {purged}");
        Ok(purged)
    }

    /// Follows node `id`'s snapshot installs from its next start on, in `tap`'s batch size
    /// (`None` stops following).
    pub fn tap_installs(&self, id: u64, tap: Option<InstallTap>) {
        let mut taps = self.install_taps.borrow_mut();
        match tap {
            Some(t) => taps.insert(id, t),
            None => taps.remove(&id),
        };
    }

    /// Has every node started from now on run a layout manager migrating at `config`'s pace
    /// (set before the first start so the first layout is the manager's).
    pub fn run_layout_managers(&self, config: LayoutConfig) {
        *self.layout_config.borrow_mut() = Some(config);
    }

    /// Has every node started from now on run a scrubber paced by `config` (it walks only
    /// where its node leads).
    pub fn run_scrubbers(&self, config: ScrubConfig) {
        *self.scrub_config.borrow_mut() = Some(config);
    }

    /// The current version of `bucket/key` as node `id` knows it.
    pub async fn current_version(
        &self,
        id: u64,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectVersion, String> {
        let addr = self.addr(id).ok_or(format!("node {id} is down"))?;
        let list = addr
            .send(GetObject {
                bucket: bucket.into(),
                key: key.into(),
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        list.as_ref()
            .and_then(|l| l.current())
            .cloned()
            .ok_or(format!("{key} has no current version"))
    }

    /// The body and the only part of `bucket/key`'s current version, as node `id` knows it.
    pub async fn only_part(
        &self,
        id: u64,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectId, PartLayout), String> {
        let v = self.current_version(id, bucket, key).await?;
        match v.parts.as_slice() {
            [p] => Ok((v.part_body(p), p.clone())),
            parts => Err(format!("{key} has {} parts, not one", parts.len())),
        }
    }

    /// The data-plane layout node `id` has applied (`None` if it is down or has none).
    pub async fn layout(&self, id: u64) -> Option<Layout> {
        let addr = self.addr(id)?;
        addr.send(GetLayout).await.ok()?.ok()?
    }

    /// Asks the layout manager of the current leader for `change`; what it answered (`Err`
    /// also when no leader's manager answers in time).
    pub async fn change_layout(&self, change: LayoutChange) -> Result<String, String> {
        let leader = self.wait_leader().await?;
        let manager = self
            .nodes
            .borrow()
            .get(&leader)
            .and_then(|n| n.layout.clone())
            .ok_or(format!("node {leader} runs no layout manager"))?;
        let ask = ChangeLayout {
            change: change.clone(),
            asked_by: "simulation".into(),
        };
        let answer = match tokio::time::timeout(STEP_WAIT_MAX, manager.send(ask)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Err(format!("node {leader}'s layout manager: {e}")),
            Err(_) => Err(format!("node {leader}'s layout manager did not answer")),
        };
        event!(
            self.trace,
            "layout change {change:?} via {leader}: {answer:?}"
        );
        answer
    }

    /// Opens a stopped node's store (for the final checks).
    pub async fn open_store(&self, id: u64) -> Result<MetaDb, String> {
        let dir = self.meta_dir(id).ok_or(format!("no node {id}"))?;
        MetaDb::open(&dir, MAP_SIZE_BYTES)
            .await
            .map_err(|e| format!("opening node {id}'s store: {e:#}"))
    }
}

/// Stops a layout manager (its migration walk stops with it).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct StopLayoutManager;

impl actix::Handler<StopLayoutManager> for LayoutManager {
    type Result = ();
    fn handle(&mut self, _msg: StopLayoutManager, ctx: &mut Self::Context) {
        actix::ActorContext::stop(ctx);
    }
}

/// Stops a scrubber (its walk stops with it).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct StopScrubber;

impl actix::Handler<StopScrubber> for Scrubber {
    type Result = ();
    fn handle(&mut self, _msg: StopScrubber, ctx: &mut Self::Context) {
        actix::ActorContext::stop(ctx);
    }
}

/// Stops a steward.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct StopSteward;

impl actix::Handler<StopSteward> for Steward {
    type Result = ();
    fn handle(&mut self, _msg: StopSteward, ctx: &mut Self::Context) {
        actix::ActorContext::stop(ctx);
    }
}

/// Copies an LMDB environment's data file as a crash leaves it: between two polls no write
/// transaction is open, so the file holds exactly the last committed state.
fn copy_store(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = to.join("meta");
    std::fs::create_dir_all(&meta)?;
    let data = from.join("meta").join("data.mdb");
    if data.exists() {
        std::fs::copy(&data, meta.join("data.mdb"))?;
    }
    Ok(())
}

impl Sim {
    /// Ends a run: heals the network, waits for the running nodes to converge, stops them all,
    /// and holds the disks to the final invariants (log matching across every node ever
    /// started; acknowledged writes and shard files on every node that was running) and the
    /// online ones.
    pub async fn finish(&self, model: &crate::client::Model) -> Result<(), String> {
        self.finish_with(model, |_, _, _| Ok(())).await
    }

    /// [`Sim::finish`] with one more check, run on the store of every node that was running
    /// (its id, its store, every node's shard files).
    pub async fn finish_with(
        &self,
        model: &crate::client::Model,
        extra: impl Fn(u64, &MetaDb, &BTreeMap<u64, ShardStore>) -> Result<(), String>,
    ) -> Result<(), String> {
        use crate::invariants::{acked_writes, log_matching, shards_agree};
        self.obs.verdict()?;
        self.net.heal();
        self.net.set_faults(crate::net::Faults::CALM);
        self.converge().await?;
        let running = self.up();
        self.stop_all().await;
        let disks: BTreeMap<u64, ShardStore> = self
            .ids()
            .into_iter()
            .filter_map(|id| Some((id, self.shard_store(id)?)))
            .collect();
        let mut logs = Vec::new();
        let retired = self.retired.borrow().clone();
        for id in self.ids().into_iter().filter(|id| !retired.contains(id)) {
            let db = self.open_store(id).await?;
            logs.push((id, log_matching::read(&db)?));
            if running.contains(&id) {
                acked_writes::check(model, id, &db)?;
                shards_agree::check(model, id, &db, &disks)?;
                extra(id, &db, &disks)?;
            }
        }
        for (i, (ia, a)) in logs.iter().enumerate() {
            for (ib, b) in &logs[i + 1..] {
                log_matching::check(*ia, a, *ib, b)?;
            }
        }
        let stats = *model.stats.borrow();
        event!(
            self.trace,
            "final: {} indexes applied, {} logs match, {} keys and {} buckets hold, {stats:?}",
            self.obs.applied_count(),
            logs.len(),
            model.keys.borrow().len(),
            model.buckets.borrow().len()
        );
        self.obs.verdict()
    }
}
