//! The storage half of `hamster recover`: reading a stopped member's Raft state, and rewriting
//! its membership so that it can lead alone after a majority of voters is lost for good.
//!
//! The rewrite appends one membership entry after the last entry the node has, in a term
//! above every term it has seen, and moves its vote to that term. Nothing is truncated: every
//! entry the survivor holds, committed or not (including one the dead majority may have
//! committed), stays in its log, and is committed by the first entry it appends as the new
//! leader. The caller decides who survives; this module only writes.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use hamster_protocol::meta::{Batch, Command};
use heed::RoTxn;
use openraft::{CommittedLeaderId, EntryPayload, Membership};

use super::db::{get_json, put_json, DbError, MetaDb};
use super::log_store::{index_key, PURGED_KEY, VOTE_KEY};
use super::state_machine::MEMBERSHIP_KEY;
use super::types::{Entry, LogId, NodeInfo, StoredMembership, Vote};

/// A stopped member's Raft state, as stored.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The persisted vote.
    pub vote: Option<Vote>,
    /// The last entry in the log (or the last purged one if the log is empty).
    pub last_log: Option<LogId>,
    /// The membership in effect: the last membership entry in the log, else the state
    /// machine's.
    pub membership: Membership<u64, NodeInfo>,
}

impl Inspection {
    /// Every voter id, across the configs of a joint membership.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.membership.voter_ids().collect()
    }

    /// The voter sets whose majorities must all agree (one, or two while in joint consensus).
    pub fn configs(&self) -> &Vec<BTreeSet<u64>> {
        self.membership.get_joint_config()
    }

    /// Every member with its address book entry.
    pub fn nodes(&self) -> BTreeMap<u64, NodeInfo> {
        self.membership
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }
}

fn inspect_txn(db: &MetaDb, txn: &RoTxn) -> Result<Inspection, DbError> {
    let vote: Option<Vote> = get_json(&db.raft, txn, VOTE_KEY)?;
    let purged: Option<LogId> = get_json(&db.raft, txn, PURGED_KEY)?;
    let stored: StoredMembership = get_json(&db.sm_meta, txn, MEMBERSHIP_KEY)?.unwrap_or_default();
    let last_log = match db.log.last(txn)? {
        Some((_, bytes)) => Some(serde_json::from_slice::<Entry>(bytes)?.log_id),
        None => purged,
    };
    let mut membership = None;
    // Newest first; stop at the first membership entry or at what the state machine holds.
    for item in db.log.rev_iter(txn)? {
        let (_, bytes) = item?;
        let entry: Entry = serde_json::from_slice(bytes)?;
        if stored
            .log_id()
            .is_some_and(|l| l.index >= entry.log_id.index)
        {
            break;
        }
        if let EntryPayload::Membership(m) = entry.payload {
            membership = Some(m);
            break;
        }
    }
    Ok(Inspection {
        vote,
        last_log,
        membership: membership.unwrap_or_else(|| stored.membership().clone()),
    })
}

/// Reads the Raft state of the (stopped) member whose store is `db`.
pub fn inspect(db: &MetaDb) -> anyhow::Result<Inspection> {
    let txn = db.env.read_txn()?;
    Ok(inspect_txn(db, &txn)?)
}

/// Makes `me` the only voter, keeping `learners` (each a current member) as learners and
/// dropping every other member, by appending a membership entry in a new term, followed by an
/// entry that forgets pending admissions (so no dropped node is added back from its join).
/// Returns the log id of the membership entry.
pub fn rewrite_membership(db: &MetaDb, me: u64, learners: &BTreeSet<u64>) -> anyhow::Result<LogId> {
    let mut txn = db.env.write_txn()?;
    let state = inspect_txn(db, &txn)?;
    let Some(last) = state.last_log else {
        bail!(
            "this node's log is empty: it never joined a cluster, so there is nothing to recover"
        );
    };
    let nodes = state.nodes();
    let Some(my_info) = nodes.get(&me).cloned() else {
        bail!("this node is not a member of the membership it holds; it cannot lead a recovery");
    };
    let mut keep = BTreeMap::from([(me, my_info)]);
    for id in learners {
        let info = nodes
            .get(id)
            .with_context(|| format!("node {id:016x} is not a member"))?;
        keep.insert(*id, info.clone());
    }
    let term = state
        .vote
        .map_or(0, |v| v.leader_id().term)
        .max(last.leader_id.term)
        + 1;
    let membership = Membership::new(vec![BTreeSet::from([me])], keep);
    let log_id = LogId::new(CommittedLeaderId::new(term, me), last.index + 1);
    let entry = Entry {
        log_id,
        payload: EntryPayload::Membership(membership),
    };
    put_json(&db.log, &mut txn, &index_key(log_id.index), &entry)?;
    let forget = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, me), log_id.index + 1),
        payload: EntryPayload::Normal(Batch(vec![Command::ForgetAdmissions])),
    };
    put_json(&db.log, &mut txn, &index_key(forget.log_id.index), &forget)?;
    put_json(&db.raft, &mut txn, VOTE_KEY, &Vote::new(term, me))?;
    txn.commit()?;
    Ok(log_id)
}
