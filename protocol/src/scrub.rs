//! The scrubber's replicated state (issue 17; seed v0.4, "a continuous background scrubber"):
//! where the pass in progress has got, what it has found so far, what the last complete pass
//! found, and the operator's switches. One scrubber, on the metadata leader, drives the cluster;
//! it moves its cursor forward only by compare-and-set ([`Command::ScrubStep`] names the cursor
//! it started from), so a deposed leader's late step is refused and a new leader resumes exactly
//! where the last accepted step ended.
//!
//! [`Command::ScrubStep`]: crate::meta::Command::ScrubStep

use serde::{Deserialize, Serialize};

use crate::meta::{MetaStore, Refusal};

/// How many of a part's shards verify, after the scrubber rebuilt what it could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Every shard verifies: the part survives `m` more failures.
    Full,
    /// Fewer than all but at least `k + 1`: it survives one more failure, not `m`.
    Degraded,
    /// Exactly `k`: one more lost shard loses the part.
    AtRisk,
    /// Fewer than `k`: the part cannot be read until a home with a good shard comes back.
    Unrecoverable,
}

impl Health {
    /// The health of a part coded `k + m` with `good` verified shards.
    pub fn of(k: u8, m: u8, good: usize) -> Health {
        let (k, n) = (usize::from(k), usize::from(k) + usize::from(m));
        if good >= n {
            Health::Full
        } else if good > k {
            Health::Degraded
        } else if good == k {
            Health::AtRisk
        } else {
            Health::Unrecoverable
        }
    }

    /// The word `status` and `/metrics` use.
    pub fn label(self) -> &'static str {
        match self {
            Health::Full => "full",
            Health::Degraded => "degraded",
            Health::AtRisk => "at_risk",
            Health::Unrecoverable => "unrecoverable",
        }
    }
}

/// Parts and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Parts.
    pub parts: u64,
    /// Their object bytes (not counting redundancy).
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, other: Count) {
        self.parts = self.parts.saturating_add(other.parts);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// What a pass (or a stretch of one) found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Parts at full redundancy.
    pub full: Count,
    /// Parts with fewer than all shards but at least `k + 1`.
    pub degraded: Count,
    /// Parts with exactly `k` verified shards.
    pub at_risk: Count,
    /// Parts with fewer than `k`.
    pub unrecoverable: Count,
    /// Shards their homes verified against the replicated BLAKE3.
    pub shards_verified: u64,
    /// Shards found missing or rotted and rebuilt.
    pub shards_rebuilt: u64,
    /// Shards whose home could not be asked (down, unreachable).
    pub shards_unreachable: u64,
    /// Shard bytes the homes hashed.
    pub shard_bytes: u64,
}

impl Tally {
    /// Counts one part of `bytes` object bytes with health `h`.
    pub fn count(&mut self, h: Health, bytes: u64) {
        let c = match h {
            Health::Full => &mut self.full,
            Health::Degraded => &mut self.degraded,
            Health::AtRisk => &mut self.at_risk,
            Health::Unrecoverable => &mut self.unrecoverable,
        };
        c.add(Count { parts: 1, bytes });
    }

    /// Adds everything `other` counted.
    pub fn add(&mut self, other: &Tally) {
        self.full.add(other.full);
        self.degraded.add(other.degraded);
        self.at_risk.add(other.at_risk);
        self.unrecoverable.add(other.unrecoverable);
        self.shards_verified = self.shards_verified.saturating_add(other.shards_verified);
        self.shards_rebuilt = self.shards_rebuilt.saturating_add(other.shards_rebuilt);
        self.shards_unreachable = self
            .shards_unreachable
            .saturating_add(other.shards_unreachable);
        self.shard_bytes = self.shard_bytes.saturating_add(other.shard_bytes);
    }

    /// Parts counted.
    pub fn parts(&self) -> u64 {
        self.full.parts + self.degraded.parts + self.at_risk.parts + self.unrecoverable.parts
    }

    /// Object bytes counted.
    pub fn bytes(&self) -> u64 {
        self.full.bytes + self.degraded.bytes + self.at_risk.bytes + self.unrecoverable.bytes
    }

    /// The count of parts in health `h`.
    pub fn of(&self, h: Health) -> Count {
        match h {
            Health::Full => self.full,
            Health::Degraded => self.degraded,
            Health::AtRisk => self.at_risk,
            Health::Unrecoverable => self.unrecoverable,
        }
    }
}

/// Which listing of a bucket the cursor is in: the objects (every version), then the
/// multipart uploads in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// Objects, by key.
    #[default]
    Objects,
    /// Uploads in progress, by (key, upload id).
    Uploads,
}

/// Where a pass has got: everything before it was scrubbed in this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The bucket being walked (`""` before the first).
    pub bucket: String,
    /// The listing of that bucket being walked.
    pub stage: Stage,
    /// The last key done in that listing (`None`: none yet).
    pub key: Option<String>,
    /// With [`Stage::Uploads`], the last upload id done under `key`.
    pub upload_id: String,
}

