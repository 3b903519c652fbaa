//! AWS request authentication for the S3 front, as pure functions: parsing the credentials a
//! request carries (Signature Version 4 headers and presigned URLs, plus the legacy Signature
//! Version 2 forms that `aws s3 presign` still emits), canonicalising the request the way S3 does,
//! checking the clock window and verifying signatures in constant time. A small client-side
//! signer lives here too so tests and the load generator sign exactly as the server verifies.
//!
//! Nothing here reads a clock: callers pass `now_ms` from the injected `Clock`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::s3err::{S3Error, S3ErrorCode};
use crate::time::{amz_date, parse_amz_date, parse_http_date};

type HmacSha256 = Hmac<Sha256>;

/// The only SigV4 algorithm S3 accepts in an `Authorization` header or `X-Amz-Algorithm`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload-hash sentinel for a body the client chose not to hash.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// `x-amz-content-sha256` for an aws-chunked body whose chunks are signed.
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// `x-amz-content-sha256` for signed chunks followed by signed trailing headers.
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// `x-amz-content-sha256` for unsigned chunks followed by (unsigned) trailing headers.
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Hex SHA-256 of the empty string; it appears in every chunk string-to-sign.
pub const EMPTY_SHA256_HEX: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// How far a header-signed request's date may drift from our clock (AWS uses 15 minutes).
pub const SKEW_MAX_MS: u64 = 15 * 60 * 1000;
/// The longest lifetime a SigV4 presigned URL may ask for: seven days.
pub const PRESIGN_EXPIRES_MAX_SECS: u64 = 604_800;

/// The parts of an HTTP request that authentication reads, exactly as they came off the wire.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The path as received, still percent-encoded, without the query.
    pub raw_path: &'a str,
    /// The query string as received, without the leading `?`.
    pub raw_query: &'a str,
    /// Header names in lowercase with raw values; a repeated header appears several times.
    pub headers: &'a [(String, String)],
}

impl RequestParts<'_> {
    /// The first value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the client declared about the body in `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadMode {
    /// `UNSIGNED-PAYLOAD` (and always for presigned URLs without the header).
    Unsigned,
    /// A plain SHA-256 the body must hash to once received.
    Sha256([u8; 32]),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: aws-chunked, each chunk signed.
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks plus signed trailers.
    StreamingSignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: unsigned chunks plus trailers.
    StreamingUnsignedTrailer,
}

impl PayloadMode {
    /// Reads an `x-amz-content-sha256` value; `None` if it is none of the accepted forms.
    pub fn from_header(value: &str) -> Option<PayloadMode> {
        match value {
            UNSIGNED_PAYLOAD => Some(PayloadMode::Unsigned),
            STREAMING_SIGNED => Some(PayloadMode::StreamingSigned),
            STREAMING_SIGNED_TRAILER => Some(PayloadMode::StreamingSignedTrailer),
            STREAMING_UNSIGNED_TRAILER => Some(PayloadMode::StreamingUnsignedTrailer),
            hex_value if hex_value.len() == 64 => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(hex_value, &mut digest).ok()?;
                Some(PayloadMode::Sha256(digest))
            }
            _ => None,
        }
    }

    /// True for the aws-chunked encodings, whose body must go through `chunked::ChunkedDecoder`.
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            PayloadMode::StreamingSigned
                | PayloadMode::StreamingSignedTrailer
                | PayloadMode::StreamingUnsignedTrailer
        )
    }
}

/// The SigV4 credentials a request carries, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuth {
    /// The access key id from the credential scope.
    pub access_key: String,
    /// The request timestamp in `20130524T000000Z` form, as it enters the string to sign.
    pub amz_date: String,
    /// `amz_date` as Unix milliseconds.
    pub date_ms: u64,
    /// The `YYYYMMDD` of the credential scope.
    pub scope_date: String,
    /// The region of the credential scope.
    pub region: String,
    /// The service of the credential scope (must be `s3`).
    pub service: String,
    /// The signed header names, lowercase, sorted, without duplicates.
    pub signed_headers: Vec<String>,
    /// The signature the client sent, lowercase hex.
    pub signature: String,
    /// `Some(X-Amz-Expires)` for a presigned URL, `None` for header authentication.
    pub presigned_expires_secs: Option<u64>,
    /// What the body is declared to be.
    pub payload: PayloadMode,
}

