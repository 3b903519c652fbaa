//! The shard file format (DESIGN §3): what one coded piece of one object part looks like on disk,
//! and the arithmetic that maps data ranges to checksummed blocks. A shard file is
//! self-describing, so a node can identify and verify it from the disk alone, without metadata.
//!
//! Layout, version 1:
//!
//! ```text
//! [header: HEADER_BYTES][block 0 data][crc32c LE][block 1 data][crc32c LE]...
//! ```
//!
//! Every block holds `block_bytes` of data except the last, which holds the remainder; an empty
//! shard has no blocks at all. A per-block CRC32C lets a ranged read verify exactly the blocks it
//! touches; the BLAKE3 of the whole data in the header matches the checksum kept in the
//! replicated metadata (INV-5). Everything here is pure: the effects live in `actors::shards`.

use std::ops::Range;

use crate::meta::ObjectId;

/// The first eight bytes of every shard file.
pub const SHARD_MAGIC: [u8; 8] = *b"HMSTRSHD";

/// The shard format this code writes. Readers refuse versions they do not know.
pub const SHARD_FORMAT_VERSION: u16 = 1;

/// Fixed size of the header; block 0 starts right after it.
pub const HEADER_BYTES: usize = 128;

/// Data bytes per checksummed block unless the caller picks otherwise.
pub const BLOCK_BYTES_DEFAULT: u32 = 256 * 1024;

/// The largest block size a header may claim. A reader or writer holds one block in memory, so
/// this bounds the memory a (possibly hostile) shard file can make a node allocate.
pub const BLOCK_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// The largest amount of data one shard may hold. S3 caps a part at 5 GiB, so this leaves ample
/// headroom while keeping every offset computation far from `u64` overflow.
pub const DATA_BYTES_MAX: u64 = 1 << 40;

/// Bytes of checksum that follow each block's data.
pub const BLOCK_CRC_BYTES: u64 = 4;

// Header field offsets. Bytes between the BLAKE3 and the CRC are reserved and must be zero in
// version 1, so a later version can give them meaning and bump the version.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_FLAGS: usize = 10;
const OFF_OBJECT_ID: usize = 12;
const OFF_PART: usize = 28;
const OFF_INDEX: usize = 32;
const OFF_K: usize = 34;
const OFF_M: usize = 35;
const OFF_BLOCK_BYTES: usize = 36;
const OFF_DATA_LEN: usize = 40;
const OFF_BLAKE3: usize = 48;
const OFF_RESERVED: usize = 80;
const OFF_CRC: usize = HEADER_BYTES - 4;

/// Why a byte string is not a valid shard header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardFormatError {
    /// Fewer bytes than a header: the file was truncated or is not a shard.
    #[error("shard header needs {HEADER_BYTES} bytes, got {len}; the file is truncated")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The file does not start with [`SHARD_MAGIC`].
    #[error("not a hamster shard file (bad magic)")]
    BadMagic,
    /// Written by a newer (or unknown) format; upgrade hamster to read it.
    #[error("shard format version {0} is unknown to this hamster; upgrade to read it")]
    UnknownVersion(u16),
    /// The header's own checksum does not match: the header is corrupt.
    #[error("shard header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc {
        /// CRC32C stored in the header.
        stored: u32,
        /// CRC32C computed over the header bytes.
        computed: u32,
    },
    /// The checksum holds but a field makes no sense; the writer was buggy.
    #[error("shard header field is invalid: {0}")]
    Invalid(&'static str),
    /// A valid header that names a different shard than the file's name says. Never returned
    /// by [`ShardHeader::decode`]; readers use it when a file sits under the wrong name.
    #[error("shard header names a different object, part or index than its file name")]
    IdentityMismatch,
}

/// The decoded header of a shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// The object body this shard belongs to.
    pub object_id: ObjectId,
    /// Part number within the object (1 for a simple PUT).
    pub part: u32,
    /// Shard index within the part: `0..k` are data shards, `k..k+m` parity.
    pub index: u16,
    /// Data shards of the part's coding.
    pub k: u8,
    /// Parity shards of the part's coding.
    pub m: u8,
    /// Data bytes per checksummed block.
    pub block_bytes: u32,
    /// Bytes of shard data (excluding header and block checksums).
    pub data_len: u64,
    /// BLAKE3 of the shard's data.
    pub blake3: [u8; 32],
}

