//! Shards are where the metadata says, and nowhere else (what a layout transition must leave
//! behind): every part of every stored version and of every multipart upload in progress has
//! its shards on distinct homes, and every shard file on a checked disk is listed by some part
//! at that node and index. A copy a migration made and never committed, or an old home whose
//! shard was not deleted after its move committed, is an orphan: it costs space for ever and
//! nothing would ever remove it.
//!
//! Once no transition is open, no part may name a running node the layout no longer has (a
//! drained node): a write placed by the old layout that committed after the walk passed its key
//! would otherwise keep a shard there that nothing moves.
//!
//! Whole bodies no record names (a write cut short by a crash, a delete not yet reclaimed on a
//! node that was down) are the orphan sweep's business at the node's next start, not the
//! layout's; [`Strictness::ShardsOfLiveBodies`] leaves them out of the check.

use std::collections::{BTreeMap, BTreeSet};

use hamster_actors::raft::db::MetaDb;
use hamster_actors::shards::ShardStore;
use hamster_protocol::meta::{ObjectId, Upload, VersionList};

/// How much of the disks must be accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every shard file on a checked disk must be listed by a part.
    Everything,
    /// Shard files of bodies that no record names at all are left to the orphan sweep.
    ShardsOfLiveBodies,
}

/// One shard's place: node, body, part, index.
type Placed = (u64, ObjectId, u32, u16);

/// Every shard place the store `db` lists: `Err` if one part's homes are not distinct.
fn referenced(db: &MetaDb) -> Result<BTreeSet<Placed>, String> {
    let txn = db.env.read_txn().map_err(|e| e.to_string())?;
    let mut out = BTreeSet::new();
    let mut add = |what: &str, body: ObjectId, part: u32, homes: &[u64]| {
        let distinct: BTreeSet<u64> = homes.iter().copied().collect();
        if distinct.len() != homes.len() {
            return Err(format!(
                "{what} part {part} (body {}) has shards on one node twice: homes {homes:?}",
                body.to_hex()
            ));
        }
        for (i, home) in homes.iter().enumerate() {
            let index = u16::try_from(i).map_err(|e| e.to_string())?;
            out.insert((*home, body, part, index));
        }
        Ok(())
    };
    let tables = db.state(&txn).map_err(|e| e.to_string())?;
    for item in tables.objects.iter(&txn).map_err(|e| e.to_string())? {
        let (_, bytes) = item.map_err(|e| e.to_string())?;
        let list: VersionList = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for v in &list.versions {
            for p in &v.parts {
                add(
                    &format!("version {}", v.version_id),
                    v.part_body(p),
                    p.part,
                    &p.homes,
                )?;
            }
        }
    }
    for item in tables.uploads.iter(&txn).map_err(|e| e.to_string())? {
        let (_, bytes) = item.map_err(|e| e.to_string())?;
        let upload: Upload = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for p in upload.parts.values() {
            if let Some(body) = p.layout.body {
                let what = format!("upload {}", upload.upload_id);
                add(&what, body, p.layout.part, &p.layout.homes)?;
            }
        }
    }
    Ok(out)
}

/// `Err` naming the first part of node `id`'s store `db` with shards on one node twice, or the
/// first shard file on one of `disks` (but those of `skip`) that no part lists there.
pub fn check(
    id: u64,
    db: &MetaDb,
    disks: &BTreeMap<u64, ShardStore>,
    skip: &BTreeSet<u64>,
    strictness: Strictness,
) -> Result<(), String> {
    let places = referenced(db).map_err(|e| format!("node {id}'s store: {e}"))?;
    let layout = {
        let txn = db.env.read_txn().map_err(|e| e.to_string())?;
        hamster_actors::raft::query::layout(db, &txn).map_err(|e| e.to_string())?
    };
    if let Some(l) = layout.filter(|l| l.transition.is_none()) {
        let off = places.iter().find(|p| {
            !l.nodes.contains_key(&p.0) && disks.contains_key(&p.0) && !skip.contains(&p.0)
        });
        if let Some((node, body, part, index)) = off {
            return Err(format!(
                "node {id}'s store places shard {index} of part {part} of body {} on node \
                 {node}, which layout {} no longer has, with no transition open to move it",
                body.to_hex(),
                l.version
            ));
        }
    }
    let bodies: BTreeSet<ObjectId> = places.iter().map(|p| p.1).collect();
    for (node, store) in disks.iter().filter(|(n, _)| !skip.contains(n)) {
        let files = store
            .list()
            .map_err(|e| format!("listing node {node}'s shards: {e}"))?;
        for f in files {
            if strictness == Strictness::ShardsOfLiveBodies && !bodies.contains(&f.id) {
                continue;
            }
            if !places.contains(&(*node, f.id, f.part, f.index)) {
                let listed: Vec<(u64, u16)> = places
                    .iter()
                    .filter(|p| p.1 == f.id && p.2 == f.part)
                    .map(|p| (p.0, p.3))
                    .collect();
                return Err(format!(
                    "orphan shard: node {node} holds shard {} of part {} of body {}, which node \
                     {id}'s store does not list there (it lists {listed:?} as node, index)",
                    f.index,
                    f.part,
                    f.id.to_hex()
                ));
            }
        }
    }
    Ok(())
}
