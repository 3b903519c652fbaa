//! `hamster serve` (and `init`): production wiring. Builds the node's actors inside one actix
//! System — Raft node, shard store and reclaimer, cluster port, S3 front, admin endpoint —
//! tells systemd when it is ready, and shuts down cleanly on SIGTERM/SIGINT.
//!
//! Every node serves Raft over the peer link on its cluster port. On an empty data dir,
//! `serve` founds a one-node cluster, or with `--token` first joins the cluster the token names
//! ([`hamster_actors::join`]): it writes the certificate and `node.json` it was given and then
//! starts like a restarting member. A node that holds the CA key is the founder; only it signs
//! joiners' certificates.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context};
use hamster_actors::admin::{self, AdminState};
use hamster_actors::clock::{Clock, IdSource, SystemClock};
use hamster_actors::continuity::{self, StartMode, WatermarkKeeper};
use hamster_actors::control::{self, ControlHandler, Routes};
use hamster_actors::data::{DataConfig, DataPlane};
use hamster_actors::join::{self, JoinService};
use hamster_actors::layout::{self, ChangeLayout, LayoutChange, LayoutConfig, LayoutManager};
use hamster_actors::liveness::LivenessHandle;
use hamster_actors::metrics::Metrics;
use hamster_actors::node::{
    self, Credentials, DataDir, InitOptions, InitOutcome, NodeFile, NODE_FILE_VERSION,
};
use hamster_actors::peer::{raft_protocol, PeerLink, RaftService};
use hamster_actors::raft::epoch::Epoch;
use hamster_actors::raft::node::{
    AddLearner, AdoptEpoch, CatchUp, GetAccessKey, GetLayout, GetReader, GetScrub, Network,
    OpenFreedQueue, Propose, RaftNode, RaftNodeConfig, RaftStatus, RemoveMember, Shutdown,
    StaleCount, StartOptions, WatchMetrics,
};
use hamster_actors::raft::NodeInfo;
use hamster_actors::reclaim::{OrphanSweep, Reclaimer, SweepFence, SweepGuard};
use hamster_actors::repair;
use hamster_actors::s3::uploads::{UploadGate, UploadLimits};
use hamster_actors::s3::{self, S3Config, S3State};
use hamster_actors::scrub::{self, ScrubConfig, Scrubber};
use hamster_actors::shards::ShardStore;
use hamster_actors::space::{self, Space, SpaceConfig, SpaceMonitor};
use hamster_actors::steward::{Steward, VOTER_DOWN_AFTER_DEFAULT};
use hamster_actors::supervise::Supervision;
use hamster_actors::tls::{self, TlsMaterial};
use hamster_actors::transfer::{shard_protocol, ShardService};
use hamster_protocol::meta::{AccessKey, Command};
use hamster_protocol::scrub::ScrubSwitch;
use hamster_protocol::time::parse_duration_ms;
use hamster_protocol::token::JoinToken;
use hamster_protocol::wire::{
    ControlRequest, ControlResponse, JoinRequest, JoinResponse, LayoutRequest, ScrubReport,
    StatusReport, ALPN_JOIN, ALPN_RAFT, ALPN_SHARD,
};
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{parse_size, FileConfig};
use crate::key::KeyAdmin;
use crate::token::TokenAdmin;
use crate::{data_dir, file_config, LogFormat, NodeShape, ServeArgs};

const S3_ADDR_DEFAULT: &str = "127.0.0.1:9000";
const ADMIN_ADDR_DEFAULT: &str = "127.0.0.1:9001";
const CLUSTER_ADDR_DEFAULT: &str = "127.0.0.1:9400";
const REGION_DEFAULT: &str = "us-east-1";
/// How long in-flight S3 requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE_SECS: u64 = 30;
/// How long `status` waits for each other member to report its own state.
const MEMBER_STATUS_WAIT: Duration = Duration::from_secs(2);

