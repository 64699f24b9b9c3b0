//! `weft`: the command line that wires Weft's layers together.
//!
//! Only subcommands that work are listed; later layers add theirs.

mod archive_cmd;
mod batch_cmd;
mod gen_cmd;
mod serve_cmd;
mod speed_cmd;
mod up_cmd;

/// mimalloc: events are built on one thread and freed on another, which
/// glibc's allocator handles poorly (it halved `weft gen`'s throughput).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use weft_config::{EnvLayer, Overrides, WeftConfig};
use weft_core::FeatureSpec;
use weft_core::spec::format_duration;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: an open Lambda-architecture personalization platform"
)]
struct Cli {
    /// The configuration file (see deploy/weft.example.toml). Every command
    /// reads the same tree: built-in defaults < this file <
    /// `WEFT__SECTION__KEY` environment variables < flags.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole platform on this machine: a local broker (unless
    /// --bootstrap), serving + speed, the archiver, scheduled batch runs and
    /// demo traffic, until Ctrl-C.
    Up(up_cmd::UpArgs),
    /// Generate realistic, deterministic e-commerce events (Parquet archive,
    /// JSONL, or a Kafka topic).
    Gen(gen_cmd::GenArgs),
    /// Run the speed layer: consume `events` into the RocksDB speed view
    /// (invalid records to the dead-letter topic) until SIGINT/SIGTERM.
    Speed(speed_cmd::SpeedArgs),
    /// Run the archiver: consume `events` into the hive-partitioned Parquet
    /// archive, files whole or invisible, until SIGINT/SIGTERM.
    Archive(archive_cmd::ArchiveArgs),
    /// Run the serving layer: gRPC ProfileService and HTTP/JSON over batch
    /// view ⊕ speed view (the speed layer runs inside), until SIGINT/SIGTERM.
    Serve(serve_cmd::ServeArgs),
    /// The batch layer: recompute profiles from the archive into versioned
    /// batch views, and read them.
    #[command(subcommand)]
    Batch(batch_cmd::BatchCommand),
    /// Work with feature specs.
    #[command(subcommand)]
    Features(FeaturesCommand),
}

#[derive(Debug, Subcommand)]
enum FeaturesCommand {
    /// Validate a feature spec and print what each feature computes.
    Check {
        /// The TOML spec, e.g. deploy/features.example.toml.
        spec: PathBuf,
    },
}

/// The configuration: defaults, then `file`, then the process's `WEFT__*`
/// variables, then the command's `flags`; validated.
pub(crate) fn load_config(file: Option<&std::path::Path>, flags: Overrides) -> Result<WeftConfig> {
    Ok(WeftConfig::load(file, &EnvLayer::from_process(), &flags)?)
}

/// Reads and validates a feature spec; errors name the file, then the
/// feature and key.
pub(crate) fn load_spec(path: &std::path::Path) -> Result<(FeatureSpec, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = FeatureSpec::parse(&text).with_context(|| format!("{}", path.display()))?;
    Ok((spec, text))
}

fn features_check(path: &std::path::Path) -> Result<()> {
    let (spec, _) = load_spec(path)?;
    println!(
        "{}: {} features, spec hash {}",
        path.display(),
        spec.features.len(),
        spec.hash()
    );
    println!(
        "{:<24} {:<15} {:<12} {:<9} {:<7} kinds",
        "name", "aggregate", "field", "window", "bucket"
    );
    for f in &spec.features {
        let kinds = if f.filter.kinds.is_empty() {
            "all".to_string()
        } else {
            f.filter
                .kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let conditions = if f.filter.conditions.is_empty() {
            String::new()
        } else {
            format!(" (+{} conditions)", f.filter.conditions.len())
        };
        println!(
            "{:<24} {:<15} {:<12} {:<9} {:<7} {kinds}{conditions}",
            f.name,
            f.aggregate.name(),
            f.aggregate
                .field()
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            f.window
                .len_ms
                .map(format_duration)
                .unwrap_or_else(|| "lifetime".into()),
            format_duration(f.window.bucket_ms),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let file = cli.config.as_deref();
    let result = match &cli.command {
        Command::Up(args) => up_cmd::run_up(file, args),
        Command::Gen(args) => gen_cmd::run(file, args),
        Command::Speed(args) => speed_cmd::run_speed(file, args),
        Command::Serve(args) => serve_cmd::run_serve(file, args),
        Command::Archive(args) => archive_cmd::run_archive(file, args),
        Command::Batch(cmd) => batch_cmd::run(file, cmd),
        Command::Features(FeaturesCommand::Check { spec }) => features_check(spec),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
