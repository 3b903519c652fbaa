//! `hamster drain`, `undrain`, `remove` and `optimize`: layout changes asked of the local node,
//! which passes them to the metadata leader's layout manager. `drain` and `optimize` then
//! follow the transition until it finishes, with a progress line (parts, bytes moved, rate,
//! ETA); `--detach` returns at once. Interrupting the CLI never stops a transition.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use hamster_actors::layout::shrink_trade;
use hamster_protocol::layout::{Retired, Transition};
use hamster_protocol::placement::{self, Layout};
use hamster_protocol::size::format_bytes;
use hamster_protocol::wire::{ControlRequest, ControlResponse, LayoutRequest, StatusReport};

use crate::local;

/// How often a followed transition is looked at.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Looks between two progress lines when stdout is not a terminal (one every 10 s).
const LOG_EVERY_LOOKS: u32 = 10;

fn status(dir: &Path) -> anyhow::Result<StatusReport> {
    match local::ask(dir, &ControlRequest::Status)? {
        ControlResponse::Status(r) => Ok(r),
        _ => bail!("the node answered a status request with something else; run the same hamster version as the node"),
    }
}

/// The member `given` names: its full 16-digit id or a prefix of it that only it has.
fn resolve(report: &StatusReport, given: &str) -> anyhow::Result<String> {
    let given = given.trim().to_ascii_lowercase();
    let mut known: Vec<&str> = report.members.iter().map(|m| m.node_id.as_str()).collect();
    let layout = report.layout();
    let retired: Vec<String> = layout
        .iter()
        .flat_map(|l| l.retired.keys())
        .map(|id| format!("{id:016x}"))
        .collect();
    known.extend(retired.iter().map(String::as_str));
    known.sort_unstable();
    known.dedup();
    let found: Vec<&str> = known
        .into_iter()
        .filter(|id| id.starts_with(&given))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => bail!("no member's id starts with {given:?}; `hamster status` lists them"),
        _ => bail!(
            "{given:?} names more than one member ({}); give more digits",
            found.join(", ")
        ),
    }
}

fn change(dir: &Path, change: LayoutRequest) -> anyhow::Result<String> {
    match local::ask(dir, &ControlRequest::ChangeLayout { change })? {
        ControlResponse::LayoutChanged { message } => Ok(message),
        _ => bail!("the node answered a layout change with something else; run the same hamster version as the node"),
    }
}

/// Asks `question` on a terminal; `false` on anything but y/yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs `hamster drain NODE`.
pub fn drain(
    dir: &Path,
    node: &str,
    yes: bool,
    force: bool,
    detach: bool,
    json: bool,
) -> anyhow::Result<()> {
    let report = status(dir)?;
    let node_id = resolve(&report, node)?;
    let layout = report.layout();
    let nodes = layout.as_ref().map_or(0, |l| l.nodes.len());
    if let Some(why) = wont_fit(&report, layout.as_ref(), &node_id) {
        bail!("{why}");
    }
    let mut shrink = yes;
    if let Some(trade) = shrink_trade(nodes, nodes.saturating_sub(1)) {
        if !yes {
            if !std::io::stdin().is_terminal() {
                bail!("this drain is a shrink: {trade}; run it again with --yes to accept");
            }
            println!("This drain is a shrink: {trade}.");
            if !confirm("Go ahead?")? {
                bail!("nothing changed");
            }
            shrink = true;
        }
    }
    let message = change(
        dir,
        LayoutRequest::Drain {
            node_id,
            shrink,
            force,
        },
    )?;
    finish(dir, &message, detach, json)
}

/// Why the nodes left after draining `node_id` could not hold what is stored, if they could
/// not: their declared capacities against the shard bytes the members report, scaled by the
/// profile change a shrink makes. `None` when it fits or a capacity or count is unknown.
fn wont_fit(report: &StatusReport, layout: Option<&Layout>, node_id: &str) -> Option<String> {
    let layout = layout?;
    let id = u64::from_str_radix(node_id, 16).ok()?;
    let mut stored: u128 = 0;
    for m in &report.members {
        stored += u128::from(m.shard_bytes?);
    }
    let mut room: u128 = 0;
    for m in &report.members {
        let mid = u64::from_str_radix(&m.node_id, 16).ok()?;
        if mid == id || !layout.nodes.contains_key(&mid) {
            continue;
        }
        if m.capacity_bytes == 0 {
            return None;
        }
        room += u128::from(m.capacity_bytes);
    }
    let (before, after) = (
        placement::profile_for_nodes(layout.nodes.len()),
        placement::profile_for_nodes(layout.nodes.len().saturating_sub(1)),
    );
    // Stored bytes per data byte is (k + m) / k; a shrink changes it.
    let need = stored * u128::from(after.k + after.m) * u128::from(before.k)
        / (u128::from(after.k) * u128::from(before.k + before.m)).max(1);
    (need > room).then(|| {
        format!(
            "the nodes left would need about {} for the shards stored but offer {}; add a node first",
            format_bytes(u64::try_from(need).unwrap_or(u64::MAX)),
            format_bytes(u64::try_from(room).unwrap_or(u64::MAX))
        )
    })
}

