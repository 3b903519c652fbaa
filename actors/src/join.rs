//! The join protocol ([`ALPN_JOIN`], DESIGN §4): how a node with an empty data directory and a
//! join token becomes a member.
//!
//! The joiner has no certificate yet, so it connects without one, and it trusts the cluster
//! only through the token's pinned CA hash, checked inside the TLS handshake before anything is
//! sent ([`crate::tls::pinned_client_config`]). It then sends one [`JoinRequest`]: the token,
//! a CSR for a key that never leaves it, its chosen node id and where it listens. The serving
//! node checks the token pins its CA, signs the CSR for exactly that node id, consumes the
//! token through Raft (single use, expiry judged at the proposer's clock; a follower forwards
//! the proposal to the leader), and answers [`JoinResponse::Admitted`] with the CA, its key
//! and the signed certificate.
//!
//! Every member holds the CA key (docs/adr/0003), so any member can admit and joins outlive
//! the founder. The consumed token records where the joiner runs; the leader's steward
//! ([`crate::steward`]) adds it as a learner and promotes it once it has caught up, whoever
//! leads by then.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use anyhow::{anyhow, bail};
use hamster_protocol::meta::{Command, Refusal};
use hamster_protocol::token::JoinToken;
use hamster_protocol::wire::{
    decode_message, JoinRequest, JoinResponse, ALPN_JOIN, JOIN_REQUEST_BYTES_MAX,
};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::control::{
    connect_tls, read_frame, read_frame_bounded, write_message, ClusterStream, FrameError,
    ProtocolHandler,
};
use crate::peer::{node_id_hex, parse_node_id};
use crate::raft::node::{Propose, ProposeError, RaftNode, RaftStatus, RaftStatusReport};
use crate::raft::NodeInfo;
use crate::tls::{ca_sha256_hex, pinned_client_config, sign_node_csr, ClusterCa};

/// Time a joiner has to send its request after the handshake.
pub const JOIN_IDLE_MS_MAX: u64 = 10_000;
/// Time the serving node may take to answer one join request.
pub const JOIN_HANDLER_MS_MAX: u64 = 30_000;
/// Time the joiner waits for the answer: longer than the node's own bound, so that the node's
/// error reaches the joiner rather than a bare timeout.
pub const JOIN_RESPONSE_MS_MAX: u64 = JOIN_HANDLER_MS_MAX + 5_000;

/// The serving side of the join protocol; bound to the local Raft member once it has started.
#[derive(Clone)]
pub struct JoinService {
    inner: Arc<JoinInner>,
}

struct JoinInner {
    cluster_id: String,
    ca_cert_pem: String,
    ca_sha256: [u8; 32],
    /// The CA with its key; `None` on a node that joined before members were given the key.
    ca: Option<ClusterCa>,
    clock: Arc<dyn Clock>,
    node: Mutex<Option<Addr<RaftNode>>>,
}

impl std::fmt::Debug for JoinService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinService")
            .field("cluster_id", &self.inner.cluster_id)
            .field("signs", &self.inner.ca.is_some())
            .finish()
    }
}

fn refuse(message: impl Into<String>, retry_elsewhere: bool) -> JoinResponse {
    JoinResponse::Refused {
        message: message.into(),
        retry_elsewhere,
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

    async fn admit(&self, req: JoinRequest) -> JoinResponse {
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
                "this node holds no CA key and cannot sign certificates; join through another member",
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
        let info = NodeInfo {
            cluster_addr: req.cluster_addr.clone(),
            zone: req.zone.clone(),
            host: req.host.clone(),
            capacity_bytes: req.capacity_bytes,
        };
        let consume = Command::ConsumeJoinToken {
            secret_sha256: token.secret_hash_hex(),
            now_ms: self.inner.clock.now_ms(),
            node_id: id,
            joined: Some(info),
        };
        match node.send(Propose(consume)).await {
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
            Ok(Err(ProposeError::NotLeader { .. })) => {
                return refuse(
                    "the cluster has no leader to commit the join right now; retry shortly",
                    true,
                )
            }
            Ok(Err(e)) => return refuse(format!("the join did not commit: {e}; retry"), true),
            Err(_) => return refuse("this node's metadata member stopped; retry elsewhere", true),
        }
        info!(node = %req.node_id, addr = %req.cluster_addr, "join token consumed; admitting the node");
        JoinResponse::Admitted {
            cluster_id: self.inner.cluster_id.clone(),
            ca_pem: self.inner.ca_cert_pem.clone(),
            ca_key_pem: Some(ca.key_pem.clone()),
            cert_pem,
            members: status.members(),
        }
    }
}

fn is_member(status: &RaftStatusReport, id: u64) -> bool {
    status
        .voters
        .iter()
        .chain(&status.learners)
        .any(|(m, _)| *m == id)
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
    let answer = match decode_message::<JoinRequest>(&payload) {
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
    if let JoinResponse::Refused { message, .. } = &answer {
        info!(%message, "join refused");
    }
    let sent = write_message(&mut stream, &answer).await;
    let _ = stream.shutdown().await;
    if let Err(e) = sent {
        // The token is consumed; the node may still come up with what it got, or not at all.
        warn!(error = %e, "join: could not send the answer");
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
    // Only a failed check means the node is not of the token's cluster; a cut handshake is
    // reported by `connect_tls` as the crowded or stopping port it is.
    let mut stream = connect_tls(addr, &connector, |e| {
        format!(
            "the node at {addr} is not a member of the cluster the token names ({e}); check the token"
        )
    })
    .await?;
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
