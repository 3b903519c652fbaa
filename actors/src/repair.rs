//! Repair (`hamster repair`): catches this node up with the metadata leader, then walks every
//! stored part, has each shard's home verify it against the replicated BLAKE3, and rebuilds
//! shards that are missing or rotted from `k` verified survivors onto their recorded homes
//! (INV-5: a shard that fails verification is never a source). A part with fewer than `k` verified shards is reported as unrecoverable, with what
//! was found; a home that cannot be asked is reported as unreachable and left alone (its shard
//! may be fine once it is back).
//!
//! Repair is idempotent: a run that crashes half way leaves at most unfinished temp files on
//! the homes (dropped there), and the next run verifies and rebuilds whatever is still missing.

use std::collections::BTreeSet;

use actix::Addr;
use futures_util::future::join_all;
use hamster_protocol::listing::ListParams;
use hamster_protocol::meta::{ObjectId, PartLayout};
use hamster_protocol::scrub::Health;
use hamster_protocol::stripe::{Coder, Geometry};
use hamster_protocol::transfer::{ShardFailure, ShardName, ShardRequest};
use hamster_protocol::wire::RepairReport;
use tracing::{info, warn};

use std::sync::Arc;

use hamster_protocol::meta::Command;
use hamster_protocol::scrub::Hold;
use tracing::debug;

use crate::clock::Clock;
use crate::data::{CallError, DataPlane, ShardSender};
use crate::metrics::Metrics;
use crate::raft::node::{CatchUp, ListBuckets, ListObjects, ListUploads, Propose, RaftNode};

/// Objects asked for per listing page.
const PAGE_KEYS: usize = 1000;
/// Catch-up rounds a sweep tries before it refuses to run on metadata it cannot show is
/// current (each round is bounded by the Raft node's own waits).
const CATCH_UP_ROUNDS_MAX: u32 = 5;
/// Pause between catch-up rounds, long enough for an election to end.
const CATCH_UP_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// What one shard's home said when asked to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Good,
    /// Missing, rotted or named wrong: rebuild it.
    Bad(String),
    /// The home could not be asked.
    Unreachable(String),
}

/// Sweeps every part of every object (of `bucket` only, if given) and of every multipart
/// upload in progress, verifying and rebuilding shards.
///
/// While it runs it holds the cluster's scrubber off ([`hamster_protocol::scrub::Hold`]), so
/// the two never rebuild the same shard.
pub async fn repair(
    raft: &Addr<RaftNode>,
    data: &DataPlane,
    metrics: &Metrics,
    clock: Arc<dyn Clock>,
    bucket: Option<String>,
) -> Result<RepairReport, String> {
    catch_up(raft).await?;
    let mut hold = HoldScrubber::take(raft, data.me(), clock).await?;
    let outcome = sweep(raft, data, metrics, bucket, &mut hold).await;
    hold.release().await;
    outcome
}

/// How long a repair's hold on the scrubber lasts unless renewed (a repair that dies lets
/// the scrubber go on after this long).
const HOLD_MS: u64 = 10 * 60_000;

/// A repair's hold on the cluster's scrubber. The sweep renews it between parts once half of
/// it has run out ([`HoldScrubber::renew`]), on its own task: nothing is spawned, so the hold
/// lives exactly as long as the sweep that took it (or lapses if the process dies).
struct HoldScrubber {
    raft: Addr<RaftNode>,
    me: u64,
    clock: Arc<dyn Clock>,
    until_ms: u64,
}

impl HoldScrubber {
    async fn take(raft: &Addr<RaftNode>, me: u64, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let until_ms = clock.now_ms() + HOLD_MS;
        set_hold(raft, me, &clock, until_ms).await?;
        Ok(HoldScrubber {
            raft: raft.clone(),
            me,
            clock,
            until_ms,
        })
    }

    /// Extends the hold once half of it has run out.
    async fn renew(&mut self) {
        let now = self.clock.now_ms();
        if now + HOLD_MS / 2 < self.until_ms {
            return;
        }
        let until_ms = now + HOLD_MS;
        match set_hold(&self.raft, self.me, &self.clock, until_ms).await {
            Ok(()) => self.until_ms = until_ms,
            Err(e) => {
                debug!(error = %e, "repair could not renew its hold on the scrubber; retrying at the next part")
            }
        }
    }

