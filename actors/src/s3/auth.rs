//! Authentication of one S3 request: SigV4 parsed and verified against the secret held in Raft
//! state. Anonymous requests are refused (INV-6); comparisons are constant-time in `sigv4`.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use hamster_protocol::meta::Grant;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::sigv4::{self, Auth, PayloadMode, RequestParts, SigningContext};

use super::S3State;
use crate::raft::node::{GetAccessKey, GetBucket};

/// Who made the request and how its body is signed.
pub struct Authenticated {
    /// The access key id.
    pub access_key: String,
    /// Root keys may do everything.
    pub root: bool,
    /// What a non-root key may do, per bucket (see `access`).
    pub grants: BTreeMap<String, Grant>,
    /// How the payload is protected.
    pub payload: PayloadMode,
    /// What chunk signatures chain from.
    pub signing: SigningContext,
}

/// The request's headers as (lowercase name, value) pairs, in arrival order.
pub fn header_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Verifies the request's signature; errors are the S3 errors AWS gives. An unsigned request
/// naming `bucket` that does not exist gets NoSuchBucket, as on S3; any other, AccessDenied.
pub async fn authenticate(
    state: &S3State,
    req: &HttpRequest,
    vhost_bucket: Option<&str>,
    bucket: Option<&str>,
) -> Result<Authenticated, S3Error> {
    let headers = header_pairs(req);
    let parts = RequestParts {
        method: req.method().as_str(),
        raw_path: req.uri().path(),
        raw_query: req.uri().query().unwrap_or(""),
        headers: &headers,
    };
    let Some(auth) = sigv4::parse(&parts)? else {
        // As S3 does, an unsigned request learns that a bucket does not exist, and nothing
        // else.
        if let Some(name) = bucket {
            if super::meta::read(state, GetBucket(name.to_string()))
                .await?
                .is_none()
            {
                return Err(S3Error::new(S3ErrorCode::NoSuchBucket));
            }
        }
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Anonymous access is not allowed; sign the request with an access key",
        ));
    };
    let now_ms = state.clock.now_ms();
    match &auth {
        Auth::V4(a) => sigv4::check_time(a, now_ms)?,
        Auth::V2(a) => sigv4::check_time_v2(a, now_ms)?,
    }
    let key = super::meta::read(state, GetAccessKey(auth.access_key().to_string()))
        .await?
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidAccessKeyId))?;
    let (payload, signing) = match &auth {
        Auth::V4(a) => {
            let signing = sigv4::verify(a, &parts, &key.secret_key, &state.config.region)?;
            (a.payload, signing)
        }
        Auth::V2(a) => {
            // SigV2 signs no payload hash and has no chunk chain: the body is taken as sent
            // (aws CLI v1 still emits SigV2 presigned GET URLs by default).
            sigv4::verify_v2(a, &parts, &key.secret_key, vhost_bucket)?;
            let none = SigningContext {
                signing_key: [0; 32],
                amz_date: String::new(),
                scope: String::new(),
                seed_signature: String::new(),
            };
            (PayloadMode::Unsigned, none)
        }
    };
    Ok(Authenticated {
        access_key: key.access_key,
        root: key.root,
        grants: key.grants,
        payload,
        signing,
    })
}
