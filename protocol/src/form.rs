//! A push-based `multipart/form-data` parser for S3's browser upload (POST Object).
//!
//! Bytes are pushed as they arrive off the wire. Text fields before the `file` field are
//! collected (with hard limits on their number and size); the `file` field's bytes are handed
//! straight to the caller, holding back only as many bytes as could be the start of the next
//! boundary. Everything after the file part is ignored, as AWS ignores fields that follow
//! `file`. Nothing here reads a clock or does I/O.

use crate::s3err::{S3Error, S3ErrorCode};

/// Largest value of one text field.
pub const FIELD_BYTES_MAX: usize = 20 * 1024;
/// Largest total of all text field names and values.
pub const FIELDS_TOTAL_BYTES_MAX: usize = 64 * 1024;
/// Most text fields a form may carry before `file`.
pub const FIELDS_COUNT_MAX: usize = 64;
/// Largest header block of one part.
pub const PART_HEADER_BYTES_MAX: usize = 8 * 1024;
/// Longest boundary RFC 2046 allows.
pub const BOUNDARY_BYTES_MAX: usize = 70;

/// The name of the form field that carries the object's bytes.
pub const FILE_FIELD: &str = "file";

fn malformed(detail: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::MalformedPOSTRequest,
        format!("The body of your POST request is not well-formed multipart/form-data: {detail}."),
    )
}

/// Reads the boundary out of a `multipart/form-data; boundary=...` content type.
pub fn boundary_from_content_type(content_type: &str) -> Result<String, S3Error> {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(S3Error::with_message(
            S3ErrorCode::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold. Condition: Bucket \
             POST must be of the enclosure-type multipart/form-data",
        ));
    }
    for p in parts {
        let Some((name, value)) = p.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if value.is_empty() || value.len() > BOUNDARY_BYTES_MAX {
                return Err(malformed("the boundary is empty or too long"));
            }
            return Ok(value.to_string());
        }
    }
    Err(malformed("the content type names no boundary"))
}

/// The `file` part's own headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileInfo {
    /// The `filename` of its Content-Disposition, if any.
    pub filename: Option<String>,
    /// Its own `Content-Type`, if any.
    pub content_type: Option<String>,
}

/// Where the parser is in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the first boundary (a preamble is allowed and skipped).
    Preamble,
    /// Just after a boundary: `--` closes the body, CRLF opens a part.
    AfterBoundary,
    /// Inside a part's header block.
    Headers,
    /// Inside a text field's value.
    Field { name: String },
    /// Inside the file's bytes.
    File,
    /// The file part has ended; the rest is ignored.
    Done,
}

/// The parser. Push bytes with [`FormParser::push`], then call [`FormParser::finish`].
#[derive(Debug)]
pub struct FormParser {
    /// `\r\n--boundary`: every delimiter, the first included (see `new`).
    delimiter: Vec<u8>,
    state: State,
    buf: Vec<u8>,
    fields: Vec<(String, String)>,
    fields_bytes: usize,
    file: Option<FileInfo>,
    file_bytes: u64,
}

impl FormParser {
    /// A parser for a body whose parts are separated by `boundary`.
    pub fn new(boundary: &str) -> Self {
        assert!(!boundary.is_empty() && boundary.len() <= BOUNDARY_BYTES_MAX);
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        FormParser {
            delimiter,
            // The first boundary has no CRLF before it; pretending one was there lets a single
            // delimiter pattern find every boundary.
            buf: b"\r\n".to_vec(),
            state: State::Preamble,
            fields: Vec::new(),
            fields_bytes: 0,
            file: None,
            file_bytes: 0,
        }
    }

    /// The text fields seen so far, in order, names as sent.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The file part's headers once it has begun: from then on `fields` is complete.
    pub fn file(&self) -> Option<&FileInfo> {
        self.file.as_ref()
    }

