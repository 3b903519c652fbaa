//! How one object part is cut into stripes and coded into `k + m` shards (DESIGN §5), and how a
//! byte range of the part maps back onto shard slices. Pure arithmetic and Reed-Solomon coding;
//! the effects (shard files, transfers) live in `hamster-actors`.
//!
//! Geometry: a part of `size` bytes is read in stripes of `k × block_bytes` bytes. Stripe `s`
//! is split into `k` equal chunks, one per data shard, and coded into `m` parity chunks of the
//! same length; chunk `s` of every shard is block `s` of that shard's file, so a shard block and
//! a stripe correspond one to one. Every stripe but the last is full (`block_bytes` per chunk);
//! the last one's chunk is `ceil(rest / k)` bytes, with the data zero-padded to `k` chunks. All
//! `k + m` shards of a part therefore hold the same number of bytes.
//!
//! With `k = 1` the "parity" shards are plain copies of the data shard (replicas), which the
//! small-object rule uses; with `m = 0` there is no coding at all.

use std::ops::Range;

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::meta::PartLayout;

/// The shape of one coded part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of object data in the part.
    pub size: u64,
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes per chunk of a full stripe (and per block of a shard file).
    pub block_bytes: u32,
}

/// One piece of an object range, read from one data shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The stripe the bytes sit in.
    pub stripe: u64,
    /// The data shard holding them.
    pub shard: u16,
    /// Offset in that shard's data.
    pub shard_offset: u64,
    /// Offset of the first byte within the stripe's chunk.
    pub chunk_offset: u32,
    /// How many bytes.
    pub len: u32,
}

impl Geometry {
    /// The geometry a stored part was written with.
    pub fn of_part(part: &PartLayout) -> Geometry {
        Geometry {
            size: part.size,
            k: part.k,
            m: part.m,
            block_bytes: part.block_bytes,
        }
    }

    /// Object bytes in one full stripe.
    pub fn stripe_bytes(&self) -> u64 {
        u64::from(self.k) * u64::from(self.block_bytes)
    }

    /// How many stripes the part has (0 for an empty part).
    pub fn stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_bytes())
    }

    /// The part's byte range covered by stripe `s`.
    pub fn stripe_range(&self, s: u64) -> Range<u64> {
        let start = s * self.stripe_bytes();
        start..(start + self.stripe_bytes()).min(self.size)
    }

    /// Bytes per chunk of stripe `s`: `block_bytes` for a full stripe, `ceil(rest / k)` for a
    /// shorter last one.
    pub fn chunk_bytes(&self, s: u64) -> u32 {
        let r = self.stripe_range(s);
        let data = r.end - r.start;
        if data == self.stripe_bytes() {
            self.block_bytes
        } else {
            u32::try_from(data.div_ceil(u64::from(self.k))).expect("a chunk fits in a block")
        }
    }

    /// Bytes of data in each shard of the part.
    pub fn shard_data_len(&self) -> u64 {
        match self.stripes() {
            0 => 0,
            n => (n - 1) * u64::from(self.block_bytes) + u64::from(self.chunk_bytes(n - 1)),
        }
    }

    /// The data-shard slices holding `range` of the part, in order. Panics if the range
    /// reaches past the part: callers clamp ranges to the object first.
    pub fn slices(&self, range: Range<u64>) -> Vec<Slice> {
        assert!(range.end <= self.size, "range past the part");
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let s = pos / self.stripe_bytes();
            let chunk = u64::from(self.chunk_bytes(s));
            let within = pos - self.stripe_range(s).start;
            let shard = within / chunk;
            let chunk_offset = within % chunk;
            let stripe_end = self.stripe_range(s).end;
            let chunk_end = (self.stripe_range(s).start + (shard + 1) * chunk).min(stripe_end);
            let len = chunk_end.min(range.end) - pos;
            out.push(Slice {
                stripe: s,
                shard: u16::try_from(shard).expect("shard index fits"),
                shard_offset: s * u64::from(self.block_bytes) + chunk_offset,
                chunk_offset: u32::try_from(chunk_offset).expect("fits in a chunk"),
                len: u32::try_from(len).expect("fits in a chunk"),
            });
            pos += len;
        }
        out
    }
}

