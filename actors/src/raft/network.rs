//! How the Raft node reaches its peers, and what Raft RPC looks like on the wire.
//!
//! - [`NoPeers`]: a one-node cluster has no peers, so every RPC reports the target unreachable
//!   (STYLE determinism rule 7: unreachable, not a retryable network error).
//! - [`PeerNetwork`]: Raft RPC over the peer link ([`crate::peer`]), one JSON frame per
//!   request and per answer ([`RaftRequest`], [`RaftResponse`]), peers addressed by
//!   `NodeInfo.cluster_addr` from the membership.
//!
//! Every RPC's outcome goes to the node's liveness detector ([`crate::liveness`]): an answer
//! says the peer is up, a link failure counts against it. The detector's record of when each
//! peer last answered is what the membership steward reads on the leader.
//!
//! Snapshots travel in openraft's chunks (`snapshot_max_chunk_size`, 3 MiB by default), each
//! chunk one frame; a chunk's JSON must stay under the frame limit.

use std::time::Duration;

use hamster_protocol::meta::{Applied, Command};
use hamster_protocol::wire::{decode_message, WireError};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::epoch::Epoch;
use super::node::ProposeError;
use super::types::{NodeId, NodeInfo, TypeConfig};
use crate::liveness::LivenessHandle;
use crate::peer::{PeerError, PeerLink, PeerRequest, RECONNECT_BACKOFF_MS_MAX};

/// The reason every RPC fails.
#[derive(Debug, thiserror::Error)]
#[error("no peer link yet: node {target} is unreachable")]
pub struct NoPeerLink {
    target: NodeId,
}

/// A network factory for a cluster without a peer link.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

/// A connection to one peer that never delivers anything.
#[derive(Debug, Clone, Copy)]
pub struct NoPeerConnection {
    target: NodeId,
}

impl NoPeerConnection {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, NodeInfo, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeerLink {
            target: self.target,
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeerConnection;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> Self::Network {
        NoPeerConnection { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeerConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}

/// One Raft RPC as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRequest {
    /// Replicate entries or heartbeat, from the leader.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote, from a candidate.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot, from the leader.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Metadata commands a follower was asked to commit, for the leader to propose. Only the
    /// small metadata commands travel this way, never object bytes (INV-1). The receiver
    /// proposes them locally and does not forward them again.
    Propose(Vec<Command>),
    /// A follower asks the leader how far it has committed, so that it can serve a read once
    /// it has applied that far itself (a read index).
    ReadIndex,
}

impl RaftRequest {
    /// The node the request says it comes from (the leader or candidate in its vote); the
    /// serving side checks it against the certificate.
    pub fn sender(&self) -> Option<NodeId> {
        let vote = match self {
            RaftRequest::AppendEntries(r) => &r.vote,
            RaftRequest::Vote(r) => &r.vote,
            RaftRequest::InstallSnapshot(r) => &r.vote,
            RaftRequest::Propose(_) | RaftRequest::ReadIndex => return None,
        };
        vote.leader_id().voted_for()
    }
}

/// The answer to one [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftResponse {
    /// The member's answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// The member's answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// The member's answer to `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The answer to `Propose`: one result per command, in order, and the highest log index
    /// that carried any of them.
    Proposed(Proposed),
    /// The answer to `ReadIndex`: the leader's commit index, or why it cannot say.
    ReadIndex(Result<u64, ProposeError>),
    /// The serving node would not pass the request to its member (wrong sender, not started,
    /// undecodable); the member never saw it.
    Refused {
        /// Why.
        message: String,
    },
    /// The sender is of an older cluster epoch: a `hamster recover` dropped it (see
    /// [`super::epoch`]). The member never saw the request.
    Fenced {
        /// The serving node's epoch.
        epoch: u64,
    },
    /// The sender was removed from the cluster for good (`hamster remove`): its id is
    /// tombstoned. The member never saw the request.
    Removed,
}

/// A Raft request as it is sent: the sender's cluster epoch and the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftEnvelope {
    /// The sender's cluster epoch.
    pub epoch: u64,
    /// The request.
    pub request: RaftRequest,
}

/// Encodes `request` from a node in `epoch`.
pub fn encode_request(epoch: u64, request: RaftRequest) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(&RaftEnvelope { epoch, request })
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a request and its sender's epoch. A bare request (from a node that predates
/// epochs) is of epoch 0.
pub fn decode_request(payload: &[u8]) -> Result<(u64, RaftRequest), WireError> {
    match decode_message::<RaftEnvelope>(payload) {
        Ok(e) => Ok((e.epoch, e.request)),
        Err(enveloped) => decode_message::<RaftRequest>(payload)
            .map(|r| (0, r))
            .map_err(|_| enveloped),
    }
}

