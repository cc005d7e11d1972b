//! An in-process source fed through a channel: the collector and the demo
//! generator push validated events, the pipeline's workers poll them. One
//! logical partition shared by every worker; its max event time is the
//! watermark basis of all of them, so no worker holds windows back.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use recflow_schemas::Event;

use crate::{Batch, Origin, Poll, Record, Source};

/// Most events handed to the dataflow per poll.
const MAX_BATCH: usize = 1000;

struct Shared {
    rx: Mutex<Receiver<Event>>,
    /// Max event time of every event handed out so far.
    max_ts: AtomicI64,
    /// Events handed out so far: the offset of the next one.
    seq: AtomicU64,
    origin: Origin,
}

/// A [`Source`] reading a bounded in-process channel; clone it once per worker.
#[derive(Clone)]
pub struct ChannelSource {
    shared: Arc<Shared>,
}

impl ChannelSource {
    /// A source named `name` (its dead letters' "path") and the sender feeding it,
    /// holding at most `capacity` queued events. The source is done when every
    /// sender is dropped and the queue is drained.
    pub fn new(name: &str, capacity: usize) -> (ChannelSource, SyncSender<Event>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let shared = Shared {
            rx: Mutex::new(rx),
            max_ts: AtomicI64::new(i64::MIN),
            seq: AtomicU64::new(0),
            origin: Origin::File { path: Arc::from(name) },
        };
        (ChannelSource { shared: Arc::new(shared) }, tx)
    }
}

impl Source for ChannelSource {
    fn poll(&mut self) -> Poll {
        let s = &self.shared;
        // The lock spans receive and max update, so each batch's prior max is exact.
        let rx = s.rx.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = Vec::new();
        let mut disconnected = false;
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ev) => records.push(ev),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if records.is_empty() {
            return if disconnected { Poll::Done } else { Poll::Pending };
        }
        let prior_max_ts = s.max_ts.load(Ordering::Acquire);
        let batch_max = records.iter().map(|e| e.ts).max().unwrap_or(i64::MIN);
        s.max_ts.store(prior_max_ts.max(batch_max), Ordering::Release);
        let first = s.seq.fetch_add(records.len() as u64, Ordering::Relaxed);
        let records = records.into_iter().zip(first..).map(|(ev, offset)| Record { offset, parsed: Ok(ev) }).collect();
        Poll::Ready(Batch { origin: s.origin.clone(), records, prior_max_ts })
    }

    fn max_ts_floor(&self) -> i64 {
        self.shared.max_ts.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use recflow_schemas::Validator;

    use super::*;

    fn ev(ts: i64) -> Event {
        let line = format!(
            r#"{{"tenant_id":"t","scenario_id":"s","user_id":"u","item_id":"i","action_type":"click","timestamp":{ts}}}"#
        );
        Validator::default().validate(line.as_bytes(), Some("t"), i64::MAX / 2).unwrap()
    }

    #[test]
    fn batches_carry_the_prior_max_and_sources_share_the_floor() {
        let (mut a, tx) = ChannelSource::new("collector", 10);
        let b = a.clone();
        assert!(matches!(a.poll(), Poll::Pending));
        assert_eq!(b.max_ts_floor(), i64::MIN);
        tx.send(ev(5_000)).unwrap();
        tx.send(ev(3_000)).unwrap();
        let Poll::Ready(first) = a.poll() else { panic!("expected a batch") };
        assert_eq!((first.prior_max_ts, first.records.len()), (i64::MIN, 2));
        assert_eq!(b.max_ts_floor(), 5_000, "every clone sees the max");
        tx.send(ev(9_000)).unwrap();
        let Poll::Ready(second) = a.poll() else { panic!("expected a batch") };
        assert_eq!((second.prior_max_ts, second.records[0].offset), (5_000, 2));
        drop(tx);
        assert!(matches!(a.poll(), Poll::Done));
    }
}
