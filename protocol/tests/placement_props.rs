//! Properties of `hamster_protocol::placement` (INV-3): homes are distinct and deterministic,
//! follow weight, spread over zones then hosts, move little when a node joins, and never change
//! for a fixed input (golden placements).

use std::collections::{BTreeMap, BTreeSet};

use hamster_protocol::meta::ObjectId;
use hamster_protocol::placement::{
    place, profile_for_nodes, weight_for_capacity, Layout, LayoutNode, PlacementError, WEIGHT_MAX,
};
use proptest::prelude::*;

fn node(zone: &str, host: &str, weight: u32) -> LayoutNode {
    LayoutNode {
        zone: zone.to_owned(),
        host: host.to_owned(),
        weight,
    }
}

/// A layout from `(id, zone, host, weight)` rows.
fn layout_of(rows: &[(u64, &str, &str, u32)]) -> Layout {
    Layout {
        version: 1,
        nodes: rows
            .iter()
            .map(|&(id, zone, host, weight)| (id, node(zone, host, weight)))
            .collect(),
        ..Layout::default()
    }
}

/// One zone, one host per node, node ids `1..=weights.len()`.
fn flat_layout(weights: &[u32]) -> Layout {
    Layout {
        version: 1,
        nodes: weights
            .iter()
            .zip(1u64..)
            .map(|(&w, id)| (id, node("z", &format!("h{id}"), w)))
            .collect(),
        ..Layout::default()
    }
}

/// `n` object ids, fixed and spread over the id space.
fn object_ids(n: u64) -> impl Iterator<Item = ObjectId> {
    (0..n).map(|i| {
        let x = u128::from(i).wrapping_mul(0x2545_F491_4F6C_DD1D_9E37_79B9_7F4A_7C15) ^ 0xA5;
        ObjectId(x.to_be_bytes())
    })
}

/// Random layouts: 1..=12 nodes over up to 4 zones and 6 host names, any valid weight, with
/// scattered node ids.
fn arb_layout() -> impl Strategy<Value = Layout> {
    prop::collection::vec((0u8..4, 0u8..6, 1u32..=WEIGHT_MAX), 1..=12).prop_map(|rows| Layout {
        version: 3,
        nodes: rows
            .into_iter()
            .zip(0u64..)
            .map(|((z, h, w), i)| {
                let id = i.wrapping_mul(7_919).wrapping_add(101);
                (id, node(&format!("z{z}"), &format!("h{h}"), w))
            })
            .collect(),
        ..Layout::default()
    })
}

/// Random single-zone layouts with one host per node and small weights.
fn arb_flat_layout() -> impl Strategy<Value = Layout> {
    prop::collection::vec(1u32..=32, 1..=10).prop_map(|weights| flat_layout(&weights))
}

