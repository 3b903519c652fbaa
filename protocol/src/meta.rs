//! Metadata records and the Raft command set: what the replicated state machine stores and the
//! pure `apply` that every node runs on every committed command. Object bytes never appear
//! here (INV-1): a command carries only the small record that points at shard files.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::layout::{LayoutOp, PartAt, Placed, Progress, Rehome, Revisit, StaleShard};
use crate::placement::{Layout, LayoutNode};

/// The identity of one stored object body (one PUT or one completed multipart upload). Shard
/// file names derive from it, never from the S3 key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<ObjectId> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ObjectId(out))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectId::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("object id is not 32 hex digits"))
    }
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// The bucket name (validated before proposal).
    pub name: String,
    /// Creation time, Unix milliseconds, stamped by the proposer.
    pub created_ms: u64,
    /// The region (location constraint) it was created in.
    #[serde(default)]
    pub region: String,
}

/// Where one part's shards live and how they were coded. A simple PUT has one part (number 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartLayout {
    /// Part number: 1 for a simple PUT, the S3 part number for multipart.
    pub part: u32,
    /// Bytes of object data in this part.
    pub size: u64,
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes of data per checksummed block in each shard file.
    pub block_bytes: u32,
    /// BLAKE3 (hex) of each shard's data, by shard index; a shard is trusted only if it matches
    /// (INV-5).
    pub shard_blake3: Vec<String>,
    /// MD5 (hex) of this part's bytes (a multipart part's ETag).
    #[serde(default)]
    pub md5: String,
    /// The body whose shard files hold this part. Multipart parts are stored under the id
    /// minted when the part was uploaded; `None` means the version's own `object_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<ObjectId>,
    /// The node holding each shard, by shard index, as placement chose them when the part was
    /// written (INV-3). Empty for parts written before placement existed: their one shard is
    /// on the node that wrote it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub homes: Vec<u64>,
}

/// One version of one key. Buckets without versioning hold a single version with id "null".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    /// "null" for unversioned buckets.
    pub version_id: String,
    /// The stored body this version points to.
    pub object_id: ObjectId,
    /// Total size in bytes.
    pub size: u64,
    /// ETag without quotes: hex MD5, or `md5-of-md5s-N` for multipart.
    pub etag: String,
    /// Last-Modified, Unix milliseconds, stamped by the proposer.
    pub last_modified_ms: u64,
    /// Content-Type as given (or the default).
    pub content_type: String,
    /// Standard headers stored and returned verbatim (content-encoding, content-disposition,
    /// cache-control, expires, content-language), lowercase names.
    pub headers: BTreeMap<String, String>,
    /// `x-amz-meta-*` user metadata, names lowercased without the prefix.
    pub user_meta: BTreeMap<String, String>,
    /// Stored checksums, e.g. "crc32" → base64 value.
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
    /// The parts, in ascending part order; their sizes add up to `size`.
    pub parts: Vec<PartLayout>,
}

impl PartLayout {
    /// A part stored as one shard holding all its bytes (the 1+0 profile) on the node that wrote
    /// it. Writers get their layouts from the data plane; this shape is for tests.
    pub fn single_shard(
        part: u32,
        size: u64,
        block_bytes: u32,
        blake3_hex: String,
        md5_hex: String,
        body: Option<ObjectId>,
    ) -> PartLayout {
        PartLayout {
            part,
            size,
            k: 1,
            m: 0,
            block_bytes,
            shard_blake3: vec![blake3_hex],
            md5: md5_hex,
            body,
            homes: Vec::new(),
        }
    }
}

impl ObjectVersion {
    /// The body whose shard files hold `part`.
    pub fn part_body(&self, part: &PartLayout) -> ObjectId {
        part.body.unwrap_or(self.object_id)
    }

    /// Every body this version references (the version's own id and its parts' ids).
    pub fn bodies(&self) -> Vec<ObjectId> {
        let mut out = vec![self.object_id];
        for p in &self.parts {
            let b = self.part_body(p);
            if !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }
}

/// The versions of one key, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionList {
    /// Newest first.
    pub versions: Vec<ObjectVersion>,
}

impl VersionList {
    /// The version a plain GET answers with.
    pub fn current(&self) -> Option<&ObjectVersion> {
        self.versions.first()
    }
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPart {
    /// Where the part's bytes are (`body` is always set: each part upload mints its own id).
    pub layout: PartLayout,
    /// Upload time, Unix milliseconds.
    pub last_modified_ms: u64,
    /// The part's checksum, base64, if the upload declared an algorithm.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The upload id (32 hex digits).
    pub upload_id: String,
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Initiation time, Unix milliseconds.
    pub initiated_ms: u64,
    /// Content-Type the completed object will carry.
    pub content_type: String,
    /// Standard headers the completed object will carry.
    pub headers: BTreeMap<String, String>,
    /// User metadata the completed object will carry.
    pub user_meta: BTreeMap<String, String>,
    /// Checksum algorithm declared at creation ("crc32", "crc32c", ...), if any.
    #[serde(default)]
    pub checksum_algo: Option<String>,
    /// Parts uploaded so far, by part number.
    pub parts: BTreeMap<u32, UploadPart>,
}

/// What an application key may do in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// List and read objects.
    pub read: bool,
    /// Write and delete objects.
    pub write: bool,
    /// Manage the bucket itself (delete it, its settings).
    pub owner: bool,
}

/// An S3 access key known to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// The access key id.
    pub access_key: String,
    /// The secret.
    pub secret_key: String,
    /// A human name.
    pub name: String,
    /// Root keys see and may do everything.
    pub root: bool,
    /// Per-bucket permissions of a non-root key; it sees only these buckets.
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Creation time, Unix milliseconds.
    #[serde(default)]
    pub created_ms: u64,
}

/// A join token as the cluster remembers it: the hash of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// SHA-256 of the token's secret, 64 lowercase hex digits.
    pub secret_sha256: String,
    /// Minting time, Unix milliseconds.
    pub created_ms: u64,
    /// From this Unix time (milliseconds) on, the token admits nobody.
    pub expires_ms: u64,
    /// The node that used the token, once used.
    #[serde(default)]
    pub used_by: Option<u64>,
    /// When it was used, Unix milliseconds.
    #[serde(default)]
    pub used_ms: Option<u64>,
    /// Where the node that used the token runs: the leader adds it to the membership from
    /// here, whichever member admitted it and whoever leads by then.
    #[serde(default)]
    pub joined: Option<NodeInfo>,
}

/// What the membership records about one node: enough to reach it and to place shards on it.
/// It travels inside membership log entries and snapshots, so it doubles as the address book.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The cluster port address (`host:port`) peers dial.
    pub cluster_addr: String,
    /// Failure domain: zone.
    pub zone: String,
    /// Failure domain: host.
    pub host: String,
    /// Capacity weight for placement, in bytes.
    pub capacity_bytes: u64,
    /// The member this node joined to take the place of (`serve --replaces`): the layout
    /// manager swaps it in for that one at the same cluster size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}/{}", self.cluster_addr, self.zone, self.host)
    }
}

