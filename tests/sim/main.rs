//! Hamster's deterministic simulation (DESIGN §8): whole clusters of real `RaftNode` actors in
//! one thread on a paused clock, a simulated network, crash-consistent stores, seeded fault
//! schedules and a client workload checked against a model.
//!
//! `cargo test --test sim` runs every scenario over its CI batch of seeds, each seed twice with
//! the trace fingerprints compared. `HAMSTER_SEED=N cargo test --test sim` replays one seed;
//! `HAMSTER_SEEDS=N` soaks seeds 1..=N; `HAMSTER_TRACE=1` prints the trace. A failure prints
//! the seed, the scenario and the command that replays it.
//!
//! - [`world`]: one run (runtime, seed forking, trace, fingerprint) and the batch runner.
//! - [`net`]: the simulated network.
//! - [`disk`]: the simulated shard disk.
//! - [`cluster`]: nodes, crashes and restarts, waits, and the end-of-run checks.
//! - [`client`]: the metadata workload and the model.
//! - [`s3client`]: S3 clients through the nodes' real S3 exchanges.
//! - [`invariants`]: one file per invariant.
//! - [`scenarios`]: numbered scenarios, one file each.

mod client;
mod cluster;
mod disk;
mod invariants;
mod net;
mod s3client;
mod scenarios;
mod world;
