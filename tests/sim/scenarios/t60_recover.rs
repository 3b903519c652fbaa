//! Recovery from quorum loss: all three members crash at once while clients write; the
//! operator picks the member with the most up-to-date log and runs `hamster recover` on its
//! store (the same code), making it the only voter. It must keep every acknowledged write —
//! including entries the dead majority committed that the survivor held without knowing they
//! were committed — and serve new writes.

use std::collections::BTreeSet;
use std::rc::Rc;

use hamster_actors::raft::recover;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::event;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 60;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    let model = Rc::new(Model::default());
    lose_quorum_and_recover(&sim, &model).await?;
    client::workload(sim.clone(), model.clone(), 3, 15, 50).await;
    sim.finish(&model).await
}

/// Three members under clients, all crashed at once; the one with the most up-to-date log is
/// recovered as the only voter (in a new cluster epoch) and restarted. Returns its id.
pub async fn lose_quorum_and_recover(sim: &Rc<Sim>, model: &Rc<Model>) -> Result<u64, String> {
    sim.form(3).await?;
    client::create_bucket(sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 12,
        ..Faults::CALM
    });
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 4, 20, 60));
    sim.sleep_ms(sim.pick(300..1500)).await;
    for id in sim.up() {
        sim.crash(id).await?;
    }
    let _ = load.await;
    // The survivor: the member whose log is the most up to date.
    let mut best = None;
    for id in sim.ids() {
        let db = sim.open_store(id).await?;
        let last = recover::inspect(&db)
            .map_err(|e| format!("inspecting node {id}: {e:#}"))?
            .last_log;
        event!(sim.trace, "node {id} last log {last:?}");
        if best.is_none_or(|(_, b)| last > b) {
            best = Some((id, last));
        }
    }
    let (survivor, _) = best.ok_or("no member")?;
    {
        let db = sim.open_store(survivor).await?;
        let id = recover::rewrite_membership(&db, survivor, &BTreeSet::new())
            .map_err(|e| format!("recover on node {survivor}: {e:#}"))?;
        event!(
            sim.trace,
            "recovered node {survivor} as the only voter at {id}"
        );
    }
    sim.raise_epoch(survivor);
    sim.restart(survivor).await?;
    Ok(survivor)
}

#[test]
fn t60_recover() {
    check("t60_recover", CI_SEEDS, scenario);
}
