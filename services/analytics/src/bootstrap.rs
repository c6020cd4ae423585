//! The bootstrap project of single-node mode: created on first start, kept
//! in the data directory so later starts print the same credentials.

use std::path::PathBuf;

use analytics_config::Config;
use analytics_meta::{ClientKind, Meta, NewClient};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub project_id: String,
    pub write: ClientPair,
    pub read: ClientPair,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClientPair {
    pub id: String,
    pub secret: String,
}

impl From<NewClient> for ClientPair {
    fn from(c: NewClient) -> Self {
        ClientPair {
            id: c.id,
            secret: c.secret,
        }
    }
}

fn path(config: &Config) -> PathBuf {
    config.data_dir.join("bootstrap.json")
}

/// Loads the bootstrap credentials, creating project and clients on first start.
pub async fn ensure(config: &Config, meta: &Meta) -> Result<Credentials> {
    let path = path(config);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let credentials: Credentials = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; remove it to create new credentials",
                path.display()
            )
        })?;
        if meta.client(&credentials.write.id).await?.is_some() {
            return Ok(credentials);
        }
        tracing::warn!(
            "bootstrap clients are missing from the metadata database; creating new ones"
        );
    }
    let project = meta.create_project("Default", &[]).await?;
    let credentials = Credentials {
        write: meta
            .create_client(&project.id, ClientKind::Write)
            .await?
            .into(),
        read: meta
            .create_client(&project.id, ClientKind::Read)
            .await?
            .into(),
        project_id: project.id,
    };
    let text = serde_json::to_string_pretty(&credentials)?;
    write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(credentials)
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

pub fn print(config: &Config, c: &Credentials) {
    println!(
        "analytics is up on http://{listen}\n\
         project id:    {project}\n\
         write client:  id {wid}  secret {wsecret}\n\
         read client:   id {rid}  secret {rsecret}\n\
         (kept in {path})",
        listen = config.listen,
        project = c.project_id,
        wid = c.write.id,
        wsecret = c.write.secret,
        rid = c.read.id,
        rsecret = c.read.secret,
        path = path(config).display(),
    );
}