    /// File bytes handed out so far.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// True once the file part has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes `input`; bytes of the file field are appended to `file_out`.
    pub fn push(&mut self, input: &[u8], file_out: &mut Vec<u8>) -> Result<(), S3Error> {
        if self.state == State::Done {
            return Ok(());
        }
        self.buf.extend_from_slice(input);
        while self.step(file_out)? {}
        Ok(())
    }

    /// Checks the body ended well: the file part was present and closed by a boundary.
    pub fn finish(&self) -> Result<(), S3Error> {
        match (&self.state, &self.file) {
            (State::Done, _) => Ok(()),
            (_, None) => Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "POST requires exactly one file upload per request.",
            )),
            _ => Err(malformed("the body ended inside the file part")),
        }
    }

    /// One transition; `Ok(true)` when another may follow without more input.
    fn step(&mut self, file_out: &mut Vec<u8>) -> Result<bool, S3Error> {
        match self.state.clone() {
            State::Preamble => match find(&self.buf, &self.delimiter) {
                Some(at) => {
                    self.buf.drain(..at + self.delimiter.len());
                    self.state = State::AfterBoundary;
                    Ok(true)
                }
                None => {
                    self.keep_tail();
                    Ok(false)
                }
            },
            State::AfterBoundary => self.after_boundary(),
            State::Headers => self.headers(),
            State::Field { name } => self.field(name),
            State::File => self.file_data(file_out),
            State::Done => {
                self.buf.clear();
                Ok(false)
            }
        }
    }

    /// Drops all but the bytes that could begin a delimiter.
    fn keep_tail(&mut self) {
        let keep = self.delimiter.len() - 1;
        if self.buf.len() > keep {
            self.buf.drain(..self.buf.len() - keep);
        }
    }

    fn after_boundary(&mut self) -> Result<bool, S3Error> {
        // Transport padding (spaces, tabs) may sit between a boundary and its CRLF.
        let pad = self
            .buf
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        if pad > 256 {
            return Err(malformed("too much padding after a boundary"));
        }
        let rest = &self.buf[pad..];
        if rest.len() < 2 {
            return Ok(false);
        }
        if rest.starts_with(b"--") {
            // The closing boundary before any file part: `finish` reports the missing file.
            self.buf.clear();
            self.state = State::Done;
            return if self.file.is_none() {
                Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    "POST requires exactly one file upload per request.",
                ))
            } else {
                Ok(false)
            };
        }
        if !rest.starts_with(b"\r\n") {
            return Err(malformed("a boundary is not followed by CRLF"));
        }
        self.buf.drain(..pad + 2);
        self.state = State::Headers;
        Ok(true)
    }

    fn headers(&mut self) -> Result<bool, S3Error> {
        // A part with no headers at all starts with the blank line directly.
        let blank_first = self.buf.starts_with(b"\r\n").then_some(usize::MAX);
        let Some(end) = blank_first.or_else(|| find(&self.buf, b"\r\n\r\n")) else {
            if self.buf.len() > PART_HEADER_BYTES_MAX {
                return Err(malformed("a part's headers are too long"));
            }
            return Ok(false);
        };
        let (block, consumed) = if end == usize::MAX {
            (Vec::new(), 2)
        } else {
            (self.buf[..end].to_vec(), end + 4)
        };
        if block.len() > PART_HEADER_BYTES_MAX {
            return Err(malformed("a part's headers are too long"));
        }
        self.buf.drain(..consumed);
        let head = std::str::from_utf8(&block).map_err(|_| malformed("part headers not UTF-8"))?;
        let part = parse_part_headers(head)?;
        if part.name == FILE_FIELD {
            self.file = Some(FileInfo {
                filename: part.filename,
                content_type: part.content_type,
            });
            self.state = State::File;
        } else {
            if self.fields.len() >= FIELDS_COUNT_MAX {
                return Err(malformed("too many form fields"));
            }
            self.state = State::Field { name: part.name };
        }
        Ok(true)
    }

    fn field(&mut self, name: String) -> Result<bool, S3Error> {
        let Some(at) = find(&self.buf, &self.delimiter) else {
            if self.buf.len() > FIELD_BYTES_MAX + self.delimiter.len() {
                return Err(field_too_large(&name));
            }
            return Ok(false);
        };
        if at > FIELD_BYTES_MAX {
            return Err(field_too_large(&name));
        }
        let value = String::from_utf8(self.buf[..at].to_vec())
            .map_err(|_| malformed("a form field is not UTF-8"))?;
        self.fields_bytes += name.len() + value.len();
        if self.fields_bytes > FIELDS_TOTAL_BYTES_MAX {
            return Err(malformed("the form fields are too large in total"));
        }
        self.fields.push((name, value));
        self.buf.drain(..at + self.delimiter.len());
        self.state = State::AfterBoundary;
        Ok(true)
    }

    fn file_data(&mut self, file_out: &mut Vec<u8>) -> Result<bool, S3Error> {
        if let Some(at) = find(&self.buf, &self.delimiter) {
            file_out.extend_from_slice(&self.buf[..at]);
            self.file_bytes += at as u64;
            self.buf.clear();
            self.state = State::Done;
            return Ok(false);
        }
        // Hold back only what could be the start of the delimiter.
        let safe = self.buf.len().saturating_sub(self.delimiter.len() - 1);
        if safe > 0 {
            file_out.extend_from_slice(&self.buf[..safe]);
            self.file_bytes += safe as u64;
            self.buf.drain(..safe);
        }
        Ok(false)
    }
}

