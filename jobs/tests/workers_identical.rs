//! The shared workload (gen_events.py, 200k events, seed 7) gives
//! byte-identical final state with 1 and 2 workers, and that state matches
//! the reference.
//!
//! The script is `shared/workload/gen_events.py` next to the workspace;
//! `RECFLOW_GEN_EVENTS` overrides its path.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::Value;

use recflow_sources::Catalog;

use common::{assert_dump_matches, parse_catalog, reference, run_pipeline, valid_lines, RefConfig};

const TENANTS: [&str; 4] = ["tenant_000", "tenant_001", "tenant_002", "tenant_003"];
const SCENARIOS: [&str; 2] = ["vlog_main_feed", "news_main_feed"];

struct Workload {
    events: Vec<u8>,
    catalog_text: Vec<u8>,
}

fn script() -> PathBuf {
    match std::env::var_os("RECFLOW_GEN_EVENTS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/workload/gen_events.py"),
    }
}

fn gen(script: &PathBuf, args: &[&str]) -> Vec<u8> {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "python3 {} {args:?} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn workload() -> &'static Workload {
    static W: OnceLock<Workload> = OnceLock::new();
    W.get_or_init(|| {
        let script = script();
        assert!(
            script.is_file(),
            "workload generator not found at {} (set RECFLOW_GEN_EVENTS to gen_events.py)",
            script.display()
        );
        let t = Instant::now();
        let w = Workload {
            events: gen(&script, &["events", "--events", "200000", "--seed", "7"]),
            catalog_text: gen(&script, &["catalog", "--seed", "7"]),
        };
        eprintln!("gen_events.py: {:?}", t.elapsed());
        w
    })
}

fn ref_config() -> RefConfig {
    RefConfig { catalog: parse_catalog(&workload().catalog_text), ..RefConfig::default() }
}

fn catalog() -> Arc<Catalog> {
    Arc::new(ref_config().pipeline_catalog())
}

#[test]
fn one_and_two_workers_give_byte_identical_state() {
    let w = workload();
    let cfg = ref_config().pipeline_config();
    let catalog = catalog();
    let block = cfg.pipeline.read_block_bytes;
    let t = Instant::now();
    let one = run_pipeline(&cfg, w.events.clone(), catalog.clone(), 1, block, false);
    eprintln!("1 worker: {:?}", t.elapsed());
    let t = Instant::now();
    let two = run_pipeline(&cfg, w.events.clone(), catalog, 2, block, false);
    eprintln!("2 workers: {:?}", t.elapsed());

    let d = &one.dump;
    for t in TENANTS {
        for s in SCENARIOS {
            let hot = &d[format!("hot:items:{t}:{s}")];
            assert!(hot.as_array().is_some_and(|a| !a.is_empty()), "no hot items for {t}/{s}");
            assert!(d.get(format!("metrics:realtime:{t}:{s}")).is_some(), "no metrics for {t}/{s}");
        }
    }
    let profiles = d["mongo.user_profiles"].as_array().map_or(0, Vec::len);
    assert!(profiles > 1000, "only {profiles} profiles");
    assert_eq!(one.counters.events.load(Relaxed), 200_000);
    assert_eq!(one.counters.late.load(Relaxed), two.counters.late.load(Relaxed));

    let a = serde_json::to_vec(&one.dump).unwrap();
    let b = serde_json::to_vec(&two.dump).unwrap();
    if a != b {
        let (x, y) = (one.dump.as_object().unwrap(), two.dump.as_object().unwrap());
        let diff: Vec<String> = x
            .keys()
            .chain(y.keys())
            .filter(|k| serde_json::to_vec(&x.get(*k)).unwrap() != serde_json::to_vec(&y.get(*k)).unwrap())
            .take(5)
            .map(|k| format!("{k}:\n  1 worker:  {}\n  2 workers: {}", short(x.get(k)), short(y.get(k))))
            .collect();
        panic!("dumps differ between 1 and 2 workers ({} vs {} bytes):\n{}", a.len(), b.len(), diff.join("\n"));
    }
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or("<absent>".to_string(), Value::to_string);
    if s.len() > 600 {
        format!("{}…", &s[..600])
    } else {
        s
    }
}

#[test]
fn python_workload_matches_reference() {
    let w = workload();
    let t = Instant::now();
    let rcfg = ref_config();
    let lines = valid_lines(&w.events);
    let expected = reference(&lines, &rcfg);
    eprintln!("reference: {:?}", t.elapsed());
    let cfg = rcfg.pipeline_config();
    let run = run_pipeline(&cfg, w.events.clone(), catalog(), 2, 64 * 1024, false);
    assert_eq!(run.counters.late.load(Relaxed), expected.late_lines.len() as u64);
    assert_dump_matches(&run.dump, &expected, &rcfg, "gen_events.py workload");
}
