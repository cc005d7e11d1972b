//! The user profile document (Mongo `user_profiles`, Redis `user:profile:*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Str;

/// Cumulative profile of one (tenant, user, scenario) over all closed 5-min windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileDoc {
    pub tenant_id: Str,
    pub user_id: Str,
    pub scenario_id: Str,
    /// Count per action name, all twelve present.
    pub counts: BTreeMap<String, u64>,
    /// view + play events.
    pub watch_count: u64,
    /// Sum of `watch_duration` over view/play events.
    pub watch_seconds: f64,
    /// Sum of action weights per category; only positive sums.
    pub category_counts: BTreeMap<String, u64>,
    /// category_counts / their total.
    pub category_scores: BTreeMap<String, f64>,
    /// Up to three categories, count desc then name asc.
    pub favorite_categories: Vec<String>,
    /// Non-impression events per UTC hour of day.
    pub active_hours: Vec<u64>,
    /// Min event time (ms), all actions.
    pub first_seen: i64,
    /// Max event time (ms), all actions.
    pub last_active_at: i64,
    /// Distinct items of non-impression events, newest first, at most 20.
    pub recent_items: Vec<String>,
    /// End (ms) of the last 5-min window with data; also the upsert version.
    pub updated_window: i64,
}
