//! Bucket operations: list, create, head, delete, location, versioning, and object listings.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use hamster_protocol::listing::{decode_continuation, encode_continuation, ListParams};
use hamster_protocol::meta::{BucketRecord, Command, Grant};
use hamster_protocol::names::validate_bucket_name;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::xml::{self, BucketEntry, ListV1, ListV2, ObjectEntry, Owner};

use super::body::BodyReader;
use super::exchange::Exchange;
use super::meta::{bucket, propose, read};
use super::response::{builder, xml_ok};
use super::XML_BODY_BYTES_MAX;
use crate::raft::node::{ListBuckets, ListObjects};

/// Most keys one listing page returns, as in S3.
pub const LIST_KEYS_MAX: usize = 1000;

fn bucket_name(x: &Exchange) -> &str {
    x.target.bucket.as_deref().unwrap_or_default()
}

fn owner(x: &Exchange) -> Owner {
    Owner {
        id: x.state.owner_id.clone(),
        display_name: "hamster".to_string(),
    }
}

/// Most buckets one ListBuckets page returns, and the page size when the request names none.
pub const LIST_BUCKETS_MAX: usize = 10_000;

/// `max-buckets`: 1 to [`LIST_BUCKETS_MAX`]; anything else is `InvalidArgument`, as on S3.
fn max_buckets(x: &Exchange) -> Result<usize, S3Error> {
    match x.target.param("max-buckets") {
        None => Ok(LIST_BUCKETS_MAX),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=LIST_BUCKETS_MAX).contains(n))
            .ok_or_else(|| {
                S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("max-buckets must be an integer from 1 to {LIST_BUCKETS_MAX}"),
                )
            }),
    }
}

/// ListBuckets: the buckets by name, filtered by `prefix` and `bucket-region`, a page of
/// `max-buckets` after the `continuation-token`; a non-root key sees only the buckets it holds
/// a grant on.
pub async fn list_buckets(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let max = max_buckets(x)?;
    let prefix = x.target.param("prefix").map(str::to_string);
    let region = x.target.param("bucket-region");
    let after = match x.target.param("continuation-token") {
        None | Some("") => None,
        Some(t) => Some(decode_continuation(t)?),
    };
    let buckets = read(&x.state, ListBuckets).await?;
    let mut entries: Vec<BucketEntry> = buckets
        .into_iter()
        .filter(|b| x.auth.root || x.auth.grants.contains_key(&b.name))
        .filter(|b| prefix.as_deref().is_none_or(|p| b.name.starts_with(p)))
        .filter(|b| region.is_none_or(|r| b.region == r))
        .filter(|b| after.as_deref().is_none_or(|a| b.name.as_str() > a))
        .map(|b| BucketEntry {
            name: b.name,
            created_ms: b.created_ms,
        })
        .collect();
    let next = if entries.len() > max {
        entries.truncate(max);
        entries.last().map(|b| encode_continuation(&b.name))
    } else {
        None
    };
    let page = xml::BucketPage {
        continuation_token: next,
        prefix,
    };
    Ok(xml_ok(
        &x.echo,
        xml::list_buckets_xml(&owner(x), &entries, &page),
    ))
}

/// CreateBucket: validates the name and location, commits the bucket.
pub async fn create_bucket(x: &Exchange, payload: Payload) -> Result<HttpResponse, S3Error> {
    let name = bucket_name(x);
    validate_bucket_name(name)?;
    let mut body = BodyReader::new(
        payload,
        &x.auth.payload,
        &x.auth.signing,
        x.state.config.body_idle,
    );
    let raw = body.read_all(XML_BODY_BYTES_MAX).await?;
    let region = &x.state.config.region;
    if let Some(loc) = xml::parse_create_bucket(&raw)? {
        if !loc.is_empty() && &loc != region {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("this endpoint serves region {region}; the location constraint {loc} cannot be satisfied"),
            ));
        }
    }
    let record = BucketRecord {
        name: name.to_string(),
        created_ms: x.state.clock.now_ms(),
        region: region.clone(),
    };
    if let Err(e) = propose(&x.state, Command::CreateBucket(record)).await {
        // Someone else's bucket: the name is taken, and that is all this key may learn.
        if e.code == S3ErrorCode::BucketAlreadyOwnedByYou
            && !super::access::may(&x.auth, name, super::access::Need::Owner)
        {
            return Err(S3Error::new(S3ErrorCode::BucketAlreadyExists));
        }
        return Err(e);
    }
    if !x.auth.root {
        // The key that made the bucket owns it; without this it could not even see it.
        let grant = Grant {
            read: true,
            write: true,
            owner: true,
        };
        propose(
            &x.state,
            Command::SetGrant {
                access_key: x.auth.access_key.clone(),
                bucket: name.to_string(),
                grant,
            },
        )
        .await?;
    }
    Ok(builder(StatusCode::OK, &x.echo)
        .insert_header(("location", format!("/{name}")))
        .finish())
}

