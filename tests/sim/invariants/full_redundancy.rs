//! Full redundancy once healed: every current version's parts have every one of their `k + m`
//! shards on its recorded home's disk, whole (every block's checksum and the BLAKE3 of the
//! data) and with the replicated BLAKE3. Held at the end of a run where the scrubber had
//! passes enough with every home up (issue 17: a rotted shard, or one a write acknowledged at
//! the floor never sent, is rebuilt without anyone asking) — checked off the stopped nodes'
//! disks, not by trusting any report.

use std::collections::BTreeMap;

use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::query;
use hamster_actors::shards::ShardStore;
use hamster_protocol::meta::ObjectVersion;

use crate::client::{Model, BUCKET};

/// `Err` with the first shard of a current version in `db` (node `id`'s store) that is not
/// whole on its home in `disks`.
pub fn check(
    model: &Model,
    id: u64,
    db: &MetaDb,
    disks: &BTreeMap<u64, ShardStore>,
) -> Result<(), String> {
    let txn = db.env.read_txn().map_err(|e| e.to_string())?;
    for key in model.keys.borrow().keys() {
        let versions = query::versions(db, &txn, BUCKET, key).map_err(|e| e.to_string())?;
        let Some(current) = versions.as_ref().and_then(|v| v.current()) else {
            continue;
        };
        if let Some(bad) = first_bad_shard(current, disks) {
            return Err(format!(
                "node {id}'s metadata holds {key} (body {}) below full redundancy: {bad}",
                current.object_id.to_hex()
            ));
        }
    }
    Ok(())
}

/// The first shard of `v` that is missing, damaged or not the recorded one on its home.
pub fn first_bad_shard(v: &ObjectVersion, disks: &BTreeMap<u64, ShardStore>) -> Option<String> {
    for p in &v.parts {
        let body = v.part_body(p);
        let n = usize::from(p.k) + usize::from(p.m);
        for i in 0..n {
            let home = p.homes.get(i).copied().unwrap_or_default();
            let Some(store) = disks.get(&home) else {
                return Some(format!(
                    "part {} shard {i}: no disk for home {home}",
                    p.part
                ));
            };
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            let whole = store
                .open_reader(&body, p.part, index)
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    r.verify_all().map_err(|e| e.to_string())?;
                    let stored = r.header().blake3_hex();
                    match p.shard_blake3.get(i) {
                        Some(want) if *want == stored => Ok(()),
                        want => Err(format!("BLAKE3 {stored}, replicated {want:?}")),
                    }
                });
            if let Err(e) = whole {
                return Some(format!("part {} shard {i} on node {home}: {e}", p.part));
            }
        }
    }
    None
}
