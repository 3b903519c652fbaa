//! The cluster port (DESIGN §4): the one listener per node that every other node and the CLI
//! reach over mutual TLS, split into protocols by ALPN through a small routing table. This
//! module owns the listener, its bounds (connections, handshake and idle timeouts, frame size),
//! frame I/O on its streams, the control protocol's server side, and the CLI's control client.
//!
//! A connection is served only after the handshake verified its certificate against the cluster
//! CA; the peer's node id is read from that certificate (INV-6: no plaintext, no anonymous
//! peers). A plaintext, unauthenticated or foreign-CA client is closed with a debug log and the
//! listener keeps serving.
//!
//! The one exception is the join protocol ([`ALPN_JOIN`]): a joining node has no certificate
//! yet. When the routing table serves it, the handshake lets a client without a certificate
//! through (a client that presents one must still chain to the CA), and the router hands such a
//! connection to the join handler only; any other protocol asked for without a verified node
//! certificate is closed before its handler sees a byte.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hamster_protocol::admission::{Class, ConnectionId, Limits, PortAdmission, Verdict};
use hamster_protocol::wire::{
    decode_message, encode_message, frame_len, ControlRequest, ControlResponse, WireError,
    ALPN_CONTROL, ALPN_JOIN, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
use rustls::server::{Acceptor, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{self, AbortHandle, JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};
use tracing::{debug, info, warn};

use crate::tls::{
    client_config, cluster_server_name, peer_node_id, server_config_with, TlsMaterial,
};

/// Most connections authenticated by a node certificate of the cluster (peers and the local
/// CLI) served at once; one more is closed after its handshake. Only certificate holders can
/// fill this pool, so a flood from outside the cluster never takes a member's slot.
pub const CONNECTIONS_MAX: usize = 256;
/// Most connections still in their TLS handshake. Past it a newcomer is still let in and a
/// pending handshake is evicted instead (see [`hamster_protocol::admission`]), so idle or
/// stalled connections cannot lock out a client that finishes its handshake promptly.
pub const HANDSHAKES_PENDING_MAX: usize = 256;
/// Most pending handshakes from one source address; its next one evicts its own oldest.
pub const HANDSHAKES_PER_SOURCE_MAX: usize = 128;
/// Most anonymous join connections past their handshake; they have their own pool so that
/// anonymous clients never take a member's slot.
pub const JOINERS_MAX: usize = 32;
/// Time a client gets to complete the TLS handshake on the cluster port. A member on a LAN or
/// WAN needs a few round trips; anything slower is a stalled client holding a slot.
pub const HANDSHAKE_ACCEPT_MS: u64 = 3_000;
/// Time a client of the cluster port (the CLI, a joiner) waits for its TLS handshake.
pub const HANDSHAKE_MS: u64 = 10_000;
/// Tries a client makes when the node cuts its TLS handshake, which a crowded port does to
/// make room; a later try usually gets through.
pub const HANDSHAKE_ATTEMPTS_MAX: u32 = 3;
/// Pause between those tries.
pub const HANDSHAKE_RETRY_MS: u64 = 250;
/// Least time between two warnings that the port is crowded; a flood must not flood the log.
const CROWDED_WARN_MS: u64 = 10_000;
/// Most events the connection tasks may queue for the accept loop; each task has at most one
/// outstanding, and the pools bound the tasks, so this is never reached in practice.
const PORT_EVENTS_MAX: usize = 1024;
/// Time a control connection may sit idle between requests before it is closed.
pub const CONTROL_IDLE_MS: u64 = 60_000;
/// Time one control request may take to be answered, on the node's side.
pub const CONTROL_HANDLER_MS: u64 = 30_000;
/// Most requests on one control connection; the CLI sends one, so this only stops a client
/// from holding a connection forever.
pub const CONTROL_REQUESTS_MAX: usize = 1024;
/// Time to write one frame before the peer is considered stuck.
pub const WRITE_MS: u64 = 10_000;
/// Time the CLI waits for the TCP connection.
pub const CLIENT_CONNECT_MS: u64 = 5_000;
/// Time the CLI waits for an answer: longer than the node's own handler bound, so that the
/// node's timeout error reaches the CLI rather than a bare client timeout.
pub const CLIENT_RESPONSE_MS: u64 = CONTROL_HANDLER_MS + 5_000;
/// Time a repair sweep may take: it visits every stored shard.
pub const REPAIR_HANDLER_MS: u64 = 6 * 3_600_000;

/// Time the handler of `request` is given.
fn handler_ms(request: &ControlRequest) -> u64 {
    match request {
        ControlRequest::Repair { .. } => REPAIR_HANDLER_MS,
        _ => CONTROL_HANDLER_MS,
    }
}
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF_MS: u64 = 100;

/// Answers one control request; the second argument is the peer's node id, taken from its
/// certificate. Supplied by the node's wiring at start-up.
pub type ControlHandler = Arc<
    dyn Fn(ControlRequest, String) -> Pin<Box<dyn Future<Output = ControlResponse> + Send>>
        + Send
        + Sync,
>;

/// A server-side cluster connection after a successful mutual-TLS handshake.
pub type ClusterStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Serves one whole connection of one ALPN protocol; the second argument is the peer's node id,
/// taken from its certificate. Raft, shard transfer and join register one each. The join
/// handler alone may be called for a client without a certificate; it then gets an empty id.
pub type ProtocolHandler =
    Arc<dyn Fn(ClusterStream, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The routing table of the cluster port: negotiated ALPN name to the handler that serves it.
/// Only the names in the table are offered in the handshake, so a client asking for anything
/// else is refused by TLS itself.
#[derive(Clone)]
pub struct Routes {
    table: BTreeMap<Vec<u8>, ProtocolHandler>,
}

impl Routes {
    /// A table serving the control protocol with `control`.
    pub fn new(control: ControlHandler) -> Self {
        let mut table = BTreeMap::new();
        table.insert(ALPN_CONTROL.to_vec(), control_protocol(control));
        Routes { table }
    }

    /// Adds (or replaces) the handler for `alpn`.
    pub fn with(mut self, alpn: &[u8], handler: ProtocolHandler) -> Self {
        self.table.insert(alpn.to_vec(), handler);
        self
    }

    fn alpn_names(&self) -> Vec<&[u8]> {
        self.table.keys().map(Vec::as_slice).collect()
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self
            .table
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        f.debug_struct("Routes").field("alpn", &names).finish()
    }
}

/// A running cluster port. Dropping it (or [`ClusterPort::shutdown`]) stops the listener and
/// every connection it is serving.
#[derive(Debug)]
pub struct ClusterPort {
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl ClusterPort {
    /// The address the port listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(self) {
        // Drop does the work; this names the intent at call sites.
    }
}

impl Drop for ClusterPort {
    fn drop(&mut self) {
        // The accept task owns the connection tasks in a JoinSet, so aborting it aborts them.
        self.accept_task.abort();
    }
}

/// Binds the cluster port on `addr` serving only the control protocol. Returns once bound; the
/// port runs on the current tokio runtime.
pub async fn bind(
    addr: SocketAddr,
    material: &TlsMaterial,
    control: ControlHandler,
) -> anyhow::Result<ClusterPort> {
    bind_routes(addr, material, Routes::new(control)).await
}

/// Binds the cluster port on `addr` serving every protocol in `routes`. Returns once bound; the
/// port runs on the current tokio runtime.
pub async fn bind_routes(
    addr: SocketAddr,
    material: &TlsMaterial,
    routes: Routes,
) -> anyhow::Result<ClusterPort> {
    let anonymous_allowed = routes.table.contains_key(ALPN_JOIN);
    let config = server_config_with(material, &routes.alpn_names(), anonymous_allowed)?;
    let listener = TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => {
            anyhow!(
                "cannot listen on {addr}: address in use; is another hamster node running there?"
            )
        }
        _ => anyhow!("cannot listen on {addr}: {e}; check the cluster address"),
    })?;
    let local_addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {addr}"))?;
    info!(%local_addr, ?routes, "cluster port listening");
    let accept_task = tokio::spawn(accept_loop(listener, config, Arc::new(routes)));
    Ok(ClusterPort {
        local_addr,
        accept_task,
    })
}

/// What a connection task tells the accept loop about its handshake.
enum PortEvent {
    /// The client's whole ClientHello arrived.
    Hello(ConnectionId),
    /// The handshake finished; the loop answers whether the connection may be served.
    Handshaken {
        id: ConnectionId,
        class: Class,
        verdict: oneshot::Sender<bool>,
    },
}

/// The accept loop's books: the admission table and a way to close each connection in it.
struct PortBooks {
    admission: PortAdmission<IpAddr>,
    handles: BTreeMap<ConnectionId, AbortHandle>,
    by_task: BTreeMap<task::Id, ConnectionId>,
    next_id: ConnectionId,
    /// Connections evicted or refused since the last warning.
    turned_away: u64,
    warned_at: Option<Instant>,
}

impl PortBooks {
    fn new() -> Self {
        PortBooks {
            admission: PortAdmission::new(Limits {
                pending_max: HANDSHAKES_PENDING_MAX,
                pending_per_source_max: HANDSHAKES_PER_SOURCE_MAX,
                members_max: CONNECTIONS_MAX,
                joiners_max: JOINERS_MAX,
            }),
            handles: BTreeMap::new(),
            by_task: BTreeMap::new(),
            next_id: 0,
            turned_away: 0,
            warned_at: None,
        }
    }

    /// Admits a new connection from `source`, evicting a pending one if the pools say so, and
    /// returns its id.
    fn arrive(&mut self, source: IpAddr) -> ConnectionId {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(victim) = self.admission.arrive(id, source) {
            self.close(victim, "a pending TLS handshake was evicted to make room");
        }
        id
    }

    fn track(&mut self, id: ConnectionId, handle: AbortHandle) {
        self.by_task.insert(handle.id(), id);
        self.handles.insert(id, handle);
    }

    fn on_event(&mut self, event: PortEvent) {
        match event {
            PortEvent::Hello(id) => self.admission.hello(id),
            PortEvent::Handshaken { id, class, verdict } => {
                let admitted = match self.admission.authenticate(id, class) {
                    Verdict::Admit { evict } => {
                        if let Some(victim) = evict {
                            self.close(victim, "a join connection was evicted to make room");
                        }
                        true
                    }
                    Verdict::Refuse => {
                        self.turned_away(id, "its pool is full or it was evicted");
                        false
                    }
                };
                // A task that is gone needs no answer.
                let _ = verdict.send(admitted);
            }
        }
    }

    /// A connection task ended, whatever the reason; its slot is free.
    fn ended(&mut self, task: task::Id) {
        if let Some(id) = self.by_task.remove(&task) {
            self.handles.remove(&id);
            self.admission.close(id);
        }
    }

    fn close(&mut self, id: ConnectionId, why: &str) {
        if let Some(handle) = self.handles.remove(&id) {
            handle.abort();
        }
        self.admission.close(id);
        self.turned_away(id, why);
    }

    /// Counts a connection closed for want of room and warns at most once per
    /// [`CROWDED_WARN_MS`], so an operator learns of a flood without a line per connection.
    fn turned_away(&mut self, id: ConnectionId, why: &str) {
        debug!(connection = id, why, "cluster port: closing a connection");
        self.turned_away += 1;
        let now = Instant::now();
        let due = self
            .warned_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_millis(CROWDED_WARN_MS));
        if due {
            warn!(
                closed = self.turned_away,
                pending = self.admission.pending(),
                members = self.admission.members(),
                joiners = self.admission.joiners(),
                "cluster port crowded: closing idle handshakes or connections past their \
                 pool's cap to make room (a flood of idle or slow connections, or too many \
                 clients)"
            );
            self.turned_away = 0;
            self.warned_at = Some(now);
        }
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<ServerConfig>, routes: Arc<Routes>) {
    let mut books = PortBooks::new();
    let mut connections = JoinSet::new();
    let (events_tx, mut events) = mpsc::channel(PORT_EVENTS_MAX);
    loop {
        tokio::select! {
            biased;
            Some(event) = events.recv() => books.on_event(event),
            Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                let task = match &done {
                    Ok((task, ())) => *task,
                    Err(e) => e.id(),
                };
                if let Err(e) = done {
                    if e.is_panic() {
                        warn!(error = %e, "cluster port: a connection handler panicked");
                    }
                }
                books.ended(task);
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer_addr)) => {
                    let id = books.arrive(peer_addr.ip());
                    let handle = connections.spawn(serve_connection(
                        tcp,
                        peer_addr,
                        id,
                        config.clone(),
                        routes.clone(),
                        events_tx.clone(),
                    ));
                    books.track(id, handle);
                }
                Err(e) => {
                    warn!(error = %e, "cluster port: accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                }
            },
        }
    }
}

