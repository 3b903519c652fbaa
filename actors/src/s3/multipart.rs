//! Multipart uploads: create, upload a part (from the body or copied server-side), complete,
//! abort, and the two listings. Each part is stored under its own fresh body id as
//! `<body>.<part>.0`, made durable before its metadata is committed (INV-2), and completion only
//! assembles a version from the parts' layouts: no byte is moved again. Parts freed by a
//! replacement, an abort or an unused completion go to the reclaimer through the state machine.

use std::collections::BTreeMap;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use hamster_protocol::checksum::composite_b64;
use hamster_protocol::meta::{Command, ObjectId, ObjectVersion, PartLayout, Upload, UploadPart};
use hamster_protocol::names::validate_key;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::time::iso8601_ms;
use hamster_protocol::xml::{
    self, escape, parse_complete_multipart, url_encode, CompleteResult, CopyResult,
    PART_NUMBER_MAX, S3_XMLNS,
};
use md5::{Digest, Md5};

use super::body::BodyReader;
use super::copy::{
    algorithm_named, algorithm_stored_as, certain_refusal, copy_bytes, resolve_source,
};
use super::exchange::Exchange;
use super::meta::{bucket, propose, read};
use super::object::{
    content_md5, declared_checksum, declared_length, names, stored_headers, stream_into,
    user_metadata, verify_checksum, ChecksumAlgo, Checksummer, Streamed,
};
use super::request::header;
use super::response::{builder, xml_ok};
use super::XML_BODY_BYTES_MAX;
use crate::raft::node::{GetObject, GetUpload, ListUploads};

/// Smallest size of every part but the last, as on S3.
pub const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// Largest page ListParts and ListMultipartUploads answer with.
pub const LIST_PAGE_MAX: usize = 1000;
/// Bound on metadata reads one ListMultipartUploads page may take (common prefixes can hide
/// many uploads behind one entry).
const LIST_UPLOAD_READS_MAX: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Pure pieces
// ---------------------------------------------------------------------------------------------

/// A part number from the query: 1..=10000, else InvalidArgument.
pub(super) fn parse_part_number(raw: &str) -> Result<u32, S3Error> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=PART_NUMBER_MAX).contains(n))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

/// The multipart ETag: hex MD5 of the concatenated binary part MD5s, then `-<count>`.
pub(super) fn multipart_etag(part_md5s: &[&str]) -> Option<String> {
    let mut h = Md5::new();
    for m in part_md5s {
        let mut raw = [0u8; 16];
        hex::decode_to_slice(m, &mut raw).ok()?;
        h.update(raw);
    }
    Some(format!("{}-{}", hex::encode(h.finalize()), part_md5s.len()))
}

/// The composite checksum (see `composite_b64`); `None` if a part has no valid checksum.
pub(super) fn composite_checksum(algo: ChecksumAlgo, parts: &[Option<&str>]) -> Option<String> {
    let parts: Option<Vec<&str>> = parts.iter().copied().collect();
    composite_b64(algo, &parts?).ok()
}

/// What a `partNumber` GET or HEAD serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartRange {
    /// Inclusive byte range of the part; `None` serves the whole object.
    pub range: Option<(u64, u64)>,
    /// `x-amz-mp-parts-count`, for objects made by a multipart upload.
    pub parts_count: Option<usize>,
}

/// Resolves `partNumber` on a GET or HEAD. Parts are counted in order (1 is the first part of
/// the object), so a client can walk 1..=`x-amz-mp-parts-count`. A single-part object has only
/// part 1, which is the whole object.
pub(super) fn part_range(
    v: &ObjectVersion,
    raw: &str,
    has_range: bool,
) -> Result<Option<PartRange>, S3Error> {
    let n = parse_part_number(raw)?;
    if has_range {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter",
        ));
    }
    let unsatisfiable = || {
        S3Error::with_message(
            S3ErrorCode::InvalidRange,
            "The requested partnumber is not satisfiable",
        )
    };
    let multipart = v.parts.iter().any(|p| p.body.is_some());
    if !multipart {
        return match n {
            1 => Ok(Some(PartRange {
                range: None,
                parts_count: None,
            })),
            _ => Err(unsatisfiable()),
        };
    }
    let idx = n as usize - 1;
    let part = v.parts.get(idx).ok_or_else(unsatisfiable)?;
    let start: u64 = v.parts[..idx].iter().map(|p| p.size).sum();
    let range = (part.size > 0).then(|| (start, start + part.size - 1));
    Ok(Some(PartRange {
        range,
        parts_count: Some(v.parts.len()),
    }))
}

