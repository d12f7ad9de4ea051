//! The container and orchestration files in `deploy/` (no container runtime runs here): they
//! parse, and the settings they give the server are ones the binary accepts, so they cannot
//! rot silently when a setting is renamed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

use crate::fixtures::{free_ports, temp_dir, KvNode, BIN, DEADLINE};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("read deploy/{file}: {e}"))
}

/// Every YAML document in `file`.
fn yaml(file: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The Dockerfile's instructions, as (keyword, rest of the line), continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let joined = read("Dockerfile").replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (keyword.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

/// The image's `ENV` settings.
fn image_env() -> BTreeMap<String, String> {
    dockerfile()
        .into_iter()
        .filter(|(keyword, _)| keyword == "ENV")
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .map(|pair| {
                    let (name, value) = pair.split_once('=').expect("ENV name=value");
                    (name.to_owned(), value.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The settings `env` gives the server, from its `--print-config` (which refuses bad values
/// with status 2). The server ignores `DATACAKE_*` names that are no setting of its own, so
/// each name is checked against the settings it printed (`DATACAKE_` and the key,
/// upper-cased).
async fn settings(env: &BTreeMap<String, String>) -> serde_json::Value {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let settings = test_helper::process::print_config(BIN, &[], &pairs, DEADLINE).await;
    for name in env.keys() {
        let key = name
            .strip_prefix("DATACAKE_")
            .unwrap_or_else(|| panic!("{name} is not a DATACAKE_ variable"))
            .to_lowercase();
        assert!(
            settings.get(&key).is_some(),
            "{name} names no setting of replicated-kv"
        );
    }
    settings
}

#[tokio::test]
async fn the_image_builds_both_servers_and_runs_them_unprivileged() {
    let steps = dockerfile();
    let stages = steps.iter().filter(|(k, _)| k == "FROM").count();
    assert!(stages >= 2, "a multi-stage build ({stages} stage)");
    let user = steps
        .iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, u)| u.clone())
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as {user}"
    );
    assert!(steps.contains(&("VOLUME".into(), "/data".into())));
    for bin in ["replicated-kv", "raft-kv"] {
        assert!(
            steps
                .iter()
                .any(|(k, rest)| k == "COPY" && rest.contains(&format!("target/release/{bin}"))),
            "the image holds {bin}"
        );
    }
    assert!(steps.contains(&("ENTRYPOINT".into(), "[\"replicated-kv\"]".into())));
    // The image's own settings are valid and are what it says.
    let env = image_env();
    let settings = settings(
        &env.clone()
            .into_iter()
            .chain([
                ("DATACAKE_NODE_ID".into(), "1".into()),
                ("DATACAKE_PUBLIC_ADDR".into(), "10.0.0.1:7001".into()),
            ])
            .collect(),
    )
    .await;
    assert_eq!(settings["data_dir"], "/data");
    assert_eq!(settings["cluster_addr"], "0.0.0.0:7001");
    assert_eq!(settings["http_addr"], "0.0.0.0:8001");
}

#[tokio::test]
async fn every_compose_node_is_configured_with_settings_the_server_accepts() {
    let compose = &yaml("compose.yaml")[0];
    let services = compose["services"].as_hash().expect("services");
    let image_env = image_env();
    let mut nodes = 0;
    let mut seen_ids = Vec::new();
    for (name, service) in services {
        let name = text(name);
        if !name.starts_with("kv") {
            continue;
        }
        nodes += 1;
        let mut env = image_env.clone();
        for (key, value) in service["environment"].as_hash().expect("environment") {
            env.insert(text(key), text(value));
        }
        let settings = settings(&env).await;
        seen_ids.push(settings["node_id"].clone());
        // Its public address is the one it has on the network, and a seed of the others.
        let public = settings["public_addr"]
            .as_str()
            .expect("public_addr")
            .to_owned();
        let ip = text(&service["networks"]["cluster"]["ipv4_address"]);
        assert_eq!(public, format!("{ip}:7001"), "{name}");
        let seeds: Vec<String> = settings["seeds"]
            .as_array()
            .expect("seeds")
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        assert!(seeds.contains(&public), "{name}: {public} not in {seeds:?}");
    }
    assert_eq!(nodes, 3);
    let distinct: std::collections::BTreeSet<String> =
        seen_ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(distinct.len(), 3, "distinct node ids: {seen_ids:?}");

    // Prometheus scrapes each node's HTTP port.
    let prometheus = &yaml("prometheus.yml")[0];
    let targets: Vec<String> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_vec()
        .expect("targets")
        .iter()
        .map(text)
        .collect();
    assert_eq!(targets, ["kv1:8001", "kv2:8001", "kv3:8001"]);
    for file in [
        "grafana/provisioning/datasources/prometheus.yaml",
        "grafana/provisioning/dashboards/datacake.yaml",
    ] {
        assert!(!yaml(file)[0].is_badvalue(), "{file}");
    }
}

#[tokio::test]
async fn the_kubernetes_statefulset_discovers_its_peers_through_its_headless_service() {
    let docs = yaml("k8s/replicated-kv.yaml");
    let of_kind = |kind: &str| -> Vec<&Yaml> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    };
    let headless = of_kind("Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "starting pods must find each other"
    );
    let headless_name = text(&headless["metadata"]["name"]);
    let set = of_kind("StatefulSet")[0];
    assert_eq!(text(&set["spec"]["serviceName"]), headless_name);
    assert_eq!(of_kind("PodDisruptionBudget").len(), 1);
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    assert_eq!(
        text(&container["readinessProbe"]["httpGet"]["path"]),
        "/health"
    );

    // The container's settings, with what Kubernetes fills in for a pod in `default`.
    let mut env = image_env();
    let mut refs = BTreeMap::from([
        ("POD_IP".to_owned(), "10.1.2.3".to_owned()),
        ("POD_NAMESPACE".to_owned(), "default".to_owned()),
    ]);
    for var in container["env"].as_vec().expect("env") {
        let name = text(&var["name"]);
        let value = if var["value"].is_badvalue() {
            // From the downward API: the pod index is the node id.
            let field = text(&var["valueFrom"]["fieldRef"]["fieldPath"]);
            match field.as_str() {
                "status.podIP" | "metadata.namespace" => continue,
                "metadata.labels['apps.kubernetes.io/pod-index']" => "0".to_owned(),
                other => panic!("unexpected field {other}"),
            }
        } else {
            let mut value = text(&var["value"]);
            for (from, to) in &refs {
                value = value.replace(&format!("$({from})"), to);
            }
            value
        };
        refs.insert(name.clone(), value.clone());
        if name.starts_with("DATACAKE_") {
            env.insert(name, value);
        }
    }
    let settings = settings(&env).await;
    assert_eq!(settings["node_id"], 0);
    assert_eq!(settings["public_addr"], "10.1.2.3:7001");
    assert_eq!(
        settings["discover_dns"],
        serde_json::json!([format!("{headless_name}.default.svc.cluster.local:7001")])
    );
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace");
    let shutdown_ms = settings["shutdown_timeout_ms"].as_i64().expect("timeout");
    assert!(
        shutdown_ms < grace * 1000,
        "the node's shutdown ({shutdown_ms} ms) fits the pod's grace period ({grace} s)"
    );
}

/// Every metric the Grafana dashboard queries is one a node exports.
#[tokio::test]
async fn the_dashboard_queries_metrics_a_node_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/dashboards/replicated-kv.json")).expect("JSON");
    let mut wanted = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            wanted.extend(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("kv_") || word.starts_with("datacake_"))
                    .map(str::to_owned),
            );
        }
    }
    assert!(!wanted.is_empty());

    let dir = temp_dir("dashboard");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path());
    node.start();
    node.wait_for_members(1).await;
    assert_eq!(node.put("/kv/a?consistency=none", b"1").await.status, 204);
    let metrics = node.get("/metrics").await.text().to_owned();
    for name in wanted {
        assert!(
            metrics
                .lines()
                .any(|line| line.split(['{', ' ']).next() == Some(name.as_str())),
            "{name} is not exported"
        );
    }
}
