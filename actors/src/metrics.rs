//! The node's Prometheus registry: S3 request counters and latency histograms, bytes moved,
//! Raft progress and shard bytes on disk. Counters are atomics any thread may bump; the admin
//! endpoint renders the registry in the text exposition format.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// One S3 request counted in `hamster_s3_requests_in_flight` (even when its client goes away
/// and the request's future is dropped half way).
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric Hamster exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// S3 requests by operation and HTTP status.
    pub s3_requests: IntCounterVec,
    /// S3 request latency by operation.
    pub s3_duration: HistogramVec,
    /// S3 requests being answered right now.
    pub s3_in_flight: IntGauge,
    /// Object bytes received from S3 clients.
    pub s3_bytes_in: IntCounter,
    /// Object bytes sent to S3 clients.
    pub s3_bytes_out: IntCounter,
    /// Current Raft term.
    pub raft_term: IntGauge,
    /// Last committed log index.
    pub raft_commit_index: IntGauge,
    /// Last applied log index.
    pub raft_applied_index: IntGauge,
    /// 1 when this node is the Raft leader.
    pub raft_is_leader: IntGauge,
    /// Bytes of shard files on this node's disk.
    pub shard_bytes: IntGauge,
    /// Shard files reclaimed after the commit that unreferenced them.
    pub shards_reclaimed: IntCounter,
    /// Bodies in this node's freed queue whose shard files are not deleted yet.
    pub reclaim_pending_bodies: IntGauge,
    /// Orphan bodies (referenced by nothing, queued nowhere) the start-up sweep removed.
    pub orphan_bodies_swept: IntCounter,
    /// Shards repair verified against the replicated checksum.
    pub repair_shards_verified: IntCounter,
    /// Shards repair rebuilt from verified survivors.
    pub repair_shards_rebuilt: IntCounter,
    /// Parts repair found with fewer than `k` verified shards.
    pub repair_parts_unrecoverable: IntCounter,
    /// Shards the scrubber (on this node, while it led) had verified.
    pub scrub_shards_verified: IntCounter,
    /// Shards the scrubber (on this node, while it led) rebuilt.
    pub scrub_shards_rebuilt: IntCounter,
    /// Shard bytes the scrubber (on this node, while it led) had hashed by their homes.
    pub scrub_bytes_verified: IntCounter,
    /// The data-plane layout version this node has applied.
    pub layout_version: IntGauge,
    /// 1 while a layout transition is open.
    pub layout_transition_open: IntGauge,
    /// Shards a layout transition wrote to new homes (on the leader that moved them).
    pub migration_shards_moved: IntCounter,
    /// Bytes of shard data a layout transition wrote to new homes.
    pub migration_bytes_moved: IntCounter,
    /// Parts a migration pass could not move yet.
    pub migration_parts_failed: IntCounter,
    /// Restarts of each supervised actor after it failed.
    pub actor_restarts: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let s3_requests = IntCounterVec::new(
            Opts::new(
                "hamster_s3_requests_total",
                "S3 requests by operation and HTTP status",
            ),
            &["op", "code"],
        )
        .expect("valid metric");
        let s3_duration = HistogramVec::new(
            HistogramOpts::new("hamster_s3_request_duration_seconds", "S3 request latency")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
            &["op"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let m = Metrics {
            s3_requests,
            s3_duration,
            s3_in_flight: gauge(
                "hamster_s3_requests_in_flight",
                "S3 requests this node is answering now",
            ),
            s3_bytes_in: counter("hamster_s3_bytes_in_total", "Object bytes received over S3"),
            s3_bytes_out: counter("hamster_s3_bytes_out_total", "Object bytes sent over S3"),
            raft_term: gauge("hamster_raft_term", "Current Raft term"),
            raft_commit_index: gauge("hamster_raft_commit_index", "Last committed Raft index"),
            raft_applied_index: gauge("hamster_raft_applied_index", "Last applied Raft index"),
            raft_is_leader: gauge("hamster_raft_is_leader", "1 when this node leads"),
            shard_bytes: gauge("hamster_shard_bytes", "Bytes of shard files on disk"),
            shards_reclaimed: counter(
                "hamster_shards_reclaimed_total",
                "Object bodies whose shard files were reclaimed",
            ),
            reclaim_pending_bodies: gauge(
                "hamster_reclaim_pending_bodies",
                "Freed object bodies whose shard files this node has still to delete",
            ),
            orphan_bodies_swept: counter(
                "hamster_orphan_bodies_swept_total",
                "Orphan object bodies the start-up sweep removed from this node",
            ),
            repair_shards_verified: counter(
                "hamster_repair_shards_verified_total",
                "Shards repair verified against their replicated checksum",
            ),
            repair_shards_rebuilt: counter(
                "hamster_repair_shards_rebuilt_total",
                "Shards repair rebuilt from verified survivors",
            ),
            repair_parts_unrecoverable: counter(
                "hamster_repair_parts_unrecoverable_total",
                "Parts repair found with fewer than k verified shards",
            ),
            scrub_shards_verified: counter(
                "hamster_scrub_shards_verified_total",
                "Shards the scrubber driven from this node had verified by their homes",
            ),
            scrub_shards_rebuilt: counter(
                "hamster_scrub_shards_rebuilt_total",
                "Shards the scrubber driven from this node rebuilt",
            ),
            scrub_bytes_verified: counter(
                "hamster_scrub_bytes_verified_total",
                "Shard bytes the scrubber driven from this node had hashed by their homes",
            ),
            layout_version: gauge("hamster_layout_version", "Data-plane layout version"),
            layout_transition_open: gauge(
                "hamster_layout_transition_open",
                "1 while a layout transition is moving data",
            ),
            migration_shards_moved: counter(
                "hamster_migration_shards_moved_total",
                "Shards a layout transition wrote to new homes",
            ),
            migration_bytes_moved: counter(
                "hamster_migration_bytes_moved_total",
                "Bytes of shard data a layout transition wrote to new homes",
            ),
            migration_parts_failed: counter(
                "hamster_migration_parts_failed_total",
                "Parts a migration pass could not move yet",
            ),
            actor_restarts: IntCounterVec::new(
                Opts::new(
                    crate::supervise::RESTARTS_METRIC,
                    crate::supervise::RESTARTS_HELP,
                ),
                &[crate::supervise::RESTARTS_LABEL],
            )
            .expect("valid metric"),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.s3_requests.clone()))
            .expect("unique metric");
        r.register(Box::new(m.s3_duration.clone()))
            .expect("unique metric");
        r.register(Box::new(m.s3_bytes_in.clone()))
            .expect("unique metric");
        r.register(Box::new(m.s3_bytes_out.clone()))
            .expect("unique metric");
        r.register(Box::new(m.raft_term.clone()))
            .expect("unique metric");
        r.register(Box::new(m.raft_commit_index.clone()))
            .expect("unique metric");
        r.register(Box::new(m.raft_applied_index.clone()))
            .expect("unique metric");
        r.register(Box::new(m.raft_is_leader.clone()))
            .expect("unique metric");
        r.register(Box::new(m.shard_bytes.clone()))
            .expect("unique metric");
        r.register(Box::new(m.shards_reclaimed.clone()))
            .expect("unique metric");
        r.register(Box::new(m.actor_restarts.clone()))
            .expect("unique metric");
        for c in [
            &m.orphan_bodies_swept,
            &m.repair_shards_verified,
            &m.repair_shards_rebuilt,
            &m.repair_parts_unrecoverable,
            &m.migration_shards_moved,
            &m.migration_bytes_moved,
            &m.migration_parts_failed,
            &m.scrub_shards_verified,
            &m.scrub_shards_rebuilt,
            &m.scrub_bytes_verified,
        ] {
            r.register(Box::new(c.clone())).expect("unique metric");
        }
        for c in [
            &m.layout_version,
            &m.layout_transition_open,
            &m.s3_in_flight,
            &m.reclaim_pending_bodies,
        ] {
            r.register(Box::new(c.clone())).expect("unique metric");
        }
        m
    }

    /// Counts an S3 request in flight until the answer drops.
    pub fn s3_request_started(&self) -> InFlight {
        self.s3_in_flight.inc();
        InFlight(self.s3_in_flight.clone())
    }

    /// Records one finished S3 request.
    pub fn observe_s3(&self, op: &str, status: u16, seconds: f64) {
        self.s3_requests
            .with_label_values(&[op, status_label(status)])
            .inc();
        self.s3_duration.with_label_values(&[op]).observe(seconds);
    }

    /// Adds a metric an actor owns (e.g. the liveness detector's per-member gauges).
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status codes as static labels, so a label value never allocates per request.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        206 => "206",
        304 => "304",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        411 => "411",
        412 => "412",
        416 => "416",
        500 => "500",
        501 => "501",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_requests() {
        let m = Metrics::new();
        m.observe_s3("PutObject", 200, 0.01);
        m.observe_s3("PutObject", 200, 0.02);
        let text = m.render();
        assert!(
            text.contains("hamster_s3_requests_total{code=\"200\",op=\"PutObject\"} 2"),
            "{text}"
        );
        assert!(text.contains("hamster_s3_request_duration_seconds_count{op=\"PutObject\"} 2"));
    }
}
