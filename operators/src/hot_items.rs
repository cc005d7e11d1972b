//! Hot items: per (tenant, scenario, item), sliding windows of `window`
//! sliding every `slide`, score = Σ weight · 2^(−(end − ts)/half_life).
//!
//! Stage 1 (keyed by item) folds events into slide-sized panes. A pane
//! keeps Σ w·2^(−(pane_end − ts)/h) as an exact sum, so a window's score is
//! Σ_pane pane_sum · 2^(−(window_end − pane_end)/h): one update per event
//! instead of one per window, and independent of arrival order. When a
//! window closes, each worker emits its local top-K per (tenant, scenario)
//! and per category; stage 2 (keyed by tenant, scenario) merges them into
//! the global top-K.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use recflow_schemas::{Action, Event, HotList, IdMap, ItemStatsDelta, Str, MINUTE_MS};

use crate::exact::ExactSum;
use crate::time::{sliding_window_ends, window_start};
use crate::topk::top_k;
use crate::windowed::WindowLogic;
use crate::{Counters, Minute};

/// Hot-items knobs (config `[hot_items]`).
#[derive(Clone, Debug)]
pub struct HotConfig {
    pub window_ms: i64,
    pub slide_ms: i64,
    pub half_life_ms: i64,
    pub top_k: usize,
    pub category_top_k: usize,
    /// Weight per action, index = `Action::index`.
    pub weights: [u32; 12],
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            window_ms: 3_600_000,
            slide_ms: 900_000,
            half_life_ms: 1_800_000,
            top_k: 500,
            category_top_k: 200,
            weights: recflow_schemas::ActionWeights::default().to_array(),
        }
    }
}

/// The part of an event the hot-items job needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HotRec {
    pub tenant_id: Str,
    pub scenario_id: Str,
    pub item_id: Str,
    pub category: Str,
    pub ts: i64,
    pub action: Action,
    pub event_id: Str,
}

impl From<&Event> for HotRec {
    fn from(e: &Event) -> Self {
        HotRec {
            tenant_id: e.tenant_id.clone(),
            scenario_id: e.scenario_id.clone(),
            item_id: e.item_id.clone(),
            category: e.category_id(),
            ts: e.ts,
            action: e.action,
            event_id: e.event_id.clone(),
        }
    }
}

/// `weight · 2^(−age/half_life)`.
pub fn decayed(weight: f64, age_ms: i64, half_life_ms: i64) -> f64 {
    weight * (-(age_ms as f64) / half_life_ms as f64).exp2()
}

/// (item, score) pairs.
type Ranked = Vec<(Str, f64)>;
/// (tenant, scenario, category or none): one hot ZSET.
type HotKey = (Str, Str, Option<Str>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ItemKey {
    tenant: Str,
    scenario: Str,
    item: Str,
}

/// An item's aggregate over one pane.
#[derive(Default)]
struct PaneAcc {
    sum: ExactSum,
    counts: [u64; 12],
    /// Category of the latest (ts, event_id) event.
    latest: (i64, Str, Str),
}

/// What stage 1 emits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum HotOut {
    /// A worker-local top-K candidate list for one window.
    Partial(HotList),
    /// Counts of applied events of one pane.
    Stats(ItemStatsDelta),
}

/// An item's panes that some open window still needs: (pane start, sums),
/// oldest first. Rarely more than `window / slide` entries.
type ItemPanes = Vec<(i64, PaneAcc)>;

/// Stage 1: per-item panes and local top-K.
///
/// Panes hang off the item, not items off the pane: an event costs one
/// lookup in a table that lives as long as the items stay active (one table
/// per pane grew from empty, and was rehashed, every slide), and a window
/// close visits each item once and adds up its panes in place, with no
/// table of scores built per close.
pub struct HotPanes {
    cfg: HotConfig,
    /// Decay of a pane ending `j` slides before a window's end, index `j`:
    /// fixed by the config, so computed once.
    decay: Vec<f64>,
    items: IdMap<ItemKey, ItemPanes>,
    /// Starts of the panes with events whose windows are not all closed:
    /// a pane's windows are made pending by its first event.
    panes: BTreeSet<i64>,
}

