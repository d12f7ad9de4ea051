//! Suite `rpc`: datacake-rpc against a raw tokio TCP baseline on loopback.
//!
//! Both echo a 64-byte payload ([`crate::echo`] has the two systems). The baseline uses
//! length-prefixed frames; for N calls in flight it opens N connections with one call
//! outstanding each (TCP_NODELAY on both ends). datacake-rpc multiplexes every call over one
//! `Channel`.
//!
//! Topology (the same for both): the server side runs on its own single-threaded tokio
//! runtime (one OS thread), the client side on another, as if they were two processes; the
//! two meet only through loopback sockets.
//!
//! Each comparison runs in interleaved rounds; see [`run`].

use std::time::Duration;

use crate::config::RunConfig;
use crate::echo::{
    closed_loops, raw_call, raw_sequential, rpc_call, rpc_sequential, RawConn, RawEcho, RpcEcho,
    Side, PAYLOAD,
};
use crate::report::{median, paired_ratio, Latency, Measurement, SuiteReport};

/// What the throughput chart's x axis counts.
const X_LABEL: &str = "calls in flight";

/// The suite's sizes for one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Calls before the latency samples start.
    warmup_calls: usize,
    /// Latency samples per system, over all rounds.
    latency_calls: usize,
    /// How long each throughput cell runs, over all rounds.
    window: Duration,
    /// How many interleaved rounds each comparison is split into.
    rounds: usize,
}

/// Runs the suite.
///
/// Each comparison (sequential latency, and throughput at each number of calls in flight) runs
/// in `rounds` interleaved rounds: a round measures the baseline and datacake-rpc back to back,
/// alternating which goes first, on connections opened once. The ratio printed is the median
/// of the per-round ratios ([`paired_ratio`]), latency percentiles pool every round's samples,
/// and a throughput figure is the median of its rounds. On the shared 2-core VM the machine
/// switches between phases of different speed for seconds at a time; run one after the other,
/// the two systems of a comparison could land in different phases, which moved the sequential
/// p50 ratio between runs by more than the code did.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    let sizes = Sizes {
        warmup_calls: cfg.pick(500, 20_000, 20_000),
        latency_calls: cfg.pick(2_000, 20_000, 100_000),
        window: cfg.pick(
            Duration::from_millis(200),
            Duration::from_secs(2),
            Duration::from_secs(3),
        ),
        rounds: cfg.pick(2, 8, 8),
    };
    let in_flight =
        cfg.concurrency_or(&cfg.pick(vec![1, 16], vec![1, 64, 256], vec![1, 16, 64, 256, 1_024]));
    let server_side = Side::start("rpc-bench-server")?;
    let client_side = Side::start("rpc-bench-client")?;
    let mut measurements = Vec::new();
    let raw = server_side.handle.spawn(RawEcho::start()).await??;
    let rpc = server_side.handle.spawn(RpcEcho::start()).await??;

    measurements.extend(sequential(cfg, &client_side, &raw, &rpc, sizes).await?);
    for n in in_flight {
        measurements.extend(throughput(cfg, &client_side, &raw, &rpc, n, sizes).await?);
    }

    rpc.server.shutdown().await;
    raw.server.abort();
    drop(rpc);
    server_side.stop();
    client_side.stop();
    Ok(SuiteReport {
        suite: "rpc",
        measurements,
    })
}