/// Whether `s` is a SHA-256 in the form join token records are keyed by: 64 lowercase hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A metadata change proposed to Raft. Each is small and self-contained: every value the
/// change needs (timestamps, ids) is decided by the proposer so `apply` stays deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a bucket.
    CreateBucket(BucketRecord),
    /// Delete an empty bucket.
    DeleteBucket {
        /// Bucket name.
        name: String,
    },
    /// Make `version` the current version of `bucket/key` (replacing the "null" version in an
    /// unversioned bucket).
    PutObject {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The new version.
        version: ObjectVersion,
    },
    /// `PutObject`, but only if the key's current state is as `expect` says, judged when the
    /// command applies (so two racing conditional PUTs cannot both win).
    PutObjectIf {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The new version.
        version: ObjectVersion,
        /// What the current state must be.
        expect: Expect,
    },
    /// Delete the current version of `bucket/key` (a no-op if there is none, as in S3).
    DeleteObject {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
    /// Add or replace an access key.
    PutAccessKey(AccessKey),
    /// Remove an access key.
    DeleteAccessKey {
        /// The access key id.
        access_key: String,
    },
    /// Set (or with an all-false grant, remove) a key's permissions on a bucket.
    SetGrant {
        /// The access key id.
        access_key: String,
        /// The bucket.
        bucket: String,
        /// The permissions.
        grant: Grant,
    },
    /// Start a multipart upload.
    CreateUpload(Upload),
    /// Record an uploaded part (replacing an earlier upload of the same part number).
    PutUploadPart {
        /// Upload id.
        upload_id: String,
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The part.
        part: UploadPart,
    },
    /// Complete an upload: `version` becomes current; its parts must be parts of the upload
    /// with the same bodies. Parts not used are freed.
    CompleteUpload {
        /// Upload id.
        upload_id: String,
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The new version, assembled by the proposer from the upload's parts.
        version: ObjectVersion,
    },
    /// [`Command::CompleteUpload`] only if the key's current state is as `expect` says
    /// (CompleteMultipartUpload with `If-None-Match: *` or `If-Match`); otherwise refused, and
    /// the upload stays as it was.
    CompleteUploadIf {
        /// Upload id.
        upload_id: String,
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The new version, assembled by the proposer from the upload's parts.
        version: ObjectVersion,
        /// What the current state must be.
        expect: Expect,
    },
    /// Abort an upload and free its parts.
    AbortUpload {
        /// Upload id.
        upload_id: String,
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
    /// Remember a freshly minted join token by its secret's hash. Records that expired by
    /// `created_ms` are dropped in the same apply, so the table stays bounded. Refused with
    /// `TokenInvalid` if the hash is malformed or already known.
    AddJoinToken {
        /// SHA-256 of the token's secret, 64 lowercase hex digits.
        secret_sha256: String,
        /// Expiry, Unix milliseconds.
        expires_ms: u64,
        /// Minting time, Unix milliseconds (also the "now" that pruning judges by).
        created_ms: u64,
    },
    /// Use a join token for `node_id`: refused unless the hash is known, unused and unexpired
    /// at `now_ms`. A used token stays remembered, so a second use is told "used". Refused with
    /// `DuplicateNode` when another used token already admitted this node id or a node at the
    /// same cluster address.
    ConsumeJoinToken {
        /// SHA-256 of the presented secret, 64 lowercase hex digits.
        secret_sha256: String,
        /// The joiner's arrival time, Unix milliseconds, stamped by the proposer.
        now_ms: u64,
        /// The node the token admits.
        node_id: u64,
        /// Where that node runs, recorded with the token so the leader can add it.
        #[serde(default)]
        joined: Option<NodeInfo>,
    },
    /// Store the first data-plane layout (or, in logs from before transitions, a later one):
    /// its version and nodes; drained and removed nodes are kept. Refused with `LayoutStale`
    /// unless its version is the stored one's plus one, and with `TransitionOpen` while a
    /// transition is open (one layout change at a time, INV-7).
    SetLayout(Box<Layout>),
    /// Forget every pending admission (the `joined` of used tokens), so the leader adds no
    /// node from them. `hamster recover` writes it with the new membership: nodes it drops must
    /// not come back as learners from their old admissions.
    ForgetAdmissions,
    /// Open a layout transition to `nodes` as layout `version` (see [`crate::layout`]).
    /// Refused with `TransitionOpen` while another is open, `LayoutStale` unless `version` is
    /// the next one, `NodeTombstoned` if it names a removed node.
    BeginTransition {
        /// The new layout version (the stored one plus one).
        version: u64,
        /// The new layout's nodes.
        nodes: BTreeMap<u64, LayoutNode>,
        /// What the transition does.
        op: LayoutOp,
        /// Who asked.
        asked_by: String,
        /// The proposer's clock, Unix milliseconds.
        now_ms: u64,
    },
    /// Move one part: compare-and-set its layout (refused with `PartMoved` if it changed).
    Rehome(Rehome),
    /// The migration walker's checkpoint for transition `id`, and the stale shards it deleted.
    TransitionCheckpoint {
        /// The transition.
        id: u64,
        /// Where the walk has got (only its walk fields are taken).
        walk: Progress,
        /// Stale shards now deleted on their old homes.
        dropped: Vec<StaleShard>,
    },
    /// Close transition `id` (refused with `NoTransition` if it is not the open one).
    EndTransition {
        /// The transition.
        id: u64,
        /// The proposer's clock, Unix milliseconds.
        now_ms: u64,
    },
    /// Forget stale shards now deleted on their nodes.
    DropStale {
        /// The shards deleted.
        dropped: Vec<StaleShard>,
    },
    /// Forget revisits the walker has dealt with.
    DropRevisits {
        /// Their sequence numbers.
        seqs: Vec<u64>,
    },
    /// Begin scrub pass `pass` (refused with `ScrubStale` unless it is the next one and no
    /// pass runs; see [`crate::scrub`]).
    ScrubBegin {
        /// The pass.
        pass: u64,
        /// The proposer's clock, Unix milliseconds.
        now_ms: u64,
    },
    /// Move scrub pass `pass` from cursor `from` to `to`, adding what was found in between;
    /// `done` ends the pass. Refused with `ScrubStale` unless the pass runs at `from`.
    ScrubStep {
        /// The pass.
        pass: u64,
        /// Where the step began (compare-and-set).
        from: crate::scrub::Cursor,
        /// Where it ended.
        to: crate::scrub::Cursor,
        /// What it found.
        tally: crate::scrub::Tally,
        /// Whether the pass is complete.
        done: bool,
        /// The proposer's clock, Unix milliseconds.
        now_ms: u64,
    },
    /// An operator's switch for the scrubber (pause, resume, a pass now).
    ScrubSet(crate::scrub::ScrubSwitch),
    /// Hold the scrubber off while another sweep runs on `hold.by`; a hold ending at or before
    /// `now_ms` releases that node's hold.
    ScrubHold {
        /// The hold.
        hold: crate::scrub::Hold,
        /// The proposer's clock, Unix milliseconds.
        now_ms: u64,
    },
    /// Remove drained node `node` for good (refused with `NotDrained` unless it is drained).
    Tombstone {
        /// The node.
        node: u64,
        /// Where it listened.
        cluster_addr: String,
        /// The proposer's clock, Unix milliseconds.
        now_ms: u64,
    },
}

/// One Raft log entry: commands proposed together so that many concurrent writes share one
/// log append (group commit). They apply in order, each with its own answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

/// The precondition of a conditional PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// `If-None-Match: *`: the key has no current version.
    Absent,
    /// `If-Match`: the current version's ETag is one of these (`*` matches any existing).
    Etag(Vec<String>),
}