impl HotPanes {
    /// Empty state.
    pub fn new(cfg: HotConfig) -> Self {
        let (slide, half_life) = (cfg.slide_ms, cfg.half_life_ms as f64);
        let decay = (0..cfg.window_ms / slide).map(|j| (-((j * slide) as f64) / half_life).exp2()).collect();
        HotPanes { cfg, decay, items: IdMap::default(), panes: BTreeSet::new() }
    }
}

impl WindowLogic for HotPanes {
    type In = HotRec;
    type Out = HotOut;

    fn absorb(&mut self, r: HotRec, close_at: &mut dyn FnMut(Minute)) {
        let pane = window_start(r.ts, self.cfg.slide_ms);
        let pane_end = pane + self.cfg.slide_ms;
        if self.panes.last() != Some(&pane) && self.panes.insert(pane) {
            for end in sliding_window_ends(r.ts, self.cfg.window_ms, self.cfg.slide_ms) {
                close_at((end / MINUTE_MS) as Minute);
            }
        }
        let w = self.cfg.weights[r.action.index()] as f64;
        let panes =
            self.items.entry(ItemKey { tenant: r.tenant_id, scenario: r.scenario_id, item: r.item_id }).or_default();
        // Most events are for the newest pane: search from the back.
        let at = panes.iter().rposition(|(start, _)| *start <= pane);
        let i = match at {
            Some(i) if panes[i].0 == pane => i,
            _ => {
                let i = at.map_or(0, |i| i + 1);
                // One pane at a time: most items are active in one or two panes,
                // and the default growth would reserve four (~770 bytes) per item.
                panes.reserve_exact(1);
                panes.insert(i, (pane, PaneAcc::default()));
                i
            }
        };
        let acc = &mut panes[i].1;
        // Weight 0 (impressions, half the events) adds nothing to the score.
        if w > 0.0 {
            acc.sum.add(decayed(w, pane_end - r.ts, self.cfg.half_life_ms));
        }
        acc.counts[r.action.index()] += 1;
        if (r.ts, &r.event_id) >= (acc.latest.0, &acc.latest.1) {
            acc.latest = (r.ts, r.event_id, r.category);
        }
    }

    fn close(&mut self, close: Minute, out: &mut Vec<HotOut>) {
        let end = close as i64 * MINUTE_MS;
        let (slide, window) = (self.cfg.slide_ms, self.cfg.window_ms);
        // A pane is no longer needed once the last window containing it closed.
        let keep_from = end - window + slide;
        let mut by_scenario: IdMap<(&Str, &Str), Ranked> = IdMap::default();
        let mut by_category: IdMap<(&Str, &Str, Str), Ranked> = IdMap::default();
        for (k, panes) in self.items.iter_mut() {
            // Score the window [end - window, end) from the item's panes, in pane order.
            let mut score = 0.0;
            let mut latest: Option<&(i64, Str, Str)> = None;
            for (start, acc) in panes.iter_mut() {
                if *start + slide == end && acc.counts.iter().any(|c| *c > 0) {
                    // The pane ending here is complete: its counts go to item stats.
                    out.push(HotOut::Stats(ItemStatsDelta {
                        tenant_id: k.tenant.clone(),
                        scenario_id: k.scenario.clone(),
                        item_id: k.item.clone(),
                        counts: std::mem::take(&mut acc.counts),
                        pane_end: end,
                    }));
                }
                if *start < end - window || *start >= end {
                    continue;
                }
                score += acc.sum.get() * self.decay[((end - (*start + slide)) / slide) as usize];
                if latest.is_none_or(|l| (acc.latest.0, &acc.latest.1) > (l.0, &l.1)) {
                    latest = Some(&acc.latest);
                }
            }
            if let Some(latest) = latest.filter(|_| score > 0.0) {
                by_scenario.entry((&k.tenant, &k.scenario)).or_default().push((k.item.clone(), score));
                by_category
                    .entry((&k.tenant, &k.scenario, latest.2.clone()))
                    .or_default()
                    .push((k.item.clone(), score));
            }
            panes.retain(|(start, _)| *start >= keep_from);
        }
        let mut lists: Vec<HotList> = Vec::with_capacity(by_scenario.len() + by_category.len());
        for ((t, s), entries) in by_scenario {
            lists.push(HotList {
                tenant_id: t.clone(),
                scenario_id: s.clone(),
                category: None,
                window_end: end,
                entries: top_k(entries, self.cfg.top_k),
            });
        }
        for ((t, s, c), entries) in by_category {
            lists.push(HotList {
                tenant_id: t.clone(),
                scenario_id: s.clone(),
                category: Some(c),
                window_end: end,
                entries: top_k(entries, self.cfg.category_top_k),
            });
        }
        out.extend(lists.into_iter().map(HotOut::Partial));
        self.items.retain(|_, panes| !panes.is_empty());
        self.panes = self.panes.split_off(&keep_from);
    }
}

