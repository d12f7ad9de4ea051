//! Suite `rpc`: datacake-rpc against a raw tokio TCP baseline on loopback and against tonic
//! (gRPC), and datacake-rpc over mutual TLS against itself in plaintext.
//!
//! All echo a 64-byte payload ([`crate::echo`] has the raw baseline and datacake-rpc,
//! [`crate::echo_grpc`] tonic). The baseline uses length-prefixed frames; for N calls in
//! flight it opens N connections with one call outstanding each (TCP_NODELAY on both ends).
//! datacake-rpc multiplexes every call over one `Channel`, tonic over one of its `Channel`s.
//!
//! Topology (the same for all): the server side runs on its own single-threaded tokio
//! runtime (one OS thread), the client side on another, as if they were two processes; the
//! two meet only through loopback sockets.
//!
//! Each comparison runs in interleaved rounds; see [`run`].

use std::time::{Duration, Instant};

use datacake_rpc::{Channel, RpcClient};

use crate::config::RunConfig;
use crate::echo::{
    closed_loops, raw_call, raw_pipelined, raw_sequential, rpc_call, rpc_sequential, EchoService,
    RawConn, RawEcho, RpcEcho, Side, PAYLOAD,
};
use crate::echo_grpc::{grpc_call, grpc_connect, grpc_sequential, GrpcClient, GrpcEcho};
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
    /// How many interleaved rounds each comparison is split into (a multiple of
    /// [`SYSTEMS`], so each system goes first equally often).
    rounds: usize,
    /// New connections timed per system.
    setups: usize,
}

/// Runs the suite.
///
/// Each comparison (sequential latency, and throughput at each number of calls in flight) runs
/// in `rounds` interleaved rounds: a round measures every system back to back, rotating which
/// goes first, on connections opened once. The ratio printed is the median
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
        rounds: cfg.pick(4, 8, 8),
        setups: cfg.pick(20, 200, 500),
    };
    // The low counts (2 to 12) are the concurrency of a store replicating to a few peers or a
    // Raft leader sending to two followers.
    let in_flight = cfg.concurrency_or(&cfg.pick(
        vec![1, 16],
        vec![1, 4, 16, 64, 256],
        vec![1, 2, 4, 8, 12, 16, 64, 256, 1_024],
    ));
    let server_side = Side::start("rpc-bench-server")?;
    let client_side = Side::start("rpc-bench-client")?;
    let mut measurements = Vec::new();
    let raw = server_side.handle.spawn(RawEcho::start()).await??;
    let rpc = server_side.handle.spawn(RpcEcho::start()).await??;
    let (tls, tls_client) = server_side.handle.spawn(RpcEcho::start_tls()).await??;
    let grpc = server_side.handle.spawn(GrpcEcho::start()).await??;
    let grpc_client = client_side.handle.spawn(grpc_connect(grpc.addr)).await??;
    let systems = Systems {
        raw: &raw,
        rpc: &rpc,
        tls: &tls,
        grpc: &grpc_client,
    };

    measurements.extend(sequential(cfg, &client_side, systems, sizes).await?);
    for n in in_flight {
        measurements.extend(throughput(cfg, &client_side, systems, n, sizes).await?);
    }
    measurements.extend(connection_setup(cfg, &client_side, systems, &tls_client, sizes).await?);

    for echo in [rpc, tls] {
        echo.server.shutdown().await;
    }
    drop(grpc_client);
    server_side.handle.spawn(grpc.shutdown()).await?;
    raw.server.abort();
    server_side.stop();
    client_side.stop();
    Ok(SuiteReport {
        suite: "rpc",
        measurements,
    })
}

/// The systems every comparison measures: the raw TCP baseline, datacake-rpc in plaintext,
/// datacake-rpc over mutual TLS, and tonic (a client of its server).
#[derive(Clone, Copy)]
struct Systems<'a> {
    raw: &'a RawEcho,
    rpc: &'a RpcEcho,
    tls: &'a RpcEcho,
    grpc: &'a GrpcClient,
}

