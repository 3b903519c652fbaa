//! The ListObjects (v1 and v2) paginator: which keys and common prefixes one page holds, whether
//! more follow, and the opaque continuation token. It runs over a seekable [`KeyCursor`] so that
//! a page costs work proportional to the page, not to the bucket: when a delimiter rolls many
//! keys into one common prefix, the paginator seeks past them instead of walking them.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::Bound;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::s3err::{S3Error, S3ErrorCode};

/// The most entries (objects plus common prefixes) one page may hold; a larger `max-keys` is
/// clamped to this, as S3 does.
pub const MAX_KEYS_MAX: usize = 1000;

/// First byte of a decoded continuation token. It marks the token's format so that a later
/// format can be told apart from this one, and so that random base64 is mostly refused.
const TOKEN_FORMAT_V1: u8 = 1;

/// A source of keys in ascending byte order that can jump forward.
pub trait KeyCursor {
    /// What the cursor yields alongside each key (an object's metadata, say).
    type Item;
    /// Positions the cursor so that the next [`KeyCursor::next`] returns the first key `>= from`.
    fn seek(&mut self, from: &str);
    /// The next key in ascending byte order, with its item; `None` at the end.
    fn next(&mut self) -> Option<(String, Self::Item)>;
}

/// What one ListObjects request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    /// Only keys starting with this are listed.
    pub prefix: String,
    /// Groups keys sharing the text up to this after the prefix; `None` or `""` means no grouping.
    pub delimiter: Option<String>,
    /// Exclusive lower bound: `start-after`, `marker`, or a decoded continuation token.
    pub after: Option<String>,
    /// Most entries in the page, `0..=1000`; larger values are clamped to [`MAX_KEYS_MAX`].
    pub max_keys: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Objects in the page, in key order.
    pub objects: Vec<(String, T)>,
    /// Common prefixes in the page, in order; each counts as one entry toward `max_keys`.
    pub common_prefixes: Vec<String>,
    /// Whether at least one more entry follows this page.
    pub is_truncated: bool,
    /// When truncated: the last entry returned (a key or a common prefix), to pass as `after`
    /// for the next page.
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    fn empty() -> Self {
        Page {
            objects: Vec::new(),
            common_prefixes: Vec::new(),
            is_truncated: false,
            next_after: None,
        }
    }

    /// Entries in the page: objects plus common prefixes (S3's `KeyCount`).
    pub fn key_count(&self) -> usize {
        self.objects.len() + self.common_prefixes.len()
    }
}

/// The common prefix `key` rolls up into: the prefix plus the text up to and including the first
/// delimiter after it; `None` when the key has no delimiter after the prefix.
fn common_prefix_of<'k>(key: &'k str, prefix: &str, delimiter: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

