//! The `aws-chunked` body encoding: a push-based decoder that strips the chunk framing, checks
//! each chunk's signature against the SigV4 chain and collects trailing headers, plus the
//! client-side encoders used by tests and the load generator.
//!
//! The decoder holds at most one framing line (chunk header or trailer, bounded by
//! [`LINE_BYTES_MAX`]) and at most [`TRAILERS_MAX`] trailing headers; payload bytes go straight
//! to the caller. A chunk's signature can only be checked once the whole chunk has passed, so the
//! caller must treat everything it received as provisional until [`ChunkedDecoder::finish`]
//! succeeds.

use sha2::{Digest, Sha256};

use crate::s3err::{S3Error, S3ErrorCode};
use crate::sigv4::{self, SigningContext, EMPTY_SHA256_HEX};

/// The longest chunk-header or trailer line accepted, CRLF included. Real lines are well under
/// 200 bytes; the bound keeps a hostile body from growing our buffer.
pub const LINE_BYTES_MAX: usize = 4096;

/// The most trailing headers accepted. Real bodies send one or two (a checksum and its
/// signature); the bound keeps a hostile body from growing the trailer list without end.
pub const TRAILERS_MAX: usize = 32;

/// The string-to-sign algorithm line for a chunk.
const CHUNK_ALGORITHM: &str = "AWS4-HMAC-SHA256-PAYLOAD";
/// The string-to-sign algorithm line for the trailing headers.
const TRAILER_ALGORITHM: &str = "AWS4-HMAC-SHA256-TRAILER";
/// The trailer that carries the trailing headers' own signature.
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";

/// Whether chunks carry signatures, and if so what they chain from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkSigning {
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: no chunk signatures.
    Unsigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: every chunk signed, chained from the seed.
    Signed {
        /// The request's signing key.
        signing_key: [u8; 32],
        /// The request timestamp, `20130524T000000Z`.
        amz_date: String,
        /// The credential scope, `20130524/us-east-1/s3/aws4_request`.
        scope: String,
        /// The verified signature of the request headers.
        seed_signature: String,
    },
}

impl From<SigningContext> for ChunkSigning {
    fn from(ctx: SigningContext) -> Self {
        ChunkSigning::Signed {
            signing_key: ctx.signing_key,
            amz_date: ctx.amz_date,
            scope: ctx.scope,
            seed_signature: ctx.seed_signature,
        }
    }
}

/// Where the decoder is in the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a `hex-size[;chunk-signature=...]` line.
    Header,
    /// Passing through payload bytes of the current chunk.
    Data { remaining: u64 },
    /// Expecting the CR that ends a chunk's data.
    DataCr,
    /// Expecting the LF that ends a chunk's data.
    DataLf,
    /// After the zero-size chunk: reading trailer lines until an empty one.
    Trailer,
    /// The body is complete; nothing more may follow.
    Done,
    /// An error was reported; the body is rejected.
    Failed,
}

/// Decodes an `aws-chunked` body pushed in pieces of any size.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    signing: ChunkSigning,
    expect_trailer: bool,
    state: State,
    /// The framing line being accumulated, CRLF included once complete.
    line: Vec<u8>,
    /// The signature the current chunk claimed in its header.
    claimed_signature: String,
    /// The last verified signature in the chain.
    previous_signature: String,
    /// Hash of the current chunk's data, only fed for signed bodies.
    chunk_hash: Sha256,
    trailers: Vec<(String, String)>,
    trailer_signature_seen: bool,
    decoded_bytes: u64,
}

fn framing(message: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidRequest, message)
}

fn bad_signature() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::SignatureDoesNotMatch,
        "The chunk signature we calculated does not match the signature you provided.",
    )
}

impl ChunkedDecoder {
    /// A decoder for a body signed as `signing`; `expect_trailer` for the `-TRAILER` variants.
    pub fn new(signing: ChunkSigning, expect_trailer: bool) -> Self {
        let previous_signature = match &signing {
            ChunkSigning::Signed { seed_signature, .. } => seed_signature.clone(),
            ChunkSigning::Unsigned => String::new(),
        };
        ChunkedDecoder {
            signing,
            expect_trailer,
            state: State::Header,
            line: Vec::new(),
            claimed_signature: String::new(),
            previous_signature,
            chunk_hash: Sha256::new(),
            trailers: Vec::new(),
            trailer_signature_seen: false,
            decoded_bytes: 0,
        }
    }

