//! What an S3 request addresses and asks for: bucket and key from the path (or the host, in
//! virtual-host style), the decoded query, and the operation it names.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use percent_encoding::percent_decode_str;

use super::S3Config;

/// The S3 operations the front distinguishes; the name is the metrics label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    ListBuckets,
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    GetBucketLocation,
    GetBucketVersioning,
    ListObjects,
    ListObjectsV2,
    PutObject,
    GetObject,
    HeadObject,
    DeleteObject,
    /// A browser form upload; the form carries its own signature.
    PostObject,
    CopyObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
    DeleteObjects,
    GetBucketAcl,
    PutBucketAcl,
    GetObjectAcl,
    PutObjectAcl,
    ListObjectVersions,
    /// Recognised but not built yet: answered 501 NotImplemented.
    Unsupported(&'static str),
    /// A method S3 does not define on this resource.
    BadMethod,
}

impl Op {
    /// Whether the operation stores new bytes or metadata, and so is refused while this node's
    /// disks are low on space. Reads, lists, deletes and aborts are never refused for space:
    /// they are how an operator frees it.
    pub fn grows_storage(&self) -> bool {
        matches!(
            self,
            Op::CreateBucket
                | Op::PutObject
                | Op::PostObject
                | Op::CopyObject
                | Op::CreateMultipartUpload
                | Op::UploadPart
                | Op::UploadPartCopy
                | Op::CompleteMultipartUpload
                | Op::PutBucketAcl
                | Op::PutObjectAcl
        )
    }

    /// The operation's name as AWS documents it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::ListBuckets => "ListBuckets",
            Op::CreateBucket => "CreateBucket",
            Op::HeadBucket => "HeadBucket",
            Op::DeleteBucket => "DeleteBucket",
            Op::GetBucketLocation => "GetBucketLocation",
            Op::GetBucketVersioning => "GetBucketVersioning",
            Op::ListObjects => "ListObjects",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::PutObject => "PutObject",
            Op::GetObject => "GetObject",
            Op::HeadObject => "HeadObject",
            Op::DeleteObject => "DeleteObject",
            Op::PostObject => "PostObject",
            Op::CopyObject => "CopyObject",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::ListParts => "ListParts",
            Op::ListMultipartUploads => "ListMultipartUploads",
            Op::DeleteObjects => "DeleteObjects",
            Op::GetBucketAcl => "GetBucketAcl",
            Op::PutBucketAcl => "PutBucketAcl",
            Op::GetObjectAcl => "GetObjectAcl",
            Op::PutObjectAcl => "PutObjectAcl",
            Op::ListObjectVersions => "ListObjectVersions",
            Op::Unsupported(name) => name,
            Op::BadMethod => "BadMethod",
        }
    }
}

/// A request's addressing and parameters, decoded once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The bucket, if the request names one.
    pub bucket: Option<String>,
    /// The object key, if the request names one (never empty when present).
    pub key: Option<String>,
    /// Decoded query parameters; a parameter without `=` maps to "".
    pub query: BTreeMap<String, String>,
    /// The bucket when it came from the Host header (virtual-host style); SigV2 signs it.
    pub vhost_bucket: Option<String>,
    /// Whether the request names an `x-amz-copy-source` (a PUT is then a copy).
    pub copy_source: bool,
}

impl Target {
    /// A query parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Whether a query parameter is present at all.
    pub fn has(&self, name: &str) -> bool {
        self.query.contains_key(name)
    }
}

fn decode(s: &str, plus_is_space: bool) -> Result<String, S3Error> {
    let s = if plus_is_space {
        s.replace('+', " ")
    } else {
        s.to_string()
    };
    percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "the URI is not valid UTF-8 once decoded",
            )
        })
}

/// Decodes a raw query string into parameters.
pub fn parse_query(raw: &str) -> Result<BTreeMap<String, String>, S3Error> {
    let mut out = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k, true)?, decode(v, true)?);
    }
    Ok(out)
}

