//! Property test: the whole pipeline (1 and 3 workers, small random read
//! blocks) against the naive reference of `common`, on random event streams
//! with disorder, late events, boundary timestamps, ties and invalid lines.
//!
//! `RECFLOW_PROPTEST_CASES` overrides the number of cases.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

use common::{
    assert_dump_matches, diff_dump, reason_of, reference, render, run_pipeline, Ev, Line, RefConfig, ACTION_NAMES,
};

const TENANTS: [&str; 2] = ["t0", "tenant_1"];
const SCENARIOS: [&str; 2] = ["vlog", "news.v2-x"];
const USERS: [&str; 5] = ["u0", "u1", "u.2@x", "u-3", "U_4"];
const EXPERIMENTS: [&str; 2] = ["exp_a", "exp-b"];
const VARIANTS: [&str; 2] = ["control", "treatment"];
const CATEGORIES: [&str; 4] = ["sports", "music", "news", "tech"];
/// Items only ever touched by bursts: always identical events, hence exact ties.
const POOL: [&str; 4] = ["p0", "p1", "p2", "p3"];
/// 2026-01-04T10:00:00Z.
const START_MS: i64 = 1_767_520_800_000;

/// How an event's timestamp relates to the running clock (= max valid ts).
#[derive(Clone, Debug)]
enum Step {
    /// Advance the clock and stamp the event with it.
    Fwd(u32),
    /// Same timestamp as the clock.
    Same,
    /// Behind the clock (<= 5 min + 1 ms: on both sides of the lateness bound).
    Back(u32),
    /// Far behind (> 5 min): late.
    FarBack(u32),
    /// Boundary: unit 0 = 15 min, 1 = 5 min, 2 = 1 min; mode 0 = floor of the
    /// clock, 1 = ceil (advances the clock), 2 = ceil − 1 ms (advances it).
    Snap(u8, u8),
}

#[derive(Clone, Debug)]
struct EvSpec {
    tenant: u8,
    scenario: u8,
    user: u8,
    item: u8,
    action: u8,
    exp: Option<u8>,
    var: Option<u8>,
    cat: Option<u8>,
    watch: Option<u16>,
    completion: Option<u8>,
    amount: Option<u32>,
    with_id: bool,
    rfc: bool,
    context: bool,
    step: Step,
}

#[derive(Clone, Debug)]
enum Op {
    Ev(EvSpec),
    /// The same event for every pool item, same timestamp, same user.
    Burst {
        tenant: u8,
        scenario: u8,
        user: u8,
        action: u8,
        cat: Option<u8>,
        with_id: bool,
        step: Step,
    },
    Invalid(u8),
}

#[derive(Clone, Debug)]
struct Case {
    /// Offset of the first clock value from START_MS (ms).
    base: u32,
    /// 0: 500/200, 1: 3/2, 2: 1/1, 3: 2/1.
    topk: u8,
    block_bytes: usize,
    items: u8,
    users: u8,
    ops: Vec<Op>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u32..90_000).prop_map(Step::Fwd),
        3 => Just(Step::Same),
        3 => prop_oneof![
            0u32..240_000,
            Just(299_999u32),
            Just(300_000u32),
            Just(300_001u32)
        ]
        .prop_map(Step::Back),
        1 => (300_001u32..2_400_000).prop_map(Step::FarBack),
        2 => (0u8..3, 0u8..3).prop_map(|(u, m)| Step::Snap(u, m)),
    ]
}

