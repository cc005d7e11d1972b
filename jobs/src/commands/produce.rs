//! `recflow produce`: loads a JSONL events file into the per-tenant topics,
//! keyed by user_id, with progress on stderr.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use recflow_sources::kafka_admin::produce_jsonl;

use crate::config::Config;

/// Arguments of `recflow produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Config file (TOML).
    #[arg(long, default_value = "configs/local.toml")]
    pub config: PathBuf,
    /// Events, JSON Lines (`-` = stdin).
    #[arg(long)]
    pub input: String,
    /// Partitions of topics created on the way (overrides kafka.partitions).
    #[arg(long)]
    pub partitions: Option<i32>,
}

/// `recflow produce` entry point.
pub fn main(args: ProduceArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let partitions = args.partitions.unwrap_or(cfg.kafka.partitions);
    let reader: Box<dyn BufRead> = if args.input == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let stats = produce_jsonl(&cfg.kafka.brokers, reader, partitions)?;
    eprintln!("produced {} events to {} topics ({} lines skipped)", stats.produced, stats.topics, stats.skipped);
    Ok(())
}