/// Runs `hamster undrain NODE`.
pub fn undrain(dir: &Path, node: &str, detach: bool, json: bool) -> anyhow::Result<()> {
    let report = status(dir)?;
    let node_id = resolve(&report, node)?;
    let message = change(dir, LayoutRequest::Undrain { node_id })?;
    finish(dir, &message, detach, json)
}

/// Runs `hamster optimize`.
pub fn optimize(dir: &Path, detach: bool, json: bool) -> anyhow::Result<()> {
    let message = change(dir, LayoutRequest::Optimize)?;
    finish(dir, &message, detach, json)
}

/// Runs `hamster remove NODE`; with `force`, a dead node that is not drained is drained
/// first (its shards rebuilt from the others), then removed.
pub fn remove(dir: &Path, node: &str, force: bool, yes: bool, json: bool) -> anyhow::Result<()> {
    let report = status(dir)?;
    let node_id = resolve(&report, node)?;
    let id = u64::from_str_radix(&node_id, 16).map_err(|_| anyhow!("bad node id {node_id}"))?;
    let layout = report.layout();
    let drained = layout.as_ref().is_some_and(|l| l.retired.contains_key(&id));
    if !drained && force {
        let dead = report
            .members
            .iter()
            .find(|m| m.node_id == node_id)
            .is_none_or(|m| m.state.as_deref() == Some("unreachable"));
        if !dead {
            bail!("node {node_id} is up; drain it (hamster drain {node_id}) rather than forcing its removal");
        }
        let draining = layout
            .as_ref()
            .and_then(|l| l.transition.as_ref())
            .and_then(|t| t.op.emptied())
            == Some(id);
        if !draining {
            drain(dir, &node_id, yes, false, false, json)?;
        } else {
            finish(dir, "the node is draining", false, json)?;
        }
    }
    let message = change(dir, LayoutRequest::Remove { node_id })?;
    if json {
        println!("{}", serde_json::json!({ "message": message }));
    } else {
        println!("{message}");
    }
    Ok(())
}

fn finish(dir: &Path, message: &str, detach: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::json!({ "message": message }));
    } else {
        println!("{message}");
    }
    if detach {
        return Ok(());
    }
    follow(dir, json)
}

/// One line for a transition that closed: what it did and what it moved, in how long.
pub fn summary_line(t: &Transition) -> String {
    let p = &t.progress;
    let secs = p.updated_ms.saturating_sub(t.started_ms) / 1000;
    let mut line = format!(
        "{} (layout version {}): {} parts moved, {} re-encoded, {} in {} shards, in {}s",
        t.op.describe(),
        t.id,
        p.parts_moved,
        p.parts_reencoded,
        format_bytes(p.bytes_moved),
        p.shards_moved,
        secs
    );
    if p.parts_lost > 0 {
        line.push_str(&format!(", {} parts lost", p.parts_lost));
    }
    line
}

/// One line of progress for an open transition.
pub fn progress_line(t: &Transition) -> String {
    let p = &t.progress;
    let elapsed_ms = p.updated_ms.saturating_sub(t.started_ms).max(1);
    let rate = p.bytes_moved.saturating_mul(1000) / elapsed_ms;
    let mut line = format!(
        "{}: pass {}, {} parts looked at",
        t.op.describe(),
        p.pass.max(1),
        p.parts_seen
    );
    if p.parts_total > 0 {
        line.push_str(&format!(" of about {}", p.parts_total));
    }
    line.push_str(&format!(
        ", {} moved, {} re-encoded, {} in {} shards, {}/s",
        p.parts_moved,
        p.parts_reencoded,
        format_bytes(p.bytes_moved),
        p.shards_moved,
        format_bytes(rate)
    ));
    if p.parts_failed > 0 {
        line.push_str(&format!(", {} waiting", p.parts_failed));
    }
    if p.parts_lost > 0 {
        line.push_str(&format!(", {} lost", p.parts_lost));
    }
    if p.parts_total > p.parts_seen && p.parts_seen > 0 && p.pass <= 1 {
        let left =
            (p.parts_total - p.parts_seen) as u128 * elapsed_ms as u128 / p.parts_seen as u128;
        line.push_str(&format!(", ETA {}s", left / 1000));
    }
    line
}

