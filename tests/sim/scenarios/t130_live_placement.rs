//! Placement around dead members (issue 16; seed v0.4, "placement that avoids trouble"), on
//! nine nodes (profile 4+2; bodies below the simulation's small-object size are 1+2 copies):
//!
//! - two members crash for good and a client keeps writing through a live node: once the
//!   coordinator's liveness detector takes both for down (issue 17: after
//!   [`FAILURES_TO_DOWN`] failed requests each; only a write whose homes held both before
//!   either was known down can be refused, and each such write counts a failure against both,
//!   so at most [`FAILURES_TO_DOWN`] are), every write is acknowledged with all `k + m`
//!   shards on distinct live nodes — never at the ack floor, never with a dead home recorded —
//!   and every acknowledged object reads back whole through two different nodes;
//! - a dead member stays known down while nobody writes (no client write has to rediscover
//!   it), and once it is back a background probe finds it without any client request: new
//!   parts return to the canonical placement over the whole layout.
//!
//! Durability is checked at the end by decoding shard files off the simulated disks.

use std::collections::BTreeSet;
use std::rc::Rc;

use hamster_actors::data::PROBE_EVERY;
use hamster_actors::raft::node::AddLearner;
use hamster_protocol::liveness::FAILURES_TO_DOWN;
use hamster_protocol::placement;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::t100_erasure::{body, get_exact, put};
use crate::client::{self, Model, BUCKET};
use crate::cluster::{Sim, DATA_CONFIG};
use crate::event;
use crate::net::Faults;
use crate::s3client;
use crate::world::{check, fork};

const CI_SEEDS_DEAD: u64 = 6;
const CI_SEEDS_BACK: u64 = 4;
/// Members in the cluster: more than `k + m` = 6, so two can die and still leave room.
const NODES: u64 = 9;
/// Writes allowed for the coordinator to meet both dead members.
const DETECTION_WRITES_MAX: usize = 20;
/// Writes checked once the dead members are known.
const WRITES: usize = 30;
/// Largest body written (several stripes of the simulation's 16 KiB blocks).
const BODY_BYTES_MAX: usize = 120 * 1024;

/// Five voters and four learners, every one a data-plane home; a bucket and the clients' key.
async fn nine_nodes(sim: &Rc<Sim>) -> Result<(), String> {
    sim.form(5).await?;
    for id in 6..=NODES {
        sim.start(id, false, None).await?;
    }
    let leader = sim.wait_leader().await?;
    let addr = sim.addr(leader).ok_or("the leader stopped")?;
    for id in 6..=NODES {
        let add = AddLearner {
            id,
            node: sim.info(id).ok_or(format!("node {id} is not known"))?,
        };
        addr.send(add)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("adding learner {id}: {e}"))?;
    }
    client::create_bucket(sim).await?;
    s3client::enable(sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 5,
        ..Faults::CALM
    });
    Ok(())
}

/// A body: mostly coded (4+2), one in four small enough to be stored as copies (1+2).
fn next_body(rng: &mut ChaCha8Rng, i: usize) -> Vec<u8> {
    let small = DATA_CONFIG.small_object_bytes as usize;
    let len = if i % 4 == 3 {
        rng.gen_range(1..small)
    } else {
        rng.gen_range(small..BODY_BYTES_MAX)
    };
    body(rng, len)
}

/// Whether `coordinator`'s data plane knows every node of `nodes` to be down.
fn knows_down(sim: &Sim, coordinator: u64, nodes: &[u64]) -> Result<bool, String> {
    let state = sim
        .s3(coordinator)
        .ok_or(format!("node {coordinator} is down"))?;
    Ok(nodes.iter().all(|n| state.data.is_down(*n)))
}

/// Two distinct members that are neither `leader` nor `coordinator`, so what is tested is
/// placement, not an election or a lost coordinator.
fn victims(sim: &Sim, leader: u64, coordinator: u64, count: usize) -> Vec<u64> {
    let mut others: Vec<u64> = sim
        .ids()
        .into_iter()
        .filter(|id| *id != leader && *id != coordinator)
        .collect();
    let mut out = Vec::new();
    while out.len() < count && !others.is_empty() {
        out.push(others.remove(sim.pick(0..others.len() as u64) as usize));
    }
    out
}