/// Finds bucket, key and query of a request.
pub fn target(req: &HttpRequest, config: &S3Config) -> Result<Target, S3Error> {
    let query = parse_query(req.uri().query().unwrap_or(""))?;
    let raw_path = req.uri().path();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':').map_or(h, |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            })
        })
        .unwrap_or("");
    let vhost_bucket = config.domain.as_deref().and_then(|d| {
        host.strip_suffix(d)
            .and_then(|p| p.strip_suffix('.'))
            .filter(|b| !b.is_empty())
    });
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let (bucket, key) = match vhost_bucket {
        Some(b) => (Some(b.to_string()), Some(decode(path, false)?)),
        None => match path.split_once('/') {
            Some((b, k)) => (Some(decode(b, false)?), Some(decode(k, false)?)),
            None => (Some(decode(path, false)?), None),
        },
    };
    let bucket = bucket.filter(|b| !b.is_empty());
    let key = key.filter(|k| !k.is_empty());
    Ok(Target {
        bucket,
        key,
        query,
        vhost_bucket: vhost_bucket.map(str::to_string),
        copy_source: req.headers().contains_key("x-amz-copy-source"),
    })
}

/// Names the operation a request asks for.
pub fn classify(method: &str, t: &Target) -> Op {
    match (&t.bucket, &t.key) {
        (None, _) => match method {
            "GET" => Op::ListBuckets,
            _ => Op::BadMethod,
        },
        (Some(_), None) => classify_bucket(method, t),
        (Some(_), Some(_)) => classify_object(method, t),
    }
}

/// Bucket sub-resources S3 defines that Hamster does not serve yet.
const BUCKET_SUBRESOURCES: [(&str, &str); 22] = [
    ("acl", "BucketAcl"),
    ("policy", "BucketPolicy"),
    ("cors", "BucketCors"),
    ("lifecycle", "BucketLifecycle"),
    ("tagging", "BucketTagging"),
    ("website", "BucketWebsite"),
    ("logging", "BucketLogging"),
    ("notification", "BucketNotification"),
    ("replication", "BucketReplication"),
    ("encryption", "BucketEncryption"),
    ("object-lock", "ObjectLockConfiguration"),
    ("requestPayment", "BucketRequestPayment"),
    ("accelerate", "BucketAccelerate"),
    ("analytics", "BucketAnalytics"),
    ("inventory", "BucketInventory"),
    ("metrics", "BucketMetrics"),
    ("ownershipControls", "BucketOwnershipControls"),
    ("publicAccessBlock", "PublicAccessBlock"),
    ("intelligent-tiering", "BucketIntelligentTiering"),
    ("uploads", "ListMultipartUploads"),
    ("versions", "ListObjectVersions"),
    ("delete", "DeleteObjects"),
];

fn classify_bucket(method: &str, t: &Target) -> Op {
    match method {
        "POST" if t.has("delete") => return Op::DeleteObjects,
        "GET" if t.has("acl") => return Op::GetBucketAcl,
        "PUT" if t.has("acl") => return Op::PutBucketAcl,
        "GET" if t.has("versions") => return Op::ListObjectVersions,
        _ => {}
    }
    if method == "GET" && t.has("uploads") {
        return Op::ListMultipartUploads;
    }
    if let Some((_, name)) = BUCKET_SUBRESOURCES.iter().find(|(q, _)| t.has(q)) {
        return Op::Unsupported(name);
    }
    match method {
        "GET" if t.has("location") => Op::GetBucketLocation,
        "GET" if t.has("versioning") => Op::GetBucketVersioning,
        "PUT" if t.has("versioning") => Op::Unsupported("PutBucketVersioning"),
        "GET" if t.param("list-type") == Some("2") => Op::ListObjectsV2,
        "GET" => Op::ListObjects,
        "PUT" => Op::CreateBucket,
        "HEAD" => Op::HeadBucket,
        "DELETE" => Op::DeleteBucket,
        "POST" => Op::PostObject,
        _ => Op::BadMethod,
    }
}

const OBJECT_SUBRESOURCES: [(&str, &str); 8] = [
    ("acl", "ObjectAcl"),
    ("tagging", "ObjectTagging"),
    ("retention", "ObjectRetention"),
    ("legal-hold", "ObjectLegalHold"),
    ("restore", "RestoreObject"),
    ("select", "SelectObjectContent"),
    ("attributes", "GetObjectAttributes"),
    ("torrent", "ObjectTorrent"),
];

fn classify_object(method: &str, t: &Target) -> Op {
    match method {
        "GET" if t.has("acl") => return Op::GetObjectAcl,
        "PUT" if t.has("acl") => return Op::PutObjectAcl,
        _ => {}
    }
    if let Some(op) = classify_multipart(method, t) {
        return op;
    }
    if let Some((_, name)) = OBJECT_SUBRESOURCES.iter().find(|(q, _)| t.has(q)) {
        return Op::Unsupported(name);
    }
    match method {
        "GET" => Op::GetObject,
        "HEAD" => Op::HeadObject,
        "PUT" => Op::PutObject,
        "DELETE" => Op::DeleteObject,
        _ => Op::BadMethod,
    }
}

