//! Mutual TLS: who gets in, who is refused, and what a handler learns about its caller.

use std::net::SocketAddr;

use datacake_rpc::{
    async_trait, Channel, ErrorCode, Handler, Request, RpcClient, RpcService, Server,
    ServerBuilder, ServiceRegistry, Status, TlsConfig, MAX_HANDSHAKING,
};

use crate::certs::Ca;
use crate::fixtures::{wait_for, Echo, EchoService};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct WhoAmI;

/// Answers with the URIs of the caller's certificate.
struct Mirror;

impl RpcService for Mirror {
    fn service_name() -> &'static str {
        "mirror"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<WhoAmI>();
    }
}

#[async_trait]
impl Handler<WhoAmI> for Mirror {
    type Reply = Vec<String>;

    fn path() -> &'static str {
        "who"
    }

    async fn on_message(&self, request: Request<WhoAmI>) -> Result<Vec<String>, Status> {
        Ok(request
            .peer()
            .map(|p| p.uris().to_vec())
            .unwrap_or_default())
    }
}

async fn tls_server(tls: TlsConfig) -> Server {
    tls_server_with(Server::builder(), tls).await
}

async fn tls_server_with(builder: ServerBuilder, tls: TlsConfig) -> Server {
    let server = builder
        .tls(tls)
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server.add_service(EchoService);
    server.add_service(Mirror);
    server
}

async fn echo(channel: Channel) -> Result<Vec<u8>, Status> {
    let client = RpcClient::<EchoService>::new(channel);
    let reply = client.send(&Echo { data: vec![7; 64] }).await?;
    Ok(reply.data.to_vec())
}

fn tls_channel(tls: TlsConfig, addr: SocketAddr) -> Channel {
    Channel::builder().tls(tls).connect(addr)
}

fn assert_refused(result: Result<Vec<u8>, Status>, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), ErrorCode::Connection, "{what}: {status}"),
        Ok(_) => panic!("{what}: the call went through"),
    }
}

#[tokio::test]
async fn mutual_tls_calls_see_the_callers_verified_identity() {
    let ca = Ca::new();
    let server = tls_server(ca.issue("datacake://c/1", false)).await;
    let client = ca.issue("datacake://c/2", false);
    assert_eq!(client.identity().uris(), ["datacake://c/2".to_string()]);
    let channel = tls_channel(client, server.local_addr());
    assert_eq!(echo(channel.clone()).await.unwrap(), vec![7; 64]);
    let who = RpcClient::<Mirror>::new(channel)
        .send(&WhoAmI)
        .await
        .unwrap()
        .deserialize_view()
        .unwrap();
    assert_eq!(who, vec!["datacake://c/2".to_string()]);
}

#[tokio::test]
async fn plaintext_handlers_see_no_identity() {
    let server = Server::listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server.add_service(Mirror);
    let who = RpcClient::<Mirror>::new(Channel::connect(server.local_addr()))
        .send(&WhoAmI)
        .await
        .unwrap();
    assert!(who.is_empty());
}

#[tokio::test]
async fn strangers_are_refused_and_members_keep_calling() {
    let ca = Ca::new();
    let server = tls_server(ca.issue("datacake://c/1", false)).await;
    let addr = server.local_addr();
    let member = tls_channel(ca.issue("datacake://c/2", false), addr);
    assert!(echo(member.clone()).await.is_ok());

    let stranger = Ca::new().issue("datacake://c/3", false);
    assert_refused(
        echo(tls_channel(stranger, addr)).await,
        "a certificate from another CA",
    );
    assert_refused(
        echo(tls_channel(ca.issue("datacake://c/4", true), addr)).await,
        "an expired certificate",
    );
    assert_refused(
        echo(Channel::connect(addr)).await,
        "a plaintext client of a TLS server",
    );
    assert!(
        echo(member).await.is_ok(),
        "the member's connection survives"
    );
}

