//! A cluster that lives: layout transitions run by the nodes' real `LayoutManager`s while data
//! exists, clients keep working and nodes crash. One scenario per schedule:
//!
//! - grow 3 → 6 under S3 client load: the joiners take shards, every acknowledged object reads
//!   back;
//! - a drain of a live node that crashes mid-transition: every object stays readable the whole
//!   time, and the drain completes by rebuilding the crashed node's shards from the others;
//! - a drain of a dead node rebuilds its shards; `remove` tombstones it, and the node restarted
//!   with its old id and data is kept out (not a member, no new shards, its join refused);
//! - shrink 4+2 → 3+2 (one of six drained, the trade confirmed): parts are recorded 3+2 and
//!   survive two more crashed nodes;
//! - optimize 2+1 → 4+2 after growth 3 → 6: parts are recorded 4+2 and survive two crashed
//!   nodes;
//! - the leader crashes mid-migration, or is cut off from the others mid-migration: the
//!   transition resumes on the new leader and converges, nothing acknowledged is lost;
//! - clients overwrite and delete the keys a drain is moving: each key ends as the client's
//!   last acknowledged write left it;
//! - one transition at a time: a second change while one is open is refused, naming it;
//! - writes placed by the old layout that commit after the drain's walk passed their keys are
//!   moved before the drain closes (or refused and retried once it has).
//!
//! Each ends with the usual final checks plus [`placed_shards`]: every part's shards on
//! distinct homes, and no shard file on a disk that no part lists there.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use hamster_actors::clock::Clock;
use hamster_actors::layout::{LayoutChange, LayoutConfig};
use hamster_actors::raft::node::{AddLearner, ChangeMembership, GetLayout, GetObject, Propose};
use hamster_protocol::layout::{LayoutOp, Retired};
use hamster_protocol::meta::{Command, ObjectId, ObjectVersion, PartLayout, Refusal};
use hamster_protocol::placement::Layout;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::client::{self, Model, BUCKET};
use crate::cluster::Sim;
use crate::event;
use crate::invariants::placed_shards::{self, Strictness};
use crate::net::Faults;
use crate::s3client::{self, md5_hex, send};
use crate::scenarios::t100_erasure::{body, get_exact, put};
use crate::world::{check, fork};

const CI_SEEDS_GROW: u64 = 3;
const CI_SEEDS_DRAIN_CRASH: u64 = 3;
const CI_SEEDS_DEAD_REMOVE: u64 = 3;
const CI_SEEDS_SHRINK: u64 = 3;
const CI_SEEDS_OPTIMIZE: u64 = 3;
const CI_SEEDS_LEADER_LOST: u64 = 3;
const CI_SEEDS_OVERWRITE: u64 = 3;
const CI_SEEDS_DEAF: u64 = 4;
const CI_SEEDS_ONE_AT_A_TIME: u64 = 2;
const CI_SEEDS_LATE_WRITES: u64 = 3;

/// Migration pace where a scenario does not need a slow one: simulated time is cheap.
const MIGRATE_FAST: LayoutConfig = LayoutConfig {
    bytes_per_s: 256 << 20,
    parallel: 4,
};
/// A pace slow enough that a crash or a client lands in the middle of the walk.
const MIGRATE_SLOW: LayoutConfig = LayoutConfig {
    bytes_per_s: 256 << 10,
    parallel: 2,
};
/// Longest a transition may take to finish (simulated time).
const TRANSITION_WAIT_MAX: Duration = Duration::from_secs(1200);
/// How often a wait for the layout looks again (simulated time).
const LAYOUT_POLL_MS: u64 = 250;
/// Tries of a membership change before a scenario gives up.
const MEMBERSHIP_TRIES_MAX: u32 = 20;
/// Pause between two tries (simulated).
const MEMBERSHIP_RETRY_MS: u64 = 200;
/// Longest wait for a transition to open (simulated).
const OPEN_WAIT_MAX_MS: u64 = 10_000;
/// How often a wait for a transition to open looks (simulated): often, as a fast one may be
/// over soon.
const OPEN_POLL_MS: u64 = 50;
/// Pause between two rounds of reads while a drain runs (simulated).
const READ_ROUND_PAUSE_MS: u64 = 500;
/// Time a removed node that came back is given to (wrongly) rejoin (simulated).
const REJOIN_GRACE_MS: u64 = 5_000;
/// Time a drained node that came back is given to lose its moved shards (simulated).
const RETURN_SETTLE_MS: u64 = 30_000;
/// Overwrites and deletes made while a drain runs.
const OVERWRITES: usize = 40;
/// Longest pause between two of them (simulated).
const OVERWRITE_PAUSE_MS_MAX: u64 = 150;
/// Network delay while clients overwrite keys a drain is moving.
const OVERWRITE_DELAY_MS_MAX: u64 = 30;
/// Largest object body the scenarios store (several 16 KiB stripes, so most are coded).
const BODY_BYTES_MAX: usize = 300 * 1024;
/// Objects stored before the drain of t132 (what its walk moves slowly).
const LATE_STORED: usize = 12;
/// The bucket of t132's late writes: it sorts before [`BUCKET`], so the walk passes it first.
const LATE_BUCKET: &str = "late";

