//! The look at each HTTP/1 request head that the S3 listener takes before the HTTP layer parses
//! it. The HTTP layer refuses some heads on its own, before any S3 handler runs (a request
//! target over 64 KiB, a head over 128 KiB, more than 96 header lines), and answers those with
//! bare statuses and no S3 body. Heads like that are recognised here first, so the listener can
//! answer them in S3's words; everything else is passed on untouched.
//!
//! To know where the next head starts, the listener follows each request's framing: a head,
//! then `Content-Length` bytes of body. A framing this does not follow (chunked transfer
//! coding, an upgrade, anything it cannot read) makes it stop looking at that connection and
//! leave the rest to the HTTP layer. Everything refused here would be refused anyway, by the
//! HTTP layer (a Content-Length that is not one number, a head over its buffers) or by the S3
//! handler (a head over 64 KiB has a key over 1,024 bytes or a header section over 8 KiB), so
//! this check changes how a refusal is worded, never whether a request is served.

use crate::s3err::{S3Error, S3ErrorCode};

/// Longest request head (request line and header section) passed on to the HTTP layer; below
/// the HTTP layer's own limits, so this check always sees an oversized head first.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most header lines a request head may have (the HTTP layer's own limit).
pub const HEADER_LINES_MAX: usize = 96;
/// Largest header section an S3 request may have, as AWS counts it (names, values, separators).
pub const HEADER_SECTION_BYTES_MAX: usize = 8 * 1024;
/// Longest method token this check recognises as the start of a request line.
const METHOD_BYTES_MAX: usize = 16;
/// How much of an over-long request target is echoed in `<Resource>`.
const RESOURCE_ECHO_BYTES_MAX: usize = 256;

/// What the bytes collected so far for a request head amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Not enough bytes to decide; read more.
    Partial,
    /// A head of `len` bytes (leading blank lines included), followed by a body framed as
    /// `body`.
    Complete {
        /// Bytes of the head, up to and including its blank line.
        len: usize,
        /// How the body after it is framed.
        body: Body,
    },
    /// The head breaks a limit: answer with this error and close the connection.
    Refused(Refusal),
    /// Not a head this check understands: leave the connection to the HTTP layer.
    Unknown,
}

/// The framing of a request body, as far as this check follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes (none when the head declares no body).
    Length(u64),
    /// A framing this check does not follow (chunked coding, an upgrade).
    Untracked,
}

/// An S3 error for a head the HTTP layer would have refused without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error to answer with.
    pub error: S3Error,
    /// The start of the request target, for `<Resource>`.
    pub resource: String,
    /// Extra elements of the error body.
    pub extra: Vec<(&'static str, String)>,
}

/// Judges the bytes collected so far for one request head.
pub fn inspect(buf: &[u8]) -> Head {
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let rest = &buf[lead..];
    let Some(method_len) = method_len(rest) else {
        return if rest.len() <= METHOD_BYTES_MAX && rest.iter().all(u8::is_ascii_uppercase) {
            Head::Partial
        } else {
            Head::Unknown
        };
    };
    let window = &rest[..rest.len().min(HEAD_BYTES_MAX.saturating_sub(lead))];
    match head_end(window) {
        Some(end) => complete(&rest[..end], method_len, lead + end),
        None if buf.len() >= HEAD_BYTES_MAX => Head::Refused(too_large(rest, method_len)),
        None => Head::Partial,
    }
}

/// Length of the method token at the start of `rest`, if a space follows it.
fn method_len(rest: &[u8]) -> Option<usize> {
    let n = rest
        .iter()
        .take(METHOD_BYTES_MAX + 1)
        .position(|b| *b == b' ')?;
    (n > 0 && rest[..n].iter().all(u8::is_ascii_uppercase)).then_some(n)
}

/// Where the head in `buf` ends (just after its blank line), accepting bare LF line ends.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn complete(head: &[u8], method_len: usize, len: usize) -> Head {
    let mut headers = lines(head).skip(1);
    let mut count = 0usize;
    let mut length: Option<u64> = None;
    let mut body = None;
    for line in headers.by_ref() {
        count += 1;
        if count > HEADER_LINES_MAX {
            return Head::Refused(section_too_large(
                head,
                method_len,
                format!("a request may carry at most {HEADER_LINES_MAX} header lines"),
            ));
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Head::Unknown;
        };
        let name = &line[..colon];
        let value = std::str::from_utf8(&line[colon + 1..]).map(str::trim);
        if name.eq_ignore_ascii_case(b"content-length") {
            // The HTTP layer refuses these too, but with a bare 400.
            match value.ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(v) if length.is_none_or(|l| l == v) => length = Some(v),
                _ => {
                    return Head::Refused(Refusal {
                        error: S3Error::with_message(
                            S3ErrorCode::InvalidArgument,
                            "Content-Length must be one decimal number of bytes",
                        ),
                        resource: resource(head, method_len),
                        extra: Vec::new(),
                    })
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            body = Some(Body::Untracked);
        }
    }
    if &head[..method_len] == b"CONNECT" {
        body = Some(Body::Untracked);
    }
    Head::Complete {
        len,
        body: body.unwrap_or(Body::Length(length.unwrap_or(0))),
    }
}

