//! The additional object checksums S3 defines (CRC32, CRC32C, CRC64/NVME, SHA-1, SHA-256):
//! naming them from headers and algorithm values, computing them incrementally over a body,
//! validating the base64 values clients send, and combining part checksums into the composite
//! checksum of a multipart object. The SHA-1 used here and by legacy SigV2 signing lives here
//! too, as the `sha1` module.

use base64::Engine;
use sha2::Digest;

use crate::s3err::{S3Error, S3ErrorCode};

/// An additional checksum algorithm S3 accepts on uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChecksumAlgo {
    /// CRC-32 (ISO-HDLC, the zlib one).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl ChecksumAlgo {
    /// Every algorithm, in the order headers are looked for.
    pub const ALL: [ChecksumAlgo; 5] = [
        ChecksumAlgo::Crc32,
        ChecksumAlgo::Crc32c,
        ChecksumAlgo::Crc64Nvme,
        ChecksumAlgo::Sha1,
        ChecksumAlgo::Sha256,
    ];

    /// The lowercase name used in header names and as the key of stored checksums
    /// (`crc32`, `crc32c`, `crc64nvme`, `sha1`, `sha256`).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Crc32 => "crc32",
            ChecksumAlgo::Crc32c => "crc32c",
            ChecksumAlgo::Crc64Nvme => "crc64nvme",
            ChecksumAlgo::Sha1 => "sha1",
            ChecksumAlgo::Sha256 => "sha256",
        }
    }

    /// The name as S3 spells it in algorithm headers and error messages (`CRC32`, …).
    pub fn upper_name(self) -> &'static str {
        match self {
            ChecksumAlgo::Crc32 => "CRC32",
            ChecksumAlgo::Crc32c => "CRC32C",
            ChecksumAlgo::Crc64Nvme => "CRC64NVME",
            ChecksumAlgo::Sha1 => "SHA1",
            ChecksumAlgo::Sha256 => "SHA256",
        }
    }

    /// The header that carries this checksum's value (`x-amz-checksum-crc32`, …).
    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgo::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgo::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgo::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgo::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgo::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// Length of the raw (decoded) checksum in bytes.
    pub fn raw_len(self) -> usize {
        match self {
            ChecksumAlgo::Crc32 | ChecksumAlgo::Crc32c => 4,
            ChecksumAlgo::Crc64Nvme => 8,
            ChecksumAlgo::Sha1 => 20,
            ChecksumAlgo::Sha256 => 32,
        }
    }

    /// The algorithm whose value header is `name` (any case); `None` for other headers.
    pub fn from_header(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header_name().eq_ignore_ascii_case(name.trim()))
    }

    /// The algorithm named by an `x-amz-checksum-algorithm` or `x-amz-sdk-checksum-algorithm`
    /// value (`CRC32`, `crc64nvme`, …; any case).
    pub fn from_algorithm(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.upper_name().eq_ignore_ascii_case(value.trim()))
    }
}

/// The message S3 gives when a checksum header's value cannot be its algorithm's checksum.
fn invalid_value(header: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidRequest,
        format!("Value for {header} header is invalid."),
    )
}

/// Checks that `value` is well-formed base64 of the right length for `algo` and returns the raw
/// bytes. Anything else is `InvalidRequest` naming the header, as S3 answers.
pub fn validate_b64(algo: ChecksumAlgo, value: &str) -> Result<Vec<u8>, S3Error> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| invalid_value(algo.header_name()))?;
    if raw.len() != algo.raw_len() {
        return Err(invalid_value(algo.header_name()));
    }
    Ok(raw)
}

/// Base64 of raw checksum bytes, as S3 shows checksums.
pub fn to_b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A running checksum over a body, fed in pieces.
pub struct Checksummer {
    algo: ChecksumAlgo,
    state: State,
}

enum State {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64(Crc64Nvme),
    Sha1(Box<sha1::Sha1>),
    Sha256(Box<sha2::Sha256>),
}

