//! Who may do what: the pure permission decision for one S3 operation by one access key. Root
//! keys may do everything; any other key acts only inside the buckets it holds a grant on, and
//! each operation needs the grant's read, write or owner bit.
//!
//! The table keys on the operation's AWS name (`Op::name`), so it reads like AWS's own list of
//! actions, and an operation nobody has placed in the table yet is root-only until someone does.

use std::collections::BTreeMap;

use hamster_protocol::meta::Grant;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};

use super::auth::Authenticated;
use super::request::Op;

/// The permission bit a bucket operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// List and read objects, read the bucket's public facts.
    Read,
    /// Write and delete objects.
    Write,
    /// Manage the bucket itself: delete it, change its settings.
    Owner,
}

/// What an operation asks of a non-root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Any key may ask; the answer is limited to what the key may see (ListBuckets), or the
    /// request does nothing at all (a method S3 does not define).
    Open,
    /// Any key may create a bucket; the creator is granted read, write and owner on it.
    Create,
    /// The key needs this bit on the addressed bucket.
    Bucket(Need),
    /// Only root keys: operations not placed in the table.
    Root,
}

/// Operations that only read objects or the bucket's public facts.
const READ_OPS: [&str; 17] = [
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "HeadBucket",
    "GetBucketLocation",
    "GetBucketVersioning",
    "ListParts",
    "ListMultipartUploads",
    "GetObjectAcl",
    "GetBucketAcl",
    "GetObjectTagging",
    "GetObjectAttributes",
    "GetObjectRetention",
    "GetObjectLegalHold",
    "SelectObjectContent",
];

/// Operations that write or delete objects (a copy also needs read on its source; see
/// [`may`]).
const WRITE_OPS: [&str; 13] = [
    "PutObject",
    "PostObject",
    "DeleteObject",
    "DeleteObjects",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "PutObjectTagging",
    "DeleteObjectTagging",
    "RestoreObject",
];

/// Operations on the bucket itself and on who may do what: the owner's.
const OWNER_OPS: [&str; 29] = [
    "DeleteBucket",
    "PutBucketVersioning",
    "PutBucketAcl",
    "PutObjectAcl",
    "PutObjectRetention",
    "PutObjectLegalHold",
    "GetBucketPolicy",
    "PutBucketPolicy",
    "DeleteBucketPolicy",
    "GetBucketCors",
    "PutBucketCors",
    "DeleteBucketCors",
    "GetBucketLifecycleConfiguration",
    "PutBucketLifecycleConfiguration",
    "DeleteBucketLifecycle",
    "GetBucketTagging",
    "PutBucketTagging",
    "DeleteBucketTagging",
    "GetBucketEncryption",
    "PutBucketEncryption",
    "DeleteBucketEncryption",
    "GetObjectLockConfiguration",
    "PutObjectLockConfiguration",
    "GetBucketOwnershipControls",
    "PutBucketOwnershipControls",
    "DeleteBucketOwnershipControls",
    "GetPublicAccessBlock",
    "PutPublicAccessBlock",
    "DeletePublicAccessBlock",
];

/// The rule for an operation, by its AWS name.
pub fn rule_for(name: &str) -> Rule {
    match name {
        "ListBuckets" | "BadMethod" => Rule::Open,
        "CreateBucket" => Rule::Create,
        n if READ_OPS.contains(&n) => Rule::Bucket(Need::Read),
        n if WRITE_OPS.contains(&n) => Rule::Bucket(Need::Write),
        n if OWNER_OPS.contains(&n) => Rule::Bucket(Need::Owner),
        _ => Rule::Root,
    }
}

/// The rule for an operation.
pub fn rule(op: &Op) -> Rule {
    rule_for(op.name())
}

/// Whether `grants` give `need` on `bucket`.
pub fn allows(grants: &BTreeMap<String, Grant>, bucket: &str, need: Need) -> bool {
    grants.get(bucket).is_some_and(|g| match need {
        Need::Read => g.read,
        Need::Write => g.write,
        Need::Owner => g.owner,
    })
}

