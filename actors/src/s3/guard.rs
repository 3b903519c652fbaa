//! `GuardedStream`: the S3 listener's connections, seen by the HTTP layer through a check of
//! every request head ([`hamster_protocol::http_head`]). A head the HTTP layer would refuse
//! with a bare status (a 100 KB key, a header section over its buffers) is answered here with
//! an S3 XML error instead, and the connection is closed; every other byte passes unchanged.
//!
//! Bodies pass straight through (read into the HTTP layer's own buffer, no copy); only head
//! bytes are held, at most [`HEAD_BYTES_MAX`], until the head is complete. Once a connection
//! uses a framing the check does not follow, it stops looking and passes everything.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::http::StatusCode;
use hamster_protocol::http_head::{self, Body, Head, Refusal, HEAD_BYTES_MAX};
use hamster_protocol::xml;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::noise::ClientNoise;
use crate::clock::IdSource;

/// Bytes read from the socket at a time while a head is being collected.
const HEAD_READ_BYTES: usize = 16 * 1024;

enum State {
    /// Collecting the next request head.
    Head,
    /// Passing this many more body bytes.
    Body(u64),
    /// Passing everything from here on.
    Through,
    /// Writing a refusal (from `at`), then ending the connection.
    Refusing { answer: Vec<u8>, at: usize },
    /// The refusal is out; the HTTP layer is told the client is gone.
    Done,
}

/// A connection of the S3 listener with its request heads checked.
pub struct GuardedStream<T> {
    io: T,
    state: State,
    /// Bytes of the head being collected.
    head: Vec<u8>,
    /// Bytes already judged and waiting for the HTTP layer to read them, from `ready_at`.
    ready: Vec<u8>,
    ready_at: usize,
    ids: Arc<IdSource>,
}

impl<T> GuardedStream<T> {
    /// Wraps a fresh connection; `ids` names the requests it refuses.
    pub fn new(io: T, ids: Arc<IdSource>) -> Self {
        // A new connection is a fair moment to report client mistakes held back a while.
        ClientNoise::global().flush_due();
        GuardedStream {
            io,
            state: State::Head,
            head: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
            ids,
        }
    }

    /// Moves judged bytes out of `self.head` according to the verdicts on them, until the
    /// head buffer holds only an undecided start of a head (or nothing).
    fn judge(&mut self) {
        loop {
            match self.state {
                State::Head if !self.head.is_empty() => {}
                State::Body(0) => {
                    self.state = State::Head;
                    continue;
                }
                State::Body(n) => {
                    let take = usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(self.head.len());
                    self.ready.extend(self.head.drain(..take));
                    self.state = State::Body(n - take as u64);
                    if self.head.is_empty() {
                        return;
                    }
                    continue;
                }
                State::Through => {
                    self.ready.append(&mut self.head);
                    return;
                }
                _ => return,
            }
            match http_head::inspect(&self.head) {
                Head::Partial => return,
                Head::Complete { len, body } => {
                    self.ready.extend(self.head.drain(..len));
                    self.state = match body {
                        Body::Length(n) => State::Body(n),
                        Body::Untracked => State::Through,
                    };
                }
                Head::Unknown => self.state = State::Through,
                Head::Refused(r) => {
                    self.head.clear();
                    self.state = State::Refusing {
                        answer: self.answer(&r),
                        at: 0,
                    };
                    return;
                }
            }
        }
    }