/// Starts `voters` voters and `learners` more nodes as learners, every one running a layout
/// manager at `pace`, creates the bucket and S3 credentials, and waits for the layout to list
/// them all with no transition open.
async fn cluster(
    sim: &Rc<Sim>,
    voters: u64,
    learners: u64,
    pace: LayoutConfig,
) -> Result<(), String> {
    sim.run_layout_managers(pace);
    sim.form(voters).await?;
    for id in voters + 1..=voters + learners {
        join(sim, id).await?;
    }
    client::create_bucket(sim).await?;
    s3client::enable(sim).await?;
    let all: BTreeSet<u64> = (1..=voters + learners).collect();
    settled(sim, "every node in the first layout", |l| {
        l.nodes.keys().copied().collect::<BTreeSet<u64>>() == all
    })
    .await?;
    Ok(())
}

/// Starts node `id` and adds it to the group as a learner (what a join with a token ends in).
async fn join(sim: &Sim, id: u64) -> Result<(), String> {
    join_replacing(sim, id, None).await
}

/// [`join`], recording that the node comes to replace `replaces` (`serve --replaces`).
async fn join_replacing(sim: &Sim, id: u64, replaces: Option<u64>) -> Result<(), String> {
    sim.start(id, false, None).await?;
    let mut info = sim.info(id).ok_or(format!("node {id} is not known"))?;
    info.replaces = replaces;
    let mut last = String::new();
    for _ in 0..MEMBERSHIP_TRIES_MAX {
        let leader = sim.wait_leader().await?;
        let add = AddLearner {
            id,
            node: info.clone(),
        };
        match sim
            .addr(leader)
            .ok_or("the leader stopped")?
            .send(add)
            .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(e) => last = e.to_string(),
        }
        sim.sleep_ms(MEMBERSHIP_RETRY_MS).await;
    }
    Err(format!("adding learner {id}: {last}"))
}

/// Makes `voters` the voters (the others stay learners).
async fn set_voters(sim: &Sim, voters: BTreeSet<u64>) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..MEMBERSHIP_TRIES_MAX {
        let leader = sim.wait_leader().await?;
        let change = ChangeMembership {
            voters: voters.clone(),
        };
        match sim
            .addr(leader)
            .ok_or("the leader stopped")?
            .send(change)
            .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(e) => last = e.to_string(),
        }
        sim.sleep_ms(MEMBERSHIP_RETRY_MS).await;
    }
    Err(format!("making {voters:?} the voters: {last}"))
}

/// Waits (bounded) until the leader's layout has no transition open and `done` holds of it.
async fn settled(sim: &Sim, what: &str, done: impl Fn(&Layout) -> bool) -> Result<Layout, String> {
    let mut waited = 0;
    let mut last = None;
    loop {
        if let Some(leader) = sim.leader() {
            if let Some(l) = sim.layout(leader).await {
                if l.transition.is_none() && done(&l) {
                    event!(
                        sim.trace,
                        "layout settled ({what}): version {}, nodes {:?}, retired {:?}",
                        l.version,
                        l.nodes.keys().collect::<Vec<_>>(),
                        l.retired
                    );
                    return Ok(l);
                }
                last = Some(l);
            }
        }
        if waited >= TRANSITION_WAIT_MAX.as_millis() as u64 {
            return Err(format!(
                "the layout did not settle within {} s ({what}); last seen {last:?}",
                TRANSITION_WAIT_MAX.as_secs()
            ));
        }
        sim.sleep_ms(LAYOUT_POLL_MS).await;
        waited += LAYOUT_POLL_MS;
    }
}

/// Waits (bounded) until the leader's layout has a transition open.
async fn opened(sim: &Sim) -> Result<Layout, String> {
    for _ in 0..OPEN_WAIT_MAX_MS / OPEN_POLL_MS {
        if let Some(leader) = sim.leader() {
            if let Some(l) = sim.layout(leader).await {
                if l.transition.is_some() {
                    return Ok(l);
                }
            }
        }
        sim.sleep_ms(OPEN_POLL_MS).await;
    }
    Err("no layout transition opened".into())
}

/// The running nodes but `shunned` ones (a removed node that came back serves nothing).
fn fronts(sim: &Sim, shunned: &[u64]) -> Vec<u64> {
    sim.up()
        .into_iter()
        .filter(|id| !shunned.contains(id))
        .collect()
}

/// Stores `n` seeded objects of up to [`BODY_BYTES_MAX`] bytes through random running nodes
/// (not `shunned` ones); every one must be acknowledged.
async fn store(
    sim: &Sim,
    model: &Model,
    rng: &mut ChaCha8Rng,
    prefix: &str,
    n: usize,
    shunned: &[u64],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut stored = Vec::new();
    for i in 0..n {
        let len = rng.gen_range(0..BODY_BYTES_MAX);
        let data = body(rng, len);
        let key = format!("{prefix}-{i}");
        let up = fronts(sim, shunned);
        let via = up[rng.gen_range(0..up.len())];
        if put(sim, model, via, &key, &data).await != Some(200) {
            return Err(format!("PUT {key} via {via} was not acknowledged"));
        }
        stored.push((key, data));
    }
    Ok(stored)
}