/// Checks a completion's part list against the upload and returns the layouts to assemble:
/// strictly ascending numbers (InvalidPartOrder), each uploaded with that ETag (InvalidPart),
/// every part but the last at least 5 MiB (EntityTooSmall).
pub(super) fn select_parts<'u>(
    upload: &'u Upload,
    wanted: &[(u32, String)],
) -> Result<Vec<&'u UploadPart>, S3Error> {
    if wanted.windows(2).any(|w| w[1].0 <= w[0].0) {
        return Err(S3Error::new(S3ErrorCode::InvalidPartOrder));
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (n, etag) in wanted {
        let p = upload
            .parts
            .get(n)
            .filter(|p| p.layout.md5 == *etag)
            .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidPart))?;
        out.push(p);
    }
    let (_, body) = out
        .split_last()
        .ok_or_else(|| S3Error::new(S3ErrorCode::MalformedXML))?;
    if body.iter().any(|p| p.layout.size < PART_BYTES_MIN) {
        return Err(S3Error::new(S3ErrorCode::EntityTooSmall));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

fn upload_id_param(x: &Exchange) -> Result<String, S3Error> {
    x.target
        .param("uploadId")
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| S3Error::new(S3ErrorCode::NoSuchUpload))
}

/// The upload addressed by the request, or NoSuchBucket / NoSuchUpload.
async fn get_upload(x: &Exchange) -> Result<Upload, S3Error> {
    let (bucket_name, key) = names(x);
    let upload_id = upload_id_param(x)?;
    let found = read(
        &x.state,
        GetUpload {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
            upload_id,
        },
    )
    .await?;
    match found {
        Some(u) => Ok(u),
        None => {
            bucket(&x.state, bucket_name).await?;
            Err(S3Error::new(S3ErrorCode::NoSuchUpload))
        }
    }
}

fn upload_algo(u: &Upload) -> Option<ChecksumAlgo> {
    u.checksum_algo.as_deref().and_then(algorithm_stored_as)
}

/// CreateMultipartUpload.
pub async fn create(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    super::object::check_storage_class(x)?;
    if header(&x.req, "x-amz-tagging").is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "object tagging is not implemented by Hamster yet",
        ));
    }
    if header(&x.req, "x-amz-checksum-type").is_some_and(|t| t.eq_ignore_ascii_case("FULL_OBJECT"))
    {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "full-object multipart checksums are not implemented by Hamster yet",
        ));
    }
    let algo = header(&x.req, "x-amz-checksum-algorithm")
        .map(algorithm_named)
        .transpose()?;
    let upload = Upload {
        upload_id: x.state.ids.object_id().to_hex(),
        bucket: bucket_name.to_string(),
        key: key.to_string(),
        initiated_ms: x.state.clock.now_ms(),
        content_type: header(&x.req, "content-type")
            .unwrap_or("binary/octet-stream")
            .to_string(),
        headers: stored_headers(x),
        user_meta: user_metadata(x)?,
        checksum_algo: algo.map(|a| a.name().to_string()),
        parts: BTreeMap::new(),
    };
    let id = upload.upload_id.clone();
    propose(&x.state, Command::CreateUpload(upload)).await?;
    let mut resp = builder(StatusCode::OK, &x.echo);
    if let Some(a) = algo {
        resp.insert_header(("x-amz-checksum-algorithm", a.upper_name()));
    }
    Ok(resp
        .content_type("application/xml")
        .body(xml::initiate_multipart_xml(bucket_name, key, &id)))
}

