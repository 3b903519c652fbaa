//! S3's POST policy: the signed JSON document that lets a browser form upload an object.
//!
//! A form carries `policy` (base64 JSON with an `expiration` and a list of `conditions`) and a
//! SigV4 signature of that base64 text. Verification checks, in order: the credential fields,
//! the signature (constant time), the expiry against the caller's `now_ms`, that every
//! condition holds, and that every form field is covered by a condition. The
//! `content-length-range` condition cannot be checked before the file arrives, so it is handed
//! back for the caller to enforce while streaming. Nothing here reads a clock or does I/O.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::s3err::{S3Error, S3ErrorCode};
use crate::sigv4::{self, signatures_equal, signing_key, ALGORITHM};
use crate::time::{days_from_civil, parse_amz_date};
use crate::xml;

/// Largest decoded policy document accepted.
pub const POLICY_BYTES_MAX: usize = 20 * 1024;
/// Most conditions one policy may list.
pub const CONDITIONS_MAX: usize = 64;

/// Fields that need no condition: the signature itself, the file, the policy, and anything
/// the client marks as ignorable with `x-ignore-`.
fn exempt(name: &str) -> bool {
    matches!(name, "x-amz-signature" | "file" | "policy") || name.starts_with("x-ignore-")
}

/// Standard headers a form may set on the stored object.
pub const STORED_HEADER_FIELDS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

/// One policy condition; field names are lowercase and without the `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The field must equal the value exactly.
    Eq {
        /// The form field (or `bucket`).
        field: String,
        /// The required value.
        value: String,
    },
    /// The field must start with the prefix (an empty prefix allows anything).
    StartsWith {
        /// The form field (or `bucket`).
        field: String,
        /// The required prefix.
        prefix: String,
    },
    /// The file's size must lie within `min..=max` bytes.
    ContentLengthRange {
        /// The smallest allowed size.
        min: u64,
        /// The largest allowed size.
        max: u64,
    },
}

impl Condition {
    /// The field a condition covers, if it names one.
    fn field(&self) -> Option<&str> {
        match self {
            Condition::Eq { field, .. } | Condition::StartsWith { field, .. } => Some(field),
            Condition::ContentLengthRange { .. } => None,
        }
    }

    /// The condition as the policy spelled it, for error messages.
    fn describe(&self) -> String {
        match self {
            Condition::Eq { field, value } => format!("[\"eq\", \"${field}\", \"{value}\"]"),
            Condition::StartsWith { field, prefix } => {
                format!("[\"starts-with\", \"${field}\", \"{prefix}\"]")
            }
            Condition::ContentLengthRange { min, max } => {
                format!("[\"content-length-range\", {min}, {max}]")
            }
        }
    }

    fn holds(&self, value: &str) -> bool {
        match self {
            Condition::Eq { value: want, .. } => value == want,
            // Content-Type may list several types; each must carry the prefix.
            Condition::StartsWith { field, prefix } if field == "content-type" => value
                .split(',')
                .all(|v| v.trim().starts_with(prefix.as_str())),
            Condition::StartsWith { prefix, .. } => value.starts_with(prefix.as_str()),
            Condition::ContentLengthRange { .. } => true,
        }
    }
}

/// A decoded policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    /// When the policy stops being valid, Unix milliseconds.
    pub expiration_ms: u64,
    /// Every condition, in document order.
    pub conditions: Vec<Condition>,
}

fn invalid_policy(detail: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidPolicyDocument,
        format!("Invalid Policy: {detail}"),
    )
}

fn denied(detail: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AccessDenied,
        format!("Invalid according to Policy: {detail}"),
    )
}

/// Decodes the form's `policy` field: base64 of a JSON document.
pub fn decode_policy(policy_b64: &str) -> Result<PostPolicy, S3Error> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(policy_b64.trim())
        .map_err(|_| invalid_policy("Invalid Policy Encoding."))?;
    if raw.len() > POLICY_BYTES_MAX {
        return Err(invalid_policy("Policy document too large."));
    }
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| invalid_policy("Invalid JSON."))?;
    let expiration = doc
        .get("expiration")
        .ok_or_else(|| invalid_policy("Policy missing expiration."))?
        .as_str()
        .ok_or_else(|| invalid_policy("Invalid 'expiration' value."))?;
    let expiration_ms =
        parse_iso8601(expiration).ok_or_else(|| invalid_policy("Invalid 'expiration' value."))?;
    let list = doc
        .get("conditions")
        .ok_or_else(|| invalid_policy("Policy missing conditions."))?
        .as_array()
        .ok_or_else(|| invalid_policy("Invalid 'conditions' value."))?;
    if list.len() > CONDITIONS_MAX {
        return Err(invalid_policy("Too many conditions."));
    }
    let mut conditions = Vec::new();
    for c in list {
        parse_condition(c, &mut conditions)?;
    }
    Ok(PostPolicy {
        expiration_ms,
        conditions,
    })
}

