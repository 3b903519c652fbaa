//! The S3 client side: the endpoint, one keep-alive HTTP/1.1 connection per worker (hyper's
//! low-level `http1` client, `TCP_NODELAY` on) and the handful of S3 calls the workloads make,
//! each signed by the connection's own [`Signer`]. Path-style addressing only.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hamster_protocol::sigv4::{uri_encode, EMPTY_SHA256_HEX, UNSIGNED_PAYLOAD};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::signer::Signer;

/// Longest error body kept for the message; S3 error documents are a few hundred bytes.
const ERROR_BODY_BYTES_MAX: usize = 8 << 10;
/// Longest ListObjectsV2 response accepted; 1000 keys with their metadata fit easily.
const LIST_BODY_BYTES_MAX: usize = 4 << 20;
/// How long a request may take before it counts as a failure: a floor for small requests
/// plus a second per MiB moved, so a slow but live endpoint is not cut off mid-object.
const REQUEST_TIMEOUT_FLOOR_SECS: u64 = 30;

/// An `http://host[:port]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name or address, without brackets.
    pub host: String,
    /// The TCP port (80 when the URL names none).
    pub port: u16,
    /// The `Host` header value: the authority exactly as written in the URL.
    pub authority: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/]`. TLS endpoints are refused with a clear message rather
    /// than silently spoken to in plaintext.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "endpoint {url}: https is not supported by hamster bench yet; use http://"
            ));
        } else {
            return Err(format!("endpoint {url:?} must start with http://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "endpoint {url:?} must be http://host[:port] with no path (requests are path-style)"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("endpoint {url:?}: unterminated [ipv6] address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("endpoint {url:?}: port {p:?} is not a number 0-65535"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("endpoint {url:?} has no host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
        })
    }

    /// The `http://authority` form for messages.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// No HTTP response: connect, I/O, protocol error or timeout.
    Transport(String),
    /// A non-2xx response, with the S3 `<Code>` and `<Message>` when the body had them.
    Status {
        /// The HTTP status.
        status: u16,
        /// The S3 error code, or empty.
        code: String,
        /// The S3 error message, or empty.
        message: String,
    },
    /// A 2xx response whose content was not what was stored (e.g. a short body).
    Mismatch(String),
}

impl OpError {
    /// True when the server was not reached at all.
    pub fn is_transport(&self) -> bool {
        matches!(self, OpError::Transport(_))
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Transport(e) => write!(f, "{e}"),
            OpError::Status {
                status,
                code,
                message,
            } => {
                write!(f, "HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            OpError::Mismatch(e) => write!(f, "{e}"),
        }
    }
}

/// An error and its sources on one line: hyper's own messages alone are terse.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Wall time for `x-amz-date`.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The text of the first `<tag>…</tag>` in `xml`, with the five XML entities undone.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(unescape(&xml[start..start + len]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One page of a ListObjectsV2 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// How many `<Key>` entries the page held.
    pub keys: u64,
    /// How many `<CommonPrefixes>` entries it held (only a delimiter listing has any).
    pub prefixes: u64,
    /// The continuation token when the listing is truncated.
    pub next: Option<String>,
    /// The response body size.
    pub bytes: u64,
}

/// Reads the key count and continuation token out of a ListObjectsV2 response body.
pub fn parse_list_page(xml: &str) -> Result<ListPage, String> {
    if !xml.contains("<ListBucketResult") {
        return Err("the listing response is not a ListBucketResult".to_string());
    }
    let keys = xml.matches("<Key>").count() as u64;
    let prefixes = xml.matches("<CommonPrefixes>").count() as u64;
    let truncated = xml_text(xml, "IsTruncated").as_deref() == Some("true");
    let next = xml_text(xml, "NextContinuationToken");
    if truncated && next.is_none() {
        return Err("a truncated listing carried no NextContinuationToken".to_string());
    }
    Ok(ListPage {
        keys,
        prefixes,
        next: if truncated { next } else { None },
        bytes: xml.len() as u64,
    })
}

/// A TCP stream that, when `on`, turns Linux's TCP_QUICKACK back on after every read: the
/// kernel clears it by itself, and without it a server that writes a small response in two
/// segments with Nagle's algorithm on waits ~40 ms for this side's delayed ACK.
struct QuickAck {
    inner: tokio::net::TcpStream,
    on: bool,
}

