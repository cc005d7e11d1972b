//! [`Reasons`]: the recall sources of one ranked item, stored inline (no
//! allocation per candidate on the recommend path).

use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::recall::STRATEGY_COUNT;

/// Recall strategy names, in the order the strategies proposed the item.
/// Holds at most one entry per registered strategy (a scenario lists each
/// strategy once), so it never overflows.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Reasons {
    names: [&'static str; STRATEGY_COUNT],
    len: u8,
}

impl Reasons {
    /// Reasons holding just `name`.
    pub fn one(name: &'static str) -> Self {
        let mut r = Reasons::default();
        r.add(name);
        r
    }

    /// Adds `name` unless present (or full, which registered strategies cannot make it).
    pub fn add(&mut self, name: &'static str) {
        let len = usize::from(self.len);
        if len < STRATEGY_COUNT && !self.contains(name) {
            self.names[len] = name;
            self.len += 1;
        }
    }

    /// True when `name` is one of the reasons.
    pub fn contains(&self, name: &str) -> bool {
        self.as_slice().contains(&name)
    }

    /// The names, in order.
    pub fn as_slice(&self) -> &[&'static str] {
        &self.names[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Reasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Reasons {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.as_slice().len()))?;
        for n in self.as_slice() {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_without_duplicates_and_serializes_as_a_list() {
        let mut r = Reasons::one("hot_items");
        r.add("category_affinity");
        r.add("hot_items");
        assert_eq!(r.as_slice(), ["hot_items", "category_affinity"]);
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"["hot_items","category_affinity"]"#);
        assert!(r.contains("category_affinity") && !r.contains("fresh_items"));
    }
}
