//! recflow's jobs: configuration, the dataflow wiring and the CLI commands.

pub mod cluster;
pub mod commands;
pub mod config;
pub mod outputs;
pub mod partition_times;
pub mod pipeline;
pub mod profile_store;
pub mod progress;
pub mod telemetry;