impl QuickAck {
    fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        if self.on {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: a valid socket descriptor, and a pointer to an int option value whose
            // length is passed with it. A failure only loses the hint.
            unsafe {
                libc::setsockopt(
                    self.inner.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_now();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One keep-alive connection and its signer. A failed request drops the connection; the
/// next request dials again.
pub struct Conn {
    addr: SocketAddr,
    signer: Signer,
    sender: Option<SendRequest<Full<Bytes>>>,
    quick_ack: bool,
}

impl Conn {
    /// A connection to `addr`, signing with `signer`; it dials on first use or [`Conn::connect`].
    pub fn new(addr: SocketAddr, signer: Signer) -> Conn {
        Conn {
            addr,
            signer,
            sender: None,
            quick_ack: false,
        }
    }

    /// Whether this connection acknowledges every segment at once (see [`QuickAck`]).
    pub fn quick_ack(mut self, on: bool) -> Conn {
        self.quick_ack = on;
        self
    }

    /// Dials now if not connected, so that the first timed request does not pay for it.
    pub async fn connect(&mut self) -> Result<(), OpError> {
        self.ready().await.map(|_| ())
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, OpError> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("checked just above"));
            }
            self.sender = None;
        }
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| OpError::Transport(format!("connect to {}: {e}", self.addr)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| OpError::Transport(format!("TCP_NODELAY: {e}")))?;
        let stream = QuickAck {
            inner: stream,
            on: self.quick_ack,
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| OpError::Transport(chain(&e)))?;
        // The connection future drives the socket; it ends when the sender is dropped or the
        // peer closes, and its error (if any) surfaces on the next request.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends one signed request and returns the response head with its body still unread.
    async fn send(
        &mut self,
        method: Method,
        raw_path: &str,
        raw_query: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, OpError> {
        let payload_hash = if body.is_empty() {
            EMPTY_SHA256_HEX
        } else {
            UNSIGNED_PAYLOAD
        };
        let signed = self
            .signer
            .sign(method.as_str(), raw_path, raw_query, payload_hash, now_ms());
        let uri = if raw_query.is_empty() {
            raw_path.to_string()
        } else {
            format!("{raw_path}?{raw_query}")
        };
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, self.signer.host())
            .header("x-amz-content-sha256", signed.content_sha256)
            .header("x-amz-date", signed.amz_date)
            .header(http::header::AUTHORIZATION, signed.authorization)
            .body(Full::new(body))
            .map_err(|e| OpError::Transport(format!("cannot build request: {e}")))?;
        let sender = self.ready().await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                self.sender = None;
                Err(OpError::Transport(chain(&e)))
            }
        }
    }

