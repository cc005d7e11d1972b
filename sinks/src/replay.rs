//! Replay dedup by Kafka offset for sinks that store each record's
//! (topic, partition, offset) beside it (the ClickHouse raw log).
//!
//! After a crash the pipeline re-reads from the last committed offset, which
//! lags behind what the sink had already written. The sink asks its backend
//! once which offsets at or above the first replayed one it already holds
//! ([`StoredOffsets`]) and drops those rows. A replay reads each partition
//! forward in order, so the set is consumed front to back and shrinks as the
//! replay passes it.
//!
//! [`PartitionTracker`] decides when that question must be (re-)asked: on the
//! first row of a partition since the sink was created, when a partition
//! rewinds (revoked and re-assigned, seeking back to the committed offset),
//! and after an insert whose outcome is unknown (a timeout may have committed it).

use std::collections::{HashMap, VecDeque};

use recflow_schemas::Str;

/// Offsets past `base + MAX_BITMAP_SPAN` go to a sorted list instead of the
/// bitmap: a topic deleted and re-created restarts at 0 and leaves rows with
/// huge offsets behind, which must not make a bitmap of gigabytes.
const MAX_BITMAP_SPAN: i64 = 1 << 28;

/// A set of offsets `>= base`, consumed in increasing order.
///
/// A bitmap relative to `base` (one bit per offset: ~450 KiB for an hour of
/// 1000 events/s), whose passed words are dropped, plus a sorted list for the
/// rare offsets far beyond it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredOffsets {
    /// Offset of bit 0 of `words[0]`; a multiple of 64 steps from the first look-up offset.
    base: i64,
    words: VecDeque<u64>,
    /// Offsets at or beyond `base + MAX_BITMAP_SPAN`, sorted ascending once built.
    far: VecDeque<i64>,
    len: usize,
}

impl StoredOffsets {
    /// An empty set whose offsets will all be `>= from`.
    pub fn starting_at(from: i64) -> Self {
        StoredOffsets { base: from, ..Default::default() }
    }

    /// Adds `offset` (in any order); offsets below the start are ignored.
    pub fn insert(&mut self, offset: i64) {
        let Some(rel) = offset.checked_sub(self.base).filter(|r| *r >= 0) else { return };
        if rel >= MAX_BITMAP_SPAN {
            self.far.push_back(offset);
            self.len += 1;
            return;
        }
        let (word, bit) = ((rel / 64) as usize, rel % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) == 0 {
            self.words[word] |= 1 << bit;
            self.len += 1;
        }
    }

    /// Sorts the far list; call once after the last [`Self::insert`].
    pub fn seal(&mut self) {
        let mut far: Vec<i64> = std::mem::take(&mut self.far).into();
        far.sort_unstable();
        far.dedup();
        self.far = far.into();
        let bitmap: usize = self.words.iter().map(|w| w.count_ones() as usize).sum();
        self.len = bitmap + self.far.len();
    }

    /// True if `offset` is in the set. Everything below `offset` is forgotten:
    /// offsets are asked in increasing order.
    pub fn take(&mut self, offset: i64) -> bool {
        // Words entirely below `offset` are passed.
        while let Some(&w) = self.words.front() {
            if offset - self.base < 64 {
                break;
            }
            self.len -= w.count_ones() as usize;
            self.words.pop_front();
            self.base += 64;
        }
        if self.words.is_empty() && offset > self.base {
            // Keep `base` a lower bound of what may be asked next.
            self.base = offset;
        }
        while self.far.front().is_some_and(|&f| f < offset) {
            self.far.pop_front();
            self.len -= 1;
        }
        let rel = offset - self.base;
        if (0..64).contains(&rel) {
            if let Some(w) = self.words.front_mut() {
                if *w & (1 << rel) != 0 {
                    *w &= !(1 << rel);
                    self.len -= 1;
                    return true;
                }
            }
        }
        if self.far.front() == Some(&offset) {
            self.far.pop_front();
            self.len -= 1;
            return true;
        }
        false
    }

    /// Offsets still in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is left to skip.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held (for logs).
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8 + self.far.len() * 8
    }
}

/// A Kafka partition: (topic, partition).
pub type PartitionKey = (Str, i32);

/// What a sink knows of one partition.
#[derive(Debug, Default)]
struct Partition {
    /// Offset of the last row accepted.
    last_accepted: i64,
    /// An insert of this partition's rows failed in an unknown state: the
    /// backend must be asked again from the first row of the next attempt.
    unknown: bool,
    /// Offsets the backend already holds that the replay has not passed yet.
    stored: StoredOffsets,
}

/// Per-partition replay state of one sink.
#[derive(Debug, Default)]
pub struct PartitionTracker {
    parts: HashMap<PartitionKey, Partition>,
}