fn pick(flag: &Option<String>, file: Option<&Option<String>>, default: &str) -> String {
    flag.clone()
        .or_else(|| file.and_then(|f| f.clone()))
        .unwrap_or_else(|| default.to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Initialises `dir` as a one-node cluster.
pub fn init_dir(
    dir: &Path,
    shape: &NodeShape,
    file: Option<&FileConfig>,
) -> anyhow::Result<InitOutcome> {
    let mut opts = shape_options(dir, shape, file)?;
    opts.credentials = root_credentials_from_env()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    node::init(&DataDir::new(dir), &opts, &IdSource::from_os())
}

/// Where and what a new node is, from flags, file and defaults (no credentials).
fn shape_options(
    dir: &Path,
    shape: &NodeShape,
    file: Option<&FileConfig>,
) -> anyhow::Result<InitOptions> {
    let capacity = match shape
        .capacity
        .clone()
        .or_else(|| file.and_then(|f| f.capacity.clone()))
    {
        Some(c) => parse_size(&c)?,
        None => space::filesystem_bytes(dir).map_or(0, |f| f.total),
    };
    Ok(InitOptions {
        zone: pick(&shape.zone, file.map(|f| &f.zone), "default"),
        host: shape
            .host
            .clone()
            .or_else(|| file.and_then(|f| f.host.clone()))
            .unwrap_or_else(hostname),
        capacity_bytes: capacity,
        cluster_addr: pick(
            &shape.cluster_addr,
            file.map(|f| &f.cluster_addr),
            CLUSTER_ADDR_DEFAULT,
        ),
        credentials: None,
    })
}

/// Root credentials chosen through `HAMSTER_ACCESS_KEY`/`HAMSTER_SECRET_KEY`, if both are set.
fn root_credentials_from_env() -> anyhow::Result<Option<Credentials>> {
    let credentials = match (
        std::env::var("HAMSTER_ACCESS_KEY"),
        std::env::var("HAMSTER_SECRET_KEY"),
    ) {
        (Ok(a), Ok(s)) if !a.is_empty() && !s.is_empty() => {
            if a.len() < 3 || s.len() < 8 {
                bail!("HAMSTER_ACCESS_KEY must be at least 3 characters and HAMSTER_SECRET_KEY at least 8");
            }
            Some(Credentials {
                access_key: a,
                secret_key: s,
            })
        }
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            bail!("set both HAMSTER_ACCESS_KEY and HAMSTER_SECRET_KEY, or neither to generate credentials")
        }
        _ => None,
    };
    Ok(credentials)
}

/// Joins the cluster `token_text` names from the empty data dir `dir`: checks the token is
/// fresh, makes a key and a certificate request, asks the token's members in order until one
/// admits (a member that is not the leader, or cannot sign, passes the joiner on), checks what
/// it got against the token's pin, and writes `<data>/tls` and `node.json`.
async fn join_cluster(
    dir: &DataDir,
    token_text: &str,
    opts: &InitOptions,
    replaces: Option<String>,
) -> anyhow::Result<()> {
    let token = JoinToken::decode(token_text)?;
    token.check_fresh(SystemClock.now_ms())?;
    if token.addrs.is_empty() {
        bail!("the join token names no member to contact; mint a new one with `hamster token`");
    }
    // Held until the answer is in: the admitting member reaches back to this address, and an
    // address this host cannot take ends the join here, with the token unused.
    let _reach_back = hold_cluster_addr(&opts.cluster_addr).await?;
    let ids = IdSource::from_os();
    let mut node_id = ids.next_u64();
    while node_id == 0 {
        node_id = ids.next_u64();
    }
    let id_hex = format!("{node_id:016x}");
    let (key_pem, csr_pem) = tls::node_key_and_csr(&id_hex)?;
    let req = JoinRequest {
        token: token_text.trim().to_string(),
        csr_pem,
        node_id: id_hex.clone(),
        cluster_addr: opts.cluster_addr.clone(),
        zone: opts.zone.clone(),
        host: opts.host.clone(),
        capacity_bytes: opts.capacity_bytes,
        replaces,
    };
    let mut last = String::from("no member answered");
    let mut admitted = None;
    for addr in &token.addrs {
        match join::request_join(addr, token.ca_sha256, &req).await {
            Ok(JoinResponse::Admitted {
                cluster_id,
                ca_pem,
                ca_key_pem,
                cert_pem,
                members,
            }) => {
                admitted = Some((cluster_id, ca_pem, ca_key_pem, cert_pem, members.len()));
                break;
            }
            Ok(JoinResponse::Refused {
                message,
                retry_elsewhere: true,
            }) => {
                warn!(%addr, %message, "join not possible here; trying the next member");
                last = message;
            }
            Ok(JoinResponse::Refused { message, .. }) => bail!("{message}"),
            Err(e) => {
                warn!(%addr, error = %format!("{e:#}"), "cannot join through this member; trying the next");
                last = format!("{e:#}");
            }
        }
    }
    let Some((cluster_id, ca_pem, ca_key_pem, cert_pem, known)) = admitted else {
        bail!("no member named in the join token admitted this node ({last}); check the cluster runs and retry");
    };
    let pin: String = token.ca_sha256.iter().map(|b| format!("{b:02x}")).collect();
    if tls::ca_sha256_hex(&ca_pem)? != pin || cluster_id != token.cluster_id {
        bail!(
            "the cluster answered with a CA or cluster id other than the token's; check the token"
        );
    }
    let material = TlsMaterial {
        ca_cert_pem: ca_pem,
        cert_pem,
        key_pem,
    };
    tls::check_member_material(&material, &id_hex)?;
    if let Some(key) = &ca_key_pem {
        tls::check_ca_key(&material.ca_cert_pem, key)?;
    }
    continuity::begin_first_start(dir)?;
    tls::write_member_tls_dir(
        &dir.tls(),
        &material.ca_cert_pem,
        ca_key_pem.as_deref(),
        &material.cert_pem,
        &material.key_pem,
    )?;
    let node = NodeFile {
        version: NODE_FILE_VERSION,
        node_id,
        cluster_id,
        cluster_addr: opts.cluster_addr.clone(),
        zone: opts.zone.clone(),
        host: opts.host.clone(),
        capacity_bytes: opts.capacity_bytes,
        admin_addr: String::new(),
        s3_addr: None,
        joined: true,
    };
    // node.json last: its presence marks a completed join.
    node::save_node(dir, &node)?;
    println!(
        "hamster: joined cluster {} as node {id_hex} ({known} member(s) before us); no token needed to restart",
        node.cluster_id
    );
    Ok(())
}

/// Listens on a joiner's cluster address for the length of the join. Nothing is accepted: the
/// admitting member's reach-back needs only the connection to open, and the node's real
/// cluster port binds the address again once the listener is dropped.
async fn hold_cluster_addr(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = resolve(addr, "cluster")?;
    tokio::net::TcpListener::bind(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "cannot listen on the cluster address {addr}: it is in use (another hamster node?); start this node with its own --cluster-addr and retry with the same token"
            ),
            _ => anyhow::anyhow!(
                "cannot listen on the cluster address {addr} ({e}); start this node with a --cluster-addr of this host and retry with the same token"
            ),
        })
}

/// Prints what `init` made; the secret is shown here once.
pub fn print_init(dir: &Path, o: &InitOutcome, s3_addr: Option<&str>) {
    println!(
        "hamster: initialised a new one-node cluster in {}",
        dir.display()
    );
    println!("node id:       {}", o.node.node_id_hex());
    println!("cluster id:    {}", o.node.cluster_id);
    if let Some(a) = s3_addr {
        println!("S3 endpoint:   http://{a}");
    }
    println!("access key:    {}", o.credentials.access_key);
    println!("secret key:    {}", o.credentials.secret_key);
    println!(
        "(credentials saved in {} with mode 0600)",
        dir.join("credentials").display()
    );
}

fn resolve(addr: &str, what: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("{what} address {addr:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{what} address {addr:?} resolves to nothing"))
}

/// Adds this node's heal-soon count to a status answer.
fn with_heal_soon(mut answer: ControlResponse, data: &DataPlane) -> ControlResponse {
    if let ControlResponse::Status(r) = &mut answer {
        r.heal_soon = data.heals_waiting() as u64;
    }
    answer
}