/// A part's bytes received into a shard, not yet durable.
struct Received {
    size: u64,
    md5_hex: String,
    checksum: Option<String>,
}

/// Streams the request body into `writer`, checking length, Content-MD5 and the declared (or
/// the upload's) checksum. Nothing is kept if it fails: the caller drops the writer.
async fn receive(
    x: &Exchange,
    payload: Payload,
    upload: &Upload,
    writer: &mut crate::data::PartWriter,
) -> Result<Received, S3Error> {
    let declared = declared_length(x)?;
    let md5_expected = content_md5(x)?;
    let given = declared_checksum(x)?;
    let algo = match (given.as_ref().map(|d| d.algo), upload_algo(upload)) {
        (Some(g), Some(u)) if g != u => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual \
                     checksum Type: {}",
                    u.name(),
                    g.name()
                ),
            ))
        }
        (g, u) => g.or(u),
    };
    let mut body = BodyReader::new(
        payload,
        &x.auth.payload,
        &x.auth.signing,
        x.state.config.body_idle,
    );
    let Streamed {
        len: received,
        md5,
        sum,
    } = stream_into(
        &mut body,
        writer,
        declared,
        md5_expected,
        algo.map(Checksummer::new),
    )
    .await?;
    // A declared checksum is verified (its value may be a trailer, read by now); an upload
    // that declared an algorithm gets one computed for every part, for the composite.
    let checksum = match (given, sum) {
        (Some(d), Some(s)) => Some(verify_checksum(d, s, &body)?),
        (None, Some(s)) => Some(s.finish_b64()),
        (_, None) => None,
    };
    x.state.metrics.s3_bytes_in.inc_by(received);
    Ok(Received {
        size: received,
        md5_hex: hex::encode(md5),
        checksum,
    })
}

/// Commits a stored part; a certain refusal reclaims its shard.
async fn commit_part(
    x: &Exchange,
    upload: &Upload,
    body: ObjectId,
    part: UploadPart,
) -> Result<(), S3Error> {
    let cmd = Command::PutUploadPart {
        upload_id: upload.upload_id.clone(),
        bucket: upload.bucket.clone(),
        key: upload.key.clone(),
        part,
    };
    if let Err(e) = propose(&x.state, cmd).await {
        if certain_refusal(&e) {
            x.state.data.discard(vec![body]);
        }
        return Err(e);
    }
    Ok(())
}

/// A stored part's layout as the upload records it: its MD5 and its own body id.
fn part_layout(mut layout: PartLayout, md5_hex: &str, body: ObjectId) -> PartLayout {
    layout.md5 = md5_hex.to_string();
    layout.body = Some(body);
    layout
}

/// UploadPart.
pub async fn upload_part(x: &Exchange, payload: Payload) -> Result<HttpResponse, S3Error> {
    let (_, key) = names(x);
    validate_key(key)?;
    let n = parse_part_number(x.target.param("partNumber").unwrap_or(""))?;
    let upload = get_upload(x).await?;
    let state = &x.state;
    let body = state.ids.object_id();
    let declared = declared_length(x)?;
    let mut writer = state.data.begin_part(body, n, Some(declared)).await?;
    // Admitted (or refused) before a byte of the body is read; held until the part is stored.
    let _admitted = state.uploads.admit(writer.footprint_bytes())?;
    // Any early return drops `writer`, which aborts every shard: nothing is stored.
    let got = receive(x, payload, &upload, &mut writer).await?;
    // Durable to the ack rule before the commit (INV-2).
    let layout = writer.finish().await?;
    assert_eq!(layout.size, got.size, "the part holds what was received");
    let part = UploadPart {
        layout: part_layout(layout, &got.md5_hex, body),
        last_modified_ms: state.clock.now_ms(),
        checksum: got.checksum.clone(),
    };
    commit_part(x, &upload, body, part).await?;
    let mut resp = builder(StatusCode::OK, &x.echo);
    resp.insert_header(("etag", format!("\"{}\"", got.md5_hex)));
    if let (Some(a), Some(c)) = (upload_algo(&upload), got.checksum.as_ref()) {
        resp.insert_header((format!("x-amz-checksum-{}", a.name()), c.as_str()));
    }
    Ok(resp.finish())
}

