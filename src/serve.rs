//! `hamster serve` (and `init`): production wiring. Builds the node's actors inside one actix
//! System — Raft node, shard store and reclaimer, cluster port, S3 front, admin endpoint —
//! tells systemd when it is ready, and shuts down cleanly on SIGTERM/SIGINT.

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
use hamster_actors::control::{self, ControlHandler};
use hamster_actors::metrics::Metrics;
use hamster_actors::node::{self, Credentials, DataDir, InitOptions, InitOutcome, NodeFile};
use hamster_actors::raft::node::{
    GetAccessKey, Propose, RaftNode, RaftNodeConfig, RaftStatus, ReferencedObjects, Shutdown,
};
use hamster_actors::raft::NodeInfo;
use hamster_actors::s3::{self, S3Config, S3State};
use hamster_actors::shards::ShardStore;
use hamster_actors::tls;
use hamster_protocol::meta::{AccessKey, Command, ObjectId};
use hamster_protocol::wire::{ControlRequest, ControlResponse, MemberStatus, StatusReport};
use tracing::{info, warn};

use crate::config::{parse_size, FileConfig};
use crate::key::KeyAdmin;
use crate::token::TokenAdmin;
use crate::{data_dir, file_config, NodeShape, ServeArgs};

const S3_ADDR_DEFAULT: &str = "127.0.0.1:9000";
const ADMIN_ADDR_DEFAULT: &str = "127.0.0.1:9001";
const CLUSTER_ADDR_DEFAULT: &str = "127.0.0.1:9400";
const REGION_DEFAULT: &str = "us-east-1";
/// How long in-flight S3 requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE_SECS: u64 = 30;

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

fn filesystem_bytes(path: &Path) -> u64 {
    let probe = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let Ok(c) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_blocks as u64 * s.f_frsize as u64
}

/// Initialises `dir` as a one-node cluster.
pub fn init_dir(
    dir: &Path,
    shape: &NodeShape,
    file: Option<&FileConfig>,
) -> anyhow::Result<InitOutcome> {
    let capacity = match shape
        .capacity
        .clone()
        .or_else(|| file.and_then(|f| f.capacity.clone()))
    {
        Some(c) => parse_size(&c)?,
        None => filesystem_bytes(dir),
    };
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
    let opts = InitOptions {
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
        credentials,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    node::init(&DataDir::new(dir), &opts, &IdSource::from_os())
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

/// Settings `serve` runs with, after flags, file and defaults are merged.
struct Settings {
    dir: DataDir,
    s3: Option<String>,
    admin: String,
    region: String,
    domain: Option<String>,
}

/// Runs `hamster serve`.
pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let file = file_config(&a.config)?;
    let f = file.as_ref();
    let filter = f
        .and_then(|f| f.log.clone())
        .unwrap_or_else(|| "info,openraft=warn".to_string());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAMSTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir_path = data_dir(&a.data, f);
    let dir = DataDir::new(&dir_path);
    let no_s3 = a.no_s3 || f.and_then(|f| f.no_s3).unwrap_or(false);
    let s3_addr = (!no_s3).then(|| pick(&a.s3, f.map(|f| &f.s3), S3_ADDR_DEFAULT));
    if !dir.is_initialised() {
        if !dir.is_empty() {
            bail!(
                "data dir {} is not initialised and not empty; run `hamster init --data DIR` on an empty dir",
                dir.root.display()
            );
        }
        let outcome = init_dir(&dir_path, &a.shape, f)?;
        print_init(&dir_path, &outcome, s3_addr.as_deref());
    }
    let settings = Settings {
        dir,
        s3: s3_addr,
        admin: pick(&a.admin, f.map(|f| &f.admin), ADMIN_ADDR_DEFAULT),
        region: pick(&a.region, f.map(|f| &f.region), REGION_DEFAULT),
        domain: a
            .domain
            .clone()
            .or_else(|| f.and_then(|f| f.domain.clone())),
    };
    let system = actix_rt::System::new();
    system.block_on(run_node(settings))
}

async fn run_node(s: Settings) -> anyhow::Result<()> {
    let mut node = node::load_node(&s.dir)?;
    let material = tls::load_tls_dir(&s.dir.tls())?;
    let credentials = match &s.s3 {
        Some(_) => Some(node::load_credentials(&s.dir)?),
        None => None,
    };
    let shards = Arc::new(
        ShardStore::open(&s.dir.shards())
            .with_context(|| format!("cannot open shard store {}", s.dir.shards().display()))?,
    );
    let metrics = Metrics::new();
    let ids = Arc::new(IdSource::from_os());
    let (freed_tx, freed_rx) = tokio::sync::mpsc::unbounded_channel();
    let raft = RaftNode::start(RaftNodeConfig {
        node_id: node.node_id,
        meta_dir: s.dir.meta(),
        node: NodeInfo {
            cluster_addr: node.cluster_addr.clone(),
            zone: node.zone.clone(),
            host: node.host.clone(),
            capacity_bytes: node.capacity_bytes,
        },
        seed: ids.next_u64(),
        freed_tx,
        map_size_bytes: 16 << 30,
    })
    .await
    .context("cannot start the metadata store")?;
    recover_orphans(&raft, &shards).await?;
    spawn_reclaimer(shards.clone(), metrics.clone(), freed_rx);
    if let Some(c) = &credentials {
        ensure_root_key(&raft, c).await?;
    }

    let cluster_addr = resolve(&node.cluster_addr, "cluster")?;
    let status_ctx = Arc::new((raft.clone(), node.clone(), s.s3.clone(), s.admin.clone()));
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
    let handler: ControlHandler = Arc::new(move |req, _peer| {
        let ctx = status_ctx.clone();
        let keys = key_admin.clone();
        let tokens = token_admin.clone();
        Box::pin(async move {
            match req {
                ControlRequest::Status => {
                    status_report(&ctx.0, &ctx.1, ctx.2.clone(), &ctx.3).await
                }
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
            }
        })
    });
    let cluster_port = control::bind(cluster_addr, &material, handler)
        .await
        .with_context(|| format!("cannot listen on the cluster port {cluster_addr}"))?;

    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = AdminState::new(metrics.clone(), ready.clone(), raft.clone(), shards.clone());
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
        let state = Arc::new(S3State {
            raft: raft.clone(),
            shards: shards.clone(),
            metrics: metrics.clone(),
            clock: Arc::new(SystemClock),
            ids: ids.clone(),
            config: S3Config {
                region: s.region.clone(),
                domain: s.domain.clone(),
            },
            owner_id: node.cluster_id.clone(),
        });
        let sock = resolve(addr, "S3")?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(s3::configure)
        })
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        .client_request_timeout(Duration::from_secs(60))
        .bind(sock)
        .with_context(|| format!("cannot listen on the S3 address {sock}"))?
        .run();
        s3_handle = Some(server.handle());
        actix_rt::spawn(server);
    }

    node.admin_addr = s.admin.clone();
    node.s3_addr = s.s3.clone();
    node::save_node(&s.dir, &node)?;
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
    drop(cluster_port);
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

