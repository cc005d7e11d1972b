//! Batching by size/age and retry with exponential backoff, shared by all sinks.
//!
//! There is no timer thread: the age trigger is evaluated whenever the owner
//! looks ([`BatchTrigger::is_due`]), so sinks check it on every `write` —
//! including empty ones, which jobs send as ticks.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// When a batch is due: whichever of `max_rows` / `max_age` comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Rows that make a batch due (at least 1).
    pub max_rows: usize,
    /// Age of the batch's first row that makes it due.
    pub max_age: Duration,
}

impl Default for BatchConfig {
    /// 1000 rows or 5 s, as the ClickHouse job specifies.
    fn default() -> Self {
        BatchConfig { max_rows: 1000, max_age: Duration::from_secs(5) }
    }
}

/// Counts rows and remembers when the current batch started; holds no items.
///
/// Why separate from [`Batcher`]: sinks that serialize rows as they arrive
/// (raw log, ClickHouse bodies) keep bytes, not items, but need the same trigger.
#[derive(Clone, Debug)]
pub struct BatchTrigger {
    config: BatchConfig,
    rows: usize,
    first_at: Option<Instant>,
}

impl BatchTrigger {
    /// An empty trigger.
    pub fn new(config: BatchConfig) -> Self {
        BatchTrigger { config: BatchConfig { max_rows: config.max_rows.max(1), ..config }, rows: 0, first_at: None }
    }

    /// The configuration in use.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// Notes `n` more rows; the first row of a batch starts its age clock.
    pub fn record(&mut self, n: usize) {
        if n > 0 && self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
        self.rows += n;
    }

    /// Rows in the current batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Age of the current batch (time since its first row), if any.
    pub fn age(&self) -> Option<Duration> {
        self.first_at.map(|t| t.elapsed())
    }

    /// True when the size limit is reached.
    pub fn is_full(&self) -> bool {
        self.rows >= self.config.max_rows
    }

    /// True when the batch is full or older than `max_age`.
    pub fn is_due(&self) -> bool {
        self.is_due_at(Instant::now())
    }

    /// [`Self::is_due`] against a given clock reading.
    pub fn is_due_at(&self, now: Instant) -> bool {
        self.is_full() || self.first_at.is_some_and(|t| now.saturating_duration_since(t) >= self.config.max_age)
    }

    /// Starts a new, empty batch.
    pub fn reset(&mut self) {
        self.rows = 0;
        self.first_at = None;
    }
}

/// Collects items until a batch is due by size or age.
#[derive(Clone, Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    trigger: BatchTrigger,
}

impl<T> Batcher<T> {
    /// An empty batcher.
    pub fn new(config: BatchConfig) -> Self {
        let trigger = BatchTrigger::new(config);
        Batcher {
            // Capped: a huge max_rows must not reserve gigabytes up front.
            items: Vec::with_capacity(trigger.config.max_rows.min(4096)),
            trigger,
        }
    }

    /// Adds an item; returns true when the batch is now due.
    pub fn push(&mut self, item: T) -> bool {
        self.items.push(item);
        self.trigger.record(1);
        self.trigger.is_due()
    }

    /// Items pending.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The pending items.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// True when the batch is full or its first item is older than `max_age`.
    pub fn is_due(&self) -> bool {
        self.trigger.is_due()
    }

    /// Age of the pending batch, if any.
    pub fn age(&self) -> Option<Duration> {
        self.trigger.age()
    }

    /// Removes and returns the pending items, starting a new batch.
    pub fn take(&mut self) -> Vec<T> {
        self.trigger.reset();
        let cap = self.items.capacity();
        std::mem::replace(&mut self.items, Vec::with_capacity(cap))
    }

    /// Drops the pending items keeping the allocation (after they were sent from `items()`).
    pub fn clear(&mut self) {
        self.trigger.reset();
        self.items.clear();
    }
}

/// Exponential backoff: `initial`, ×`factor` each retry, capped at `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Multiplier between consecutive delays.
    pub factor: f64,
    /// Upper bound of a single delay.
    pub max_delay: Duration,
    /// Total attempts including the first (at least 1); `u32::MAX` ~ forever.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 100 ms, ×2, capped at 10 s, 10 attempts.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0-based); async sinks sleep on it themselves.
    pub fn delay(&self, retry: u32) -> Duration {
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(retry.min(64) as i32);
        let cap = self.max_delay.as_secs_f64();
        // min() also tames inf from a large exponent.
        Duration::from_secs_f64(secs.min(cap).max(0.0))
    }
}

/// The `[*.retry]` config table of a sink; becomes a [`RetryPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Multiplier between consecutive delays.
    pub backoff_factor: f64,
    /// Upper bound of a single delay, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    /// The same numbers as [`RetryPolicy::default`].
    fn default() -> Self {
        RetryConfig::from(RetryPolicy::default())
    }
}

