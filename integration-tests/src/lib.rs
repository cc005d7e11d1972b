//! Helpers for the end-to-end tests: where the services are.
//!
//! `integration-tests/test.sh` starts real servers on 127.0.0.1 and exports
//! their addresses; a test that needs one fails loudly when it is missing
//! rather than passing without having talked to it.

/// The value of a service address variable exported by `services/env.sh`.
pub fn service(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: integration tests need the real services. Run `bash integration-tests/test.sh`, \
             or start them with integration-tests/services/start.sh and `eval \"$(integration-tests/services/env.sh)\"`"
        ),
    }
}

/// A name unique to this test process, for topics, keys and databases.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

pub mod cli;
pub mod compare;
pub mod scenario;
pub mod workload;
