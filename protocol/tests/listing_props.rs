//! Properties of the ListObjects paginator, checked against a naive model that walks every key:
//! following `next_after` page by page yields exactly the one-shot listing (sorted, no
//! duplicates, groups rolled up correctly), and a page over a huge common prefix costs work
//! proportional to the page, not to the bucket.

use std::collections::{BTreeMap, BTreeSet};

use hamster_protocol::listing::{
    decode_continuation, encode_continuation, paginate, BTreeCursor, KeyCursor, ListParams, Page,
};
use proptest::prelude::*;

/// One listing entry in key order: an object key or a common prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Object(String),
    Prefix(String),
}

impl Entry {
    fn text(&self) -> &str {
        match self {
            Entry::Object(s) | Entry::Prefix(s) => s,
        }
    }
}

/// The naive model: walk every key, keep those under the prefix, roll each up to its common
/// prefix if it has one, drop repeats, and keep only entries strictly after `after`.
fn naive(
    keys: &BTreeSet<String>,
    prefix: &str,
    delim: Option<&str>,
    after: Option<&str>,
) -> Vec<Entry> {
    let delim = delim.filter(|d| !d.is_empty());
    let mut out: Vec<Entry> = Vec::new();
    for key in keys.iter().filter(|k| k.starts_with(prefix)) {
        let rest = &key[prefix.len()..];
        let entry = match delim.and_then(|d| rest.find(d).map(|i| i + d.len())) {
            Some(end) => Entry::Prefix(key[..prefix.len() + end].to_string()),
            None => Entry::Object(key.clone()),
        };
        if out.last() != Some(&entry) {
            out.push(entry);
        }
    }
    out.retain(|e| after.is_none_or(|a| e.text() > a));
    out
}

/// A page's entries merged back into key order.
fn entries<T>(page: &Page<T>) -> Vec<Entry> {
    let mut all: Vec<Entry> = page
        .objects
        .iter()
        .map(|(k, _)| Entry::Object(k.clone()))
        .collect();
    all.extend(page.common_prefixes.iter().cloned().map(Entry::Prefix));
    all.sort_by(|a, b| a.text().cmp(b.text()));
    all
}

/// Lists everything by following `next_after`, checking each page's own contract on the way.
fn list_all(
    map: &BTreeMap<String, u32>,
    prefix: &str,
    delim: Option<&str>,
    after: Option<&str>,
    max_keys: usize,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut after = after.map(str::to_string);
    for _ in 0..=map.len() + 1 {
        let params = ListParams {
            prefix: prefix.to_string(),
            delimiter: delim.map(str::to_string),
            after: after.clone(),
            max_keys,
        };
        let page = paginate(&mut BTreeCursor::new(map), &params);
        let got = entries(&page);
        assert!(got.len() <= max_keys, "page larger than max_keys");
        for (key, value) in &page.objects {
            assert_eq!(map.get(key), Some(*value), "item must belong to its key");
        }
        out.extend(got.iter().cloned());
        if !page.is_truncated {
            assert_eq!(page.next_after, None);
            return out;
        }
        assert_eq!(got.len(), max_keys, "a truncated page must be full");
        let next = page
            .next_after
            .clone()
            .expect("truncated page names where to continue");
        assert_eq!(Some(next.as_str()), got.last().map(Entry::text));
        // The continuation token must carry the bound through unchanged.
        after = Some(decode_continuation(&encode_continuation(&next)).unwrap());
    }
    panic!("pagination did not terminate");
}

fn key_strategy() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "b",
        "/",
        " ",
        "+",
        "%",
        "é",
        "日",
        "-",
        "\u{10FFFF}",
    ]);
    prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat())
}

fn keys_strategy() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(
        key_strategy().prop_filter("keys are non-empty", |k| !k.is_empty()),
        0..60,
    )
}

fn delim_strategy() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["/", "é", "a/", "", "\u{10FFFF}"]).prop_map(String::from),
    )
}

