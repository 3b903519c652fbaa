//! Where an object part's shards live, and how it is coded (DESIGN §5, §6). Pure and integer-only
//! (INV-3): every node, on every CPU, computes the same homes from the same layout.
//!
//! # The profile ladder
//!
//! The coding profile `k + m` follows the number of data-plane nodes when a part is written, and
//! is recorded in the part's metadata (this is the one place the ladder is defined):
//!
//! | nodes | profile | survives losing |
//! |---|---|---|
//! | 1 | 1+0 | nothing |
//! | 2 | 1+1 | 1 node |
//! | 3 | 2+1 | 1 node |
//! | 4 | 3+1 | 1 node |
//! | 5 | 3+2 | 2 nodes |
//! | 6 and more | 4+2 | 2 nodes |
//!
//! Parts below [`SMALL_OBJECT_BYTES`] keep the ladder's `m` but use `k = 1`: `1 + m` whole
//! copies. Coding a tiny part saves no space worth having and costs `k` round trips per read.
//!
//! The ack floor of a profile ([`Profile::ack_floor`]) is `k + 1` shards, never more than all
//! `k + m`: a write acknowledged at the floor can still lose one more shard and be read.
//!
//! # Placement
//!
//! [`place`] picks a part's `k + m` homes by weighted rendezvous hashing. Each node with weight
//! `w` draws `w` 64-bit values from a fixed integer hash of (object id, part, node id, draw
//! number); its score is the largest of its draws. All the draws of all nodes together are
//! independent and uniform, so the node holding the single largest draw — the top score — is
//! node `n` with probability `w_n / Σw`: exactly proportional to weight, without a logarithm or
//! a float in sight. Ranking by score is the same as weighted sampling without replacement, so
//! later picks stay proportional among the nodes left.
//!
//! Shards are picked one at a time: among the nodes left, the one whose zone holds the fewest
//! picks so far, then whose host does, then the highest score (then the lowest id). So a part
//! spreads over zones first, then hosts, then nodes; no two shards ever share a node.
//!
//! Adding a node changes no other node's scores. For a single pick, an object moves only if the
//! new node now holds the top score, i.e. it moves *to* the new node, a share `w_new / Σw` of
//! objects; the remaining order of the other nodes is unchanged, so multi-shard placements shift
//! by about the same share. Removing a node moves only the objects it held.
//!
//! The hash defines where data lives: it must never change. `golden_placements` in the tests
//! pins it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectId;

/// One data-plane node in the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutNode {
    /// Failure domain: zone.
    pub zone: String,
    /// Failure domain: host.
    pub host: String,
    /// Relative capacity, `1..=WEIGHT_MAX`; a node with twice the weight holds twice the shards.
    pub weight: u32,
}

/// The data-plane nodes new writes are placed on, with a version that grows on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Grows with every change.
    pub version: u64,
    /// The nodes by id.
    pub nodes: BTreeMap<u64, LayoutNode>,
}

/// A coding profile: `k` data shards and `m` parity shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
}

impl Profile {
    /// Shards per part, `k + m`.
    pub fn shards(self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// The fewest durable shards a degraded write may be acknowledged with: `k + 1`, but never
    /// more than all of them (so 1+0 needs 1, 1+1 and 2+1 need all).
    pub fn ack_floor(self) -> usize {
        (usize::from(self.k) + 1).min(self.shards())
    }
}

/// Parts smaller than this are stored as `1 + m` copies.
pub const SMALL_OBJECT_BYTES: u64 = 128 * 1024;

/// The largest weight; capacities map onto `1..=WEIGHT_MAX`.
pub const WEIGHT_MAX: u32 = 64;

/// The ladder's profile for a cluster of `nodes` data-plane nodes.
pub fn profile_for_nodes(nodes: usize) -> Profile {
    let (k, m) = match nodes {
        0 | 1 => (1, 0),
        2 => (1, 1),
        3 => (2, 1),
        4 => (3, 1),
        5 => (3, 2),
        _ => (4, 2),
    };
    Profile { k, m }
}

/// The profile of a part of `size` bytes on a cluster of `nodes`: the ladder's, with `k = 1`
/// below [`SMALL_OBJECT_BYTES`].
pub fn profile_for_object(nodes: usize, size: u64) -> Profile {
    let ladder = profile_for_nodes(nodes);
    if size < SMALL_OBJECT_BYTES {
        Profile { k: 1, m: ladder.m }
    } else {
        ladder
    }
}

/// A node's weight from its capacity, relative to the largest node's: `1..=WEIGHT_MAX`,
/// rounded. A node of unknown (zero) capacity gets the smallest weight; when no capacity is
/// known at all, every node gets the same.
pub fn weight_for_capacity(capacity_bytes: u64, largest_capacity_bytes: u64) -> u32 {
    if largest_capacity_bytes == 0 {
        return WEIGHT_MAX;
    }
    let cap = u128::from(capacity_bytes.min(largest_capacity_bytes));
    let largest = u128::from(largest_capacity_bytes);
    let w = (cap * u128::from(WEIGHT_MAX) + largest / 2) / largest;
    u32::try_from(w).unwrap_or(WEIGHT_MAX).clamp(1, WEIGHT_MAX)
}

/// The layout nodes for a cluster's members, given as (id, zone, host, capacity in bytes):
/// weights from capacities relative to the largest.
pub fn layout_nodes<'a>(
    members: impl IntoIterator<Item = (u64, &'a str, &'a str, u64)>,
) -> BTreeMap<u64, LayoutNode> {
    let members: Vec<(u64, &str, &str, u64)> = members.into_iter().collect();
    let largest = members.iter().map(|m| m.3).max().unwrap_or(0);
    members
        .into_iter()
        .map(|(id, zone, host, capacity)| {
            let node = LayoutNode {
                zone: zone.to_string(),
                host: host.to_string(),
                weight: weight_for_capacity(capacity, largest),
            };
            (id, node)
        })
        .collect()
}

