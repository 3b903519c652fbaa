//! S3 clients through the real front: signed PUT, multipart, GET, HEAD and DELETE requests run
//! through every node's `S3Exchange` (authentication, forwarding, read index, shard files on
//! each node's simulated disk) while the leader crashes — losing or tearing what its disk had
//! not synced — and restarts, the network drops and delays messages, and disks rot bits in
//! stored shards. A GET must never return bytes other than those sent; at the end every
//! current version's shard files must decode to exactly those bytes, or, where a disk rotted
//! them, be refused.

use std::rc::Rc;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::s3client;
use crate::world::check;

const CI_SEEDS: u64 = 30;

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
    sim.sleep_ms(sim.pick(500..2500)).await;
    let leader = sim.wait_leader().await?;
    sim.crash(leader).await?;
    sim.sleep_ms(sim.pick(500..3000)).await;
    sim.restart(leader).await?;
    for _ in 0..2 {
        sim.sleep_ms(sim.pick(200..1500)).await;
        let ids = sim.ids();
        let node = ids[sim.pick(0..ids.len() as u64) as usize];
        if let Some(rotted) = sim.rot(node) {
            model.rotted.borrow_mut().insert(rotted);
        }
    }
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t80_s3_clients() {
    check("t80_s3_clients", CI_SEEDS, scenario);
}
