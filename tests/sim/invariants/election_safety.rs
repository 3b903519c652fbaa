//! Election safety, as openraft defines it. A leader is named by its vote — (term, node id),
//! totally ordered — and two candidates of one term may both be elected, the greater deposing
//! the lesser the moment a quorum grants it (which resolves split votes without another round).
//! What keeps that safe is that a node's vote only ever grows, also across crashes: a node that
//! forgot its vote on restart could grant a lesser one again and let two leaders share a
//! quorum. Checked here:
//! - every node's vote never decreases, across its incarnations (a crash restarts it from its
//!   store, so this also checks the vote was durable before it was used);
//! - a leader's vote names the node that leads with it, and one vote is never held by two
//!   leaders.

use std::collections::BTreeMap;

use openraft::{ServerState, Vote};

use super::NodeView;

/// Checks `view`, node `id`'s new metrics, against its previous view and the leaders seen.
pub fn check(
    leaders: &mut BTreeMap<(u64, u64), u64>,
    previous: Option<&NodeView>,
    id: u64,
    view: &NodeView,
) -> Result<(), String> {
    if let Some(old) = previous {
        if vote_key(&view.vote) < vote_key(&old.vote) {
            return Err(format!(
                "election safety: node {id}'s vote went back from {} to {} (incarnation {} to {})",
                old.vote, view.vote, old.incarnation, view.incarnation
            ));
        }
    }
    if view.state != ServerState::Leader {
        return Ok(());
    }
    let leader_id = view.vote.leader_id();
    let key = (leader_id.term, leader_id.node_id);
    if key.1 != id {
        return Err(format!(
            "election safety: node {id} leads with a vote for node {}",
            key.1
        ));
    }
    match leaders.insert(key, id) {
        Some(other) if other != id => Err(format!(
            "election safety: nodes {other} and {id} both led with vote {}",
            view.vote
        )),
        _ => Ok(()),
    }
}

/// Votes in their total order: term, then node, then whether a quorum granted it.
fn vote_key(v: &Vote<u64>) -> (u64, u64, bool) {
    let l = v.leader_id();
    (l.term, l.node_id, v.is_committed())
}
