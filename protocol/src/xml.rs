//! S3's XML bodies: the writers for every response body Hamster sends (errors, bucket and object
//! listings, copy and multipart results, multi-object delete results) and the parsers for the
//! request bodies it accepts (CreateBucket, CompleteMultipartUpload, DeleteObjects).
//!
//! Output is written by hand through a small escaping writer: it is faster and easier to read
//! than going through serde, and it lets us choose exactly how awkward characters in keys are
//! written. Input is parsed with quick-xml into a small, bounded element tree that each request
//! parser then walks; every parse failure is `MalformedXML`, as on S3.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::s3err::{S3Error, S3ErrorCode};
use crate::time::iso8601_ms;

/// The namespace AWS puts on the root of S3 response bodies.
pub const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Most keys one DeleteObjects request may name.
pub const DELETE_KEYS_MAX: usize = 1000;
/// Most parts one CompleteMultipartUpload request may name.
pub const COMPLETE_PARTS_MAX: usize = 10_000;
/// Highest part number S3 allows.
pub const PART_NUMBER_MAX: u32 = 10_000;

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Whether XML 1.0 allows `c` in a document at all (its `Char` production).
fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// Appends `text` escaped for element content or a double-quoted attribute value.
///
/// The five markup characters become entities. Tab, LF and CR become character references so
/// that a parser's end-of-line and whitespace normalisation cannot alter them. Characters that
/// XML 1.0 forbids even as references (most C0 controls, U+FFFE, U+FFFF) become U+FFFD: writing
/// `&#x1;` would make common client parsers reject the whole body, and a client that needs such
/// a key exactly asks for `encoding-type=url`, which carries any key losslessly.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// `text` escaped as by [`escape_into`].
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// Bytes left as they are by [`url_encode`]: the URI unreserved set plus `/`, which keeps keys
/// readable and is what S3 leaves alone too.
const URL_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a key (or prefix, delimiter, marker) for `encoding-type=url` listings. Space
/// becomes `%20` rather than `+`, so clients decoding with either form-style or plain percent
/// decoding get the key back unchanged.
pub fn url_encode(text: &str) -> String {
    utf8_percent_encode(text, URL_KEEP).to_string()
}

/// A tiny XML writer whose open elements live on a stack, so every document it produces is
/// balanced by construction.
struct Writer {
    out: String,
    open: Vec<&'static str>,
}

impl Writer {
    /// A document whose root carries the S3 namespace.
    fn s3_doc(root: &'static str) -> Self {
        let mut w = Writer {
            out: String::with_capacity(512),
            open: Vec::new(),
        };
        w.out.push_str(DECLARATION);
        w.out.push('<');
        w.out.push_str(root);
        w.out.push_str(" xmlns=\"");
        w.out.push_str(S3_XMLNS);
        w.out.push_str("\">");
        w.open.push(root);
        w
    }

    /// A document whose root has no namespace (AWS sends `<Error>` this way).
    fn bare_doc(root: &'static str) -> Self {
        let mut w = Writer {
            out: String::with_capacity(256),
            open: Vec::new(),
        };
        w.out.push_str(DECLARATION);
        w.open(root);
        w
    }

    fn open(&mut self, name: &'static str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.open.push(name);
    }

    fn close(&mut self) {
        let name = self.open.pop().expect("close() without a matching open()");
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// `<name>text</name>`, or `<name/>` when `text` is empty.
    fn leaf(&mut self, name: &str, text: &str) {
        debug_assert!(is_element_name(name), "bad element name {name:?}");
        self.out.push('<');
        self.out.push_str(name);
        if text.is_empty() {
            self.out.push_str("/>");
            return;
        }
        self.out.push('>');
        escape_into(&mut self.out, text);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    fn leaf_opt(&mut self, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    fn leaf_num(&mut self, name: &str, n: u64) {
        self.leaf(name, &n.to_string());
    }

    fn leaf_bool(&mut self, name: &str, b: bool) {
        self.leaf(name, if b { "true" } else { "false" });
    }

    /// An ETag as S3 writes it: wrapped in double quotes (which escaping turns into `&quot;`).
    fn leaf_etag(&mut self, name: &str, etag: &str) {
        self.leaf(name, &format!("\"{etag}\""));
    }

    fn owner(&mut self, owner: &Owner) {
        self.open("Owner");
        self.leaf("ID", &owner.id);
        self.leaf("DisplayName", &owner.display_name);
        self.close();
    }

    fn finish(mut self) -> String {
        self.close();
        assert!(self.open.is_empty(), "unclosed elements: {:?}", self.open);
        self.out
    }
}

/// Element names the writer accepts from callers: ASCII letters and digits, starting with a
/// letter. Enough for every S3 element and keeps caller-supplied names from breaking markup.
fn is_element_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric())
}

/// An S3 error body: `<Error>` with `Code`, `Message`, the `extra` elements in order (for
/// example `BucketName` or `Key`), `Resource` and `RequestId`.
pub fn error_xml(
    code: &str,
    message: &str,
    resource: &str,
    request_id: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut w = Writer::bare_doc("Error");
    w.leaf("Code", code);
    w.leaf("Message", message);
    for (name, value) in extra {
        assert!(
            is_element_name(name),
            "extra element name {name:?} is not a plain XML name"
        );
        w.leaf(name, value);
    }
    w.leaf("Resource", resource);
    w.leaf("RequestId", request_id);
    w.finish()
}

/// [`error_xml`] for an [`S3Error`], with its code and message.
pub fn s3_error_xml(
    err: &S3Error,
    resource: &str,
    request_id: &str,
    extra: &[(&str, &str)],
) -> String {
    error_xml(err.code.code(), err.message(), resource, request_id, extra)
}

/// The owner of buckets and objects, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Canonical user id.
    pub id: String,
    /// Human name shown next to the id.
    pub display_name: String,
}

