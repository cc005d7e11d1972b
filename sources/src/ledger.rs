//! The commit ledger: which Kafka offsets may be committed.
//!
//! A record may be committed only once every output that depends on it was
//! acknowledged by every sink. The dataflow tells the ledger, per batch, the
//! last dataflow time (minute) at which any output of the batch can appear
//! (its *release*: the close of the last window its events feed), and later
//! that all outputs before time `F` are acknowledged. A partition's offsets
//! are committable up to the end of the longest prefix of its batches whose
//! releases are all below `F`: a replay from there re-reads every record of
//! every window not yet fully written.

use std::collections::{HashMap, VecDeque};

use crate::kafka::PartitionKey;

/// One run of batches of a partition with the same effective release.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// Offset after the run's last record.
    next_offset: i64,
    /// The partition's max valid event time after the run (commit metadata).
    max_ts: i64,
    /// Max release of this run and every earlier run; `None` until processed.
    release: Option<u64>,
}

/// A partition's runs, taken from one member's ledger for another ([`crate::handoff`]).
#[derive(Debug, Default)]
pub struct Runs(VecDeque<Entry>);

impl Runs {
    /// Runs held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was awaiting its sinks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A committable position: (partition, next offset, partition max event time before it).
pub type Committable = (PartitionKey, i64, i64);

/// Per-partition ledger of handed-out batches awaiting their sinks.
#[derive(Debug, Default)]
pub struct CommitLedger {
    parts: HashMap<PartitionKey, VecDeque<Entry>>,
    /// The partition of the batch handed out last (awaiting `processed`).
    last: Option<PartitionKey>,
}

impl CommitLedger {
    /// A batch of `key` ending before `next_offset` was handed out; the
    /// partition's max event time is `max_ts` after it.
    pub fn handed_out(&mut self, key: &PartitionKey, next_offset: i64, max_ts: i64) {
        self.parts.entry(key.clone()).or_default().push_back(Entry { next_offset, max_ts, release: None });
        self.last = Some(key.clone());
    }

    /// The batch handed out last produced outputs at times `<= release` only.
    pub fn processed(&mut self, release: u64) {
        let Some(key) = self.last.take() else { return };
        let Some(q) = self.parts.get_mut(&key) else { return };
        let n = q.len();
        let prev = if n >= 2 { q[n - 2].release } else { None };
        let eff = prev.map_or(release, |p| p.max(release));
        if n >= 2 && prev == Some(eff) {
            // Same effective release as the run before: extend that run.
            if let Some(e) = q.pop_back() {
                let run = &mut q[n - 2];
                run.next_offset = e.next_offset;
                run.max_ts = e.max_ts;
            }
        } else if let Some(e) = q.back_mut() {
            e.release = Some(eff);
        }
    }

    /// All outputs at times `< frontier` are acknowledged (`None`: all of
    /// them): pops and returns, per partition, the furthest committable position.
    pub fn release(&mut self, frontier: Option<u64>) -> Vec<Committable> {
        let mut out = Vec::new();
        for (key, q) in self.parts.iter_mut() {
            let mut best = None;
            while let Some(front) = q.front() {
                let done = match (front.release, frontier) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(r), Some(f)) => r < f,
                };
                if !done {
                    break;
                }
                best = q.pop_front();
            }
            if let Some(e) = best {
                out.push((key.clone(), e.next_offset, e.max_ts));
            }
        }
        self.parts.retain(|_, q| !q.is_empty());
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The partition was revoked: its uncommitted batches belong to the new
    /// owner, returned for it to [`Self::adopt`].
    pub fn take(&mut self, key: &PartitionKey) -> Runs {
        if self.last.as_ref() == Some(key) {
            // Handed out but not processed: cannot happen (the dataflow reports a
            // batch before the next poll, where rebalances run); never committable.
            self.last = None;
            if let Some(e) = self.parts.get_mut(key).and_then(|q| q.back_mut()) {
                e.release = Some(u64::MAX);
            }
        }
        Runs(self.parts.remove(key).unwrap_or_default())
    }

