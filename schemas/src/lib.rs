//! recflow's data contracts: the behavior event and its validation, the item
//! catalog entry, the user profile document and the records the operators
//! hand to sinks.

pub mod action;
pub mod category_map;
pub mod event;
pub mod item;
pub mod json_fields;
pub mod outputs;
pub mod profile;
pub mod validate;

pub use action::{Action, ActionWeights, ACTIONS};
pub use category_map::CategoryMap;
pub use event::{Event, IdMap, Str, UNKNOWN_CATEGORY};
pub use item::Item;
pub use outputs::{
    DeadLetter, HotList, ItemStatsDelta, KafkaPos, MetricsRow, MetricsWindow, Output, RawEvent, SourcePos,
};
pub use profile::{ActionCounts, ProfileDoc};
pub use validate::{Reason, Rejection, ValidationLimits, Validator};

/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