impl PartitionTracker {
    /// Notes an accepted row; true when it starts a new run of the partition
    /// (first row seen, or a rewind). The backend must be asked about the
    /// partition from that row on, once the rows before it are in.
    pub fn accept(&mut self, key: &PartitionKey, offset: i64) -> bool {
        match self.parts.get_mut(key) {
            None => {
                let p = Partition { last_accepted: offset, ..Default::default() };
                self.parts.insert(key.clone(), p);
                true
            }
            Some(p) => {
                let rewind = offset <= p.last_accepted;
                p.last_accepted = offset;
                rewind
            }
        }
    }

    /// True if a failed insert left `key` unknown: ask the backend before inserting its rows.
    pub fn needs_lookup(&self, key: &PartitionKey) -> bool {
        self.parts.get(key).is_some_and(|p| p.unknown)
    }

    /// Installs the answer of a look-up: the offsets the backend holds from the asked one on.
    pub fn set_stored(&mut self, key: &PartitionKey, stored: StoredOffsets) {
        let p = self.parts.entry(key.clone()).or_default();
        p.stored = stored;
        p.unknown = false;
    }

    /// Marks `key` as needing a new look-up (an insert of its rows failed in an unknown state).
    pub fn forget(&mut self, key: &PartitionKey) {
        if let Some(p) = self.parts.get_mut(key) {
            p.unknown = true;
            p.stored = StoredOffsets::default();
        }
    }

    /// True if the row at `offset` of `key` is already stored (and is to be dropped).
    pub fn is_stored(&mut self, key: &PartitionKey, offset: i64) -> bool {
        self.parts.get_mut(key).is_some_and(|p| !p.stored.is_empty() && p.stored.take(offset))
    }

    /// Offsets still to skip over all partitions, and the heap bytes they take.
    pub fn pending_skips(&self) -> (usize, usize) {
        self.parts.values().fold((0, 0), |(n, b), p| (n + p.stored.len(), b + p.stored.heap_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(from: i64, offsets: &[i64]) -> StoredOffsets {
        let mut s = StoredOffsets::starting_at(from);
        for &o in offsets {
            s.insert(o);
        }
        s.seal();
        s
    }

    #[test]
    fn take_in_order_drops_passed_entries() {
        let mut s = set(100, &[105, 100, 101, 300, 99, 101, 1000]);
        assert_eq!(s.len(), 5, "99 is below the start; 101 counted once");
        let hits: Vec<i64> = (95..1100).filter(|&o| s.take(o)).collect();
        assert_eq!(hits, vec![100, 101, 105, 300, 1000]);
        assert!(s.is_empty());
        assert_eq!(s.heap_bytes(), 0, "passed words are freed");
    }

    #[test]
    fn skipping_ahead_forgets_what_was_jumped_over() {
        let mut s = set(0, &[1, 2, 3, 200, 201]);
        assert!(!s.take(150));
        assert_eq!(s.len(), 2);
        assert!(s.take(200) && !s.take(200), "each offset matches once");
        assert!(s.take(201));
        assert!(s.is_empty());
    }

    #[test]
    fn far_offsets_go_to_the_sorted_list() {
        let far = MAX_BITMAP_SPAN + 10;
        let mut s = set(0, &[far + 5, 3, far]);
        assert_eq!(s.len(), 3);
        assert!(s.heap_bytes() < 1024, "no bitmap up to the far offsets");
        assert!(s.take(3));
        assert!(!s.take(far - 1));
        assert!(s.take(far) && !s.take(far + 1) && s.take(far + 5));
        assert!(s.is_empty());
    }

    #[test]
    fn dense_hour_is_compact() {
        let n = 3_600_000;
        let s = set(5_000_000, &(5_000_000..5_000_000 + n).collect::<Vec<_>>());
        assert_eq!(s.len(), n as usize);
        assert!(s.heap_bytes() <= (n as usize) / 8 + 64, "{} bytes", s.heap_bytes());
    }

    #[test]
    fn tracker_asks_on_first_row_rewind_and_after_forget() {
        let key: PartitionKey = (Str::new("user-behaviors-t"), 2);
        let mut t = PartitionTracker::default();
        assert!(t.accept(&key, 10), "first row of the partition");
        assert!(!t.needs_lookup(&key), "the run start row asks, not the partition");
        t.set_stored(&key, set(10, &[10, 12]));
        assert!(!t.accept(&key, 11), "forward");
        assert!(t.is_stored(&key, 10) && !t.is_stored(&key, 11) && t.is_stored(&key, 12));
        assert_eq!(t.pending_skips().0, 0);
        assert!(t.accept(&key, 5), "a rewind starts a new run");
        t.set_stored(&key, set(5, &[7]));
        t.forget(&key);
        assert!(t.needs_lookup(&key) && !t.is_stored(&key, 7), "forget drops the stale answer");
        let other: PartitionKey = (Str::new("user-behaviors-t"), 3);
        assert!(!t.is_stored(&other, 1), "unknown partitions skip nothing");
    }
}
