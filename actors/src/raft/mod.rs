//! The metadata Raft member (DESIGN §2, §3): openraft 0.9 over one LMDB environment in
//! `<data>/meta`, holding the Raft log and the metadata state machine, driven by the
//! [`RaftNode`] actor.
//!
//! - [`types`]: the Raft type configuration and `NodeInfo`.
//! - [`runtime`]: the async runtime with a seeded random stream.
//! - [`db`]: the LMDB environment and its tables.
//! - [`log_store`]: the Raft log.
//! - [`state_machine`]: `meta::apply` over LMDB, and snapshots.
//! - [`freed`]: the node-local queue of freed bodies the reclaimer drains.
//! - [`snapshot`]: snapshot files: building, the framing, installing.
//! - [`query`]: reads of the state machine.
//! - [`recover`]: reading and rewriting a stopped member's membership (`hamster recover`).
//! - [`network`]: how RPCs reach peers: `NoPeers` for a lone node, `PeerNetwork` over the
//!   mTLS peer link (`crate::peer`) for a cluster.
//! - [`node`]: the actor and its messages.

pub mod db;
pub mod epoch;
pub mod freed;
pub mod log_store;
pub mod network;
pub mod node;
pub mod query;
pub mod recover;
pub mod runtime;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use node::{
    AddLearner, ChangeMembership, GetAccessKey, GetBucket, GetObject, ListBuckets, ListObjects,
    MembershipError, Network, Propose, ProposeError, ProposeHere, RaftNode, RaftNodeConfig,
    RaftRpc, RaftStatus, RaftStatusReport, ReadError, ReferencedObjects, RemoveMember, Shutdown,
    StartOptions, TakeSnapshot,
};
pub use types::{NodeInfo, TypeConfig};

/// What [`node::WatchMetrics`] watches: openraft's metrics of this member.
pub type RaftMetrics = openraft::RaftMetrics<u64, NodeInfo>;