    /// The whole HTTP answer to a refused head: status, S3 headers, XML body, close.
    fn answer(&self, r: &Refusal) -> Vec<u8> {
        let id = self.ids.request_id();
        let extra: Vec<(&str, &str)> = r.extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = xml::error_xml(
            r.error.code.code(),
            r.error.message(),
            &r.resource,
            &id,
            &extra,
        );
        let status = StatusCode::from_u16(r.error.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ClientNoise::global().record(
            "oversized-request-head",
            &format!("{} for {:.64}", r.error.code, r.resource),
        );
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
             connection: close\r\nx-amz-request-id: {id}\r\nx-amz-id-2: {id}\r\n\
             server: Hamster\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Bad Request"),
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedStream<T> {
    /// Writes the refusal out and shuts the write side; `Ready` once done (or failed).
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Refusing { answer, at } = &mut self.state else {
            return Poll::Ready(());
        };
        while *at < answer.len() {
            match Pin::new(&mut self.io).poll_write(cx, &answer[*at..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if *at >= answer.len() {
            if Pin::new(&mut self.io).poll_flush(cx).is_pending() {
                return Poll::Pending;
            }
            if Pin::new(&mut self.io).poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.state = State::Done;
        Poll::Ready(())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    // Idle keep-alive connections should not keep a head's worth of memory.
                    this.ready = Vec::new();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Refusing { .. } => {
                    if this.poll_refusal(cx).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
                // End of stream: the HTTP layer closes the connection without a word.
                State::Done => return Poll::Ready(Ok(())),
                State::Through => return Pin::new(&mut this.io).poll_read(cx, buf),
                State::Body(n) if n > 0 => {
                    let max = usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(buf.remaining());
                    if max == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let mut part = buf.take(max);
                    let poll = Pin::new(&mut this.io).poll_read(cx, &mut part);
                    let got = part.filled().len();
                    // SAFETY: the read above initialised and filled `got` bytes at the start of
                    // `buf`'s unfilled part (`part` is a view of exactly that memory).
                    unsafe { buf.assume_init(got) };
                    buf.advance(got);
                    if got > 0 {
                        this.state = State::Body(n - got as u64);
                    }
                    return poll;
                }
                State::Body(_) | State::Head => {}
            }
            this.judge();
            if this.head.is_empty() {
                this.head = Vec::new();
            }
            if this.ready_at < this.ready.len() || !matches!(this.state, State::Head) {
                continue;
            }
            // An undecided head: read more of it.
            let mut chunk = [0u8; HEAD_READ_BYTES];
            let room = (HEAD_BYTES_MAX + 1).saturating_sub(this.head.len()).max(1);
            let mut part = ReadBuf::new(&mut chunk[..room.min(HEAD_READ_BYTES)]);
            match Pin::new(&mut this.io).poll_read(cx, &mut part) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if part.filled().is_empty() => {
                    // The client is gone mid-head: hand what came to the HTTP layer as is.
                    this.state = State::Through;
                    this.ready.append(&mut this.head);
                    if this.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => this.head.extend_from_slice(part.filled()),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn through(input: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(&input).await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut guarded = GuardedStream::new(server, Arc::new(IdSource::seeded(7)));
        let mut seen = Vec::new();
        guarded.read_to_end(&mut seen).await.unwrap();
        drop(guarded);
        let mut answered = Vec::new();
        client_read.read_to_end(&mut answered).await.unwrap();
        (seen, answered)
    }

    #[tokio::test]
    async fn requests_within_limits_pass_byte_for_byte() {
        let mut input = b"PUT /b/k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        input.extend(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n");
        input.extend(
            b"PUT /b/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n",
        );
        let (seen, answered) = through(input.clone()).await;
        assert_eq!(seen, input);
        assert!(answered.is_empty());
    }

    #[tokio::test]
    async fn a_body_that_looks_like_a_huge_head_is_still_a_body() {
        let mut body = b"GET /".to_vec();
        body.extend(std::iter::repeat_n(b'k', HEAD_BYTES_MAX * 2));
        let mut input = format!(
            "PUT /b/k HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend(&body);
        let (seen, answered) = through(input.clone()).await;
        assert_eq!(seen, input);
        assert!(answered.is_empty());
    }

    #[tokio::test]
    async fn an_overlong_key_after_a_good_request_is_answered_in_xml() {
        let good = b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut input = good.clone();
        input.extend(b"GET /b/");
        input.extend(std::iter::repeat_n(b'k', 100_000));
        input.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        let (seen, answered) = through(input).await;
        assert_eq!(
            seen, good,
            "the HTTP layer sees the good request, then the end"
        );
        let text = String::from_utf8(answered).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("<Code>KeyTooLongError</Code>"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
    }
}