/// Answers `hamster scrub`: commits the operator's switch, if any (a follower passes it on
/// to the leader), then reports the replicated state.
async fn scrub_control(
    raft: &Addr<RaftNode>,
    switch: Option<ScrubSwitch>,
    config: ScrubConfig,
) -> ControlResponse {
    if let Some(switch) = switch {
        match raft.send(Propose(Command::ScrubSet(switch))).await {
            Ok(Ok(_)) => info!(?switch, "scrubber switched by an operator"),
            Ok(Err(e)) => {
                return ControlResponse::Error {
                    message: format!("the switch was not recorded: {e}; retry"),
                }
            }
            Err(_) => {
                return ControlResponse::Error {
                    message: "the Raft node is not running".to_string(),
                }
            }
        }
    }
    match raft.send(GetScrub).await {
        Ok(Ok(state)) => ControlResponse::Scrub(ScrubReport {
            state,
            bytes_per_s: config.bytes_per_s,
            every_ms: u64::try_from(config.every.as_millis()).unwrap_or(u64::MAX),
            now_ms: SystemClock.now_ms(),
        }),
        Ok(Err(e)) => ControlResponse::Error {
            message: format!("cannot read the scrubber's state: {e}"),
        },
        Err(_) => ControlResponse::Error {
            message: "the Raft node is not running".to_string(),
        },
    }
}

/// Settings `serve` runs with, after flags, file and defaults are merged.
struct Settings {
    dir: DataDir,
    min_free: u64,
    migrate_rate: u64,
    scrub: ScrubConfig,
    sweep_all_orphans: bool,
    voter_down_after: Duration,
    s3: Option<String>,
    admin: String,
    region: String,
    domain: Option<String>,
    body_idle: Duration,
    uploads: UploadLimits,
}

/// Sends the node's log to stderr: `filter` (or `HAMSTER_LOG`) chooses what, `format` how.
/// Colour codes only when stderr is a terminal, so a log file or the journal gets plain text.
fn init_logging(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAMSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(crate::s3_listener::HttpLayerNoise)
            .with(crate::raft_noise::UnreachablePeerNoise)
            .init(),
        // One JSON object per line, fields at the top level, for log shippers.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .finish()
            .with(crate::s3_listener::HttpLayerNoise)
            .with(crate::raft_noise::UnreachablePeerNoise)
            .init(),
    }
}

/// Runs `hamster serve`.
pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let file = file_config(&a.config)?;
    let f = file.as_ref();
    let filter = f
        .and_then(|f| f.log.clone())
        .unwrap_or_else(|| "info,openraft=warn".to_string());
    let format = match (a.log_format, f.and_then(|f| f.log_format.as_deref())) {
        (Some(flag), _) => flag,
        (None, Some(key)) => clap::ValueEnum::from_str(key, true)
            .map_err(|_| anyhow::anyhow!("log_format = {key:?}: use \"text\" or \"json\""))?,
        (None, None) => LogFormat::Text,
    };
    init_logging(&filter, format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir_path = data_dir(&a.data, f);
    let dir = DataDir::new(&dir_path);
    let no_s3 = a.no_s3 || f.and_then(|f| f.no_s3).unwrap_or(false);
    let s3_addr = (!no_s3).then(|| pick(&a.s3, f.map(|f| &f.s3), S3_ADDR_DEFAULT));
    let mut join = None;
    if continuity::clear_interrupted_first_start(&dir)? {
        warn!(data = %dir.root.display(), "an earlier first start of this data dir was interrupted before it completed; starting it again");
    }
    if !dir.is_initialised() {
        if !dir.is_empty() {
            bail!(
                "data dir {} is not initialised and not empty; run `hamster init --data DIR` on an empty dir",
                dir.root.display()
            );
        }
        match &a.token {
            Some(token) => {
                let replaces = match &a.replaces {
                    None => None,
                    Some(text) => {
                        let id = text.trim().to_ascii_lowercase();
                        if id.len() != 16 || u64::from_str_radix(&id, 16).is_err() {
                            bail!("--replaces {text:?} is not a node id (16 hex digits, as `hamster status` shows)");
                        }
                        Some(id)
                    }
                };
                join = Some((
                    token.clone(),
                    shape_options(&dir_path, &a.shape, f)?,
                    replaces,
                ));
            }
            None => {
                let outcome = init_dir(&dir_path, &a.shape, f)?;
                print_init(&dir_path, &outcome, s3_addr.as_deref());
            }
        }
    } else if a.token.is_some() {
        info!("this data dir is already a cluster member; --token and --replaces ignored");
    }
    let voter_down_after = match a
        .voter_down_after
        .as_deref()
        .or_else(|| f.and_then(|f| f.voter_down_after.as_deref()))
    {
        None => VOTER_DOWN_AFTER_DEFAULT,
        Some(text) => match parse_duration_ms(text) {
            Some(ms) if ms >= 1_000 => Duration::from_millis(ms),
            _ => bail!(
                "--voter-down-after {text:?} is not a duration of at least 1s, like 30s, 5m or 1h"
            ),
        },
    };
    let body_idle = match a
        .body_idle_timeout
        .as_deref()
        .or_else(|| f.and_then(|f| f.body_idle_timeout.as_deref()))
    {
        None => Duration::from_millis(s3::BODY_IDLE_TIMEOUT_MS),
        Some(text) => match parse_duration_ms(text) {
            Some(ms) if ms >= 1_000 => Duration::from_millis(ms),
            _ => bail!(
                "--body-idle-timeout {text:?} is not a duration of at least 1s, like 30s or 2m"
            ),
        },
    };
    let mut uploads = UploadLimits::default();
    if let Some(text) = a
        .upload_memory_max
        .as_deref()
        .or_else(|| f.and_then(|f| f.upload_memory_max.as_deref()))
    {
        uploads.memory_bytes_max = parse_size(text)
            .with_context(|| format!("--upload-memory-max {text:?} is not a size like 512MiB"))?;
    }
    let min_free = match a
        .min_free
        .as_deref()
        .or_else(|| f.and_then(|f| f.min_free.as_deref()))
    {
        None => space::RESERVE_BYTES_DEFAULT,
        Some(text) => parse_size(text)
            .with_context(|| format!("--min-free {text:?} is not a size like 1GiB"))?,
    };
    let migrate_rate = match a
        .migrate_rate
        .as_deref()
        .or_else(|| f.and_then(|f| f.migrate_rate.as_deref()))
    {
        None => layout::MIGRATE_BYTES_PER_S_DEFAULT,
        Some(text) => match parse_size(text) {
            Ok(0) | Err(_) => bail!("--migrate-rate {text:?} is not a positive size like 64MiB"),
            Ok(n) => n,
        },
    };
    let scrub_rate = match a
        .scrub_rate
        .as_deref()
        .or_else(|| f.and_then(|f| f.scrub_rate.as_deref()))
    {
        None => scrub::SCRUB_BYTES_PER_S_DEFAULT,
        Some(text) => match parse_size(text) {
            Ok(0) | Err(_) => bail!("--scrub-rate {text:?} is not a positive size like 32MiB"),
            Ok(n) => n,
        },
    };
    let scrub_every = match a
        .scrub_every
        .as_deref()
        .or_else(|| f.and_then(|f| f.scrub_every.as_deref()))
    {
        None => scrub::SCRUB_EVERY_DEFAULT,
        Some(text) => match parse_duration_ms(text) {
            Some(ms) if ms >= 1_000 => Duration::from_millis(ms),
            _ => bail!("--scrub-every {text:?} is not a duration of at least 1s, like 30m or 6h"),
        },
    };
    let settings = Settings {
        dir,
        min_free,
        migrate_rate,
        scrub: ScrubConfig {
            bytes_per_s: scrub_rate,
            every: scrub_every,
            ..ScrubConfig::default()
        },
        sweep_all_orphans: a.sweep_all_orphans,
        body_idle,
        uploads,
        voter_down_after,
        s3: s3_addr,
        admin: pick(&a.admin, f.map(|f| &f.admin), ADMIN_ADDR_DEFAULT),
        region: pick(&a.region, f.map(|f| &f.region), REGION_DEFAULT),
        domain: a
            .domain
            .clone()
            .or_else(|| f.and_then(|f| f.domain.clone())),
    };
    let system = actix_rt::System::new();
    system.block_on(async move {
        if let Some((token, opts, replaces)) = join {
            join_cluster(&settings.dir, &token, &opts, replaces).await?;
        }
        run_node(settings).await
    })
}

