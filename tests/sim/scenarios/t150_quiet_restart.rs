//! A follower that restarts does not disturb a healthy leader. Under client load a follower is
//! crashed (or stopped cleanly) and started again, twice; the leader must keep both its
//! leadership and its term throughout, and the returning follower must catch up.

use std::rc::Rc;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 30;

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    let size = 3 + 2 * sim.pick(0..2);
    sim.form(size).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 10,
        ..Faults::CALM
    });
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 3, 40, 100));
    sim.sleep_ms(sim.pick(200..800)).await;
    let leader = sim.wait_leader().await?;
    let term = sim
        .obs
        .views()
        .get(&leader)
        .map(|v| v.term)
        .ok_or("no view of the leader")?;
    for _ in 0..2 {
        let followers: Vec<u64> = sim.up().into_iter().filter(|&id| id != leader).collect();
        let follower = followers[sim.pick(0..followers.len() as u64) as usize];
        if sim.pick(0..2) == 0 {
            sim.crash(follower).await?;
        } else {
            sim.stop(follower).await?;
        }
        sim.sleep_ms(sim.pick(100..3000)).await;
        sim.restart(follower).await?;
        sim.wait_until("the restarted follower follows the leader again", |views| {
            views
                .get(&follower)
                .is_some_and(|v| v.leader == Some(leader) && v.term == term)
                || views.get(&leader).is_some_and(|v| v.term != term)
        })
        .await?;
        sim.sleep_ms(sim.pick(500..2000)).await;
        let views = sim.obs.views();
        let now = views.get(&leader).map(|v| (v.state, v.term));
        if now != Some((openraft::ServerState::Leader, term)) {
            return Err(format!(
                "restarting follower {follower} disturbed leader {leader} (term {term}): now {now:?}"
            ));
        }
    }
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t150_quiet_restart() {
    check("t150_quiet_restart", CI_SEEDS, scenario);
}
