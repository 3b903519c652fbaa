//! Hamster's actors and the effects they own: the Raft node and its LMDB storage, shard files,
//! the S3 front, the admin endpoint, TLS material and the control protocol.

pub mod admin;
pub mod clock;
pub mod continuity;
pub mod control;
pub mod data;
pub mod disk;
pub mod join;
pub mod layout;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod raft;
pub mod reclaim;
pub mod repair;
pub mod s3;
pub mod scrub;
pub mod shards;
pub mod space;
pub mod steward;
pub mod supervise;
pub mod throttle;
pub mod tls;
pub mod transfer;