/// One bucket in a ListBuckets answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    /// Bucket name.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
}

/// What a ListBuckets page says besides its buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketPage {
    /// The token for the next page, when more buckets follow.
    pub continuation_token: Option<String>,
    /// The request's prefix, echoed when it was given.
    pub prefix: Option<String>,
}

/// The ListBuckets body (`ListAllMyBucketsResult`).
pub fn list_buckets_xml(owner: &Owner, buckets: &[BucketEntry], page: &BucketPage) -> String {
    let mut w = Writer::s3_doc("ListAllMyBucketsResult");
    w.owner(owner);
    w.open("Buckets");
    for b in buckets {
        w.open("Bucket");
        w.leaf("Name", &b.name);
        w.leaf("CreationDate", &iso8601_ms(b.created_ms));
        w.close();
    }
    w.close();
    w.leaf_opt("ContinuationToken", page.continuation_token.as_deref());
    w.leaf_opt("Prefix", page.prefix.as_deref());
    w.finish()
}

/// The GetBucketLocation body. AWS answers an empty `LocationConstraint` for us-east-1, and
/// SDKs read the empty element as that region, so we do the same.
pub fn location_xml(region: &str) -> String {
    let region = if region == "us-east-1" { "" } else { region };
    let mut w = Writer::s3_doc("LocationConstraint");
    escape_into(&mut w.out, region);
    w.finish()
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Object key (URL-encoded on output when the listing asks for it).
    pub key: String,
    /// Last modification, Unix milliseconds.
    pub last_modified_ms: u64,
    /// ETag without quotes; written with them.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// Storage class, e.g. `STANDARD`.
    pub storage_class: String,
    /// Owner, written when present (always in v1, with `fetch-owner` in v2).
    pub owner: Option<Owner>,
}

/// Everything a ListObjectsV2 answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListV2 {
    /// Bucket name.
    pub bucket: String,
    /// The request's prefix (empty when none).
    pub prefix: String,
    /// The request's delimiter, if any.
    pub delimiter: Option<String>,
    /// The request's max-keys.
    pub max_keys: usize,
    /// The request's start-after, if any.
    pub start_after: Option<String>,
    /// The request's continuation token, echoed back.
    pub continuation_token: Option<String>,
    /// The token to continue with, when truncated.
    pub next_continuation_token: Option<String>,
    /// Whether more entries follow.
    pub is_truncated: bool,
    /// Whether the request asked for `encoding-type=url`.
    pub encoding_url: bool,
    /// Objects in the page.
    pub objects: Vec<ObjectEntry>,
    /// Common prefixes in the page.
    pub common_prefixes: Vec<String>,
}

/// A listing field, URL-encoded when the request asked for `encoding-type=url`.
fn listed(text: &str, encoding_url: bool) -> String {
    if encoding_url {
        url_encode(text)
    } else {
        text.to_string()
    }
}

fn write_entries(w: &mut Writer, objects: &[ObjectEntry], prefixes: &[String], enc: bool) {
    for o in objects {
        w.open("Contents");
        w.leaf("Key", &listed(&o.key, enc));
        w.leaf("LastModified", &iso8601_ms(o.last_modified_ms));
        w.leaf_etag("ETag", &o.etag);
        w.leaf_num("Size", o.size);
        w.leaf("StorageClass", &o.storage_class);
        if let Some(owner) = &o.owner {
            w.owner(owner);
        }
        w.close();
    }
    for p in prefixes {
        w.open("CommonPrefixes");
        w.leaf("Prefix", &listed(p, enc));
        w.close();
    }
}

