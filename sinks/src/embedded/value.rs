//! A Redis HASH field value, typed so the server and the dump keep integers as integers.

use std::fmt;

use serde::{Serialize, Serializer};

/// One HASH field: an integer (counts, `window_start`) or a float (ratios, gmv).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue {
    /// Counts and epoch-ms timestamps.
    Int(i64),
    /// Ratios, averages, money.
    Float(f64),
}

impl FieldValue {
    /// The value as f64 (what a Redis client would parse).
    pub fn as_f64(self) -> f64 {
        match self {
            FieldValue::Int(i) => i as f64,
            FieldValue::Float(f) => f,
        }
    }

    /// The value if it is an integer.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            FieldValue::Int(i) => Some(i),
            FieldValue::Float(_) => None,
        }
    }
}

/// Serializes as a bare JSON number (non-finite floats become null).
impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            FieldValue::Int(i) => s.serialize_i64(i),
            FieldValue::Float(f) => s.serialize_f64(f),
        }
    }
}

/// The Redis string form of the value.
impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x}"),
        }
    }
}
