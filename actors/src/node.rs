//! A node's data directory: its layout (DESIGN §3), the node identity file, the root S3
//! credentials file, and founding a one-node cluster in it (`hamster init`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::clock::IdSource;
use crate::tls;

/// Version of `node.json`; bumped additively.
pub const NODE_FILE_VERSION: u32 = 1;

/// The paths inside a data directory. Nothing here derives from S3 names.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory itself.
    pub root: PathBuf,
}

impl DataDir {
    /// Wraps a directory path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    /// LMDB environment: Raft log, vote, metadata state machine.
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta")
    }
    /// Shard files.
    pub fn shards(&self) -> PathBuf {
        self.root.join("shards")
    }
    /// Cluster CA and this node's certificate and key.
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    /// Node identity.
    pub fn node_file(&self) -> PathBuf {
        self.root.join("node.json")
    }
    /// Root S3 credentials, AWS shared-credentials format.
    pub fn credentials(&self) -> PathBuf {
        self.root.join("credentials")
    }
    /// Whether `hamster init` has completed here.
    pub fn is_initialised(&self) -> bool {
        self.node_file().is_file()
    }
    /// Whether the directory is absent or empty (the embedded default initialises it).
    pub fn is_empty(&self) -> bool {
        match fs::read_dir(&self.root) {
            Ok(mut it) => it.next().is_none(),
            Err(_) => !self.root.exists(),
        }
    }
}

/// `node.json`: who this node is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    /// Format version of this file.
    pub version: u32,
    /// Raft node id, stored as 16 hex digits (the form operators see everywhere).
    #[serde(with = "hex_u64")]
    pub node_id: u64,
    /// The cluster this node belongs to.
    pub cluster_id: String,
    /// The cluster port address peers and the CLI reach.
    pub cluster_addr: String,
    /// Failure domain: zone.
    pub zone: String,
    /// Failure domain: host.
    pub host: String,
    /// Capacity weight in bytes.
    pub capacity_bytes: u64,
    /// The admin HTTP address the node last served on (for `hamster status` and tooling).
    #[serde(default)]
    pub admin_addr: String,
    /// The S3 address the node last served on, if any.
    #[serde(default)]
    pub s3_addr: Option<String>,
    /// Whether this node joined an existing cluster (rather than founding one). A joined node
    /// never founds a group of its own, even on an empty metadata store.
    #[serde(default)]
    pub joined: bool,
}

/// Serde for a u64 as 16 lowercase hex digits.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(|_| serde::de::Error::custom("node id is not hex"))
    }
}

impl NodeFile {
    /// Node id as 16 hex digits, the form shown to operators.
    pub fn node_id_hex(&self) -> String {
        format!("{:016x}", self.node_id)
    }
}

/// Root S3 credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

/// Options of `hamster init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Zone of this node.
    pub zone: String,
    /// Host of this node.
    pub host: String,
    /// Capacity weight in bytes.
    pub capacity_bytes: u64,
    /// Cluster port address.
    pub cluster_addr: String,
    /// Root credentials to use instead of generated ones.
    pub credentials: Option<Credentials>,
}

/// Loads `node.json`, or says how to fix its absence.
pub fn load_node(dir: &DataDir) -> anyhow::Result<NodeFile> {
    let path = dir.node_file();
    if !path.exists() {
        bail!(
            "data dir {} is not initialised; run `hamster init --data {}` (or `hamster serve`, which initialises an empty dir)",
            dir.root.display(),
            dir.root.display()
        );
    }
    let raw = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let node: NodeFile = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is damaged; restore it from a backup", path.display()))?;
    if node.version > NODE_FILE_VERSION {
        bail!(
            "{} was written by a newer hamster (format {}); upgrade this binary",
            path.display(),
            node.version
        );
    }
    Ok(node)
}

/// Rewrites `node.json` atomically.
pub fn save_node(dir: &DataDir, node: &NodeFile) -> anyhow::Result<()> {
    let body = serde_json::to_vec_pretty(node)?;
    write_atomic(&dir.node_file(), &body, 0o644)
}