impl RetryConfig {
    /// The policy these knobs describe.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy::from(*self)
    }
}

impl From<RetryPolicy> for RetryConfig {
    fn from(p: RetryPolicy) -> Self {
        RetryConfig {
            max_attempts: p.max_attempts,
            initial_backoff_ms: p.initial.as_millis() as u64,
            backoff_factor: p.factor,
            max_backoff_ms: p.max_delay.as_millis() as u64,
        }
    }
}

impl From<RetryConfig> for RetryPolicy {
    fn from(c: RetryConfig) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(c.initial_backoff_ms),
            factor: c.backoff_factor,
            max_delay: Duration::from_millis(c.max_backoff_ms),
            max_attempts: c.max_attempts.max(1),
        }
    }
}

/// Runs `op` until it succeeds or `policy.max_attempts` are used, sleeping between tries.
pub fn retry<T, E: Display>(policy: &RetryPolicy, op: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    retry_if(policy, op, |_| true)
}

/// Like [`retry`], but gives up at once on errors `retryable` rejects (e.g. bad data).
pub fn retry_if<T, E: Display>(
    policy: &RetryPolicy,
    mut op: impl FnMut() -> Result<T, E>,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let max = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < max && retryable(&e) => {
                let delay = policy.delay(attempt - 1);
                tracing::warn!(
                    attempt,
                    max_attempts = max,
                    delay_ms = delay.as_millis() as u64,
                    error = %e,
                    "sink operation failed; retrying"
                );
                std::thread::sleep(delay);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rows: usize, ms: u64) -> BatchConfig {
        BatchConfig { max_rows: rows, max_age: Duration::from_millis(ms) }
    }

    #[test]
    fn defaults() {
        assert_eq!(BatchConfig::default().max_rows, 1000);
        assert_eq!(BatchConfig::default().max_age, Duration::from_secs(5));
        let p = RetryPolicy::default();
        let close = |d: Duration, ms: u64| d.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1);
        assert!(close(p.delay(0), 100));
        assert!(close(p.delay(1), 200));
        assert!(close(p.delay(6), 6400));
        assert!(close(p.delay(7), 10_000), "capped at 10 s");
        assert!(close(p.delay(u32::MAX), 10_000));
    }

    #[test]
    fn due_by_size() {
        let mut b = Batcher::new(cfg(3, 60_000));
        assert!(!b.is_due());
        assert!(!b.push(1));
        assert!(!b.push(2));
        assert!(b.push(3));
        assert_eq!(b.take(), vec![1, 2, 3]);
        assert!(b.is_empty());
        assert!(!b.is_due());
        assert_eq!(b.age(), None);
    }

    #[test]
    fn due_by_age_from_first_item() {
        let mut b = Batcher::new(cfg(1000, 20));
        assert!(!b.is_due(), "an empty batch is never due");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!b.is_due(), "age counts from the first item, not creation");
        assert!(!b.push("a"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.is_due());
        b.clear();
        assert!(!b.is_due());
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn trigger_is_due_at() {
        let mut t = BatchTrigger::new(cfg(0, 10));
        assert_eq!(t.config().max_rows, 1, "max_rows is at least 1");
        t.record(0);
        assert!(t.is_empty() && !t.is_due());
        let before = Instant::now();
        t.record(1);
        assert!(t.is_full());
        let mut t = BatchTrigger::new(cfg(10, 10));
        t.record(2);
        assert_eq!(t.rows(), 2);
        assert!(!t.is_due_at(before));
        assert!(t.is_due_at(Instant::now() + Duration::from_millis(11)));
        t.reset();
        assert!(!t.is_due_at(Instant::now() + Duration::from_secs(1)));
    }

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            factor: 2.0,
            max_delay: Duration::from_millis(3),
            max_attempts,
        }
    }

    #[test]
    fn retry_succeeds_after_failures() {
        let mut calls = 0;
        let start = Instant::now();
        let r: Result<u32, String> = retry(&quick(5), || {
            calls += 1;
            if calls < 4 {
                Err(format!("down {calls}"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(4));
        // Slept 1 + 2 + 3 (capped) ms.
        assert!(start.elapsed() >= Duration::from_millis(6));
    }

    #[test]
    fn retry_gives_up_after_max_attempts() {
        let mut calls = 0;
        let r: Result<(), &str> = retry(&quick(3), || {
            calls += 1;
            Err("down")
        });
        assert_eq!(r, Err("down"));
        assert_eq!(calls, 3);
    }

    #[test]
    fn retry_if_stops_on_permanent_error() {
        let mut calls = 0;
        let r: Result<(), &str> = retry_if(
            &quick(10),
            || {
                calls += 1;
                Err("bad data")
            },
            |e| *e != "bad data",
        );
        assert_eq!(r, Err("bad data"));
        assert_eq!(calls, 1);
    }
}