/// The refusal of a head that reached [`HEAD_BYTES_MAX`] without ending.
fn too_large(rest: &[u8], method_len: usize) -> Refusal {
    // Only the bytes up to the limit count: a read may have brought more behind them.
    let rest = &rest[..rest.len().min(HEAD_BYTES_MAX)];
    let line_done = rest.contains(&b'\n');
    if line_done {
        return section_too_large(
            rest,
            method_len,
            format!("the request head is over {HEAD_BYTES_MAX} bytes"),
        );
    }
    // The request line alone fills the limit: its target is what is too long.
    let target = rest.get(method_len + 1..).unwrap_or_default();
    let in_query = target.contains(&b'?');
    let error = if in_query {
        S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!("the request URI is over {HEAD_BYTES_MAX} bytes"),
        )
    } else {
        S3Error::new(S3ErrorCode::KeyTooLongError)
    };
    Refusal {
        error,
        resource: resource(rest, method_len),
        extra: Vec::new(),
    }
}

fn section_too_large(head: &[u8], method_len: usize, why: String) -> Refusal {
    Refusal {
        error: S3Error::with_message(
            S3ErrorCode::RequestHeaderSectionTooLarge,
            format!(
                "{} ({why})",
                S3ErrorCode::RequestHeaderSectionTooLarge.default_message()
            ),
        ),
        resource: resource(head, method_len),
        extra: vec![("MaxSizeAllowed", HEADER_SECTION_BYTES_MAX.to_string())],
    }
}

/// The path of the request target (without its query), cut to a bounded length.
fn resource(rest: &[u8], method_len: usize) -> String {
    let target = rest.get(method_len + 1..).unwrap_or_default();
    let end = target
        .iter()
        .position(|b| matches!(b, b' ' | b'?' | b'\r' | b'\n'))
        .unwrap_or(target.len())
        .min(RESOURCE_ECHO_BYTES_MAX);
    String::from_utf8_lossy(&target[..end]).into_owned()
}

/// Size of a header section as AWS counts it: each name and value plus `": "` and CRLF.
pub fn header_section_bytes<'a>(headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    headers
        .into_iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_code(h: Head) -> S3ErrorCode {
        match h {
            Head::Refused(r) => r.error.code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_head_is_complete_with_its_body_length() {
        let h = b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nbody...";
        assert_eq!(
            inspect(h),
            Head::Complete {
                len: 50,
                body: Body::Length(12)
            }
        );
        let g = b"\r\nGET /b HTTP/1.1\nHost: x\n\n";
        assert_eq!(
            inspect(g),
            Head::Complete {
                len: g.len(),
                body: Body::Length(0)
            }
        );
    }

    #[test]
    fn partial_heads_wait_and_non_http_is_left_alone() {
        assert_eq!(inspect(b""), Head::Partial);
        assert_eq!(inspect(b"PU"), Head::Partial);
        assert_eq!(inspect(b"GET /b HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        assert_eq!(inspect(b"\x16\x03\x01\x02"), Head::Unknown);
        assert_eq!(inspect(b"get / HTTP/1.1\r\n\r\n"), Head::Unknown);
    }

    #[test]
    fn framings_it_does_not_follow_are_untracked_or_unknown() {
        let chunked = b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            inspect(chunked),
            Head::Complete {
                body: Body::Untracked,
                ..
            }
        ));
        let bad = b"PUT /b/k HTTP/1.1\r\nContent-Length: abc\r\n\r\n";
        assert_eq!(refused_code(inspect(bad)), S3ErrorCode::InvalidArgument);
        let two = b"PUT /b/k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(refused_code(inspect(two)), S3ErrorCode::InvalidArgument);
        let same = b"PUT /b/k HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(inspect(same), Head::Complete { .. }));
        let bare = b"GET /b/k HTTP/1.1\r\nNoColonHere\r\n\r\n";
        assert_eq!(inspect(bare), Head::Unknown);
    }

    #[test]
    fn an_overlong_key_is_key_too_long() {
        let mut h = b"GET /bucket/".to_vec();
        h.extend(std::iter::repeat_n(b'k', HEAD_BYTES_MAX));
        let r = inspect(&h);
        assert_eq!(refused_code(r.clone()), S3ErrorCode::KeyTooLongError);
        let Head::Refused(r) = r else { unreachable!() };
        assert!(r.resource.starts_with("/bucket/kkk"));
        assert!(r.resource.len() <= RESOURCE_ECHO_BYTES_MAX);
    }

    #[test]
    fn an_overlong_query_is_an_invalid_request() {
        let mut h = b"GET /bucket/k?x=".to_vec();
        h.extend(std::iter::repeat_n(b'v', HEAD_BYTES_MAX));
        assert_eq!(refused_code(inspect(&h)), S3ErrorCode::InvalidRequest);
    }

    #[test]
    fn oversized_or_crowded_header_sections_are_refused() {
        let mut h = b"GET /b/k HTTP/1.1\r\nX-Big: ".to_vec();
        h.extend(std::iter::repeat_n(b'v', HEAD_BYTES_MAX));
        assert_eq!(
            refused_code(inspect(&h)),
            S3ErrorCode::RequestHeaderSectionTooLarge
        );
        let mut many = b"GET /b/k HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADER_LINES_MAX {
            many.extend(format!("X-H{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        let r = inspect(&many);
        let Head::Refused(r) = r else {
            panic!("expected a refusal")
        };
        assert_eq!(r.error.code, S3ErrorCode::RequestHeaderSectionTooLarge);
        assert_eq!(r.extra, vec![("MaxSizeAllowed", "8192".to_string())]);
    }

    #[test]
    fn header_section_size_counts_separators() {
        let h: [(&[u8], &[u8]); 2] = [(b"host", b"x"), (b"a", b"bc")];
        assert_eq!(header_section_bytes(h), 4 + 1 + 4 + 1 + 2 + 4);
    }
}
