//! Certificates, HTTPS and bearer-token authentication; configuration errors at startup.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::fixtures::{free_ports, metric, run_binary, temp_dir, Client, KvNode, Run};

const TOKEN: &str = "s3cret-Token.42";

/// `certs init --cluster <cluster> --out <ca>`, which must succeed.
async fn certs_init(ca: &Path, cluster: &str) -> Run {
    let ca = ca.to_str().unwrap();
    let run = run_binary(&["certs", "init", "--cluster", cluster, "--out", ca]).await;
    assert!(run.status.success(), "certs init: {}", run.stderr);
    run
}

/// `certs node --id <id> --host <host>... --ca <ca> --out <out>`, which must succeed.
async fn certs_node(ca: &Path, out: &Path, id: u32, hosts: &[&str]) -> Run {
    let id = id.to_string();
    let mut args = vec!["certs", "node", "--id", &id];
    for host in hosts {
        args.extend(["--host", host]);
    }
    args.extend(["--ca", ca.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let run = run_binary(&args).await;
    assert!(run.status.success(), "certs node: {}", run.stderr);
    run
}

/// `certs init` then `certs node` for node `id` on 127.0.0.1 and localhost, into `dir`.
async fn make_certs(dir: &Path, cluster: &str, id: u32) {
    let ca = dir.join("ca");
    certs_init(&ca, cluster).await;
    certs_node(&ca, &dir.join("node"), id, &["127.0.0.1", "localhost"]).await;
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn certs_commands_write_files_that_load_and_chain() {
    let dir = temp_dir("certs");
    let ca = dir.path().join("ca");
    let out = dir.path().join("node");
    certs_init(&ca, "kv-test").await;
    let run = certs_node(&ca, &out, 7, &["10.0.0.7", "kv-7.example"]).await;
    assert!(run.stdout.contains("node-7.pem"), "{}", run.stdout);
    #[cfg(unix)]
    for (file, expected) in [
        (ca.join("ca-key.pem"), 0o600),
        (out.join("node-7-key.pem"), 0o600),
        (ca.join("ca.pem"), 0o644),
    ] {
        assert_eq!(mode(&file), expected, "{}", file.display());
    }

    // The node certificate names the identity and its hosts...
    let cert = CertificateDer::from_pem_file(out.join("node-7.pem")).unwrap();
    let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => format!("uri:{uri}"),
            GeneralName::DNSName(dns) => format!("dns:{dns}"),
            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "uri:datacake://kv-test/7",
            "ip:[10, 0, 0, 7]",
            "dns:kv-7.example"
        ]
    );
    // ...and chains to the CA as a server certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca.join("ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let now = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    verifier
        .verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from("kv-7.example").unwrap(),
            &[],
            now,
        )
        .expect("the node certificate chains to the CA");
    rustls::pki_types::PrivateKeyDer::from_pem_file(out.join("node-7-key.pem"))
        .expect("the node key loads");

    // A second init over the same directory changes nothing.
    let key_before = std::fs::read(ca.join("ca-key.pem")).unwrap();
    let run = run_binary(&[
        "certs",
        "init",
        "--cluster",
        "kv-test",
        "--out",
        ca.to_str().unwrap(),
    ])
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("never overwritten"), "{}", run.stderr);
    assert_eq!(std::fs::read(ca.join("ca-key.pem")).unwrap(), key_before);

    // Refused: a cluster id a URI cannot carry, a host that is no name, a CA key of another CA.
    let bad = run_binary(&["certs", "init", "--cluster", "a/b", "--out", "x"]).await;
    assert!(
        !bad.status.success() && bad.stderr.contains("cluster id"),
        "{}",
        bad.stderr
    );
    let run = run_binary(&[
        "certs",
        "node",
        "--id",
        "8",
        "--host",
        "kv 8",
        "--ca",
        ca.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(
        !run.status.success() && run.stderr.contains("kv 8"),
        "{}",
        run.stderr
    );
    let other = dir.path().join("other");
    certs_init(&other, "kv-test").await;
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(ca.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    std::fs::copy(other.join("ca-key.pem"), mixed.join("ca-key.pem")).unwrap();
    let run = run_binary(&[
        "certs",
        "node",
        "--id",
        "9",
        "--ca",
        mixed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(
        !run.status.success() && run.stderr.contains("does not match"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn https_with_a_token_lets_only_the_token_in() {
    let dir = temp_dir("https");
    make_certs(dir.path(), "kv-test", 1).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
    let ports = free_ports(2);
    let https = Client::https(&dir.path().join("ca").join("ca.pem"));
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path())
        .with_args(&[
            "--cluster-id",
            "kv-test",
            "--http-tls-cert",
            dir.path().join("node/node-1.pem").to_str().unwrap(),
            "--http-tls-key",
            dir.path().join("node/node-1-key.pem").to_str().unwrap(),
            "--auth-token-file",
            token_file.to_str().unwrap(),
        ])
        .with_client(https.clone().with_token(TOKEN));
    node.start();
    node.wait_for_members(1).await;

    // With the token: the API works, over HTTPS.
    assert_eq!(node.put("/users/alice", b"hello").await.status, 204);
    let reply = node.get("/users/alice").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));

    // Without it, or with a wrong one: 401 with a Bearer challenge, on every route.
    let anonymous = https.clone().without_token();
    for path in [
        "/users/alice",
        "/cluster",
        "/health",
        "/metrics",
        "/nowhere",
    ] {
        let reply = anonymous
            .request(node.http_port, "GET", path, b"")
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        assert!(
            reply.headers.contains("www-authenticate: Bearer realm="),
            "{path}: {}",
            reply.headers
        );
    }
    let wrong_tokens = [
        "s3cret-Token.41",  // same length, last byte differs
        "S3cret-Token.42",  // first byte differs
        "s3cret-Token.420", // longer
        "s3cret",           // a prefix
    ];
    for token in wrong_tokens {
        let client = https.clone().with_token(token);
        let reply = client
            .request(node.http_port, "PUT", "/users/alice", b"x")
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{token}");
        assert!(
            reply.headers.contains(r#"error="invalid_token""#),
            "{}",
            reply.headers
        );
    }
    for authorization in [
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
        "Bearer".to_owned(),
    ] {
        let reply = anonymous
            .request_with_authorization(node.http_port, "/users/alice", &authorization)
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{authorization}");
    }
    let reply = node.get("/users/alice").await;
    assert_eq!(reply.body, b"hello", "the refused PUTs wrote nothing");
    let metrics = String::from_utf8(node.get("/metrics").await.body).unwrap();
    assert_eq!(metric(&metrics, "kv_http_unauthorized_total"), 5 + 4 + 3);

    // Plain HTTP gets no answer; a client trusting another CA refuses the server.
    assert!(
        crate::fixtures::request(node.http_port, "GET", "/health", b"")
            .await
            .is_err()
    );
    let other = temp_dir("https-other");
    make_certs(other.path(), "kv-test", 1).await;
    let stranger = Client::https(&other.path().join("ca").join("ca.pem")).with_token(TOKEN);
    let error = stranger
        .request(node.http_port, "GET", "/health", b"")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");

    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn open_health_lets_probes_in_without_the_token() {
    let dir = temp_dir("open-health");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path()).with_args(&[
        "--auth-token-file",
        token_file.to_str().unwrap(),
        "--open-health",
    ]);
    node.start();
    node.wait_for_members(1).await; // /health, no token
    let anonymous = node.client().clone();
    let reply = anonymous
        .request(node.http_port, "GET", "/metrics", b"")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    for (method, path) in [
        ("GET", "/cluster"),
        ("PUT", "/users/a"),
        ("GET", "/users/a"),
    ] {
        let reply = anonymous
            .request(node.http_port, method, path, b"")
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{method} {path}");
    }
    let client = anonymous.with_token(TOKEN);
    let reply = client
        .request(node.http_port, "PUT", "/users/a", b"v")
        .await
        .unwrap();
    assert_eq!(reply.status, 204);
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn bad_security_flags_stop_the_server_at_startup() {
    let dir = temp_dir("bad-flags");
    let ports = free_ports(2);
    let common = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--node-id",
            "1",
            "--cluster-addr",
            &format!("127.0.0.1:{}", ports[0]),
            "--http-addr",
            &format!("127.0.0.1:{}", ports[1]),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, " \n").unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--http-tls-cert", "cert.pem"], "--http-tls-key"),
        (&["--http-tls-key", "key.pem"], "--http-tls-cert"),
        (&["--auth-token-file", empty.to_str().unwrap()], "is empty"),
        (
            &[
                "--http-tls-cert",
                garbage.to_str().unwrap(),
                "--http-tls-key",
                garbage.to_str().unwrap(),
            ],
            "cannot load a certificate chain",
        ),
    ];
    for (extra, expected) in cases {
        let args = common(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_binary(&args).await;
        assert!(!run.status.success(), "{extra:?} started");
        assert!(run.stderr.contains(expected), "{extra:?}: {}", run.stderr);
    }
}

/// Issues a certificate for node `id` of the CA in `ca` into `dir/node-<id>`, and returns
/// the `--tls-*` arguments of that node.
async fn cluster_tls_args(ca: &Path, dir: &Path, id: u32) -> Vec<String> {
    let out = dir.join(format!("node-{id}-certs"));
    certs_node(ca, &out, id, &["127.0.0.1"]).await;
    let path = |name: String| out.join(name).to_str().unwrap().to_owned();
    vec![
        "--cluster-id".into(),
        "kv-tls".into(),
        "--tls-ca".into(),
        ca.join("ca.pem").to_str().unwrap().to_owned(),
        "--tls-cert".into(),
        path(format!("node-{id}.pem")),
        "--tls-key".into(),
        path(format!("node-{id}-key.pem")),
    ]
}

#[tokio::test]
async fn nodes_replicate_over_mutual_tls_and_a_plaintext_node_stays_out() {
    let dir = temp_dir("cluster-tls");
    let ca = dir.path().join("ca");
    certs_init(&ca, "kv-tls").await;
    let ports = free_ports(8);
    let mut nodes = Vec::new();
    for (i, id) in [1u32, 2].into_iter().enumerate() {
        let args = cluster_tls_args(&ca, dir.path(), id).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let seeds = if id == 1 { vec![] } else { vec![ports[0]] };
        let mut node =
            KvNode::new(id, (ports[2 * i], ports[2 * i + 1]), seeds, dir.path()).with_args(&args);
        node.start();
        nodes.push(node);
    }
    for node in &nodes {
        node.wait_for_members(2).await;
    }
    let put = nodes[0].put("/ks/one?consistency=all", b"secret").await;
    assert_eq!(put.status, 204, "{}", String::from_utf8_lossy(&put.body));
    let got = nodes[1].get("/ks/one?consistency=one").await;
    assert_eq!(got.body, b"secret");

    // A plaintext node of the same cluster id gossips at node 1 and never gets in; a TLS
    // node started after it does.
    let mut plaintext = KvNode::new(3, (ports[4], ports[5]), vec![ports[0]], dir.path())
        .with_args(&["--cluster-id", "kv-tls"]);
    plaintext.start();
    plaintext.wait_for_members(1).await;
    let args = cluster_tls_args(&ca, dir.path(), 4).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut late =
        KvNode::new(4, (ports[6], ports[7]), vec![ports[0]], dir.path()).with_args(&args);
    late.start();
    nodes.push(late);
    for node in &nodes {
        node.wait_for_members(3).await;
    }
    plaintext.wait_for_members(1).await;
    plaintext.terminate().await;
    for node in &mut nodes {
        node.terminate().await;
    }
}
