//! Suite `kv`: real `replicated-kv` processes on loopback (SQLite on disk in a temporary
//! directory), driven over HTTP/1.1 by a built-in load generator.
//!
//! 1. Baseline, same run: one process at level `none` (a one-node cluster cannot meet `one`:
//!    levels count peers), the same load for each concurrency.
//! 2. For each cluster size (`--nodes`, default 3) and level (`--consistency`, default `one`
//!    and `quorum`) and concurrency: throughput and latency of the 50/40/10 PUT/GET/DELETE
//!    mix, with the ratio against the baseline at the same concurrency.
//! 3. Fault phase, on the first cluster size of two or more: under the load at the last level
//!    and the highest concurrency, SIGKILL the last node (never node 1, the seed), wait until
//!    the survivors see it gone, restart it on its data directory, and time how long until it
//!    answers, is a live member on every node, serves a put and a get at each level, and has a
//!    key written while it was down (through repair). Failed requests are counted by kind, and
//!    the time of the last one is reported against the restart.

mod cluster;
mod http;
mod load;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use self::cluster::{locate_binary, KvCluster};
use self::http::request_once;
use self::load::{Load, LoadResult, LoadSpec, Mix, KEYSPACE};
use crate::config::{ConsistencyLevel, RunConfig};
use crate::report::{count, Measurement, SuiteReport};

/// How long a cluster may take to form, or a restarted node to recover.
const DEADLINE: Duration = Duration::from_secs(60);

/// Keys of the load (drawn uniformly).
const KEYS: u64 = 10_000;

/// Bytes of each PUT's value.
const VALUE_LEN: usize = 128;

/// Sizes of one profile.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Measured time per cell (after a warm-up of a fifth of it).
    cell: Duration,
    /// Load before the kill.
    before_kill: Duration,
    /// Least time the node stays down after the survivors noticed.
    down: Duration,
    /// Load after the node has recovered.
    after: Duration,
}

/// Runs the suite.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    let bin = locate_binary(cfg.kv_bin.as_deref())?;
    cfg.progress
        .note(format!("replicated-kv binary: {}", bin.display()));
    let timing = cfg.pick(
        Timing {
            cell: Duration::from_millis(300),
            before_kill: Duration::from_millis(300),
            down: Duration::from_millis(300),
            after: Duration::from_millis(200),
        },
        Timing {
            cell: Duration::from_secs(2),
            before_kill: Duration::from_secs(1),
            down: Duration::from_secs(1),
            after: Duration::from_secs(1),
        },
        Timing {
            cell: Duration::from_secs(6),
            before_kill: Duration::from_secs(3),
            down: Duration::from_secs(5),
            after: Duration::from_secs(3),
        },
    );
    let concurrency = cfg.concurrency_or(&cfg.pick(vec![4], vec![8, 64], vec![1, 16, 64, 256]));
    let levels: Vec<String> = cfg
        .consistency
        .as_deref()
        .unwrap_or(&[ConsistencyLevel::One, ConsistencyLevel::Quorum])
        .iter()
        .map(|l| l.to_node().to_string())
        .collect();
    let sizes: Vec<u32> = cfg.nodes_or(&[3]).into_iter().filter(|&n| n >= 2).collect();
    let mut measurements = Vec::new();

    // The baseline: one process, level none.
    cfg.progress.scenario("starting 1 replicated-kv process");
    let mut single = KvCluster::start(&bin, 1, "baseline")?;
    single.wait_formed(1, DEADLINE).await?;
    let mut baseline = BTreeMap::new();
    for &c in &concurrency {
        let label = format!("1 node, none, {c} conns");
        let result = cell(cfg, &single, "none", c, timing.cell, &label).await?;
        baseline.insert(c, result.ops_per_sec());
        measurements.push(row(&label, "replicated-kv", &result).with_point(
            "1 node, none (baseline)",
            "connections",
            c as f64,
        ));
    }
    drop(single);

    let mut fault_done = false;
    for &n in &sizes {
        cfg.progress
            .scenario(format!("starting {n} replicated-kv processes"));
        let mut cluster = KvCluster::start(&bin, n, "cluster")?;
        let formed = cluster.wait_formed(n as usize, DEADLINE).await?;
        measurements.push(
            Measurement::new(
                format!("{n} nodes: start -> all live members"),
                "replicated-kv",
            )
            .with_value(ms(formed), "ms"),
        );
        for level in &levels {
            for &c in &concurrency {
                let label = format!("{n} nodes, {level}, {c} conns");
                let result = cell(cfg, &cluster, level, c, timing.cell, &label).await?;
                let mut m = row(&label, "replicated-kv", &result).with_point(
                    format!("{n} nodes, {level}"),
                    "connections",
                    c as f64,
                );
                if let Some(base) = baseline.get(&c) {
                    m = m.with_ratio(result.ops_per_sec() / base.max(1e-9));
                }
                measurements.push(m);
            }
        }
        if !fault_done {
            fault_done = true;
            let level = levels.last().cloned().unwrap_or_else(|| "quorum".into());
            let c = concurrency.iter().copied().max().unwrap_or(8);
            let spec = spec(cfg, &cluster, &level, c);
            measurements.extend(fault(cfg, &mut cluster, &spec, &levels, timing, &baseline).await?);
        }
    }
    Ok(SuiteReport {
        suite: "kv",
        measurements,
    })
}

