//! A crash in the middle of a snapshot install, under client load. A follower is down while
//! the group writes and the leader compacts its log, so on restart only a snapshot can bring it
//! up to date. It installs that snapshot in small batches and crashes between two of them. The
//! store its next life starts from must hold its old state, untouched: the half-filled spare
//! tables are not live and nothing past what it had applied shows. Its next life installs the
//! snapshot again and catches up while clients keep writing; every acknowledged write survives.

use std::rc::Rc;
use std::time::Duration;

use hamster_actors::raft::snapshot::InstallTap;
use hamster_actors::raft::state_machine::applied_index;

use crate::client::{self, Model};
use crate::cluster::Sim;
use crate::net::Faults;
use crate::world::check;

const CI_SEEDS: u64 = 24;
/// Bytes per install transaction: about one record, so the install spans many batches.
const BATCH_BYTES: usize = 64;
/// How long the restarted member may take to reach the chosen batch.
const INSTALL_WAIT: Duration = Duration::from_secs(60);

pub async fn scenario(sim: Rc<Sim>) -> Result<(), String> {
    sim.form(3).await?;
    client::create_bucket(&sim).await?;
    sim.net.set_faults(Faults {
        delay_ms_max: 8,
        ..Faults::CALM
    });
    let leader = sim.wait_leader().await?;
    let lagging = sim
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    sim.crash(lagging).await?;
    let model = Rc::new(Model::default());
    client::workload(sim.clone(), model.clone(), 4, 30, 40).await;
    let purged = sim.compact_leader().await?;
    let applied_before = {
        let db = sim.open_store(lagging).await?;
        applied_index(&db).map_err(|e| format!("node {lagging}'s store: {e}"))?
    };
    if applied_before >= Some(purged) {
        return Err(format!(
            "node {lagging} had applied {applied_before:?} before the log was purged to {purged}"
        ));
    }

    // Clients write throughout what follows.
    let load = actix_rt::spawn(client::workload(sim.clone(), model.clone(), 2, 30, 60));
    let crash_after = sim.pick(1..6);
    let (batches, mut progress) = tokio::sync::watch::channel(0u64);
    sim.tap_installs(
        lagging,
        Some(InstallTap {
            batch_bytes: BATCH_BYTES,
            batches,
        }),
    );
    sim.restart(lagging).await?;
    let reached = tokio::time::timeout(INSTALL_WAIT, async {
        while *progress.borrow_and_update() < crash_after {
            if progress.changed().await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    if reached != Ok(true) {
        return Err(format!(
            "node {lagging} never committed {crash_after} install batches ({} seen)",
            *progress.borrow()
        ));
    }
    // The install is parked between two committed batches (it yields after each commit); the
    // crash copies the store before anything else runs.
    sim.crash(lagging).await?;
    sim.tap_installs(lagging, None);
    {
        let db = sim.open_store(lagging).await?;
        let applied = applied_index(&db).map_err(|e| format!("node {lagging}'s store: {e}"))?;
        if applied >= Some(purged) {
            return Err(format!(
                "node {lagging}'s store shows the install live ({applied:?}) after a crash in it"
            ));
        }
        let txn = db.env.read_txn().map_err(|e| e.to_string())?;
        let live = db.live_set(&txn).map_err(|e| e.to_string())?;
        let mut spare_records = 0;
        for (_, table) in db.sets[1 - live].numbered() {
            spare_records += table.len(&txn).map_err(|e| e.to_string())?;
        }
        if spare_records == 0 {
            return Err(format!(
                "node {lagging} crashed after {crash_after} install batches, yet its spare tables are empty"
            ));
        }
        crate::event!(
            sim.trace,
            "node {lagging} crashed mid-install: {spare_records} records filled, applied {applied:?} kept"
        );
    }
    sim.restart(lagging).await?;
    sim.wait_until("the crashed member installed the snapshot", |views| {
        views.get(&lagging).is_some_and(|v| v.applied >= purged)
    })
    .await?;
    let _ = load.await;
    sim.finish(&model).await
}

#[test]
fn t41_install_crash() {
    check("t41_install_crash", CI_SEEDS, scenario);
}
