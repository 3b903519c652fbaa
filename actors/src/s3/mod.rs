//! The S3 front: an actix-web service that turns each HTTP request into one `S3Exchange`
//! actor, which authenticates it (SigV4), routes it to the bucket or object operation, talks to
//! the Raft node and the shard store, and answers in S3's wire format.

pub mod access;
mod acl;
mod auth;
mod body;
mod bucket;
mod copy;
mod delete;
mod exchange;
pub mod guard;
mod meta;
mod multipart;
pub mod noise;
mod object;
mod post;
mod request;
mod response;
pub mod uploads;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::BoxFuture;

use hamster_protocol::s3err::{S3Error, S3ErrorCode};

use crate::clock::{Clock, IdSource};
use crate::data::DataPlane;
use crate::metrics::Metrics;
use crate::raft::node::RaftNode;
use crate::shards::ShardStore;

pub use exchange::S3Exchange;
pub use request::Op;

/// Largest single PUT S3 accepts (5 GiB); larger bodies need multipart.
pub const PUT_OBJECT_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Largest request body read into memory (XML documents such as CreateBucketConfiguration).
pub const XML_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Total size of `x-amz-meta-*` names and values AWS allows.
pub const USER_META_BYTES_MAX: usize = 2048;
/// How long a request body may send nothing before it is abandoned, by default.
pub const BODY_IDLE_TIMEOUT_MS: u64 = 30_000;

/// Settings of the S3 front.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The region requests must be signed for.
    pub region: String,
    /// With a domain, `bucket.domain` hosts address buckets (virtual-host style).
    pub domain: Option<String>,
    /// A request body that sends nothing for this long is abandoned and its connection closed.
    pub body_idle: Duration,
    /// How many uploads may stream at once and how much memory their writers may hold.
    pub uploads: uploads::UploadLimits,
}

impl S3Config {
    /// The default settings for `region`, without virtual-host addressing.
    pub fn new(region: impl Into<String>) -> Self {
        S3Config {
            region: region.into(),
            domain: None,
            body_idle: Duration::from_millis(BODY_IDLE_TIMEOUT_MS),
            uploads: uploads::UploadLimits::default(),
        }
    }
}

/// Where blocking file work (a shard's fsync and rename, shard reads) runs: actix-web's blocking
/// pool in production, inline on the one thread in the simulation (STYLE determinism rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// A thread of the blocking pool, so the request's thread keeps serving others.
    Pool,
    /// Right here, on the calling thread.
    Inline,
}

impl Offload {
    /// Runs `work` where this says; `Err` only if the pool dropped it (S3 500).
    pub async fn run<F, T>(self, work: F) -> Result<T, S3Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Offload::Pool => web::block(work)
                .await
                .map_err(|_| S3Error::new(S3ErrorCode::InternalError)),
            Offload::Inline => Ok(work()),
        }
    }

    /// Starts `work` now and returns its result as a future, so the caller can go on with
    /// something else meanwhile (on the pool the two overlap; inline, `work` has already run).
    pub fn start<F, T>(self, work: F) -> BoxFuture<'static, Result<T, S3Error>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Offload::Pool => {
                // `web::block` hands the work to the pool before its future is first polled.
                let running = web::block(work);
                Box::pin(async move {
                    running
                        .await
                        .map_err(|_| S3Error::new(S3ErrorCode::InternalError))
                })
            }
            Offload::Inline => {
                let done = work();
                Box::pin(async move { Ok(done) })
            }
        }
    }
}

/// Everything an exchange needs, shared by all requests.
pub struct S3State {
    /// The metadata node.
    pub raft: Addr<RaftNode>,
    /// Reads of the local metadata replica, answered on the request's own thread.
    pub reader: crate::raft::node::MetaReader,
    /// Local shard files.
    pub shards: Arc<ShardStore>,
    /// Where object bytes are written and read: this node and the parts' other homes.
    pub data: DataPlane,
    /// Counters.
    pub metrics: Metrics,
    /// Wall clock (Last-Modified, SigV4 window).
    pub clock: Arc<dyn Clock>,
    /// Object and request ids.
    pub ids: Arc<IdSource>,
    /// Front settings.
    pub config: S3Config,
    /// The id shown as bucket and object owner.
    pub owner_id: String,
    /// Where blocking file work runs.
    pub offload: Offload,
    /// The uploads streaming now, within `config.uploads`.
    pub uploads: Arc<uploads::UploadGate>,
    /// Free disk space: writes are refused while it is below the reserve.
    pub space: crate::space::Space,
}

/// Registers the S3 front as the default service of an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(entry));
}

/// Every S3 request enters here and is handed to its own exchange actor.
async fn entry(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<Arc<S3State>>,
) -> HttpResponse {
    S3Exchange::run(state.get_ref().clone(), req, payload.into_inner()).await
}
