//! Elections under a rough network: three voters, clients writing and reading through every
//! node, and the leader cut off from the others three times so that new leaders are elected
//! while messages are delayed, lost, duplicated and reordered.

use std::rc::Rc;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

/// Seeds CI runs.
const CI_SEEDS: u64 = 60;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(3).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults::ROUGH);
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 3, 40, 150));
    for _ in 0..3 {
        sim.sleep_ms(sim.pick(500..2000)).await;
        let leader = sim.wait_leader().await?;
        let others: Vec<u64> = sim.up().into_iter().filter(|&id| id != leader).collect();
        sim.net.partition(&[vec![leader], others]);
        sim.sleep_ms(sim.pick(800..3000)).await;
        sim.net.heal();
    }
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t10_elections() {
    check("t10_elections", CI_SEEDS, scenario);
}
