//! The `recflow` command line.

use clap::{Parser, Subcommand};

use recflow::commands::{bench, demo, generate, init, loadgen, produce, run, serve};

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
    /// Serve the HTTP query and collector API (embedded: with the pipeline in-process).
    Serve(serve::ServeArgs),
    /// Generator -> pipeline -> embedded store -> HTTP server on 127.0.0.1:8080, in one process.
    Demo(demo::DemoArgs),
    /// Open-loop HTTP load on POST /api/v1/recommend; prints rps and latency percentiles.
    Loadgen(loadgen::LoadgenArgs),
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
        Command::Serve(a) => serve::main(a),
        Command::Demo(a) => demo::main(a),
        Command::Loadgen(a) => loadgen::main(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
