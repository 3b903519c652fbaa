//! POST Object: the browser form upload. The form carries its own SigV4 signature over a POST
//! policy, so this path skips header authentication: it reads the text fields, looks up the
//! credential's secret, verifies the policy (`hamster_protocol::post_policy`), and only then
//! streams the `file` field into a shard the way PutObject does, committing the metadata once
//! the shard is durable (INV-2). The policy's `content-length-range` is enforced while the
//! bytes stream; a violation stores nothing.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use hamster_protocol::form::{boundary_from_content_type, FormParser};
use hamster_protocol::meta::{Command, ObjectVersion};
use hamster_protocol::names::validate_key;
use hamster_protocol::post_policy::{self, Accepted, PostForm, SuccessAction, VerifyInput};
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::unhonoured;
use md5::{Digest, Md5};

use super::access::{self, Need};
use super::body::next_chunk;
use super::meta::{bucket, propose};
use super::request::{header, Target};
use super::response::{builder, Echo};
use super::{S3State, PUT_OBJECT_BYTES_MAX, USER_META_BYTES_MAX};
use crate::raft::node::GetAccessKey;

/// PostObject: a form upload into `target`'s bucket.
pub async fn post_object(
    state: &Arc<S3State>,
    req: &HttpRequest,
    target: &Target,
    echo: &Echo,
    mut payload: Payload,
) -> Result<HttpResponse, S3Error> {
    let bucket_name = target.bucket.as_deref().unwrap_or_default();
    let content_type = header(req, "content-type").unwrap_or("");
    let mut parser = FormParser::new(&boundary_from_content_type(content_type)?);
    // File bytes that arrived together with the last fields; written once the form verifies.
    let mut pending = Vec::new();
    while parser.file().is_none() {
        match next_chunk(&mut payload, state.config.body_idle).await? {
            Some(chunk) => parser.push(&chunk.map_err(payload_error)?, &mut pending)?,
            None => {
                parser.finish()?;
                break;
            }
        }
    }
    let form = PostForm::from_fields(parser.fields())?;
    let filename = parser.file().and_then(|f| f.filename.clone());
    let accepted = authorize(state, &form, bucket_name, filename.as_deref()).await?;
    super::exchange::refuse_unhonoured(req)?;
    unhonoured::check(form.fields(), unhonoured::Carrier::Form)?;
    validate_key(&accepted.key)?;
    let meta_bytes: usize = accepted
        .user_meta
        .iter()
        .map(|(n, v)| n.len() + v.len())
        .sum();
    if meta_bytes > USER_META_BYTES_MAX {
        return Err(S3Error::new(S3ErrorCode::MetadataTooLarge));
    }
    bucket(state, bucket_name).await?;
    let stored = store(state, bucket_name, &accepted, parser, pending, payload).await?;
    Ok(answer(req, echo, bucket_name, &accepted, &stored))
}

/// Looks up the credential's secret, verifies the form, and checks the key may write.
async fn authorize(
    state: &S3State,
    form: &PostForm,
    bucket_name: &str,
    filename: Option<&str>,
) -> Result<Accepted, S3Error> {
    let cred = post_policy::credential(form)?;
    let key = super::meta::read(state, GetAccessKey(cred.access_key.clone()))
        .await?
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidAccessKeyId))?;
    let accepted = post_policy::verify(
        form,
        &VerifyInput {
            bucket: bucket_name,
            filename,
            secret: &key.secret_key,
            region: &state.config.region,
            now_ms: state.clock.now_ms(),
        },
    )?;
    if !key.root && !access::allows(&key.grants, bucket_name, Need::Write) {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            format!("this access key has no write permission on bucket {bucket_name}"),
        ));
    }
    Ok(accepted)
}

/// The committed object's facts the answer needs.
struct Stored {
    etag: String,
}