/// Whether a key (root or not) may do what `need` covers on `bucket`. The exchange asks this
/// (through [`require`]) with [`Need::Read`] on the source bucket of CopyObject and
/// UploadPartCopy; PostObject asks [`allows`] for the key that signed the form.
pub fn may(auth: &Authenticated, bucket: &str, need: Need) -> bool {
    auth.root || allows(&auth.grants, bucket, need)
}

/// [`may`] as an S3 answer: AccessDenied when the key lacks `need` on `bucket`.
pub fn require(auth: &Authenticated, bucket: &str, need: Need) -> Result<(), S3Error> {
    if may(auth, bucket, need) {
        return Ok(());
    }
    Err(denied(format!(
        "this access key has no {} permission on bucket {bucket}",
        need_word(need)
    )))
}

/// Whether the key may ask for `op` on the addressed `bucket`; AccessDenied (403) if not.
pub fn check(
    root: bool,
    grants: &BTreeMap<String, Grant>,
    op: &Op,
    bucket: Option<&str>,
) -> Result<(), S3Error> {
    decide(root, grants, rule(op), bucket).map_err(denied)
}

/// The decision itself, pure over the rule: `Err` carries the reason.
pub fn decide(
    root: bool,
    grants: &BTreeMap<String, Grant>,
    rule: Rule,
    bucket: Option<&str>,
) -> Result<(), String> {
    if root {
        return Ok(());
    }
    match (rule, bucket) {
        (Rule::Open | Rule::Create, _) => Ok(()),
        (Rule::Bucket(need), Some(b)) if allows(grants, b, need) => Ok(()),
        (Rule::Bucket(need), Some(b)) => Err(format!(
            "this access key has no {} permission on bucket {b}",
            need_word(need)
        )),
        (Rule::Bucket(_), None) | (Rule::Root, _) => {
            Err("only a root access key may do this".to_string())
        }
    }
}

fn need_word(need: Need) -> &'static str {
    match need {
        Need::Read => "read",
        Need::Write => "write",
        Need::Owner => "owner",
    }
}