fn field_too_large(name: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::MalformedPOSTRequest,
        format!(
            "The form field {name} exceeds the maximum allowed size of {FIELD_BYTES_MAX} bytes."
        ),
    )
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

struct PartHeaders {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
}

fn parse_part_headers(block: &str) -> Result<PartHeaders, S3Error> {
    let mut disposition = None;
    let mut content_type = None;
    for line in block.split("\r\n").filter(|l| !l.is_empty()) {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| malformed("a part header has no colon"))?;
        let n = n.trim();
        if n.eq_ignore_ascii_case("content-disposition") {
            disposition = Some(v.trim().to_string());
        } else if n.eq_ignore_ascii_case("content-type") {
            content_type = Some(v.trim().to_string());
        }
    }
    let disposition = disposition.ok_or_else(|| malformed("a part has no Content-Disposition"))?;
    let params = disposition_params(&disposition)?;
    let name = params
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| malformed("a part has no name"))?;
    let filename = params
        .iter()
        .find(|(k, _)| k == "filename")
        .map(|(_, v)| v.clone());
    Ok(PartHeaders {
        name,
        filename,
        content_type,
    })
}

/// `form-data; name="a"; filename="b"` → `[("name","a"), ("filename","b")]`, names lowercase.
fn disposition_params(v: &str) -> Result<Vec<(String, String)>, S3Error> {
    let (kind, mut rest) = v.split_once(';').unwrap_or((v, ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(malformed("a part is not form-data"));
    }
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Ok(out);
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| malformed("a Content-Disposition parameter has no value"))?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            quoted(q)?
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((name, value));
        rest = next;
    }
}