/// Reads every stored object back, exactly, through running nodes (not `shunned` ones) picked
/// in turn.
async fn read_all(sim: &Sim, stored: &[(String, Vec<u8>)], shunned: &[u64]) -> Result<(), String> {
    let up = fronts(sim, shunned);
    for (i, (key, data)) in stored.iter().enumerate() {
        get_exact(sim, up[i % up.len()], key, data).await?;
    }
    Ok(())
}

/// The parts of `key`'s current version as the leader has them.
async fn parts(sim: &Sim, key: &str) -> Result<Vec<PartLayout>, String> {
    let leader = sim.wait_leader().await?;
    let list = sim
        .addr(leader)
        .ok_or("the leader stopped")?
        .send(GetObject {
            bucket: BUCKET.into(),
            key: key.into(),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(list
        .as_ref()
        .and_then(|l| l.current())
        .map(|v| v.parts.clone())
        .unwrap_or_default())
}

/// `Err` if a stored object has a part with a shard on `node`.
async fn none_on(sim: &Sim, stored: &[(String, Vec<u8>)], node: u64) -> Result<(), String> {
    for (key, _) in stored {
        for p in parts(sim, key).await? {
            if p.homes.contains(&node) {
                return Err(format!(
                    "{key} part {} still has a shard on node {node}: homes {:?}",
                    p.part, p.homes
                ));
            }
        }
    }
    Ok(())
}

/// `Err` unless every part of the stored objects is recorded at `k+m` for its size (coded
/// parts at `coded`, small ones at `1+m`).
async fn profiles_are(
    sim: &Sim,
    stored: &[(String, Vec<u8>)],
    coded: (u8, u8),
) -> Result<(), String> {
    for (key, data) in stored {
        for p in parts(sim, key).await? {
            let want = if (data.len() as u64) < crate::cluster::DATA_CONFIG.small_object_bytes {
                (1, coded.1)
            } else {
                coded
            };
            if (p.k, p.m) != want || p.homes.len() != usize::from(want.0 + want.1) {
                return Err(format!(
                    "{key} ({} bytes) part {} is recorded {}+{} on {:?}, not {}+{}",
                    data.len(),
                    p.part,
                    p.k,
                    p.m,
                    p.homes,
                    want.0,
                    want.1
                ));
            }
        }
    }
    Ok(())
}

/// A running node that is neither the leader nor in `not`, picked by the scenario's stream.
async fn bystander(sim: &Sim, not: &[u64]) -> Result<u64, String> {
    let leader = sim.wait_leader().await?;
    let candidates: Vec<u64> = sim
        .up()
        .into_iter()
        .filter(|id| *id != leader && !not.contains(id))
        .collect();
    if candidates.is_empty() {
        return Err("no running node other than the leader".into());
    }
    Ok(candidates[sim.pick(0..candidates.len() as u64) as usize])
}

/// Ends the run: the final checks, with [`placed_shards`] on every running node's store
/// (disks of `skip` left out).
async fn finish(
    sim: &Sim,
    model: &Model,
    skip: BTreeSet<u64>,
    strictness: Strictness,
) -> Result<(), String> {
    sim.finish_with(model, |id, db, disks| {
        placed_shards::check(id, db, disks, &skip, strictness)
    })
    .await
}

async fn grow_under_load(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 3, 0, MIGRATE_FAST).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 5,
        ..Faults::CALM
    });
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t120", 0, 0));
    let model = Rc::new(Model::default());
    let stored = store(&sim, &model, &mut rng, "before", 10, &[]).await?;
    let load = actix_rt::spawn(s3client::workload(sim.clone(), model.clone(), 2, 40, 200));
    for id in 4..=6 {
        sim.sleep_ms(sim.pick(0..1500)).await;
        join(&sim, id).await?;
    }
    let six: BTreeSet<u64> = (1..=6).collect();
    settled(&sim, "grown to six nodes", |l| {
        l.nodes.keys().copied().collect::<BTreeSet<u64>>() == six
    })
    .await?;
    let _ = load.await;
    settled(&sim, "nothing left to move", |_| true).await?;
    read_all(&sim, &stored, &[]).await?;
    // Grow keeps the profile the parts were written at (2+1); the joiners take their share.
    profiles_are(&sim, &stored, (2, 1)).await?;
    for id in 4..=6 {
        let held = sim
            .shard_store(id)
            .map_or(0, |s| s.list().map_or(0, |l| l.len()));
        if held == 0 {
            return Err(format!(
                "node {id} joined and holds no shard after the grow"
            ));
        }
        event!(sim.trace, "node {id} holds {held} shards after the grow");
    }
    finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await
}

