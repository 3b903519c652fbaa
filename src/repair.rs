//! `hamster repair`: asks the local node to verify every shard and rebuild the bad ones, then
//! prints what it found. Exits non-zero when data is lost or a rebuild did not complete, so a
//! script notices.

use std::path::Path;

use anyhow::bail;
use hamster_protocol::wire::{ControlRequest, ControlResponse};

/// Runs a repair sweep through the node serving `dir`.
pub fn repair(dir: &Path, bucket: Option<String>, json: bool) -> anyhow::Result<()> {
    let report = match crate::local::ask(dir, &ControlRequest::Repair { bucket })? {
        ControlResponse::Repaired(r) => r,
        _ => bail!("the node answered a repair request with something else; run the same hamster version as the node"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("objects:             {}", report.objects);
        println!("parts:               {}", report.parts);
        println!("shards verified:     {}", report.shards_verified);
        println!("shards rebuilt:      {}", report.shards_rebuilt);
        println!("shards unreachable:  {}", report.shards_unreachable);
        for line in &report.unrecoverable {
            println!("unrecoverable: {line}");
        }
        for line in &report.failed {
            println!("not finished:  {line}");
        }
    }
    if !report.unrecoverable.is_empty() {
        bail!(
            "{} part(s) have fewer verified shards than they need; their data cannot be rebuilt unless an unreachable node comes back",
            report.unrecoverable.len()
        );
    }
    if !report.failed.is_empty() {
        bail!(
            "{} part(s) were not fully rebuilt; run repair again",
            report.failed.len()
        );
    }
    Ok(())
}
