//! The join token: what `hamster token` prints and what a new node is started with. It names
//! the cluster, pins the cluster CA by its SHA-256 (the joiner trusts nothing the cluster says
//! until the CA it presents hashes to this), lists members to contact, and carries a one-time
//! secret. The cluster stores only the secret's SHA-256, so a leaked metadata store mints no
//! joins, and it remembers a used secret so a token joins at most one node.
//!
//! Text form: `hamster-join-<version>.` followed by the URL-safe, unpadded base64 of a compact
//! binary body that ends in a CRC-32 of the rest. The CRC catches every single-character typo
//! (one base64 character spans at most two bytes, well inside the burst CRC-32 always detects),
//! so a mistyped token is reported as mistyped rather than as forged.
//!
//! Body, version 1: `version u8 | expires_ms u64 BE | ca_sha256 [32] | secret [32] |
//! cluster_id (varint length, UTF-8) | address count (varint) | each address (varint length,
//! UTF-8) | crc32 u32 BE`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What every token's text starts with, before its version number.
pub const TOKEN_PREFIX: &str = "hamster-join-";
/// The token format this build writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Longest token text accepted, so decoding a pasted blob does bounded work.
pub const TOKEN_CHARS_MAX: usize = 8192;
/// Shortest lifetime a token may be given.
pub const TTL_MIN_MS: u64 = 1_000;
/// Longest lifetime a token may be given: a week.
pub const TTL_MAX_MS: u64 = 7 * 24 * 3_600_000;
/// Lifetime when none is asked for.
pub const TTL_DEFAULT_MS: u64 = 3_600_000;

/// Bytes of the fixed part of the body: version, expiry, CA hash, secret.
const FIXED_BYTES: usize = 1 + 8 + 32 + 32;
/// Bytes of the trailing CRC.
const CRC_BYTES: usize = 4;

/// A decoded join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Format version; [`TOKEN_VERSION`] for tokens this build mints.
    pub version: u8,
    /// The cluster the token admits to.
    pub cluster_id: String,
    /// SHA-256 of the cluster CA certificate (DER): the joiner's only trust anchor.
    pub ca_sha256: [u8; 32],
    /// Members' cluster addresses, where the joiner may knock.
    pub addrs: Vec<String>,
    /// The one-time secret; the cluster knows only its SHA-256.
    pub secret: [u8; 32],
    /// After this Unix time (milliseconds) the token admits nobody.
    pub expires_ms: u64,
}

impl fmt::Debug for JoinToken {
    // The secret must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("version", &self.version)
            .field("cluster_id", &self.cluster_id)
            .field("ca_sha256", &hex::encode(self.ca_sha256))
            .field("addrs", &self.addrs)
            .field("secret", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Why a token was not accepted. Each message says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not start like a join token.
    #[error("this is not a Hamster join token (those start with {TOKEN_PREFIX}); pass the whole token `hamster token` printed")]
    NotAToken,
    /// The text starts like a token but does not decode or its CRC does not match.
    #[error("the join token is damaged or mistyped; copy it again exactly as `hamster token` printed it")]
    Damaged,
    /// A token format this build does not know.
    #[error("join token format {0} is not known to this hamster; run the same hamster version as the cluster")]
    UnknownVersion(u32),
    /// The token's lifetime is over.
    #[error("the join token expired; mint a new one with `hamster token` on a cluster member")]
    Expired {
        /// When it expired, Unix milliseconds.
        expires_ms: u64,
    },
    /// The token pins a CA other than the one the cluster presented.
    #[error("the join token belongs to another cluster (its pinned CA does not match); use a token minted by this cluster")]
    OtherCluster,
}

impl JoinToken {
    /// A token of the current format.
    pub fn new(
        cluster_id: String,
        ca_sha256: [u8; 32],
        addrs: Vec<String>,
        secret: [u8; 32],
        expires_ms: u64,
    ) -> Self {
        JoinToken {
            version: TOKEN_VERSION,
            cluster_id,
            ca_sha256,
            addrs,
            secret,
            expires_ms,
        }
    }

