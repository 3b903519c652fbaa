//! `hamster recover-meta --data DIR`: the way back for a member whose metadata store was lost
//! or damaged while its shard files survived (docs/operations.md, "Lost metadata"). Run on the
//! stopped node, it asks a running member to take this node out of the group and add it back
//! as a learner that starts from nothing, moves the damaged store aside, and marks the data dir
//! so that the next `serve` fills an empty store from the leader instead of refusing. The
//! shards stay where they are; the orphan sweep waits until the rebuilt store has applied as
//! far as the watermark recorded beside them. A one-node cluster has no other copy of its
//! metadata, so this refuses there and points to the backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use hamster_actors::continuity::{self, StartMode};
use hamster_actors::control;
use hamster_actors::node::DataDir;

use crate::recover::StoppedMember;
use hamster_protocol::wire::{ControlRequest, ControlResponse};

/// How long a member gets to re-admit this node (two membership changes).
const READMIT_WAIT: Duration = Duration::from_secs(60);

/// Runs `hamster recover-meta`.
pub fn recover_meta(dir: &Path, peers: &[String]) -> anyhow::Result<()> {
    let member = StoppedMember::open(dir, "the member that lost its metadata")?;
    member.rt.block_on(async {
        member.check_stopped("recover-meta").await?;
        let StoppedMember {
            dir,
            node,
            material,
            ..
        } = &member;
        if continuity::check_meta(dir, &node.cluster_id).await.ok() == Some(StartMode::Restart) {
            bail!(
                "the metadata store {} looks intact, so there is nothing to recover; if you know it is damaged, move it aside first and run recover-meta again",
                dir.meta().display()
            );
        }
        let mut asked: Vec<String> = peers.to_vec();
        if asked.is_empty() {
            if let Some(w) = continuity::load_watermark(dir)? {
                asked = w.members.into_iter().filter(|a| *a != node.cluster_addr).collect();
                if asked.is_empty() {
                    bail!(
                        "this node was the cluster's only member, so no other copy of its metadata exists; restore {} from a backup (docs/operations.md, \"Lost metadata\")",
                        dir.meta().display()
                    );
                }
            } else {
                bail!(
                    "this data dir records no other members; name a running member's cluster address with --peer HOST:PORT (on a one-node cluster, restore {} from a backup)",
                    dir.meta().display()
                );
            }
        }
        let mut last = String::from("no member answered");
        let mut leader = None;
        for addr in &asked {
            let req = ControlRequest::ReadmitMember {
                node_id: node.node_id_hex(),
            };
            let ask = control::control_request(addr, material, &req);
            match tokio::time::timeout(READMIT_WAIT, ask).await {
                Ok(Ok(ControlResponse::Readmitted { leader: l, .. })) => {
                    leader = Some(l);
                    break;
                }
                Ok(Ok(ControlResponse::Error { message })) => last = format!("{addr}: {message}"),
                Ok(Ok(other)) => last = format!("{addr}: unexpected answer {other:?}"),
                Ok(Err(e)) => last = format!("{addr}: {e:#}"),
                Err(_) => last = format!("{addr}: no answer within {} s", READMIT_WAIT.as_secs()),
            }
        }
        let Some(leader) = leader else {
            bail!("no member re-admitted this node ({last}); start the other members (a majority of voters must run) and retry");
        };
        let aside = move_aside(dir)?;
        continuity::allow_rebuild(dir)?;
        println!(
            "hamster: node {} is a learner of cluster {} again (re-admitted by leader {leader})",
            node.node_id_hex(),
            node.cluster_id
        );
        if let Some(path) = aside {
            println!("the damaged metadata store was moved to {}; delete it once the node serves again", path.display());
        }
        println!(
            "start the node now: it fetches the metadata from the leader, keeps its shard files, and becomes a voter again once caught up"
        );
        Ok(())
    })
}

/// Moves `meta/` aside (if present) to `meta.lost-N`, the first free N.
fn move_aside(dir: &DataDir) -> anyhow::Result<Option<PathBuf>> {
    let meta = dir.meta();
    if !meta.exists() {
        return Ok(None);
    }
    let mut n = 1;
    let target = loop {
        let t = dir.root.join(format!("meta.lost-{n}"));
        if !t.exists() {
            break t;
        }
        n += 1;
    };
    std::fs::rename(&meta, &target).with_context(|| {
        format!(
            "cannot move {} aside to {}",
            meta.display(),
            target.display()
        )
    })?;
    Ok(Some(target))
}
