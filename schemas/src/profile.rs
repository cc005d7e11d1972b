//! The user profile document (Mongo `user_profiles`, Redis `user:profile:*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Action, CategoryMap, Str, ACTIONS};

/// Cumulative profile of one (tenant, user, scenario) over all closed 5-min windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// category_counts / their total.
    pub category_scores: CategoryMap<f64>,
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
