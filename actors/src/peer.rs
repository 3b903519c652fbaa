//! The peer link: the one place that knows about sockets between nodes (DESIGN §4). It keeps
//! one pooled outbound mutual-TLS connection per peer for Raft RPC ([`PeerLink`]) and serves
//! the other end of those connections on the cluster port ([`raft_protocol`]).
//!
//! Identity is the certificate's, never a message's (INV-6): after dialling node `n` the link
//! checks that the certificate presented carries `n`'s node id, and the serving side refuses a
//! Raft request whose claimed sender (the vote's leader or candidate) is not the certificate's
//! node.
//!
//! Failures are sorted for openraft (STYLE determinism rule 7): a refused, timed-out or
//! wrong-identity connection and a request that is not answered in time are *unreachable*
//! (openraft backs off); a connection that drops or garbles an answer is a *network* error
//! (openraft retries). Reconnects back off exponentially, capped below the election timeout.
//! A request that failed before any connection was open says so ([`PeerError::never_sent`]),
//! so a caller may send even a non-idempotent request again elsewhere.
//!
//! A pooled connection that sits unused is watched: the dialling side closes it after
//! [`PEER_IDLE_MS_MAX`], before the serving side's own idle limit, and drops it as soon as the
//! peer closes it; so the first request after a quiet spell dials afresh instead of failing on
//! a connection that is already dead (a follower's connection to its leader carries only
//! forwarded writes and reads, and goes quiet whenever its clients do).
//!
//! Each peer's connection is driven by one tokio task on the current runtime; the link and its
//! clones only queue requests for it, bounded in count and in bytes, so a slow peer makes its
//! callers wait (and then fail) instead of growing memory.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use hamster_protocol::wire::{
    encode_frame, encode_message, ALPN_RAFT, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout, Sleep};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::control::{read_frame, write_frame, ClusterStream, FrameError, ProtocolHandler};
use crate::raft::network::{decode_request, RaftRequest, RaftResponse};
use crate::raft::node::{RaftNode, RaftRpc};
use crate::raft::types::NodeId;
use crate::tls::{client_config, cluster_server_name, peer_node_id, TlsMaterial};

/// Time to open the TCP connection and, separately, to finish the TLS handshake with a peer.
pub const CONNECT_MS_MAX: u64 = 1_000;
/// First pause after a failed dial; doubles on each further failure.
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 10;
/// Longest pause between dials: below the election timeout (300 ms), so a peer that comes back
/// is reached again before a healthy follower would give up on its leader.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 200;
/// Requests queued for one peer; further callers wait for a slot.
pub const PEER_REQUESTS_QUEUED_MAX: usize = 64;
/// Bytes queued for one peer (requests not yet answered); further callers wait. Room for one
/// largest frame plus smaller traffic behind it.
pub const PEER_QUEUE_BYTES_MAX: usize = 2 * (FRAME_BYTES_MAX + FRAME_HEADER_BYTES);
/// Time a served Raft connection may sit idle between requests before it is closed.
pub const RAFT_IDLE_MS_MAX: u64 = 60_000;
/// Time a pooled outbound connection may sit unused before this side closes it. Well below
/// every serving side's idle limit ([`RAFT_IDLE_MS_MAX`], the shard service's 120 s), so the
/// dialling side always closes first and never sends a request into a connection the peer is
/// closing at that moment; the next request dials afresh, which costs one handshake.
pub const PEER_IDLE_MS_MAX: u64 = 30_000;
const _: () = assert!(PEER_IDLE_MS_MAX < RAFT_IDLE_MS_MAX);
/// Time the local Raft member may take to answer one served request.
pub const RAFT_HANDLER_MS_MAX: u64 = 30_000;

/// A node id as certificates spell it: 16 lowercase hex digits.
pub fn node_id_hex(id: NodeId) -> String {
    format!("{id:016x}")
}

/// The node id a certificate names, as a number.
pub fn parse_node_id(hex_id: &str) -> Option<NodeId> {
    NodeId::from_str_radix(hex_id, 16).ok()
}