fn denied(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[(&str, bool, bool, bool)]) -> BTreeMap<String, Grant> {
        list.iter()
            .map(|(b, read, write, owner)| {
                (
                    b.to_string(),
                    Grant {
                        read: *read,
                        write: *write,
                        owner: *owner,
                    },
                )
            })
            .collect()
    }

    /// The operations the front serves today land where the permission table says.
    #[test]
    fn current_ops_are_placed() {
        let cases = [
            (Op::ListBuckets, Rule::Open),
            (Op::BadMethod, Rule::Open),
            (Op::CreateBucket, Rule::Create),
            (Op::HeadBucket, Rule::Bucket(Need::Read)),
            (Op::GetBucketLocation, Rule::Bucket(Need::Read)),
            (Op::GetBucketVersioning, Rule::Bucket(Need::Read)),
            (Op::ListObjects, Rule::Bucket(Need::Read)),
            (Op::ListObjectsV2, Rule::Bucket(Need::Read)),
            (Op::GetObject, Rule::Bucket(Need::Read)),
            (Op::HeadObject, Rule::Bucket(Need::Read)),
            (Op::PutObject, Rule::Bucket(Need::Write)),
            (Op::DeleteObject, Rule::Bucket(Need::Write)),
            (Op::DeleteBucket, Rule::Bucket(Need::Owner)),
            (Op::ListParts, Rule::Bucket(Need::Read)),
            (Op::ListMultipartUploads, Rule::Bucket(Need::Read)),
            (Op::ListObjectVersions, Rule::Bucket(Need::Read)),
            (Op::GetBucketAcl, Rule::Bucket(Need::Read)),
            (Op::GetObjectAcl, Rule::Bucket(Need::Read)),
            (Op::PostObject, Rule::Bucket(Need::Write)),
            (Op::CopyObject, Rule::Bucket(Need::Write)),
            (Op::CreateMultipartUpload, Rule::Bucket(Need::Write)),
            (Op::UploadPart, Rule::Bucket(Need::Write)),
            (Op::UploadPartCopy, Rule::Bucket(Need::Write)),
            (Op::CompleteMultipartUpload, Rule::Bucket(Need::Write)),
            (Op::AbortMultipartUpload, Rule::Bucket(Need::Write)),
            (Op::DeleteObjects, Rule::Bucket(Need::Write)),
            (Op::PutBucketAcl, Rule::Bucket(Need::Owner)),
            (Op::PutObjectAcl, Rule::Bucket(Need::Owner)),
            (Op::Unsupported("BucketPolicy"), Rule::Root),
        ];
        for (op, want) in cases {
            assert_eq!(rule(&op), want, "{}", op.name());
        }
    }

    /// Operations being added elsewhere are placed by their AWS names.
    #[test]
    fn named_ops_are_placed() {
        for n in [
            "ListParts",
            "ListMultipartUploads",
            "GetObjectAcl",
            "GetBucketAcl",
        ] {
            assert_eq!(rule_for(n), Rule::Bucket(Need::Read), "{n}");
        }
        for n in [
            "CopyObject",
            "UploadPartCopy",
            "DeleteObjects",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "AbortMultipartUpload",
        ] {
            assert_eq!(rule_for(n), Rule::Bucket(Need::Write), "{n}");
        }
        for n in ["PutBucketVersioning", "PutBucketAcl", "PutBucketPolicy"] {
            assert_eq!(rule_for(n), Rule::Bucket(Need::Owner), "{n}");
        }
    }

    /// An operation the table does not know is root-only, never open by default.
    #[test]
    fn unknown_ops_need_root() {
        for n in ["TeleportObject", "MultipartUpload", "BucketAcl", ""] {
            assert_eq!(rule_for(n), Rule::Root, "{n}");
        }
        let none = BTreeMap::new();
        assert!(decide(false, &none, Rule::Root, Some("b")).is_err());
        assert!(decide(true, &none, Rule::Root, Some("b")).is_ok());
    }

    /// No operation sits in two lists: each has exactly one rule.
    #[test]
    fn lists_are_disjoint() {
        for r in READ_OPS {
            assert!(!WRITE_OPS.contains(&r) && !OWNER_OPS.contains(&r), "{r}");
        }
        for w in WRITE_OPS {
            assert!(!OWNER_OPS.contains(&w), "{w}");
        }
    }

    /// Root may do everything, with or without grants or a bucket.
    #[test]
    fn root_may_do_everything() {
        let none = BTreeMap::new();
        for rule in [
            Rule::Open,
            Rule::Create,
            Rule::Root,
            Rule::Bucket(Need::Read),
            Rule::Bucket(Need::Write),
            Rule::Bucket(Need::Owner),
        ] {
            assert_eq!(decide(true, &none, rule, Some("b")), Ok(()));
            assert_eq!(decide(true, &none, rule, None), Ok(()));
        }
    }

    /// Each bit allows exactly its own operations, only on its own bucket.
    #[test]
    fn bits_are_independent_and_per_bucket() {
        let g = grants(&[
            ("r", true, false, false),
            ("w", false, true, false),
            ("o", false, false, true),
        ]);
        let table = [
            ("r", Need::Read, true),
            ("r", Need::Write, false),
            ("r", Need::Owner, false),
            ("w", Need::Read, false),
            ("w", Need::Write, true),
            ("w", Need::Owner, false),
            ("o", Need::Read, false),
            ("o", Need::Write, false),
            ("o", Need::Owner, true),
            ("elsewhere", Need::Read, false),
        ];
        for (bucket, need, want) in table {
            assert_eq!(allows(&g, bucket, need), want, "{bucket} {need:?}");
            assert_eq!(
                decide(false, &g, Rule::Bucket(need), Some(bucket)).is_ok(),
                want,
                "{bucket} {need:?}"
            );
        }
    }

    /// A key with no grants may list (filtered) and create buckets, and nothing else.
    #[test]
    fn no_grants_may_only_list_and_create() {
        let none = BTreeMap::new();
        assert!(decide(false, &none, Rule::Open, None).is_ok());
        assert!(decide(false, &none, Rule::Create, Some("new")).is_ok());
        let err = check(false, &none, &Op::GetObject, Some("b")).unwrap_err();
        assert_eq!(err.code, S3ErrorCode::AccessDenied);
        assert!(check(false, &none, &Op::PutObject, Some("b")).is_err());
        // A bucket rule with no bucket named cannot be satisfied by a grant.
        assert!(decide(false, &none, Rule::Bucket(Need::Read), None).is_err());
    }
}
