//! End-to-end tests of `analytics up` on real Redis and ClickHouse.

use std::process::Command;
use std::time::Duration;

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

fn count(setup: &Setup, project: &str) -> u64 {
    setup
        .query(&format!(
            "SELECT count() FROM events WHERE project_id = '{project}'"
        ))
        .parse()
        .unwrap_or(0)
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn ten_thousand_events_arrive_exactly_once() {
    let setup = Setup::new(BIN, "tenk");
    let _up = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let headers = creds.headers();
    std::thread::scope(|s| {
        // Ten connections send 400 single events each, ten send 6 batches of 100 each.
        for t in 0..20u32 {
            let headers = headers.clone();
            let port = setup.port;
            s.spawn(move || {
                let mut conn = Conn::open(port).unwrap();
                if t < 10 {
                    for i in 0..400u32 {
                        let body = format!(
                            r#"{{"type":"track","payload":{{"name":"single_{}","properties":{{"n":{i},"t":{t}}}}}}}"#,
                            i % 3
                        );
                        let (status, _, text) = conn.send("POST", "/track", &headers, body.as_bytes()).unwrap();
                        assert_eq!(status, 202, "{text}");
                    }
                } else {
                    for b in 0..6u32 {
                        let events: Vec<String> = (0..100u32)
                            .map(|i| {
                                format!(
                                    r#"{{"type":"track","payload":{{"name":"batched","properties":{{"n":{},"t":{t}}}}}}}"#,
                                    b * 100 + i
                                )
                            })
                            .collect();
                        let body = format!("[{}]", events.join(","));
                        let (status, _, text) = conn.send("POST", "/batch", &headers, body.as_bytes()).unwrap();
                        assert_eq!(status, 202, "{text}");
                        assert!(text.contains(r#""accepted":100"#), "{text}");
                    }
                }
            });
        }
    });
    wait_until(Duration::from_secs(90), || {
        count(&setup, &creds.project_id) >= 10_000
    });
    std::thread::sleep(Duration::from_secs(1));
    let summary = setup.query(&format!(
        "SELECT count(), uniqExact(id), countIf(name = 'batched'), countIf(name LIKE 'single_%'), \
         sum(visitParamExtractUInt(properties, 'n')) FROM events WHERE project_id = '{}'",
        creds.project_id
    ));
    // n runs 0..399 on each single connection and 0..599 on each batch connection;
    // i % 3 gives 134/133/133 singles per connection.
    let expected_sum = 10 * (399 * 400 / 2) + 10 * (599 * 600 / 2);
    assert_eq!(summary, format!("10000\t10000\t6000\t4000\t{expected_sum}"));
    let names =
        setup.query("SELECT name, count() FROM events GROUP BY name ORDER BY name FORMAT TSV");
    assert_eq!(
        names,
        "batched\t6000\nsingle_0\t1340\nsingle_1\t1330\nsingle_2\t1330"
    );
}

fn error_body(response: &Reply) -> serde_json::Value {
    serde_json::from_str(&response.2).unwrap_or_else(|_| panic!("not JSON: {:?}", response.2))
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn every_error_status_answers_json_and_writes_nothing() {
    // A cap of one event and 4 KiB bodies make the 503 and the 413 cheap
    // to provoke; the hostile corpus sends bodies past the shipped 1 MiB,
    // and the cap at its shipped size is a matter of memory, not of this
    // answer (see the overload test).
    let setup = Setup::new(BIN, "errors")
        .with("ANALYTICS_REDIS_MAX_STREAM_LEN", "1")
        .with("ANALYTICS_EDGE_MAX_BODY_BYTES", "4096");
    let project = setup.admin(&[
        "project",
        "create",
        "--name",
        "Web",
        "--origin",
        "https://shop.example",
    ]);
    let project_id = project["id"].as_str().unwrap();
    let write = setup.admin(&[
        "client",
        "create",
        "--project",
        project_id,
        "--type",
        "write",
    ]);
    let read = setup.admin(&[
        "client",
        "create",
        "--project",
        project_id,
        "--type",
        "read",
    ]);
    let (wid, wsecret) = (
        write["id"].as_str().unwrap(),
        write["secret"].as_str().unwrap(),
    );
    let (rid, rsecret) = (
        read["id"].as_str().unwrap(),
        read["secret"].as_str().unwrap(),
    );
    let _edge = setup.spawn(&["edge"]);
    let auth = [
        ("openpanel-client-id", wid),
        ("openpanel-client-secret", wsecret),
    ];
    let valid = r#"{"type":"track","payload":{"name":"a"}}"#;
    let big = format!(
        r#"{{"type":"track","payload":{{"name":"a","properties":{{"x":"{}"}}}}}}"#,
        "y".repeat(5000)
    );

    // (headers, path, body, expected status, expected `field`)
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        &'a str,
        String,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (auth.to_vec(), "/track", "{not json".into(), 400, None),
        (
            auth.to_vec(),
            "/track",
            r#"{"type":"launch","payload":{}}"#.into(),
            400,
            Some("type"),
        ),
        (
            auth.to_vec(),
            "/track",
            r#"{"type":"track","payload":{}}"#.into(),
            400,
            Some("payload.name"),
        ),
        (
            auth.to_vec(),
            "/identify",
            r#"{"email":"a@b.c"}"#.into(),
            400,
            Some("profileId"),
        ),
        (
            auth.to_vec(),
            "/batch",
            format!("[{valid},{{}}]"),
            400,
            Some("[1].type"),
        ),
        (auth.to_vec(), "/track", "".into(), 400, None),
        (vec![], "/track", valid.into(), 401, None),
        (
            vec![
                ("openpanel-client-id", wid),
                ("openpanel-client-secret", "sec_wrong"),
            ],
            "/track",
            valid.into(),
            401,
            None,
        ),
        (
            vec![("openpanel-client-id", "no-such-client")],
            "/track",
            valid.into(),
            401,
            None,
        ),
        (
            vec![
                ("openpanel-client-id", wid),
                ("origin", "https://evil.example"),
            ],
            "/track",
            valid.into(),
            403,
            None,
        ),
        (
            vec![
                ("openpanel-client-id", rid),
                ("openpanel-client-secret", rsecret),
            ],
            "/track",
            valid.into(),
            403,
            None,
        ),
        (auth.to_vec(), "/track", big, 413, None),
    ];
    for (headers, path, body, status, field) in cases {
        let response = http(setup.port, "POST", path, &headers, &body).unwrap();
        assert_eq!(response.0, status, "{path} {body:.80}: {}", response.2);
        let json = error_body(&response);
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
        assert_eq!(json["field"].as_str(), field, "{json}");
    }
    assert_eq!(setup.raw_len(), 0, "a refused request reached the stream");

    // A browser on an allowed origin needs no secret; preflight is answered.
    let browser = [
        ("openpanel-client-id", wid),
        ("origin", "https://shop.example"),
    ];
    let pre = http(
        setup.port,
        "OPTIONS",
        "/track",
        &[("origin", "https://shop.example")],
        "",
    )
    .unwrap();
    assert_eq!(pre.0, 204);
    assert!(
        pre.1
            .iter()
            .any(|(k, v)| k == "access-control-allow-origin" && v == "https://shop.example")
    );
    let ok = http(setup.port, "POST", "/track", &browser, valid).unwrap();
    assert_eq!(ok.0, 202, "{}", ok.2);
    assert!(
        error_body(&ok)["deviceId"]
            .as_str()
            .is_some_and(|d| d.len() == 32)
    );
    assert_eq!(setup.raw_len(), 1);

    // The partition cap is 1 and nothing consumes: the edge must push back.
    std::thread::sleep(Duration::from_millis(600));
    let mut saw_503 = false;
    for device in 0..16 {
        let body = format!(r#"{{"type":"track","payload":{{"name":"a","deviceId":"d{device}"}}}}"#);
        let response = http(setup.port, "POST", "/track", &auth, &body).unwrap();
        if response.0 == 503 {
            saw_503 = true;
            assert!(response.1.iter().any(|(k, _)| k == "retry-after"));
            assert!(error_body(&response)["error"].is_string());
        }
    }
    assert!(saw_503, "no 503 although a partition is over its cap");
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn redis_down_answers_503() {
    let dir = std::path::PathBuf::from(var("TEST_WORK_DIR")).join(unique("redis"));
    let port = free_port();
    let redis = start_redis(&dir, port, &[]);
    let mut setup = Setup::new(BIN, "redisdown");
    setup.redis_url = format!("redis://127.0.0.1:{port}");
    let _up = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let valid = r#"{"type":"track","payload":{"name":"a"}}"#;
    assert_eq!(
        http(setup.port, "POST", "/track", &creds.headers(), valid)
            .unwrap()
            .0,
        202
    );
    drop(redis);
    let response = http(setup.port, "POST", "/track", &creds.headers(), valid).unwrap();
    assert_eq!(response.0, 503, "{}", response.2);
    assert!(response.1.iter().any(|(k, _)| k == "retry-after"));
    let ready = http(setup.port, "GET", "/readyz", &[], "").unwrap();
    assert_eq!(ready.0, 503);
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn clickhouse_outage_loses_nothing() {
    let dir = std::path::PathBuf::from(var("TEST_WORK_DIR")).join(unique("ch"));
    let (http_port, tcp_port) = (free_port(), free_port());
    clickhouse_config(&dir, http_port, tcp_port);
    let start = || start_clickhouse(&dir, http_port);
    let clickhouse = start();
    let mut setup = Setup::new(BIN, "choutage");
    setup.clickhouse_url = format!("http://127.0.0.1:{http_port}");
    let _up = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let send = |from: u32| {
        let mut conn = Conn::open(setup.port).unwrap();
        for i in from..from + 500 {
            let body =
                format!(r#"{{"type":"track","payload":{{"name":"o","properties":{{"n":{i}}}}}}}"#);
            let (status, _, text) = conn
                .send("POST", "/track", &creds.headers(), body.as_bytes())
                .unwrap();
            assert_eq!(status, 202, "{text}");
        }
    };
    send(0);
    let mut clickhouse = clickhouse;
    let _ = clickhouse.0.kill();
    let _ = clickhouse.0.wait();
    send(500);
    std::thread::sleep(Duration::from_secs(4));
    let _clickhouse = start();
    wait_until(Duration::from_secs(90), || {
        count(&setup, &creds.project_id) >= 1000
    });
    std::thread::sleep(Duration::from_secs(2));
    let summary = setup.query(&format!(
        "SELECT count(), uniqExact(id), uniqExact(visitParamExtractUInt(properties, 'n')) FROM events WHERE project_id = '{}'",
        creds.project_id
    ));
    assert_eq!(summary, "1000\t1000\t1000");
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn openpanel_sdk_events_arrive() {
    let setup = Setup::new(BIN, "sdk");
    let _up = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/client.cjs");
    let out = Command::new("node")
        .arg(script)
        .env("NODE_PATH", var("TEST_SDK_NODE_PATH"))
        .env("API_URL", format!("http://127.0.0.1:{}", setup.port))
        .env("CLIENT_ID", &creds.id)
        .env("CLIENT_SECRET", &creds.secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), || {
        count(&setup, &creds.project_id) >= 4
    });
    std::thread::sleep(Duration::from_millis(500));
    let events = setup.query(&format!(
        "SELECT name, profile_id, sdk_name, visitParamExtractRaw(properties, 'amount') FROM events \
         WHERE project_id = '{}' ORDER BY name FORMAT TSV",
        creds.project_id
    ));
    assert_eq!(
        events,
        "decrement\tsdk-user\tnode\t\nidentify\tsdk-user\tnode\t\nincrement\tsdk-user\tnode\t\nsdk_purchase\tsdk-user\tnode\t42"
    );
    let profile = setup.query(
        "SELECT argMax(first_name, version), argMax(email, version), \
         argMax(properties, version) FROM profiles WHERE id = 'sdk-user' FORMAT TSV",
    );
    let fields: Vec<&str> = profile.split('\t').collect();
    assert_eq!(fields[..2], ["Ada", "ada@example.com"], "{profile}");
    // TSV escapes backslashes only; these properties have none.
    let properties: serde_json::Value = serde_json::from_str(fields[2]).unwrap();
    assert_eq!(properties["logins"], 2, "{profile}");
    assert_eq!(properties["credits"], -1, "{profile}");
}
