//! Who votes: the pure policy the leader's steward applies to the metadata group's membership.
//!
//! - A node admitted by a join token but not yet in the membership is added as a learner.
//! - A learner that has caught up (its replicated log within [`CATCHUP_LAG_ENTRIES`] of the
//!   leader's) and is heard from is promoted while the group has fewer than [`VOTERS_MAX`]
//!   voters.
//! - A voter the leader has not heard from for the policy's `down_after_ms` is replaced by a
//!   caught-up learner; it stays a learner itself, so it catches up and can vote again later.
//! - Among candidates the one in the failure domain (zone, then host) with the fewest voters
//!   wins, then the lowest id, so the choice is deterministic and spreads quorum across zones.
//!
//! One step at a time: the caller applies it, waits for the commit and asks again.

use std::collections::{BTreeMap, BTreeSet};

use crate::meta::NodeInfo;

/// Most voters the metadata group gets, whatever the cluster size; further members stay
/// learners and still serve.
pub const VOTERS_MAX: usize = 5;

/// How far behind the leader's last log index a learner may be and still count as caught up.
pub const CATCHUP_LAG_ENTRIES: u64 = 64;

/// One member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Where and what it is.
    pub info: NodeInfo,
    /// Whether it votes.
    pub voter: bool,
    /// The last log index known replicated to it; `None` if nothing is known yet.
    pub matched: Option<u64>,
    /// Milliseconds since the leader last heard from it (0 for the leader itself).
    pub silent_ms: u64,
}

/// Everything the policy decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    /// The leader (the node deciding).
    pub leader: u64,
    /// The leader's last log index.
    pub last_log_index: u64,
    /// Every member, by node id.
    pub members: BTreeMap<u64, MemberView>,
    /// Nodes admitted by a join token, with where they run.
    pub admitted: BTreeMap<u64, NodeInfo>,
}

/// Tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Silence after which a voter counts as down and is replaced, if a learner can take over.
    pub down_after_ms: u64,
}

/// The one change to make next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Add this admitted node as a (non-voting) learner.
    AddLearner(u64, NodeInfo),
    /// Make exactly these the voters; members dropped from the set stay learners.
    SetVoters(BTreeSet<u64>),
}

impl Situation {
    fn voters(&self) -> BTreeSet<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| *id)
            .collect()
    }

    fn is_down(&self, id: u64, policy: &Policy) -> bool {
        id != self.leader
            && self
                .members
                .get(&id)
                .is_some_and(|m| m.silent_ms >= policy.down_after_ms)
    }

    fn caught_up(&self, id: u64, policy: &Policy) -> bool {
        let Some(m) = self.members.get(&id) else {
            return false;
        };
        let floor = self.last_log_index.saturating_sub(CATCHUP_LAG_ENTRIES);
        !self.is_down(id, policy) && m.matched.is_some_and(|i| i >= floor)
    }

    /// The learner to promote into `voters`: fewest voters in its zone, then on its host,
    /// then the lowest id.
    fn best_learner(&self, voters: &BTreeSet<u64>, policy: &Policy) -> Option<u64> {
        let in_zone = |zone: &str| {
            voters
                .iter()
                .filter(|v| self.members.get(v).is_some_and(|m| m.info.zone == zone))
                .count()
        };
        let on_host = |host: &str| {
            voters
                .iter()
                .filter(|v| self.members.get(v).is_some_and(|m| m.info.host == host))
                .count()
        };
        self.members
            .iter()
            .filter(|(id, m)| !m.voter && self.caught_up(**id, policy))
            .min_by_key(|(id, m)| (in_zone(&m.info.zone), on_host(&m.info.host), **id))
            .map(|(id, _)| *id)
    }
}

