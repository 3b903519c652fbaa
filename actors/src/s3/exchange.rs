//! `S3Exchange`: one actor per S3 request. It lives from the authenticated headers to the
//! response: authenticate, route, run the operation, record metrics, answer, stop.

use std::sync::Arc;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use actix_web::dev::Payload;
use actix_web::{HttpRequest, HttpResponse};
use hamster_protocol::http_head::{header_section_bytes, HEADER_SECTION_BYTES_MAX};
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::unhonoured;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::access;
use super::acl;
use super::auth::authenticate;
use super::delete;
use super::post;
use super::request::{classify, target, Op, Target};
use super::response::{self, Echo};
use super::{bucket, copy, multipart, object, S3State};

/// One request in flight.
pub struct S3Exchange {
    state: Arc<S3State>,
    request: Option<(HttpRequest, Payload)>,
    reply: Option<oneshot::Sender<HttpResponse>>,
}

impl S3Exchange {
    /// Starts an exchange for `req` on the current arbiter and waits for its answer.
    pub async fn run(state: Arc<S3State>, req: HttpRequest, payload: Payload) -> HttpResponse {
        let (tx, rx) = oneshot::channel();
        S3Exchange {
            state,
            request: Some((req, payload)),
            reply: Some(tx),
        }
        .start();
        rx.await
            .unwrap_or_else(|_| HttpResponse::InternalServerError().finish())
    }
}

impl Actor for S3Exchange {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some((req, payload)) = self.request.take() else {
            ctx.stop();
            return;
        };
        let state = self.state.clone();
        let work = handle(state, req, payload)
            .into_actor(self)
            .map(|resp, act, ctx| {
                if let Some(tx) = act.reply.take() {
                    let _ = tx.send(resp);
                }
                ctx.stop();
            });
        ctx.wait(work);
    }
}

/// Context of one request passed to the operations.
pub struct Exchange {
    /// Shared node state.
    pub state: Arc<S3State>,
    /// The HTTP request.
    pub req: HttpRequest,
    /// Bucket, key, query.
    pub target: Target,
    /// Echoed facts.
    pub echo: Echo,
    /// Authenticated caller.
    pub auth: super::auth::Authenticated,
}

async fn handle(state: Arc<S3State>, req: HttpRequest, payload: Payload) -> HttpResponse {
    let start = tokio::time::Instant::now();
    let _in_flight = state.metrics.s3_request_started();
    let echo = Echo {
        request_id: state.ids.request_id(),
        resource: req.uri().path().to_string(),
        head: req.method() == actix_web::http::Method::HEAD,
    };
    let (op, resp) = match dispatch(&state, req, payload, &echo).await {
        Ok((op, resp)) => (op, resp),
        Err((op, err)) => {
            if err.code == S3ErrorCode::InternalError {
                warn!(request_id = %echo.request_id, op = op.name(), error = %err, "internal error");
            } else {
                debug!(request_id = %echo.request_id, op = op.name(), error = %err, "refused");
            }
            let limit = HEADER_SECTION_BYTES_MAX.to_string();
            let extra: &[(&str, &str)] = match err.code {
                S3ErrorCode::RequestHeaderSectionTooLarge => &[("MaxSizeAllowed", &limit)],
                _ => &[],
            };
            (op, response::error(&echo, &err, extra))
        }
    };
    state.metrics.observe_s3(
        op.name(),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

type Outcome = Result<(Op, HttpResponse), (Op, S3Error)>;

/// Refuses a header section larger than AWS accepts, before anything else reads it.
fn check_header_section(req: &HttpRequest) -> Result<(), S3Error> {
    let bytes = header_section_bytes(
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    );
    if bytes > HEADER_SECTION_BYTES_MAX {
        return Err(S3Error::with_message(
            S3ErrorCode::RequestHeaderSectionTooLarge,
            format!(
                "{} ({bytes} bytes of headers)",
                S3ErrorCode::RequestHeaderSectionTooLarge.default_message()
            ),
        ));
    }
    Ok(())
}

/// A copy reads its source, so the key needs read on the source bucket as well as write on
/// the target. A source header that does not parse is left for the copy itself to refuse.
fn copy_source_readable(
    auth: &super::auth::Authenticated,
    req: &HttpRequest,
) -> Result<(), S3Error> {
    let raw = super::request::header(req, "x-amz-copy-source");
    match raw.map(copy::parse_copy_source) {
        Some(Ok(src)) => access::require(auth, &src.bucket, access::Need::Read),
        _ => Ok(()),
    }
}

/// Answers NotImplemented, before anything is read or stored, when the request's headers ask
/// for a feature Hamster does not carry out (`hamster_protocol::unhonoured` lists them).
pub(super) fn refuse_unhonoured(req: &HttpRequest) -> Result<(), S3Error> {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("")));
    unhonoured::check(headers, unhonoured::Carrier::Headers)
}