/// The ListObjectsV2 body (`ListBucketResult` with `KeyCount`).
pub fn list_v2_xml(r: &ListV2) -> String {
    let enc = r.encoding_url;
    let mut w = Writer::s3_doc("ListBucketResult");
    w.leaf("Name", &r.bucket);
    w.leaf("Prefix", &listed(&r.prefix, enc));
    w.leaf_opt("ContinuationToken", r.continuation_token.as_deref());
    w.leaf_opt(
        "StartAfter",
        r.start_after.as_deref().map(|s| listed(s, enc)).as_deref(),
    );
    w.leaf_num(
        "KeyCount",
        (r.objects.len() + r.common_prefixes.len()) as u64,
    );
    w.leaf_num("MaxKeys", r.max_keys as u64);
    w.leaf_opt(
        "Delimiter",
        r.delimiter.as_deref().map(|s| listed(s, enc)).as_deref(),
    );
    if enc {
        w.leaf("EncodingType", "url");
    }
    w.leaf_bool("IsTruncated", r.is_truncated);
    w.leaf_opt(
        "NextContinuationToken",
        r.next_continuation_token.as_deref(),
    );
    write_entries(&mut w, &r.objects, &r.common_prefixes, enc);
    w.finish()
}

/// Everything a ListObjects (v1) answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListV1 {
    /// Bucket name.
    pub bucket: String,
    /// The request's prefix (empty when none).
    pub prefix: String,
    /// The request's delimiter, if any.
    pub delimiter: Option<String>,
    /// The request's marker (empty when none).
    pub marker: String,
    /// Where to continue; S3 sends it only when truncated and a delimiter was given.
    pub next_marker: Option<String>,
    /// The request's max-keys.
    pub max_keys: usize,
    /// Whether more entries follow.
    pub is_truncated: bool,
    /// Whether the request asked for `encoding-type=url`.
    pub encoding_url: bool,
    /// Objects in the page.
    pub objects: Vec<ObjectEntry>,
    /// Common prefixes in the page.
    pub common_prefixes: Vec<String>,
}

/// The ListObjects (v1) body (`ListBucketResult` with `Marker`).
pub fn list_v1_xml(r: &ListV1) -> String {
    let enc = r.encoding_url;
    let mut w = Writer::s3_doc("ListBucketResult");
    w.leaf("Name", &r.bucket);
    // S3 never URL-encodes a v1 listing's own Prefix, and SDKs that ask for url encoding do
    // not decode it there.
    w.leaf("Prefix", &r.prefix);
    w.leaf("Marker", &listed(&r.marker, enc));
    w.leaf_opt(
        "NextMarker",
        r.next_marker.as_deref().map(|s| listed(s, enc)).as_deref(),
    );
    w.leaf_num("MaxKeys", r.max_keys as u64);
    w.leaf_opt(
        "Delimiter",
        r.delimiter.as_deref().map(|s| listed(s, enc)).as_deref(),
    );
    if enc {
        w.leaf("EncodingType", "url");
    }
    w.leaf_bool("IsTruncated", r.is_truncated);
    write_entries(&mut w, &r.objects, &r.common_prefixes, enc);
    w.finish()
}

/// What CopyObject and UploadPartCopy report about the copy they made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResult {
    /// ETag of the new object or part, without quotes.
    pub etag: String,
    /// Its modification time, Unix milliseconds.
    pub last_modified_ms: u64,
}

fn copy_xml(root: &'static str, r: &CopyResult) -> String {
    let mut w = Writer::s3_doc(root);
    w.leaf("LastModified", &iso8601_ms(r.last_modified_ms));
    w.leaf_etag("ETag", &r.etag);
    w.finish()
}

/// The CopyObject body (`CopyObjectResult`).
pub fn copy_object_result_xml(r: &CopyResult) -> String {
    copy_xml("CopyObjectResult", r)
}

/// The UploadPartCopy body (`CopyPartResult`).
pub fn copy_part_result_xml(r: &CopyResult) -> String {
    copy_xml("CopyPartResult", r)
}

/// The CreateMultipartUpload body (`InitiateMultipartUploadResult`).
pub fn initiate_multipart_xml(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut w = Writer::s3_doc("InitiateMultipartUploadResult");
    w.leaf("Bucket", bucket);
    w.leaf("Key", key);
    w.leaf("UploadId", upload_id);
    w.finish()
}

