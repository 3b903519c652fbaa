//! Robustness of every parser that reads bytes a client, a peer or a disk hands us.
//!
//! What this proves, parser by parser: arbitrary and hostile input (random bytes, and random
//! sequences of the format's own tokens, which reach far deeper than noise) never panics and
//! only ever yields the error values the module documents (the S3 code, or the format's error
//! enum); streaming parsers keep bounded state however much hostile input they are pushed;
//! where an encoder exists, decoding what it wrote gives back the original, and a single-byte
//! change to a valid encoding is either refused or decodes to something that encodes back to
//! the changed bytes (checksummed formats, signed chunk streams and signed requests must refuse
//! every change that alters their meaning); the XML readers hold their documented limits.
//!
//! How: proptest properties with bounded case counts (each runs in well under a few seconds in
//! a debug build), plus a few deterministic tests for limits and endless streams. Failures are
//! not persisted to a file; proptest prints the minimal failing input instead. Streaming parsers
//! expose no buffer sizes, so their retained state is measured through their `Debug` output,
//! which prints every buffer they hold.

use base64::Engine as _;
use hamster_protocol::checksum::{self, ChecksumAlgo};
use hamster_protocol::chunked::{
    encode_signed_chunks, encode_unsigned_trailer_chunks, ChunkSigning, ChunkedDecoder,
    LINE_BYTES_MAX, TRAILERS_MAX,
};
use hamster_protocol::form::{boundary_from_content_type, FormParser, FIELD_BYTES_MAX};
use hamster_protocol::listing::{decode_continuation, encode_continuation};
use hamster_protocol::meta::{Grant, ObjectId};
use hamster_protocol::names::{validate_bucket_name, validate_key, KEY_BYTES_MAX};
use hamster_protocol::post_policy::{
    decode_policy, parse_iso8601, Condition, CONDITIONS_MAX, POLICY_BYTES_MAX,
};
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::shard::{
    parse_shard_file_name, shard_file_name, ShardFormatError, ShardHeader, BLOCK_BYTES_MAX,
    DATA_BYTES_MAX, HEADER_BYTES, SHARD_MAGIC,
};
use hamster_protocol::sigv4::{
    self, canonical_query, canonical_uri, decode_query, presign_query, sign_headers, uri_encode,
    Auth, ClientCredentials, RequestParts, SigningContext,
};
use hamster_protocol::time::{amz_date, http_date, iso8601_ms, parse_amz_date, parse_http_date};
use hamster_protocol::token::{JoinToken, TokenError, TOKEN_PREFIX};
use hamster_protocol::wire::{
    decode_frame, decode_message, encode_frame, encode_message, ControlRequest, ControlResponse,
    StatusReport, WireError, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
use hamster_protocol::xml::{
    escape, parse_complete_multipart, parse_create_bucket, parse_delete_objects, DELETE_KEYS_MAX,
};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use S3ErrorCode::*;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Random sequences of `tokens` mixed with raw random bytes, concatenated.
fn soup(tokens: &'static [&'static str], pieces: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => select(tokens).prop_map(|t| t.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..6),
        ],
        0..pieces,
    )
    .prop_map(|v| v.concat())
}

/// Random sequences of `tokens` mixed with random characters, concatenated.
fn soup_str(tokens: &'static [&'static str], pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => select(tokens).prop_map(str::to_string),
            1 => prop::collection::vec(any::<char>(), 0..4)
                .prop_map(|c| c.into_iter().collect::<String>()),
        ],
        0..pieces,
    )
    .prop_map(|v| v.concat())
}

/// Sorted cut positions within `0..=len` from arbitrary numbers.
fn cut_points(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.push(len);
    points.sort_unstable();
    points
}

/// `input` split at the given cut positions.
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut last = 0;
    for c in cut_points(input.len(), cuts) {
        out.push(&input[last..c]);
        last = c;
    }
    out
}

/// How much a streaming parser holds: its `Debug` output prints every buffer it keeps.
fn held<T: std::fmt::Debug>(parser: &T) -> usize {
    format!("{parser:?}").len()
}

/// XML 1.0's `Char` production: what a document may carry at all.
fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn code_in(e: &S3Error, allowed: &[S3ErrorCode]) -> bool {
    allowed.contains(&e.code)
}

// ---------------------------------------------------------------------------------------------
// aws-chunked bodies
// ---------------------------------------------------------------------------------------------

fn chunk_ctx() -> SigningContext {
    SigningContext {
        signing_key: sigv4::signing_key(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        ),
        amz_date: "20130524T000000Z".into(),
        scope: "20130524/us-east-1/s3/aws4_request".into(),
        seed_signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
    }
}

/// The four decoder flavours: unsigned or signed, with or without trailers.
fn chunk_decoder(kind: u8) -> ChunkedDecoder {
    match kind % 4 {
        0 => ChunkedDecoder::new(ChunkSigning::Unsigned, false),
        1 => ChunkedDecoder::new(ChunkSigning::Unsigned, true),
        2 => ChunkedDecoder::new(chunk_ctx().into(), false),
        _ => ChunkedDecoder::new(chunk_ctx().into(), true),
    }
}

const CHUNK_TOKENS: &[&str] = &[
    "0",
    "1",
    "3",
    "a",
    "F",
    "10",
    "400",
    "ffffffffffffffff",
    "10000000000000000",
    ";",
    "chunk-signature=",
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "\r\n",
    "\r\n",
    "\r",
    "\n",
    ":",
    "x-amz-checksum-crc32c:",
    "x-amz-trailer-signature:",
    "sOO8/Q==",
    " ",
    "\t",
    "abc",
    "é",
];

/// Trailing headers as the decoder reports them.
type Trailers = Vec<(String, String)>;

/// Decodes `body` pushed in `cuts`-sized pieces: payload and trailers, or the first error.
fn chunk_decode(
    mut d: ChunkedDecoder,
    body: &[u8],
    cuts: &[usize],
) -> Result<(Vec<u8>, Trailers), S3Error> {
    let mut out = Vec::new();
    for piece in pieces(body, cuts) {
        d.push(piece, &mut out)?;
    }
    d.finish()?;
    Ok((out, d.trailers().to_vec()))
}

fn trailer_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        ("x-amz-checksum-[a-z0-9]{1,8}", "[!-~]([ -~]{0,16}[!-~])?"),
        0..3,
    )
}

/// The chunk sizes an unsigned stream's framing announces, read from the raw bytes.
fn announced_sizes(body: &[u8]) -> Option<Vec<u64>> {
    let mut sizes = Vec::new();
    let mut at = 0;
    loop {
        let end = at + body[at..].iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&body[at..end]).ok()?;
        let line = line.trim_end_matches('\r');
        let size = u64::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        sizes.push(size);
        if size == 0 {
            return Some(sizes);
        }
        at = end + 1 + size as usize + 2;
        if at > body.len() {
            return None;
        }
    }
}

