//! The request features Hamster does not honour, and the one check that refuses them.
//!
//! A client that asks for object lock and gets a plain 200 believes its data is protected when
//! it is not. So every request header (and every POST form field) that asks for a feature
//! Hamster does not carry out is answered `NotImplemented` before anything is stored or read,
//! and this module is the only list of them: the S3 front calls [`check`] once per request,
//! not once per operation.

use crate::s3err::{S3Error, S3ErrorCode};

/// Where a request's parameters came from. A POST form names some features differently from
/// the headers of the other operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// HTTP request headers (names are case-insensitive).
    Headers,
    /// The text fields of a POST Object form (names are case-insensitive).
    Form,
}

/// The canned ACLs that ask for nothing beyond what Hamster does. Hamster has one owner: every
/// bucket and object belongs to the cluster's owner, whichever key wrote it, and access is
/// governed by the keys' grants, not by ACLs. So `private` (owner FULL_CONTROL) is what every
/// bucket and object already has, and `bucket-owner-full-control` and `bucket-owner-read`
/// (object owner FULL_CONTROL, plus FULL_CONTROL or READ for the bucket's owner) grant the
/// same single owner what it holds anyway; AWS itself ignores both on CreateBucket. Every
/// other canned ACL shares access with others, which Hamster does not do.
pub const OWNER_ONLY_CANNED_ACLS: [&str; 3] =
    ["private", "bucket-owner-full-control", "bucket-owner-read"];

/// The feature a parameter asks for, if Hamster does not honour it. `name` is lowercase and
/// `value` trimmed.
fn feature(name: &str, value: &str, carrier: Carrier) -> Option<&'static str> {
    let acl = match carrier {
        Carrier::Headers => "x-amz-acl",
        Carrier::Form => "acl",
    };
    match name {
        n if n == acl && !OWNER_ONLY_CANNED_ACLS.contains(&value) => {
            Some("An ACL that shares access with others")
        }
        // Explicit grants, even to the owner alone, are not applied: refused.
        n if n.starts_with("x-amz-grant-") => Some("ACL grants"),
        "x-amz-object-lock-mode" | "x-amz-object-lock-retain-until-date" => {
            Some("Object lock retention")
        }
        "x-amz-object-lock-legal-hold" => Some("Object lock legal hold"),
        // `false` asks for a bucket without lock, which is what every bucket is.
        "x-amz-bucket-object-lock-enabled" if !value.eq_ignore_ascii_case("false") => {
            Some("Object lock on a bucket")
        }
        n if n.starts_with("x-amz-copy-source-server-side-encryption-customer-") => {
            Some("Reading a copy source encrypted with a customer key (SSE-C)")
        }
        n if n.starts_with("x-amz-server-side-encryption-customer-") => {
            Some("Server-side encryption with a customer key (SSE-C)")
        }
        n if n.starts_with("x-amz-server-side-encryption-aws-kms-")
            || n == "x-amz-server-side-encryption-context"
            || n == "x-amz-server-side-encryption-bucket-key-enabled" =>
        {
            Some("Server-side encryption with KMS keys (SSE-KMS)")
        }
        // Any value, AES256 included: Hamster does not encrypt object data yet.
        "x-amz-server-side-encryption" => Some("Server-side encryption"),
        _ => None,
    }
}

