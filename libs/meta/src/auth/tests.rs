use std::net::Ipv4Addr;

use crate::{ClientKind, MetaError};

use super::*;

/// The URL of a database of its own on every server this run offers:
/// SQLite always; MySQL/MariaDB and PostgreSQL when `scripts/test.sh`
/// started them (`TEST_MYSQL_URL`, `TEST_POSTGRES_URL`).
async fn databases(test: &str) -> Vec<(&'static str, String)> {
    let name = format!("auth_{test}_{}", std::process::id());
    let servers = crate::testing::scratch_databases(test, &name, |var| std::env::var(var).ok());
    let mut all = vec![("sqlite", "sqlite::memory:".to_owned())];
    all.extend(servers.await);
    all
}

async fn migrated(url: &str) -> Meta {
    let meta = Meta::connect(url).await.unwrap();
    meta.migrate().await.unwrap();
    meta
}

/// A client id and secret as a request presents them.
#[derive(Clone)]
struct Presented {
    id: String,
    secret: String,
}

impl Presented {
    fn get(&self) -> Credentials<'_> {
        Credentials {
            id: Some(&self.id),
            secret: Some(&self.secret),
            origin: None,
        }
    }
}

fn credentials(id: &str, secret: &str) -> Presented {
    Presented {
        id: id.to_owned(),
        secret: secret.to_owned(),
    }
}

/// How an authentication ended, as a client would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Admitted,
    Refused,
    /// Too many lookups from one address: retry later.
    Limited,
}

/// A project with one write client on `meta`: the client's id and headers.
async fn write_client(meta: &Meta) -> (String, Presented) {
    let project = meta.create_project("Shop", &[]).await.unwrap();
    let client = meta
        .create_client(&project.id, ClientKind::Write)
        .await
        .unwrap();
    let headers = credentials(&client.id, &client.secret);
    (client.id, headers)
}

/// An authenticator whose one client is cached, then revoked in the database.
async fn revoked_after_caching(meta: Meta, ttl: Duration) -> (Authenticator, Presented) {
    let (client, headers) = write_client(&meta).await;
    let auth = Authenticator::new(meta.clone(), ttl);
    assert!(auth.authenticate(headers.get()).await.is_ok());
    assert!(meta.revoke_client(&client).await.unwrap());
    (auth, headers)
}

fn id(headers: &Presented) -> &str {
    &headers.id
}