    async fn release(self) {
        if let Err(e) = set_hold(&self.raft, self.me, &self.clock, 0).await {
            debug!(error = %e, "repair could not release its hold on the scrubber; it lapses by itself");
        }
    }
}

/// Sets this node's hold until `until_ms` (0 releases it).
async fn set_hold(
    raft: &Addr<RaftNode>,
    me: u64,
    clock: &Arc<dyn Clock>,
    until_ms: u64,
) -> Result<(), String> {
    let hold = Hold {
        by: me,
        what: "hamster repair".into(),
        until_ms,
    };
    let now_ms = clock.now_ms();
    match raft
        .send(Propose(Command::ScrubHold { hold, now_ms }))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot hold the scrubber off: {e}")),
        Err(_) => Err("the Raft node is not running".into()),
    }
}

async fn sweep(
    raft: &Addr<RaftNode>,
    data: &DataPlane,
    metrics: &Metrics,
    bucket: Option<String>,
    hold: &mut HoldScrubber,
) -> Result<RepairReport, String> {
    let mut report = RepairReport::default();
    let buckets = match bucket {
        Some(b) => vec![b],
        None => raft
            .send(ListBuckets)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|b| b.name)
            .collect(),
    };
    for b in buckets {
        let mut after: Option<String> = None;
        loop {
            let page = list_page(raft, &b, after.clone(), PAGE_KEYS).await?;
            for (key, v) in &page.objects {
                report.objects += 1;
                for p in &v.parts {
                    hold.renew().await;
                    let what = format!("{b}/{key} part {}", p.part);
                    repair_part(data, metrics, v.part_body(p), p, &what, &mut report).await;
                }
            }
            match (page.is_truncated, page.objects.last()) {
                (true, Some((k, _))) => after = Some(k.clone()),
                _ => break,
            }
        }
        let mut key_marker = String::new();
        let mut upload_id_marker = String::new();
        loop {
            let uploads = raft
                .send(ListUploads {
                    bucket: b.clone(),
                    prefix: String::new(),
                    key_marker: key_marker.clone(),
                    upload_id_marker: upload_id_marker.clone(),
                    max: PAGE_KEYS,
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let Some(last) = uploads.last() else {
                break;
            };
            (key_marker, upload_id_marker) = (last.key.clone(), last.upload_id.clone());
            for u in &uploads {
                for (n, part) in &u.parts {
                    hold.renew().await;
                    let what = format!("{b}/{} upload {} part {n}", u.key, u.upload_id);
                    let body = part.layout.body.unwrap_or(ObjectId([0; 16]));
                    repair_part(data, metrics, body, &part.layout, &what, &mut report).await;
                }
            }
            if uploads.len() < PAGE_KEYS {
                break;
            }
        }
    }
    info!(
        objects = report.objects,
        parts = report.parts,
        verified = report.shards_verified,
        rebuilt = report.shards_rebuilt,
        unreachable = report.shards_unreachable,
        unrecoverable = report.unrecoverable.len(),
        "repair sweep done"
    );
    Ok(report)
}

/// One page of up to `max` keys of `bucket` after `after`, each with its current version: how
/// the sweeps (repair, the layout walk) go through a bucket.
pub async fn list_page(
    raft: &Addr<RaftNode>,
    bucket: &str,
    after: Option<String>,
    max: usize,
) -> Result<hamster_protocol::listing::Page<hamster_protocol::meta::ObjectVersion>, String> {
    raft.send(ListObjects {
        bucket: bucket.to_string(),
        params: ListParams {
            prefix: String::new(),
            delimiter: None,
            after,
            max_keys: max,
        },
    })
    .await
    .map_err(|_| "the Raft node is not running".to_string())?
    .map_err(|e| e.to_string())
}

/// Waits until this node has applied every write the leader had committed when the sweep was
/// asked for: a node that restarted behind the others does not yet hold the metadata of the
/// objects written while it was down, and a sweep over its own replica would pass them by
/// (and report nothing to rebuild). A node that is far behind may need more than one round
/// (each is bounded), so it is asked up to [`CATCH_UP_ROUNDS_MAX`] times.
async fn catch_up(raft: &Addr<RaftNode>) -> Result<(), String> {
    let mut round = 1;
    loop {
        let failed = match raft.send(CatchUp).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => return Err(format!("the Raft node is not running: {e}")),
        };
        if round == CATCH_UP_ROUNDS_MAX {
            return Err(format!(
                "this node could not catch up with the metadata leader ({failed}), and repair works from current metadata only"
            ));
        }
        warn!(round, error = %failed, "repair: not caught up with the leader yet; asking again");
        tokio::time::sleep(CATCH_UP_PAUSE).await;
        round += 1;
    }
}

