//! The naming rules for S3 buckets and object keys: which names a request may use, and which
//! S3 error (with a message naming the broken rule) it gets when it may not.

use crate::s3err::{S3Error, S3ErrorCode};

/// Shortest bucket name S3 accepts.
pub const BUCKET_NAME_LEN_MIN: usize = 3;
/// Longest bucket name S3 accepts.
pub const BUCKET_NAME_LEN_MAX: usize = 63;
/// Longest object key, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 1024;

/// Prefixes AWS reserves for its own bucket kinds; a name using one would be refused there, so
/// it is refused here too and clients see the same answer from both.
const RESERVED_PREFIXES: [&str; 2] = ["xn--", "sthree-"];
/// Suffixes AWS reserves for access-point aliases, refused for the same reason.
const RESERVED_SUFFIXES: [&str; 2] = ["-s3alias", "--ol-s3"];

fn invalid_bucket(name: &str, rule: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidBucketName,
        format!("The specified bucket is not valid: {name:?} {rule}."),
    )
}

/// Checks a bucket name against S3's naming rules: 3..=63 characters of lowercase letters,
/// digits, `.` and `-`; starting and ending with a letter or digit; no `..`; not shaped like an
/// IPv4 address; not using a prefix (`xn--`, `sthree-`) or suffix (`-s3alias`, `--ol-s3`) that
/// AWS reserves. The `InvalidBucketName` error's message says which rule failed.
pub fn validate_bucket_name(name: &str) -> Result<(), S3Error> {
    let len = name.len();
    if !(BUCKET_NAME_LEN_MIN..=BUCKET_NAME_LEN_MAX).contains(&len) {
        return Err(invalid_bucket(
            name,
            "must be between 3 and 63 characters long",
        ));
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    if !name.bytes().all(allowed) {
        return Err(invalid_bucket(
            name,
            "may contain only lowercase letters, digits, dots and hyphens",
        ));
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[len - 1]) {
        return Err(invalid_bucket(
            name,
            "must begin and end with a letter or digit",
        ));
    }
    if name.contains("..") {
        return Err(invalid_bucket(name, "must not contain two adjacent dots"));
    }
    if looks_like_ipv4(name) {
        return Err(invalid_bucket(
            name,
            "must not be formatted as an IP address",
        ));
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err(invalid_bucket(
            name,
            &format!("must not start with the reserved prefix {p:?}"),
        ));
    }
    if let Some(s) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Err(invalid_bucket(
            name,
            &format!("must not end with the reserved suffix {s:?}"),
        ));
    }
    Ok(())
}

/// Four dot-separated groups of one to three digits. Whether each group is at most 255 does not
/// matter: a virtual-host client would still mistake `999.1.1.1` for an address, so AWS refuses
/// the shape, not just valid addresses.
fn looks_like_ipv4(name: &str) -> bool {
    let groups: Vec<&str> = name.split('.').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| (1..=3).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks an object key: non-empty and at most 1024 bytes of UTF-8 (`KeyTooLongError`). Any
/// Unicode is allowed, as on S3; keys that XML cannot carry verbatim are the reason listings
/// offer `encoding-type=url`.
pub fn validate_key(key: &str) -> Result<(), S3Error> {
    if key.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "The object key must not be empty.",
        ));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(S3Error::with_message(
            S3ErrorCode::KeyTooLongError,
            format!(
                "Your key is too long: {} bytes, at most {KEY_BYTES_MAX} allowed.",
                key.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(name: &str) -> String {
        let err = validate_bucket_name(name).expect_err(name);
        assert_eq!(err.code, S3ErrorCode::InvalidBucketName);
        err.message().to_string()
    }

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "abc",
            "my-bucket",
            "my.bucket.01",
            "1bucket",
            "a".repeat(63).as_str(),
            "1.2.3",
        ] {
            assert_eq!(validate_bucket_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn each_rule_names_itself() {
        assert!(rejected("ab").contains("between 3 and 63"));
        assert!(rejected(&"a".repeat(64)).contains("between 3 and 63"));
        assert!(rejected("My-Bucket").contains("lowercase"));
        assert!(rejected("my_bucket").contains("lowercase"));
        assert!(rejected("-bucket").contains("begin and end"));
        assert!(rejected("bucket.").contains("begin and end"));
        assert!(rejected("my..bucket").contains("adjacent dots"));
        assert!(rejected("192.168.5.4").contains("IP address"));
        assert!(rejected("999.1.1.1").contains("IP address"));
        assert!(rejected("xn--bucket").contains("xn--"));
        assert!(rejected("sthree-bucket").contains("sthree-"));
        assert!(rejected("bucket-s3alias").contains("-s3alias"));
        assert!(rejected("bucket--ol-s3").contains("--ol-s3"));
    }

    #[test]
    fn keys_limited_by_bytes_not_chars() {
        assert_eq!(validate_key("a"), Ok(()));
        assert_eq!(validate_key(&"k".repeat(1024)), Ok(()));
        assert_eq!(
            validate_key(&"k".repeat(1025)).unwrap_err().code,
            S3ErrorCode::KeyTooLongError
        );
        // 342 three-byte characters are 1026 bytes although only 342 characters.
        assert_eq!(
            validate_key(&"日".repeat(342)).unwrap_err().code,
            S3ErrorCode::KeyTooLongError
        );
        assert_eq!(
            validate_key("").unwrap_err().code,
            S3ErrorCode::InvalidArgument
        );
    }
}
