//! `hamster status`: asks the local running node over the control protocol (mTLS with the
//! node's own certificate) and prints what it says.

use std::path::Path;

use anyhow::bail;
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
    println!("members:");
    println!(
        "  {:<18} {:<8} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} capacity",
        "id", "role", "state", "term", "last log", "address", "zone", "host"
    );
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for m in &r.members {
        let lead = if r.leader.as_deref() == Some(m.node_id.as_str()) {
            " (leader)"
        } else {
            ""
        };
        println!(
            "  {:<18} {:<8} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {}{}",
            m.node_id,
            m.role,
            m.state.as_deref().unwrap_or("-"),
            or_dash(m.term),
            or_dash(m.last_log_index),
            m.cluster_addr,
            m.zone,
            m.host,
            m.capacity_bytes,
            lead
        );
    }
}