/// Runs the server side of the TLS handshake, telling the accept loop once the ClientHello is
/// in (so the connection is no longer among the first to be evicted).
async fn accept_tls(
    tcp: TcpStream,
    id: ConnectionId,
    config: Arc<ServerConfig>,
    events: &mpsc::Sender<PortEvent>,
) -> io::Result<ClusterStream> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
    let _ = events.send(PortEvent::Hello(id)).await;
    start.into_stream(config).await
}

async fn serve_connection(
    tcp: TcpStream,
    peer_addr: SocketAddr,
    id: ConnectionId,
    config: Arc<ServerConfig>,
    routes: Arc<Routes>,
    events: mpsc::Sender<PortEvent>,
) {
    // Frames are small request/response messages; batching them only adds latency.
    let _ = tcp.set_nodelay(true);
    let handshake = accept_tls(tcp, id, config, &events);
    let stream = match timeout(Duration::from_millis(HANDSHAKE_ACCEPT_MS), handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(%peer_addr, error = %e, "cluster port: TLS handshake failed; closing");
            return;
        }
        Err(_) => {
            debug!(%peer_addr, HANDSHAKE_ACCEPT_MS, "cluster port: TLS handshake timed out; closing");
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol();
    let presented = session.peer_certificates().is_some_and(|c| !c.is_empty());
    let node_id = match session.peer_certificates().and_then(peer_node_id) {
        Some(id) => id,
        // Only a joiner may come without a certificate; a certificate that names no node is
        // never good enough, not even for joining.
        None if !presented && alpn == Some(ALPN_JOIN) => String::new(),
        None => {
            debug!(%peer_addr, "cluster port: no node certificate for this protocol; closing");
            return;
        }
    };
    let Some(handler) = alpn.and_then(|alpn| routes.table.get(alpn)).cloned() else {
        debug!(%peer_addr, %node_id, "cluster port: no protocol negotiated; closing");
        return;
    };
    let class = if node_id.is_empty() {
        Class::Joiner
    } else {
        Class::Member
    };
    let (verdict, admitted) = oneshot::channel();
    if events
        .send(PortEvent::Handshaken { id, class, verdict })
        .await
        .is_err()
        || admitted.await != Ok(true)
    {
        return;
    }
    handler(stream, node_id).await;
}

fn control_protocol(control: ControlHandler) -> ProtocolHandler {
    Arc::new(move |stream, peer| Box::pin(serve_control(stream, peer, control.clone())))
}

/// Answers control requests on one connection until the client closes it, goes idle, or breaks
/// the framing.
async fn serve_control(mut stream: ClusterStream, peer: String, control: ControlHandler) {
    for _ in 0..CONTROL_REQUESTS_MAX {
        let payload = match read_frame(&mut stream, CONTROL_IDLE_MS).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(FrameError::Wire(e)) => {
                // The stream cannot be resynchronised after a bad header; say why, then close.
                debug!(%peer, error = %e, "control: refusing frame");
                let refusal = ControlResponse::Error {
                    message: e.to_string(),
                };
                let _ = write_message(&mut stream, &refusal).await;
                let _ = stream.shutdown().await;
                return;
            }
            Err(e) => {
                debug!(%peer, error = %e, "control: connection ended");
                return;
            }
        };
        let response = match decode_message::<ControlRequest>(&payload) {
            Ok(request) => answer(&control, request, &peer).await,
            Err(e) => ControlResponse::Error {
                message: e.to_string(),
            },
        };
        if let Err(e) = write_message(&mut stream, &response).await {
            debug!(%peer, error = %e, "control: cannot send the answer");
            return;
        }
    }
    let _ = stream.shutdown().await;
}