async fn dispatch(
    state: &Arc<S3State>,
    req: HttpRequest,
    payload: Payload,
    echo: &Echo,
) -> Outcome {
    let t = target(&req, &state.config).map_err(|e| (Op::BadMethod, e))?;
    let op = classify(req.method().as_str(), &t);
    check_header_section(&req).map_err(|e| (op, e))?;
    if op.grows_storage() && state.space.measure_now() {
        // Refused before authentication reads a body: a full node answers at once.
        let solo = state.data.layout().await.nodes.len() <= 1;
        let node = format!("{:016x}", state.data.me());
        state.space.check_write(solo, &node).map_err(|e| (op, e))?;
    }
    // Every answer below is read from this node's replica: bring it up to the leader's commit
    // index first, so it holds every write acknowledged anywhere before this request arrived.
    super::meta::catch_up(state).await.map_err(|e| (op, e))?;
    if op == Op::PostObject {
        // A form upload is signed inside its body (the POST policy), not in its headers.
        return post::post_object(state, &req, &t, echo, payload)
            .await
            .map(|r| (op, r))
            .map_err(|e| (op, e));
    }
    // An unsigned request may learn that the bucket it names does not exist, unless it asked
    // to create it.
    let existing = t.bucket.as_deref().filter(|_| op != Op::CreateBucket);
    let auth = authenticate(state, &req, t.vhost_bucket.as_deref(), existing)
        .await
        .map_err(|e| (op, e))?;
    access::check(auth.root, &auth.grants, &op, t.bucket.as_deref()).map_err(|e| (op, e))?;
    if matches!(op, Op::CopyObject | Op::UploadPartCopy) {
        copy_source_readable(&auth, &req).map_err(|e| (op, e))?;
    }
    refuse_unhonoured(&req).map_err(|e| (op, e))?;
    debug!(request_id = %echo.request_id, op = op.name(), key = %auth.access_key, "authenticated");
    let x = Exchange {
        state: state.clone(),
        req,
        target: t,
        echo: echo.clone(),
        auth,
    };
    let result = match op {
        Op::ListBuckets => bucket::list_buckets(&x).await,
        Op::CreateBucket => bucket::create_bucket(&x, payload).await,
        Op::HeadBucket => bucket::head_bucket(&x).await,
        Op::DeleteBucket => bucket::delete_bucket(&x).await,
        Op::GetBucketLocation => bucket::get_location(&x).await,
        Op::GetBucketVersioning => bucket::get_versioning(&x).await,
        Op::ListObjectsV2 => bucket::list_objects(&x, true).await,
        Op::ListObjects => bucket::list_objects(&x, false).await,
        Op::PutObject => object::put_object(&x, payload).await,
        Op::GetObject => object::get_object(&x, false).await,
        Op::HeadObject => object::get_object(&x, true).await,
        Op::DeleteObject => object::delete_object(&x).await,
        Op::CopyObject => copy::copy_object(&x).await,
        Op::CreateMultipartUpload => multipart::create(&x).await,
        Op::UploadPart => multipart::upload_part(&x, payload).await,
        Op::UploadPartCopy => multipart::upload_part_copy(&x).await,
        Op::CompleteMultipartUpload => multipart::complete(&x, payload).await,
        Op::AbortMultipartUpload => multipart::abort(&x).await,
        Op::ListParts => multipart::list_parts(&x).await,
        Op::ListMultipartUploads => multipart::list_uploads(&x).await,
        Op::DeleteObjects => delete::delete_objects(&x, payload).await,
        Op::GetBucketAcl => acl::get_acl(&x, false).await,
        Op::PutBucketAcl => acl::put_acl(&x, false, payload).await,
        Op::GetObjectAcl => acl::get_acl(&x, true).await,
        Op::PutObjectAcl => acl::put_acl(&x, true, payload).await,
        Op::ListObjectVersions => bucket::list_object_versions(&x).await,
        // Answered before header authentication, above; never reaches this table.
        Op::PostObject => Err(S3Error::new(S3ErrorCode::InternalError)),
        Op::Unsupported(name) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!("{name} is not implemented by Hamster yet"),
        )),
        Op::BadMethod => Err(S3Error::new(S3ErrorCode::MethodNotAllowed)),
    };
    result.map(|r| (op, r)).map_err(|e| (op, e))
}
