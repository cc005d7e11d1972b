//! Deterministic JSON dump of the whole store (for tests, demos and diffing runs).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

use super::store::{item_stats_fields, metrics_fields, profile_key, read, ITEM_STATS_PREFIX, METRICS_PREFIX};
use super::{EmbeddedStore, FieldValue};
use crate::SinkError;

/// The dump key holding the Mongo `user_profiles` collection.
const MONGO_PROFILES: &str = "mongo.user_profiles";

/// A HASH as JSON: integers stay integers, floats as serde_json renders f64.
pub(crate) fn hash_value(fields: BTreeMap<String, FieldValue>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::Int(i) => Value::from(i),
                    // Non-finite floats become null, as serde_json does.
                    FieldValue::Float(f) => Value::from(f),
                };
                (k, v)
            })
            .collect(),
    )
}

impl EmbeddedStore {
    /// All state as one JSON object, every key and array sorted deterministically.
    ///
    /// Keys are the Redis keys (ZSET: `[[member, score], ...]`, HASH: object,
    /// profile STRING: the parsed JSON object) plus `mongo.user_profiles`
    /// (documents sorted by tenant, user, scenario). TTLs are not part of it.
    pub fn dump(&self) -> Value {
        // Hold all read locks (in lock order) so the dump is one consistent snapshot.
        let zsets = read(&self.zsets);
        let item_stats = read(&self.item_stats);
        let metrics = read(&self.metrics);
        let profiles = read(&self.profiles);

        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        for (key, z) in zsets.iter() {
            // Entries are stored score desc, member asc already.
            let pairs =
                z.entries.iter().map(|(m, s)| Value::Array(vec![Value::from(m.as_str()), Value::from(*s)])).collect();
            out.insert(key.clone(), Value::Array(pairs));
        }
        for ((tenant, item), counts) in item_stats.iter() {
            out.insert(format!("{ITEM_STATS_PREFIX}{tenant}:{item}"), hash_value(item_stats_fields(counts)));
        }
        for ((tenant, scenario), m) in metrics.iter() {
            out.insert(format!("{METRICS_PREFIX}{tenant}:{scenario}"), hash_value(metrics_fields(&m.window)));
        }
        for ((tenant, user, scenario), p) in profiles.iter() {
            if let Some(c) = &p.cached {
                let v = serde_json::to_value(c.doc.as_ref()).unwrap_or(Value::Null);
                out.insert(profile_key(tenant, user, scenario), v);
            }
        }
        let mut sorted: Vec<_> = profiles.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let docs_json =
            sorted.into_iter().map(|(_, p)| serde_json::to_value(p.doc.as_ref()).unwrap_or(Value::Null)).collect();
        out.insert(MONGO_PROFILES.to_string(), Value::Array(docs_json));

        Value::Object(out.into_iter().collect::<Map<String, Value>>())
    }

    /// Writes [`Self::dump`] pretty-printed to `path` (via a temp file + rename).
    pub fn dump_to_file(&self, path: impl AsRef<Path>) -> Result<(), SinkError> {
        let path = path.as_ref();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let file = std::fs::File::create(&tmp).map_err(|source| SinkError::Open { path: tmp.clone(), source })?;
        let mut w = std::io::BufWriter::new(file);
        serde_json::to_writer_pretty(&mut w, &self.dump())?;
        w.write_all(b"\n")?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        // Rename so a reader never sees a half-written dump.
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