/// How many entries of `homes` fall in each group named by `group`.
fn tally<'a>(
    layout: &'a Layout,
    homes: &[u64],
    group: impl Fn(&'a LayoutNode) -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in homes {
        *counts.entry(group(&layout.nodes[id])).or_insert(0) += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `count` distinct nodes of the layout, or `NotEnoughNodes` when it has too few; the same
    /// answer every time, whatever the layout's version; smaller counts give prefixes.
    #[test]
    fn distinct_complete_deterministic(
        layout in arb_layout(),
        id in any::<[u8; 16]>(),
        part in any::<u32>(),
        count in 0usize..=13,
    ) {
        let id = ObjectId(id);
        let have = layout.nodes.len();
        let got = place(&layout, &id, part, count);
        if count > have {
            prop_assert_eq!(got, Err(PlacementError::NotEnoughNodes { wanted: count, have }));
            return Ok(());
        }
        let homes = got.expect("enough nodes");
        prop_assert_eq!(homes.len(), count);
        let distinct: BTreeSet<u64> = homes.iter().copied().collect();
        prop_assert_eq!(distinct.len(), count);
        prop_assert!(homes.iter().all(|h| layout.nodes.contains_key(h)));

        prop_assert_eq!(place(&layout, &id, part, count), Ok(homes.clone()));
        let mut other_version = layout.clone();
        other_version.version += 17;
        prop_assert_eq!(place(&other_version, &id, part, count), Ok(homes.clone()));

        let all = place(&layout, &id, part, have).expect("every node");
        prop_assert_eq!(&all[..count], &homes[..]);
    }

    /// Zones fill evenly and hosts within a zone fill evenly: a group never holds two more
    /// shards than another group (of the same zone, for hosts) that still has unused nodes.
    #[test]
    fn zones_then_hosts_fill_evenly(
        layout in arb_layout(),
        id in any::<[u8; 16]>(),
        count in 1usize..=12,
    ) {
        prop_assume!(count <= layout.nodes.len());
        let homes = place(&layout, &ObjectId(id), 1, count).expect("enough nodes");
        check_even(&layout, &homes, |n| n.zone.clone(), |_| String::new())?;
        check_even(&layout, &homes, |n| format!("{}/{}", n.zone, n.host), |n| n.zone.clone())?;
    }

    /// Adding a node, in any zone: a part with one home either keeps it or moves to the new node.
    #[test]
    fn one_home_moves_only_to_a_new_node(
        layout in arb_layout(),
        zone in 0u8..5,
        host in 0u8..7,
        weight in 1u32..=WEIGHT_MAX,
        seed in any::<u64>(),
    ) {
        let mut grown = layout.clone();
        grown.version += 1;
        let new_id = 999_983;
        grown.nodes.insert(new_id, node(&format!("z{zone}"), &format!("h{host}"), weight));
        for id in object_ids(24).map(|o| ObjectId(xor_seed(o.0, seed))) {
            let before = place(&layout, &id, 1, 1).expect("one node");
            let after = place(&grown, &id, 1, 1).expect("one node");
            prop_assert!(after == before || after == vec![new_id], "{:?} -> {:?}", before, after);
        }
    }

    /// Raising a node's weight only moves single homes to that node.
    #[test]
    fn more_weight_only_attracts(
        layout in arb_layout(),
        pick in any::<prop::sample::Index>(),
        extra in 1u32..=64,
        seed in any::<u64>(),
    ) {
        let ids: Vec<u64> = layout.nodes.keys().copied().collect();
        let target = ids[pick.index(ids.len())];
        let mut heavier = layout.clone();
        let w = &mut heavier.nodes.get_mut(&target).expect("picked from the layout").weight;
        *w = (*w + extra).min(WEIGHT_MAX);
        for id in object_ids(24).map(|o| ObjectId(xor_seed(o.0, seed))) {
            let before = place(&layout, &id, 7, 1).expect("one node");
            let after = place(&heavier, &id, 7, 1).expect("one node");
            prop_assert!(after == before || after == vec![target], "{:?} -> {:?}", before, after);
        }
    }

    /// In one zone with a host per node, adding a node changes each part's set of homes by at
    /// most one node, and only by handing that home to the new node.
    #[test]
    fn flat_growth_swaps_at_most_one_home(
        layout in arb_flat_layout(),
        weight in 1u32..=32,
        count in 1usize..=10,
        seed in any::<u64>(),
    ) {
        prop_assume!(count <= layout.nodes.len());
        let mut grown = layout.clone();
        let new_id = 500;
        grown.nodes.insert(new_id, node("z", "new-host", weight));
        for id in object_ids(16).map(|o| ObjectId(xor_seed(o.0, seed))) {
            let homes = |l: &Layout| -> BTreeSet<u64> {
                place(l, &id, 2, count).expect("enough nodes").into_iter().collect()
            };
            let (before, after) = (homes(&layout), homes(&grown));
            let lost = before.difference(&after).count();
            let gained: Vec<u64> = after.difference(&before).copied().collect();
            prop_assert!(lost <= 1, "{:?} -> {:?}", before, after);
            prop_assert!(
                gained.is_empty() || gained == vec![new_id],
                "{:?} -> {:?}", before, after
            );
        }
    }

    /// Weights from capacities: always in `1..=WEIGHT_MAX`, never decreasing in capacity, and
    /// within rounding (half a step) of `WEIGHT_MAX * capacity / largest` unless raised to 1.
    #[test]
    fn weights_track_capacity(a in any::<u64>(), b in any::<u64>(), largest in 1u64..) {
        let (lo, hi) = (a.min(b).min(largest), a.max(b).min(largest));
        let (w_lo, w_hi) = (weight_for_capacity(lo, largest), weight_for_capacity(hi, largest));
        prop_assert!((1..=WEIGHT_MAX).contains(&w_lo) && (1..=WEIGHT_MAX).contains(&w_hi));
        prop_assert!(w_lo <= w_hi);
        if w_hi > 1 {
            let exact = u128::from(hi) * u128::from(WEIGHT_MAX);
            let got = u128::from(w_hi) * u128::from(largest);
            prop_assert!(
                2 * exact.abs_diff(got) <= u128::from(largest),
                "{} of {} -> {}", hi, largest, w_hi
            );
        }
        prop_assert_eq!(weight_for_capacity(a, 0), WEIGHT_MAX);
    }
}