    /// The partition's earlier owner left `runs`: they come before anything
    /// this member hands out for it, and are committed like its own.
    pub fn adopt(&mut self, key: &PartitionKey, runs: Runs) {
        if runs.0.is_empty() {
            return;
        }
        let q = self.parts.entry(key.clone()).or_default();
        let mine = std::mem::replace(q, runs.0);
        q.extend(mine);
    }

    /// Runs held (all partitions): a bound on the ledger's memory.
    pub fn runs(&self) -> usize {
        self.parts.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn key(p: i32) -> PartitionKey {
        (Arc::from("t"), p)
    }

    #[test]
    fn commits_the_longest_prefix_released_before_the_frontier() {
        let mut l = CommitLedger::default();
        // Partition 0: batches releasing at 60, 59 (effective 60), 75.
        l.handed_out(&key(0), 10, 100);
        l.processed(60);
        l.handed_out(&key(0), 20, 110);
        l.processed(59);
        l.handed_out(&key(0), 30, 120);
        l.processed(75);
        // Partition 1: one batch, not processed yet.
        l.handed_out(&key(1), 5, 7);
        assert_eq!(l.runs(), 3, "the 59 batch joined the 60 run");
        assert_eq!(l.release(Some(60)), vec![], "60 is not < 60");
        assert_eq!(l.release(Some(61)), vec![(key(0), 20, 110)]);
        l.processed(3);
        assert_eq!(l.release(Some(61)), vec![(key(1), 5, 7)]);
        assert_eq!(l.release(Some(75)), vec![]);
        assert_eq!(l.release(None), vec![(key(0), 30, 120)]);
        assert_eq!(l.runs(), 0);
    }

    #[test]
    fn an_early_release_after_a_late_one_waits_for_it() {
        let mut l = CommitLedger::default();
        l.handed_out(&key(0), 10, 1);
        l.processed(90);
        l.handed_out(&key(0), 20, 2);
        l.processed(5);
        assert_eq!(l.release(Some(50)), vec![], "offset 10..20 is behind a batch releasing at 90");
        assert_eq!(l.release(Some(91)), vec![(key(0), 20, 2)]);
    }

    #[test]
    fn unprocessed_batches_and_revoked_partitions_are_never_committed() {
        let mut l = CommitLedger::default();
        l.handed_out(&key(0), 10, 1);
        assert_eq!(l.release(None), vec![], "not processed yet");
        assert_eq!(l.take(&key(0)).len(), 1, "handed to the next owner");
        l.processed(1);
        assert_eq!(l.release(None), vec![]);
        assert_eq!(l.runs(), 0);
    }

    #[test]
    fn adopted_runs_are_committed_by_the_new_owner_in_offset_order() {
        let mut old = CommitLedger::default();
        old.handed_out(&key(0), 10, 1);
        old.processed(40);
        old.handed_out(&key(0), 20, 2);
        old.processed(50);
        let mut new = CommitLedger::default();
        new.adopt(&key(0), old.take(&key(0)));
        assert_eq!(old.runs(), 0);
        new.handed_out(&key(0), 30, 3);
        new.processed(45);
        assert_eq!(new.release(Some(41)), vec![(key(0), 10, 1)]);
        assert_eq!(new.release(Some(50)), vec![], "20 releases at 50, and 30 is behind it");
        assert_eq!(new.release(Some(51)), vec![(key(0), 30, 3)]);
    }

    #[test]
    fn a_batch_taken_before_it_was_processed_is_never_committed_early() {
        let mut old = CommitLedger::default();
        old.handed_out(&key(0), 10, 1);
        let mut new = CommitLedger::default();
        new.adopt(&key(0), old.take(&key(0)));
        new.handed_out(&key(0), 20, 2);
        new.processed(5);
        assert_eq!(new.release(Some(1000)), vec![]);
    }
}