/// Indices of the systems in a round's order (see [`turns`]).
const RAW: usize = 0;
const RPC: usize = 1;
const RPC_TLS: usize = 2;
const GRPC: usize = 3;
/// How many systems a round measures.
const SYSTEMS: usize = 4;

/// The TLS rows' system name.
const TLS_NAME: &str = "datacake-rpc+tls";
/// The gRPC rows' system name.
const GRPC_NAME: &str = "tonic";

/// Sequential round-trip latency of every system, in interleaved rounds.
async fn sequential(
    cfg: &RunConfig,
    client_side: &Side,
    systems: Systems<'_>,
    sizes: Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    cfg.progress.scenario("sequential latency, warm-up");
    let mut conn = client_side
        .handle
        .spawn(RawConn::connect(systems.raw.addr))
        .await??;
    (conn, _) = client_side
        .handle
        .spawn(raw_sequential(conn, sizes.warmup_calls))
        .await??;
    for echo in [systems.rpc, systems.tls] {
        client_side
            .handle
            .spawn(rpc_sequential(echo.client.clone(), sizes.warmup_calls))
            .await??;
    }
    let mut grpc = systems.grpc.clone();
    (grpc, _) = client_side
        .handle
        .spawn(grpc_sequential(grpc, sizes.warmup_calls))
        .await??;

    let per_round = sizes.latency_calls.div_ceil(sizes.rounds);
    let mut samples: [Vec<Duration>; SYSTEMS] = Default::default();
    let mut p50s: [Vec<f64>; SYSTEMS] = Default::default();
    for round in 0..sizes.rounds {
        cfg.progress.scenario(format!(
            "sequential latency, round {} of {}",
            round + 1,
            sizes.rounds
        ));
        for system in turns(round) {
            let taken = if system == RAW {
                let taken;
                (conn, taken) = client_side
                    .handle
                    .spawn(raw_sequential(conn, per_round))
                    .await??;
                taken
            } else if system == GRPC {
                let taken;
                (grpc, taken) = client_side
                    .handle
                    .spawn(grpc_sequential(grpc, per_round))
                    .await??;
                taken
            } else {
                let echo = if system == RPC {
                    systems.rpc
                } else {
                    systems.tls
                };
                client_side
                    .handle
                    .spawn(rpc_sequential(echo.client.clone(), per_round))
                    .await??
            };
            p50s[system].push(p50_secs(&taken));
            samples[system].extend(taken);
        }
    }
    let scenario = format!("echo {PAYLOAD} B, sequential");
    // What each system adds to the machine's round trip (raw TCP's p50), round by round.
    let above_raw = |system: usize| -> Vec<f64> {
        let rounds = p50s[system].iter().zip(&p50s[RAW]);
        rounds.map(|(p50, raw)| (p50 - raw).max(0.0)).collect()
    };
    let (rpc_added, tonic_added) = (above_raw(RPC), above_raw(GRPC));
    let added = format!("echo {PAYLOAD} B, sequential p50 above raw TCP's");
    let micros = |added: &[f64]| median(added.to_vec()) * 1e6;
    let [mut raw, mut rpc, mut tls, mut tonic] = samples;
    let latency = |samples: &mut Vec<Duration>| {
        Latency::from_samples(samples).ok_or_else(|| anyhow::anyhow!("no samples"))
    };
    Ok(vec![
        Measurement::new(&scenario, "raw-tcp").with_latency(Some(latency(&mut raw)?)),
        Measurement::new(&scenario, "datacake-rpc")
            .with_latency(Some(latency(&mut rpc)?))
            .with_ratio(paired_ratio(&p50s[RPC], &p50s[RAW]))
            .with_target("p50 <= 1.5x raw, p99.9 < 1 ms"),
        Measurement::new(&scenario, TLS_NAME)
            .with_latency(Some(latency(&mut tls)?))
            .with_ratio(paired_ratio(&p50s[RPC_TLS], &p50s[RPC]))
            .with_target("p50 <= 1.3x datacake-rpc (plaintext)"),
        Measurement::new(&scenario, GRPC_NAME)
            .with_latency(Some(latency(&mut tonic)?))
            .with_ratio(paired_ratio(&p50s[GRPC], &p50s[RPC]))
            .with_target(TONIC_P50_TARGET),
        Measurement::new(&added, "datacake-rpc").with_value(micros(&rpc_added), "µs"),
        Measurement::new(&added, GRPC_NAME)
            .with_value(micros(&tonic_added), "µs")
            .with_ratio(paired_ratio(&tonic_added, &rpc_added))
            .with_target(TONIC_ADDED_TARGET),
    ])
}

