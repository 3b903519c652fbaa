//! What a figure counts while it runs (a [`Tally`] per worker, merged at the end) and what it
//! reports (a [`Figure`]). Latency goes into an HDR histogram in microseconds, so percentiles
//! keep three significant digits from 1 µs to an hour at a fixed memory cost.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency the histogram holds, in microseconds (one hour); longer ones saturate.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits the histogram keeps.
const LATENCY_DIGITS: u8 = 3;
/// How many failures a figure keeps the text of.
const ERROR_SAMPLES_MAX: usize = 1;

const MIB: f64 = (1u64 << 20) as f64;

/// Counts of one worker (or, merged, of one figure).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Requests that succeeded.
    pub ops: u64,
    /// Payload bytes moved by successful requests (sent for PUT, received for GET).
    pub bytes: u64,
    /// Items the requests yielded: keys for listing.
    pub items: u64,
    /// Requests that failed (transport, non-2xx or wrong content).
    pub errors: u64,
    /// The first failures, as text.
    pub error_samples: Vec<String>,
    /// Latency of successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            ops: 0,
            bytes: 0,
            items: 0,
            errors: 0,
            error_samples: Vec::new(),
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Records a successful request.
    pub fn ok(&mut self, latency: Duration, bytes: u64, items: u64) {
        self.ops += 1;
        self.bytes += bytes;
        self.items += items;
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
    }

    /// Records a failed request.
    pub fn error(&mut self, what: impl std::fmt::Display) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.push(what.to_string());
        }
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: &Tally) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.items += other.items;
        self.errors += other.errors;
        for sample in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES_MAX {
                self.error_samples.push(sample.clone());
            }
        }
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with equal bounds always add");
    }

    /// The latency at `quantile` (0..=1) in milliseconds, or `None` with no samples.
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        if self.latency_us.is_empty() {
            return None;
        }
        Some(self.latency_us.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

/// What a figure's value measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Payload MiB per second.
    MibPerSec,
    /// Successful requests per second.
    OpsPerSec,
    /// Listed keys per second.
    KeysPerSec,
    /// Listed entries (keys and common prefixes) per second.
    EntriesPerSec,
}

impl Metric {
    /// The unit as printed and in JSON.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::MibPerSec => "MiB/s",
            Metric::OpsPerSec => "ops/s",
            Metric::KeysPerSec => "keys/s",
            Metric::EntriesPerSec => "entries/s",
        }
    }
}

/// One reported figure: a JSON line with `--json`, a table row otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable machine name, e.g. `small-put`, `large-get`.
    pub name: String,
    /// Human label with the parameters, e.g. `PUT 4KiB c=16`.
    pub label: String,
    /// Object size, where one size applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_bytes: Option<u64>,
    /// Requests in flight at once (streams for large objects).
    pub concurrency: usize,
    /// The figure itself, in `unit`.
    pub value: f64,
    /// `MiB/s`, `ops/s`, `keys/s` or `entries/s`.
    pub unit: &'static str,
    /// Successful requests.
    pub ops: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Failed requests; a figure with errors is not a clean measurement.
    pub errors: u64,
    /// Wall seconds from the first request sent to the last answer read.
    pub seconds: f64,
    /// Median latency of successful requests, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// 99.9th percentile latency, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_ms: Option<f64>,
    /// The first failure's text, when there were failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// How a figure is described before its numbers exist.
#[derive(Debug, Clone)]
pub struct FigureSpec {
    /// Machine name.
    pub name: String,
    /// Human label.
    pub label: String,
    /// Object size where one applies.
    pub object_bytes: Option<u64>,
    /// Concurrency.
    pub concurrency: usize,
    /// What the value measures.
    pub metric: Metric,
    /// Whether latency percentiles mean something here (not for multi-MiB streams).
    pub latency: bool,
}

