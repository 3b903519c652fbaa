//! The shard protocol ([`crate::wire::ALPN_SHARD`]): how one node writes, reads, verifies and
//! deletes shard files on another. Each request and answer is one frame whose payload is a JSON
//! head followed by raw bytes (block data), so object bytes are never inflated into JSON:
//!
//! ```text
//! [head length: u32 BE][head: JSON][body: raw bytes]
//! ```
//!
//! A shard is written as a numbered sequence of `Write` requests (one block each) under a
//! transfer id the sender picks; the first one creates the shard, the one marked `finish` makes
//! it durable and visible and answers with its checksum. Requests of one transfer are sent one
//! after another; a repeated request (a retransmission) is answered again without effect.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectId;
use crate::wire::WireError;

/// Identifies one shard file: which body, which part, which shard of the part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardName {
    /// The body.
    pub id: ObjectId,
    /// The part number.
    pub part: u32,
    /// The shard index within the part.
    pub index: u16,
}

/// A request to a node's shard service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShardRequest {
    /// Append the body (one block) to the shard written under `transfer`; `seq` 0 creates it.
    Write {
        /// The sender's id for this shard write, unique per sender.
        transfer: u64,
        /// Position of this block in the transfer.
        seq: u64,
        /// The shard.
        name: ShardName,
        /// Data shards of the part.
        k: u8,
        /// Parity shards of the part.
        m: u8,
        /// Block size of the shard file.
        block_bytes: u32,
        /// Whether this is the last block: make the shard durable and answer its checksum.
        finish: bool,
    },
    /// Drop an unfinished write; nothing of it stays.
    Abort {
        /// The transfer to drop.
        transfer: u64,
    },
    /// Read `len` bytes at `offset` of a shard's data, verifying the blocks touched. Refused if
    /// the shard's whole-data checksum is not `blake3` (INV-5).
    Read {
        /// The shard.
        name: ShardName,
        /// Expected BLAKE3 of the shard's data, hex, from the replicated metadata.
        blake3: String,
        /// First byte.
        offset: u64,
        /// Bytes wanted.
        len: u32,
    },
    /// Check a whole shard against `blake3` without moving its data.
    Verify {
        /// The shard.
        name: ShardName,
        /// Expected BLAKE3 of the shard's data, hex.
        blake3: String,
    },
    /// Remove every shard file of these bodies.
    Delete {
        /// The bodies.
        ids: Vec<ObjectId>,
    },
    /// Remove one shard file (a copy a layout transition moved elsewhere); answered with
    /// `Deleted { count }`, 0 if it was not there.
    DeleteShard {
        /// The shard.
        name: ShardName,
    },
}

/// Why a shard request failed, as the sender needs to tell the cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardFailure {
    /// No such shard (or no such transfer) here.
    NotFound,
    /// The shard exists but fails its checksums: it must be rebuilt, never served.
    Corrupt,
    /// The node's disk is full.
    Full,
    /// The node's disk failed.
    Io,
    /// The node is not taking writes yet (it is still checking its shards after a start).
    NotReady,
    /// The request makes no sense (out of order, bad range): a bug or a replay.
    Refused,
}

/// An answer from a node's shard service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShardResponse {
    /// The block is written (not yet durable).
    Written,
    /// The shard is durable and visible.
    Finished {
        /// Bytes of shard data.
        data_len: u64,
        /// BLAKE3 of the data, hex.
        blake3: String,
        /// Bytes on disk.
        file_bytes: u64,
    },
    /// The bytes asked for follow as the body.
    Data,
    /// The shard verifies.
    Verified,
    /// Shard files removed.
    Deleted {
        /// How many files.
        count: u64,
    },
    /// The transfer is dropped.
    Aborted,
    /// The request failed.
    Failed {
        /// What kind of failure.
        failure: ShardFailure,
        /// For the log.
        message: String,
    },
}

/// Builds a frame payload from a head and a body.
pub fn encode_message<T: Serialize>(head: &T, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let head = serde_json::to_vec(head).map_err(|e| WireError::Encode(e.to_string()))?;
    let head_len =
        u32::try_from(head.len()).map_err(|_| WireError::Encode("head too long".into()))?;
    let mut out = Vec::with_capacity(4 + head.len() + body.len());
    out.extend_from_slice(&head_len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    Ok(out)
}

/// Splits a frame payload into its decoded head and its body.
pub fn decode_message<T: for<'de> Deserialize<'de>>(
    payload: &[u8],
) -> Result<(T, &[u8]), WireError> {
    let (len, rest) = payload
        .split_first_chunk::<4>()
        .ok_or_else(|| WireError::Decode("shard message shorter than its head length".into()))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(WireError::Decode("shard message head is cut short".into()));
    }
    let (head, body) = rest.split_at(len);
    let head = serde_json::from_slice(head).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_garbage() {
        let req = ShardRequest::Write {
            transfer: 7,
            seq: 0,
            name: ShardName {
                id: ObjectId([3; 16]),
                part: 1,
                index: 2,
            },
            k: 4,
            m: 2,
            block_bytes: 1 << 18,
            finish: true,
        };
        let body = vec![0u8, 1, 2, 255];
        let p = encode_message(&req, &body).unwrap();
        let (back, b) = decode_message::<ShardRequest>(&p).unwrap();
        assert_eq!(back, req);
        assert_eq!(b, &body[..]);
        assert!(decode_message::<ShardRequest>(&p[..3]).is_err());
        assert!(decode_message::<ShardRequest>(&p[..10]).is_err());
        assert!(decode_message::<ShardRequest>(b"\0\0\0\x02{}").is_err());
    }
}