/// An unsigned aws-chunked stream with the given chunk sizes.
fn encode_with_sizes(payload: &[u8], sizes: &[u64], trailers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes {
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        if size > 0 {
            out.extend_from_slice(&payload[at..at + size as usize]);
            out.extend_from_slice(b"\r\n");
            at += size as usize;
        }
    }
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

proptest! {
    #![proptest_config(config(1000))]

    /// Hostile bytes in any split: only InvalidRequest or SignatureDoesNotMatch while pushing,
    /// every push after an error fails too, `finish` only succeeds on a clean stream, and the
    /// decoder never holds much more than one framing line.
    #[test]
    fn chunked_hostile_bytes(
        kind in any::<u8>(),
        body in soup(CHUNK_TOKENS, 120),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut d = chunk_decoder(kind);
        let mut out = Vec::new();
        let mut failed = false;
        for piece in pieces(&body, &cuts) {
            match d.push(piece, &mut out) {
                Ok(()) => prop_assert!(!failed || piece.is_empty(), "a push after an error succeeded"),
                Err(e) => {
                    prop_assert!(code_in(&e, &[InvalidRequest, SignatureDoesNotMatch]), "{e}");
                    failed = true;
                }
            }
            prop_assert!(held(&d) < 8 * LINE_BYTES_MAX + 8192, "decoder holds {} bytes", held(&d));
        }
        prop_assert_eq!(d.decoded_len(), out.len() as u64);
        match d.finish() {
            Ok(()) => prop_assert!(!failed),
            Err(e) => prop_assert!(code_in(&e, &[IncompleteBody, InvalidRequest]), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// A valid stream decodes to what was encoded however it is split; every strict prefix of
    /// it fails `finish` with IncompleteBody (the one documented exception: an unsigned stream
    /// cut after a whole trailer line, which then has delivered the whole payload).
    #[test]
    fn chunked_valid_streams_split_and_truncate(
        signed in any::<bool>(),
        with_trailer in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..1500),
        chunk in 1usize..600,
        trailers in trailer_strategy(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        cut in any::<Index>(),
    ) {
        let ctx = chunk_ctx();
        let (body, decoder, expect_trailers) = if signed {
            let t = with_trailer.then_some(&trailers[..]);
            (
                encode_signed_chunks(&payload, chunk, &ctx, t),
                ChunkedDecoder::new(ctx.clone().into(), with_trailer),
                if with_trailer { trailers.clone() } else { Vec::new() },
            )
        } else {
            (
                encode_unsigned_trailer_chunks(&payload, chunk, &trailers),
                ChunkedDecoder::new(ChunkSigning::Unsigned, true),
                trailers.clone(),
            )
        };
        let (out, got) = chunk_decode(decoder.clone(), &body, &cuts).expect("valid stream");
        prop_assert_eq!(&out, &payload);
        prop_assert_eq!(&got, &expect_trailers);

        let cut = cut.index(body.len());
        let mut d = decoder;
        let mut out = Vec::new();
        for piece in pieces(&body[..cut], &cuts) {
            prop_assert!(d.push(piece, &mut out).is_ok(), "a prefix of a valid stream was refused");
        }
        match d.finish() {
            Err(e) => prop_assert_eq!(e.code, IncompleteBody),
            Ok(()) => {
                prop_assert!(!signed, "a truncated signed stream was accepted at {}", cut);
                prop_assert_eq!(&out, &payload);
                prop_assert!(!d.trailers().is_empty());
                prop_assert!(expect_trailers.starts_with(d.trailers()));
            }
        }
    }

    /// Signed streams: every single-byte change is refused, except changing the letter case
    /// of hex digits or header names, which leaves the decoded body and trailers unchanged.
    #[test]
    fn chunked_signed_stream_mutations_are_refused(
        with_trailer in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..300,
        trailers in trailer_strategy(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let ctx = chunk_ctx();
        let body = encode_signed_chunks(&payload, chunk, &ctx, with_trailer.then_some(&trailers[..]));
        let mut bad = body.clone();
        let i = at.index(bad.len());
        bad[i] ^= flip;
        let decoder = ChunkedDecoder::new(ctx.into(), with_trailer);
        match chunk_decode(decoder, &bad, &[]) {
            Err(e) => prop_assert!(
                code_in(&e, &[SignatureDoesNotMatch, InvalidRequest, IncompleteBody]),
                "{e}"
            ),
            Ok((out, got)) => {
                prop_assert!(
                    body[i].eq_ignore_ascii_case(&bad[i]),
                    "byte {} changed {:#x} -> {:#x} and was accepted", i, body[i], bad[i]
                );
                prop_assert_eq!(out, payload);
                let expected = if with_trailer { trailers } else { Vec::new() };
                prop_assert_eq!(got, expected);
            }
        }
    }

    /// Unsigned streams carry no signature, so a change may be accepted, but then what was
    /// decoded encodes back to the changed bytes (up to letter case and the whitespace the
    /// format trims): nothing is read silently differently from what the bytes say.
    #[test]
    fn chunked_unsigned_stream_mutations_never_misread(
        payload in "[g-z]{0,400}",
        chunk in 1usize..200,
        trailers in trailer_strategy(),
        at in any::<Index>(),
        replacement in any::<u8>(),
    ) {
        let body = encode_unsigned_trailer_chunks(payload.as_bytes(), chunk, &trailers);
        let i = at.index(body.len());
        prop_assume!(body[i] != replacement);
        let mut bad = body.clone();
        bad[i] = replacement;
        let decoder = ChunkedDecoder::new(ChunkSigning::Unsigned, true);
        match chunk_decode(decoder, &bad, &[]) {
            Err(e) => prop_assert!(code_in(&e, &[InvalidRequest, IncompleteBody]), "{e}"),
            Ok((out, got)) => {
                let sizes = announced_sizes(&bad).expect("accepted stream has readable framing");
                let again = encode_with_sizes(&out, &sizes, &got);
                let mut without = bad.clone();
                without.remove(i);
                // Unsigned trailers may end without the final empty line (documented).
                let unterminated = [&bad[..], b"\r\n"].concat();
                prop_assert!(
                    again.eq_ignore_ascii_case(&bad)
                        || again.eq_ignore_ascii_case(&unterminated)
                        || (matches!(replacement, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c' | b';') && again.eq_ignore_ascii_case(&without)),
                    "changed byte {} to {:#x}: decoded {:?} / {:?}", i, replacement,
                    String::from_utf8_lossy(&out), got
                );
            }
        }
    }
}

/// Endless hostile streams: the decoder either refuses them or keeps bounded state, however
/// many bytes arrive. Up to `TRAILERS_MAX` trailers still decode.
#[test]
fn chunked_endless_streams_hold_bounded_state() {
    let many: Vec<(String, String)> = (0..TRAILERS_MAX)
        .map(|i| (format!("x-amz-meta-{i}"), "v".to_string()))
        .collect();
    let body = encode_unsigned_trailer_chunks(b"abc", 2, &many);
    let (out, got) = chunk_decode(chunk_decoder(1), &body, &[]).expect("TRAILERS_MAX trailers");
    assert_eq!((out, got), (b"abc".to_vec(), many.clone()));
    let body = encode_signed_chunks(b"abc", 2, &chunk_ctx(), Some(&many));
    assert!(chunk_decode(chunk_decoder(3), &body, &[]).is_ok());

    let cases: [(&str, u8, &[u8], &[u8]); 4] = [
        (
            "endless unsigned trailers",
            1,
            b"0\r\n",
            b"x-amz-meta-a:b\r\n",
        ),
        ("endless signed trailers", 3, b"", b"x-amz-meta-a:b\r\n"),
        ("endless header line", 0, b"", b"0000000000"),
        (
            "endless chunk data",
            0,
            b"ffffffffffffffff\r\n",
            b"data data ",
        ),
    ];
    for (what, kind, head, repeat) in cases {
        let mut d = chunk_decoder(kind);
        let mut out = Vec::new();
        let mut head = head.to_vec();
        if kind == 3 {
            // A signed stream reaches its trailers only after a correctly signed final chunk.
            let full = encode_signed_chunks(b"", 1, &chunk_ctx(), Some(&[]));
            head = full[..full.iter().position(|&b| b == b'\n').unwrap() + 1].to_vec();
        }
        let mut result = d.push(&head, &mut out);
        let block = repeat.repeat(4096);
        for _ in 0..64 {
            if result.is_err() {
                break;
            }
            out.clear();
            result = d.push(&block, &mut out);
            assert!(
                held(&d) < 64 * 1024,
                "{what}: decoder holds {} bytes",
                held(&d)
            );
        }
        if let Err(e) = result {
            assert_eq!(e.code, InvalidRequest, "{what}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SigV4 / SigV2 request authentication
// ---------------------------------------------------------------------------------------------

const AUTH_TOKENS: &[&str] = &[
    "AWS4-HMAC-SHA256",
    "AWS4-HMAC-SHA256 ",
    "AWS ",
    " ",
    "\t",
    ",",
    "=",
    "/",
    ";",
    ":",
    "&",
    "%",
    "%2F",
    "%zz",
    "+",
    "Credential=",
    "SignedHeaders=",
    "Signature=",
    "AKIDEXAMPLE",
    "20130524",
    "2013052",
    "us-east-1",
    "s3",
    "aws4_request",
    "host",
    "x-amz-date",
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "20130524T000000Z",
    "2013052éT000000Z",
    "Fri, 24 May 2013 00:00:00 GMT",
    "Fri, 24 May 9223372036854775807 00:00:00 GMT",
    "Fri, 24 Feb -9223372036854775808 00:00:00 GMT",
    "+0000",
    "UNSIGNED-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "X-Amz-Algorithm=",
    "X-Amz-Credential=",
    "X-Amz-Signature=",
    "X-Amz-Date=",
    "X-Amz-SignedHeaders=",
    "X-Amz-Expires=",
    "AWSAccessKeyId=",
    "Signature=",
    "Expires=",
    "604800",
    "0",
    "99999999999999999999",
    "é",
    "🐹",
];

const HEADER_NAMES: &[&str] = &[
    "authorization",
    "authorization",
    "x-amz-date",
    "date",
    "x-amz-content-sha256",
    "host",
    "x-amz-meta-a",
];

fn headers_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            select(HEADER_NAMES).prop_map(str::to_string),
            soup_str(AUTH_TOKENS, 12),
        ),
        0..5,
    )
}

/// Requests built from the auth vocabulary, plus near-valid ones whose every field is noise.
fn request_strategy() -> impl Strategy<Value = (Vec<(String, String)>, String)> {
    let field = || soup_str(AUTH_TOKENS, 5);
    prop_oneof![
        (headers_strategy(), soup_str(AUTH_TOKENS, 20)),
        (field(), field(), field(), field(), field()).prop_map(|(c, s, g, d, p)| {
            (
                vec![
                    (
                        "authorization".to_string(),
                        format!("AWS4-HMAC-SHA256 Credential={c},SignedHeaders={s},Signature={g}"),
                    ),
                    ("x-amz-date".to_string(), d),
                    ("x-amz-content-sha256".to_string(), p),
                ],
                String::new(),
            )
        }),
        (field(), field(), field(), field(), field(), field()).prop_map(|(a, c, d, s, e, g)| {
            (
                vec![("host".to_string(), "h".to_string())],
                format!(
                    "X-Amz-Algorithm={a}&X-Amz-Credential={c}&X-Amz-Date={d}\
                     &X-Amz-SignedHeaders={s}&X-Amz-Expires={e}&X-Amz-Signature={g}"
                ),
            )
        }),
        (field(), field(), field(), field()).prop_map(|(k, s, e, d)| {
            (
                vec![("date".to_string(), d)],
                format!("AWSAccessKeyId={k}&Signature={s}&Expires={e}"),
            )
        }),
    ]
}

/// The invariants a successful parse promises.
fn check_parsed(parsed: &Option<Auth>, headers: &[(String, String)]) -> Result<(), TestCaseError> {
    match parsed {
        None => prop_assert!(!headers.iter().any(|(n, _)| n == "authorization")),
        Some(Auth::V4(a)) => {
            prop_assert_eq!(a.signature.len(), 64);
            prop_assert!(a
                .signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(a.signed_headers.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(a
                .signed_headers
                .iter()
                .all(|h| !h.is_empty() && *h == h.to_ascii_lowercase()));
            prop_assert_eq!(a.scope_date.len(), 8);
            prop_assert!(a.amz_date.starts_with(&a.scope_date));
            prop_assert_eq!(parse_amz_date(&a.amz_date), Some(a.date_ms));
            prop_assert!(!a.access_key.is_empty() && !a.region.is_empty());
            if let Some(secs) = a.presigned_expires_secs {
                prop_assert!((1..=sigv4::PRESIGN_EXPIRES_MAX_SECS).contains(&secs));
            }
        }
        Some(Auth::V2(a)) => {
            // The query form lets an empty key through; no key lookup can match it.
            prop_assert!(!a.access_key.is_empty() || a.expires.is_some());
            prop_assert!(a.expires.is_some() || a.date_ms.is_some());
            if let Some(e) = &a.expires {
                prop_assert!(
                    !e.is_empty() && e.len() <= 12 && e.bytes().all(|b| b.is_ascii_digit())
                );
            }
        }
    }
    Ok(())
}

fn mutate_ascii(text: &str, at: Index, replacement: char) -> String {
    let i = at.index(text.len());
    let mut out = text.to_string();
    out.replace_range(i..i + 1, &replacement.to_string());
    out
}

const REPLACEMENTS: &str = "aAzZ09fF=&;,/:%+-_. \t";

proptest! {
    #![proptest_config(config(1500))]

    /// Any headers and query: `parse` answers anonymous, credentials that honour every
    /// documented invariant, or one of its documented error codes.
    #[test]
    fn sigv4_parse_hostile_requests(
        (headers, query) in request_strategy(),
        method in select(&["GET", "PUT", "", "\u{0}"][..]),
        path in soup_str(AUTH_TOKENS, 4),
    ) {
        let req = RequestParts { method, raw_path: &path, raw_query: &query, headers: &headers };
        match sigv4::parse(&req) {
            Ok(parsed) => check_parsed(&parsed, &headers)?,
            Err(e) => prop_assert!(code_in(&e, &[
                AuthorizationHeaderMalformed,
                AuthorizationQueryParametersError,
                InvalidArgument,
                InvalidRequest,
                AccessDenied,
            ]), "{e}"),
        }
    }

    /// Canonicalisation of arbitrary paths and queries: never panics, emits only the SigV4
    /// alphabet, and is idempotent (canonical forms are fixed points).
    #[test]
    fn sigv4_canonical_forms_are_fixed_points(
        path in soup_str(AUTH_TOKENS, 20),
        query in soup_str(AUTH_TOKENS, 30),
    ) {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b);
        let uri = canonical_uri(&path);
        prop_assert!(uri.bytes().all(allowed), "{}", uri);
        prop_assert_eq!(canonical_uri(&uri), uri.clone());
        let q = canonical_query(&query);
        prop_assert!(q.bytes().all(|b| allowed(b) && b != b'/' || b == b'=' || b == b'&'), "{}", q);
        prop_assert_eq!(canonical_query(&q), q.clone());
        let pairs: Vec<(&str, &str)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        prop_assert!(pairs.windows(2).all(|w| w[0] <= w[1]), "{}", q);
        prop_assert!(!pairs.iter().any(|(n, _)| *n == "X-Amz-Signature"));
        let _ = decode_query(&query);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// `decode_query` inverts SigV4 encoding of arbitrary names and values, and percent
    /// decoding inverts `uri_encode` for arbitrary bytes.
    #[test]
    fn sigv4_query_and_path_round_trip(
        pairs in prop::collection::vec((".{1,12}", ".{0,12}"), 0..6),
        bytes in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let query: Vec<String> = pairs
            .iter()
            .map(|(n, v)| format!("{}={}", uri_encode(n.as_bytes(), false), uri_encode(v.as_bytes(), false)))
            .collect();
        prop_assert_eq!(decode_query(&query.join("&")), pairs);
        let path = uri_encode(&bytes, true);
        prop_assert_eq!(canonical_uri(&path), path);
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// A request signed by our client verifies; after any single-character change to its
    /// credentials (the Authorization header, or the whole query of a presigned URL) it is
    /// refused by `parse`, by the access key lookup, or by `verify` — or it still carries
    /// exactly the same credentials (a change of letter case in hex, say).
    #[test]
    fn sigv4_signed_request_mutations_are_refused(
        key in "[A-Z0-9]{4,20}",
        secret in "[ -~]{1,40}",
        region in "[a-z0-9-]{1,12}",
        path in "/[ -~]{0,30}",
        params in prop::collection::vec("[a-z]{1,6}(=[a-zA-Z0-9._~%+/-]{0,8})?", 0..4),
        secs in 0u64..250_000_000_000,
        expires in 1u64..=604_800,
        presigned in any::<bool>(),
        at in any::<Index>(),
        replacement in select(REPLACEMENTS.chars().collect::<Vec<_>>()),
    ) {
        let creds = ClientCredentials { access_key: &key, secret: &secret, region: &region };
        let date = amz_date(secs * 1000);
        let params = params.join("&");
        let mut headers = vec![("host".to_string(), "example.com".to_string())];
        let query = if presigned {
            let req = RequestParts { method: "GET", raw_path: &path, raw_query: &params, headers: &headers };
            presign_query(&req, &creds, &date, expires)
        } else {
            headers.push(("x-amz-content-sha256".to_string(), "UNSIGNED-PAYLOAD".to_string()));
            headers.push(("x-amz-date".to_string(), date.clone()));
            let req = RequestParts { method: "GET", raw_path: &path, raw_query: &params, headers: &headers };
            let auth = sign_headers(&req, "UNSIGNED-PAYLOAD", &creds, &date);
            headers.push(("authorization".to_string(), auth));
            params.clone()
        };
        let req = RequestParts { method: "GET", raw_path: &path, raw_query: &query, headers: &headers };
        let Some(Auth::V4(good)) = sigv4::parse(&req).expect("a signed request parses") else {
            panic!("a signed request parsed as something else");
        };
        prop_assert!(sigv4::verify(&good, &req, &secret, &region).is_ok());

        let (bad_headers, bad_query) = if presigned {
            (headers.clone(), mutate_ascii(&query, at, replacement))
        } else {
            let mut h = headers.clone();
            let last = h.len() - 1;
            h[last].1 = mutate_ascii(&h[last].1, at, replacement);
            (h, query.clone())
        };
        prop_assume!(bad_headers != headers || bad_query != query);
        let bad = RequestParts { method: "GET", raw_path: &path, raw_query: &bad_query, headers: &bad_headers };
        if let Ok(Some(Auth::V4(parsed))) = sigv4::parse(&bad) {
            // A different access key would look up a different secret (or none).
            if parsed.access_key == key && sigv4::verify(&parsed, &bad, &secret, &region).is_ok() {
                prop_assert_eq!(&parsed, &good, "a changed request verified with other credentials");
                prop_assert_eq!(canonical_query(&bad_query), canonical_query(&query));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S3 XML request bodies
// ---------------------------------------------------------------------------------------------

const XML_NAMES: &[&str] = &[
    "Delete",
    "Object",
    "Key",
    "VersionId",
    "Quiet",
    "CompleteMultipartUpload",
    "Part",
    "PartNumber",
    "ETag",
    "CreateBucketConfiguration",
    "LocationConstraint",
    "s3:Key",
    "x",
];

const XML_TEXT: &[&str] = &[
    "a",
    " ",
    "\n",
    "\r\n",
    "1",
    "10000",
    "10001",
    "-1",
    "true",
    "&amp;",
    "&lt;",
    "&quot;",
    "&#x41;",
    "&#65;",
    "&#0;",
    "&#x1;",
    "&#xD800;",
    "&#x110000;",
    "&#99999999999999999999;",
    "&bogus;",
    "&",
    "<",
    ">",
    "]]>",
    "<![CDATA[<x>&]]>",
    "<!-- c -->",
    "<?pi x?>",
    "</x>",
    "<x/>",
    "é",
    "\u{FFFE}",
    "\u{1}",
];

fn xml_text() -> impl Strategy<Value = String> {
    soup_str(XML_TEXT, 4)
}

/// Nested elements with random names, text, references and markup fragments.
fn xml_element() -> impl Strategy<Value = String> {
    let leaf = xml_text();
    leaf.prop_recursive(5, 96, 6, |inner| {
        (
            select(XML_NAMES),
            prop::collection::vec(inner, 0..6),
            0u8..10,
        )
            .prop_map(|(name, kids, shape)| match shape {
                0 => format!("<{name}/>"),
                1 => format!("<{name} a=\"&amp;\">{}</{name}>", kids.concat()),
                2 => format!("<{name}>{}</x>", kids.concat()),
                3 => format!("<{name}>{}", kids.concat()),
                _ => format!("<{name}>{}</{name}>", kids.concat()),
            })
    })
}

fn xml_document() -> impl Strategy<Value = Vec<u8>> {
    (
        select(
            &[
                "",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                "<!DOCTYPE d [<!ENTITY e \"x\">]>",
                " \n",
            ][..],
        ),
        select(
            &[
                "Delete",
                "CompleteMultipartUpload",
                "CreateBucketConfiguration",
                "s3:Delete",
                "other",
            ][..],
        ),
        select(
            &[
                "",
                " xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"",
                " xmlns:s3=\"urn:x\"",
            ][..],
        ),
        prop::collection::vec(xml_element(), 0..8),
        select(&["", " ", "x", "<x/>", "&amp;"][..]),
    )
        .prop_map(|(decl, root, ns, kids, tail)| {
            format!("{decl}<{root}{ns}>{}</{root}>{tail}", kids.concat()).into_bytes()
        })
}

/// Runs all three XML readers on `body` and checks each answers as documented.
fn check_xml_readers(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_create_bucket(body) {
        Ok(Some(region)) => prop_assert!(!region.is_empty() && region.trim() == region),
        Ok(None) => {}
        Err(e) => prop_assert_eq!(e.code, MalformedXML),
    }
    match parse_complete_multipart(body) {
        Ok(parts) => {
            prop_assert!((1..=10_000).contains(&parts.len()));
            prop_assert!(parts.iter().all(|(n, _)| (1..=10_000).contains(n)));
        }
        Err(e) => prop_assert_eq!(e.code, MalformedXML),
    }
    match parse_delete_objects(body) {
        Ok((_, objects)) => {
            prop_assert!((1..=DELETE_KEYS_MAX).contains(&objects.len()));
            prop_assert!(objects
                .iter()
                .all(|(_, v)| v.as_ref().is_none_or(|v| !v.is_empty())));
        }
        Err(e) => prop_assert_eq!(e.code, MalformedXML),
    }
    Ok(())
}

fn xml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,20}",
        soup_str(
            &["a", " ", "\t", "\r\n", "\r", "&", "<", "]]>", "\"", "'", "é", "🐹"],
            8
        ),
    ]
    .prop_map(|k| k.chars().filter(|&c| is_xml_char(c)).collect())
}

proptest! {
    #![proptest_config(config(1500))]

    /// Random bytes and random well-formed-ish documents: Ok with documented shapes, or
    /// MalformedXML, never anything else.
    #[test]
    fn xml_readers_hostile_documents(
        doc in prop_oneof![
            3 => xml_document(),
            1 => prop::collection::vec(any::<u8>(), 0..256),
        ],
    ) {
        check_xml_readers(&doc)?;
    }
}

proptest! {
    #![proptest_config(config(400))]

    /// DeleteObjects bodies written with our escaping read back exactly, keys verbatim
    /// (whitespace, line ends and markup included).
    #[test]
    fn xml_delete_objects_round_trip(
        quiet in prop::option::of(any::<bool>()),
        objects in prop::collection::vec((xml_key(), prop::option::of("[A-Za-z0-9._-]{1,20}")), 1..40),
        ns in any::<bool>(),
        gap in select(&["", " ", "\n  "][..]),
    ) {
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        body.push_str(if ns { "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">" } else { "<Delete>" });
        if let Some(q) = quiet {
            body.push_str(&format!("{gap}<Quiet> {} </Quiet>", if q { "TRUE" } else { "false" }));
        }
        for (key, version) in &objects {
            body.push_str(&format!("{gap}<Object>{gap}<Key>{}</Key>", escape(key)));
            if let Some(v) = version {
                body.push_str(&format!("<VersionId>{v}</VersionId>"));
            }
            body.push_str("</Object>");
        }
        body.push_str(&format!("{gap}</Delete>{gap}"));
        let (got_quiet, got) = parse_delete_objects(body.as_bytes()).expect("valid body");
        prop_assert_eq!(got_quiet, quiet.unwrap_or(false));
        prop_assert_eq!(got, objects);
    }

    /// CompleteMultipartUpload and CreateBucket bodies read back exactly.
    #[test]
    fn xml_complete_and_create_round_trip(
        parts in prop::collection::vec((1u32..=10_000, "[0-9a-f]{32}(-[0-9]{1,3})?", 0u8..3), 1..60),
        region in "[a-z0-9-]{0,20}",
    ) {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag, quoting) in &parts {
            let etag_text = match quoting {
                0 => etag.clone(),
                1 => format!("\"{etag}\""),
                _ => format!("&quot;{etag}&quot;"),
            };
            body.push_str(&format!("<Part><ETag>{etag_text}</ETag><PartNumber> {n} </PartNumber></Part>"));
        }
        body.push_str("</CompleteMultipartUpload>");
        let expected: Vec<(u32, String)> = parts.iter().map(|(n, e, _)| (*n, e.clone())).collect();
        prop_assert_eq!(parse_complete_multipart(body.as_bytes()).expect("valid body"), expected);

        let body = format!("<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>");
        let expected = (!region.is_empty()).then_some(region);
        prop_assert_eq!(parse_create_bucket(body.as_bytes()).expect("valid body"), expected);
    }
}

fn delete_body(keys: usize) -> String {
    let objects: String = (0..keys)
        .map(|i| format!("<Object><Key>k{i}</Key></Object>"))
        .collect();
    format!("<Delete>{objects}</Delete>")
}

fn complete_body(parts: usize) -> String {
    let parts: String = (0..parts)
        .map(|i| {
            format!(
                "<Part><PartNumber>{}</PartNumber><ETag>e</ETag></Part>",
                i % 10_000 + 1
            )
        })
        .collect();
    format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>")
}

/// The documented limits: 1000 delete keys, 10 000 parts numbered 1..=10000, bounded depth
/// and element count, no DTDs (so no entity expansion).
#[test]
fn xml_limits_hold() {
    let malformed = |r: Result<(), S3Error>, what: &str| {
        assert_eq!(r.expect_err(what).code, MalformedXML, "{what}");
    };
    assert_eq!(
        parse_delete_objects(delete_body(DELETE_KEYS_MAX).as_bytes())
            .unwrap()
            .1
            .len(),
        DELETE_KEYS_MAX
    );
    malformed(
        parse_delete_objects(delete_body(DELETE_KEYS_MAX + 1).as_bytes()).map(drop),
        "1001 keys",
    );
    malformed(
        parse_delete_objects(delete_body(0).as_bytes()).map(drop),
        "no keys",
    );
    assert_eq!(
        parse_complete_multipart(complete_body(10_000).as_bytes())
            .unwrap()
            .len(),
        10_000
    );
    malformed(
        parse_complete_multipart(complete_body(10_001).as_bytes()).map(drop),
        "10001 parts",
    );
    for n in ["0", "10001", "-1", "abc", "", "4294967296"] {
        let body = format!(
            "<CompleteMultipartUpload><Part><PartNumber>{n}</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>"
        );
        malformed(parse_complete_multipart(body.as_bytes()).map(drop), n);
    }
    let deep = format!("<Delete>{}{}</Delete>", "<x>".repeat(16), "</x>".repeat(16));
    malformed(parse_delete_objects(deep.as_bytes()).map(drop), "too deep");
    let wide = format!("<Delete>{}</Delete>", "<x/>".repeat(80_000));
    malformed(
        parse_delete_objects(wide.as_bytes()).map(drop),
        "too many elements",
    );
    let dtd = "<!DOCTYPE Delete [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>\
               <Delete><Object><Key>&b;</Key></Object></Delete>";
    malformed(parse_delete_objects(dtd.as_bytes()).map(drop), "DTD");
    let twice = "<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>";
    malformed(parse_delete_objects(twice.as_bytes()).map(drop), "two keys");
    let quiet = "<Delete><Quiet>yes</Quiet><Object><Key>a</Key></Object></Delete>";
    malformed(
        parse_delete_objects(quiet.as_bytes()).map(drop),
        "bad quiet",
    );
    assert_eq!(parse_create_bucket(b" \r\n\t"), Ok(None));
    malformed(parse_create_bucket(b"<Other/>").map(drop), "wrong root");
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data (POST uploads)
// ---------------------------------------------------------------------------------------------

const BOUNDARY: &str = "[A-Za-z0-9'()+_,./:=?-]{1,70}";

const FORM_TOKENS: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    "--",
    "-",
    " ",
    "\t",
    "Content-Disposition: form-data; name=\"",
    "Content-Disposition: form-data; name=",
    "Content-Type: text/plain",
    "file",
    "key",
    "\"",
    "\\",
    ";",
    "filename=\"",
    "=",
    "é",
];

/// Form bytes: the form vocabulary, the boundary itself and raw noise.
fn form_soup(boundary: String) -> impl Strategy<Value = Vec<u8>> {
    let delim = format!("\r\n--{boundary}");
    prop::collection::vec(
        prop_oneof![
            4 => select(FORM_TOKENS).prop_map(|t| t.as_bytes().to_vec()),
            2 => Just(delim.clone().into_bytes()),
            1 => Just(format!("--{boundary}").into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..80,
    )
    .prop_map(|v| v.concat())
}

/// Pushes `body` in pieces; the parser, the file bytes and the first error if any.
fn form_run(
    boundary: &str,
    body: &[u8],
    cuts: &[usize],
) -> (FormParser, Vec<u8>, Result<(), S3Error>) {
    let mut p = FormParser::new(boundary);
    let mut file = Vec::new();
    for piece in pieces(body, cuts) {
        if let Err(e) = p.push(piece, &mut file) {
            return (p, file, Err(e));
        }
    }
    let r = p.finish();
    (p, file, r)
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

proptest! {
    #![proptest_config(config(800))]

    /// Hostile form bodies: only MalformedPOSTRequest or InvalidArgument, bounded state.
    #[test]
    fn form_hostile_bodies(
        (boundary, body) in BOUNDARY.prop_flat_map(|b| (Just(b.clone()), form_soup(b))),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (p, _, r) = form_run(&boundary, &body, &cuts);
        if let Err(e) = r {
            prop_assert!(code_in(&e, &[MalformedPOSTRequest, InvalidArgument]), "{e}");
        }
        prop_assert!(held(&p) < 16 * body.len() + 4096);
    }

    /// Any content type: a boundary comes back only if the parser accepts it.
    #[test]
    fn form_boundary_from_any_content_type(ct in soup_str(&["multipart/form-data", ";", "boundary=", "\"", " ", "x", "BOUNDARY"], 10)) {
        match boundary_from_content_type(&ct) {
            Ok(b) => {
                prop_assert!(!b.is_empty() && b.len() <= 70);
                let _ = FormParser::new(&b);
            }
            Err(e) => prop_assert!(code_in(&e, &[PreconditionFailed, MalformedPOSTRequest]), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// A well-formed form reads back exactly however it is split; cut anywhere before the
    /// boundary that closes the file, it fails `finish`, having handed out only a prefix of
    /// the file.
    #[test]
    fn form_valid_bodies_split_and_truncate(
        boundary in BOUNDARY,
        fields in prop::collection::vec(("[a-zA-Z][a-zA-Z0-9-]{0,10}", ".{0,30}"), 0..5),
        file_pieces in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                select(&["\r\n", "--", "\r\n-", "\r\n--"][..]).prop_map(|s| s.as_bytes().to_vec()),
            ],
            0..30,
        ),
        filename in prop::option::of("[ -~]{0,20}"),
        preamble in "[ -~]{0,20}",
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        cut in any::<Index>(),
    ) {
        let delim = format!("\r\n--{boundary}");
        let mut file = file_pieces.concat();
        // A file ending in part of the delimiter is legitimate; one containing it is not.
        if let Some(at) = file.windows(delim.len()).position(|w| w == delim.as_bytes()) {
            file.truncate(at);
        }
        prop_assume!(fields.iter().all(|(n, v)| n != "file" && !v.contains(&delim) && !v.contains(&delim[2..])));
        prop_assume!(!preamble.contains(&delim[2..]));
        let mut body = format!("{preamble}\r\n").into_bytes();
        for (n, v) in &fields {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n").as_bytes());
        }
        let disposition = match &filename {
            Some(f) => format!("form-data; name=\"file\"; filename=\"{}\"", quote(f)),
            None => "form-data; name=file".to_string(),
        };
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(&file);
        let file_end = body.len();
        body.extend_from_slice(format!("{delim}--\r\nepilogue").as_bytes());

        let (p, got, r) = form_run(&boundary, &body, &cuts);
        prop_assert!(r.is_ok(), "{:?}", r);
        prop_assert_eq!(p.fields(), &fields[..]);
        prop_assert_eq!(&got, &file);
        prop_assert_eq!(p.file().unwrap().filename.clone(), filename);

        let cut = cut.index(file_end + delim.len());
        let (p, got, r) = form_run(&boundary, &body[..cut], &cuts);
        let e = r.expect_err("a truncated form was accepted");
        let expected = if p.file().is_some() { MalformedPOSTRequest } else { InvalidArgument };
        prop_assert_eq!(e.code, expected);
        prop_assert!(file.starts_with(&got));
    }
}

/// Endless hostile streams: the form parser refuses each or keeps bounded state.
#[test]
fn form_endless_streams_hold_bounded_state() {
    let b = "bound";
    let cases: [(&str, &str, &[u8]); 5] = [
        ("endless preamble", "", b"preamble "),
        ("endless padding", "--bound", b"        "),
        (
            "endless part headers",
            "--bound\r\n",
            b"X-Header: aaaaaaaaaa\r\n",
        ),
        (
            "endless field",
            "--bound\r\nContent-Disposition: form-data; name=a\r\n\r\n",
            b"value value ",
        ),
        (
            "endless file",
            "--bound\r\nContent-Disposition: form-data; name=file\r\n\r\n",
            b"\r\n--boun",
        ),
    ];
    for (what, head, repeat) in cases {
        let mut p = FormParser::new(b);
        let mut file = Vec::new();
        let mut result = p.push(head.as_bytes(), &mut file);
        let block = repeat.repeat(1024);
        for _ in 0..64 {
            if result.is_err() {
                break;
            }
            file.clear();
            result = p.push(&block, &mut file);
            assert!(
                held(&p) < 8 * (FIELD_BYTES_MAX + 16 * 1024),
                "{what}: parser holds {} bytes",
                held(&p)
            );
        }
        if let Err(e) = result {
            assert_eq!(e.code, MalformedPOSTRequest, "{what}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// POST policy documents
// ---------------------------------------------------------------------------------------------

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"expiration\"",
    "\"conditions\"",
    "\"2030-01-01T00:00:00Z\"",
    "\"2030-01-01T00:00:00.123456Z\"",
    "\"9999-99-99T99:99:99Z\"",
    "\"eq\"",
    "\"starts-with\"",
    "\"content-length-range\"",
    "\"$key\"",
    "\"key\"",
    "\"\"",
    "18446744073709551616",
    "-1",
    "1e999",
    "0",
    "null",
    "true",
    "\"é\"",
    " ",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(
            &[
                "eq",
                "EQ",
                "starts-with",
                "content-length-range",
                "$key",
                "key",
                "$",
                "10",
                " 5 ",
                "2030-01-01T00:00:00Z",
                "2030-02-31T24:00:00Z",
                "",
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((select(&["key", "$bucket", "x"][..]), inner), 0..3).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn check_policy(text: &str) -> Result<(), TestCaseError> {
    match decode_policy(text) {
        Ok(p) => {
            prop_assert!(p.conditions.len() <= 3 * CONDITIONS_MAX);
            for c in &p.conditions {
                if let Condition::ContentLengthRange { min, max } = c {
                    prop_assert!(min <= max);
                }
            }
        }
        Err(e) => prop_assert_eq!(e.code, InvalidPolicyDocument, "{}", e),
    }
    Ok(())
}

/// One condition as a policy may spell it, and how it must decode.
fn condition_strategy() -> impl Strategy<Value = (serde_json::Value, Condition)> {
    use serde_json::json;
    let name = "[a-zA-Z][a-zA-Z0-9-]{0,10}";
    prop_oneof![
        (name, ".{0,10}", any::<bool>()).prop_map(|(n, v, dollar)| {
            let key = if dollar { format!("${n}") } else { n.clone() };
            (
                json!({ key: v.clone() }),
                Condition::Eq {
                    field: n.to_ascii_lowercase(),
                    value: v,
                },
            )
        }),
        (
            name,
            ".{0,10}",
            select(&["eq", "EQ", "starts-with", "Starts-With"][..])
        )
            .prop_map(|(n, v, op)| {
                let c = if op.eq_ignore_ascii_case("eq") {
                    Condition::Eq {
                        field: n.to_ascii_lowercase(),
                        value: v.clone(),
                    }
                } else {
                    Condition::StartsWith {
                        field: n.to_ascii_lowercase(),
                        prefix: v.clone(),
                    }
                };
                (json!([op, format!("${n}"), v]), c)
            }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(a, b, text)| {
            let (min, max) = (a.min(b), a.max(b));
            let doc = if text {
                json!(["content-length-range", min.to_string(), max.to_string()])
            } else {
                json!(["content-length-range", min, max])
            };
            (doc, Condition::ContentLengthRange { min, max })
        }),
    ]
}

proptest! {
    #![proptest_config(config(800))]

    /// Arbitrary text, base64 of arbitrary bytes, of JSON token soup and of random JSON
    /// documents: a policy with sane conditions, or InvalidPolicyDocument.
    #[test]
    fn post_policy_hostile_documents(
        text in ".{0,64}",
        raw in prop::collection::vec(any::<u8>(), 0..128),
        tokens in soup(JSON_TOKENS, 40),
        expiration in json_value(),
        conditions in json_value(),
    ) {
        check_policy(&text)?;
        check_policy(&b64(&raw))?;
        check_policy(&b64(&tokens))?;
        let doc = serde_json::json!({ "expiration": expiration, "conditions": conditions });
        check_policy(&b64(doc.to_string().as_bytes()))?;
        let doc = serde_json::json!({ "expiration": "2030-01-01T00:00:00Z", "conditions": [conditions] });
        check_policy(&b64(doc.to_string().as_bytes()))?;
        if let Some(ms) = parse_iso8601(&text) {
            prop_assert!(ms < 253_402_387_200_000 + 86_400_000);
        }
    }

    /// Policies written from random conditions decode to exactly those conditions, and
    /// expirations in the ISO 8601 form read back to the millisecond.
    #[test]
    fn post_policy_round_trip(
        conditions in prop::collection::vec(condition_strategy(), 0..CONDITIONS_MAX),
        ms in 0u64..253_402_300_800_000,
    ) {
        let expiration = iso8601_ms(ms);
        prop_assert_eq!(parse_iso8601(&expiration), Some(ms));
        let (docs, expected): (Vec<_>, Vec<_>) = conditions.into_iter().unzip();
        let doc = serde_json::json!({ "expiration": expiration, "conditions": docs });
        let policy = decode_policy(&b64(doc.to_string().as_bytes())).expect("valid policy");
        prop_assert_eq!(policy.expiration_ms, ms);
        prop_assert_eq!(policy.conditions, expected);
    }
}

/// The policy limits: too many conditions, too large a document, an inverted range.
#[test]
fn post_policy_limits_hold() {
    let many: Vec<_> = (0..=CONDITIONS_MAX)
        .map(|i| serde_json::json!({ "x": i.to_string() }))
        .collect();
    let doc = serde_json::json!({ "expiration": "2030-01-01T00:00:00Z", "conditions": many });
    let e = decode_policy(&b64(doc.to_string().as_bytes())).unwrap_err();
    assert_eq!(e.code, InvalidPolicyDocument);
    let big = serde_json::json!({
        "expiration": "2030-01-01T00:00:00Z",
        "conditions": [{ "x": "a".repeat(POLICY_BYTES_MAX) }],
    });
    let e = decode_policy(&b64(big.to_string().as_bytes())).unwrap_err();
    assert_eq!(e.code, InvalidPolicyDocument);
    let inverted = serde_json::json!({
        "expiration": "2030-01-01T00:00:00Z",
        "conditions": [["content-length-range", 10, 9]],
    });
    let e = decode_policy(&b64(inverted.to_string().as_bytes())).unwrap_err();
    assert_eq!(e.code, InvalidPolicyDocument);
}

// ---------------------------------------------------------------------------------------------
// Shard files
// ---------------------------------------------------------------------------------------------

fn shard_header_strategy() -> impl Strategy<Value = ShardHeader> {
    (1u8..=255, any::<u8>())
        .prop_flat_map(|(k, m)| {
            (
                any::<[u8; 16]>(),
                any::<u32>(),
                0..u16::from(k) + u16::from(m),
                Just(k),
                Just(m),
                1..=BLOCK_BYTES_MAX,
                0..=DATA_BYTES_MAX,
                any::<[u8; 32]>(),
            )
        })
        .prop_map(
            |(id, part, index, k, m, block_bytes, data_len, blake3)| ShardHeader {
                object_id: ObjectId(id),
                part,
                index,
                k,
                m,
                block_bytes,
                data_len,
                blake3,
            },
        )
}

proptest! {
    #![proptest_config(config(2000))]

    /// Arbitrary bytes, and arbitrary bytes that carry a valid magic, version and CRC (so the
    /// field checks are reached): decode only accepts what it would itself write.
    #[test]
    fn shard_header_hostile_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..300),
        forged in prop::collection::vec(any::<u8>(), HEADER_BYTES..HEADER_BYTES + 1),
        zero_reserved in any::<bool>(),
    ) {
        match ShardHeader::decode(&raw) {
            Ok(h) => prop_assert_eq!(&h.encode()[..], &raw[..HEADER_BYTES]),
            Err(e) => prop_assert!(e != ShardFormatError::IdentityMismatch),
        }
        let mut b = forged;
        b[..8].copy_from_slice(&SHARD_MAGIC);
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        if zero_reserved {
            b[10..12].fill(0);
            b[80..HEADER_BYTES - 4].fill(0);
        }
        let crc = crc32c(&b[..HEADER_BYTES - 4]);
        b[HEADER_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        match ShardHeader::decode(&b) {
            Ok(h) => prop_assert_eq!(&h.encode()[..], &b[..]),
            Err(e) => prop_assert!(matches!(e, ShardFormatError::Invalid(_)), "{e}"),
        }
    }

    /// Every valid header round-trips; every single-byte change and every truncation of its
    /// encoding is refused.
    #[test]
    fn shard_header_round_trip_and_mutations(
        h in shard_header_strategy(),
        at in 0..HEADER_BYTES,
        flip in 1u8..=255,
        short in 0..HEADER_BYTES,
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let bytes = h.encode();
        prop_assert_eq!(ShardHeader::decode(&bytes), Ok(h.clone()));
        let mut file = bytes.to_vec();
        file.extend_from_slice(&tail);
        prop_assert_eq!(ShardHeader::decode(&file), Ok(h));
        let mut bad = bytes;
        bad[at] ^= flip;
        prop_assert!(ShardHeader::decode(&bad).is_err(), "byte {} ^ {:#x} accepted", at, flip);
        prop_assert_eq!(
            ShardHeader::decode(&bytes[..short]),
            Err(ShardFormatError::TooShort { len: short })
        );
    }

    /// Shard file names: only the canonical spelling parses, and a parsed name is rebuilt
    /// exactly; names we write parse back; changed names parse to what they spell, or not at all.
    #[test]
    fn shard_file_names(
        text in soup_str(&["0123456789abcdef0123456789abcdef", ".", "0", "1", "65535", "65536", "4294967296", "+1", "-1", "A", " "], 6),
        id in any::<[u8; 16]>(),
        part in any::<u32>(),
        index in any::<u16>(),
        at in any::<Index>(),
        replacement in select("0123456789abcdefABCDEF.+- x".chars().collect::<Vec<_>>()),
    ) {
        if let Some((i, p, x)) = parse_shard_file_name(&text) {
            prop_assert_eq!(shard_file_name(&i, p, x), text);
        }
        let name = shard_file_name(&ObjectId(id), part, index);
        prop_assert_eq!(parse_shard_file_name(&name), Some((ObjectId(id), part, index)));
        let bad = mutate_ascii(&name, at, replacement);
        if let Some((i, p, x)) = parse_shard_file_name(&bad) {
            prop_assert_eq!(shard_file_name(&i, p, x), bad);
        }
    }
}

fn crc32c(data: &[u8]) -> u32 {
    // CRC-32C (Castagnoli), bitwise; independent of the implementation under test.
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------------
// Join tokens
// ---------------------------------------------------------------------------------------------

fn token_strategy() -> impl Strategy<Value = JoinToken> {
    (
        ".{0,40}",
        any::<[u8; 32]>(),
        prop::collection::vec(".{0,24}", 0..5),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(|(cluster, ca, addrs, secret, expires)| {
            JoinToken::new(cluster, ca, addrs, secret, expires)
        })
}

fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary text and arbitrary bodies with a valid CRC (so the field reader is reached,
    /// length prefixes and all): only NotAToken, Damaged or UnknownVersion, and anything
    /// accepted is exactly what encoding the decoded token writes.
    #[test]
    fn join_token_hostile_text(
        text in prop_oneof![".{0,80}", "hamster-join-[0-9]{0,3}\\.[A-Za-z0-9_=+/-]{0,200}"],
        body in prop::collection::vec(any::<u8>(), 0..160),
        varints in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let check = |text: &str| -> Result<(), TestCaseError> {
            match JoinToken::decode(text) {
                Ok(t) => prop_assert_eq!(t.encode(), text.trim()),
                Err(e) => prop_assert!(
                    matches!(e, TokenError::NotAToken | TokenError::Damaged | TokenError::UnknownVersion(_)),
                    "{e}"
                ),
            }
            Ok(())
        };
        check(&text)?;
        for prefix in [&[][..], &[1u8][..]] {
            let mut b = prefix.to_vec();
            b.extend_from_slice(&body);
            if b.len() > 73 && prefix == [1] {
                // Put hostile length prefixes where the cluster id's length goes.
                let end = (73 + varints.len()).min(b.len());
                b[73..end].copy_from_slice(&varints[..end - 73]);
            }
            let crc = crc32_ieee(&b);
            b.extend_from_slice(&crc.to_be_bytes());
            let text = format!("{TOKEN_PREFIX}1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b));
            check(&text)?;
        }
    }

    /// Tokens round-trip; every single-character substitution is refused.
    #[test]
    fn join_token_round_trip_and_mutations(
        t in token_strategy(),
        at in any::<Index>(),
        replacement in select("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/= é".chars().collect::<Vec<_>>()),
    ) {
        let text = t.encode();
        prop_assert_eq!(JoinToken::decode(&text), Ok(t));
        let (i, original) = text.char_indices().nth(at.index(text.chars().count())).unwrap();
        prop_assume!(original != replacement);
        let mut bad = text.clone();
        bad.replace_range(i..i + original.len_utf8(), &replacement.to_string());
        prop_assert!(JoinToken::decode(&bad).is_err(), "{:?} -> {:?} at {} accepted", original, replacement, i);
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster wire frames and control messages
// ---------------------------------------------------------------------------------------------

fn control_request_strategy() -> impl Strategy<Value = ControlRequest> {
    let grant = (any::<bool>(), any::<bool>(), any::<bool>())
        .prop_map(|(read, write, owner)| Grant { read, write, owner });
    prop_oneof![
        Just(ControlRequest::Status),
        Just(ControlRequest::ListKeys),
        ".{0,20}".prop_map(|name| ControlRequest::CreateKey { name }),
        ".{0,20}".prop_map(|name| ControlRequest::DeleteKey { name }),
        (".{0,20}", ".{0,20}", grant.clone()).prop_map(|(name, bucket, grant)| {
            ControlRequest::AllowKey {
                name,
                bucket,
                grant,
            }
        }),
        (".{0,20}", ".{0,20}", grant).prop_map(|(name, bucket, grant)| ControlRequest::DenyKey {
            name,
            bucket,
            grant
        }),
        any::<u64>().prop_map(|ttl_ms| ControlRequest::MintJoinToken { ttl_ms }),
    ]
}

const WIRE_TOKENS: &[&str] = &[
    "{",
    "}",
    "\"type\"",
    ":",
    ",",
    "\"status\"",
    "\"create_key\"",
    "\"allow_key\"",
    "\"mint_join_token\"",
    "\"name\"",
    "\"grant\"",
    "\"read\"",
    "true",
    "\"ttl_ms\"",
    "18446744073709551616",
    "1",
    "[",
    "]",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\n",
];

proptest! {
    #![proptest_config(config(1500))]

    /// Frame splitting: a short buffer waits, an oversized announcement is refused before
    /// anything is allocated, and a split frame is exactly its header's length.
    #[test]
    fn wire_frames_from_any_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..64),
        payload in prop::collection::vec(any::<u8>(), 0..256),
        junk in prop::collection::vec(any::<u8>(), 0..16),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        match decode_frame(&raw) {
            Ok(None) => prop_assert!(raw.len() < FRAME_HEADER_BYTES
                || raw.len() < FRAME_HEADER_BYTES + u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize),
            Ok(Some((p, used))) => {
                prop_assert_eq!(used, FRAME_HEADER_BYTES + p.len());
                prop_assert_eq!(encode_frame(p).unwrap(), raw[..used].to_vec());
            }
            Err(WireError::FrameTooLarge { len, max }) => {
                prop_assert_eq!(max, FRAME_BYTES_MAX);
                prop_assert!(len > FRAME_BYTES_MAX);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
        let mut frame = encode_frame(&payload).unwrap();
        frame.extend_from_slice(&junk);
        let (p, used) = decode_frame(&frame).unwrap().unwrap();
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!(used, FRAME_HEADER_BYTES + payload.len());
        // A changed frame splits into something that encodes back to the bytes it used.
        let i = at.index(frame.len());
        frame[i] ^= flip;
        if let Ok(Some((p, used))) = decode_frame(&frame) {
            prop_assert_eq!(encode_frame(p).unwrap(), frame[..used].to_vec());
        }
    }

    /// Control messages: any payload decodes or gives a one-line Decode error; requests of
    /// every kind round-trip through a frame.
    #[test]
    fn wire_messages(
        raw in prop_oneof![soup(WIRE_TOKENS, 30), prop::collection::vec(any::<u8>(), 0..64)],
        req in control_request_strategy(),
    ) {
        let one_line = |r: Result<(), WireError>| -> Result<(), TestCaseError> {
            match r {
                Ok(()) => {}
                Err(WireError::Decode(m)) => prop_assert!(!m.contains('\n')),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
            Ok(())
        };
        one_line(decode_message::<ControlRequest>(&raw).map(drop))?;
        one_line(decode_message::<ControlResponse>(&raw).map(drop))?;
        one_line(decode_message::<StatusReport>(&raw).map(drop))?;
        let frame = encode_message(&req).unwrap();
        let (payload, used) = decode_frame(&frame).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(decode_message::<ControlRequest>(payload), Ok(req));
    }
}

// ---------------------------------------------------------------------------------------------
// Small text parsers: continuation tokens, dates, checksums, names
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2000))]

    /// Continuation tokens: arbitrary text is refused with InvalidArgument or decodes to a
    /// bound whose token is that very text; bounds round-trip; changed tokens never misread.
    #[test]
    fn continuation_tokens(
        text in prop_oneof![".{0,40}", "[A-Za-z0-9_-]{0,40}"],
        after in ".{0,40}",
        at in any::<Index>(),
        replacement in select("ABab09-_=+/ ".chars().collect::<Vec<_>>()),
    ) {
        match decode_continuation(&text) {
            Ok(bound) => prop_assert_eq!(encode_continuation(&bound), text),
            Err(e) => prop_assert_eq!(e.code, InvalidArgument),
        }
        let token = encode_continuation(&after);
        prop_assert_eq!(decode_continuation(&token), Ok(after));
        let bad = mutate_ascii(&token, at, replacement);
        if let Ok(bound) = decode_continuation(&bad) {
            prop_assert_eq!(encode_continuation(&bound), bad);
        }
    }

    /// Dates: arbitrary text never panics (the year field of an HTTP date is a full integer);
    /// dates we write read back; an accepted SigV4 date has the documented shape.
    #[test]
    fn wire_dates(
        text in soup_str(&["Fri, ", "24 ", "May ", "Feb ", "2013 ", "9223372036854775807 ", "-9223372036854775808 ", "99999999999999 ", "00:00:00 ", "23:59:60 ", "GMT", "T", "Z", "20130524", "000000", "+0000"], 8),
        year in any::<i64>(),
        secs in 0u64..253_402_300_800,
    ) {
        let _ = parse_http_date(&text);
        let _ = parse_http_date(&format!("Fri, 24 Feb {year} 00:00:00 GMT"));
        let _ = parse_http_date(&format!("Fri, 24 May {year} 23:59:59 GMT"));
        if let Some(ms) = parse_amz_date(&text) {
            prop_assert_eq!(text.len(), 16);
            prop_assert_eq!(ms % 1000, 0);
        }
        let ms = secs * 1000;
        prop_assert_eq!(parse_amz_date(&amz_date(ms)), Some(ms));
        prop_assert_eq!(parse_http_date(&http_date(ms)), Some(ms));
    }

    /// Checksum header values: accepted only as canonical base64 of the algorithm's length
    /// (so the value is exactly what we would write), otherwise InvalidRequest naming the
    /// header.
    #[test]
    fn checksum_values(
        algo in select(ChecksumAlgo::ALL.to_vec()),
        text in prop_oneof![".{0,50}", "[A-Za-z0-9+/=]{0,48}"],
        raw in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        for value in [text.clone(), checksum::to_b64(&raw)] {
            match checksum::validate_b64(algo, &value) {
                Ok(bytes) => {
                    prop_assert_eq!(bytes.len(), algo.raw_len());
                    prop_assert_eq!(checksum::to_b64(&bytes), value.trim());
                }
                Err(e) => {
                    prop_assert_eq!(e.code, InvalidRequest);
                    prop_assert!(e.message().contains(algo.header_name()));
                }
            }
        }
        let exact = &raw[..raw.len().min(algo.raw_len())];
        if exact.len() == algo.raw_len() {
            prop_assert_eq!(checksum::validate_b64(algo, &checksum::to_b64(exact)), Ok(exact.to_vec()));
        }
    }

    /// Bucket names and keys: the verdict matches an independent statement of S3's rules,
    /// with the documented error codes.
    #[test]
    fn names_follow_the_rules(
        bucket in prop_oneof![
            "[a-z0-9.-]{0,70}",
            soup_str(&["a", "1", ".", "-", "..", "xn--", "sthree-", "-s3alias", "--ol-s3", "A", "_", "é", "192.168.0.1"], 8),
        ],
        key in prop_oneof![".{0,20}", "[a-z]{1000,1030}", "é{500,520}"],
    ) {
        let b = bucket.as_bytes();
        let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-';
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let groups: Vec<&str> = bucket.split('.').collect();
        let ip_shaped = groups.len() == 4
            && groups.iter().all(|g| (1..=3).contains(&g.len()) && g.bytes().all(|c| c.is_ascii_digit()));
        let valid = (3..=63).contains(&b.len())
            && b.iter().all(|&c| ok_char(c))
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && !bucket.contains("..")
            && !ip_shaped
            && !bucket.starts_with("xn--")
            && !bucket.starts_with("sthree-")
            && !bucket.ends_with("-s3alias")
            && !bucket.ends_with("--ol-s3");
        match validate_bucket_name(&bucket) {
            Ok(()) => prop_assert!(valid, "{:?} accepted", bucket),
            Err(e) => {
                prop_assert!(!valid, "{:?} refused: {}", bucket, e);
                prop_assert_eq!(e.code, InvalidBucketName);
            }
        }
        match validate_key(&key) {
            Ok(()) => prop_assert!(!key.is_empty() && key.len() <= KEY_BYTES_MAX),
            Err(e) if key.is_empty() => prop_assert_eq!(e.code, InvalidArgument),
            Err(e) => {
                prop_assert!(key.len() > KEY_BYTES_MAX);
                prop_assert_eq!(e.code, KeyTooLongError);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Large inputs, for every parser at once
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(6))]

    /// Hundreds of KiB of noise (raw, or lossily made text) through every parser: each answers
    /// with a documented error (or, for the few that accept noise, a sane value).
    #[test]
    fn every_parser_survives_large_noise(
        raw in prop::collection::vec(any::<u8>(), 0..400_000),
        boundary in BOUNDARY,
    ) {
        let text = String::from_utf8_lossy(&raw).into_owned();
        for kind in 0..4 {
            let mut d = chunk_decoder(kind);
            let mut out = Vec::new();
            if let Err(e) = d.push(&raw, &mut out) {
                prop_assert!(code_in(&e, &[InvalidRequest, SignatureDoesNotMatch]), "{e}");
            }
            if let Err(e) = d.finish() {
                prop_assert!(code_in(&e, &[IncompleteBody, InvalidRequest]), "{e}");
            }
        }
        let (p, _, r) = form_run(&boundary, &raw, &[4096, 65_536, 200_000]);
        if let Err(e) = r {
            prop_assert!(code_in(&e, &[MalformedPOSTRequest, InvalidArgument]));
        }
        prop_assert!(held(&p) < 16 * raw.len() + 4096);
        check_xml_readers(&raw)?;
        check_policy(&text)?;
        check_policy(&b64(&raw))?;
        let headers = vec![("authorization".to_string(), text.clone()), ("date".to_string(), text.clone())];
        let req = RequestParts { method: "GET", raw_path: &text, raw_query: &text, headers: &headers };
        if let Ok(parsed) = sigv4::parse(&req) {
            check_parsed(&parsed, &headers)?;
        }
        let _ = (canonical_uri(&text), canonical_query(&text), decode_query(&text));
        if let Ok(h) = ShardHeader::decode(&raw) {
            prop_assert_eq!(&h.encode()[..], &raw[..HEADER_BYTES]);
        }
        if let Some((i, p, x)) = parse_shard_file_name(&text) {
            prop_assert_eq!(shard_file_name(&i, p, x), text.clone());
        }
        prop_assert!(JoinToken::decode(&text).is_err());
        let _ = decode_frame(&raw);
        prop_assert!(decode_message::<ControlRequest>(&raw).is_err());
        if let Ok(bound) = decode_continuation(&text) {
            prop_assert_eq!(encode_continuation(&bound), text.clone());
        }
        prop_assert!(parse_amz_date(&text).is_none() || text.len() == 16);
        let _ = parse_http_date(&text);
        let _ = parse_iso8601(&text);
        for algo in ChecksumAlgo::ALL {
            if let Ok(bytes) = checksum::validate_b64(algo, &text) {
                prop_assert_eq!(checksum::to_b64(&bytes), text.trim());
            }
        }
        prop_assert!(validate_bucket_name(&text).is_err() || text.len() <= 63);
        prop_assert!(validate_key(&text).is_err() || text.len() <= KEY_BYTES_MAX);
    }
}
