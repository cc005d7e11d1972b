//! The user profile document (Mongo `user_profiles`, Redis `user:profile:*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Action, CategoryMap, Str, ACTIONS};

/// Cumulative profile of one (tenant, user, scenario) over all closed 5-min windows.
///
/// `category_scores` is written with the document but not held in it: it is
/// a function of `category_counts` ([`ProfileDoc::category_score`]), so a
/// document is one heap block fewer to build and, once replaced, to free
/// (the profile job keeps ~100 K of them turning over). Read back, the
/// written scores are read in their place, so formats without field names
/// read what was written too, and dropped: they are derived from the counts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "Read")]
pub struct ProfileDoc {
    pub tenant_id: Str,
    pub user_id: Str,
    pub scenario_id: Str,
    /// Count per action name, all twelve present.
    pub counts: ActionCounts,
    /// view + play events.
    pub watch_count: u64,
    /// Sum of `watch_duration` over view/play events.
    pub watch_seconds: f64,
    /// Sum of action weights per category; only positive sums.
    pub category_counts: CategoryMap<u64>,
    /// Up to three categories, count desc then name asc.
    pub favorite_categories: Vec<Str>,
    /// Non-impression events per UTC hour of day (inline: no allocation per document).
    pub active_hours: [u64; 24],
    /// Min event time (ms), all actions.
    pub first_seen: i64,
    /// Max event time (ms), all actions.
    pub last_active_at: i64,
    /// Distinct items of non-impression events, newest first, at most 20.
    pub recent_items: Vec<Str>,
    /// End (ms) of the last 5-min window with data; also the upsert version.
    pub updated_window: i64,
}

impl ProfileDoc {
    /// A category's share of the user's weighted activity: its count over
    /// the total of `category_counts` (`None` for a category not there).
    pub fn category_score(&self, name: &str) -> Option<f64> {
        let count = *self.category_counts.get(name)?;
        Some(count as f64 / self.category_total() as f64)
    }

    /// Every category's score, in name order (the `category_scores` field as written).
    pub fn category_scores(&self) -> impl Iterator<Item = (&Str, f64)> {
        let total = self.category_total() as f64;
        self.category_counts.iter().map(move |(c, &n)| (c, n as f64 / total))
    }

    /// At least 1: a document from elsewhere with only zero counts scores 0, not NaN.
    fn category_total(&self) -> u64 {
        self.category_counts.values().sum::<u64>().max(1)
    }
}

/// The document as written: every field in declaration order, with
/// `category_scores` after `category_counts`. Borrowed, so writing copies nothing.
#[derive(Serialize)]
#[serde(rename = "ProfileDoc")]
struct Written<'a> {
    tenant_id: &'a Str,
    user_id: &'a Str,
    scenario_id: &'a Str,
    counts: &'a ActionCounts,
    watch_count: u64,
    watch_seconds: f64,
    category_counts: &'a CategoryMap<u64>,
    category_scores: Scores<'a>,
    favorite_categories: &'a [Str],
    active_hours: &'a [u64; 24],
    first_seen: i64,
    last_active_at: i64,
    recent_items: &'a [Str],
    updated_window: i64,
}

impl Serialize for ProfileDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Written {
            tenant_id: &self.tenant_id,
            user_id: &self.user_id,
            scenario_id: &self.scenario_id,
            counts: &self.counts,
            watch_count: self.watch_count,
            watch_seconds: self.watch_seconds,
            category_counts: &self.category_counts,
            category_scores: Scores(self),
            favorite_categories: &self.favorite_categories,
            active_hours: &self.active_hours,
            first_seen: self.first_seen,
            last_active_at: self.last_active_at,
            recent_items: &self.recent_items,
            updated_window: self.updated_window,
        }
        .serialize(s)
    }
}

/// The document as read: [`Written`]'s fields in its order, owned.
#[derive(Deserialize)]
#[serde(rename = "ProfileDoc")]
struct Read {
    tenant_id: Str,
    user_id: Str,
    scenario_id: Str,
    counts: ActionCounts,
    watch_count: u64,
    watch_seconds: f64,
    category_counts: CategoryMap<u64>,
    #[serde(rename = "category_scores")]
    _scores: CategoryMap<f64>,
    favorite_categories: Vec<Str>,
    active_hours: [u64; 24],
    first_seen: i64,
    last_active_at: i64,
    recent_items: Vec<Str>,
    updated_window: i64,
}