/// Refuses a request whose parameters ask for a feature Hamster does not honour, naming the
/// feature and the parameter. When several do, the one with the smallest name is named, so the
/// answer does not depend on the order the parameters arrived in.
pub fn check<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    carrier: Carrier,
) -> Result<(), S3Error> {
    let refused = params
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .filter_map(|(name, value)| Some((feature(&name, value, carrier)?, name)))
        .min_by(|a, b| a.1.cmp(&b.1));
    match refused {
        None => Ok(()),
        Some((feature, name)) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!("{feature} ({name}) is not implemented by Hamster; the request was refused and nothing was changed"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(params: &[(&str, &str)], carrier: Carrier) -> Option<String> {
        check(params.iter().copied(), carrier).err().map(|e| {
            assert_eq!(e.code, S3ErrorCode::NotImplemented);
            e.message().to_string()
        })
    }

    #[test]
    fn ordinary_requests_pass() {
        let plain = [
            ("content-type", "text/plain"),
            ("x-amz-meta-lock", "yes"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ];
        assert_eq!(refused(&plain, Carrier::Headers), None);
        assert_eq!(refused(&plain, Carrier::Form), None);
        assert_eq!(refused(&[], Carrier::Headers), None);
    }

    #[test]
    fn object_lock_is_refused_wherever_it_is_asked_for() {
        for carrier in [Carrier::Headers, Carrier::Form] {
            for (name, value) in [
                ("x-amz-object-lock-mode", "COMPLIANCE"),
                ("X-Amz-Object-Lock-Mode", "GOVERNANCE"),
                (
                    "x-amz-object-lock-retain-until-date",
                    "2030-01-01T00:00:00Z",
                ),
                ("x-amz-object-lock-legal-hold", "ON"),
                ("x-amz-object-lock-legal-hold", "OFF"),
                ("x-amz-bucket-object-lock-enabled", "true"),
                ("x-amz-bucket-object-lock-enabled", "TRUE"),
                ("x-amz-bucket-object-lock-enabled", "yes"),
            ] {
                let msg = refused(&[("content-type", "a/b"), (name, value)], carrier)
                    .unwrap_or_else(|| panic!("{name}: {value} was accepted"));
                assert!(msg.contains("Object lock"), "{msg}");
                assert!(msg.contains(&name.to_ascii_lowercase()), "{msg}");
            }
        }
    }

    #[test]
    fn a_bucket_without_lock_is_what_hamster_makes() {
        for value in ["false", "False", " false "] {
            let params = [("x-amz-bucket-object-lock-enabled", value)];
            assert_eq!(refused(&params, Carrier::Headers), None, "{value}");
        }
    }

    #[test]
    fn server_side_encryption_is_refused_in_every_form() {
        for carrier in [Carrier::Headers, Carrier::Form] {
            for (name, value) in [
                ("x-amz-server-side-encryption", "AES256"),
                ("x-amz-server-side-encryption", "aws:kms"),
                ("x-amz-server-side-encryption", "aws:kms:dsse"),
                (
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    "arn:aws:kms:k",
                ),
                ("x-amz-server-side-encryption-context", "e30="),
                ("x-amz-server-side-encryption-bucket-key-enabled", "false"),
                ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
                ("x-amz-server-side-encryption-customer-key", "a2V5"),
                ("x-amz-server-side-encryption-customer-key-md5", "bWQ1"),
                ("x-amz-server-side-encryption-customer-key-MD5", "bWQ1"),
                (
                    "x-amz-copy-source-server-side-encryption-customer-algorithm",
                    "AES256",
                ),
                (
                    "x-amz-copy-source-server-side-encryption-customer-key",
                    "a2V5",
                ),
                (
                    "x-amz-copy-source-server-side-encryption-customer-key-md5",
                    "bWQ1",
                ),
            ] {
                let msg = refused(&[(name, value)], carrier)
                    .unwrap_or_else(|| panic!("{name}: {value} was accepted"));
                assert!(msg.contains("encrypt"), "{msg}");
            }
        }
        let ssec = [("x-amz-server-side-encryption-customer-key", "a2V5")];
        assert!(refused(&ssec, Carrier::Headers).unwrap().contains("SSE-C"));
    }

    #[test]
    fn only_owner_only_acls_are_accepted() {
        for value in OWNER_ONLY_CANNED_ACLS {
            assert_eq!(refused(&[("x-amz-acl", value)], Carrier::Headers), None);
            assert_eq!(refused(&[("acl", value)], Carrier::Form), None);
        }
        for value in [
            "public-read",
            "public-read-write",
            "authenticated-read",
            "aws-exec-read",
            "log-delivery-write",
            "Private",
            "",
        ] {
            let msg = refused(&[("x-amz-acl", value)], Carrier::Headers)
                .unwrap_or_else(|| panic!("x-amz-acl: {value} was accepted"));
            assert!(msg.contains("ACL"), "{msg}");
            assert!(
                refused(&[("acl", value)], Carrier::Form).is_some(),
                "{value}"
            );
        }
        // A form's `acl` field is not a header: a header of that name asks for nothing.
        assert_eq!(refused(&[("acl", "public-read")], Carrier::Headers), None);
    }

    #[test]
    fn grant_headers_are_refused() {
        for name in [
            "x-amz-grant-read",
            "x-amz-grant-write",
            "x-amz-grant-read-acp",
            "x-amz-grant-write-acp",
            "x-amz-grant-full-control",
        ] {
            let msg = refused(&[(name, "id=\"owner\"")], Carrier::Headers)
                .unwrap_or_else(|| panic!("{name} was accepted"));
            assert!(msg.contains("ACL grants"), "{msg}");
        }
    }

    #[test]
    fn the_named_parameter_does_not_depend_on_arrival_order() {
        let a = ("x-amz-object-lock-mode", "COMPLIANCE");
        let b = ("x-amz-object-lock-legal-hold", "ON");
        let first = refused(&[a, b], Carrier::Headers);
        assert_eq!(first, refused(&[b, a], Carrier::Headers));
        assert!(first.unwrap().contains("x-amz-object-lock-legal-hold"));
    }
}
