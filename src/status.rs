//! `hamster status`: asks the local running node over the control protocol (mTLS with the
//! node's own certificate) and prints what it says: sizes in binary units for people, raw
//! numbers with `--json` for scripts.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::path::Path;

use anyhow::bail;
use hamster_protocol::layout::Retired;
use hamster_protocol::placement::Layout;
use hamster_protocol::size::format_bytes;
use hamster_protocol::wire::{ControlRequest, ControlResponse, StatusReport};

/// Runs `hamster status`; with `watch`, redraws it every second until interrupted.
pub fn status(dir: &Path, json: bool, watch: bool) -> anyhow::Result<()> {
    loop {
        let report = match crate::local::ask(dir, &ControlRequest::Status)? {
            ControlResponse::Status(r) => r,
            _ => bail!("the node answered a status request with something else; run the same hamster version as the node"),
        };
        let text = if json {
            serde_json::to_string_pretty(&report)? + "\n"
        } else {
            render(&report)
        };
        if !watch {
            return print_out(&text).map(|_| ());
        }
        // Home the cursor and clear the screen, then draw: one redraw a second.
        if !print_out(&format!("\x1b[H\x1b[2J{text}"))? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Writes `text` to stdout; answers whether the reader is still there. A reader that stopped
/// reading (`hamster status | head -1`) has what it wanted: that ends the command quietly
/// rather than as a failure.
pub fn print_out(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e.into()),
        Err(_) => Ok(false),
        Ok(()) => Ok(true),
    }
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

fn write_layout(o: &mut String, layout: Option<&Layout>) -> std::fmt::Result {
    let Some(layout) = layout else {
        return writeln!(o, "layout:        (none stored yet)");
    };
    writeln!(
        o,
        "layout:        version {}, {} nodes",
        layout.version,
        layout.nodes.len()
    )?;
    match &layout.transition {
        Some(t) => writeln!(
            o,
            "transition:    {} (asked by {})",
            crate::layout_cli::progress_line(t),
            t.asked_by
        )?,
        None => writeln!(o, "transition:    (none)")?,
    }
    if let Some(t) = &layout.last {
        writeln!(o, "last change:   {}", crate::layout_cli::summary_line(t))?;
    }
    for (id, retired) in &layout.retired {
        if let Retired::Tombstoned { cluster_addr, .. } = retired {
            writeln!(o, "removed:       {id:016x} (was {cluster_addr})")?;
        }
    }
    Ok(())
}

fn render(r: &StatusReport) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut o, r);
    o
}

fn write_report(o: &mut String, r: &StatusReport) -> std::fmt::Result {
    writeln!(o, "node:          {}", r.node_id)?;
    writeln!(o, "cluster:       {}", r.cluster_id)?;
    writeln!(o, "version:       {}", r.version)?;
    writeln!(
        o,
        "leader:        {}",
        r.leader.as_deref().unwrap_or("(none)")
    )?;
    writeln!(o, "term:          {}", r.term)?;
    writeln!(o, "commit index:  {}", r.commit_index)?;
    writeln!(o, "applied index: {}", r.applied_index)?;
    writeln!(o, "last log:      {}", r.last_log_index)?;
    writeln!(
        o,
        "s3:            {}",
        r.s3_addr
            .as_deref()
            .map_or("(off)".to_string(), |a| format!("http://{a}"))
    )?;
    writeln!(o, "admin:         http://{}", r.admin_addr)?;
    writeln!(o, "cluster port:  {}", r.cluster_addr)?;
    let layout = r.layout();
    write_layout(o, layout.as_ref())?;
    if r.stale_shards > 0 {
        writeln!(
            o,
            "stale shards:  {} (moved away from nodes that did not answer; deleted there when they do)",
            r.stale_shards
        )?;
    }
    if let Some(scrub) = &r.scrub {
        crate::scrub_cli::write_scrub(o, scrub, r.now_ms)?;
    }
    if r.heal_soon > 0 {
        writeln!(
            o,
            "written degraded: {} keys this node stored while a home was down; their missing shards are rebuilt as soon as it answers",
            r.heal_soon
        )?;
    }
    writeln!(o, "members:")?;
    writeln!(
        o,
        "  {:<18} {:<8} {:<10} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {:>10} {:>6} {:>8} {:>10}",
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
        "weight",
        "shards",
        "shard data"
    )?;
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
        writeln!(
            o,
            "  {:<18} {:<8} {:<10} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {:>10} {:>6} {:>8} {:>10}{}",
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
            or_dash(m.shard_count),
            m.shard_bytes.map_or("-".to_string(), format_bytes),
            lead
        )?;
    }
    Ok(())
}