fn parse_condition(c: &Value, out: &mut Vec<Condition>) -> Result<(), S3Error> {
    match c {
        Value::Object(map) => {
            for (name, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| invalid_policy("Condition values must be strings."))?;
                out.push(Condition::Eq {
                    field: field_name(name),
                    value: value.to_string(),
                });
            }
            Ok(())
        }
        Value::Array(items) if items.len() == 3 => {
            let op = items[0]
                .as_str()
                .ok_or_else(|| invalid_policy("Invalid condition operator."))?
                .to_ascii_lowercase();
            if op == "content-length-range" {
                let (min, max) = (number(&items[1])?, number(&items[2])?);
                if min > max {
                    return Err(invalid_policy("Invalid content-length-range."));
                }
                out.push(Condition::ContentLengthRange { min, max });
                return Ok(());
            }
            let (Some(field), Some(value)) = (items[1].as_str(), items[2].as_str()) else {
                return Err(invalid_policy("Condition values must be strings."));
            };
            let Some(field) = field.strip_prefix('$') else {
                return Err(invalid_policy("Condition field names must start with '$'."));
            };
            let (field, value) = (field_name(field), value.to_string());
            out.push(match op.as_str() {
                "eq" => Condition::Eq { field, value },
                "starts-with" => Condition::StartsWith {
                    field,
                    prefix: value,
                },
                _ => return Err(invalid_policy("Invalid condition operator.")),
            });
            Ok(())
        }
        _ => Err(invalid_policy("Invalid condition.")),
    }
}

fn field_name(name: &str) -> String {
    name.strip_prefix('$').unwrap_or(name).to_ascii_lowercase()
}

fn number(v: &Value) -> Result<u64, S3Error> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid_policy("Invalid content-length-range value."))
}

/// Parses `2013-08-07T12:00:00Z` or `2013-08-07T12:00:00.000Z` into Unix milliseconds.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = &s[19..s.len() - 1];
    let milli = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            let f = format!("{:0<3}", &f[..f.len().min(3)]);
            f.parse().ok()?
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
    Some((days * 86400 + h * 3600 + mi * 60 + se) * 1000 + milli)
}

/// The form's text fields by lowercase name (field names are case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostForm {
    fields: BTreeMap<String, String>,
}

impl PostForm {
    /// Collects fields as the form parser yielded them; a repeated field is refused.
    pub fn from_fields(fields: &[(String, String)]) -> Result<Self, S3Error> {
        let mut out = BTreeMap::new();
        for (name, value) in fields {
            let name = name.to_ascii_lowercase();
            if out.insert(name.clone(), value.clone()).is_some() {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("The form field {name} appears more than once."),
                ));
            }
        }
        Ok(PostForm { fields: out })
    }

    /// Every field as (lowercase name, value), in name order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, S3Error> {
        self.get(name).ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields."),
            )
        })
    }
}

/// The `x-amz-credential` field, split: `AKID/20130524/us-east-1/s3/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The access key id.
    pub access_key: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
}

fn credential_error(detail: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AuthorizationQueryParametersError,
        format!("Error parsing the X-Amz-Credential parameter; {detail}"),
    )
}

/// Reads the form's credential, so the caller can look up the secret. A form without a
/// policy is an anonymous upload, which Hamster refuses (INV-6).
pub fn credential(form: &PostForm) -> Result<Credential, S3Error> {
    if form.get("policy").is_none() {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Anonymous access is not allowed; sign the POST policy with an access key",
        ));
    }
    if form.get("awsaccesskeyid").is_some() && form.get("x-amz-credential").is_none() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "POST policies signed with Signature Version 2 are not supported; use SigV4",
        ));
    }
    let algorithm = form.required("x-amz-algorithm")?;
    if algorithm != ALGORITHM {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("X-Amz-Algorithm only supports \"{ALGORITHM}\""),
        ));
    }
    let raw = form.required("x-amz-credential")?;
    let parts: Vec<&str> = raw.split('/').collect();
    let [access_key, date, region, service, terminator] = parts[..] else {
        return Err(credential_error("the credential is not five parts."));
    };
    if access_key.is_empty() || date.len() != 8 || !date.bytes().all(|c| c.is_ascii_digit()) {
        return Err(credential_error(
            "the credential's key or date is malformed.",
        ));
    }
    if service != "s3" || terminator != "aws4_request" {
        return Err(credential_error(format!(
            "incorrect service \"{service}\" or terminal \"{terminator}\"."
        )));
    }
    Ok(Credential {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
    })
}

