//! Runs the harness binary in its smallest configuration and checks that it completes and
//! writes a results file holding every selected suite's figures. It never checks that a
//! figure is fast.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_benchmarks"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the harness binary starts")
}

/// Runs the harness with `args` plus `--smoke --out <out>`, asserts it succeeded, and returns
/// its stdout and the parsed `latest.json` (with its text, for failure messages).
fn smoke_run(out: &Path, args: &[&str]) -> (String, serde_json::Value, String) {
    let mut all = args.to_vec();
    all.extend(["--smoke", "--out", out.to_str().unwrap()]);
    let output = harness(&all);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "harness failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let json = std::fs::read_to_string(out.join("latest.json")).expect("latest.json written");
    let record = serde_json::from_str(&json).expect("results parse as JSON");
    (stdout, record, json)
}

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_smallest_run_writes_every_suites_figures() {
    let out = out_dir("run");
    let (stdout, record, json) = smoke_run(
        &out,
        &[
            "--suite", "crdt", "--suite", "rpc", "--suite", "gossip", "--suite", "ec",
        ],
    );
    assert_eq!(record["parameters"]["profile"], "smoke");
    assert!(record["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(record["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    let suites = record["suites"].as_array().expect("a suites array");
    for name in ["crdt", "rpc", "gossip", "ec"] {
        let suite = suites
            .iter()
            .find(|s| s["suite"] == name)
            .unwrap_or_else(|| panic!("suite {name} missing from {json}"));
        let figures = suite["figures"].as_array().expect("a figures array");
        assert!(!figures.is_empty(), "suite {name} has no figures");
        for figure in figures {
            let has_a_number = ["ops_per_sec", "p50_us", "value"]
                .iter()
                .any(|k| figure[k].as_f64().is_some());
            assert!(has_a_number, "figure without a number: {figure}");
        }
        assert!(
            out.join(format!("{name}.svg")).exists(),
            "no chart for {name}"
        );
        assert!(stdout.contains(&format!("== suite {name}")), "{stdout}");
    }

    // Comparing a run with itself finds no regression.
    let again = harness(&[
        "--suite",
        "crdt",
        "--smoke",
        "--out",
        out.to_str().unwrap(),
        "--compare",
        out.join("latest.json").to_str().unwrap(),
        "--regression-threshold",
        "1000000",
    ]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 regressions"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn an_unknown_suite_is_refused_with_the_valid_names() {
    let output = harness(&["--suite", "bogus", "--smoke"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["crdt", "rpc", "gossip", "ec"] {
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn a_storage_a_suite_cannot_use_is_refused() {
    let out = out_dir("sqlite");
    let output = harness(&[
        "--suite",
        "crdt",
        "--storage",
        "sqlite",
        "--smoke",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sqlite"), "{stderr}");
    assert!(!out.join("latest.json").exists(), "nothing may run");
}

#[test]
fn a_sqlite_run_runs_the_suites_that_store() {
    let out = out_dir("ec-sqlite");
    let (_, record, json) = smoke_run(&out, &["--storage", "sqlite"]);
    let suites: Vec<&str> = record["suites"]
        .as_array()
        .expect("a suites array")
        .iter()
        .filter_map(|s| s["suite"].as_str())
        .collect();
    // Without --suite, a run on SQLite runs exactly the suites that can use it.
    assert_eq!(suites, ["ec", "sqlite", "raft"], "{json}");
    assert_eq!(record["parameters"]["storage"], "sqlite", "{json}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The `replicated-kv` binary beside the harness binary (both in `target/<profile>/`).
fn kv_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_benchmarks"))
        .with_file_name(format!("replicated-kv{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn the_kv_suite_drives_real_processes_through_a_sigkill() {
    let bin = kv_binary();
    if !bin.is_file() {
        // `cargo test --workspace` (CI, the README's test command) builds it; `cargo test -p
        // benchmarks` alone does not.
        eprintln!(
            "SKIPPED: no {}; run `cargo build -p replicated-kv` (or `cargo test --workspace`)",
            bin.display()
        );
        return;
    }
    let out = out_dir("kv");
    let (stdout, record, json) = smoke_run(&out, &["--suite", "kv"]);
    let suite = record["suites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["suite"] == "kv"))
        .unwrap_or_else(|| panic!("suite kv missing from {json}"));
    let figures = suite["figures"].as_array().expect("a figures array");
    let scenarios: Vec<&str> = figures
        .iter()
        .filter_map(|f| f["scenario"].as_str())
        .collect();
    for expected in [
        "1 node, none, 4 conns",
        "3 nodes, one, 4 conns",
        "3 nodes, quorum, 4 conns",
        "3 nodes, quorum, 4 conns, node 3 killed",
        "fault: restart -> live member on every node",
        "fault: restart -> put+get at quorum via it",
        "fault: restart -> caught up (marker key, repair)",
    ] {
        assert!(scenarios.contains(&expected), "no {expected:?} in {json}");
    }
    assert!(
        scenarios
            .iter()
            .any(|s| s.starts_with("fault: failed requests")),
        "{json}"
    );
    assert!(out.join("kv.svg").exists(), "no chart for kv");
    assert!(stdout.contains("== suite kv"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_kv_suite_names_the_build_command_when_its_binary_is_missing() {
    let out = out_dir("kv-missing");
    let output = harness(&[
        "--suite",
        "kv",
        "--smoke",
        "--kv-bin",
        "/nonexistent/replicated-kv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cargo build --release -p replicated-kv"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
