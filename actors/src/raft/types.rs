//! The Raft type configuration of the metadata group: what a log entry carries (a metadata
//! `Command`, never object bytes — INV-1), what applying one answers (`Applied`), how a member
//! is described (`NodeInfo`), and which async runtime openraft runs on (the seeded one).

pub use hamster_protocol::meta::NodeInfo;
use hamster_protocol::meta::{Applied, Batch};

use super::runtime::HamsterRuntime;

openraft::declare_raft_types!(
    /// The type configuration of Hamster's metadata Raft group.
    pub TypeConfig:
        D = Batch,
        R = Vec<Applied>,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = super::snapshot::SnapFile,
        AsyncRuntime = HamsterRuntime,
);

/// A Raft node id.
pub type NodeId = u64;
/// A log entry of the metadata group.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A persisted vote.
pub type Vote = openraft::Vote<NodeId>;
/// The membership with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
/// A snapshot with its bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// A storage failure reported to openraft; it stops the node.
pub type StorageError = openraft::StorageError<NodeId>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