/// Checks that no group (as named by `group`) holds two more of `homes` than another group of
/// the same scope (as named by `scope`) that still has unused nodes.
fn check_even(
    layout: &Layout,
    homes: &[u64],
    group: impl Fn(&LayoutNode) -> String,
    scope: impl Fn(&LayoutNode) -> String,
) -> Result<(), TestCaseError> {
    // group -> (scope, nodes, shards)
    let mut groups: BTreeMap<String, (String, usize, usize)> = BTreeMap::new();
    for (id, n) in &layout.nodes {
        let entry = groups.entry(group(n)).or_insert((scope(n), 0, 0));
        entry.1 += 1;
        entry.2 += usize::from(homes.contains(id));
    }
    for (a, (scope_a, nodes_a, used_a)) in &groups {
        if used_a == nodes_a {
            continue;
        }
        for (b, (scope_b, _, used_b)) in &groups {
            prop_assert!(
                scope_a != scope_b || *used_b <= used_a + 1,
                "{} has unused nodes and {} shards, {} has {}: {:?}",
                a,
                used_a,
                b,
                used_b,
                homes
            );
        }
    }
    Ok(())
}

fn xor_seed(mut bytes: [u8; 16], seed: u64) -> [u8; 16] {
    for (b, s) in bytes.iter_mut().zip(seed.to_le_bytes()) {
        *b ^= s;
    }
    bytes
}

/// The mapping defines where data lives: these placements must never change. Six nodes in three
/// zones with mixed weights; every 4+2 placement of four fixed objects, two parts each.
#[test]
fn golden_placements() {
    let layout = layout_of(&[
        (1, "zone-a", "host-1", 256),
        (2, "zone-a", "host-2", 128),
        (3, "zone-b", "host-3", 256),
        (4, "zone-b", "host-4", 64),
        (5, "zone-c", "host-5", 200),
        (6, "zone-c", "host-6", 90),
    ]);
    let objects = [
        ObjectId([0; 16]),
        ObjectId([0xff; 16]),
        ObjectId(*b"hamster golden 1"),
        ObjectId::from_hex("0123456789abcdeffedcba9876543210").expect("hex"),
    ];
    let mut got = Vec::new();
    for object in &objects {
        for part in [1u32, 2] {
            got.push(place(&layout, object, part, 6).expect("six nodes"));
        }
    }
    let expected: [[u64; 6]; 8] = GOLDEN;
    assert_eq!(got, expected.map(|g| g.to_vec()).to_vec());
    // Unequal zones: one big zone and one lone node.
    let lopsided = layout_of(&[
        (10, "east", "e1", 100),
        (20, "east", "e2", 100),
        (30, "east", "e3", 100),
        (40, "west", "w1", 10),
    ]);
    let got: Vec<Vec<u64>> = objects
        .iter()
        .map(|o| place(&lopsided, o, 9, 3).expect("four nodes"))
        .collect();
    assert_eq!(got, GOLDEN_LOPSIDED.map(|g| g.to_vec()).to_vec());
}

const GOLDEN: [[u64; 6]; 8] = [
    [3, 5, 1, 4, 6, 2],
    [1, 3, 5, 6, 2, 4],
    [5, 2, 3, 1, 4, 6],
    [3, 1, 5, 4, 6, 2],
    [5, 3, 1, 2, 6, 4],
    [3, 1, 5, 4, 2, 6],
    [3, 6, 2, 4, 5, 1],
    [3, 2, 6, 1, 5, 4],
];
const GOLDEN_LOPSIDED: [[u64; 3]; 4] = [[20, 40, 30], [20, 40, 30], [20, 40, 30], [20, 40, 10]];

/// First picks follow weight: nodes of weight 1, 1, 2, 4, 8 (one zone, one host each) each win
/// the top spot for within ±15% (relative) of `w / Σw` of 20,000 objects.
#[test]
fn first_picks_follow_weight() {
    let weights = [1u32, 1, 2, 4, 8];
    let layout = flat_layout(&weights);
    assert_first_picks_within(&layout, 20_000, 15);
}

/// Weights at full scale, as capacities of 4, 2, 1 and 0.5 units produce them (256, 128, 64, 32):
/// first picks within ±15% (relative) of `w / Σw` over 10,000 objects.
#[test]
fn first_picks_follow_capacity_weights() {
    let weights: Vec<u32> = [8u64, 4, 2, 1]
        .iter()
        .map(|&c| weight_for_capacity(c, 8))
        .collect();
    assert_eq!(weights, [256, 128, 64, 32]);
    assert_first_picks_within(&flat_layout(&weights), 10_000, 15);
}