async fn dead_members(sim: Rc<Sim>) -> Result<(), String> {
    nine_nodes(&sim).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t120", 0, 0));
    let model = Model::default();
    let leader = sim.wait_leader().await?;
    let coordinator = 1 + sim.pick(0..NODES);
    let dead = victims(&sim, leader, coordinator, 2);
    for d in &dead {
        sim.crash(*d).await?;
    }
    // The coordinator meets the dead members through the first writes.
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused = 0usize;
    let mut detection = 0usize;
    while !knows_down(&sim, coordinator, &dead)? {
        if detection == DETECTION_WRITES_MAX {
            return Err(format!(
                "{DETECTION_WRITES_MAX} writes through {coordinator} did not find both of {dead:?} down"
            ));
        }
        let data = next_body(&mut rng, detection);
        let key = format!("detect-{detection}");
        match put(&sim, &model, coordinator, &key, &data).await {
            Some(200) => stored.push((key, data)),
            Some(503) => refused += 1,
            other => return Err(format!("PUT {key} answered {other:?}")),
        }
        detection += 1;
    }
    // Only a write whose homes held both dead members before either was known can fail, and
    // each one brings both closer to being known down.
    if refused > FAILURES_TO_DOWN as usize {
        return Err(format!(
            "{refused} writes refused while the coordinator met two dead members"
        ));
    }
    event!(
        sim.trace,
        "{dead:?} known down after {detection} writes ({refused} refused)"
    );
    let live: BTreeSet<u64> = sim.up().into_iter().collect();
    for i in 0..WRITES {
        let data = next_body(&mut rng, i);
        let key = format!("live-{i}");
        match put(&sim, &model, coordinator, &key, &data).await {
            Some(200) => {}
            other => {
                return Err(format!(
                    "PUT {key} with {dead:?} dead and known down answered {other:?}"
                ))
            }
        }
        let (_, p) = sim.only_part(coordinator, BUCKET, &key).await?;
        event!(sim.trace, "{key}: {}+{} on {:?}", p.k, p.m, p.homes);
        let distinct: BTreeSet<u64> = p.homes.iter().copied().collect();
        let shards = usize::from(p.k) + usize::from(p.m);
        let want = if data.len() < DATA_CONFIG.small_object_bytes as usize {
            (1, 2)
        } else {
            (4, 2)
        };
        if (p.k, p.m) != want
            || p.homes.len() != shards
            || distinct.len() != shards
            || !distinct.is_subset(&live)
        {
            return Err(format!(
                "{key} is {}+{} on homes {:?}: not {}+{} on distinct live nodes {live:?}",
                p.k, p.m, p.homes, want.0, want.1
            ));
        }
        if p.shard_blake3.iter().any(String::is_empty) {
            return Err(format!(
                "{key} was acknowledged with a shard missing: {:?}",
                p.shard_blake3
            ));
        }
        stored.push((key, data));
    }
    let reader = live
        .iter()
        .copied()
        .find(|n| *n != coordinator)
        .ok_or("no second live node")?;
    for (key, data) in &stored {
        get_exact(&sim, coordinator, key, data).await?;
        get_exact(&sim, reader, key, data).await?;
    }
    sim.finish(&model).await
}

async fn member_comes_back(sim: Rc<Sim>) -> Result<(), String> {
    nine_nodes(&sim).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, "t121", 0, 0));
    let model = Model::default();
    let leader = sim.wait_leader().await?;
    let coordinator = 1 + sim.pick(0..NODES);
    let away = victims(&sim, leader, coordinator, 1)[0];
    sim.crash(away).await?;
    let mut written = 0usize;
    while !knows_down(&sim, coordinator, &[away])? {
        if written == DETECTION_WRITES_MAX {
            return Err(format!("node {away} was never found down"));
        }
        let data = next_body(&mut rng, 0);
        let key = format!("away-{written}");
        if put(&sim, &model, coordinator, &key, &data).await != Some(200) {
            return Err(format!("PUT {key} with one member down was refused"));
        }
        written += 1;
    }
    // Nobody writes for a while: the node stays known down, with no write needed to find out
    // again that it is gone.
    sim.sleep_ms(10 * PROBE_EVERY.as_millis() as u64).await;
    if !knows_down(&sim, coordinator, &[away])? {
        return Err(format!(
            "node {away} is taken for up while it is still dead"
        ));
    }
    sim.restart(away).await?;
    // Back: a probe finds it, with no client request to it.
    sim.sleep_ms(3 * PROBE_EVERY.as_millis() as u64).await;
    if knows_down(&sim, coordinator, &[away])? {
        return Err(format!(
            "node {away} is back but still known down on {coordinator}"
        ));
    }
    // New parts go to their canonical homes again, the returned node among them.
    let layout = sim
        .s3(coordinator)
        .ok_or("the coordinator stopped")?
        .data
        .layout()
        .await;
    let mut on_away = 0usize;
    for i in 0..12 {
        let data = next_body(&mut rng, 0);
        let key = format!("back-{i}");
        if put(&sim, &model, coordinator, &key, &data).await != Some(200) {
            return Err(format!("PUT {key} with every member up was refused"));
        }
        let (body_id, p) = sim.only_part(coordinator, BUCKET, &key).await?;
        let canonical = placement::place(&layout, &body_id, p.part, p.homes.len())
            .map_err(|e| e.to_string())?;
        if p.homes != canonical {
            return Err(format!(
                "{key} went to {:?}, not its canonical homes {canonical:?}",
                p.homes
            ));
        }
        on_away += usize::from(p.homes.contains(&away));
        get_exact(&sim, coordinator, &key, &data).await?;
    }
    event!(sim.trace, "{on_away} of 12 new parts placed on node {away}");
    sim.finish(&model).await
}

#[test]
fn t130_dead_members() {
    check("t130_dead_members", CI_SEEDS_DEAD, dead_members);
}

#[test]
fn t131_member_comes_back() {
    check("t131_member_comes_back", CI_SEEDS_BACK, member_comes_back);
}