/// A live node is drained and crashes mid-transition; `comes_back`: it is restarted once the
/// drain is over.
async fn drain_with_crash(sim: Rc<Sim>, comes_back: bool) -> Result<(), String> {
    cluster(&sim, 5, 2, MIGRATE_SLOW).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t121", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", 12, &[]).await?;
    let victim = bystander(&sim, &[]).await?;
    sim.change_layout(LayoutChange::Drain {
        node: victim,
        shrink: false,
        force: false,
    })
    .await?;
    opened(&sim).await?;
    sim.sleep_ms(sim.pick(10..1500)).await;
    sim.crash(victim).await?;
    // Everything stays readable while the drain goes on without the node it empties.
    let mut waited = 0;
    loop {
        read_all(&sim, &stored, &[]).await?;
        let leader = sim.wait_leader().await?;
        match sim.layout(leader).await {
            Some(l) if l.transition.is_none() => break,
            _ if waited > TRANSITION_WAIT_MAX.as_millis() as u64 => {
                return Err("the drain did not finish".into())
            }
            _ => {
                sim.sleep_ms(READ_ROUND_PAUSE_MS).await;
                waited += READ_ROUND_PAUSE_MS;
            }
        }
    }
    let layout = settled(&sim, "the crashed node drained", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    if layout.nodes.contains_key(&victim) {
        return Err(format!("node {victim} is drained but still in the layout"));
    }
    none_on(&sim, &stored, victim).await?;
    read_all(&sim, &stored, &[]).await?;
    if comes_back {
        // Back up, the drained node must lose the shards that moved away while it was down.
        sim.restart(victim).await?;
        sim.sleep_ms(RETURN_SETTLE_MS).await;
        return finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await;
    }
    // The crashed node's disk keeps what it had (nobody could delete there); it is down.
    finish(
        &sim,
        &model,
        BTreeSet::from([victim]),
        Strictness::Everything,
    )
    .await
}

async fn dead_drain_remove(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 2, MIGRATE_FAST).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t122", 0, 0));
    let model = Model::default();
    let mut stored = store(&sim, &model, &mut rng, "obj", 10, &[]).await?;
    let victim = bystander(&sim, &[]).await?;
    sim.crash(victim).await?;
    sim.sleep_ms(sim.pick(0..3000)).await;
    // Not drained yet: remove is refused.
    if sim
        .change_layout(LayoutChange::Remove { node: victim })
        .await
        .is_ok()
    {
        return Err(format!(
            "node {victim} was removed while it still held shards"
        ));
    }
    sim.change_layout(LayoutChange::Drain {
        node: victim,
        shrink: false,
        force: false,
    })
    .await?;
    settled(&sim, "the dead node drained", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    none_on(&sim, &stored, victim).await?;
    read_all(&sim, &stored, &[]).await?;
    sim.change_layout(LayoutChange::Remove { node: victim })
        .await?;
    sim.wait_until("the removed node out of the membership", |views| {
        views.values().all(|v| {
            v.configs.iter().all(|c| !c.contains(&victim)) && !v.learners.contains(&victim)
        })
    })
    .await?;
    let leader = sim.wait_leader().await?;
    let layout = sim.layout(leader).await.ok_or("the leader has no layout")?;
    if !matches!(
        layout.retired.get(&victim),
        Some(Retired::Tombstoned { .. })
    ) {
        return Err(format!(
            "node {victim} was removed but is not tombstoned: {:?}",
            layout.retired
        ));
    }
    // A join for the removed id is refused by the replicated state.
    let secret_sha256 = format!("{:064x}", 0x7e57_0000_u64 + victim);
    let now_ms = sim.clock.now_ms();
    sim.propose_on_leader(Command::AddJoinToken {
        secret_sha256: secret_sha256.clone(),
        expires_ms: now_ms + 3_600_000,
        created_ms: now_ms,
    })
    .await?;
    let consume = Command::ConsumeJoinToken {
        secret_sha256,
        now_ms,
        node_id: victim,
        joined: sim.info(victim),
    };
    let applied = sim.propose_on_leader(consume).await?;
    if applied.refused != Some(Refusal::NodeTombstoned) {
        return Err(format!(
            "a join of the removed node {victim} answered {:?}, not NodeTombstoned",
            applied.refused
        ));
    }
    // The removed node comes back with its old id and data: it must stay out.
    let before = sim
        .shard_store(victim)
        .and_then(|s| s.list().ok())
        .unwrap_or_default();
    sim.restart(victim).await?;
    sim.sleep_ms(REJOIN_GRACE_MS).await;
    stored.extend(store(&sim, &model, &mut rng, "after", 6, &[victim]).await?);
    sim.sleep_ms(REJOIN_GRACE_MS).await;
    read_all(&sim, &stored, &[victim]).await?;
    none_on(&sim, &stored, victim).await?;
    let after = sim
        .shard_store(victim)
        .and_then(|s| s.list().ok())
        .unwrap_or_default();
    let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
    if !new.is_empty() {
        return Err(format!(
            "the removed node {victim} received {} shards after coming back",
            new.len()
        ));
    }
    let leader = sim.wait_leader().await?;
    if leader == victim {
        return Err(format!("the removed node {victim} leads"));
    }
    let view = sim.obs.views().get(&leader).cloned().ok_or("no view")?;
    if view.configs.iter().any(|c| c.contains(&victim)) || view.learners.contains(&victim) {
        return Err(format!(
            "the removed node {victim} is a member again: {view:?}"
        ));
    }
    // It never catches up (nobody replicates to it); an operator wipes it.
    sim.stop(victim).await?;
    sim.retire(victim);
    finish(
        &sim,
        &model,
        BTreeSet::from([victim]),
        Strictness::Everything,
    )
    .await
}