/// HeadBucket: 200 if it exists.
pub async fn head_bucket(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let b = bucket(&x.state, bucket_name(x)).await?;
    Ok(builder(StatusCode::OK, &x.echo)
        .insert_header(("x-amz-bucket-region", b.region))
        .finish())
}

/// DeleteBucket: only when empty. Its grants go with it in the same commit (see
/// `meta::apply`), so a later bucket of the same name is not shared with the old keys.
pub async fn delete_bucket(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let name = bucket_name(x).to_string();
    propose(&x.state, Command::DeleteBucket { name }).await?;
    Ok(builder(StatusCode::NO_CONTENT, &x.echo).finish())
}

/// GetBucketLocation.
pub async fn get_location(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let b = bucket(&x.state, bucket_name(x)).await?;
    Ok(xml_ok(&x.echo, xml::location_xml(&b.region)))
}

/// GetBucketVersioning: Hamster buckets are unversioned, which S3 reports as an empty
/// configuration.
pub async fn get_versioning(x: &Exchange) -> Result<HttpResponse, S3Error> {
    bucket(&x.state, bucket_name(x)).await?;
    Ok(xml_ok(
        &x.echo,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>".to_string(),
    ))
}

fn max_keys(x: &Exchange) -> Result<usize, S3Error> {
    match x.target.param("max-keys") {
        None => Ok(LIST_KEYS_MAX),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(LIST_KEYS_MAX))
            .ok_or_else(|| {
                S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    "max-keys must be a non-negative integer",
                )
            }),
    }
}

/// ListObjects (v1) and ListObjectsV2 over one paginator.
pub async fn list_objects(x: &Exchange, v2: bool) -> Result<HttpResponse, S3Error> {
    let name = bucket_name(x).to_string();
    bucket(&x.state, &name).await?;
    let encoding_url = match x.target.param("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Invalid Encoding Method specified in Request",
            ))
        }
    };
    let prefix = x.target.param("prefix").unwrap_or_default().to_string();
    let delimiter = x
        .target
        .param("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let max_keys = max_keys(x)?;
    let start_after = x.target.param("start-after").map(str::to_string);
    // An empty token is no token, as S3 answers it (and echoes it back).
    let token = x.target.param("continuation-token").map(str::to_string);
    let marker = x.target.param("marker").map(str::to_string);
    let after = if v2 {
        match token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(decode_continuation(t)?),
            None => start_after.clone(),
        }
    } else {
        marker.clone()
    };
    let params = ListParams {
        prefix: prefix.clone(),
        delimiter: delimiter.clone(),
        after,
        max_keys,
    };
    let page = read(
        &x.state,
        ListObjects {
            bucket: name.clone(),
            params,
        },
    )
    .await?;
    let fetch_owner = !v2 || x.target.param("fetch-owner") == Some("true");
    let objects: Vec<ObjectEntry> = page
        .objects
        .into_iter()
        .map(|(key, v)| ObjectEntry {
            key,
            last_modified_ms: v.last_modified_ms,
            etag: v.etag,
            size: v.size,
            storage_class: "STANDARD".to_string(),
            owner: fetch_owner.then(|| owner(x)),
        })
        .collect();
    let body = if v2 {
        xml::list_v2_xml(&ListV2 {
            bucket: name,
            prefix,
            delimiter,
            max_keys,
            start_after,
            continuation_token: token,
            next_continuation_token: page
                .next_after
                .as_deref()
                .filter(|_| page.is_truncated)
                .map(encode_continuation),
            is_truncated: page.is_truncated,
            encoding_url,
            objects,
            common_prefixes: page.common_prefixes,
        })
    } else {
        // S3 returns NextMarker only when a delimiter was given; clients otherwise continue
        // from the last key.
        let next_marker = if page.is_truncated && delimiter.is_some() {
            page.next_after
        } else {
            None
        };
        xml::list_v1_xml(&ListV1 {
            bucket: name,
            prefix,
            delimiter,
            marker: marker.unwrap_or_default(),
            next_marker,
            max_keys,
            is_truncated: page.is_truncated,
            encoding_url,
            objects,
            common_prefixes: page.common_prefixes,
        })
    };
    Ok(xml_ok(&x.echo, body))
}