/// Why a command changed nothing. These are answers, not faults: every node reaches the same
/// one for the same command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The bucket does not exist.
    NoSuchBucket,
    /// The bucket exists already.
    BucketAlreadyOwnedByYou,
    /// The bucket still holds objects.
    BucketNotEmpty,
    /// The multipart upload does not exist (never started, completed or aborted).
    NoSuchUpload,
    /// A completion names a part that was not uploaded (or not with that body).
    InvalidPart,
    /// The access key does not exist.
    NoSuchAccessKey,
    /// A conditional write's precondition did not hold.
    PreconditionFailed,
    /// A conditional write expected a key that does not exist.
    NoSuchKey,
    /// No join token with this secret was ever minted (or it expired long ago and was
    /// pruned): treat it as forged.
    TokenInvalid,
    /// The join token has admitted a node already; tokens are single-use.
    TokenUsed,
    /// The join token's lifetime is over.
    TokenExpired,
    /// A layout change was based on a version that is no longer the current one.
    LayoutStale,
    /// A layout transition is open; one layout change at a time.
    TransitionOpen,
    /// The named transition is not the open one (it ended, or another opened).
    NoTransition,
    /// A part changed (overwritten, deleted, completed or moved) since the mover read it.
    PartMoved,
    /// The node is not drained (or is still being drained), so it cannot be removed.
    NotDrained,
    /// The node was removed for good and can never come back under this id.
    NodeTombstoned,
    /// A join would admit a node id, or a cluster address, that an earlier admission holds
    /// already: two members in one place. The token stays unused.
    DuplicateNode,
    /// A transition cannot close yet: parts committed while it was open still wait to be moved.
    RevisitPending,
    /// A write was placed by a layout that no longer holds (a node it chose has left): the
    /// client retries, and the retry places by the current layout.
    PlacedOffLayout,
    /// A scrub step that no longer matches the replicated scrub state (a deposed leader's
    /// step, a pass that ended).
    ScrubStale,
}

impl Refusal {
    /// The S3 error this refusal answers with.
    pub fn s3_code(self) -> crate::s3err::S3ErrorCode {
        use crate::s3err::S3ErrorCode;
        match self {
            Refusal::NoSuchBucket => S3ErrorCode::NoSuchBucket,
            Refusal::BucketAlreadyOwnedByYou => S3ErrorCode::BucketAlreadyOwnedByYou,
            Refusal::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
            Refusal::NoSuchUpload => S3ErrorCode::NoSuchUpload,
            Refusal::InvalidPart => S3ErrorCode::InvalidPart,
            Refusal::NoSuchAccessKey => S3ErrorCode::InvalidAccessKeyId,
            Refusal::PreconditionFailed => S3ErrorCode::PreconditionFailed,
            Refusal::NoSuchKey => S3ErrorCode::NoSuchKey,
            // Join refusals never reach S3; they map somewhere sensible all the same.
            Refusal::TokenInvalid | Refusal::TokenUsed | Refusal::TokenExpired => {
                S3ErrorCode::AccessDenied
            }
            Refusal::LayoutStale
            | Refusal::TransitionOpen
            | Refusal::NoTransition
            | Refusal::NotDrained
            | Refusal::RevisitPending
            | Refusal::ScrubStale => S3ErrorCode::ServiceUnavailable,
            // Retried by every SDK; the shards written are reclaimed by the proposer.
            Refusal::PlacedOffLayout => S3ErrorCode::SlowDown,
            // A part that moved under a copy: the caller reads it again.
            Refusal::PartMoved => S3ErrorCode::ServiceUnavailable,
            Refusal::NodeTombstoned | Refusal::DuplicateNode => S3ErrorCode::AccessDenied,
        }
    }
}

/// The result of applying one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Set when the command was refused; then nothing changed.
    pub refused: Option<Refusal>,
    /// Object bodies no longer referenced after this command; their shard files may be
    /// reclaimed now that the commit is durable.
    pub freed: Vec<ObjectId>,
}

impl Applied {
    fn refused(r: Refusal) -> Self {
        Applied {
            refused: Some(r),
            freed: Vec::new(),
        }
    }
}

/// What `apply` needs from storage. Implemented over an LMDB write transaction in the node and
/// over BTreeMaps in tests, so the same `apply` runs in both.
pub trait MetaStore {
    /// A storage failure (not a refusal): the node must stop applying.
    type Error;
    /// Looks up a bucket.
    fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, Self::Error>;
    /// Stores a bucket.
    fn put_bucket(&mut self, bucket: &BucketRecord) -> Result<(), Self::Error>;
    /// Removes a bucket record.
    fn delete_bucket(&mut self, name: &str) -> Result<(), Self::Error>;
    /// Whether any key exists in the bucket.
    fn bucket_has_keys(&self, name: &str) -> Result<bool, Self::Error>;
    /// The versions of a key.
    fn versions(&self, bucket: &str, key: &str) -> Result<Option<VersionList>, Self::Error>;
    /// Stores the versions of a key.
    fn put_versions(&mut self, bucket: &str, key: &str, v: &VersionList)
        -> Result<(), Self::Error>;
    /// Removes a key entirely.
    fn delete_versions(&mut self, bucket: &str, key: &str) -> Result<(), Self::Error>;
    /// Stores an access key.
    fn put_access_key(&mut self, key: &AccessKey) -> Result<(), Self::Error>;
    /// Looks up an access key.
    fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>, Self::Error>;
    /// Every access key, in id order.
    fn access_keys(&self) -> Result<Vec<AccessKey>, Self::Error>;
    /// Removes an access key.
    fn delete_access_key(&mut self, access_key: &str) -> Result<(), Self::Error>;
    /// Looks up a multipart upload.
    fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Upload>, Self::Error>;
    /// Stores a multipart upload.
    fn put_upload(&mut self, upload: &Upload) -> Result<(), Self::Error>;
    /// Removes a multipart upload.
    fn delete_upload(
        &mut self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), Self::Error>;
    /// Looks up a join token by its secret's hash.
    fn join_token(&self, secret_sha256: &str) -> Result<Option<JoinTokenRecord>, Self::Error>;
    /// Stores a join token record.
    fn put_join_token(&mut self, token: &JoinTokenRecord) -> Result<(), Self::Error>;
    /// Every join token record, in hash order.
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, Self::Error>;
    /// Removes a join token record.
    fn delete_join_token(&mut self, secret_sha256: &str) -> Result<(), Self::Error>;
    /// The stored data-plane layout, if one was ever set.
    fn layout(&self) -> Result<Option<Layout>, Self::Error>;
    /// Stores the data-plane layout.
    fn put_layout(&mut self, layout: &Layout) -> Result<(), Self::Error>;
    /// Lists a shard a committed move unlinked, to be deleted on its node.
    fn add_stale(&mut self, s: &StaleShard) -> Result<(), Self::Error>;
    /// Forgets a stale shard (deleted on its node, or live again there).
    fn drop_stale(&mut self, s: &StaleShard) -> Result<(), Self::Error>;
    /// Forgets every stale shard on `node` (it was removed for good).
    fn drop_stale_of(&mut self, node: u64) -> Result<(), Self::Error>;
    /// Lists a part for the walker to look at again, after every revisit listed so far.
    fn add_revisit(&mut self, r: &Revisit) -> Result<(), Self::Error>;
    /// Forgets revisit `seq`.
    fn drop_revisit(&mut self, seq: u64) -> Result<(), Self::Error>;
    /// Whether any revisit is listed.
    fn has_revisit(&self) -> Result<bool, Self::Error>;
    /// The scrubber's state, if it ever stored one.
    fn scrub(&self) -> Result<Option<crate::scrub::ScrubState>, Self::Error>;
    /// Stores the scrubber's state.
    fn put_scrub(&mut self, state: &crate::scrub::ScrubState) -> Result<(), Self::Error>;
}