async fn answer(control: &ControlHandler, request: ControlRequest, peer: &str) -> ControlResponse {
    let limit = handler_ms(&request);
    let work = control(request, peer.to_string());
    match timeout(Duration::from_millis(limit), work).await {
        Ok(response) => response,
        Err(_) => ControlResponse::Error {
            message: format!(
                "the node did not answer within {} s; check its log and retry",
                limit / 1000
            ),
        },
    }
}

/// Why reading or writing a frame on a cluster stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame broke the wire rules (too large, or not the expected message).
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The peer sent nothing for the allowed time.
    #[error("peer sent nothing for {0} ms; closing")]
    Idle(u64),
    /// The peer stopped reading for the allowed time.
    #[error("peer did not take a frame within {0} ms; closing")]
    Stuck(u64),
    /// The stream failed or ended in the middle of a frame.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame's payload, waiting at most `idle_ms` for it to arrive. `Ok(None)` means
/// the peer closed the connection between frames. A length over the frame limit is refused
/// before any of it is read.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle_ms: u64,
) -> Result<Option<Vec<u8>>, FrameError> {
    read_frame_bounded(reader, idle_ms, FRAME_BYTES_MAX).await
}

/// Like [`read_frame`] with a tighter payload limit, `bytes_max`, for protocols whose
/// messages are small (a length over it is refused before any of the payload is read).
pub async fn read_frame_bounded<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle_ms: u64,
    bytes_max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let work = async {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(FrameError::Io(e)),
        }
        let len = frame_len(header)?;
        if len > bytes_max {
            return Err(FrameError::Wire(WireError::FrameTooLarge {
                len,
                max: bytes_max,
            }));
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).await?;
        Ok(Some(payload))
    };
    timeout(Duration::from_millis(idle_ms), work)
        .await
        .map_err(|_| FrameError::Idle(idle_ms))?
}

