//! The `recflow` command line.

use clap::{Parser, Subcommand};

use recflow::commands::{bench, generate, init, produce, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// recflow: real-time recommender state from user-behavior streams.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all four jobs over a JSONL input to the end of input.
    Run(run::RunArgs),
    /// Generate deterministic events or an item catalog.
    Generate(generate::GenerateArgs),
    /// Measure throughput and peak memory; writes a Markdown table.
    Bench(bench::BenchArgs),
    /// Create topics, ClickHouse tables/views and Mongo indexes (idempotent).
    Init(init::InitArgs),
    /// Load a JSONL events file into the per-tenant topics.
    Produce(produce::ProduceArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Generate(a) => generate::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Init(a) => init::main(a),
        Command::Produce(a) => produce::main(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