/// The next membership change the leader should make, if any.
pub fn plan(s: &Situation, policy: &Policy) -> Option<Step> {
    if let Some((id, info)) = s
        .admitted
        .iter()
        .find(|(id, _)| !s.members.contains_key(id))
    {
        return Some(Step::AddLearner(*id, info.clone()));
    }
    let voters = s.voters();
    if voters.len() < VOTERS_MAX {
        if let Some(l) = s.best_learner(&voters, policy) {
            let mut next = voters;
            next.insert(l);
            return Some(Step::SetVoters(next));
        }
        return None;
    }
    let down = voters.iter().copied().find(|v| s.is_down(*v, policy))?;
    let mut rest = voters;
    rest.remove(&down);
    let l = s.best_learner(&rest, policy)?;
    rest.insert(l);
    Some(Step::SetVoters(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        down_after_ms: 10_000,
    };

    fn info(zone: &str, host: &str) -> NodeInfo {
        NodeInfo {
            cluster_addr: format!("{host}:9400"),
            zone: zone.into(),
            host: host.into(),
            capacity_bytes: 1,
            replaces: None,
        }
    }

    fn member(voter: bool, matched: Option<u64>, silent_ms: u64) -> MemberView {
        MemberView {
            info: info("z", "h"),
            voter,
            matched,
            silent_ms,
        }
    }

    fn situation(members: Vec<(u64, MemberView)>) -> Situation {
        Situation {
            leader: 1,
            last_log_index: 1_000,
            members: members.into_iter().collect(),
            admitted: BTreeMap::new(),
        }
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn admitted_nodes_become_learners_first() {
        let mut s = situation(vec![(1, member(true, Some(1_000), 0))]);
        s.admitted.insert(1, info("z", "h"));
        s.admitted.insert(7, info("z", "g"));
        assert_eq!(plan(&s, &POLICY), Some(Step::AddLearner(7, info("z", "g"))));
    }

    #[test]
    fn caught_up_learners_are_promoted_up_to_the_cap() {
        let mut members = vec![(1, member(true, Some(1_000), 0))];
        // A learner far behind, one that is silent, and five caught up.
        members.push((2, member(false, Some(10), 0)));
        members.push((3, member(false, Some(1_000), 60_000)));
        for id in 4..9 {
            members.push((id, member(false, Some(990), 0)));
        }
        let mut s = situation(members);
        let mut promoted = Vec::new();
        while let Some(step) = plan(&s, &POLICY) {
            let Step::SetVoters(v) = step else {
                panic!("only promotions expected")
            };
            assert!(v.len() <= VOTERS_MAX);
            for (id, m) in s.members.iter_mut() {
                if v.contains(id) && !m.voter {
                    m.voter = true;
                    promoted.push(*id);
                }
            }
        }
        assert_eq!(promoted, vec![4, 5, 6, 7]);
        assert_eq!(s.voters(), set(&[1, 4, 5, 6, 7]));
    }

    #[test]
    fn a_down_voter_is_replaced_by_a_caught_up_learner() {
        let mut members: Vec<(u64, MemberView)> = (1..=5)
            .map(|id| (id, member(true, Some(1_000), 0)))
            .collect();
        members[2].1.silent_ms = 10_000; // node 3 is down
        members.push((6, member(false, Some(1_000), 0)));
        let s = situation(members.clone());
        assert_eq!(
            plan(&s, &POLICY),
            Some(Step::SetVoters(set(&[1, 2, 4, 5, 6])))
        );

        // Not yet down: nothing to do.
        members[2].1.silent_ms = 9_999;
        assert_eq!(plan(&situation(members.clone()), &POLICY), None);

        // Down but no learner can take over: nothing to do either.
        members[2].1.silent_ms = 10_000;
        members[5].1.matched = Some(3);
        assert_eq!(plan(&situation(members), &POLICY), None);
    }

    #[test]
    fn the_leader_is_never_down() {
        let mut members: Vec<(u64, MemberView)> = (1..=5)
            .map(|id| (id, member(true, Some(1_000), 0)))
            .collect();
        members[0].1.silent_ms = u64::MAX;
        members.push((6, member(false, Some(1_000), 0)));
        assert_eq!(plan(&situation(members), &POLICY), None);
    }

    #[test]
    fn promotion_spreads_voters_across_zones_then_hosts() {
        let mut members = vec![(1, member(true, Some(1_000), 0))];
        members[0].1.info = info("a", "h1");
        for (id, zone, host) in [(2, "a", "h1"), (3, "a", "h2"), (4, "b", "h3")] {
            let mut m = member(false, Some(1_000), 0);
            m.info = info(zone, host);
            members.push((id, m));
        }
        let s = situation(members);
        // Zone b has no voter yet.
        assert_eq!(plan(&s, &POLICY), Some(Step::SetVoters(set(&[1, 4]))));
        let mut s2 = s.clone();
        s2.members.get_mut(&4).unwrap().voter = true;
        // Zone a has one voter either way; host h2 has none.
        assert_eq!(plan(&s2, &POLICY), Some(Step::SetVoters(set(&[1, 3, 4]))));
    }

    #[test]
    fn plans_never_exceed_the_cap_nor_drop_the_leader() {
        // Every small situation: up to 6 members, each voter or learner, up or down, caught up
        // or not (a deterministic sweep rather than random draws).
        for n in 1..=6u64 {
            for mask in 0..(1u32 << (3 * n)) {
                let members: Vec<(u64, MemberView)> = (0..n)
                    .map(|i| {
                        let bits = mask >> (3 * i);
                        let voter = i == 0 || bits & 1 == 1;
                        let silent = if bits & 2 == 2 { 60_000 } else { 0 };
                        let matched = if bits & 4 == 4 { Some(1_000) } else { Some(0) };
                        (i + 1, member(voter, matched, silent))
                    })
                    .collect();
                let s = situation(members);
                let voters = s.voters();
                if voters.len() > VOTERS_MAX {
                    continue;
                }
                if let Some(Step::SetVoters(v)) = plan(&s, &POLICY) {
                    assert!(v.len() <= VOTERS_MAX, "{s:?}");
                    assert!(v.contains(&1), "the leader stays a voter: {s:?}");
                    assert!(v.len() >= voters.len(), "never shrinks: {s:?}");
                    // At most one voter changes per step, so quorum overlap stays simple.
                    assert!(v.symmetric_difference(&voters).count() <= 2, "{s:?}");
                    assert!(v.iter().all(|id| s.members.contains_key(id)));
                }
            }
        }
    }
}