/// `x-amz-copy-source-range: bytes=first-last` against a source of `size` bytes.
pub(super) fn parse_copy_range(v: &str, size: u64) -> Result<(u64, u64), S3Error> {
    let form = || {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where \
             first and last are the zero-based offsets of the first and last bytes to copy",
        )
    };
    let (a, b) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
        .ok_or_else(form)?;
    let first: u64 = a.trim().parse().map_err(|_| form())?;
    let last: u64 = b.trim().parse().map_err(|_| form())?;
    if first > last {
        return Err(form());
    }
    if last >= size {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("Range specified is not valid for source object of size: {size}"),
        ));
    }
    Ok((first, last + 1))
}

/// UploadPartCopy: a part copied server-side from (a range of) another object.
pub async fn upload_part_copy(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (_, key) = names(x);
    validate_key(key)?;
    let n = parse_part_number(x.target.param("partNumber").unwrap_or(""))?;
    let upload = get_upload(x).await?;
    let (_, source) = resolve_source(x).await?;
    let (start, end) = match header(&x.req, "x-amz-copy-source-range") {
        Some(r) => parse_copy_range(r, source.size)?,
        None => (0, source.size),
    };
    if end - start > super::copy::COPY_SOURCE_BYTES_MAX {
        return Err(S3Error::new(S3ErrorCode::EntityTooLarge));
    }
    let state = &x.state;
    let body = state.ids.object_id();
    let algos: Vec<ChecksumAlgo> = upload_algo(&upload).into_iter().collect();
    let copied = copy_bytes(state, source, (start, end), body, n, &algos).await?;
    let now = state.clock.now_ms();
    let checksum = copied.checksums.values().next().cloned();
    let part = UploadPart {
        layout: part_layout(copied.layout, &copied.md5_hex, body),
        last_modified_ms: now,
        checksum,
    };
    commit_part(x, &upload, body, part).await?;
    Ok(xml_ok(
        &x.echo,
        xml::copy_part_result_xml(&CopyResult {
            etag: copied.md5_hex,
            last_modified_ms: now,
        }),
    ))
}

/// CompleteMultipartUpload. With `If-None-Match: *` or `If-Match` the commit itself judges the
/// condition (racing writers cannot both win). A retry of a completion that went through (the
/// client timed out and sent it again) answers as the first did, as S3 does, rather than
/// NoSuchUpload.
pub async fn complete(x: &Exchange, payload: Payload) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    let mut reader = BodyReader::new(
        payload,
        &x.auth.payload,
        &x.auth.signing,
        x.state.config.body_idle,
    );
    let doc = reader.read_all(XML_BODY_BYTES_MAX).await?;
    let wanted = parse_complete_multipart(&doc)?;
    let upload = match get_upload(x).await {
        Ok(u) => u,
        Err(e) if e.code == S3ErrorCode::NoSuchUpload => {
            return completed_before(x, &wanted).await?.ok_or(e)
        }
        Err(e) => return Err(e),
    };
    super::object::check_put_conditions(x, bucket_name, key).await?;
    let parts = select_parts(&upload, &wanted)?;
    let md5s: Vec<&str> = parts.iter().map(|p| p.layout.md5.as_str()).collect();
    let etag = multipart_etag(&md5s).ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
    let mut checksums = BTreeMap::new();
    if let Some(a) = upload_algo(&upload) {
        let sums: Vec<Option<&str>> = parts.iter().map(|p| p.checksum.as_deref()).collect();
        if let Some(c) = composite_checksum(a, &sums) {
            checksums.insert(a.name().to_string(), c);
        }
    }
    let version = ObjectVersion {
        version_id: "null".to_string(),
        object_id: x.state.ids.object_id(),
        size: parts.iter().map(|p| p.layout.size).sum(),
        etag: etag.clone(),
        last_modified_ms: x.state.clock.now_ms(),
        content_type: upload.content_type.clone(),
        headers: upload.headers.clone(),
        user_meta: upload.user_meta.clone(),
        checksums: checksums.clone(),
        parts: parts.iter().map(|p| p.layout.clone()).collect(),
    };
    let (upload_id, bucket, key) = (
        upload.upload_id.clone(),
        bucket_name.to_string(),
        key.to_string(),
    );
    let cmd = match super::object::put_expectation(x) {
        None => Command::CompleteUpload {
            upload_id,
            bucket,
            key,
            version,
        },
        Some(expect) => Command::CompleteUploadIf {
            upload_id,
            bucket,
            key,
            version,
            expect,
        },
    };
    match propose(&x.state, cmd).await {
        Ok(_) => {}
        // A retry that raced the first attempt and lost.
        Err(e) if e.code == S3ErrorCode::NoSuchUpload => {
            return completed_before(x, &wanted).await?.ok_or(e)
        }
        Err(e) => return Err(e),
    }
    Ok(completion_response(x, etag, &checksums))
}