fn ev_spec() -> impl Strategy<Value = EvSpec> {
    let ids = (0u8..2, 0u8..2, 0u8..5, 0u8..40, 0u8..12);
    let ab = (
        proptest::option::weighted(0.7, 0u8..2),
        proptest::option::weighted(0.7, 0u8..2),
        proptest::option::weighted(0.5, 0u8..4),
    );
    let extra = (
        proptest::option::weighted(0.35, 0u16..2400),
        proptest::option::weighted(0.3, 0u8..=100),
        proptest::option::weighted(0.3, 0u32..100_000),
    );
    let flags = (proptest::bool::weighted(0.8), proptest::bool::weighted(0.1), any::<bool>());
    (ids, ab, extra, flags, step()).prop_map(
        |(
            (tenant, scenario, user, item, action),
            (exp, var, cat),
            (watch, completion, amount),
            (with_id, rfc, context),
            step,
        )| EvSpec {
            tenant,
            scenario,
            user,
            item,
            action,
            exp,
            var,
            cat,
            watch,
            completion,
            amount,
            with_id,
            rfc,
            context,
            step,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    let burst = ((0u8..2, 0u8..2, 0u8..5, 0u8..12), proptest::option::weighted(0.6, 0u8..4), any::<bool>(), step())
        .prop_map(|((tenant, scenario, user, action), cat, with_id, step)| Op::Burst {
            tenant,
            scenario,
            user,
            action,
            cat,
            with_id,
            step,
        });
    prop_oneof![
        40 => ev_spec().prop_map(Op::Ev),
        3 => burst,
        2 => (0u8..8).prop_map(Op::Invalid),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (0u32..3_600_000, 0u8..4, 32usize..4096, (3u8..=40, 1u8..=5), proptest::collection::vec(op(), 50..400))
        .prop_map(|(base, topk, block_bytes, (items, users), ops)| Case { base, topk, block_bytes, items, users, ops })
}

fn ref_config(topk: u8) -> RefConfig {
    let (top_k, category_top_k) = match topk {
        0 => (500, 200),
        1 => (3, 2),
        2 => (1, 1),
        _ => (2, 1),
    };
    let mut cfg = RefConfig { top_k, category_top_k, ..RefConfig::default() };
    // Some items have a catalog category (used when the event has none).
    for (tenant, item, cat) in [
        ("t0", "i00", "sports"),
        ("t0", "i01", "music"),
        ("t0", "i02", "news"),
        ("t0", "i03", "music"),
        ("t0", "p0", "tech"),
        ("t0", "p1", "tech"),
        ("t0", "p2", "news"),
        ("tenant_1", "i04", "tech"),
        ("tenant_1", "i05", "games"),
        ("tenant_1", "p3", "games"),
    ] {
        cfg.catalog.insert((tenant.to_string(), item.to_string()), cat.to_string());
    }
    cfg
}

/// Applies a step to the clock; returns the event's timestamp.
fn stamp(clock: &mut i64, step: &Step) -> i64 {
    match *step {
        Step::Fwd(d) => {
            *clock += i64::from(d);
            *clock
        }
        Step::Same => *clock,
        Step::Back(d) | Step::FarBack(d) => *clock - i64::from(d),
        Step::Snap(unit, mode) => {
            let u = [900_000, 300_000, 60_000][unit as usize];
            let floor = clock.div_euclid(u) * u;
            let ceil = if floor == *clock { floor } else { floor + u };
            match mode {
                0 => floor,
                1 => {
                    *clock = ceil;
                    ceil
                }
                _ => {
                    *clock = (*clock).max(ceil - 1);
                    ceil - 1
                }
            }
        }
    }
}

/// Renders a case into lines.
fn build_lines(c: &Case) -> Vec<Line> {
    let mut clock = START_MS + i64::from(c.base);
    let mut lines = Vec::with_capacity(c.ops.len() + 8);
    let now = recflow_schemas::validate::now_ms();
    for op in &c.ops {
        let n = lines.len();
        match op {
            Op::Ev(s) => {
                let ts = stamp(&mut clock, &s.step);
                let item = format!("i{:02}", s.item % c.items);
                let mut ev = Ev::new(
                    TENANTS[s.tenant as usize],
                    SCENARIOS[s.scenario as usize],
                    USERS[(s.user % c.users) as usize],
                    &item,
                    s.action as usize,
                    ts,
                );
                ev.event_id = s.with_id.then(|| format!("e{n}"));
                ev.ts_rfc3339 = s.rfc;
                ev.experiment = s.exp.map(|i| EXPERIMENTS[i as usize].to_string());
                ev.variant = s.var.map(|i| VARIANTS[i as usize].to_string());
                ev.category = s.cat.map(|i| CATEGORIES[i as usize].to_string());
                ev.watch_duration = s.watch.map(|w| f64::from(w) / 4.0);
                ev.completion_rate = s.completion.map(|p| f64::from(p) / 100.0);
                ev.amount = s.amount.map(|a| f64::from(a) / 100.0);
                ev.context = s.context;
                lines.push(Line::valid(ev));
            }
            Op::Burst { tenant, scenario, user, action, cat, with_id, step } => {
                let ts = stamp(&mut clock, step);
                for (j, item) in POOL.iter().enumerate() {
                    let mut ev = Ev::new(
                        TENANTS[*tenant as usize],
                        SCENARIOS[*scenario as usize],
                        USERS[(*user % c.users) as usize],
                        item,
                        *action as usize,
                        ts,
                    );
                    ev.event_id = with_id.then(|| format!("b{n}-{}", 3 - j));
                    ev.category = cat.map(|i| CATEGORIES[i as usize].to_string());
                    lines.push(Line::valid(ev));
                }
            }
            Op::Invalid(kind) => {
                let base = Ev::new("t0", "vlog", "u0", "i00", 1, clock);
                let mut v = base.to_json();
                let line = match kind {
                    0 => {
                        let t = serde_json::to_string(&v).unwrap();
                        Line::invalid(&t.as_bytes()[..t.len() / 2], "bad_json")
                    }
                    1 => {
                        v.as_object_mut().unwrap().remove("tenant_id");
                        Line::invalid(v.to_string(), "missing_field")
                    }
                    2 => {
                        v["user_id"] = 42.into();
                        Line::invalid(v.to_string(), "invalid_field")
                    }
                    3 => {
                        v["item_id"] = "a:b".into();
                        Line::invalid(v.to_string(), "invalid_field")
                    }
                    4 => {
                        // A later timestamp on a rejected line must not move the watermark.
                        v["action_type"] = "dance".into();
                        v["timestamp"] = (clock + 3 * 3_600_000).into();
                        Line::invalid(v.to_string(), "unknown_action")
                    }
                    5 => {
                        v["timestamp"] = (now + 86_400_000).into();
                        Line::invalid(v.to_string(), "future_timestamp")
                    }
                    6 => Line::Blank,
                    _ => Line::invalid("[1,2]", "bad_json"),
                };
                lines.push(line);
            }
        }
    }
    lines
}

/// What the generated cases covered (checked once all cases ran).
struct Coverage {
    late: AtomicU64,
    invalid: AtomicU64,
    ties_at_cut: AtomicU64,
    truncated: AtomicU64,
    /// Profiles whose recent_items list had to be cut at 20.
    recent_cut: AtomicU64,
}

static COVERAGE: Coverage = Coverage {
    late: AtomicU64::new(0),
    invalid: AtomicU64::new(0),
    ties_at_cut: AtomicU64::new(0),
    truncated: AtomicU64::new(0),
    recent_cut: AtomicU64::new(0),
};

fn check_case(c: &Case) -> Result<(), TestCaseError> {
    let lines = build_lines(c);
    let rcfg = ref_config(c.topk);
    let expected = reference(&lines, &rcfg);
    COVERAGE.late.fetch_add(expected.late_lines.len() as u64, Relaxed);
    COVERAGE.invalid.fetch_add(expected.invalid_lines.len() as u64, Relaxed);
    for (key, full) in &expected.hot_full {
        let k = if key.matches(':').count() == 3 { rcfg.top_k } else { rcfg.category_top_k };
        if full.len() > k {
            COVERAGE.truncated.fetch_add(1, Relaxed);
            if full[k - 1].1 == full[k].1 {
                COVERAGE.ties_at_cut.fetch_add(1, Relaxed);
            }
        }
    }
    let mut distinct: HashMap<(&str, &str, &str), HashSet<&str>> = HashMap::new();
    for l in &lines {
        if let Line::Valid { ev, .. } = l {
            if ev.action != 0 {
                distinct.entry((&ev.tenant, &ev.user, &ev.scenario)).or_default().insert(&ev.item);
            }
        }
    }
    COVERAGE.recent_cut.fetch_add(distinct.values().filter(|s| s.len() > 20).count() as u64, Relaxed);
    let input = render(&lines);
    let mut cfg = rcfg.pipeline_config();
    let catalog = Arc::new(rcfg.pipeline_catalog());
    let mut first: Option<Vec<u8>> = None;
    for workers in [1, 3] {
        // Profiles: every window's documents at its close with 1 worker;
        // coalesced and flushed mid-run (every 1 ms) with 3. The other
        // tests run the default (1 s: in these short runs, at the end).
        cfg.profiles.emit_interval_ms = if workers == 1 { 0 } else { 1 };
        let run = run_pipeline(&cfg, input.clone(), catalog.clone(), workers, c.block_bytes, true);
        let mut errs = diff_dump(&run.dump, &expected, &rcfg);
        // Beyond matching the reference: the state does not depend on the worker count at all.
        let bytes = serde_json::to_vec(&run.dump).unwrap();
        if first.as_ref().is_some_and(|f| *f != bytes) {
            errs.push("dump is not byte-identical to the 1-worker dump".to_string());
        }
        first.get_or_insert(bytes);
        let late = run.counters.late.load(Relaxed);
        if late != expected.late_lines.len() as u64 {
            errs.push(format!(
                "late count {late}, expected {} (lines {:?})",
                expected.late_lines.len(),
                expected.late_lines
            ));
        }
        let events = run.counters.events.load(Relaxed);
        if events != expected.valid {
            errs.push(format!("valid events {events}, expected {}", expected.valid));
        }
        for code in ["bad_json", "missing_field", "invalid_field", "unknown_action", "future_timestamp"] {
            let got = run.counters.rejected(reason_of(code));
            if got != expected.invalid_count(code) {
                errs.push(format!("{code}: {got} rejections, expected {}", expected.invalid_count(code)));
            }
        }
        let dlq = run.dlq_lines();
        let want = expected.expected_dlq();
        if dlq != want {
            errs.push(format!("DLQ (line, reason) {dlq:?}, expected {want:?}"));
        }
        if !errs.is_empty() {
            let n = errs.len();
            errs.truncate(12);
            return Err(TestCaseError::fail(format!(
                "workers={workers} block_bytes={} top_k={}/{}: {n} differences:\n  {}\ninput:\n{}",
                c.block_bytes,
                rcfg.top_k,
                rcfg.category_top_k,
                errs.join("\n  "),
                String::from_utf8_lossy(&input)
            )));
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("RECFLOW_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

#[test]
fn pipeline_matches_reference() {
    let mut runner = TestRunner::new(PtConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 400,
        ..PtConfig::default()
    });
    let result = runner.run(&case(), |c| check_case(&c));
    if let Err(e) = result {
        panic!("{e}");
    }
    let (late, invalid, truncated, ties) = (
        COVERAGE.late.load(Relaxed),
        COVERAGE.invalid.load(Relaxed),
        COVERAGE.truncated.load(Relaxed),
        COVERAGE.ties_at_cut.load(Relaxed),
    );
    let recent_cut = COVERAGE.recent_cut.load(Relaxed);
    eprintln!(
        "coverage: late={late} invalid={invalid} truncated_lists={truncated} \
         exact_ties_at_cut={ties} recent_items_cut={recent_cut}"
    );
    assert!(late > 0 && invalid > 0 && truncated > 0 && ties > 0 && recent_cut > 0, "generator lost coverage");
}

/// Hand-written scenario: exact ties, truncation with item_id tie-break,
/// category of an item = category of its latest event, the lateness bound
/// (exactly at the watermark is not late), and a rejected line with a large
/// timestamp that must not move the watermark.
#[test]
fn handwritten_ties_and_boundaries() {
    let t0 = START_MS; // a multiple of 15 min
    let mut lines = Vec::new();
    let mut ev = |item: &str, action: &str, ts: i64, cat: Option<&str>| {
        let a = ACTION_NAMES.iter().position(|x| *x == action).unwrap();
        let mut e = Ev::new("t0", "vlog", "u0", item, a, ts);
        e.event_id = Some(format!("e{:03}", lines.len()));
        e.category = cat.map(str::to_string);
        lines.push(Line::valid(e));
    };
    ev("zz", "click", t0, Some("music"));
    ev("bb", "click", t0, Some("music"));
    ev("aa", "click", t0, Some("music"));
    ev("ab", "click", t0, Some("music"));
    ev("cc", "click", t0, Some("news"));
    ev("cc", "impression", t0 + 1, Some("sports")); // cc's category becomes sports
    ev("dd", "like", t0 + 600_000, None);
    ev("aa", "view", t0 + 600_000 - 300_000, None); // exactly at the watermark: applied
    ev("bb", "view", t0 + 600_000 - 300_001, None); // 1 ms below: late
    lines.push(Line::invalid(
        format!(
            "{{\"tenant_id\":\"t0\",\"scenario_id\":\"vlog\",\"user_id\":\"u0\",\"item_id\":\"x\",\"action_type\":\"dance\",\"timestamp\":{}}}",
            t0 + 7_200_000
        ),
        "unknown_action",
    ));
    lines.push(Line::Blank);
    lines.push({
        let mut e = Ev::new("t0", "vlog", "u0", "ee", 1, t0 + 600_000 - 299_000);
        e.event_id = Some("late-if-watermark-moved".into());
        Line::valid(e)
    });
    let rcfg = RefConfig { top_k: 5, category_top_k: 2, ..RefConfig::default() };
    let expected = reference(&lines, &rcfg);
    assert_eq!(expected.late_lines, vec![9]);
    // Ties at the cut are broken by item_id: ab, bb (0.5 each) in, cc, zz out.
    let top: Vec<&str> =
        expected.dump["hot:items:t0:vlog"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(top, ["dd", "aa", "ee", "ab", "bb"]);
    let cfg = rcfg.pipeline_config();
    for (workers, block) in [(1, 1), (3, 1), (2, 64)] {
        let run = run_pipeline(&cfg, render(&lines), Arc::new(rcfg.pipeline_catalog()), workers, block, true);
        assert_dump_matches(&run.dump, &expected, &rcfg, &format!("workers={workers}"));
        assert_eq!(run.dlq_lines(), expected.expected_dlq());
        assert_eq!(run.counters.late.load(Relaxed), 1);
    }
}

/// Hand-written: a window whose only events are impressions (score 0) must
/// not replace or delete the hot lists of earlier windows; identical lines
/// without event_id are two events; recent_items keeps the 20 newest items,
/// ties on timestamp broken by event_id, impressions excluded.
#[test]
fn handwritten_zero_score_window_duplicates_and_recent_items() {
    let t0 = START_MS + 7 * 60_000;
    let mut lines = Vec::new();
    // Two identical lines (same derived event_id).
    for _ in 0..2 {
        let mut e = Ev::new("t0", "vlog", "u0", "i00", 1, t0);
        e.category = Some("music".into());
        lines.push(Line::valid(e));
    }
    // 25 distinct items for u1, several at the same timestamp.
    for i in 0..25 {
        let mut e = Ev::new("t0", "vlog", "u1", &format!("r{i:02}"), 2 + i % 10, t0 + (i / 3) as i64 * 1000);
        e.event_id = Some(format!("id-{}", (i * 7) % 25));
        lines.push(Line::valid(e));
    }
    // An impression of a newer item: not in recent_items.
    lines.push(Line::valid(Ev::new("t0", "vlog", "u1", "zz", 0, t0 + 60_000)));
    // Two hours later only impressions (score 0) in t0/vlog, category music.
    for i in 0..3 {
        let mut e = Ev::new("t0", "vlog", "u2", &format!("i0{i}"), 0, t0 + 7_200_000);
        e.category = Some("music".into());
        lines.push(Line::valid(e));
    }
    let rcfg = RefConfig::default();
    let expected = reference(&lines, &rcfg);
    let hot = &expected.dump["hot:items:t0:vlog"];
    assert!(hot.as_array().is_some_and(|a| a.len() == 26), "{hot}");
    assert_eq!(expected.dump["item:stats:t0:i00"]["click"], 2);
    assert_eq!(expected.dump["user:profile:t0:u1:vlog"]["recent_items"].as_array().unwrap().len(), 20);
    let cfg = rcfg.pipeline_config();
    for (workers, block) in [(1, 1 << 20), (3, 100)] {
        let run = run_pipeline(&cfg, render(&lines), Arc::new(rcfg.pipeline_catalog()), workers, block, true);
        assert_dump_matches(&run.dump, &expected, &rcfg, &format!("workers={workers}"));
        assert!(run.dlq.is_empty());
    }
}