    /// Sends a request and reads the whole response within the timeout. A non-2xx answer
    /// becomes [`OpError::Status`]; a 2xx answer's body is handed to `read`, which must consume it.
    async fn exchange<T, F, Fut>(
        &mut self,
        method: Method,
        raw_path: &str,
        raw_query: &str,
        body: Bytes,
        expect_bytes: u64,
        read: F,
    ) -> Result<T, OpError>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: std::future::Future<Output = Result<T, OpError>>,
    {
        let moved_mib = (body.len() as u64 + expect_bytes) >> 20;
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_FLOOR_SECS + moved_mib);
        let work = async {
            let resp = self.send(method, raw_path, raw_query, body).await?;
            if !resp.status().is_success() {
                return Err(status_error(resp).await);
            }
            read(resp).await
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(OpError::Transport(format!(
                "no complete response within {}s",
                timeout.as_secs()
            ))),
        };
        if outcome.as_ref().is_err_and(OpError::is_transport) {
            // A half-read response leaves the connection unusable.
            self.sender = None;
        }
        outcome
    }

    /// PUT Object from a shared buffer (no copy).
    pub async fn put_object(
        &mut self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<(), OpError> {
        let path = object_path(bucket, key);
        self.exchange(Method::PUT, &path, "", body, 0, drain_ok)
            .await
    }

    /// GET Object, reading the body to its end; returns the bytes received.
    pub async fn get_object(
        &mut self,
        bucket: &str,
        key: &str,
        expect: u64,
    ) -> Result<u64, OpError> {
        let path = object_path(bucket, key);
        self.exchange(Method::GET, &path, "", Bytes::new(), expect, drain)
            .await
    }

    /// HEAD Object; returns its `Content-Length`.
    pub async fn head_object(&mut self, bucket: &str, key: &str) -> Result<u64, OpError> {
        let path = object_path(bucket, key);
        self.exchange(
            Method::HEAD,
            &path,
            "",
            Bytes::new(),
            0,
            |resp| async move {
                let len = resp
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        OpError::Mismatch("HEAD answered without a Content-Length".into())
                    })?;
                drain(resp).await?;
                Ok(len)
            },
        )
        .await
    }

    /// DELETE Object.
    pub async fn delete_object(&mut self, bucket: &str, key: &str) -> Result<(), OpError> {
        let path = object_path(bucket, key);
        self.exchange(Method::DELETE, &path, "", Bytes::new(), 0, drain_ok)
            .await
    }

    /// One ListObjectsV2 page of up to `max_keys` entries under `prefix`, rolled up at
    /// `delimiter` when given.
    pub async fn list_page(
        &mut self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, OpError> {
        let query = list_query(prefix, delimiter, token, max_keys);
        let path = bucket_path(bucket);
        self.exchange(
            Method::GET,
            &path,
            &query,
            Bytes::new(),
            0,
            |resp| async move {
                let body = read_text(resp, LIST_BODY_BYTES_MAX).await?;
                parse_list_page(&body).map_err(OpError::Mismatch)
            },
        )
        .await
    }

    /// ListObjectsV2 with one key at most: succeeds iff the bucket exists and may be read.
    pub async fn probe_bucket(&mut self, bucket: &str) -> Result<(), OpError> {
        self.list_page(bucket, "", None, None, 1).await.map(|_| ())
    }

    /// CreateBucket; outside `us-east-1` the region goes in a `LocationConstraint` as AWS needs.
    pub async fn create_bucket(&mut self, bucket: &str, region: &str) -> Result<(), OpError> {
        let body = if region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"))
        };
        let path = bucket_path(bucket);
        self.exchange(Method::PUT, &path, "", body, 0, drain_ok)
            .await
    }

    /// DeleteBucket.
    pub async fn delete_bucket(&mut self, bucket: &str) -> Result<(), OpError> {
        let path = bucket_path(bucket);
        self.exchange(Method::DELETE, &path, "", Bytes::new(), 0, drain_ok)
            .await
    }
}

/// The query of a ListObjectsV2 request, its parameters in canonical (sorted) order.
fn list_query(prefix: &str, delimiter: Option<&str>, token: Option<&str>, max_keys: u32) -> String {
    let mut query = String::new();
    if let Some(token) = token {
        query.push_str("continuation-token=");
        query.push_str(&uri_encode(token.as_bytes(), false));
        query.push('&');
    }
    if let Some(delimiter) = delimiter {
        query.push_str("delimiter=");
        query.push_str(&uri_encode(delimiter.as_bytes(), false));
        query.push('&');
    }
    query.push_str(&format!(
        "list-type=2&max-keys={max_keys}&prefix={}",
        uri_encode(prefix.as_bytes(), false)
    ));
    query
}

fn bucket_path(bucket: &str) -> String {
    format!("/{}", uri_encode(bucket.as_bytes(), false))
}

fn object_path(bucket: &str, key: &str) -> String {
    format!(
        "/{}/{}",
        uri_encode(bucket.as_bytes(), false),
        uri_encode(key.as_bytes(), true)
    )
}

/// Reads a body to its end without keeping it; returns its length.
async fn drain(resp: Response<Incoming>) -> Result<u64, OpError> {
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError::Transport(chain(&e)))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

async fn drain_ok(resp: Response<Incoming>) -> Result<(), OpError> {
    drain(resp).await.map(|_| ())
}

