//! Comparing state dumps (Redis/Mongo/embedded JSON) of two runs.

use std::collections::BTreeMap;

use serde_json::Value;

/// Keys of a dump that belong to tenants `{prefix}_*` (other tests share the services).
///
/// recflow's own bookkeeping keys (`recflow:*`: versions stored beside the
/// data, partition times beside the offsets) are not part of the MISSION.md
/// layout the embedded store holds, so they are never compared.
pub fn ours(v: &Value, prefix: &str) -> BTreeMap<String, Value> {
    let tenant = format!(":{prefix}_");
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.contains(&tenant) && !k.starts_with("recflow:"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// JSON equality with floats equal within 1e-9 relative; the error names the first difference.
pub fn same(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300) {
                Ok(())
            } else {
                Err(format!("{path}: {x} != {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: length {} != {}", x.len(), y.len()));
            }
            x.iter().zip(y).enumerate().try_for_each(|(i, (x, y))| same(x, y, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            let (kx, ky): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
            if kx != ky {
                return Err(format!("{path}: keys differ: {kx:?} vs {ky:?}"));
            }
            x.iter().try_for_each(|(k, v)| same(v, &y[k], &format!("{path}.{k}")))
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} != {b}")),
    }
}
