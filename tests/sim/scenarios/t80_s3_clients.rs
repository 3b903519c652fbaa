//! S3 clients through the real front: signed PUT, multipart, GET, HEAD and DELETE requests run
//! through every node's `S3Exchange` (authentication, forwarding, read index, shard files on
//! each node's simulated disk) while the leader and then any node crash — losing or tearing
//! what their disks had not synced — and restart, the network drops and delays messages, and
//! disks rot bits in stored shards. A GET must never return bytes other than those sent; at
//! the end every current version's shard files must decode to exactly those bytes, or, where a
//! disk rotted them, be refused.

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
    // The leader crashes, then any node: a follower that took a PUT may die after the commit
    // and before applying it, and must not lose the bytes of that committed object.
    for round in 0..2 {
        sim.sleep_ms(sim.pick(300..2000)).await;
        let victim = if round == 0 {
            sim.wait_leader().await?
        } else {
            let ids = sim.ids();
            ids[sim.pick(0..ids.len() as u64) as usize]
        };
        sim.crash(victim).await?;
        sim.sleep_ms(sim.pick(300..3000)).await;
        sim.restart(victim).await?;
    }
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
