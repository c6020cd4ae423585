//! Connections to one Redis server or to a Redis Cluster, behind one type.
//!
//! A cluster refuses any pipeline, script or multi-key command whose keys
//! lie in more than one hash slot. Keys used together carry the same hash
//! tag (a stream partition's `{pN}`, a device's `{project:device}`);
//! commands on keys of many slots go through [`query_by_slot`], which sends
//! one pipeline per slot in cluster mode and a single pipeline otherwise.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::StreamError;

/// Where Redis is: a server, or the seed nodes of a cluster.
#[derive(Clone)]
pub enum RedisTarget {
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// One URL, or with `cluster` any number of seed node URLs.
    pub fn new<'a>(
        urls: impl IntoIterator<Item = &'a str>,
        cluster: bool,
    ) -> Result<RedisTarget, StreamError> {
        let urls: Vec<String> = urls.into_iter().map(str::to_owned).collect();
        if cluster {
            // Fails early on a bad URL rather than at the first connection.
            ClusterClient::new(urls.clone())?;
            return Ok(RedisTarget::Cluster(urls));
        }
        match urls.as_slice() {
            [url] => Ok(RedisTarget::Single(redis::Client::open(url.as_str())?)),
            _ => Err(StreamError::Config(
                "exactly one Redis URL unless in cluster mode".into(),
            )),
        }
    }
}

/// A connection that reconnects by itself (after a restart, or a cluster
/// topology change); cheap to clone, clones share the connection.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Opens a connection whose replies may take up to `response_timeout`.
/// Blocking reads need their own connection with a timeout longer than the block.
pub async fn connect(
    target: &RedisTarget,
    response_timeout: Duration,
) -> Result<Conn, StreamError> {
    match target {
        RedisTarget::Single(client) => Ok(Conn::Single(
            ConnectionManager::new_with_config(client.clone(), manager_config(response_timeout))
                .await?,
        )),
        RedisTarget::Cluster(urls) => {
            let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(response_timeout)
                .retries(2)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
    }
}

/// A single-node connection that connects on first use, so that a handler
/// can be built while nothing answers at `target` (a request path driven
/// in-process, whose refusals never reach Redis). A Redis Cluster learns
/// its slots when it connects, so it has no such form.
pub fn connect_on_first_use(
    target: &RedisTarget,
    response_timeout: Duration,
) -> Result<Conn, StreamError> {
    match target {
        RedisTarget::Single(client) => Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config(response_timeout),
        )?)),
        RedisTarget::Cluster(_) => Err(StreamError::Config(
            "a Redis Cluster connection cannot wait for first use".into(),
        )),
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Commands on keys of possibly many slots, each with the key that routes
/// it, run as pipelines that never span a slot; replies in command order.
pub struct SlotCommands {
    cluster: bool,
    /// The slot of each command's key; only computed on a cluster.
    commands: Vec<(Option<Slot>, Cmd)>,
}

impl SlotCommands {
    /// Commands for `conn` (a single server needs no slots).
    pub fn new(conn: &Conn) -> SlotCommands {
        SlotCommands {
            cluster: conn.is_cluster(),
            commands: Vec::new(),
        }
    }

    /// Adds `cmd`, which touches only keys in the slot of `key`.
    pub fn push(&mut self, key: &str, cmd: Cmd) {
        let slot = self.cluster.then(|| Slot::for_key(key));
        self.commands.push((slot, cmd));
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// Positions of `items`, grouped by equal item, groups in order of first
/// appearance.
fn group_positions<T: Eq + std::hash::Hash>(items: impl IntoIterator<Item = T>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_item: HashMap<T, usize> = HashMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let group = *by_item.entry(item).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(index);
    }
    groups
}

/// Indices of `keys` grouped by hash slot, in order of first appearance;
/// one group of all of them when not on a cluster (a single server has no
/// slots, and one script call beats many).
pub fn slot_groups<'a>(conn: &Conn, keys: impl IntoIterator<Item = &'a str>) -> Vec<Vec<usize>> {
    if conn.is_cluster() {
        return group_positions(keys.into_iter().map(Slot::for_key));
    }
    let all: Vec<usize> = (0..keys.into_iter().count()).collect();
    if all.is_empty() {
        Vec::new()
    } else {
        vec![all]
    }
}

/// Runs `commands`: one pipeline on a single server, one per hash slot
/// (concurrently) on a cluster. The replies come back in command order.
pub async fn query_by_slot(
    conn: &mut Conn,
    commands: SlotCommands,
) -> Result<Vec<Value>, redis::RedisError> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    if !commands.cluster {
        let mut pipe = redis::pipe();
        for (_, cmd) in commands.commands {
            pipe.add_command(cmd);
        }
        return pipe.query_async(conn).await;
    }
    let groups = group_positions(commands.commands.iter().map(|(slot, _)| *slot));
    let mut cmds: Vec<Option<Cmd>> = commands
        .commands
        .into_iter()
        .map(|(_, c)| Some(c))
        .collect();
    let total = cmds.len();
    let mut runs = tokio::task::JoinSet::new();
    for indices in groups {
        let mut pipe = redis::pipe();
        for &index in &indices {
            if let Some(cmd) = cmds[index].take() {
                pipe.add_command(cmd);
            }
        }
        let mut conn = conn.clone();
        runs.spawn(async move {
            let replies: Result<Vec<Value>, _> = pipe.query_async(&mut conn).await;
            (indices, replies)
        });
    }
    let mut ordered = vec![Value::Nil; total];
    while let Some(run) = runs.join_next().await {
        let (indices, replies) = run.map_err(|e| {
            redis::RedisError::from(std::io::Error::other(format!("pipeline task failed: {e}")))
        })?;
        for (index, reply) in indices.into_iter().zip(replies?) {
            ordered[index] = reply;
        }
    }
    Ok(ordered)
}
