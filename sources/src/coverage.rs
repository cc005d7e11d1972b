//! Which input partitions the pipeline's group members own, so event time
//! advances only when every input partition is being read.
//!
//! Windows close by a watermark that is the min over the partitions a
//! worker reads. A partition owned by nobody in the pipeline does not hold
//! it back, so without this check a restarted pipeline whose group still
//! lists the killed run's members (their partitions stay theirs until the
//! session times out) would close windows on part of the input and judge
//! the rest late when it arrives. Likewise for a new tenant topic between
//! its creation and its first assignment. While any partition of an input
//! topic is unowned, [`Coverage::is_complete`] is false and the sources
//! report no watermark, so windows wait.
//!
//! The input partitions come from a background metadata poll; ownership
//! from each member's assignment. One [`Coverage`] is shared by the members
//! of one process, so the check covers a single-process pipeline (a timely
//! cluster of several processes does not share it; see RELIABILITY.md).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::kafka::KafkaConfig;

/// A topic partition.
pub type TopicPartition = (String, i32);

#[derive(Default)]
struct State {
    /// Every partition of every input topic; `None` before the first metadata answer.
    inputs: Option<HashSet<TopicPartition>>,
    /// Per member slot, the partitions it owns.
    owned: HashMap<usize, HashSet<TopicPartition>>,
    /// Per member still reading, its last reported event-time floor.
    floors: HashMap<usize, i64>,
}

impl State {
    fn complete(&self) -> bool {
        let Some(inputs) = &self.inputs else { return false };
        inputs.iter().all(|tp| self.owned.values().any(|o| o.contains(tp)))
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// `State::complete` as of the last change (read on every watermark step).
    complete: AtomicBool,
}

/// Ownership of the input partitions by the members of one process (cheap to clone).
#[derive(Clone, Default)]
pub struct Coverage(Arc<Inner>);

impl Coverage {
    /// An empty coverage: incomplete until inputs are known and owned.
    pub fn new() -> Self {
        Self::default()
    }

    /// A coverage whose input partitions are polled from the brokers of
    /// `cfg` every `cfg.metadata_refresh_ms` (first at once) by a background
    /// thread that ends when the last clone is dropped.
    pub fn polling(cfg: &KafkaConfig) -> Result<Self, String> {
        let topics = TopicFilter::new(&cfg.topic_pattern, &cfg.exclude_topics)?;
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            .create()
            .map_err(|e| format!("kafka metadata client: {e}"))?;
        let coverage = Coverage::new();
        let weak = Arc::downgrade(&coverage.0);
        let every = Duration::from_millis(cfg.metadata_refresh_ms.clamp(100, 5000));
        std::thread::Builder::new()
            .name("recflow-coverage".into())
            .spawn(move || poll_inputs(&client, &topics, &weak, every))
            .map_err(|e| format!("starting the metadata poll: {e}"))?;
        Ok(coverage)
    }

    /// Replaces the set of input partitions.
    pub fn set_inputs(&self, inputs: HashSet<TopicPartition>) {
        self.update(|s| s.inputs = Some(inputs));
    }

    /// Replaces what the member in `slot` owns.
    pub fn set_owned(&self, slot: usize, owned: HashSet<TopicPartition>) {
        self.update(|s| {
            s.owned.insert(slot, owned);
        });
    }

    /// The member in `slot` reports its own event-time floor; returns the
    /// lowest floor of the members still reading, its own included.
    ///
    /// A member's capability must not pass another's: a partition can move
    /// from one to the other, and its records older than the new owner's
    /// capability would be judged late (the broker-restart test once lost
    /// 10,039 events that way). Windows close at the minimum over all
    /// workers anyway, so this costs no progress.
    pub fn floor_with(&self, slot: usize, floor: i64) -> i64 {
        let mut s = self.state();
        s.floors.insert(slot, floor);
        s.floors.values().copied().min().unwrap_or(floor)
    }

    /// The member in `slot` reads no more: its floor no longer holds the others back.
    pub fn finished(&self, slot: usize) {
        // Floors do not change what is owned: no completeness to recompute.
        self.state().floors.remove(&slot);
    }

    /// The member in `slot` is gone (its consumer closed): besides
    /// [`Coverage::finished`], what it owned is unowned until reassigned.
    pub fn left(&self, slot: usize) {
        self.update(|s| {
            s.floors.remove(&slot);
            s.owned.remove(&slot);
        });
    }

    /// Whether every input partition is owned by some member.
    pub fn is_complete(&self) -> bool {
        self.0.complete.load(Ordering::Acquire)
    }

    /// Input partitions no member owns (for logs).
    pub fn unowned(&self) -> Vec<TopicPartition> {
        let s = self.state();
        let mut v: Vec<TopicPartition> = match &s.inputs {
            Some(i) => i.iter().filter(|tp| !s.owned.values().any(|o| o.contains(*tp))).cloned().collect(),
            None => Vec::new(),
        };
        v.sort();
        v
    }