async fn shrink(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 1, MIGRATE_FAST).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t123", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", 10, &[]).await?;
    profiles_are(&sim, &stored, (4, 2)).await?;
    let victim = bystander(&sim, &[]).await?;
    let drain = |shrink| LayoutChange::Drain {
        node: victim,
        shrink,
        force: false,
    };
    match sim.change_layout(drain(false)).await {
        Err(e) if e.contains("shrink") => {}
        other => {
            return Err(format!(
                "an unconfirmed shrink answered {other:?}, not a refusal naming the shrink"
            ))
        }
    }
    sim.change_layout(drain(true)).await?;
    settled(&sim, "shrunk to five nodes", |l| {
        l.nodes.len() == 5 && matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    profiles_are(&sim, &stored, (3, 2)).await?;
    none_on(&sim, &stored, victim).await?;
    read_all(&sim, &stored, &[]).await?;
    // Two more nodes lost: 3+2 parts still decode.
    for _ in 0..2 {
        let gone = bystander(&sim, &[victim]).await?;
        sim.crash(gone).await?;
    }
    read_all(&sim, &stored, &[]).await?;
    finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await
}

async fn optimize(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 3, 0, MIGRATE_FAST).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t124", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", 10, &[]).await?;
    profiles_are(&sim, &stored, (2, 1)).await?;
    for id in 4..=6 {
        join(&sim, id).await?;
    }
    set_voters(&sim, (1..=5).collect()).await?;
    let six: BTreeSet<u64> = (1..=6).collect();
    settled(&sim, "grown to six nodes", |l| {
        l.nodes.keys().copied().collect::<BTreeSet<u64>>() == six
    })
    .await?;
    // Growth alone keeps the profile; optimize re-encodes.
    profiles_are(&sim, &stored, (2, 1)).await?;
    sim.change_layout(LayoutChange::Optimize).await?;
    opened(&sim).await?;
    settled(&sim, "optimized", |_| true).await?;
    profiles_are(&sim, &stored, (4, 2)).await?;
    read_all(&sim, &stored, &[]).await?;
    for _ in 0..2 {
        let gone = bystander(&sim, &[]).await?;
        sim.crash(gone).await?;
    }
    read_all(&sim, &stored, &[]).await?;
    finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await
}

/// The leader is lost mid-migration: crashed (`cut` false) or cut off from every other node
/// while it keeps running (`cut` true). Clients write meanwhile.
async fn leader_lost(sim: Rc<Sim>, cut: bool) -> Result<(), String> {
    cluster(&sim, 5, 2, MIGRATE_SLOW).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t125", u64::from(cut), 0));
    let model = Rc::new(Model::default());
    let stored = store(&sim, &model, &mut rng, "obj", 12, &[]).await?;
    let victim = bystander(&sim, &[]).await?;
    sim.change_layout(LayoutChange::Drain {
        node: victim,
        shrink: false,
        force: false,
    })
    .await?;
    let load = actix_rt::spawn(s3client::workload(sim.clone(), model.clone(), 2, 25, 300));
    sim.sleep_ms(sim.pick(200..3000)).await;
    let leader = sim.wait_leader().await?;
    if cut {
        let rest: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader).collect();
        sim.net.partition(&[vec![leader], rest]);
    } else {
        sim.crash(leader).await?;
    }
    sim.sleep_ms(sim.pick(2000..6000)).await;
    if cut {
        sim.net.heal();
    } else {
        sim.restart(leader).await?;
    }
    let _ = load.await;
    settled(&sim, "the drain finished under a later leader", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    sim.converge().await?;
    none_on(&sim, &stored, victim).await?;
    read_all(&sim, &stored, &[]).await?;
    // Writes cut short by the crash leave whole bodies for the start-up sweep.
    finish(
        &sim,
        &model,
        BTreeSet::new(),
        Strictness::ShardsOfLiveBodies,
    )
    .await
}

/// A shrink re-encodes parts while the leader goes deaf to Raft: its appends still reach the
/// others but no answer comes back, so nothing it proposes commits from its point of view
/// (shard traffic still flows, so its re-encodes get as far as proposing); then it is
/// cut off altogether, the others elect a leader among themselves (which commits what the deaf
/// one had appended), and the network heals. The deaf leader's proposals fail although some
/// of them committed: what it re-encoded must not be thrown away on that failure.
/// Replace on a tight cluster: six nodes under 4+2, so every node holds a shard of every coded
/// part. One dies; a fresh node joins to replace it. The replace is a pure migration onto the
/// newcomer (rebuilt from the survivors), parts keep 4+2, and the dead node ends drained and is
/// then removed.
async fn replace_tight(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 1, MIGRATE_FAST).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t129", 0, 0));
    let model = Model::default();
    let mut stored = store(&sim, &model, &mut rng, "obj", 10, &[]).await?;
    let victim = bystander(&sim, &[]).await?;
    sim.crash(victim).await?;
    sim.sleep_ms(sim.pick(0..3000)).await;
    // The newcomer joins naming the node it replaces, as `serve --replaces` records it.
    let newcomer = 7;
    join_replacing(&sim, newcomer, Some(victim)).await?;
    let layout = settled(&sim, "the dead node replaced", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    let want: BTreeSet<u64> = (1..=6)
        .filter(|id| *id != victim)
        .chain([newcomer])
        .collect();
    if layout.nodes.keys().copied().collect::<BTreeSet<u64>>() != want {
        return Err(format!(
            "after the replace the layout lists {:?}",
            layout.nodes.keys()
        ));
    }
    if !matches!(layout.last.as_ref().map(|t| &t.op), Some(LayoutOp::Replace { old, new }) if *old == victim && *new == newcomer)
    {
        return Err(format!(
            "the last transition was {:?}, not the replace",
            layout.last.map(|t| t.op)
        ));
    }
    profiles_are(&sim, &stored, (4, 2)).await?;
    none_on(&sim, &stored, victim).await?;
    read_all(&sim, &stored, &[victim]).await?;
    let held = sim
        .shard_store(newcomer)
        .and_then(|s| s.list().ok())
        .map_or(0, |l| l.len());
    if held == 0 {
        return Err("the newcomer holds no shards after the replace".into());
    }
    sim.change_layout(LayoutChange::Remove { node: victim })
        .await?;
    stored.extend(store(&sim, &model, &mut rng, "after", 4, &[victim]).await?);
    read_all(&sim, &stored, &[victim]).await?;
    sim.retire(victim);
    finish(
        &sim,
        &model,
        BTreeSet::from([victim]),
        Strictness::Everything,
    )
    .await
}

