//! Membership growth under the steward: one node founds the group, six more are admitted one
//! after another (as a join admits them: a consumed token recording where the node runs), the
//! steward adds each as a learner and promotes caught-up learners up to five voters — never
//! more — and when a voter crashes it is replaced by a learner. The layout managers follow the
//! membership: the stored data-plane layout grows to every member.

use std::rc::Rc;

use hamster_actors::clock::Clock;
use std::time::Duration;

use hamster_protocol::meta::Command;

use hamster_actors::layout::LayoutConfig;
use hamster_actors::raft::node::GetLayout;

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
    sim.run_layout_managers(LayoutConfig::default());
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
    // The layout managers keep the stored data-plane layout in step: all seven members, the
    // crashed one included (it is still a member, as a learner).
    let mut waited = 0;
    loop {
        let leader = sim.wait_leader().await?;
        let addr = sim.addr(leader).ok_or("the leader stopped")?;
        let stored = addr
            .send(GetLayout)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let nodes: Vec<u64> = stored
            .iter()
            .flat_map(|l| l.nodes.keys().copied())
            .collect();
        if nodes == (1..=7).collect::<Vec<u64>>() {
            break;
        }
        waited += 1;
        if waited > 100 {
            return Err(format!(
                "the stored layout lists {nodes:?}, not nodes 1 to 7"
            ));
        }
        sim.sleep_ms(100).await;
    }
    sim.finish(&model).await
}

#[test]
fn t50_membership_growth() {
    check("t50_membership_growth", CI_SEEDS, scenario);
}