async fn run_node(s: Settings) -> anyhow::Result<()> {
    let mut node = node::load_node(&s.dir)?;
    let material = tls::load_tls_dir(&s.dir.tls())?;
    // Members hold the CA key (docs/adr/0003). Only the founder has a credentials file; a
    // joined node's S3 keys come from the replicated metadata. (Nodes that joined before
    // members were given the key have no key and no `joined` mark.)
    let ca = if tls::has_ca_key(&s.dir.tls()) {
        Some(tls::load_cluster_ca(&s.dir.tls())?)
    } else {
        None
    };
    let founder = ca.is_some() && !node.joined;
    let credentials = match &s.s3 {
        Some(_) if founder || s.dir.credentials().exists() => Some(node::load_credentials(&s.dir)?),
        _ => None,
    };
    continuity::check_not_fenced(&s.dir)?;
    let space_cfg = SpaceConfig {
        meta_dir: s.dir.meta(),
        shards_dir: s.dir.shards(),
        reserve_bytes: s.min_free,
        headroom_bytes: (s.min_free / 4).min(space::HEADROOM_BYTES_DEFAULT),
    };
    // On a full disk the store could not even open (LMDB writes as it opens, and a leader
    // appends an entry in its new term): give it the headroom first.
    space::release_headroom_if_low(&space_cfg);
    let space = Space::measured(space_cfg.clone());
    let metrics = Metrics::new();
    // Every long-lived actor runs under it (docs/adr/0007).
    let supervision = Supervision::new(&metrics);
    let _space_monitor =
        supervision.start("space_monitor", SpaceMonitor::new(space_cfg, space.clone()));
    // Before anything opens the metadata store (opening creates an empty one).
    let mode = continuity::check_meta(&s.dir, &node.cluster_id).await?;
    let epoch_dir = s.dir.clone();
    let epoch = Epoch::new(
        continuity::load_epoch(&s.dir)?,
        Some(Arc::new(move |e| continuity::save_epoch(&epoch_dir, e))),
    );
    let shards = Arc::new(
        ShardStore::open(&s.dir.shards())
            .with_context(|| format!("cannot open shard store {}", s.dir.shards().display()))?,
    );
    let liveness = LivenessHandle::start_supervised(node.node_id, Some(&metrics), &supervision);
    let ids = Arc::new(IdSource::from_os());
    let (freed_tx, freed_rx) = tokio::sync::mpsc::unbounded_channel();
    let link = PeerLink::new(&material)?;
    let raft_config = RaftNodeConfig {
        node_id: node.node_id,
        meta_dir: s.dir.meta(),
        node: NodeInfo {
            cluster_addr: node.cluster_addr.clone(),
            zone: node.zone.clone(),
            host: node.host.clone(),
            capacity_bytes: node.capacity_bytes,
            replaces: None,
        },
        seed: ids.next_u64(),
        freed_tx,
        map_size_bytes: hamster_actors::raft::db::META_MAP_BYTES,
        epoch: epoch.clone(),
    };
    let start = StartOptions {
        network: Network::Peers(link),
        // Only the founder, and only on its first start, founds a group on an empty store; a
        // joiner, or a member rebuilding lost metadata, waits for the leader to fill it.
        bootstrap: founder && mode == StartMode::First,
        applied_tap: None,
        install_tap: None,
        liveness: Some(liveness.clone()),
    };
    let raft = RaftNode::start_supervised(raft_config, start, &supervision)
        .await
        .context("cannot start the metadata store")?;
    // Held to the end of the node's life; it acts only while this node leads.
    let _steward = supervision.start("steward", Steward::new(raft.clone(), s.voter_down_after));
    let cluster_addr = resolve(&node.cluster_addr, "cluster")?;
    if mode == StartMode::Rebuild {
        // The leader fills the store over this node's own cluster port, which otherwise opens
        // only once the node is ready: serve Raft alone on it until the store is rebuilt.
        let raft_only = RaftService::new();
        raft_only.bind(raft.clone());
        let starting: ControlHandler = Arc::new(|_, _| {
            Box::pin(async {
                ControlResponse::Error {
                    message: "this node is rebuilding its metadata from the leader; retry shortly"
                        .to_string(),
                }
            })
        });
        let routes = Routes::new(starting).with(ALPN_RAFT, raft_protocol(raft_only));
        let port = control::bind_routes(cluster_addr, &material, routes)
            .await
            .with_context(|| format!("cannot listen on the cluster port {cluster_addr}"))?;
        wait_rebuilt(&raft).await?;
        drop(port);
    }
    let guard = SweepGuard {
        watermark: continuity::load_watermark(&s.dir)?
            .filter(|w| w.cluster_id == node.cluster_id)
            .map(|w| w.applied_index),
        unbounded: s.sweep_all_orphans,
    };
    let keeper = supervision.start(
        "watermark_keeper",
        WatermarkKeeper::new(
            s.dir.clone(),
            node.cluster_id.clone(),
            raft.clone(),
            s3::Offload::Pool,
        ),
    );
    // The fence watches from before the first shard write, so the orphan sweep (which runs
    // in the background while the node serves) spares every body written meanwhile.
    let fence = SweepFence::watching();
    let shard_service = ShardService::new(shards.clone(), s3::Offload::Pool);
    shard_service.set_space(space.clone());
    shard_service.set_fence(fence.clone());
    shard_service.set_ready();
    let freed_queue = raft
        .send(OpenFreedQueue)
        .await
        .context("the metadata store stopped while starting")?
        .context("cannot open the freed queue")?;
    let _reclaimer = Reclaimer::new(
        freed_queue,
        shards.clone(),
        metrics.clone(),
        s3::Offload::Pool,
        freed_rx,
    )
    .with_sweep(OrphanSweep {
        raft: raft.clone(),
        fence,
        guard,
    })
    .spawn(&supervision);
    let members = raft
        .send(WatchMetrics)
        .await
        .context("the metadata store stopped while starting")?;
    let data = DataPlane::new(
        node.node_id,
        raft.clone(),
        shard_service.clone(),
        Some(PeerLink::speaking(&material, ALPN_SHARD)?),
        members,
        ids.clone(),
        s3::Offload::Pool,
        DataConfig::default(),
        liveness,
    );
    if let Some(c) = &credentials {
        ensure_root_key(&raft, c).await?;
    }
    data.watch_members();
    // The one owner of the data-plane layout; it acts only while this node leads.
    let removed = layout::Removed::default();
    shard_service.set_removed(removed.clone());
    let layout_manager = supervision.start(
        "layout_manager",
        LayoutManager::new(
            raft.clone(),
            data.clone(),
            Arc::new(SystemClock),
            metrics.clone(),
            LayoutConfig {
                bytes_per_s: s.migrate_rate,
                ..LayoutConfig::default()
            },
        )
        .with_removed(removed),
    );

    // The background scrubber; it walks only while this node leads.
    let _scrubber = supervision.start(
        "scrubber",
        Scrubber::new(
            raft.clone(),
            data.clone(),
            Arc::new(SystemClock),
            metrics.clone(),
            s.scrub,
        ),
    );

    let status_ctx = Arc::new((
        raft.clone(),
        node.clone(),
        s.s3.clone(),
        s.admin.clone(),
        material.clone(),
        shards.clone(),
    ));
    let key_admin = Arc::new(KeyAdmin::new(
        raft.clone(),
        ids.clone(),
        Arc::new(SystemClock),
    ));
    let token_admin = Arc::new(TokenAdmin::new(
        raft.clone(),
        ids.clone(),
        Arc::new(SystemClock),
        &node,
        &material,
    )?);
    let repair_ctx = (raft.clone(), data.clone(), metrics.clone());
    let scrub_config = s.scrub;
    let layout_ctx = layout_manager.clone();
    let handler: ControlHandler = Arc::new(move |req, _peer| {
        let ctx = status_ctx.clone();
        let keys = key_admin.clone();
        let tokens = token_admin.clone();
        let (repair_raft, repair_data, repair_metrics) = repair_ctx.clone();
        let layout_manager = layout_ctx.clone();
        let heal_data = repair_data.clone();
        Box::pin(async move {
            match req {
                ControlRequest::Status => with_heal_soon(
                    status_report(&ctx.0, &ctx.1, ctx.2.clone(), &ctx.3, Some(&ctx.4), &ctx.5)
                        .await,
                    &heal_data,
                ),
                ControlRequest::NodeStatus => with_heal_soon(
                    status_report(&ctx.0, &ctx.1, ctx.2.clone(), &ctx.3, None, &ctx.5).await,
                    &heal_data,
                ),
                ControlRequest::CreateKey { name } => keys.create(&name).await,
                ControlRequest::ListKeys => keys.list().await,
                ControlRequest::DeleteKey { name } => keys.delete(&name).await,
                ControlRequest::AllowKey {
                    name,
                    bucket,
                    grant,
                } => keys.grant(&name, &bucket, grant, true).await,
                ControlRequest::DenyKey {
                    name,
                    bucket,
                    grant,
                } => keys.grant(&name, &bucket, grant, false).await,
                ControlRequest::MintJoinToken { ttl_ms } => tokens.mint(ttl_ms).await,
                ControlRequest::Repair { bucket } => {
                    match repair::repair(
                        &repair_raft,
                        &repair_data,
                        &repair_metrics,
                        Arc::new(SystemClock),
                        bucket,
                    )
                    .await
                    {
                        Ok(report) => ControlResponse::Repaired(report),
                        Err(e) => ControlResponse::Error {
                            message: format!("repair stopped: {e}; retry"),
                        },
                    }
                }
                ControlRequest::AdoptEpoch { epoch } => match ctx.0.send(AdoptEpoch(epoch)).await {
                    Ok(Ok(())) => ControlResponse::EpochAdopted { epoch },
                    Ok(Err(e)) => ControlResponse::Error {
                        message: format!("cannot record epoch {epoch}: {e}"),
                    },
                    Err(_) => ControlResponse::Error {
                        message: "the Raft node is not running".to_string(),
                    },
                },
                ControlRequest::ReadmitMember { node_id } => {
                    readmit_member(&ctx.0, ctx.1.node_id, &node_id, &ctx.4).await
                }
                ControlRequest::ChangeLayout { change } => {
                    change_layout(&ctx.0, ctx.1.node_id, &layout_manager, change, &ctx.4).await
                }
                ControlRequest::Scrub { switch } => {
                    scrub_control(&ctx.0, switch, scrub_config).await
                }
            }
        })
    });
    let raft_service = RaftService::new();
    raft_service.bind(raft.clone());
    let join_service = JoinService::new(
        node.cluster_id.clone(),
        material.ca_cert_pem.clone(),
        ca,
        Arc::new(SystemClock),
    )?;
    join_service.bind(raft.clone());
    let routes = Routes::new(handler)
        .with(ALPN_RAFT, raft_protocol(raft_service))
        .with(ALPN_SHARD, shard_protocol(shard_service))
        .with(ALPN_JOIN, join::join_protocol(join_service));
    let cluster_port = bind_cluster_port(cluster_addr, &material, routes).await?;

    let ready = Arc::new(AtomicBool::new(false));
    stop_when_fenced(epoch.fenced(), s.dir.clone(), ready.clone());
    stop_when_removed(epoch.removed(), node.node_id_hex(), ready.clone());
    actix_rt::spawn(async {
        let mut every = tokio::time::interval(crate::raft_noise::RAFT_NOISE_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            crate::raft_noise::flush();
        }
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let core_metrics = raft
        .send(WatchMetrics)
        .await
        .context("the metadata store stopped while starting")?;
    exit_when_core_stops(core_metrics, epoch.clone(), ready.clone(), stopping.clone());
    exit_when_supervision_gives_up(supervision.gave_up(), ready.clone(), stopping.clone());
    let admin_state = AdminState::new(
        metrics.clone(),
        ready.clone(),
        raft.clone(),
        shards.clone(),
        supervision.clone(),
    );
    let admin_addr = resolve(&s.admin, "admin")?;
    let admin_server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(admin_state.clone()))
            .configure(admin::configure)
    })
    .workers(1)
    .disable_signals()
    .bind(admin_addr)
    .with_context(|| format!("cannot listen on the admin address {admin_addr}"))?
    .run();
    let admin_handle = admin_server.handle();
    actix_rt::spawn(admin_server);

    let mut s3_handle = None;
    if let Some(addr) = &s.s3 {
        let reader = raft
            .send(GetReader)
            .await
            .context("the metadata node stopped during start-up")?;
        let state = Arc::new(S3State {
            offload: s3::Offload::Pool,
            raft: raft.clone(),
            reader,
            shards: shards.clone(),
            data: data.clone(),
            metrics: metrics.clone(),
            clock: Arc::new(SystemClock),
            ids: ids.clone(),
            config: S3Config {
                region: s.region.clone(),
                domain: s.domain.clone(),
                body_idle: s.body_idle,
                uploads: s.uploads,
            },
            owner_id: node.cluster_id.clone(),
            uploads: UploadGate::new(s.uploads),
            space: space.clone(),
        });
        let sock = resolve(addr, "S3")?;
        let server = crate::s3_listener::server(sock, state, SHUTDOWN_GRACE_SECS)
            .with_context(|| format!("cannot listen on the S3 address {sock}"))?;
        s3_handle = Some(server.handle());
        actix_rt::spawn(server);
    }

    node.admin_addr = s.admin.clone();
    node.s3_addr = s.s3.clone();
    // Only tooling reads these addresses; a full disk must not keep the node from serving.
    if let Err(e) = node::save_node(&s.dir, &node) {
        warn!(error = %format!("{e:#}"), "cannot record this start's addresses in node.json");
    }
    ready.store(true, Ordering::SeqCst);
    match &s.s3 {
        Some(a) => {
            info!(s3 = %format!("http://{a}"), admin = %s.admin, cluster = %node.cluster_addr, "serving")
        }
        None => info!(admin = %s.admin, cluster = %node.cluster_addr, "serving (S3 off)"),
    }
    if let Some(a) = &s.s3 {
        println!(
            "hamster: serving S3 on http://{a} (admin http://{}, node {})",
            s.admin,
            node.node_id_hex()
        );
    }
    notify_systemd("READY=1");

    wait_for_signal().await;
    info!("shutting down: finishing in-flight requests");
    notify_systemd("STOPPING=1");
    ready.store(false, Ordering::SeqCst);
    if let Some(h) = s3_handle {
        h.stop(true).await;
    }
    admin_handle.stop(true).await;
    stopping.store(true, Ordering::SeqCst);
    drop(cluster_port);
    let _ = keeper.send(continuity::Flush).await;
    let _ = raft.send(Shutdown).await;
    info!("stopped");
    actix_rt::System::current().stop();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        biased;
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Tells systemd (Type=notify) about our state when it asked us to.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot notify systemd");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// Makes sure the root credentials from the credentials file are known to Raft state.
async fn ensure_root_key(raft: &Addr<RaftNode>, c: &Credentials) -> anyhow::Result<()> {
    let existing = raft
        .send(GetAccessKey(c.access_key.clone()))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if existing.is_some_and(|k| k.secret_key == c.secret_key && k.root) {
        return Ok(());
    }
    let key = AccessKey {
        access_key: c.access_key.clone(),
        secret_key: c.secret_key.clone(),
        name: "root".to_string(),
        root: true,
        grants: Default::default(),
        created_ms: SystemClock.now_ms(),
    };
    raft.send(Propose(Command::PutAccessKey(key)))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot store the root credentials: {e}"))?;
    Ok(())
}