/// The answer to a completion of an upload that is gone, when the key's current version is
/// what completing it with `wanted` made (same parts, same ETag): the first attempt succeeded.
async fn completed_before(
    x: &Exchange,
    wanted: &[(u32, String)],
) -> Result<Option<HttpResponse>, S3Error> {
    let (bucket_name, key) = names(x);
    let md5s: Vec<&str> = wanted.iter().map(|(_, m)| m.as_str()).collect();
    let Some(etag) = multipart_etag(&md5s) else {
        return Ok(None);
    };
    let list = read(
        &x.state,
        GetObject {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
        },
    )
    .await?;
    let Some(current) = list.as_ref().and_then(|l| l.current()) else {
        return Ok(None);
    };
    let same_parts = current.parts.len() == wanted.len()
        && current
            .parts
            .iter()
            .zip(wanted)
            .all(|(p, (n, m))| p.part == *n && p.md5 == *m);
    if current.etag != etag || !same_parts {
        return Ok(None);
    }
    Ok(Some(completion_response(x, etag, &current.checksums)))
}

/// The CompleteMultipartUpload result document (and checksum headers) for `etag`.
fn completion_response(
    x: &Exchange,
    etag: String,
    checksums: &BTreeMap<String, String>,
) -> HttpResponse {
    let (bucket_name, key) = names(x);
    let host = header(&x.req, "host").unwrap_or("localhost");
    let location = match &x.target.vhost_bucket {
        Some(_) => format!("http://{host}/{}", url_encode(key)),
        None => format!("http://{host}/{bucket_name}/{}", url_encode(key)),
    };
    let mut resp = builder(StatusCode::OK, &x.echo);
    for (algo, v) in checksums {
        resp.insert_header((format!("x-amz-checksum-{algo}"), v.as_str()));
    }
    resp.content_type("application/xml")
        .body(xml::complete_multipart_xml(&CompleteResult {
            location,
            bucket: bucket_name.to_string(),
            key: key.to_string(),
            etag,
        }))
}

/// AbortMultipartUpload: 204; the parts' shards are reclaimed once the abort commits.
pub async fn abort(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    let upload_id = upload_id_param(x)?;
    let cmd = Command::AbortUpload {
        upload_id,
        bucket: bucket_name.to_string(),
        key: key.to_string(),
    };
    if let Err(e) = propose(&x.state, cmd).await {
        if e.code == S3ErrorCode::NoSuchUpload {
            bucket(&x.state, bucket_name).await?;
        }
        return Err(e);
    }
    Ok(builder(StatusCode::NO_CONTENT, &x.echo).finish())
}

// ---------------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------------

/// A small balanced XML writer for the two listing bodies.
struct Doc(String);