async fn reencode_leader_deaf(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 1, MIGRATE_SLOW).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t128", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", 12, &[]).await?;
    let victim = bystander(&sim, &[]).await?;
    sim.change_layout(LayoutChange::Drain {
        node: victim,
        shrink: true,
        force: false,
    })
    .await?;
    sim.sleep_ms(sim.pick(200..2000)).await;
    let leader = sim.wait_leader().await?;
    let rest: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader).collect();
    for id in &rest {
        sim.net.cut_raft_one_way(*id, leader);
    }
    sim.sleep_ms(sim.pick(500..2000)).await;
    sim.net.partition(&[vec![leader], rest]);
    sim.sleep_ms(sim.pick(3000..6000)).await;
    sim.net.heal();
    settled(&sim, "the shrink finished", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    sim.converge().await?;
    read_all(&sim, &stored, &[]).await?;
    profiles_are(&sim, &stored, (3, 2)).await?;
    // A re-encode whose commit really failed leaves a whole body for the start-up sweep.
    finish(
        &sim,
        &model,
        BTreeSet::new(),
        Strictness::ShardsOfLiveBodies,
    )
    .await
}

async fn overwrite_during_drain(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 2, MIGRATE_SLOW).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t126", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", 24, &[]).await?;
    // Slow links widen the window between a move's copy and its commit.
    sim.net.set_faults(Faults {
        delay_ms_max: OVERWRITE_DELAY_MS_MAX,
        ..Faults::CALM
    });
    let mut want: BTreeMap<String, Option<Vec<u8>>> = stored
        .iter()
        .map(|(k, d)| (k.clone(), Some(d.clone())))
        .collect();
    let victim = bystander(&sim, &[]).await?;
    sim.change_layout(LayoutChange::Drain {
        node: victim,
        shrink: false,
        force: false,
    })
    .await?;
    for _ in 0..OVERWRITES {
        sim.sleep_ms(rng.gen_range(0..OVERWRITE_PAUSE_MS_MAX)).await;
        let key = stored[rng.gen_range(0..stored.len())].0.clone();
        let up = sim.up();
        let via = up[rng.gen_range(0..up.len())];
        if rng.gen_range(0..3) == 0 {
            let a = send(
                &sim,
                via,
                "DELETE",
                &format!("/{BUCKET}/{key}"),
                "",
                Vec::new(),
            )
            .await;
            match a.map(|a| a.status) {
                Some(204) => {
                    model.settle_key(&key, None, true);
                    want.insert(key, None);
                }
                other => return Err(format!("DELETE {key} answered {other:?}")),
            }
        } else {
            let len = rng.gen_range(0..BODY_BYTES_MAX);
            let data = body(&mut rng, len);
            match put(&sim, &model, via, &key, &data).await {
                Some(200) => {
                    want.insert(key, Some(data));
                }
                other => return Err(format!("PUT {key} answered {other:?}")),
            }
        }
    }
    settled(&sim, "the drain finished", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    let up = sim.up();
    for (i, (key, data)) in want.iter().enumerate() {
        let via = up[i % up.len()];
        match data {
            Some(d) => get_exact(&sim, via, key, d).await?,
            None => {
                let a = send(
                    &sim,
                    via,
                    "GET",
                    &format!("/{BUCKET}/{key}"),
                    "",
                    Vec::new(),
                )
                .await;
                if a.as_ref().map(|a| a.status) != Some(404) {
                    return Err(format!(
                        "{key} was deleted but GET answered {:?}",
                        a.map(|a| a.status)
                    ));
                }
            }
        }
    }
    let live: Vec<(String, Vec<u8>)> = want
        .into_iter()
        .filter_map(|(k, d)| Some((k, d?)))
        .collect();
    none_on(&sim, &live, victim).await?;
    finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await
}