/// Why a conditional write's `expect` does not hold for `bucket/key`'s current version, if it
/// does not: `If-None-Match: *` needs no current version, `If-Match` one with a listed ETag
/// (`*` for any), and with no current version at all answers NoSuchKey as S3 does.
fn unmet<S: MetaStore>(
    store: &mut S,
    bucket: &str,
    key: &str,
    expect: &Expect,
) -> Result<Option<Refusal>, S::Error> {
    let current = store.versions(bucket, key)?;
    let current = current.as_ref().and_then(|l| l.current());
    Ok(match (expect, current) {
        (Expect::Absent, None) => None,
        (Expect::Absent, Some(_)) => Some(Refusal::PreconditionFailed),
        (Expect::Etag(_), None) => Some(Refusal::NoSuchKey),
        (Expect::Etag(tags), Some(v)) if tags.iter().any(|t| t == "*" || *t == v.etag) => None,
        (Expect::Etag(_), Some(_)) => Some(Refusal::PreconditionFailed),
    })
}

/// Stores `version` as the key's current version; answers the bodies it no longer needs.
fn put_version<S: MetaStore>(
    store: &mut S,
    bucket: &str,
    key: &str,
    version: &ObjectVersion,
) -> Result<Applied, S::Error> {
    let mut list = store.versions(bucket, key)?.unwrap_or_default();
    let mut freed = Vec::new();
    // Unversioned: the new version replaces any version with the same id.
    let keep = version.bodies();
    list.versions.retain(|v| {
        let same = v.version_id == version.version_id;
        if same {
            freed.extend(v.bodies().into_iter().filter(|b| !keep.contains(b)));
        }
        !same
    });
    list.versions.insert(0, version.clone());
    store.put_versions(bucket, key, &list)?;
    Ok(Applied {
        refused: None,
        freed,
    })
}

/// Judges a version's parts against the layout before it is committed: lists the parts a
/// transition must move again for a revisit, and answers `false` when a part was placed by a
/// layout that is gone and `refuse` asks for that to be refused.
fn follow_layout<S: MetaStore>(
    store: &mut S,
    bucket: &str,
    key: &str,
    version: &ObjectVersion,
    refuse: bool,
) -> Result<bool, S::Error> {
    let layout = store.layout()?;
    for p in &version.parts {
        match crate::layout::placement_check(layout.as_ref(), &p.homes) {
            Placed::Fine => {}
            Placed::Refuse if refuse => return Ok(false),
            Placed::Refuse => {}
            Placed::Revisit => store.add_revisit(&Revisit {
                at: PartAt::Object {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    version_id: version.version_id.clone(),
                },
                part: p.part,
            })?,
        }
    }
    Ok(true)
}

/// The storage key of an upload: `bucket/key/upload_id`. The upload id has a fixed length, so
/// the key is unambiguous, and uploads of one bucket sort by key then upload id (the order
/// ListMultipartUploads answers in).
pub fn upload_storage_key(bucket: &str, key: &str, upload_id: &str) -> String {
    format!("{bucket}/{key}/{upload_id}")
}