impl ParsedAuth {
    /// The credential scope string, e.g. `20130524/us-east-1/s3/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }

    /// True when the credentials came from the query string rather than a header.
    pub fn is_presigned(&self) -> bool {
        self.presigned_expires_secs.is_some()
    }

    /// The malformed-credentials code that fits where these credentials came from.
    fn malformed_code(&self) -> S3ErrorCode {
        if self.is_presigned() {
            S3ErrorCode::AuthorizationQueryParametersError
        } else {
            S3ErrorCode::AuthorizationHeaderMalformed
        }
    }
}

/// Legacy Signature Version 2 credentials: `Authorization: AWS AKID:sig` or the
/// `AWSAccessKeyId`/`Signature`/`Expires` query form that the aws CLI v1 `s3 presign` emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthV2 {
    /// The access key id.
    pub access_key: String,
    /// The base64 HMAC-SHA1 signature the client sent.
    pub signature: String,
    /// For the query form: `Expires`, in Unix seconds, exactly as it enters the string to sign.
    pub expires: Option<String>,
    /// For the header form: the request date (`x-amz-date` or `Date`) as Unix milliseconds.
    pub date_ms: Option<u64>,
}

/// The authentication a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Signature Version 4, header or presigned.
    V4(ParsedAuth),
    /// Signature Version 2, header or presigned.
    V2(ParsedAuthV2),
}

impl Auth {
    /// The access key id whichever version signed the request.
    pub fn access_key(&self) -> &str {
        match self {
            Auth::V4(a) => &a.access_key,
            Auth::V2(a) => &a.access_key,
        }
    }
}

/// What a verified SigV4 request hands to the body decoder so it can check chunk signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningContext {
    /// The derived signing key for the request's scope.
    pub signing_key: [u8; 32],
    /// The request timestamp, `20130524T000000Z`.
    pub amz_date: String,
    /// The credential scope, `20130524/us-east-1/s3/aws4_request`.
    pub scope: String,
    /// The request's own (verified) signature: the seed of the chunk signature chain.
    pub seed_signature: String,
}

fn err(code: S3ErrorCode, message: impl Into<String>) -> S3Error {
    S3Error::with_message(code, message)
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses the authentication a request carries. `Ok(None)` means the request carries none at
/// all (anonymous), which the caller must refuse (INV-6). Errors name the malformed part.
pub fn parse(req: &RequestParts) -> Result<Option<Auth>, S3Error> {
    let query = decode_query(req.raw_query);
    let has_param = |name: &str| query.iter().any(|(n, _)| n == name);
    let v4_query = has_param("X-Amz-Algorithm")
        || has_param("X-Amz-Credential")
        || has_param("X-Amz-Signature");
    let v2_query = has_param("AWSAccessKeyId") || has_param("Signature");

    if let Some(value) = req.header("authorization") {
        if v4_query || v2_query {
            return Err(err(S3ErrorCode::InvalidArgument, "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified"));
        }
        if let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256") {
            if rest.starts_with([' ', '\t']) {
                return parse_v4_header(req, rest).map(|a| Some(Auth::V4(a)));
            }
        }
        if let Some(rest) = value.strip_prefix("AWS ") {
            return parse_v2_header(req, rest).map(|a| Some(Auth::V2(a)));
        }
        return Err(err(
            S3ErrorCode::InvalidArgument,
            "Unsupported Authorization Type: only AWS4-HMAC-SHA256 (and legacy AWS) are accepted",
        ));
    }
    if v4_query && v2_query {
        return Err(err(
            S3ErrorCode::InvalidArgument,
            "Only one auth mechanism allowed; both SigV4 and SigV2 query parameters were given",
        ));
    }
    if v4_query {
        return parse_v4_query(req, &query).map(|a| Some(Auth::V4(a)));
    }
    if v2_query {
        return parse_v2_query(&query).map(|a| Some(Auth::V2(a)));
    }
    Ok(None)
}

