//! Partitions and heals in a five-voter group: random two/three splits, a lone node cut off,
//! and one-way cuts (requests one way are lost, the other way arrive but their answers do
//! not), each followed by a heal, while clients keep writing and reading everywhere.

use std::rc::Rc;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 60;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(5).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 15,
        loss_per_mille: 5,
        ..Faults::CALM
    });
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 4, 50, 120));
    for _ in 0..4 {
        sim.sleep_ms(sim.pick(300..1500)).await;
        let mut ids = sim.ids();
        // A seeded shuffle, then a split.
        for i in (1..ids.len()).rev() {
            let j = sim.pick(0..(i as u64 + 1)) as usize;
            ids.swap(i, j);
        }
        match sim.pick(0..3) {
            0 => {
                let cut = sim.pick(1..3) as usize;
                sim.net
                    .partition(&[ids[..cut].to_vec(), ids[cut..].to_vec()]);
            }
            1 => sim.net.partition(&[vec![ids[0]], ids[1..].to_vec()]),
            _ => {
                sim.net.cut_one_way(ids[0], ids[1]);
                sim.net.cut_one_way(ids[2], ids[0]);
            }
        }
        sim.sleep_ms(sim.pick(500..4000)).await;
        sim.net.heal();
    }
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t30_partitions() {
    check("t30_partitions", CI_SEEDS, scenario);
}
