//! The shared workload generator (shared/workload/gen_events.py) with tenants
//! renamed per test, so topics, keys and rows never mix between tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// gen_events.py: `RECFLOW_GEN_EVENTS`, else ../shared/workload next to the repository.
pub fn gen_script() -> PathBuf {
    std::env::var("RECFLOW_GEN_EVENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/workload/gen_events.py"))
}

/// Runs gen_events.py `what args…` and renames its tenants `tenant_*` to `{prefix}_tenant_*`.
pub fn generate(what: &str, args: &[&str], prefix: &str) -> String {
    let script = gen_script();
    assert!(script.exists(), "workload generator {} is missing (set RECFLOW_GEN_EVENTS)", script.display());
    let out = Command::new("python3").arg(&script).arg(what).args(args).output().expect("python3 runs");
    assert!(out.status.success(), "gen_events.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("generator writes UTF-8")
        .replace("\"tenant_id\":\"tenant_", &format!("\"tenant_id\":\"{prefix}_tenant_"))
}
