//! The admin HTTP endpoint (default 127.0.0.1:9001): `/metrics` in Prometheus text format,
//! `/health` (the process is alive, its Raft core runs and every supervised actor answers a
//! ping) and `/ready` (the node can serve S3 reads right now; the rules are in
//! [`hamster_protocol::readiness`]). Both answer 503 with a one-line reason when they fail.
//!
//! Built with the `fault-injection` feature (tests only), it also serves `POST
//! /fault/panic/{actor}` (the named supervised actor panics in a handler) and `POST
//! /fault/raft-core` (the Raft core's next log append panics).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpResponse};

use hamster_protocol::readiness::{self, NodeFacts};

use crate::metrics::Metrics;
use crate::raft::node::{CoreRunning, RaftNode, RaftStatus, ReadyProbe};
use crate::shards::ShardStore;
use crate::supervise::Supervision;

/// How stale the shard-bytes figure may get before a scrape walks the disk again.
const SHARD_BYTES_REFRESH_SECS: u64 = 30;
/// How long `/ready` waits for the Raft node's report (which includes the leader's
/// confirmation, itself bounded a little below this).
const READY_PROBE_MS: u64 = 2_000;
/// How long `/ready` and `/health` wait for the Raft node to answer a local question.
const LOCAL_ANSWER_MS: u64 = 1_000;

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
    /// The supervised actors, for `/health`.
    pub supervision: Supervision,
    last_walk: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl AdminState {
    /// Admin state over the node's parts.
    pub fn new(
        metrics: Metrics,
        ready: Arc<AtomicBool>,
        raft: Addr<RaftNode>,
        shards: Arc<ShardStore>,
        supervision: Supervision,
    ) -> Self {
        AdminState {
            metrics,
            ready,
            raft,
            shards,
            supervision,
            last_walk: Arc::new(Mutex::new(None)),
        }
    }
}

/// Registers the admin routes on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready));
    #[cfg(feature = "fault-injection")]
    cfg.route("/fault/panic/{actor}", web::post().to(fault_panic))
        .route("/fault/raft-core", web::post().to(fault_raft_core));
}

fn answer(outcome: Result<(), String>, ok: &str) -> HttpResponse {
    match outcome {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("{ok}\n")),
        Err(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("{why}\n")),
    }
}

async fn health(state: web::Data<AdminState>) -> HttpResponse {
    let wait = Duration::from_millis(LOCAL_ANSWER_MS);
    let core = match tokio::time::timeout(wait, state.raft.send(CoreRunning)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("the metadata core stopped".to_string()),
        // The supervision check below names the actor that does not answer.
        Ok(Err(_)) | Err(_) => Ok(()),
    };
    let outcome = match core {
        Ok(()) => state.supervision.check().await,
        Err(why) => Err(why),
    };
    answer(outcome, "ok")
}

async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let serving = state.ready.load(Ordering::SeqCst);
    let meta = if serving {
        let wait = Duration::from_millis(READY_PROBE_MS);
        tokio::time::timeout(wait, state.raft.send(ReadyProbe))
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    // A stat of the store's directory; off the admin thread, as a hung disk must not hang it.
    let shards = state.shards.clone();
    let open = web::block(move || shards.is_open());
    let store_open = matches!(
        tokio::time::timeout(Duration::from_millis(LOCAL_ANSWER_MS), open).await,
        Ok(Ok(true))
    );
    let facts = NodeFacts {
        serving,
        meta,
        store_open,
    };
    answer(
        readiness::decide(&facts).map_err(|e| e.to_string()),
        "ready",
    )
}

#[cfg(feature = "fault-injection")]
async fn fault_panic(state: web::Data<AdminState>, actor: web::Path<String>) -> HttpResponse {
    if state.supervision.inject_panic(&actor) {
        tracing::warn!(actor = %actor, "fault injection: telling the actor to panic");
        HttpResponse::Ok().body(format!("actor {actor} told to panic\n"))
    } else {
        let known = state.supervision.names().join(", ");
        HttpResponse::NotFound().body(format!("no supervised actor {actor}; known: {known}\n"))
    }
}

#[cfg(feature = "fault-injection")]
async fn fault_raft_core(state: web::Data<AdminState>) -> HttpResponse {
    match state
        .raft
        .send(crate::raft::node::PanicCoreOnNextAppend)
        .await
    {
        Ok(()) => HttpResponse::Ok().body("the metadata core panics on its next log append\n"),
        Err(_) => HttpResponse::ServiceUnavailable().body("the Raft node did not answer\n"),
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