fn assert_first_picks_within(layout: &Layout, n: u64, percent: u64) {
    let total: u64 = layout.nodes.values().map(|v| u64::from(v.weight)).sum();
    let mut wins: BTreeMap<u64, u64> = BTreeMap::new();
    for id in object_ids(n) {
        *wins
            .entry(place(layout, &id, 1, 1).expect("nodes")[0])
            .or_insert(0) += 1;
    }
    for (id, v) in &layout.nodes {
        let got = wins.get(id).copied().unwrap_or(0);
        let w = u64::from(v.weight);
        // |got / n - w / total| <= percent% of w / total, in integers.
        let error = (got * total).abs_diff(n * w);
        assert!(
            error * 100 <= percent * n * w,
            "node {id} (weight {w} of {total}): {got} of {n} first picks"
        );
    }
}

/// All shards of 3+2 parts over eight equal nodes: each node holds within ±10% of 5/8 of them.
#[test]
fn equal_nodes_hold_equal_shares() {
    let layout = flat_layout(&[16; 8]);
    let n = 8_000u64;
    let mut held: BTreeMap<u64, u64> = BTreeMap::new();
    for id in object_ids(n) {
        for home in place(&layout, &id, 3, 5).expect("eight nodes") {
            *held.entry(home).or_insert(0) += 1;
        }
    }
    let expected = n * 5 / 8;
    for (id, count) in held {
        assert!(
            count.abs_diff(expected) * 10 <= expected,
            "node {id}: {count} shards"
        );
    }
}

/// Adding a tenth node to nine (one zone, one host each): for one home, every object that moves
/// moves to the new node, and the share that moves is within ±15% (relative) of its weight
/// share; for 4+2 parts, each set of homes loses at most one node and only to the new node, and
/// the fraction of homes that change is at most twice the new node's share plus 1%.
#[test]
fn adding_a_node_moves_only_its_share() {
    for (old, new) in [
        (vec![16u32; 9], 16u32),
        (vec![8, 16, 24, 32, 8, 16, 24, 32, 40], 48),
    ] {
        let before = flat_layout(&old);
        let mut after = before.clone();
        after.version += 1;
        let new_id = 100;
        after.nodes.insert(new_id, node("z", "h-new", new));
        let total = u64::from(old.iter().sum::<u32>() + new);
        let new = u64::from(new);
        let shards = profile_for_nodes(10).shards() as u64;
        let n = 10_000u64;
        let (mut moved, mut changed) = (0u64, 0u64);
        for id in object_ids(n) {
            let a = place(&before, &id, 1, 1).expect("nine nodes");
            let b = place(&after, &id, 1, 1).expect("ten nodes");
            if a != b {
                assert_eq!(b, vec![new_id], "a single home moved to an old node");
                moved += 1;
            }
            let a: BTreeSet<u64> = place(&before, &id, 1, shards as usize)
                .expect("nine")
                .into_iter()
                .collect();
            let b: BTreeSet<u64> = place(&after, &id, 1, shards as usize)
                .expect("ten")
                .into_iter()
                .collect();
            let lost = a.difference(&b).count() as u64;
            let gained: Vec<u64> = b.difference(&a).copied().collect();
            assert!(lost <= 1, "{a:?} -> {b:?}");
            assert!(
                gained.is_empty() || gained == vec![new_id],
                "{a:?} -> {b:?}"
            );
            changed += lost;
        }
        // moved / n within 15% of new / total.
        assert!(
            (moved * total).abs_diff(n * new) * 100 <= 15 * n * new,
            "{moved} of {n} single homes moved; share {new}/{total}"
        );
        // changed / (shards * n) <= 2 * new / total + 1 / 100.
        assert!(
            changed * total * 100 <= shards * n * (200 * new + total),
            "{changed} of {} homes changed; share {new}/{total}",
            shards * n
        );
    }
}

/// Three zones of two nodes: six shards put two in each zone, three shards one in each.
#[test]
fn shards_spread_over_zones() {
    let layout = layout_of(&[
        (1, "z1", "a", 256),
        (2, "z1", "b", 1),
        (3, "z2", "c", 100),
        (4, "z2", "d", 100),
        (5, "z3", "e", 3),
        (6, "z3", "f", 7),
    ]);
    for id in object_ids(1_000) {
        for (count, each) in [(6, 2), (3, 1)] {
            let homes = place(&layout, &id, 1, count).expect("six nodes");
            let zones = tally(&layout, &homes, |n| n.zone.clone());
            assert_eq!(zones.len(), 3, "{homes:?}");
            assert!(zones.values().all(|&c| c == each), "{zones:?}");
        }
    }
}

/// Within a zone, a second host is used before a host gets its second shard.
#[test]
fn hosts_before_nodes() {
    let layout = layout_of(&[
        (1, "z", "big", 256),
        (2, "z", "big", 256),
        (3, "z", "big", 256),
        (4, "z", "small", 1),
    ]);
    for id in object_ids(500) {
        let homes = place(&layout, &id, 1, 2).expect("four nodes");
        assert!(homes.contains(&4), "{homes:?}");
    }
}
