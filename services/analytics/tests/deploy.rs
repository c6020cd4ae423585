//! Deployment files checked against the real tools and against the binary:
//! `docker-compose config` (docker-compose 1.29) for docker-compose.yml,
//! `kubernetes-validate --strict` for k8s/, and for both, every stage's
//! command, environment and port run through `analytics config`, which
//! refuses unknown `ANALYTICS_*` variables and bad values by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use analytics_testkit::{run_with_input, unique, var};
use serde_json::Value;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML document of `text`, as JSON (PyYAML from the compose tools' virtualenv).
fn yaml_documents(text: &str) -> Vec<Value> {
    let (ok, stdout, stderr) = run_with_input(
        Command::new(var("TEST_DEPLOY_PYTHON")).args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ]),
        text.as_bytes(),
    );
    assert!(ok, "YAML did not parse: {stderr}");
    serde_json::from_slice(&stdout).unwrap()
}

/// Runs `analytics config` with exactly `env`; the effective listen port, or
/// the binary's complaint.
fn check_config(env: &BTreeMap<String, String>) -> Result<u16, String> {
    let out = Command::new(BIN)
        .arg("config")
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .expect("config prints listen");
    Ok(listen
        .trim_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap())
}

/// Whether `args` (without the binary) is a command line the binary accepts.
fn is_command(args: &[String]) -> bool {
    Command::new(BIN)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap()
        .status
        .success()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The rendered compose file (`docker-compose config`) of `file`.
fn compose_config(file: &Path) -> Result<Value, String> {
    let out = Command::new(var("TEST_DOCKER_COMPOSE"))
        .arg("-f")
        .arg(file)
        .arg("config")
        .env("CLICKHOUSE_PASSWORD", "from-env")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(yaml_documents(&String::from_utf8(out.stdout).unwrap()).remove(0))
}

/// The problems of a rendered compose file's analytics services.
fn compose_problems(config: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let services = config["services"].as_object().unwrap();
    for (name, service) in services {
        // The services built from this repository run the binary.
        if service.get("build").is_none() {
            continue;
        }
        let command = strings(&service["command"]);
        if !is_command(&command) {
            problems.push(format!("{name}: the binary has no command {command:?}"));
        }
        let env: BTreeMap<String, String> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let port = match check_config(&env) {
            Ok(port) => port,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        for published in service["ports"].as_array().into_iter().flatten() {
            let target = published["target"]
                .as_u64()
                .or_else(|| published.as_str()?.rsplit(':').next()?.parse().ok());
            if target != Some(u64::from(port)) {
                problems.push(format!(
                    "{name}: publishes {published} but listens on {port}"
                ));
            }
        }
        let health = strings(&service["healthcheck"]["test"]);
        if health.get(1).map(String::as_str) == Some("analytics") && !is_command(&health[2..]) {
            problems.push(format!("{name}: health check {health:?} is no command"));
        }
    }
    problems
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn compose_file_is_valid_and_every_service_matches_the_binary() {
    let file = repo().join("docker-compose.yml");
    let config = compose_config(&file).unwrap_or_else(|e| panic!("docker-compose config: {e}"));
    assert_eq!(compose_problems(&config), Vec::<String>::new());

    let services = &config["services"];
    let names: BTreeSet<&str> = services
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for expected in [
        "redis",
        "clickhouse",
        "migrate",
        "edge",
        "insights",
        "enricher",
        "sink",
    ] {
        assert!(names.contains(expected), "no {expected} service");
    }
    let redis = strings(&services["redis"]["command"]).join(" ");
    assert!(redis.contains("--appendonly yes"), "{redis}");
    let clickhouse = &services["clickhouse"];
    let image = clickhouse["image"].as_str().unwrap();
    let tag = image.rsplit(':').next().unwrap();
    assert!(
        tag.chars().next().unwrap().is_ascii_digit(),
        "ClickHouse image not pinned to a release: {image}"
    );
    assert!(
        strings(&clickhouse["healthcheck"]["test"])
            .join(" ")
            .contains("/ping")
    );
    assert!(
        clickhouse["volumes"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );
    assert_eq!(
        services["edge"]["environment"]["ANALYTICS_CLICKHOUSE_PASSWORD"], "from-env",
        "the password comes from the environment"
    );
    for stage in ["edge", "insights", "enricher", "sink"] {
        let deps = &services[stage]["depends_on"];
        assert_eq!(
            deps["migrate"]["condition"],
            "service_completed_successfully"
        );
        assert_eq!(deps["clickhouse"]["condition"], "service_healthy");
        assert_eq!(deps["redis"]["condition"], "service_healthy");
    }
    for scalable in ["enricher", "sink"] {
        let service = &services[scalable];
        assert!(
            service.get("container_name").is_none() && service.get("ports").is_none(),
            "{scalable} must scale with --scale"
        );
    }
    assert!(
        services["edge"]["ports"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn compose_check_catches_a_misspelt_variable_and_command() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let broken = text
        .replace("ANALYTICS_LISTEN:", "ANALYTICS_LISTENER:")
        .replace("command: [\"sink\"]", "command: [\"sinks\"]");
    let dir = std::env::temp_dir().join(unique("compose"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), broken).unwrap();
    let config = compose_config(&dir.join("docker-compose.yml")).unwrap();
    let problems = compose_problems(&config).join("\n");
    assert!(problems.contains("ANALYTICS_LISTENER"), "{problems}");
    assert!(problems.contains("sinks"), "{problems}");
}

#[test]
fn dockerfile_environment_is_known_to_the_binary() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    let joined = runtime.replace("\\\n", " ");
    let env: BTreeMap<String, String> = joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(env.contains_key("ANALYTICS_LISTEN"), "{env:?}");
    let port = check_config(&env).unwrap();
    assert!(runtime.contains(&format!("EXPOSE {port}")));
    let health = runtime
        .lines()
        .find_map(|l| l.split_once("CMD [").map(|(_, c)| c))
        .unwrap();
    let args: Vec<String> = health
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .collect();
    assert_eq!(args[0], "analytics");
    assert!(is_command(&args[1..]), "{args:?}");
}

fn k8s_documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo().join("k8s")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in yaml_documents(&std::fs::read_to_string(&path).unwrap()) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(var("TEST_KUBERNETES_VALIDATE"))
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn k8s_manifests_pass_kubernetes_validate() {
    let dir = repo().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    let (ok, report) = kubernetes_validate(&files);
    assert!(ok, "{report}");
    // Only the Prometheus Operator's ServiceMonitor has no built-in schema.
    for line in report.lines().filter(|l| l.starts_with("WARN")) {
        assert!(line.contains("kind ServiceMonitor"), "{line}");
    }

    let broken = std::env::temp_dir().join(format!("{}.yaml", unique("k8s")));
    let text = std::fs::read_to_string(dir.join("sink.yaml")).unwrap();
    std::fs::write(
        &broken,
        text.replace("terminationGracePeriodSeconds", "terminationGraceSeconds"),
    )
    .unwrap();
    let (ok, report) = kubernetes_validate(&[broken]);
    assert!(!ok, "a misspelt field passed: {report}");
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn kustomization_lists_every_manifest() {
    let dir = repo().join("k8s");
    let kustomization =
        yaml_documents(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).remove(0);
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn k8s_workloads_match_the_binary() {
    let docs = k8s_documents();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let mut base = BTreeMap::new();
    for (kind, name, field) in [
        ("ConfigMap", "analytics-config", "data"),
        ("Secret", "analytics-secrets", "stringData"),
    ] {
        for (k, v) in find(kind, name)[field].as_object().unwrap() {
            base.insert(k.clone(), v.as_str().unwrap().to_owned());
        }
    }
    let mut workloads = 0;
    for (file, doc) in &docs {
        let pod = match doc["kind"].as_str().unwrap() {
            "Deployment" | "Job" => &doc["spec"]["template"]["spec"],
            _ => continue,
        };
        workloads += 1;
        for container in pod["containers"].as_array().unwrap() {
            let args = strings(&container["args"]);
            assert!(is_command(&args), "{file}: no command {args:?}");
            let mut env = base.clone();
            for var in container["env"].as_array().into_iter().flatten() {
                let name = var["name"].as_str().unwrap().to_owned();
                let value = var["value"].as_str().unwrap_or("from-the-downward-api");
                env.insert(name, value.to_owned());
            }
            let port = check_config(&env).unwrap_or_else(|e| panic!("{file}: {e}"));
            for declared in container["ports"].as_array().into_iter().flatten() {
                assert_eq!(declared["containerPort"], u64::from(port), "{file}");
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                if let Some(path) = container[probe]["httpGet"]["path"].as_str() {
                    assert!(["/readyz", "/healthz"].contains(&path), "{file}: {path}");
                }
            }
            if doc["kind"] == "Deployment" {
                assert!(container["readinessProbe"].is_object(), "{file}");
                assert!(container["livenessProbe"].is_object(), "{file}");
                assert!(
                    container["resources"]["limits"]["memory"].is_string(),
                    "{file}"
                );
            }
        }
    }
    assert_eq!(workloads, 5, "edge, insights, enricher, sink, migrate");

    for stage in ["analytics-enricher", "analytics-sink"] {
        let deployment = find("Deployment", stage);
        let pod = &deployment["spec"]["template"]["spec"];
        assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 30);
        let env = &pod["containers"][0]["env"];
        let consumer = env
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "ANALYTICS_CONSUMER_NAME")
            .expect("consumer name from the pod");
        assert_eq!(
            consumer["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let pdb = find("PodDisruptionBudget", stage);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
    }
    let hpa = find("HorizontalPodAutoscaler", "analytics-edge");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "analytics-edge");
    find("ServiceMonitor", "analytics");

    let mut broken = base.clone();
    broken.insert("ANALYTICS_SINK_MAX_ROW".into(), "5".into());
    let err = check_config(&broken).unwrap_err();
    assert!(err.contains("ANALYTICS_SINK_MAX_ROW"), "{err}");
}
