//! `recflow init`: creates topics, ClickHouse tables/views and Mongo
//! indexes. Safe to run twice.

use std::path::PathBuf;

use clap::Args;

use recflow_sources::kafka::topic_of_tenant;
use recflow_sources::kafka_admin::create_topics;

use crate::config::Config;

/// Arguments of `recflow init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Config file (TOML).
    #[arg(long, default_value = "configs/local.toml")]
    pub config: PathBuf,
    /// Tenants whose input topics `user-behaviors-{tenant}` to create now (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tenants: Vec<String>,
    /// Partitions of created topics (overrides kafka.partitions).
    #[arg(long)]
    pub partitions: Option<i32>,
}

/// `recflow init` entry point.
pub fn main(args: InitArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let partitions = args.partitions.unwrap_or(cfg.kafka.partitions);
    let ks = &cfg.kafka_sink;
    let mut topics: Vec<String> = vec![
        ks.profile_topic.clone(),
        ks.item_stats_topic.clone(),
        ks.metrics_topic.clone(),
        ks.dlq_topic.clone(),
        recflow_sources::kafka_catalog::ITEM_UPDATES_TOPIC.to_string(),
    ];
    for t in &args.tenants {
        if !recflow_schemas::validate::is_valid_tenant(t) {
            anyhow::bail!("tenant {t:?} does not match ^[a-z0-9_]{{1,64}}$");
        }
        topics.push(topic_of_tenant(t));
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    create_topics(&cfg.kafka.brokers, &names, partitions)?;
    eprintln!("kafka: {} topics ready ({partitions} partitions for new ones)", names.len());
    let dialect = recflow_sinks::clickhouse::init(&cfg.clickhouse)?;
    eprintln!("clickhouse: database {} ready ({dialect:?} dialect)", cfg.clickhouse.database);
    recflow_sinks::mongo::ensure_indexes(&cfg.mongo)?;
    eprintln!("mongo: indexes of {} ready", cfg.mongo.database);
    Ok(())
}
