//! Object operations: PUT streams the body through the data plane (coded, spread over the
//! part's homes, durable to the ack rule) and only then commits the metadata (INV-2); GET and
//! HEAD resolve the current version and stream only the shard slices that cover the range.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::body::SizedStream;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use base64::Engine;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use hamster_protocol::checksum::{self, Declared, DeclaredValue};
/// The checksum types, shared with the copy and multipart paths.
pub(super) use hamster_protocol::checksum::{ChecksumAlgo, Checksummer};
use hamster_protocol::meta::{Command, Expect, ObjectVersion};
use hamster_protocol::names::validate_key;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::shard::BLOCK_BYTES_DEFAULT;
use hamster_protocol::time::{http_date, parse_http_date};
use md5::{Digest, Md5};
use tracing::warn;

use super::body::BodyReader;
use super::exchange::Exchange;
use super::meta::{bucket, propose, read};
use super::request::header;
use super::response::builder;
use super::{PUT_OBJECT_BYTES_MAX, USER_META_BYTES_MAX};
use crate::data::{DataPlane, PartWriter};
use crate::raft::node::GetObject;

/// Standard headers stored with an object and returned verbatim.
const STORED_HEADERS: [&str; 5] = [
    "content-encoding",
    "content-disposition",
    "cache-control",
    "expires",
    "content-language",
];

/// Bytes a GET reads per step at most (a step never crosses a stripe); bounds memory per
/// streaming response.
const READ_STEP_BYTES: u64 = 4 * BLOCK_BYTES_DEFAULT as u64;

pub(super) fn names(x: &Exchange) -> (&str, &str) {
    (
        x.target.bucket.as_deref().unwrap_or_default(),
        x.target.key.as_deref().unwrap_or_default(),
    )
}

pub(super) fn declared_length(x: &Exchange) -> Result<u64, S3Error> {
    let streaming = header(&x.req, "x-amz-decoded-content-length");
    let raw = match streaming {
        Some(v) => Some(v),
        None => header(&x.req, "content-length"),
    };
    let len = raw
        .ok_or_else(|| S3Error::new(S3ErrorCode::MissingContentLength))?
        .trim()
        .parse::<u64>()
        .map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Content-Length is not a number",
            )
        })?;
    if len > PUT_OBJECT_BYTES_MAX {
        return Err(S3Error::new(S3ErrorCode::EntityTooLarge));
    }
    Ok(len)
}

pub(super) fn content_md5(x: &Exchange) -> Result<Option<[u8; 16]>, S3Error> {
    let Some(v) = header(&x.req, "content-md5") else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| S3Error::new(S3ErrorCode::InvalidDigest))?;
    let arr: [u8; 16] = raw
        .try_into()
        .map_err(|_| S3Error::new(S3ErrorCode::InvalidDigest))?;
    Ok(Some(arr))
}

pub(super) fn user_metadata(x: &Exchange) -> Result<BTreeMap<String, String>, S3Error> {
    let mut out = BTreeMap::new();
    let mut total = 0;
    for (name, value) in x.req.headers() {
        if let Some(n) = name.as_str().strip_prefix("x-amz-meta-") {
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            total += n.len() + v.len();
            out.insert(n.to_string(), v);
        }
    }
    if total > USER_META_BYTES_MAX {
        return Err(S3Error::new(S3ErrorCode::MetadataTooLarge));
    }
    Ok(out)
}

pub(super) fn stored_headers(x: &Exchange) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in STORED_HEADERS {
        let Some(v) = header(&x.req, name) else {
            continue;
        };
        let v = if name == "content-encoding" {
            without_aws_chunked(v)
        } else {
            v.to_string()
        };
        if !v.is_empty() {
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// A Content-Encoding as the client sent it, less the `aws-chunked` token: that token is the
/// transfer framing of this request, not the object's encoding. Everything else, spacing
/// included, is kept, as S3 returns it.
fn without_aws_chunked(v: &str) -> String {
    if !v
        .split(',')
        .any(|e| e.trim().eq_ignore_ascii_case("aws-chunked"))
    {
        return v.trim().to_string();
    }
    v.split(',')
        .filter(|e| !e.trim().eq_ignore_ascii_case("aws-chunked") && !e.trim().is_empty())
        .collect::<Vec<_>>()
        .join(",")
        .trim()
        .to_string()
}

/// The checksum the client declared: a value header, a trailer still to come, or only an
/// algorithm (then we compute and store it).
pub(super) fn declared_checksum(x: &Exchange) -> Result<Option<Declared>, S3Error> {
    let headers = x
        .req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("")));
    checksum::declared(headers)
}

