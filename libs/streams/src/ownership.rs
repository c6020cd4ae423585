//! Partition ownership, as Kafka's group coordinator hands out partitions:
//! each partition of a group is processed by exactly one member at a time,
//! so the member can keep the partition's state in memory.
//!
//! - **Members** announce themselves with a heartbeat in a sorted set
//!   (`<prefix>:members:<group>`, scored in Redis's clock). A member silent
//!   for half a lease lifetime is dropped from it.
//! - **Assignment** is computed by every member from the same sorted list
//!   of live members: partition `p` belongs to member `p % n`. When members
//!   join or leave, every member sees the new list at its next heartbeat.
//! - **Leases** (`<prefix>:lease:<group>:{pN}`, in the partition's hash
//!   slot) make the assignment safe while members disagree for a moment: a
//!   member works on a partition only while it holds its lease, renews it
//!   every heartbeat, and hands it over (finishes its batch, releases the
//!   lease) when the partition is assigned elsewhere. A member that dies
//!   or stalls stops renewing, and the lease expires after `lease_ttl`.
//! - **Fencing**: the lease's token is the member's name for this process
//!   run. The stage's commit checks the token in the same atomic script as
//!   its output and acknowledgement, so a member that stalled past its
//!   lease and wakes up cannot commit anything: its work is refused and it
//!   gives the partition up.
//!
//! A new owner first takes over the entries other consumers left pending
//! (the lease says they are abandoned), then reads as usual.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    Conn, Handler, PartitionHealth, RedisTarget, StageHealth, StreamError, Subscription, backoff,
    connect, consume, ensure_group, supervise,
};

const LEASE: &str = include_str!("lease.lua");
const MEMBERS: &str = include_str!("members.lua");

/// Who this member is and how long its claims last.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// Key prefix of the deployment.
    pub prefix: String,
    pub group: String,
    /// Unique per process run (a restarted process is a new member).
    pub member: String,
    /// How long a lease lasts without renewal: how long a partition waits
    /// when its owner dies without releasing it.
    pub lease_ttl: Duration,
}

impl Ownership {
    fn members_key(&self) -> String {
        format!("{}:members:{}", self.prefix, self.group)
    }

    /// The lease of partition `p`, in the slot of the partition's streams.
    pub fn lease(&self, p: u16) -> Lease {
        Lease {
            key: format!("{}:lease:{}:{{p{p}}}", self.prefix, self.group),
            token: self.member.clone(),
        }
    }

    /// Heartbeats and lease renewals: six per lease lifetime.
    fn heartbeat(&self) -> Duration {
        self.lease_ttl / 6
    }

    /// A member without a heartbeat for this long is no longer assigned
    /// partitions (its leases run out later, at `lease_ttl`).
    fn member_ttl(&self) -> Duration {
        self.lease_ttl / 2
    }
}

/// Which member a partition belongs to, given the sorted live members.
pub fn assignee(members: &[String], p: u16) -> Option<&str> {
    if members.is_empty() {
        return None;
    }
    Some(members[usize::from(p) % members.len()].as_str())
}

/// A partition's lease as one member holds it: the key and the token the
/// stage's commit must find there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub token: String,
}

impl Lease {
    async fn call(&self, conn: &mut Conn, ttl: Duration, op: &str) -> Result<bool, StreamError> {
        // Plain EVAL: Redis caches the compiled script, and a restarted
        // Redis needs nothing loaded again.
        let held: i64 = redis::cmd("EVAL")
            .arg(LEASE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.token)
            .arg(ttl.as_millis() as u64)
            .arg(op)
            .query_async(conn)
            .await?;
        Ok(held == 1)
    }

    /// Takes the lease when it is free (or already ours).
    pub async fn acquire(&self, conn: &mut Conn, ttl: Duration) -> Result<bool, StreamError> {
        self.call(conn, ttl, "acquire").await
    }

    /// Extends the lease; false when another member holds it (or nobody).
    pub async fn renew(&self, conn: &mut Conn, ttl: Duration) -> Result<bool, StreamError> {
        self.call(conn, ttl, "renew").await
    }

    /// Gives the lease up, when it is still ours.
    pub async fn release(&self, conn: &mut Conn) -> Result<bool, StreamError> {
        self.call(conn, Duration::ZERO, "release").await
    }
}

