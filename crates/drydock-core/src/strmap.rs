//! A string-to-string map held compactly: a node's labels and annotations, for every
//! node of a fleet.
//!
//! The operator keeps every Node's labels and annotations for as long as it runs, and a
//! pass or a write reply may hold a second copy of a node. As a `BTreeMap<String,
//! String>`, a node's two dozen drydock annotations take about 4 KB: two allocations
//! per entry (key and value) and tree nodes sized for eleven entries each. [`StrMap`]
//! holds the same entries in two allocations, all keys and values in one string and
//! their bounds in one slice, about 1.5 KB for the same node (a heap profile of a
//! 5,000-node rollout found the maps to be half of the operator's peak heap). It is
//! built once and read many times; changing it rebuilds it, which is fine for what it
//! holds (a few dozen entries, changed by decoding a new version of the object).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// Reading a string value by its key, whatever map holds it: label selectors, pool
/// selection and the node protocol read a [`StrMap`] and a `BTreeMap` alike.
pub trait Lookup {
    /// The value under `key`.
    fn lookup(&self, key: &str) -> Option<&str>;
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Lookup for StrMap {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

/// A sorted map from strings to strings, in two allocations whatever its size.
///
/// Entries are kept in key order (byte order, as `BTreeMap<String, String>` orders
/// them), each key once. Equal maps are equal field by field, because a map's layout
/// follows from its entries alone.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StrMap {
    /// Every key followed by its value, entry after entry, in key order.
    text: Box<str>,
    /// Each entry's bounds in `text`: where its key ends (its value begins), and where
    /// its value ends (the next entry's key begins).
    ends: Box<[[usize; 2]]>,
}

impl StrMap {
    /// The empty map (no allocation).
    pub fn new() -> StrMap {
        StrMap::default()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn entry(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 { 0 } else { self.ends[i - 1][1] };
        let [key_end, value_end] = self.ends[i];
        (&self.text[start..key_end], &self.text[key_end..value_end])
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        // `ends` is sorted by key, so a binary search over the entries' keys.
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid).0.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.entry(i).1)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            map: self,
            front: 0,
            back: self.len(),
        }
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Sets `key` to `value`; the value it had, if any. Rebuilds the map.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        let old = self.get(&key).map(str::to_string);
        let mut all = self.to_btree();
        all.insert(key, value);
        *self = StrMap::from(all);
        old
    }

    /// Removes `key`; the value it had, if any. Rebuilds the map when it had one.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.find(key).ok()?;
        let old = self.entry(i).1.to_string();
        *self = self
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, e)| e)
            .collect();
        Some(old)
    }

    /// The entries as a `BTreeMap`, owned (for a caller that edits them and writes them
    /// back).
    pub fn to_btree(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Builds the map from entries sorted by key, each key once.
    fn from_sorted<K: AsRef<str>, V: AsRef<str>>(entries: &[(K, V)]) -> StrMap {
        let size = entries
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(size);
        let mut ends = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            text.push_str(k.as_ref());
            let key_end = text.len();
            text.push_str(v.as_ref());
            ends.push([key_end, text.len()]);
        }
        StrMap {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

/// The entries of a [`StrMap`], in key order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    map: &'a StrMap,
    front: usize,
    back: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.front += 1;
            self.map.entry(self.front - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.back -= 1;
            self.map.entry(self.back)
        })
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a StrMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Entries in any order; of a key given twice the last value is kept, as inserting them
/// one by one into a `BTreeMap` would.
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for StrMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> StrMap {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable, so equal keys stay in the order given; the last of each run is kept.
        entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut kept: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for e in entries {
            match kept.last_mut() {
                Some(last) if last.0.as_ref() == e.0.as_ref() => *last = e,
                _ => kept.push(e),
            }
        }
        StrMap::from_sorted(&kept)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extend<(K, V)> for StrMap {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut all = self.to_btree();
        all.extend(
            iter.into_iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())),
        );
        *self = StrMap::from(all);
    }
}

impl From<BTreeMap<String, String>> for StrMap {
    fn from(m: BTreeMap<String, String>) -> StrMap {
        let entries: Vec<(String, String)> = m.into_iter().collect();
        StrMap::from_sorted(&entries)
    }
}

impl From<&BTreeMap<String, String>> for StrMap {
    fn from(m: &BTreeMap<String, String>) -> StrMap {
        let entries: Vec<(&String, &String)> = m.iter().collect();
        StrMap::from_sorted(&entries)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for StrMap {
    fn from(entries: [(K, V); N]) -> StrMap {
        entries.into_iter().collect()
    }
}

/// The value under a key, which must be there (as indexing a `BTreeMap` panics on a
/// missing key).
impl std::ops::Index<&str> for StrMap {
    type Output = str;

    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no entry for key {key:?}"),
        }
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A JSON object of strings (labels, annotations), decoded without building a string
/// per key and value where the input can lend them.
impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrMap, D::Error> {
        d.deserialize_map(Entries)
    }
}

/// A string of the input, lent when it has no escapes, owned otherwise.
struct Lent<'de>(Cow<'de, str>);