/// A quoted string body (after the opening quote) → its value and what follows the close.
fn quoted(s: &str) -> Result<(String, &str), S3Error> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars
                    .next()
                    .ok_or_else(|| malformed("an unterminated quoted string"))?;
                value.push(e);
            }
            _ => value.push(c),
        }
    }
    Err(malformed("an unterminated quoted string"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: &str = "----hamsterB0undary";

    fn body(fields: &[(&str, &str)], file: &[u8], trailing: &str) -> Vec<u8> {
        let mut out = b"preamble to ignore\r\n".to_vec();
        for (n, v) in fields {
            out.extend_from_slice(
                format!("--{B}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(
            format!(
                "--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".txt\"\r\nContent-Type: text/plain\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(file);
        out.extend_from_slice(format!("\r\n--{B}\r\n{trailing}").as_bytes());
        out.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
        out
    }

    fn parse_split(input: &[u8], cuts: &[usize]) -> Result<(FormParser, Vec<u8>), S3Error> {
        let mut p = FormParser::new(B);
        let mut file = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            let c = c.clamp(last, input.len());
            p.push(&input[last..c], &mut file)?;
            last = c;
        }
        p.finish()?;
        Ok((p, file))
    }

    #[test]
    fn fields_then_file_then_ignored_tail() {
        let tail = "Content-Disposition: form-data; name=\"after\"\r\n\r\nignored";
        let input = body(
            &[("key", "a/${filename}"), ("policy", "eyJ9")],
            b"hello\r\n--",
            tail,
        );
        let (p, file) = parse_split(&input, &[]).unwrap();
        assert_eq!(
            p.fields(),
            &[
                ("key".to_string(), "a/${filename}".to_string()),
                ("policy".to_string(), "eyJ9".to_string())
            ]
        );
        assert_eq!(file, b"hello\r\n--");
        let info = p.file().unwrap();
        assert_eq!(info.filename.as_deref(), Some("a \"b\".txt"));
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn boundary_parsing() {
        assert_eq!(
            boundary_from_content_type("multipart/form-data; boundary=\"abc\"").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary_from_content_type("Multipart/Form-Data;charset=utf-8; boundary=x-y").unwrap(),
            "x-y"
        );
        let e = boundary_from_content_type("application/json").unwrap_err();
        assert_eq!(e.code, S3ErrorCode::PreconditionFailed);
        let e = boundary_from_content_type("multipart/form-data").unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        // No file part at all.
        let mut only = format!("--{B}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk");
        only.push_str(&format!("\r\n--{B}--\r\n"));
        let e = parse_split(only.as_bytes(), &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InvalidArgument);
        // The file never ends.
        let cut = body(&[], &[b'x'; 100], "");
        let e = parse_split(&cut[..cut.len() - 60], &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
        // A part without Content-Disposition.
        let bad = format!("--{B}\r\nX: y\r\n\r\nv\r\n--{B}--");
        let e = parse_split(bad.as_bytes(), &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
        // Garbage after a boundary.
        let bad = format!("--{B}xx\r\n");
        let e = parse_split(bad.as_bytes(), &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
    }

    #[test]
    fn limits_hold() {
        let big = "v".repeat(FIELD_BYTES_MAX + 1);
        let e = parse_split(&body(&[("x", &big)], b"", ""), &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
        let names: Vec<String> = (0..=FIELDS_COUNT_MAX).map(|i| format!("f{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let e = parse_split(&body(&many, b"", ""), &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
        let v = "v".repeat(FIELD_BYTES_MAX);
        let four: Vec<(&str, &str)> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (*n, v.as_str()))
            .collect();
        let e = parse_split(&body(&four, b"", ""), &[]).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedPOSTRequest);
    }

    #[test]
    fn file_memory_is_bounded_by_the_delimiter() {
        let input = body(&[], &vec![7u8; 100_000], "");
        let mut p = FormParser::new(B);
        let mut out = Vec::new();
        for chunk in input.chunks(1000) {
            p.push(chunk, &mut out).unwrap();
            assert!(p.buf.len() < 1000 + 2 * (B.len() + 4) + 200);
        }
        p.finish().unwrap();
        assert_eq!(out.len(), 100_000);
    }

    proptest! {
        /// Any way the network splits the body, the parser sees the same fields and file bytes.
        #[test]
        fn any_split_gives_the_same_result(
            file in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), any::<u8>()], 0..600),
            value in "[a-z\r\n-]{0,40}",
            cuts in proptest::collection::vec(0usize..1200, 0..8),
        ) {
            let input = body(&[("key", "k"), ("x-amz-meta-v", &value)], &file, "");
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (whole, whole_file) = parse_split(&input, &[]).unwrap();
            let (split, split_file) = parse_split(&input, &cuts).unwrap();
            prop_assert_eq!(whole.fields(), split.fields());
            prop_assert_eq!(&whole_file, &file);
            prop_assert_eq!(&split_file, &file);
            prop_assert_eq!(split.file_bytes(), file.len() as u64);
        }
    }
}