/// Why a request to a peer got no answer, sorted by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No connection to the peer could be opened (refused, timed out, backing off after such
    /// a failure), so the request was never sent; back off and retry, here or elsewhere.
    #[error("node {to:016x} at {addr} is unreachable: {reason}")]
    NotConnected {
        /// The node dialled.
        to: NodeId,
        /// Where it was dialled.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer did not answer in time; the request may or may not have reached it. Back off
    /// and retry.
    #[error("node {to:016x} at {addr} is unreachable: {reason}")]
    Unreachable {
        /// The node dialled.
        to: NodeId,
        /// Where it was dialled.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// Someone else answered at the peer's address; back off until the address book is right.
    #[error("dialled node {to:016x} at {addr} but the certificate there names {found}")]
    WrongPeer {
        /// The node dialled.
        to: NodeId,
        /// Where it was dialled.
        addr: String,
        /// The node id in the certificate presented, if any.
        found: String,
    },
    /// The connection broke or the answer was garbled; retry now.
    #[error("the connection to node {to:016x} failed: {reason}; retry")]
    Network {
        /// The node dialled.
        to: NodeId,
        /// What failed.
        reason: String,
    },
}

impl PeerError {
    /// Whether the caller should back off (unreachable) rather than retry at once.
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, PeerError::Network { .. })
    }

    /// Whether the request certainly never left this node, so sending it again (to this peer
    /// or another) cannot make it take effect twice.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            PeerError::NotConnected { .. } | PeerError::WrongPeer { .. }
        )
    }
}

/// One request for one peer: a JSON payload, framed by the link, answered by one frame.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// The node meant to answer; its certificate must name it.
    pub to: NodeId,
    /// Its cluster port, `host:port`.
    pub addr: String,
    /// The request payload (one frame's worth).
    pub payload: Vec<u8>,
    /// Time allowed for queueing, sending and the answer.
    pub timeout: Duration,
}

/// Another way for a link's requests to travel: the deterministic simulation gives each node a
/// simulated network here, so everything above the link (Raft RPC, forwarded proposals, read
/// index) runs unchanged in it. The transport decides synchronously what happens to a request
/// and answers it as the production link would, sorting failures the same way ([`PeerError`]).
pub trait PeerTransport: Send + Sync + 'static {
    /// Carries one request and waits (at most `req.timeout`) for its answer's payload.
    fn send(&self, req: PeerRequest) -> BoxFuture<'static, Result<Vec<u8>, PeerError>>;
}

/// A boxed future that may move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A cheap clonable handle on the node's outbound peer connections.
#[derive(Clone)]
pub struct PeerLink {
    inner: LinkKind,
}

#[derive(Clone)]
enum LinkKind {
    /// The production link: pooled mutual-TLS connections.
    Tls(Arc<LinkInner>),
    /// Another transport (the simulation's network).
    Other(Arc<dyn PeerTransport>),
}

struct LinkInner {
    connector: TlsConnector,
    /// The protocol every connection of this link speaks.
    alpn: &'static [u8],
    peers: Mutex<BTreeMap<NodeId, PeerSlot>>,
}

/// The queue in front of one peer's connection task.
struct PeerSlot {
    addr: String,
    jobs: mpsc::Sender<Job>,
    queued_bytes: Arc<Semaphore>,
}

struct Job {
    frame: Vec<u8>,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<u8>, PeerError>>,
    /// Released when the job is done, freeing its bytes in the peer's queue.
    _bytes: OwnedSemaphorePermit,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            LinkKind::Tls(inner) => {
                let peers: Vec<NodeId> = inner
                    .peers
                    .lock()
                    .map(|p| p.keys().copied().collect())
                    .unwrap_or_default();
                f.debug_struct("PeerLink").field("peers", &peers).finish()
            }
            LinkKind::Other(_) => f.debug_struct("PeerLink").finish_non_exhaustive(),
        }
    }
}

impl PeerLink {
    /// A link that authenticates with `material` and speaks Raft RPC ([`ALPN_RAFT`]).
    pub fn new(material: &TlsMaterial) -> anyhow::Result<Self> {
        Self::speaking(material, ALPN_RAFT)
    }

    /// A link that authenticates with `material` and speaks `alpn` (Raft RPC or shard
    /// transfer: each has its own connections, so bulk shard bytes never delay a heartbeat).
    pub fn speaking(material: &TlsMaterial, alpn: &'static [u8]) -> anyhow::Result<Self> {
        let connector = TlsConnector::from(client_config(material, &[alpn])?);
        Ok(PeerLink {
            inner: LinkKind::Tls(Arc::new(LinkInner {
                connector,
                alpn,
                peers: Mutex::new(BTreeMap::new()),
            })),
        })
    }

