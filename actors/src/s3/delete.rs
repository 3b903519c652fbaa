//! DeleteObjects (`POST /bucket?delete`): up to 1000 keys removed in one request. Each key is
//! its own `DeleteObject` proposal; they are proposed together, so the Raft node group-commits
//! them into as few log entries as its batch limit allows. Every key gets its own answer.

use actix_web::dev::Payload;
use actix_web::HttpResponse;
use base64::Engine;
use futures_util::future::join_all;
use hamster_protocol::checksum::{self, Checksummer, DeclaredValue};
use hamster_protocol::meta::Command;
use hamster_protocol::names::validate_key;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::xml;
use md5::{Digest, Md5};

use super::body::BodyReader;
use super::exchange::Exchange;
use super::meta::{bucket, propose};
use super::request::header;
use super::response::xml_ok;

/// Largest DeleteObjects body read: 1000 keys of up to 1024 bytes, each possibly escaped to
/// several times its length, plus the markup around them.
const DELETE_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How one key of the request ended.
enum Outcome {
    Deleted(String, Option<String>),
    Failed(String, S3Error),
}

/// DeleteObjects.
pub async fn delete_objects(x: &Exchange, payload: Payload) -> Result<HttpResponse, S3Error> {
    let bucket_name = x.target.bucket.as_deref().unwrap_or_default();
    let declared = checksum::declared(
        x.req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or(""))),
    )?;
    let mut body = BodyReader::new(
        payload,
        &x.auth.payload,
        &x.auth.signing,
        x.state.config.body_idle,
    );
    let raw = body.read_all(DELETE_BODY_BYTES_MAX).await?;
    // AWS requires Content-MD5 or an x-amz-checksum-*; we verify whichever is sent and, for
    // older clients, also accept neither.
    verify_md5(x, &raw)?;
    if let Some(d) = declared {
        let given = match d.value {
            DeclaredValue::Header(v) => Some(v),
            DeclaredValue::Trailer => body
                .trailers()
                .iter()
                .find(|(n, _)| n == d.algo.header_name())
                .map(|(_, v)| v.clone()),
            DeclaredValue::Compute => None,
        };
        if let Some(given) = given {
            let mut sum = Checksummer::new(d.algo);
            sum.update(&raw);
            if checksum::validate_b64(d.algo, &given)? != sum.finish() {
                return Err(checksum::mismatch(d.algo));
            }
        }
    }
    let (quiet, objects) = xml::parse_delete_objects(&raw)?;
    bucket(&x.state, bucket_name).await?;
    let outcomes = join_all(
        objects
            .into_iter()
            .map(|(key, version)| delete_one(x, bucket_name, key, version)),
    )
    .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Deleted(key, version) => {
                if !quiet {
                    deleted.push((key, version));
                }
            }
            Outcome::Failed(key, e) => {
                errors.push((key, e.code.code().to_string(), e.message().to_string()))
            }
        }
    }
    Ok(xml_ok(&x.echo, xml::delete_result_xml(&deleted, &errors)))
}

fn verify_md5(x: &Exchange, raw: &[u8]) -> Result<(), S3Error> {
    let Some(v) = header(&x.req, "content-md5") else {
        return Ok(());
    };
    let given = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
        .filter(|g| g.len() == 16)
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidDigest))?;
    if Md5::digest(raw).as_slice() != given.as_slice() {
        return Err(S3Error::new(S3ErrorCode::BadDigest));
    }
    Ok(())
}

/// Deletes one key. A key that does not exist is reported deleted, as S3 does.
async fn delete_one(
    x: &Exchange,
    bucket_name: &str,
    key: String,
    version: Option<String>,
) -> Outcome {
    if let Err(e) = validate_key(&key) {
        return Outcome::Failed(key, e);
    }
    if version.as_deref().is_some_and(|v| v != "null") {
        return Outcome::Failed(
            key,
            S3Error::with_message(
                S3ErrorCode::NoSuchVersion,
                "The specified version does not exist.",
            ),
        );
    }
    let cmd = Command::DeleteObject {
        bucket: bucket_name.to_string(),
        key: key.clone(),
    };
    match propose(&x.state, cmd).await {
        Ok(_) => Outcome::Deleted(key, version),
        Err(e) => Outcome::Failed(key, e),
    }
}
