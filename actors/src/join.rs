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
//! Before the token is consumed, the serving node refuses a joiner whose node id or cluster
//! address a member or an earlier admission holds already, and one whose advertised cluster
//! address accepts no TCP connection (the joiner listens there before it asks). The replicated
//! apply of the token's use judges the id and address again, so two joins admitted at once
//! through two members cannot both land. A refused join leaves the token unused.
//!
//! Every member holds the CA key (docs/adr/0003), so any member can admit and joins outlive
//! the founder. The consumed token records where the joiner runs; the leader's steward
//! ([`crate::steward`]) adds it as a learner and promotes it once it has caught up, whoever
//! leads by then.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use anyhow::{anyhow, bail};
use hamster_protocol::cluster_addr;
use hamster_protocol::meta::{Command, Refusal};
use hamster_protocol::token::JoinToken;
use hamster_protocol::wire::{
    decode_message, JoinRequest, JoinResponse, ALPN_JOIN, JOIN_REQUEST_BYTES_MAX,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::control::{
    connect_tls, read_frame, read_frame_bounded, write_message, ClusterStream, FrameError,
    ProtocolHandler,
};
use crate::peer::{node_id_hex, parse_node_id};
use crate::raft::node::{
    GetAdmitted, Propose, ProposeError, RaftNode, RaftStatus, RaftStatusReport,
};
use crate::raft::NodeInfo;
use crate::tls::{ca_sha256_hex, pinned_client_config, sign_node_csr, ClusterCa};

/// Time a joiner has to send its request after the handshake.
pub const JOIN_IDLE_MS_MAX: u64 = 10_000;
/// Time the serving node may take to answer one join request.
pub const JOIN_HANDLER_MS_MAX: u64 = 30_000;
/// Time the joiner waits for the answer: longer than the node's own bound, so that the node's
/// error reaches the joiner rather than a bare timeout.
pub const JOIN_RESPONSE_MS_MAX: u64 = JOIN_HANDLER_MS_MAX + 5_000;
/// Time the serving node gives the joiner's cluster address to accept a connection before it
/// refuses the join; well inside [`JOIN_HANDLER_MS_MAX`].
pub const REACH_BACK_MS_MAX: u64 = 3_000;

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
        let admitted = match node.send(GetAdmitted).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                return refuse(
                    format!(
                        "this node cannot read the cluster's admissions ({e}); retry elsewhere"
                    ),
                    true,
                )
            }
            Err(_) => return refuse("this node's metadata member stopped; retry elsewhere", true),
        };
        if let Some(message) = clash(&status, &admitted, id, &req.cluster_addr) {
            return refuse(message, false);
        }
        let replaces = match req.replaces.as_deref().map(parse_node_id) {
            None => None,
            Some(Some(old)) if is_member(&status, old) => Some(old),
            Some(_) => {
                return refuse(
                    format!(
                    "--replaces {} names no member of this cluster; `hamster status` lists them",
                    req.replaces.as_deref().unwrap_or_default()
                ),
                    false,
                )
            }
        };
        if let Err(why) = reach_back(&req.cluster_addr).await {
            return refuse(
                format!(
                    "this cluster cannot reach the joiner at its cluster address {} ({why}); start it with a --cluster-addr the members can connect to and retry with the same token",
                    req.cluster_addr
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
            replaces,
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
                Some(Refusal::DuplicateNode) => {
                    return refuse(
                        format!(
                            "another node was admitted at cluster address {} (or as node {}) meanwhile; start this node with its own --cluster-addr and retry with the same token",
                            req.cluster_addr, req.node_id
                        ),
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

/// Why a joiner with node id `id` at cluster address `addr` would take a place that a member
/// (in `status`) or an earlier admission (in `admitted`) holds, as the one line it is told.
/// Admitting it would leave two members behind one address, and peers would reach only one.
fn clash(
    status: &RaftStatusReport,
    admitted: &BTreeMap<u64, NodeInfo>,
    id: u64,
    addr: &str,
) -> Option<String> {
    let retry = "start this node with its own --cluster-addr and retry with the same token";
    let members = status.voters.iter().chain(&status.learners);
    if let Some((m, _)) = members
        .clone()
        .find(|(_, info)| cluster_addr::clash(addr, &info.cluster_addr))
    {
        return Some(format!(
            "cluster address {addr} is already member {}'s; {retry}",
            node_id_hex(*m)
        ));
    }
    let pending = admitted
        .iter()
        .filter(|(a, _)| !members.clone().any(|(m, _)| m == *a));
    for (a, info) in pending {
        if *a == id {
            return Some(format!(
                "node id {} was admitted already; restart the join with an empty data dir",
                node_id_hex(id)
            ));
        }
        if cluster_addr::clash(addr, &info.cluster_addr) {
            return Some(format!(
                "cluster address {addr} is already held by node {}, admitted but not yet a member; {retry}",
                node_id_hex(*a)
            ));
        }
    }
    None
}

/// Whether a TCP connection to the joiner's advertised cluster address opens within
/// [`REACH_BACK_MS_MAX`]; if not, why not. Members will dial that address for Raft and shards,
/// so a joiner nobody can reach would be a member nobody can use. The joiner listens there
/// before it asks to join; nothing is sent on the connection.
async fn reach_back(addr: &str) -> Result<(), String> {
    match timeout(
        Duration::from_millis(REACH_BACK_MS_MAX),
        TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {REACH_BACK_MS_MAX} ms")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str) -> NodeInfo {
        NodeInfo {
            cluster_addr: addr.to_string(),
            ..NodeInfo::default()
        }
    }

    fn status(voters: &[(u64, &str)], learners: &[(u64, &str)]) -> RaftStatusReport {
        RaftStatusReport {
            node_id: 1,
            term: 1,
            leader: Some(1),
            commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            voters: voters.iter().map(|(id, a)| (*id, at(a))).collect(),
            learners: learners.iter().map(|(id, a)| (*id, at(a))).collect(),
            state: "Leader".to_string(),
        }
    }

    /// A joiner is refused when a voter, a learner or a still-pending admission holds its
    /// cluster address (the phantom-member report of issue 16), or an admission its node id;
    /// the line names the node in the way.
    #[test]
    fn a_joiner_taking_a_held_place_is_told_whose_it_is() {
        let st = status(&[(1, "127.0.0.1:9401")], &[(2, "127.0.0.1:9402")]);
        let admitted = BTreeMap::from([(2, at("127.0.0.1:9402")), (3, at("10.0.0.3:9400"))]);
        let said = |id: u64, addr: &str| clash(&st, &admitted, id, addr);

        let voter = said(9, "localhost:9401").unwrap_or_default();
        assert!(
            voter.contains("already member 0000000000000001's"),
            "{voter}"
        );
        assert!(voter.contains("--cluster-addr"), "{voter}");
        let learner = said(9, "127.0.0.1:9402").unwrap_or_default();
        assert!(
            learner.contains("already member 0000000000000002's"),
            "{learner}"
        );
        let pending = said(9, "10.0.0.3:9400").unwrap_or_default();
        assert!(
            pending.contains("node 0000000000000003, admitted but not yet a member"),
            "{pending}"
        );
        let id = said(3, "10.0.0.9:9400").unwrap_or_default();
        assert!(id.contains("node id 0000000000000003 was admitted"), "{id}");

        for line in [&voter, &learner, &pending, &id] {
            assert!(!line.contains('\n'), "{line}");
        }

        assert_eq!(said(9, "127.0.0.1:9409"), None);
        assert_eq!(said(9, "10.0.0.3:9401"), None);
    }

    #[actix_rt::test]
    async fn reach_back_needs_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address").to_string();
        assert_eq!(reach_back(&addr).await, Ok(()));
        drop(listener);
        let why = reach_back(&addr)
            .await
            .expect_err("nothing listens any more");
        assert!(why.to_lowercase().contains("refused"), "{why}");
    }
}