    /// The token's text form.
    pub fn encode(&self) -> String {
        let mut body = Vec::with_capacity(FIXED_BYTES + 64 + CRC_BYTES);
        body.push(self.version);
        body.extend_from_slice(&self.expires_ms.to_be_bytes());
        body.extend_from_slice(&self.ca_sha256);
        body.extend_from_slice(&self.secret);
        put_str(&mut body, &self.cluster_id);
        put_varint(&mut body, self.addrs.len() as u64);
        for a in &self.addrs {
            put_str(&mut body, a);
        }
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        format!(
            "{TOKEN_PREFIX}{}.{}",
            self.version,
            URL_SAFE_NO_PAD.encode(&body)
        )
    }

    /// Reads a token's text form (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let text = text.trim();
        let rest = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::NotAToken)?;
        if text.len() > TOKEN_CHARS_MAX {
            return Err(TokenError::Damaged);
        }
        let (version, encoded) = rest.split_once('.').ok_or(TokenError::Damaged)?;
        // Digits only, and no leading zero (which would let two texts name one version).
        if version.is_empty()
            || !version.bytes().all(|b| b.is_ascii_digit())
            || (version.len() > 1 && version.starts_with('0'))
        {
            return Err(TokenError::Damaged);
        }
        let version: u32 = version.parse().map_err(|_| TokenError::Damaged)?;
        if version != u32::from(TOKEN_VERSION) {
            return Err(TokenError::UnknownVersion(version));
        }
        let body = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TokenError::Damaged)?;
        let split = body
            .len()
            .checked_sub(CRC_BYTES)
            .ok_or(TokenError::Damaged)?;
        let (payload, crc) = body.split_at(split);
        let crc = u32::from_be_bytes(crc.try_into().map_err(|_| TokenError::Damaged)?);
        if crc32fast::hash(payload) != crc {
            return Err(TokenError::Damaged);
        }
        let mut r = Reader(payload);
        let body_version = r.byte()?;
        if u32::from(body_version) != version {
            return Err(TokenError::Damaged);
        }
        let expires_ms = u64::from_be_bytes(r.array()?);
        let ca_sha256 = r.array()?;
        let secret = r.array()?;
        let cluster_id = r.string()?;
        let count = r.varint()?;
        let mut addrs = Vec::new();
        for _ in 0..count {
            addrs.push(r.string()?);
        }
        if !r.0.is_empty() {
            return Err(TokenError::Damaged);
        }
        Ok(JoinToken {
            version: body_version,
            cluster_id,
            ca_sha256,
            addrs,
            secret,
            expires_ms,
        })
    }

    /// SHA-256 of the secret: all the cluster stores of it.
    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }

    /// [`JoinToken::secret_hash`] as 64 lowercase hex digits (the Raft state's key).
    pub fn secret_hash_hex(&self) -> String {
        hex::encode(self.secret_hash())
    }

    /// Refuses a token whose lifetime is over at `now_ms` (Unix milliseconds).
    pub fn check_fresh(&self, now_ms: u64) -> Result<(), TokenError> {
        if now_ms >= self.expires_ms {
            return Err(TokenError::Expired {
                expires_ms: self.expires_ms,
            });
        }
        Ok(())
    }

    /// Refuses a token that does not pin `ca_sha256`, the hash of the CA a cluster presented.
    pub fn check_ca(&self, ca_sha256: &[u8; 32]) -> Result<(), TokenError> {
        if &self.ca_sha256 != ca_sha256 {
            return Err(TokenError::OtherCluster);
        }
        Ok(())
    }
}

/// Why a token lifetime was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Not a number followed by `s`, `m`, `h` or `d`.
    #[error("token lifetime {0:?} is not a duration; use a number with s, m, h or d, e.g. 30m, 1h or 24h")]
    Syntax(String),
    /// Shorter than [`TTL_MIN_MS`].
    #[error("token lifetime {0:?} is too short; give it at least 1s (e.g. 30m or 1h)")]
    TooShort(String),
    /// Longer than [`TTL_MAX_MS`].
    #[error("token lifetime {0:?} is too long; the most is 7d (168h)")]
    TooLong(String),
}

