//! Configuration: the shipped example file, unknown keys, environment variables over the
//! file and flags over both, bad values. `--print-config` prints the settings in force as
//! JSON.

use serde_json::Value;

use crate::fixtures::{run_binary, temp_dir, BIN, DEADLINE};

/// The example file shipped beside the crate.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/raft-kv.toml");

/// The settings `args` resolve to, which must be valid.
async fn check(args: &[&str]) -> Value {
    check_with_env(args, &[]).await
}

/// The settings `args` and the environment variables `env` resolve to, which must be valid.
async fn check_with_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    test_helper::process::print_config(BIN, args, env, DEADLINE).await
}

/// Runs with `args`, which must be refused as a configuration error (exit status 2, no
/// panic), and returns stderr.
async fn refused(args: &[&str]) -> String {
    refused_with_env(args, &[]).await
}

/// Like [`refused`], with the environment variables `env`.
async fn refused_with_env(args: &[&str], env: &[(&str, &str)]) -> String {
    test_helper::process::refused_config(BIN, args, env, DEADLINE).await
}

#[tokio::test]
async fn the_example_file_is_valid() {
    let config = check(&["--config", EXAMPLE]).await;
    assert_eq!(config["node_id"], 1);
    assert_eq!(config["bootstrap_expect"], 3);
    assert_eq!(config["cluster_addr"], "127.0.0.1:7001");
    assert_eq!(config["public_addr"], "127.0.0.1:7001");
    assert_eq!(config["http_addr"], "127.0.0.1:8001");
    assert_eq!(config["data_dir"], "data/1");
    assert_eq!(config["seeds"].as_array().unwrap().len(), 3);
    assert_eq!(config["timings"]["election_timeout_min_ms"], 1500);
    assert_eq!(config["limits"]["max_body_bytes"], 64 << 10);
    assert_eq!(config["limits"]["stall_timeout_ms"], 10_000);
    assert_eq!(config["shutdown_timeout_ms"], 10_000);
    // The old name of --print-config still works.
    let run = run_binary(&["--config", EXAMPLE, "--check-config"]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(serde_json::from_str::<Value>(&run.stdout).unwrap(), config);
}

#[tokio::test]
async fn environment_variables_override_the_file_and_flags_override_both() {
    let config = check_with_env(
        &["--node-id", "6"],
        &[
            ("DATACAKE_CONFIG", EXAMPLE),
            ("DATACAKE_NODE_ID", "5"),
            ("DATACAKE_HTTP_ADDR", "127.0.0.1:8105"),
            ("DATACAKE_SEEDS", "127.0.0.1:7101,127.0.0.1:7102"),
            ("DATACAKE_SHUTDOWN_TIMEOUT_MS", "2500"),
            ("DATACAKE_TIMINGS_HEARTBEAT_INTERVAL_MS", "200"),
            ("DATACAKE_LIMITS_MAX_KEY_BYTES", "100"),
            ("DATACAKE_LIMITS_STALL_TIMEOUT_MS", "2500"),
        ],
    )
    .await;
    assert_eq!(config["node_id"], 6, "the flag wins");
    assert_eq!(config["http_addr"], "127.0.0.1:8105");
    assert_eq!(
        config["seeds"],
        serde_json::json!(["127.0.0.1:7101", "127.0.0.1:7102"])
    );
    assert_eq!(config["shutdown_timeout_ms"], 2500);
    assert_eq!(config["timings"]["heartbeat_interval_ms"], 200);
    assert_eq!(config["limits"]["max_key_bytes"], 100);
    assert_eq!(config["limits"]["stall_timeout_ms"], 2500);
    // Not overridden: the file's.
    assert_eq!(config["bootstrap_expect"], 3);
    assert_eq!(config["timings"]["election_timeout_min_ms"], 1500);

    // A bad value in a variable: status 2, naming the setting.
    let env = [
        ("DATACAKE_NODE_ID", "one"),
        ("DATACAKE_BOOTSTRAP_EXPECT", "1"),
    ];
    let stderr = refused_with_env(&["--print-config"], &env).await;
    assert!(stderr.contains("--node-id"), "{stderr}");
    let env = [
        ("DATACAKE_NODE_ID", "1"),
        ("DATACAKE_BOOTSTRAP_EXPECT", "1"),
        ("DATACAKE_TIMINGS_HEARTBEAT_INTERVAL_MS", "5000"),
    ];
    let stderr = refused_with_env(&["--print-config"], &env).await;
    assert!(stderr.contains("timings.heartbeat_interval_ms"), "{stderr}");
}

#[tokio::test]
async fn flags_override_the_file() {
    let config = check(&[
        "--config",
        EXAMPLE,
        "--node-id",
        "2",
        "--cluster-addr",
        "127.0.0.1:7102",
        "--http-addr",
        "127.0.0.1:8102",
        "--seed",
        "127.0.0.1:7101",
        "--heartbeat-interval-ms",
        "100",
        "--max-key-bytes",
        "32",
    ])
    .await;
    assert_eq!(config["node_id"], 2);
    assert_eq!(config["cluster_addr"], "127.0.0.1:7102");
    // Not overridden: still the file's.
    assert_eq!(config["public_addr"], "127.0.0.1:7001");
    assert_eq!(config["bootstrap_expect"], 3);
    assert_eq!(config["seeds"], serde_json::json!(["127.0.0.1:7101"]));
    assert_eq!(config["timings"]["heartbeat_interval_ms"], 100);
    assert_eq!(config["timings"]["election_timeout_max_ms"], 3000);
    assert_eq!(config["limits"]["max_key_bytes"], 32);
    // Without a file: the defaults.
    let config = check(&["--node-id", "9", "--bootstrap-expect", "1"]).await;
    assert_eq!(config["public_addr"], "127.0.0.1:7001");
    assert_eq!(config["data_dir"], "./data");
    assert_eq!(config["timings"]["request_timeout_ms"], 10_000);
}

#[tokio::test]
async fn unknown_keys_and_bad_values_are_refused_with_status_2() {
    let dir = temp_dir("config");
    let write = |name: &str, text: &str| dir.write(name, text);
    let typo = write("typo.toml", "node_id = 1\nbootstrap_expct = 3\n");
    let stderr = refused(&["--config", &typo]).await;
    assert!(
        stderr.contains("unknown field `bootstrap_expct`"),
        "{stderr}"
    );
    let nested = write(
        "nested.toml",
        "node_id = 1\nbootstrap_expect = 1\n[timings]\nelection_timeout_ms = 5\n",
    );
    let stderr = refused(&["--config", &nested]).await;
    assert!(stderr.contains("election_timeout_ms"), "{stderr}");
    let swapped = write(
        "swapped.toml",
        "node_id = 1\nbootstrap_expect = 3\n[timings]\nelection_timeout_min_ms = 900\nelection_timeout_max_ms = 300\n",
    );
    let stderr = refused(&["--config", &swapped]).await;
    assert!(stderr.contains("election_timeout_max_ms"), "{stderr}");
    let bad_type = write("type.toml", "node_id = \"one\"\n");
    let stderr = refused(&["--config", &bad_type]).await;
    assert!(stderr.contains("node_id"), "{stderr}");
    let missing = dir.path().join("missing.toml").display().to_string();
    let stderr = refused(&["--config", &missing]).await;
    assert!(stderr.contains("cannot read the config file"), "{stderr}");

    // Bad values by flag: refused before anything starts (no --print-config needed); the
    // unit tests of `config` go through every check.
    let base = ["--node-id", "1", "--bootstrap-expect", "1"];
    for (extra, key) in [
        (
            &["--heartbeat-interval-ms", "2000"][..],
            "heartbeat_interval_ms",
        ),
        (&["--max-body-bytes", "1048576"][..], "max_body_bytes"),
        (&["--stall-timeout-ms", "0"][..], "limits.stall_timeout_ms"),
        (&["--cluster-addr", "0.0.0.0:7001"][..], "public_addr"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let stderr = refused(&args).await;
        assert!(stderr.contains(key), "{extra:?}: {stderr}");
    }
    let stderr = refused(&["--node-id", "1", "--bootstrap-expect", "0"]).await;
    assert!(stderr.contains("bootstrap_expect"), "{stderr}");
    let stderr = refused(&["--bootstrap-expect", "1"]).await;
    assert!(stderr.contains("node_id is required"), "{stderr}");
    let stderr = refused(&["--node-id", "1", "--bootstrap-expect=-1"]).await;
    assert!(stderr.contains("--bootstrap-expect"), "{stderr}");
}
