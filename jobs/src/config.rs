//! The TOML configuration: every operator knob with its default.
//! `configs/embedded.toml` documents each key; a missing key takes the default.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use recflow_operators::hot_items::HotConfig;
use recflow_operators::profile::ProfileConfig;
use recflow_schemas::{ActionWeights, ValidationLimits};
use recflow_sinks::{ClickHouseConfig, KafkaSinkConfig, MongoConfig, RedisConfig};
use recflow_sources::KafkaConfig;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub weights: ActionWeights,
    pub hot_items: HotItemsConfig,
    pub profiles: ProfilesConfig,
    pub embedded: EmbeddedConfig,
    pub outputs: OutputsConfig,
    pub telemetry: TelemetryConfig,
    /// Input topics (used when `run` gets no `--input`).
    pub kafka: KafkaConfig,
    /// Output topics and the DLQ topic.
    pub kafka_sink: KafkaSinkConfig,
    pub redis: RedisConfig,
    pub mongo: MongoConfig,
    /// Also the batching of the embedded raw-log file.
    pub clickhouse: ClickHouseConfig,
    /// The HTTP server (`recflow serve`, `recflow demo`).
    pub server: recflow_server::ServerConfig,
}

/// Where results go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In-process store + files (no services).
    #[default]
    Embedded,
    /// Redis, MongoDB, ClickHouse and Kafka.
    Services,
}

/// `[outputs]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputsConfig {
    /// `embedded` or `services`.
    pub store: StoreKind,
}

/// `[telemetry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Prometheus endpoint of a worker process (`""` = off; `--metrics-addr` overrides).
    pub metrics_addr: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { metrics_addr: "127.0.0.1:9464".into() }
    }
}

/// `[pipeline]`: workers, event time and validation.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Timely workers in this process.
    pub workers: usize,
    /// Watermark = max event time seen − this.
    pub allowed_lateness_secs: u64,
    /// Events more than this ahead of the wall clock are rejected.
    pub max_future_skew_secs: u64,
    /// Largest accepted event (bytes).
    pub max_event_bytes: usize,
    /// Bytes of input a worker reads and parses per step.
    pub read_block_bytes: usize,
    /// Seconds between progress lines on stderr (0 = off).
    pub progress_interval_secs: u64,
    /// On SIGTERM, how long the sinks may write what is in flight; what is
    /// left after it is not acknowledged and is replayed by the next start.
    pub stop_timeout_secs: f64,
    /// Backpressure: events read but not yet taken by the sinks, per process,
    /// beyond which the source waits (0 = no bound).
    pub max_in_flight_events: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            allowed_lateness_secs: 300,
            max_future_skew_secs: 300,
            max_event_bytes: 64 * 1024,
            read_block_bytes: 256 * 1024,
            progress_interval_secs: 1,
            stop_timeout_secs: 15.0,
            max_in_flight_events: 20_000,
        }
    }
}

/// `[hot_items]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotItemsConfig {
    pub window_secs: u64,
    pub slide_secs: u64,
    pub half_life_secs: u64,
    pub top_k: usize,
    pub category_top_k: usize,
}

impl Default for HotItemsConfig {
    fn default() -> Self {
        HotItemsConfig { window_secs: 3600, slide_secs: 900, half_life_secs: 1800, top_k: 500, category_top_k: 200 }
    }
}

/// `[profiles]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilesConfig {
    pub window_secs: u64,
    pub recent_items: usize,
    pub favorite_categories: usize,
    /// Closed windows' documents are coalesced per user and sent at most this often (0 = every window's at once).
    pub emit_interval_ms: u64,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig { window_secs: 300, recent_items: 20, favorite_categories: 3, emit_interval_ms: 1000 }
    }
}