/// Sequential round-trip latency of both systems, in interleaved rounds.
async fn sequential(
    cfg: &RunConfig,
    client_side: &Side,
    raw: &RawEcho,
    rpc: &RpcEcho,
    sizes: Sizes,
) -> anyhow::Result<[Measurement; 2]> {
    cfg.progress.scenario("sequential latency, warm-up");
    let mut conn = client_side
        .handle
        .spawn(RawConn::connect(raw.addr))
        .await??;
    (conn, _) = client_side
        .handle
        .spawn(raw_sequential(conn, sizes.warmup_calls))
        .await??;
    client_side
        .handle
        .spawn(rpc_sequential(rpc.client.clone(), sizes.warmup_calls))
        .await??;

    let per_round = sizes.latency_calls.div_ceil(sizes.rounds);
    let (mut raw_samples, mut rpc_samples) = (Vec::new(), Vec::new());
    let (mut raw_p50s, mut rpc_p50s) = (Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
        cfg.progress.scenario(format!(
            "sequential latency, round {} of {}",
            round + 1,
            sizes.rounds
        ));
        for raw_turn in turns(round) {
            if raw_turn {
                let samples;
                (conn, samples) = client_side
                    .handle
                    .spawn(raw_sequential(conn, per_round))
                    .await??;
                raw_p50s.push(p50_secs(&samples));
                raw_samples.extend(samples);
            } else {
                let samples = client_side
                    .handle
                    .spawn(rpc_sequential(rpc.client.clone(), per_round))
                    .await??;
                rpc_p50s.push(p50_secs(&samples));
                rpc_samples.extend(samples);
            }
        }
    }
    let scenario = format!("echo {PAYLOAD} B, sequential");
    let latency = |samples: &mut Vec<Duration>| {
        Latency::from_samples(samples).ok_or_else(|| anyhow::anyhow!("no samples"))
    };
    Ok([
        Measurement::new(&scenario, "raw-tcp").with_latency(Some(latency(&mut raw_samples)?)),
        Measurement::new(&scenario, "datacake-rpc")
            .with_latency(Some(latency(&mut rpc_samples)?))
            .with_ratio(paired_ratio(&rpc_p50s, &raw_p50s))
            .with_target("p50 <= 1.5x raw, p99.9 < 1 ms"),
    ])
}

/// Throughput of both systems with `n` calls in flight, in interleaved rounds.
async fn throughput(
    cfg: &RunConfig,
    client_side: &Side,
    raw: &RawEcho,
    rpc: &RpcEcho,
    n: usize,
    sizes: Sizes,
) -> anyhow::Result<[Measurement; 2]> {
    let window = sizes.window / sizes.rounds as u32;
    let mut conns = client_side
        .handle
        .spawn(RawConn::connect_many(raw.addr, n))
        .await??;
    let mut callers: Vec<_> = (0..n).map(|_| rpc.client.clone()).collect();
    let (mut raw_rates, mut rpc_rates) = (Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
        cfg.progress.scenario(format!(
            "throughput, {n} in flight, round {} of {}",
            round + 1,
            sizes.rounds
        ));
        for raw_turn in turns(round) {
            if raw_turn {
                let rate;
                (rate, conns) = client_side
                    .handle
                    .spawn(closed_loops(conns, window, raw_call))
                    .await??;
                raw_rates.push(rate);
            } else {
                let rate;
                (rate, callers) = client_side
                    .handle
                    .spawn(closed_loops(callers, window, rpc_call))
                    .await??;
                rpc_rates.push(rate);
            }
        }
    }
    let scenario = format!("echo {PAYLOAD} B, {n} in flight");
    let ratio = paired_ratio(&rpc_rates, &raw_rates);
    let baseline = Measurement::new(&scenario, "raw-tcp")
        .with_ops_per_sec(median(raw_rates))
        .with_point("raw-tcp", X_LABEL, n as f64);
    let mut ours = Measurement::new(&scenario, "datacake-rpc")
        .with_ops_per_sec(median(rpc_rates))
        .with_ratio(ratio)
        .with_point("datacake-rpc", X_LABEL, n as f64);
    if n == 64 {
        ours = ours.with_target(">= 0.75x raw");
    }
    Ok([baseline, ours])
}

/// Which system goes first in `round`: `[true, false]` is the baseline, then datacake-rpc.
fn turns(round: usize) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    }
}

/// The median of `samples`, in seconds.
fn p50_secs(samples: &[Duration]) -> f64 {
    median(samples.iter().map(Duration::as_secs_f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_system_goes_first_in_every_other_round() {
        let rounds: Vec<[bool; 2]> = (0..8).map(turns).collect();
        let baseline_first = rounds.iter().filter(|t| t[0]).count();
        assert_eq!(baseline_first, 4);
        // Every round measures both systems once.
        assert!(rounds.iter().all(|t| t[0] != t[1]));
        assert_ne!(rounds[0], rounds[1]);
    }
}
