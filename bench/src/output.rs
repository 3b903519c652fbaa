//! Where results and progress go: figures to stdout (a JSON line each with `--json`, else a
//! table row each, printed as soon as the figure is done so an interrupted run keeps what it
//! measured), progress to stderr only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::Figure;

/// How often the progress line is redrawn.
const PROGRESS_INTERVAL_MS: u64 = 500;

/// The figure sink.
pub struct Output {
    json: bool,
    header_done: bool,
    progress: bool,
}

impl Output {
    /// JSON lines or a table; progress only if asked for and stderr is a terminal.
    pub fn new(json: bool, quiet: bool) -> Output {
        Output {
            json,
            header_done: false,
            progress: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Prints one figure.
    pub fn figure(&mut self, f: &Figure) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let line = serde_json::to_string(f).expect("a figure always serialises");
            let _ = writeln!(out, "{line}");
        } else {
            if !self.header_done {
                let _ = writeln!(out, "{}", table_header());
                self.header_done = true;
            }
            let _ = writeln!(out, "{}", table_row(f));
            if let Some(e) = &f.first_error {
                let _ = writeln!(out, "  ! {} errors in this figure; first: {e}", f.errors);
            }
        }
        let _ = out.flush();
    }

    /// Starts a progress line for a phase; it stops when the returned guard drops.
    pub fn progress(&self, label: &str) -> ProgressGuard {
        let counters = Arc::new(Counters::default());
        let task = self.progress.then(|| {
            let counters = counters.clone();
            let label = label.to_string();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let secs = start.elapsed().as_secs_f64();
                    let ops = counters.ops.load(Ordering::Relaxed);
                    let bytes = counters.bytes.load(Ordering::Relaxed);
                    eprint!(
                        "\r\x1b[K  {label}: {ops} ops, {:.0} ops/s, {:.1} MiB/s, {:.1}s",
                        ops as f64 / secs,
                        bytes as f64 / (1u64 << 20) as f64 / secs,
                        secs
                    );
                }
            })
        });
        ProgressGuard { counters, task }
    }
}

/// Counters the workers bump and the progress line reads.
#[derive(Debug, Default)]
pub struct Counters {
    ops: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    /// Counts one finished request.
    pub fn add(&self, bytes: u64) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A running progress line; dropping it stops the line and clears it.
pub struct ProgressGuard {
    /// The counters to bump.
    pub counters: Arc<Counters>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprint!("\r\x1b[K");
        }
    }
}

fn opt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms < 10.0 => format!("{ms:.2}"),
        Some(ms) => format!("{ms:.1}"),
        None => "-".to_string(),
    }
}

fn table_header() -> String {
    format!(
        "{:<28} {:>16} {:>9} {:>10} {:>7} {:>7} {:>8} {:>8} {:>8}",
        "figure", "value", "ops", "MiB", "errors", "secs", "p50 ms", "p99 ms", "p999 ms"
    )
}

fn table_row(f: &Figure) -> String {
    let value = format!("{:.1} {}", f.value, f.unit);
    format!(
        "{:<28} {:>16} {:>9} {:>10.1} {:>7} {:>7.2} {:>8} {:>8} {:>8}",
        f.label,
        value,
        f.ops,
        f.bytes as f64 / (1u64 << 20) as f64,
        f.errors,
        f.seconds,
        opt_ms(f.p50_ms),
        opt_ms(f.p99_ms),
        opt_ms(f.p999_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows line up under the header and show "-" where a percentile does not apply.
    #[test]
    fn table_rows_align() {
        let f = Figure {
            name: "small-put".into(),
            label: "PUT 4KiB c=16".into(),
            object_bytes: Some(4096),
            concurrency: 16,
            value: 1234.56,
            unit: "ops/s",
            ops: 12345,
            bytes: 12345 * 4096,
            errors: 0,
            seconds: 10.0,
            p50_ms: Some(1.234),
            p99_ms: Some(12.5),
            p999_ms: None,
            first_error: None,
        };
        let row = table_row(&f);
        assert_eq!(row.len(), table_header().len());
        assert!(row.contains("1234.6 ops/s") && row.contains("1.23") && row.contains("12.5"));
        assert!(row.trim_end().ends_with('-'));
    }
}