/// Applies one committed command. Pure over `store`: the same command on the same state gives
/// the same state and the same answer on every node.
pub fn apply<S: MetaStore>(store: &mut S, cmd: &Command) -> Result<Applied, S::Error> {
    match cmd {
        Command::CreateBucket(b) => {
            if store.bucket(&b.name)?.is_some() {
                return Ok(Applied::refused(Refusal::BucketAlreadyOwnedByYou));
            }
            store.put_bucket(b)?;
            Ok(Applied::default())
        }
        Command::DeleteBucket { name } => {
            if store.bucket(name)?.is_none() {
                return Ok(Applied::refused(Refusal::NoSuchBucket));
            }
            if store.bucket_has_keys(name)? {
                return Ok(Applied::refused(Refusal::BucketNotEmpty));
            }
            store.delete_bucket(name)?;
            // Grants die with the bucket: a later bucket of the same name starts unshared.
            for mut k in store.access_keys()? {
                if k.grants.remove(name).is_some() {
                    store.put_access_key(&k)?;
                }
            }
            Ok(Applied::default())
        }
        Command::PutObject {
            bucket,
            key,
            version,
        } => {
            if store.bucket(bucket)?.is_none() {
                // The bucket was deleted between the proposer's check and the commit; the
                // proposer reclaims the shards it wrote.
                return Ok(Applied::refused(Refusal::NoSuchBucket));
            }
            if !follow_layout(store, bucket, key, version, true)? {
                return Ok(Applied::refused(Refusal::PlacedOffLayout));
            }
            put_version(store, bucket, key, version)
        }
        Command::PutObjectIf {
            bucket,
            key,
            version,
            expect,
        } => {
            if let Some(refusal) = unmet(store, bucket, key, expect)? {
                return Ok(Applied::refused(refusal));
            }
            let put = Command::PutObject {
                bucket: bucket.clone(),
                key: key.clone(),
                version: version.clone(),
            };
            apply(store, &put)
        }
        Command::DeleteObject { bucket, key } => {
            if store.bucket(bucket)?.is_none() {
                return Ok(Applied::refused(Refusal::NoSuchBucket));
            }
            let Some(mut list) = store.versions(bucket, key)? else {
                return Ok(Applied::default());
            };
            let freed = if list.versions.is_empty() {
                Vec::new()
            } else {
                list.versions.remove(0).bodies()
            };
            if list.versions.is_empty() {
                store.delete_versions(bucket, key)?;
            } else {
                store.put_versions(bucket, key, &list)?;
            }
            Ok(Applied {
                refused: None,
                freed,
            })
        }
        Command::PutAccessKey(k) => {
            store.put_access_key(k)?;
            Ok(Applied::default())
        }
        Command::DeleteAccessKey { access_key } => {
            if store.access_key(access_key)?.is_none() {
                return Ok(Applied::refused(Refusal::NoSuchAccessKey));
            }
            store.delete_access_key(access_key)?;
            Ok(Applied::default())
        }
        Command::SetGrant {
            access_key,
            bucket,
            grant,
        } => {
            let Some(mut k) = store.access_key(access_key)? else {
                return Ok(Applied::refused(Refusal::NoSuchAccessKey));
            };
            if *grant == Grant::default() {
                k.grants.remove(bucket);
            } else {
                k.grants.insert(bucket.clone(), *grant);
            }
            store.put_access_key(&k)?;
            Ok(Applied::default())
        }
        Command::CreateUpload(u) => {
            if store.bucket(&u.bucket)?.is_none() {
                return Ok(Applied::refused(Refusal::NoSuchBucket));
            }
            store.put_upload(u)?;
            Ok(Applied::default())
        }
        Command::PutUploadPart {
            upload_id,
            bucket,
            key,
            part,
        } => {
            let Some(mut u) = store.upload(bucket, key, upload_id)? else {
                // The proposer wrote the part's shards; it reclaims them.
                return Ok(Applied::refused(Refusal::NoSuchUpload));
            };
            match crate::layout::placement_check(store.layout()?.as_ref(), &part.layout.homes) {
                Placed::Fine => {}
                Placed::Refuse => return Ok(Applied::refused(Refusal::PlacedOffLayout)),
                Placed::Revisit => store.add_revisit(&Revisit {
                    at: PartAt::Upload {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        upload_id: upload_id.clone(),
                    },
                    part: part.layout.part,
                })?,
            }
            let mut freed = Vec::new();
            if let Some(old) = u.parts.insert(part.layout.part, part.clone()) {
                let (old_body, new_body) = (old.layout.body, part.layout.body);
                if let Some(b) = old_body.filter(|b| Some(*b) != new_body) {
                    freed.push(b);
                }
            }
            store.put_upload(&u)?;
            Ok(Applied {
                refused: None,
                freed,
            })
        }
        Command::CompleteUpload {
            upload_id,
            bucket,
            key,
            version,
        } => {
            let Some(u) = store.upload(bucket, key, upload_id)? else {
                return Ok(Applied::refused(Refusal::NoSuchUpload));
            };
            let mut used = Vec::new();
            let mut version = version.clone();
            for p in &mut version.parts {
                let uploaded = u.parts.get(&p.part);
                if uploaded.map(|x| x.layout.body) != Some(p.body) || p.body.is_none() {
                    return Ok(Applied::refused(Refusal::InvalidPart));
                }
                // The homes are the stored ones: a layout transition may have moved a shard
                // of the part since the proposer read the upload.
                if let Some(x) = uploaded {
                    p.homes = x.layout.homes.clone();
                }
                used.push(p.body);
            }
            let mut unused: Vec<ObjectId> = u
                .parts
                .values()
                .filter_map(|p| p.layout.body)
                .filter(|b| !used.contains(&Some(*b)))
                .collect();
            if store.bucket(bucket)?.is_none() {
                return Ok(Applied::refused(Refusal::NoSuchBucket));
            }
            // The parts were committed (and walked) as upload parts already: a part a
            // transition could not move must not make the upload impossible to complete.
            follow_layout(store, bucket, key, &version, false)?;
            let mut applied = put_version(store, bucket, key, &version)?;
            store.delete_upload(bucket, key, upload_id)?;
            applied.freed.append(&mut unused);
            Ok(applied)
        }
        Command::CompleteUploadIf {
            upload_id,
            bucket,
            key,
            version,
            expect,
        } => {
            if store.upload(bucket, key, upload_id)?.is_none() {
                return Ok(Applied::refused(Refusal::NoSuchUpload));
            }
            if let Some(refusal) = unmet(store, bucket, key, expect)? {
                return Ok(Applied::refused(refusal));
            }
            let complete = Command::CompleteUpload {
                upload_id: upload_id.clone(),
                bucket: bucket.clone(),
                key: key.clone(),
                version: version.clone(),
            };
            apply(store, &complete)
        }
        Command::AbortUpload {
            upload_id,
            bucket,
            key,
        } => {
            let Some(u) = store.upload(bucket, key, upload_id)? else {
                return Ok(Applied::refused(Refusal::NoSuchUpload));
            };
            store.delete_upload(bucket, key, upload_id)?;
            Ok(Applied {
                refused: None,
                freed: u.parts.values().filter_map(|p| p.layout.body).collect(),
            })
        }
        Command::AddJoinToken {
            secret_sha256,
            expires_ms,
            created_ms,
        } => {
            if !is_sha256_hex(secret_sha256) || store.join_token(secret_sha256)?.is_some() {
                return Ok(Applied::refused(Refusal::TokenInvalid));
            }
            for old in store.join_tokens()? {
                if old.expires_ms <= *created_ms {
                    store.delete_join_token(&old.secret_sha256)?;
                }
            }
            store.put_join_token(&JoinTokenRecord {
                secret_sha256: secret_sha256.clone(),
                created_ms: *created_ms,
                expires_ms: *expires_ms,
                used_by: None,
                used_ms: None,
                joined: None,
            })?;
            Ok(Applied::default())
        }
        Command::ConsumeJoinToken {
            secret_sha256,
            now_ms,
            node_id,
            joined,
        } => {
            let Some(mut t) = store.join_token(secret_sha256)? else {
                return Ok(Applied::refused(Refusal::TokenInvalid));
            };
            if t.used_by.is_some() {
                return Ok(Applied::refused(Refusal::TokenUsed));
            }
            if *now_ms >= t.expires_ms {
                return Ok(Applied::refused(Refusal::TokenExpired));
            }
            if crate::layout::is_tombstoned(store.layout()?.as_ref(), *node_id) {
                return Ok(Applied::refused(Refusal::NodeTombstoned));
            }
            // Judged here, not only by the admitting member: two joins admitted through two
            // members at once both reach this apply, in one order on every node.
            for other in store.join_tokens()? {
                let Some(held) = &other.joined else { continue };
                let same_addr = joined.as_ref().is_some_and(|j| {
                    crate::cluster_addr::clash(&j.cluster_addr, &held.cluster_addr)
                });
                if other.used_by == Some(*node_id) || same_addr {
                    return Ok(Applied::refused(Refusal::DuplicateNode));
                }
            }
            t.used_by = Some(*node_id);
            t.used_ms = Some(*now_ms);
            t.joined = joined.clone();
            store.put_join_token(&t)?;
            Ok(Applied::default())
        }
        Command::ForgetAdmissions => {
            for mut t in store.join_tokens()? {
                if t.joined.take().is_some() {
                    store.put_join_token(&t)?;
                }
            }
            Ok(Applied::default())
        }
        Command::SetLayout(layout) => {
            let mut stored = store.layout()?.unwrap_or_default();
            if layout.version != stored.version + 1 {
                return Ok(Applied::refused(Refusal::LayoutStale));
            }
            if stored.transition.is_some() {
                return Ok(Applied::refused(Refusal::TransitionOpen));
            }
            stored.version = layout.version;
            stored.nodes = layout.nodes.clone();
            store.put_layout(&stored)?;
            Ok(Applied::default())
        }
        Command::BeginTransition {
            version,
            nodes,
            op,
            asked_by,
            now_ms,
        } => Ok(answer(crate::layout::begin(
            store, *version, nodes, op, asked_by, *now_ms,
        )?)),
        Command::Rehome(r) => {
            let done = crate::layout::rehome(store, r)?;
            Ok(Applied {
                refused: done.refused,
                freed: done.freed.into_iter().collect(),
            })
        }
        Command::TransitionCheckpoint { id, walk, dropped } => Ok(answer(
            crate::layout::checkpoint(store, *id, walk, dropped)?,
        )),
        Command::DropStale { dropped } => {
            crate::layout::drop_stale(store, dropped)?;
            Ok(Applied::default())
        }
        Command::DropRevisits { seqs } => {
            crate::layout::drop_revisits(store, seqs)?;
            Ok(Applied::default())
        }
        Command::EndTransition { id, now_ms } => {
            Ok(answer(crate::layout::end(store, *id, *now_ms)?))
        }
        Command::ScrubBegin { pass, now_ms } => {
            Ok(answer(crate::scrub::begin(store, *pass, *now_ms)?))
        }
        Command::ScrubStep {
            pass,
            from,
            to,
            tally,
            done,
            now_ms,
        } => Ok(answer(crate::scrub::step(
            store, *pass, from, to, tally, *done, *now_ms,
        )?)),
        Command::ScrubSet(switch) => {
            crate::scrub::set(store, *switch)?;
            Ok(Applied::default())
        }
        Command::ScrubHold { hold, now_ms } => {
            crate::scrub::hold(store, hold, *now_ms)?;
            Ok(Applied::default())
        }
        Command::Tombstone {
            node,
            cluster_addr,
            now_ms,
        } => Ok(answer(crate::layout::tombstone(
            store,
            *node,
            cluster_addr,
            *now_ms,
        )?)),
    }
}

