//! The membership steward: on every node, once a second, it asks the local Raft member for the
//! membership as the leader sees it and, when this node leads, makes the one change the policy
//! in [`hamster_protocol::membership`] asks for: add an admitted joiner as a learner, promote a
//! caught-up learner while voters are fewer than five, or replace a voter that has been silent
//! for `down_after` by a caught-up learner. On followers it does nothing.
//!
//! The data-plane layout is not the steward's: the layout manager ([`crate::layout`]) follows
//! the membership it produces.
//!
//! One change at a time (openraft refuses a second while one is in flight); a failed change is
//! simply planned again on a later tick.

use std::time::Duration;

use actix::prelude::*;
use hamster_protocol::membership::{plan, Policy, Step};
use tracing::{debug, info, warn};

use crate::peer::node_id_hex;
use crate::raft::node::{AddLearner, ChangeMembership, MembershipView, RaftNode};

/// How often the steward looks at the membership.
pub const STEWARD_TICK: Duration = Duration::from_secs(1);

/// Default silence after which a voter is replaced (when a learner can take over).
pub const VOTER_DOWN_AFTER_DEFAULT: Duration = Duration::from_secs(60);

/// The steward actor; see the module docs.
pub struct Steward {
    node: Addr<RaftNode>,
    policy: Policy,
    busy: bool,
}

impl Steward {
    /// A steward for `node` that replaces voters silent for `down_after`.
    pub fn new(node: Addr<RaftNode>, down_after: Duration) -> Self {
        Steward {
            node,
            policy: Policy {
                down_after_ms: u64::try_from(down_after.as_millis()).unwrap_or(u64::MAX),
            },
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let node = self.node.clone();
        let policy = self.policy;
        let work = async move {
            let Ok(Some(situation)) = node.send(MembershipView).await else {
                return;
            };
            let Some(step) = plan(&situation, &policy) else {
                return;
            };
            match step {
                Step::AddLearner(id, info) => {
                    let who = node_id_hex(id);
                    match node.send(AddLearner { id, node: info }).await {
                        Ok(Ok(())) => info!(node = %who, "admitted node added as a learner"),
                        Ok(Err(e)) => {
                            debug!(node = %who, error = %e, "adding a learner failed; will retry")
                        }
                        Err(_) => {}
                    }
                }
                Step::SetVoters(voters) => {
                    let before: Vec<String> = situation
                        .members
                        .iter()
                        .filter(|(_, m)| m.voter)
                        .map(|(id, _)| node_id_hex(*id))
                        .collect();
                    let after: Vec<String> = voters.iter().map(|id| node_id_hex(*id)).collect();
                    match node.send(ChangeMembership { voters }).await {
                        Ok(Ok(())) => info!(?before, ?after, "voters changed"),
                        Ok(Err(e)) => {
                            warn!(?before, ?after, error = %e, "changing voters failed; will retry")
                        }
                        Err(_) => {}
                    }
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(|_, act, _| act.busy = false));
    }
}

impl Actor for Steward {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(STEWARD_TICK, |act, ctx| act.tick(ctx));
    }
}

impl Supervised for Steward {
    /// The tick that was out died with the old context: let the next one run.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.busy = false;
    }
}
