//! `hamster scrub`: shows the background scrubber's state (pace, the pass in progress, the last
//! complete pass, shards healed) and passes an operator's switch on: `--now` begins a pass at
//! once (the pace still applies), `--pause` and `--resume` stop and restart it cluster-wide.
//! The durability lines are shared with `hamster status`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;
use hamster_protocol::scrub::{Health, ScrubState, ScrubSwitch};
use hamster_protocol::size::format_bytes;
use hamster_protocol::wire::{ControlRequest, ControlResponse, ScrubReport};

/// Runs `hamster scrub`.
pub fn scrub(dir: &Path, switch: Option<ScrubSwitch>, json: bool) -> anyhow::Result<()> {
    let report = match crate::local::ask(dir, &ControlRequest::Scrub { switch })? {
        ControlResponse::Scrub(r) => r,
        _ => bail!("the node answered a scrub request with something else; run the same hamster version as the node"),
    };
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report, switch)
    };
    crate::status::print_out(&text).map(|_| ())
}

fn render(r: &ScrubReport, switch: Option<ScrubSwitch>) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_all(&mut o, r, switch);
    o
}

fn write_all(o: &mut String, r: &ScrubReport, switch: Option<ScrubSwitch>) -> std::fmt::Result {
    match switch {
        Some(ScrubSwitch::Now) => writeln!(o, "a pass begins as soon as the leader's scrubber looks (within a second, unless paused, held or a layout transition is open)")?,
        Some(ScrubSwitch::Pause) => writeln!(o, "scrubber paused cluster-wide; `hamster scrub --resume` starts it again")?,
        Some(ScrubSwitch::Resume) => writeln!(o, "scrubber resumed")?,
        None => {}
    }
    writeln!(
        o,
        "pace:          {}/s of shard data per node; a pass begins at most every {}",
        format_bytes(r.bytes_per_s),
        duration(r.every_ms)
    )?;
    write_scrub(o, &r.state, r.now_ms)
}

/// The scrubber's lines of `hamster status` and `hamster scrub`: its pass, what the last
/// complete pass found, and what to do when a count is not zero.
pub fn write_scrub(o: &mut String, s: &ScrubState, now_ms: u64) -> std::fmt::Result {
    let state = if s.paused {
        "paused (hamster scrub --resume)".to_string()
    } else if let Some(h) = s.held(now_ms) {
        format!("waiting: {} runs on node {:016x}", h.what, h.by)
    } else if s.running.is_some() {
        "running".to_string()
    } else {
        "idle".to_string()
    };
    writeln!(o, "scrubber:      {state}")?;
    if let Some(run) = &s.running {
        writeln!(
            o,
            "scrub pass:    #{} since {} ago: {} parts ({}) verified, at {}{}",
            s.pass,
            duration(now_ms.saturating_sub(run.started_ms)),
            run.tally.parts(),
            format_bytes(run.tally.bytes()),
            if run.cursor.bucket.is_empty() {
                "the start".to_string()
            } else {
                format!(
                    "bucket {:?}{}",
                    run.cursor.bucket,
                    run.cursor
                        .key
                        .as_deref()
                        .map_or(String::new(), |k| format!(", after key {k:?}"))
                )
            },
            if run.tally.shards_rebuilt > 0 {
                format!(", {} shards rebuilt", run.tally.shards_rebuilt)
            } else {
                String::new()
            }
        )?;
    }
    let Some(last) = &s.last else {
        return writeln!(o, "last pass:     none complete yet");
    };
    writeln!(
        o,
        "last pass:     #{} ended {} ago, took {}; {} shards healed over all passes",
        last.pass,
        duration(now_ms.saturating_sub(last.done_ms)),
        duration(last.done_ms.saturating_sub(last.started_ms)),
        s.healed_total
    )?;
    writeln!(o, "durability (as the last complete pass left it):")?;
    for (h, what) in [
        (Health::Full, "every shard verifies"),
        (Health::Degraded, "survives one more failure, not all m"),
        (
            Health::AtRisk,
            "ONE MORE FAILURE LOSES DATA; see docs/operations.md",
        ),
        (
            Health::Unrecoverable,
            "unreadable until a node with its shards returns",
        ),
    ] {
        let c = last.tally.of(h);
        let note = if c.parts > 0 || h == Health::Full {
            format!("  ({what})")
        } else {
            String::new()
        };
        writeln!(
            o,
            "  {:<14} {:>10} parts {:>12}{note}",
            h.label().replace('_', " "),
            c.parts,
            format_bytes(c.bytes)
        )?;
    }
    if last.tally.shards_unreachable > 0 {
        writeln!(
            o,
            "  {} shards were on nodes that did not answer; they count as missing until verified",
            last.tally.shards_unreachable
        )?;
    }
    Ok(())
}

/// `ms` as a short human duration: 45s, 12m, 3h 5m, 2d 4h.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamster_protocol::scrub::{PassDone, Running, Tally};

    #[test]
    fn at_risk_parts_are_shouted_and_zero_counts_stay_quiet() {
        let mut tally = Tally::default();
        tally.count(Health::Full, 4096);
        tally.count(Health::AtRisk, 100);
        let s = ScrubState {
            pass: 3,
            running: Some(Running {
                started_ms: 50_000,
                ..Running::default()
            }),
            last: Some(PassDone {
                pass: 2,
                started_ms: 1_000,
                done_ms: 31_000,
                tally,
            }),
            healed_total: 7,
            ..ScrubState::default()
        };
        let mut o = String::new();
        write_scrub(&mut o, &s, 110_000).unwrap();
        assert!(o.contains("scrubber:      running"), "{o}");
        assert!(o.contains("#3 since 1m 0s ago"), "{o}");
        assert!(
            o.contains("#2 ended 1m 19s ago, took 30s; 7 shards healed"),
            "{o}"
        );
        let at_risk = o.lines().find(|l| l.contains("at risk")).unwrap();
        assert!(
            at_risk.contains(" 1 parts") && at_risk.contains("ONE MORE FAILURE"),
            "{o}"
        );
        let degraded = o.lines().find(|l| l.contains("degraded")).unwrap();
        assert!(!degraded.contains('('), "a zero count carries no note: {o}");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(61_000), "1m 1s");
        assert_eq!(duration(3_723_000), "1h 2m");
        assert_eq!(duration(90_000_000), "1d 1h");
    }
}