/// An answer that changed nothing if `refused`, and freed nothing either way.
fn answer(refused: Option<Refusal>) -> Applied {
    Applied {
        refused,
        freed: Vec::new(),
    }
}

/// An in-memory `MetaStore` over BTreeMaps: the model the tests check `apply` against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemStore {
    /// Buckets by name.
    pub buckets: BTreeMap<String, BucketRecord>,
    /// Versions by (bucket, key).
    pub objects: BTreeMap<(String, String), VersionList>,
    /// Access keys by id.
    pub keys: BTreeMap<String, AccessKey>,
    /// Multipart uploads by `upload_storage_key`.
    pub uploads: BTreeMap<String, Upload>,
    /// Join tokens by secret hash.
    #[serde(default)]
    pub tokens: BTreeMap<String, JoinTokenRecord>,
    /// The data-plane layout.
    pub layout: Option<Layout>,
    /// Stale shards awaiting their delete.
    #[serde(default)]
    pub stale: std::collections::BTreeSet<StaleShard>,
    /// Revisits by sequence number.
    #[serde(default)]
    pub revisits: BTreeMap<u64, Revisit>,
    /// The scrubber's state.
    #[serde(default)]
    pub scrub: Option<crate::scrub::ScrubState>,
}

impl MetaStore for MemStore {
    type Error = std::convert::Infallible;
    fn scrub(&self) -> Result<Option<crate::scrub::ScrubState>, Self::Error> {
        Ok(self.scrub.clone())
    }
    fn put_scrub(&mut self, state: &crate::scrub::ScrubState) -> Result<(), Self::Error> {
        self.scrub = Some(state.clone());
        Ok(())
    }
    fn layout(&self) -> Result<Option<Layout>, Self::Error> {
        Ok(self.layout.clone())
    }
    fn put_layout(&mut self, layout: &Layout) -> Result<(), Self::Error> {
        self.layout = Some(layout.clone());
        Ok(())
    }
    fn add_stale(&mut self, s: &StaleShard) -> Result<(), Self::Error> {
        self.stale.insert(*s);
        Ok(())
    }
    fn drop_stale(&mut self, s: &StaleShard) -> Result<(), Self::Error> {
        self.stale.remove(s);
        Ok(())
    }
    fn drop_stale_of(&mut self, node: u64) -> Result<(), Self::Error> {
        self.stale.retain(|s| s.node != node);
        Ok(())
    }
    fn add_revisit(&mut self, r: &Revisit) -> Result<(), Self::Error> {
        let seq = self.revisits.keys().next_back().map_or(1, |s| s + 1);
        self.revisits.insert(seq, r.clone());
        Ok(())
    }
    fn drop_revisit(&mut self, seq: u64) -> Result<(), Self::Error> {
        self.revisits.remove(&seq);
        Ok(())
    }
    fn has_revisit(&self) -> Result<bool, Self::Error> {
        Ok(!self.revisits.is_empty())
    }
    fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, Self::Error> {
        Ok(self.buckets.get(name).cloned())
    }
    fn put_bucket(&mut self, bucket: &BucketRecord) -> Result<(), Self::Error> {
        self.buckets.insert(bucket.name.clone(), bucket.clone());
        Ok(())
    }
    fn delete_bucket(&mut self, name: &str) -> Result<(), Self::Error> {
        self.buckets.remove(name);
        Ok(())
    }
    fn bucket_has_keys(&self, name: &str) -> Result<bool, Self::Error> {
        let from = (name.to_string(), String::new());
        Ok(self
            .objects
            .range(from..)
            .next()
            .is_some_and(|((b, _), _)| b == name))
    }
    fn versions(&self, bucket: &str, key: &str) -> Result<Option<VersionList>, Self::Error> {
        Ok(self
            .objects
            .get(&(bucket.to_string(), key.to_string()))
            .cloned())
    }
    fn put_versions(
        &mut self,
        bucket: &str,
        key: &str,
        v: &VersionList,
    ) -> Result<(), Self::Error> {
        self.objects
            .insert((bucket.to_string(), key.to_string()), v.clone());
        Ok(())
    }
    fn delete_versions(&mut self, bucket: &str, key: &str) -> Result<(), Self::Error> {
        self.objects.remove(&(bucket.to_string(), key.to_string()));
        Ok(())
    }
    fn put_access_key(&mut self, key: &AccessKey) -> Result<(), Self::Error> {
        self.keys.insert(key.access_key.clone(), key.clone());
        Ok(())
    }
    fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>, Self::Error> {
        Ok(self.keys.get(access_key).cloned())
    }
    fn access_keys(&self) -> Result<Vec<AccessKey>, Self::Error> {
        Ok(self.keys.values().cloned().collect())
    }
    fn delete_access_key(&mut self, access_key: &str) -> Result<(), Self::Error> {
        self.keys.remove(access_key);
        Ok(())
    }
    fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Option<Upload>, Self::Error> {
        Ok(self
            .uploads
            .get(&upload_storage_key(bucket, key, id))
            .cloned())
    }
    fn put_upload(&mut self, u: &Upload) -> Result<(), Self::Error> {
        self.uploads.insert(
            upload_storage_key(&u.bucket, &u.key, &u.upload_id),
            u.clone(),
        );
        Ok(())
    }
    fn delete_upload(&mut self, bucket: &str, key: &str, id: &str) -> Result<(), Self::Error> {
        self.uploads.remove(&upload_storage_key(bucket, key, id));
        Ok(())
    }
    fn join_token(&self, secret_sha256: &str) -> Result<Option<JoinTokenRecord>, Self::Error> {
        Ok(self.tokens.get(secret_sha256).cloned())
    }
    fn put_join_token(&mut self, token: &JoinTokenRecord) -> Result<(), Self::Error> {
        self.tokens
            .insert(token.secret_sha256.clone(), token.clone());
        Ok(())
    }
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, Self::Error> {
        Ok(self.tokens.values().cloned().collect())
    }
    fn delete_join_token(&mut self, secret_sha256: &str) -> Result<(), Self::Error> {
        self.tokens.remove(secret_sha256);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: u8) -> ObjectVersion {
        ObjectVersion {
            version_id: "null".into(),
            object_id: ObjectId([id; 16]),
            size: 3,
            etag: "abc".into(),
            last_modified_ms: 1,
            content_type: "binary/octet-stream".into(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            parts: vec![],
        }
    }

    fn run(s: &mut MemStore, c: Command) -> Applied {
        let Ok(a) = apply(s, &c);
        a
    }

    #[test]
    fn overwrite_frees_the_old_body_and_delete_frees_the_last() {
        let mut s = MemStore::default();
        let b = BucketRecord {
            name: "b".into(),
            created_ms: 1,
            region: "us-east-1".into(),
        };
        assert_eq!(
            run(&mut s, Command::CreateBucket(b.clone())),
            Applied::default()
        );
        assert_eq!(
            run(&mut s, Command::CreateBucket(b)).refused,
            Some(Refusal::BucketAlreadyOwnedByYou)
        );
        let put = |id| Command::PutObject {
            bucket: "b".into(),
            key: "k".into(),
            version: version(id),
        };
        assert!(run(&mut s, put(1)).freed.is_empty());
        assert_eq!(run(&mut s, put(2)).freed, vec![ObjectId([1; 16])]);
        assert_eq!(s.objects.len(), 1);
        assert_eq!(
            run(&mut s, Command::DeleteBucket { name: "b".into() }).refused,
            Some(Refusal::BucketNotEmpty)
        );
        let del = Command::DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
        };
        assert_eq!(run(&mut s, del.clone()).freed, vec![ObjectId([2; 16])]);
        assert_eq!(run(&mut s, del), Applied::default());
        assert!(s.objects.is_empty());
        assert_eq!(
            run(&mut s, Command::DeleteBucket { name: "b".into() }),
            Applied::default()
        );
        assert!(s.buckets.is_empty());
    }