/// The smallest string greater than every string that starts with `p`, or `None` if there is
/// none (every character of `p` is U+10FFFF). Working in characters rather than bytes keeps the
/// result valid UTF-8, and UTF-8 byte order equals code point order, so it is also the right
/// seek target in byte order.
fn prefix_successor(p: &str) -> Option<String> {
    let mut s = p.to_string();
    while let Some(c) = s.pop() {
        let next = match c as u32 {
            0x10FFFF => None,
            // Surrogates are not characters; the one after U+D7FF is U+E000.
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(n) = next {
            s.push(n);
            return Some(s);
        }
    }
    None
}

/// Computes one page of a listing from `cursor`.
///
/// Entries are objects and common prefixes interleaved in key order; together they count toward
/// `max_keys`. A key in `after`'s own common prefix is never returned (that prefix was already
/// on an earlier page), and `max_keys == 0` gives an empty page that is not truncated, as AWS
/// answers. The cursor sees at most one `next()` per returned entry plus one to learn whether
/// the page is truncated, and one `seek()` per common prefix.
pub fn paginate<C: KeyCursor>(cursor: &mut C, params: &ListParams) -> Page<C::Item> {
    let mut page = Page::empty();
    let max_keys = params.max_keys.min(MAX_KEYS_MAX);
    if max_keys == 0 {
        return page;
    }
    let prefix = params.prefix.as_str();
    let delimiter = params.delimiter.as_deref().filter(|d| !d.is_empty());
    let after = params.after.as_deref();

    // Keys under this common prefix are at or before `after`'s group and must not reappear.
    let mut skip: Option<String> = None;
    match after {
        Some(a) if a >= prefix => match delimiter.and_then(|d| common_prefix_of(a, prefix, d)) {
            Some(cp) => match prefix_successor(cp) {
                Some(next) => {
                    skip = Some(cp.to_string());
                    cursor.seek(&next);
                }
                None => return page,
            },
            None => cursor.seek(a),
        },
        _ => cursor.seek(prefix),
    }

    let mut last: Option<String> = None;
    while let Some((key, item)) = cursor.next() {
        // Keys sharing a prefix are contiguous in byte order, and we began at or after the
        // prefix, so the first key without it ends the listing.
        if !key.starts_with(prefix) {
            break;
        }
        if after.is_some_and(|a| key.as_str() <= a)
            || skip.as_deref().is_some_and(|s| key.starts_with(s))
        {
            continue;
        }
        if page.key_count() == max_keys {
            page.is_truncated = true;
            page.next_after = last;
            return page;
        }
        match delimiter.and_then(|d| common_prefix_of(&key, prefix, d)) {
            Some(cp) => {
                let cp = cp.to_string();
                match prefix_successor(&cp) {
                    Some(next) => cursor.seek(&next),
                    None => {
                        // Nothing can sort after this group: it is the last entry there is.
                        page.common_prefixes.push(cp);
                        return page;
                    }
                }
                page.common_prefixes.push(cp.clone());
                last = Some(cp.clone());
                skip = Some(cp);
            }
            None => {
                last = Some(key.clone());
                page.objects.push((key, item));
            }
        }
    }
    page
}

/// The opaque `NextContinuationToken` for a listing that continues after `after`.
pub fn encode_continuation(after: &str) -> String {
    let mut raw = Vec::with_capacity(after.len() + 1);
    raw.push(TOKEN_FORMAT_V1);
    raw.extend_from_slice(after.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// The `after` bound carried by a continuation token from [`encode_continuation`]; a token we
/// did not mint is `InvalidArgument`, as on S3.
pub fn decode_continuation(token: &str) -> Result<String, S3Error> {
    let bad = || {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "The continuation token provided is incorrect",
        )
    };
    let raw = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| bad())?;
    match raw.split_first() {
        Some((&TOKEN_FORMAT_V1, rest)) => String::from_utf8(rest.to_vec()).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A [`KeyCursor`] over an in-memory `BTreeMap`, for tests and small in-memory listings.
pub struct BTreeCursor<'a, T> {
    map: &'a BTreeMap<String, T>,
    range: btree_map::Range<'a, String, T>,
}

impl<'a, T> BTreeCursor<'a, T> {
    /// A cursor positioned at the map's first key.
    pub fn new(map: &'a BTreeMap<String, T>) -> Self {
        BTreeCursor {
            map,
            range: map.range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
        }
    }
}

impl<'a, T> KeyCursor for BTreeCursor<'a, T> {
    type Item = &'a T;

    fn seek(&mut self, from: &str) {
        self.range = self
            .map
            .range::<str, _>((Bound::Included(from), Bound::Unbounded));
    }

    fn next(&mut self) -> Option<(String, &'a T)> {
        self.range.next().map(|(k, v)| (k.clone(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_skips_surrogates_and_carries() {
        assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_successor(""), None);
    }

    #[test]
    fn common_prefix_uses_first_delimiter_after_prefix() {
        assert_eq!(common_prefix_of("a/b/c", "", "/"), Some("a/"));
        assert_eq!(common_prefix_of("a/b/c", "a/", "/"), Some("a/b/"));
        assert_eq!(common_prefix_of("a/b", "a/", "/"), None);
        assert_eq!(common_prefix_of("x--y--z", "x", "--"), Some("x--"));
    }

    #[test]
    fn token_round_trips_and_rejects_foreign_tokens() {
        for after in ["", "a/b", "日本/ key+%"] {
            assert_eq!(
                decode_continuation(&encode_continuation(after)).unwrap(),
                after
            );
        }
        for bad in ["!!!", "", "YWJj", "AP8"] {
            assert_eq!(
                decode_continuation(bad).unwrap_err().code,
                S3ErrorCode::InvalidArgument
            );
        }
    }
}
