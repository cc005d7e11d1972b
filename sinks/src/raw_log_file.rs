//! The ClickHouse job in embedded mode: `user_behaviors` insert batches as JSONL.

use std::io::Write as _;
use std::path::Path;

use recflow_schemas::json_fields::plain_len;
use recflow_schemas::{Event, Output};
use serde::Serialize;

use crate::{BatchConfig, BatchTrigger, FileMode, SharedFile, Sink, SinkError};

/// One row of ClickHouse table `user_behaviors`, borrowing from its event.
///
/// Borrowed on purpose: rows are serialized straight into a batch body (this
/// file's line, or a ClickHouse insert body) without copying any string.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RawRow<'a> {
    /// Event id (given or derived).
    pub event_id: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Scenario.
    pub scenario_id: &'a str,
    /// User.
    pub user_id: &'a str,
    /// Item.
    pub item_id: &'a str,
    /// Action wire name (`add_cart`, ...).
    pub action_type: &'static str,
    /// Event time, epoch ms UTC.
    pub event_time: i64,
    /// Request id, `""` when absent (non-nullable String column).
    pub request_id: &'a str,
    /// Experiment id (`none` when absent).
    pub experiment_id: &'a str,
    /// Variant (`none` when absent).
    pub variant: &'a str,
    /// Resolved category, `unknown` when none.
    pub category: &'a str,
    /// The context object as compact JSON text, `""` when absent.
    pub context: &'a str,
    /// Seconds watched, null when absent.
    pub watch_duration: Option<f64>,
    /// Completion 0..1, null when absent.
    pub completion_rate: Option<f64>,
    /// Money amount, null when absent.
    pub amount: Option<f64>,
}

impl<'a> From<&'a Event> for RawRow<'a> {
    fn from(e: &'a Event) -> Self {
        RawRow {
            event_id: &e.event_id,
            tenant_id: &e.tenant_id,
            scenario_id: &e.scenario_id,
            user_id: &e.user_id,
            item_id: &e.item_id,
            action_type: e.action.name(),
            event_time: e.ts,
            request_id: e.request_id.as_deref().unwrap_or(""),
            experiment_id: &e.experiment_id,
            variant: &e.variant,
            category: e.category_or_unknown(),
            context: e.context.as_deref().unwrap_or(""),
            watch_duration: e.watch_duration,
            completion_rate: e.completion_rate,
            amount: e.amount,
        }
    }
}