/// ListObjectVersions. Hamster buckets are unversioned, so every current object is its one
/// version, "null", and the latest; the listing is the ListObjects listing in another shape,
/// paged by `key-marker` (and `version-id-marker`, which can then only be "null").
pub async fn list_object_versions(x: &Exchange) -> Result<HttpResponse, S3Error> {
    let name = bucket_name(x).to_string();
    bucket(&x.state, &name).await?;
    let enc = match x.target.param("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Invalid Encoding Method specified in Request",
            ))
        }
    };
    let key_marker = x.target.param("key-marker").filter(|m| !m.is_empty());
    let version_marker = x
        .target
        .param("version-id-marker")
        .filter(|m| !m.is_empty());
    match (key_marker, version_marker) {
        (None, Some(_)) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "A version-id marker cannot be specified without a key marker.",
            ))
        }
        (Some(_), Some(v)) if v != "null" => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Invalid version id specified",
            ))
        }
        _ => {}
    }
    let prefix = x.target.param("prefix").unwrap_or_default().to_string();
    let delimiter = x
        .target
        .param("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let max_keys = max_keys(x)?;
    let params = ListParams {
        prefix: prefix.clone(),
        delimiter: delimiter.clone(),
        after: key_marker.map(str::to_string),
        max_keys,
    };
    let page = read(
        &x.state,
        ListObjects {
            bucket: name.clone(),
            params,
        },
    )
    .await?;
    let listed = |t: &str| {
        if enc {
            xml::url_encode(t)
        } else {
            t.to_string()
        }
    };
    let leaf = |out: &mut String, tag: &str, text: &str| {
        out.push_str(&format!("<{tag}>{}</{tag}>", xml::escape(text)));
    };
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    leaf(&mut out, "Name", &name);
    leaf(&mut out, "Prefix", &listed(&prefix));
    leaf(
        &mut out,
        "KeyMarker",
        &listed(key_marker.unwrap_or_default()),
    );
    leaf(
        &mut out,
        "VersionIdMarker",
        version_marker.unwrap_or_default(),
    );
    if let Some(next) = page.next_after.as_deref().filter(|_| page.is_truncated) {
        leaf(&mut out, "NextKeyMarker", &listed(next));
        leaf(&mut out, "NextVersionIdMarker", "null");
    }
    leaf(&mut out, "MaxKeys", &max_keys.to_string());
    if let Some(d) = &delimiter {
        leaf(&mut out, "Delimiter", &listed(d));
    }
    leaf(
        &mut out,
        "IsTruncated",
        if page.is_truncated { "true" } else { "false" },
    );
    if enc {
        leaf(&mut out, "EncodingType", "url");
    }
    let o = owner(x);
    for (key, v) in &page.objects {
        out.push_str("<Version>");
        leaf(&mut out, "Key", &listed(key));
        leaf(&mut out, "VersionId", &v.version_id);
        leaf(&mut out, "IsLatest", "true");
        leaf(
            &mut out,
            "LastModified",
            &hamster_protocol::time::iso8601_ms(v.last_modified_ms),
        );
        leaf(&mut out, "ETag", &format!("\"{}\"", v.etag));
        leaf(&mut out, "Size", &v.size.to_string());
        out.push_str("<Owner>");
        leaf(&mut out, "ID", &o.id);
        leaf(&mut out, "DisplayName", &o.display_name);
        out.push_str("</Owner>");
        leaf(&mut out, "StorageClass", "STANDARD");
        out.push_str("</Version>");
    }
    for p in &page.common_prefixes {
        out.push_str("<CommonPrefixes>");
        leaf(&mut out, "Prefix", &listed(p));
        out.push_str("</CommonPrefixes>");
    }
    out.push_str("</ListVersionsResult>");
    Ok(xml_ok(&x.echo, out))
}
