//! `hamster status`: asks the local running node over the control protocol (mTLS with the
//! node's own certificate) and prints what it says.

use std::path::Path;

use anyhow::bail;
use hamster_protocol::layout::Retired;
use hamster_protocol::placement::Layout;
use hamster_protocol::size::format_bytes;
use hamster_protocol::wire::{ControlRequest, ControlResponse, StatusReport};

/// Runs `hamster status`.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let report = match crate::local::ask(dir, &ControlRequest::Status)? {
        ControlResponse::Status(r) => r,
        _ => bail!("the node answered a status request with something else; run the same hamster version as the node"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// A member's place in the data-plane layout: `up`, `down`, `draining`, `drained`,
/// `tombstoned`, or `joining` before the layout lists it.
pub fn layout_state(
    layout: Option<&Layout>,
    node_id: &str,
    raft_state: Option<&str>,
) -> &'static str {
    let Ok(id) = u64::from_str_radix(node_id, 16) else {
        return "-";
    };
    let Some(layout) = layout else {
        return "-";
    };
    match layout.retired.get(&id) {
        Some(Retired::Tombstoned { .. }) => return "tombstoned",
        Some(Retired::Drained { .. }) => return "drained",
        None => {}
    }
    if layout.transition.as_ref().and_then(|t| t.op.emptied()) == Some(id) {
        return "draining";
    }
    if !layout.nodes.contains_key(&id) {
        return "joining";
    }
    if raft_state == Some("unreachable") {
        "down"
    } else {
        "up"
    }
}

fn print_layout(layout: Option<&Layout>) {
    let Some(layout) = layout else {
        println!("layout:        (none stored yet)");
        return;
    };
    println!(
        "layout:        version {}, {} nodes",
        layout.version,
        layout.nodes.len()
    );
    match &layout.transition {
        Some(t) => println!(
            "transition:    {} (asked by {})",
            crate::layout_cli::progress_line(t),
            t.asked_by
        ),
        None => println!("transition:    (none)"),
    }
    for (id, retired) in &layout.retired {
        if let Retired::Tombstoned { cluster_addr, .. } = retired {
            println!("removed:       {id:016x} (was {cluster_addr})");
        }
    }
}

fn print_report(r: &StatusReport) {
    println!("node:          {}", r.node_id);
    println!("cluster:       {}", r.cluster_id);
    println!("version:       {}", r.version);
    println!("leader:        {}", r.leader.as_deref().unwrap_or("(none)"));
    println!("term:          {}", r.term);
    println!("commit index:  {}", r.commit_index);
    println!("applied index: {}", r.applied_index);
    println!("last log:      {}", r.last_log_index);
    println!(
        "s3:            {}",
        r.s3_addr
            .as_deref()
            .map_or("(off)".to_string(), |a| format!("http://{a}"))
    );
    println!("admin:         http://{}", r.admin_addr);
    println!("cluster port:  {}", r.cluster_addr);
    let layout = r.layout();
    print_layout(layout.as_ref());
    println!("members:");
    println!(
        "  {:<18} {:<8} {:<10} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {:>11} {:>6}",
        "id",
        "role",
        "STATE",
        "raft",
        "term",
        "last log",
        "address",
        "zone",
        "host",
        "capacity",
        "weight"
    );
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for m in &r.members {
        let lead = if r.leader.as_deref() == Some(m.node_id.as_str()) {
            " (leader)"
        } else {
            ""
        };
        let weight = u64::from_str_radix(&m.node_id, 16)
            .ok()
            .and_then(|id| layout.as_ref()?.nodes.get(&id).map(|n| n.weight))
            .map_or("-".to_string(), |w| w.to_string());
        println!(
            "  {:<18} {:<8} {:<10} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {:>11} {:>6}{}",
            m.node_id,
            m.role,
            layout_state(layout.as_ref(), &m.node_id, m.state.as_deref()),
            m.state.as_deref().unwrap_or("-"),
            or_dash(m.term),
            or_dash(m.last_log_index),
            m.cluster_addr,
            m.zone,
            m.host,
            format_bytes(m.capacity_bytes),
            weight,
            lead
        );
    }
}