/// Parses `Credential=AKID/20130524/us-east-1/s3/aws4_request` into its five parts.
fn parse_credential(
    credential: &str,
    code: S3ErrorCode,
) -> Result<(String, String, String, String), S3Error> {
    let parts: Vec<&str> = credential.split('/').collect();
    let well_formed = parts.len() == 5
        && !parts[0].is_empty()
        && parts[1].len() == 8
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && !parts[2].is_empty()
        && !parts[3].is_empty()
        && parts[4] == "aws4_request";
    if !well_formed {
        return Err(err(code, format!("The credential '{credential}' is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")));
    }
    Ok((
        parts[0].to_string(),
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    ))
}

/// Splits `host;x-amz-date` into sorted, deduplicated lowercase names.
fn parse_signed_headers(list: &str, code: S3ErrorCode) -> Result<Vec<String>, S3Error> {
    let mut names: Vec<String> = list
        .split(';')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(err(
            code,
            format!("SignedHeaders '{list}' contains an empty header name"),
        ));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Checks a claimed signature is 64 hex digits and returns it lowercase.
fn parse_signature_hex(sig: &str, code: S3ErrorCode) -> Result<String, S3Error> {
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(code, "The signature must be 64 hexadecimal characters"));
    }
    Ok(sig.to_ascii_lowercase())
}

fn parse_v4_header(req: &RequestParts, rest: &str) -> Result<ParsedAuth, S3Error> {
    let code = S3ErrorCode::AuthorizationHeaderMalformed;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let component = component.trim();
        if component.is_empty() {
            continue;
        }
        let Some((key, value)) = component.split_once('=') else {
            return Err(err(code, format!("The authorization header is malformed; the component '{component}' is not of the form key=value")));
        };
        match key.trim() {
            "Credential" => credential = Some(value.trim()),
            "SignedHeaders" => signed = Some(value.trim()),
            "Signature" => signature = Some(value.trim()),
            other => {
                return Err(err(
                    code,
                    format!(
                        "The authorization header is malformed; unexpected component '{other}'"
                    ),
                ))
            }
        }
    }
    let missing = |what: &str| {
        err(
            code,
            format!("The authorization header is malformed; it is missing {what}"),
        )
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let (access_key, scope_date, region, service) = parse_credential(credential, code)?;
    let (amz, date_ms) = request_date_v4(req)?;
    if amz[..8] != scope_date {
        return Err(err(code, format!("The authorization header is malformed; Invalid credential date '{scope_date}'. Date is not the same as X-Amz-Date '{}'.", &amz[..8])));
    }
    let Some(content_sha) = req.header("x-amz-content-sha256") else {
        return Err(err(
            S3ErrorCode::InvalidRequest,
            "Missing required header for this request: x-amz-content-sha256",
        ));
    };
    let payload = parse_payload(content_sha)?;
    Ok(ParsedAuth {
        access_key,
        amz_date: amz,
        date_ms,
        scope_date,
        region,
        service,
        signed_headers: parse_signed_headers(signed, code)?,
        signature: parse_signature_hex(signature, code)?,
        presigned_expires_secs: None,
        payload,
    })
}

fn parse_payload(value: &str) -> Result<PayloadMode, S3Error> {
    PayloadMode::from_header(value).ok_or_else(|| {
        err(S3ErrorCode::InvalidArgument, format!("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], STREAMING-UNSIGNED-PAYLOAD-TRAILER or a hex SHA-256, not '{value}'"))
    })
}