/// Parses a token lifetime such as `30m`, `1h`, `24h` or `7d` into milliseconds, within
/// [`TTL_MIN_MS`]..=[`TTL_MAX_MS`].
pub fn parse_ttl(text: &str) -> Result<u64, TtlError> {
    let t = text.trim();
    let well_formed = t.len() > 1
        && t.ends_with(['s', 'm', 'h', 'd'])
        && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(TtlError::Syntax(text.to_string()));
    }
    // Anything with more digits than fit is certainly too long.
    let ms = crate::time::parse_duration_ms(t);
    check_ttl(ms.unwrap_or(u64::MAX)).map_err(|e| match e {
        TtlError::TooShort(_) => TtlError::TooShort(text.to_string()),
        _ => TtlError::TooLong(text.to_string()),
    })
}

/// Checks a lifetime in milliseconds against [`TTL_MIN_MS`]..=[`TTL_MAX_MS`] (the node checks
/// what a control request asks for, whoever sent it).
pub fn check_ttl(ms: u64) -> Result<u64, TtlError> {
    if ms < TTL_MIN_MS {
        return Err(TtlError::TooShort(format!("{ms}ms")));
    }
    if ms > TTL_MAX_MS {
        return Err(TtlError::TooLong(format!("{ms}ms")));
    }
    Ok(ms)
}