/// Writes one already-encoded frame and flushes it, giving up after [`WRITE_MS`].
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    let work = async {
        writer.write_all(frame).await?;
        writer.flush().await
    };
    timeout(Duration::from_millis(WRITE_MS), work)
        .await
        .map_err(|_| FrameError::Stuck(WRITE_MS))?
        .map_err(FrameError::Io)
}

/// Encodes `message` as one frame and writes it (see [`write_frame`]).
pub async fn write_message<W: AsyncWrite + Unpin, T: serde::Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<(), FrameError> {
    write_frame(writer, &encode_message(message)?).await
}

/// Sends one control request to the node at `addr` and returns its answer: the CLI's client.
/// Authenticates with `material` (the node's own certificate from `<data>/tls`).
pub async fn control_request(
    addr: &str,
    material: &TlsMaterial,
    req: &ControlRequest,
) -> anyhow::Result<ControlResponse> {
    let connector = TlsConnector::from(client_config(material, &[ALPN_CONTROL])?);
    let mut stream = connect_tls(addr, &connector, |e| {
        format!(
            "TLS handshake with {addr} failed: {e}; is it a node of the cluster this data dir belongs to?"
        )
    })
    .await?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_CONTROL) {
        bail!(
            "{addr} does not speak the hamster control protocol; is it the same hamster version?"
        );
    }
    write_message(&mut stream, req)
        .await
        .map_err(|e| anyhow!("cannot send the request to {addr}: {e}; retry"))?;
    let payload = match read_frame(&mut stream, handler_ms(req) + 5_000).await {
        Ok(Some(payload)) => payload,
        Ok(None) => {
            bail!("the node at {addr} closed the connection without answering; check its log")
        }
        Err(FrameError::Io(e)) => {
            bail!("the node at {addr} refused the request: {e}; is this data dir's certificate from its cluster?")
        }
        Err(e) => bail!("no answer from the node at {addr}: {e}; check its log and retry"),
    };
    let response = decode_message::<ControlResponse>(&payload)
        .map_err(|e| anyhow!("bad answer from the node at {addr}: {e}"))?;
    // Closing politely lets the node see a clean end rather than a reset.
    let _ = stream.shutdown().await;
    Ok(response)
}

