//! `hamster`: the node daemon and the operator CLI in one binary. Flat verbs; `hamster -h`
//! lists every one, generated from the one dispatch below.

mod config;
mod key;
mod layout_cli;
mod local;
mod raft_noise;
mod recover;
mod recover_meta;
mod repair;
mod s3_listener;
mod scrub_cli;
mod serve;
mod status;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Hamster: a distributed, S3-compatible object store.
#[derive(Debug, Parser)]
#[command(name = "hamster", version = version_line())]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Found a new one-node cluster in a data directory (identity, CA, credentials)
    Init(InitArgs),
    /// Run the node: Raft metadata, shard storage, S3 and admin endpoints
    Serve(Box<ServeArgs>),
    /// Ask the local running node for membership, leader, term and addresses
    Status(StatusArgs),
    /// Manage S3 access keys and their per-bucket grants (create, list, delete, allow, deny)
    Key(key::KeyArgs),
    /// Mint a single-use, time-limited join token for adding a node to this cluster
    Token(token::TokenArgs),
    /// Verify every shard against its checksum and rebuild missing or rotted ones from
    /// survivors; reports what it found and fixed
    Repair(RepairArgs),
    /// Show the background scrubber (pace, pass progress, last full pass, durability counts);
    /// --now begins a pass, --pause/--resume stop and restart it cluster-wide
    Scrub(ScrubArgs),
    /// Steer new writes off a node and move its shards to the others (works for a dead node:
    /// its shards are rebuilt from the survivors); follows the move until it is done
    Drain(DrainArgs),
    /// Take back a node that is draining or drained
    Undrain(UndrainArgs),
    /// Evict a drained node for good; its id can never rejoin
    Remove(RemoveArgs),
    /// Re-encode existing parts up to the profile the current node count gives (e.g. 2+1 to
    /// 4+2 after growing from 3 to 6 nodes); follows it until it is done
    Optimize(OptimizeArgs),
    /// Exit from permanent quorum loss: make this stopped survivor the only voter (keeps every
    /// log entry; see docs/operations.md)
    Recover(RecoverArgs),
    /// Rebuild this stopped member's lost or damaged metadata store from the running members
    /// (its shard files are kept; see docs/operations.md, "Lost metadata")
    RecoverMeta(RecoverMetaArgs),
    /// Load-test any S3 endpoint: large-object MiB/s, small-object ops/s and latency, LIST
    Bench(hamster_bench::BenchArgs),
    /// Print version, git commit and protocol generation
    Version,
}

