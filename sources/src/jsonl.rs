//! JSONL file/stdin source. The file is one logical partition read in file
//! order; workers take blocks of lines from a shared reader and parse them in
//! parallel, and a shared ledger of per-block max event times gives every
//! block the exact watermark basis a sequential reader would have had, so
//! lateness does not depend on the number of workers.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::{Arc, Mutex, MutexGuard};

use recflow_schemas::{Rejection, Validator};

use crate::{Batch, Origin, Poll, Record, Rejected, Source};

/// One line of a block: byte range in the block buffer, or an oversize marker.
#[derive(Debug)]
struct Line {
    no: u64,
    start: usize,
    end: usize,
    /// Some(total length) when the line exceeded the limit and was cut.
    oversize: Option<u64>,
}

/// A run of lines read together.
#[derive(Debug)]
struct Block {
    index: u64,
    data: Vec<u8>,
    lines: Vec<Line>,
}

struct Reader {
    input: Box<dyn BufRead + Send>,
    next_block: u64,
    next_line: u64,
    eof: bool,
}

/// Per-block max event times, and the prior max of each block once all
/// blocks before it are known.
#[derive(Default)]
struct Ledger {
    published: BTreeMap<u64, i64>,
    contiguous: u64,
    prefix_max: i64,
    prior: HashMap<u64, i64>,
}

impl Ledger {
    fn publish(&mut self, block: u64, max_ts: i64) {
        self.published.insert(block, max_ts);
        while let Some(m) = self.published.remove(&self.contiguous) {
            self.prior.insert(self.contiguous, self.prefix_max);
            self.prefix_max = self.prefix_max.max(m);
            self.contiguous += 1;
        }
    }
}

/// A JSONL input shared by all workers of a process.
pub struct JsonlFile {
    origin: Origin,
    reader: Mutex<Reader>,
    ledger: Mutex<Ledger>,
    block_bytes: usize,
    max_line_bytes: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means another worker panicked: a bug; keep going with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JsonlFile {
    /// Opens `path` (`-` = stdin). `block_bytes` is the unit of work per
    /// worker step; lines longer than `max_line_bytes` are rejected as oversize.
    pub fn open(path: &str, block_bytes: usize, max_line_bytes: usize) -> std::io::Result<Arc<JsonlFile>> {
        let input: Box<dyn BufRead + Send> = if path == "-" {
            Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?))
        };
        Ok(Self::from_reader(path, input, block_bytes, max_line_bytes))
    }

    /// A shared input over any reader (tests, generators).
    pub fn from_reader(
        name: &str,
        input: Box<dyn BufRead + Send>,
        block_bytes: usize,
        max_line_bytes: usize,
    ) -> Arc<JsonlFile> {
        Arc::new(JsonlFile {
            origin: Origin::File { path: Arc::from(name) },
            reader: Mutex::new(Reader { input, next_block: 0, next_line: 1, eof: false }),
            ledger: Mutex::new(Ledger { prefix_max: i64::MIN, ..Ledger::default() }),
            block_bytes: block_bytes.max(1),
            max_line_bytes,
        })
    }

    /// Reads the next block of whole lines; `None` at end of input.
    fn next_block(&self) -> std::io::Result<Option<Block>> {
        let mut r = lock(&self.reader);
        if r.eof {
            return Ok(None);
        }
        let mut block =
            Block { index: r.next_block, data: Vec::with_capacity(self.block_bytes + 4096), lines: Vec::new() };
        let limit = self.max_line_bytes as u64;
        while block.data.len() < self.block_bytes {
            let start = block.data.len();
            let no = r.next_line;
            // Read at most limit+1 bytes of the line so a huge line never sits in memory.
            let n = read_line(&mut r.input, limit + 2, &mut block.data)?;
            if n == 0 {
                r.eof = true;
                break;
            }
            r.next_line += 1;
            let mut end = block.data.len();
            let terminated = block.data[end - 1] == b'\n';
            if terminated {
                end -= 1;
            }
            if end > start && block.data[end - 1] == b'\r' {
                end -= 1;
            }
            let mut oversize = None;
            if (end - start) as u64 > limit {
                let mut total = (end - start) as u64;
                if !terminated {
                    // Skip the rest of the line, counting it.
                    total += skip_line(&mut r.input)?;
                }
                block.data.truncate(start + 4096.min(end - start));
                end = block.data.len();
                oversize = Some(total);
            }
            block.lines.push(Line { no, start, end, oversize });
        }
        if block.lines.is_empty() && r.eof {
            return Ok(None);
        }
        r.next_block += 1;
        Ok(Some(block))
    }
}