/// Why coding failed: a bug in the caller (wrong lengths), or too few shards to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodingError {
    /// Fewer than `k` chunks are present.
    #[error("only {have} of the {need} shards needed to decode are available")]
    TooFewShards {
        /// Chunks present.
        have: usize,
        /// Chunks needed (k).
        need: usize,
    },
    /// The profile cannot be coded (k = 0, or more than 255 shards).
    #[error("cannot code {k}+{m}")]
    BadProfile {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
    /// Chunks of one stripe differ in length.
    #[error("chunks of one stripe differ in length")]
    Ragged,
}

/// Encodes and decodes the stripes of one profile.
pub struct Coder {
    k: usize,
    m: usize,
    /// `None` when no arithmetic is needed (m = 0, or k = 1: replicas).
    rs: Option<ReedSolomon>,
}

impl std::fmt::Debug for Coder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Coder({}+{})", self.k, self.m)
    }
}

impl Coder {
    /// A coder for `k + m`.
    pub fn new(k: u8, m: u8) -> Result<Coder, CodingError> {
        let (kk, mm) = (usize::from(k), usize::from(m));
        if kk == 0 || kk + mm > 255 {
            return Err(CodingError::BadProfile { k, m });
        }
        let rs = if kk == 1 || mm == 0 {
            None
        } else {
            Some(ReedSolomon::new(kk, mm).map_err(|_| CodingError::BadProfile { k, m })?)
        };
        Ok(Coder { k: kk, m: mm, rs })
    }

    /// Codes one stripe's data (at most `k × chunk` bytes) into `k + m` chunks of `chunk`
    /// bytes each: the data zero-padded and cut, then the parity.
    pub fn encode(&self, data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        assert!(data.len() <= self.k * chunk, "stripe data exceeds k chunks");
        let mut out: Vec<Vec<u8>> = (0..self.k)
            .map(|j| {
                let from = (j * chunk).min(data.len());
                let to = ((j + 1) * chunk).min(data.len());
                let mut c = Vec::with_capacity(chunk);
                c.extend_from_slice(&data[from..to]);
                c.resize(chunk, 0);
                c
            })
            .collect();
        match &self.rs {
            None => {
                // Replicas (k = 1) or no parity at all.
                for _ in 0..self.m {
                    out.push(out[0].clone());
                }
            }
            Some(rs) => {
                out.extend((0..self.m).map(|_| vec![0u8; chunk]));
                rs.encode(&mut out).expect("chunks are k + m of one length");
            }
        }
        out
    }

    /// As [`Coder::encode`], taking the stripe by value: with `k = 1` the data becomes the
    /// first chunk as it is (padded), with no copy.
    pub fn encode_owned(&self, mut data: Vec<u8>, chunk: usize) -> Vec<Vec<u8>> {
        if self.k != 1 {
            return self.encode(&data, chunk);
        }
        assert!(data.len() <= chunk, "stripe data exceeds k chunks");
        data.resize(chunk, 0);
        let copies: Vec<Vec<u8>> = (0..self.m).map(|_| data.clone()).collect();
        std::iter::once(data).chain(copies).collect()
    }

    /// Fills in every missing chunk (data and parity) of one stripe from any `k` present.
    pub fn reconstruct(&self, chunks: &mut [Option<Vec<u8>>]) -> Result<(), CodingError> {
        assert_eq!(chunks.len(), self.k + self.m, "one slot per shard");
        let have = chunks.iter().filter(|c| c.is_some()).count();
        if have < self.k {
            return Err(CodingError::TooFewShards { have, need: self.k });
        }
        let mut lens = chunks.iter().flatten().map(Vec::len);
        let first = lens.next().unwrap_or(0);
        if lens.any(|l| l != first) {
            return Err(CodingError::Ragged);
        }
        match &self.rs {
            None => {
                let copy = chunks
                    .iter()
                    .flatten()
                    .next()
                    .expect("k ≥ 1 present")
                    .clone();
                for c in chunks.iter_mut().filter(|c| c.is_none()) {
                    *c = Some(copy.clone());
                }
                Ok(())
            }
            Some(rs) => rs.reconstruct(chunks).map_err(|_| CodingError::Ragged),
        }
    }