impl ShardHeader {
    /// Serializes the header, including its trailing CRC32C. Panics if the header breaks the
    /// invariants that [`ShardHeader::decode`] checks: writing such a header is a bug.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        if let Err(why) = self.validate() {
            panic!("encoding an invalid shard header: {why}");
        }
        let mut b = [0u8; HEADER_BYTES];
        b[OFF_MAGIC..OFF_VERSION].copy_from_slice(&SHARD_MAGIC);
        b[OFF_VERSION..OFF_FLAGS].copy_from_slice(&SHARD_FORMAT_VERSION.to_le_bytes());
        // Flags (OFF_FLAGS..OFF_OBJECT_ID) stay zero: version 1 defines none.
        b[OFF_OBJECT_ID..OFF_PART].copy_from_slice(&self.object_id.0);
        b[OFF_PART..OFF_INDEX].copy_from_slice(&self.part.to_le_bytes());
        b[OFF_INDEX..OFF_K].copy_from_slice(&self.index.to_le_bytes());
        b[OFF_K] = self.k;
        b[OFF_M] = self.m;
        b[OFF_BLOCK_BYTES..OFF_DATA_LEN].copy_from_slice(&self.block_bytes.to_le_bytes());
        b[OFF_DATA_LEN..OFF_BLAKE3].copy_from_slice(&self.data_len.to_le_bytes());
        b[OFF_BLAKE3..OFF_RESERVED].copy_from_slice(&self.blake3);
        let crc = crc32c::crc32c(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks the first [`HEADER_BYTES`] of `b` (anything after is ignored, so the
    /// head of a file can be passed as is).
    pub fn decode(b: &[u8]) -> Result<ShardHeader, ShardFormatError> {
        if b.len() < HEADER_BYTES {
            return Err(ShardFormatError::TooShort { len: b.len() });
        }
        let b = &b[..HEADER_BYTES];
        if b[OFF_MAGIC..OFF_VERSION] != SHARD_MAGIC {
            return Err(ShardFormatError::BadMagic);
        }
        // The version decides where the checksum lives, so it is read before the checksum.
        let version = u16::from_le_bytes(le(&b[OFF_VERSION..OFF_FLAGS]));
        if version != SHARD_FORMAT_VERSION {
            return Err(ShardFormatError::UnknownVersion(version));
        }
        let stored = u32::from_le_bytes(le(&b[OFF_CRC..]));
        let computed = crc32c::crc32c(&b[..OFF_CRC]);
        if stored != computed {
            return Err(ShardFormatError::HeaderCrc { stored, computed });
        }
        if b[OFF_FLAGS..OFF_OBJECT_ID].iter().any(|&x| x != 0) {
            return Err(ShardFormatError::Invalid("unknown flags set"));
        }
        if b[OFF_RESERVED..OFF_CRC].iter().any(|&x| x != 0) {
            return Err(ShardFormatError::Invalid("reserved bytes are not zero"));
        }
        let header = ShardHeader {
            object_id: ObjectId(le(&b[OFF_OBJECT_ID..OFF_PART])),
            part: u32::from_le_bytes(le(&b[OFF_PART..OFF_INDEX])),
            index: u16::from_le_bytes(le(&b[OFF_INDEX..OFF_K])),
            k: b[OFF_K],
            m: b[OFF_M],
            block_bytes: u32::from_le_bytes(le(&b[OFF_BLOCK_BYTES..OFF_DATA_LEN])),
            data_len: u64::from_le_bytes(le(&b[OFF_DATA_LEN..OFF_BLAKE3])),
            blake3: le(&b[OFF_BLAKE3..OFF_RESERVED]),
        };
        header.validate()?;
        Ok(header)
    }

    /// Checks the fields alone (never the bytes): the checks shared by encode and decode, so
    /// both sides agree on what a header may say, and a writer can refuse nonsense up front.
    pub fn validate(&self) -> Result<(), ShardFormatError> {
        self.check_fields().map_err(ShardFormatError::Invalid)
    }

    fn check_fields(&self) -> Result<(), &'static str> {
        if self.k == 0 {
            return Err("k is zero");
        }
        if u16::from(self.k) + u16::from(self.m) <= self.index {
            return Err("shard index is not below k+m");
        }
        if self.block_bytes == 0 {
            return Err("block size is zero");
        }
        if self.block_bytes > BLOCK_BYTES_MAX {
            return Err("block size exceeds the maximum");
        }
        if self.data_len > DATA_BYTES_MAX {
            return Err("data length exceeds the maximum");
        }
        Ok(())
    }

    /// The BLAKE3 of the shard's data as lowercase hex, the form the metadata records.
    pub fn blake3_hex(&self) -> String {
        hex::encode(self.blake3)
    }

    /// How long the file holding this shard must be.
    pub fn file_len(&self) -> u64 {
        file_len(self.data_len, self.block_bytes)
    }
}

