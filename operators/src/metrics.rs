//! Real-time experiment metrics: per (tenant, scenario, experiment,
//! variant), 1-minute tumbling windows. Stage 1 pre-aggregates on each
//! worker (no exchange of raw events); stage 2, keyed by (tenant,
//! scenario), merges the partials and emits one snapshot per minute.

use std::collections::BTreeMap;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use recflow_schemas::{Action, Event, IdMap, MetricsRow, MetricsWindow, Str, MINUTE_MS};

use crate::exact::{ratio, ExactSum};
use crate::time::minute_of;
use crate::windowed::WindowLogic;
use crate::{Counters, Minute};

/// The part of an event the metrics job needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetRec {
    pub key: MetKey,
    pub ts: i64,
    pub action: Action,
    pub watch_duration: Option<f64>,
    pub completion_rate: Option<f64>,
    pub amount: Option<f64>,
}

/// (tenant, scenario, experiment, variant).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MetKey {
    pub tenant_id: Str,
    pub scenario_id: Str,
    pub experiment_id: Str,
    pub variant: Str,
}

impl From<&Event> for MetRec {
    fn from(e: &Event) -> Self {
        MetRec {
            key: MetKey {
                tenant_id: e.tenant_id.clone(),
                scenario_id: e.scenario_id.clone(),
                experiment_id: e.experiment_id.clone(),
                variant: e.variant.clone(),
            },
            ts: e.ts,
            action: e.action,
            watch_duration: e.watch_duration,
            completion_rate: e.completion_rate,
            amount: e.amount,
        }
    }
}

/// Mergeable sums of one key over (part of) one minute.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetAcc {
    pub counts: [u64; 12],
    pub watch_sum: ExactSum,
    pub watch_n: u64,
    pub completion_sum: ExactSum,
    pub completion_n: u64,
    pub gmv: ExactSum,
}

impl MetAcc {
    fn add(&mut self, r: &MetRec) {
        self.counts[r.action.index()] += 1;
        if let Some(w) = r.watch_duration {
            self.watch_sum.add(w);
            self.watch_n += 1;
        }
        if let Some(c) = r.completion_rate {
            self.completion_sum.add(c);
            self.completion_n += 1;
        }
        if r.action == Action::Payment {
            if let Some(a) = r.amount {
                self.gmv.add(a);
            }
        }
    }

    fn merge(&mut self, o: &MetAcc) {
        for i in 0..12 {
            self.counts[i] += o.counts[i];
        }
        self.watch_sum.merge(o.watch_sum);
        self.watch_n += o.watch_n;
        self.completion_sum.merge(o.completion_sum);
        self.completion_n += o.completion_n;
        self.gmv.merge(o.gmv);
    }

    /// The metrics of MISSION.md; ratios are 0 when the denominator is 0.
    pub fn row(&self, experiment_id: Str, variant: Str) -> MetricsRow {
        let c = |a: Action| self.counts[a.index()];
        let impressions = c(Action::Impression);
        let clicks = c(Action::Click);
        let (likes, shares, comments) = (c(Action::Like), c(Action::Share), c(Action::Comment));
        MetricsRow {
            experiment_id,
            variant,
            impressions,
            clicks,
            views: c(Action::View) + c(Action::Play),
            likes,
            shares,
            comments,
            add_carts: c(Action::AddCart),
            orders: c(Action::Order),
            payments: c(Action::Payment),
            ctr: ratio(clicks as f64, impressions as f64),
            avg_watch_duration: ratio(self.watch_sum.get(), self.watch_n as f64),
            avg_completion_rate: ratio(self.completion_sum.get(), self.completion_n as f64),
            conversion_rate: ratio(c(Action::Order) as f64, clicks as f64),
            interaction_rate: ratio((likes + shares + comments) as f64, impressions as f64),
            gmv: self.gmv.get(),
        }
    }
}

/// A worker's partial sums for one key and minute.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetPartial {
    pub key: MetKey,
    pub window_start: i64,
    pub acc: MetAcc,
}

/// Stage 1: local pre-aggregation per minute.
#[derive(Default)]
pub struct MetricsPreAgg {
    minutes: BTreeMap<Minute, IdMap<MetKey, MetAcc>>,
}

impl WindowLogic for MetricsPreAgg {
    type In = MetRec;
    type Out = MetPartial;

    fn absorb(&mut self, r: MetRec, close_at: &mut dyn FnMut(Minute)) {
        let m = minute_of(r.ts);
        let map = self.minutes.entry(m).or_insert_with(|| {
            close_at(m + 1);
            IdMap::default()
        });
        match map.get_mut(&r.key) {
            Some(acc) => acc.add(&r),
            None => {
                let mut acc = MetAcc::default();
                acc.add(&r);
                map.insert(r.key, acc);
            }
        }
    }

