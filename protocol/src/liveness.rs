//! The rules one node uses to decide whether another node is up (issue 17; seed v0.4, "node
//! liveness"), kept free of time sources and I/O so that they can be tested step by step and
//! so that every caller (the data plane, Raft, the probes) feeds one record.
//!
//! A node is taken for down after [`FAILURES_TO_DOWN`] consecutive failed requests, or once
//! its failures have gone on for [`SILENCE_MS_TO_DOWN`] without a single answer in between
//! (a node that hangs produces few failures, each one a timeout, so a count alone would take
//! too long), or at once when a connection to it could not even be opened ([`Outcome::Refused`]:
//! its host answers that nothing listens there, which a lost packet never produces; waiting
//! for more evidence would only send more client requests to a process that is gone). It is taken for up again at its first answer: an answer proves it is there,
//! while one failure may be a dropped packet. Time is given by the caller as milliseconds on
//! any monotonic scale.

use std::collections::{BTreeMap, BTreeSet};

/// Consecutive failed requests that make a node down.
pub const FAILURES_TO_DOWN: u32 = 3;

/// How long failures may go on without an answer before the node is down, whatever their count.
pub const SILENCE_MS_TO_DOWN: u64 = 3_000;

/// What came of one request to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered (whatever it answered: it is there).
    Answered,
    /// The node did not answer in time, or the connection broke mid-request.
    Failed,
    /// No connection to the node could be opened: nothing listens at its address.
    Refused,
}

/// A change of a node's state, to be logged and counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The node is now taken for down.
    Down {
        /// The node.
        node: u64,
        /// Consecutive failures that led there.
        failures: u32,
        /// How long the failures went on, in ms.
        failing_ms: u64,
    },
    /// The node answered again.
    Up {
        /// The node.
        node: u64,
        /// How long it was taken for down, in ms.
        down_ms: u64,
    },
}

#[derive(Debug, Clone, Default)]
struct Track {
    /// Failures since the last answer.
    failures: u32,
    /// When the current run of failures began.
    failing_since_ms: Option<u64>,
    /// When the node was taken for down, while it is.
    down_since_ms: Option<u64>,
    /// When the node last answered.
    answered_ms: Option<u64>,
}

/// Every node's liveness as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    nodes: BTreeMap<u64, Track>,
}

impl Tracker {
    /// Records one request's outcome at `now_ms`; returns the transition it causes, if any.
    pub fn observe(&mut self, node: u64, outcome: Outcome, now_ms: u64) -> Option<Transition> {
        let track = self.nodes.entry(node).or_default();
        match outcome {
            Outcome::Answered => {
                track.failures = 0;
                track.failing_since_ms = None;
                track.answered_ms = Some(now_ms);
                let since = track.down_since_ms.take()?;
                Some(Transition::Up {
                    node,
                    down_ms: now_ms.saturating_sub(since),
                })
            }
            Outcome::Failed | Outcome::Refused => {
                track.failures = track.failures.saturating_add(1);
                track.failing_since_ms.get_or_insert(now_ms);
                Self::judge(node, track, now_ms, outcome == Outcome::Refused)
            }
        }
    }