impl From<Read> for ProfileDoc {
    fn from(r: Read) -> Self {
        ProfileDoc {
            tenant_id: r.tenant_id,
            user_id: r.user_id,
            scenario_id: r.scenario_id,
            counts: r.counts,
            watch_count: r.watch_count,
            watch_seconds: r.watch_seconds,
            category_counts: r.category_counts,
            favorite_categories: r.favorite_categories,
            active_hours: r.active_hours,
            first_seen: r.first_seen,
            last_active_at: r.last_active_at,
            recent_items: r.recent_items,
            updated_window: r.updated_window,
        }
    }
}

/// `category_scores` written as an object, name -> score, in name order.
struct Scores<'a>(&'a ProfileDoc);

impl Serialize for Scores<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.category_scores().map(|(c, score)| (c.as_str(), score)))
    }
}

/// Counts per action, serialized as an object with all twelve action names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCounts(pub [u64; 12]);

impl ActionCounts {
    /// The count of one action.
    pub fn get(&self, a: Action) -> u64 {
        self.0[a.index()]
    }
}

impl std::ops::Index<&str> for ActionCounts {
    type Output = u64;
    /// Count by action name; panics on an unknown name (a bug in the caller).
    fn index(&self, name: &str) -> &u64 {
        let a = Action::parse(name).expect("known action name");
        &self.0[a.index()]
    }
}

impl Serialize for ActionCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(12))?;
        for a in ACTIONS {
            m.serialize_entry(a.name(), &self.0[a.index()])?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ActionCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<String, u64>::deserialize(d)?;
        let mut out = [0u64; 12];
        for (k, v) in m {
            let a = Action::parse(&k).ok_or_else(|| serde::de::Error::custom(format!("unknown action {k:?}")))?;
            out[a.index()] = v;
        }
        Ok(ActionCounts(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(categories: &[(&str, u64)]) -> ProfileDoc {
        ProfileDoc {
            tenant_id: "t".into(),
            user_id: "u".into(),
            scenario_id: "s".into(),
            counts: ActionCounts::default(),
            watch_count: 0,
            watch_seconds: 0.0,
            category_counts: categories.iter().map(|&(c, n)| (Str::new(c), n)).collect(),
            favorite_categories: vec![],
            active_hours: [0; 24],
            first_seen: 1,
            last_active_at: 2,
            recent_items: vec![],
            updated_window: 300_000,
        }
    }

    #[test]
    fn scores_are_each_count_over_the_total_and_written_after_the_counts() {
        let d = doc(&[("news", 3), ("music", 1)]);
        assert_eq!(d.category_score("news"), Some(0.75));
        assert_eq!(d.category_score("music"), Some(0.25));
        assert_eq!(d.category_score("pets"), None);
        let text = serde_json::to_string(&d).unwrap();
        assert!(
            text.contains(r#""category_counts":{"music":1,"news":3},"category_scores":{"music":0.25,"news":0.75},"favorite_categories":[]"#),
            "{text}"
        );
        // No categories: an empty object, not a division by zero.
        let empty = serde_json::to_value(doc(&[])).unwrap();
        assert_eq!(empty["category_scores"], serde_json::json!({}));
    }

    #[test]
    fn read_back_scores_come_from_the_counts() {
        let mut v = serde_json::to_value(doc(&[("news", 1), ("music", 1)])).unwrap();
        v["category_scores"]["news"] = serde_json::json!(0.9);
        let back: ProfileDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc(&[("news", 1), ("music", 1)]));
        assert_eq!(back.category_score("news"), Some(0.5));
    }

    #[test]
    fn reads_back_what_it_writes_without_field_names() {
        const ORDER: [&str; 14] = [
            "tenant_id",
            "user_id",
            "scenario_id",
            "counts",
            "watch_count",
            "watch_seconds",
            "category_counts",
            "category_scores",
            "favorite_categories",
            "active_hours",
            "first_seen",
            "last_active_at",
            "recent_items",
            "updated_window",
        ];
        let mut d = doc(&[("news", 3), ("music", 1)]);
        d.favorite_categories = vec!["news".into()];
        d.recent_items = vec!["i2".into(), "i1".into()];
        // Written in this order, and nothing else...
        let text = serde_json::to_string(&d).unwrap();
        let at: Vec<usize> = ORDER.iter().map(|k| text.find(&format!("\"{k}\":")).expect(k)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v.as_object().unwrap().len(), ORDER.len());
        // ...and read back from the bare values in that order, as formats
        // without field names (bincode and the like) read a struct: serde_json
        // reads one from an array the same way.
        let values: Vec<serde_json::Value> = ORDER.iter().map(|k| v[k].clone()).collect();
        let back: ProfileDoc = serde_json::from_value(serde_json::Value::Array(values)).unwrap();
        assert_eq!(back, d);
    }
}