    fn close(&mut self, close: Minute, out: &mut Vec<MetPartial>) {
        let m = close - 1;
        if let Some(map) = self.minutes.remove(&m) {
            let window_start = m as i64 * MINUTE_MS;
            out.extend(map.into_iter().map(|(key, acc)| MetPartial { key, window_start, acc }));
        }
    }
}

/// Stage 2: one snapshot per (tenant, scenario) and minute.
pub struct MetricsMerge {
    counters: Arc<Counters>,
    minutes: BTreeMap<i64, BTreeMap<MetKey, MetAcc>>,
}

impl MetricsMerge {
    /// Empty state.
    pub fn new(counters: Arc<Counters>) -> Self {
        MetricsMerge { counters, minutes: BTreeMap::new() }
    }
}

impl WindowLogic for MetricsMerge {
    type In = MetPartial;
    type Out = MetricsWindow;

    fn absorb(&mut self, p: MetPartial, close_at: &mut dyn FnMut(Minute)) {
        close_at((p.window_start / MINUTE_MS) as Minute + 1);
        self.minutes.entry(p.window_start).or_default().entry(p.key).or_default().merge(&p.acc);
    }

    fn close(&mut self, close: Minute, out: &mut Vec<MetricsWindow>) {
        let start = (close as i64 - 1) * MINUTE_MS;
        let Some(keys) = self.minutes.remove(&start) else {
            return;
        };
        // BTreeMap order groups rows by (tenant, scenario) sorted by (experiment, variant).
        for (key, acc) in keys {
            let row = acc.row(key.experiment_id, key.variant);
            match out.last_mut() {
                Some(w)
                    if w.window_start == start && w.tenant_id == key.tenant_id && w.scenario_id == key.scenario_id =>
                {
                    w.rows.push(row)
                }
                _ => {
                    self.counters.metrics_windows.fetch_add(1, Relaxed);
                    out.push(MetricsWindow {
                        tenant_id: key.tenant_id,
                        scenario_id: key.scenario_id,
                        window_start: start,
                        rows: vec![row],
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(action: Action, ts: i64, extra: (Option<f64>, Option<f64>, Option<f64>)) -> MetRec {
        MetRec {
            key: MetKey {
                tenant_id: "t".into(),
                scenario_id: "s".into(),
                experiment_id: "exp".into(),
                variant: "a".into(),
            },
            ts,
            action,
            watch_duration: extra.0,
            completion_rate: extra.1,
            amount: extra.2,
        }
    }

    #[test]
    fn ratios_and_zero_denominators() {
        let mut acc = MetAcc::default();
        for r in [
            rec(Action::Click, 0, (None, None, None)),
            rec(Action::Click, 0, (None, None, None)),
            rec(Action::Order, 0, (None, None, Some(5.0))),
            rec(Action::Payment, 0, (None, None, Some(12.25))),
            rec(Action::View, 0, (Some(30.0), Some(0.5), None)),
            rec(Action::Play, 0, (Some(10.0), None, None)),
        ] {
            acc.add(&r);
        }
        let row = acc.row("exp".into(), "a".into());
        assert_eq!((row.impressions, row.clicks, row.views, row.orders, row.payments), (0, 2, 2, 1, 1));
        assert_eq!(row.ctr, 0.0, "no impressions: ctr 0, not NaN");
        assert_eq!(row.interaction_rate, 0.0);
        assert_eq!(row.conversion_rate, 0.5);
        assert_eq!(row.avg_watch_duration, 20.0);
        assert_eq!(row.avg_completion_rate, 0.5, "mean over events carrying the field");
        assert_eq!(row.gmv, 12.25, "only payments count");
        let empty = MetAcc::default().row("e".into(), "v".into());
        assert_eq!((empty.ctr, empty.avg_watch_duration, empty.conversion_rate), (0.0, 0.0, 0.0));
    }

    #[test]
    fn pre_aggregation_then_merge_equals_one_pass() {
        let recs: Vec<MetRec> = (0..50)
            .map(|i| {
                let a = if i % 3 == 0 { Action::Impression } else { Action::Click };
                rec(a, (i % 4) * 30_000, (None, None, None))
            })
            .collect();
        let mut stages = [MetricsPreAgg::default(), MetricsPreAgg::default()];
        let mut partials = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            stages[i % 2].absorb(r.clone(), &mut |_| {});
        }
        for s in stages.iter_mut() {
            s.close(1, &mut partials);
            s.close(2, &mut partials);
        }
        let mut merge = MetricsMerge::new(Arc::new(Counters::new(1)));
        for p in partials {
            merge.absorb(p, &mut |_| {});
        }
        let mut out = Vec::new();
        merge.close(1, &mut out);
        merge.close(2, &mut out);
        assert_eq!(out.len(), 2);
        let minute0 = recs.iter().filter(|r| r.ts < 60_000).count() as u64;
        let r0 = &out[0].rows[0];
        assert_eq!(out[0].window_start, 0);
        assert_eq!(r0.impressions + r0.clicks, minute0);
        assert_eq!(out[1].window_start, 60_000);
    }
}
