//! The aws-chunked decoder: it must reproduce the payload from AWS's documented signed stream,
//! refuse any chunk or trailer whose signature does not chain, refuse malformed framing, report
//! a truncated body as IncompleteBody, and give the same answer however the body is split
//! into pushes (the property test feeds random splits).

use hamster_protocol::chunked::{
    encode_signed_chunks, encode_unsigned_trailer_chunks, ChunkSigning, ChunkedDecoder,
    LINE_BYTES_MAX,
};
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::sigv4::{signing_key, SigningContext};
use proptest::prelude::*;

/// The context of AWS's chunked-upload example (seed = the request's documented signature).
fn example_ctx() -> SigningContext {
    SigningContext {
        signing_key: signing_key(
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

fn example_body() -> (Vec<u8>, Vec<u8>) {
    let payload = vec![b'a'; 66_560];
    (
        encode_signed_chunks(&payload, 65_536, &example_ctx(), None),
        payload,
    )
}

fn decode_all(decoder: &mut ChunkedDecoder, body: &[u8]) -> Result<Vec<u8>, S3Error> {
    let mut out = Vec::new();
    decoder.push(body, &mut out)?;
    decoder.finish()?;
    Ok(out)
}

fn signed(trailer: bool) -> ChunkedDecoder {
    ChunkedDecoder::new(example_ctx().into(), trailer)
}

fn trailer() -> Vec<(String, String)> {
    vec![("x-amz-checksum-crc32c".to_string(), "sOO8/Q==".to_string())]
}

#[test]
fn t10_documented_signed_stream_decodes() {
    let (body, payload) = example_body();
    let text = String::from_utf8_lossy(&body);
    // The documented chunk signatures are what our encoder chains to.
    for sig in [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ] {
        assert!(text.contains(sig), "missing {sig}");
    }
    assert_eq!(body.len(), 66_824, "the documented Content-Length");
    let mut d = signed(false);
    assert_eq!(decode_all(&mut d, &body).unwrap(), payload);
    assert_eq!(d.decoded_len(), 66_560);
    assert!(d.trailers().is_empty());
}

#[test]
fn t20_bad_chunk_signature_or_data_is_rejected() {
    let (body, _) = example_body();
    let text = String::from_utf8(body.clone()).unwrap();
    for (from, to) in [
        ("ad80c730", "ad80c731"),
        ("0055627c", "1055627c"),
        ("b6c6ea8a", "b6c6ea8b"),
    ] {
        let bad = text.replacen(from, to, 1);
        let e = decode_all(&mut signed(false), bad.as_bytes()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch, "{from}");
    }
    // One flipped payload byte breaks the chain at that chunk.
    let mut flipped = body.clone();
    flipped[100] = b'b';
    let e = decode_all(&mut signed(false), &flipped).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
    // Chunks replayed under another seed do not verify.
    let mut other = example_ctx();
    other.seed_signature = "0".repeat(64);
    let e = decode_all(&mut ChunkedDecoder::new(other.into(), false), &body).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
    // And a decoder that failed keeps failing.
    let mut d = signed(false);
    let mut out = Vec::new();
    assert!(d.push(&flipped, &mut out).is_err());
    assert!(d.push(b"0\r\n", &mut out).is_err());
    assert!(d.finish().is_err());
}

#[test]
fn t30_truncated_stream_is_incomplete_at_every_cut() {
    let ctx = example_ctx();
    let body = encode_signed_chunks(b"hello world, chunked", 7, &ctx, None);
    for cut in 0..body.len() {
        let mut d = ChunkedDecoder::new(ctx.clone().into(), false);
        let mut out = Vec::new();
        d.push(&body[..cut], &mut out)
            .expect("a prefix is not an error");
        let e = d.finish().unwrap_err();
        assert_eq!(e.code, S3ErrorCode::IncompleteBody, "cut at {cut}");
    }
}

#[test]
fn t40_malformed_framing_is_refused() {
    let unsigned = || ChunkedDecoder::new(ChunkSigning::Unsigned, true);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("non-hex size", b"zz\r\nab\r\n0\r\n\r\n".to_vec()),
        ("empty size", b"\r\n".to_vec()),
        ("bare LF", b"2\nab\r\n0\r\n\r\n".to_vec()),
        ("missing CRLF after data", b"2\r\nabc\r\n0\r\n\r\n".to_vec()),
        (
            "data after final chunk",
            b"2\r\nab\r\n0\r\n\r\nextra".to_vec(),
        ),
        ("trailer without colon", b"0\r\nnocolon\r\n\r\n".to_vec()),
        ("size overflow", b"11111111111111111\r\n".to_vec()),
    ];
    for (why, body) in cases {
        let e = decode_all(&mut unsigned(), &body).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InvalidRequest, "{why}");
    }
    let mut long = vec![b'1'; LINE_BYTES_MAX + 1];
    long.extend_from_slice(b"\r\n");
    let e = decode_all(&mut unsigned(), &long).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
    // A signed body must carry a chunk-signature on every chunk.
    let e = decode_all(&mut signed(false), b"0\r\n\r\n").unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
    // Trailers that were not declared are refused.
    let e = decode_all(
        &mut ChunkedDecoder::new(ChunkSigning::Unsigned, false),
        b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
    )
    .unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
}

#[test]
fn t50_signed_trailers_verify_and_parse() {
    let ctx = example_ctx();
    let body = encode_signed_chunks(b"some data", 4, &ctx, Some(&trailer()));
    let mut d = signed(true);
    assert_eq!(decode_all(&mut d, &body).unwrap(), b"some data");
    assert_eq!(d.trailers(), &trailer()[..]);

    let text = String::from_utf8(body.clone()).unwrap();
    let forged = text.replace("sOO8/Q==", "AAAAAA==");
    let e = decode_all(&mut signed(true), forged.as_bytes()).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);

    let unsigned_tail = text
        .split("x-amz-trailer-signature")
        .next()
        .unwrap()
        .to_string()
        + "\r\n";
    let e = decode_all(&mut signed(true), unsigned_tail.as_bytes()).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
}