    /// A link whose requests travel by `transport` instead of TLS connections.
    pub fn with_transport(transport: Arc<dyn PeerTransport>) -> Self {
        PeerLink {
            inner: LinkKind::Other(transport),
        }
    }

    /// Sends one request and waits (at most `req.timeout`) for its answer's payload. Must be
    /// called inside a tokio runtime: the first request to a peer starts its connection task.
    pub async fn send(&self, req: PeerRequest) -> Result<Vec<u8>, PeerError> {
        let inner = match &self.inner {
            LinkKind::Tls(inner) => inner,
            LinkKind::Other(transport) => return transport.send(req).await,
        };
        let PeerRequest {
            to,
            addr,
            payload,
            timeout: allowed,
        } = req;
        let frame = encode_frame(&payload).map_err(|e| PeerError::Network {
            to,
            reason: e.to_string(),
        })?;
        let (jobs, queued_bytes) = Self::slot(inner, to, &addr);
        let bytes = u32::try_from(frame.len()).expect("a frame's length fits in u32");
        let work = async {
            let closed = || PeerError::Network {
                to,
                reason: "the peer link is closed".into(),
            };
            let permit = queued_bytes
                .acquire_many_owned(bytes)
                .await
                .map_err(|_| closed())?;
            let (reply, answer) = oneshot::channel();
            let job = Job {
                frame,
                timeout: allowed,
                reply,
                _bytes: permit,
            };
            jobs.send(job).await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        };
        match timeout(allowed, work).await {
            Ok(answer) => answer,
            Err(_) => Err(PeerError::Unreachable {
                to,
                addr,
                reason: format!("no answer within {} ms", allowed.as_millis()),
            }),
        }
    }

    /// The queue for `to`, starting its connection task on first use or when its address
    /// changed (the old task ends once its queue is dropped).
    fn slot(inner: &LinkInner, to: NodeId, addr: &str) -> (mpsc::Sender<Job>, Arc<Semaphore>) {
        let mut peers = inner.peers.lock().expect("peer table lock");
        let reusable = peers
            .get(&to)
            .is_some_and(|s| s.addr == addr && !s.jobs.is_closed());
        if !reusable {
            let (jobs, rx) = mpsc::channel(PEER_REQUESTS_QUEUED_MAX);
            let conn = PeerConnection {
                to,
                addr: addr.to_string(),
                connector: inner.connector.clone(),
                alpn: inner.alpn,
            };
            tokio::spawn(conn.drive(rx));
            peers.insert(
                to,
                PeerSlot {
                    addr: addr.to_string(),
                    jobs,
                    queued_bytes: Arc::new(Semaphore::new(PEER_QUEUE_BYTES_MAX)),
                },
            );
        }
        let slot = peers.get(&to).expect("slot just ensured");
        (slot.jobs.clone(), slot.queued_bytes.clone())
    }
}

/// The connection task's view of one peer.
struct PeerConnection {
    to: NodeId,
    addr: String,
    connector: TlsConnector,
    alpn: &'static [u8],
}

/// What the connection task wakes up for.
enum Wake {
    Job(Option<Job>),
    PauseOver,
    /// The pooled connection is no use any more (why, for the log).
    Drop(&'static str),
}

/// Waits while a pooled connection sits unused, and answers why it should be dropped: this
/// side's idle limit passed, or the peer closed it (a restart, or its own idle limit) or broke
/// it. A request is never written into a connection whose close has already arrived.
async fn watch_unused(stream: &mut TlsStream<TcpStream>) -> &'static str {
    let mut byte = [0u8; 1];
    let limit = Duration::from_millis(PEER_IDLE_MS_MAX);
    match timeout(limit, stream.read(&mut byte)).await {
        Err(_) => "unused for the idle limit",
        Ok(Ok(0)) => "closed by the peer",
        // Nothing is owed to this side while no request is out: the stream is out of step.
        Ok(Ok(_)) => "the peer sent bytes nobody asked for",
        Ok(Err(_)) => "broken while unused",
    }
}