/// The pass in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// When it began, Unix ms (the proposer's clock).
    pub started_ms: u64,
    /// Where it has got.
    pub cursor: Cursor,
    /// What it found so far.
    pub tally: Tally,
    /// When its last step was committed, Unix ms.
    pub stepped_ms: u64,
}

/// A pass that ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassDone {
    /// Its number.
    pub pass: u64,
    /// When it began and ended, Unix ms.
    pub started_ms: u64,
    /// When it ended, Unix ms.
    pub done_ms: u64,
    /// What it found.
    pub tally: Tally,
}

/// A sweep that holds the scrubber off until `until_ms` (`hamster repair`), so the scrubber and
/// that sweep do not rebuild the same shard. Each node holds at most one; the scrubber waits
/// while any is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The node running it.
    pub by: u64,
    /// What it is, for `status`.
    pub what: String,
    /// Until when, Unix ms; the holder renews it while it runs.
    pub until_ms: u64,
}

/// The scrubber's replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubState {
    /// Passes begun so far (the one running, if any, is this one).
    pub pass: u64,
    /// The pass in progress.
    pub running: Option<Running>,
    /// The last pass that ended.
    pub last: Option<PassDone>,
    /// Paused by an operator: no pass moves until resumed.
    pub paused: bool,
    /// An operator asked for a pass now (cleared when one begins).
    pub now_asked: bool,
    /// Sweeps holding the scrubber off, by the node running them.
    #[serde(default)]
    pub holds: std::collections::BTreeMap<u64, Hold>,
    /// Shards rebuilt by the scrubber over every pass.
    pub healed_total: u64,
}

impl ScrubState {
    /// A hold in force at `now_ms`, if any.
    pub fn held(&self, now_ms: u64) -> Option<&Hold> {
        self.holds.values().find(|h| h.until_ms > now_ms)
    }

    /// Whether a new pass is due at `now_ms` when passes begin `every_ms` apart.
    pub fn due(&self, now_ms: u64, every_ms: u64) -> bool {
        if self.running.is_some() {
            return false;
        }
        self.now_asked
            || self
                .last
                .as_ref()
                .is_none_or(|l| now_ms.saturating_sub(l.started_ms) >= every_ms)
    }
}

/// What an operator can ask of the scrubber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScrubSwitch {
    /// Begin a pass as soon as possible (the pace still applies).
    Now,
    /// Stop moving until resumed.
    Pause,
    /// Move again.
    Resume,
}

fn state<S: MetaStore>(store: &S) -> Result<ScrubState, S::Error> {
    Ok(store.scrub()?.unwrap_or_default())
}

/// Applies `ScrubBegin`: pass `pass` begins at `now_ms`, from the start of the keyspace.
pub fn begin<S: MetaStore>(
    store: &mut S,
    pass: u64,
    now_ms: u64,
) -> Result<Option<Refusal>, S::Error> {
    let mut s = state(store)?;
    if s.running.is_some() || pass != s.pass + 1 {
        return Ok(Some(Refusal::ScrubStale));
    }
    s.pass = pass;
    s.now_asked = false;
    s.running = Some(Running {
        started_ms: now_ms,
        stepped_ms: now_ms,
        ..Running::default()
    });
    store.put_scrub(&s)?;
    Ok(None)
}

/// Applies `ScrubStep`: the pass moves from `from` to `to`, adding `tally`; with `done` it ends.
pub fn step<S: MetaStore>(
    store: &mut S,
    pass: u64,
    from: &Cursor,
    to: &Cursor,
    tally: &Tally,
    done: bool,
    now_ms: u64,
) -> Result<Option<Refusal>, S::Error> {
    let mut s = state(store)?;
    let Some(run) = s
        .running
        .as_mut()
        .filter(|r| s.pass == pass && r.cursor == *from)
    else {
        return Ok(Some(Refusal::ScrubStale));
    };
    run.cursor = to.clone();
    run.tally.add(tally);
    run.stepped_ms = now_ms;
    s.healed_total = s.healed_total.saturating_add(tally.shards_rebuilt);
    if done {
        let run = s.running.take().expect("checked above");
        s.last = Some(PassDone {
            pass,
            started_ms: run.started_ms,
            done_ms: now_ms,
            tally: run.tally,
        });
    }
    store.put_scrub(&s)?;
    Ok(None)
}

/// Applies `ScrubSet`.
pub fn set<S: MetaStore>(store: &mut S, switch: ScrubSwitch) -> Result<(), S::Error> {
    let mut s = state(store)?;
    match switch {
        ScrubSwitch::Now => s.now_asked = true,
        ScrubSwitch::Pause => s.paused = true,
        ScrubSwitch::Resume => s.paused = false,
    }
    store.put_scrub(&s)
}