/// Throughput of every system with `n` calls in flight, in interleaved rounds.
async fn throughput(
    cfg: &RunConfig,
    client_side: &Side,
    systems: Systems<'_>,
    n: usize,
    sizes: Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let window = sizes.window / sizes.rounds as u32;
    let mut conns = client_side
        .handle
        .spawn(RawConn::connect_many(systems.raw.addr, n))
        .await??;
    let mut callers: [Vec<_>; 2] = [
        (0..n).map(|_| systems.rpc.client.clone()).collect(),
        (0..n).map(|_| systems.tls.client.clone()).collect(),
    ];
    let mut grpc_callers: Vec<GrpcClient> = (0..n).map(|_| systems.grpc.clone()).collect();
    let mut rates: [Vec<f64>; SYSTEMS] = Default::default();
    // From 2 to 12 in flight, also raw TCP on one connection (calls pipelined), measured right
    // after the other raw baseline in every round.
    let one_connection = (2..=12).contains(&n);
    let mut pipelined_rates = Vec::new();
    for round in 0..sizes.rounds {
        cfg.progress.scenario(format!(
            "throughput, {n} in flight, round {} of {}",
            round + 1,
            sizes.rounds
        ));
        for system in turns(round) {
            let rate;
            if system == RAW {
                (rate, conns) = client_side
                    .handle
                    .spawn(closed_loops(conns, window, raw_call))
                    .await??;
                if one_connection {
                    // (Half the window warms up: the same time measured as the others.)
                    let pipelined = raw_pipelined(systems.raw.addr, n, window / 2);
                    pipelined_rates.push(client_side.handle.spawn(pipelined).await??);
                }
            } else if system == GRPC {
                let loops = std::mem::take(&mut grpc_callers);
                (rate, grpc_callers) = client_side
                    .handle
                    .spawn(closed_loops(loops, window, grpc_call))
                    .await??;
            } else {
                let slot = &mut callers[system - RPC];
                let loops = std::mem::take(slot);
                (rate, *slot) = client_side
                    .handle
                    .spawn(closed_loops(loops, window, rpc_call))
                    .await??;
            }
            rates[system].push(rate);
        }
    }
    let scenario = format!("echo {PAYLOAD} B, {n} in flight");
    let row = |system: usize, name: &str| {
        Measurement::new(&scenario, name)
            .with_ops_per_sec(median(rates[system].clone()))
            .with_point(name, X_LABEL, n as f64)
    };
    let mut ours = row(RPC, "datacake-rpc").with_ratio(paired_ratio(&rates[RPC], &rates[RAW]));
    let mut tls = row(RPC_TLS, TLS_NAME).with_ratio(paired_ratio(&rates[RPC_TLS], &rates[RPC]));
    let mut tonic = row(GRPC, GRPC_NAME).with_ratio(paired_ratio(&rates[GRPC], &rates[RPC]));
    if n == 64 {
        ours = ours.with_target(">= 0.75x raw");
        tls = tls.with_target(">= 0.8x datacake-rpc (plaintext)");
    }
    if (2..=12).contains(&n) {
        ours = ours.with_target(">= 0.8x raw");
    }
    if n >= 4 {
        tonic = tonic.with_target(TONIC_RATE_TARGET);
    }
    let mut rows = vec![row(RAW, "raw-tcp"), ours, tls, tonic];
    if one_connection {
        // Its ratio is datacake-rpc's rate over this baseline's, round by round.
        rows.push(
            Measurement::new(&scenario, PIPELINED_NAME)
                .with_ops_per_sec(median(pipelined_rates.clone()))
                .with_point(PIPELINED_NAME, X_LABEL, n as f64)
                .with_ratio(paired_ratio(&rates[RPC], &pipelined_rates))
                .with_target(">= 0.8x: datacake-rpc / this"),
        );
    }
    Ok(rows)
}