/// What one sweep found and did for one part ([`heal_part`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healed {
    /// Shards their homes verified.
    pub verified: usize,
    /// Shards whose home could not be asked.
    pub unreachable: usize,
    /// Shards found missing or rotted and rebuilt.
    pub rebuilt: usize,
    /// The part's health afterwards (shards verified plus shards rebuilt).
    pub health: Health,
    /// Shard bytes the homes were asked to hash.
    pub shard_bytes: u64,
    /// Why the part is not whole when a sweep could have made it so: too few shards verify
    /// to rebuild (`unrecoverable`), or the rebuild did not land (`failed`).
    pub problem: Option<Problem>,
}

/// Why a sweep could not make a part whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Fewer than `k` shards verify (or the metadata is malformed): nothing to rebuild from.
    Unrecoverable(String),
    /// A rebuild was possible but did not land in full.
    Failed(String),
}

/// Verifies every shard of one part on its home and rebuilds the bad ones from `k` verified
/// survivors: the one step repair and the scrubber share. The part is claimed on this node
/// for the duration ([`DataPlane::claim_part`]), so two sweeps never rebuild it at once.
pub async fn heal_part(data: &DataPlane, body: ObjectId, part: &PartLayout, what: &str) -> Healed {
    let _claim = data.claim_part(body, part.part).await;
    let n = usize::from(part.k) + usize::from(part.m);
    let shard_bytes = Geometry::of_part(part)
        .shard_data_len()
        .saturating_mul(n as u64);
    let mut healed = Healed {
        verified: 0,
        unreachable: 0,
        rebuilt: 0,
        health: Health::Unrecoverable,
        shard_bytes,
        problem: None,
    };
    if part.shard_blake3.len() != n {
        healed.problem = Some(Problem::Unrecoverable(format!(
            "{what}: metadata lists {} checksums for {n} shards",
            part.shard_blake3.len()
        )));
        return healed;
    }
    let checks = (0..n).map(|i| verify(data, body, part, i));
    let found: Vec<Found> = join_all(checks).await;
    let good: Vec<usize> = (0..n).filter(|i| found[*i] == Found::Good).collect();
    let bad: Vec<usize> = (0..n)
        .filter(|i| matches!(found[*i], Found::Bad(_)))
        .collect();
    healed.verified = good.len();
    healed.unreachable = (0..n)
        .filter(|i| matches!(found[*i], Found::Unreachable(_)))
        .count();
    healed.health = Health::of(part.k, part.m, good.len());
    if bad.is_empty() {
        return healed;
    }
    if good.len() < usize::from(part.k) {
        let detail: Vec<String> = found
            .iter()
            .enumerate()
            .map(|(i, f)| format!("shard {i}: {f:?}"))
            .collect();
        healed.problem = Some(Problem::Unrecoverable(format!(
            "{what}: only {} of the {} shards needed verify ({})",
            good.len(),
            part.k,
            detail.join("; ")
        )));
        return healed;
    }
    for i in &bad {
        if let Found::Bad(why) = &found[*i] {
            if let Some(held) = data.admit_sweep_warning() {
                warn!(%what, shard = i, home = %format!("{:016x}", data.home_of(part, *i)), %why, "rebuilding shard{held}");
            }
        }
    }
    match rebuild(data, body, part, &good, &bad).await {
        Ok(rebuilt) => {
            healed.rebuilt = rebuilt;
            if rebuilt < bad.len() {
                healed.problem = Some(Problem::Failed(format!(
                    "{what}: rebuilt {rebuilt} of {} bad shards",
                    bad.len()
                )));
            }
        }
        Err(e) => healed.problem = Some(Problem::Failed(format!("{what}: {e}"))),
    }
    healed.health = Health::of(part.k, part.m, good.len() + healed.rebuilt);
    healed
}