fn address(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

async fn status_from(auth: &Authenticator, headers: &Presented, ip: IpAddr) -> Outcome {
    match charged_to(ip, auth.authenticate(headers.get())).await {
        Ok(_) => Outcome::Admitted,
        Err(AuthError::TooManyLookups) => Outcome::Limited,
        Err(AuthError::Meta(e)) => panic!("metadata failed: {e}"),
        Err(_) => Outcome::Refused,
    }
}

fn unknown(n: usize) -> Presented {
    credentials(&format!("made-up-{n}"), "sec_x")
}

#[tokio::test]
async fn an_expired_entry_is_looked_up_again_by_its_first_caller() {
    for (kind, url) in databases("expired").await {
        let meta = migrated(&url).await;
        let (auth, headers) = revoked_after_caching(meta, Duration::from_millis(20)).await;
        // Within the TTL the cached answer stands, revoked or not.
        assert!(auth.authenticate(headers.get()).await.is_ok(), "{kind}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(auth.authenticate(headers.get()).await.is_err(), "{kind}");
        // The lookup landed: nothing stays in flight.
        assert!(auth.in_flight.lock().unwrap().is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn callers_during_a_refresh_keep_the_old_answer_for_a_bounded_time() {
    let meta = migrated("sqlite::memory:").await;
    let (auth, headers) = revoked_after_caching(meta, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    // Another caller is refreshing this id: this one is served the old
    // answer instead of querying too.
    let refresh = auth.lookup_of(id(&headers));
    assert!(auth.authenticate(headers.get()).await.is_ok());
    auth.in_flight.lock().unwrap().clear();
    drop(refresh);
    assert!(auth.authenticate(headers.get()).await.is_err());
}

#[tokio::test]
async fn past_the_grace_callers_look_up_rather_than_keep_the_old_answer() {
    let meta = migrated("sqlite::memory:").await;
    let (auth, headers) = revoked_after_caching(meta, Duration::from_millis(20)).await;
    // Age the entry past TTL + grace while a refresh is recorded.
    if let Ok(mut known) = auth.known.write() {
        let entry = known.get_mut(id(&headers)).unwrap();
        entry.0 = Instant::now() - Duration::from_millis(20) - REFRESH_GRACE;
    }
    let _recorded = auth.lookup_of(id(&headers));
    assert!(auth.authenticate(headers.get()).await.is_err());
}

#[tokio::test]
async fn unknown_ids_never_push_known_clients_out_of_the_cache() {
    for (kind, url) in databases("evict").await {
        let meta = migrated(&url).await;
        // Revoked after caching: only the cache can still admit it.
        let (auth, known) = revoked_after_caching(meta, Duration::from_secs(600)).await;
        let flood = MAX_MISSES + 500;
        for n in 0..flood {
            // Many addresses, each within its lookup budget.
            let ip = address((n / 25) as u32);
            assert_eq!(
                status_from(&auth, &unknown(n), ip).await,
                Outcome::Refused,
                "{kind}"
            );
        }
        assert!(auth.misses.lock().unwrap().len() <= MAX_MISSES, "{kind}");
        assert_eq!(
            status_from(&auth, &known, address(0)).await,
            Outcome::Admitted,
            "{kind}: a known client was evicted"
        );
    }
}

#[tokio::test]
async fn lookups_of_unknown_ids_are_limited_per_address_and_misses_are_cached() {
    for (kind, url) in databases("budget").await {
        let meta = migrated(&url).await;
        let (_, good) = write_client(&meta).await;
        let auth = Authenticator::new(meta, Duration::from_secs(30));
        let ip = address(1);
        assert_eq!(status_from(&auth, &good, ip).await, Outcome::Admitted);
        let mut statuses = Vec::new();
        for n in 0..100 {
            statuses.push(status_from(&auth, &unknown(n), ip).await);
        }
        let refused = statuses.iter().filter(|s| **s == Outcome::Limited).count();
        assert!(
            statuses[..40].iter().all(|s| *s == Outcome::Refused),
            "{kind}: {statuses:?}"
        );
        assert!(refused >= 40, "{kind}: only {refused} of 100 refused");
        // Cached answers cost nothing: the known client, and an id
        // already found missing.
        assert_eq!(
            status_from(&auth, &good, ip).await,
            Outcome::Admitted,
            "{kind}"
        );
        assert_eq!(
            status_from(&auth, &unknown(0), ip).await,
            Outcome::Refused,
            "{kind}"
        );
        // Another address has a budget of its own.
        assert_eq!(
            status_from(&auth, &unknown(500), address(2)).await,
            Outcome::Refused,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn concurrent_requests_for_a_new_client_share_one_lookup() {
    for (kind, url) in databases("single").await {
        let meta = migrated(&url).await;
        let (_, headers) = write_client(&meta).await;
        let auth = Arc::new(Authenticator::new(meta, Duration::from_secs(30)));
        // Far more requests than one address's lookup budget, all at once
        // on a cold cache (as right after a start): one lookup serves all.
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let (auth, headers) = (auth.clone(), headers.clone());
                tokio::spawn(async move { status_from(&auth, &headers, address(7)).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Outcome::Admitted, "{kind}");
        }
    }
}

/// Forwards connections to `target` until dropped; dropping it also cuts
/// every forwarded connection.
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                links.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { port, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_metadata_outage_is_reported_as_unavailable() {
    let servers: Vec<_> = databases("outage")
        .await
        .into_iter()
        .filter(|(kind, _)| *kind != "sqlite")
        .collect();
    if servers.is_empty() {
        eprintln!("a_metadata_outage_is_reported_as_unavailable: no database server to cut off");
    }
    for (kind, url) in servers {
        let mut through_relay = url::Url::parse(&url).unwrap();
        let target = format!(
            "{}:{}",
            through_relay.host_str().unwrap(),
            through_relay.port().unwrap()
        );
        let relay = Relay::start(target).await;
        through_relay.set_port(Some(relay.port)).unwrap();
        let meta = migrated(through_relay.as_str()).await;
        let project = meta.create_project("Shop", &[]).await.unwrap();
        let client = meta
            .create_client(&project.id, ClientKind::Write)
            .await
            .unwrap();
        let auth = Authenticator::new(meta, Duration::from_secs(30));
        drop(relay);
        let started = Instant::now();
        let presented = credentials(&client.id, &client.secret);
        let refused = auth.authenticate(presented.get()).await.unwrap_err();
        assert!(
            matches!(refused, AuthError::Meta(MetaError::Unavailable(_))),
            "{kind}: {refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{kind}: took {:?}",
            started.elapsed()
        );
    }
}
