//! The admin commands: migrations, projects, clients, share links, dead letters and the
//! container health probe.

use std::time::Duration;

use analytics_config::Config;
use analytics_meta::{ClientKind, RateLimits};
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::cli::{ClientCommand, DlqCommand, ProjectCommand, ShareCommand};
use crate::wiring::{migrate_clickhouse, open_meta, redis_client};

/// Applies the metadata and ClickHouse migrations.
pub async fn migrate(config: &Config) -> Result<()> {
    open_meta(config).await?;
    let applied = migrate_clickhouse(config).await?;
    println!("{}", json!({"applied": applied}));
    Ok(())
}

pub async fn project(config: &Config, command: ProjectCommand) -> Result<()> {
    let meta = open_meta(config).await?;
    let out = match command {
        ProjectCommand::Create { name, origins } => {
            let project = meta.create_project(&name, &origins).await?;
            json!({"id": project.id, "name": project.name, "origins": project.allowed_origins})
        }
        ProjectCommand::Limits {
            project,
            per_client,
            per_ip,
        } => {
            let limits = RateLimits { per_client, per_ip };
            meta.set_rate_limits(&project, limits).await?;
            json!({"project": project, "rate_limits": limits})
        }
        ProjectCommand::Bots { project, policy } => {
            meta.set_drop_bots(&project, policy == "drop").await?;
            json!({"project": project, "bots": policy})
        }
    };
    println!("{out}");
    Ok(())
}

pub async fn client(config: &Config, command: ClientCommand) -> Result<()> {
    let meta = open_meta(config).await?;
    match command {
        ClientCommand::Create { project, kind } => {
            let kind: ClientKind = kind.parse()?;
            let client = meta.create_client(&project, kind).await?;
            println!("{}", serde_json::to_string(&client)?);
            Ok(())
        }
        ClientCommand::Revoke { id } => {
            let revoked = meta.revoke_client(&id).await?;
            println!("{}", json!({"id": id, "revoked": revoked}));
            if revoked {
                Ok(())
            } else {
                anyhow::bail!("no client {id}")
            }
        }
    }
}

/// The share-link admin commands.
pub async fn share(config: &Config, command: ShareCommand) -> Result<()> {
    let meta = open_meta(config).await?;
    match command {
        ShareCommand::Create {
            project,
            password,
            expires_days,
        } => {
            let share = meta
                .create_share(&project, password.as_deref(), expires_days)
                .await?;
            println!("{}", serde_json::to_string(&share)?);
        }
        ShareCommand::List { project } => {
            let shares = meta.shares(&project).await?;
            println!("{}", json!({"project": project, "shares": shares}));
        }
        ShareCommand::Revoke { id } => {
            let revoked = meta.revoke_share(&id).await?;
            println!("{}", json!({"id": id, "revoked": revoked}));
            if !revoked {
                anyhow::bail!("no share {id}");
            }
        }
    }
    Ok(())
}

/// The dead-letter admin commands.
pub async fn dlq(config: &Config, command: DlqCommand) -> Result<()> {
    use analytics_streams::{Topic, dead_entries, drop_dead, replay_dead, stream_key};
    let mut conn = analytics_streams::connect(&redis_client(config)?, Duration::from_secs(5))
        .await
        .context("cannot connect to Redis")?;
    let partitions = 0..config.redis.partitions;
    let key = |p: u16| stream_key(&config.redis.key_prefix, Topic::Dead, p);
    let (target, replay) = match command {
        DlqCommand::List { limit } => {
            for p in partitions {
                for entry in dead_entries(&mut conn, &key(p), limit).await? {
                    let mut line = serde_json::to_value(&entry)?;
                    line["partition"] = p.into();
                    println!("{line}");
                }
            }
            return Ok(());
        }
        DlqCommand::Replay(target) => (target, true),
        DlqCommand::Drop(target) => (target, false),
    };
    let mut chosen: Vec<(u16, String)> = Vec::new();
    match (target.all, target.partition, target.id) {
        (true, _, _) => {
            // Ids are taken first, so replayed entries that fail again and
            // come back as new dead letters are not picked up twice.
            for p in partitions {
                let entries = dead_entries(&mut conn, &key(p), usize::MAX >> 1).await?;
                chosen.extend(entries.into_iter().map(|e| (p, e.id)));
            }
        }
        (false, Some(p), Some(id)) if p < config.redis.partitions => chosen.push((p, id)),
        _ => anyhow::bail!("name an entry with --partition and --id, or use --all"),
    }
    let mut done = 0;
    for (p, id) in &chosen {
        let changed = if replay {
            replay_dead(&mut conn, &key(*p), id).await?
        } else {
            drop_dead(&mut conn, &key(*p), id).await?
        };
        done += u64::from(changed);
    }
    let action = if replay { "replayed" } else { "dropped" };
    println!("{}", json!({ action: done }));
    Ok(())
}

/// Asks this configuration's own server for `path`; an error unless it answers 200.
pub async fn probe(config: &Config, path: &str) -> Result<()> {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .context("cannot connect")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        Ok::<_, anyhow::Error>(sender.send_request(request).await?.status())
    };
    let status = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .with_context(|| format!("{addr}{path}: no answer within 3 s"))?
        .with_context(|| format!("{addr}{path}"))?;
    if status == hyper::StatusCode::OK {
        Ok(())
    } else {
        anyhow::bail!("{addr}{path}: {status}")
    }
}
