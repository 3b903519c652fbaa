//! Request bodies as the client signed them: raw, SHA-256-checked, or aws-chunked (per-chunk
//! signatures, optional trailing checksums). Bytes are handed on as they arrive; nothing here
//! holds more than one network chunk plus one chunk header.
//!
//! A client that stops sending in the middle of a body is cut off: when no byte arrives for the
//! front's idle timeout the read fails with `RequestTimeout`, the operation drops what it had
//! started (a part writer aborts its shards), and the connection closes because its body was
//! never read to the end.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use std::time::Duration;

use futures_util::StreamExt;
use hamster_protocol::chunked::{ChunkSigning, ChunkedDecoder};
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::sigv4::{PayloadMode, SigningContext};
use sha2::{Digest, Sha256};

/// A decoded request body.
pub struct BodyReader {
    payload: Payload,
    decoder: Option<ChunkedDecoder>,
    sha256: Option<(Sha256, [u8; 32])>,
    scratch: Vec<u8>,
    finished: bool,
    /// Longest wait for the next byte before the body counts as abandoned.
    idle: Duration,
    /// Bytes received on the wire (before aws-chunked decoding).
    pub wire_bytes: u64,
}

/// The next network chunk of `payload`, or `RequestTimeout` if none arrives within `idle`.
pub async fn next_chunk(
    payload: &mut Payload,
    idle: Duration,
) -> Result<Option<Result<Bytes, PayloadError>>, S3Error> {
    tokio::time::timeout(idle, payload.next())
        .await
        .map_err(|_| {
            S3Error::with_message(
                S3ErrorCode::RequestTimeout,
                format!(
                    "no byte of the request body arrived for {} ms; the upload is abandoned",
                    idle.as_millis()
                ),
            )
        })
}

impl BodyReader {
    /// Wraps a payload signed as `mode`; a wait of more than `idle` for the next byte fails.
    pub fn new(
        payload: Payload,
        mode: &PayloadMode,
        signing: &SigningContext,
        idle: Duration,
    ) -> Self {
        let signed = || ChunkSigning::Signed {
            signing_key: signing.signing_key,
            amz_date: signing.amz_date.clone(),
            scope: signing.scope.clone(),
            seed_signature: signing.seed_signature.clone(),
        };
        let (decoder, sha256) = match mode {
            PayloadMode::Unsigned => (None, None),
            PayloadMode::Sha256(h) => (None, Some((Sha256::new(), *h))),
            PayloadMode::StreamingSigned => (Some(ChunkedDecoder::new(signed(), false)), None),
            PayloadMode::StreamingSignedTrailer => {
                (Some(ChunkedDecoder::new(signed(), true)), None)
            }
            PayloadMode::StreamingUnsignedTrailer => (
                Some(ChunkedDecoder::new(ChunkSigning::Unsigned, true)),
                None,
            ),
        };
        BodyReader {
            payload,
            decoder,
            sha256,
            scratch: Vec::new(),
            finished: false,
            idle,
            wire_bytes: 0,
        }
    }

    /// The next piece of decoded body, `None` at a complete, verified end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, S3Error> {
        loop {
            if self.finished {
                return Ok(None);
            }
            match next_chunk(&mut self.payload, self.idle).await? {
                Some(Ok(chunk)) => {
                    self.wire_bytes += chunk.len() as u64;
                    let data = match &mut self.decoder {
                        None => chunk,
                        Some(d) => {
                            self.scratch.clear();
                            d.push(&chunk, &mut self.scratch)?;
                            if self.scratch.is_empty() {
                                continue;
                            }
                            Bytes::copy_from_slice(&self.scratch)
                        }
                    };
                    if let Some((h, _)) = &mut self.sha256 {
                        h.update(&data);
                    }
                    return Ok(Some(data));
                }
                Some(Err(e)) => return Err(payload_error(e)),
                None => {
                    self.finished = true;
                    self.verify_end()?;
                    return Ok(None);
                }
            }
        }
    }

    fn verify_end(&mut self) -> Result<(), S3Error> {
        if let Some(d) = &self.decoder {
            d.finish()?;
        }
        if let Some((h, expected)) = self.sha256.take() {
            let got: [u8; 32] = h.finalize().into();
            if got != expected {
                return Err(S3Error::new(S3ErrorCode::XAmzContentSHA256Mismatch));
            }
        }
        Ok(())
    }

    /// Trailing headers of an aws-chunked body (after the end), lowercase names.
    pub fn trailers(&self) -> &[(String, String)] {
        self.decoder.as_ref().map(|d| d.trailers()).unwrap_or(&[])
    }

    /// Reads a whole small body (XML documents), refusing more than `max` bytes.
    pub async fn read_all(&mut self, max: usize) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::new();
        while let Some(b) = self.next().await? {
            if out.len() + b.len() > max {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    format!("request body exceeds {max} bytes"),
                ));
            }
            out.extend_from_slice(&b);
        }
        Ok(out)
    }
}

fn payload_error(e: PayloadError) -> S3Error {
    match e {
        PayloadError::Incomplete(_) => S3Error::new(S3ErrorCode::IncompleteBody),
        PayloadError::Overflow => S3Error::new(S3ErrorCode::EntityTooLarge),
        other => S3Error::with_message(S3ErrorCode::IncompleteBody, other.to_string()),
    }
}
