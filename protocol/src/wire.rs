//! The cluster port's wire: the ALPN names that split the one port into protocols, the
//! length-prefixed frame that every protocol on it uses, and the control protocol's messages.
//!
//! Versioning: the ALPN name carries the major version (`hamster-control/1`); a change that an
//! older peer could not understand gets a new ALPN name. Within one ALPN version, messages only
//! grow additively: new fields are `Option` (absent decodes as `None`) and unknown fields are
//! ignored, so a newer CLI can talk to an older node and the reverse.
//!
//! Everything here is pure: frames are built and split on byte slices, so the network shell in
//! `hamster-actors` and the simulation's in-memory link share the exact same encoding.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::meta::{AccessKey, Grant};

/// ALPN name of the control protocol (the CLI asking its node for status, drain, …).
pub const ALPN_CONTROL: &[u8] = b"hamster-control/1";
/// ALPN name of Raft RPC between nodes.
pub const ALPN_RAFT: &[u8] = b"hamster-raft/1";
/// ALPN name of shard transfer between nodes.
pub const ALPN_SHARD: &[u8] = b"hamster-shard/1";
/// ALPN name of the join handshake a new node runs against the cluster.
pub const ALPN_JOIN: &[u8] = b"hamster-join/1";

/// Most bytes a join request may take: a token, a CSR and a few names fit in a few KiB. The
/// join protocol is the one reachable without a certificate, so it reads less than a frame.
pub const JOIN_REQUEST_BYTES_MAX: usize = 64 * 1024;

/// Bytes in a frame header: the payload length as a big-endian `u32`.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Largest payload a frame may carry. Shard transfer sends blocks of at most a few MiB, so
/// 16 MiB leaves room while still bounding what one peer can make us buffer.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What went wrong while building or reading a frame or the message inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload is larger than [`FRAME_BYTES_MAX`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit; send smaller messages")]
    FrameTooLarge {
        /// The payload length that was announced or offered.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The payload is not the JSON message that was expected.
    #[error("cannot decode message: {0}; are both ends running the same hamster version?")]
    Decode(String),
    /// The message could not be turned into JSON.
    #[error("cannot encode message: {0}; this is a bug, please report it")]
    Encode(String),
}

/// A request the CLI (or an operator tool) sends to a node over [`ALPN_CONTROL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Ask the node for its view of the cluster, with every member asked for its own state.
    Status,
    /// Ask the node for its own state only (what [`ControlRequest::Status`] asks each member).
    NodeStatus,
    /// Mint a new S3 access key with this (unique) name and no grants.
    CreateKey {
        /// The key's human name.
        name: String,
    },
    /// List every access key (never with secrets).
    ListKeys,
    /// Remove an access key, named by its name or its access key id.
    DeleteKey {
        /// The key's name or access key id.
        name: String,
    },
    /// Add the set permissions of `grant` to a key's permissions on a bucket.
    AllowKey {
        /// The key's name or access key id.
        name: String,
        /// The bucket (must exist).
        bucket: String,
        /// The permissions to add.
        grant: Grant,
    },
    /// Take the set permissions of `grant` away from a key on a bucket.
    DenyKey {
        /// The key's name or access key id.
        name: String,
        /// The bucket.
        bucket: String,
        /// The permissions to remove.
        grant: Grant,
    },
    /// Mint a single-use join token that stays valid for `ttl_ms` milliseconds.
    MintJoinToken {
        /// The token's lifetime, milliseconds (the node enforces the allowed range).
        ttl_ms: u64,
    },
    /// Verify every shard of every object (of one bucket, if given) and rebuild the missing
    /// and rotted ones.
    Repair {
        /// Only this bucket.
        #[serde(default)]
        bucket: Option<String>,
    },
    /// Take a member that lost its metadata out of the group and add it back as a learner that
    /// starts from nothing (`hamster recover-meta`); a member that does not lead passes it on
    /// to the leader.
    ReadmitMember {
        /// The member, 16 hex digits.
        node_id: String,
    },
    /// Move into cluster epoch `epoch` (never back): sent by `hamster recover` to the members
    /// it keeps, so they refuse the members it dropped.
    AdoptEpoch {
        /// The recovered cluster's epoch.
        epoch: u64,
    },
    /// Change the data-plane layout; a member that does not lead passes it on to the leader.
    ChangeLayout {
        /// The change.
        change: LayoutRequest,
    },
    /// Show the scrubber's state, after applying an operator's switch if one is given.
    Scrub {
        /// Pause, resume, or a pass now.
        #[serde(default)]
        switch: Option<crate::scrub::ScrubSwitch>,
    },
}