/// Consumes input up to and including the next newline, stopping after `max`
/// bytes or at the end, handing each buffered piece to `piece`; returns the
/// bytes consumed and whether a newline ended them. `BufRead::read_until` on
/// `take`, but with memchr's SIMD search: finding line ends is a pass over
/// every byte.
fn consume_line(input: &mut dyn BufRead, max: u64, mut piece: impl FnMut(&[u8])) -> std::io::Result<(u64, bool)> {
    let mut read = 0u64;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = usize::try_from(max - read).unwrap_or(usize::MAX).min(buf.len());
        if room == 0 {
            return Ok((read, false));
        }
        let (take, line_end) = match memchr::memchr(b'\n', &buf[..room]) {
            Some(i) => (i + 1, true),
            None => (room, false),
        };
        piece(&buf[..take]);
        input.consume(take);
        read += take as u64;
        if line_end {
            return Ok((read, true));
        }
    }
}

/// Appends the next line, newline included, reading at most `max` bytes;
/// returns bytes read.
fn read_line(input: &mut dyn BufRead, max: u64, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let (read, _) = consume_line(input, max, |piece| out.extend_from_slice(piece))?;
    // At most `max` bytes, all of them now in `out`, so they fit a usize.
    Ok(read as usize)
}

/// Consumes input up to and including the next newline; returns bytes
/// skipped, not counting the newline.
fn skip_line(input: &mut dyn BufRead) -> std::io::Result<u64> {
    let (read, newline) = consume_line(input, u64::MAX, |_| {})?;
    Ok(read - u64::from(newline))
}

/// One worker's view of a shared [`JsonlFile`].
pub struct JsonlSource {
    file: Arc<JsonlFile>,
    validator: Validator,
    now_ms: i64,
    /// A parsed block waiting for the max event time of the blocks before it.
    waiting: Option<(u64, Vec<Record>)>,
    done: bool,
    floor: i64,
    /// Read errors end the input; kept for the caller to report.
    pub error: Option<std::io::Error>,
}

impl JsonlSource {
    /// A worker's reader; `now_ms` is the wall clock used for future-timestamp checks.
    pub fn new(file: Arc<JsonlFile>, validator: Validator, now_ms: i64) -> Self {
        JsonlSource { file, validator, now_ms, waiting: None, done: false, floor: i64::MIN, error: None }
    }

    fn parse(&self, block: &Block) -> (Vec<Record>, i64) {
        let mut records = Vec::with_capacity(block.lines.len());
        let mut max_ts = i64::MIN;
        for line in &block.lines {
            let bytes = &block.data[line.start..line.end];
            let parsed = match line.oversize {
                Some(total) => Err(Box::new(Rejected::new(
                    Rejection {
                        reason: recflow_schemas::Reason::Oversize,
                        field: None,
                        detail: format!("line is {total} bytes, limit {}", self.file.max_line_bytes),
                    },
                    bytes,
                ))),
                None if bytes.iter().all(u8::is_ascii_whitespace) => continue,
                None => {
                    self.validator.validate(bytes, None, self.now_ms).map_err(|r| Box::new(Rejected::new(r, bytes)))
                }
            };
            if let Ok(e) = &parsed {
                max_ts = max_ts.max(e.ts);
            }
            records.push(Record { offset: line.no, parsed });
        }
        (records, max_ts)
    }
}

impl Source for JsonlSource {
    fn poll(&mut self) -> Poll {
        loop {
            if self.waiting.is_none() && !self.done {
                match self.file.next_block() {
                    Ok(Some(block)) => {
                        let (records, max_ts) = self.parse(&block);
                        lock(&self.file.ledger).publish(block.index, max_ts);
                        self.waiting = Some((block.index, records));
                    }
                    Ok(None) => self.done = true,
                    Err(e) => {
                        tracing::error!(error = %e, "reading input failed; treating as end of input");
                        self.error = Some(e);
                        self.done = true;
                    }
                }
            }
            let mut ledger = lock(&self.file.ledger);
            self.floor = ledger.prefix_max;
            let Some((index, _)) = &self.waiting else {
                return Poll::Done;
            };
            let Some(prior) = ledger.prior.remove(index) else {
                return Poll::Pending;
            };
            let (_, records) = self.waiting.take().expect("checked above");
            if !records.is_empty() {
                return Poll::Ready(Batch { origin: self.file.origin.clone(), records, prior_max_ts: prior });
            }
        }
    }

