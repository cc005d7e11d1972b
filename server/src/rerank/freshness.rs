//! `freshness`: scores decay with the item's age (catalog publish_time).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{only, sort, Ranked, RerankCtx, Rule};

/// score × 2^(−age / half_life); items without a publish time keep their score.
pub struct Freshness {
    half_life_ms: f64,
}

/// Builds from `{"rule": "freshness", "half_life_hours": H}` (H > 0).
pub fn build(params: &Map<String, Value>) -> Result<Arc<dyn Rule>, (&'static str, String)> {
    only(params, &["half_life_hours"])?;
    let h = params.get("half_life_hours").and_then(Value::as_f64).filter(|h| *h > 0.0 && h.is_finite());
    let h = h.ok_or(("half_life_hours", "half_life_hours must be a positive number".to_string()))?;
    Ok(Arc::new(Freshness { half_life_ms: h * 3_600_000.0 }))
}

impl Rule for Freshness {
    fn apply(&self, mut items: Vec<Ranked>, ctx: &RerankCtx<'_>) -> Vec<Ranked> {
        for r in &mut items {
            if let Some(published) = ctx.catalog.get(&r.item_id).and_then(|m| m.publish_time) {
                let age = (ctx.now_ms - published).max(0) as f64;
                r.score *= (-age / self.half_life_ms).exp2();
            }
        }
        sort(&mut items);
        items
    }
}
