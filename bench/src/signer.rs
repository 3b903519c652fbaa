//! Signs requests with SigV4 through `hamster_protocol::sigv4`, the same canonicalisation the
//! server verifies with. Every request signs exactly `host`, `x-amz-content-sha256` and
//! `x-amz-date`; PUT bodies go as `UNSIGNED-PAYLOAD` so that hashing gigabytes in the client
//! does not become the figure being measured.

use hamster_protocol::sigv4::{self, RequestParts, ALGORITHM};
use hamster_protocol::time::amz_date;

/// The headers every request signs, sorted as the canonical request needs them.
const SIGNED_HEADERS: [&str; 3] = ["host", "x-amz-content-sha256", "x-amz-date"];

/// The headers a signed request must carry besides `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `x-amz-date`, e.g. `20130524T000000Z`.
    pub amz_date: String,
    /// `x-amz-content-sha256`, as signed.
    pub content_sha256: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

/// A per-connection signer. It keeps the day's signing key, so a request costs one SHA-256 of
/// the canonical request and one HMAC instead of five HMACs.
#[derive(Clone)]
pub struct Signer {
    access_key: String,
    secret_key: String,
    region: String,
    host: String,
    signed_headers: Vec<String>,
    /// `(YYYYMMDD, key)` of the last request.
    day_key: Option<(String, [u8; 32])>,
}

impl Signer {
    /// A signer for requests to `host` (the exact `Host` header value, port included when the
    /// endpoint names one) in `region`.
    pub fn new(access_key: &str, secret_key: &str, region: &str, host: &str) -> Signer {
        Signer {
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            region: region.to_string(),
            host: host.to_string(),
            signed_headers: SIGNED_HEADERS.iter().map(|h| h.to_string()).collect(),
            day_key: None,
        }
    }

