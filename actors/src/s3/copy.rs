//! Server-side copies: CopyObject, and the byte mover UploadPartCopy shares with it. Bytes are
//! read from the source's shards and written through the data plane under a fresh body id, one
//! stripe at a time; they never pass through the client, and only the new metadata record is
//! proposed (INV-1), after the new part is durable to the ack rule (INV-2).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use hamster_protocol::meta::{Command, ObjectId, ObjectVersion, PartLayout};
use hamster_protocol::names::validate_key;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::time::parse_http_date;
use hamster_protocol::xml::{self, CopyResult};
use md5::{Digest, Md5};
use percent_encoding::percent_decode_str;
use tracing::warn;

use super::exchange::Exchange;
use super::meta::{bucket, propose, read};
use super::object::{
    etag_matches, io_error, names, stored_headers, user_metadata, ChecksumAlgo, Checksummer,
    ReadCursor,
};
use super::request::header;
use super::response::builder;
use super::{S3State, PUT_OBJECT_BYTES_MAX};
use crate::raft::node::GetObject;

/// Largest source one CopyObject (or one UploadPartCopy range) may copy, as on S3.
pub(super) const COPY_SOURCE_BYTES_MAX: u64 = PUT_OBJECT_BYTES_MAX;

/// What `x-amz-copy-source` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CopySource {
    /// Source bucket.
    pub bucket: String,
    /// Source key.
    pub key: String,
    /// `?versionId=` if given.
    pub version_id: Option<String>,
}

/// Parses `x-amz-copy-source`: `bucket/key` or `/bucket/key`, URL-encoded, optionally followed
/// by `?versionId=V`. The `?` is split off before decoding, so an encoded `%3F` stays in the key.
pub(super) fn parse_copy_source(raw: &str) -> Result<CopySource, S3Error> {
    let invalid = || {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    };
    let (path, query) = match raw.trim().split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw.trim(), None),
    };
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| invalid())?
        .into_owned();
    let decoded = decoded.strip_prefix('/').unwrap_or(&decoded);
    let (b, k) = decoded.split_once('/').ok_or_else(invalid)?;
    if b.is_empty() || k.is_empty() {
        return Err(invalid());
    }
    let mut version_id = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("versionId=") {
            let v = percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| invalid())?
                .into_owned();
            version_id = Some(v);
        }
    }
    Ok(CopySource {
        bucket: b.to_string(),
        key: k.to_string(),
        version_id,
    })
}

/// The `x-amz-copy-source-if-*` conditions as S3 evaluates them: a true `if-match` wins over a
/// false `if-unmodified-since`, a false `if-none-match` fails whatever `if-modified-since` says;
/// every failure is 412 PreconditionFailed (a copy never answers 304).
pub(super) fn copy_conditions(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    if_unmodified_since: Option<&str>,
    v: &ObjectVersion,
) -> Result<(), S3Error> {
    let failed = || S3Error::new(S3ErrorCode::PreconditionFailed);
    let modified_s = v.last_modified_ms / 1000;
    if let Some(m) = if_match {
        if !etag_matches(m, &v.etag) {
            return Err(failed());
        }
    } else if let Some(t) = if_unmodified_since.and_then(parse_http_date) {
        if modified_s > t / 1000 {
            return Err(failed());
        }
    }
    if let Some(m) = if_none_match {
        if etag_matches(m, &v.etag) {
            return Err(failed());
        }
    } else if let Some(t) = if_modified_since.and_then(parse_http_date) {
        if modified_s <= t / 1000 {
            return Err(failed());
        }
    }
    Ok(())
}

/// Finds the copy source's current version and checks the copy conditions against it.
pub(super) async fn resolve_source(x: &Exchange) -> Result<(CopySource, ObjectVersion), S3Error> {
    let raw = header(&x.req, "x-amz-copy-source").ok_or_else(|| {
        S3Error::with_message(S3ErrorCode::InvalidArgument, "x-amz-copy-source is missing")
    })?;
    let src = parse_copy_source(raw)?;
    validate_key(&src.key)?;
    if src.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Invalid version id specified",
        ));
    }
    let list = read(
        &x.state,
        GetObject {
            bucket: src.bucket.clone(),
            key: src.key.clone(),
        },
    )
    .await?;
    let Some(v) = list.as_ref().and_then(|l| l.current()).cloned() else {
        bucket(&x.state, &src.bucket).await?;
        return Err(S3Error::new(S3ErrorCode::NoSuchKey));
    };
    copy_conditions(
        header(&x.req, "x-amz-copy-source-if-match"),
        header(&x.req, "x-amz-copy-source-if-none-match"),
        header(&x.req, "x-amz-copy-source-if-modified-since"),
        header(&x.req, "x-amz-copy-source-if-unmodified-since"),
        &v,
    )?;
    Ok((src, v))
}

