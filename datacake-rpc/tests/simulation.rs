//! The RPC on turmoil's simulated network: partitions, held links and deadlines, with a fixed
//! seed so every run replays exactly.

#[path = "support/certs.rs"]
mod certs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use datacake_rpc::{
    async_trait, Channel, ErrorCode, Handler, Request, RpcClient, RpcService, Server,
    ServiceRegistry, Status, TlsConfig,
};

use certs::Ca;

const SEED: u64 = 0xDA7A_CA4E;
const PORT: u16 = 9000;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct Ping {
    n: u64,
}

struct PingService;

impl RpcService for PingService {
    fn service_name() -> &'static str {
        "ping"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Ping>();
    }
}

#[async_trait]
impl Handler<Ping> for PingService {
    type Reply = u64;

    fn path() -> &'static str {
        "ping"
    }

    async fn on_message(&self, request: Request<Ping>) -> Result<u64, Status> {
        Ok(request.n.to_native() + 1)
    }
}

/// A simulation with one server host serving `PingService`.
fn simulation<'a>() -> turmoil::Sim<'a> {
    serving(turmoil::Builder::new().rng_seed(SEED))
}

/// [`simulation`], with every message taking `latency` (turmoil's default: up to 100 ms).
fn simulation_with_latency<'a>(latency: Duration) -> turmoil::Sim<'a> {
    serving(
        turmoil::Builder::new()
            .rng_seed(SEED)
            .min_message_latency(latency)
            .max_message_latency(latency),
    )
}

/// Builds `builder` into a simulation with the server host.
fn serving<'a>(builder: &mut turmoil::Builder) -> turmoil::Sim<'a> {
    let mut sim = builder
        .simulation_duration(Duration::from_secs(120))
        .build();
    sim.host("server", || async {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
        let server = Server::listen_simulated(addr).await?;
        server.add_service(PingService);
        futures::future::pending::<()>().await;
        Ok(())
    });
    sim
}

fn client() -> RpcClient<PingService> {
    let addr = SocketAddr::new(turmoil::lookup("server"), PORT);
    let channel = Channel::builder()
        .keep_alive(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(2))
        .connect_simulated(addr);
    RpcClient::new(channel)
}

#[test]
fn calls_succeed_on_a_healthy_network() -> turmoil::Result {
    let mut sim = simulation();
    sim.client("client", async {
        let client = client();
        for n in 0..10 {
            assert_eq!(client.send(&Ping { n }).await?.to_native(), n + 1);
        }
        Ok(())
    });
    sim.run()
}

#[test]
fn a_partition_gives_a_connection_error() -> turmoil::Result {
    let mut sim = simulation();
    sim.client("client", async {
        let client = client();
        assert_eq!(client.send(&Ping { n: 1 }).await?.to_native(), 2);

        turmoil::partition("client", "server");
        // An established connection: the keep-alive notices the silence.
        let err = client.send(&Ping { n: 2 }).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Connection, "{err}");
        // A new connection cannot be opened either.
        let err = client.send(&Ping { n: 3 }).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Connection, "{err}");

        // Once repaired, the same channel reconnects.
        turmoil::repair("client", "server");
        assert_eq!(client.send(&Ping { n: 4 }).await?.to_native(), 5);
        Ok(())
    });
    sim.run()
}

#[test]
fn a_link_held_past_the_deadline_gives_a_timeout() -> turmoil::Result {
    let mut sim = simulation();
    sim.client("client", async {
        let mut client = client();
        assert_eq!(client.send(&Ping { n: 1 }).await?.to_native(), 2);

        client.set_timeout(Duration::from_millis(500));
        turmoil::hold("client", "server");
        let err = client.send(&Ping { n: 2 }).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        Ok(())
    });
    sim.run()
}

#[test]
fn a_link_released_in_time_succeeds() -> turmoil::Result {
    let mut sim = simulation();
    sim.client("client", async {
        let mut client = client();
        assert_eq!(client.send(&Ping { n: 1 }).await?.to_native(), 2);

        client.set_timeout(Duration::from_millis(800));
        turmoil::hold("client", "server");
        let call =
            tokio::spawn(async move { client.send(&Ping { n: 41 }).await.map(|r| r.to_native()) });
        // Let the request sit on the held link for a while, well within the deadline.
        tokio::time::sleep(Duration::from_millis(300)).await;
        turmoil::release("client", "server");
        assert_eq!(call.await??, 42);
        Ok(())
    });
    sim.run()
}

