//! The wiring of the one binary: each command of [`Command`] built from the
//! configuration and run. `main.rs` only parses the command line; the
//! stages themselves live in `services/*`, building blocks in `libs/*`.

mod admin;
mod api;
mod bootstrap;
mod cli;
mod consumers;
mod up;
mod wiring;

use std::sync::Arc;

use analytics_config::Config;
use anyhow::Result;
use tokio_util::sync::CancellationToken;

pub use api::{Apis, App, AppDeps};
pub use cli::{ClientCommand, Command, DlqCommand, DlqTarget, ProjectCommand, ShareCommand};
pub use consumers::ConsumerHealth;

/// Runs `command` until it is done or, for a server, until SIGTERM or
/// Ctrl-C.
pub async fn run(command: Command, config: Arc<Config>) -> Result<()> {
    match command {
        Command::Migrate => admin::migrate(&config).await,
        Command::Project(command) => admin::project(&config, command).await,
        Command::Client(command) => admin::client(&config, command).await,
        Command::Share(command) => admin::share(&config, command).await,
        Command::Dlq(command) => admin::dlq(&config, command).await,
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Probe { path } => admin::probe(&config, &path).await,
        Command::Up => up::up(config, serving()).await,
        Command::Edge => api::serve_alone(&config, Apis::EDGE, serving()).await,
        Command::Insights => api::serve_alone(&config, Apis::INSIGHTS, serving()).await,
        Command::Enrich => consumers::enricher_alone(&config, serving()).await,
        Command::Sink => consumers::sink_alone(&config, serving()).await,
    }
}

/// The one shutdown token of a serving command (SIGTERM or Ctrl-C), and
/// the metrics upkeep every serving process runs until it fires. Tools
/// keep the default signal handling: Ctrl-C ends them at once.
fn serving() -> CancellationToken {
    let shutdown = wiring::shutdown_on_signal();
    tokio::spawn(analytics_telemetry::keep_metrics(shutdown.clone()));
    shutdown
}