fn to_map(keys: &BTreeSet<String>) -> BTreeMap<String, u32> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u32))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Following pages from any starting bound gives the one-shot listing: same entries,
    /// sorted, none repeated.
    #[test]
    fn pages_concatenate_to_full_listing(
        keys in keys_strategy(),
        prefix in prop::collection::vec(prop::sample::select(vec!["a", "/", "é", "b"]), 0..3).prop_map(|v| v.concat()),
        delim in delim_strategy(),
        after in prop::option::of(key_strategy()),
        max_keys in 1usize..8,
    ) {
        let map = to_map(&keys);
        let expected = naive(&keys, &prefix, delim.as_deref(), after.as_deref());
        let got = list_all(&map, &prefix, delim.as_deref(), after.as_deref(), max_keys);
        prop_assert_eq!(&got, &expected);
        let texts: Vec<&str> = got.iter().map(Entry::text).collect();
        prop_assert!(texts.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {:?}", texts);
    }

    /// (b) One big page groups exactly as the model: each key under the prefix appears either
    /// as an object (no delimiter after the prefix) or inside exactly one returned prefix.
    #[test]
    fn delimiter_grouping_matches_model(
        keys in keys_strategy(),
        prefix in prop::collection::vec(prop::sample::select(vec!["a", "/", "é"]), 0..2).prop_map(|v| v.concat()),
        delim in delim_strategy(),
    ) {
        let map = to_map(&keys);
        let params = ListParams { prefix: prefix.clone(), delimiter: delim.clone(), after: None, max_keys: 1000 };
        let page = paginate(&mut BTreeCursor::new(&map), &params);
        prop_assert!(!page.is_truncated);
        prop_assert_eq!(entries(&page), naive(&keys, &prefix, delim.as_deref(), None));
        let d = delim.as_deref().filter(|d| !d.is_empty());
        for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
            let grouped: Vec<&String> = page.common_prefixes.iter().filter(|p| key.starts_with(p.as_str())).collect();
            let listed = page.objects.iter().any(|(k, _)| k == key);
            match d.and_then(|d| key[prefix.len()..].find(d)) {
                Some(_) => prop_assert!(grouped.len() == 1 && !listed, "{:?} must be in one group", key),
                None => prop_assert!(grouped.is_empty() && listed, "{:?} must be an object", key),
            }
        }
        for p in &page.common_prefixes {
            let d = d.expect("prefixes only with a delimiter");
            prop_assert!(p.starts_with(&prefix) && p.ends_with(d));
            prop_assert_eq!(p[prefix.len()..].find(d).map(|i| i + d.len()), Some(p.len() - prefix.len()));
        }
    }

    /// max-keys 0 is always an empty page that is not truncated, as AWS answers.
    #[test]
    fn zero_max_keys_is_empty_and_complete(keys in keys_strategy(), delim in delim_strategy()) {
        let map = to_map(&keys);
        let params = ListParams { prefix: String::new(), delimiter: delim, after: None, max_keys: 0 };
        let page = paginate(&mut BTreeCursor::new(&map), &params);
        prop_assert_eq!(page.key_count(), 0);
        prop_assert!(!page.is_truncated);
        prop_assert_eq!(page.next_after, None);
    }

    /// Any string survives the continuation token.
    #[test]
    fn continuation_token_round_trips(s in ".*") {
        prop_assert_eq!(decode_continuation(&encode_continuation(&s)).unwrap(), s);
    }
}

fn map_of(keys: &[&str]) -> BTreeMap<String, u32> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), i as u32))
        .collect()
}

fn page_of<'m>(
    map: &'m BTreeMap<String, u32>,
    prefix: &str,
    delim: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Page<&'m u32> {
    let params = ListParams {
        prefix: prefix.into(),
        delimiter: delim.map(Into::into),
        after: after.map(Into::into),
        max_keys: max,
    };
    paginate(&mut BTreeCursor::new(map), &params)
}

fn object_keys<'p>(page: &'p Page<&u32>) -> Vec<&'p str> {
    page.objects.iter().map(|(k, _)| k.as_str()).collect()
}