/// What CompleteMultipartUpload reports about the object it assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteResult {
    /// URL of the new object.
    pub location: String,
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Multipart ETag without quotes (`<md5-of-md5s>-<parts>`).
    pub etag: String,
}

/// The CompleteMultipartUpload body (`CompleteMultipartUploadResult`).
pub fn complete_multipart_xml(r: &CompleteResult) -> String {
    let mut w = Writer::s3_doc("CompleteMultipartUploadResult");
    w.leaf("Location", &r.location);
    w.leaf("Bucket", &r.bucket);
    w.leaf("Key", &r.key);
    w.leaf_etag("ETag", &r.etag);
    w.finish()
}

/// The DeleteObjects body (`DeleteResult`): one `Deleted` per `(key, version)` removed and one
/// `Error` per `(key, code, message)` that failed. In quiet mode the caller passes no `deleted`.
pub fn delete_result_xml(
    deleted: &[(String, Option<String>)],
    errors: &[(String, String, String)],
) -> String {
    let mut w = Writer::s3_doc("DeleteResult");
    for (key, version) in deleted {
        w.open("Deleted");
        w.leaf("Key", key);
        w.leaf_opt("VersionId", version.as_deref());
        w.close();
    }
    for (key, code, message) in errors {
        w.open("Error");
        w.leaf("Key", key);
        w.leaf("Code", code);
        w.leaf("Message", message);
        w.close();
    }
    w.finish()
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Deepest element nesting a request body may have; S3 request bodies are three levels deep.
const DEPTH_MAX: usize = 16;
/// Most elements a request body may hold: a full CompleteMultipartUpload (10 000 parts with a
/// few children each) fits, and a hostile body cannot make us build an unbounded tree.
const ELEMENTS_MAX: usize = 80_000;

/// One parsed element: local name (namespace prefix dropped), its text, its child elements.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The only child called `name`; two of them is malformed.
    fn child(&self, name: &str) -> Result<Option<&Element>, S3Error> {
        let mut found = self.children.iter().filter(|c| c.name == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(malformed(&format!(
                "more than one <{name}> in <{}>",
                self.name
            )));
        }
        Ok(first)
    }
}

fn malformed(why: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::MalformedXML,
        format!("{} ({why})", S3ErrorCode::MalformedXML.default_message()),
    )
}

/// Parses `body` into its root element, enforcing well-formedness (one root, matching end tags,
/// known entities, nothing but whitespace outside the root) and the size limits above.
fn parse_tree(body: &[u8]) -> Result<Element, S3Error> {
    let mut reader = Reader::from_reader(body);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&e.to_string()))?;
        match event {
            Event::Start(_) | Event::Empty(_) => {
                let (start, empty) = match &event {
                    Event::Start(s) => (s, false),
                    Event::Empty(s) => (s, true),
                    _ => unreachable!(),
                };
                if root.is_some() {
                    return Err(malformed("content after the root element"));
                }
                elements += 1;
                if elements > ELEMENTS_MAX || stack.len() >= DEPTH_MAX {
                    return Err(malformed("document too large"));
                }
                let name = std::str::from_utf8(start.local_name().into_inner())
                    .map_err(|_| malformed("element name is not UTF-8"))?
                    .to_string();
                let element = Element {
                    name,
                    ..Element::default()
                };
                if empty {
                    close_element(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| malformed("unmatched end tag"))?;
                close_element(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let text = t
                    .xml10_content()
                    .map_err(|_| malformed("text is not UTF-8"))?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(c) => {
                let text = c.decode().map_err(|_| malformed("CDATA is not UTF-8"))?;
                push_text(&mut stack, &text)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                    Ok(Some(_)) | Err(_) => return Err(malformed("bad character reference")),
                    Ok(None) => {
                        let name = r.decode().map_err(|_| malformed("bad entity"))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| malformed("unknown entity"))?
                            .to_string()
                    }
                };
                if stack.is_empty() {
                    return Err(malformed("reference outside the root element"));
                }
                push_text(&mut stack, &resolved)?;
            }
            Event::DocType(_) => return Err(malformed("DTDs are not accepted")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("unexpected end of document"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

fn close_element(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Adds text to the open element; outside the root only whitespace is allowed.
fn push_text(stack: &mut [Element], text: &str) -> Result<(), S3Error> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(malformed("text outside the root element")),
    }
}

/// Parses `body` and checks that its root element is `root`.
fn parse_root(body: &[u8], root: &str) -> Result<Element, S3Error> {
    let tree = parse_tree(body)?;
    if tree.name != root {
        return Err(malformed(&format!(
            "expected <{root}>, found <{}>",
            tree.name
        )));
    }
    Ok(tree)
}

/// The CreateBucket body: an empty body is `Ok(None)`; a `CreateBucketConfiguration` gives its
/// `LocationConstraint` (`None` when absent or empty, which means us-east-1). Anything else is
/// `MalformedXML`.
pub fn parse_create_bucket(body: &[u8]) -> Result<Option<String>, S3Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let tree = parse_root(body, "CreateBucketConfiguration")?;
    let region = tree
        .child("LocationConstraint")?
        .map(|e| e.text.trim().to_string());
    Ok(region.filter(|r| !r.is_empty()))
}

/// Strips the quotes clients put around ETags (sent either literally or as `&quot;`).
fn unquote_etag(etag: &str) -> String {
    let t = etag.trim();
    t.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t)
        .to_string()
}

/// The CompleteMultipartUpload body: `(part number, ETag without quotes)` per `<Part>`, in the
/// order sent. Part numbers must be 1..=10000 and there must be 1..=10000 parts; checking that
/// they ascend (`InvalidPartOrder`) and exist (`InvalidPart`) is the caller's job, because those
/// are different errors from a malformed body.
pub fn parse_complete_multipart(body: &[u8]) -> Result<Vec<(u32, String)>, S3Error> {
    let tree = parse_root(body, "CompleteMultipartUpload")?;
    let mut parts = Vec::new();
    for part in tree.children("Part") {
        if parts.len() == COMPLETE_PARTS_MAX {
            return Err(malformed("too many parts"));
        }
        let number = part
            .child("PartNumber")?
            .ok_or_else(|| malformed("<Part> without <PartNumber>"))?;
        let number: u32 = number
            .text
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=PART_NUMBER_MAX).contains(n))
            .ok_or_else(|| malformed("<PartNumber> must be 1..=10000"))?;
        let etag = part
            .child("ETag")?
            .ok_or_else(|| malformed("<Part> without <ETag>"))?;
        parts.push((number, unquote_etag(&etag.text)));
    }
    if parts.is_empty() {
        return Err(malformed("no <Part> elements"));
    }
    Ok(parts)
}