/// Writes placed by the layout before a drain that commit after the drain's walk has passed
/// their keys: one commits while the drain is open (it is listed for a revisit and moved before
/// the drain may close), one after the drain has closed (refused, so the client retries onto
/// the new layout). Neither leaves a shard on the drained node.
async fn late_writes(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 2, MIGRATE_SLOW).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t132", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", LATE_STORED, &[]).await?;
    let via = bystander(&sim, &[]).await?;
    if send(&sim, via, "PUT", &format!("/{LATE_BUCKET}"), "", Vec::new())
        .await
        .map(|a| a.status)
        != Some(200)
    {
        return Err(format!("creating bucket {LATE_BUCKET} failed"));
    }
    let state = sim.s3(via).ok_or("the writing node stopped")?;
    // Two writes placed, and their shards stored, by the layout before the drain.
    let mut placed = Vec::new();
    for key in ["open", "closed"] {
        let len = rng.gen_range(BODY_BYTES_MAX / 2..BODY_BYTES_MAX);
        let data = body(&mut rng, len);
        let id = state.ids.object_id();
        let mut w = state
            .data
            .begin_part(id, 1, Some(len as u64))
            .await
            .map_err(|e| format!("placing {key}: {e}"))?;
        w.write(&data)
            .await
            .map_err(|e| format!("writing {key}: {e}"))?;
        let part = w
            .finish()
            .await
            .map_err(|e| format!("storing {key}: {e}"))?;
        placed.push((key, data, id, part));
    }
    let leader = sim.wait_leader().await?;
    let victim = placed[0]
        .3
        .homes
        .iter()
        .copied()
        .find(|h| placed[1].3.homes.contains(h) && *h != leader && *h != via)
        .ok_or("the two writes share no home to drain")?;
    sim.change_layout(LayoutChange::Drain {
        node: victim,
        shrink: false,
        force: false,
    })
    .await?;
    // The walk goes bucket by bucket: once it has checkpointed past the late bucket, the
    // first write commits behind it.
    let past = |l: &Layout| {
        l.transition.as_ref().is_some_and(|t| {
            t.progress.pass > 1
                || t.progress.cursor.as_ref().is_some_and(|c| {
                    c.bucket.as_str() > LATE_BUCKET || c.key == char::MAX.to_string()
                })
        })
    };
    let mut waited = 0;
    loop {
        let l = leader_layout(&sim).await?;
        if past(&l) {
            break;
        }
        if l.transition.is_none() || waited > OPEN_WAIT_MAX_MS {
            return Err("the drain's walk never showed it had passed the late bucket".into());
        }
        sim.sleep_ms(OPEN_POLL_MS).await;
        waited += OPEN_POLL_MS;
    }
    let commit =
        |(key, data, id, part): &(&str, Vec<u8>, ObjectId, PartLayout)| Command::PutObject {
            bucket: LATE_BUCKET.into(),
            key: (*key).into(),
            version: ObjectVersion {
                version_id: "null".into(),
                object_id: *id,
                size: data.len() as u64,
                etag: md5_hex(&[data]),
                last_modified_ms: sim.clock.now_ms(),
                content_type: String::new(),
                headers: BTreeMap::new(),
                user_meta: BTreeMap::new(),
                checksums: BTreeMap::new(),
                parts: vec![part.clone()],
            },
        };
    let answer = propose_via(&sim, via, commit(&placed[0])).await?;
    if answer.is_some() {
        return Err(format!(
            "the write committed during the drain was refused: {answer:?}"
        ));
    }
    event!(
        sim.trace,
        "a write placed before the drain committed behind its walk"
    );
    settled(&sim, "the drain finished", |l| {
        matches!(l.retired.get(&victim), Some(Retired::Drained { .. }))
    })
    .await?;
    // After the drain, the second write's commit is refused; its shards are the writer's to
    // reclaim, and its retry is placed by the new layout.
    let answer = propose_via(&sim, via, commit(&placed[1])).await?;
    if answer != Some(Refusal::PlacedOffLayout) {
        return Err(format!(
            "a write placed by the layout before the drain committed after it closed: {answer:?}"
        ));
    }
    state.data.discard(vec![placed[1].2]);
    let retry = send(
        &sim,
        via,
        "PUT",
        &format!("/{LATE_BUCKET}/{}", placed[1].0),
        "",
        placed[1].1.clone(),
    )
    .await;
    if retry.as_ref().map(|a| a.status) != Some(200) {
        return Err(format!(
            "the retried write answered {:?}",
            retry.map(|a| a.status)
        ));
    }
    for (key, data, _, _) in &placed {
        let a = send(
            &sim,
            via,
            "GET",
            &format!("/{LATE_BUCKET}/{key}"),
            "",
            Vec::new(),
        )
        .await
        .ok_or(format!("GET {key}: no answer"))?;
        if a.status != 200 || a.body != *data {
            return Err(format!(
                "GET {LATE_BUCKET}/{key} answered {} with other bytes",
                a.status
            ));
        }
        let list = leader_addr(&sim)
            .await?
            .send(GetObject {
                bucket: LATE_BUCKET.into(),
                key: (*key).into(),
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let homes: Vec<u64> = list
            .and_then(|l| l.current().map(|v| v.parts[0].homes.clone()))
            .unwrap_or_default();
        if homes.contains(&victim) {
            return Err(format!(
                "{key} still has a shard on drained node {victim}: {homes:?}"
            ));
        }
    }
    read_all(&sim, &stored, &[]).await?;
    // The refused write's shards are reclaimed in the background.
    sim.sleep_ms(RETURN_SETTLE_MS).await;
    finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await
}

/// The leader's stored layout.
async fn leader_layout(sim: &Sim) -> Result<Layout, String> {
    leader_addr(sim)
        .await?
        .send(GetLayout)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no layout stored".to_string())
}

async fn leader_addr(sim: &Sim) -> Result<actix::Addr<hamster_actors::raft::RaftNode>, String> {
    let leader = sim.wait_leader().await?;
    sim.addr(leader)
        .ok_or_else(|| "the leader stopped".to_string())
}

/// Proposes `cmd` through node `via`; answers its refusal, if any.
async fn propose_via(sim: &Sim, via: u64, cmd: Command) -> Result<Option<Refusal>, String> {
    let applied = sim
        .addr(via)
        .ok_or(format!("node {via} stopped"))?
        .send(Propose(cmd))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(applied.refused)
}

async fn one_at_a_time(sim: Rc<Sim>) -> Result<(), String> {
    cluster(&sim, 5, 2, MIGRATE_SLOW).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t127", 0, 0));
    let model = Model::default();
    let stored = store(&sim, &model, &mut rng, "obj", 10, &[]).await?;
    let first = bystander(&sim, &[]).await?;
    let second = bystander(&sim, &[first]).await?;
    sim.change_layout(LayoutChange::Drain {
        node: first,
        shrink: false,
        force: false,
    })
    .await?;
    let open = opened(&sim).await?;
    let naming = format!("drain {first:016x}");
    for change in [
        LayoutChange::Drain {
            node: second,
            shrink: false,
            force: false,
        },
        LayoutChange::Optimize,
    ] {
        match sim.change_layout(change.clone()).await {
            Err(e) if e.contains(&naming) => {}
            other => {
                return Err(format!(
                    "{change:?} while a drain of {first} is open answered {other:?}"
                ))
            }
        }
    }
    // The guard is in the replicated state: a transition proposed past the manager is refused.
    let nodes = open.nodes.clone();
    let applied = sim
        .propose_on_leader(Command::BeginTransition {
            version: open.version + 1,
            nodes,
            op: LayoutOp::Optimize,
            asked_by: "simulation".into(),
            now_ms: sim.clock.now_ms(),
        })
        .await?;
    if applied.refused != Some(Refusal::TransitionOpen) {
        return Err(format!(
            "a second transition proposed directly answered {:?}",
            applied.refused
        ));
    }
    settled(&sim, "the drain finished", |l| {
        matches!(l.retired.get(&first), Some(Retired::Drained { .. }))
    })
    .await?;
    // Once it is done the next change is taken.
    sim.change_layout(LayoutChange::Undrain { node: first })
        .await?;
    settled(&sim, "the drained node back", |l| {
        l.nodes.contains_key(&first)
    })
    .await?;
    read_all(&sim, &stored, &[]).await?;
    finish(&sim, &model, BTreeSet::new(), Strictness::Everything).await
}

#[test]
fn t120_grow_under_load() {
    check("t120_grow_under_load", CI_SEEDS_GROW, grow_under_load);
}

#[test]
fn t121_drain_with_crash() {
    check("t121_drain_with_crash", CI_SEEDS_DRAIN_CRASH, |sim| {
        drain_with_crash(sim, false)
    });
}

/// A drained node that was down when its drain ended comes back: the shards that moved away
/// from it (kept in the stale list) are deleted there once it answers, so no orphan
/// shard stays on it.
#[test]
fn t121_drained_node_returns() {
    check("t121_drained_node_returns", CI_SEEDS_DRAIN_CRASH, |sim| {
        drain_with_crash(sim, true)
    });
}

#[test]
fn t122_dead_drain_remove() {
    check(
        "t122_dead_drain_remove",
        CI_SEEDS_DEAD_REMOVE,
        dead_drain_remove,
    );
}

#[test]
fn t123_shrink() {
    check("t123_shrink", CI_SEEDS_SHRINK, shrink);
}

#[test]
fn t124_optimize() {
    check("t124_optimize", CI_SEEDS_OPTIMIZE, optimize);
}

#[test]
fn t125_leader_crash() {
    check("t125_leader_crash", CI_SEEDS_LEADER_LOST, |sim| {
        leader_lost(sim, false)
    });
}

#[test]
fn t125_leader_cut_off() {
    check("t125_leader_cut_off", CI_SEEDS_LEADER_LOST, |sim| {
        leader_lost(sim, true)
    });
}

#[test]
fn t126_overwrite_during_drain() {
    check(
        "t126_overwrite_during_drain",
        CI_SEEDS_OVERWRITE,
        overwrite_during_drain,
    );
}

#[test]
fn t127_one_at_a_time() {
    check("t127_one_at_a_time", CI_SEEDS_ONE_AT_A_TIME, one_at_a_time);
}

#[test]
fn t128_reencode_leader_deaf() {
    check(
        "t128_reencode_leader_deaf",
        CI_SEEDS_DEAF,
        reencode_leader_deaf,
    );
}

#[test]
fn t129_replace_tight() {
    check("t129_replace_tight", CI_SEEDS_DEAD_REMOVE, replace_tight);
}

#[test]
fn t132_late_writes() {
    check("t132_late_writes", CI_SEEDS_LATE_WRITES, late_writes);
}