/// Where the data directory is.
#[derive(Debug, Clone, Args)]
pub struct DataArg {
    /// Data directory [env: HAMSTER_DATA] [default: the config file's `data`, else
    /// ./hamster-data]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Config file (every flag has a key; flags win) [env: HAMSTER_CONFIG]
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Options that shape a new node (used by `init` and by `serve` on an empty data dir).
#[derive(Debug, Clone, Args)]
pub struct NodeShape {
    /// Failure domain: zone
    #[arg(long)]
    pub zone: Option<String>,
    /// Failure domain: host [default: this machine's hostname]
    #[arg(long)]
    pub host: Option<String>,
    /// Capacity weight, e.g. 500GiB [default: the data dir's filesystem size]
    #[arg(long)]
    pub capacity: Option<String>,
    /// Cluster port address (mTLS between nodes; the CLI's control channel)
    #[arg(long)]
    pub cluster_addr: Option<String>,
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    data: DataArg,
    #[command(flatten)]
    shape: NodeShape,
}

/// `hamster serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[command(flatten)]
    pub shape: NodeShape,
    /// S3 listen address [default: 127.0.0.1:9000]
    #[arg(long)]
    pub s3: Option<String>,
    /// Run a storage-only node without the S3 endpoint
    #[arg(long)]
    pub no_s3: bool,
    /// Admin HTTP listen address (/metrics, /health, /ready) [default: 127.0.0.1:9001]
    #[arg(long)]
    pub admin: Option<String>,
    /// How log lines are written to stderr: text for people, json (one object per line) for
    /// log shippers [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// S3 region requests are signed for [default: us-east-1]
    #[arg(long)]
    pub region: Option<String>,
    /// Domain for virtual-host-style addressing (bucket.DOMAIN)
    #[arg(long)]
    pub domain: Option<String>,
    /// Join the cluster this token (from `hamster token`) names; used only on an empty data
    /// dir, ignored once the node is a member
    #[arg(long)]
    pub token: Option<String>,
    /// With --token: join to take the place of this member (16-digit id): the same cluster
    /// size and profile, its shards moved onto this node; remove the old one afterwards
    #[arg(long, value_name = "NODE", requires = "token")]
    pub replaces: Option<String>,
    /// Silence after which the leader replaces a voter by a caught-up learner, e.g. 60s, 5m
    /// [default: 60s]
    #[arg(long)]
    pub voter_down_after: Option<String>,
    /// Let this start's orphan sweep remove every unreferenced shard body, even most of the
    /// store or while the metadata is behind the recorded watermark (after restoring metadata
    /// from an old backup on purpose, or a mass delete this node learnt of only through a
    /// snapshot; deletes it applied itself are drained from its freed queue without this)
    #[arg(long)]
    pub sweep_all_orphans: bool,
    /// Silence after which an S3 request body is abandoned and its connection closed, e.g. 30s
    /// [default: 30s]
    #[arg(long)]
    pub body_idle_timeout: Option<String>,
    /// Memory the uploads streaming at once may hold together; beyond it new uploads get
    /// 503 SlowDown, e.g. 512MiB [default: 512MiB]
    #[arg(long)]
    pub upload_memory_max: Option<String>,
    /// Free space kept on the metadata and shard filesystems; below it writes are refused
    /// while reads and deletes go on, e.g. 1GiB [default: 1GiB]
    #[arg(long)]
    pub min_free: Option<String>,
    /// Shard bytes a layout transition may write per second on the leader (e.g. 64MiB), so a
    /// migration never starves client traffic; default 64MiB.
    #[arg(long, value_name = "SIZE")]
    pub migrate_rate: Option<String>,
    /// Shard bytes each node hashes per second for the background scrubber (e.g. 32MiB);
    /// default 32MiB.
    #[arg(long, value_name = "SIZE")]
    pub scrub_rate: Option<String>,
    /// How long after one scrub pass began the next may begin (e.g. 1h, 30m); default 1h.
    #[arg(long, value_name = "DURATION")]
    pub scrub_every: Option<String>,
}

/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    #[command(flatten)]
    data: DataArg,
    /// Confirm that every member this drops will be wiped before it runs again (recover
    /// refuses to drop members without it)
    #[arg(long = "i-understand-dropped-nodes-must-be-wiped")]
    confirmed: bool,
}

#[derive(Debug, Args)]
struct RecoverMetaArgs {
    #[command(flatten)]
    data: DataArg,
    /// A running member's cluster address to ask (repeatable) [default: the members recorded
    /// in the data dir's watermark.json]
    #[arg(long = "peer")]
    peers: Vec<String>,
}

