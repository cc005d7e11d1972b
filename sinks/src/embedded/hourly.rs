//! The embedded twin of ClickHouse `metrics_hourly`: per (tenant, scenario,
//! experiment, variant, hour) sums over the raw-log rows, so the server's
//! `/api/v1/analytics/hourly` answers without ClickHouse as well.

use std::collections::BTreeMap;

use recflow_schemas::{Action, Event, IdMap, Str};

const HOUR_MS: i64 = 3_600_000;

/// One hour of one (experiment, variant): the columns of `metrics_hourly`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HourlyRow {
    /// Experiment id.
    pub experiment_id: Str,
    /// Variant.
    pub variant: Str,
    /// Start of the hour (UTC), epoch ms.
    pub hour_ms: i64,
    /// Impressions.
    pub impressions: u64,
    /// Clicks.
    pub clicks: u64,
    /// Views and plays.
    pub views: u64,
    /// Likes.
    pub likes: u64,
    /// Shares.
    pub shares: u64,
    /// Comments.
    pub comments: u64,
    /// Add-to-carts.
    pub add_carts: u64,
    /// Orders.
    pub orders: u64,
    /// Payments.
    pub payments: u64,
    /// Sum of `watch_duration` over events carrying one.
    pub watch_duration_sum: f64,
    /// Events carrying `watch_duration`.
    pub watch_duration_count: u64,
    /// Sum of `completion_rate` over events carrying one.
    pub completion_rate_sum: f64,
    /// Events carrying `completion_rate`.
    pub completion_rate_count: u64,
    /// Sum of payment amounts.
    pub gmv: f64,
}

impl HourlyRow {
    fn add(&mut self, e: &Event) {
        let slot = match e.action {
            Action::Impression => Some(&mut self.impressions),
            Action::Click => Some(&mut self.clicks),
            Action::View | Action::Play => Some(&mut self.views),
            Action::Like => Some(&mut self.likes),
            Action::Share => Some(&mut self.shares),
            Action::Comment => Some(&mut self.comments),
            Action::AddCart => Some(&mut self.add_carts),
            Action::Order => Some(&mut self.orders),
            Action::Payment => Some(&mut self.payments),
            Action::Read | Action::Learn => None,
        };
        if let Some(n) = slot {
            *n += 1;
        }
        if let Some(w) = e.watch_duration {
            self.watch_duration_sum += w;
            self.watch_duration_count += 1;
        }
        if let Some(c) = e.completion_rate {
            self.completion_rate_sum += c;
            self.completion_rate_count += 1;
        }
        if e.action == Action::Payment {
            self.gmv += e.amount.unwrap_or(0.0);
        }
    }

    /// Mean watch duration (0 without any).
    pub fn avg_watch_duration(&self) -> f64 {
        ratio(self.watch_duration_sum, self.watch_duration_count)
    }

    /// Mean completion rate (0 without any).
    pub fn avg_completion_rate(&self) -> f64 {
        ratio(self.completion_rate_sum, self.completion_rate_count)
    }
}

fn ratio(sum: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// (hour start, experiment, variant): the order rows are served in.
type RowKey = (i64, Str, Str);

/// Hourly rows per (tenant, scenario).
#[derive(Debug, Default)]
pub(super) struct Hourly(IdMap<(Str, Str), BTreeMap<RowKey, HourlyRow>>);

impl Hourly {
    /// Counts one raw-log row.
    pub(super) fn add(&mut self, e: &Event) {
        let hour = e.ts.div_euclid(HOUR_MS) * HOUR_MS;
        let rows = self.0.entry((e.tenant_id.clone(), e.scenario_id.clone())).or_default();
        let key = (hour, e.experiment_id.clone(), e.variant.clone());
        rows.entry(key)
            .or_insert_with(|| HourlyRow {
                experiment_id: e.experiment_id.clone(),
                variant: e.variant.clone(),
                hour_ms: hour,
                ..HourlyRow::default()
            })
            .add(e);
    }

    /// Rows of hours starting in `[from_ms, to_ms)`, by hour, experiment, variant.
    pub(super) fn query(&self, tenant: &str, scenario: &str, from_ms: i64, to_ms: i64) -> Vec<HourlyRow> {
        let Some(rows) = self.0.get(&(Str::new(tenant), Str::new(scenario))) else { return Vec::new() };
        rows.range((from_ms, Str::default(), Str::default())..)
            .take_while(|((hour, _, _), _)| *hour < to_ms)
            .map(|(_, r)| r.clone())
            .collect()
    }
}
