//! Metadata and shard files agree: every object version a replica's metadata holds as current
//! has its shard files on some node's disk, and decoding them (block checksums verified) gives
//! back exactly the bytes the client sent — checked off the stopped nodes' disks, not by
//! trusting any answer.

use std::collections::BTreeMap;

use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::query;
use hamster_actors::shards::ShardStore;
use hamster_protocol::meta::ObjectVersion;

use crate::client::{Model, BUCKET};
use crate::s3client::md5_hex;

/// `Err` with the first current version in `db` (node `id`'s store) whose body cannot be read
/// back from `disks` or is not what was sent.
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
        if current.parts.is_empty() {
            // Written by the metadata clients: there is no body.
            continue;
        }
        let want = model
            .bodies
            .borrow()
            .get(&current.etag)
            .cloned()
            .ok_or(format!(
                "node {id} holds {key} with ETag {} nobody sent",
                current.etag
            ))?;
        let rotted = current.parts.iter().any(|p| {
            model
                .rotted
                .borrow()
                .contains(&(current.part_body(p), p.part))
        });
        let body = match read_body(current, disks) {
            Ok(body) => body,
            // A rotted shard must be refused, not read: that is the check here.
            Err(_) if rotted => continue,
            Err(e) => {
                return Err(format!(
                    "metadata of node {id} points {key} (ETag {}, body {}) at shards that {e}",
                    current.etag,
                    current.object_id.to_hex()
                ))
            }
        };
        let got = md5_hex(&[&body]);
        if got != want {
            return Err(format!(
                "the shards of {key} (ETag {}) decode to {} bytes with MD5 {got}, not {want}",
                current.etag,
                body.len()
            ));
        }
    }
    Ok(())
}

/// Reads every part of `v` from whichever disk holds it.
fn read_body(v: &ObjectVersion, disks: &BTreeMap<u64, ShardStore>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    for p in &v.parts {
        let id = v.part_body(p);
        let mut found = false;
        for store in disks.values() {
            let Ok(mut reader) = store.open_reader(&id, p.part, 0) else {
                continue;
            };
            reader
                .read_range(0, p.size, &mut body)
                .map_err(|e| format!("fail to decode (part {}): {e}", p.part))?;
            found = true;
            break;
        }
        if !found {
            return Err(format!("are on no disk (part {})", p.part));
        }
    }
    Ok(body)
}