/// Checks the declared checksum against the one computed over the body; the value to store.
pub(super) fn verify_checksum(
    declared: Declared,
    computed: Checksummer,
    body: &BodyReader,
) -> Result<String, S3Error> {
    let algo = declared.algo;
    let given = match declared.value {
        DeclaredValue::Header(v) => Some(v),
        DeclaredValue::Trailer => Some(
            body.trailers()
                .iter()
                .find(|(n, _)| n == algo.header_name())
                .map(|(_, v)| v.trim().to_string())
                .ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRequest,
                        format!("the declared trailer {} was not sent", algo.header_name()),
                    )
                })?,
        ),
        DeclaredValue::Compute => None,
    };
    let raw = computed.finish();
    if let Some(given) = given {
        if checksum::validate_b64(algo, &given)? != raw {
            return Err(checksum::mismatch(algo));
        }
    }
    Ok(checksum::to_b64(&raw))
}

/// Conditional PUT: `If-None-Match: *` (only if the key is absent) and `If-Match: "etag"` (only
/// if the current version has that ETag), judged against the current version.
fn put_conditions(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    current: Option<&ObjectVersion>,
) -> Result<(), S3Error> {
    if let Some(m) = if_none_match {
        if m.trim() != "*" {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "A header you provided implies functionality that is not implemented: If-None-Match on PUT accepts only *",
            ));
        }
        if current.is_some() {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
    }
    if let Some(m) = if_match {
        let Some(v) = current else {
            return Err(S3Error::new(S3ErrorCode::NoSuchKey));
        };
        if !etag_matches(m, &v.etag) {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
    }
    Ok(())
}

/// Reads the key's current version and applies `put_conditions`, if the request has any. PUT
/// calls this before reading the body so a doomed upload writes nothing; the decisive check is
/// the one the commit itself makes (`Command::PutObjectIf`), so racing conditional PUTs cannot
/// both win.
pub(super) async fn check_put_conditions(
    x: &Exchange,
    bucket_name: &str,
    key: &str,
) -> Result<(), S3Error> {
    let if_match = header(&x.req, "if-match");
    let if_none_match = header(&x.req, "if-none-match");
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(());
    }
    let list = read(
        &x.state,
        GetObject {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
        },
    )
    .await?;
    put_conditions(
        if_match,
        if_none_match,
        list.as_ref().and_then(|l| l.current()),
    )
}

/// Every object is stored alike (erasure-coded on a cluster, one shard on one node), which S3
/// clients know as STANDARD; a request for another class is refused rather than silently
/// given STANDARD.
pub(super) fn check_storage_class(x: &Exchange) -> Result<(), S3Error> {
    match header(&x.req, "x-amz-storage-class").map(str::trim) {
        None | Some("STANDARD") => Ok(()),
        Some(other) => Err(S3Error::with_message(
            S3ErrorCode::InvalidStorageClass,
            format!("Hamster stores every object as STANDARD; {other} is not offered"),
        )),
    }
}

/// A request body streamed into a shard file (not yet durable).
pub(super) struct Streamed {
    /// Bytes received after decoding.
    pub len: u64,
    /// Their MD5 (the ETag of a simple object or part).
    pub md5: [u8; 16],
    /// The running checksum over them, if one was asked for.
    pub sum: Option<Checksummer>,
}

