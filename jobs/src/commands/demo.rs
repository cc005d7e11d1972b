//! `recflow demo`: generator -> pipeline -> embedded store -> HTTP server,
//! in one process. An hour of history is generated first (so windows have
//! closed and hot lists and profiles exist at once), then events keep
//! flowing at `--rate` with timestamps at the wall clock.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use clap::Args;

use recflow_schemas::{Event, Item, Validator};
use recflow_server::auth::hash_key;
use recflow_server::ApiKeyConfig;
use recflow_sinks::EmbeddedStore;
use recflow_sources::generator::{write_catalog, EventGen, GenConfig};

use crate::commands::serve::{catalog_of, run_server, EmbeddedPipeline};
use crate::config::Config;

/// The demo's tenant and API key (printed; only for the demo's loopback server).
pub const DEMO_TENANT: &str = "tenant_000";
/// See [`DEMO_TENANT`].
pub const DEMO_KEY: &str = "demo-key-tenant_000";

/// Arguments of `recflow demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Config file (TOML); the embedded store is used whatever `outputs.store` says.
    #[arg(long, default_value = "configs/embedded.toml")]
    pub config: PathBuf,
    /// Live events per second after the history.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of history generated at start.
    #[arg(long, default_value_t = 3600)]
    pub history_secs: u64,
    /// Events in that history.
    #[arg(long, default_value_t = 60_000)]
    pub history_events: u64,
    /// Listen address (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The demo workload: two tenants, few users (so each has a profile), a small catalog.
fn gen_config(seed: u64, start_ms: i64, step_ms: u64, events: u64) -> GenConfig {
    GenConfig { events, tenants: 2, users: 400, items: 2000, seed, start_ms, step_ms, ..GenConfig::default() }
}

/// Validates generator lines and sends them; false once the pipeline is gone.
fn feed(gen: &mut EventGen, validator: &Validator, tx: &SyncSender<Event>, until_ms: i64) -> bool {
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        if !gen.next_into(&mut buf) {
            return true;
        }
        let now = recflow_schemas::validate::now_ms();
        let Ok(ev) = validator.validate(&buf, None, now) else { continue };
        let ts = ev.ts;
        if tx.send(ev).is_err() {
            return false;
        }
        if ts >= until_ms {
            return true;
        }
    }
}

/// Streams events whose timestamps follow the wall clock, about `rate` per second.
fn live(seed: u64, rate: f64, validator: Validator, tx: SyncSender<Event>) {
    let step_ms = (1000.0 / rate.max(0.001)).round().max(1.0) as u64;
    let mut gen = EventGen::new(&gen_config(seed + 1, recflow_schemas::validate::now_ms(), step_ms, u64::MAX));
    loop {
        // Emit everything stamped up to now, then wait a tick: timestamps stay at the clock.
        if !feed(&mut gen, &validator, &tx, recflow_schemas::validate::now_ms()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A user of the demo tenant with a profile in `scenario`, once the pipeline made one.
fn demo_user(store: &EmbeddedStore, scenario: &str) -> Option<String> {
    let prefix = format!("user:profile:{DEMO_TENANT}:");
    store.keys(&prefix).into_iter().find_map(|k| {
        let rest = k.strip_prefix(&prefix)?;
        let (user, sc) = rest.split_once(':')?;
        (sc == scenario).then(|| user.to_string())
    })
}

/// Ready-to-paste commands against the demo server.
pub fn curl_commands(base: &str, user: &str) -> String {
    let h = format!("-H 'X-Tenant-Id: {DEMO_TENANT}' -H 'Authorization: Bearer {DEMO_KEY}'");
    let event = format!(
        r#"'{{"tenant_id":"{DEMO_TENANT}","scenario_id":"vlog_main_feed","user_id":"{user}","item_id":"item_000001","action_type":"like","timestamp":'"$(date +%s000)"'}}'"#
    );
    [
        format!("curl -s -X POST {base}/api/v1/recommend {h} -H 'X-User-Id: {user}' -H 'Content-Type: application/json' -d '{{\"scenario_id\":\"vlog_main_feed\",\"count\":5}}'"),
        format!("curl -s '{base}/api/v1/hot-items?scenario_id=vlog_main_feed&limit=5' {h}"),
        format!("curl -s '{base}/api/v1/users/{user}/profile?scenario_id=vlog_main_feed' {h}"),
        format!("curl -s '{base}/api/v1/metrics/realtime?scenario_id=vlog_main_feed' {h}"),
        format!("curl -s '{base}/api/v1/scenarios/vlog_main_feed' {h}"),
        format!("curl -s -X POST {base}/api/v1/events {h} -H 'Content-Type: application/json' -d {event}"),
        format!("curl -s {base}/metrics | grep -E '^recflow_(http_requests|degraded|recall_hits|events)_total'"),
    ]
    .join("\n")
}

/// `recflow demo` entry point.
pub fn main(args: DemoArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(l) = &args.listen {
        cfg.server.listen = l.clone();
    }
    cfg.server.api_keys.push(ApiKeyConfig { tenant: DEMO_TENANT.into(), key_sha256: hash_key(DEMO_KEY) });
    cfg.pipeline.progress_interval_secs = 0;
    let now = recflow_schemas::validate::now_ms();
    let history_ms = args.history_secs.max(1) as i64 * 1000;
    let gen = gen_config(args.seed, now - history_ms, 1, 0);
    let mut catalog_bytes = Vec::new();
    write_catalog(&GenConfig { start_ms: now, ..gen.clone() }, &mut catalog_bytes)?;
    let items: Vec<Item> = catalog_bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()?;
    let pipeline = EmbeddedPipeline::start(&cfg, cfg.pipeline.workers.max(1), catalog_of(&items))?;
    let validator = Validator::new(cfg.validation());

    let started = Instant::now();
    let step_ms = (history_ms as u64 / args.history_events.max(1)).max(1);
    let mut history = EventGen::new(&gen_config(args.seed, now - history_ms, step_ms, args.history_events));
    feed(&mut history, &validator, &pipeline.tx, i64::MAX);
    let (tx, rate, seed, v) = (pipeline.tx.clone(), args.rate, args.seed, validator.clone());
    std::thread::Builder::new().name("demo-generator".into()).spawn(move || live(seed, rate, v, tx))?;
    let mut user = None;
    while user.is_none() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        user = demo_user(&pipeline.store, "vlog_main_feed");
    }
    let user = user.unwrap_or_else(|| "user_0000000".into());
    eprintln!(
        "recflow demo: {} history events in {:.1} s; live events at ~{rate}/s",
        args.history_events,
        started.elapsed().as_secs_f64()
    );
    let app = pipeline.app(&cfg, items)?;
    let listen = cfg.server.listen.clone();
    let result = run_server(app, &listen, |addr| {
        println!("recflow demo serving http://{addr}  (tenant {DEMO_TENANT}, API key {DEMO_KEY}; Ctrl-C stops)\n");
        println!("{}\n", curl_commands(&format!("http://{addr}"), &user));
    });
    drop(pipeline.tx);
    result
}