/// [`heal_part`], counted into a repair report and the repair metrics.
pub async fn repair_part(
    data: &DataPlane,
    metrics: &Metrics,
    body: ObjectId,
    part: &PartLayout,
    what: &str,
    report: &mut RepairReport,
) {
    report.parts += 1;
    let healed = heal_part(data, body, part, what).await;
    report.shards_verified += healed.verified as u64;
    report.shards_unreachable += healed.unreachable as u64;
    report.shards_rebuilt += healed.rebuilt as u64;
    metrics
        .repair_shards_verified
        .inc_by(healed.verified as u64);
    metrics.repair_shards_rebuilt.inc_by(healed.rebuilt as u64);
    match healed.problem {
        Some(Problem::Unrecoverable(why)) => {
            report.unrecoverable.push(why);
            metrics.repair_parts_unrecoverable.inc();
        }
        Some(Problem::Failed(why)) => report.failed.push(why),
        None => {}
    }
}

/// Whether shard `i` of `part` verifies on its recorded home.
pub async fn verifies(data: &DataPlane, body: ObjectId, part: &PartLayout, i: usize) -> bool {
    verify(data, body, part, i).await == Found::Good
}

async fn verify(data: &DataPlane, body: ObjectId, part: &PartLayout, i: usize) -> Found {
    let home = data.home_of(part, i);
    let request = ShardRequest::Verify {
        name: ShardName {
            id: body,
            part: part.part,
            index: u16::try_from(i).expect("at most 255 shards"),
        },
        blake3: part.shard_blake3[i].clone(),
    };
    match data.call(home, request, Vec::new()).await {
        Ok(_) => Found::Good,
        Err(CallError::Failed(
            ShardFailure::NotFound | ShardFailure::Corrupt | ShardFailure::Refused,
            why,
        )) => Found::Bad(why),
        Err(e) => Found::Unreachable(e.to_string()),
    }
}

/// Streams the rebuilt `bad` shards to their recorded homes, stripe by stripe, decoding each
/// stripe from the `good` ones; returns how many landed with the recorded checksum.
async fn rebuild(
    data: &DataPlane,
    body: ObjectId,
    part: &PartLayout,
    good: &[usize],
    bad: &[usize],
) -> Result<usize, String> {
    let targets: Vec<(usize, u64)> = bad.iter().map(|i| (*i, data.home_of(part, *i))).collect();
    Ok(rebuild_onto(data, body, part, good, &targets).await?.len())
}

/// Rebuilds shard `i` onto node `to` for each `(i, to)` of `targets`, stripe by stripe, decoding
/// each stripe from the `good` shards only; returns the indices that landed with the recorded
/// checksum.
pub async fn rebuild_onto(
    data: &DataPlane,
    body: ObjectId,
    part: &PartLayout,
    good: &[usize],
    targets: &[(usize, u64)],
) -> Result<Vec<usize>, String> {
    let geometry = Geometry::of_part(part);
    let coder = Coder::new(part.k, part.m).map_err(|e| e.to_string())?;
    let n = usize::from(part.k) + usize::from(part.m);
    // Only verified shards are sources.
    let mut avoid: BTreeSet<u16> = (0..n as u16)
        .filter(|i| !good.contains(&usize::from(*i)))
        .collect();
    let mut senders: Vec<(usize, ShardSender)> = targets
        .iter()
        .map(|(i, to)| {
            let name = ShardName {
                id: body,
                part: part.part,
                index: u16::try_from(*i).expect("at most 255 shards"),
            };
            (*i, ShardSender::start_for(data, *to, name, part))
        })
        .collect();
    let stripes = geometry.stripes();
    if stripes == 0 {
        for (_, s) in &mut senders {
            s.push(Vec::new(), true).await;
        }
    }
    for s in 0..stripes {
        let mut chunks = data
            .stripe_chunks(body, part, &geometry, s, &mut avoid)
            .await
            .map_err(|e| e.to_string())?;
        coder.reconstruct(&mut chunks).map_err(|e| e.to_string())?;
        let last = s + 1 == stripes;
        for (i, sender) in &mut senders {
            let chunk = chunks[*i].take().expect("reconstructed");
            sender.push(chunk, last).await;
        }
    }
    let mut rebuilt = Vec::new();
    for (i, sender) in senders {
        match sender.outcome().await {
            Ok(h) if h == part.shard_blake3[i] => rebuilt.push(i),
            Ok(h) => warn!(shard = i, stored = %h, "rebuilt shard has a different checksum"),
            Err(e) => warn!(shard = i, error = %e, "could not store the rebuilt shard"),
        }
    }
    Ok(rebuilt)
}