/// Where the client goes after a successful upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuccessAction {
    /// Answer with this status: 200, 201 (with a PostResponse document) or 204.
    Status(u16),
    /// Answer 303 to this URL (bucket, key and ETag are appended by `redirect_location`).
    Redirect(String),
}

/// What a verified form allows the caller to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The object key, `${filename}` already substituted.
    pub key: String,
    /// The allowed file size, inclusive, if the policy limits it.
    pub length_range: Option<(u64, u64)>,
    /// The `Content-Type` field, if given.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` fields, names lowercase without the prefix.
    pub user_meta: BTreeMap<String, String>,
    /// Standard headers the form sets on the object (see `STORED_HEADER_FIELDS`).
    pub headers: BTreeMap<String, String>,
    /// The answer the client asked for.
    pub success: SuccessAction,
}

/// What `verify` needs besides the form.
#[derive(Debug, Clone, Copy)]
pub struct VerifyInput<'a> {
    /// The bucket the request addressed.
    pub bucket: &'a str,
    /// The file part's filename, for `${filename}`.
    pub filename: Option<&'a str>,
    /// The secret of the credential's access key.
    pub secret: &'a str,
    /// This node's region.
    pub region: &'a str,
    /// The injected clock's now.
    pub now_ms: u64,
}

/// Verifies a form against its policy and signature; see the module header for the order.
pub fn verify(form: &PostForm, input: &VerifyInput) -> Result<Accepted, S3Error> {
    let cred = credential(form)?;
    if cred.region != input.region {
        return Err(credential_error(format!(
            "the region '{}' is wrong; expecting '{}'",
            cred.region, input.region
        )));
    }
    let amz_date = form.required("x-amz-date")?;
    if parse_amz_date(amz_date).is_none() || !amz_date.starts_with(&cred.date) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "X-Amz-Date must be in the ISO8601 Long Format and match the credential's date",
        ));
    }
    let policy_b64 = form.required("policy")?;
    let signature = form.required("x-amz-signature")?;
    let key = signing_key(input.secret, &cred.date, &cred.region, &cred.service);
    let expected = sigv4::signature_hex(&key, policy_b64);
    if !signatures_equal(&expected, &signature.to_ascii_lowercase()) {
        return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
    }
    let policy = decode_policy(policy_b64)?;
    if input.now_ms >= policy.expiration_ms {
        return Err(denied("Policy expired."));
    }
    let object_key = substitute_filename(form.required("key")?, input.filename);
    let value_of = |field: &str| -> String {
        match field {
            "bucket" => input.bucket.to_string(),
            "key" => object_key.clone(),
            other => form.get(other).unwrap_or_default().to_string(),
        }
    };
    let mut length_range = None;
    for c in &policy.conditions {
        if let Condition::ContentLengthRange { min, max } = c {
            length_range = Some((*min, *max));
        } else if !c.holds(&value_of(c.field().unwrap_or_default())) {
            return Err(denied(format_args!(
                "Policy Condition failed: {}",
                c.describe()
            )));
        }
    }
    let extra: Vec<&str> = form
        .fields
        .keys()
        .map(String::as_str)
        .filter(|f| !exempt(f))
        .filter(|f| !policy.conditions.iter().any(|c| c.field() == Some(*f)))
        .collect();
    if !extra.is_empty() {
        return Err(denied(format_args!(
            "Extra input fields: {}",
            extra.join(", ")
        )));
    }
    Ok(Accepted {
        key: object_key,
        length_range,
        content_type: form.get("content-type").map(str::to_string),
        user_meta: form
            .fields
            .iter()
            .filter_map(|(n, v)| Some((n.strip_prefix("x-amz-meta-")?.to_string(), v.clone())))
            .collect(),
        headers: STORED_HEADER_FIELDS
            .iter()
            .filter_map(|h| Some((h.to_string(), form.get(h)?.to_string())))
            .collect(),
        success: success_action(form),
    })
}

