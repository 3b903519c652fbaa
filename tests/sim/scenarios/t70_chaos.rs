//! A long, seeded fault schedule on a five-voter group: for several simulated minutes, each
//! step draws one fault from the seed — a crash (and later restart) of any node, a symmetric
//! split, an isolated node, one-way cuts, a change of network weather, a wall-clock jump, a
//! log compaction — while clients keep working slowly. Then everything heals and all the
//! invariants are checked.

use std::rc::Rc;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::event;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 12;
/// Simulated length of the schedule.
const SCHEDULE_MS: u64 = 5 * 60_000;

/// One step of the schedule.
async fn step(sim: &Sim, down: &mut Vec<u64>) -> Result<(), String> {
    let ids = sim.ids();
    let any = |sim: &Sim| ids[sim.pick(0..ids.len() as u64) as usize];
    match sim.pick(0..8) {
        // Crash a node, keeping a majority up.
        0 | 1 if down.len() < 2 => {
            let victim = any(sim);
            if !down.contains(&victim) {
                sim.crash(victim).await?;
                down.push(victim);
            }
        }
        // Bring a crashed node back.
        0..=2 if !down.is_empty() => {
            let back = down.remove(sim.pick(0..down.len() as u64) as usize);
            sim.restart(back).await?;
        }
        3 => {
            let a = any(sim);
            let b = any(sim);
            sim.net.partition(&[
                vec![a, b],
                ids.iter().copied().filter(|&x| x != a && x != b).collect(),
            ]);
        }
        4 => {
            let (a, b) = (any(sim), any(sim));
            if a != b {
                sim.net.cut_one_way(a, b);
            }
        }
        5 => {
            let weather = [Faults::CALM, Faults::ROUGH][sim.pick(0..2) as usize];
            sim.net.set_faults(weather);
        }
        6 => {
            let jump_ms = sim.pick(0..600_000) as i64 - 300_000;
            sim.clock.jump(jump_ms);
            event!(sim.trace, "wall clock jumps {jump_ms} ms");
        }
        _ => sim.net.heal(),
    }
    Ok(())
}

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(5).await?;
    client::create_bucket(&sim).await?;
    let model = Rc::new(Model::default());
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 3, 200, 2500));
    let mut down = Vec::new();
    let start = sim.trace.now_ms();
    while sim.trace.now_ms() - start < SCHEDULE_MS {
        sim.sleep_ms(sim.pick(500..8000)).await;
        step(&sim, &mut down).await?;
        if sim.pick(0..10) == 0 {
            // Compaction makes later restarts catch up from a snapshot.
            let _ = sim.compact_leader().await;
        }
    }
    sim.net.heal();
    for id in down {
        sim.restart(id).await?;
    }
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t70_chaos() {
    check("t70_chaos", CI_SEEDS, scenario);
}
