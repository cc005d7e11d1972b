//! `recflow bench`: events/s and peak RSS for parse-only and for all four
//! jobs, each run in a fresh child process so peak RSS is its own.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use recflow_sources::generator::{write_catalog, write_events, GenConfig};

/// Arguments of `recflow bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Generated events per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Runs per configuration (the best and median are reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Scratch directory for the generated input.
    #[arg(long, default_value = "target/bench")]
    pub dir: PathBuf,
}

#[derive(serde::Deserialize)]
struct Stats {
    events: u64,
    invalid: u64,
    seconds: f64,
    events_per_sec: f64,
    peak_rss_bytes: u64,
}

/// `recflow bench` entry point: prints a Markdown table to stdout.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let input = args.dir.join(format!("events-{}-{}.jsonl", args.events, args.seed));
    let catalog = args.dir.join(format!("items-{}.jsonl", args.seed));
    let gen = GenConfig { events: args.events, seed: args.seed, ..GenConfig::default() };
    if !input.exists() {
        eprintln!("generating {} events into {}", args.events, input.display());
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        write_events(&gen, &mut f)?;
    }
    if !catalog.exists() {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&catalog)?);
        write_catalog(&gen, &mut f)?;
    }
    // File outputs go to /dev/null: the raw-log batches are still serialized.
    let config = args.dir.join("bench.toml");
    std::fs::write(
        &config,
        "[pipeline]\nprogress_interval_secs = 0\n[embedded]\ndlq_path = \"/dev/null\"\nraw_log_path = \"/dev/null\"\n",
    )?;
    let exe = std::env::current_exe().context("locating the recflow binary")?;
    println!("| mode | workers | events | median s | best events/s | median events/s | per-core events/s (best) | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for mode in ["parse-only", "all four jobs"] {
        for &w in &args.workers {
            let mut runs = Vec::new();
            for r in 0..args.repeat.max(1) {
                let stats_path = args.dir.join(format!("stats-{w}-{r}.json"));
                let mut cmd = Command::new(&exe);
                cmd.arg("run").arg("--config").arg(&config).arg("--input").arg(&input);
                cmd.arg("--catalog").arg(&catalog).arg("--workers").arg(w.to_string());
                cmd.arg("--stats-json").arg(&stats_path);
                if mode == "parse-only" {
                    cmd.arg("--parse-only");
                }
                let status = cmd.env("RUST_LOG", "warn").status().context("running recflow run")?;
                if !status.success() {
                    bail!("recflow run failed ({status}) for {mode}, {w} workers");
                }
                let s: Stats = serde_json::from_slice(&std::fs::read(&stats_path)?)?;
                eprintln!("{mode} workers={w} run={r}: {:.0} events/s in {:.3}s", s.events_per_sec, s.seconds);
                runs.push(s);
            }
            runs.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
            let best = &runs[runs.len() - 1];
            let median = &runs[runs.len() / 2];
            let cores = w.min(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            println!(
                "| {mode} | {w} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} |",
                best.events + best.invalid,
                median.seconds,
                best.events_per_sec,
                median.events_per_sec,
                best.events_per_sec / cores as f64,
                runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0) as f64 / (1 << 20) as f64,
            );
        }
    }
    Ok(())
}