fn success_action(form: &PostForm) -> SuccessAction {
    let redirect = form
        .get("success_action_redirect")
        .or_else(|| form.get("redirect"))
        .filter(|u| !u.is_empty());
    if let Some(url) = redirect {
        return SuccessAction::Redirect(url.to_string());
    }
    match form.get("success_action_status") {
        Some("200") => SuccessAction::Status(200),
        Some("201") => SuccessAction::Status(201),
        // AWS answers 204 for a missing or unrecognised status.
        _ => SuccessAction::Status(204),
    }
}

/// Replaces `${filename}` in `key` with the uploaded file's name (its last path segment).
pub fn substitute_filename(key: &str, filename: Option<&str>) -> String {
    let name = filename
        .map(|f| f.rsplit(['/', '\\']).next().unwrap_or(f))
        .unwrap_or("");
    key.replace("${filename}", name)
}

/// The `PostResponse` document S3 returns for `success_action_status` 201.
pub fn post_response_xml(location: &str, bucket: &str, key: &str, etag: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>{}</Location>\
         <Bucket>{}</Bucket><Key>{}</Key><ETag>\"{}\"</ETag></PostResponse>",
        xml::escape(location),
        xml::escape(bucket),
        xml::escape(key),
        xml::escape(etag)
    )
}