/// Exit status of a node that a `hamster recover` dropped (EX_CONFIG): the systemd unit does
/// not restart it (`RestartPreventExitStatus`).
pub const FENCED_EXIT: u8 = 78;

/// Once a member of a newer cluster epoch tells this node it was dropped by a recover: say so,
/// record it (so later starts refuse too), stop being ready, and exit. The node's state is
/// stale; serving it, or electing a leader with other dropped members, would split the cluster.
fn stop_when_fenced(
    mut fenced: tokio::sync::watch::Receiver<Option<u64>>,
    dir: DataDir,
    ready: Arc<AtomicBool>,
) {
    actix_rt::spawn(async move {
        let epoch = loop {
            if let Some(e) = *fenced.borrow_and_update() {
                break e;
            }
            if fenced.changed().await.is_err() {
                return;
            }
        };
        ready.store(false, Ordering::SeqCst);
        let why = continuity::FencedError {
            epoch,
            dir: dir.root.display().to_string(),
        };
        tracing::error!("{why}; stopping");
        if let Err(e) = continuity::mark_fenced(&dir, epoch) {
            tracing::error!(error = %format!("{e:#}"), "cannot record that this node was dropped");
        }
        eprintln!("hamster: {why}");
        std::process::exit(i32::from(FENCED_EXIT));
    });
}