    /// Applies the silence rule at `now_ms` to every node with failures outstanding.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Transition> {
        self.nodes
            .iter_mut()
            .filter_map(|(node, track)| Self::judge(*node, track, now_ms, false))
            .collect()
    }

    /// Takes a failing node for down when one of the rules says so (`refused`: the failure
    /// just observed was a refused connection).
    fn judge(node: u64, track: &mut Track, now_ms: u64, refused: bool) -> Option<Transition> {
        if track.down_since_ms.is_some() {
            return None;
        }
        let since = track.failing_since_ms?;
        let failing_ms = now_ms.saturating_sub(since);
        if !refused && track.failures < FAILURES_TO_DOWN && failing_ms < SILENCE_MS_TO_DOWN {
            return None;
        }
        track.down_since_ms = Some(now_ms);
        Some(Transition::Down {
            node,
            failures: track.failures,
            failing_ms,
        })
    }

    /// Whether `node` is taken for down.
    pub fn is_down(&self, node: u64) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|t| t.down_since_ms.is_some())
    }

    /// The nodes taken for down.
    pub fn down(&self) -> BTreeSet<u64> {
        self.nodes
            .iter()
            .filter(|(_, t)| t.down_since_ms.is_some())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The nodes that failed their last request, down or not yet: the ones worth probing
    /// before a client request has to find out.
    pub fn failing(&self) -> BTreeSet<u64> {
        self.nodes
            .iter()
            .filter(|(_, t)| t.failures > 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// When `node` last answered.
    pub fn answered_ms(&self, node: u64) -> Option<u64> {
        self.nodes.get(&node).and_then(|t| t.answered_ms)
    }

    /// Forgets `node` (it left the membership); returns whether it was taken for down.
    pub fn forget(&mut self, node: u64) -> bool {
        self.nodes
            .remove(&node)
            .is_some_and(|t| t.down_since_ms.is_some())
    }

    /// Every node with a record.
    pub fn known(&self) -> BTreeSet<u64> {
        self.nodes.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_the_failure_count_not_before() {
        let mut t = Tracker::default();
        for i in 1..FAILURES_TO_DOWN {
            assert_eq!(t.observe(7, Outcome::Failed, u64::from(i)), None);
            assert!(!t.is_down(7));
        }
        let last = u64::from(FAILURES_TO_DOWN);
        assert_eq!(
            t.observe(7, Outcome::Failed, last),
            Some(Transition::Down {
                node: 7,
                failures: FAILURES_TO_DOWN,
                failing_ms: last - 1
            })
        );
        assert!(t.is_down(7));
        assert_eq!(t.down(), BTreeSet::from([7]));
        // Further failures are no new transition: the change is reported once.
        assert_eq!(t.observe(7, Outcome::Failed, last + 1), None);
        assert!(t.tick(last + SILENCE_MS_TO_DOWN * 10).is_empty());
    }

    #[test]
    fn a_refused_connection_is_down_at_once_and_an_answer_brings_it_back() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(4, Outcome::Answered, 1), None);
        assert_eq!(
            t.observe(4, Outcome::Refused, 10),
            Some(Transition::Down {
                node: 4,
                failures: 1,
                failing_ms: 0
            })
        );
        assert!(t.is_down(4));
        assert_eq!(t.observe(4, Outcome::Refused, 20), None);
        assert_eq!(
            t.observe(4, Outcome::Answered, 1_010),
            Some(Transition::Up {
                node: 4,
                down_ms: 1_000
            })
        );
        assert!(!t.is_down(4));
        // A timeout is no refusal: one alone leaves the node up.
        assert_eq!(t.observe(4, Outcome::Failed, 1_020), None);
        assert!(!t.is_down(4));
    }

    #[test]
    fn an_answer_between_failures_resets_the_count() {
        let mut t = Tracker::default();
        for round in 0..10u64 {
            for i in 1..FAILURES_TO_DOWN {
                assert_eq!(
                    t.observe(3, Outcome::Failed, round * 10 + u64::from(i)),
                    None
                );
            }
            assert_eq!(t.observe(3, Outcome::Answered, round * 10 + 9), None);
        }
        assert!(!t.is_down(3));
        assert!(t.failing().is_empty());
    }

    #[test]
    fn failures_that_go_on_long_enough_make_a_node_down_whatever_their_count() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(5, Outcome::Failed, 1_000), None);
        assert_eq!(t.failing(), BTreeSet::from([5]));
        assert!(t.tick(1_000 + SILENCE_MS_TO_DOWN - 1).is_empty());
        assert_eq!(
            t.tick(1_000 + SILENCE_MS_TO_DOWN),
            vec![Transition::Down {
                node: 5,
                failures: 1,
                failing_ms: SILENCE_MS_TO_DOWN
            }]
        );
        assert!(t.is_down(5));
    }

    #[test]
    fn a_quiet_node_is_not_taken_for_down() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(9, Outcome::Answered, 0), None);
        assert!(t.tick(10 * SILENCE_MS_TO_DOWN).is_empty());
        assert!(!t.is_down(9));
        assert_eq!(t.answered_ms(9), Some(0));
    }

    #[test]
    fn the_first_answer_brings_a_down_node_back() {
        let mut t = Tracker::default();
        for i in 0..u64::from(FAILURES_TO_DOWN) {
            t.observe(4, Outcome::Failed, 100 + i);
        }
        assert!(t.is_down(4));
        assert_eq!(
            t.observe(4, Outcome::Answered, 5_000),
            Some(Transition::Up {
                node: 4,
                down_ms: 5_000 - 100 - u64::from(FAILURES_TO_DOWN - 1)
            })
        );
        assert!(!t.is_down(4));
        assert_eq!(t.observe(4, Outcome::Answered, 5_001), None);
        // Down again takes the full count again.
        for i in 1..FAILURES_TO_DOWN {
            assert_eq!(t.observe(4, Outcome::Failed, 6_000 + u64::from(i)), None);
        }
        assert!(t.observe(4, Outcome::Failed, 6_100).is_some());
    }

    #[test]
    fn forgetting_a_node_drops_its_record() {
        let mut t = Tracker::default();
        for i in 0..u64::from(FAILURES_TO_DOWN) {
            t.observe(2, Outcome::Failed, i);
        }
        t.observe(8, Outcome::Answered, 0);
        assert!(t.forget(2));
        assert!(!t.forget(8));
        assert!(!t.is_down(2));
        assert!(t.known().is_empty());
    }
}