#[derive(Debug, Args)]
struct RepairArgs {
    #[command(flatten)]
    data: DataArg,
    /// Only this bucket
    #[arg(long)]
    bucket: Option<String>,
    /// Print the raw report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ScrubArgs {
    #[command(flatten)]
    data: DataArg,
    /// Begin a pass at once (the pace still applies)
    #[arg(long, conflicts_with_all = ["pause", "resume"])]
    now: bool,
    /// Stop the scrubber cluster-wide until --resume
    #[arg(long, conflicts_with = "resume")]
    pause: bool,
    /// Start a paused scrubber again
    #[arg(long)]
    resume: bool,
    /// Print the raw state as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DrainArgs {
    #[command(flatten)]
    data: DataArg,
    /// The node: its 16-digit id, or a prefix only it has (see `hamster status`)
    node: String,
    /// Accept the trade of a drain that shrinks the profile without asking
    #[arg(long)]
    yes: bool,
    /// Allow a shrink that leaves no failure tolerance
    #[arg(long)]
    force: bool,
    /// Return once the drain has started instead of following it
    #[arg(long)]
    detach: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct UndrainArgs {
    #[command(flatten)]
    data: DataArg,
    /// The node: its 16-digit id, or a prefix only it has
    node: String,
    /// Return once the change has started instead of following it
    #[arg(long)]
    detach: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RemoveArgs {
    #[command(flatten)]
    data: DataArg,
    /// The node: its 16-digit id, or a prefix only it has
    node: String,
    /// Remove a dead node that is not drained yet: drain it first (its shards are rebuilt
    /// from the others), then remove it
    #[arg(long)]
    force: bool,
    /// With --force: accept the trade if the drain shrinks the profile
    #[arg(long, requires = "force")]
    yes: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct OptimizeArgs {
    #[command(flatten)]
    data: DataArg,
    /// Return once it has started instead of following it
    #[arg(long)]
    detach: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    data: DataArg,
    /// Print the raw status as JSON
    #[arg(long)]
    json: bool,
    /// Redraw the status every second until interrupted
    #[arg(long)]
    watch: bool,
}

fn version_line() -> String {
    format!(
        "{} (commit {}, protocol generation {})",
        env!("CARGO_PKG_VERSION"),
        env!("HAMSTER_GIT_COMMIT"),
        hamster_protocol::PROTOCOL_GENERATION
    )
}

/// The data directory from the flag, else `HAMSTER_DATA`, else `./hamster-data`.
pub fn data_dir(arg: &DataArg, file: Option<&config::FileConfig>) -> PathBuf {
    arg.data
        .clone()
        .or_else(|| std::env::var_os("HAMSTER_DATA").map(PathBuf::from))
        .or_else(|| file.and_then(|f| f.data.clone()))
        .unwrap_or_else(|| PathBuf::from("hamster-data"))
}

/// The data directory an operator verb works on: as [`data_dir`], with the config file named
/// by `--config` or `HAMSTER_CONFIG` (so a verb finds the node the daemon runs).
pub fn cli_data_dir(arg: &DataArg) -> anyhow::Result<PathBuf> {
    let file = file_config(&arg.config)?;
    Ok(data_dir(arg, file.as_ref()))
}

/// The config file named by the flag or `HAMSTER_CONFIG`, if any.
pub fn file_config(flag: &Option<PathBuf>) -> anyhow::Result<Option<config::FileConfig>> {
    let path = flag
        .clone()
        .or_else(|| std::env::var_os("HAMSTER_CONFIG").map(PathBuf::from));
    path.map(|p| config::load(&p)).transpose()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.verb {
        Verb::Init(a) => {
            let file = file_config(&a.data.config)?;
            let dir = data_dir(&a.data, file.as_ref());
            let outcome = serve::init_dir(&dir, &a.shape, file.as_ref())?;
            serve::print_init(&dir, &outcome, None);
            Ok(())
        }
        Verb::Serve(a) => serve::serve(*a),
        Verb::Status(a) => status::status(&cli_data_dir(&a.data)?, a.json, a.watch),
        Verb::Key(a) => key::run(a),
        Verb::Token(a) => token::run(a),
        Verb::Repair(a) => repair::repair(&cli_data_dir(&a.data)?, a.bucket, a.json),
        Verb::Scrub(a) => {
            use hamster_protocol::scrub::ScrubSwitch;
            let switch = if a.now {
                Some(ScrubSwitch::Now)
            } else if a.pause {
                Some(ScrubSwitch::Pause)
            } else if a.resume {
                Some(ScrubSwitch::Resume)
            } else {
                None
            };
            scrub_cli::scrub(&cli_data_dir(&a.data)?, switch, a.json)
        }
        Verb::Drain(a) => layout_cli::drain(
            &cli_data_dir(&a.data)?,
            &a.node,
            a.yes,
            a.force,
            a.detach,
            a.json,
        ),
        Verb::Undrain(a) => layout_cli::undrain(&cli_data_dir(&a.data)?, &a.node, a.detach, a.json),
        Verb::Remove(a) => {
            layout_cli::remove(&cli_data_dir(&a.data)?, &a.node, a.force, a.yes, a.json)
        }
        Verb::Optimize(a) => layout_cli::optimize(&cli_data_dir(&a.data)?, a.detach, a.json),
        Verb::Recover(a) => recover::recover(&cli_data_dir(&a.data)?, a.confirmed),
        Verb::RecoverMeta(a) => recover_meta::recover_meta(&cli_data_dir(&a.data)?, &a.peers),
        Verb::Bench(a) => hamster_bench::run(a),
        Verb::Version => {
            println!("hamster {}", version_line());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let fenced = e
                .downcast_ref::<hamster_actors::continuity::FencedError>()
                .is_some();
            // One line: what is wrong and what to do, with its causes joined.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
            }
            eprintln!("hamster: {msg}");
            if fenced {
                ExitCode::from(serve::FENCED_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