/// Streams the file into a shard, enforcing the size limits, then commits the metadata.
async fn store(
    state: &Arc<S3State>,
    bucket_name: &str,
    accepted: &Accepted,
    mut parser: FormParser,
    mut pending: Vec<u8>,
    mut payload: Payload,
) -> Result<Stored, S3Error> {
    let (min, max) = accepted.length_range.unwrap_or((0, PUT_OBJECT_BYTES_MAX));
    let max = max.min(PUT_OBJECT_BYTES_MAX);
    let id = state.ids.object_id();
    // The file's length is known only at its end: the data plane fixes the profile then.
    let mut writer = state.data.begin_part(id, 1, None).await?;
    let _admitted = state.uploads.admit(writer.footprint_bytes())?;
    let mut md5 = Md5::new();
    let mut received = 0u64;
    // Any early return drops `writer`, which aborts every shard: nothing is stored.
    loop {
        received += pending.len() as u64;
        if received > max {
            return Err(S3Error::new(S3ErrorCode::EntityTooLarge));
        }
        md5.update(&pending);
        writer.write(&pending).await?;
        pending.clear();
        if parser.is_done() {
            break;
        }
        match next_chunk(&mut payload, state.config.body_idle).await? {
            Some(chunk) => parser.push(&chunk.map_err(payload_error)?, &mut pending)?,
            None => break,
        }
    }
    parser.finish()?;
    if received < min {
        return Err(S3Error::new(S3ErrorCode::EntityTooSmall));
    }
    // Durable to the ack rule before the commit (INV-2).
    let mut layout = writer.finish().await?;
    state.metrics.s3_bytes_in.inc_by(received);
    let md5: [u8; 16] = md5.finalize().into();
    let etag = hex::encode(md5);
    layout.md5 = etag.clone();
    let version = ObjectVersion {
        version_id: "null".to_string(),
        object_id: id,
        size: received,
        etag: etag.clone(),
        last_modified_ms: state.clock.now_ms(),
        content_type: accepted
            .content_type
            .clone()
            .unwrap_or_else(|| "binary/octet-stream".to_string()),
        headers: accepted.headers.clone(),
        user_meta: accepted.user_meta.clone(),
        checksums: Default::default(),
        parts: vec![layout],
    };
    let cmd = Command::PutObject {
        bucket: bucket_name.to_string(),
        key: accepted.key.clone(),
        version,
    };
    if let Err(e) = propose(state, cmd).await {
        if !matches!(
            e.code,
            S3ErrorCode::ServiceUnavailable | S3ErrorCode::InternalError
        ) {
            // Refused for certain: the shards are ours to reclaim. An uncertain failure
            // leaves them for restart recovery, which knows the outcome.
            state.data.discard(vec![id]);
        }
        return Err(e);
    }
    Ok(Stored { etag })
}

/// The success answer the form asked for: a status (201 with a PostResponse) or a redirect.
fn answer(
    req: &HttpRequest,
    echo: &Echo,
    bucket_name: &str,
    accepted: &Accepted,
    stored: &Stored,
) -> HttpResponse {
    let etag = stored.etag.as_str();
    let key = accepted.key.as_str();
    let location = format!(
        "{}://{}/{bucket_name}/{}",
        req.connection_info().scheme(),
        req.connection_info().host(),
        hamster_protocol::sigv4::uri_encode(key.as_bytes(), true)
    );
    let status = match &accepted.success {
        SuccessAction::Redirect(url) => {
            return builder(StatusCode::SEE_OTHER, echo)
                .insert_header(("etag", format!("\"{etag}\"")))
                .insert_header((
                    "location",
                    post_policy::redirect_location(url, bucket_name, key, etag),
                ))
                .finish();
        }
        SuccessAction::Status(s) => *s,
    };
    let mut resp = builder(
        StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT),
        echo,
    );
    resp.insert_header(("etag", format!("\"{etag}\"")))
        .insert_header(("location", location.as_str()));
    if status == 201 {
        let body = post_policy::post_response_xml(&location, bucket_name, key, etag);
        return resp.content_type("application/xml").body(body);
    }
    resp.finish()
}

fn payload_error(e: actix_web::error::PayloadError) -> S3Error {
    match e {
        actix_web::error::PayloadError::Incomplete(_) => S3Error::new(S3ErrorCode::IncompleteBody),
        other => S3Error::with_message(S3ErrorCode::IncompleteBody, other.to_string()),
    }
}