/// A layout change an operator asks for (`hamster drain`, `undrain`, `remove`, `optimize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LayoutRequest {
    /// Steer writes off a node and move its shards away.
    Drain {
        /// The node, 16 hex digits.
        node_id: String,
        /// The operator accepted the trade of a drain that crosses a profile boundary.
        #[serde(default)]
        shrink: bool,
        /// Allow a shrink below one-failure tolerance.
        #[serde(default)]
        force: bool,
    },
    /// Take a draining or drained node back.
    Undrain {
        /// The node, 16 hex digits.
        node_id: String,
    },
    /// Evict a drained node for good.
    Remove {
        /// The node, 16 hex digits.
        node_id: String,
    },
    /// Re-encode parts up to the profile the current node count gives.
    Optimize,
}

/// What a new node sends over [`ALPN_JOIN`], after it checked the cluster's CA against the
/// token's pin and before it has a certificate of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The join token's text form, exactly as `hamster token` printed it.
    pub token: String,
    /// A PKCS#10 request (PEM) for the joiner's own key, naming `<node_id>.node.hamster` and
    /// `cluster.hamster`. The key itself never leaves the joiner.
    pub csr_pem: String,
    /// The node id the joiner chose, 16 lowercase hex digits.
    pub node_id: String,
    /// Where the joiner's cluster port listens.
    pub cluster_addr: String,
    /// Failure domain: zone.
    pub zone: String,
    /// Failure domain: host.
    pub host: String,
    /// Capacity weight in bytes.
    pub capacity_bytes: u64,
    /// The member this node comes to replace, 16 hex digits (`serve --replaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// The cluster's answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JoinResponse {
    /// The token was consumed and the certificate signed; the joiner is added as a learner
    /// (and promoted to voter while there are fewer than five) once it runs.
    Admitted {
        /// The cluster's id (for the joiner's `node.json`).
        cluster_id: String,
        /// The cluster CA certificate, PEM.
        ca_pem: String,
        /// The cluster CA's private key, PEM, so that every member can admit joiners
        /// (docs/adr/0003). Sent only over the TLS session the joiner pinned to this CA.
        #[serde(default)]
        ca_key_pem: Option<String>,
        /// The joiner's certificate, signed by the CA, PEM.
        cert_pem: String,
        /// The members as the answering node knew them.
        members: Vec<MemberStatus>,
    },
    /// Not admitted; the message says why and what to do.
    Refused {
        /// One line: what is wrong and what to do.
        message: String,
        /// Whether another member (the leader) may admit the same request; the token was
        /// not consumed.
        retry_elsewhere: bool,
    },
}

/// A node's answer to one [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlResponse {
    /// The answer to [`ControlRequest::Status`].
    Status(StatusReport),
    /// The answer to [`ControlRequest::CreateKey`]: the only time the secret is sent.
    KeyCreated(NewKey),
    /// The answer to [`ControlRequest::ListKeys`], in name order.
    Keys {
        /// Every key, without secrets.
        keys: Vec<KeySummary>,
    },
    /// The answer to [`ControlRequest::AllowKey`] and [`ControlRequest::DenyKey`]: the key as
    /// it is now.
    KeyUpdated(KeySummary),
    /// The answer to [`ControlRequest::DeleteKey`]: the key that was removed.
    KeyDeleted(KeySummary),
    /// The answer to [`ControlRequest::MintJoinToken`].
    JoinToken {
        /// The token's text form (`hamster-join-1.…`).
        token: String,
        /// When it expires, Unix milliseconds.
        expires_ms: u64,
    },
    /// The answer to [`ControlRequest::Repair`].
    Repaired(RepairReport),
    /// The answer to [`ControlRequest::Scrub`].
    Scrub(ScrubReport),
    /// The answer to [`ControlRequest::ReadmitMember`]: the member is a learner again.
    Readmitted {
        /// The member, 16 hex digits.
        node_id: String,
        /// The leader that made the change, 16 hex digits.
        leader: String,
    },
    /// The answer to [`ControlRequest::AdoptEpoch`].
    EpochAdopted {
        /// The epoch the member is in now.
        epoch: u64,
    },
    /// The answer to [`ControlRequest::ChangeLayout`]: what the leader did.
    LayoutChanged {
        /// One line saying what happens now.
        message: String,
    },
    /// The request could not be served; the message says why and what to do.
    Error {
        /// One line: what is wrong and what to do about it.
        message: String,
    },
}

