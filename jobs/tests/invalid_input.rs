//! Invalid lines sprinkled into a generated workload: each is counted under
//! the right reason, dead-lettered with its line number, and nothing else
//! changes (every valid event is still applied, lateness is unchanged).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::Value;

use recflow_schemas::Reason;
use recflow_sources::generator::{events, write_catalog, GenConfig};

use common::{
    assert_dump_matches, parse_catalog, reference, render, run_pipeline, valid_lines, Ev, Line, RefConfig, Run,
    SplitMix,
};

fn gen_cfg() -> GenConfig {
    GenConfig {
        events: 20_000,
        users: 400,
        items: 300,
        // ~2.2 h of event time, some events up to 15 min behind: late ones too.
        step_ms: 400,
        late_frac: 0.03,
        max_delay_ms: 900_000,
        seed: 11,
        ..GenConfig::default()
    }
}

fn ref_config() -> RefConfig {
    let mut cat = Vec::new();
    write_catalog(&gen_cfg(), &mut cat).unwrap();
    RefConfig { catalog: parse_catalog(&cat), ..RefConfig::default() }
}

/// One invalid (or blank) line derived from a valid `sample`; `None` reason = blank.
fn invalid_line(kind: u64, sample: &[u8], rng: &mut SplitMix) -> (Vec<u8>, Option<&'static str>) {
    let obj = || -> Value { serde_json::from_slice(sample).unwrap() };
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v = obj();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    match kind {
        // Truncated JSON: any strict, non-empty prefix of an object.
        0 => {
            let cut = 1 + rng.below(sample.len() as u64 - 1) as usize;
            (sample[..cut].to_vec(), Some("bad_json"))
        }
        1 => (edit(&|v| v["user_id"] = 12345.into()), Some("invalid_field")),
        2 => (
            edit(&|v| {
                v.as_object_mut().unwrap().remove("tenant_id");
            }),
            Some("missing_field"),
        ),
        3 => (edit(&|v| v["pad"] = "x".repeat(100 * 1024).into()), Some("oversize")),
        4 => (edit(&|v| v["action_type"] = "dance".into()), Some("unknown_action")),
        5 => (edit(&|v| v["user_id"] = "a:b".into()), Some("invalid_field")),
        6 => (edit(&|v| v["item_id"] = "a:b".into()), Some("invalid_field")),
        7 => (Vec::new(), None),
        8 => {
            // Non-UTF-8 bytes inside a string value.
            let mut b = sample.to_vec();
            let at = find(&b, b"\"user_id\":\"").unwrap() + 11;
            b.splice(at..at, [0xff, 0xfe]);
            (b, Some("bad_json"))
        }
        9 => (edit(&|v| v["tenant_id"] = Value::Null), Some("missing_field")),
        10 => (edit(&|v| v["timestamp"] = "yesterday".into()), Some("invalid_field")),
        11 => (edit(&|v| v["tenant_id"] = "Tenant-A".into()), Some("invalid_field")),
        _ => (
            edit(&|v| v["timestamp"] = (recflow_schemas::validate::now_ms() + 86_400_000).into()),
            Some("future_timestamp"),
        ),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Dirty {
    text: Vec<u8>,
    lines: u64,
    /// (dirty line number, reason) of every inserted invalid line.
    invalid: Vec<(u64, String)>,
    /// Dirty line number of clean line i (0-based).
    line_of_clean: Vec<u64>,
    blanks: u64,
}

impl Dirty {
    /// Appends one line; returns its 1-based number.
    fn push(&mut self, bytes: &[u8]) -> u64 {
        self.text.extend_from_slice(bytes);
        self.text.push(b'\n');
        self.lines += 1;
        self.lines
    }

    /// Appends a random invalid or blank line derived from `sample`.
    fn insert(&mut self, rng: &mut SplitMix, sample: &[u8]) {
        let kind = rng.below(13);
        let (bytes, reason) = invalid_line(kind, sample, rng);
        let no = self.push(&bytes);
        match reason {
            Some(r) => self.invalid.push((no, r.to_string())),
            None => self.blanks += 1,
        }
    }
}

/// The clean lines with invalid and blank lines inserted at random positions
/// (also first and last).
fn make_dirty(clean: &[Vec<u8>], seed: u64) -> Dirty {
    let mut rng = SplitMix(seed);
    let mut d = Dirty { text: Vec::new(), lines: 0, invalid: Vec::new(), line_of_clean: Vec::new(), blanks: 0 };
    d.insert(&mut rng, &clean[0]);
    for l in clean {
        // About one line in ten is invalid (issue #5: a stream with 10% invalid records).
        if rng.below(1000) < 111 {
            let sample = &clean[rng.below(clean.len() as u64) as usize];
            d.insert(&mut rng, sample);
        }
        let no = d.push(l);
        d.line_of_clean.push(no);
    }
    d.insert(&mut rng, &clean[clean.len() - 1]);
    d
}

fn rejected_by_reason(run: &Run) -> BTreeMap<String, u64> {
    Reason::ALL
        .iter()
        .filter(|r| **r != Reason::Late)
        .map(|r| (r.code().to_string(), run.counters.rejected(*r)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn invalid_lines_are_counted_dead_lettered_and_harmless() {
    let clean: Vec<Vec<u8>> = events(&gen_cfg()).collect();
    let mut clean_text = Vec::new();
    for l in &clean {
        clean_text.extend_from_slice(l);
        clean_text.push(b'\n');
    }
    let dirty = make_dirty(&clean, 0xd1e7);
    let rcfg = ref_config();
    let cfg = rcfg.pipeline_config();
    let catalog = Arc::new(rcfg.pipeline_catalog());

    let mut want_counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, r) in &dirty.invalid {
        *want_counts.entry(r.clone()).or_default() += 1;
    }
    assert!(
        want_counts.len() == 6 && dirty.blanks > 0,
        "every kind of invalid line is present: {want_counts:?}, blanks {}",
        dirty.blanks
    );

    let share = (dirty.invalid.len() as u64 + dirty.blanks) as f64 / dirty.lines as f64;
    assert!((0.08..0.12).contains(&share), "about 10% of the lines are junk: {share:.3}");

    let base = run_pipeline(&cfg, clean_text, catalog.clone(), 2, 16 * 1024, true);
    assert!(rejected_by_reason(&base).is_empty());
    let base_late = base.counters.late.load(Relaxed);
    assert!(base_late > 0, "the workload has late events");
    let base_dlq = base.dlq_lines();
    assert!(base_dlq.iter().all(|(_, r)| r == "late"));
    assert_eq!(base_dlq.len() as u64, base_late);
    // Late lines of the clean input, renumbered as lines of the dirty input.
    let mut want_late: Vec<(u64, String)> =
        base_dlq.iter().map(|(l, r)| (dirty.line_of_clean[*l as usize - 1], r.clone())).collect();
    want_late.sort();

    for (workers, block) in [(1, 256 * 1024), (3, 4096)] {
        let what = format!("dirty input, workers={workers} block_bytes={block}");
        let run = run_pipeline(&cfg, dirty.text.clone(), catalog.clone(), workers, block, true);
        assert_eq!(rejected_by_reason(&run), want_counts, "{what}: counts per reason");
        assert_eq!(run.counters.events.load(Relaxed), clean.len() as u64, "{what}: valid events");
        assert_eq!(run.counters.late.load(Relaxed), base_late, "{what}: late");

        // One DLQ record per invalid line, with its reason and line number.
        let dlq = run.dlq_lines();
        let (late, invalid): (Vec<_>, Vec<_>) = dlq.into_iter().partition(|(_, r)| r == "late");
        assert_eq!(invalid, dirty.invalid, "{what}: DLQ (line, reason) of invalid lines");
        assert_eq!(late, want_late, "{what}: DLQ (line, reason) of late events");
        for d in &run.dlq {
            assert_eq!(d["source"]["kind"], "file", "{what}: {d}");
        }

        // Every valid event still applied exactly as without the junk.
        if run.dump != base.dump {
            let a = run.dump.as_object().unwrap();
            let b = base.dump.as_object().unwrap();
            let diff: Vec<_> = a
                .keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .take(5)
                .map(|k| format!("{k}: {:?} vs clean {:?}", a.get(k), b.get(k)))
                .collect();
            panic!("{what}: dump differs from the clean run: {diff:#?}");
        }
    }
}

/// The clean generated workload (catalog categories, realistic mix, late
/// events) against the reference.
#[test]
fn generated_workload_matches_reference() {
    let mut text = Vec::new();
    for l in events(&gen_cfg()) {
        text.extend_from_slice(&l);
        text.push(b'\n');
    }
    let lines = valid_lines(&text);
    let rcfg = ref_config();
    let expected = reference(&lines, &rcfg);
    assert!(!expected.late_lines.is_empty());
    let cfg = rcfg.pipeline_config();
    let run = run_pipeline(&cfg, text, Arc::new(rcfg.pipeline_catalog()), 2, 8192, true);
    assert_eq!(run.counters.late.load(Relaxed), expected.late_lines.len() as u64);
    assert_eq!(run.dlq_lines(), expected.expected_dlq());
    assert_dump_matches(&run.dump, &expected, &rcfg, "generated workload");
}

/// A line of exactly 64 KiB is accepted and applied; one byte more is
/// `oversize`; a blank line between them only shifts line numbers.
#[test]
fn oversize_boundary_is_64_kib() {
    let limit = 64 * 1024;
    let padded = |id: &str, len: usize| {
        let mut ev = Ev::new("t0", "s", "u0", "i0", 6, 1_767_520_800_000);
        ev.event_id = Some(id.into());
        let mut v = ev.to_json();
        v["pad"] = "".into();
        let base = serde_json::to_vec(&v).unwrap().len();
        v["pad"] = "x".repeat(len - base).into();
        let text = serde_json::to_vec(&v).unwrap();
        assert_eq!(text.len(), len);
        (ev, text)
    };
    let (ev, text) = padded("at-limit", limit);
    let (_, over) = padded("over-limit", limit + 1);
    let lines = vec![Line::from_valid_text(ev, text), Line::Blank, Line::invalid(over, "oversize")];
    let rcfg = RefConfig::default();
    let expected = reference(&lines, &rcfg);
    let run = run_pipeline(&rcfg.pipeline_config(), render(&lines), Arc::new(rcfg.pipeline_catalog()), 2, 1024, true);
    assert_eq!(run.counters.rejected(Reason::Oversize), 1);
    assert_eq!(run.counters.events.load(Relaxed), 1);
    assert_eq!(run.dlq_lines(), vec![(3, "oversize".to_string())]);
    assert_dump_matches(&run.dump, &expected, &rcfg, "64 KiB line");
}