    /// The `Host` header value requests must carry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Signs a request. `raw_path` and `raw_query` are exactly as they go on the wire (already
    /// percent-encoded, no `?`); `payload_hash` is `UNSIGNED-PAYLOAD` or a hex SHA-256.
    pub fn sign(
        &mut self,
        method: &str,
        raw_path: &str,
        raw_query: &str,
        payload_hash: &str,
        now_ms: u64,
    ) -> Signed {
        let date = amz_date(now_ms);
        let day = &date[..8];
        let headers = [
            ("host".to_string(), self.host.clone()),
            ("x-amz-content-sha256".to_string(), payload_hash.to_string()),
            ("x-amz-date".to_string(), date.clone()),
        ];
        let parts = RequestParts {
            method,
            raw_path,
            raw_query,
            headers: &headers,
        };
        let canonical = sigv4::canonical_request(&parts, &self.signed_headers, payload_hash);
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let key = match &self.day_key {
            Some((d, key)) if d == day => *key,
            _ => {
                let key = sigv4::signing_key(&self.secret_key, day, &self.region, "s3");
                self.day_key = Some((day.to_string(), key));
                key
            }
        };
        let signature =
            sigv4::signature_hex(&key, &sigv4::string_to_sign(&date, &scope, &canonical));
        Signed {
            authorization: format!(
                "{ALGORITHM} Credential={}/{scope},SignedHeaders={},Signature={signature}",
                self.access_key,
                SIGNED_HEADERS.join(";")
            ),
            amz_date: date,
            content_sha256: payload_hash.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamster_protocol::s3err::S3ErrorCode;
    use hamster_protocol::sigv4::{Auth, EMPTY_SHA256_HEX, UNSIGNED_PAYLOAD};

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// 20130524T000000Z, the date of the AWS S3 worked examples.
    const EXAMPLE_MS: u64 = 1_369_353_600_000;

    /// The request as the server would see it: our three headers plus `Authorization`.
    fn wire_headers(host: &str, s: &Signed) -> Vec<(String, String)> {
        vec![
            ("host".to_string(), host.to_string()),
            ("x-amz-content-sha256".to_string(), s.content_sha256.clone()),
            ("x-amz-date".to_string(), s.amz_date.clone()),
            ("authorization".to_string(), s.authorization.clone()),
        ]
    }

    /// Runs the server's own checks (`parse`, `check_time`, `verify`) on a signed request.
    fn server_verifies(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        secret: &str,
        now_ms: u64,
    ) -> Result<(), S3ErrorCode> {
        let parts = RequestParts {
            method,
            raw_path: path,
            raw_query: query,
            headers,
        };
        let Some(Auth::V4(auth)) = sigv4::parse(&parts).map_err(|e| e.code)? else {
            panic!("a signed request must parse as SigV4");
        };
        sigv4::check_time(&auth, now_ms).map_err(|e| e.code)?;
        sigv4::verify(&auth, &parts, secret, "us-east-1").map_err(|e| e.code)?;
        Ok(())
    }

    /// The AWS S3 API Reference example "GET Bucket Lifecycle" signs the same three headers we
    /// do, so our signer must reproduce its documented signature exactly.
    #[test]
    fn matches_the_aws_lifecycle_example() {
        let mut signer = Signer::new(AKID, SECRET, "us-east-1", "examplebucket.s3.amazonaws.com");
        let s = signer.sign("GET", "/", "lifecycle", EMPTY_SHA256_HEX, EXAMPLE_MS);
        assert_eq!(s.amz_date, "20130524T000000Z");
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    /// Requests shaped like the ones the workloads send pass the server's verifier, and the
    /// same request under another secret or with a tampered path does not.
    #[test]
    fn server_verifier_accepts_what_we_sign() {
        let host = "127.0.0.1:19000";
        let now = EXAMPLE_MS + 86_400_000 * 4000 + 12_345;
        let mut signer = Signer::new(AKID, SECRET, "us-east-1", host);
        let cases = [
            ("PUT", "/hamster-bench/run/small/3/17", "", UNSIGNED_PAYLOAD),
            ("GET", "/hamster-bench/run/large/0/0", "", EMPTY_SHA256_HEX),
            ("HEAD", "/hamster-bench/k", "", EMPTY_SHA256_HEX),
            ("DELETE", "/hamster-bench/k", "", EMPTY_SHA256_HEX),
            ("PUT", "/hamster-bench", "", UNSIGNED_PAYLOAD),
            (
                "GET",
                "/hamster-bench",
                "list-type=2&max-keys=1000&prefix=run%2Flist%2F&continuation-token=a%2Bb%3D",
                EMPTY_SHA256_HEX,
            ),
        ];
        for (method, path, query, hash) in cases {
            let s = signer.sign(method, path, query, hash, now);
            let headers = wire_headers(host, &s);
            assert_eq!(
                server_verifies(method, path, query, &headers, SECRET, now),
                Ok(()),
                "{method} {path}?{query}"
            );
            assert_eq!(
                server_verifies(method, path, query, &headers, "wrong-secret", now),
                Err(S3ErrorCode::SignatureDoesNotMatch)
            );
            assert_eq!(
                server_verifies(method, "/hamster-bench/other", query, &headers, SECRET, now),
                Err(S3ErrorCode::SignatureDoesNotMatch)
            );
        }
    }

    /// The cached day key is replaced when the date changes, and matches the protocol crate's
    /// own client signer on both days.
    #[test]
    fn day_key_follows_the_date() {
        let host = "s3.example:9000";
        let mut signer = Signer::new(AKID, SECRET, "eu-west-1", host);
        let creds = sigv4::ClientCredentials {
            access_key: AKID,
            secret: SECRET,
            region: "eu-west-1",
        };
        for now in [EXAMPLE_MS, EXAMPLE_MS + 86_400_000, EXAMPLE_MS + 86_400_001] {
            let s = signer.sign("GET", "/b/k", "", EMPTY_SHA256_HEX, now);
            let headers = wire_headers(host, &s)[..3].to_vec();
            let parts = RequestParts {
                method: "GET",
                raw_path: "/b/k",
                raw_query: "",
                headers: &headers,
            };
            let expected = sigv4::sign_headers(&parts, EMPTY_SHA256_HEX, &creds, &s.amz_date);
            assert_eq!(s.authorization, expected);
        }
    }
}
