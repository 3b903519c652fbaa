//! Acknowledged writes are never lost: at the end, every replica's state machine — read from
//! the stopped node's store on disk — holds each key and bucket in a state the model allows.

use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::query;

use crate::client::{Model, BUCKET};

/// `Err` with the first key or bucket of `model` that node `id`'s store contradicts.
pub fn check(model: &Model, id: u64, db: &MetaDb) -> Result<(), String> {
    let txn = db.env.read_txn().map_err(|e| e.to_string())?;
    for (key, possible) in model.keys.borrow().iter() {
        let versions = query::versions(db, &txn, BUCKET, key).map_err(|e| e.to_string())?;
        let held = versions.and_then(|v| v.current().map(|c| c.etag.clone()));
        if !possible.contains(&held) {
            return Err(format!(
                "acknowledged write lost: node {id} holds {key} as {held:?}, expected one of \
                 {possible:?}"
            ));
        }
    }
    for (name, possible) in model.buckets.borrow().iter() {
        let held = query::bucket(db, &txn, name)
            .map_err(|e| e.to_string())?
            .is_some();
        if !possible.contains(&held) {
            return Err(format!(
                "acknowledged bucket change lost: node {id} has bucket {name} existing={held}, \
                 expected one of {possible:?}"
            ));
        }
    }
    Ok(())
}