impl Checksummer {
    /// A checksum of nothing yet.
    pub fn new(algo: ChecksumAlgo) -> Self {
        let state = match algo {
            ChecksumAlgo::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgo::Crc32c => State::Crc32c(0),
            ChecksumAlgo::Crc64Nvme => State::Crc64(Crc64Nvme::new()),
            ChecksumAlgo::Sha1 => State::Sha1(Box::default()),
            ChecksumAlgo::Sha256 => State::Sha256(Box::default()),
        };
        Checksummer { algo, state }
    }

    /// The algorithm being computed.
    pub fn algo(&self) -> ChecksumAlgo {
        self.algo
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Crc32(h) => h.update(data),
            State::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            State::Crc64(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
        }
    }

    /// The checksum's raw bytes (big-endian for the CRCs, as S3 encodes them).
    pub fn finish(self) -> Vec<u8> {
        let raw = match self.state {
            State::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            State::Crc32c(c) => c.to_be_bytes().to_vec(),
            State::Crc64(h) => h.finish().to_be_bytes().to_vec(),
            State::Sha1(h) => h.finish().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
        };
        debug_assert_eq!(raw.len(), self.algo.raw_len());
        raw
    }

    /// The checksum in base64, as S3 shows it.
    pub fn finish_b64(self) -> String {
        to_b64(&self.finish())
    }
}

/// The checksum of `data` in one call, base64.
pub fn checksum_b64(algo: ChecksumAlgo, data: &[u8]) -> String {
    let mut c = Checksummer::new(algo);
    c.update(data);
    c.finish_b64()
}

/// The composite checksum of a multipart object: the checksum of the concatenated raw part
/// checksums, in base64, followed by `-N` for N parts. Each part checksum is base64 and must be
/// valid for `algo`.
pub fn composite_b64(algo: ChecksumAlgo, parts_b64: &[&str]) -> Result<String, S3Error> {
    let mut c = Checksummer::new(algo);
    for part in parts_b64 {
        c.update(&validate_b64(algo, part)?);
    }
    Ok(format!("{}-{}", c.finish_b64(), parts_b64.len()))
}

/// How an upload declared its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The algorithm.
    pub algo: ChecksumAlgo,
    /// Where the expected value comes from.
    pub value: DeclaredValue,
}

/// Where the expected value of a declared checksum is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclaredValue {
    /// In a header, already validated; base64 as sent (trimmed).
    Header(String),
    /// In the aws-chunked trailer named by `x-amz-trailer`; it arrives after the body.
    Trailer,
    /// Only the algorithm was named (`x-amz-sdk-checksum-algorithm` or
    /// `x-amz-checksum-algorithm`): the server computes and stores the value.
    Compute,
}

/// Finds the checksum an upload declares from its headers (lowercase names): at most one
/// `x-amz-checksum-*` value header, or a checksum trailer, or an algorithm name alone. Two
/// different value headers, an unknown algorithm, or an algorithm that disagrees with the value
/// header sent are `InvalidRequest`; a malformed value is `InvalidRequest` naming its header.
pub fn declared<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<Declared>, S3Error> {
    let mut value: Option<(ChecksumAlgo, String)> = None;
    let mut trailer = None;
    let mut named = None;
    for (name, v) in headers {
        if let Some(a) = ChecksumAlgo::from_header(name) {
            if value.as_ref().is_some_and(|(b, _)| *b != a) {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            validate_b64(a, v)?;
            value = Some((a, v.trim().to_string()));
        } else if name.eq_ignore_ascii_case("x-amz-trailer") {
            trailer = v.split(',').find_map(ChecksumAlgo::from_header).or(trailer);
        } else if name.eq_ignore_ascii_case("x-amz-sdk-checksum-algorithm")
            || name.eq_ignore_ascii_case("x-amz-checksum-algorithm")
        {
            let a = ChecksumAlgo::from_algorithm(v).ok_or_else(|| {
                invalid_value(if name.eq_ignore_ascii_case("x-amz-checksum-algorithm") {
                    "x-amz-checksum-algorithm"
                } else {
                    "x-amz-sdk-checksum-algorithm"
                })
            })?;
            named = Some(a);
        }
    }
    let sent = value.as_ref().map(|(a, _)| *a).or(trailer);
    if let (Some(n), Some(s)) = (named, sent) {
        if n != s {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "the checksum algorithm {} does not match the {} checksum sent",
                    n.upper_name(),
                    s.upper_name()
                ),
            ));
        }
    }
    Ok(match (value, trailer, named) {
        (Some((algo, v)), _, _) => Some(Declared {
            algo,
            value: DeclaredValue::Header(v),
        }),
        (None, Some(algo), _) => Some(Declared {
            algo,
            value: DeclaredValue::Trailer,
        }),
        (None, None, Some(algo)) => Some(Declared {
            algo,
            value: DeclaredValue::Compute,
        }),
        (None, None, None) => None,
    })
}