/// Forwarded commands, committed by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposed {
    /// What applying each command answered, or why it did not commit, in the order proposed.
    pub results: Vec<Result<Applied, ProposeError>>,
    /// The highest log index that carried any of them; the forwarding node waits until it has
    /// applied this far before answering, so the writer reads its write there.
    pub log_index: u64,
}

/// Why an answer could not be used.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error("node {to} refused the request: {message}")]
    Refused { to: NodeId, message: String },
    #[error("node {to} answered with the wrong kind of response")]
    Mismatched { to: NodeId },
    #[error("node {to} sent an undecodable answer: {error}")]
    Garbled { to: NodeId, error: WireError },
}

/// A network factory whose connections carry Raft RPC over the peer link.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    link: PeerLink,
    liveness: LivenessHandle,
    epoch: Epoch,
}

impl PeerNetwork {
    /// Raft RPC over `link`, sent in `epoch`; outcomes are reported to `liveness`.
    pub fn new(link: PeerLink, liveness: LivenessHandle, epoch: Epoch) -> Self {
        PeerNetwork {
            link,
            liveness,
            epoch,
        }
    }
}

/// Raft's connection to one peer: the target and where the membership says it listens.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    link: PeerLink,
    liveness: LivenessHandle,
    epoch: Epoch,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerConnection {
            link: self.link.clone(),
            liveness: self.liveness.clone(),
            epoch: self.epoch.clone(),
            target,
            addr: node.cluster_addr.clone(),
        }
    }
}

/// A peer-link failure as openraft wants it: back off on unreachable, retry on the rest.
fn link_error<E: std::error::Error>(e: PeerError) -> RPCError<NodeId, NodeInfo, E> {
    if e.is_unreachable() {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl PeerConnection {
    /// Sends `request` and decodes the answer; errors are already in openraft's terms except
    /// for the member's own answer, which the caller unpacks.
    async fn call<E: std::error::Error>(
        &self,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, RPCError<NodeId, NodeInfo, E>> {
        let payload = encode_request(self.epoch.get(), request)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let req = PeerRequest {
            to: self.target,
            addr: self.addr.clone(),
            payload,
            timeout: option.hard_ttl(),
        };
        let answer = match self.link.send(req).await {
            Ok(answer) => answer,
            Err(e) => {
                self.liveness.observe_link_error(self.target, &e);
                return Err(link_error(e));
            }
        };
        let response = decode_message::<RaftResponse>(&answer).map_err(|error| {
            RPCError::Network(NetworkError::new(&AnswerError::Garbled {
                to: self.target,
                error,
            }))
        })?;
        if let RaftResponse::Fenced { epoch } = response {
            self.epoch.fenced_by(epoch);
            let e = AnswerError::Refused {
                to: self.target,
                message: format!("this node is of an older cluster epoch than {epoch}"),
            };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if let RaftResponse::Removed = response {
            self.epoch.removed_by_cluster();
            let e = AnswerError::Refused {
                to: self.target,
                message: "this node was removed from the cluster".into(),
            };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if let RaftResponse::Refused { message } = response {
            // The peer is up but will not talk to us as we are; backing off is the useful move.
            let e = AnswerError::Refused {
                to: self.target,
                message,
            };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        self.liveness.observe(self.target, Ok(()));
        Ok(response)
    }

    fn mismatched<E: std::error::Error>(&self) -> RPCError<NodeId, NodeInfo, E> {
        RPCError::Network(NetworkError::new(&AnswerError::Mismatched {
            to: self.target,
        }))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self.call(RaftRequest::AppendEntries(rpc), &option).await? {
            RaftResponse::AppendEntries(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(self.mismatched()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(RaftRequest::InstallSnapshot(rpc), &option)
            .await?
        {
            RaftResponse::InstallSnapshot(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(self.mismatched()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self.call(RaftRequest::Vote(rpc), &option).await? {
            RaftResponse::Vote(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(self.mismatched()),
        }
    }

    /// Exponential from [`BACKOFF_MS_MIN`], capped below the election timeout (STYLE rule 7),
    /// so a peer that comes back is heard from before followers start elections.
    fn backoff(&self) -> Backoff {
        let steps = std::iter::successors(Some(BACKOFF_MS_MIN), |ms| {
            Some((ms * 2).min(RECONNECT_BACKOFF_MS_MAX))
        });
        Backoff::new(steps.map(Duration::from_millis))
    }
}

/// openraft's first pause after an unreachable peer.
pub const BACKOFF_MS_MIN: u64 = 20;