/// Streams `body` into `writer`, hashing each byte once for the ETag and the checksum, and
/// refuses a body longer or shorter than `declared` or one that fails its Content-MD5. On an
/// error the caller drops `writer`, which removes its temp file: nothing is stored.
pub(super) async fn stream_into(
    body: &mut BodyReader,
    writer: &mut PartWriter,
    declared: u64,
    md5_expected: Option<[u8; 16]>,
    mut sum: Option<Checksummer>,
) -> Result<Streamed, S3Error> {
    let mut md5 = Md5::new();
    let mut len = 0u64;
    while let Some(chunk) = body.next().await? {
        len += chunk.len() as u64;
        if len > declared {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "the body is longer than its declared length",
            ));
        }
        md5.update(&chunk);
        if let Some(s) = &mut sum {
            s.update(&chunk);
        }
        writer.write(&chunk).await?;
    }
    if len != declared {
        return Err(S3Error::new(S3ErrorCode::IncompleteBody));
    }
    let md5: [u8; 16] = md5.finalize().into();
    if md5_expected.is_some_and(|m| m != md5) {
        return Err(S3Error::new(S3ErrorCode::BadDigest));
    }
    Ok(Streamed { len, md5, sum })
}

/// The precondition a conditional PUT carries into its commit.
pub(super) fn put_expectation(x: &Exchange) -> Option<Expect> {
    if header(&x.req, "if-none-match").is_some() {
        return Some(Expect::Absent);
    }
    header(&x.req, "if-match").map(|m| {
        let tags = m
            .split(',')
            .map(|t| {
                t.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_string()
            })
            .collect();
        Expect::Etag(tags)
    })
}

/// PutObject.
pub async fn put_object(x: &Exchange, payload: Payload) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    check_storage_class(x)?;
    if header(&x.req, "x-amz-copy-source").is_some() {
        return super::copy::copy_object(x).await;
    }
    if header(&x.req, "x-amz-tagging").is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "object tagging is not implemented by Hamster yet",
        ));
    }
    let declared = declared_length(x)?;
    let md5_expected = content_md5(x)?;
    let user_meta = user_metadata(x)?;
    let headers = stored_headers(x);
    let checksum = declared_checksum(x)?;
    bucket(&x.state, bucket_name).await?;
    check_put_conditions(x, bucket_name, key).await?;

    let state = &x.state;
    let id = state.ids.object_id();
    let mut writer = state.data.begin_part(id, 1, Some(declared)).await?;
    // Admitted (or refused) before a byte of the body is read; held until the object is stored.
    let _admitted = state.uploads.admit(writer.footprint_bytes())?;
    let mut body = BodyReader::new(
        payload,
        &x.auth.payload,
        &x.auth.signing,
        x.state.config.body_idle,
    );
    // Any early return drops `writer`, which aborts every shard: nothing is stored.
    let sum = checksum.as_ref().map(|d| Checksummer::new(d.algo));
    let Streamed {
        len: received,
        md5,
        sum,
    } = stream_into(&mut body, &mut writer, declared, md5_expected, sum).await?;
    let mut checksums = BTreeMap::new();
    if let (Some(d), Some(s)) = (checksum, sum) {
        let algo = d.algo;
        checksums.insert(algo.name().to_string(), verify_checksum(d, s, &body)?);
    }
    // Durable to the ack rule before the commit (INV-2).
    let mut layout = writer.finish().await?;
    state.metrics.s3_bytes_in.inc_by(received);
    let etag = hex::encode(md5);
    layout.md5 = etag.clone();
    let version = ObjectVersion {
        version_id: "null".to_string(),
        object_id: id,
        size: received,
        etag: etag.clone(),
        last_modified_ms: state.clock.now_ms(),
        content_type: header(&x.req, "content-type")
            .unwrap_or("binary/octet-stream")
            .to_string(),
        headers,
        user_meta,
        checksums: checksums.clone(),
        parts: vec![layout],
    };
    let cmd = match put_expectation(x) {
        None => Command::PutObject {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
            version,
        },
        Some(expect) => Command::PutObjectIf {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
            version,
            expect,
        },
    };
    if let Err(e) = propose(state, cmd).await {
        if !matches!(
            e.code,
            S3ErrorCode::ServiceUnavailable | S3ErrorCode::InternalError
        ) {
            // Refused for certain (e.g. the bucket vanished): the shards are ours to reclaim.
            // An uncertain failure leaves them for restart recovery, which knows the outcome.
            x.state.data.discard(vec![id]);
        }
        return Err(e);
    }
    let mut resp = builder(StatusCode::OK, &x.echo);
    resp.insert_header(("etag", format!("\"{etag}\"")));
    for (algo, v) in &checksums {
        resp.insert_header((format!("x-amz-checksum-{algo}"), v.as_str()));
    }
    Ok(resp.finish())
}

