//! Membership growth under the steward: one node founds the group, six more are admitted one
//! after another (as a join admits them: a consumed token recording where the node runs), the
//! steward adds each as a learner and promotes caught-up learners up to five voters — never
//! more — and when a voter crashes it is replaced by a learner.

use std::rc::Rc;

use hamster_actors::clock::Clock;
use std::time::Duration;

use hamster_protocol::meta::Command;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 30;
/// A voter silent this long is replaced.
const DOWN_AFTER: Duration = Duration::from_secs(3);

/// Records a used join token for node `id`, as the join path does on the admitting member.
async fn admit(sim: &Sim, id: u64) -> Result<(), String> {
    let secret_sha256 = format!("{:064x}", 0xadd0_0000_u64 + id);
    let now_ms = sim.clock.now_ms();
    let add = Command::AddJoinToken {
        secret_sha256: secret_sha256.clone(),
        expires_ms: now_ms + 3_600_000,
        created_ms: now_ms,
    };
    sim.propose_on_leader(add).await?;
    let consume = Command::ConsumeJoinToken {
        secret_sha256,
        now_ms,
        node_id: id,
        joined: sim.info(id),
    };
    let applied = sim.propose_on_leader(consume).await?;
    match applied.refused {
        None => Ok(()),
        Some(r) => Err(format!("admitting node {id} was refused: {r:?}")),
    }
}

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.start(1, true, Some(DOWN_AFTER)).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 10,
        ..Faults::CALM
    });
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 3, 60, 150));
    for id in 2..=7 {
        sim.start(id, false, Some(DOWN_AFTER)).await?;
        admit(&sim, id).await?;
        sim.sleep_ms(sim.pick(0..1500)).await;
    }
    sim.wait_until("five voters and two learners", |views| {
        views.len() == 7
            && views
                .values()
                .all(|v| v.configs.len() == 1 && v.configs[0].len() == 5 && v.learners.len() == 2)
    })
    .await?;
    let leader = sim.wait_leader().await?;
    let voters = sim.obs.views()[&leader].voters();
    let victim = *voters
        .iter()
        .find(|&&id| id != leader)
        .ok_or("no follower voter")?;
    sim.crash(victim).await?;
    sim.wait_until("the crashed voter replaced", |views| {
        views.values().all(|v| {
            v.configs.len() == 1 && v.configs[0].len() == 5 && !v.configs[0].contains(&victim)
        })
    })
    .await?;
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t50_membership_growth() {
    check("t50_membership_growth", CI_SEEDS, scenario);
}
