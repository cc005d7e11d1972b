//! Recording exposures (`exposed:{tenant}:{user}:{scenario}`) off the
//! response path.
//!
//! With a remote store the SADD+EXPIRE of a page would cost every request a
//! second Redis round trip. Instead the page is queued (bounded; a full queue
//! drops the write and counts it) and a writer task sends queued writes in
//! batches, one pipeline per batch.
//!
//! Correctness: until its write is acknowledged, a page stays in an
//! in-process *pending* map, and a request snapshots the pending items of its
//! key *before* it reads the exposed SET. An item missing from the snapshot
//! was therefore acknowledged before the read was sent, so the read sees it:
//! a user's next request (to this process) never misses the previous page.
//! A store that writes in-process (the embedded store) is written inline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use recflow_schemas::Str;
use tokio::sync::mpsc;

use crate::state::StateStore;

/// Writes the queue holds before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most writes sent in one pipeline.
const MAX_BATCH: usize = 256;

/// One page to record.
struct Write {
    key: String,
    items: Vec<Str>,
}

/// Items of one key whose writes are not acknowledged yet.
#[derive(Default)]
struct Pending {
    items: Vec<Str>,
    in_flight: u32,
}

type PendingMap = Arc<Mutex<HashMap<String, Pending>>>;

/// The exposure writer of one app.
pub struct ExposureLog {
    store: Arc<dyn StateStore>,
    ttl: Duration,
    pending: PendingMap,
    /// The writer task's queue, started on first use in the serving runtime.
    tx: Mutex<Option<mpsc::Sender<Write>>>,
    /// `recflow_exposure_writes_total{outcome}`: written, failed, dropped.
    outcomes: IntCounterVec,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExposureLog {
    /// Records into `store` with `ttl`, counting outcomes in `outcomes` (label `outcome`).
    pub fn new(store: Arc<dyn StateStore>, ttl: Duration, outcomes: IntCounterVec) -> Self {
        ExposureLog { store, ttl, pending: Arc::default(), tx: Mutex::new(None), outcomes }
    }

    /// Items of `key` recorded but not yet acknowledged. Call it *before*
    /// reading the exposed SET; the union of both is what the user has seen.
    pub fn pending(&self, key: &str) -> Vec<Str> {
        lock(&self.pending).get(key).map(|p| p.items.clone()).unwrap_or_default()
    }

    /// Records `items` as exposed under `key`. Returns once queued (remote
    /// store) or written (in-process store); failures are counted, not returned.
    pub async fn record(&self, key: String, items: Vec<Str>) {
        if items.is_empty() {
            return;
        }
        if self.store.in_process() {
            let items = items.iter().map(|i| i.to_string()).collect();
            let outcome = match self.store.add_members(key, items, self.ttl).await {
                Ok(()) => "written",
                Err(e) => {
                    tracing::warn!(error = %e, "exposures not recorded");
                    "failed"
                }
            };
            self.outcomes.with_label_values(&[outcome]).inc();
            return;
        }
        self.add_pending(&key, &items);
        let mut write = Write { key, items };
        // A sender whose writer is gone (its runtime ended) is replaced once.
        for _ in 0..2 {
            let tx = self.sender();
            match tx.try_send(write) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(w)) => {
                    release(&self.pending, std::slice::from_ref(&w));
                    self.outcomes.with_label_values(&["dropped"]).inc();
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(w)) => {
                    lock(&self.tx).take();
                    write = w;
                }
            }
        }
        release(&self.pending, std::slice::from_ref(&write));
        self.outcomes.with_label_values(&["dropped"]).inc();
    }

    /// Waits until every queued write is acknowledged (or failed), at most `timeout`.
    /// Returns whether the queue drained.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.pending).is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn add_pending(&self, key: &str, items: &[Str]) {
        let mut pending = lock(&self.pending);
        let p = pending.entry(key.to_string()).or_default();
        p.items.extend_from_slice(items);
        p.in_flight += 1;
    }

    /// The writer's queue, spawning the writer in the current runtime if needed.
    fn sender(&self) -> mpsc::Sender<Write> {
        let mut tx = lock(&self.tx);
        if let Some(t) = tx.as_ref().filter(|t| !t.is_closed()) {
            return t.clone();
        }
        let (t, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            store: self.store.clone(),
            ttl: self.ttl,
            pending: self.pending.clone(),
            outcomes: self.outcomes.clone(),
        };
        tokio::spawn(writer.run(rx));
        *tx = Some(t.clone());
        t
    }
}

/// Drops one in-flight write per entry of `writes` from the pending map.
fn release(pending: &PendingMap, writes: &[Write]) {
    let mut pending = lock(pending);
    for w in writes {
        if let Some(p) = pending.get_mut(&w.key) {
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                pending.remove(&w.key);
            }
        }
    }
}

struct Writer {
    store: Arc<dyn StateStore>,
    ttl: Duration,
    pending: PendingMap,
    outcomes: IntCounterVec,
}

impl Writer {
    /// Sends queued writes in batches until every sender is gone.
    async fn run(self, mut rx: mpsc::Receiver<Write>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let writes =
                batch.iter().map(|w| (w.key.clone(), w.items.iter().map(|i| i.to_string()).collect())).collect();
            let outcome = match self.store.add_members_batch(writes, self.ttl).await {
                Ok(()) => "written",
                Err(e) => {
                    tracing::warn!(error = %e, writes = batch.len(), "exposures not recorded");
                    "failed"
                }
            };
            self.outcomes.with_label_values(&[outcome]).inc_by(batch.len() as u64);
            release(&self.pending, &batch);
            batch.clear();
        }
    }
}