impl AsRef<str> for Lent<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Lent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lent<'de>, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Lent<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Lent<'de>, E> {
                Ok(Lent(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lent<'de>, E> {
                Ok(Lent(Cow::Owned(v.to_string())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Lent<'de>, E> {
                Ok(Lent(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Text)
    }
}

struct Entries;

impl<'de> Visitor<'de> for Entries {
    type Value = StrMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings to strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrMap, A::Error> {
        let mut entries: Vec<(Lent<'de>, Lent<'de>)> =
            Vec::with_capacity(m.size_hint().unwrap_or(0).min(1024));
        while let Some(e) = m.next_entry()? {
            entries.push(e);
        }
        Ok(entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btree(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn holds_what_a_btree_map_holds_in_the_same_order() {
        let pairs = [
            ("drydock.dev/phase", "Queued"),
            ("a", ""),
            ("", "empty key"),
            ("drydock.dev/boot-id", "b1"),
            ("ü/ünïcode", "välue"),
            ("z", "last"),
        ];
        let b = btree(&pairs);
        let m: StrMap = pairs.into_iter().collect();
        assert_eq!(m.len(), b.len());
        assert!(!m.is_empty());
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            b.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            m.iter().rev().map(|(k, _)| k).collect::<Vec<_>>(),
            b.keys().rev().map(String::as_str).collect::<Vec<_>>()
        );
        for (k, v) in &b {
            assert_eq!(m.get(k), Some(v.as_str()), "{k}");
            assert_eq!(m.lookup(k), b.lookup(k));
            assert!(m.contains_key(k));
        }
        for absent in ["b", "drydock.dev/", "drydock.dev/phasf", "zz", "0"] {
            assert_eq!(m.get(absent), None, "{absent}");
        }
        assert_eq!(m.to_btree(), b);
        assert_eq!(StrMap::from(b.clone()), m);
        assert_eq!(StrMap::from(&b), m);
        assert_eq!(format!("{m:?}"), format!("{b:?}"));
    }

    #[test]
    fn the_last_value_of_a_repeated_key_wins() {
        let m: StrMap = [("k", "1"), ("j", "x"), ("k", "2"), ("k", "3")]
            .into_iter()
            .collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("k"), Some("3"));
    }

    #[test]
    fn editing_rebuilds_an_equal_map() {
        let mut m = StrMap::new();
        assert!(m.is_empty() && m.get("a").is_none() && m.iter().next().is_none());
        assert_eq!(m.insert("b".into(), "2".into()), None);
        assert_eq!(m.insert("a".into(), "1".into()), None);
        assert_eq!(m.insert("b".into(), "two".into()), Some("2".to_string()));
        assert_eq!(&m["a"], "1");
        m.extend([("c", "3"), ("a", "one")]);
        assert_eq!(m, StrMap::from([("a", "one"), ("b", "two"), ("c", "3")]));
        assert_eq!(m.remove("b"), Some("two".to_string()));
        assert_eq!(m.remove("b"), None);
        assert_eq!(m, StrMap::from([("c", "3"), ("a", "one")]));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(m.remove("a"), Some("one".to_string()));
        assert_eq!(m.remove("c"), Some("3".to_string()));
        assert_eq!(m, StrMap::new(), "emptied, it is the empty map");
    }

    #[test]
    fn decodes_a_json_object_as_a_btree_map_would() {
        let text = r#"{"z": "1", "a\"quoted": "esc\u00e9", "m": "", "z": "2"}"#;
        let m: StrMap = serde_json::from_str(text).expect("a map");
        let b: BTreeMap<String, String> = serde_json::from_str(text).expect("a map");
        assert_eq!(m, StrMap::from(b));
        assert_eq!(m.get("a\"quoted"), Some("escé"));
        assert_eq!(m.get("z"), Some("2"), "the last of a repeated key");
        let from_bytes: StrMap = serde_json::from_slice(text.as_bytes()).expect("a map");
        assert_eq!(from_bytes, m);
        for (bad, says) in [
            (r#"["a"]"#, "a map of strings"),
            (r#"{"a": 1}"#, "a string"),
            (r#"{"a": null}"#, "a string"),
        ] {
            let e = serde_json::from_str::<StrMap>(bad).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_value_that_looks_like_a_key_is_not_found_as_one() {
        // Keys and values share one string: a lookup only ever matches a whole key.
        let m = StrMap::from([("ab", "cd"), ("abc", "d")]);
        assert_eq!(m.get("abcd"), None);
        assert_eq!(m.get("cd"), None);
        assert_eq!(m.get("abc"), Some("d"));
        assert_eq!(m.get("ab"), Some("cd"));
    }
}
