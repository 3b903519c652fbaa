//! The join protocol ([`ALPN_JOIN`], DESIGN §4): how a node with an empty data directory and a
//! join token becomes a member.
//!
//! The joiner has no certificate yet, so it connects without one, and it trusts the cluster
//! only through the token's pinned CA hash, checked inside the TLS handshake before anything is
//! sent ([`crate::tls::pinned_client_config`]). It then sends one [`JoinRequest`]: the token,
//! a CSR for a key that never leaves it, its chosen node id and where it listens. The serving
//! node checks the token pins its CA, signs the CSR for exactly that node id, consumes the
//! token through Raft (single use, expiry judged at the proposer's clock), and answers
//! [`JoinResponse::Admitted`] with the CA and the signed certificate.
//!
//! Only the leader admits, and only a node holding the CA key (the founder) can sign; any
//! other member refuses with `retry_elsewhere`, and the joiner tries the token's next address.
//! `hamster token` runs on the leader and lists its own address first, so the first address
//! is the leader unless leadership moved since. No proposal is forwarded.
//!
//! Membership changes after the answer, in the background on the leader, one join at a time:
//! the joiner needs its certificate before it can be reached, so it is added as a learner once
//! it runs (bounded retries), then promoted to voter while the group has fewer than
//! [`VOTERS_MAX`] voters.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use anyhow::{anyhow, bail};
use hamster_protocol::meta::{Command, Refusal};
use hamster_protocol::token::JoinToken;
use hamster_protocol::wire::{
    decode_message, JoinRequest, JoinResponse, MemberStatus, ALPN_JOIN, JOIN_REQUEST_BYTES_MAX,
};
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep, timeout};
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::control::{
    connect, read_frame, read_frame_bounded, write_message, ClusterStream, FrameError,
    ProtocolHandler, HANDSHAKE_MS,
};
use crate::peer::{node_id_hex, parse_node_id};
use crate::raft::node::{
    AddLearner, ChangeMembership, MembershipError, ProposeError, ProposeHere, RaftNode, RaftStatus,
    RaftStatusReport,
};
use crate::raft::NodeInfo;
use crate::tls::{
    ca_sha256_hex, cluster_server_name, pinned_client_config, sign_node_csr, ClusterCa,
};

/// Most voters the metadata group gets, whatever the cluster size (DESIGN §4); further
/// members stay learners.
pub const VOTERS_MAX: usize = 5;
/// Time a joiner has to send its request after the handshake.
pub const JOIN_IDLE_MS_MAX: u64 = 10_000;
/// Time the serving node may take to answer one join request.
pub const JOIN_HANDLER_MS_MAX: u64 = 30_000;
/// Time the joiner waits for the answer: longer than the node's own bound, so that the node's
/// error reaches the joiner rather than a bare timeout.
pub const JOIN_RESPONSE_MS_MAX: u64 = JOIN_HANDLER_MS_MAX + 5_000;
/// Attempts the leader makes at each membership step for a new member.
pub const ADMIT_ATTEMPTS_MAX: u32 = 10;
/// Pause between those attempts.
pub const ADMIT_RETRY_MS: u64 = 1_000;

/// The serving side of the join protocol; bound to the local Raft member once it has started.
#[derive(Clone)]
pub struct JoinService {
    inner: Arc<JoinInner>,
}

struct JoinInner {
    cluster_id: String,
    ca_cert_pem: String,
    ca_sha256: [u8; 32],
    /// The CA with its key, on the node that founded the cluster; `None` elsewhere.
    ca: Option<ClusterCa>,
    clock: Arc<dyn Clock>,
    node: Mutex<Option<Addr<RaftNode>>>,
    /// Serialises membership changes: openraft refuses a change while another is in flight.
    admissions: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JoinService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinService")
            .field("cluster_id", &self.inner.cluster_id)
            .field("signs", &self.inner.ca.is_some())
            .finish()
    }
}

