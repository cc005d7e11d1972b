//! Shared progress counters: the source of the stderr progress line and of
//! the Prometheus series. Atomics, so workers never block on them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use recflow_schemas::{Reason, Str};

/// Pipeline-wide counters, one instance per process.
#[derive(Debug)]
pub struct Counters {
    /// Valid events read (applied + late).
    pub events: AtomicU64,
    /// Valid events below the watermark on arrival.
    pub late: AtomicU64,
    /// Rejections per reason (index = position in `Reason::ALL`).
    pub invalid: [AtomicU64; 8],
    /// Windows closed (per key) by job.
    pub hot_windows: AtomicU64,
    pub profile_windows: AtomicU64,
    pub metrics_windows: AtomicU64,
    /// Per-worker watermark (epoch ms; i64::MIN before any event).
    pub watermarks: Vec<AtomicI64>,
    /// Valid events per tenant (added per batch, not per event).
    pub by_tenant: Mutex<BTreeMap<Str, u64>>,
    /// Raw-log rows and dead letters ingested and not yet taken by a sink
    /// operator: what backpressure bounds (`IngestConfig::max_in_flight`).
    pub in_flight: AtomicUsize,
}

impl Counters {
    /// Counters for `workers` local workers.
    pub fn new(workers: usize) -> Self {
        Counters {
            events: AtomicU64::new(0),
            late: AtomicU64::new(0),
            invalid: Default::default(),
            hot_windows: AtomicU64::new(0),
            profile_windows: AtomicU64::new(0),
            metrics_windows: AtomicU64::new(0),
            watermarks: (0..workers.max(1)).map(|_| AtomicI64::new(i64::MIN)).collect(),
            by_tenant: Mutex::new(BTreeMap::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Counts one rejection.
    pub fn reject(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.invalid[i].fetch_add(1, Relaxed);
    }

    /// Rejections for one reason.
    pub fn rejected(&self, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.invalid[i].load(Relaxed)
    }

    /// All rejections except late.
    pub fn invalid_total(&self) -> u64 {
        Reason::ALL.iter().filter(|r| **r != Reason::Late).map(|r| self.rejected(*r)).sum()
    }

    /// Adds a batch's per-tenant event counts.
    pub fn add_tenant_events(&self, counts: &mut Vec<(Str, u64)>) {
        if counts.is_empty() {
            return;
        }
        let mut m = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        for (t, n) in counts.drain(..) {
            *m.entry(t).or_insert(0) += n;
        }
    }

    /// Valid events per tenant so far.
    pub fn tenant_events(&self) -> Vec<(Str, u64)> {
        let m = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    /// Min watermark over local workers.
    pub fn watermark(&self) -> i64 {
        self.watermarks.iter().map(|w| w.load(Relaxed)).min().unwrap_or(i64::MIN)
    }

    /// Windows closed over all jobs.
    pub fn windows_closed(&self) -> u64 {
        self.hot_windows.load(Relaxed) + self.profile_windows.load(Relaxed) + self.metrics_windows.load(Relaxed)
    }
}