impl Doc {
    fn new(root: &str) -> Self {
        Doc(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><{root} xmlns=\"{S3_XMLNS}\">"
        ))
    }
    fn leaf(&mut self, name: &str, text: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self.0.push_str(&escape(text));
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }
    fn open(&mut self, name: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
    }
    fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }
    fn person(&mut self, name: &str, id: &str) {
        self.open(name);
        self.leaf("ID", id);
        self.leaf("DisplayName", "hamster");
        self.close(name);
    }
    fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

fn page_size(x: &Exchange, name: &str) -> Result<usize, S3Error> {
    match x.target.param(name) {
        None => Ok(LIST_PAGE_MAX),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(LIST_PAGE_MAX))
            .ok_or_else(|| {
                S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("Provided {name} not an integer or within integer range"),
                )
            }),
    }
}

/// ListParts.
pub async fn list_parts(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    let upload = get_upload(x).await?;
    let marker: u32 = match x.target.param("part-number-marker") {
        None | Some("") => 0,
        Some(v) => v.trim().parse().map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Provided part-number-marker not an integer or within integer range",
            )
        })?,
    };
    let max = page_size(x, "max-parts")?;
    let mut page: Vec<&UploadPart> = upload
        .parts
        .range(marker.saturating_add(1)..)
        .map(|(_, p)| p)
        .take(max + 1)
        .collect();
    let truncated = page.len() > max;
    page.truncate(max);
    let owner = &x.state.owner_id;
    let mut d = Doc::new("ListPartsResult");
    d.leaf("Bucket", bucket_name);
    d.leaf("Key", key);
    d.leaf("UploadId", &upload.upload_id);
    d.person("Initiator", owner);
    d.person("Owner", owner);
    d.leaf("StorageClass", "STANDARD");
    d.leaf("PartNumberMarker", &marker.to_string());
    let next = page.last().map_or(marker, |p| p.layout.part);
    d.leaf("NextPartNumberMarker", &next.to_string());
    d.leaf("MaxParts", &max.to_string());
    d.leaf("IsTruncated", if truncated { "true" } else { "false" });
    let algo = upload_algo(&upload);
    if let Some(a) = algo {
        d.leaf("ChecksumAlgorithm", a.upper_name());
    }
    for p in page {
        d.open("Part");
        d.leaf("PartNumber", &p.layout.part.to_string());
        d.leaf("LastModified", &iso8601_ms(p.last_modified_ms));
        d.leaf("ETag", &format!("\"{}\"", p.layout.md5));
        d.leaf("Size", &p.layout.size.to_string());
        if let (Some(a), Some(c)) = (algo, p.checksum.as_ref()) {
            d.leaf(&checksum_element(a), c);
        }
        d.close("Part");
    }
    Ok(xml_ok(&x.echo, d.finish("ListPartsResult")))
}

fn checksum_element(a: ChecksumAlgo) -> String {
    format!("Checksum{}", a.upper_name())
}

/// One entry of a ListMultipartUploads page.
enum Entry {
    Upload(Upload),
    Prefix(String),
}

