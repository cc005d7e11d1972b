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
//! The table also knows which local member holds each partition. The group
//! coordinator can assign a partition to B before A has seen its revocation
//! (a restarted coordinator, or A kicked out for not polling in time): B
//! then [`claim`](Handoffs::claim)s in vain and waits, its partition paused,
//! until A releases it, instead of re-reading from the committed offset
//! what A has already handed out.
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

/// One group member of this process, as the table knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberId(u64);

#[derive(Debug, Default)]
struct Table {
    next_member: u64,
    /// Which member holds each partition it was assigned and has not released.
    held: HashMap<TopicPartition, MemberId>,
    /// Partitions released with a position, waiting for their next owner.
    left: HashMap<TopicPartition, Handoff>,
}

/// Partition holders and hand-offs of the members of one process (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct Handoffs(Arc<Mutex<Table>>);

impl Handoffs {
    /// No member, no partition handed off yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new member's id.
    pub fn join(&self) -> MemberId {
        let mut t = self.lock();
        t.next_member += 1;
        MemberId(t.next_member)
    }

    /// `member` was assigned `tp`: true when it may read it now (it becomes the holder);
    /// false while another member still holds it and has left nothing.
    pub fn claim(&self, tp: &TopicPartition, member: MemberId) -> bool {
        let mut t = self.lock();
        match t.held.get(tp) {
            Some(&holder) if holder != member && !t.left.contains_key(tp) => false,
            _ => {
                t.held.insert(tp.clone(), member);
                true
            }
        }
    }

    /// `member` lost `tp`; it leaves `handoff` (its position) for the next owner, if any,
    /// replacing an older one. A member whose partition was seized meanwhile leaves nothing:
    /// the new holder already reads from the committed offset.
    pub fn release(&self, tp: &TopicPartition, member: MemberId, handoff: Option<Handoff>) {
        let mut t = self.lock();
        match t.held.get(tp) {
            Some(&holder) if holder != member => return,
            Some(_) => {
                t.held.remove(tp);
            }
            None => {}
        }
        if let Some(h) = handoff {
            t.left.insert(tp.clone(), h);
        }
    }

    /// `member` holds `tp` from now on, whoever held it (it waited too long for a hand-off).
    pub fn seize(&self, tp: &TopicPartition, member: MemberId) {
        let mut t = self.lock();
        t.held.insert(tp.clone(), member);
        t.left.remove(tp);
    }

    /// `member` is gone: whatever it still held is free.
    pub fn leave(&self, member: MemberId) {
        self.lock().held.retain(|_, m| *m != member);
    }

    /// The new owner of `tp` takes what the old one left, if it was a member of this process.
    pub fn take(&self, tp: &TopicPartition) -> Option<Handoff> {
        self.lock().left.remove(tp)
    }

    /// Partitions waiting for a new owner.
    pub fn len(&self) -> usize {
        self.lock().left.len()
    }

    /// True when no partition waits for a new owner.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(next_offset: i64) -> Handoff {
        Handoff { next_offset, max_ts: next_offset * 10, runs: Runs::default(), due: None }
    }

    #[test]
    fn a_handoff_is_taken_once_and_a_newer_one_replaces_an_older() {
        let h = Handoffs::new();
        let a = h.join();
        let tp: TopicPartition = ("t".into(), 1);
        h.release(&tp, a, Some(at(5)));
        h.release(&tp, a, Some(Handoff { due: Some((7, 70)), ..at(9) }));
        assert_eq!(h.len(), 1);
        let got = h.take(&tp).expect("left for the new owner");
        assert_eq!((got.next_offset, got.max_ts, got.due), (9, 90, Some((7, 70))));
        assert!(h.take(&tp).is_none(), "taken once");
        assert!(h.take(&("t".into(), 2)).is_none(), "never handed off");
    }

    #[test]
    fn a_partition_still_held_by_another_member_is_claimed_only_once_it_is_released() {
        let h = Handoffs::new();
        let (a, b) = (h.join(), h.join());
        assert_ne!(a, b);
        let (p0, p1): (TopicPartition, TopicPartition) = (("t".into(), 0), ("t".into(), 1));
        assert!(h.claim(&p0, a) && h.claim(&p1, a), "nobody held them");
        assert!(h.claim(&p0, a), "the holder may claim again (assigned twice)");
        // The coordinator gave both to B before A saw its revocation.
        assert!(!h.claim(&p0, b) && !h.claim(&p1, b), "A still holds them");
        // A loses p0 having read up to 40, and p1 having read nothing.
        h.release(&p0, a, Some(at(40)));
        h.release(&p1, a, None);
        assert!(h.claim(&p0, b), "released with a position");
        assert_eq!(h.take(&p0).map(|x| x.next_offset), Some(40), "B continues where A stopped");
        assert!(h.claim(&p1, b), "released without a position: B starts at the commit");
        assert!(h.take(&p1).is_none());
        // Releasing what another member holds changes nothing.
        h.release(&p1, a, Some(at(7)));
        assert!(!h.claim(&p1, a), "B holds p1 now");
        assert!(h.take(&p1).is_none(), "a former holder's position is not left");
    }

    #[test]
    fn a_seized_partition_ignores_its_former_holders_late_handoff() {
        let h = Handoffs::new();
        let (a, b, c) = (h.join(), h.join(), h.join());
        let tp: TopicPartition = ("t".into(), 0);
        assert!(h.claim(&tp, a));
        assert!(!h.claim(&tp, b));
        h.seize(&tp, b); // B waited too long and reads from the committed offset
        h.release(&tp, a, Some(at(40)));
        assert!(h.take(&tp).is_none(), "A's position is stale: B read from the commit");
        assert!(!h.claim(&tp, c), "B holds it");
        h.release(&tp, b, Some(at(50)));
        assert!(h.claim(&tp, c));
        assert_eq!(h.take(&tp).map(|x| x.next_offset), Some(50));
    }

    #[test]
    fn a_member_that_leaves_frees_what_it_held() {
        let h = Handoffs::new();
        let (a, b) = (h.join(), h.join());
        let (p0, p1): (TopicPartition, TopicPartition) = (("t".into(), 0), ("u".into(), 0));
        assert!(h.claim(&p0, a) && h.claim(&p1, b));
        h.leave(a);
        assert!(h.claim(&p0, b), "A is gone");
        assert!(!h.claim(&p1, a), "B's own partitions stay B's");
    }
}