#[test]
fn a_call_timing_out_on_a_stalled_connection_gets_it_replaced_long_before_the_keep_alive(
) -> turmoil::Result {
    let mut sim = simulation();
    sim.client("client", async {
        // Keep-alive pings only every minute: without probing, a stalled connection would
        // fail every call for a minute or two.
        let addr = SocketAddr::new(turmoil::lookup("server"), PORT);
        let channel = Channel::builder()
            .keep_alive(Duration::from_secs(60))
            .connect_simulated(addr);
        let mut client = RpcClient::<PingService>::new(channel);
        client.set_timeout(Duration::from_millis(500));
        assert_eq!(client.send(&Ping { n: 1 }).await?.to_native(), 2);

        // Messages dropped while partitioned leave a gap in the connection's byte stream
        // (as a firewall losing the connection's state would): it stays open and silent.
        turmoil::partition("client", "server");
        let err = client.send(&Ping { n: 2 }).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        turmoil::repair("client", "server");

        // The timeout made the channel probe the connection; the probe goes unanswered, the
        // connection is replaced, and calls work again within a few seconds.
        let start = tokio::time::Instant::now();
        loop {
            match client.send(&Ping { n: 3 }).await {
                Ok(reply) => {
                    assert_eq!(reply.to_native(), 4);
                    break;
                }
                Err(err) => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "still failing after {:?}: {err}",
                    start.elapsed()
                ),
            }
        }
        Ok(())
    });
    sim.run()
}

/// A slow link is not a dead one: a call timing out makes the channel probe its connection,
/// and when the ping's answer is late (here a 1.4 s round trip against the probe's 1 s) but
/// replies to other calls keep arriving, the connection and the calls on it live on.
#[test]
fn a_late_probe_answer_on_a_connection_still_replying_keeps_it() -> turmoil::Result {
    let mut sim = simulation_with_latency(Duration::from_millis(700));
    sim.client("client", async {
        let addr = SocketAddr::new(turmoil::lookup("server"), PORT);
        let channel = Channel::builder()
            .keep_alive(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .connect_simulated(addr);
        let mut patient = RpcClient::<PingService>::new(channel.clone());
        patient.set_timeout(Duration::from_secs(30));
        assert_eq!(patient.send(&Ping { n: 1 }).await?.to_native(), 2);

        // A steady stream of patient calls, one started every 100 ms.
        let mut calls = Vec::new();
        for n in 0..60u64 {
            let client = patient.clone();
            calls.push(tokio::spawn(async move {
                client.send(&Ping { n }).await.map(|r| r.to_native())
            }));
            if n == 20 {
                // An impatient call times out and sets off the probe.
                let mut impatient = RpcClient::<PingService>::new(channel.clone());
                impatient.set_timeout(Duration::from_millis(500));
                let err = impatient.send(&Ping { n: 99 }).await.unwrap_err();
                assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await?, Ok(n as u64 + 1), "call {n}");
        }
        Ok(())
    });
    sim.run()
}

/// TLS runs on the simulated network too: a member's calls succeed through a partition and
/// its healing, and a stranger's certificate is refused.
#[test]
fn mutual_tls_works_on_the_simulated_network() -> turmoil::Result {
    let ca = Ca::new();
    let server_tls = ca.issue("datacake://sim/1", false);
    let member = ca.issue("datacake://sim/2", false);
    let stranger = Ca::new().issue("datacake://sim/3", false);

    let mut sim = turmoil::Builder::new()
        .rng_seed(SEED)
        .simulation_duration(Duration::from_secs(120))
        .build();
    sim.host("server", move || {
        let tls = server_tls.clone();
        async move {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
            let server = Server::builder().tls(tls).listen_simulated(addr).await?;
            server.add_service(PingService);
            futures::future::pending::<()>().await;
            Ok(())
        }
    });
    sim.client("client", async move {
        let addr = SocketAddr::new(turmoil::lookup("server"), PORT);
        let channel = |tls: TlsConfig| {
            RpcClient::<PingService>::new(
                Channel::builder()
                    .tls(tls)
                    .keep_alive(Duration::from_secs(1))
                    .connect_timeout(Duration::from_secs(2))
                    .connect_simulated(addr),
            )
        };
        let client = channel(member);
        assert_eq!(client.send(&Ping { n: 1 }).await?.to_native(), 2);
        turmoil::partition("client", "server");
        let err = client.send(&Ping { n: 2 }).await.unwrap_err();
        assert!(
            matches!(err.code(), ErrorCode::Connection | ErrorCode::Timeout),
            "{err}"
        );
        turmoil::repair("client", "server");
        assert_eq!(client.send(&Ping { n: 3 }).await?.to_native(), 4);
        let err = channel(stranger).send(&Ping { n: 4 }).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Connection, "{err}");
        Ok(())
    });
    sim.run()
}
