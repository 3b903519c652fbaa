//! Properties of placement (INV-3): homes are distinct, deterministic, proportional to weight,
//! spread over failure domains, and move little when a node joins.

use std::collections::{BTreeMap, BTreeSet};

use hamster_protocol::meta::ObjectId;
use hamster_protocol::placement::{place, Layout, LayoutNode, WEIGHT_MAX};
use proptest::prelude::*;

fn node(zone: &str, host: &str, weight: u32) -> LayoutNode {
    LayoutNode {
        zone: zone.into(),
        host: host.into(),
        weight,
    }
}

/// Object ids spread over the id space, deterministically.
fn ids(n: usize) -> impl Iterator<Item = ObjectId> {
    (0..n as u64).map(|i| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        b[8..].copy_from_slice(&(i ^ 0x5555).to_be_bytes());
        ObjectId(b)
    })
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    prop::collection::vec((0u8..4, 0u8..6, 1u32..=WEIGHT_MAX), 1..=12).prop_map(|nodes| Layout {
        version: 1,
        nodes: nodes
            .into_iter()
            .enumerate()
            .map(|(i, (z, h, w))| {
                (
                    (i as u64 + 1) * 1_000_003,
                    node(&format!("z{z}"), &format!("h{h}"), w),
                )
            })
            .collect(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Always `count` distinct members of the layout, and the same answer every time.
    #[test]
    fn distinct_and_deterministic(layout in arb_layout(), id in any::<[u8; 16]>(), part in 1u32..10_000, count in 0usize..13) {
        let got = place(&layout, &ObjectId(id), part, count);
        if count > layout.nodes.len() {
            prop_assert!(got.is_err());
        } else {
            let homes = got.unwrap();
            prop_assert_eq!(homes.len(), count);
            let set: BTreeSet<u64> = homes.iter().copied().collect();
            prop_assert_eq!(set.len(), count);
            prop_assert!(homes.iter().all(|h| layout.nodes.contains_key(h)));
            prop_assert_eq!(place(&layout, &ObjectId(id), part, count).unwrap(), homes);
        }
    }

    /// Zones are used evenly: no zone gets a second shard before every zone has one, and so on.
    #[test]
    fn zones_fill_evenly(layout in arb_layout(), id in any::<[u8; 16]>(), count in 1usize..13) {
        prop_assume!(count <= layout.nodes.len());
        let homes = place(&layout, &ObjectId(id), 1, count).unwrap();
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        let mut capacity: BTreeMap<&str, usize> = BTreeMap::new();
        for n in layout.nodes.values() {
            *capacity.entry(n.zone.as_str()).or_default() += 1;
        }
        for h in &homes {
            *per_zone.entry(layout.nodes[h].zone.as_str()).or_default() += 1;
        }
        // A zone that is not full never holds two more than another zone.
        let counts: Vec<(usize, usize)> = capacity
            .iter()
            .map(|(z, cap)| (per_zone.get(z).copied().unwrap_or(0), *cap))
            .collect();
        for (a, cap_a) in &counts {
            for (b, _) in &counts {
                if a < cap_a {
                    prop_assert!(*b <= a + 1, "zone counts {:?}", counts);
                }
            }
        }
    }
}

/// First picks follow weight: nodes of weight 1, 1, 2, 4, 8 (one zone, distinct hosts) win the
/// top spot within ±15% (relative) of w / Σw over 20,000 objects.
#[test]
fn first_picks_are_proportional_to_weight() {
    let weights = [1u32, 1, 2, 4, 8];
    let layout = Layout {
        version: 1,
        nodes: weights
            .iter()
            .enumerate()
            .map(|(i, w)| (i as u64 + 1, node("z", &format!("h{i}"), *w)))
            .collect(),
    };
    let total: u32 = weights.iter().sum();
    let n = 20_000usize;
    let mut wins: BTreeMap<u64, usize> = BTreeMap::new();
    for id in ids(n) {
        *wins
            .entry(place(&layout, &id, 1, 1).unwrap()[0])
            .or_default() += 1;
    }
    for (i, w) in weights.iter().enumerate() {
        let expected = n as f64 * f64::from(*w) / f64::from(total);
        let got = wins.get(&(i as u64 + 1)).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= 0.15 * expected,
            "node of weight {w}: {got} first picks, expected about {expected}"
        );
    }
}

/// Equal nodes hold equal shares of all shards of 3+2 parts (±10%).
#[test]
fn shards_spread_evenly_over_equal_nodes() {
    let layout = Layout {
        version: 1,
        nodes: (1..=8)
            .map(|i| (i, node("z", &format!("h{i}"), 64)))
            .collect(),
    };
    let mut held: BTreeMap<u64, usize> = BTreeMap::new();
    let n = 10_000usize;
    for id in ids(n) {
        for h in place(&layout, &id, 1, 5).unwrap() {
            *held.entry(h).or_default() += 1;
        }
    }
    let expected = (n * 5) as f64 / 8.0;
    for (node, count) in held {
        let c = count as f64;
        assert!(
            (c - expected).abs() <= 0.10 * expected,
            "node {node}: {count} shards"
        );
    }
}

/// Adding a node: single picks only move to the new node (about its share), and shard homes of
/// six-shard parts change by little more than the new node's share.
#[test]
fn adding_a_node_moves_little() {
    let before = Layout {
        version: 1,
        nodes: (1..=9)
            .map(|i| (i, node("z", &format!("h{i}"), 64)))
            .collect(),
    };
    let mut after = before.clone();
    after.version = 2;
    after.nodes.insert(10, node("z", "h10", 64));
    let n = 10_000usize;
    let (mut moved_single, mut changed_homes) = (0usize, 0usize);
    for id in ids(n) {
        let a = place(&before, &id, 1, 1).unwrap();
        let b = place(&after, &id, 1, 1).unwrap();
        if a != b {
            assert_eq!(b, vec![10], "a single pick moved to an old node");
            moved_single += 1;
        }
        let a = place(&before, &id, 1, 6).unwrap();
        let b = place(&after, &id, 1, 6).unwrap();
        let a: BTreeSet<u64> = a.into_iter().collect();
        let b: BTreeSet<u64> = b.into_iter().collect();
        let lost: Vec<u64> = a.difference(&b).copied().collect();
        let gained: Vec<u64> = b.difference(&a).copied().collect();
        // A home set changes only by handing one shard to the new node.
        assert!(
            lost.len() <= 1 && (gained.is_empty() || gained == vec![10]),
            "{a:?} -> {b:?}"
        );
        changed_homes += lost.len();
    }
    // The new node's share: 1/10 of single picks, 6/10 of six-shard parts gain it.
    let single_share = moved_single as f64 / n as f64;
    assert!(
        (0.07..=0.13).contains(&single_share),
        "single picks moved: {single_share}"
    );
    let home_share = changed_homes as f64 / (6 * n) as f64;
    assert!(
        home_share <= 2.0 * 0.1 + 0.01,
        "homes changed: {home_share}"
    );
}

/// Three zones of two nodes: six shards put two in each zone, three shards one in each.
#[test]
fn zones_before_hosts_before_nodes() {
    let layout = Layout {
        version: 1,
        nodes: (1..=6)
            .map(|i| (i, node(&format!("z{}", i % 3), &format!("h{i}"), 64)))
            .collect(),
    };
    for id in ids(500) {
        for (count, per_zone) in [(6usize, 2usize), (3, 1)] {
            let mut zones: BTreeMap<String, usize> = BTreeMap::new();
            for h in place(&layout, &id, 1, count).unwrap() {
                *zones.entry(layout.nodes[&h].zone.clone()).or_default() += 1;
            }
            assert!(zones.values().all(|c| *c == per_zone), "{zones:?}");
        }
    }
    // Two hosts in one zone, one of them with two nodes: a second shard in the zone goes to
    // the other host first.
    let layout = Layout {
        version: 1,
        nodes: [(1, "z", "a"), (2, "z", "a"), (3, "z", "b")]
            .into_iter()
            .map(|(i, z, h)| (i, node(z, h, 64)))
            .collect(),
    };
    for id in ids(500) {
        let homes = place(&layout, &id, 1, 2).unwrap();
        let hosts: BTreeSet<&str> = homes
            .iter()
            .map(|h| layout.nodes[h].host.as_str())
            .collect();
        assert_eq!(hosts.len(), 2, "{homes:?}");
    }
}
