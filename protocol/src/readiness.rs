//! Whether a node can serve S3 reads right now: the decision behind the admin port's `/ready`,
//! as a pure function of what the node knows about itself, so that every rule is unit-tested.
//!
//! A node is ready when it has finished starting (and is not shutting down), its metadata Raft
//! core runs, it knows a leader, the leader has just confirmed its commit index (which also
//! proves that the leader still holds a quorum), this node has applied to within
//! [`APPLIED_LAG_ENTRIES_MAX`] entries of that index, and its shard store is open.

use std::fmt;

/// How many committed entries a node may not have applied yet and still count as ready. A
/// follower in step trails the leader by the few entries in the replication pipeline; one that
/// is catching up after a restart, or from a snapshot, is thousands behind, and its reads would
/// wait for the catch-up.
pub const APPLIED_LAG_ENTRIES_MAX: u64 = 100;

/// What the metadata Raft member reports for the readiness decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaFacts {
    /// The Raft core task runs (it has not stopped on a fatal error, a panic or a shutdown).
    pub core_running: bool,
    /// The leader this member knows of.
    pub leader: Option<u64>,
    /// This member's last applied log index.
    pub applied_index: u64,
    /// The leader's commit index as the leader confirmed it just now (a read index), or `None`
    /// when it could not be had in time (the leader is unreachable or lost its quorum).
    pub leader_commit_index: Option<u64>,
}

/// Everything the readiness decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node has finished starting and is not shutting down.
    pub serving: bool,
    /// The metadata member's report, or `None` if it did not answer in time.
    pub meta: Option<MetaFacts>,
    /// The shard store is open (its directory is there).
    pub store_open: bool,
}

/// Why a node is not ready; each displays as the one line `/ready` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Starting, or shutting down.
    NotServing,
    /// The metadata member did not answer.
    MetaSilent,
    /// The Raft core has stopped; the process is about to exit.
    CoreStopped,
    /// No leader is known (an election is on, or a quorum is out of reach).
    NoLeader,
    /// A leader is known but did not confirm its commit index in time.
    LeaderUnconfirmed {
        /// The leader this node believes in.
        leader: u64,
    },
    /// This node is too far behind the leader's commit index.
    Behind {
        /// This node's applied index.
        applied_index: u64,
        /// The leader's commit index.
        leader_commit_index: u64,
    },
    /// The shard store is not open.
    StoreClosed,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::NotServing => write!(f, "not serving: starting or shutting down"),
            NotReady::MetaSilent => write!(f, "the metadata node did not answer"),
            NotReady::CoreStopped => write!(f, "the metadata core stopped"),
            NotReady::NoLeader => write!(f, "no metadata leader known"),
            NotReady::LeaderUnconfirmed { leader } => write!(
                f,
                "metadata leader {leader:016x} did not confirm its commit index (unreachable or without a quorum)"
            ),
            NotReady::Behind {
                applied_index,
                leader_commit_index,
            } => write!(
                f,
                "behind the leader: applied {applied_index} of {leader_commit_index} committed (more than {APPLIED_LAG_ENTRIES_MAX} entries)"
            ),
            NotReady::StoreClosed => write!(f, "the shard store is not open"),
        }
    }
}

/// Whether a node with `facts` can serve S3 reads right now.
pub fn decide(facts: &NodeFacts) -> Result<(), NotReady> {
    if !facts.serving {
        return Err(NotReady::NotServing);
    }
    let meta = facts.meta.ok_or(NotReady::MetaSilent)?;
    if !meta.core_running {
        return Err(NotReady::CoreStopped);
    }
    let leader = meta.leader.ok_or(NotReady::NoLeader)?;
    let commit = meta
        .leader_commit_index
        .ok_or(NotReady::LeaderUnconfirmed { leader })?;
    if commit.saturating_sub(meta.applied_index) > APPLIED_LAG_ENTRIES_MAX {
        return Err(NotReady::Behind {
            applied_index: meta.applied_index,
            leader_commit_index: commit,
        });
    }
    if !facts.store_open {
        return Err(NotReady::StoreClosed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> NodeFacts {
        NodeFacts {
            serving: true,
            meta: Some(MetaFacts {
                core_running: true,
                leader: Some(7),
                applied_index: 1_000,
                leader_commit_index: Some(1_000),
            }),
            store_open: true,
        }
    }

    fn with_meta(f: impl FnOnce(&mut MetaFacts)) -> NodeFacts {
        let mut facts = healthy();
        if let Some(m) = facts.meta.as_mut() {
            f(m);
        }
        facts
    }

    #[test]
    fn a_node_in_step_with_a_confirmed_leader_is_ready() {
        assert_eq!(decide(&healthy()), Ok(()));
    }

    #[test]
    fn starting_or_stopping_is_not_ready() {
        let facts = NodeFacts {
            serving: false,
            ..healthy()
        };
        assert_eq!(decide(&facts), Err(NotReady::NotServing));
    }

    #[test]
    fn a_silent_or_stopped_core_is_not_ready() {
        let silent = NodeFacts {
            meta: None,
            ..healthy()
        };
        assert_eq!(decide(&silent), Err(NotReady::MetaSilent));
        let stopped = with_meta(|m| m.core_running = false);
        assert_eq!(decide(&stopped), Err(NotReady::CoreStopped));
        assert!(decide(&stopped)
            .unwrap_err()
            .to_string()
            .contains("stopped"));
    }

    #[test]
    fn without_a_leader_or_its_confirmation_a_node_is_not_ready() {
        let none = with_meta(|m| {
            m.leader = None;
            m.leader_commit_index = None;
        });
        assert_eq!(decide(&none), Err(NotReady::NoLeader));
        // A follower that still names the leader it lost, or a leader cut off from its quorum.
        let unconfirmed = with_meta(|m| m.leader_commit_index = None);
        assert_eq!(
            decide(&unconfirmed),
            Err(NotReady::LeaderUnconfirmed { leader: 7 })
        );
    }

    #[test]
    fn a_follower_far_behind_the_leaders_commit_is_not_ready() {
        let at_bound = with_meta(|m| m.leader_commit_index = Some(1_000 + APPLIED_LAG_ENTRIES_MAX));
        assert_eq!(decide(&at_bound), Ok(()));
        let beyond =
            with_meta(|m| m.leader_commit_index = Some(1_000 + APPLIED_LAG_ENTRIES_MAX + 1));
        assert_eq!(
            decide(&beyond),
            Err(NotReady::Behind {
                applied_index: 1_000,
                leader_commit_index: 1_001 + APPLIED_LAG_ENTRIES_MAX
            })
        );
        // Applied ahead of a confirmed index (it raced the answer) is in step.
        let ahead = with_meta(|m| m.leader_commit_index = Some(900));
        assert_eq!(decide(&ahead), Ok(()));
    }

    #[test]
    fn a_closed_shard_store_is_not_ready() {
        let facts = NodeFacts {
            store_open: false,
            ..healthy()
        };
        assert_eq!(decide(&facts), Err(NotReady::StoreClosed));
    }
}