/// `[embedded]`: where the embedded mode writes its files.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Dead letters, one JSON object per line ("" = don't write).
    pub dlq_path: String,
    /// ClickHouse batches that would be inserted ("" = count only).
    pub raw_log_path: String,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { dlq_path: "out/dlq.jsonl".into(), raw_log_path: "out/raw_log_batches.jsonl".into() }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let cfg: Config = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Rejects settings the operators cannot honour, naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        let h = &self.hot_items;
        if h.slide_secs == 0 || !h.slide_secs.is_multiple_of(60) {
            bail!("hot_items.slide_secs must be a positive multiple of 60, got {}", h.slide_secs);
        }
        if h.window_secs == 0 || !h.window_secs.is_multiple_of(h.slide_secs) {
            bail!("hot_items.window_secs must be a positive multiple of slide_secs, got {}", h.window_secs);
        }
        if h.half_life_secs == 0 {
            bail!("hot_items.half_life_secs must be positive");
        }
        if self.profiles.window_secs == 0 || !self.profiles.window_secs.is_multiple_of(60) {
            bail!("profiles.window_secs must be a positive multiple of 60, got {}", self.profiles.window_secs);
        }
        if self.pipeline.workers == 0 {
            bail!("pipeline.workers must be at least 1");
        }
        let stop = self.pipeline.stop_timeout_secs;
        if std::time::Duration::try_from_secs_f64(stop).is_err() {
            bail!("pipeline.stop_timeout_secs must be a number of seconds >= 0, got {stop}");
        }
        let ch = &self.clickhouse;
        if ch.batch_rows == 0 || ch.batch_max_age_secs.is_nan() || ch.batch_max_age_secs <= 0.0 {
            bail!("clickhouse.batch_rows and clickhouse.batch_max_age_secs must be positive");
        }
        self.server.check().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// Validation limits from `[pipeline]`.
    pub fn validation(&self) -> ValidationLimits {
        ValidationLimits {
            max_payload_bytes: self.pipeline.max_event_bytes,
            max_future_skew_ms: self.pipeline.max_future_skew_secs as i64 * 1000,
        }
    }

    /// Operator settings for the hot-items job.
    pub fn hot(&self) -> HotConfig {
        let h = &self.hot_items;
        HotConfig {
            window_ms: h.window_secs as i64 * 1000,
            slide_ms: h.slide_secs as i64 * 1000,
            half_life_ms: h.half_life_secs as i64 * 1000,
            top_k: h.top_k,
            category_top_k: h.category_top_k,
            weights: self.weights.to_array(),
        }
    }

    /// When an event's outputs are all emitted: the close of the last window it feeds.
    pub fn release(&self) -> recflow_operators::time::Release {
        recflow_operators::time::Release {
            hot_window_ms: self.hot_items.window_secs as i64 * 1000,
            hot_slide_ms: self.hot_items.slide_secs as i64 * 1000,
            profile_window_ms: self.profiles.window_secs as i64 * 1000,
        }
    }

    /// Operator settings for the profile job.
    pub fn profile(&self) -> ProfileConfig {
        ProfileConfig {
            window_ms: self.profiles.window_secs as i64 * 1000,
            recent_items: self.profiles.recent_items,
            favorite_categories: self.profiles.favorite_categories,
            weights: self.weights.to_array(),
            emit_every: std::time::Duration::from_millis(self.profiles.emit_interval_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/embedded.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.hot().window_ms, 3_600_000);
        assert_eq!(cfg.weights, ActionWeights::default());
        assert_eq!(cfg.pipeline.allowed_lateness_secs, 300);
        assert_eq!(cfg.profile().emit_every, ProfileConfig::default().emit_every);
    }

    #[test]
    fn local_config_parses_and_selects_services() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/local.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.outputs.store, StoreKind::Services);
        assert_eq!(cfg.kafka.partitions, 3);
        assert_eq!(cfg.clickhouse.batch_rows, 1000);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let cfg: Config = toml::from_str("[hot_items]\nslide_secs = 90").unwrap();
        assert!(cfg.check().unwrap_err().to_string().contains("hot_items.slide_secs"));
        assert!(toml::from_str::<Config>("[pipeline]\nwrokers = 2").is_err(), "typos are errors");
    }
}