/// Worked examples of the S3 rules, for a reader who wants to see them concretely.
#[test]
fn s3_examples() {
    let map = map_of(&["a/1", "a/2", "a/b/3", "b", "c/4", "c0"]);
    let page = page_of(&map, "", Some("/"), None, 1000);
    assert_eq!(object_keys(&page), ["b", "c0"]);
    assert_eq!(page.common_prefixes, ["a/", "c/"]);

    // Objects and prefixes share max_keys, interleaved in key order.
    let page = page_of(&map, "", Some("/"), None, 2);
    assert_eq!(object_keys(&page), ["b"]);
    assert_eq!(page.common_prefixes, ["a/"]);
    assert!(page.is_truncated);
    assert_eq!(page.next_after.as_deref(), Some("b"));

    // After a bound inside a group, that group is not returned again.
    for after in ["a/", "a/1", "a/b/3"] {
        let page = page_of(&map, "", Some("/"), Some(after), 1000);
        assert_eq!(page.common_prefixes, ["c/"], "after {after}");
        assert_eq!(object_keys(&page), ["b", "c0"]);
    }
    // A bound just before the group still shows it.
    assert_eq!(
        page_of(&map, "", Some("/"), Some("a"), 1000).common_prefixes,
        ["a/", "c/"]
    );

    // With a prefix, groups are cut at the first delimiter after the prefix.
    let page = page_of(&map, "a/", Some("/"), None, 1000);
    assert_eq!(object_keys(&page), ["a/1", "a/2"]);
    assert_eq!(page.common_prefixes, ["a/b/"]);

    // An empty delimiter is no delimiter; an exact fit is not truncated.
    let page = page_of(&map, "", Some(""), None, 6);
    assert_eq!(page.key_count(), 6);
    assert!(!page.is_truncated);
    assert_eq!(page.next_after, None);
}

/// A cursor that counts what the paginator asks of it.
struct Counting<'a> {
    inner: BTreeCursor<'a, u32>,
    seeks: usize,
    nexts: usize,
}

impl<'a> KeyCursor for Counting<'a> {
    type Item = &'a u32;
    fn seek(&mut self, from: &str) {
        self.seeks += 1;
        self.inner.seek(from);
    }
    fn next(&mut self) -> Option<(String, &'a u32)> {
        self.nexts += 1;
        self.inner.next()
    }
}

/// (c) A page over a bucket of 100 000 keys under one common prefix touches only the page:
/// the paginator seeks past the group instead of walking its keys.
#[test]
fn page_cost_is_independent_of_group_size() {
    let mut map: BTreeMap<String, u32> = (0..100_000u32)
        .map(|i| (format!("big/{i:06}"), i))
        .collect();
    for k in ["a", "b", "big0", "c/1", "c/2", "d", "e", "f/x", "g"] {
        map.insert(k.to_string(), 0);
    }
    let max_keys = 5;
    let mut listed: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut cursor = Counting {
            inner: BTreeCursor::new(&map),
            seeks: 0,
            nexts: 0,
        };
        let params = ListParams {
            prefix: String::new(),
            delimiter: Some("/".into()),
            after: after.clone(),
            max_keys,
        };
        let page = paginate(&mut cursor, &params);
        // One next() per entry returned, plus one to learn whether the page is truncated.
        assert!(
            cursor.nexts <= max_keys + 1,
            "{} next() calls for a page of {max_keys}",
            cursor.nexts
        );
        assert!(
            cursor.seeks <= max_keys + 1,
            "{} seek() calls",
            cursor.seeks
        );
        listed.extend(entries(&page).iter().map(|e| e.text().to_string()));
        if !page.is_truncated {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(
        listed,
        ["a", "b", "big/", "big0", "c/", "d", "e", "f/", "g"]
    );

    // Resuming from a bound deep inside the big group jumps straight past it too.
    let mut cursor = Counting {
        inner: BTreeCursor::new(&map),
        seeks: 0,
        nexts: 0,
    };
    let params = ListParams {
        prefix: String::new(),
        delimiter: Some("/".into()),
        after: Some("big/000007".into()),
        max_keys: 2,
    };
    let page = paginate(&mut cursor, &params);
    assert_eq!(object_keys_u32(&page), ["big0"]);
    assert_eq!(page.common_prefixes, ["c/"]);
    assert!(cursor.nexts <= 3, "{} next() calls", cursor.nexts);

    // Without a delimiter a page still reads only what it returns.
    let mut cursor = Counting {
        inner: BTreeCursor::new(&map),
        seeks: 0,
        nexts: 0,
    };
    let params = ListParams {
        prefix: "big/".into(),
        delimiter: None,
        after: Some("big/050000".into()),
        max_keys: 3,
    };
    let page = paginate(&mut cursor, &params);
    assert_eq!(
        object_keys_u32(&page),
        ["big/050001", "big/050002", "big/050003"]
    );
    assert!(cursor.nexts <= 5, "{} next() calls", cursor.nexts);
}

fn object_keys_u32(page: &Page<&u32>) -> Vec<String> {
    page.objects.iter().map(|(k, _)| k.clone()).collect()
}