/// The layout to store when the cluster's nodes are `nodes` and the stored layout is `stored`:
/// the next version with those nodes, or `None` when nothing changed.
pub fn next_layout(stored: Option<&Layout>, nodes: BTreeMap<u64, LayoutNode>) -> Option<Layout> {
    if stored.is_some_and(|l| l.nodes == nodes) || nodes.is_empty() {
        return None;
    }
    Some(Layout {
        version: stored.map_or(0, |l| l.version) + 1,
        nodes,
    })
}

/// Why a part cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer nodes than shards: no two shards may share a node.
    #[error("a part needs {wanted} distinct nodes but the layout has {have}")]
    NotEnoughNodes {
        /// Shards asked for.
        wanted: usize,
        /// Nodes in the layout.
        have: usize,
    },
}

/// The fixed 64-bit mixer placement hashes with (a SplitMix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The score of `node` (weight `weight`) for the part keyed by `key`: the largest of its draws.
fn score(key: u64, node: u64, weight: u32) -> u64 {
    let node_key = mix(key ^ mix(node));
    (0..u64::from(weight.max(1)))
        .map(|draw| mix(node_key ^ mix(draw.wrapping_add(0x5EED))))
        .max()
        .expect("at least one draw")
}

/// The homes of `count` shards of part `part` of `object`: `count` distinct node ids, shard `i`
/// on the `i`-th. See the module documentation for how they are chosen.
pub fn place(
    layout: &Layout,
    object: &ObjectId,
    part: u32,
    count: usize,
) -> Result<Vec<u64>, PlacementError> {
    if count > layout.nodes.len() {
        return Err(PlacementError::NotEnoughNodes {
            wanted: count,
            have: layout.nodes.len(),
        });
    }
    let (lo, hi) = object.0.split_at(8);
    let lo = u64::from_le_bytes(lo.try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(hi.try_into().expect("8 bytes"));
    let key = mix(lo ^ mix(hi ^ mix(u64::from(part))));
    // (score, id, zone, host) of every node still unpicked.
    let mut left: Vec<(u64, u64, &str, &str)> = layout
        .nodes
        .iter()
        .map(|(id, n)| {
            (
                score(key, *id, n.weight),
                *id,
                n.zone.as_str(),
                n.host.as_str(),
            )
        })
        .collect();
    let mut zones: BTreeMap<&str, usize> = BTreeMap::new();
    let mut hosts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let best = left
            .iter()
            .enumerate()
            .min_by_key(|(_, (score, id, zone, host))| {
                (
                    zones.get(zone).copied().unwrap_or(0),
                    hosts.get(&(*zone, *host)).copied().unwrap_or(0),
                    std::cmp::Reverse(*score),
                    *id,
                )
            })
            .map(|(i, _)| i)
            .expect("count ≤ nodes left");
        let (_, id, zone, host) = left.swap_remove(best);
        *zones.entry(zone).or_insert(0) += 1;
        *hosts.entry((zone, host)).or_insert(0) += 1;
        out.push(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(nodes: &[(u64, &str, &str, u32)]) -> Layout {
        Layout {
            version: 1,
            nodes: nodes
                .iter()
                .map(|(id, z, h, w)| {
                    (
                        *id,
                        LayoutNode {
                            zone: z.to_string(),
                            host: h.to_string(),
                            weight: *w,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn ladder_and_floors() {
        let table = [
            (1, 1, 0, 1),
            (2, 1, 1, 2),
            (3, 2, 1, 3),
            (4, 3, 1, 4),
            (5, 3, 2, 4),
            (6, 4, 2, 5),
            (40, 4, 2, 5),
        ];
        for (nodes, k, m, floor) in table {
            let p = profile_for_nodes(nodes);
            assert_eq!((p.k, p.m, p.ack_floor()), (k, m, floor), "{nodes} nodes");
        }
        assert_eq!(profile_for_nodes(0), Profile { k: 1, m: 0 });
        let small = profile_for_object(6, SMALL_OBJECT_BYTES - 1);
        assert_eq!((small.k, small.m, small.ack_floor()), (1, 2, 2));
        assert_eq!(
            profile_for_object(6, SMALL_OBJECT_BYTES),
            Profile { k: 4, m: 2 }
        );
        assert_eq!(profile_for_object(2, 0).ack_floor(), 2);
    }

    #[test]
    fn weights_from_capacity() {
        assert_eq!(weight_for_capacity(10, 0), WEIGHT_MAX);
        assert_eq!(weight_for_capacity(0, 100), 1);
        assert_eq!(weight_for_capacity(100, 100), WEIGHT_MAX);
        assert_eq!(weight_for_capacity(50, 100), WEIGHT_MAX / 2);
        assert_eq!(weight_for_capacity(1, u64::MAX), 1);
        assert_eq!(weight_for_capacity(u64::MAX, u64::MAX), WEIGHT_MAX);
        assert_eq!(weight_for_capacity(200, 100), WEIGHT_MAX);
    }

    #[test]
    fn layouts_follow_members() {
        let members = [(1, "z", "a", 100u64), (2, "z", "b", 50)];
        let nodes = layout_nodes(members);
        assert_eq!(nodes[&1].weight, WEIGHT_MAX);
        assert_eq!(nodes[&2].weight, WEIGHT_MAX / 2);
        let first = next_layout(None, nodes.clone()).unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(next_layout(Some(&first), nodes.clone()), None);
        let grown = layout_nodes([(1, "z", "a", 100u64), (2, "z", "b", 50), (3, "y", "c", 100)]);
        let second = next_layout(Some(&first), grown.clone()).unwrap();
        assert_eq!((second.version, second.nodes), (2, grown));
        assert_eq!(next_layout(None, BTreeMap::new()), None);
    }

    #[test]
    fn too_few_nodes_is_an_error() {
        let l = layout(&[(1, "a", "a", 1), (2, "a", "b", 1)]);
        assert_eq!(
            place(&l, &ObjectId([0; 16]), 1, 3),
            Err(PlacementError::NotEnoughNodes { wanted: 3, have: 2 })
        );
        assert_eq!(place(&l, &ObjectId([0; 16]), 1, 0), Ok(vec![]));
    }

    /// The mapping is part of the on-disk format: these must never change.
    #[test]
    fn golden_placements() {
        let l = layout(&[
            (11, "z1", "h1", 64),
            (22, "z1", "h2", 64),
            (33, "z2", "h3", 64),
            (44, "z2", "h4", 32),
            (55, "z3", "h5", 64),
            (66, "z3", "h6", 16),
        ]);
        let got: Vec<Vec<u64>> = [[0u8; 16], [1; 16], [0xab; 16], *b"hamster-object-1"]
            .iter()
            .flat_map(|id| {
                let l = &l;
                (1..=2).map(move |part| place(l, &ObjectId(*id), part, 6).unwrap())
            })
            .collect();
        assert_eq!(got, GOLDEN.iter().map(|g| g.to_vec()).collect::<Vec<_>>());
    }

    const GOLDEN: [[u64; 6]; 8] = [
        [33, 22, 55, 44, 11, 66],
        [55, 11, 33, 22, 44, 66],
        [11, 33, 66, 22, 55, 44],
        [11, 55, 33, 66, 44, 22],
        [33, 55, 11, 44, 22, 66],
        [44, 22, 55, 33, 11, 66],
        [11, 55, 44, 22, 33, 66],
        [33, 55, 22, 44, 11, 66],
    ];
}