impl PeerConnection {
    /// Serves the queue one request at a time until every handle on it is dropped.
    async fn drive(self, mut jobs: mpsc::Receiver<Job>) {
        let mut stream: Option<TlsStream<TcpStream>> = None;
        let mut backoff_ms = RECONNECT_BACKOFF_MS_MIN;
        let mut pause: Option<Pin<Box<Sleep>>> = None;
        loop {
            // A close that has arrived is noticed before the next job is taken.
            let wake = match (pause.as_mut(), stream.as_mut()) {
                (Some(p), _) => tokio::select! {
                    biased;
                    () = p.as_mut() => Wake::PauseOver,
                    job = jobs.recv() => Wake::Job(job),
                },
                (None, Some(s)) => tokio::select! {
                    biased;
                    why = watch_unused(s) => Wake::Drop(why),
                    job = jobs.recv() => Wake::Job(job),
                },
                (None, None) => Wake::Job(jobs.recv().await),
            };
            let job = match wake {
                Wake::PauseOver => {
                    pause = None;
                    continue;
                }
                Wake::Drop(why) => {
                    debug!(to = self.to, addr = %self.addr, why, "dropping pooled peer connection");
                    if let Some(mut s) = stream.take() {
                        let _ = timeout(Duration::from_millis(CONNECT_MS_MAX), s.shutdown()).await;
                    }
                    continue;
                }
                Wake::Job(None) => return,
                Wake::Job(Some(job)) => job,
            };
            if job.reply.is_closed() {
                // The caller gave up while the job was queued.
                continue;
            }
            if pause.is_some() {
                let _ = job
                    .reply
                    .send(Err(self.not_connected("backing off after a failed dial")));
                continue;
            }
            if stream.is_none() {
                match self.dial().await {
                    Ok(s) => {
                        stream = Some(s);
                        backoff_ms = RECONNECT_BACKOFF_MS_MIN;
                    }
                    Err(e) => {
                        debug!(to = self.to, addr = %self.addr, error = %e, backoff_ms, "peer dial failed");
                        pause = Some(Box::pin(sleep(Duration::from_millis(backoff_ms))));
                        backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MS_MAX);
                        let _ = job.reply.send(Err(e));
                        continue;
                    }
                }
            }
            let s = stream.as_mut().expect("connected above");
            let answer = self.exchange(s, &job.frame, job.timeout).await;
            if answer.is_err() {
                // The stream cannot be resynchronised after a failed exchange.
                if let Some(mut s) = stream.take() {
                    let _ = s.shutdown().await;
                }
            }
            let _ = job.reply.send(answer);
        }
    }

    fn unreachable(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Unreachable {
            to: self.to,
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    fn not_connected(&self, reason: impl Into<String>) -> PeerError {
        PeerError::NotConnected {
            to: self.to,
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    fn network(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Network {
            to: self.to,
            reason: reason.into(),
        }
    }

    /// Opens a connection and checks that the certificate presented is the dialled node's.
    async fn dial(&self) -> Result<TlsStream<TcpStream>, PeerError> {
        let limit = Duration::from_millis(CONNECT_MS_MAX);
        let tcp = match timeout(limit, TcpStream::connect(&self.addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(self.not_connected(e.to_string())),
            Err(_) => return Err(self.not_connected("TCP connect timed out")),
        };
        // Raft frames are small and latency-bound.
        let _ = tcp.set_nodelay(true);
        let handshake = self.connector.connect(cluster_server_name(), tcp);
        let stream = match timeout(limit, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.not_connected(format!("TLS handshake failed: {e}"))),
            Err(_) => return Err(self.not_connected("TLS handshake timed out")),
        };
        let session = stream.get_ref().1;
        let found = session.peer_certificates().and_then(peer_node_id);
        if found.as_deref() != Some(node_id_hex(self.to).as_str()) {
            return Err(PeerError::WrongPeer {
                to: self.to,
                addr: self.addr.clone(),
                found: found.unwrap_or_else(|| "no node".into()),
            });
        }
        if session.alpn_protocol() != Some(self.alpn) {
            let name = String::from_utf8_lossy(self.alpn).into_owned();
            return Err(self.not_connected(format!("the peer does not speak {name}")));
        }
        Ok(stream)
    }

    /// Writes one request frame and reads its answer, all within `allowed`.
    async fn exchange(
        &self,
        stream: &mut TlsStream<TcpStream>,
        frame: &[u8],
        allowed: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let idle_ms = u64::try_from(allowed.as_millis()).unwrap_or(u64::MAX);
        let work = async {
            write_frame(stream, frame).await?;
            read_frame(stream, idle_ms).await
        };
        match timeout(allowed, work).await {
            Err(_) | Ok(Err(FrameError::Idle(_) | FrameError::Stuck(_))) => {
                Err(self.unreachable("no answer in time"))
            }
            Ok(Err(e)) => Err(self.network(e.to_string())),
            Ok(Ok(None)) => Err(self.network("the peer closed the connection")),
            Ok(Ok(Some(payload))) => Ok(payload),
        }
    }
}

/// The local Raft member that served requests go to, bound once it has started (the cluster
/// port is bound first, so that the member's address is known before it starts).
#[derive(Clone, Default)]
pub struct RaftService {
    node: Arc<Mutex<Option<Addr<RaftNode>>>>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = self.node.lock().map(|n| n.is_some()).unwrap_or(false);
        f.debug_struct("RaftService")
            .field("bound", &bound)
            .finish()
    }
}

impl RaftService {
    /// A service with no member yet: requests are refused until [`RaftService::bind`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes served requests to `node`.
    pub fn bind(&self, node: Addr<RaftNode>) {
        *self.node.lock().expect("raft service lock") = Some(node);
    }

    /// Stops routing; requests are refused again.
    pub fn unbind(&self) {
        *self.node.lock().expect("raft service lock") = None;
    }

    /// Answers one encoded request from `peer` (the node id in its certificate) with the
    /// answer as one frame (header and payload); `None` when the answer cannot be encoded
    /// (the connection is then closed).
    pub async fn answer_frame(&self, peer: NodeId, payload: &[u8]) -> Option<Vec<u8>> {
        let response = match decode_request(payload) {
            Ok((epoch, request)) => self.answer(peer, epoch, request).await,
            Err(e) => RaftResponse::Refused {
                message: e.to_string(),
            },
        };
        match encode_message(&response) {
            Ok(frame) => Some(frame),
            Err(e) => {
                debug!(peer, error = %e, "raft: cannot encode the answer");
                None
            }
        }
    }

    /// Answers one request from `peer` (the node id in its certificate).
    async fn answer(&self, peer: NodeId, epoch: u64, request: RaftRequest) -> RaftResponse {
        let claimed = request.sender();
        if claimed.is_some_and(|id| id != peer) {
            return RaftResponse::Refused {
                message: format!(
                    "request claims to come from node {:016x} but the certificate names {:016x}",
                    claimed.unwrap_or_default(),
                    peer
                ),
            };
        }
        let node = self.node.lock().expect("raft service lock").clone();
        let Some(node) = node else {
            return RaftResponse::Refused {
                message: "the Raft member has not started".into(),
            };
        };
        let limit = Duration::from_millis(RAFT_HANDLER_MS_MAX);
        match timeout(
            limit,
            node.send(RaftRpc {
                request,
                epoch,
                from: peer,
            }),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => RaftResponse::Refused {
                message: format!("the Raft member is not running: {e}"),
            },
            Err(_) => RaftResponse::Refused {
                message: "the Raft member did not answer in time".into(),
            },
        }
    }
}

/// The cluster port's handler for [`ALPN_RAFT`]: answers Raft RPC frames from a peer with the
/// local member behind `service`.
pub fn raft_protocol(service: RaftService) -> ProtocolHandler {
    Arc::new(move |stream, peer| Box::pin(serve_raft(stream, peer, service.clone())))
}

/// Answers requests on one connection until the peer closes it, goes idle, or breaks framing.
async fn serve_raft(mut stream: ClusterStream, peer: String, service: RaftService) {
    let Some(peer_id) = parse_node_id(&peer) else {
        debug!(%peer, "raft: certificate node id is not a number; closing");
        return;
    };
    // Ends when the peer closes, idles past RAFT_IDLE_MS_MAX or breaks framing; one request
    // is in flight at a time, so a connection costs at most one frame of memory.
    loop {
        let payload = match read_frame(&mut stream, RAFT_IDLE_MS_MAX).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(e) => {
                debug!(%peer, error = %e, "raft: connection ended");
                return;
            }
        };
        let Some(frame) = service.answer_frame(peer_id, &payload).await else {
            return;
        };
        if let Err(e) = write_frame(&mut stream, &frame).await {
            debug!(%peer, error = %e, "raft: cannot send the answer");
            return;
        }
    }
}
