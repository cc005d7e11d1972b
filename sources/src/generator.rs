//! Deterministic synthetic workload, the Rust twin of
//! `shared/workload/gen_events.py`: same fields, key order, formats and
//! distributions (Zipf item popularity, weighted action mix, ~`step_ms` per
//! event with bounded lateness). Same config and seed give identical bytes;
//! the PRNG differs from Python's, so the values are not those of the script.

use std::io::{self, Write};

/// Action mix of the Python generator: (name, weight out of 100).
const ACTION_MIX: [(&str, u32); 10] = [
    ("impression", 55),
    ("click", 14),
    ("view", 8),
    ("play", 6),
    ("like", 5),
    ("share", 2),
    ("comment", 2),
    ("add_cart", 4),
    ("order", 2),
    ("payment", 2),
];
/// Item categories, indexed by [`item_category`].
pub const CATEGORIES: [&str; 12] =
    ["sports", "music", "news", "tech", "food", "travel", "games", "fashion", "finance", "comedy", "education", "pets"];
const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const LOCATIONS: [&str; 6] = ["Beijing", "Shanghai", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan"];
/// Scenarios; item `i` belongs to `SCENARIOS[i % 2]`.
pub const SCENARIOS: [&str; 2] = ["vlog_main_feed", "news_main_feed"];
const VARIANTS: [&str; 2] = ["control", "treatment"];
/// Default start of event time: 2026-01-04T10:00:00Z.
pub const START_MS: i64 = 1_767_520_800_000;

/// Generator knobs; defaults equal gen_events.py's.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    /// Number of events to generate.
    pub events: u64,
    /// Tenants `tenant_000..`; a user belongs to tenant `user % tenants`.
    pub tenants: u32,
    /// Distinct users, chosen uniformly.
    pub users: u64,
    /// Distinct items, chosen by Zipf popularity.
    pub items: u64,
    /// Zipf exponent: item rank r has weight 1 / (r+1)^zipf.
    pub zipf: f64,
    /// Event time advances uniformly 0..=2*step_ms per event.
    pub step_ms: u64,
    /// Fraction of events sent late.
    pub late_frac: f64,
    /// A late event is up to this many ms behind the clock.
    pub max_delay_ms: u64,
    /// PRNG seed; also part of every event_id.
    pub seed: u64,
    /// Event time of the first event (before its step).
    pub start_ms: i64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 100_000,
            tenants: 4,
            users: 50_000,
            items: 20_000,
            zipf: 1.1,
            step_ms: 20,
            late_frac: 0.05,
            max_delay_ms: 120_000,
            seed: 7,
            start_ms: START_MS,
        }
    }
}

/// Category of item index `item`, as gen_events.py computes it (exactly).
pub fn item_category(item: u64) -> &'static str {
    // (item * 2654435761) % 12 without overflow: 2654435761 % 12 == 1.
    CATEGORIES[(item % 12) as usize]
}

/// xoshiro256** seeded through SplitMix64: tiny, fast, well distributed.
#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias < n / 2^64).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Streaming event generator; also an iterator of JSON lines (no newline).
#[derive(Clone, Debug)]
pub struct EventGen {
    cfg: GenConfig,
    rng: Rng,
    /// Cumulative Zipf weights, for a binary search per event.
    cum: Vec<f64>,
    /// Action index per percent of the mix: one lookup instead of a search.
    action_table: [u8; 100],
    clock: i64,
    n: u64,
}

impl EventGen {
    /// A generator positioned before the first event of `cfg`.
    pub fn new(cfg: &GenConfig) -> Self {
        let mut cum = Vec::with_capacity(cfg.items as usize);
        let mut acc = 0.0;
        for r in 0..cfg.items.max(1) {
            acc += 1.0 / ((r + 1) as f64).powf(cfg.zipf);
            cum.push(acc);
        }
        let mut action_table = [0u8; 100];
        let mut pos = 0;
        for (i, (_, w)) in ACTION_MIX.iter().enumerate() {
            for slot in &mut action_table[pos..pos + *w as usize] {
                *slot = i as u8;
            }
            pos += *w as usize;
        }
        debug_assert_eq!(pos, 100, "action weights must sum to 100");
        EventGen { cfg: cfg.clone(), rng: Rng::new(cfg.seed), cum, action_table, clock: cfg.start_ms, n: 0 }
    }

