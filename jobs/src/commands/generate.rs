//! `recflow generate`: deterministic events or catalog as JSON Lines.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use recflow_sources::generator::{write_catalog, write_events, GenConfig};

/// What to generate.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum What {
    Events,
    Catalog,
}

/// Arguments of `recflow generate` (same knobs as shared/workload/gen_events.py).
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// events or catalog.
    pub what: What,
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    #[arg(long, default_value_t = 4)]
    pub tenants: u32,
    #[arg(long, default_value_t = 50_000)]
    pub users: u64,
    #[arg(long, default_value_t = 20_000)]
    pub items: u64,
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    #[arg(long, default_value_t = 20)]
    pub step_ms: u64,
    #[arg(long, default_value_t = 0.05)]
    pub late_frac: f64,
    #[arg(long, default_value_t = 120_000)]
    pub max_delay_ms: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Output file (default stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl GenerateArgs {
    /// The generator settings.
    pub fn gen_config(&self) -> GenConfig {
        GenConfig {
            events: self.events,
            tenants: self.tenants,
            users: self.users,
            items: self.items,
            zipf: self.zipf,
            step_ms: self.step_ms,
            late_frac: self.late_frac,
            max_delay_ms: self.max_delay_ms,
            seed: self.seed,
            ..GenConfig::default()
        }
    }
}

/// `recflow generate` entry point.
pub fn main(args: GenerateArgs) -> anyhow::Result<()> {
    let cfg = args.gen_config();
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match args.what {
        What::Events => write_events(&cfg, &mut out)?,
        What::Catalog => write_catalog(&cfg, &mut out)?,
    };
    out.flush()?;
    Ok(())
}
