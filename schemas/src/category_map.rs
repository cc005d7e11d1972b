//! A small map from category name to value, kept as a Vec sorted by name.
//!
//! The profile job builds one profile document per user and closed window
//! (about one per event), each with two category maps of a handful of
//! entries: a sorted Vec is one allocation where a BTreeMap is a node per
//! map plus a tree walk to build and drop it. Serialized, it is the same
//! JSON/BSON object (keys in name order) as the BTreeMap it replaces.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Str;

/// Category name -> value, in name order; one entry per name.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryMap<V>(Vec<(Str, V)>);

impl<V> Default for CategoryMap<V> {
    fn default() -> Self {
        CategoryMap(Vec::new())
    }
}

impl<V> CategoryMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where `name` is (Ok) or would go (Err).
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    /// Sets `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: Str, value: V) -> Option<V> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// A map of `entries` already in strictly increasing name order (checked in debug builds).
    pub fn from_sorted(entries: Vec<(Str, V)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "names sorted and unique");
        CategoryMap(entries)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (name, value) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Str, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &Str> {
        self.0.iter().map(|(k, _)| k)
    }

    /// Values in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<V> FromIterator<(Str, V)> for CategoryMap<V> {
    /// Like collecting into a BTreeMap: a repeated name keeps its last value.
    fn from_iter<I: IntoIterator<Item = (Str, V)>>(iter: I) -> Self {
        let mut v: Vec<(Str, V)> = iter.into_iter().collect();
        // Stable: among equal names the last one collected ends last.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Str, V)> = Vec::with_capacity(v.len());
        for e in v {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        CategoryMap(out)
    }
}

impl<V, const N: usize> From<[(Str, V); N]> for CategoryMap<V> {
    fn from(a: [(Str, V); N]) -> Self {
        a.into_iter().collect()
    }
}

impl<V> std::ops::Index<&str> for CategoryMap<V> {
    type Output = V;
    /// The value of `name`; panics when absent (a bug in the caller).
    fn index(&self, name: &str) -> &V {
        self.get(name).expect("category present")
    }
}

impl<'a, V> IntoIterator for &'a CategoryMap<V> {
    type Item = (&'a Str, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Str, V)>, fn(&'a (Str, V)) -> (&'a Str, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<V: Serialize> Serialize for CategoryMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_str(), v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for CategoryMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = CategoryMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of category name to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut out = CategoryMap::new();
                while let Some((k, v)) = access.next_entry::<Str, V>()? {
                    out.insert(k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn behaves_like_a_btreemap() {
        let pairs = [("sports", 3u64), ("music", 1), ("news", 2), ("music", 7)];
        let ours: CategoryMap<u64> = pairs.iter().map(|(k, v)| (Str::new(k), *v)).collect();
        let reference: BTreeMap<Str, u64> = pairs.iter().map(|(k, v)| (Str::new(k), *v)).collect();
        assert_eq!(ours.len(), 3);
        assert_eq!(ours.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
        assert_eq!(ours.get("music"), Some(&7), "the last value of a repeated name wins");
        assert_eq!(ours.get("movies"), None);
        assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&reference).unwrap());

        let mut m = ours.clone();
        assert_eq!(m.insert(Str::new("arts"), 5), None);
        assert_eq!(m.insert(Str::new("news"), 9), Some(2));
        assert_eq!(m.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["arts", "music", "news", "sports"]);
        assert_eq!(m["news"], 9);
    }

    #[test]
    fn reads_any_key_order_and_writes_name_order() {
        let m: CategoryMap<f64> = serde_json::from_str(r#"{"tech": 0.5, "arts": 0.25, "news": 0.25}"#).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"arts":0.25,"news":0.25,"tech":0.5}"#);
        assert!(serde_json::from_str::<CategoryMap<u64>>("[1]").is_err());
    }
}