/// A lifetime in the largest unit that states it exactly: `90m`, `1h`, `7d`.
pub fn format_ttl(ms: u64) -> String {
    for (unit, unit_ms) in [("d", 24 * 3_600_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms >= unit_ms && ms.is_multiple_of(unit_ms) {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    format!("{}s", ms / 1_000)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over a body that has passed its CRC; any shortfall is still damage.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Damaged);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        self.take(N)?.try_into().map_err(|_| TokenError::Damaged)
    }

    fn varint(&mut self) -> Result<u64, TokenError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(TokenError::Damaged)
    }

    fn string(&mut self) -> Result<String, TokenError> {
        let len = usize::try_from(self.varint()?).map_err(|_| TokenError::Damaged)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken::new(
            "c0ffee00-1234-4abc-8def-0123456789ab".into(),
            [0xca; 32],
            vec!["127.0.0.1:9400".into(), "10.0.0.2:9400".into()],
            [7; 32],
            1_700_000_000_000,
        )
    }

    #[test]
    fn round_trip() {
        let t = token();
        let text = t.encode();
        assert!(text.starts_with("hamster-join-1."), "{text}");
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(JoinToken::decode(&text), Ok(t.clone()));
        assert_eq!(JoinToken::decode(&format!("  {text}\n")), Ok(t));
        let empty = JoinToken::new(String::new(), [0; 32], vec![], [0; 32], 0);
        assert_eq!(JoinToken::decode(&empty.encode()), Ok(empty));
    }

    /// Every single-character substitution, anywhere in the text, is refused.
    #[test]
    fn every_single_character_corruption_is_detected() {
        let text = token().encode();
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/= "
                .chars()
                .collect();
        for (i, original) in text.char_indices() {
            for &c in &alphabet {
                if c == original {
                    continue;
                }
                let mut bad = text.clone();
                bad.replace_range(i..i + 1, &c.to_string());
                assert!(
                    JoinToken::decode(&bad).is_err(),
                    "position {i}: {original:?} -> {c:?} was accepted"
                );
            }
        }
        // Dropping or doubling a character is refused too.
        for i in 0..text.len() {
            let mut short = text.clone();
            short.remove(i);
            assert!(JoinToken::decode(&short).is_err(), "dropped {i}");
            let mut long = text.clone();
            long.insert(i, text.as_bytes()[i] as char);
            assert!(JoinToken::decode(&long).is_err(), "doubled {i}");
        }
    }

    /// Damage in the body is reported as such, not as "not a token".
    #[test]
    fn body_typos_say_damaged() {
        let text = token().encode();
        let i = text.len() - 10;
        let mut bad = text.clone();
        let c = if &text[i..=i] == "A" { "B" } else { "A" };
        bad.replace_range(i..=i, c);
        assert_eq!(JoinToken::decode(&bad), Err(TokenError::Damaged));
        assert_eq!(
            JoinToken::decode(&text[..text.len() - 1]),
            Err(TokenError::Damaged)
        );
    }

    #[test]
    fn foreign_text_and_versions() {
        for s in [
            "",
            "hello",
            "HKABCDEF",
            "hamster-join",
            "hamster-joint-1.AAAA",
        ] {
            assert_eq!(JoinToken::decode(s), Err(TokenError::NotAToken), "{s:?}");
        }
        let text = token().encode();
        let v2 = text.replacen("hamster-join-1.", "hamster-join-2.", 1);
        assert_eq!(JoinToken::decode(&v2), Err(TokenError::UnknownVersion(2)));
        let padded = text.replacen("hamster-join-1.", "hamster-join-01.", 1);
        assert_eq!(JoinToken::decode(&padded), Err(TokenError::Damaged));
        let huge = format!("hamster-join-1.{}", "A".repeat(TOKEN_CHARS_MAX));
        assert_eq!(JoinToken::decode(&huge), Err(TokenError::Damaged));
        // A body claiming another version than its text is damage, whatever its CRC.
        let mut other = token();
        other.version = 9;
        let relabelled = other
            .encode()
            .replacen("hamster-join-9.", "hamster-join-1.", 1);
        assert_eq!(JoinToken::decode(&relabelled), Err(TokenError::Damaged));
    }

    #[test]
    fn expiry() {
        let t = token();
        assert_eq!(t.check_fresh(t.expires_ms - 1), Ok(()));
        let expired = Err(TokenError::Expired {
            expires_ms: t.expires_ms,
        });
        assert_eq!(t.check_fresh(t.expires_ms), expired);
        assert_eq!(t.check_fresh(u64::MAX), expired);
    }

    /// A token minted by another cluster decodes fine but does not pin this cluster's CA.
    #[test]
    fn another_clusters_token_is_told_apart() {
        let ours = token();
        let mut theirs = token();
        theirs.ca_sha256 = [0xcb; 32];
        let theirs = JoinToken::decode(&theirs.encode()).unwrap();
        assert_eq!(ours.check_ca(&[0xca; 32]), Ok(()));
        assert_eq!(theirs.check_ca(&[0xca; 32]), Err(TokenError::OtherCluster));
    }

    #[test]
    fn secret_hash_is_sha256_and_debug_hides_the_secret() {
        let t = token();
        assert_eq!(t.secret_hash(), <[u8; 32]>::from(Sha256::digest([7u8; 32])));
        assert_eq!(t.secret_hash_hex().len(), 64);
        let mut other = token();
        other.secret = [8; 32];
        assert_ne!(t.secret_hash(), other.secret_hash());
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&hex::encode([7u8; 32])));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("30m"), Ok(30 * 60_000));
        assert_eq!(parse_ttl("1h"), Ok(3_600_000));
        assert_eq!(parse_ttl("24h"), Ok(24 * 3_600_000));
        assert_eq!(parse_ttl("7d"), Ok(TTL_MAX_MS));
        assert_eq!(parse_ttl("168h"), Ok(TTL_MAX_MS));
        assert_eq!(parse_ttl("45s"), Ok(45_000));
        for bad in ["", "h", "1", "1 h", "-1h", "1.5h", "1H", "soon", "1h30m"] {
            assert!(
                matches!(parse_ttl(bad), Err(TtlError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse_ttl("0s"), Err(TtlError::TooShort(_))));
        assert!(matches!(parse_ttl("0h"), Err(TtlError::TooShort(_))));
        assert!(matches!(parse_ttl("8d"), Err(TtlError::TooLong(_))));
        assert!(matches!(parse_ttl("169h"), Err(TtlError::TooLong(_))));
        assert!(matches!(
            parse_ttl("99999999999999999999d"),
            Err(TtlError::TooLong(_))
        ));
        assert_eq!(
            check_ttl(TTL_MAX_MS + 1),
            Err(TtlError::TooLong("604800001ms".into()))
        );
        assert_eq!(format_ttl(3_600_000), "1h");
        assert_eq!(format_ttl(90 * 60_000), "90m");
        assert_eq!(format_ttl(TTL_MAX_MS), "7d");
        assert_eq!(format_ttl(45_000), "45s");
    }
}
