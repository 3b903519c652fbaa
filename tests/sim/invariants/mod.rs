//! The invariants every scenario is held to, one per file. Online ones are fed by the nodes'
//! metrics and applied-entry taps while the run goes on; the final ones read the stores of the
//! stopped nodes off their (simulated) disks, never trusting an acknowledgement.
//!
//! - [`election_safety`]: votes never go back, and one vote elects at most one leader.
//! - [`state_machine_safety`]: no two nodes apply different entries at one index.
//! - [`voter_cap`]: no configuration ever has more than five voters.
//! - [`log_matching`]: two logs that agree on an entry's term agree on everything before it.
//! - [`acked_writes`]: every acknowledged write is in every replica at the end.
//! - [`read_your_writes`]: a read sees the latest acknowledged write (or a later one).
//! - [`shards_agree`]: current versions' shard files exist and decode to the bytes sent.
//! - [`placed_shards`]: after a layout transition, every part's shards sit on distinct homes
//!   and no disk keeps a shard that no part lists there.
//! - [`full_redundancy`]: once the scrubber has had its passes with every home up, every
//!   shard of every current part is whole on its home.

pub mod acked_writes;
pub mod election_safety;
pub mod full_redundancy;
pub mod log_matching;
pub mod placed_shards;
pub mod read_your_writes;
pub mod shards_agree;
pub mod state_machine_safety;
pub mod voter_cap;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use hamster_actors::raft::state_machine::AppliedEntry;
use hamster_actors::raft::NodeInfo;
use openraft::{RaftMetrics, ServerState, Vote};

use crate::event;
use crate::world::Trace;

/// What one node's metrics said last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Which incarnation of the node said it.
    pub incarnation: u64,
    /// Leader, follower, candidate, learner.
    pub state: ServerState,
    /// Current term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Last log index (0 when empty).
    pub last_log: u64,
    /// Last applied index (0 when none).
    pub applied: u64,
    /// The voter sets of the membership (two during a joint change).
    pub configs: Vec<BTreeSet<u64>>,
    /// Learners.
    pub learners: BTreeSet<u64>,
    /// The node's vote (the leader it follows or is, and whether a quorum granted it).
    pub vote: Vote<u64>,
}

impl NodeView {
    /// The view in `m`.
    pub fn of(incarnation: u64, m: &RaftMetrics<u64, NodeInfo>) -> Self {
        let membership = m.membership_config.membership();
        NodeView {
            incarnation,
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            last_log: m.last_log_index.unwrap_or(0),
            applied: m.last_applied.map_or(0, |l| l.index),
            configs: membership.get_joint_config().clone(),
            learners: membership.learner_ids().collect(),
            vote: m.vote,
        }
    }

    /// Every voter, across the configs.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.configs.iter().flatten().copied().collect()
    }
}

/// Everything the online invariants saw, and what they found wrong.
pub struct Observations {
    trace: Trace,
    views: RefCell<BTreeMap<u64, NodeView>>,
    leaders: RefCell<BTreeMap<(u64, u64), u64>>,
    applied: RefCell<BTreeMap<u64, (AppliedEntry, u64)>>,
    violations: RefCell<Vec<String>>,
}

impl Observations {
    /// Nothing seen yet.
    pub fn new(trace: Trace) -> Self {
        Observations {
            trace,
            views: RefCell::new(BTreeMap::new()),
            leaders: RefCell::new(BTreeMap::new()),
            applied: RefCell::new(BTreeMap::new()),
            violations: RefCell::new(Vec::new()),
        }
    }

    /// Node `id`'s metrics changed.
    pub fn on_metrics(&self, id: u64, view: NodeView) {
        let old = self.views.borrow().get(&id).cloned();
        if old.as_ref() == Some(&view) {
            return;
        }
        let changed_role = old.as_ref().is_none_or(|o| {
            o.state != view.state || o.term != view.term || o.configs != view.configs
        });
        if changed_role {
            event!(
                self.trace,
                "node {id} {:?} term {} leader {:?} voters {:?} learners {:?}",
                view.state,
                view.term,
                view.leader,
                view.configs,
                view.learners
            );
        }
        let checked =
            election_safety::check(&mut self.leaders.borrow_mut(), old.as_ref(), id, &view);
        if let Err(e) = checked {
            self.violate(e);
        }
        if let Err(e) = voter_cap::check(id, &view) {
            self.violate(e);
        }
        self.views.borrow_mut().insert(id, view);
    }

    /// Node `id`'s store was lost on purpose (a wiped metadata disk) and the leader took it
    /// out of the group before it returned: its next life starts with no vote, and its vote
    /// is held to growing again from there. Only a scenario that re-admits the node as a
    /// learner first may say this (t110); anywhere else a vote going back is a violation.
    pub fn lost_store(&self, id: u64) {
        event!(
            self.trace,
            "node {id}'s vote history restarts (store lost, re-admitted)"
        );
        self.views.borrow_mut().remove(&id);
    }

    /// Node `id` applied `entry`.
    pub fn on_applied(&self, id: u64, entry: AppliedEntry) {
        if let Err(e) = state_machine_safety::check(&mut self.applied.borrow_mut(), id, &entry) {
            self.violate(e);
        }
    }

    /// Records a broken invariant; the run fails at its end (or at its next check).
    pub fn violate(&self, what: String) {
        event!(self.trace, "VIOLATION {what}");
        self.violations.borrow_mut().push(what);
    }

    /// The latest view of every node.
    pub fn views(&self) -> BTreeMap<u64, NodeView> {
        self.views.borrow().clone()
    }

    /// Entries applied anywhere, by index.
    pub fn applied_count(&self) -> usize {
        self.applied.borrow().len()
    }

    /// `Err` with the first violation seen so far.
    pub fn verdict(&self) -> Result<(), String> {
        match self.violations.borrow().first() {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }
}
