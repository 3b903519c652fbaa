//! Snapshot catch-up: a follower is down while the group writes and the leader compacts its
//! log, so on restart it can only catch up from a streamed snapshot; then a brand-new member
//! joins as a learner and catches up the same way. Both end with every acknowledged write.

use std::rc::Rc;

use hamster_actors::raft::node::AddLearner;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 40;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(3).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 8,
        ..Faults::CALM
    });
    let leader = sim.wait_leader().await?;
    let lagging = sim
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    sim.crash(lagging).await?;
    let model = Rc::new(Model::default());
    client::workload(sim.clone(), model.clone(), 4, 30, 40).await;
    let purged = sim.compact_leader().await?;
    sim.restart(lagging).await?;
    sim.wait_until("the lagging member applied past the purged log", |views| {
        views.get(&lagging).is_some_and(|v| v.applied >= purged)
    })
    .await?;
    // A brand-new member: only a snapshot can bring it up to date.
    sim.start(4, false, None).await?;
    let add = AddLearner {
        id: 4,
        node: sim.info(4).expect("started"),
    };
    let leader = sim.wait_leader().await?;
    sim.addr(leader)
        .ok_or("leader stopped")?
        .send(add)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("adding learner 4: {e}"))?;
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 2, 20, 80));
    sim.wait_until("the new member applied past the purged log", |views| {
        views.get(&4).is_some_and(|v| v.applied >= purged)
    })
    .await?;
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t40_snapshot_catch_up() {
    check("t40_snapshot_catch_up", CI_SEEDS, scenario);
}
