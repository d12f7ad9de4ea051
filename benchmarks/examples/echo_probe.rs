//! A fixed amount of echo traffic in the `rpc` suite's exact topology (the same code: this
//! includes the suite's `echo.rs`), for profilers that need a short, repeatable process
//! rather than the whole harness.
//!
//! ```text
//! echo_probe <raw|rpc|grpc> <calls>            # <calls> sequential round trips
//! echo_probe <raw|rpc|grpc> <millis> <tasks>   # <tasks> closed loops (calls in flight) for <millis>
//! echo_probe raw1 <millis> <tasks>             # raw TCP, <tasks> calls pipelined on ONE connection
//! ```
//!
//! `raw1` is the baseline for a multiplexed connection ([`echo::raw_pipelined`], also in the
//! suite's rows for 2 to 12 calls in flight).
//!
//! Instructions per sequential round trip, both sides (the difference of two runs removes
//! start-up and shutdown):
//!
//! ```text
//! cargo build --release -p benchmarks --example echo_probe
//! for n in 1000 3000; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/echo_probe rpc $n; done
//! callgrind_annotate /tmp/cg.1000 | head -n 20; callgrind_annotate /tmp/cg.3000 | head -n 20
//! # (total of cg.3000 - total of cg.1000) / 2000
//! ```
//!
//! Syscalls with 16 calls in flight: `strace -f -c target/release/examples/echo_probe rpc
//! 2000 16`, against the number of calls it prints.

#[path = "../src/echo.rs"]
#[allow(dead_code)] // the suite uses every item of the file; the probe does not
mod echo;
#[path = "../src/echo_grpc.rs"]
mod echo_grpc;

use std::time::{Duration, Instant};

use anyhow::Context;
use echo::{
    closed_loops, raw_call, raw_pipelined, raw_sequential, rpc_call, rpc_sequential, RawConn,
    RawEcho, RpcEcho, Side,
};
use echo_grpc::{grpc_call, grpc_connect, grpc_sequential, GrpcEcho};

const USAGE: &str =
    "usage: echo_probe <raw|rpc|grpc> <calls> | echo_probe <raw|raw1|rpc|grpc> <millis> <tasks>";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (system, count, tasks) = match args.as_slice() {
        [system, count] => (system.as_str(), count, None),
        [system, count, tasks] => (system.as_str(), count, Some(tasks)),
        _ => anyhow::bail!(USAGE),
    };
    anyhow::ensure!(matches!(system, "raw" | "raw1" | "rpc" | "grpc"), USAGE);
    anyhow::ensure!(system != "raw1" || tasks.is_some(), USAGE);
    let count: usize = count.parse().context(USAGE)?;
    let tasks: Option<usize> = tasks.map(|t| t.parse()).transpose().context(USAGE)?;
    let raw = system == "raw";

    let server = Side::start("probe-server")?;
    let client = Side::start("probe-client")?;
    // This thread only waits for the two sides' tasks.
    let waiter = tokio::runtime::Builder::new_current_thread().build()?;
    // (calls, calls per second) of the measured part.
    let (calls, rate) = waiter.block_on(async {
        let timed = |calls: usize, started: Instant| {
            (calls as f64, calls as f64 / started.elapsed().as_secs_f64())
        };
        let measured = if system == "raw1" {
            let echo = server.handle.spawn(RawEcho::start()).await??;
            let addr = echo.addr;
            let in_flight = tasks.expect("checked");
            let window = Duration::from_millis(count as u64);
            let rate = client
                .handle
                .spawn(raw_pipelined(addr, in_flight, window))
                .await??;
            echo.server.abort();
            (rate * window.as_secs_f64(), rate)
        } else if raw {
            let echo = server.handle.spawn(RawEcho::start()).await??;
            let addr = echo.addr;
            let measured = match tasks {
                None => {
                    let conn = client.handle.spawn(RawConn::connect(addr)).await??;
                    let started = Instant::now();
                    client.handle.spawn(raw_sequential(conn, count)).await??;
                    timed(count, started)
                }
                Some(tasks) => {
                    let window = Duration::from_millis(count as u64);
                    let loops = client.handle.spawn(async move {
                        let conns = RawConn::connect_many(addr, tasks).await?;
                        closed_loops(conns, window, raw_call).await
                    });
                    let (rate, _) = loops.await??;
                    (rate * window.as_secs_f64(), rate)
                }
            };
            echo.server.abort();
            measured
        } else if system == "grpc" {
            let echo = server.handle.spawn(GrpcEcho::start()).await??;
            let grpc = client.handle.spawn(grpc_connect(echo.addr)).await??;
            let measured = match tasks {
                None => {
                    let started = Instant::now();
                    client.handle.spawn(grpc_sequential(grpc, count)).await??;
                    timed(count, started)
                }
                Some(tasks) => {
                    let window = Duration::from_millis(count as u64);
                    let callers = (0..tasks).map(|_| grpc.clone()).collect();
                    let loops = closed_loops(callers, window, grpc_call);
                    let (rate, _) = client.handle.spawn(loops).await??;
                    (rate * window.as_secs_f64(), rate)
                }
            };
            server.handle.spawn(echo.shutdown()).await?;
            measured
        } else {
            let echo = server.handle.spawn(RpcEcho::start()).await??;
            let client_of = echo.client.clone();
            let measured = match tasks {
                None => {
                    let started = Instant::now();
                    let sequential = rpc_sequential(client_of, count);
                    client.handle.spawn(sequential).await??;
                    timed(count, started)
                }
                Some(tasks) => {
                    let window = Duration::from_millis(count as u64);
                    let callers = (0..tasks).map(|_| client_of.clone()).collect();
                    let loops = closed_loops(callers, window, rpc_call);
                    let (rate, _) = client.handle.spawn(loops).await??;
                    (rate * window.as_secs_f64(), rate)
                }
            };
            echo.server.shutdown().await;
            measured
        };
        anyhow::Ok(measured)
    })?;
    server.stop();
    client.stop();
    println!("{system}: {calls:.0} calls measured, {rate:.0} calls/s");
    Ok(())
}