/// ListMultipartUploads: uploads in (key, upload id) order, keys rolled up into common
/// prefixes at the delimiter.
pub async fn list_uploads(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (bucket_name, _) = names(x);
    bucket(&x.state, bucket_name).await?;
    let param = |n: &str| x.target.param(n).unwrap_or("").to_string();
    let (prefix, delimiter) = (param("prefix"), param("delimiter"));
    let (key_marker, id_marker) = (param("key-marker"), param("upload-id-marker"));
    let url = match x.target.param("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Invalid Encoding Method specified in Request",
            ))
        }
    };
    let max = page_size(x, "max-uploads")?;
    let rolled = |key: &str| -> Option<String> {
        let rest = key.get(prefix.len()..)?;
        if delimiter.is_empty() {
            return None;
        }
        rest.find(&delimiter)
            .map(|i| format!("{prefix}{}", &rest[..i + delimiter.len()]))
    };
    // A marker that is itself a common prefix resumes after everything rolled into it.
    let mut last_prefix = rolled(&key_marker).filter(|p| *p == key_marker);
    let mut cursor = (key_marker.clone(), id_marker.clone());
    let mut entries: Vec<Entry> = Vec::new();
    let mut truncated = false;
    'reads: for _ in 0..LIST_UPLOAD_READS_MAX {
        let batch = read(
            &x.state,
            ListUploads {
                bucket: bucket_name.to_string(),
                prefix: prefix.clone(),
                key_marker: cursor.0.clone(),
                upload_id_marker: cursor.1.clone(),
                max: max + 1,
            },
        )
        .await?;
        let exhausted = batch.len() <= max;
        for u in batch {
            cursor = (u.key.clone(), u.upload_id.clone());
            if last_prefix.as_deref().is_some_and(|p| u.key.starts_with(p)) {
                continue;
            }
            if entries.len() == max {
                truncated = true;
                break 'reads;
            }
            match rolled(&u.key) {
                Some(p) => {
                    last_prefix = Some(p.clone());
                    entries.push(Entry::Prefix(p));
                }
                None => entries.push(Entry::Upload(u)),
            }
        }
        if exhausted {
            break;
        }
    }
    let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
    let owner = &x.state.owner_id;
    let mut d = Doc::new("ListMultipartUploadsResult");
    d.leaf("Bucket", bucket_name);
    d.leaf("KeyMarker", &enc(&key_marker));
    d.leaf("UploadIdMarker", &id_marker);
    let (next_key, next_id) = match entries.last() {
        Some(Entry::Upload(u)) if truncated => (u.key.clone(), u.upload_id.clone()),
        Some(Entry::Prefix(p)) if truncated => (p.clone(), String::new()),
        _ => (String::new(), String::new()),
    };
    d.leaf("NextKeyMarker", &enc(&next_key));
    d.leaf("NextUploadIdMarker", &next_id);
    if !delimiter.is_empty() {
        d.leaf("Delimiter", &enc(&delimiter));
    }
    d.leaf("Prefix", &enc(&prefix));
    d.leaf("MaxUploads", &max.to_string());
    d.leaf("IsTruncated", if truncated { "true" } else { "false" });
    if url {
        d.leaf("EncodingType", "url");
    }
    for e in &entries {
        if let Entry::Upload(u) = e {
            d.open("Upload");
            d.leaf("Key", &enc(&u.key));
            d.leaf("UploadId", &u.upload_id);
            d.person("Initiator", owner);
            d.person("Owner", owner);
            d.leaf("StorageClass", "STANDARD");
            d.leaf("Initiated", &iso8601_ms(u.initiated_ms));
            if let Some(a) = upload_algo(u) {
                d.leaf("ChecksumAlgorithm", a.upper_name());
            }
            d.close("Upload");
        }
    }
    for e in &entries {
        if let Entry::Prefix(p) = e {
            d.open("CommonPrefixes");
            d.leaf("Prefix", &enc(p));
            d.close("CommonPrefixes");
        }
    }
    Ok(xml_ok(&x.echo, d.finish("ListMultipartUploadsResult")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_is_md5_of_binary_md5s() {
        // Two parts "a" and "b": md5("a") and md5("b") concatenated, hashed again.
        let a = hex::encode(Md5::digest(b"a"));
        let b = hex::encode(Md5::digest(b"b"));
        let mut both = Md5::digest(b"a").to_vec();
        both.extend_from_slice(&Md5::digest(b"b"));
        let want = format!("{}-2", hex::encode(Md5::digest(&both)));
        assert_eq!(multipart_etag(&[&a, &b]).unwrap(), want);
        assert_eq!(multipart_etag(&["zz"]), None);
    }

    #[test]
    fn composite_checksum_hashes_the_part_checksums() {
        let b64 = |v: &[u8]| hamster_protocol::checksum::to_b64(v);
        let p1 = crc32fast::hash(b"hello ").to_be_bytes();
        let p2 = crc32fast::hash(b"world").to_be_bytes();
        let mut cat = p1.to_vec();
        cat.extend_from_slice(&p2);
        let want = format!("{}-2", b64(&crc32fast::hash(&cat).to_be_bytes()));
        let got = composite_checksum(ChecksumAlgo::Crc32, &[Some(&b64(&p1)), Some(&b64(&p2))]);
        assert_eq!(got.unwrap(), want);
        assert_eq!(composite_checksum(ChecksumAlgo::Crc32, &[None]), None);
    }

    fn upload_with(parts: &[(u32, u64, &str)]) -> Upload {
        let mut u = Upload {
            upload_id: "0".repeat(32),
            bucket: "b".into(),
            key: "k".into(),
            initiated_ms: 0,
            content_type: String::new(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksum_algo: None,
            parts: BTreeMap::new(),
        };
        for (n, size, md5) in parts {
            let stored =
                PartLayout::single_shard(*n, *size, 4096, String::new(), String::new(), None);
            let layout = part_layout(stored, md5, ObjectId([*n as u8; 16]));
            u.parts.insert(
                *n,
                UploadPart {
                    layout,
                    last_modified_ms: 0,
                    checksum: None,
                },
            );
        }
        u
    }

    #[test]
    fn completion_checks_order_etags_and_sizes() {
        let mib5 = PART_BYTES_MIN;
        let u = upload_with(&[(1, mib5, "a"), (2, 10, "b"), (3, 1, "c")]);
        let want = |v: &[(u32, &str)]| -> Vec<(u32, String)> {
            v.iter().map(|(n, e)| (*n, e.to_string())).collect()
        };
        let code = |r: Result<Vec<&UploadPart>, S3Error>| r.err().map(|e| e.code);
        assert_eq!(code(select_parts(&u, &want(&[(1, "a"), (2, "b")]))), None);
        assert_eq!(
            code(select_parts(&u, &want(&[(2, "b"), (1, "a")]))),
            Some(S3ErrorCode::InvalidPartOrder)
        );
        assert_eq!(
            code(select_parts(&u, &want(&[(1, "a"), (1, "a")]))),
            Some(S3ErrorCode::InvalidPartOrder)
        );
        assert_eq!(
            code(select_parts(&u, &want(&[(1, "x")]))),
            Some(S3ErrorCode::InvalidPart)
        );
        assert_eq!(
            code(select_parts(&u, &want(&[(1, "a"), (4, "d")]))),
            Some(S3ErrorCode::InvalidPart)
        );
        assert_eq!(
            code(select_parts(&u, &want(&[(1, "a"), (2, "b"), (3, "c")]))),
            Some(S3ErrorCode::EntityTooSmall)
        );
        assert_eq!(code(select_parts(&u, &want(&[(3, "c")]))), None);
    }

    #[test]
    fn part_numbers_and_ranges() {
        assert!(parse_part_number("0").is_err());
        assert!(parse_part_number("10001").is_err());
        assert!(parse_part_number("x").is_err());
        assert_eq!(parse_part_number("10000").unwrap(), 10000);
        assert_eq!(parse_copy_range("bytes=0-9", 10).unwrap(), (0, 10));
        assert!(parse_copy_range("bytes=0-10", 10).is_err());
        assert!(parse_copy_range("bytes=5-", 10).is_err());
        assert!(parse_copy_range("bytes=5-4", 10).is_err());

        let u = upload_with(&[(1, 5, "a"), (3, 7, "b")]);
        let v = ObjectVersion {
            version_id: "null".into(),
            object_id: ObjectId([9; 16]),
            size: 12,
            etag: "e-2".into(),
            last_modified_ms: 0,
            content_type: String::new(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            parts: u.parts.values().map(|p| p.layout.clone()).collect(),
        };
        let second = part_range(&v, "2", false).unwrap().unwrap();
        assert_eq!(second.range, Some((5, 11)));
        assert_eq!(second.parts_count, Some(2));
        assert_eq!(
            part_range(&v, "3", false).unwrap_err().code,
            S3ErrorCode::InvalidRange
        );
        assert_eq!(
            part_range(&v, "1", true).unwrap_err().code,
            S3ErrorCode::InvalidRequest
        );
    }
}