#[tokio::test]
async fn a_channel_refuses_a_server_it_cannot_trust() {
    let ca = Ca::new();
    let client = ca.issue("datacake://c/2", false);
    for (server, what) in [
        (Ca::new().issue("datacake://c/1", false), "another CA"),
        (ca.issue("datacake://c/1", true), "an expired certificate"),
    ] {
        let server = tls_server(server).await;
        assert_refused(
            echo(tls_channel(client.clone(), server.local_addr())).await,
            what,
        );
    }
    let plaintext = Server::listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    plaintext.add_service(EchoService);
    assert_refused(
        echo(tls_channel(client, plaintext.local_addr())).await,
        "a plaintext server",
    );
}

#[tokio::test]
async fn a_required_uri_prefix_keeps_other_clusters_out_on_both_ends() {
    let ca = Ca::new();
    let server = tls_server(
        ca.issue("datacake://orders/1", false)
            .require_peer_uri_prefix("datacake://orders/"),
    )
    .await;
    let addr = server.local_addr();
    let member = ca
        .issue("datacake://orders/2", false)
        .require_peer_uri_prefix("datacake://orders/");
    assert!(echo(tls_channel(member, addr)).await.is_ok());
    // Same CA, another cluster: the server closes the connection after the handshake.
    let other = ca.issue("datacake://billing/2", false);
    assert_refused(
        echo(tls_channel(other, addr)).await,
        "another cluster's node",
    );
    // And a channel of the other cluster refuses this cluster's server.
    let picky = ca
        .issue("datacake://orders/3", false)
        .require_peer_uri_prefix("datacake://billing/");
    match echo(tls_channel(picky, addr)).await {
        Err(status) => {
            assert_eq!(status.code(), ErrorCode::Connection);
            assert!(status.message().contains("datacake://orders/1"), "{status}");
        }
        Ok(_) => panic!("a server of another cluster was trusted"),
    }
}

#[tokio::test]
async fn a_required_uri_lets_a_channel_reach_only_that_node() {
    let ca = Ca::new();
    let server = tls_server(ca.issue("datacake://orders/1", false)).await;
    let addr = server.local_addr();
    let to = |uri: &str| ca.issue("datacake://orders/2", false).require_peer_uri(uri);
    assert!(echo(tls_channel(to("datacake://orders/1"), addr))
        .await
        .is_ok());
    // Node 11's address given, node 1 answers: the channel refuses it (a prefix would not).
    match echo(tls_channel(to("datacake://orders/11"), addr)).await {
        Err(status) => {
            assert_eq!(status.code(), ErrorCode::Connection);
            assert!(
                status
                    .message()
                    .contains("does not name `datacake://orders/11`"),
                "{status}"
            );
        }
        Ok(_) => panic!("a channel meant for node 11 reached node 1"),
    }
}

#[tokio::test]
async fn bad_pem_is_a_typed_error() {
    let ca = Ca::new();
    let ca_pem = ca.cert.pem();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    let (cert_pem, key_pem) = (leaf.pem(), key.serialize_pem());
    let err = |r: Result<TlsConfig, datacake_rpc::TlsError>| r.unwrap_err().to_string();
    assert!(err(TlsConfig::mutual_from_pem(
        b"",
        cert_pem.as_bytes(),
        key_pem.as_bytes()
    ))
    .contains("ca certificate"),);
    assert!(err(TlsConfig::mutual_from_pem(
        ca_pem.as_bytes(),
        b"junk",
        key_pem.as_bytes()
    ))
    .contains("certificate chain"),);
    assert!(err(TlsConfig::mutual_from_pem(
        ca_pem.as_bytes(),
        cert_pem.as_bytes(),
        b""
    ))
    .contains("private key"),);
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    assert!(matches!(
        TlsConfig::mutual_from_pem(ca_pem.as_bytes(), cert_pem.as_bytes(), other_key.as_bytes()),
        Err(datacake_rpc::TlsError::Rustls(_))
    ));
    assert!(matches!(
        TlsConfig::mutual_from_files("/nonexistent/ca.pem", "/x", "/y"),
        Err(datacake_rpc::TlsError::Read {
            what: "ca certificate",
            ..
        })
    ));
}

