//! Where events come from: one [`Source`] trait with a JSONL file/stdin
//! reader, the Kafka consumer-group source, an in-process channel source
//! (collector, demo), the item catalog (file or `item-updates` topic), Kafka
//! tooling, and the synthetic generator.

pub mod catalog;
pub mod channel;
pub mod coverage;
pub mod generator;
pub mod handoff;
pub mod jsonl;
pub mod kafka;
pub mod kafka_admin;
pub mod kafka_catalog;
pub mod ledger;

use std::sync::Arc;

use recflow_schemas::{Event, Rejection, SourcePos};

pub use catalog::Catalog;
pub use channel::ChannelSource;
pub use coverage::Coverage;
pub use handoff::Handoffs;
pub use jsonl::{JsonlFile, JsonlSource};
pub use kafka::{KafkaCommitter, KafkaConfig, KafkaSource, LagHandle, PartitionTimes};

/// Where a batch came from; turned into a [`SourcePos`] only for dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A JSONL file (`-` = stdin); offsets are 1-based line numbers.
    File { path: Arc<str> },
    /// A Kafka partition; offsets are Kafka offsets.
    Kafka { topic: Arc<str>, partition: i32 },
}

impl Origin {
    /// The position of the record at `offset` of this origin.
    pub fn pos(&self, offset: u64) -> SourcePos {
        match self {
            Origin::File { path } => SourcePos::File { path: path.to_string(), line: offset },
            Origin::Kafka { topic, partition } => {
                SourcePos::Kafka { topic: topic.to_string(), partition: *partition, offset: offset as i64 }
            }
        }
    }
}

/// A record that failed validation, with enough of its payload for the DLQ.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub rejection: Rejection,
    /// Lossy UTF-8 of the payload, cut to 4 KiB.
    pub payload: String,
}

impl Rejected {
    /// Keeps at most 4 KiB of the payload (the DLQ must not amplify huge inputs).
    pub fn new(rejection: Rejection, payload: &[u8]) -> Self {
        let cut = &payload[..payload.len().min(4096)];
        Rejected { rejection, payload: String::from_utf8_lossy(cut).into_owned() }
    }
}

/// One source record after validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Line number or Kafka offset.
    pub offset: u64,
    pub parsed: Result<Event, Box<Rejected>>,
}

/// A run of consecutive records of one origin, in source order.
#[derive(Debug)]
pub struct Batch {
    pub origin: Origin,
    pub records: Vec<Record>,
    /// Max event time of everything before this batch in its stream
    /// (`i64::MIN` if none): the watermark basis for lateness.
    pub prior_max_ts: i64,
}

/// What a poll found.
#[derive(Debug)]
pub enum Poll {
    /// Records to emit now.
    Ready(Batch),
    /// Nothing yet; poll again soon.
    Pending,
    /// This worker's share of the input is exhausted.
    Done,
}

/// A per-worker reader of validated records with event-time progress.
pub trait Source {
    /// The next batch, if any is ready.
    fn poll(&mut self) -> Poll;
    /// A lower bound on `prior_max_ts` of every batch this source will still
    /// return; the worker's watermark is this minus the allowed lateness.
    fn max_ts_floor(&self) -> i64;
    /// The batch last returned by `poll` produced outputs at dataflow times
    /// `<= release` only (exactly-once bookkeeping; no-op without offsets).
    fn processed(&mut self, _release: u64) {}
    /// Every sink acknowledged all outputs at times `< frontier` (`None`:
    /// all): commit the offsets that covers, now or at the next commit interval.
    fn sunk_before(&mut self, _frontier: Option<u64>, _now: bool) {}
}
