//! `analytics`: the one binary. Parses the command line and the
//! configuration, then hands both to the library (`analytics::run`), which
//! wires the stages together and runs one of them, all of them (`up`), or
//! an admin command.

/// Allocation dominates the request path's profile under glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;

use analytics::Command;
use analytics_config::Config;
use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "analytics",
    version,
    about = "High-volume product analytics pipeline"
)]
struct Cli {
    /// TOML configuration file; ANALYTICS_* variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let env = std::env::vars().filter(|(k, _)| k.starts_with("ANALYTICS_") && k != "ANALYTICS_LOG");
    let config =
        Arc::new(Config::load(cli.config.as_deref(), env).context("invalid configuration")?);
    analytics_telemetry::init_logging(
        &std::env::var("ANALYTICS_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
    );
    let http_threads = cli
        .command
        .serves_http()
        .then(|| config.http_threads.unwrap_or_else(default_http_threads));
    // One serving thread needs none of the machinery for handing tasks
    // between workers; other commands keep a thread per core.
    let mut runtime = match http_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(threads);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime
        .enable_all()
        .build()?
        .block_on(analytics::run(cli.command, config))
}

/// One fewer than the cores, at least one (see `http_threads`).
fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}