    #[test]
    fn put_into_missing_bucket_is_refused_and_changes_nothing() {
        let mut s = MemStore::default();
        let a = run(
            &mut s,
            Command::PutObject {
                bucket: "x".into(),
                key: "k".into(),
                version: version(1),
            },
        );
        assert_eq!(a.refused, Some(Refusal::NoSuchBucket));
        assert_eq!(s, MemStore::default());
    }

    #[test]
    fn layouts_change_one_version_at_a_time() {
        let mut s = MemStore::default();
        let layout = |version| crate::placement::Layout {
            version,
            nodes: crate::placement::layout_nodes([(7, "z", "h", 1u64)]),
            ..crate::placement::Layout::default()
        };
        assert_eq!(
            run(&mut s, Command::SetLayout(Box::new(layout(2)))).refused,
            Some(Refusal::LayoutStale)
        );
        assert_eq!(s.layout, None);
        assert_eq!(
            run(&mut s, Command::SetLayout(Box::new(layout(1)))).refused,
            None
        );
        assert_eq!(
            run(&mut s, Command::SetLayout(Box::new(layout(1)))).refused,
            Some(Refusal::LayoutStale)
        );
        assert_eq!(
            run(&mut s, Command::SetLayout(Box::new(layout(2)))).refused,
            None
        );
        assert_eq!(s.layout, Some(layout(2)));
    }

    fn upload_part(n: u32, body: u8) -> UploadPart {
        UploadPart {
            layout: PartLayout {
                part: n,
                size: 5,
                k: 1,
                m: 0,
                block_bytes: 4096,
                shard_blake3: vec![],
                md5: format!("md5-{n}"),
                body: Some(ObjectId([body; 16])),
                homes: Vec::new(),
            },
            last_modified_ms: 1,
            checksum: None,
        }
    }

    /// A store with bucket `b` and an empty upload `id` for key `k`.
    fn store_with_upload(id: &str) -> MemStore {
        let mut s = MemStore::default();
        run(
            &mut s,
            Command::CreateBucket(BucketRecord {
                name: "b".into(),
                created_ms: 1,
                region: String::new(),
            }),
        );
        let upload = Upload {
            upload_id: id.to_string(),
            bucket: "b".into(),
            key: "k".into(),
            initiated_ms: 1,
            content_type: "x/y".into(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksum_algo: None,
            parts: BTreeMap::new(),
        };
        assert_eq!(
            run(&mut s, Command::CreateUpload(upload)),
            Applied::default()
        );
        s
    }

    #[test]
    fn multipart_replaces_parts_completes_and_frees_what_is_unused() {
        let id = "0".repeat(32);
        let mut s = store_with_upload(&id);
        let put = |n, body| Command::PutUploadPart {
            upload_id: id.clone(),
            bucket: "b".into(),
            key: "k".into(),
            part: upload_part(n, body),
        };
        assert!(run(&mut s, put(1, 10)).freed.is_empty());
        assert_eq!(run(&mut s, put(1, 11)).freed, vec![ObjectId([10; 16])]);
        assert!(run(&mut s, put(2, 12)).freed.is_empty());
        let mut v = version(99);
        v.parts = vec![upload_part(2, 99).layout];
        let complete = |v: ObjectVersion| Command::CompleteUpload {
            upload_id: id.clone(),
            bucket: "b".into(),
            key: "k".into(),
            version: v,
        };
        // A part whose body differs from what was uploaded is refused and changes nothing.
        assert_eq!(
            run(&mut s, complete(v.clone())).refused,
            Some(Refusal::InvalidPart)
        );
        v.parts = vec![upload_part(1, 11).layout];
        let a = run(&mut s, complete(v.clone()));
        assert_eq!(a.refused, None);
        assert_eq!(a.freed, vec![ObjectId([12; 16])]);
        assert!(s.uploads.is_empty());
        assert_eq!(
            run(&mut s, complete(v)).refused,
            Some(Refusal::NoSuchUpload)
        );
        // Deleting the object frees the version id and the part body it points to.
        let del = run(
            &mut s,
            Command::DeleteObject {
                bucket: "b".into(),
                key: "k".into(),
            },
        );
        assert_eq!(del.freed, vec![ObjectId([99; 16]), ObjectId([11; 16])]);
    }

    /// A conditional completion is judged against the key's current version when it applies;
    /// a refused one leaves the upload in place for a retry or an abort.
    #[test]
    fn conditional_completion_is_judged_at_apply_time_and_keeps_the_upload() {
        let id = "1".repeat(32);
        let mut s = store_with_upload(&id);
        run(
            &mut s,
            Command::PutUploadPart {
                upload_id: id.clone(),
                bucket: "b".into(),
                key: "k".into(),
                part: upload_part(1, 20),
            },
        );
        let mut v = version(21);
        v.parts = vec![upload_part(1, 20).layout];
        let complete_if = |expect| Command::CompleteUploadIf {
            upload_id: id.clone(),
            bucket: "b".into(),
            key: "k".into(),
            version: v.clone(),
            expect,
        };
        // No object yet: If-Match cannot hold.
        let a = run(&mut s, complete_if(Expect::Etag(vec!["*".into()])));
        assert_eq!(a.refused, Some(Refusal::NoSuchKey));
        let existing = version(30);
        let etag = existing.etag.clone();
        run(
            &mut s,
            Command::PutObject {
                bucket: "b".into(),
                key: "k".into(),
                version: existing,
            },
        );
        let a = run(&mut s, complete_if(Expect::Absent));
        assert_eq!(a.refused, Some(Refusal::PreconditionFailed));
        let a = run(&mut s, complete_if(Expect::Etag(vec!["other".into()])));
        assert_eq!(a.refused, Some(Refusal::PreconditionFailed));
        assert_eq!(s.uploads.len(), 1, "a refused completion keeps the upload");
        let a = run(&mut s, complete_if(Expect::Etag(vec![etag])));
        assert_eq!(a.refused, None);
        assert_eq!(a.freed, vec![ObjectId([30; 16])]);
        assert!(s.uploads.is_empty());
        assert_eq!(
            run(&mut s, complete_if(Expect::Absent)).refused,
            Some(Refusal::NoSuchUpload)
        );
    }

    #[test]
    fn conditional_put_is_judged_at_apply_time() {
        let mut s = MemStore::default();
        run(
            &mut s,
            Command::CreateBucket(BucketRecord {
                name: "b".into(),
                created_ms: 1,
                region: String::new(),
            }),
        );
        let put_if = |id, expect| Command::PutObjectIf {
            bucket: "b".into(),
            key: "k".into(),
            version: version(id),
            expect,
        };
        assert_eq!(
            run(&mut s, put_if(1, Expect::Etag(vec!["abc".into()]))).refused,
            Some(Refusal::NoSuchKey)
        );
        assert_eq!(run(&mut s, put_if(1, Expect::Absent)).refused, None);
        // The second of two racing "create only" writes loses, and frees nothing.
        let second = run(&mut s, put_if(2, Expect::Absent));
        assert_eq!(second.refused, Some(Refusal::PreconditionFailed));
        assert_eq!(
            s.objects
                .values()
                .next()
                .unwrap()
                .current()
                .unwrap()
                .object_id,
            ObjectId([1; 16])
        );
        assert_eq!(
            run(&mut s, put_if(3, Expect::Etag(vec!["nope".into()]))).refused,
            Some(Refusal::PreconditionFailed)
        );
        let ok = run(&mut s, put_if(3, Expect::Etag(vec!["abc".into()])));
        assert_eq!(
            ok,
            Applied {
                refused: None,
                freed: vec![ObjectId([1; 16])]
            }
        );
    }

    fn add_token(hash: &str, created_ms: u64, expires_ms: u64) -> Command {
        Command::AddJoinToken {
            secret_sha256: hash.into(),
            expires_ms,
            created_ms,
        }
    }

    fn consume_token(hash: &str, now_ms: u64, node_id: u64) -> Command {
        Command::ConsumeJoinToken {
            secret_sha256: hash.into(),
            now_ms,
            node_id,
            joined: Some(NodeInfo {
                cluster_addr: format!("127.0.0.1:{}", 9400 + node_id),
                ..NodeInfo::default()
            }),
        }
    }

    #[test]
    fn join_token_admits_once_then_says_used() {
        let mut s = MemStore::default();
        let h = "a".repeat(64);
        assert_eq!(run(&mut s, add_token(&h, 1_000, 5_000)), Applied::default());
        assert_eq!(run(&mut s, consume_token(&h, 2_000, 7)), Applied::default());
        let t = &s.tokens[&h];
        assert_eq!((t.used_by, t.used_ms), (Some(7), Some(2_000)));
        assert_eq!(
            t.joined.as_ref().map(|n| n.cluster_addr.as_str()),
            Some("127.0.0.1:9407")
        );
        // A second use, by anyone, is "used" and changes nothing.
        let before = s.clone();
        for node in [7, 8] {
            assert_eq!(
                run(&mut s, consume_token(&h, 3_000, node)).refused,
                Some(Refusal::TokenUsed)
            );
        }
        assert_eq!(s, before);
    }

    #[test]
    fn join_token_refusals() {
        let mut s = MemStore::default();
        let h = "b".repeat(64);
        run(&mut s, add_token(&h, 1_000, 5_000));
        // Never minted: forged.
        assert_eq!(
            run(&mut s, consume_token(&"c".repeat(64), 2_000, 1)).refused,
            Some(Refusal::TokenInvalid)
        );
        // Expiry is judged at the proposer's stamp, inclusive of the expiry instant.
        assert_eq!(
            run(&mut s, consume_token(&h, 5_000, 1)).refused,
            Some(Refusal::TokenExpired)
        );
        assert_eq!(s.tokens[&h].used_by, None);
        // The same hash cannot be minted twice, and malformed hashes are never stored.
        assert_eq!(
            run(&mut s, add_token(&h, 1_500, 9_000)).refused,
            Some(Refusal::TokenInvalid)
        );
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
            assert_eq!(
                run(&mut s, add_token(bad, 1_500, 9_000)).refused,
                Some(Refusal::TokenInvalid),
                "{bad:?}"
            );
        }
        assert_eq!(s.tokens.len(), 1);
    }

