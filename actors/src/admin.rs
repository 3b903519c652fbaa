//! The admin HTTP endpoint (default 127.0.0.1:9001): `/metrics` in Prometheus text format,
//! `/health` (the process is alive) and `/ready` (the node serves: Raft has a leader and the
//! S3 front, if any, is bound).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::Addr;
use actix_web::{web, HttpResponse};

use crate::metrics::Metrics;
use crate::raft::node::{RaftNode, RaftStatus};
use crate::shards::ShardStore;

/// How stale the shard-bytes figure may get before a scrape walks the disk again.
const SHARD_BYTES_REFRESH_SECS: u64 = 30;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The registry to render.
    pub metrics: Metrics,
    /// Set once the node serves.
    pub ready: Arc<AtomicBool>,
    /// The Raft node, for its gauges.
    pub raft: Addr<RaftNode>,
    /// The shard store, for bytes on disk.
    pub shards: Arc<ShardStore>,
    last_walk: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl AdminState {
    /// Admin state over the node's parts.
    pub fn new(
        metrics: Metrics,
        ready: Arc<AtomicBool>,
        raft: Addr<RaftNode>,
        shards: Arc<ShardStore>,
    ) -> Self {
        AdminState {
            metrics,
            ready,
            raft,
            shards,
            last_walk: Arc::new(Mutex::new(None)),
        }
    }
}

/// Registers the admin routes on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("starting\n");
    }
    match state.raft.send(RaftStatus).await {
        Ok(s) if s.leader.is_some() => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        _ => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("no leader\n"),
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    if let Ok(s) = state.raft.send(RaftStatus).await {
        let m = &state.metrics;
        m.raft_term.set(s.term as i64);
        m.raft_commit_index.set(s.commit_index as i64);
        m.raft_applied_index.set(s.applied_index as i64);
        m.raft_is_leader.set(i64::from(s.leader == Some(s.node_id)));
    }
    let due = {
        let mut last = state.last_walk.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t).as_secs() >= SHARD_BYTES_REFRESH_SECS);
        if due {
            *last = Some(now);
        }
        due
    };
    if due {
        let shards = state.shards.clone();
        if let Ok(Ok(bytes)) = web::block(move || shards.bytes_on_disk()).await {
            state.metrics.shard_bytes.set(bytes as i64);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