impl RawRow<'_> {
    /// Appends the row as the JSON object `serde_json` writes for it, byte
    /// for byte. Why by hand: serde_json escapes every key and value one byte
    /// at a time, which was the largest single cost of an embedded run (~14 %
    /// of its instructions). Keys here are constants, and values that need no
    /// escaping (all validated ids) are copied as they are. (A loop over an
    /// array of typed cells instead of these three runs cost 2 % more
    /// instructions of the whole run.)
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let strs = [
            ("{\"event_id\":", self.event_id),
            (",\"tenant_id\":", self.tenant_id),
            (",\"scenario_id\":", self.scenario_id),
            (",\"user_id\":", self.user_id),
            (",\"item_id\":", self.item_id),
            (",\"action_type\":", self.action_type),
        ];
        for (key, value) in strs {
            out.extend_from_slice(key.as_bytes());
            json_str(out, value)?;
        }
        out.extend_from_slice(b",\"event_time\":");
        serde_json::to_writer(&mut *out, &self.event_time)?;
        let strs = [
            (",\"request_id\":", self.request_id),
            (",\"experiment_id\":", self.experiment_id),
            (",\"variant\":", self.variant),
            (",\"category\":", self.category),
            (",\"context\":", self.context),
        ];
        for (key, value) in strs {
            out.extend_from_slice(key.as_bytes());
            json_str(out, value)?;
        }
        let nums = [
            (",\"watch_duration\":", self.watch_duration),
            (",\"completion_rate\":", self.completion_rate),
            (",\"amount\":", self.amount),
        ];
        for (key, value) in nums {
            out.extend_from_slice(key.as_bytes());
            match value {
                None => out.extend_from_slice(b"null"),
                Some(v) => serde_json::to_writer(&mut *out, &v)?,
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// Appends `s` as a JSON string: copied between quotes when nothing in it
/// needs escaping, else written by serde_json. (Escaping `"` and `\` here
/// cost more instructions than serde_json's own loop, both between plain
/// runs found by the 8-byte scan, +0.6 %, and by a byte loop into reserved
/// room, +0.8 %: a context object's runs are too short for either to pay.)
fn json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if plain_len(s.as_bytes()) < s.len() {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Writes each `user_behaviors` insert batch as one line `{"batch":N,"worker":W,"rows":[...]}`.
///
/// Batches close at `max_rows` or `max_age` (default 1000 rows / 5 s); the age
/// is checked on every `write`, so jobs should call `write(&[])` as a tick.
/// `N` counts this worker's batches from 0. Without a file it only counts rows.
#[derive(Debug)]
pub struct RawLogFileSink {
    worker: usize,
    out: Option<SharedFile>,
    trigger: BatchTrigger,
    // The current batch's line, built row by row; reused across batches.
    line: Vec<u8>,
    next_batch: u64,
    rows_written: u64,
}

impl RawLogFileSink {
    /// A sink for `worker` writing to `out` (`None`: count rows only, for benchmarks).
    pub fn new(worker: usize, out: Option<SharedFile>, config: BatchConfig) -> Self {
        RawLogFileSink {
            worker,
            out,
            trigger: BatchTrigger::new(config),
            line: Vec::new(),
            next_batch: 0,
            rows_written: 0,
        }
    }

    /// Opens `path` and returns worker `worker`'s sink on it with default batching.
    pub fn open(path: impl AsRef<Path>, mode: FileMode, worker: usize) -> Result<Self, SinkError> {
        Ok(Self::new(worker, Some(SharedFile::open(path, mode)?), BatchConfig::default()))
    }

    /// Another worker's sink on the same file with the same batching.
    pub fn for_worker(&self, worker: usize) -> Self {
        Self::new(worker, self.out.clone(), self.trigger.config())
    }

    /// Rows in closed (written) batches.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Batches closed so far.
    pub fn batches_written(&self) -> u64 {
        self.next_batch
    }

    /// Rows waiting in the open batch.
    pub fn pending_rows(&self) -> usize {
        self.trigger.rows()
    }

    fn push(&mut self, event: &Event) -> Result<(), SinkError> {
        if self.out.is_some() {
            if self.trigger.is_empty() {
                self.line.clear();
                write!(self.line, "{{\"batch\":{},\"worker\":{},\"rows\":[", self.next_batch, self.worker)?;
            } else {
                self.line.push(b',');
            }
            RawRow::from(event).write_json(&mut self.line)?;
        }
        self.trigger.record(1);
        if self.trigger.is_full() {
            self.close_batch()?;
        }
        Ok(())
    }

    /// Writes the open batch (if any) as one line.
    fn close_batch(&mut self) -> Result<(), SinkError> {
        if self.trigger.is_empty() {
            return Ok(());
        }
        if let Some(out) = &self.out {
            self.line.extend_from_slice(b"]}\n");
            if let Err(e) = out.write_all(&self.line) {
                // Keep the batch open so a retried flush writes it again.
                self.line.truncate(self.line.len() - 3);
                return Err(e);
            }
            self.line.clear();
        }
        self.rows_written += self.trigger.rows() as u64;
        self.next_batch += 1;
        self.trigger.reset();
        Ok(())
    }
}

impl Sink for RawLogFileSink {
    fn name(&self) -> &'static str {
        "raw_log_file"
    }

    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        for out in batch {
            if let Output::Raw(event) = out {
                self.push(event)?;
            }
        }
        if self.trigger.is_due() {
            self.close_batch()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.close_batch()?;
        match &self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use recflow_schemas::Action;
    use serde_json::{json, Value};

    use super::*;

    fn event(i: usize) -> Event {
        Event {
            event_id: format!("e{i}").into(),
            tenant_id: "t1".into(),
            scenario_id: "vlog".into(),
            user_id: format!("u{}", i % 7).into(),
            item_id: format!("i{}", i % 11).into(),
            action: if i.is_multiple_of(2) { Action::Play } else { Action::AddCart },
            ts: 1_700_000_000_000 + i as i64,
            request_id: i.is_multiple_of(3).then(|| "r\"q".into()),
            experiment_id: "none".into(),
            variant: "none".into(),
            category: i.is_multiple_of(2).then(|| "music".into()),
            context: i.is_multiple_of(2).then(|| r#"{"device_type":"ios"}"#.into()),
            watch_duration: i.is_multiple_of(2).then_some(12.5),
            completion_rate: None,
            amount: (i % 2 == 1).then_some(3.0),
        }
    }

    fn raws(range: std::ops::Range<usize>) -> Vec<Output> {
        range.map(|i| Output::Raw(Box::new(event(i).into()))).collect()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("recflow-rawlog-{}-{name}.jsonl", std::process::id()))
    }

    fn read_lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn row_columns() {
        let v = serde_json::to_value(RawRow::from(&event(0))).unwrap();
        assert_eq!(
            v,
            json!({"event_id":"e0","tenant_id":"t1","scenario_id":"vlog","user_id":"u0",
                "item_id":"i0","action_type":"play","event_time":1_700_000_000_000i64,
                "request_id":"r\"q","experiment_id":"none","variant":"none","category":"music",
                "context":"{\"device_type\":\"ios\"}","watch_duration":12.5,
                "completion_rate":null,"amount":null})
        );
        let v = serde_json::to_value(RawRow::from(&event(1))).unwrap();
        assert_eq!(v["category"], "unknown");
        assert_eq!(v["context"], "");
        assert_eq!(v["request_id"], "");
        assert_eq!(v["action_type"], "add_cart");
        assert_eq!(v["amount"], 3.0);
    }

    #[test]
    fn written_json_is_serde_jsons_byte_for_byte() {
        // serde_json is the reference; the strings cover every escaping rule.
        let odd = ["", "plain", "q\"uote", "back\\slash", "tab\tnl\n", "\u{1}ctl\u{1f}", "ünï€😀", "sl/ash\u{7f}"];
        let floats = [None, Some(0.0), Some(12.5), Some(1e-7), Some(123456789.123), Some(f64::MAX), Some(5e-324)];
        for (i, s) in odd.iter().enumerate() {
            let mut e = event(i);
            e.event_id = (*s).into();
            e.request_id = Some(odd[(i + 1) % odd.len()].into());
            e.context = Some(odd[(i + 2) % odd.len()].into());
            e.category = Some(odd[(i + 3) % odd.len()].into());
            e.ts = [0, 1, i64::MAX, 1_767_520_800_028][i % 4];
            e.watch_duration = floats[i % floats.len()];
            e.completion_rate = floats[(i + 1) % floats.len()];
            e.amount = floats[(i + 2) % floats.len()];
            for e in [e, event(i)] {
                let row = RawRow::from(&e);
                let mut ours = Vec::new();
                row.write_json(&mut ours).unwrap();
                assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&row).unwrap());
            }
        }
    }

    #[test]
    fn every_ascii_byte_is_escaped_as_serde_json_does() {
        for b in 0u8..=0x7f {
            let c = char::from(b);
            for s in [c.to_string(), format!("a{c}b{c}{c}ü")] {
                let mut ours = Vec::new();
                json_str(&mut ours, &s).unwrap();
                assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&s).unwrap(), "byte {b:#x}");
            }
        }
    }

    #[test]
    fn mixed_strings_are_escaped_as_serde_json_does_after_earlier_output() {
        // Every string of up to 6 pieces drawn from plain runs of several
        // lengths (so escapes fall at every offset of the 8-byte scan),
        // quotes, backslashes, a control byte and multi-byte text.
        let pieces = ["", "a", "abcdefg", "abcdefghijk", "\"", "\\", "\n", "ü", "\u{1f}"];
        let mut seed = 1u64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..6 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            let mut ours = b"[1,".to_vec();
            json_str(&mut ours, &s).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), format!("[1,{}", serde_json::to_string(&s).unwrap()), "{s:?}");
        }
    }

    #[test]
    fn batches_by_size_then_flush_writes_partial() {
        let path = temp("size");
        let mut s = RawLogFileSink::open(&path, FileMode::Truncate, 3).unwrap();
        let mut other = s.for_worker(4);
        let all = raws(0..2500);
        // Uneven input batches and non-raw records mixed in.
        s.write(&all[..700]).unwrap();
        other.write(&[]).unwrap();
        s.write(&all[700..2100]).unwrap();
        assert_eq!((s.batches_written(), s.pending_rows()), (2, 100));
        s.write(&all[2100..]).unwrap();
        assert_eq!(s.pending_rows(), 500);
        s.flush().unwrap();
        assert_eq!((s.batches_written(), s.rows_written()), (3, 2500));

        let lines = read_lines(&path);
        let sizes: Vec<usize> = lines.iter().map(|l| l["rows"].as_array().unwrap().len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        for (n, l) in lines.iter().enumerate() {
            assert_eq!(l["batch"], n as u64);
            assert_eq!(l["worker"], 3);
        }
        let ids: Vec<&str> =
            lines.iter().flat_map(|l| l["rows"].as_array().unwrap()).map(|r| r["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 2500);
        assert_eq!(ids[0], "e0");
        assert_eq!(ids[2499], "e2499");
        // A flush with nothing pending writes nothing.
        s.flush().unwrap();
        assert_eq!(read_lines(&path).len(), 3);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn batch_closes_by_age() {
        let path = temp("age");
        let out = SharedFile::open(&path, FileMode::Truncate).unwrap();
        let cfg = BatchConfig { max_rows: 1000, max_age: Duration::from_millis(20) };
        let mut s = RawLogFileSink::new(0, Some(out.clone()), cfg);
        s.write(&raws(0..5)).unwrap();
        assert_eq!(s.batches_written(), 0);
        std::thread::sleep(Duration::from_millis(30));
        s.write(&[]).unwrap(); // tick
        assert_eq!((s.batches_written(), s.pending_rows()), (1, 0));
        out.flush().unwrap();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["rows"].as_array().unwrap().len(), 5);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn count_only_without_file() {
        let mut s = RawLogFileSink::new(1, None, BatchConfig::default());
        s.write(&raws(0..2500)).unwrap();
        s.flush().unwrap();
        assert_eq!((s.batches_written(), s.rows_written()), (3, 2500));
    }
}
