//! Metadata and shard files agree: every object version a replica's metadata holds as current
//! has its parts' shards on distinct homes (INV-3), at least `k` of them sit on their homes'
//! disks with the recorded BLAKE3 and verifying blocks, and decoding them gives back exactly
//! the bytes the client sent — checked off the stopped nodes' disks, not by trusting any answer.

use std::collections::{BTreeMap, BTreeSet};

use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::query;
use hamster_actors::shards::ShardStore;
use hamster_protocol::meta::ObjectVersion;
use hamster_protocol::stripe::{Coder, Geometry};

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

/// Reads every part of `v` off its homes' disks, decoding each stripe from any `k` verified
/// chunks.
fn read_body(v: &ObjectVersion, disks: &BTreeMap<u64, ShardStore>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    for p in &v.parts {
        let id = v.part_body(p);
        let n = usize::from(p.k) + usize::from(p.m);
        let distinct: BTreeSet<u64> = p.homes.iter().copied().collect();
        if p.homes.len() != n || distinct.len() != n {
            return Err(format!(
                "break placement (part {}: {}+{} on homes {:?})",
                p.part, p.k, p.m, p.homes
            ));
        }
        // Each shard's whole data, if its home's disk holds it with the recorded checksum.
        let shards: Vec<Option<Vec<u8>>> = (0..n)
            .map(|i| {
                let store = disks.get(&p.homes[i])?;
                let index = u16::try_from(i).ok()?;
                let mut reader = store.open_reader(&id, p.part, index).ok()?;
                if p.shard_blake3[i].is_empty() || reader.header().blake3_hex() != p.shard_blake3[i]
                {
                    return None;
                }
                let len = reader.header().data_len;
                let mut out = Vec::new();
                reader.read_range(0, len, &mut out).ok()?;
                Some(out)
            })
            .collect();
        let g = Geometry::of_part(p);
        let coder = Coder::new(p.k, p.m).map_err(|e| e.to_string())?;
        for s in 0..g.stripes() {
            let at = (s * u64::from(p.block_bytes)) as usize;
            let len = g.chunk_bytes(s) as usize;
            let mut chunks: Vec<Option<Vec<u8>>> = shards
                .iter()
                .map(|sh| {
                    sh.as_ref()
                        .and_then(|d| d.get(at..at + len))
                        .map(<[u8]>::to_vec)
                })
                .collect();
            coder
                .reconstruct(&mut chunks)
                .map_err(|e| format!("cannot be decoded (part {} stripe {s}): {e}", p.part))?;
            let r = g.stripe_range(s);
            body.extend_from_slice(&coder.join(&chunks, (r.end - r.start) as usize));
        }
    }
    Ok(body)
}