/// Opens `n` TCP connections that never start a handshake, once the server counts them open.
async fn silent_connections(server: &Server, n: usize) -> Vec<tokio::net::TcpStream> {
    let open_before = server.statistics().connections_open;
    let mut silent = Vec::new();
    for _ in 0..n {
        silent.push(
            tokio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap(),
        );
    }
    wait_for(server, "the silent connections to be accepted", |s| {
        s.connections_open + s.handshakes_cut >= open_before + n as u64
    })
    .await;
    silent
}

#[tokio::test]
async fn silent_connections_cannot_keep_a_member_out() {
    const LIMIT: usize = 8;
    let ca = Ca::new();
    let server = tls_server_with(
        Server::builder().max_connections(LIMIT),
        ca.issue("datacake://c/1", false),
    )
    .await;
    // Someone without a certificate takes every place and never says a word.
    let _silent = silent_connections(&server, LIMIT).await;
    assert_eq!(server.statistics().connections_open, LIMIT as u64);

    let member = tls_channel(ca.issue("datacake://c/2", false), server.local_addr());
    assert_eq!(echo(member.clone()).await.unwrap(), vec![7; 64]);
    let stats = server.statistics();
    assert_eq!(stats.handshakes_cut, 1, "{stats:?}");
    assert_eq!(stats.connections_refused, 0, "{stats:?}");
    // The member's connection has finished its handshake: newcomers cut silent ones, not it.
    let _more = silent_connections(&server, LIMIT).await;
    assert_eq!(echo(member).await.unwrap(), vec![7; 64]);
    // Each newcomer cut the oldest silent connection.
    let stats = server.statistics();
    assert_eq!(stats.handshakes_cut, 1 + LIMIT as u64, "{stats:?}");
}

#[tokio::test]
async fn at_most_max_handshaking_connections_wait_for_a_handshake() {
    let ca = Ca::new();
    let server = tls_server(ca.issue("datacake://c/1", false)).await;
    let _silent = silent_connections(&server, MAX_HANDSHAKING + 10).await;
    wait_for(&server, "the oldest silent connections to be cut", |s| {
        s.handshakes_cut == 10 && s.connections_open == MAX_HANDSHAKING as u64
    })
    .await;
    let member = tls_channel(ca.issue("datacake://c/2", false), server.local_addr());
    assert_eq!(echo(member).await.unwrap(), vec![7; 64]);
}

/// Calls until one fails, as the connection ends when a certificate expires; fails if calls
/// still succeed after the deadline.
async fn assert_calls_stop(channel: Channel, what: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match echo(channel.clone()).await {
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: calls still succeed"
            ),
            Err(status) => {
                assert_eq!(status.code(), ErrorCode::Connection, "{what}: {status}");
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn in_two_seconds() -> std::time::SystemTime {
    std::time::SystemTime::now() + std::time::Duration::from_secs(2)
}

#[tokio::test]
async fn a_server_closes_a_connection_when_the_clients_certificate_expires() {
    let ca = Ca::new();
    let server = tls_server(ca.issue("datacake://c/1", false)).await;
    let client = ca.issue_until("datacake://c/2", in_two_seconds());
    let expires = client.identity().not_after().unwrap();
    assert!(expires > std::time::SystemTime::now());
    let channel = tls_channel(client, server.local_addr());
    assert_eq!(echo(channel.clone()).await.unwrap(), vec![7; 64]);
    assert_calls_stop(channel, "a client whose certificate expired").await;
    assert!(std::time::SystemTime::now() >= expires);
}

#[tokio::test]
async fn a_channel_retires_its_connection_when_the_servers_certificate_expires() {
    let ca = Ca::new();
    let server = tls_server(ca.issue_until("datacake://c/1", in_two_seconds())).await;
    let channel = tls_channel(ca.issue("datacake://c/2", false), server.local_addr());
    assert_eq!(echo(channel.clone()).await.unwrap(), vec![7; 64]);
    assert_calls_stop(channel, "a server whose certificate expired").await;
}