/// Applies `ScrubHold`: `hold` replaces its node's hold; one whose `until_ms` is not after
/// `now_ms` releases it. Holds of other nodes that lapsed by `now_ms` are dropped (a sweep
/// whose process died leaves one behind).
pub fn hold<S: MetaStore>(store: &mut S, hold: &Hold, now_ms: u64) -> Result<(), S::Error> {
    let mut s = state(store)?;
    s.holds.retain(|_, h| h.until_ms > now_ms);
    if hold.until_ms > now_ms {
        s.holds.insert(hold.by, hold.clone());
    } else {
        s.holds.remove(&hold.by);
    }
    store.put_scrub(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MemStore;

    fn at(bucket: &str, key: &str) -> Cursor {
        Cursor {
            bucket: bucket.into(),
            key: Some(key.into()),
            ..Cursor::default()
        }
    }

    #[test]
    fn health_follows_the_verified_count() {
        assert_eq!(Health::of(4, 2, 6), Health::Full);
        assert_eq!(Health::of(4, 2, 5), Health::Degraded);
        assert_eq!(Health::of(4, 2, 4), Health::AtRisk);
        assert_eq!(Health::of(4, 2, 3), Health::Unrecoverable);
        // 1+1: one copy left is one failure from loss.
        assert_eq!(Health::of(1, 1, 2), Health::Full);
        assert_eq!(Health::of(1, 1, 1), Health::AtRisk);
        assert_eq!(Health::of(1, 0, 1), Health::Full);
        assert_eq!(Health::of(1, 0, 0), Health::Unrecoverable);
    }

    #[test]
    fn a_pass_moves_by_compare_and_set_and_ends_with_its_tally() {
        let mut s = MemStore::default();
        assert_eq!(begin(&mut s, 2, 10).unwrap(), Some(Refusal::ScrubStale));
        assert_eq!(begin(&mut s, 1, 10).unwrap(), None);
        assert_eq!(begin(&mut s, 2, 11).unwrap(), Some(Refusal::ScrubStale));
        let mut t = Tally::default();
        t.count(Health::Full, 100);
        t.shards_rebuilt = 2;
        let first = at("b", "k1");
        assert_eq!(
            step(&mut s, 1, &Cursor::default(), &first, &t, false, 20).unwrap(),
            None
        );
        // A deposed leader's step from where it began is refused: the cursor moved.
        assert_eq!(
            step(&mut s, 1, &Cursor::default(), &at("b", "zz"), &t, false, 21).unwrap(),
            Some(Refusal::ScrubStale)
        );
        let mut u = Tally::default();
        u.count(Health::AtRisk, 7);
        assert_eq!(
            step(&mut s, 1, &first, &at("b", "k9"), &u, true, 30).unwrap(),
            None
        );
        let st = s.scrub().unwrap().unwrap();
        assert!(st.running.is_none());
        let last = st.last.unwrap();
        assert_eq!((last.pass, last.started_ms, last.done_ms), (1, 10, 30));
        assert_eq!(
            last.tally.full,
            Count {
                parts: 1,
                bytes: 100
            }
        );
        assert_eq!(last.tally.at_risk, Count { parts: 1, bytes: 7 });
        assert_eq!(last.tally.parts(), 2);
        assert_eq!(st.healed_total, 2);
        // No pass runs: steps are refused.
        assert_eq!(
            step(&mut s, 1, &at("b", "k9"), &at("c", "a"), &u, false, 40).unwrap(),
            Some(Refusal::ScrubStale)
        );
    }

    #[test]
    fn a_pass_is_due_by_age_or_when_asked() {
        let mut s = MemStore::default();
        let st = |s: &MemStore| s.scrub().unwrap().unwrap_or_default();
        assert!(st(&s).due(0, 1_000), "the first pass is due at once");
        begin(&mut s, 1, 100).unwrap();
        assert!(!st(&s).due(5_000, 1_000), "not while one runs");
        step(
            &mut s,
            1,
            &Cursor::default(),
            &at("b", "k"),
            &Tally::default(),
            true,
            200,
        )
        .unwrap();
        assert!(!st(&s).due(1_099, 1_000));
        assert!(st(&s).due(1_100, 1_000));
        set(&mut s, ScrubSwitch::Now).unwrap();
        assert!(st(&s).due(150, 1_000));
        begin(&mut s, 2, 150).unwrap();
        assert!(!st(&s).now_asked, "beginning a pass answers the request");
        set(&mut s, ScrubSwitch::Pause).unwrap();
        assert!(st(&s).paused);
        set(&mut s, ScrubSwitch::Resume).unwrap();
        assert!(!st(&s).paused);
    }

    #[test]
    fn holds_are_per_node_and_lapse() {
        let mut s = MemStore::default();
        let h = |by, until_ms| Hold {
            by,
            what: "repair".into(),
            until_ms,
        };
        let st = |s: &MemStore| s.scrub().unwrap().unwrap_or_default();
        hold(&mut s, &h(1, 100), 0).unwrap();
        hold(&mut s, &h(2, 200), 50).unwrap();
        assert_eq!(st(&s).holds.len(), 2);
        // Node 1 releases: node 2's hold still keeps the scrubber off.
        hold(&mut s, &h(1, 0), 60).unwrap();
        assert_eq!(st(&s).held(60).unwrap().by, 2);
        assert!(st(&s).held(200).is_none(), "lapsed");
        // A lapsed hold (its sweep died) is dropped by the next hold of anyone.
        hold(&mut s, &h(3, 400), 250).unwrap();
        assert_eq!(st(&s).holds.keys().copied().collect::<Vec<_>>(), vec![3]);
    }
}