    /// Appends the next event as one compact JSON object (no newline) to
    /// `buf`; `false` once `cfg.events` events were produced.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.n >= self.cfg.events {
            return false;
        }
        let cfg = &self.cfg;
        let rng = &mut self.rng;
        let n = self.n;
        self.n += 1;

        // Draw order follows the Python script: step, lateness, item, action, user.
        self.clock += rng.below(2 * cfg.step_ms + 1) as i64;
        let delay = if rng.unit() < cfg.late_frac { rng.below(cfg.max_delay_ms + 1) as i64 } else { 0 };
        // Clamped so a start near the epoch still yields valid (>= 0) times.
        let ts = (self.clock - delay).max(0);
        let total = *self.cum.last().expect("at least one item");
        let target = rng.unit() * total;
        let item = (self.cum.partition_point(|&c| c < target) as u64).min(cfg.items.max(1) - 1);
        let action = ACTION_MIX[self.action_table[rng.below(100) as usize] as usize].0;
        let user = rng.below(cfg.users.max(1));
        let tenant = user % u64::from(cfg.tenants.max(1));

        buf.extend_from_slice(b"{\"event_id\":\"e");
        push_u64(buf, cfg.seed);
        buf.push(b'-');
        push_u64(buf, n);
        buf.extend_from_slice(b"\",\"tenant_id\":\"tenant_");
        push_padded(buf, tenant, 3);
        buf.extend_from_slice(b"\",\"scenario_id\":\"");
        buf.extend_from_slice(SCENARIOS[(item % 2) as usize].as_bytes());
        buf.extend_from_slice(b"\",\"user_id\":\"user_");
        push_padded(buf, user, 7);
        buf.extend_from_slice(b"\",\"item_id\":\"item_");
        push_padded(buf, item, 6);
        buf.extend_from_slice(b"\",\"action_type\":\"");
        buf.extend_from_slice(action.as_bytes());
        buf.extend_from_slice(b"\",\"timestamp\":");
        push_u64(buf, ts as u64);
        buf.extend_from_slice(b",\"request_id\":\"req_");
        push_u64(buf, n / 10);
        buf.extend_from_slice(b"\",\"experiment_id\":\"exp_001\",\"variant\":\"");
        buf.extend_from_slice(VARIANTS[(user % 2) as usize].as_bytes());
        buf.extend_from_slice(b"\",\"context\":{\"device_type\":\"");
        buf.extend_from_slice(DEVICES[(user % 3) as usize].as_bytes());
        buf.extend_from_slice(b"\",\"location\":\"");
        buf.extend_from_slice(LOCATIONS[(user % 6) as usize].as_bytes());
        buf.extend_from_slice(b"\"}");
        match action {
            "view" | "play" => {
                let dur = 5 + rng.below(296); // 5..=300 s
                buf.extend_from_slice(b",\"extra\":{\"watch_duration\":");
                push_u64(buf, dur);
                buf.extend_from_slice(b",\"completion_rate\":");
                // min(1, dur/180) rounded to 3 decimals, in thousandths.
                push_decimal(buf, ((dur * 1000 + 90) / 180).min(1000), 3);
                buf.push(b'}');
            }
            "order" | "payment" => {
                // Uniform 1.00..=500.00, printed like Python's round(x, 2).
                let cents = 100 + rng.below(49_901);
                buf.extend_from_slice(b",\"extra\":{\"amount\":");
                push_decimal(buf, cents, 2);
                buf.push(b'}');
            }
            _ => {}
        }
        buf.push(b'}');
        true
    }
}

impl Iterator for EventGen {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(320);
        self.next_into(&mut buf).then_some(buf)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.cfg.events - self.n).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// The events of `cfg`, one JSON object (without newline) per item.
pub fn events(cfg: &GenConfig) -> EventGen {
    EventGen::new(cfg)
}

/// Flush threshold of the write buffer: few, large writes on unbuffered sinks.
const CHUNK: usize = 256 * 1024;

