//! Embedded dead-letter "topic": one JSON line per rejected or late record.

use std::path::Path;

use recflow_schemas::Output;

use crate::{FileMode, SharedFile, Sink, SinkError};

/// Appends every `Output::Dead` as one JSON line (reason, field, detail, source, payload).
///
/// One instance per worker, all sharing one [`SharedFile`] so users find a single DLQ file.
#[derive(Debug)]
pub struct DlqFileSink {
    file: SharedFile,
    // Per-worker scratch: lines are serialized here without holding the file lock.
    buf: Vec<u8>,
    records: u64,
}

impl DlqFileSink {
    /// A sink writing to an already opened shared file.
    pub fn new(file: SharedFile) -> Self {
        DlqFileSink { file, buf: Vec::new(), records: 0 }
    }

    /// Opens `path` and returns a sink on it; clone further sinks with [`Self::for_worker`].
    pub fn open(path: impl AsRef<Path>, mode: FileMode) -> Result<Self, SinkError> {
        Ok(Self::new(SharedFile::open(path, mode)?))
    }

    /// Another sink (e.g. for another worker) writing to the same file.
    pub fn for_worker(&self) -> Self {
        Self::new(self.file.clone())
    }

    /// The shared file.
    pub fn file(&self) -> &SharedFile {
        &self.file
    }

    /// Dead letters accepted by this instance.
    pub fn records(&self) -> u64 {
        self.records
    }
}

impl Sink for DlqFileSink {
    fn name(&self) -> &'static str {
        "dlq_file"
    }

    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        self.buf.clear();
        for out in batch {
            if let Output::Dead(dead) = out {
                serde_json::to_writer(&mut self.buf, dead.as_ref())?;
                self.buf.push(b'\n');
                self.records += 1;
            }
        }
        // One lock per batch, not per record.
        self.file.write_all(&self.buf)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use recflow_schemas::{DeadLetter, SourcePos};

    use super::*;

    fn dead(line: u64) -> Output {
        Output::Dead(Box::new(DeadLetter {
            reason: "bad_json".into(),
            field: line.is_multiple_of(2).then(|| "user_id".to_string()),
            detail: format!("detail {line}"),
            source: SourcePos::File { path: "in.jsonl".into(), line },
            payload: "{not json\n\"x\"".into(),
        }))
    }

    #[test]
    fn writes_one_line_per_dead_letter_from_two_workers() {
        let dir = std::env::temp_dir().join(format!("recflow-dlq-test-{}", std::process::id()));
        let path = dir.join("sub/dlq.jsonl");
        let mut a = DlqFileSink::open(&path, FileMode::Truncate).unwrap();
        let mut b = a.for_worker();
        a.write(&[dead(1), dead(2)]).unwrap();
        b.write(&[dead(3)]).unwrap();
        a.write(&[]).unwrap();
        a.flush().unwrap();
        b.flush().unwrap();
        assert_eq!(a.records() + b.records(), 3);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<DeadLetter> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        for (i, d) in lines.iter().enumerate() {
            let Output::Dead(want) = dead(i as u64 + 1) else { unreachable!() };
            assert_eq!(d, want.as_ref());
        }
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["source"]["kind"], "file");
        assert_eq!(first["field"], serde_json::Value::Null);

        // Append mode keeps what is there.
        let mut c = DlqFileSink::open(&path, FileMode::Append).unwrap();
        c.write(&[dead(4)]).unwrap();
        c.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
