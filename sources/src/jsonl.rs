//! JSONL file/stdin source. The file is one logical partition read in file
//! order; workers take blocks of lines from a shared reader and parse them in
//! parallel, and a shared ledger of per-block max event times gives every
//! block the exact watermark basis a sequential reader would have had, so
//! lateness does not depend on the number of workers.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Range;
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
    input: Box<dyn Read + Send>,
    /// The start of a line the last block could not end: the next block begins with it.
    carry: Vec<u8>,
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
    /// Block buffers whose lines were parsed, for the next blocks (already
    /// paged in, so a block is read into memory that is warm and mapped).
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse, at most: one per worker in flight is plenty.
const SPARE_BLOCKS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means another worker panicked: a bug; keep going with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JsonlFile {
    /// Opens `path` (`-` = stdin). `block_bytes` is the unit of work per
    /// worker step; lines longer than `max_line_bytes` are rejected as oversize.
    pub fn open(path: &str, block_bytes: usize, max_line_bytes: usize) -> std::io::Result<Arc<JsonlFile>> {
        // Unbuffered: blocks are read straight into their own buffers.
        let input: Box<dyn Read + Send> =
            if path == "-" { Box::new(std::io::stdin()) } else { Box::new(std::fs::File::open(path)?) };
        Ok(Self::from_reader(path, input, block_bytes, max_line_bytes))
    }

    /// A shared input over any reader (tests, generators).
    pub fn from_reader(
        name: &str,
        input: Box<dyn Read + Send>,
        block_bytes: usize,
        max_line_bytes: usize,
    ) -> Arc<JsonlFile> {
        Arc::new(JsonlFile {
            origin: Origin::File { path: Arc::from(name) },
            reader: Mutex::new(Reader { input, carry: Vec::new(), next_block: 0, next_line: 1, eof: false }),
            ledger: Mutex::new(Ledger { prefix_max: i64::MIN, ..Ledger::default() }),
            block_bytes: block_bytes.max(1),
            max_line_bytes,
            spare: Mutex::new(Vec::new()),
        })
    }

    /// Reads the next block of whole lines; `None` at end of input.
    ///
    /// The input is read straight into the block's buffer, so every byte is
    /// copied once (by the kernel), not once more out of a reader's buffer.
    /// Lines are split off until `block_bytes` are used; the start of a line
    /// read past that goes to the next block. The buffer holds
    /// `block_bytes` plus a line of the limit, so an unfinished line below
    /// the limit always has room to grow; one over it is cut to its first
    /// 4 KiB and the rest of it skipped.
    fn next_block(&self) -> std::io::Result<Option<Block>> {
        let mut r = lock(&self.reader);
        if r.eof && r.carry.is_empty() {
            return Ok(None);
        }
        let (want, limit) = (self.block_bytes, self.max_line_bytes);
        let cap = want + limit + 2;
        let mut data = lock(&self.spare).pop().unwrap_or_default();
        // Kept at its full length, so reads never zero it again.
        data.resize(cap, 0);
        let mut filled = r.carry.len();
        data[..filled].copy_from_slice(&r.carry);
        r.carry.clear();
        let mut lines = Vec::new();
        // `pos`: start of the unfinished line; `scan`: where its newline search goes on.
        let (mut pos, mut scan) = (0, 0);
        loop {
            while pos < want {
                let Some(i) = memchr::memchr(b'\n', &data[scan..filled]) else {
                    scan = filled;
                    break;
                };
                let newline = scan + i;
                lines.push(Line::new(r.next_line, &data, pos, newline, limit));
                r.next_line += 1;
                pos = newline + 1;
                scan = pos;
            }
            if pos >= want {
                break;
            }
            // No newline in `limit + 2` bytes: over the limit even without its line end.
            if filled - pos > limit + 1 {
                // At most 4 KiB are kept (the dead letter's payload), and never all the room.
                let cut = pos + 4096.min(filled - pos).min(limit + 1);
                let read_last = data[filled - 1];
                let (skipped, last, rest) = skip_line(&mut *r.input, &mut data[cut..])?;
                // Counted as `Line::new` counts: a `\r` ending the line is not.
                let cr = last.unwrap_or(read_last) == b'\r';
                let total = (filled - pos) as u64 + skipped - u64::from(cr);
                lines.push(Line { no: r.next_line, start: pos, end: cut, oversize: Some(total) });
                r.next_line += 1;
                match rest {
                    // What followed its newline in the last read moves up behind the cut line.
                    Some(rest) => {
                        data.copy_within(cut + rest.start..cut + rest.end, cut);
                        filled = cut + rest.len();
                    }
                    None => {
                        r.eof = true;
                        filled = cut;
                    }
                }
                pos = cut;
                scan = cut;
                continue;
            }
            if r.eof {
                if filled > pos {
                    // The last line, without a newline.
                    lines.push(Line::new(r.next_line, &data, pos, filled, limit));
                    r.next_line += 1;
                    pos = filled;
                }
                break;
            }
            // Up to `want`, then a little at a time: the line read past it is carried.
            let until = if filled < want { want } else { (filled + 4096).min(cap) };
            match read_some(&mut *r.input, &mut data[filled..until])? {
                0 => r.eof = true,
                n => filled += n,
            }
        }
        r.carry.extend_from_slice(&data[pos..filled]);
        if lines.is_empty() {
            self.recycle(data);
            return Ok(None);
        }
        let block = Block { index: r.next_block, data, lines };
        r.next_block += 1;
        Ok(Some(block))
    }

    /// Keeps a parsed block's buffer for a later block.
    fn recycle(&self, data: Vec<u8>) {
        let mut spare = lock(&self.spare);
        if spare.len() < SPARE_BLOCKS {
            spare.push(data);
        }
    }
}