    /// Consumes all of `input`, appending decoded payload bytes to `out`. Chunk signatures are
    /// checked as each chunk ends (SignatureDoesNotMatch); malformed framing is InvalidRequest.
    /// After an error every later call fails too.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), S3Error> {
        let result = self.push_inner(input, out);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), S3Error> {
        while !input.is_empty() {
            match self.state {
                State::Failed => return Err(framing("The chunked body was already rejected")),
                State::Done => {
                    return Err(framing(
                        "Data found after the final chunk of an aws-chunked body",
                    ))
                }
                State::Header | State::Trailer => {
                    let taken = self.take_line(input)?;
                    input = &input[taken..];
                    if self.line.ends_with(b"\n") {
                        let line = std::mem::take(&mut self.line);
                        let text = Self::line_text(&line)?;
                        if self.state == State::Header {
                            self.on_header(&text)?;
                        } else {
                            self.on_trailer(&text)?;
                        }
                    }
                }
                State::Data { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let (data, rest) = input.split_at(n);
                    if matches!(self.signing, ChunkSigning::Signed { .. }) {
                        self.chunk_hash.update(data);
                    }
                    out.extend_from_slice(data);
                    self.decoded_bytes += n as u64;
                    input = rest;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                State::DataCr | State::DataLf => {
                    let want = if self.state == State::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if input[0] != want {
                        return Err(framing("Chunk data is not followed by CRLF"));
                    }
                    input = &input[1..];
                    if self.state == State::DataCr {
                        self.state = State::DataLf;
                    } else {
                        let hash = hex::encode(
                            std::mem::replace(&mut self.chunk_hash, Sha256::new()).finalize(),
                        );
                        self.verify_chunk(&hash)?;
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves bytes of `input` into the line buffer up to and including the first LF; returns
    /// how many were taken.
    fn take_line(&mut self, input: &[u8]) -> Result<usize, S3Error> {
        let end = input
            .iter()
            .position(|&b| b == b'\n')
            .map_or(input.len(), |i| i + 1);
        if self.line.len() + end > LINE_BYTES_MAX {
            return Err(framing(format!(
                "An aws-chunked header or trailer line exceeds {LINE_BYTES_MAX} bytes"
            )));
        }
        self.line.extend_from_slice(&input[..end]);
        Ok(end)
    }

    /// The text of a complete line without its CRLF.
    fn line_text(line: &[u8]) -> Result<String, S3Error> {
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Err(framing("An aws-chunked line does not end with CRLF"));
        };
        String::from_utf8(body.to_vec())
            .map_err(|_| framing("An aws-chunked header or trailer line is not UTF-8"))
    }

    fn on_header(&mut self, text: &str) -> Result<(), S3Error> {
        let (size_text, extensions) = text.split_once(';').unwrap_or((text, ""));
        let size_text = size_text.trim();
        if size_text.is_empty()
            || size_text.len() > 16
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(framing(format!("Invalid chunk size '{size_text}'")));
        }
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| framing(format!("Invalid chunk size '{size_text}'")))?;
        if let ChunkSigning::Signed { .. } = self.signing {
            let signature = extensions
                .split(';')
                .filter_map(|ext| ext.trim().strip_prefix("chunk-signature="))
                .next()
                .ok_or_else(|| framing("A signed chunk is missing its chunk-signature"))?;
            self.claimed_signature = signature.trim().to_ascii_lowercase();
        }
        if size == 0 {
            self.verify_chunk(EMPTY_SHA256_HEX)?;
            self.state = State::Trailer;
        } else {
            self.state = State::Data { remaining: size };
        }
        Ok(())
    }

    /// Checks the current chunk's claimed signature against the chain (signed bodies only).
    fn verify_chunk(&mut self, data_hash_hex: &str) -> Result<(), S3Error> {
        let ChunkSigning::Signed {
            signing_key,
            amz_date,
            scope,
            ..
        } = &self.signing
        else {
            return Ok(());
        };
        let expected = chunk_signature(
            signing_key,
            amz_date,
            scope,
            &self.previous_signature,
            data_hash_hex,
        );
        if !sigv4::signatures_equal(&expected, &self.claimed_signature) {
            return Err(bad_signature());
        }
        self.previous_signature = expected;
        Ok(())
    }

    fn on_trailer(&mut self, text: &str) -> Result<(), S3Error> {
        if text.is_empty() {
            let signed = matches!(self.signing, ChunkSigning::Signed { .. });
            if signed && self.expect_trailer && !self.trailer_signature_seen {
                return Err(framing(
                    "The trailing headers are missing x-amz-trailer-signature",
                ));
            }
            self.state = State::Done;
            return Ok(());
        }
        if !self.expect_trailer {
            return Err(framing("Trailing headers were sent but none were declared"));
        }
        if self.trailer_signature_seen {
            return Err(framing("Trailing headers follow x-amz-trailer-signature"));
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(framing(format!("Malformed trailing header '{text}'")));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == TRAILER_SIGNATURE {
            if let ChunkSigning::Signed {
                signing_key,
                amz_date,
                scope,
                ..
            } = &self.signing
            {
                let expected = trailer_signature(
                    signing_key,
                    amz_date,
                    scope,
                    &self.previous_signature,
                    &self.trailers,
                );
                if !sigv4::signatures_equal(&expected, &value.to_ascii_lowercase()) {
                    return Err(bad_signature());
                }
                self.trailer_signature_seen = true;
            }
            return Ok(());
        }
        if self.trailers.len() >= TRAILERS_MAX {
            return Err(framing(format!(
                "An aws-chunked body sent more than {TRAILERS_MAX} trailing headers"
            )));
        }
        self.trailers.push((name, value));
        Ok(())
    }

    /// Call at the end of the body: IncompleteBody unless the final zero-size chunk (and the
    /// trailer section with its signature, when signed trailers were declared) was fully seen.
    pub fn finish(&self) -> Result<(), S3Error> {
        match self.state {
            State::Done => Ok(()),
            // Unsigned trailers complete once a trailer line has ended, even if the client
            // stops before the empty line: there is nothing left to verify.
            State::Trailer
                if self.line.is_empty()
                    && !self.trailers.is_empty()
                    && self.signing == ChunkSigning::Unsigned =>
            {
                Ok(())
            }
            State::Failed => Err(framing("The chunked body was rejected")),
            _ => Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                "The aws-chunked body ended before its final chunk",
            )),
        }
    }

    /// The trailing headers received, lowercase names, e.g. `("x-amz-checksum-crc32", "...")`.
    /// The trailer signature itself is not listed.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Payload bytes decoded so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded_bytes
    }
}

