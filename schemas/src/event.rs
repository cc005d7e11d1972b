//! The validated behavior event as it flows through the dataflow.

use serde::{Deserialize, Serialize};

use crate::Action;

/// Small inline string: ids up to 23 bytes never allocate.
pub type Str = smol_str::SmolStr;

/// Hash map keyed by tenant-supplied ids: fast, with a random seed (HashDoS-resistant).
pub type IdMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// One valid behavior event, normalized (timestamp in epoch ms, missing
/// experiment/variant as "none", category resolved later from the catalog).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Str,
    pub tenant_id: Str,
    pub scenario_id: Str,
    pub user_id: Str,
    pub item_id: Str,
    pub action: Action,
    /// Event time, epoch milliseconds UTC.
    pub ts: i64,
    pub request_id: Option<Str>,
    pub experiment_id: Str,
    pub variant: Str,
    /// Category as sent; `None` means "look it up in the catalog".
    pub category: Option<Str>,
    /// The `context` object as compact JSON text, if any.
    pub context: Option<Box<str>>,
    pub watch_duration: Option<f64>,
    pub completion_rate: Option<f64>,
    pub amount: Option<f64>,
}

/// The category of an event neither its producer nor the catalog gave one.
pub const UNKNOWN_CATEGORY: &str = "unknown";

impl Event {
    /// The category to aggregate under: sent, else [`UNKNOWN_CATEGORY`].
    pub fn category_or_unknown(&self) -> &str {
        self.category.as_deref().unwrap_or(UNKNOWN_CATEGORY)
    }

    /// [`Event::category_or_unknown`] as a shared id: a clone, not a copy
    /// of its bytes (the jobs' records each take one per event).
    pub fn category_id(&self) -> Str {
        self.category.clone().unwrap_or_else(|| Str::new_inline(UNKNOWN_CATEGORY))
    }
}
