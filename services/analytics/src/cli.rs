//! The command vocabulary of the binary; `main.rs` parses it.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Single-node mode: migrate, then run every stage in this process.
    Up,
    /// Run the ingestion edge.
    Edge,
    /// Run the insights API.
    Insights,
    /// Run an enricher (consumer group member).
    Enrich,
    /// Run a ClickHouse sink (consumer group member).
    Sink,
    /// Apply ClickHouse and metadata migrations.
    Migrate,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage API clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage read-only share links of a project's dashboard.
    #[command(subcommand)]
    Share(ShareCommand),
    /// Inspect, replay or drop dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Check the configuration (file + ANALYTICS_* variables) and print it
    /// as TOML, passwords redacted.
    Config,
    /// Exit 0 when this process's own server answers 200 on PATH: a
    /// container health check that needs no curl in the image.
    Probe {
        #[arg(default_value = "/readyz")]
        path: String,
    },
}

impl Command {
    /// Whether this command serves the HTTP API (its runtime gets
    /// `http_threads` threads). One exhaustive match, so a new command has
    /// to say.
    pub fn serves_http(&self) -> bool {
        match self {
            Command::Up | Command::Edge | Command::Insights => true,
            Command::Enrich
            | Command::Sink
            | Command::Migrate
            | Command::Project(_)
            | Command::Client(_)
            | Command::Share(_)
            | Command::Dlq(_)
            | Command::Config
            | Command::Probe { .. } => false,
        }
    }
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print dead letters as JSON lines (oldest first, per partition).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the stream they failed in.
    Replay(DlqTarget),
    /// Delete dead letters for good.
    Drop(DlqTarget),
}

#[derive(clap::Args)]
pub struct DlqTarget {
    /// Partition of the entry (from `dlq list`).
    #[arg(long, requires = "id")]
    pub partition: Option<u16>,
    /// Id of the entry in the dead-letter stream.
    #[arg(long, requires = "partition")]
    pub id: Option<String>,
    /// Every dead letter of every partition.
    #[arg(long, conflicts_with_all = ["partition", "id"])]
    pub all: bool,
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project and print it as JSON.
    Create {
        #[arg(long)]
        name: String,
        /// Browser origin allowed to send events with only a client id (repeatable).
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Ingest rate limits in requests per second (0: the edge's default).
    Limits {
        #[arg(long)]
        project: String,
        #[arg(long, default_value_t = 0)]
        per_client: u32,
        #[arg(long, default_value_t = 0)]
        per_ip: u32,
    },
    /// Keep crawler traffic (tagged `device = 'bot'`, the default) or drop it.
    Bots {
        #[arg(long)]
        project: String,
        #[arg(long, value_parser = ["keep", "drop"])]
        policy: String,
    },
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create a client and print its id and secret as JSON.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long = "type", value_parser = ["write", "read", "root"])]
        kind: String,
    },
    /// Delete a client; edges refuse it within `edge.auth_cache_ttl_ms`.
    Revoke {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ShareCommand {
    /// Create a share link and print its id, token and path as JSON (the
    /// token is shown only here).
    Create {
        #[arg(long)]
        project: String,
        /// Asked for before the dashboard opens.
        #[arg(long)]
        password: Option<String>,
        /// The link stops working after this many days.
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// Print a project's share links (without tokens) as JSON.
    List {
        #[arg(long)]
        project: String,
    },
    /// Delete a share link; it stops working at once.
    Revoke { id: String },
}
