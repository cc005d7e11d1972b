//! Hand-off of a partition between two live members of one process.
//!
//! When a rebalance moves a partition from member A to member B, B would
//! start at the group's committed offset. Offsets are committed only after
//! the sinks acknowledged, so A has usually handed records past it to the
//! dataflow already: B would feed them into the open windows a second time.
//! Instead, A leaves in [`Handoffs`] where it stopped (the offset after its
//! last record handed out, the partition's max event time there) and its
//! batches not yet committable; B continues from there, skips what A
//! already read, and commits A's batches once their outputs are sunk.
//!
//! Per process, like [`crate::Coverage`]: a partition that moves to another
//! process resumes at the committed offset (RELIABILITY.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::coverage::TopicPartition;
use crate::ledger::Runs;

/// What the old owner of a partition leaves to the new one.
#[derive(Debug)]
pub struct Handoff {
    /// Offset after the last record the old owner handed to the dataflow.
    pub next_offset: i64,
    /// The partition's max valid event time before `next_offset`.
    pub max_ts: i64,
    /// The old owner's batches of the partition not yet committable.
    pub runs: Runs,
    /// A committable (offset, max event time) the old owner had not committed yet.
    pub due: Option<(i64, i64)>,
}

/// Partitions revoked from a member of this process and not yet assigned again (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct Handoffs(Arc<Mutex<HashMap<TopicPartition, Handoff>>>);

impl Handoffs {
    /// No partition handed off yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The old owner leaves `handoff` for the next owner of `tp` (replacing an older one).
    pub fn put(&self, tp: TopicPartition, handoff: Handoff) {
        self.lock().insert(tp, handoff);
    }

    /// The new owner of `tp` takes what the old one left, if it was a member of this process.
    pub fn take(&self, tp: &TopicPartition) -> Option<Handoff> {
        self.lock().remove(tp)
    }

    /// Partitions waiting for a new owner.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no partition waits for a new owner.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, Handoff>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_is_taken_once_and_a_newer_one_replaces_an_older() {
        let h = Handoffs::new();
        let tp: TopicPartition = ("t".into(), 1);
        h.put(tp.clone(), Handoff { next_offset: 5, max_ts: 50, runs: Runs::default(), due: None });
        h.put(tp.clone(), Handoff { next_offset: 9, max_ts: 90, runs: Runs::default(), due: Some((7, 70)) });
        assert_eq!(h.len(), 1);
        let got = h.take(&tp).expect("left for the new owner");
        assert_eq!((got.next_offset, got.max_ts, got.due), (9, 90, Some((7, 70))));
        assert!(h.take(&tp).is_none(), "taken once");
        assert!(h.take(&("t".into(), 2)).is_none(), "never handed off");
    }
}
