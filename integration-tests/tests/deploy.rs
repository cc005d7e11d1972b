//! deploy/ is checked against the code it deploys: every YAML parses, every
//! `recflow` command line in the compose file, the Kubernetes manifests and
//! the Dockerfile uses real subcommands, flags and RECFLOW_* variables, the
//! shipped configs load with recflow's own `Config`, and every metric name
//! the dashboards and alert rules use is exported by a live worker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use recflow::commands::run::{run, RunArgs};
use recflow::config::Config;
use recflow_integration_tests::cli::{free_port, http_get, recflow_bin};
use recflow_integration_tests::{service, unique};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML file under deploy/.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

/// All documents of a (multi-document) YAML file.
fn parse_yaml(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Yaml as serde::Deserialize>::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|d| !d.is_null())
        .collect()
}

/// Every value of `key` anywhere in a YAML tree.
fn find_all<'a>(v: &'a Yaml, key: &str, out: &mut Vec<&'a Yaml>) {
    match v {
        Yaml::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some(key) {
                    out.push(v);
                }
                find_all(v, key, out);
            }
        }
        Yaml::Sequence(s) => s.iter().for_each(|v| find_all(v, key, out)),
        Yaml::Tagged(t) => find_all(&t.value, key, out),
        _ => {}
    }
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_else(|| v.as_str().map(|s| vec![s.to_string()]).unwrap_or_default())
}

/// `recflow <cmd> --help`, or None when the subcommand does not exist (yet).
fn help(cmd: &str) -> Option<String> {
    let out = Command::new(recflow_bin()).args([cmd, "--help"]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks one `recflow` argument list (entrypoint `recflow`, so `args[0]` is the subcommand) and its env names.
fn check_command(origin: &str, args: &[String], env: &[String]) -> Result<(), String> {
    let sub = args.first().ok_or(format!("{origin}: empty command"))?;
    let Some(text) = help(sub) else {
        return Err(format!("{origin}: `recflow {sub}` is not a subcommand"));
    };
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap_or(a);
        let known = text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '<').any(|w| w == flag);
        if !known {
            return Err(format!("{origin}: `recflow {sub}` has no flag {flag}"));
        }
    }
    for var in env.iter().filter(|v| v.starts_with("RECFLOW_")) {
        if !text.contains(&format!("[env: {var}=")) {
            return Err(format!("{origin}: `recflow {sub}` reads no environment variable {var}"));
        }
    }
    Ok(())
}