impl Line {
    /// The line `data[start..end]` (its newline not included), trailing `\r`
    /// dropped; over `limit` bytes it is cut to its first 4 KiB.
    fn new(no: u64, data: &[u8], start: usize, end: usize, limit: usize) -> Self {
        let end = if end > start && data[end - 1] == b'\r' { end - 1 } else { end };
        let len = end - start;
        if len > limit {
            Line { no, start, end: start + 4096.min(len), oversize: Some(len as u64) }
        } else {
            Line { no, start, end, oversize: None }
        }
    }
}

/// One `read`, retried when a signal interrupted it.
fn read_some(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads through the rest of an oversize line using `buf` as room. Returns
/// the bytes skipped (its newline not counted), their last byte, and the
/// range of `buf` read after the newline, or `None` if the input ended first.
fn skip_line(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<(u64, Option<u8>, Option<Range<usize>>)> {
    let (mut skipped, mut last) = (0u64, None);
    loop {
        let n = read_some(input, buf)?;
        if n == 0 {
            return Ok((skipped, last, None));
        }
        let newline = memchr::memchr(b'\n', &buf[..n]);
        let end = newline.unwrap_or(n);
        if end > 0 {
            (skipped, last) = (skipped + end as u64, Some(buf[end - 1]));
        }
        if let Some(i) = newline {
            return Ok((skipped, last, Some(i + 1..n)));
        }
    }
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
                        self.file.recycle(block.data);
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

    /// Hands out at most `chunk` bytes per read, as a pipe may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// (line number, kept bytes, oversize length) of every line, as a plain split
    /// says: a trailing `\r` dropped, over `limit` bytes cut to 4 KiB or `limit + 1`.
    fn reference(text: &[u8], limit: usize) -> Vec<(u64, Vec<u8>, Option<u64>)> {
        let mut parts: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        if parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = p.strip_suffix(b"\r").unwrap_or(p);
                if p.len() > limit {
                    // Cut where the reader decided: with all of it in its buffer, or after `limit + 2` bytes.
                    (i as u64 + 1, p[..4096.min(p.len())].to_vec(), Some(p.len() as u64))
                } else {
                    (i as u64 + 1, p.to_vec(), None)
                }
            })
            .collect()
    }

    fn read_all(text: &[u8], block_bytes: usize, limit: usize, chunk: usize) -> Vec<(u64, Vec<u8>, Option<u64>)> {
        let input = Box::new(Trickle(text.to_vec().leak(), chunk));
        let file = JsonlFile::from_reader("mem", input, block_bytes, limit);
        let mut out = Vec::new();
        let mut last_index = None;
        while let Some(block) = file.next_block().expect("in memory") {
            assert_eq!(last_index.map_or(0, |i| i + 1), block.index);
            last_index = Some(block.index);
            for l in &block.lines {
                out.push((l.no, block.data[l.start..l.end].to_vec(), l.oversize));
            }
            file.recycle(block.data);
        }
        out
    }

    #[test]
    fn blocks_hold_the_lines_a_plain_split_finds() {
        let long = |n: usize, c: u8| vec![c; n];
        let mut texts: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            b"ab\r\n\n0123456789abcdef\nlast line without end".to_vec(),
            b"one\ntwo\r\n\r\nthree\n".to_vec(),
            b"x\r".to_vec(),
        ];
        // Lines around the limit (100), with and without `\r`, terminated or not.
        for len in [99, 100, 101, 102, 103, 250, 5000] {
            for (cr, nl) in [(false, true), (true, true), (false, false), (true, false)] {
                let mut t = b"first\n".to_vec();
                t.extend(long(len, b'a'));
                if cr {
                    t.push(b'\r');
                }
                if nl {
                    t.extend_from_slice(b"\nafter\n");
                }
                texts.push(t);
            }
        }
        // Many short lines mixed with oversize ones.
        let mut mixed = Vec::new();
        for i in 0..300usize {
            mixed.extend(long(i * 7 % 130, b'a' + (i % 26) as u8));
            mixed.extend_from_slice(if i % 5 == 0 { b"\r\n" } else { b"\n" });
        }
        texts.push(mixed);
        for text in &texts {
            let want = reference(text, 100);
            for block_bytes in [1, 7, 64, 1000, 1 << 16] {
                for chunk in [1, 3, 64, 4096, usize::MAX] {
                    let got = read_all(text, block_bytes, 100, chunk);
                    let show = String::from_utf8_lossy(&text[..text.len().min(40)]);
                    assert_eq!(got.len(), want.len(), "{show:?}, block {block_bytes}, chunk {chunk}");
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!((g.0, g.2), (w.0, w.2), "{show:?}, block {block_bytes}, chunk {chunk}");
                        // An oversize line keeps a prefix of itself, at most 4 KiB.
                        if w.2.is_some() {
                            assert!(w.1.starts_with(&g.1) && !g.1.is_empty() && g.1.len() <= 4096);
                        } else {
                            assert_eq!(g.1, w.1, "{show:?}, block {block_bytes}, chunk {chunk}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn block_buffers_are_reused() {
        let text: String = (0..2000).map(ev).collect();
        let file = JsonlFile::from_reader("mem", Box::new(std::io::Cursor::new(text.into_bytes())), 4096, 1000);
        let mut w = [JsonlSource::new(file.clone(), Validator::default(), i64::MAX / 2)];
        let batches = drain(&mut w);
        assert_eq!(batches.iter().map(|b| b.records.len()).sum::<usize>(), 2000);
        assert!(batches.len() > 10);
        assert_eq!(lock(&file.spare).len(), 1, "one worker needs one buffer");
    }
}
