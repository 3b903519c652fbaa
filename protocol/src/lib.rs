//! Hamster's pure core: everything here is deterministic and free of I/O, so that the node,
//! the CLI and the simulation harness all compute the same answers from the same inputs.
#![deny(missing_docs)]

pub mod admission;
pub mod checksum;
pub mod chunked;
pub mod cluster_addr;
pub mod form;
pub mod http_head;
pub mod layout;
pub mod listing;
pub mod liveness;
pub mod membership;
pub mod meta;
pub mod names;
pub mod placement;
pub mod post_policy;
pub mod readiness;
pub mod s3err;
pub mod scrub;
pub mod shard;
pub mod sigv4;
pub mod size;
pub mod stripe;
pub mod time;
pub mod token;
pub mod transfer;
pub mod unhonoured;
pub mod wire;
pub mod xml;

/// The generation of Hamster's wire and on-disk formats; bumped when a format changes (2: Raft
/// RPCs carry the sender's cluster epoch; a generation-2 node still reads a bare request of 1).
pub const PROTOCOL_GENERATION: u32 = 2;