/// Restart recovery: shard files that no committed version references were written by PUTs
/// that never committed (or whose reclaim was cut short); they are never visible, so remove
/// them.
async fn recover_orphans(raft: &Addr<RaftNode>, shards: &Arc<ShardStore>) -> anyhow::Result<()> {
    let referenced = raft
        .send(ReferencedObjects)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored = shards.list().context("cannot list shard files")?;
    let mut removed = std::collections::BTreeSet::new();
    for s in stored {
        if !referenced.contains(&s.id) && removed.insert(s.id) {
            shards
                .delete_object(&s.id)
                .context("cannot remove an orphan shard")?;
        }
    }
    if !removed.is_empty() {
        info!(
            objects = removed.len(),
            "removed orphan shard files left by interrupted writes"
        );
    }
    Ok(())
}

/// Deletes shard files of object bodies a commit unreferenced.
fn spawn_reclaimer(
    shards: Arc<ShardStore>,
    metrics: Metrics,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<ObjectId>>,
) {
    actix_rt::spawn(async move {
        while let Some(ids) = rx.recv().await {
            let shards = shards.clone();
            let done = web::block(move || {
                ids.iter()
                    .filter(|id| shards.delete_object(id).is_ok())
                    .count()
            })
            .await
            .unwrap_or(0);
            metrics.shards_reclaimed.inc_by(done as u64);
        }
    });
}

async fn status_report(
    raft: &Addr<RaftNode>,
    node: &NodeFile,
    s3: Option<String>,
    admin: &str,
) -> ControlResponse {
    let s = match raft.send(RaftStatus).await {
        Ok(s) => s,
        Err(_) => {
            return ControlResponse::Error {
                message: "the Raft node is not running".to_string(),
            }
        }
    };
    let member = |(id, n): &(u64, NodeInfo), role: &str| MemberStatus {
        node_id: format!("{id:016x}"),
        cluster_addr: n.cluster_addr.clone(),
        role: role.to_string(),
        zone: n.zone.clone(),
        host: n.host.clone(),
        capacity_bytes: n.capacity_bytes,
    };
    let mut members: Vec<MemberStatus> = s.voters.iter().map(|m| member(m, "voter")).collect();
    members.extend(s.learners.iter().map(|m| member(m, "learner")));
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
    })
}