/// The 303 target: the redirect URL with `bucket`, `key` and `etag` appended to its query.
pub fn redirect_location(url: &str, bucket: &str, key: &str, etag: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}bucket={}&key={}&etag={}",
        sigv4::uri_encode(bucket.as_bytes(), false),
        sigv4::uri_encode(key.as_bytes(), false),
        sigv4::uri_encode(format!("\"{etag}\"").as_bytes(), false)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::amz_date;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const NOW_MS: u64 = 1_700_000_000_000;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// A form for `policy_json`, signed with `SECRET` as a browser-upload client would.
    fn form(policy_json: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let date = amz_date(NOW_MS);
        let policy = b64(policy_json);
        let key = signing_key(SECRET, &date[..8], "us-east-1", "s3");
        let sig = sigv4::signature_hex(&key, &policy);
        let mut out = vec![
            ("key".to_string(), "uploads/${filename}".to_string()),
            ("X-Amz-Algorithm".into(), ALGORITHM.into()),
            (
                "X-Amz-Credential".into(),
                format!("AKID/{}/us-east-1/s3/aws4_request", &date[..8]),
            ),
            ("X-Amz-Date".into(), date),
            ("Policy".into(), policy),
            ("X-Amz-Signature".into(), sig),
        ];
        out.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        out
    }

    fn policy(extra_conditions: &str) -> String {
        format!(
            r#"{{"expiration": "2023-11-14T23:00:00.000Z", "conditions": [
                {{"bucket": "photos"}},
                ["starts-with", "$key", "uploads/"],
                ["content-length-range", 1, 1048576],
                {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}},
                {{"x-amz-credential": "AKID/20231114/us-east-1/s3/aws4_request"}},
                {{"x-amz-date": "20231114T221320Z"}}{extra_conditions}]}}"#
        )
    }

    fn run(fields: &[(String, String)]) -> Result<Accepted, S3Error> {
        run_at(fields, "photos", NOW_MS)
    }

    fn run_at(fields: &[(String, String)], bucket: &str, now_ms: u64) -> Result<Accepted, S3Error> {
        let f = PostForm::from_fields(fields)?;
        verify(
            &f,
            &VerifyInput {
                bucket,
                filename: Some("C:\\docs\\cat.png"),
                secret: SECRET,
                region: "us-east-1",
                now_ms,
            },
        )
    }

    fn denied_with(r: Result<Accepted, S3Error>, code: S3ErrorCode, needle: &str) {
        let e = r.unwrap_err();
        assert_eq!(e.code, code, "{e}");
        assert!(e.message().contains(needle), "{e}");
    }

    #[test]
    fn a_signed_form_is_accepted() {
        let p = policy(
            r#", {"success_action_status": "201"}, ["starts-with", "$Content-Type", "image/"],
               ["eq", "$x-amz-meta-owner", "ann"]"#,
        );
        let fields = form(
            &p,
            &[
                ("success_action_status", "201"),
                ("Content-Type", "image/png"),
                ("x-amz-meta-owner", "ann"),
                ("x-ignore-tracking", "1"),
            ],
        );
        let a = run(&fields).unwrap();
        assert_eq!(a.key, "uploads/cat.png");
        assert_eq!(a.length_range, Some((1, 1_048_576)));
        assert_eq!(a.content_type.as_deref(), Some("image/png"));
        assert_eq!(a.user_meta.get("owner").map(String::as_str), Some("ann"));
        assert_eq!(a.success, SuccessAction::Status(201));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let mut fields = form(&policy(""), &[]);
        let i = fields.iter().position(|(n, _)| n == "Policy").unwrap();
        fields[i].1 = b64(&policy("").replace("uploads/", ""));
        denied_with(run(&fields), S3ErrorCode::SignatureDoesNotMatch, "");
    }

    #[test]
    fn expiry_is_checked_against_the_given_clock() {
        let fields = form(&policy(""), &[]);
        let expired = parse_iso8601("2023-11-14T23:00:00Z").unwrap();
        denied_with(
            run_at(&fields, "photos", expired),
            S3ErrorCode::AccessDenied,
            "Policy expired.",
        );
    }

    #[test]
    fn failed_conditions_are_named() {
        let fields = form(&policy(""), &[]);
        denied_with(
            run_at(&fields, "other", NOW_MS),
            S3ErrorCode::AccessDenied,
            "Policy Condition failed: [\"eq\", \"$bucket\", \"photos\"]",
        );
        let mut fields = form(&policy(""), &[]);
        fields[0].1 = "elsewhere/${filename}".into();
        denied_with(run(&fields), S3ErrorCode::AccessDenied, "starts-with");
    }

    #[test]
    fn uncovered_fields_are_refused() {
        let fields = form(&policy(""), &[("x-amz-meta-sneaky", "1")]);
        denied_with(
            run(&fields),
            S3ErrorCode::AccessDenied,
            "Extra input fields: x-amz-meta-sneaky",
        );
    }

    #[test]
    fn wrong_region_and_missing_fields() {
        let mut fields = form(&policy(""), &[]);
        fields[2].1 = fields[2].1.replace("us-east-1", "eu-west-1");
        denied_with(
            run(&fields),
            S3ErrorCode::AuthorizationQueryParametersError,
            "eu-west-1",
        );
        let fields: Vec<_> = form(&policy(""), &[]).into_iter().skip(1).collect();
        denied_with(run(&fields), S3ErrorCode::InvalidArgument, "'key'");
        let fields: Vec<_> = form(&policy(""), &[])
            .into_iter()
            .filter(|(n, _)| n != "Policy")
            .collect();
        denied_with(run(&fields), S3ErrorCode::AccessDenied, "Anonymous");
        let fields = form(&policy(""), &[("KEY", "again")]);
        denied_with(run(&fields), S3ErrorCode::InvalidArgument, "more than once");
    }

    #[test]
    fn malformed_policies() {
        let bad = |json: &str, needle: &str| {
            denied_with(
                run(&form(json, &[])),
                S3ErrorCode::InvalidPolicyDocument,
                needle,
            )
        };
        bad("not json", "Invalid JSON");
        bad(r#"{"conditions": []}"#, "missing expiration");
        bad(
            r#"{"expiration": "2023-11-14T23:00:00Z"}"#,
            "missing conditions",
        );
        bad(
            r#"{"expiration": "2023-11-14T23:00:00Z", "conditions": [["in", "$key", "a"]]}"#,
            "operator",
        );
        bad(
            r#"{"expiration": "2023-11-14T23:00:00Z", "conditions": [["content-length-range", 5, 1]]}"#,
            "content-length-range",
        );
    }

    #[test]
    fn iso8601_forms() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_iso8601("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_iso8601("2023-11-14T22:13:20.000Z"), Some(NOW_MS));
        assert_eq!(parse_iso8601("2023-11-14 22:13:20Z"), None);
        assert_eq!(parse_iso8601("2023-13-14T22:13:20Z"), None);
    }

    #[test]
    fn responses() {
        assert_eq!(
            redirect_location("https://x.test/done?a=1", "b", "a b", "e1"),
            "https://x.test/done?a=1&bucket=b&key=a%20b&etag=%22e1%22"
        );
        let x = post_response_xml("http://h/b/k", "b", "k&", "e1");
        assert!(x.contains("<Key>k&amp;</Key>") && x.contains("<ETag>\"e1\"</ETag>"));
    }
}