#[test]
fn t51_unsigned_trailers_parse() {
    let body = encode_unsigned_trailer_chunks(b"0123456789", 3, &trailer());
    assert!(body.starts_with(b"3\r\n012\r\n"));
    let mut d = ChunkedDecoder::new(ChunkSigning::Unsigned, true);
    assert_eq!(decode_all(&mut d, &body).unwrap(), b"0123456789");
    assert_eq!(d.trailers(), &trailer()[..]);
    assert_eq!(d.decoded_len(), 10);
    // Names are lowercased and values trimmed.
    let mut d = ChunkedDecoder::new(ChunkSigning::Unsigned, true);
    decode_all(&mut d, b"0\r\nX-Amz-Checksum-CRC32: AAAAAA== \r\n\r\n").unwrap();
    assert_eq!(
        d.trailers(),
        &[("x-amz-checksum-crc32".to_string(), "AAAAAA==".to_string())][..]
    );
}

/// What a decode yields: the payload and the trailers.
type Decoded = (Vec<u8>, Vec<(String, String)>);

fn split_decode(mut d: ChunkedDecoder, body: &[u8], cuts: &[usize]) -> Result<Decoded, S3Error> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain(std::iter::once(body.len())) {
        d.push(&body[start..p], &mut out)?;
        start = p;
    }
    d.finish()?;
    Ok((out, d.trailers().to_vec()))
}

proptest! {
    #[test]
    fn t90_any_split_gives_the_same_output(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..130,
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        with_trailer in any::<bool>(),
    ) {
        let ctx = example_ctx();
        let trailers = trailer();
        let body = encode_signed_chunks(&payload, chunk, &ctx, with_trailer.then_some(&trailers[..]));
        let (out, got_trailers) = split_decode(ChunkedDecoder::new(ctx.into(), with_trailer), &body, &cuts).unwrap();
        prop_assert_eq!(&out, &payload);
        prop_assert_eq!(got_trailers.is_empty(), !with_trailer);

        let body = encode_unsigned_trailer_chunks(&payload, chunk, &trailers);
        let (out, got_trailers) = split_decode(ChunkedDecoder::new(ChunkSigning::Unsigned, true), &body, &cuts).unwrap();
        prop_assert_eq!(&out, &payload);
        prop_assert_eq!(got_trailers, trailers);
    }

    #[test]
    fn t91_a_flipped_byte_never_decodes_to_other_data(
        payload in proptest::collection::vec(any::<u8>(), 1..300),
        chunk in 1usize..64,
        at in any::<usize>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let ctx = example_ctx();
        let mut body = encode_signed_chunks(&payload, chunk, &ctx, None);
        let i = at % body.len();
        body[i] ^= 0x01;
        // Every byte of a signed stream is covered by the framing rules or a signature.
        let result = split_decode(ChunkedDecoder::new(ctx.into(), false), &body, &cuts);
        prop_assert!(result.is_err(), "flip at {} accepted", i);
    }
}