    fn max_ts_floor(&self) -> i64 {
        match &self.waiting {
            // Our own parked block will be judged against its prior max, which we may not know yet.
            Some((index, _)) => lock(&self.file.ledger).prior.get(index).copied().unwrap_or(self.floor),
            None => self.floor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recflow_schemas::Reason;

    fn ev(ts: i64) -> String {
        format!(
            "{{\"tenant_id\":\"t\",\"scenario_id\":\"s\",\"user_id\":\"u\",\"item_id\":\"i\",\"action_type\":\"click\",\"timestamp\":{ts}}}\n"
        )
    }

    fn drain(sources: &mut [JsonlSource]) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut done = vec![false; sources.len()];
        while done.iter().any(|d| !d) {
            for (i, s) in sources.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                match s.poll() {
                    Poll::Ready(b) => out.push(b),
                    Poll::Pending => {}
                    Poll::Done => done[i] = true,
                }
            }
        }
        out
    }

    #[test]
    fn blocks_get_exact_prior_max_in_any_worker_order() {
        let mut text = String::new();
        for ts in [5, 3, 9, 1, 12, 2, 7, 20, 4] {
            text.push_str(&ev(ts));
        }
        text.push('\n'); // blank line: skipped
        text.push_str("{oops\n");
        let file = JsonlFile::from_reader("mem", Box::new(std::io::Cursor::new(text.into_bytes())), 1, 64 * 1024);
        let mut workers: Vec<_> =
            (0..3).map(|_| JsonlSource::new(file.clone(), Validator::default(), i64::MAX / 2)).collect();
        let mut batches = drain(&mut workers);
        batches.sort_by_key(|b| b.records.first().map(|r| r.offset));
        // block_bytes = 1: one line per block; prior = max of all earlier lines.
        let priors: Vec<i64> = batches.iter().map(|b| b.prior_max_ts).collect();
        let m = i64::MIN;
        assert_eq!(priors, vec![m, 5, 5, 9, 9, 12, 12, 12, 20, 20]);
        let last = &batches.last().unwrap().records[0];
        assert_eq!(last.offset, 11, "line numbers count the blank line");
        assert_eq!(last.parsed.as_ref().unwrap_err().rejection.reason, Reason::BadJson);
        assert!(workers.iter().all(|w| w.max_ts_floor() == 20));
    }

    #[test]
    fn oversize_lines_are_cut_and_skipped() {
        let mut text = ev(1);
        text.push_str(&format!("{{\"x\":\"{}\"}}\n", "a".repeat(200_000)));
        text.push_str(&ev(2));
        text.push_str(&"b".repeat(100_000)); // unterminated last line
        let file = JsonlFile::from_reader("mem", Box::new(std::io::Cursor::new(text.into_bytes())), 1 << 20, 64 * 1024);
        let mut w = [JsonlSource::new(file, Validator::default(), i64::MAX / 2)];
        let batches = drain(&mut w);
        let recs: Vec<&Record> = batches.iter().flat_map(|b| &b.records).collect();
        assert_eq!(recs.len(), 4);
        assert!(recs[0].parsed.is_ok() && recs[2].parsed.is_ok());
        for r in [recs[1], recs[3]] {
            let rej = r.parsed.as_ref().unwrap_err();
            assert_eq!(rej.rejection.reason, Reason::Oversize);
            assert!(rej.payload.len() <= 4096);
        }
        assert_eq!(recs[2].offset, 3);
    }

    #[test]
    fn read_line_reads_what_read_until_on_take_reads() {
        use std::io::{BufReader, Read as _};
        let text = b"ab\r\n\n0123456789abcdef\nlast line without end";
        // A 3-byte buffer makes lines span refills; several caps cut lines.
        for max in [1u64, 2, 3, 5, 16, 17, 100] {
            let (mut ours, mut std) = (BufReader::with_capacity(3, &text[..]), BufReader::with_capacity(3, &text[..]));
            loop {
                let (mut a, mut b) = (b"kept".to_vec(), b"kept".to_vec());
                let n = read_line(&mut ours, max, &mut a).expect("in memory");
                let m = (&mut std).take(max).read_until(b'\n', &mut b).expect("in memory");
                assert_eq!((n, &a), (m, &b), "max {max}");
                if n == 0 {
                    break;
                }
            }
        }
    }
}