/// The rows of raw TCP with every call in flight on one connection.
const PIPELINED_NAME: &str = "raw-tcp-1-conn";

/// The cost of a new connection: a fresh channel's first call, plaintext and over TLS (TCP
/// connect, the TLS handshake with both certificates verified, the HTTP/2 handshake, one
/// echo), alternating.
async fn connection_setup(
    cfg: &RunConfig,
    client_side: &Side,
    systems: Systems<'_>,
    tls_client: &datacake_rpc::TlsConfig,
    sizes: Sizes,
) -> anyhow::Result<[Measurement; 2]> {
    cfg.progress.scenario("connection setup");
    let mut samples: [Vec<Duration>; 2] = Default::default();
    for i in 0..sizes.setups * 2 {
        let tls = i % 2 == 1;
        let (addr, builder) = if tls {
            (
                systems.tls.server.local_addr(),
                Channel::builder().tls(tls_client.clone()),
            )
        } else {
            (systems.rpc.server.local_addr(), Channel::builder())
        };
        let taken = client_side
            .handle
            .spawn(async move {
                let start = Instant::now();
                rpc_call(RpcClient::<EchoService>::new(builder.connect(addr))).await?;
                anyhow::Ok(start.elapsed())
            })
            .await??;
        samples[usize::from(tls)].push(taken);
    }
    let scenario = "new connection + first call".to_string();
    let [mut plain, mut tls] = samples;
    let plain = Latency::from_samples(&mut plain).ok_or_else(|| anyhow::anyhow!("no samples"))?;
    let tls = Latency::from_samples(&mut tls).ok_or_else(|| anyhow::anyhow!("no samples"))?;
    let ratio = tls.p50.as_secs_f64() / plain.p50.as_secs_f64();
    Ok([
        Measurement::new(&scenario, "datacake-rpc").with_latency(Some(plain)),
        Measurement::new(&scenario, TLS_NAME)
            .with_latency(Some(tls))
            .with_ratio(ratio),
    ])
}

/// The tonic rows' targets, as ratios of tonic to datacake-rpc: datacake-rpc answers in at
/// most 0.7x tonic's sequential p50, and makes at least 2x its calls/s from 4 in flight up.
const TONIC_P50_TARGET: &str = "p50 >= 1.43x datacake-rpc";
const TONIC_RATE_TARGET: &str = "<= 0.5x datacake-rpc";
/// The same p50 target, for what each system adds to raw TCP's round trip: on the 2-core VM
/// the round trip itself (two cross-CPU wake-ups) is most of every system's p50, so the
/// ratio of whole p50s measures the machine more than the systems (see the crate README).
const TONIC_ADDED_TARGET: &str = ">= 1.43x datacake-rpc's";

/// The order the systems run in `round`: each goes first in every [`SYSTEMS`]th round.
fn turns(round: usize) -> [usize; SYSTEMS] {
    std::array::from_fn(|i| (round + i) % SYSTEMS)
}

/// The median of `samples`, in seconds.
fn p50_secs(samples: &[Duration]) -> f64 {
    median(samples.iter().map(Duration::as_secs_f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_system_goes_first_equally_often() {
        let rounds: Vec<[usize; SYSTEMS]> = (0..2 * SYSTEMS).map(turns).collect();
        for system in [RAW, RPC, RPC_TLS, GRPC] {
            assert_eq!(rounds.iter().filter(|t| t[0] == system).count(), 2);
        }
        // Every round measures each system once.
        for t in &rounds {
            let mut sorted = *t;
            sorted.sort_unstable();
            assert_eq!(sorted, [RAW, RPC, RPC_TLS, GRPC]);
        }
    }
}
