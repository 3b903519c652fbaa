//! `hamster recover --data DIR`: the explicit exit from permanent quorum loss
//! (docs/operations.md). Run on a stopped surviving member, it asks every other member for its
//! state, refuses while a quorum of voters can still be reached (the cluster heals itself) or
//! while a reachable member holds a longer log (recover there instead), and otherwise rewrites
//! this node's membership: it becomes the only voter, reachable members stay on as learners
//! (the steward promotes them once they have caught up), unreachable ones are dropped. Every
//! log entry this node has is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use hamster_actors::continuity;
use hamster_actors::control;
use hamster_actors::node::{load_node, DataDir, NodeFile};
use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::recover::{inspect, rewrite_membership};
use hamster_actors::tls;
use hamster_protocol::wire::{ControlRequest, ControlResponse, StatusReport};

/// How long each member gets to answer.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// A member's data dir, opened by a repair verb that runs on the stopped node: its identity,
/// its certificate (to ask the others), and a runtime to ask them on.
pub struct StoppedMember {
    /// The data dir.
    pub dir: DataDir,
    /// `node.json`.
    pub node: NodeFile,
    /// The node's certificate and key.
    pub material: tls::TlsMaterial,
    /// A one-thread runtime for the verb's requests.
    pub rt: tokio::runtime::Runtime,
}

impl StoppedMember {
    /// Opens `dir`, the data dir of `whose` (named in the error when it is not one).
    pub fn open(dir: &Path, whose: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = DataDir::new(dir);
        if !dir.is_initialised() {
            bail!(
                "{} is not a hamster data dir (no node.json); pass the data dir of {whose} with --data",
                dir.root.display()
            );
        }
        let node = load_node(&dir)?;
        let material = tls::load_tls_dir(&dir.tls())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(StoppedMember {
            dir,
            node,
            material,
            rt,
        })
    }

    /// Refuses while the node still answers on its cluster port; `verb` names the command.
    pub async fn check_stopped(&self, verb: &str) -> anyhow::Result<()> {
        if probe(&self.node.cluster_addr, &self.material)
            .await
            .is_some()
        {
            bail!(
                "the node is running on {}; stop it first (systemctl stop hamster), then run {verb}",
                self.node.cluster_addr
            );
        }
        Ok(())
    }
}

/// Runs `hamster recover`.
pub fn recover(dir: &Path, confirmed: bool) -> anyhow::Result<()> {
    let member = StoppedMember::open(dir, "a surviving member")?;
    member.rt.block_on(async {
        member.check_stopped("recover").await?;
        let StoppedMember {
            dir,
            node,
            material,
            ..
        } = &member;
        let db = MetaDb::open(&dir.meta(), hamster_actors::raft::db::META_MAP_BYTES)
            .await
            .context("cannot open the metadata store")?;
        let state = inspect(&db)?;
        let me = node.node_id;
        let mine = state.last_log.map_or(0, |l| l.index);
        let others: BTreeMap<u64, String> = state
            .nodes()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, n)| (id, n.cluster_addr))
            .collect();
        let asks = others.iter().map(|(id, addr)| {
            let material = &material;
            async move { (*id, probe(addr, material).await) }
        });
        let answers: BTreeMap<u64, Option<StatusReport>> =
            futures_util::future::join_all(asks).await.into_iter().collect();
        let reachable: BTreeSet<u64> = answers
            .iter()
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| *id)
            .chain([me])
            .collect();
        let quorum = state
            .configs()
            .iter()
            .all(|c| c.iter().filter(|v| reachable.contains(v)).count() * 2 > c.len());
        let voters = state.voters();
        let up = voters.iter().filter(|v| reachable.contains(v)).count();
        if quorum {
            bail!(
                "{up} of {} voters (counting this node) are reachable, a quorum: the cluster elects a leader by itself once this node starts; recover is only for a majority lost for good",
                voters.len()
            );
        }
        if let Some((id, r)) = answers
            .iter()
            .filter_map(|(id, r)| r.as_ref().map(|r| (id, r)))
            .find(|(_, r)| r.last_log_index > mine)
        {
            bail!(
                "node {id:016x} at {} has a longer log ({} entries, this node {mine}); run recover on that node instead, and this one will follow it",
                r.cluster_addr,
                r.last_log_index
            );
        }
        let learners: BTreeSet<u64> = reachable.iter().copied().filter(|id| *id != me).collect();
        let dropped: Vec<String> = others
            .keys()
            .filter(|id| !reachable.contains(id))
            .map(|id| format!("{id:016x}"))
            .collect();
        if !dropped.is_empty() && !confirmed {
            bail!(
                "recover would drop {} unreachable member(s) ({}). A dropped member must never run on its old data dir again: until it reaches a member of the recovered cluster (which stops it), it and other dropped members may elect a leader of their own and accept writes that are then lost. Wipe each dropped member's data dir and join it again with a token. Re-run with --i-understand-dropped-nodes-must-be-wiped to go ahead",
                dropped.len(),
                dropped.join(", ")
            );
        }
        let epoch = continuity::load_epoch(dir)? + 1;
        let log_id = rewrite_membership(&db, me, &learners)?;
        // The new epoch is recorded before the node can start: from its first RPC on, members
        // of the old epoch (the dropped ones) are refused and told to stop.
        continuity::save_epoch(dir, epoch)
            .with_context(|| format!("cannot record the new cluster epoch in {}", dir.root.display()))?;
        for id in &learners {
            let Some(addr) = others.get(id) else { continue };
            let adopt = ControlRequest::AdoptEpoch { epoch };
            let ask = control::control_request(addr, material, &adopt);
            match tokio::time::timeout(PROBE_WAIT, ask).await {
                Ok(Ok(ControlResponse::EpochAdopted { .. })) => {}
                _ => println!(
                    "warning: member {id:016x} at {addr} did not confirm the new epoch; it learns it from this node once started"
                ),
            }
        }
        println!(
            "hamster: membership rewritten at log index {} (term {}): node {} is the only voter, cluster epoch {epoch}",
            log_id.index,
            log_id.leader_id.term,
            node.node_id_hex()
        );
        if !learners.is_empty() {
            let kept: Vec<String> = learners.iter().map(|id| format!("{id:016x}")).collect();
            println!("kept as learners (promoted once caught up): {}", kept.join(", "));
        }
        println!("dropped: {}", dropped.join(", "));
        println!(
            "every one of this node's {mine} log entries is kept. Start it now. A dropped node that is started on its old data dir is refused by this cluster and stops once it reaches any member; wipe it and join again with a token from `hamster token`"
        );
        Ok(())
    })
}

/// The member at `addr`'s own status, or `None` if it does not answer in time.
async fn probe(addr: &str, material: &tls::TlsMaterial) -> Option<StatusReport> {
    let ask = control::control_request(addr, material, &ControlRequest::NodeStatus);
    match tokio::time::timeout(PROBE_WAIT, ask).await {
        Ok(Ok(ControlResponse::Status(r))) => Some(r),
        _ => None,
    }
}