/// The signature of one chunk: HMAC over the `AWS4-HMAC-SHA256-PAYLOAD` string to sign that
/// chains from `previous_signature` and covers the chunk data's SHA-256.
pub fn chunk_signature(
    signing_key: &[u8; 32],
    amz_date: &str,
    scope: &str,
    previous_signature: &str,
    data_hash_hex: &str,
) -> String {
    let sts = format!(
        "{CHUNK_ALGORITHM}\n{amz_date}\n{scope}\n{previous_signature}\n{EMPTY_SHA256_HEX}\n{data_hash_hex}"
    );
    sigv4::signature_hex(signing_key, &sts)
}

/// The signature of the trailing headers, chained from the final chunk's signature; the
/// headers are hashed in canonical form (`name:value\n`, sorted by name).
pub fn trailer_signature(
    signing_key: &[u8; 32],
    amz_date: &str,
    scope: &str,
    previous_signature: &str,
    trailers: &[(String, String)],
) -> String {
    let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
    sorted.sort();
    let block: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let sts = format!(
        "{TRAILER_ALGORITHM}\n{amz_date}\n{scope}\n{previous_signature}\n{}",
        sigv4::sha256_hex(block.as_bytes())
    );
    sigv4::signature_hex(signing_key, &sts)
}

/// Client side: encodes `payload` as signed aws-chunked with chunks of `chunk_bytes`, chained
/// from `ctx.seed_signature`, ending with the zero-size chunk; with `Some(trailers)` the
/// trailing headers and their signature follow (the `-TRAILER` variant).
pub fn encode_signed_chunks(
    payload: &[u8],
    chunk_bytes: usize,
    ctx: &SigningContext,
    trailers: Option<&[(String, String)]>,
) -> Vec<u8> {
    assert!(chunk_bytes > 0, "chunk size must be positive");
    let mut out = Vec::with_capacity(payload.len() + 128 * (payload.len() / chunk_bytes + 3));
    let mut previous = ctx.seed_signature.clone();
    let sign = |previous: &str, data: &[u8]| {
        chunk_signature(
            &ctx.signing_key,
            &ctx.amz_date,
            &ctx.scope,
            previous,
            &sigv4::sha256_hex(data),
        )
    };
    for data in payload.chunks(chunk_bytes).chain(std::iter::once(&[][..])) {
        let signature = sign(&previous, data);
        out.extend_from_slice(
            format!("{:x};chunk-signature={signature}\r\n", data.len()).as_bytes(),
        );
        if !data.is_empty() {
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        previous = signature;
    }
    if let Some(trailers) = trailers {
        for (name, value) in trailers {
            out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        let signature = trailer_signature(
            &ctx.signing_key,
            &ctx.amz_date,
            &ctx.scope,
            &previous,
            trailers,
        );
        out.extend_from_slice(format!("{TRAILER_SIGNATURE}:{signature}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Client side: encodes `payload` as `STREAMING-UNSIGNED-PAYLOAD-TRAILER` aws-chunked with
/// chunks of `chunk_bytes`, followed by `trailers`.
pub fn encode_unsigned_trailer_chunks(
    payload: &[u8],
    chunk_bytes: usize,
    trailers: &[(String, String)],
) -> Vec<u8> {
    assert!(chunk_bytes > 0, "chunk size must be positive");
    let mut out = Vec::with_capacity(payload.len() + 16 * (payload.len() / chunk_bytes + 3));
    for data in payload.chunks(chunk_bytes) {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}