/// A finished server-side copy: the new shard and what was computed over its bytes.
pub(super) struct Copied {
    /// Bytes copied.
    pub size: u64,
    /// Hex MD5 of the copied bytes.
    pub md5_hex: String,
    /// Where and how the new part is stored (its MD5 filled in).
    pub layout: PartLayout,
    /// Checksums asked for, algorithm name → base64.
    pub checksums: BTreeMap<String, String>,
}

/// Copies `start..end` of `source` into part `part` of a new body and makes it durable. On
/// any failure the unfinished part is dropped, which leaves nothing behind.
pub(super) async fn copy_bytes(
    state: &S3State,
    source: ObjectVersion,
    (start, end): (u64, u64),
    body: ObjectId,
    part: u32,
    algos: &[ChecksumAlgo],
) -> Result<Copied, S3Error> {
    assert!(
        start <= end && end <= source.size,
        "copy range inside the source"
    );
    let mut writer = state.data.begin_part(body, part, Some(end - start)).await?;
    // A copy's writer holds memory like an upload's and counts against the same caps.
    let _admitted = state.uploads.admit(writer.footprint_bytes())?;
    let object = source.object_id;
    let mut cursor = ReadCursor::new(state.data.clone(), source, start, end);
    let mut md5 = Md5::new();
    let mut sums: Vec<(ChecksumAlgo, Checksummer)> =
        algos.iter().map(|a| (*a, Checksummer::new(*a))).collect();
    let mut moved = 0u64;
    while !cursor.done() {
        let bytes = cursor.step().await.map_err(|e| {
            // A source that cannot be read from verified shards is never copied on (INV-5).
            warn!(object = %object, error = %e, "copy failed");
            io_error("copy source", e)
        })?;
        if bytes.is_empty() {
            return Err(io_error(
                "copy source",
                std::io::Error::other("source read made no progress"),
            ));
        }
        md5.update(&bytes);
        for (_, s) in &mut sums {
            s.update(&bytes);
        }
        writer.write(&bytes).await?;
        moved += bytes.len() as u64;
    }
    assert_eq!(moved, end - start, "a copy moves exactly its range");
    let md5_hex = hex::encode(md5.finalize());
    let checksums = sums
        .into_iter()
        .map(|(a, s)| (a.name().to_string(), s.finish_b64()))
        .collect();
    // Durable to the ack rule before the commit (INV-2).
    let mut layout = writer.finish().await?;
    layout.md5 = md5_hex.clone();
    Ok(Copied {
        size: moved,
        md5_hex,
        layout,
        checksums,
    })
}

/// The checksum algorithm named by an `x-amz-checksum-algorithm` value (`CRC32`, ...).
pub(super) fn algorithm_named(value: &str) -> Result<ChecksumAlgo, S3Error> {
    ChecksumAlgo::from_algorithm(value).ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Value for x-amz-checksum-algorithm header is invalid.",
        )
    })
}

/// The algorithm whose stored-checksum name is `name` (`crc32`, ...).
pub(super) fn algorithm_stored_as(name: &str) -> Option<ChecksumAlgo> {
    ChecksumAlgo::ALL.into_iter().find(|a| a.name() == name)
}

