//! The scrubber heals by itself (issue 17; seed v0.4, "a continuous background scrubber"), on
//! six nodes (profile 4+2), every node running a scrubber that walks only where it leads:
//!
//! - two rotted shards of one part are rebuilt by the scrubber's next pass with no client read
//!   and no repair: both verify again on their homes, the replicated state's last pass counts
//!   exactly those two rebuilt shards and every part full;
//! - a write acknowledged at the floor (one home down: 5 of 6 shards) shows as degraded in a
//!   pass while the home is down, and is back at full redundancy within two passes of the home
//!   returning, every shard of it whole on its home;
//! - a leader crashing in the middle of a pass does not restart it: the new leader's scrubber
//!   goes on from the replicated cursor, and the same pass completes;
//! - `hamster repair` racing a pass the operator asked for (`scrub --now`) rebuilds nothing
//!   twice: repair's report and the scrubber's replicated count of healed shards add up to
//!   exactly the shards rotted.
//!
//! Durability is checked at the end off the simulated disks, and in the first two scenarios
//! every shard of every part must be whole there ([`full_redundancy`]).

use std::rc::Rc;
use std::time::Duration;

use hamster_actors::raft::node::GetScrub;
use hamster_actors::repair;
use hamster_actors::scrub::ScrubConfig;
use hamster_protocol::meta::{BucketRecord, Command, ObjectId, PartLayout, Refusal};
use hamster_protocol::scrub::{Cursor, ScrubState, ScrubSwitch, Stage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::t100_erasure::{body, put, six_nodes};
use crate::client::{Model, BUCKET};
use crate::cluster::Sim;
use crate::event;
use crate::invariants::full_redundancy;
use crate::s3client::send;
use crate::world::{check, fork};

const CI_SEEDS_ROT: u64 = 4;
const CI_SEEDS_FLOOR: u64 = 4;
const CI_SEEDS_LEADER: u64 = 4;
const CI_SEEDS_RACE: u64 = 6;
/// Passes begin this long apart in the scenarios that wait for passes by themselves.
const SCRUB_EVERY: Duration = Duration::from_secs(20);
/// Passes begin this long apart in the slow scenarios: longer than any of them runs.
const SLOW_EVERY: Duration = Duration::from_secs(3600);
/// Longest a scenario waits for the scrubber (simulated time).
const SCRUB_WAIT_MAX: Duration = Duration::from_secs(300);
/// How often the waits look at the replicated state (simulated time).
const SCRUB_POLL: Duration = Duration::from_millis(100);
/// A slow pace, so a pass over the leader-crash scenario's buckets takes tens of seconds over
/// several steps (a 100 KiB part is two 4+2 stripes of 16 KiB blocks: 192 KiB of shards,
/// about 3 s at this pace with no layout to spread it over).
const SLOW_BYTES_PER_S: u64 = 64 * 1024;
/// Coded bodies (4+2: above the simulation's small-object size), several stripes each.
const BODY_BYTES: std::ops::Range<usize> = 64 * 1024..200 * 1024;
/// Objects in the race scenario: many small parts in the scrubber's one step, so it asks
/// whether it is held off often (before each part) and a repair (which takes well under a
/// second here) lands among those looks.
const RACE_OBJECTS: usize = 24;
/// One stripe each: a fraction of a second of the slow pace per part.
const RACE_BODY_BYTES: std::ops::Range<usize> = 16 * 1024..40 * 1024;
/// Longest the race scenario's repair starts after the operator asked for a pass: about as
/// long as that pass takes at [`SLOW_BYTES_PER_S`].
const RACE_DELAY_MS_MAX: u64 = 15_000;
/// Buckets besides the shared one in the leader-crash scenario: two steps each (objects,
/// then uploads), so there is a pass to be in the middle of.
const EXTRA_BUCKETS: [&str; 3] = ["scrub-a", "scrub-b", "scrub-c"];

/// A scrubber paced as production's, passes [`SCRUB_EVERY`] apart, never yielding to clients
/// (the scenarios' own PUTs would otherwise hold it up).
fn config() -> ScrubConfig {
    ScrubConfig {
        every: SCRUB_EVERY,
        yield_in_flight: 0,
        ..ScrubConfig::default()
    }
}

/// [`config`] at [`SLOW_BYTES_PER_S`], with only the first pass beginning by itself: later
/// ones begin when asked, so a scenario finds the scrubber idle between them.
fn slow() -> ScrubConfig {
    ScrubConfig {
        bytes_per_s: SLOW_BYTES_PER_S,
        every: SLOW_EVERY,
        ..config()
    }
}

/// Six nodes running scrubbers paced by `scrub`; the scenario's body stream and the node its
/// writes go through.
async fn opening(
    sim: &Rc<Sim>,
    name: &str,
    scrub: ScrubConfig,
) -> Result<(ChaCha8Rng, u64), String> {
    sim.run_scrubbers(scrub);
    six_nodes(sim).await?;
    let rng = ChaCha8Rng::seed_from_u64(fork(sim.seed, name, 0, 0));
    Ok((rng, 1 + sim.pick(0..6)))
}

/// The scrubber's replicated state as the current leader applied it.
async fn scrub_state(sim: &Sim) -> Result<ScrubState, String> {
    let leader = sim.wait_leader().await?;
    sim.addr(leader)
        .ok_or(format!("node {leader} is down"))?
        .send(GetScrub)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Waits (bounded, simulated time) until the replicated scrub state satisfies `done`.
async fn wait_scrub(
    sim: &Sim,
    what: &str,
    done: impl Fn(&ScrubState) -> bool,
) -> Result<ScrubState, String> {
    let mut waited = Duration::ZERO;
    let mut last = None;
    loop {
        // A read during an election fails; the next look answers.
        if let Ok(s) = scrub_state(sim).await {
            if done(&s) {
                event!(sim.trace, "reached: {what} (pass {})", s.pass);
                return Ok(s);
            }
            last = Some(s);
        }
        if waited >= SCRUB_WAIT_MAX {
            return Err(format!(
                "not reached within {} s: {what}; scrub state {last:?}",
                waited.as_secs()
            ));
        }
        tokio::time::sleep(SCRUB_POLL).await;
        waited += SCRUB_POLL;
    }
}

/// Waits until no pass runs and one has ended; answers that state.
async fn wait_idle(sim: &Sim) -> Result<ScrubState, String> {
    wait_scrub(sim, "a scrub pass ended and none runs", |s| {
        s.running.is_none() && s.last.is_some()
    })
    .await
}

/// Waits until a pass numbered above `pass` has ended.
async fn wait_pass_after(sim: &Sim, pass: u64) -> Result<ScrubState, String> {
    wait_scrub(sim, &format!("a scrub pass after pass {pass} ended"), |s| {
        s.last.as_ref().is_some_and(|l| l.pass > pass)
    })
    .await
}

/// The shards of `part` that do not verify on their homes, asked through `node`'s data plane.
async fn unverified(
    sim: &Sim,
    node: u64,
    body: ObjectId,
    part: &PartLayout,
) -> Result<Vec<usize>, String> {
    let state = sim.s3(node).ok_or(format!("node {node} is down"))?;
    let mut bad = Vec::new();
    for i in 0..usize::from(part.k) + usize::from(part.m) {
        if !repair::verifies(&state.data, body, part, i).await {
            bad.push(i);
        }
    }
    Ok(bad)
}

/// PUTs `count` coded bodies of sizes in `len` as `prefix-i`
/// through `node`; every one must be acknowledged.
async fn put_coded(
    sim: &Sim,
    model: &Model,
    rng: &mut ChaCha8Rng,
    node: u64,
    prefix: &str,
    count: usize,
    len: std::ops::Range<usize>,
) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for i in 0..count {
        let len = rng.gen_range(len.clone());
        let data = body(rng, len);
        let key = format!("{prefix}-{i}");
        if put(sim, model, node, &key, &data).await != Some(200) {
            return Err(format!("PUT {key} was not acknowledged"));
        }
        keys.push(key);
    }
    Ok(keys)
}

async fn rot_healed(sim: Rc<Sim>) -> Result<(), String> {
    let (mut rng, coordinator) = opening(&sim, "t140", config()).await?;
    let model = Model::default();
    let keys = put_coded(&sim, &model, &mut rng, coordinator, "obj", 5, BODY_BYTES).await?;
    let before = wait_idle(&sim).await?;
    // Rotted between passes, on the disks alone: nobody reads the object afterwards.
    let victim = &keys[sim.pick(0..keys.len() as u64) as usize];
    let (id, part) = sim.only_part(coordinator, BUCKET, victim).await?;
    let a = sim.pick(0..6) as usize;
    let b = (a + 1 + sim.pick(0..5) as usize) % 6;
    for index in [a, b] {
        let index16 = u16::try_from(index).map_err(|e| e.to_string())?;
        if !sim.rot_shard(part.homes[index], id, part.part, index16) {
            return Err(format!("no shard {index} of {victim} to rot"));
        }
    }
    let after = wait_pass_after(&sim, before.pass).await?;
    let last = after.last.clone().ok_or("no last pass")?;
    let healed = after.healed_total - before.healed_total;
    if healed != 2 || last.tally.shards_rebuilt != 2 {
        return Err(format!(
            "two rotted shards, but the scrubber healed {healed} (its last pass counts {}): {after:?}",
            last.tally.shards_rebuilt
        ));
    }
    if last.tally.parts() != keys.len() as u64 || last.tally.full.parts != keys.len() as u64 {
        return Err(format!(
            "the last pass after healing should count {} parts, all full: {:?}",
            keys.len(),
            last.tally
        ));
    }
    let leader = sim.wait_leader().await?;
    let bad = unverified(&sim, leader, id, &part).await?;
    if !bad.is_empty() {
        return Err(format!(
            "shards {bad:?} of {victim} still do not verify after the pass"
        ));
    }
    sim.finish_with(&model, |id, db, disks| {
        full_redundancy::check(&model, id, db, disks)
    })
    .await
}

async fn floor_healed(sim: Rc<Sim>) -> Result<(), String> {
    let (mut rng, coordinator) = opening(&sim, "t141", config()).await?;
    let model = Model::default();
    put_coded(
        &sim,
        &model,
        &mut rng,
        coordinator,
        "healthy",
        3,
        BODY_BYTES,
    )
    .await?;
    // A home that is neither the coordinator nor the leader goes down, so what is tested is
    // the ack floor and the healing, not an election.
    let leader = sim.wait_leader().await?;
    let others: Vec<u64> = sim
        .ids()
        .into_iter()
        .filter(|n| *n != coordinator && *n != leader)
        .collect();
    let down = others[sim.pick(0..others.len() as u64) as usize];
    sim.crash(down).await?;
    let floor = put_coded(&sim, &model, &mut rng, coordinator, "floor", 1, BODY_BYTES).await?;
    let (id, part) = sim.only_part(coordinator, BUCKET, &floor[0]).await?;
    let missing = unverified(&sim, coordinator, id, &part).await?;
    if missing.len() != 1 || part.homes[missing[0]] != down {
        return Err(format!(
            "a write with node {down} down should lack exactly its shard, not {missing:?} \
             (homes {:?})",
            part.homes
        ));
    }
    // While the home is down, a pass sees every part degraded (5 of 6: each of the six
    // nodes is a home of every 4+2 part), none full.
    let pass = scrub_state(&sim).await?.pass;
    let seen = wait_pass_after(&sim, pass).await?;
    let tally = seen.last.as_ref().map(|l| l.tally).unwrap_or_default();
    if tally.degraded.parts != 4 || tally.full.parts != 0 {
        return Err(format!(
            "with node {down} down a pass should count all 4 parts degraded: {tally:?}"
        ));
    }
    sim.restart(down).await?;
    sim.converge().await?;
    // The pass running now (if any) may have passed the part by while its home was down;
    // the next one begins with every home up and may not: so at most two passes.
    let within = scrub_state(&sim).await?.pass + 1;
    let healed = wait_scrub(&sim, "two scrub passes after the restart", |s| {
        s.last.as_ref().is_some_and(|l| l.pass >= within)
    })
    .await?;
    let last = healed.last.clone().ok_or("no last pass")?;
    if last.tally.full.parts != 4 || last.tally.parts() != 4 {
        return Err(format!(
            "within two passes of node {down} returning every part should be full: {:?}",
            last.tally
        ));
    }
    let leader = sim.wait_leader().await?;
    let bad = unverified(&sim, leader, id, &part).await?;
    if !bad.is_empty() {
        return Err(format!(
            "shards {bad:?} of the floor write still do not verify"
        ));
    }
    sim.finish_with(&model, |id, db, disks| {
        full_redundancy::check(&model, id, db, disks)
    })
    .await
}

/// Where `c` is in a pass's walk order (buckets by name, objects before uploads, keys).
fn walk_order(c: &Cursor) -> (String, Stage, Option<String>, String) {
    (
        c.bucket.clone(),
        c.stage,
        c.key.clone(),
        c.upload_id.clone(),
    )
}

async fn leader_crash_resumes(sim: Rc<Sim>) -> Result<(), String> {
    let (mut rng, coordinator) = opening(&sim, "t142", slow()).await?;
    let model = Model::default();
    for name in EXTRA_BUCKETS {
        let cmd = Command::CreateBucket(BucketRecord {
            name: name.into(),
            created_ms: hamster_actors::clock::Clock::now_ms(sim.clock.as_ref()),
            region: "us-east-1".into(),
        });
        let applied = sim.propose_on_leader(cmd).await?;
        if !matches!(
            applied.refused,
            None | Some(Refusal::BucketAlreadyOwnedByYou)
        ) {
            return Err(format!("creating {name}: {:?}", applied.refused));
        }
        for i in 0..2 {
            let data = body(&mut rng, 100 * 1024);
            let a = send(&sim, coordinator, "PUT", &format!("/{name}/o{i}"), "", data).await;
            if a.as_ref().map(|a| a.status) != Some(200) {
                return Err(format!("PUT {name}/o{i}: {:?}", a.map(|a| a.status)));
            }
        }
    }
    put_coded(&sim, &model, &mut rng, coordinator, "obj", 2, BODY_BYTES).await?;
    // A pass begun after every write, in the middle of its walk: at least one step taken.
    let idle = wait_idle(&sim).await?;
    let pass = idle.pass + 1;
    sim.propose_on_leader(Command::ScrubSet(ScrubSwitch::Now))
        .await?;
    let mid = wait_scrub(&sim, "a scrub pass has taken a step", |s| {
        s.pass == pass
            && s.running
                .as_ref()
                .is_some_and(|r| r.cursor != Cursor::default())
    })
    .await?;
    let before = mid.running.clone().ok_or("no pass running")?.cursor;
    let old = sim.wait_leader().await?;
    sim.crash(old).await?;
    let crashed_ms = hamster_actors::clock::Clock::now_ms(sim.clock.as_ref());
    event!(sim.trace, "leader {old} crashed mid-pass at {before:?}");
    let new = sim.wait_leader().await?;
    if new == old {
        return Err(format!("node {old} still leads after crashing"));
    }
    // The new leader's first step (or the pass ending) moves the cursor on from where it was.
    let moved = wait_scrub(&sim, "the new leader's scrubber stepped", |s| {
        s.pass != pass || s.running.as_ref().is_none_or(|r| r.cursor != before)
    })
    .await?;
    if moved.pass != pass {
        return Err(format!(
            "the pass was restarted: pass {pass} was running, now {}: {moved:?}",
            moved.pass
        ));
    }
    if let Some(r) = &moved.running {
        if walk_order(&r.cursor) < walk_order(&before) {
            return Err(format!(
                "the new leader went back: the cursor was at {before:?}, now {:?}",
                r.cursor
            ));
        }
    }
    let done = wait_scrub(&sim, "the interrupted pass ended", |s| {
        s.last.as_ref().is_some_and(|l| l.pass >= pass)
    })
    .await?;
    let last = done.last.clone().ok_or("no last pass")?;
    // Shared bucket's two objects plus two in each extra bucket, each counted once.
    let parts = 2 + 2 * EXTRA_BUCKETS.len() as u64;
    if last.pass != pass || last.tally.parts() != parts {
        return Err(format!(
            "pass {pass} should end counting each of {parts} parts once: {last:?}"
        ));
    }
    // Ended after the crash, so by the new leader's scrubber (the old leader is down).
    if last.done_ms < crashed_ms {
        return Err(format!(
            "pass {pass} ended at {} ms, before leader {old} crashed at {crashed_ms} ms",
            last.done_ms
        ));
    }
    sim.restart(old).await?;
    sim.finish(&model).await
}

async fn repair_races_scrub(sim: Rc<Sim>) -> Result<(), String> {
    // Slow enough that the pass's one step takes about ten seconds: the repair lands before,
    // during or after it, as the seed picks.
    let (mut rng, coordinator) = opening(&sim, "t143", slow()).await?;
    let model = Model::default();
    let keys = put_coded(
        &sim,
        &model,
        &mut rng,
        coordinator,
        "obj",
        RACE_OBJECTS,
        RACE_BODY_BYTES,
    )
    .await?;
    let idle = wait_idle(&sim).await?;
    let leader = sim.wait_leader().await?;
    // Two shards of every object rot.
    let mut rotted = 0u64;
    for key in &keys {
        let (id, part) = sim.only_part(leader, BUCKET, key).await?;
        let a = sim.pick(0..6) as usize;
        let b = (a + 1 + sim.pick(0..5) as usize) % 6;
        for index in [a, b] {
            let index16 = u16::try_from(index).map_err(|e| e.to_string())?;
            if !sim.rot_shard(part.homes[index], id, part.part, index16) {
                return Err(format!("no shard {index} of {key} to rot"));
            }
            rotted += 1;
        }
    }
    let state = sim.s3(leader).ok_or("the leader is down")?;
    let (scrub0, repair0) = (
        state.metrics.scrub_shards_rebuilt.get(),
        state.metrics.repair_shards_rebuilt.get(),
    );
    // The operator asks for a pass, and a repair starts on the leader a moment later.
    let asked = sim
        .propose(leader, Command::ScrubSet(ScrubSwitch::Now))
        .await?;
    if asked.refused.is_some() {
        return Err(format!("scrub --now was refused: {:?}", asked.refused));
    }
    sim.sleep_ms(sim.pick(0..RACE_DELAY_MS_MAX)).await;
    let report = repair::repair(
        &state.raft,
        &state.data,
        &state.metrics,
        state.clock.clone(),
        None,
    )
    .await?;
    event!(
        sim.trace,
        "repair on {leader}: {} verified, {} rebuilt",
        report.shards_verified,
        report.shards_rebuilt
    );
    if !report.unrecoverable.is_empty() || !report.failed.is_empty() {
        return Err(format!("repair racing the scrubber: {report:?}"));
    }
    let after = wait_pass_after(&sim, idle.pass).await?;
    let healed = after.healed_total - idle.healed_total;
    event!(
        sim.trace,
        "{rotted} shards rotted: repair rebuilt {}, the scrubber {healed}",
        report.shards_rebuilt
    );
    if report.shards_rebuilt + healed != rotted {
        return Err(format!(
            "{rotted} shards rotted, but repair rebuilt {} and the scrubber {healed}",
            report.shards_rebuilt
        ));
    }
    let counted = (state.metrics.scrub_shards_rebuilt.get() - scrub0)
        + (state.metrics.repair_shards_rebuilt.get() - repair0);
    if sim.leader() == Some(leader) && counted != rotted {
        return Err(format!(
            "{rotted} shards rotted, but the leader's counters say {counted} were rebuilt"
        ));
    }
    sim.finish_with(&model, |id, db, disks| {
        full_redundancy::check(&model, id, db, disks)
    })
    .await
}

#[test]
fn t140_rot_healed_by_scrubber() {
    check("t140_rot_healed_by_scrubber", CI_SEEDS_ROT, rot_healed);
}

#[test]
fn t141_floor_write_healed_by_scrubber() {
    check(
        "t141_floor_write_healed_by_scrubber",
        CI_SEEDS_FLOOR,
        floor_healed,
    );
}

#[test]
fn t142_scrub_resumes_after_leader_crash() {
    check(
        "t142_scrub_resumes_after_leader_crash",
        CI_SEEDS_LEADER,
        leader_crash_resumes,
    );
}

#[test]
fn t143_repair_and_scrubber_rebuild_once() {
    check(
        "t143_repair_and_scrubber_rebuild_once",
        CI_SEEDS_RACE,
        repair_races_scrub,
    );
}