    /// The stripe's data from its (complete or reconstructable) chunks: the first `len` bytes
    /// of the data chunks laid end to end.
    pub fn join(&self, chunks: &[Option<Vec<u8>>], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for c in chunks.iter().take(self.k) {
            let c = c.as_ref().expect("data chunk present after reconstruct");
            let take = (len - out.len()).min(c.len());
            out.extend_from_slice(&c[..take]);
        }
        assert_eq!(out.len(), len, "stripe shorter than its data");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Slices reassemble any range; shard offsets stay inside the shard.
    #[test]
    fn slices_cover_ranges_exactly() {
        for (size, k, bb) in [
            (0u64, 4u8, 16u32),
            (1, 4, 16),
            (63, 4, 16),
            (64, 4, 16),
            (65, 4, 16),
            (1000, 3, 16),
            (77, 1, 8),
        ] {
            let g = Geometry {
                size,
                k,
                m: 2,
                block_bytes: bb,
            };
            let data = body(size as usize);
            // Lay the shards out as the writer would.
            let coder = Coder::new(k, 2).unwrap();
            let mut shards = vec![Vec::new(); usize::from(k) + 2];
            for s in 0..g.stripes() {
                let r = g.stripe_range(s);
                let chunks = coder.encode(
                    &data[r.start as usize..r.end as usize],
                    g.chunk_bytes(s) as usize,
                );
                for (i, c) in chunks.into_iter().enumerate() {
                    shards[i].extend_from_slice(&c);
                }
            }
            for sh in &shards {
                assert_eq!(sh.len() as u64, g.shard_data_len());
            }
            for a in 0..=size {
                for b in [a, (a + 1).min(size), (a + 17).min(size), size] {
                    let mut got = Vec::new();
                    for sl in g.slices(a..b) {
                        let o = sl.shard_offset as usize;
                        got.extend_from_slice(
                            &shards[usize::from(sl.shard)][o..o + sl.len as usize],
                        );
                    }
                    assert_eq!(
                        got,
                        &data[a as usize..b as usize],
                        "size {size} k {k} {a}..{b}"
                    );
                }
            }
        }
    }

    /// Coding a stripe by value gives the same chunks as coding it by reference, for full and
    /// short stripes of every profile.
    #[test]
    fn owned_encoding_matches() {
        for (k, m) in [(1u8, 0u8), (1, 1), (1, 2), (2, 1), (4, 2)] {
            let coder = Coder::new(k, m).unwrap();
            for len in [0, 1, 9, usize::from(k) * 10] {
                let data = body(len);
                assert_eq!(
                    coder.encode_owned(data.clone(), 10),
                    coder.encode(&data, 10),
                    "{k}+{m} len {len}"
                );
            }
        }
    }

    /// Any k of the k + m chunks give the stripe back.
    #[test]
    fn any_k_chunks_decode() {
        for (k, m) in [(1u8, 0u8), (1, 2), (2, 1), (3, 1), (3, 2), (4, 2)] {
            let coder = Coder::new(k, m).unwrap();
            let n = usize::from(k) + usize::from(m);
            let data = body(usize::from(k) * 10 - 3);
            let chunks = coder.encode(&data, 10);
            for lost in 0u32..(1 << n) {
                if lost.count_ones() as usize > usize::from(m) {
                    continue;
                }
                let mut c: Vec<Option<Vec<u8>>> = chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (lost & (1 << i) == 0).then(|| c.clone()))
                    .collect();
                coder.reconstruct(&mut c).unwrap();
                assert_eq!(coder.join(&c, data.len()), data, "{k}+{m} lost {lost:b}");
                for (i, ch) in c.iter().enumerate() {
                    assert_eq!(ch.as_ref().unwrap(), &chunks[i], "rebuilt chunk {i}");
                }
            }
            if m < 3 {
                let mut c: Vec<Option<Vec<u8>>> = vec![None; n];
                for (i, ch) in chunks.iter().enumerate().take(usize::from(k) - 1) {
                    c[i] = Some(ch.clone());
                }
                assert!(matches!(
                    coder.reconstruct(&mut c),
                    Err(CodingError::TooFewShards { .. })
                ));
            }
        }
    }
}