    /// The shared state. A poisoned lock only means another worker panicked;
    /// every critical section leaves the maps consistent, so keep going.
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state();
        f(&mut s);
        let now = s.complete();
        if self.0.complete.swap(now, Ordering::AcqRel) != now {
            tracing::info!(complete = now, "input partition coverage changed");
        }
    }
}

/// Which topics are input: the subscription pattern minus the excluded topics.
struct TopicFilter {
    pattern: Option<regex::Regex>,
    literal: String,
    exclude: Vec<String>,
}

impl TopicFilter {
    /// As librdkafka reads a subscription: a leading `^` makes it a regex.
    fn new(pattern: &str, exclude: &[String]) -> Result<Self, String> {
        let regex = match pattern.starts_with('^') {
            true => Some(regex::Regex::new(pattern).map_err(|e| format!("kafka.topic_pattern: {e}"))?),
            false => None,
        };
        Ok(TopicFilter { pattern: regex, literal: pattern.to_string(), exclude: exclude.to_vec() })
    }

    fn is_input(&self, topic: &str) -> bool {
        let matches = match &self.pattern {
            Some(r) => r.is_match(topic),
            None => topic == self.literal,
        };
        matches && !self.exclude.iter().any(|x| x == topic)
    }
}

fn poll_inputs(client: &BaseConsumer, topics: &TopicFilter, coverage: &Weak<Inner>, every: Duration) {
    loop {
        let Some(inner) = coverage.upgrade() else { return };
        match client.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(md) => {
                let inputs = md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none() && topics.is_input(t.name()))
                    .flat_map(|t| t.partitions().iter().map(move |p| (t.name().to_string(), p.id())))
                    .collect();
                Coverage(inner).set_inputs(inputs);
            }
            // Keeps the last known inputs; windows wait only if none were ever known.
            Err(e) => tracing::warn!(error = %e, "kafka metadata for partition coverage failed"),
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[(&str, i32)]) -> HashSet<TopicPartition> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn complete_only_when_every_input_partition_is_owned() {
        let c = Coverage::new();
        c.set_owned(0, set(&[("a", 0)]));
        assert!(!c.is_complete(), "inputs unknown yet");
        c.set_inputs(set(&[("a", 0), ("a", 1), ("b", 0)]));
        assert!(!c.is_complete());
        assert_eq!(c.unowned(), vec![("a".to_string(), 1), ("b".to_string(), 0)]);
        c.set_owned(1, set(&[("a", 1), ("b", 0)]));
        assert!(c.is_complete());
        // A revoke before the new owner's assignment opens a gap.
        c.set_owned(1, set(&[("a", 1)]));
        assert!(!c.is_complete());
        c.set_owned(0, set(&[("a", 0), ("b", 0)]));
        assert!(c.is_complete());
        // A new input topic is unowned until assigned.
        c.set_inputs(set(&[("a", 0), ("a", 1), ("b", 0), ("c", 0)]));
        assert!(!c.is_complete());
    }

    #[test]
    fn a_members_floor_is_the_lowest_of_the_members_still_reading() {
        let c = Coverage::new();
        assert_eq!(c.floor_with(0, 500), 500, "alone");
        assert_eq!(c.floor_with(1, 200), 200);
        assert_eq!(c.floor_with(0, 600), 200, "member 1 is behind: member 0 may not pass it");
        assert_eq!(c.floor_with(1, i64::MIN), i64::MIN, "a member without data holds all back");
        assert_eq!(c.floor_with(1, 700), 600);
        c.finished(0);
        assert_eq!(c.floor_with(1, 800), 800, "a finished member holds nobody back");
    }

    #[test]
    fn a_members_partitions_are_unowned_once_it_left() {
        let c = Coverage::new();
        c.set_inputs(set(&[("t", 0), ("t", 1)]));
        c.set_owned(0, set(&[("t", 0)]));
        c.set_owned(1, set(&[("t", 1)]));
        assert!(c.is_complete());
        c.finished(1);
        assert!(c.is_complete(), "a finished member's consumer still holds its partitions");
        c.left(1);
        assert!(!c.is_complete(), "until another member is assigned its partition");
        assert_eq!(c.unowned(), vec![("t".to_string(), 1)]);
    }

    #[test]
    fn no_inputs_is_complete_once_known() {
        let c = Coverage::new();
        c.set_inputs(HashSet::new());
        assert!(c.is_complete());
    }

    #[test]
    fn the_filter_reads_patterns_like_librdkafka() {
        let f = TopicFilter::new("^user-behaviors-[a-z0-9_]+$", &["user-behaviors-dlq".into()]).unwrap();
        assert!(f.is_input("user-behaviors-t1"));
        assert!(!f.is_input("user-behaviors-dlq"));
        assert!(!f.is_input("item-updates"));
        let lit = TopicFilter::new("events", &[]).unwrap();
        assert!(lit.is_input("events") && !lit.is_input("events2"));
        assert!(TopicFilter::new("^(", &[]).is_err());
    }
}