/// What a repair sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Objects visited.
    pub objects: u64,
    /// Parts visited (objects' and uploads' in progress).
    pub parts: u64,
    /// Shards whose home verified them against the replicated checksum.
    pub shards_verified: u64,
    /// Shards rebuilt from verified survivors and stored on their homes.
    pub shards_rebuilt: u64,
    /// Shards whose home could not be asked; left alone.
    pub shards_unreachable: u64,
    /// Parts with fewer than `k` verified shards, one line each: their data is lost unless an
    /// unreachable home comes back with its shard.
    pub unrecoverable: Vec<String>,
    /// Parts whose rebuild did not complete (a home refused or went away); run repair again.
    pub failed: Vec<String>,
}

/// A freshly minted access key, secret included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// The key's human name.
    pub name: String,
    /// The access key id.
    pub access_key: String,
    /// The secret; the node never sends it again.
    pub secret_key: String,
}

/// An access key as operators see it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySummary {
    /// The key's human name.
    pub name: String,
    /// The access key id.
    pub access_key: String,
    /// Root keys see and may do everything.
    pub root: bool,
    /// Per-bucket permissions of a non-root key.
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Creation time, Unix milliseconds.
    #[serde(default)]
    pub created_ms: u64,
}

impl From<&AccessKey> for KeySummary {
    fn from(k: &AccessKey) -> Self {
        KeySummary {
            name: k.name.clone(),
            access_key: k.access_key.clone(),
            root: k.root,
            grants: k.grants.clone(),
            created_ms: k.created_ms,
        }
    }
}

/// One member of the cluster as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's node id, 16 lowercase hex digits.
    pub node_id: String,
    /// Where the member's cluster port listens.
    pub cluster_addr: String,
    /// `"voter"` or `"learner"`.
    pub role: String,
    /// Failure domain: the zone the member is in.
    pub zone: String,
    /// Failure domain: the host the member runs on.
    pub host: String,
    /// Capacity the member offers, in bytes (its placement weight).
    pub capacity_bytes: u64,
    /// The member's own Raft state (`Leader`, `Follower`, `Learner`, `Candidate`), or
    /// `unreachable` when it did not answer; `None` when it was not asked.
    #[serde(default)]
    pub state: Option<String>,
    /// The term the member is in, when it answered.
    #[serde(default)]
    pub term: Option<u64>,
    /// The last index in the member's own log, when it answered.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Finished shard files on the member's disk, as the member counts them, when it answered.
    #[serde(default)]
    pub shard_count: Option<u64>,
    /// Bytes of those shard files (headers and checksums included), when it answered.
    #[serde(default)]
    pub shard_bytes: Option<u64>,
}