pub(super) fn io_error(what: &str, e: std::io::Error) -> S3Error {
    warn!(error = %e, "{what} failed");
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return S3Error::with_message(S3ErrorCode::SlowDown, "this node's disk is full");
    }
    S3Error::new(S3ErrorCode::InternalError)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive range; `None` means serve everything (no
/// header, or a form S3 ignores such as several ranges).
fn parse_range(v: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 || size == 0 {
                return Err(S3Error::new(S3ErrorCode::InvalidRange));
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return Ok(None);
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e,
                    _ => return Ok(None),
                }
            };
            if start >= size {
                return Err(S3Error::new(S3ErrorCode::InvalidRange));
            }
            (start, end.min(size - 1))
        }
    };
    Ok(Some(range))
}

pub(super) fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

/// RFC 7232 precedence, as S3 applies it to GET and HEAD.
fn check_conditions(x: &Exchange, v: &ObjectVersion) -> Result<(), S3Error> {
    let modified_s = v.last_modified_ms / 1000;
    let if_match = header(&x.req, "if-match");
    if let Some(m) = if_match {
        if !etag_matches(m, &v.etag) {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
    } else if let Some(t) = header(&x.req, "if-unmodified-since").and_then(parse_http_date) {
        if modified_s > t / 1000 {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
    }
    if let Some(m) = header(&x.req, "if-none-match") {
        if etag_matches(m, &v.etag) {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
    } else if let Some(t) = header(&x.req, "if-modified-since").and_then(parse_http_date) {
        if modified_s <= t / 1000 {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
    }
    Ok(())
}

/// Headers a 304 repeats from the object, as S3 sends them: caches and sync tools revalidate
/// with the ETag and Last-Modified of the answer, and keep their freshness rules from it.
const NOT_MODIFIED_HEADERS: [&str; 2] = ["cache-control", "expires"];

/// The 304 answer to a conditional GET or HEAD: no body, but the validators and caching
/// headers of the version that was not modified.
fn not_modified(x: &Exchange, v: &ObjectVersion) -> HttpResponse {
    let mut resp = builder(StatusCode::NOT_MODIFIED, &x.echo);
    resp.insert_header(("etag", format!("\"{}\"", v.etag)))
        .insert_header(("last-modified", http_date(v.last_modified_ms)));
    for name in NOT_MODIFIED_HEADERS {
        if let Some(val) = v.headers.get(name) {
            resp.insert_header((name, val.as_str()));
        }
    }
    resp.finish()
}

/// `response-*` query parameters override these headers on GET.
const RESPONSE_OVERRIDES: [(&str, &str); 6] = [
    ("response-content-type", "content-type"),
    ("response-content-language", "content-language"),
    ("response-expires", "expires"),
    ("response-cache-control", "cache-control"),
    ("response-content-disposition", "content-disposition"),
    ("response-content-encoding", "content-encoding"),
];

/// GetObject and HeadObject.
pub async fn get_object(x: &Exchange, head: bool) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    if let Some(v) = x.target.param("versionId") {
        if v != "null" {
            return Err(S3Error::new(S3ErrorCode::NoSuchVersion));
        }
    }
    let list = read(
        &x.state,
        GetObject {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
        },
    )
    .await?;
    let Some(v) = list.as_ref().and_then(|l| l.current()).cloned() else {
        bucket(&x.state, bucket_name).await?;
        return Err(S3Error::new(S3ErrorCode::NoSuchKey));
    };
    if let Err(e) = check_conditions(x, &v) {
        if e.code == S3ErrorCode::NotModified {
            return Ok(not_modified(x, &v));
        }
        return Err(e);
    }
    let part = match x.target.param("partNumber") {
        Some(n) => super::multipart::part_range(&v, n, header(&x.req, "range").is_some())?,
        None => None,
    };
    let range = match (&part, header(&x.req, "range")) {
        (Some(p), _) => p.range,
        (None, Some(r)) => parse_range(r, v.size)?,
        (None, None) => None,
    };
    let (start, end_excl, status) = match range {
        Some((a, b)) => (a, b + 1, StatusCode::PARTIAL_CONTENT),
        None => (0, v.size, StatusCode::OK),
    };
    let mut resp = builder(status, &x.echo);
    resp.insert_header(("etag", format!("\"{}\"", v.etag)))
        .insert_header(("last-modified", http_date(v.last_modified_ms)))
        .insert_header(("accept-ranges", "bytes"))
        .insert_header(("content-type", v.content_type.as_str()));
    for (n, val) in &v.headers {
        resp.insert_header((n.as_str(), val.as_str()));
    }
    for (n, val) in &v.user_meta {
        resp.insert_header((format!("x-amz-meta-{n}"), val.as_str()));
    }
    if header(&x.req, "x-amz-checksum-mode").is_some_and(|m| m.eq_ignore_ascii_case("enabled"))
        && range.is_none()
    {
        for (algo, val) in &v.checksums {
            resp.insert_header((format!("x-amz-checksum-{algo}"), val.as_str()));
        }
    }
    if !head {
        for (q, h) in RESPONSE_OVERRIDES {
            if let Some(val) = x.target.param(q) {
                resp.insert_header((h, val));
            }
        }
    }
    if range.is_some() {
        resp.insert_header((
            "content-range",
            format!("bytes {start}-{}/{}", end_excl - 1, v.size),
        ));
    }
    if let Some(count) = part.and_then(|p| p.parts_count) {
        resp.insert_header(("x-amz-mp-parts-count", count.to_string()));
    }
    let len = end_excl - start;
    if head {
        return Ok(resp.body(HeadBody(len)));
    }
    x.state.metrics.s3_bytes_out.inc_by(len);
    let object = v.object_id;
    let mut cursor = ReadCursor::new(x.state.data.clone(), v, start, end_excl);
    let first = if cursor.done() {
        None
    } else {
        match cursor.step().await {
            Ok(b) => Some(b),
            Err(e) => {
                // Fewer than k verified shards of the first stripe: nothing is served (INV-5).
                if let Some(held) = x.state.data.admit_lost_warning() {
                    warn!(object = %object, error = %e, "object unreadable{held}");
                }
                return Err(S3Error::with_message(
                    S3ErrorCode::InternalError,
                    "the object's data cannot be read from enough verified shards; run hamster repair",
                ));
            }
        }
    };
    let body = object_stream(first, cursor);
    Ok(resp.body(SizedStream::new(len, body)))
}

/// The body of a HEAD answer: it declares the object's length (so `Content-Length` is right)
/// and yields nothing; the HTTP layer sends no body bytes for HEAD.
struct HeadBody(u64);

impl actix_web::body::MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.0)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// Where a streaming GET (or a server-side copy) is.
pub(super) struct ReadCursor {
    data: DataPlane,
    version: ObjectVersion,
    /// Object offset of the next byte to send.
    pos: u64,
    end: u64,
    /// Shards of the current part found bad so far, by part number.
    avoid: (u32, BTreeSet<u16>),
}

impl ReadCursor {
    /// A cursor over `start..end` of `version`'s bytes.
    pub(super) fn new(data: DataPlane, version: ObjectVersion, start: u64, end: u64) -> Self {
        ReadCursor {
            data,
            version,
            pos: start,
            end,
            avoid: (0, BTreeSet::new()),
        }
    }

    /// Whether every byte of the range has been read.
    pub(super) fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// Reads the next step of the range from the part that holds `pos`: at most
    /// `READ_STEP_BYTES`, never past the end of a stripe.
    pub(super) async fn step(&mut self) -> Result<Bytes, std::io::Error> {
        let mut part_start = 0u64;
        for p in &self.version.parts {
            if self.pos < part_start + p.size {
                let within = self.pos - part_start;
                let stripe = u64::from(p.k) * u64::from(p.block_bytes);
                let stripe_end = (within / stripe + 1) * stripe;
                let take = (p.size - within)
                    .min(self.end - self.pos)
                    .min(READ_STEP_BYTES)
                    .min(stripe_end - within);
                if self.avoid.0 != p.part {
                    self.avoid = (p.part, BTreeSet::new());
                }
                let body = self.version.part_body(p);
                let out = self
                    .data
                    .read_part(body, p, within..within + take, &mut self.avoid.1)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                self.pos += take;
                return Ok(Bytes::from(out));
            }
            part_start += p.size;
        }
        Err(std::io::Error::other("range beyond the object's parts"))
    }
}

/// Steps a GET reads ahead of the socket: the next steps are fetched while the current one
/// is being sent, and memory per response stays bounded by this many steps.
const READ_AHEAD_STEPS: usize = 3;

/// The body of a GET: `first` (already read, so a part that cannot be read at all fails the
/// request with a status rather than a cut body), then the rest of the cursor's range, read by
/// a task of its own up to [`READ_AHEAD_STEPS`] ahead of the client. A client that goes away
/// drops the receiver, and the reader stops at its next step.
fn object_stream(
    first: Option<Bytes>,
    mut cursor: ReadCursor,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_STEPS);
    if !cursor.done() {
        tokio::spawn(async move {
            while !cursor.done() {
                let step = cursor.step().await;
                let failed = step.is_err();
                if let Err(e) = &step {
                    // Fewer than k verified shards: nothing unverified is served (INV-5), the
                    // response is cut.
                    if let Some(held) = cursor.data.admit_lost_warning() {
                        warn!(object = %cursor.version.object_id, error = %e, "read failed mid-response{held}");
                    }
                }
                if tx.send(step).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    let rest = stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    });
    stream::iter(first.map(Ok)).chain(rest)
}

/// DeleteObject: removes the current version; S3 answers 204 whether or not the key existed.
pub async fn delete_object(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    if let Some(v) = x.target.param("versionId") {
        if v != "null" {
            return Err(S3Error::new(S3ErrorCode::NoSuchVersion));
        }
    }
    propose(
        &x.state,
        Command::DeleteObject {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
        },
    )
    .await?;
    Ok(builder(StatusCode::NO_CONTENT, &x.echo).finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-200", 100).unwrap(), Some((0, 99)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert_eq!(parse_range("bytes=5-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
    }

    #[test]
    fn content_encoding_keeps_what_was_sent() {
        assert_eq!(without_aws_chunked("deflate, gzip"), "deflate, gzip");
        assert_eq!(without_aws_chunked("aws-chunked"), "");
        assert_eq!(without_aws_chunked("aws-chunked, gzip"), "gzip");
        assert_eq!(
            without_aws_chunked("deflate, AWS-Chunked, gzip"),
            "deflate, gzip"
        );
        assert_eq!(without_aws_chunked("gzip,aws-chunked"), "gzip");
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", \"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }

    #[test]
    fn conditional_put() {
        let v = ObjectVersion {
            version_id: "null".into(),
            object_id: hamster_protocol::meta::ObjectId([1; 16]),
            size: 0,
            etag: "abc".into(),
            last_modified_ms: 0,
            content_type: String::new(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            parts: Vec::new(),
        };
        let code = |m, n, c| put_conditions(m, n, c).map_err(|e| e.code);
        assert_eq!(code(None, Some("*"), None), Ok(()));
        assert_eq!(
            code(None, Some("*"), Some(&v)),
            Err(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(None, Some("\"abc\""), None),
            Err(S3ErrorCode::NotImplemented)
        );
        assert_eq!(code(Some("\"abc\""), None, Some(&v)), Ok(()));
        assert_eq!(
            code(Some("\"abd\""), None, Some(&v)),
            Err(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(Some("\"abc\""), None, None),
            Err(S3ErrorCode::NoSuchKey)
        );
    }
}