/// The SigV4 timestamp of a header-signed request: `x-amz-date`, else an HTTP `Date`.
fn request_date_v4(req: &RequestParts) -> Result<(String, u64), S3Error> {
    if let Some(value) = req.header("x-amz-date") {
        let ms = parse_amz_date(value.trim()).ok_or_else(|| {
            err(
                S3ErrorCode::AccessDenied,
                format!("X-Amz-Date '{value}' is not of the form 20130524T000000Z"),
            )
        })?;
        return Ok((value.trim().to_string(), ms));
    }
    if let Some(ms) = req.header("date").and_then(parse_http_date_lenient) {
        return Ok((amz_date(ms), ms));
    }
    Err(err(
        S3ErrorCode::AccessDenied,
        "AWS authentication requires a valid Date or x-amz-date header",
    ))
}

/// Parses an RFC 1123 date, also accepting the numeric `+0000` zone some SigV2 clients send.
fn parse_http_date_lenient(value: &str) -> Option<u64> {
    let value = value.trim();
    let normalised = match value
        .strip_suffix("+0000")
        .or_else(|| value.strip_suffix("-0000"))
    {
        Some(head) => format!("{head}GMT"),
        None => value.to_string(),
    };
    parse_http_date(&normalised)
}

fn query_value<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn parse_v4_query(req: &RequestParts, query: &[(String, String)]) -> Result<ParsedAuth, S3Error> {
    let code = S3ErrorCode::AuthorizationQueryParametersError;
    let required = |name: &str| {
        query_value(query, name).ok_or_else(|| {
            err(code, format!("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters; {name} is missing."))
        })
    };
    let algorithm = required("X-Amz-Algorithm")?;
    let credential = required("X-Amz-Credential")?;
    let signature = required("X-Amz-Signature")?;
    let date = required("X-Amz-Date")?;
    let signed = required("X-Amz-SignedHeaders")?;
    let expires = required("X-Amz-Expires")?;
    if algorithm != ALGORITHM {
        return Err(err(
            code,
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let expires_secs: i64 = expires.parse().map_err(|_| {
        err(
            code,
            format!("X-Amz-Expires '{expires}' should be a number"),
        )
    })?;
    // A URL that was never valid is refused as AWS refuses one that has run out: 403.
    if expires_secs < 1 {
        return Err(err(S3ErrorCode::AccessDenied, "Request has expired"));
    }
    if expires_secs > PRESIGN_EXPIRES_MAX_SECS as i64 {
        return Err(err(
            S3ErrorCode::AccessDenied,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    let expires_secs = expires_secs as u64;
    let date_ms = parse_amz_date(date).ok_or_else(|| {
        err(
            code,
            format!(
                "X-Amz-Date '{date}' must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
            ),
        )
    })?;
    let (access_key, scope_date, region, service) = parse_credential(credential, code)?;
    if date[..8] != scope_date {
        return Err(err(
            code,
            format!(
                "Invalid credential date '{scope_date}'. Date is not the same as X-Amz-Date '{}'.",
                &date[..8]
            ),
        ));
    }
    // A presigned URL signs no body; a client may still declare one, and then it is honoured.
    let payload = match req.header("x-amz-content-sha256") {
        Some(value) => parse_payload(value)?,
        None => PayloadMode::Unsigned,
    };
    Ok(ParsedAuth {
        access_key,
        amz_date: date.to_string(),
        date_ms,
        scope_date,
        region,
        service,
        signed_headers: parse_signed_headers(signed, code)?,
        signature: parse_signature_hex(signature, code)?,
        presigned_expires_secs: Some(expires_secs),
        payload,
    })
}

fn parse_v2_header(req: &RequestParts, rest: &str) -> Result<ParsedAuthV2, S3Error> {
    let Some((access_key, signature)) = rest.trim().split_once(':') else {
        return Err(err(
            S3ErrorCode::InvalidArgument,
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
        ));
    };
    if access_key.is_empty() || signature.is_empty() {
        return Err(err(
            S3ErrorCode::InvalidArgument,
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
        ));
    }
    let date_ms = req
        .header("x-amz-date")
        .or_else(|| req.header("date"))
        .and_then(parse_http_date_lenient);
    if date_ms.is_none() {
        return Err(err(
            S3ErrorCode::AccessDenied,
            "AWS authentication requires a valid Date or x-amz-date header",
        ));
    }
    Ok(ParsedAuthV2 {
        access_key: access_key.to_string(),
        signature: signature.trim().to_string(),
        expires: None,
        date_ms,
    })
}

fn parse_v2_query(query: &[(String, String)]) -> Result<ParsedAuthV2, S3Error> {
    let code = S3ErrorCode::AccessDenied;
    let required = |name: &str| {
        query_value(query, name).ok_or_else(|| {
            err(code, "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters")
        })
    };
    let access_key = required("AWSAccessKeyId")?;
    // A raw '+' in the query decodes to a space; inside base64 it can only have been a '+'.
    let signature = required("Signature")?.replace(' ', "+");
    let expires = required("Expires")?;
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) || expires.len() > 12 {
        return Err(err(
            code,
            format!("Expires '{expires}' must be a Unix time in seconds"),
        ));
    }
    Ok(ParsedAuthV2 {
        access_key: access_key.to_string(),
        signature,
        expires: Some(expires.to_string()),
        date_ms: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Time window
// ---------------------------------------------------------------------------------------------

/// Checks the request's timestamp against `now_ms`. Header authentication must be within
/// 15 minutes either way (RequestTimeTooSkewed); a presigned URL is refused once
/// `date + X-Amz-Expires` has passed (AccessDenied "Request has expired") or if it claims a
/// date more than 15 minutes in the future (RequestTimeTooSkewed).
pub fn check_time(auth: &ParsedAuth, now_ms: u64) -> Result<(), S3Error> {
    if auth.date_ms > now_ms.saturating_add(SKEW_MAX_MS) {
        return Err(skewed());
    }
    match auth.presigned_expires_secs {
        Some(expires_secs) => {
            if now_ms > auth.date_ms.saturating_add(expires_secs * 1000) {
                return Err(err(S3ErrorCode::AccessDenied, "Request has expired"));
            }
        }
        None => {
            if now_ms > auth.date_ms.saturating_add(SKEW_MAX_MS) {
                return Err(skewed());
            }
        }
    }
    Ok(())
}

/// The SigV2 twin of [`check_time`]: `Expires` for the query form, the 15-minute window for
/// the header form.
pub fn check_time_v2(auth: &ParsedAuthV2, now_ms: u64) -> Result<(), S3Error> {
    if let Some(expires) = &auth.expires {
        let expires_ms = expires.parse::<u64>().unwrap_or(0).saturating_mul(1000);
        if now_ms > expires_ms {
            return Err(err(S3ErrorCode::AccessDenied, "Request has expired"));
        }
        return Ok(());
    }
    let date_ms = auth.date_ms.unwrap_or(0);
    if date_ms.abs_diff(now_ms) > SKEW_MAX_MS {
        return Err(skewed());
    }
    Ok(())
}

fn skewed() -> S3Error {
    S3Error::new(S3ErrorCode::RequestTimeTooSkewed)
}

// ---------------------------------------------------------------------------------------------
// Canonicalisation (S3 flavour)
// ---------------------------------------------------------------------------------------------

/// Percent-decodes `input`. Malformed escapes stay literal, as the raw bytes the client sent.
/// `plus_is_space` applies the form convention used for query strings.
fn percent_decode(input: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// SigV4's UriEncode: every byte except the unreserved set (and `/` when `keep_slash`) becomes
/// `%XX` with uppercase hex.
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    out
}

/// The canonical URI for S3: decode once, encode once, and never normalise `.`, `..` or `//`,
/// because in S3 those are legitimate parts of object keys.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    uri_encode(&percent_decode(raw_path, false), true)
}

/// Splits and decodes a raw query into (name, value) pairs in wire order; a bare name gets an
/// empty value. A '+' decodes to a space: that is how forms and browsers send spaces, and
/// SDKs that mean a literal plus always send `%2B`.
pub fn decode_query(raw_query: &str) -> Vec<(String, String)> {
    raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                String::from_utf8_lossy(&percent_decode(name, true)).into_owned(),
                String::from_utf8_lossy(&percent_decode(value, true)).into_owned(),
            )
        })
        .collect()
}

/// The canonical query string: every parameter but `X-Amz-Signature`, names and values
/// re-encoded (slashes too), sorted by encoded name then encoded value, joined by `&`.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(name, true), false),
                uri_encode(&percent_decode(value, true), false),
            )
        })
        .filter(|(name, _)| name != "X-Amz-Signature")
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    joined.join("&")
}