/// Stage 2: merges local top-K lists into the global top-K per key.
pub struct HotMerge {
    cfg: HotConfig,
    counters: Arc<Counters>,
    lists: BTreeMap<i64, IdMap<HotKey, Ranked>>,
}

impl HotMerge {
    /// Empty state.
    pub fn new(cfg: HotConfig, counters: Arc<Counters>) -> Self {
        HotMerge { cfg, counters, lists: BTreeMap::new() }
    }
}

impl WindowLogic for HotMerge {
    type In = HotList;
    type Out = HotList;

    fn absorb(&mut self, l: HotList, close_at: &mut dyn FnMut(Minute)) {
        close_at((l.window_end / MINUTE_MS) as Minute);
        self.lists
            .entry(l.window_end)
            .or_default()
            .entry((l.tenant_id, l.scenario_id, l.category))
            .or_default()
            .extend(l.entries);
    }

    fn close(&mut self, close: Minute, out: &mut Vec<HotList>) {
        let end = close as i64 * MINUTE_MS;
        let Some(lists) = self.lists.remove(&end) else {
            return;
        };
        for ((tenant_id, scenario_id, category), entries) in lists {
            let k = if category.is_some() { self.cfg.category_top_k } else { self.cfg.top_k };
            let entries = top_k(entries, k);
            if entries.is_empty() {
                continue;
            }
            self.counters.hot_windows.fetch_add(1, Relaxed);
            out.push(HotList { tenant_id, scenario_id, category, window_end: end, entries });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(item: &str, action: Action, ts: i64) -> HotRec {
        HotRec {
            tenant_id: "t".into(),
            scenario_id: "s".into(),
            item_id: item.into(),
            category: "news".into(),
            ts,
            action,
            event_id: format!("e{ts}").into(),
        }
    }

    #[test]
    fn decay_formula() {
        // Half-life 30 min: one half-life old halves, two quarter, age 0 keeps the weight.
        assert_eq!(decayed(8.0, 0, 1_800_000), 8.0);
        assert_eq!(decayed(8.0, 1_800_000, 1_800_000), 4.0);
        assert_eq!(decayed(8.0, 3_600_000, 1_800_000), 2.0);
        assert!((decayed(2.0, 900_000, 1_800_000) - 2.0 / 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn window_scores_match_the_direct_formula() {
        let h = 3_600_000i64;
        let mut p = HotPanes::new(HotConfig::default());
        // click at 10:00:00 (on a boundary), like at 10:20, impression at 10:50, order at 10:59:59.999.
        let evs = [
            rec("a", Action::Click, 10 * h),
            rec("a", Action::Like, 10 * h + 1_200_000),
            rec("b", Action::Impression, 10 * h + 3_000_000),
            rec("b", Action::Order, 11 * h - 1),
        ];
        let mut closes = std::collections::BTreeSet::new();
        for e in evs {
            p.absorb(e, &mut |m| {
                closes.insert(m);
            });
        }
        let end = 11 * h;
        assert!(closes.contains(&((end / MINUTE_MS) as Minute)));
        let mut out = Vec::new();
        for m in closes.iter().copied().filter(|m| (*m as i64) * MINUTE_MS <= end) {
            out.clear();
            p.close(m, &mut out);
        }
        // The window [10:00, 11:00): a = 2·2^(-60/30) + 3·2^(-40/30); b = 8·2^(-1ms/30min).
        let a = 2.0 * 0.25 + 3.0 * (-40.0f64 / 30.0).exp2();
        let b = 8.0 * (-1.0f64 / 1_800_000.0).exp2();
        let list = out
            .iter()
            .find_map(|o| match o {
                HotOut::Partial(l) if l.category.is_none() => Some(l.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(list.window_end, end);
        assert_eq!(list.entries[0].0, "b");
        assert!((list.entries[0].1 - b).abs() < 1e-12);
        assert_eq!(list.entries[1].0, "a");
        assert!((list.entries[1].1 - a).abs() < 1e-12);
    }

    #[test]
    fn older_panes_arriving_late_and_items_coming_back_after_expiry() {
        let (m, h) = (60_000i64, 3_600_000i64);
        let mut p = HotPanes::new(HotConfig::default());
        let mut closes = std::collections::BTreeSet::new();
        // a: its 10:35 event first, then one in an older pane (10:05); b: 10:05, then 12:10.
        for e in [
            rec("a", Action::Click, 10 * h + 35 * m),
            rec("a", Action::Like, 10 * h + 5 * m),
            rec("b", Action::Share, 10 * h + 5 * m),
            rec("b", Action::Click, 12 * h + 10 * m),
        ] {
            p.absorb(e, &mut |c| {
                closes.insert(c);
            });
        }
        let mut by_end: BTreeMap<i64, Vec<HotOut>> = BTreeMap::new();
        for c in closes {
            let mut out = Vec::new();
            p.close(c, &mut out);
            by_end.insert(c as i64 * MINUTE_MS, out);
        }
        let score = |end: i64, item: &str| {
            by_end[&end].iter().find_map(|o| match o {
                HotOut::Partial(l) if l.category.is_none() => l.entries.iter().find(|e| e.0 == item).map(|e| e.1),
                _ => None,
            })
        };
        let stats = |end: i64, item: &str| {
            by_end[&end].iter().find_map(|o| match o {
                HotOut::Stats(s) if s.item_id == item => Some(s.counts),
                _ => None,
            })
        };
        let half = 1_800_000;
        // Window [10:00, 11:00): both of a's events, b's share.
        let end = 11 * h;
        let a = decayed(2.0, end - (10 * h + 35 * m), half) + decayed(3.0, end - (10 * h + 5 * m), half);
        assert!((score(end, "a").unwrap() - a).abs() < 1e-12);
        assert!((score(end, "b").unwrap() - decayed(5.0, end - (10 * h + 5 * m), half)).abs() < 1e-12);
        // Each pane's counts once, when the pane ends.
        assert_eq!(stats(10 * h + 15 * m, "a").unwrap()[Action::Like.index()], 1);
        assert_eq!(stats(10 * h + 45 * m, "a").unwrap()[Action::Click.index()], 1);
        assert_eq!(stats(10 * h + 45 * m, "b"), None);
        // By 12:15 b's old pane is gone: only the 12:10 click counts; a has left every window.
        let end = 12 * h + 15 * m;
        assert!((score(end, "b").unwrap() - decayed(2.0, 5 * m, half)).abs() < 1e-12);
        assert_eq!(score(end, "a"), None);
        assert_eq!(stats(end, "b").unwrap()[Action::Click.index()], 1);
    }
}