/// Stops the node once a member answers that it was removed from the cluster for good: a
/// tombstoned node must not serve stale metadata or stand for election.
fn stop_when_removed(
    mut removed: tokio::sync::watch::Receiver<bool>,
    me: String,
    ready: Arc<AtomicBool>,
) {
    actix_rt::spawn(async move {
        while !*removed.borrow_and_update() {
            if removed.changed().await.is_err() {
                return;
            }
        }
        ready.store(false, Ordering::SeqCst);
        let why = format!(
            "node {me} was removed from the cluster for good (hamster remove); to use this machine again, wipe its data dir and join with a fresh token"
        );
        tracing::error!("{why}; stopping");
        eprintln!("hamster: {why}");
        std::process::exit(i32::from(FENCED_EXIT));
    });
}

/// Exit status when the metadata core stopped on its own, or a supervised actor failed too
/// often to be restarted in place (EX_SOFTWARE): the systemd unit restarts the node, which
/// reopens its stores from disk.
pub const CORE_STOPPED_EXIT: i32 = 70;

/// A node whose Raft core stopped by itself (a storage error such as a full disk, or a bug)
/// can serve nothing: it turns unready at once and exits non-zero, so that a supervisor
/// restarts it, instead of answering every request with 503 while `/ready` says "ready".
fn exit_when_core_stops(
    metrics: tokio::sync::watch::Receiver<hamster_actors::raft::RaftMetrics>,
    epoch: Epoch,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) {
    actix_rt::spawn(async move {
        let why = hamster_actors::raft::node::core_stopped(metrics).await;
        // A fenced node's core is stopped on purpose; `stop_when_fenced` exits for it.
        if stopping.load(Ordering::SeqCst) || epoch.fenced().borrow().is_some() {
            return;
        }
        ready.store(false, Ordering::SeqCst);
        tracing::error!(reason = %why, "the metadata core stopped; exiting so the node restarts from its store");
        eprintln!("hamster: the metadata core stopped ({why}); exiting so the node restarts from its store");
        tokio::time::sleep(UNREADY_BEFORE_EXIT).await;
        std::process::exit(CORE_STOPPED_EXIT);
    });
}