/// Trims a header value and collapses each internal run of whitespace to one space.
fn collapse_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical headers block (`name:value\n` per signed header) for `signed_headers`, which
/// must be sorted. Repeated headers join in arrival order with `,`; an absent signed header
/// contributes an empty value, so the signature simply fails to match.
fn canonical_headers(headers: &[(String, String)], signed_headers: &[String]) -> String {
    let mut block = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| collapse_whitespace(v))
            .collect();
        block.push_str(name);
        block.push(':');
        block.push_str(&values.join(","));
        block.push('\n');
    }
    block
}

/// The SigV4 canonical request for S3. `signed_headers` must be sorted lowercase names;
/// `payload_hash` is the `x-amz-content-sha256` value as sent (or `UNSIGNED-PAYLOAD`).
pub fn canonical_request(
    req: &RequestParts,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    debug_assert!(
        signed_headers.windows(2).all(|w| w[0] < w[1]),
        "signed headers must be sorted"
    );
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.raw_path),
        canonical_query(req.raw_query),
        canonical_headers(req.headers, signed_headers),
        signed_headers.join(";"),
        payload_hash
    )
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The SigV4 string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Derives the SigV4 signing key: the HMAC chain over date, region, service, `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The lowercase hex signature of `string_to_sign` under `key`.
pub fn signature_hex(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(key, string_to_sign.as_bytes()))
}

/// Constant-time comparison of two ASCII signatures.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Verifies a SigV4 request against `secret` for this node's `region`: the scope must name
/// `region` and `s3`, SignedHeaders must include `host` (and, for header authentication, every
/// `x-amz-*` header present), and the recomputed signature must match in constant time
/// (SignatureDoesNotMatch otherwise). On success returns the context chunk verification needs.
pub fn verify(
    auth: &ParsedAuth,
    req: &RequestParts,
    secret: &str,
    region: &str,
) -> Result<SigningContext, S3Error> {
    let code = auth.malformed_code();
    if auth.region != region {
        return Err(err(code, format!("The authorization header is malformed; the region '{}' is wrong; expecting '{region}'", auth.region)));
    }
    if auth.service != "s3" {
        return Err(err(code, format!("The authorization header is malformed; incorrect service '{}'. This endpoint belongs to 's3'.", auth.service)));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(err(
            code,
            "The authorization header is malformed; SignedHeaders must include host",
        ));
    }
    if !auth.is_presigned() {
        // AWS refuses unsigned x-amz-* headers so that none of them can be injected in transit.
        let unsigned: Vec<&str> = req
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("x-amz-") && !auth.signed_headers.iter().any(|s| s == n))
            .collect();
        if !unsigned.is_empty() {
            return Err(err(
                S3ErrorCode::AccessDenied,
                format!(
                    "There were headers present in the request which were not signed: {}",
                    unsigned.join(", ")
                ),
            ));
        }
    }
    let payload_hash = req
        .header("x-amz-content-sha256")
        .unwrap_or(UNSIGNED_PAYLOAD);
    let canonical = canonical_request(req, &auth.signed_headers, payload_hash);
    let scope = auth.scope();
    let sts = string_to_sign(&auth.amz_date, &scope, &canonical);
    let key = signing_key(secret, &auth.scope_date, &auth.region, &auth.service);
    let expected = signature_hex(&key, &sts);
    if !signatures_equal(&expected, &auth.signature) {
        return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
    }
    Ok(SigningContext {
        signing_key: key,
        amz_date: auth.amz_date.clone(),
        scope,
        seed_signature: expected,
    })
}

// ---------------------------------------------------------------------------------------------
// Signature Version 2
// ---------------------------------------------------------------------------------------------

/// Query parameters that name a sub-resource and therefore enter the SigV2 resource string.
const V2_SUBRESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// The SigV2 string to sign. `date_or_expires` is the `Date` line: the `Expires` value for the
/// query form, else the `Date` header (empty when `x-amz-date` is present, since that header
/// is signed among the amz headers). `host_bucket` is the bucket when it came from the Host
/// header (virtual-hosted style), because SigV2 signs `/bucket/key` either way.
pub fn string_to_sign_v2(
    req: &RequestParts,
    date_or_expires: &str,
    host_bucket: Option<&str>,
) -> String {
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.push_str(req.header("content-md5").unwrap_or("").trim());
    out.push('\n');
    out.push_str(req.header("content-type").unwrap_or("").trim());
    out.push('\n');
    out.push_str(date_or_expires);
    out.push('\n');
    let mut amz: Vec<&str> = req
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("x-amz-"))
        .collect();
    amz.sort();
    amz.dedup();
    for name in amz {
        let values: Vec<&str> = req
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    if let Some(bucket) = host_bucket {
        out.push('/');
        out.push_str(bucket);
    }
    out.push_str(if req.raw_path.is_empty() {
        "/"
    } else {
        req.raw_path
    });
    let mut sub: Vec<(String, String)> = decode_query(req.raw_query)
        .into_iter()
        .filter(|(n, _)| V2_SUBRESOURCES.contains(&n.as_str()))
        .collect();
    sub.sort_by(|a, b| a.0.cmp(&b.0));
    if !sub.is_empty() {
        let items: Vec<String> = sub
            .into_iter()
            .map(|(n, v)| if v.is_empty() { n } else { format!("{n}={v}") })
            .collect();
        out.push('?');
        out.push_str(&items.join("&"));
    }
    out
}

/// Base64 HMAC-SHA1 of a SigV2 string to sign.
pub fn signature_v2(secret: &str, string_to_sign: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(sha1::hmac_sha1(
        secret.as_bytes(),
        string_to_sign.as_bytes(),
    ))
}

/// Verifies a SigV2 request (header or query form) against `secret`, in constant time.
pub fn verify_v2(
    auth: &ParsedAuthV2,
    req: &RequestParts,
    secret: &str,
    host_bucket: Option<&str>,
) -> Result<(), S3Error> {
    let date_line = match &auth.expires {
        Some(expires) => expires.clone(),
        None if req.header("x-amz-date").is_some() => String::new(),
        None => req.header("date").unwrap_or("").trim().to_string(),
    };
    let sts = string_to_sign_v2(req, &date_line, host_bucket);
    let expected = signature_v2(secret, &sts);
    if !signatures_equal(&expected, &auth.signature) {
        return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
    }
    Ok(())
}

/// SHA-1 and HMAC-SHA1 live with the other checksums; SigV2 verification uses them.
use crate::checksum::sha1;

// ---------------------------------------------------------------------------------------------
// Client side (tests and the load generator)
// ---------------------------------------------------------------------------------------------

/// The credentials a client signs with.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    /// The access key id.
    pub access_key: &'a str,
    /// The secret access key.
    pub secret: &'a str,
    /// The region of the scope, e.g. `us-east-1`.
    pub region: &'a str,
}

/// Client side: signs `req` with every header it carries (they must include `host`,
/// `x-amz-date` and `x-amz-content-sha256`) and returns the `Authorization` header value.
pub fn sign_headers(
    req: &RequestParts,
    payload_hash: &str,
    creds: &ClientCredentials,
    amz_date: &str,
) -> String {
    debug_assert!(
        req.header("host").is_some(),
        "the host header must be signed"
    );
    let mut signed: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();
    let scope = format!("{}/{}/s3/aws4_request", &amz_date[..8], creds.region);
    let canonical = canonical_request(req, &signed, payload_hash);
    let key = signing_key(creds.secret, &amz_date[..8], creds.region, "s3");
    let signature = signature_hex(&key, &string_to_sign(amz_date, &scope, &canonical));
    format!(
        "{ALGORITHM} Credential={}/{scope},SignedHeaders={},Signature={signature}",
        creds.access_key,
        signed.join(";")
    )
}

/// Client side: the query string of a presigned URL for `req` (its `raw_query` holds any
/// parameters of the operation itself; its headers are the ones to sign and must include
/// `host`), valid for `expires_secs` from `amz_date`. The result ends with `X-Amz-Signature`.
pub fn presign_query(
    req: &RequestParts,
    creds: &ClientCredentials,
    amz_date: &str,
    expires_secs: u64,
) -> String {
    let mut signed: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();
    let scope = format!("{}/{}/s3/aws4_request", &amz_date[..8], creds.region);
    let credential = format!("{}/{scope}", creds.access_key);
    let mut query = String::from(req.raw_query);
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(&format!(
        "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires_secs}&X-Amz-SignedHeaders={}",
        uri_encode(credential.as_bytes(), false),
        uri_encode(signed.join(";").as_bytes(), false)
    ));
    let to_sign = RequestParts {
        raw_query: &query,
        ..*req
    };
    let canonical = canonical_request(&to_sign, &signed, UNSIGNED_PAYLOAD);
    let key = signing_key(creds.secret, &amz_date[..8], creds.region, "s3");
    let signature = signature_hex(&key, &string_to_sign(amz_date, &scope, &canonical));
    format!("{query}&X-Amz-Signature={signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uri_keeps_dots_and_double_slashes() {
        assert_eq!(canonical_uri("/b//k/./x/../y"), "/b//k/./x/../y");
        assert_eq!(canonical_uri("/test%24file.text"), "/test%24file.text");
        assert_eq!(canonical_uri("/test$file.text"), "/test%24file.text");
        assert_eq!(canonical_uri("/a%2fb"), "/a/b");
        assert_eq!(canonical_uri("/a+b%20c"), "/a%2Bb%20c");
        assert_eq!(canonical_uri("/100%"), "/100%25");
        assert_eq!(canonical_uri(""), "/");
    }

    #[test]
    fn canonical_query_sorts_encodes_and_drops_signature() {
        assert_eq!(canonical_query("b=2&a=1&lifecycle"), "a=1&b=2&lifecycle=");
        assert_eq!(canonical_query("prefix=a/b&x=a+b"), "prefix=a%2Fb&x=a%20b");
        assert_eq!(canonical_query("X-Amz-Signature=abc&a=%7e"), "a=~");
        assert_eq!(canonical_query("a=2&a=1"), "a=1&a=2");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let headers = vec![
            ("host".to_string(), " h ".to_string()),
            ("x-a".to_string(), "a   b\t c".to_string()),
            ("x-a".to_string(), "d".to_string()),
        ];
        let signed = vec!["host".to_string(), "x-a".to_string()];
        assert_eq!(
            canonical_headers(&headers, &signed),
            "host:h\nx-a:a b c,d\n"
        );
    }
}
