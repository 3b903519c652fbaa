//! `hamster recover` and then the dropped members come back anyway (a rebooted machine starts
//! them on their old data dirs). All three members crash while clients write; the survivor
//! with the longest log is recovered as the only voter in a new cluster epoch and serves new
//! writes; then the two dropped members restart. They hold the old membership, in which they
//! are a majority, and they reach the survivor: it must refuse them (older epoch), they must
//! learn that they were dropped and stop, and the survivor must keep every acknowledged write
//! — its log is never overwritten by theirs (before epochs, openraft panicked on exactly that).

use std::rc::Rc;
use std::time::Duration;

use super::t60_recover::lose_quorum_and_recover;
use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::event;
use crate::world::check;

const CI_SEEDS: u64 = 20;
/// How long the dropped members may take to be fenced once they run.
const FENCE_WAIT_MAX: Duration = Duration::from_secs(10);

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    let model = Rc::new(Model::default());
    let survivor = lose_quorum_and_recover(&sim, &model).await?;
    client::workload(sim.clone(), model.clone(), 3, 15, 50).await;

    let dropped: Vec<u64> = sim.ids().into_iter().filter(|id| *id != survivor).collect();
    for id in &dropped {
        sim.sleep_ms(sim.pick(0..400)).await;
        sim.restart(*id).await?;
    }
    let mut waited = Duration::ZERO;
    while !dropped.iter().all(|id| sim.fenced(*id).is_some()) {
        if waited >= FENCE_WAIT_MAX {
            let state: Vec<_> = dropped.iter().map(|id| (*id, sim.fenced(*id))).collect();
            return Err(format!(
                "dropped members were not fenced in time: {state:?}"
            ));
        }
        sim.sleep_ms(50).await;
        waited += Duration::from_millis(50);
    }
    for id in &dropped {
        event!(sim.trace, "node {id} was fenced; stopping it");
        sim.stop(*id).await?;
        sim.retire(*id);
    }
    // The survivor still leads alone and takes writes.
    let leader = sim.wait_leader().await?;
    if leader != survivor {
        return Err(format!(
            "node {leader} leads, not the recovered node {survivor}"
        ));
    }
    client::workload(sim.clone(), model.clone(), 2, 10, 50).await;
    sim.finish(&model).await
}

#[test]
fn t61_recover_returning_nodes() {
    check("t61_recover_returning_nodes", CI_SEEDS, scenario);
}