/// The mismatch S3 reports when a declared checksum differs from the body's.
pub fn mismatch(algo: ChecksumAlgo) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        format!(
            "The {} you specified did not match the calculated checksum.",
            algo.upper_name()
        ),
    )
}

/// The CRC-64/NVME generator polynomial in normal (MSB-first) form.
const CRC64_NVME_POLY: u64 = 0xAD93_D235_94C9_3659;

/// Byte-at-a-time table for the reflected CRC-64/NVME, built at compile time.
const CRC64_NVME_TABLE: [u64; 256] = {
    let poly = CRC64_NVME_POLY.reverse_bits();
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ poly
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// A running CRC-64/NVME (reflected in and out, initial value and final XOR all ones).
#[derive(Debug, Clone, Copy)]
pub struct Crc64Nvme(u64);

impl Default for Crc64Nvme {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64Nvme {
    /// The CRC of nothing yet.
    pub fn new() -> Self {
        Crc64Nvme(u64::MAX)
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut crc = self.0;
        for b in data {
            crc = CRC64_NVME_TABLE[((crc ^ u64::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    /// The CRC value.
    pub fn finish(self) -> u64 {
        self.0 ^ u64::MAX
    }
}

/// SHA-1 (FIPS 180-4) and HMAC-SHA1 (RFC 2104), written here rather than pulled in as a
/// dependency: S3 offers SHA-1 as an object checksum and legacy SigV2 signs with HMAC-SHA1.
pub mod sha1 {
    const BLOCK: usize = 64;
    const INIT: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];

    fn compress(state: &mut [u32; 5], block: &[u8]) {
        debug_assert_eq!(block.len(), BLOCK);
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = *state;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i / 20 {
                0 => ((b & c) | (!b & d), 0x5A82_7999),
                1 => (b ^ c ^ d, 0x6ED9_EBA1),
                2 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e]) {
            *s = s.wrapping_add(v);
        }
    }

    /// An incremental SHA-1: whole blocks are compressed as they fill, so memory stays one
    /// block whatever the input length.
    #[derive(Debug, Clone)]
    pub struct Sha1 {
        state: [u32; 5],
        buf: [u8; BLOCK],
        buf_len: usize,
        total_bytes: u64,
    }

    impl Default for Sha1 {
        fn default() -> Self {
            Sha1 {
                state: INIT,
                buf: [0; BLOCK],
                buf_len: 0,
                total_bytes: 0,
            }
        }
    }

    impl Sha1 {
        /// Feeds bytes.
        pub fn update(&mut self, mut data: &[u8]) {
            self.total_bytes = self.total_bytes.wrapping_add(data.len() as u64);
            if self.buf_len > 0 {
                let take = (BLOCK - self.buf_len).min(data.len());
                self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
                self.buf_len += take;
                data = &data[take..];
                if self.buf_len < BLOCK {
                    return;
                }
                let block = self.buf;
                compress(&mut self.state, &block);
                self.buf_len = 0;
            }
            let mut blocks = data.chunks_exact(BLOCK);
            for block in &mut blocks {
                compress(&mut self.state, block);
            }
            let rest = blocks.remainder();
            self.buf[..rest.len()].copy_from_slice(rest);
            self.buf_len = rest.len();
        }

        /// The 20-byte digest.
        pub fn finish(mut self) -> [u8; 20] {
            let bit_len = self.total_bytes.wrapping_mul(8);
            let mut tail = vec![0x80u8];
            while (self.buf_len + tail.len()) % BLOCK != 56 {
                tail.push(0);
            }
            tail.extend_from_slice(&bit_len.to_be_bytes());
            // The length was fixed above; the padding only completes the last block.
            self.update(&tail);
            debug_assert_eq!(self.buf_len, 0);
            let mut out = [0u8; 20];
            for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            out
        }
    }

    /// SHA-1 of the concatenation of `parts`.
    pub fn digest(parts: &[&[u8]]) -> [u8; 20] {
        let mut h = Sha1::default();
        for p in parts {
            h.update(p);
        }
        h.finish()
    }

    /// HMAC-SHA1 (RFC 2104).
    pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
        let mut padded = [0u8; BLOCK];
        if key.len() > BLOCK {
            padded[..20].copy_from_slice(&digest(&[key]));
        } else {
            padded[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = padded.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = padded.iter().map(|b| b ^ 0x5c).collect();
        let inner = digest(&[&ipad, data]);
        digest(&[&opad, &inner])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &[u8] = b"123456789";

    fn raw_of(algo: ChecksumAlgo, data: &[u8]) -> Vec<u8> {
        let mut c = Checksummer::new(algo);
        c.update(data);
        c.finish()
    }

    #[test]
    fn crc_check_values_from_the_crc_catalogue() {
        assert_eq!(
            raw_of(ChecksumAlgo::Crc32, CHECK),
            0xCBF4_3926u32.to_be_bytes()
        );
        assert_eq!(
            raw_of(ChecksumAlgo::Crc32c, CHECK),
            0xE306_9283u32.to_be_bytes()
        );
        assert_eq!(
            raw_of(ChecksumAlgo::Crc64Nvme, CHECK),
            0xAE8B_1486_0A79_9888u64.to_be_bytes()
        );
        // The residue and the empty input fall out of init = xorout = all ones.
        assert_eq!(raw_of(ChecksumAlgo::Crc64Nvme, b""), [0u8; 8]);
    }

    #[test]
    fn digests_match_fips_vectors() {
        assert_eq!(
            hex::encode(raw_of(ChecksumAlgo::Sha1, b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(raw_of(ChecksumAlgo::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha1::digest(&[b""])),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            hex::encode(sha1::digest(&[long])),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        // FIPS 180-2 appendix A.3: one million 'a'.
        let mut h = sha1::Sha1::default();
        for _ in 0..1000 {
            h.update(&[b'a'; 1000]);
        }
        assert_eq!(
            hex::encode(h.finish()),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
        // RFC 2202 test case 2.
        assert_eq!(
            hex::encode(sha1::hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn incremental_equals_one_shot_for_every_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for algo in ChecksumAlgo::ALL {
            let whole = raw_of(algo, &data);
            for split in [0, 1, 55, 63, 64, 65, 128, 299, 300] {
                let mut c = Checksummer::new(algo);
                c.update(&data[..split]);
                c.update(&data[split..]);
                assert_eq!(c.finish(), whole, "{algo:?} split at {split}");
            }
        }
    }

    #[test]
    fn base64_values_as_s3_shows_them() {
        assert_eq!(checksum_b64(ChecksumAlgo::Crc32, b""), "AAAAAA==");
        assert_eq!(
            checksum_b64(ChecksumAlgo::Crc32, b"hello world"),
            "DUoRhQ=="
        );
        assert_eq!(checksum_b64(ChecksumAlgo::Crc64Nvme, b""), "AAAAAAAAAAA=");
        assert_eq!(
            checksum_b64(ChecksumAlgo::Sha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            checksum_b64(ChecksumAlgo::Sha1, b""),
            "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
        );
    }

    #[test]
    fn names_round_trip() {
        for algo in ChecksumAlgo::ALL {
            assert_eq!(ChecksumAlgo::from_header(algo.header_name()), Some(algo));
            assert_eq!(ChecksumAlgo::from_algorithm(algo.upper_name()), Some(algo));
            assert_eq!(ChecksumAlgo::from_algorithm(algo.name()), Some(algo));
            assert_eq!(
                algo.header_name(),
                format!("x-amz-checksum-{}", algo.name())
            );
        }
        assert_eq!(
            ChecksumAlgo::from_header("X-Amz-Checksum-CRC32C"),
            Some(ChecksumAlgo::Crc32c)
        );
        assert_eq!(ChecksumAlgo::from_header("x-amz-checksum-mode"), None);
        assert_eq!(ChecksumAlgo::from_algorithm("MD5"), None);
    }

    #[test]
    fn validation_checks_base64_and_length() {
        assert!(validate_b64(ChecksumAlgo::Crc32, "DUoRhQ==").is_ok());
        for bad in ["DUoRhQ", "not base64!", "AAAAAAAAAAA=", ""] {
            let e = validate_b64(ChecksumAlgo::Crc32, bad).unwrap_err();
            assert_eq!(e.code, S3ErrorCode::InvalidRequest);
            assert_eq!(
                e.message(),
                "Value for x-amz-checksum-crc32 header is invalid."
            );
        }
        assert!(validate_b64(ChecksumAlgo::Sha256, "DUoRhQ==").is_err());
    }

    #[test]
    fn composite_is_checksum_of_raw_part_checksums() {
        let a = checksum_b64(ChecksumAlgo::Crc32, b"part one");
        let b = checksum_b64(ChecksumAlgo::Crc32, b"part two");
        let mut raw = raw_of(ChecksumAlgo::Crc32, b"part one");
        raw.extend(raw_of(ChecksumAlgo::Crc32, b"part two"));
        let expected = format!("{}-2", checksum_b64(ChecksumAlgo::Crc32, &raw));
        assert_eq!(
            composite_b64(ChecksumAlgo::Crc32, &[&a, &b]).unwrap(),
            expected
        );
        assert!(composite_b64(ChecksumAlgo::Sha256, &[&a]).is_err());
    }

    #[test]
    fn declared_checksums() {
        let d = |h: &[(&'static str, &'static str)]| declared(h.iter().copied());
        assert_eq!(d(&[("content-type", "x")]).unwrap(), None);
        assert_eq!(
            d(&[("x-amz-checksum-crc32", "DUoRhQ==")]).unwrap(),
            Some(Declared {
                algo: ChecksumAlgo::Crc32,
                value: DeclaredValue::Header("DUoRhQ==".into())
            })
        );
        assert_eq!(
            d(&[
                ("x-amz-sdk-checksum-algorithm", "CRC32C"),
                ("x-amz-trailer", "x-amz-checksum-crc32c")
            ])
            .unwrap()
            .map(|x| (x.algo, x.value)),
            Some((ChecksumAlgo::Crc32c, DeclaredValue::Trailer))
        );
        assert_eq!(
            d(&[("x-amz-sdk-checksum-algorithm", "sha1")])
                .unwrap()
                .map(|x| (x.algo, x.value)),
            Some((ChecksumAlgo::Sha1, DeclaredValue::Compute))
        );
        let two = d(&[
            ("x-amz-checksum-crc32", "DUoRhQ=="),
            ("x-amz-checksum-crc32c", "DUoRhQ=="),
        ])
        .unwrap_err();
        assert_eq!(two.code, S3ErrorCode::InvalidRequest);
        let bad = d(&[("x-amz-checksum-sha256", "DUoRhQ==")]).unwrap_err();
        assert_eq!(
            bad.message(),
            "Value for x-amz-checksum-sha256 header is invalid."
        );
        assert!(d(&[("x-amz-sdk-checksum-algorithm", "MD5")]).is_err());
        assert!(d(&[
            ("x-amz-sdk-checksum-algorithm", "SHA256"),
            ("x-amz-checksum-crc32", "DUoRhQ==")
        ])
        .is_err());
    }

    #[test]
    fn mismatch_message_names_the_algorithm() {
        assert_eq!(
            mismatch(ChecksumAlgo::Crc32).message(),
            "The CRC32 you specified did not match the calculated checksum."
        );
        assert_eq!(mismatch(ChecksumAlgo::Crc32).code, S3ErrorCode::BadDigest);
    }
}