/// Copies a slice whose length the caller already fixed into an array.
fn le<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    out
}

/// The checksum stored after each block's data.
pub fn block_checksum(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Number of blocks that hold `data_len` bytes: zero for an empty shard.
pub fn block_count(data_len: u64, block_bytes: u32) -> u64 {
    assert!(block_bytes > 0, "block size must be positive");
    data_len.div_ceil(u64::from(block_bytes))
}

/// Data bytes held by `block`; every block is full except possibly the last.
pub fn block_data_bytes(block: u64, block_bytes: u32, data_len: u64) -> u32 {
    assert!(
        block < block_count(data_len, block_bytes),
        "block {block} is past the end"
    );
    let start = block * u64::from(block_bytes);
    let bytes = (data_len - start).min(u64::from(block_bytes));
    // Bounded by block_bytes, which is a u32.
    bytes as u32
}

/// Total bytes of a shard file holding `data_len` bytes of data.
pub fn file_len(data_len: u64, block_bytes: u32) -> u64 {
    assert!(
        data_len <= DATA_BYTES_MAX,
        "data length exceeds the maximum"
    );
    HEADER_BYTES as u64 + data_len + block_count(data_len, block_bytes) * BLOCK_CRC_BYTES
}

/// The block indices whose data intersects `offset..offset+len`, clipped to the shard's
/// `data_len`. An empty or out-of-range request covers no blocks.
pub fn blocks_covering(offset: u64, len: u64, block_bytes: u32, data_len: u64) -> Range<u64> {
    assert!(block_bytes > 0, "block size must be positive");
    let bb = u64::from(block_bytes);
    let end = offset.saturating_add(len).min(data_len);
    if offset >= end {
        let at = offset.min(data_len) / bb;
        return at..at;
    }
    let first = offset / bb;
    let last = (end - 1) / bb;
    first..last + 1
}

/// Where `block`'s data starts in the file; its checksum follows the data.
pub fn block_file_offset(block: u64, block_bytes: u32) -> u64 {
    assert!(block_bytes > 0, "block size must be positive");
    HEADER_BYTES as u64 + block * (u64::from(block_bytes) + BLOCK_CRC_BYTES)
}

/// The file name of a shard: `<32 hex id>.<part>.<index>`, numbers in decimal. It holds nothing
/// but the identity, never anything from an S3 key.
pub fn shard_file_name(id: &ObjectId, part: u32, index: u16) -> String {
    format!("{}.{part}.{index}", id.to_hex())
}

/// The inverse of [`shard_file_name`]. Only the canonical spelling parses (lowercase hex, no
/// leading zeros or signs), so every shard has exactly one name.
pub fn parse_shard_file_name(name: &str) -> Option<(ObjectId, u32, u16)> {
    let mut pieces = name.split('.');
    let id = ObjectId::from_hex(pieces.next()?)?;
    let part: u32 = pieces.next()?.parse().ok()?;
    let index: u16 = pieces.next()?.parse().ok()?;
    if pieces.next().is_some() || shard_file_name(&id, part, index) != name {
        return None;
    }
    Some((id, part, index))
}

/// The two-level fan-out directory of an object's shards, relative to the shard root: the first
/// two bytes of the id in hex, as `"ab/cd"`, so no directory grows beyond 65536-way fan-out.
pub fn shard_rel_dir(id: &ObjectId) -> String {
    format!("{:02x}/{:02x}", id.0[0], id.0[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ShardHeader {
        ShardHeader {
            object_id: ObjectId([0xab; 16]),
            part: 7,
            index: 2,
            k: 2,
            m: 1,
            block_bytes: BLOCK_BYTES_DEFAULT,
            data_len: 3 * 1024 * 1024 + 17,
            blake3: *blake3::hash(b"data").as_bytes(),
        }
    }

    /// Encoding then decoding returns the same header, and re-encoding gives the same bytes.
    #[test]
    fn header_round_trips() {
        let h = sample();
        let bytes = h.encode();
        let back = ShardHeader::decode(&bytes).expect("decode");
        assert_eq!(back, h);
        assert_eq!(back.encode(), bytes);
        assert_eq!(&bytes[..8], b"HMSTRSHD");
    }

    /// Any change to any single header byte is refused: CRC32C catches every burst of up to 32
    /// bits, and magic and version are checked before it.
    #[test]
    fn every_header_byte_corruption_is_detected() {
        let bytes = sample().encode();
        for i in 0..HEADER_BYTES {
            for mask in [0x01u8, 0x80, 0xff, 0x5a] {
                let mut bad = bytes;
                bad[i] ^= mask;
                assert!(
                    ShardHeader::decode(&bad).is_err(),
                    "byte {i} mask {mask:#x}"
                );
            }
        }
    }

    #[test]
    fn header_rejects_bad_magic_version_and_short() {
        let bytes = sample().encode();
        assert_eq!(
            ShardHeader::decode(&bytes[..HEADER_BYTES - 1]),
            Err(ShardFormatError::TooShort {
                len: HEADER_BYTES - 1
            })
        );
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(ShardHeader::decode(&bad), Err(ShardFormatError::BadMagic));
        let mut bad = bytes;
        bad[OFF_VERSION] = 2;
        assert_eq!(
            ShardHeader::decode(&bad),
            Err(ShardFormatError::UnknownVersion(2))
        );
    }

    /// Fields that make no sense are refused even when the checksum over them is valid.
    #[test]
    fn header_rejects_nonsense_fields_with_valid_crc() {
        let cases: [(usize, &[u8]); 6] = [
            (OFF_K, &[0]),
            (OFF_INDEX, &[3, 0]),
            (OFF_BLOCK_BYTES, &[0, 0, 0, 0]),
            (OFF_BLOCK_BYTES, &(BLOCK_BYTES_MAX + 1).to_le_bytes()),
            (OFF_FLAGS, &[1, 0]),
            (OFF_RESERVED + 3, &[9]),
        ];
        for (off, patch) in cases {
            let mut b = sample().encode();
            b[off..off + patch.len()].copy_from_slice(patch);
            let crc = crc32c::crc32c(&b[..OFF_CRC]);
            b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(ShardHeader::decode(&b), Err(ShardFormatError::Invalid(_))),
                "patch at {off} accepted"
            );
        }
    }

    #[test]
    #[should_panic(expected = "invalid shard header")]
    fn encoding_nonsense_panics() {
        let mut h = sample();
        h.k = 0;
        let _ = h.encode();
    }

    #[test]
    fn file_len_and_offsets() {
        assert_eq!(file_len(0, 16), HEADER_BYTES as u64);
        assert_eq!(file_len(1, 16), HEADER_BYTES as u64 + 1 + 4);
        assert_eq!(file_len(16, 16), HEADER_BYTES as u64 + 16 + 4);
        assert_eq!(file_len(17, 16), HEADER_BYTES as u64 + 17 + 8);
        assert_eq!(block_file_offset(0, 16), HEADER_BYTES as u64);
        assert_eq!(block_file_offset(2, 16), HEADER_BYTES as u64 + 40);
        assert_eq!(block_data_bytes(1, 16, 17), 1);
        assert_eq!(blocks_covering(0, 0, 16, 0), 0..0);
        assert_eq!(blocks_covering(15, 2, 16, 100), 0..2);
        assert_eq!(blocks_covering(16, 16, 16, 100), 1..2);
        assert_eq!(blocks_covering(90, 100, 16, 100), 5..7);
        assert_eq!(blocks_covering(200, 5, 16, 100), 6..6);
    }

    #[test]
    fn file_names_round_trip_and_are_canonical() {
        let id = ObjectId([0xab, 0xcd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        let name = shard_file_name(&id, 12, 3);
        assert_eq!(name, format!("{}.12.3", id.to_hex()));
        assert_eq!(parse_shard_file_name(&name), Some((id, 12, 3)));
        assert_eq!(shard_rel_dir(&id), "ab/cd");
        let hex = id.to_hex();
        for bad in [
            format!("{hex}.12"),
            format!("{hex}.12.3.4"),
            format!("{hex}.012.3"),
            format!("{hex}.+12.3"),
            format!("{}.12.3", hex.to_uppercase()),
            format!("{hex}.12.65536"),
            format!("{hex}.12.3.tmp"),
            "tmp".to_string(),
            String::new(),
        ] {
            assert_eq!(parse_shard_file_name(&bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// The covering blocks are exactly those that hold a byte of the (clipped) range: the
        /// first and last hold a byte, and together they span the range.
        #[test]
        fn covering_blocks_are_exact(
            block_bytes in 1u32..64,
            data_len in 0u64..2000,
            offset in 0u64..2100,
            len in 0u64..2100,
        ) {
            let r = blocks_covering(offset, len, block_bytes, data_len);
            let bb = u64::from(block_bytes);
            let end = (offset + len).min(data_len);
            prop_assert!(r.end <= block_count(data_len, block_bytes) || r.is_empty());
            if offset >= end {
                prop_assert!(r.is_empty());
            } else {
                prop_assert!(!r.is_empty());
                prop_assert!(r.start * bb <= offset && offset < (r.start + 1) * bb);
                prop_assert!((r.end - 1) * bb < end && end <= r.end * bb);
                let covered: u64 = r.clone().map(|b| u64::from(block_data_bytes(b, block_bytes, data_len))).sum();
                prop_assert!(covered >= end - offset);
            }
        }

        /// Blocks tile the file: each starts where the previous block's checksum ends, and the
        /// last ends exactly at the file length.
        #[test]
        fn blocks_tile_the_file(block_bytes in 1u32..64, data_len in 0u64..2000) {
            let n = block_count(data_len, block_bytes);
            let mut at = HEADER_BYTES as u64;
            for b in 0..n {
                prop_assert_eq!(block_file_offset(b, block_bytes), at);
                at += u64::from(block_data_bytes(b, block_bytes, data_len)) + BLOCK_CRC_BYTES;
            }
            prop_assert_eq!(at, file_len(data_len, block_bytes));
        }

        /// Any header with sane fields survives encode/decode unchanged.
        #[test]
        fn any_valid_header_round_trips(
            id in proptest::array::uniform16(any::<u8>()),
            part in any::<u32>(),
            k in 1u8..=16,
            m in 0u8..=16,
            index_seed in any::<u16>(),
            block_bytes in 1u32..=BLOCK_BYTES_MAX,
            data_len in 0u64..=DATA_BYTES_MAX,
            hash in proptest::array::uniform32(any::<u8>()),
        ) {
            let index = index_seed % (u16::from(k) + u16::from(m));
            let h = ShardHeader {
                object_id: ObjectId(id), part, index, k, m, block_bytes, data_len, blake3: hash,
            };
            let bytes = h.encode();
            prop_assert_eq!(ShardHeader::decode(&bytes), Ok(h));
        }
    }
}