/// Whether a client's handshake failed because the node closed or reset the connection, rather
/// than because a certificate or protocol check failed. A crowded cluster port does that to
/// make room, and so does a node that is shutting down.
fn handshake_cut(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Opens a TCP connection to `addr` and runs the client side of the TLS handshake, trying again
/// (up to [`HANDSHAKE_ATTEMPTS_MAX`] times) when the node cuts the handshake. A handshake that
/// failed a check is reported through `rejected`, which says what that means to this client;
/// a cut one is reported as what it is, with what to do.
pub(crate) async fn connect_tls(
    addr: &str,
    connector: &TlsConnector,
    rejected: impl Fn(&io::Error) -> String,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut attempt = 1;
    loop {
        let tcp = connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let handshake = connector.connect(cluster_server_name(), tcp);
        let e = match timeout(Duration::from_millis(HANDSHAKE_MS), handshake).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e,
            Err(_) => bail!(
                "TLS handshake with {addr} timed out after {} s; is it a hamster cluster port, and is the node overloaded?",
                HANDSHAKE_MS / 1000
            ),
        };
        if !handshake_cut(&e) {
            bail!("{}", rejected(&e));
        }
        if attempt >= HANDSHAKE_ATTEMPTS_MAX {
            bail!(
                "the node at {addr} closed the connection during the TLS handshake ({e}), {attempt} times: \
                 its cluster port may be overloaded by too many connections, or the node is stopping; \
                 retry shortly, and check that node's log for \"cluster port crowded\""
            );
        }
        debug!(%addr, attempt, error = %e, "TLS handshake cut by the node; trying again");
        tokio::time::sleep(Duration::from_millis(HANDSHAKE_RETRY_MS)).await;
        attempt += 1;
    }
}

/// Opens a TCP connection to `addr` within [`CLIENT_CONNECT_MS`], with a one-line error.
pub(crate) async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    match timeout(
        Duration::from_millis(CLIENT_CONNECT_MS),
        TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            bail!("no hamster node is listening on {addr}; is `hamster serve` running?")
        }
        Ok(Err(e)) => bail!("cannot connect to {addr}: {e}; check the address"),
        Err(_) => bail!(
            "connecting to {addr} timed out after {} s; check the address and that the node is up",
            CLIENT_CONNECT_MS / 1000
        ),
    }
}