/// CopyObject: a new object whose bytes are copied server-side from the source.
pub async fn copy_object(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let (bucket_name, key) = names(x);
    validate_key(key)?;
    let replace = match header(&x.req, "x-amz-metadata-directive").map(str::trim) {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Unknown metadata directive.",
            ))
        }
    };
    let (src, v) = resolve_source(x).await?;
    if src.bucket == bucket_name && src.key == key && !replace {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself \
             without changing the object's metadata, storage class, website redirect location \
             or encryption attributes.",
        ));
    }
    if v.size > COPY_SOURCE_BYTES_MAX {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!(
                "The specified copy source is larger than the maximum allowable size for a copy \
                 source: {COPY_SOURCE_BYTES_MAX}"
            ),
        ));
    }
    bucket(&x.state, bucket_name).await?;
    let (content_type, headers, user_meta) = if replace {
        (
            header(&x.req, "content-type")
                .unwrap_or("binary/octet-stream")
                .to_string(),
            stored_headers(x),
            user_metadata(x)?,
        )
    } else {
        (
            v.content_type.clone(),
            v.headers.clone(),
            v.user_meta.clone(),
        )
    };
    // Checksums: the one asked for, else the algorithms the source carried, recomputed over
    // the copied bytes (a copy is a single-part object, so its checksums are full-object ones).
    let algos: Vec<ChecksumAlgo> = match header(&x.req, "x-amz-checksum-algorithm") {
        Some(a) => vec![algorithm_named(a)?],
        None => v
            .checksums
            .keys()
            .filter_map(|n| algorithm_stored_as(n))
            .collect(),
    };
    let state = &x.state;
    let id = state.ids.object_id();
    let size = v.size;
    let copied = copy_bytes(state, v, (0, size), id, 1, &algos).await?;
    let now = state.clock.now_ms();
    let version = ObjectVersion {
        version_id: "null".to_string(),
        object_id: id,
        size: copied.size,
        etag: copied.md5_hex.clone(),
        last_modified_ms: now,
        content_type,
        headers,
        user_meta,
        checksums: copied.checksums.clone(),
        parts: vec![copied.layout.clone()],
    };
    let cmd = Command::PutObject {
        bucket: bucket_name.to_string(),
        key: key.to_string(),
        version,
    };
    if let Err(e) = propose(state, cmd).await {
        if certain_refusal(&e) {
            state.data.discard(vec![id]);
        }
        return Err(e);
    }
    let body = xml::copy_object_result_xml(&CopyResult {
        etag: copied.md5_hex,
        last_modified_ms: now,
    });
    let mut resp = builder(StatusCode::OK, &x.echo);
    for (algo, val) in &copied.checksums {
        resp.insert_header((format!("x-amz-checksum-{algo}"), val.as_str()));
    }
    Ok(resp.content_type("application/xml").body(body))
}

/// Whether a failed proposal is known not to have committed: then the shard it pointed to is
/// ours to reclaim. An uncertain failure leaves it to restart recovery, which knows the outcome.
pub(super) fn certain_refusal(e: &S3Error) -> bool {
    !matches!(
        e.code,
        S3ErrorCode::ServiceUnavailable | S3ErrorCode::InternalError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_forms() {
        let want = |b: &str, k: &str, v: Option<&str>| CopySource {
            bucket: b.into(),
            key: k.into(),
            version_id: v.map(String::from),
        };
        assert_eq!(
            parse_copy_source("/b/dir/a%20b").unwrap(),
            want("b", "dir/a b", None)
        );
        assert_eq!(parse_copy_source("b/k").unwrap(), want("b", "k", None));
        assert_eq!(
            parse_copy_source("b/k%3Fx?versionId=null").unwrap(),
            want("b", "k?x", Some("null"))
        );
        assert_eq!(
            parse_copy_source("b/caf%C3%A9+1").unwrap(),
            want("b", "café+1", None)
        );
        assert!(parse_copy_source("b").is_err());
        assert!(parse_copy_source("/b/").is_err());
        assert!(parse_copy_source("/").is_err());
    }

    #[test]
    fn copy_conditions_follow_s3_precedence() {
        let v = ObjectVersion {
            version_id: "null".into(),
            object_id: ObjectId([1; 16]),
            size: 0,
            etag: "abc".into(),
            // Tue, 15 Nov 1994 08:12:31 GMT
            last_modified_ms: 784_887_151_000,
            content_type: String::new(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            parts: vec![],
        };
        let before = Some("Mon, 14 Nov 1994 08:12:31 GMT");
        let after = Some("Wed, 16 Nov 1994 08:12:31 GMT");
        let code = |r: Result<(), S3Error>| r.err().map(|e| e.code);
        assert_eq!(code(copy_conditions(None, None, None, None, &v)), None);
        assert_eq!(
            code(copy_conditions(Some("\"x\""), None, None, None, &v)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        // A true if-match wins over a false if-unmodified-since.
        assert_eq!(
            code(copy_conditions(Some("\"abc\""), None, None, before, &v)),
            None
        );
        assert_eq!(
            code(copy_conditions(None, None, None, before, &v)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(copy_conditions(None, Some("abc"), before, None, &v)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(copy_conditions(None, None, after, None, &v)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(copy_conditions(None, Some("x"), after, None, &v)),
            None
        );
    }
}