/// Prints progress until the open transition closes.
fn follow(dir: &Path, json: bool) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut looks = 0u32;
    loop {
        let report = status(dir)?;
        let Some(layout) = report.layout() else {
            bail!("the node reports no layout");
        };
        let Some(t) = layout.transition else {
            if terminal {
                println!();
            }
            let drained: Vec<String> = layout
                .retired
                .iter()
                .filter(|(_, r)| matches!(r, Retired::Drained { .. }))
                .map(|(id, _)| format!("{id:016x}"))
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "finished": true, "layout_version": layout.version, "drained": drained })
                );
            } else {
                match &layout.last {
                    Some(t) => println!("done: {}", summary_line(t)),
                    None => println!("done: layout version {} holds every part", layout.version),
                }
            }
            return Ok(());
        };
        let line = progress_line(&t);
        if terminal {
            print!("\r\x1b[2K{line}");
            std::io::stdout().flush()?;
        } else if looks.is_multiple_of(LOG_EVERY_LOOKS) {
            if json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!("{line}");
            }
        }
        looks = looks.wrapping_add(1);
        std::thread::sleep(FOLLOW_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamster_protocol::wire::MemberStatus;

    fn report(members: &[(u64, u64, u64)]) -> (StatusReport, Layout) {
        let members: Vec<MemberStatus> = members
            .iter()
            .map(|&(id, capacity, stored)| MemberStatus {
                node_id: format!("{id:016x}"),
                cluster_addr: String::new(),
                role: "voter".into(),
                zone: String::new(),
                host: String::new(),
                capacity_bytes: capacity,
                state: None,
                term: None,
                last_log_index: None,
                shard_count: Some(1),
                shard_bytes: Some(stored),
            })
            .collect();
        let layout = Layout {
            version: 1,
            nodes: placement::layout_nodes(members.iter().map(|m| {
                let id = u64::from_str_radix(&m.node_id, 16).unwrap();
                (id, "", "", m.capacity_bytes)
            })),
            ..Layout::default()
        };
        let report = StatusReport {
            node_id: String::new(),
            cluster_id: String::new(),
            version: String::new(),
            members,
            leader: None,
            term: 0,
            commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            s3_addr: None,
            admin_addr: String::new(),
            cluster_addr: String::new(),
            layout: None,
            stale_shards: 0,
            scrub: None,
            now_ms: 0,
            heal_soon: 0,
        };
        (report, layout)
    }

    #[test]
    fn a_drain_the_others_cannot_hold_is_refused() {
        const GIB: u64 = 1 << 30;
        // Seven nodes (4+2) of 10 GiB, 6 GiB stored on each: draining one leaves 60 GiB for 42.
        let seven: Vec<(u64, u64, u64)> = (1..=7).map(|id| (id, 10 * GIB, 6 * GIB)).collect();
        let (r, l) = report(&seven);
        assert_eq!(wont_fit(&r, Some(&l), &format!("{:016x}", 3)), None);
        // Nine GiB on each: 63 GiB stored does not fit in 60.
        let full: Vec<(u64, u64, u64)> = (1..=7).map(|id| (id, 10 * GIB, 9 * GIB)).collect();
        let (r, l) = report(&full);
        let why = wont_fit(&r, Some(&l), &format!("{:016x}", 3)).unwrap();
        assert!(why.contains("60 GiB"), "{why}");
        // A shrink 6 → 5 (4+2 → 3+2) stores 5/3 rather than 6/4 bytes per data byte: the 50 GiB
        // stored becomes about 55.6 GiB, more than the five 10 GiB nodes left can hold.
        let six: Vec<(u64, u64, u64)> = (1..=6)
            .map(|id| (id, 10 * GIB, 8 * GIB + GIB / 3))
            .collect();
        let (r, l) = report(&six);
        assert!(wont_fit(&r, Some(&l), &format!("{:016x}", 1)).is_some());
        // Unknown capacity: no judgement.
        let unknown: Vec<(u64, u64, u64)> = (1..=6).map(|id| (id, 0, 9 * GIB)).collect();
        let (r, l) = report(&unknown);
        assert_eq!(wont_fit(&r, Some(&l), &format!("{:016x}", 1)), None);
    }
}