/// The multipart operations, named by `uploads` / `uploadId` in the query; a PUT with a copy
/// source is a copy. `None` when the request is none of these.
fn classify_multipart(method: &str, t: &Target) -> Option<Op> {
    let copy = t.copy_source;
    let op = match method {
        "POST" if t.has("uploads") => Op::CreateMultipartUpload,
        "POST" if t.has("uploadId") => Op::CompleteMultipartUpload,
        "PUT" if t.has("uploadId") && copy => Op::UploadPartCopy,
        "PUT" if t.has("uploadId") => Op::UploadPart,
        "DELETE" if t.has("uploadId") => Op::AbortMultipartUpload,
        "GET" if t.has("uploadId") => Op::ListParts,
        "PUT" if copy && !OBJECT_SUBRESOURCES.iter().any(|(q, _)| t.has(q)) => Op::CopyObject,
        _ if t.has("uploads") || t.has("uploadId") => Op::BadMethod,
        _ => return None,
    };
    Some(op)
}

/// A header's value as text, if present and visible ASCII/UTF-8.
pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("list-type=2&prefix=a%20b%2Bc&delimiter=%2F&location").unwrap();
        assert_eq!(q.get("prefix").unwrap(), "a b+c");
        assert_eq!(q.get("delimiter").unwrap(), "/");
        assert_eq!(q.get("location").unwrap(), "");
    }

    #[test]
    fn classification() {
        let t = |b: Option<&str>, k: Option<&str>, q: &str| Target {
            bucket: b.map(String::from),
            key: k.map(String::from),
            query: parse_query(q).unwrap(),
            vhost_bucket: None,
            copy_source: false,
        };
        assert_eq!(classify("GET", &t(None, None, "")), Op::ListBuckets);
        assert_eq!(
            classify("GET", &t(Some("b"), None, "list-type=2")),
            Op::ListObjectsV2
        );
        assert_eq!(
            classify("GET", &t(Some("b"), None, "location")),
            Op::GetBucketLocation
        );
        assert_eq!(classify("PUT", &t(Some("b"), None, "")), Op::CreateBucket);
        assert_eq!(classify("POST", &t(Some("b"), None, "")), Op::PostObject);
        assert_eq!(classify("PUT", &t(Some("b"), Some("k"), "")), Op::PutObject);
        assert_eq!(
            classify("POST", &t(Some("b"), Some("k"), "uploads")),
            Op::CreateMultipartUpload
        );
        assert_eq!(
            classify("PUT", &t(Some("b"), Some("k"), "partNumber=2&uploadId=u")),
            Op::UploadPart
        );
        assert_eq!(
            classify("POST", &t(Some("b"), Some("k"), "uploadId=u")),
            Op::CompleteMultipartUpload
        );
        assert_eq!(
            classify("GET", &t(Some("b"), None, "uploads")),
            Op::ListMultipartUploads
        );
        let mut copy = t(Some("b"), Some("k"), "");
        copy.copy_source = true;
        assert_eq!(classify("PUT", &copy), Op::CopyObject);
        copy.query = parse_query("partNumber=1&uploadId=u").unwrap();
        assert_eq!(classify("PUT", &copy), Op::UploadPartCopy);
        assert_eq!(
            classify("POST", &t(Some("b"), None, "delete")),
            Op::DeleteObjects
        );
        assert_eq!(
            classify("GET", &t(Some("b"), None, "versions&prefix=a")),
            Op::ListObjectVersions
        );
        assert_eq!(
            classify("GET", &t(Some("b"), None, "acl")),
            Op::GetBucketAcl
        );
        assert_eq!(
            classify("PUT", &t(Some("b"), None, "acl")),
            Op::PutBucketAcl
        );
        assert_eq!(
            classify("GET", &t(Some("b"), Some("k"), "acl")),
            Op::GetObjectAcl
        );
        assert_eq!(
            classify("PUT", &t(Some("b"), Some("k"), "acl&versionId=null")),
            Op::PutObjectAcl
        );
        assert_eq!(
            classify("POST", &t(Some("b"), Some("k"), "")),
            Op::BadMethod
        );
        for method in ["GET", "PUT", "DELETE"] {
            assert_eq!(
                classify(method, &t(Some("b"), Some("k"), "torrent")),
                Op::Unsupported("ObjectTorrent")
            );
        }
    }
}