/// Writes `cfg.events` events as JSON lines; returns the number of lines.
pub fn write_events(cfg: &GenConfig, out: &mut impl Write) -> io::Result<u64> {
    let mut gen = EventGen::new(cfg);
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    let mut lines = 0;
    while gen.next_into(&mut buf) {
        buf.push(b'\n');
        lines += 1;
        if buf.len() >= CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(lines)
}

/// Writes the item catalog (every item of every tenant) as JSON lines, like
/// `gen_events.py catalog`; returns the number of lines.
pub fn write_catalog(cfg: &GenConfig, out: &mut impl Write) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    let mut lines = 0;
    for t in 0..u64::from(cfg.tenants) {
        for i in 0..cfg.items {
            buf.extend_from_slice(b"{\"tenant_id\":\"tenant_");
            push_padded(&mut buf, t, 3);
            buf.extend_from_slice(b"\",\"scenario_id\":\"");
            buf.extend_from_slice(SCENARIOS[(i % 2) as usize].as_bytes());
            buf.extend_from_slice(b"\",\"item_id\":\"item_");
            push_padded(&mut buf, i, 6);
            buf.extend_from_slice(b"\",\"category\":\"");
            buf.extend_from_slice(item_category(i).as_bytes());
            buf.extend_from_slice(b"\",\"tags\":[\"");
            buf.extend_from_slice(item_category(i).as_bytes());
            buf.extend_from_slice(b"\",\"");
            buf.extend_from_slice(item_category(i + 7).as_bytes());
            buf.extend_from_slice(b"\"],\"publish_time\":");
            push_i64(&mut buf, cfg.start_ms - (i % 240) as i64 * 3_600_000);
            buf.extend_from_slice(b",\"status\":\"active\"}\n");
            lines += 1;
            if buf.len() >= CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(lines)
}

/// Decimal digits of `v` (no formatting machinery: this is the hot path).
fn push_u64(buf: &mut Vec<u8>, v: u64) {
    push_padded(buf, v, 1);
}

fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// `v` zero-padded to at least `width` digits, like Python's `{v:0width}`.
fn push_padded(buf: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    while v > 0 {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let start = i.min(tmp.len() - width.clamp(1, 20));
    buf.extend_from_slice(&tmp[start..]);
}

/// `units / 10^places` as Python's float repr prints a value rounded to
/// `places` decimals: trailing zeros dropped, but at least one (`1.0`).
fn push_decimal(buf: &mut Vec<u8>, units: u64, places: u32) {
    let scale = 10u64.pow(places);
    push_u64(buf, units / scale);
    buf.push(b'.');
    let mut frac = units % scale;
    let mut digits = places as usize;
    while digits > 1 && frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    push_padded(buf, frac, digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use recflow_schemas::Validator;
    use serde_json::Value;

    fn small(seed: u64) -> GenConfig {
        GenConfig { events: 5_000, seed, ..GenConfig::default() }
    }

    fn generate(cfg: &GenConfig) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_events(cfg, &mut out).unwrap();
        assert_eq!(n, cfg.events);
        out
    }

    #[test]
    fn defaults_match_the_python_script() {
        let c = GenConfig::default();
        assert_eq!(
            (c.events, c.tenants, c.users, c.items, c.step_ms, c.max_delay_ms, c.seed),
            (100_000, 4, 50_000, 20_000, 20, 120_000, 7)
        );
        assert_eq!((c.zipf, c.late_frac, c.start_ms), (1.1, 0.05, 1_767_520_800_000));
        assert_eq!(ACTION_MIX.iter().map(|(_, w)| w).sum::<u32>(), 100);
    }

    #[test]
    fn deterministic_by_seed() {
        let a = generate(&small(3));
        assert_eq!(a, generate(&small(3)));
        assert_ne!(a, generate(&small(4)));
        // The iterator form yields the same lines.
        let lines: Vec<Vec<u8>> = events(&small(3)).collect();
        assert_eq!(lines.len(), 5_000);
        let joined: Vec<u8> = lines.iter().flat_map(|l| l.iter().chain(b"\n")).copied().collect();
        assert_eq!(joined, a);
    }

    #[test]
    fn shape_matches_the_python_script() {
        let cfg = small(3);
        let out = generate(&cfg);
        let text = std::str::from_utf8(&out).unwrap();
        let first = text.lines().next().unwrap();
        let keys = [
            "event_id",
            "tenant_id",
            "scenario_id",
            "user_id",
            "item_id",
            "action_type",
            "timestamp",
            "request_id",
            "experiment_id",
            "variant",
            "context",
        ];
        // Key order is part of the format (compact, insertion-ordered like json.dumps).
        let mut at = 0;
        for k in keys {
            let pos = first[at..].find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {first}"));
            at += pos;
        }
        assert!(first.starts_with("{\"event_id\":\"e3-0\",\"tenant_id\":\"tenant_00"));
        assert!(!first.contains(' ') && !first.contains(", "));
        for (n, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event_id"], format!("e3-{n}"));
            assert_eq!(v["request_id"], format!("req_{}", n / 10));
            let user = v["user_id"].as_str().unwrap();
            assert!(user.len() == 12 && user.starts_with("user_"), "{user}");
            let item = v["item_id"].as_str().unwrap();
            assert!(item.len() == 11 && item.starts_with("item_"), "{item}");
            let idx: u64 = item[5..].parse().unwrap();
            assert_eq!(v["scenario_id"], SCENARIOS[(idx % 2) as usize]);
            let u: u64 = user[5..].parse().unwrap();
            assert_eq!(v["tenant_id"], format!("tenant_{:03}", u % 4));
            assert_eq!(v["variant"], VARIANTS[(u % 2) as usize]);
            assert_eq!(v["context"]["device_type"], DEVICES[(u % 3) as usize]);
            match v["action_type"].as_str().unwrap() {
                "view" | "play" => {
                    let d = v["extra"]["watch_duration"].as_u64().unwrap();
                    assert!((5..=300).contains(&d));
                    let c = v["extra"]["completion_rate"].as_f64().unwrap();
                    let want = ((d as f64 / 180.0).min(1.0) * 1000.0).round() / 1000.0;
                    assert!((c - want).abs() < 1e-9, "{d} -> {c}");
                }
                "order" | "payment" => {
                    let a = v["extra"]["amount"].as_f64().unwrap();
                    assert!((1.0..=500.0).contains(&a));
                    assert_eq!(a, (a * 100.0).round() / 100.0);
                }
                _ => assert!(v.get("extra").is_none(), "{line}"),
            }
        }
    }

    #[test]
    fn number_formats() {
        let fmt = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = Vec::new();
            f(&mut b);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(fmt(&|b| push_padded(b, 42, 6)), "000042");
        assert_eq!(fmt(&|b| push_padded(b, 1_234_567, 3)), "1234567");
        assert_eq!(fmt(&|b| push_u64(b, 0)), "0");
        assert_eq!(fmt(&|b| push_u64(b, u64::MAX)), u64::MAX.to_string());
        assert_eq!(fmt(&|b| push_i64(b, -3_600_000)), "-3600000");
        // Python: repr(round(x, 3)) / repr(round(x, 2)).
        assert_eq!(fmt(&|b| push_decimal(b, 1000, 3)), "1.0");
        assert_eq!(fmt(&|b| push_decimal(b, 683, 3)), "0.683");
        assert_eq!(fmt(&|b| push_decimal(b, 50, 3)), "0.05");
        assert_eq!(fmt(&|b| push_decimal(b, 28, 3)), "0.028");
        assert_eq!(fmt(&|b| push_decimal(b, 50_000, 2)), "500.0");
        assert_eq!(fmt(&|b| push_decimal(b, 710, 2)), "7.1");
        assert_eq!(fmt(&|b| push_decimal(b, 12_345, 2)), "123.45");
        assert_eq!(fmt(&|b| push_decimal(b, 105, 2)), "1.05");
    }

    #[test]
    fn every_line_is_valid() {
        let cfg = GenConfig { events: 20_000, tenants: 3, ..GenConfig::default() };
        let v = Validator::default();
        let now = cfg.start_ms + 86_400_000;
        for (n, line) in events(&cfg).enumerate() {
            let tenant = {
                let s = std::str::from_utf8(&line).unwrap();
                let at = s.find("tenant_id\":\"").unwrap() + 12;
                s[at..at + 10].to_string()
            };
            if let Err(r) = v.validate(&line, Some(&tenant), now) {
                panic!("line {n} rejected: {r}: {}", String::from_utf8_lossy(&line));
            }
        }
    }

    #[test]
    fn action_mix_is_as_weighted() {
        let cfg = GenConfig::default(); // 100k events
        let mut counts = [0u64; ACTION_MIX.len()];
        for line in events(&cfg) {
            let s = std::str::from_utf8(&line).unwrap();
            let at = s.find("action_type\":\"").unwrap() + 14;
            let name = &s[at..at + s[at..].find('"').unwrap()];
            counts[ACTION_MIX.iter().position(|(a, _)| *a == name).unwrap()] += 1;
        }
        for ((name, w), got) in ACTION_MIX.iter().zip(counts) {
            let want = cfg.events as f64 * f64::from(*w) / 100.0;
            // 5 standard deviations of a binomial count, at least 1% of n.
            let sd = (want * (1.0 - f64::from(*w) / 100.0)).sqrt();
            assert!((got as f64 - want).abs() < (5.0 * sd).max(0.01 * want), "{name}: {got} vs {want:.0}");
        }
    }

    #[test]
    fn items_are_zipf_and_users_uniform() {
        let cfg = GenConfig::default();
        let mut items = vec![0u64; cfg.items as usize];
        let mut tenants = [0u64; 4];
        for line in events(&cfg) {
            let v: Value = serde_json::from_slice(&line).unwrap();
            items[v["item_id"].as_str().unwrap()[5..].parse::<usize>().unwrap()] += 1;
            tenants[v["tenant_id"].as_str().unwrap()[7..].parse::<usize>().unwrap()] += 1;
        }
        // Rank 0 vs rank 1 should be ~2^1.1 = 2.14; the head dominates the tail.
        let ratio = items[0] as f64 / items[1] as f64;
        assert!((1.8..2.5).contains(&ratio), "rank0/rank1 = {ratio}");
        let head: u64 = items[..100].iter().sum();
        let tail: u64 = items[10_000..].iter().sum();
        assert!(head > 3 * tail, "head {head}, tail {tail}");
        for t in tenants {
            assert!((23_500..26_500).contains(&t), "tenant share {t}");
        }
    }

    #[test]
    fn disorder_is_bounded() {
        let cfg = GenConfig { events: 50_000, max_delay_ms: 30_000, ..GenConfig::default() };
        let (mut max_ts, mut late, mut deepest) = (0i64, 0, 0);
        let (mut first, mut last) = (0, 0);
        for (n, line) in events(&cfg).enumerate() {
            let v: Value = serde_json::from_slice(&line).unwrap();
            let ts = v["timestamp"].as_i64().unwrap();
            if n == 0 {
                first = ts;
            }
            last = ts;
            if ts < max_ts {
                late += 1;
                deepest = deepest.max(max_ts - ts);
            }
            assert!(ts >= max_ts - cfg.max_delay_ms as i64, "event {n} is {} ms late", max_ts - ts);
            max_ts = max_ts.max(ts);
        }
        // Disorder exists, and reaches well into the allowed range.
        assert!(late > 1_000, "only {late} late events");
        assert!(deepest > 25_000, "deepest lateness {deepest}");
        // ~step_ms per event on average: 50k events span ~1000 s.
        let span = (last - first) as f64 / cfg.events as f64;
        assert!((18.0..22.0).contains(&span), "mean step {span} ms");
        let zero = GenConfig { late_frac: 0.0, ..cfg };
        let mut prev = i64::MIN;
        for line in events(&zero) {
            let v: Value = serde_json::from_slice(&line).unwrap();
            let ts = v["timestamp"].as_i64().unwrap();
            assert!(ts >= prev, "late_frac 0 must be in order");
            prev = ts;
        }
    }

    #[test]
    fn catalog_matches_the_python_script() {
        let cfg = GenConfig { tenants: 2, items: 300, ..GenConfig::default() };
        let mut out = Vec::new();
        assert_eq!(write_catalog(&cfg, &mut out).unwrap(), 600);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Byte-exact with `gen_events.py catalog` (no randomness there).
        assert_eq!(
            lines[0],
            r#"{"tenant_id":"tenant_000","scenario_id":"vlog_main_feed","item_id":"item_000000","category":"sports","tags":["sports","fashion"],"publish_time":1767520800000,"status":"active"}"#
        );
        assert_eq!(
            lines[599],
            r#"{"tenant_id":"tenant_001","scenario_id":"news_main_feed","item_id":"item_000299","category":"pets","tags":["pets","games"],"publish_time":1767308400000,"status":"active"}"#
        );
        for l in lines {
            let item: recflow_schemas::Item = serde_json::from_str(l).unwrap();
            assert_eq!(item.category.as_deref(), Some(item_category(item.item_id[5..].parse().unwrap())));
        }
    }

    /// `cargo test -p recflow-sources --release -- --ignored throughput --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn throughput() {
        let cfg = GenConfig { events: 2_000_000, ..GenConfig::default() };
        let mut sink = io::sink();
        let t = std::time::Instant::now();
        write_events(&cfg, &mut sink).unwrap();
        let rate = cfg.events as f64 / t.elapsed().as_secs_f64();
        eprintln!("{rate:.0} events/s");
        assert!(rate > 1e6, "{rate:.0} events/s");
    }
}