/// Reads the root credentials file.
pub fn load_credentials(dir: &DataDir) -> anyhow::Result<Credentials> {
    let path = dir.credentials();
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "no S3 credentials at {}; refusing to serve S3 without credentials (re-run `hamster init` on an empty dir, or use --no-s3)",
            path.display()
        )
    })?;
    parse_credentials(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// Parses the AWS shared-credentials form written by `write_credentials`.
pub fn parse_credentials(text: &str) -> anyhow::Result<Credentials> {
    let mut ak = None;
    let mut sk = None;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => ak = Some(v.trim().to_string()),
                "aws_secret_access_key" => sk = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    match (ak, sk) {
        (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Ok(Credentials {
            access_key: a,
            secret_key: s,
        }),
        _ => bail!("expected aws_access_key_id and aws_secret_access_key"),
    }
}

fn write_credentials(dir: &DataDir, c: &Credentials) -> anyhow::Result<()> {
    let body = format!(
        "# Hamster root S3 credentials (AWS shared-credentials format)\n[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        c.access_key, c.secret_key
    );
    write_atomic(&dir.credentials(), body.as_bytes(), 0o600)
}

/// Writes `path` crash-safely: temp file with `mode`, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, body: &[u8], mode: u32) -> anyhow::Result<()> {
    let parent = path.parent().context("path has no parent directory")?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot rename into {}", path.display()))?;
    fs::File::open(parent)?.sync_all()?;
    Ok(())
}

/// Access key ids: this prefix, then [`ACCESS_KEY_TAIL_CHARS`] uppercase letters and digits.
pub const ACCESS_KEY_PREFIX: &str = "HK";
/// Random characters after the prefix of an access key id.
pub const ACCESS_KEY_TAIL_CHARS: usize = 18;
/// Characters in a minted secret.
pub const SECRET_KEY_CHARS: usize = 40;
/// Alphabet of generated access keys (as AWS: uppercase and digits).
const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Alphabet of generated secrets.
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh access key id and secret from `ids` (root credentials at init, application keys
/// from `hamster key create`).
pub fn mint_credentials(ids: &IdSource) -> Credentials {
    Credentials {
        access_key: format!(
            "{ACCESS_KEY_PREFIX}{}",
            ids.token(ACCESS_KEY_ALPHABET, ACCESS_KEY_TAIL_CHARS)
        ),
        secret_key: ids.token(SECRET_ALPHABET, SECRET_KEY_CHARS),
    }
}

/// What `init` produced, for printing.
#[derive(Debug, Clone)]
pub struct InitOutcome {
    /// The new node.
    pub node: NodeFile,
    /// The root credentials (printed once).
    pub credentials: Credentials,
}

/// Founds a one-node cluster in `dir`: node identity, cluster CA and node certificate (keys
/// 0600), root S3 credentials (0600). Refuses an initialised or non-empty directory.
pub fn init(dir: &DataDir, opts: &InitOptions, ids: &IdSource) -> anyhow::Result<InitOutcome> {
    // What an earlier init or first start left when it was killed is cleared first.
    crate::continuity::clear_interrupted_first_start(dir)?;
    if dir.is_initialised() {
        bail!(
            "data dir {} is already initialised (node.json exists); use `hamster serve --data {}` or pick an empty dir",
            dir.root.display(),
            dir.root.display()
        );
    }
    if !dir.is_empty() {
        bail!(
            "data dir {} is not empty; initialise into an empty or new directory",
            dir.root.display()
        );
    }
    // First, so that a crash anywhere below leaves a directory the next start recognises
    // as an interrupted first start and begins again.
    crate::continuity::begin_first_start(dir)?;
    let mut node_id = ids.next_u64();
    while node_id == 0 {
        node_id = ids.next_u64();
    }
    let cluster_id = format!("{:016x}", ids.next_u64());
    let ca = tls::mint_cluster_ca(&cluster_id)?;
    let (cert, key) = tls::mint_node_cert(&ca, &format!("{node_id:016x}"))?;
    tls::write_tls_dir(&dir.tls(), &ca, &cert, &key)?;
    let credentials = match &opts.credentials {
        Some(c) => c.clone(),
        None => mint_credentials(ids),
    };
    write_credentials(dir, &credentials)?;
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
        joined: false,
    };
    // node.json last: its presence marks a completed init.
    save_node(dir, &node)?;
    Ok(InitOutcome { node, credentials })
}