/// The load of one cell.
fn spec(cfg: &RunConfig, cluster: &KvCluster, level: &str, concurrency: usize) -> LoadSpec {
    LoadSpec {
        targets: cluster.http_addrs(),
        concurrency,
        level: level.to_owned(),
        mix: Mix::DEFAULT,
        keys: KEYS,
        value_len: VALUE_LEN,
        seed: cfg.seed,
    }
}

/// One measured cell: a short warm-up, then `duration` of load.
async fn cell(
    cfg: &RunConfig,
    cluster: &KvCluster,
    level: &str,
    concurrency: usize,
    duration: Duration,
    label: &str,
) -> anyhow::Result<LoadResult> {
    let spec = spec(cfg, cluster, level, concurrency);
    cfg.progress.scenario(format!("{label}: warm-up"));
    load::run_for(&spec, duration / 5, |_| {}).await?;
    let result = load::run_for(&spec, duration, |done| {
        cfg.progress
            .scenario(format!("{label}: {} requests", count(done as f64)));
    })
    .await?;
    anyhow::ensure!(
        result.ok > 0,
        "{label}: no request succeeded; errors: {:?}",
        result.errors
    );
    Ok(result)
}

/// The table row of a load result (failed requests, if any, as its other figure).
fn row(label: &str, system: &str, result: &LoadResult) -> Measurement {
    let m = Measurement::new(label, system)
        .with_ops_per_sec(result.ops_per_sec())
        .with_latency(result.latency);
    match result.error_count() {
        0 => m,
        errors => m.with_value(errors as f64, "errors"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The fault phase (see the module docs); `spec` is the load it runs under.
async fn fault(
    cfg: &RunConfig,
    cluster: &mut KvCluster,
    spec: &LoadSpec,
    levels: &[String],
    timing: Timing,
    baseline: &BTreeMap<usize, f64>,
) -> anyhow::Result<Vec<Measurement>> {
    let n = cluster.nodes.len();
    let victim = n - 1;
    let seed_http = cluster.nodes[0].http;
    let victim_http = cluster.nodes[victim].http;
    let label = format!(
        "{n} nodes, {}, {} conns, node {n} killed",
        spec.level, spec.concurrency
    );
    let mut out = Vec::new();

    cfg.progress
        .scenario(format!("{label}: load before the kill"));
    let load = Load::start(spec).await;
    tokio::time::sleep(timing.before_kill).await;

    cfg.progress.scenario(format!("{label}: SIGKILL node {n}"));
    cluster.nodes[victim].kill()?;
    let killed = Instant::now();
    let noticed = poll(
        DEADLINE,
        "the survivors to see the killed node gone",
        || async {
            let mut all = true;
            for node in &cluster.nodes[..victim] {
                all &= node.live_members().await.ok() == Some(n - 1);
            }
            all
        },
    )
    .await?;
    out.push(
        Measurement::new("fault: kill -> survivors see it gone", "replicated-kv")
            .with_value(ms(noticed), "ms"),
    );
    // A key the killed node can only get through repair once it is back.
    let marker = format!("/{KEYSPACE}/fault-marker-{}?consistency=none", cfg.seed);
    let reply = request_once(seed_http, "PUT", &marker, b"written while down")
        .await
        .map_err(|f| anyhow::anyhow!("writing the marker key: {f}"))?;
    anyhow::ensure!(
        reply.status == 204,
        "writing the marker key: {}",
        reply.status
    );
    let down_until = killed + noticed.max(timing.down);
    tokio::time::sleep_until(down_until.into()).await;

    cfg.progress
        .scenario(format!("{label}: restarting node {n}"));
    cluster.restart(victim)?;
    let restarted = Instant::now();
    let mut answered = None;
    let mut member = None;
    let mut serves: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut caught_up = None;
    while answered.is_none()
        || member.is_none()
        || serves.len() < levels.len()
        || caught_up.is_none()
    {
        anyhow::ensure!(
            restarted.elapsed() < DEADLINE,
            "node {n} did not recover within {DEADLINE:?} of its restart (answers: {answered:?}, \
             member everywhere: {member:?}, levels served: {serves:?}, caught up: {caught_up:?}); \
             its log ends:\n{}",
            cluster.nodes[victim].log_tail()
        );
        if answered.is_none() {
            if let Ok(reply) = self::http::get_once(victim_http, "/health").await {
                if reply.status == 200 {
                    answered = Some(restarted.elapsed());
                }
            }
        }
        if answered.is_some() {
            if member.is_none() {
                let mut all = true;
                for node in &cluster.nodes {
                    all &= node.live_members().await.ok() == Some(n);
                }
                if all {
                    member = Some(restarted.elapsed());
                }
            }
            for level in levels {
                if serves.contains_key(level.as_str()) {
                    continue;
                }
                let path = format!("/{KEYSPACE}/probe-{level}?consistency={level}");
                let put = request_once(victim_http, "PUT", &path, b"probe").await;
                if put.is_ok_and(|r| r.status == 204) {
                    let get = request_once(victim_http, "GET", &path, b"").await;
                    if get.is_ok_and(|r| r.status == 200) {
                        serves.insert(level, restarted.elapsed());
                    }
                }
            }
            if caught_up.is_none() {
                let get = request_once(victim_http, "GET", &marker, b"").await;
                if get.is_ok_and(|r| r.status == 200) {
                    caught_up = Some(restarted.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cfg.progress
        .scenario(format!("{label}: load after recovery"));
    tokio::time::sleep(timing.after).await;
    let result = load.finish().await?;

    let mut m = row(&label, "replicated-kv", &result);
    if let Some(base) = baseline.get(&spec.concurrency) {
        m = m.with_ratio(result.ops_per_sec() / base.max(1e-9));
    }
    out.insert(0, m);
    let since = "fault: restart ->";
    let times = [
        (format!("{since} /health answers"), answered),
        (format!("{since} live member on every node"), member),
        (format!("{since} caught up (marker key, repair)"), caught_up),
    ];
    for (what, time) in times {
        if let Some(time) = time {
            out.push(Measurement::new(what, "replicated-kv").with_value(ms(time), "ms"));
        }
    }
    if let Some(last) = result.last_failure {
        // Negative: the load saw its last failure before the restart.
        let after = if last >= restarted {
            ms(last - restarted)
        } else {
            -ms(restarted - last)
        };
        out.push(
            Measurement::new(
                format!("{since} the load's last failed request"),
                "replicated-kv",
            )
            .with_value(after, "ms"),
        );
    }
    for (level, time) in serves {
        out.push(
            Measurement::new(
                format!("{since} put+get at {level} via it"),
                "replicated-kv",
            )
            .with_value(ms(time), "ms"),
        );
    }
    if result.errors.is_empty() {
        out.push(
            Measurement::new("fault: failed requests", "replicated-kv").with_value(0.0, "errors"),
        );
    }
    for (kind, errors) in &result.errors {
        out.push(
            Measurement::new(format!("fault: failed requests, {kind}"), "replicated-kv")
                .with_value(*errors as f64, "errors"),
        );
    }
    Ok(out)
}

/// Polls `check` every 20 ms until it holds; how long that took, or an error after `deadline`.
async fn poll<F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(start.elapsed() < deadline, "waited {deadline:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
