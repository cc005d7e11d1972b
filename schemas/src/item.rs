//! Item catalog entries (`item-updates`, Mongo `items`).

use serde::{Deserialize, Serialize};

use crate::Str;

/// One catalog entry as produced by `gen_events.py catalog`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub tenant_id: Str,
    #[serde(default)]
    pub scenario_id: Option<Str>,
    pub item_id: Str,
    #[serde(default)]
    pub category: Option<Str>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub publish_time: Option<i64>,
    #[serde(default)]
    pub status: Option<String>,
}