/// What admitting decided, and the member to add afterwards.
struct Decision {
    answer: JoinResponse,
    add: Option<(u64, NodeInfo)>,
}

fn refuse(message: impl Into<String>, retry_elsewhere: bool) -> Decision {
    Decision {
        answer: JoinResponse::Refused {
            message: message.into(),
            retry_elsewhere,
        },
        add: None,
    }
}

impl JoinService {
    /// A service for cluster `cluster_id` whose CA certificate is `ca_cert_pem`; `ca` (with its
    /// key) lets this node sign joiners' certificates. Arrival times come from `clock`.
    pub fn new(
        cluster_id: String,
        ca_cert_pem: String,
        ca: Option<ClusterCa>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let hex_hash = ca_sha256_hex(&ca_cert_pem)?;
        let mut ca_sha256 = [0u8; 32];
        hex::decode_to_slice(&hex_hash, &mut ca_sha256)
            .map_err(|e| anyhow!("the CA hash is not hex: {e}"))?;
        Ok(JoinService {
            inner: Arc::new(JoinInner {
                cluster_id,
                ca_cert_pem,
                ca_sha256,
                ca,
                clock,
                node: Mutex::new(None),
                admissions: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Routes join requests to `node`'s Raft member.
    pub fn bind(&self, node: Addr<RaftNode>) {
        *self.inner.node.lock().expect("join service lock") = Some(node);
    }

    fn node(&self) -> Option<Addr<RaftNode>> {
        self.inner.node.lock().expect("join service lock").clone()
    }

    async fn admit(&self, req: JoinRequest) -> Decision {
        let token = match JoinToken::decode(&req.token) {
            Ok(t) => t,
            Err(e) => return refuse(e.to_string(), false),
        };
        if token.check_ca(&self.inner.ca_sha256).is_err() {
            return refuse(
                "the join token is not valid for this cluster (it pins another CA); use a token minted by `hamster token` on a member of this cluster",
                false,
            );
        }
        let Some(id) =
            parse_node_id(&req.node_id).filter(|id| *id != 0 && node_id_hex(*id) == req.node_id)
        else {
            return refuse(
                format!("node id {:?} is not 16 lowercase hex digits; restart the join with an empty data dir", req.node_id),
                false,
            );
        };
        let Some(node) = self.node() else {
            return refuse("this node's metadata member is still starting; retry", true);
        };
        let Ok(status) = node.send(RaftStatus).await else {
            return refuse(
                "this node's metadata member is not running; retry elsewhere",
                true,
            );
        };
        if status.leader != Some(status.node_id) {
            return refuse(not_leader(&status), true);
        }
        if is_member(&status, id) {
            return refuse(
                format!(
                    "node {} is already a member; start it without --token",
                    req.node_id
                ),
                false,
            );
        }
        let Some(ca) = &self.inner.ca else {
            return refuse(
                "this node holds no CA key and cannot sign certificates; join through the node that founded the cluster",
                true,
            );
        };
        // Checked before the token is consumed, so a bad request does not burn it.
        let cert_pem = match sign_node_csr(ca, &req.csr_pem, &req.node_id) {
            Ok(pem) => pem,
            Err(e) => {
                return refuse(
                    format!("cannot sign the joiner's certificate request: {e:#}"),
                    false,
                )
            }
        };
        let consume = Command::ConsumeJoinToken {
            secret_sha256: token.secret_hash_hex(),
            now_ms: self.inner.clock.now_ms(),
            node_id: id,
        };
        match node.send(ProposeHere(consume)).await {
            Ok(Ok(applied)) => match applied.refused {
                None => {}
                Some(Refusal::TokenUsed) => {
                    return refuse(
                        "the join token was already used; mint a new one with `hamster token` on a cluster member",
                        false,
                    )
                }
                Some(Refusal::TokenExpired) => {
                    return refuse(
                        "the join token expired; mint a new one with `hamster token` on a cluster member",
                        false,
                    )
                }
                Some(_) => {
                    return refuse(
                        "the join token is not valid for this cluster; mint one with `hamster token` on a cluster member",
                        false,
                    )
                }
            },
            Ok(Err(ProposeError::NotLeader { .. })) => return refuse(not_leader(&status), true),
            Ok(Err(e)) => return refuse(format!("the join did not commit: {e}; retry"), true),
            Err(_) => return refuse("this node's metadata member stopped; retry elsewhere", true),
        }
        let info = NodeInfo {
            cluster_addr: req.cluster_addr.clone(),
            zone: req.zone.clone(),
            host: req.host.clone(),
            capacity_bytes: req.capacity_bytes,
        };
        info!(node = %req.node_id, addr = %req.cluster_addr, "join token consumed; admitting the node");
        Decision {
            answer: JoinResponse::Admitted {
                cluster_id: self.inner.cluster_id.clone(),
                ca_pem: self.inner.ca_cert_pem.clone(),
                cert_pem,
                members: members(&status),
            },
            add: Some((id, info)),
        }
    }

    /// Adds the admitted node as a learner, then promotes it while voters are fewer than
    /// [`VOTERS_MAX`]; each step retried a bounded number of times.
    async fn add_member(self, id: u64, info: NodeInfo) {
        let _one_at_a_time = self.inner.admissions.lock().await;
        let Some(node) = self.node() else { return };
        let who = node_id_hex(id);
        let mut learner = false;
        for attempt in 1..=ADMIT_ATTEMPTS_MAX {
            match node
                .send(AddLearner {
                    id,
                    node: info.clone(),
                })
                .await
            {
                Ok(Ok(())) => {
                    learner = true;
                    break;
                }
                Ok(Err(MembershipError::NotLeader { .. })) | Err(_) => {
                    warn!(node = %who, "lost leadership while adding a joined node; it stays out until re-admitted");
                    return;
                }
                Ok(Err(e)) => {
                    debug!(node = %who, attempt, error = %e, "adding learner; retrying");
                    sleep(Duration::from_millis(ADMIT_RETRY_MS)).await;
                }
            }
        }
        if !learner {
            warn!(node = %who, "the joined node did not catch up as a learner; check it runs and is reachable");
            return;
        }
        info!(node = %who, "joined node added as a learner");
        for attempt in 1..=ADMIT_ATTEMPTS_MAX {
            let Ok(status) = node.send(RaftStatus).await else {
                return;
            };
            let mut voters: BTreeSet<u64> = status.voters.iter().map(|(v, _)| *v).collect();
            if voters.contains(&id) {
                return;
            }
            if voters.len() >= VOTERS_MAX {
                info!(node = %who, VOTERS_MAX, "voter cap reached; the node stays a learner");
                return;
            }
            voters.insert(id);
            match node.send(ChangeMembership { voters }).await {
                Ok(Ok(())) => {
                    info!(node = %who, "joined node promoted to voter");
                    return;
                }
                Ok(Err(MembershipError::NotLeader { .. })) | Err(_) => return,
                Ok(Err(e)) => {
                    debug!(node = %who, attempt, error = %e, "promoting to voter; retrying");
                    sleep(Duration::from_millis(ADMIT_RETRY_MS)).await;
                }
            }
        }
        warn!(node = %who, "the joined node could not be promoted to voter; it stays a learner");
    }
}

fn is_member(status: &RaftStatusReport, id: u64) -> bool {
    status
        .voters
        .iter()
        .chain(&status.learners)
        .any(|(m, _)| *m == id)
}

fn not_leader(status: &RaftStatusReport) -> String {
    let addr = status
        .leader
        .and_then(|l| status.voters.iter().find(|(v, _)| *v == l))
        .map(|(_, n)| n.cluster_addr.clone());
    match (status.leader, addr) {
        (Some(l), Some(a)) => format!(
            "this node does not lead the cluster; retry on the leader {} at {a}",
            node_id_hex(l)
        ),
        _ => "this node does not lead the cluster and knows no leader; retry shortly".to_string(),
    }
}

fn members(status: &RaftStatusReport) -> Vec<MemberStatus> {
    let one = |(id, n): &(u64, NodeInfo), role: &str| MemberStatus {
        node_id: node_id_hex(*id),
        cluster_addr: n.cluster_addr.clone(),
        role: role.to_string(),
        zone: n.zone.clone(),
        host: n.host.clone(),
        capacity_bytes: n.capacity_bytes,
    };
    let mut out: Vec<MemberStatus> = status.voters.iter().map(|m| one(m, "voter")).collect();
    out.extend(status.learners.iter().map(|m| one(m, "learner")));
    out
}

/// The cluster port's handler for [`ALPN_JOIN`]: answers one join request per connection.
pub fn join_protocol(service: JoinService) -> ProtocolHandler {
    Arc::new(move |stream, peer| Box::pin(serve_join(stream, peer, service.clone())))
}

async fn serve_join(mut stream: ClusterStream, peer: String, service: JoinService) {
    let payload =
        match read_frame_bounded(&mut stream, JOIN_IDLE_MS_MAX, JOIN_REQUEST_BYTES_MAX).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                debug!(%peer, error = %e, "join: no usable request; closing");
                return;
            }
        };
    let decision = match decode_message::<JoinRequest>(&payload) {
        Ok(req) => {
            let work = service.admit(req);
            match timeout(Duration::from_millis(JOIN_HANDLER_MS_MAX), work).await {
                Ok(d) => d,
                Err(_) => refuse(
                    "the cluster did not decide the join in time; check its log and retry",
                    true,
                ),
            }
        }
        Err(e) => refuse(e.to_string(), false),
    };
    if let JoinResponse::Refused { message, .. } = &decision.answer {
        info!(%message, "join refused");
    }
    let sent = write_message(&mut stream, &decision.answer).await;
    let _ = stream.shutdown().await;
    if let Err(e) = sent {
        // The token is consumed; the node may still come up with what it got, or not at all.
        warn!(error = %e, "join: could not send the answer");
    }
    if let Some((id, info)) = decision.add {
        tokio::spawn(service.add_member(id, info));
    }
}

/// The joiner's side: connects to `addr` trusting only a CA whose SHA-256 is `ca_sha256`,
/// sends `req` and returns the cluster's answer.
pub async fn request_join(
    addr: &str,
    ca_sha256: [u8; 32],
    req: &JoinRequest,
) -> anyhow::Result<JoinResponse> {
    let connector = TlsConnector::from(pinned_client_config(ca_sha256, &[ALPN_JOIN])?);
    let tcp = connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let handshake = connector.connect(cluster_server_name(), tcp);
    let mut stream = match timeout(Duration::from_millis(HANDSHAKE_MS), handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => bail!(
            "the node at {addr} is not a member of the cluster the token names ({e}); check the token"
        ),
        Err(_) => bail!("TLS handshake with {addr} timed out; is it a hamster cluster port?"),
    };
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_JOIN) {
        bail!(
            "the node at {addr} does not accept joins; run the same hamster version as the cluster"
        );
    }
    write_message(&mut stream, req)
        .await
        .map_err(|e| anyhow!("cannot send the join request to {addr}: {e}; retry"))?;
    let payload = match read_frame(&mut stream, JOIN_RESPONSE_MS_MAX).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            bail!("the node at {addr} closed the connection without answering; check its log")
        }
        Err(FrameError::Idle(_)) => {
            bail!("the node at {addr} did not answer the join in time; retry")
        }
        Err(e) => bail!("the join answer from {addr} did not arrive: {e}"),
    };
    let _ = stream.shutdown().await;
    decode_message::<JoinResponse>(&payload)
        .map_err(|e| anyhow!("bad join answer from {addr}: {e}"))
}