/// How long a node that must exit stays up answering 503 (and `/ready` with the reason)
/// first: a load balancer polling `/ready` takes it out of rotation on a clear answer rather
/// than on refused connections, and requests in flight end with an error instead of a reset.
const UNREADY_BEFORE_EXIT: Duration = Duration::from_millis(1_000);

/// A supervised actor that keeps failing cannot be made right by restarting it inside this
/// process: turn unready and exit non-zero (EX_SOFTWARE), so that systemd starts the node
/// afresh from its stores.
fn exit_when_supervision_gives_up(
    mut gave_up: tokio::sync::watch::Receiver<Option<String>>,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) {
    actix_rt::spawn(async move {
        let why = loop {
            if let Some(why) = gave_up.borrow_and_update().clone() {
                break why;
            }
            if gave_up.changed().await.is_err() {
                return;
            }
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        ready.store(false, Ordering::SeqCst);
        tracing::error!(reason = %why, "a supervised actor keeps failing; exiting so the node restarts");
        eprintln!("hamster: {why}; exiting so the node restarts");
        tokio::time::sleep(UNREADY_BEFORE_EXIT).await;
        std::process::exit(CORE_STOPPED_EXIT);
    });
}

/// How long the cluster port may take to be free again after the rebuild's port closed.
const REBIND_WAIT_MAX: Duration = Duration::from_secs(5);

/// Binds the cluster port, waiting (bounded) while a port this process just closed is still
/// being released.
async fn bind_cluster_port(
    addr: SocketAddr,
    material: &TlsMaterial,
    routes: Routes,
) -> anyhow::Result<control::ClusterPort> {
    let deadline = tokio::time::Instant::now() + REBIND_WAIT_MAX;
    loop {
        let attempt = control::bind_routes(addr, material, routes.clone()).await;
        match attempt {
            Ok(port) => return Ok(port),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("cannot listen on the cluster port {addr}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// How long a node rebuilding its metadata waits for the leader to fill its store.
const REBUILD_WAIT_MAX: Duration = Duration::from_secs(300);

/// After `recover-meta`: waits until the leader has filled this node's empty store up to its
/// commit index, so the node serves (and sweeps) only with the cluster's whole state.
async fn wait_rebuilt(raft: &Addr<RaftNode>) -> anyhow::Result<()> {
    info!("rebuilding the metadata store from the cluster's leader");
    let deadline = tokio::time::Instant::now() + REBUILD_WAIT_MAX;
    loop {
        match raft.send(CatchUp).await? {
            Ok(()) => {
                let applied = raft.send(RaftStatus).await?.applied_index;
                info!(applied, "metadata store rebuilt from the leader");
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => bail!(
                "the leader did not send this node's metadata within {} s ({e}); check that a majority of members runs and that `hamster recover-meta` succeeded, then start again",
                REBUILD_WAIT_MAX.as_secs()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// How long a member waits for the leader to answer a request it passed on.
const FORWARD_CONTROL_WAIT: Duration = Duration::from_secs(30);

/// `hamster recover-meta`'s request, on a member: the leader removes `target` from the group
/// and adds it back as a learner that starts from nothing (it lost its metadata, so it must
/// not vote or count toward commits until it has caught up; the steward promotes it then). A
/// member that does not lead passes the request to the leader.
async fn readmit_member(
    raft: &Addr<RaftNode>,
    me: u64,
    target: &str,
    material: &TlsMaterial,
) -> ControlResponse {
    let error = |message: String| ControlResponse::Error { message };
    let Ok(id) = u64::from_str_radix(target, 16) else {
        return error(format!("{target:?} is not a node id (16 hex digits)"));
    };
    let Ok(s) = raft.send(RaftStatus).await else {
        return error("the Raft node is not running".into());
    };
    let leader = match s.leader {
        Some(l) => l,
        None => {
            return error("no metadata leader is known right now; retry in a few seconds".into())
        }
    };
    let find = |id: u64| {
        s.voters
            .iter()
            .chain(s.learners.iter())
            .find(|(m, _)| *m == id)
            .map(|(_, info)| info.clone())
    };
    if leader != me {
        let Some(addr) = find(leader).map(|l| l.cluster_addr) else {
            return error(
                "the metadata leader is not in the membership this node knows; retry".into(),
            );
        };
        let req = ControlRequest::ReadmitMember {
            node_id: target.to_string(),
        };
        let ask = control::control_request(&addr, material, &req);
        return match tokio::time::timeout(FORWARD_CONTROL_WAIT, ask).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => error(format!(
                "cannot reach the metadata leader at {addr}: {e:#}; retry"
            )),
            Err(_) => error(format!(
                "the metadata leader at {addr} did not answer in time; retry"
            )),
        };
    }
    if id == me {
        return error(
            "this node leads the cluster, so its metadata is not lost; nothing to do".into(),
        );
    }
    let Some(info) = find(id) else {
        return error(format!(
            "node {target} is not a member of this cluster; join it again with a token from `hamster token`"
        ));
    };
    if let Err(e) = raft
        .send(RemoveMember { id })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return error(format!(
            "cannot take node {target} out of the group: {e}; retry"
        ));
    }
    if let Err(e) = raft
        .send(AddLearner { id, node: info })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return error(format!(
            "node {target} was taken out of the group but not added back: {e}; run recover-meta again"
        ));
    }
    info!(node = %target, "member re-admitted as a learner to rebuild its lost metadata");
    ControlResponse::Readmitted {
        node_id: target.to_string(),
        leader: format!("{me:016x}"),
    }
}

/// Passes a control request to the metadata leader when this node does not lead; `None` when
/// it leads (the caller serves the request itself).
async fn forward_to_leader(
    raft: &Addr<RaftNode>,
    me: u64,
    material: &TlsMaterial,
    req: &ControlRequest,
) -> Option<ControlResponse> {
    let error = |message: String| Some(ControlResponse::Error { message });
    let Ok(s) = raft.send(RaftStatus).await else {
        return error("the Raft node is not running".into());
    };
    let Some(leader) = s.leader else {
        return error("no metadata leader is known right now; retry in a few seconds".into());
    };
    if leader == me {
        return None;
    }
    let Some(addr) = s
        .voters
        .iter()
        .chain(s.learners.iter())
        .find(|(m, _)| *m == leader)
        .map(|(_, info)| info.cluster_addr.clone())
    else {
        return error("the metadata leader is not in the membership this node knows; retry".into());
    };
    let ask = control::control_request(&addr, material, req);
    match tokio::time::timeout(FORWARD_CONTROL_WAIT, ask).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(e)) => error(format!(
            "cannot reach the metadata leader at {addr}: {e:#}; retry"
        )),
        Err(_) => error(format!(
            "the metadata leader at {addr} did not answer in time; retry"
        )),
    }
}

/// Serves `hamster drain|undrain|remove|optimize`: on the leader by its layout manager.
async fn change_layout(
    raft: &Addr<RaftNode>,
    me: u64,
    manager: &Addr<LayoutManager>,
    change: LayoutRequest,
    material: &TlsMaterial,
) -> ControlResponse {
    let req = ControlRequest::ChangeLayout {
        change: change.clone(),
    };
    if let Some(answer) = forward_to_leader(raft, me, material, &req).await {
        return answer;
    }
    let error = |message: String| ControlResponse::Error { message };
    let id = |text: &str| {
        u64::from_str_radix(text, 16)
            .map_err(|_| format!("{text:?} is not a node id (16 hex digits)"))
    };
    let change = match change {
        LayoutRequest::Drain {
            node_id,
            shrink,
            force,
        } => id(&node_id).map(|node| LayoutChange::Drain {
            node,
            shrink,
            force,
        }),
        LayoutRequest::Undrain { node_id } => {
            id(&node_id).map(|node| LayoutChange::Undrain { node })
        }
        LayoutRequest::Remove { node_id } => id(&node_id).map(|node| LayoutChange::Remove { node }),
        LayoutRequest::Optimize => Ok(LayoutChange::Optimize),
    };
    let change = match change {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    let asked = ChangeLayout {
        change,
        asked_by: "hamster CLI".to_string(),
    };
    match manager.send(asked).await {
        Ok(Ok(message)) => ControlResponse::LayoutChanged { message },
        Ok(Err(message)) => error(message),
        Err(_) => error("the layout manager is not running".into()),
    }
}

async fn status_report(
    raft: &Addr<RaftNode>,
    node: &NodeFile,
    s3: Option<String>,
    admin: &str,
    peers: Option<&TlsMaterial>,
    shards: &ShardStore,
) -> ControlResponse {
    let s = match raft.send(RaftStatus).await {
        Ok(s) => s,
        Err(_) => {
            return ControlResponse::Error {
                message: "the Raft node is not running".to_string(),
            }
        }
    };
    let mut members = s.members();
    let me = node.node_id_hex();
    // Each member reports its own state; asked together, each bounded.
    let asks = members.iter().map(|m| {
        let own = m.node_id == me;
        let addr = m.cluster_addr.clone();
        async move {
            match (own, peers) {
                (true, _) | (false, None) => None,
                (false, Some(material)) => {
                    let ask =
                        control::control_request(&addr, material, &ControlRequest::NodeStatus);
                    match tokio::time::timeout(MEMBER_STATUS_WAIT, ask).await {
                        Ok(Ok(ControlResponse::Status(r))) => Some(Some(r)),
                        _ => Some(None),
                    }
                }
            }
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    for (m, answer) in members.iter_mut().zip(answers) {
        match answer {
            _ if m.node_id == me => {
                m.state = Some(s.state.clone());
                m.term = Some(s.term);
                m.last_log_index = Some(s.last_log_index);
                // Counted as shards come and go, so asking costs no walk of the store.
                let tally = shards.tally();
                m.shard_count = Some(tally.shards);
                m.shard_bytes = Some(tally.bytes);
            }
            Some(Some(r)) => {
                let own = r.members.iter().find(|x| x.node_id == r.node_id);
                m.state = own.and_then(|x| x.state.clone());
                m.shard_count = own.and_then(|x| x.shard_count);
                m.shard_bytes = own.and_then(|x| x.shard_bytes);
                m.term = Some(r.term);
                m.last_log_index = Some(r.last_log_index);
            }
            Some(None) => m.state = Some("unreachable".to_string()),
            None => {}
        }
    }
    ControlResponse::Status(StatusReport {
        node_id: node.node_id_hex(),
        cluster_id: node.cluster_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        members,
        leader: s.leader.map(|l| format!("{l:016x}")),
        term: s.term,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        s3_addr: s3,
        admin_addr: admin.to_string(),
        cluster_addr: node.cluster_addr.clone(),
        layout: raft
            .send(GetLayout)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .and_then(|l| serde_json::to_value(l).ok()),
        stale_shards: raft
            .send(StaleCount)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0),
        scrub: raft
            .send(GetScrub)
            .await
            .ok()
            .and_then(Result::ok)
            .map(Box::new),
        now_ms: SystemClock.now_ms(),
        heal_soon: 0,
    })
}
