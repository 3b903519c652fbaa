//! The scenarios, one per file, numbered in the order they build on each other. Each states
//! what it does to the cluster; every one ends with [`crate::cluster::Sim::finish`], so all
//! invariants are checked on every seed.

pub mod t100_erasure;
pub mod t10_elections;
mod t110_lost_metadata;
mod t120_layout;
mod t130_live_placement;
mod t140_scrub;
mod t20_leader_crash;
mod t30_partitions;
mod t40_snapshot_catch_up;
mod t41_install_crash;
mod t50_membership_growth;
pub mod t60_recover;
mod t61_recover_returning_nodes;
mod t70_chaos;
mod t80_s3_clients;
mod t90_negative_control;