/// A node's status: who it is, who it sees, and how far its Raft log has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The answering node's id, 16 lowercase hex digits.
    pub node_id: String,
    /// The cluster this node belongs to.
    pub cluster_id: String,
    /// The hamster version the node runs.
    pub version: String,
    /// Every member the node knows of, voters and learners.
    pub members: Vec<MemberStatus>,
    /// The node id of the current leader, if one is known.
    pub leader: Option<String>,
    /// The current Raft term.
    pub term: u64,
    /// Highest log index known to be committed.
    pub commit_index: u64,
    /// Highest log index applied to the state machine.
    pub applied_index: u64,
    /// Highest index in the node's own log.
    pub last_log_index: u64,
    /// Where the node serves S3, or `None` for a storage-only node.
    pub s3_addr: Option<String>,
    /// Where the node serves `/metrics`, `/health` and `/ready`.
    pub admin_addr: String,
    /// Where the node's cluster port listens.
    pub cluster_addr: String,
    /// The data-plane layout as this node has applied it: nodes and weights, drained and
    /// removed nodes, and the open transition with its progress. Carried as a JSON value (read
    /// it with [`StatusReport::layout`]): the answer is an internally tagged enum, which cannot
    /// carry maps keyed by integers directly.
    #[serde(default)]
    pub layout: Option<serde_json::Value>,
    /// Shard copies that layout moves unlinked and that are not deleted yet (their nodes did
    /// not answer): deleted when those nodes answer, forgotten when they are removed.
    #[serde(default)]
    pub stale_shards: u64,
    /// The scrubber's replicated state as this node has applied it: its pass, and what the
    /// last complete pass found (the durability counts).
    #[serde(default)]
    pub scrub: Option<Box<crate::scrub::ScrubState>>,
    /// This node's clock when it answered, Unix ms (to judge the scrub times by).
    #[serde(default)]
    pub now_ms: u64,
    /// Keys this node wrote with fewer than all shards since its last start whose missing
    /// shards are not rebuilt yet (their homes have not answered): degraded at once, before
    /// any scrub pass counts them.
    #[serde(default)]
    pub heal_soon: u64,
}

/// The answer to [`ControlRequest::Scrub`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// The replicated state, read after the switch (if any) was committed.
    pub state: crate::scrub::ScrubState,
    /// The pace this node's scrubber keeps when it leads: shard bytes per second per node.
    pub bytes_per_s: u64,
    /// How long after one pass began the next may begin, in ms.
    pub every_ms: u64,
    /// This node's clock when it answered, Unix ms.
    pub now_ms: u64,
}

impl StatusReport {
    /// The layout this report carries, if any (and if it reads as one).
    pub fn layout(&self) -> Option<crate::placement::Layout> {
        self.layout
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

/// Reads the payload length from a frame header, refusing lengths over [`FRAME_BYTES_MAX`]
/// before anything is allocated for them.
pub fn frame_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(WireError::FrameTooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(len)
}

/// Builds one frame: the header followed by `payload`.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() > FRAME_BYTES_MAX {
        return Err(WireError::FrameTooLarge {
            len: payload.len(),
            max: FRAME_BYTES_MAX,
        });
    }
    // The check above keeps the length within u32, since FRAME_BYTES_MAX is.
    let len = u32::try_from(payload.len()).expect("FRAME_BYTES_MAX fits in u32");
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    debug_assert_eq!(frame.len(), FRAME_HEADER_BYTES + payload.len());
    Ok(frame)
}

/// Splits the first frame off the front of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than one whole frame, and otherwise the payload and
/// how many bytes of `buf` the frame used, so a reader can keep any bytes that follow.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = frame_len(*header)?;
    let end = FRAME_HEADER_BYTES + len;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((&buf[FRAME_HEADER_BYTES..end], end)))
}

/// Encodes a message as JSON inside one frame.
pub fn encode_message<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let payload = serde_json::to_vec(message).map_err(|e| WireError::Encode(e.to_string()))?;
    encode_frame(&payload)
}

/// Decodes a message from a frame's payload (the bytes after the header).
pub fn decode_message<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(payload).map_err(|e| WireError::Decode(one_line(&e.to_string())))
}