/// Env variable names of a compose `environment` (map or list) or a k8s `env` list.
fn env_names(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::Mapping(m) => m.keys().filter_map(|k| k.as_str().map(String::from)).collect(),
        Yaml::Sequence(s) => s
            .iter()
            .filter_map(|e| match e {
                Yaml::Mapping(m) => m.get("name").and_then(|n| n.as_str()).map(String::from),
                Yaml::String(s) => s.split('=').next().map(String::from),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_yaml_parses_and_every_command_is_real() {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    assert!(files.len() >= 8, "deploy/ YAML files: {files:?}");
    let mut commands = 0;
    for f in &files {
        let docs = parse_yaml(f);
        assert!(!docs.is_empty(), "{} is empty", f.display());
        let name = f.strip_prefix(deploy()).unwrap().display().to_string();
        for doc in &docs {
            if name == "docker-compose.yml" {
                // A recflow service's command (the image's entrypoint is `recflow`).
                let services = doc["services"].as_mapping().expect("compose services");
                for (svc, def) in services {
                    let image = def["image"].as_str().unwrap_or_default();
                    if !image.starts_with("recflow") && !def.as_mapping().unwrap().contains_key("<<") {
                        continue;
                    }
                    let svc = svc.as_str().unwrap();
                    let args = strings(&def["command"]);
                    let env = env_names(&def["environment"]);
                    check_command(&format!("compose {svc}"), &args, &env).unwrap();
                    commands += 1;
                }
            } else if name.starts_with("k8s/") {
                let mut containers = Vec::new();
                find_all(doc, "containers", &mut containers);
                for c in containers.iter().flat_map(|c| c.as_sequence().unwrap().iter()) {
                    assert!(c["image"].as_str().unwrap().starts_with("recflow"), "{name}: foreign image");
                    let args = strings(&c["args"]);
                    check_command(&format!("{name} {}", c["name"].as_str().unwrap()), &args, &env_names(&c["env"]))
                        .unwrap();
                    for probe in ["livenessProbe", "readinessProbe"] {
                        if let Some(p) = c.get(probe) {
                            let path = p["httpGet"]["path"].as_str().unwrap();
                            assert!(path == "/health/live" || path == "/health/ready", "{name}: probe {path}");
                        }
                    }
                    commands += 1;
                }
            }
        }
    }
    // The Dockerfile's default command.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("Dockerfile CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    check_command("Dockerfile CMD", &args, &[]).unwrap();
    assert!(commands >= 6, "found only {commands} recflow commands");
}

#[test]
fn deploy_configs_load_with_recflow_config() {
    let file = deploy().join("config/config.toml");
    let cfg = Config::load(&file).unwrap();
    assert_eq!(cfg.telemetry.metrics_addr, "0.0.0.0:9464", "probes and scrapes reach the container");
    let docs = parse_yaml(&deploy().join("k8s/configmap.yaml"));
    let text = docs[0]["data"]["config.toml"].as_str().expect("configmap config.toml");
    let tmp = std::env::temp_dir().join(format!("{}.toml", unique("configmap")));
    std::fs::write(&tmp, text).unwrap();
    Config::load(&tmp).unwrap();
    // The two copies must not drift: same lines, comments aside.
    let lines = |t: &str| -> Vec<String> {
        t.lines().map(|l| l.split('#').next().unwrap().trim().to_string()).filter(|l| !l.is_empty()).collect()
    };
    assert_eq!(lines(text), lines(&std::fs::read_to_string(&file).unwrap()), "configmap vs deploy/config/config.toml");
}

/// `recflow_*`/`process_*` names in PromQL text.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("recflow_") || w.starts_with("process_"))
        .map(String::from)
        .collect()
}

fn dashboard_exprs(path: &Path) -> Vec<String> {
    let d: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(d["uid"].is_string() && d["panels"].as_array().is_some_and(|p| !p.is_empty()), "{}", path.display());
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect()
}

static LOCK: Mutex<()> = Mutex::new(());

/// A short Kafka run (embedded store, so only the broker is needed); returns its /metrics.
fn live_scrape() -> String {
    let prefix = unique("dp").replace('_', "").chars().take(14).collect::<String>();
    let tenant = format!("{prefix}_t");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut events = String::new();
    for i in 0..200 {
        events.push_str(&format!(
            "{{\"tenant_id\":\"{tenant}\",\"scenario_id\":\"s\",\"user_id\":\"u{}\",\"item_id\":\"i{}\",\"action_type\":\"click\",\"timestamp\":{}}}\n",
            i % 7,
            i % 11,
            now - 3_600_000 + i * 1000
        ));
    }
    events.push_str("{not json}\n");
    let brokers = service("KAFKA_BROKERS");
    recflow_sources::kafka_admin::produce_jsonl(&brokers, std::io::Cursor::new(events), 1).unwrap();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nprogress_interval_secs = 0\n[embedded]\ndlq_path = \"\"\nraw_log_path = \"\"\n\
             [kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{prefix}\"\ntopic_pattern = \"^user-behaviors-{tenant}$\"\n\
             session_timeout_ms = 6000\nstatistics_interval_ms = 500\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let args = RunArgs {
        config,
        input: None,
        generate: None,
        seed: 7,
        catalog: None,
        workers: Some(1),
        cluster: Default::default(),
        exit_when_idle: Some(4),
        metrics_addr: Some(addr.clone()),
        dump_state: None,
        stats_json: None,
        parse_only: false,
    };
    let (_, stats) = run(&args).unwrap();
    assert_eq!(stats.events, 200);
    assert_eq!(http_get(&addr, "/health/live").unwrap().0, 200);
    assert_eq!(http_get(&addr, "/health/ready").unwrap().0, 503, "not ready once the input is drained");
    http_get(&addr, "/metrics").unwrap().1
}

#[test]
fn dashboards_and_alerts_use_exported_metrics() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let text = live_scrape();
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(String::from))
        .collect();
    for want in ["recflow_consumer_lag", "recflow_sink_errors_total", "recflow_watermark_ms"] {
        assert!(exported.contains(want), "{want} not in a live scrape:\n{text}");
    }
    let mut used = BTreeSet::new();
    let rules = parse_yaml(&deploy().join("prometheus/alerts.yml"));
    let mut exprs = Vec::new();
    find_all(&rules[0], "expr", &mut exprs);
    assert!(exprs.len() >= 5, "alert rules");
    for e in exprs {
        used.extend(metric_names(e.as_str().unwrap()));
    }
    for e in dashboard_exprs(&deploy().join("grafana/dashboards/recflow-pipeline.json")) {
        used.extend(metric_names(&e));
    }
    let missing: Vec<_> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(missing.is_empty(), "dashboard/alert metrics the worker does not export: {missing:?}");
    eprintln!("{} metric names checked against a live scrape", used.len());

    // The server's dashboard: names the query server defines (its series
    // appear only once requests were served, so they are checked in its code).
    let server_names: BTreeSet<String> = dashboard_exprs(&deploy().join("grafana/dashboards/recflow-server.json"))
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|m| m.starts_with("recflow_"))
        .collect();
    assert!(server_names.len() >= 4, "the server dashboard shows requests, latency, degrades, recall hits");
    let mut sources = String::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                sources.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    for m in &server_names {
        // A histogram's series carry a suffix its definition does not.
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| m.strip_suffix(s)).unwrap_or(m);
        assert!(sources.contains(base), "server dashboard uses {m}, which server/src does not define");
    }
}
