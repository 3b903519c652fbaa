//! A member loses its metadata store while its shards survive (a wiped metadata disk), under
//! S3 clients and a lossy, delaying network. The operator's way back is `hamster
//! recover-meta`: the leader takes the member out of the group and adds it back as a learner
//! that starts from nothing (the same `RemoveMember` and `AddLearner` messages), and the
//! member restarts on an empty store without founding anything. It must fill its store from
//! the leader, keep every shard file that a committed version still references (its start-up
//! sweep must not trust the empty state), lose no acknowledged write, and become a voter again.

use std::collections::BTreeSet;
use std::rc::Rc;

use hamster_actors::raft::node::{AddLearner, ChangeMembership, ReferencedObjects, RemoveMember};
use hamster_protocol::meta::ObjectId;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::event;
use crate::net::Faults;
use crate::s3client;
use crate::world::check;

const CI_SEEDS: u64 = 12;
/// Tries of a membership change while leadership moves.
const CHANGE_TRIES_MAX: u32 = 40;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(3).await?;
    client::create_bucket(&sim).await?;
    s3client::enable(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 10,
        loss_per_mille: 5,
        ..Faults::CALM
    });
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(s3client::workload(sim.clone(), model.clone(), 3, 30, 150));
    sim.sleep_ms(sim.pick(800..2500)).await;
    let ids = sim.ids();
    let victim = ids[sim.pick(0..ids.len() as u64) as usize];
    sim.crash(victim).await?;
    let kept = bodies_on(&sim, victim);
    let meta = sim.meta_dir(victim).ok_or("no meta dir")?;
    std::fs::remove_dir_all(&meta).map_err(|e| format!("wiping node {victim}'s metadata: {e}"))?;
    event!(
        sim.trace,
        "node {victim} lost its metadata store ({} bodies on its disk)",
        kept.len()
    );
    readmit(&sim, victim).await?;
    sim.obs.lost_store(victim);
    sim.restart(victim).await?;
    let _ = load.await;
    promote_all(&sim).await?;
    // Every body the victim held that a committed version still references is still there.
    let leader = sim.wait_leader().await?;
    let referenced = sim
        .addr(leader)
        .ok_or("leader stopped")?
        .send(ReferencedObjects)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let now = bodies_on(&sim, victim);
    for id in kept.intersection(&referenced) {
        if !now.contains(id) {
            return Err(format!(
                "node {victim} deleted the shards of live body {id} after losing its metadata"
            ));
        }
    }
    sim.finish(&model).await
}

fn bodies_on(sim: &Sim, id: u64) -> BTreeSet<ObjectId> {
    sim.shard_store(id)
        .and_then(|s| s.list().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// What `recover-meta` has the leader do: out of the group, then back as a fresh learner.
async fn readmit(sim: &Sim, victim: u64) -> Result<(), String> {
    let info = sim.info(victim).ok_or("no info")?;
    let mut removed = false;
    for _ in 0..CHANGE_TRIES_MAX {
        let leader = sim.wait_leader().await?;
        let addr = sim.addr(leader).ok_or("leader stopped")?;
        if !removed {
            match addr.send(RemoveMember { id: victim }).await {
                Ok(Ok(())) => removed = true,
                other => event!(sim.trace, "remove {victim}: {other:?}; retrying"),
            }
        }
        if removed {
            let add = AddLearner {
                id: victim,
                node: info.clone(),
            };
            match addr.send(add).await {
                Ok(Ok(())) => {
                    event!(sim.trace, "node {victim} re-admitted as a learner");
                    return Ok(());
                }
                other => event!(sim.trace, "re-add {victim}: {other:?}; retrying"),
            }
        }
        sim.sleep_ms(200).await;
    }
    Err(format!("could not re-admit node {victim}"))
}

/// Makes every node a voter again once the re-admitted learner has caught up.
async fn promote_all(sim: &Sim) -> Result<(), String> {
    let voters: BTreeSet<u64> = sim.ids().into_iter().collect();
    for _ in 0..CHANGE_TRIES_MAX {
        let leader = sim.wait_leader().await?;
        let addr = sim.addr(leader).ok_or("leader stopped")?;
        let change = ChangeMembership {
            voters: voters.clone(),
        };
        match addr.send(change).await {
            Ok(Ok(())) => return Ok(()),
            other => event!(sim.trace, "promote {voters:?}: {other:?}; retrying"),
        }
        sim.sleep_ms(250).await;
    }
    Err(format!("could not make {voters:?} voters again"))
}

#[test]
fn t110_lost_metadata() {
    check("t110_lost_metadata", CI_SEEDS, scenario);
}
