//! `weft-bench`: the measurements recorded in docs/benchmarks.md, kept out
//! of the `weft` binary (the way DataFusion keeps `benchmarks/` apart), so
//! the product links neither Redis nor a hand-written h2 client.
//!
//! A tour, one module per subcommand:
//!
//! * [`ingest`] (`weft-bench ingest`): on one generated topic, the raw
//!   consume ceiling, the speed layer end to end, the apply path alone
//!   (through [`weft_speed::consumer::BatchApplier`], the consumer's own
//!   apply path) and the archiver.
//! * [`serve`] (`weft-bench serve`): GetProfile latency and throughput of
//!   `weft serve` against the floor and Redis, at a fixed rate and flat
//!   out; its load generator's clients, phases and report are submodules.
//! * [`floor`] (`weft-bench floor`): a bare tonic ProfileService answering
//!   one fixed profile, what `weft serve` is measured against.
//! * [`freshness`] (`weft-bench freshness`): produce an event for a new
//!   user, time until GetProfile finds it.
//! * [`lookup`] (`weft-bench lookup`): one GetProfile's cost inside the
//!   server, stage by stage, with no network.
//! * [`embedded`] (`weft-bench embedded`): GetProfile through the embedded
//!   reader of `weft-client`, in process.
//! * [`common`]: what they share (user ids, histograms, gRPC connections,
//!   CPU time from `/proc`).
//!
//! Until 2026-12-03 these were `weft bench <subcommand>`, with the same
//! flags.

mod common;
mod embedded;
mod floor;
mod freshness;
mod ingest;
mod lookup;
mod quality;
mod serve;

/// mimalloc, as in the `weft` binary: the bench measures the product's code
/// with the product's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "weft-bench",
    version,
    about = "Measure Weft's throughput and latency (results go in docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume ceiling vs speed layer vs apply path vs archiver.
    Ingest(ingest::IngestArgs),
    /// The floor: a bare tonic ProfileService answering one fixed profile
    /// (fetched once from `weft serve`), until SIGINT/SIGTERM.
    Floor(floor::FloorArgs),
    /// GetProfile latency and throughput: the floor vs Redis vs weft serve,
    /// at a fixed rate and flat out.
    Serve(serve::ServeBenchArgs),
    /// Produce an event for a new user, time until GetProfile finds it.
    Freshness(freshness::FreshnessArgs),
    /// One GetProfile's cost inside the server, stage by stage: a
    /// published view read in process, no network.
    Lookup(lookup::LookupArgs),
    /// GetProfile through the embedded reader (weft-client), in process.
    Embedded(embedded::EmbeddedArgs),
    /// Recommendation quality on held-out events: the blend vs popularity
    /// vs random, and the cold-start path (hit rate@10, NDCG@10).
    Quality(quality::QualityArgs),
}

fn run(command: &Command) -> Result<()> {
    match command {
        Command::Ingest(a) => ingest::ingest(a),
        Command::Floor(a) => floor::floor(a),
        Command::Serve(a) => serve::serve(a),
        Command::Freshness(a) => freshness::freshness(a),
        Command::Lookup(a) => lookup::lookup(a),
        Command::Embedded(a) => embedded::embedded(a),
        Command::Quality(a) => quality::quality(a),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