/// Reads a body of at most `max` bytes as (lossy) UTF-8.
async fn read_text(resp: Response<Incoming>, max: usize) -> Result<String, OpError> {
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError::Transport(chain(&e)))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > max {
                return Err(OpError::Mismatch(format!(
                    "response body exceeds {max} bytes"
                )));
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Turns a non-2xx response into an error, reading the S3 error document if there is one.
async fn status_error(resp: Response<Incoming>) -> OpError {
    let status = resp.status();
    let text = match read_text(resp, ERROR_BODY_BYTES_MAX).await {
        Ok(text) => text,
        Err(e) if e.is_transport() => return e,
        Err(_) => String::new(),
    };
    let code = xml_text(&text, "Code").unwrap_or_default();
    let message = xml_text(&text, "Message").unwrap_or_else(|| {
        if code.is_empty() && status == StatusCode::FORBIDDEN {
            // HEAD answers carry no body; say at least what the status means.
            "Forbidden".to_string()
        } else {
            String::new()
        }
    });
    OpError::Status {
        status: status.as_u16(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints: default port, explicit port, IPv6, trailing slash; refusals say why.
    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("127.0.0.1", 9000, "127.0.0.1:9000")
        );
        let e = Endpoint::parse("http://s3.local/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("s3.local", 80, "s3.local")
        );
        let e = Endpoint::parse("http://[::1]:19000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 19000));
        assert_eq!(e.url(), "http://[::1]:19000");
        assert!(Endpoint::parse("https://s3.amazonaws.com")
            .unwrap_err()
            .contains("https"));
        assert!(Endpoint::parse("127.0.0.1:9000").is_err());
        assert!(Endpoint::parse("http://h:99999").is_err());
        assert!(Endpoint::parse("http://h:9000/bucket").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("http://:9000").is_err());
    }

    /// Keys keep their slashes in the path; buckets and odd characters are encoded.
    #[test]
    fn paths_are_encoded() {
        assert_eq!(object_path("b", "run/small/0/1"), "/b/run/small/0/1");
        assert_eq!(object_path("b", "a b+c"), "/b/a%20b%2Bc");
        assert_eq!(bucket_path("hamster-bench"), "/hamster-bench");
    }

    /// A listing page yields its key count and, only when truncated, the decoded token.
    #[test]
    fn parses_listing_pages() {
        let xml = "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated><Contents><Key>a</Key></Contents><Contents><Key>b&amp;c</Key></Contents><NextContinuationToken>t&amp;1</NextContinuationToken></ListBucketResult>";
        let page = parse_list_page(xml).unwrap();
        assert_eq!(page.keys, 2);
        assert_eq!(page.next.as_deref(), Some("t&1"));
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>z</Key></Contents></ListBucketResult>";
        assert_eq!(parse_list_page(last).unwrap().next, None);
        assert!(parse_list_page(
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>"
        )
        .is_err());
        assert!(parse_list_page("<Error><Code>NoSuchBucket</Code></Error>").is_err());
        assert_eq!(
            (page.prefixes, parse_list_page(last).unwrap().prefixes),
            (0, 0)
        );
        let rolled = "<ListBucketResult><Prefix>fill/</Prefix><Delimiter>/</Delimiter><IsTruncated>false</IsTruncated><Contents><Key>fill/x</Key></Contents><CommonPrefixes><Prefix>fill/a-0/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>fill/a-1/</Prefix></CommonPrefixes></ListBucketResult>";
        let page = parse_list_page(rolled).unwrap();
        assert_eq!((page.keys, page.prefixes, page.next), (1, 2, None));
    }

    /// Listing queries go out with their parameters sorted and encoded, the delimiter and
    /// token only when given.
    #[test]
    fn listing_queries() {
        assert_eq!(
            list_query("fill/", None, None, 1000),
            "list-type=2&max-keys=1000&prefix=fill%2F"
        );
        assert_eq!(
            list_query("a b", Some("/"), Some("t=1"), 5),
            "continuation-token=t%3D1&delimiter=%2F&list-type=2&max-keys=5&prefix=a%20b"
        );
    }

    /// Error text reads as status, S3 code and message.
    #[test]
    fn error_display() {
        let e = OpError::Status {
            status: 403,
            code: "SignatureDoesNotMatch".into(),
            message: "The request signature we calculated does not match".into(),
        };
        assert_eq!(
            e.to_string(),
            "HTTP 403 SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(
            xml_text("<Error><Code>NoSuchKey</Code></Error>", "Code").as_deref(),
            Some("NoSuchKey")
        );
    }
}
