//! The metadata database under the real binary: migrations, admin
//! commands and authentication on SQLite, MariaDB and PostgreSQL (the
//! last two when `scripts/test.sh` started them), made-up client ids from
//! one address, and an outage of the database.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

const EVENT: &str = r#"{"type":"track","payload":{"name":"signup"}}"#;

/// A metadata database of its own on every server this run offers: the
/// default SQLite file (`None`), and MariaDB and PostgreSQL when their
/// server URLs are set.
fn metadata_urls(test: &str) -> Vec<(&'static str, Option<String>)> {
    let name = unique(test);
    let servers = block_on(analytics_meta::testing::scratch_databases(
        test,
        &name,
        |var| std::env::var(var).ok(),
    ));
    let mut all = vec![("sqlite", None)];
    all.extend(servers.into_iter().map(|(kind, url)| (kind, Some(url))));
    all
}

fn setup_on(test: &str, url: Option<&str>) -> Setup {
    let setup = Setup::new(BIN, test);
    match url {
        Some(url) => setup.with("ANALYTICS_METADATA_URL", url),
        None => setup,
    }
}

fn send(port: u16, headers: &[(&str, &str)]) -> Reply {
    http(port, "POST", "/track", headers, EVENT).unwrap()
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn migrations_admin_commands_and_authentication_work_on_every_metadata_database() {
    for (kind, url) in metadata_urls("meta_auth") {
        let setup = setup_on("meta_auth", url.as_deref());
        let project = setup.create_project("Shop", &["https://shop.example"]);
        let write = setup.client(&project, "write");
        let read = setup.client(&project, "read");
        for start in 0..2 {
            // The second start migrates the existing tables again.
            let edge = setup.spawn(&["edge"]);
            // No device id: the edge derives one from the day's salt, which
            // the first request creates.
            let (status, _, body) = send(setup.port, &write.headers());
            assert_eq!(status, 202, "{kind}, start {start}: {body}");
            let wrong = [
                ("openpanel-client-id", write.id.as_str()),
                ("openpanel-client-secret", "sec_wrong"),
            ];
            assert_eq!(send(setup.port, &wrong).0, 401, "{kind}");
            let browser = [
                ("openpanel-client-id", write.id.as_str()),
                ("origin", "https://shop.example"),
            ];
            assert_eq!(send(setup.port, &browser).0, 202, "{kind}");
            let elsewhere = [
                ("openpanel-client-id", write.id.as_str()),
                ("origin", "https://evil.example"),
            ];
            assert_eq!(send(setup.port, &elsewhere).0, 403, "{kind}");
            assert_eq!(send(setup.port, &read.headers()).0, 403, "{kind}");
            let unknown = [
                (
                    "openpanel-client-id",
                    "00000000-0000-4000-8000-000000000000",
                ),
                ("openpanel-client-secret", "sec_x"),
            ];
            assert_eq!(send(setup.port, &unknown).0, 401, "{kind}");
            drop(edge);
        }
        assert_eq!(setup.raw_len(), 4, "{kind}");
    }
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn made_up_client_ids_from_one_address_are_refused_before_the_database() {
    let setup = Setup::new(BIN, "made_up").with("ANALYTICS_CLIENT_IP_HEADER", "x-forwarded-for");
    let creds = setup.create_client("Shop");
    let _edge = setup.spawn(&["edge"]);
    let mut real = creds.headers();
    real.push(("x-forwarded-for", "203.0.113.9"));
    assert_eq!(send(setup.port, &real).0, 202);
    let from = |ip: &'static str, id: &str| {
        let headers = [
            ("openpanel-client-id", id),
            ("openpanel-client-secret", "sec_x"),
            ("x-forwarded-for", ip),
        ];
        send(setup.port, &headers)
    };
    let replies: Vec<Reply> = (0..150)
        .map(|n| from("203.0.113.9", &format!("made-up-{n}")))
        .collect();
    let statuses: Vec<u16> = replies.iter().map(|r| r.0).collect();
    assert!(statuses[..40].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 50,
        "{statuses:?}"
    );
    let refused = replies.iter().find(|r| r.0 == 429).unwrap();
    assert!(
        refused
            .1
            .iter()
            .any(|(k, v)| k == "retry-after" && v == "1"),
        "{:?}",
        refused.1
    );
    // The real client, known before the flood, still passes from the same
    // address; another address has a budget of its own.
    assert_eq!(send(setup.port, &real).0, 202);
    assert_eq!(from("198.51.100.4", "made-up-elsewhere").0, 401);
}

/// The `host:port` of a `scheme://user@host:port/db` URL, and the same URL
/// with another port.
fn through_relay(url: &str) -> (String, impl Fn(u16) -> String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (user, target) = authority.split_once('@').unwrap();
    let host = target.rsplit_once(':').unwrap().0.to_owned();
    let (scheme, user, path) = (scheme.to_owned(), user.to_owned(), path.to_owned());
    (target.to_owned(), move |port| {
        format!("{scheme}://{user}@{host}:{port}/{path}")
    })
}

/// Forwards connections on `port` to `target` until cut.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(port: u16, target: String) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (stop, links) = (stop.clone(), links.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((inbound, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let Ok(outbound) = TcpStream::connect(&target) else {
                        continue;
                    };
                    inbound.set_nonblocking(false).unwrap();
                    let mut all = links.lock().unwrap();
                    all.push(inbound.try_clone().unwrap());
                    all.push(outbound.try_clone().unwrap());
                    pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                    pipe(outbound, inbound);
                }
            })
        };
        Relay {
            port,
            stop,
            links,
            thread: Some(thread),
        }
    }

    /// Stops accepting and cuts every forwarded connection.
    fn cut(mut self) -> u16 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        for link in self.links.lock().unwrap().drain(..) {
            let _ = link.shutdown(Shutdown::Both);
        }
        self.port
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_metadata_outage_answers_503_with_retry_after_and_recovers() {
    let servers: Vec<_> = metadata_urls("meta_outage")
        .into_iter()
        .filter_map(|(kind, url)| Some((kind, url?)))
        .collect();
    if servers.is_empty() {
        eprintln!(
            "a_metadata_outage_answers_503_with_retry_after_and_recovers: no server to cut off"
        );
    }
    for (kind, url) in servers {
        let (target, relayed) = through_relay(&url);
        let relay = Relay::start(0, target.clone());
        let setup = setup_on("meta_outage", Some(&relayed(relay.port)));
        let seen = setup.create_client("Seen");
        let unseen = setup.create_client("Unseen");
        let _edge = setup.spawn(&["edge"]);
        assert_eq!(send(setup.port, &seen.headers()).0, 202, "{kind}");

        let port = relay.cut();
        let started = Instant::now();
        let (status, headers, body) = send(setup.port, &unseen.headers());
        assert_eq!(status, 503, "{kind}: {body}");
        assert!(
            headers.iter().any(|(k, _)| k == "retry-after"),
            "{kind}: {headers:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{kind}: took {:?}",
            started.elapsed()
        );
        // A client cached before the outage is still admitted.
        assert_eq!(send(setup.port, &seen.headers()).0, 202, "{kind}");

        let _back = Relay::start(port, target);
        wait_until(Duration::from_secs(30), || {
            send(setup.port, &unseen.headers()).0 == 202
        });
    }
}