/// Sends a heartbeat every `heartbeat` and publishes the live members
/// (sorted) until `stop`; then leaves the group.
async fn membership(
    mut conn: Conn,
    ownership: Arc<Ownership>,
    members: watch::Sender<Vec<String>>,
    stop: CancellationToken,
) {
    let key = ownership.members_key();
    let ttl_ms = ownership.member_ttl().as_millis() as u64;
    let call = |conn: &mut Conn, op: &'static str| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(MEMBERS)
            .arg(1)
            .arg(&key)
            .arg(&ownership.member)
            .arg(ttl_ms)
            .arg(op);
        let mut conn = conn.clone();
        async move { cmd.query_async::<Vec<String>>(&mut conn).await }
    };
    loop {
        match call(&mut conn, "beat").await {
            Ok(mut live) => {
                live.sort();
                metrics::gauge!("analytics_streams_group_members", "group" => ownership.group.clone())
                    .set(live.len() as f64);
                members.send_if_modified(|known| {
                    let changed = *known != live;
                    *known = live;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "group heartbeat failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(ownership.heartbeat()) => {}
        }
    }
    if let Err(e) = call(&mut conn, "leave").await {
        tracing::debug!(error = %e, "could not leave the group");
    }
}

/// Runs, until `shutdown`, a handler on each partition this member owns:
/// `make` builds a partition's handler once its lease is held (restoring
/// the partition's state), and the handler runs until the lease is lost,
/// the partition is assigned elsewhere, or `shutdown`. Every partition has
/// a task in every member; one that owns nothing reports progress (it is
/// waiting as meant). Tasks are supervised as in
/// [`consume_partitions`](crate::consume_partitions).
pub async fn consume_owned<H, F, Fut>(
    redis: &RedisTarget,
    mut conn: Conn,
    ownership: Ownership,
    subscriptions: Vec<(u16, Subscription)>,
    make: F,
    health: &StageHealth,
    shutdown: &CancellationToken,
) -> Result<(), StreamError>
where
    H: Handler + 'static,
    F: Fn(u16, Lease) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<H, H::Error>> + Send + 'static,
{
    let stop = shutdown.child_token();
    let ownership = Arc::new(ownership);
    let (members_tx, members_rx) = watch::channel(Vec::new());
    let mut tasks = Vec::with_capacity(subscriptions.len());
    for (p, mut subscription) in subscriptions {
        ensure_group(&mut conn, &subscription.key, &subscription.group).await?;
        subscription.takeover = true;
        let reader = connect(redis, subscription.block + Duration::from_secs(5)).await?;
        let owner = PartitionOwner {
            p,
            subscription,
            reader,
            conn: conn.clone(),
            members: members_rx.clone(),
            ownership: ownership.clone(),
            health: health.start(p),
            stop: stop.clone(),
        };
        tasks.push((p, owner.run(make.clone())));
    }
    let heartbeat = tokio::spawn(membership(
        conn.clone(),
        ownership.clone(),
        members_tx,
        stop.clone(),
    ));
    let supervised = supervise(tasks, &stop).await;
    stop.cancel();
    let _ = heartbeat.await;
    supervised?;
    Ok(())
}

/// One partition's task in one member.
struct PartitionOwner {
    p: u16,
    subscription: Subscription,
    reader: Conn,
    conn: Conn,
    members: watch::Receiver<Vec<String>>,
    ownership: Arc<Ownership>,
    health: PartitionHealth,
    stop: CancellationToken,
}

impl PartitionOwner {
    fn assigned(&self) -> bool {
        assignee(&self.members.borrow(), self.p) == Some(self.ownership.member.as_str())
    }

    async fn run<H, F, Fut>(mut self, make: F)
    where
        H: Handler,
        F: Fn(u16, Lease) -> Fut,
        Fut: Future<Output = Result<H, H::Error>>,
    {
        let lease = self.ownership.lease(self.p);
        let mut failures = 0;
        while self.acquire(&lease).await {
            let partition = self.p.to_string();
            metrics::counter!("analytics_streams_leases_acquired_total", "partition" => partition)
                .increment(1);
            tracing::info!(partition = self.p, member = %lease.token, "partition acquired");
            let handler = match make(self.p, lease.clone()).await {
                Ok(handler) => handler,
                Err(e) => {
                    tracing::warn!(error = %e, partition = self.p, "cannot restore the partition's state");
                    self.release(&lease).await;
                    failures += 1;
                    if !backoff(failures, &self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            let owned = self.stop.child_token();
            let mut keeper = Keeper {
                conn: self.conn.clone(),
                members: self.members.clone(),
                ownership: self.ownership.clone(),
                p: self.p,
            };
            tokio::join!(
                consume(
                    self.subscription.clone(),
                    self.reader.clone(),
                    self.conn.clone(),
                    handler,
                    &self.health,
                    owned.clone(),
                ),
                keeper.keep(&lease, &owned),
            );
            self.release(&lease).await;
        }
    }

    /// Waits until this member is assigned the partition and holds its
    /// lease; false on shutdown.
    async fn acquire(&mut self, lease: &Lease) -> bool {
        loop {
            if self.stop.is_cancelled() {
                return false;
            }
            self.health.progressed();
            if self.assigned() {
                match lease
                    .acquire(&mut self.conn, self.ownership.lease_ttl)
                    .await
                {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot take a lease"),
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tick(&mut self.members, self.ownership.heartbeat()) => {}
            }
        }
    }

    async fn release(&mut self, lease: &Lease) {
        match lease.release(&mut self.conn).await {
            Ok(_) => tracing::info!(partition = self.p, "partition released"),
            Err(e) => {
                tracing::warn!(error = %e, partition = self.p, "cannot release a lease; it expires")
            }
        }
    }
}

/// Renews a held lease and ends the ownership (cancels `owned`) when the
/// lease is lost, when the partition is assigned elsewhere, or when no
/// renewal got through for a lease lifetime.
struct Keeper {
    conn: Conn,
    members: watch::Receiver<Vec<String>>,
    ownership: Arc<Ownership>,
    p: u16,
}

impl Keeper {
    async fn keep(&mut self, lease: &Lease, owned: &CancellationToken) {
        let ttl = self.ownership.lease_ttl;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = owned.cancelled() => return,
                _ = tick(&mut self.members, self.ownership.heartbeat()) => {}
            }
            let member = self.ownership.member.as_str();
            if assignee(&self.members.borrow(), self.p).is_some_and(|m| m != member) {
                tracing::info!(
                    partition = self.p,
                    "partition assigned elsewhere; handing it over"
                );
                owned.cancel();
                return;
            }
            match lease.renew(&mut self.conn, ttl).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    lost(self.p, "another member holds it");
                    owned.cancel();
                    return;
                }
                Err(e) if renewed.elapsed() >= ttl => {
                    lost(self.p, &e.to_string());
                    owned.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, partition = self.p, "lease renewal failed"),
            }
        }
    }
}

/// Waits for a change of the members or `every`, whichever comes first.
async fn tick(members: &mut watch::Receiver<Vec<String>>, every: Duration) {
    let sleep = tokio::time::sleep(every);
    tokio::pin!(sleep);
    tokio::select! {
        Ok(()) = members.changed() => {}
        _ = &mut sleep => {}
    }
}

fn lost(p: u16, why: &str) {
    tracing::warn!(
        partition = p,
        why,
        "partition lease lost; stopping work on it"
    );
    metrics::counter!("analytics_streams_leases_lost_total", "partition" => p.to_string())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_round_robin_over_the_sorted_members() {
        let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let owners: Vec<_> = (0..7).map(|p| assignee(&members, p).unwrap()).collect();
        assert_eq!(owners, ["a", "b", "c", "a", "b", "c", "a"]);
        assert_eq!(assignee(&[], 0), None);
    }

    #[test]
    fn a_lease_lives_in_its_partitions_slot() {
        let ownership = Ownership {
            prefix: "x".into(),
            group: "enricher".into(),
            member: "host/1".into(),
            lease_ttl: Duration::from_secs(6),
        };
        let lease = ownership.lease(3);
        assert_eq!(lease.key, "x:lease:enricher:{p3}");
        assert_eq!(lease.token, "host/1");
        assert_eq!(ownership.heartbeat(), Duration::from_secs(1));
        assert_eq!(ownership.member_ttl(), Duration::from_secs(3));
    }
}