/// Keeps an error message to one line, because decode errors end up in logs and CLI output.
fn one_line(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            node_id: "00000000000000a1".into(),
            cluster_id: "c1".into(),
            version: "0.1.0".into(),
            members: vec![MemberStatus {
                node_id: "00000000000000a1".into(),
                cluster_addr: "127.0.0.1:9400".into(),
                role: "voter".into(),
                zone: "z1".into(),
                host: "h1".into(),
                capacity_bytes: 1 << 40,
                state: Some("Leader".into()),
                term: Some(3),
                last_log_index: Some(11),
                shard_count: Some(3),
                shard_bytes: Some(12_288),
            }],
            leader: Some("00000000000000a1".into()),
            term: 3,
            commit_index: 10,
            applied_index: 9,
            last_log_index: 11,
            s3_addr: None,
            admin_addr: "127.0.0.1:9001".into(),
            cluster_addr: "127.0.0.1:9400".into(),
            layout: serde_json::to_value(sample_layout()).ok(),
            stale_shards: 5,
            scrub: Some(Box::new(crate::scrub::ScrubState {
                pass: 2,
                ..Default::default()
            })),
            now_ms: 1_700_000_000_000,
            heal_soon: 3,
        }
    }

    /// A layout with integer-keyed maps: nodes, a retired node and an open transition.
    fn sample_layout() -> crate::placement::Layout {
        use crate::layout::{LayoutOp, Progress, Retired, Transition};
        let nodes = crate::placement::layout_nodes([(0xa1, "z1", "h1", 1u64 << 40)]);
        crate::placement::Layout {
            version: 4,
            nodes: nodes.clone(),
            transition: Some(Transition {
                id: 4,
                op: LayoutOp::Drain { node: 0xb2 },
                asked_by: "test".into(),
                started_ms: 1,
                from: nodes,
                progress: Progress::default(),
            }),
            retired: [(0xc3, Retired::Drained { at_ms: 2 })]
                .into_iter()
                .collect(),
            last: None,
        }
    }

    #[test]
    fn a_status_answer_carries_the_layout_through_the_tagged_enum() {
        let answer = ControlResponse::Status(report());
        let text = serde_json::to_vec(&answer).unwrap();
        let ControlResponse::Status(back) = serde_json::from_slice(&text).unwrap() else {
            panic!("not a status answer");
        };
        assert_eq!(back.layout(), Some(sample_layout()));
        assert_eq!(back.stale_shards, 5);
    }

    /// Encode then decode gives back the same payload and consumes exactly the frame.
    #[test]
    fn frame_round_trip() {
        for payload in [&b""[..], b"x", &[7u8; 1000]] {
            let frame = encode_frame(payload).unwrap();
            assert_eq!(frame.len(), FRAME_HEADER_BYTES + payload.len());
            let (decoded, used) = decode_frame(&frame).unwrap().unwrap();
            assert_eq!(decoded, payload);
            assert_eq!(used, frame.len());
        }
    }

    /// A partial frame is not an error: the reader waits for more bytes.
    #[test]
    fn partial_frame_waits() {
        let frame = encode_frame(b"hello").unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode_frame(&frame[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    /// Two frames back to back come apart at the right place.
    #[test]
    fn frames_back_to_back() {
        let mut buf = encode_frame(b"one").unwrap();
        buf.extend(encode_frame(b"two").unwrap());
        let (first, used) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(first, b"one");
        let (second, rest) = decode_frame(&buf[used..]).unwrap().unwrap();
        assert_eq!(second, b"two");
        assert_eq!(used + rest, buf.len());
    }

    /// An announced length over the limit is refused from the header alone.
    #[test]
    fn oversized_header_refused() {
        let too_big = u32::try_from(FRAME_BYTES_MAX + 1).unwrap().to_be_bytes();
        assert_eq!(
            decode_frame(&too_big),
            Err(WireError::FrameTooLarge {
                len: FRAME_BYTES_MAX + 1,
                max: FRAME_BYTES_MAX
            })
        );
        assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
        assert_eq!(
            frame_len(u32::try_from(FRAME_BYTES_MAX).unwrap().to_be_bytes()),
            Ok(FRAME_BYTES_MAX)
        );
    }

    /// A payload over the limit is refused when encoding too.
    #[test]
    fn oversized_payload_refused() {
        let payload = vec![0u8; FRAME_BYTES_MAX + 1];
        assert!(matches!(
            encode_frame(&payload),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    /// Control messages survive a trip through a frame.
    #[test]
    fn control_messages_round_trip() {
        let frame = encode_message(&ControlRequest::Status).unwrap();
        let (payload, _) = decode_frame(&frame).unwrap().unwrap();
        assert_eq!(
            decode_message::<ControlRequest>(payload).unwrap(),
            ControlRequest::Status
        );

        for response in [
            ControlResponse::Status(report()),
            ControlResponse::Error {
                message: "no".into(),
            },
        ] {
            let frame = encode_message(&response).unwrap();
            let (payload, _) = decode_frame(&frame).unwrap().unwrap();
            assert_eq!(
                decode_message::<ControlResponse>(payload).unwrap(),
                response
            );
        }
    }

    /// The JSON shape is part of the wire contract: pin it.
    #[test]
    fn control_json_shape() {
        assert_eq!(
            serde_json::to_string(&ControlRequest::Status).unwrap(),
            r#"{"type":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlResponse::Error {
                message: "m".into()
            })
            .unwrap(),
            r#"{"type":"error","message":"m"}"#
        );
    }

    /// Additive versioning: a newer peer's extra fields are ignored and a missing optional field
    /// decodes as `None`.
    #[test]
    fn additive_fields_tolerated() {
        let mut json = serde_json::to_value(ControlResponse::Status(report())).unwrap();
        let object = json.as_object_mut().unwrap();
        object.insert("added_later".into(), serde_json::json!(42));
        object.remove("leader");
        let decoded: ControlResponse = serde_json::from_value(json).unwrap();
        let ControlResponse::Status(status) = decoded else {
            panic!("expected a status report");
        };
        assert_eq!(status.leader, None);
        assert_eq!(status.term, 3);
    }

    /// A member answering from an older build sends no shard counts: they decode as unknown.
    #[test]
    fn member_without_shard_counts() {
        let mut json = serde_json::to_value(report().members[0].clone()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("shard_count");
        object.remove("shard_bytes");
        let member: MemberStatus = serde_json::from_value(json).unwrap();
        assert_eq!((member.shard_count, member.shard_bytes), (None, None));
        assert_eq!(member.last_log_index, Some(11));
    }

    /// Key requests and answers survive a frame, and the secret travels only in `KeyCreated`.
    #[test]
    fn key_messages_round_trip() {
        let grant = Grant {
            read: true,
            write: false,
            owner: true,
        };
        for request in [
            ControlRequest::CreateKey { name: "app".into() },
            ControlRequest::ListKeys,
            ControlRequest::DeleteKey { name: "app".into() },
            ControlRequest::AllowKey {
                name: "app".into(),
                bucket: "b".into(),
                grant,
            },
            ControlRequest::DenyKey {
                name: "app".into(),
                bucket: "b".into(),
                grant,
            },
            ControlRequest::MintJoinToken { ttl_ms: 3_600_000 },
        ] {
            let frame = encode_message(&request).unwrap();
            let (payload, _) = decode_frame(&frame).unwrap().unwrap();
            assert_eq!(decode_message::<ControlRequest>(payload).unwrap(), request);
        }
        let summary = KeySummary {
            name: "app".into(),
            access_key: "HKAAAAAAAAAAAAAAAAAA".into(),
            root: false,
            grants: BTreeMap::from([("b".to_string(), grant)]),
            created_ms: 5,
        };
        for response in [
            ControlResponse::KeyCreated(NewKey {
                name: "app".into(),
                access_key: "HKAAAAAAAAAAAAAAAAAA".into(),
                secret_key: "s".repeat(40),
            }),
            ControlResponse::Keys {
                keys: vec![summary.clone()],
            },
            ControlResponse::KeyUpdated(summary.clone()),
            ControlResponse::KeyDeleted(summary.clone()),
            ControlResponse::JoinToken {
                token: "hamster-join-1.AAAA".into(),
                expires_ms: 9,
            },
        ] {
            let frame = encode_message(&response).unwrap();
            let (payload, _) = decode_frame(&frame).unwrap().unwrap();
            assert_eq!(
                decode_message::<ControlResponse>(payload).unwrap(),
                response
            );
        }
        let listed = serde_json::to_string(&ControlResponse::Keys {
            keys: vec![summary],
        })
        .unwrap();
        assert!(!listed.contains("secret"));
    }

    /// A request this version does not know is a decode error with a one-line message.
    #[test]
    fn unknown_request_is_decode_error() {
        let err = decode_message::<ControlRequest>(br#"{"type":"teleport"}"#).unwrap_err();
        assert!(matches!(err, WireError::Decode(_)));
        assert!(!err.to_string().contains('\n'));
    }
}
