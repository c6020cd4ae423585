//! Behind a reverse proxy: the documented nginx example (deploy/nginx) in
//! front of an edge mounted under `/api/v1/analytics`, with the client
//! address taken from X-Forwarded-For only when a trusted proxy sent it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

const PREFIX: &str = "/api/v1/analytics";
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Runs deploy/nginx/analytics.conf as it is, pointed at `upstream`.
fn start_nginx(dir: &Path, port: u16, upstream: u16) -> Proc {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/analytics.conf");
    let site = std::fs::read_to_string(example)
        .unwrap()
        .replace("127.0.0.1:3002", &format!("127.0.0.1:{upstream}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    std::fs::create_dir_all(dir.join("temp")).unwrap();
    std::fs::write(dir.join("analytics.conf"), site).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/temp/body;\nproxy_temp_path {d}/temp/proxy;\n\
             fastcgi_temp_path {d}/temp/fastcgi;\nuwsgi_temp_path {d}/temp/uwsgi;\n\
             scgi_temp_path {d}/temp/scgi;\ninclude {d}/analytics.conf;\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx (Debian package nginx)");
    let proc = Proc(child);
    wait_until(Duration::from_secs(20), || {
        http(port, "GET", &format!("{PREFIX}/healthz"), &[], "").is_ok_and(|r| r.0 == 200)
    });
    proc
}

fn track(conn: &mut Conn, path: &str, creds: &Credentials, forwarded: &str) -> u16 {
    let mut headers = creds.headers();
    headers.push(("x-forwarded-for", forwarded));
    let body = r#"{"type":"track","payload":{"name":"proxied"}}"#;
    conn.send("POST", path, &headers, body.as_bytes())
        .unwrap()
        .0
}

/// The client address of every event on the raw stream.
fn raw_ips(setup: &Setup) -> Vec<String> {
    let mut ips: Vec<String> = setup
        .documents("raw")
        .concat()
        .iter()
        .map(|document| {
            let event: serde_json::Value = serde_json::from_str(document).unwrap();
            event["ip"].as_str().unwrap().to_owned()
        })
        .collect();
    ips.sort();
    ips
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn nginx_example_forwards_the_prefix_and_the_real_client_address() {
    let setup = Setup::new(BIN, "proxy")
        .with("ANALYTICS_PATH_PREFIX", PREFIX)
        .with("ANALYTICS_CLIENT_IP_HEADER", "x-forwarded-for")
        .with("ANALYTICS_TRUSTED_PROXIES", "127.0.0.1");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Proxied");
    let _edge = setup.spawn(&["edge"]);
    let nginx_port = free_port();
    let _nginx = start_nginx(&setup.data_dir.join("nginx"), nginx_port, setup.port);

    // Through nginx from 127.0.0.2, with a forged header: nginx appends
    // 127.0.0.2, which is what the edge must record.
    let mut via_proxy = Conn::open_from(CLIENT, nginx_port).unwrap();
    let path = format!("{PREFIX}/track");
    assert_eq!(track(&mut via_proxy, &path, &creds, "6.6.6.6"), 202);
    // Straight to the edge from an untrusted peer: the header is ignored.
    let mut direct = Conn::open_from(CLIENT, setup.port).unwrap();
    assert_eq!(track(&mut direct, &path, &creds, "5.5.5.5"), 202);
    // Outside the prefix nothing is served but health and metrics.
    let (status, _, body) = direct
        .send("POST", "/track", &creds.headers(), b"{}")
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("error"), "{body}");
    let (status, _, _) = direct.send("GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);

    assert_eq!(raw_ips(&setup), ["127.0.0.2", "127.0.0.2"]);

    // The probe the container images use answers through the same config.
    let probe = setup.command(&["probe", "/readyz"]).output().unwrap();
    assert!(probe.status.success(), "{probe:?}");
    let missing = setup.command(&["probe", "/nowhere"]).output().unwrap();
    assert!(!missing.status.success());
}
