//! `hamster status`: asks the local running node over the control protocol (mTLS with the
//! node's own certificate) and prints what it says: sizes in binary units for people, raw
//! numbers with `--json` for scripts.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::path::Path;

use anyhow::bail;
use hamster_protocol::wire::{ControlRequest, ControlResponse, StatusReport};

/// Runs `hamster status`.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let report = match crate::local::ask(dir, &ControlRequest::Status)? {
        ControlResponse::Status(r) => r,
        _ => bail!("the node answered a status request with something else; run the same hamster version as the node"),
    };
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    print_out(&text)
}

/// Writes `text` to stdout. A reader that stopped reading (`hamster status | head -1`) has
/// what it wanted: that ends the command quietly rather than as a failure.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
    writeln!(o, "members:")?;
    writeln!(
        o,
        "  {:<18} {:<8} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {:>10} {:>8} {:>10}",
        "id",
        "role",
        "state",
        "term",
        "last log",
        "address",
        "zone",
        "host",
        "capacity",
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
        writeln!(
            o,
            "  {:<18} {:<8} {:<11} {:>6} {:>9} {:<22} {:<10} {:<16} {:>10} {:>8} {:>10}{}",
            m.node_id,
            m.role,
            m.state.as_deref().unwrap_or("-"),
            or_dash(m.term),
            or_dash(m.last_log_index),
            m.cluster_addr,
            m.zone,
            m.host,
            human_bytes(m.capacity_bytes),
            or_dash(m.shard_count),
            m.shard_bytes.map_or("-".to_string(), human_bytes),
            lead
        )?;
    }
    Ok(())
}

/// Binary units from KiB up.
const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// Below this many of a unit a size keeps one decimal (`12.5 GiB`); from it on whole units
/// say enough (`252 GiB`).
const DECIMAL_BELOW_UNITS: u128 = 100;

/// `bytes` for people: `512 B`, `1.5 KiB`, `12.3 GiB`, `252 GiB` (binary units, rounded to
/// nearest, a trailing `.0` left out). Integer arithmetic, so the same number always prints
/// the same.
pub fn human_bytes(bytes: u64) -> String {
    let bytes = u128::from(bytes);
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0usize;
    let mut scale: u128 = 1024;
    while unit + 1 < UNITS.len() && bytes >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    let tenths = (bytes * 10 + scale / 2) / scale;
    if tenths >= DECIMAL_BELOW_UNITS * 10 {
        return format!("{} {}", (bytes + scale / 2) / scale, UNITS[unit]);
    }
    match tenths % 10 {
        0 => format!("{} {}", tenths / 10, UNITS[unit]),
        d => format!("{}.{d} {}", tenths / 10, UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    /// Sizes read as people write them, in binary units.
    #[test]
    fn human_sizes() {
        let gib = 1u64 << 30;
        for (bytes, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 * 1024 + 300 * 1024, "10.3 MiB"),
            (gib, "1 GiB"),
            (252 * gib + gib / 3, "252 GiB"),
            (99 * gib + gib * 97 / 100, "100 GiB"),
            (3 << 40, "3 TiB"),
            (u64::MAX, "16 EiB"),
        ] {
            assert_eq!(human_bytes(bytes), want, "{bytes} bytes");
        }
    }
}