/// A parsed DeleteObjects body: whether `<Quiet>` is true, and `(key, version id)` per object.
pub type DeleteRequest = (bool, Vec<(String, Option<String>)>);

/// The DeleteObjects body: whether `<Quiet>` is true, and `(key, version id)` per `<Object>`.
/// Keys are taken exactly as sent (leading and trailing spaces are part of a key). Between 1 and
/// 1000 objects are allowed; more, none, or an object without a key is `MalformedXML`.
pub fn parse_delete_objects(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let tree = parse_root(body, "Delete")?;
    let quiet = match tree.child("Quiet")? {
        None => false,
        Some(q) => match q.text.trim() {
            t if t.eq_ignore_ascii_case("true") => true,
            t if t.eq_ignore_ascii_case("false") => false,
            _ => return Err(malformed("<Quiet> must be true or false")),
        },
    };
    let mut objects = Vec::new();
    for object in tree.children("Object") {
        if objects.len() == DELETE_KEYS_MAX {
            return Err(malformed("more than 1000 objects"));
        }
        let key = object
            .child("Key")?
            .ok_or_else(|| malformed("<Object> without <Key>"))?;
        let version = object
            .child("VersionId")?
            .map(|v| v.text.trim().to_string())
            .filter(|v| !v.is_empty());
        objects.push((key.text.clone(), version));
    }
    if objects.is_empty() {
        return Err(malformed("no <Object> elements"));
    }
    Ok((quiet, objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escape("t\tn\nr\r"), "t&#x9;n&#xA;r&#xD;");
        assert_eq!(escape("x\u{1}y\u{FFFF}z"), "x\u{FFFD}y\u{FFFD}z");
        assert_eq!(escape("日本 é 🐹"), "日本 é 🐹");
    }

    #[test]
    fn url_encoding_keeps_slash_and_unreserved() {
        assert_eq!(url_encode("a/b c+d%e~f_g-h.i"), "a/b%20c%2Bd%25e~f_g-h.i");
        assert_eq!(url_encode("é"), "%C3%A9");
        assert_eq!(url_encode("\u{1}"), "%01");
    }

    #[test]
    fn location_is_empty_for_us_east_1() {
        assert!(location_xml("us-east-1").ends_with(&format!(
            "<LocationConstraint xmlns=\"{S3_XMLNS}\"></LocationConstraint>"
        )));
        assert!(location_xml("eu-west-1").contains(">eu-west-1</LocationConstraint>"));
    }
}
