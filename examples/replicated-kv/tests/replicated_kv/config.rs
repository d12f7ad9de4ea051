//! Configuration: the shipped example file, environment variables over the file and flags
//! over both, unknown keys and bad values (exit status 2). `--print-config` prints the
//! settings in force as JSON.

use serde_json::Value;
use test_helper::process::{print_config, refused_config};

use crate::fixtures::{temp_dir, BIN, DEADLINE};

/// The example file shipped beside the crate.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/replicated-kv.toml");

async fn check(args: &[&str], env: &[(&str, &str)]) -> Value {
    print_config(BIN, args, env, DEADLINE).await
}

async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    refused_config(BIN, args, env, DEADLINE).await
}

#[tokio::test]
async fn the_example_file_is_valid() {
    let config = check(&["--config", EXAMPLE], &[]).await;
    assert_eq!(config["node_id"], 1);
    assert_eq!(config["cluster_addr"], "127.0.0.1:7001");
    assert_eq!(
        config["public_addr"], "127.0.0.1:7001",
        "defaults to cluster_addr"
    );
    assert_eq!(config["data_dir"], "data/1");
    assert_eq!(config["seeds"].as_array().unwrap().len(), 3);
    assert_eq!(config["sqlite_synchronous"], "normal");
    assert_eq!(config["shutdown_timeout_ms"], 10_000);
    assert_eq!(config["stall_timeout_ms"], 10_000);
    assert_eq!(config["tls_ca"], Value::Null);
    // Without a file: the defaults.
    let config = check(&["--node-id", "9"], &[]).await;
    assert_eq!(config["http_addr"], "127.0.0.1:8001");
    assert_eq!(config["max_body_bytes"], 1 << 20);
    assert_eq!(config["repair_interval_ms"], 1000);
    assert_eq!(config["open_health"], false);
}

#[tokio::test]
async fn environment_variables_override_the_file_and_flags_override_both() {
    let env = [
        ("DATACAKE_CONFIG", EXAMPLE),
        ("DATACAKE_NODE_ID", "5"),
        ("DATACAKE_DATA_CENTER", "eu-west"),
        ("DATACAKE_SEEDS", "127.0.0.1:7101,127.0.0.1:7102"),
        ("DATACAKE_OPEN_HEALTH", "true"),
        ("DATACAKE_SQLITE_SYNCHRONOUS", "full"),
        ("DATACAKE_MAX_BODY_BYTES", "2048"),
        ("DATACAKE_STALL_TIMEOUT_MS", "2500"),
    ];
    let config = check(&["--node-id", "6", "--max-body-bytes", "4096"], &env).await;
    assert_eq!(config["node_id"], 6, "the flag wins");
    assert_eq!(config["max_body_bytes"], 4096, "the flag wins");
    assert_eq!(config["data_center"], "eu-west");
    assert_eq!(
        config["seeds"],
        serde_json::json!(["127.0.0.1:7101", "127.0.0.1:7102"])
    );
    assert_eq!(config["open_health"], true);
    assert_eq!(config["sqlite_synchronous"], "full");
    assert_eq!(config["stall_timeout_ms"], 2500);
    assert_eq!(config["data_dir"], "data/1", "the file's");
    // The same through the `serve` subcommand.
    let config = check(&["serve"], &env).await;
    assert_eq!(config["node_id"], 5);
}

#[tokio::test]
async fn unknown_keys_and_bad_values_are_refused_with_status_2() {
    let dir = temp_dir("config");
    let write = |name: &str, text: &str| dir.write(name, text);
    let typo = write("typo.toml", "node_id = 1\nrepair_interval = 3\n");
    let stderr = refused(&["--config", &typo], &[]).await;
    assert!(
        stderr.contains("unknown field `repair_interval`"),
        "{stderr}"
    );
    let bad_type = write("type.toml", "node_id = 1\nmax_connections = \"many\"\n");
    let stderr = refused(&["--config", &bad_type], &[]).await;
    assert!(stderr.contains("max_connections"), "{stderr}");
    let bad_enum = write("enum.toml", "node_id = 1\nsqlite_synchronous = \"off\"\n");
    let stderr = refused(&["--config", &bad_enum], &[]).await;
    assert!(stderr.contains("sqlite_synchronous"), "{stderr}");
    let missing = dir.path().join("missing.toml").display().to_string();
    let stderr = refused(&["--config", &missing], &[]).await;
    assert!(stderr.contains("cannot read the config file"), "{stderr}");

    let stderr = refused(&[], &[]).await;
    assert!(stderr.contains("node_id is required"), "{stderr}");
    let stderr = refused(&["--node-id", "1"], &[("DATACAKE_MAX_CONNECTIONS", "0")]).await;
    assert!(stderr.contains("invalid max_connections"), "{stderr}");
    let stderr = refused(&["--node-id", "1", "--stall-timeout-ms", "0"], &[]).await;
    assert!(stderr.contains("invalid stall_timeout_ms"), "{stderr}");
    let stderr = refused(&[], &[("DATACAKE_NODE_ID", "-1")]).await;
    assert!(stderr.contains("--node-id"), "{stderr}");
    let stderr = refused(&["--node-id", "1", "--tls-ca", "ca.pem"], &[]).await;
    assert!(
        stderr.contains("tls_cert is required with tls_ca"),
        "{stderr}"
    );
    let stderr = refused(&["--node-id", "1", "--cluster-addr", "0.0.0.0:7001"], &[]).await;
    assert!(stderr.contains("public_addr"), "{stderr}");
}