impl FigureSpec {
    /// The figure for `tally` over `elapsed`.
    pub fn figure(&self, tally: &Tally, elapsed: Duration) -> Figure {
        let seconds = elapsed.as_secs_f64();
        let per_sec = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        let value = match self.metric {
            Metric::MibPerSec => per_sec(tally.bytes as f64 / MIB),
            Metric::OpsPerSec => per_sec(tally.ops as f64),
            Metric::KeysPerSec | Metric::EntriesPerSec => per_sec(tally.items as f64),
        };
        let pct = |q: f64| {
            if self.latency {
                tally.latency_ms(q)
            } else {
                None
            }
        };
        Figure {
            name: self.name.clone(),
            label: self.label.clone(),
            object_bytes: self.object_bytes,
            concurrency: self.concurrency,
            value,
            unit: self.metric.unit(),
            ops: tally.ops,
            bytes: tally.bytes,
            errors: tally.errors,
            seconds,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            first_error: tally.error_samples.first().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// With latencies 1..=1000 ms the percentiles land on 500, 990 and 999 ms within the
    /// histogram's three significant digits.
    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut t = Tally::new();
        for ms in 1..=1000u64 {
            t.ok(us(ms * 1000), 10, 0);
        }
        let close = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!(
                (got - want).abs() <= want * 0.001 + 1e-9,
                "got {got}, want {want}"
            );
        };
        close(t.latency_ms(0.5), 500.0);
        close(t.latency_ms(0.99), 990.0);
        close(t.latency_ms(0.999), 999.0);
        assert_eq!((t.ops, t.bytes), (1000, 10_000));
    }

    /// A rare slow request shows in p999 but not in p50 or p99; merging keeps every sample.
    #[test]
    fn merge_keeps_the_tail() {
        let mut fast = Tally::new();
        for _ in 0..9990 {
            fast.ok(us(200), 4096, 0);
        }
        let mut slow = Tally::new();
        for _ in 0..10 {
            slow.ok(us(50_000), 4096, 0);
        }
        slow.error("HTTP 503 SlowDown");
        slow.error("HTTP 500 InternalError");
        fast.merge(&slow);
        assert_eq!((fast.ops, fast.errors), (10_000, 2));
        assert_eq!(fast.error_samples, vec!["HTTP 503 SlowDown".to_string()]);
        let p50 = fast.latency_ms(0.5).unwrap();
        let p99 = fast.latency_ms(0.99).unwrap();
        let p999 = fast.latency_ms(0.9995).unwrap();
        assert!((p50 - 0.2).abs() < 0.001, "{p50}");
        assert!((p99 - 0.2).abs() < 0.001, "{p99}");
        assert!((p999 - 50.0).abs() < 0.1, "{p999}");
    }

    /// Values per metric, no percentiles without samples or where latency is not reported,
    /// and sub-microsecond and over-an-hour latencies are clamped rather than lost.
    #[test]
    fn figures_from_tallies() {
        let spec = |metric, latency| FigureSpec {
            name: "x".into(),
            label: "x".into(),
            object_bytes: None,
            concurrency: 1,
            metric,
            latency,
        };
        let mut t = Tally::new();
        t.ok(Duration::from_nanos(10), 8 << 20, 0);
        t.ok(Duration::from_secs(7200), 8 << 20, 500);
        let two = Duration::from_secs(2);
        assert_eq!(spec(Metric::MibPerSec, false).figure(&t, two).value, 8.0);
        assert_eq!(spec(Metric::OpsPerSec, true).figure(&t, two).value, 1.0);
        assert_eq!(spec(Metric::KeysPerSec, true).figure(&t, two).value, 250.0);
        let entries = spec(Metric::EntriesPerSec, true).figure(&t, two);
        assert_eq!((entries.value, entries.unit), (250.0, "entries/s"));
        assert_eq!(spec(Metric::MibPerSec, false).figure(&t, two).p50_ms, None);
        let f = spec(Metric::OpsPerSec, true).figure(&t, two);
        assert_eq!(f.p50_ms, Some(0.001));
        assert!(f.p999_ms.unwrap() >= 3_599_000.0);
        assert_eq!(f.first_error, None);
        let empty = spec(Metric::OpsPerSec, true).figure(&Tally::new(), Duration::ZERO);
        assert_eq!((empty.value, empty.p99_ms), (0.0, None));
        let json = serde_json::to_string(&empty).unwrap();
        assert!(
            json.contains("\"unit\":\"ops/s\"") && !json.contains("p50_ms"),
            "{json}"
        );
    }
}
