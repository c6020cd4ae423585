//! The API server's `App` driven in-process, without sockets or servers:
//! metadata in SQLite, Redis and ClickHouse addresses where nothing
//! answers. What is refused before any store is asked (credentials, the
//! wrong project, malformed bodies and parameters, unknown paths) gets its
//! documented answer; an event that cannot be written is never a 202.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use analytics::{Apis, App, AppDeps, ConsumerHealth};
use analytics_config::Config;
use analytics_edge::{Edge, EdgeDeps};
use analytics_insights::{Insights, InsightsDeps};
use analytics_meta::{ClientKind, Meta, NewClient};
use analytics_store::{Store, StoreSettings};
use analytics_streams::{RedisTarget, connect_on_first_use};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Loopback addresses where nothing listens (port 9 is discard, closed here).
const NO_REDIS: &str = "redis://127.0.0.1:9";
const NO_CLICKHOUSE: &str = "http://127.0.0.1:9";

struct Fixture {
    app: App,
    project: String,
    write: NewClient,
    read: NewClient,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fixture(env: &[(&str, &str)]) -> Fixture {
    let mut vars = vec![
        ("ANALYTICS_REDIS_URL".to_owned(), NO_REDIS.to_owned()),
        (
            "ANALYTICS_CLICKHOUSE_URL".to_owned(),
            NO_CLICKHOUSE.to_owned(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Arc::new(Config::load(None, vars).expect("configuration"));
    let meta = Meta::connect("sqlite::memory:").await.expect("sqlite");
    meta.migrate().await.expect("metadata migrations");
    let project = meta.create_project("Shop", &[]).await.expect("project");
    let write = meta
        .create_client(&project.id, ClientKind::Write)
        .await
        .unwrap();
    let read = meta
        .create_client(&project.id, ClientKind::Read)
        .await
        .unwrap();
    let target = RedisTarget::new([NO_REDIS], false).expect("redis target");
    let redis = connect_on_first_use(&target, Duration::from_secs(2)).expect("lazy redis");
    let shutdown = CancellationToken::new();
    let edge_deps = EdgeDeps {
        redis,
        meta: meta.clone(),
        metrics: Arc::new(String::new),
    };
    let (edge, _writer) = Edge::new(config.clone(), edge_deps, shutdown.clone());
    let store = Store::new(&StoreSettings {
        url: NO_CLICKHOUSE.into(),
        database: "default".into(),
        user: "default".into(),
        password: String::new(),
        cluster: None,
    });
    let insights = Insights::new(&config, InsightsDeps { store, meta });
    let deps = AppDeps {
        edge,
        insights: Some(insights),
        consumers: ConsumerHealth::default(),
    };
    Fixture {
        app: App::new(&config, Apis::ALL, deps),
        project: project.id,
        write,
        read,
        shutdown,
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

impl Fixture {
    async fn call(
        &self,
        method: &str,
        path: &str,
        client: Option<&NewClient>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(client) = client {
            request = request
                .header("openpanel-client-id", &client.id)
                .header("openpanel-client-secret", &client.secret);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self.app.handle(request, peer()).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }
}

const EVENT: &str = r#"{"type":"track","payload":{"name":"screen_view","deviceId":"d1"}}"#;

#[tokio::test]
async fn ingest_refusals_name_the_problem() {
    let f = fixture(&[]).await;
    let (status, body) = f.call("POST", "/track", None, EVENT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "missing openpanel-client-id header");
    let mut wrong = f.write.clone();
    wrong.secret = "sec_wrong".into();
    let (status, body) = f.call("POST", "/track", Some(&wrong), EVENT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid client secret");
    let (status, body) = f.call("POST", "/track", Some(&f.write), "{\"type\":").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let missing_name = r#"{"type":"track","payload":{}}"#;
    let (status, body) = f.call("POST", "/track", Some(&f.write), missing_name).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["field"].as_str().is_some_and(|f| f.contains("name")),
        "{body}"
    );
    let (status, _) = f.call("GET", "/track", Some(&f.write), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = f.call("GET", "/nowhere", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_event_redis_does_not_take_is_a_503_never_a_202() {
    let f = fixture(&[]).await;
    let (status, body) = f.call("POST", "/track", Some(&f.write), EVENT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "event queue unavailable, retry later");
    let (status, _) = f.call("GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = f.call("GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn insights_check_the_client_and_the_parameters_before_asking_clickhouse() {
    let f = fixture(&[]).await;
    let metrics = format!(
        "/insights/{}/metrics?startDate=2026-01-01&endDate=2026-01-07",
        f.project
    );
    let (status, body) = f.call("GET", &metrics, Some(&f.write), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "this client may not read insights");
    let other = "/insights/another-project/metrics?startDate=2026-01-01&endDate=2026-01-07";
    let (status, body) = f.call("GET", other, Some(&f.read), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "this client belongs to another project");
    let bad_date = format!(
        "/insights/{}/metrics?startDate=yesterday&endDate=2026-01-07",
        f.project
    );
    let (status, body) = f.call("GET", &bad_date, Some(&f.read), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "startDate", "{body}");
    let unknown = format!("/insights/{}/top/planets", f.project);
    let (status, body) = f.call("GET", &unknown, Some(&f.read), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "dimension", "{body}");
    let (status, _) = f
        .call(
            "GET",
            &format!("/insights/{}/nothing", f.project),
            Some(&f.read),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Past the checks, an absent ClickHouse is the store's outage: 503.
    let (status, body) = f.call("GET", &metrics, Some(&f.read), "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn the_path_prefix_is_stripped_and_required() {
    let f = fixture(&[("ANALYTICS_PATH_PREFIX", "/api")]).await;
    let (status, _) = f.call("POST", "/track", None, EVENT).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = f.call("POST", "/api/track", None, EVENT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
