//! The leader crashes in the middle of writes, twice: the survivors elect a new leader and keep
//! committing, the crashed node restarts from what its store had committed and catches up.
//! Writes in flight at the crash may or may not survive; acknowledged ones must.

use std::rc::Rc;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 60;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(3).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 10,
        ..Faults::CALM
    });
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 4, 40, 100));
    for _ in 0..2 {
        sim.sleep_ms(sim.pick(300..1500)).await;
        let leader = sim.wait_leader().await?;
        sim.crash(leader).await?;
        sim.sleep_ms(sim.pick(200..3000)).await;
        sim.restart(leader).await?;
    }
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t20_leader_crash() {
    check("t20_leader_crash", CI_SEEDS, scenario);
}