    #[test]
    fn adding_a_token_prunes_expired_records() {
        let mut s = MemStore::default();
        let (h1, h2, h3, h4) = (
            "1".repeat(64),
            "2".repeat(64),
            "3".repeat(64),
            "4".repeat(64),
        );
        run(&mut s, add_token(&h1, 0, 1_000));
        run(&mut s, add_token(&h2, 0, 10_000));
        run(&mut s, add_token(&h3, 0, 2_000));
        run(&mut s, consume_token(&h3, 500, 9));
        // Used but unexpired records stay, so a replay within the lifetime says "used".
        run(&mut s, add_token(&h4, 1_000, 3_000));
        assert_eq!(
            s.tokens.keys().cloned().collect::<Vec<_>>(),
            vec![h2.clone(), h3.clone(), h4.clone()]
        );
        assert_eq!(
            run(&mut s, consume_token(&h3, 1_500, 10)).refused,
            Some(Refusal::TokenUsed)
        );
        run(&mut s, add_token(&"5".repeat(64), 3_000, 4_000));
        assert_eq!(
            s.tokens.keys().cloned().collect::<Vec<_>>(),
            vec![h2, "5".repeat(64)]
        );
    }

    fn consume_token_at(hash: &str, node_id: u64, cluster_addr: &str) -> Command {
        Command::ConsumeJoinToken {
            secret_sha256: hash.into(),
            now_ms: 2_000,
            node_id,
            joined: Some(NodeInfo {
                cluster_addr: cluster_addr.into(),
                ..NodeInfo::default()
            }),
        }
    }

    /// Two joins admitted at once through two members both reach apply: the second one that
    /// claims an admitted node's cluster address or node id is refused, and its token stays
    /// unused so a corrected joiner can still use it.
    #[test]
    fn a_join_claiming_an_admitted_address_or_id_is_refused_and_keeps_its_token() {
        let mut s = MemStore::default();
        let (h1, h2, h3) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
        for h in [&h1, &h2, &h3] {
            run(&mut s, add_token(h, 1_000, 5_000));
        }
        assert_eq!(
            run(&mut s, consume_token_at(&h1, 7, "127.0.0.1:9407")),
            Applied::default()
        );
        let before = s.clone();
        for (id, addr) in [
            (8, "127.0.0.1:9407"),
            (8, "localhost:9407"),
            (7, "127.0.0.1:9408"),
        ] {
            assert_eq!(
                run(&mut s, consume_token_at(&h2, id, addr)).refused,
                Some(Refusal::DuplicateNode),
                "node {id} at {addr}"
            );
        }
        assert_eq!(s, before);
        assert_eq!(s.tokens[&h2].used_by, None);
        // The same token then admits a node with its own id and address.
        assert_eq!(
            run(&mut s, consume_token_at(&h2, 8, "127.0.0.1:9408")),
            Applied::default()
        );
        assert_eq!(s.tokens[&h2].used_by, Some(8));
        // A replay of a used token is still told "used", not "duplicate".
        assert_eq!(
            run(&mut s, consume_token_at(&h1, 7, "127.0.0.1:9407")).refused,
            Some(Refusal::TokenUsed)
        );
        // Once admissions are forgotten (`hamster recover`), their addresses are free again.
        run(&mut s, Command::ForgetAdmissions);
        assert_eq!(
            run(&mut s, consume_token_at(&h3, 9, "127.0.0.1:9407")),
            Applied::default()
        );
    }

    #[test]
    fn object_id_hex_round_trip() {
        let id = ObjectId([0xab; 16]);
        assert_eq!(ObjectId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ObjectId::from_hex("zz"), None);
        let j = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ObjectId>(&j).unwrap(), id);
    }
}
