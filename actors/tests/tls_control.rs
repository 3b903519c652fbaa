//! The cluster CA, the `<data>/tls` directory and the cluster port over real loopback mutual
//! TLS: who may connect (INV-6: no plaintext, no anonymous peers), where identity comes from,
//! and that refusals never stop the listener.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hamster_actors::control::{
    bind, bind_routes, control_request, read_frame, write_frame, ClusterPort, ControlHandler,
    ProtocolHandler, Routes, HANDSHAKE_ATTEMPTS_MAX,
};
use hamster_actors::tls::{
    ca_sha256_hex, client_config, cluster_server_name, install_ring_provider, load_cluster_ca,
    load_tls_dir, mint_cluster_ca, mint_node_cert, peer_node_id, write_tls_dir, ClusterCa,
    TlsMaterial,
};
use hamster_protocol::wire::{
    decode_message, encode_frame, encode_message, ControlRequest, ControlResponse, MemberStatus,
    StatusReport, ALPN_CONTROL, ALPN_RAFT, ALPN_SHARD, FRAME_BYTES_MAX,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SERVER_NODE: &str = "00000000000000a1";
const CLIENT_NODE: &str = "00000000000000b2";
/// Long enough for any refusal on loopback; short enough that a hang fails fast.
const REFUSAL_WAIT: Duration = Duration::from_secs(5);

fn material(ca: &ClusterCa, node_id: &str) -> TlsMaterial {
    let (cert_pem, key_pem) = mint_node_cert(ca, node_id).unwrap();
    TlsMaterial {
        ca_cert_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

fn report() -> StatusReport {
    StatusReport {
        node_id: SERVER_NODE.into(),
        cluster_id: "c-test".into(),
        version: "0.1.0".into(),
        members: vec![MemberStatus {
            node_id: SERVER_NODE.into(),
            cluster_addr: "127.0.0.1:9400".into(),
            role: "voter".into(),
            zone: "z1".into(),
            host: "h1".into(),
            capacity_bytes: 1 << 30,
            state: None,
            term: None,
            last_log_index: None,
            shard_count: None,
            shard_bytes: None,
        }],
        leader: Some(SERVER_NODE.into()),
        term: 2,
        commit_index: 7,
        applied_index: 7,
        last_log_index: 8,
        s3_addr: Some("127.0.0.1:9000".into()),
        admin_addr: "127.0.0.1:9001".into(),
        cluster_addr: "127.0.0.1:9400".into(),
        layout: None,
        stale_shards: 0,
        scrub: None,
        now_ms: 0,
        heal_soon: 0,
    }
}

/// A control handler that answers every request with [`report`] and records who asked.
fn recording_handler() -> (ControlHandler, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler: ControlHandler = Arc::new(move |request, peer| {
        log.lock().unwrap().push(peer);
        Box::pin(async move {
            match request {
                ControlRequest::Status => ControlResponse::Status(report()),
                _ => ControlResponse::Error {
                    message: "this test node answers status only".to_string(),
                },
            }
        })
    });
    (handler, seen)
}

struct Cluster {
    ca: ClusterCa,
    client: TlsMaterial,
    port: ClusterPort,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn start() -> Cluster {
    install_ring_provider();
    let ca = mint_cluster_ca("c-test").unwrap();
    let server = material(&ca, SERVER_NODE);
    let client = material(&ca, CLIENT_NODE);
    let (handler, seen) = recording_handler();
    let port = bind(loopback(), &server, handler).await.unwrap();
    Cluster {
        ca,
        client,
        port,
        seen,
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn status(addr: SocketAddr, m: &TlsMaterial) -> anyhow::Result<ControlResponse> {
    control_request(&addr.to_string(), m, &ControlRequest::Status).await
}

/// Reads whatever the server sends until it closes, and asserts it never sent a frame back:
/// only nothing, a TLS alert, or a connection error count as a refusal.
async fn assert_closed_without_answer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut bytes = Vec::new();
    let outcome = tokio::time::timeout(REFUSAL_WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("the server must close a refused connection promptly");
    if outcome.is_ok() {
        assert!(
            bytes.is_empty() || bytes[0] == 0x15,
            "a refused client got {} bytes that are not a TLS alert",
            bytes.len()
        );
    }
}

/// The tls directory round-trips, keys are 0600 from the start, and loading refuses a missing
/// file or a key others can read, saying what to do.
#[tokio::test]
async fn t10_tls_dir_round_trip_and_modes() {
    let ca = mint_cluster_ca("c-test").unwrap();
    let (cert_pem, key_pem) = mint_node_cert(&ca, SERVER_NODE).unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("tls");
    write_tls_dir(&dir, &ca, &cert_pem, &key_pem).unwrap();

    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("node.key"), 0o600);
    assert_eq!(mode("ca.pem") & 0o077, 0o044, "certificates are public");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let loaded = load_tls_dir(&dir).unwrap();
    assert_eq!(loaded.ca_cert_pem, ca.cert_pem);
    assert_eq!(loaded.cert_pem, cert_pem);
    assert_eq!(loaded.key_pem, key_pem);
    let loaded_ca = load_cluster_ca(&dir).unwrap();
    assert_eq!(loaded_ca.key_pem, ca.key_pem);

    // Rewriting replaces the files and keeps the modes.
    write_tls_dir(&dir, &ca, &cert_pem, &key_pem).unwrap();
    assert_eq!(mode("node.key"), 0o600);

    std::fs::set_permissions(dir.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_tls_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("node.key") && err.contains("chmod 600"),
        "{err}"
    );

    let empty = data.path().join("empty");
    let err = load_tls_dir(&empty).unwrap_err().to_string();
    assert!(
        err.contains("node.pem is missing") && err.contains("`hamster init`"),
        "{err}"
    );
}

/// A node certificate from another cluster's CA is refused at load time.
#[tokio::test]
async fn t11_load_refuses_mismatched_ca() {
    let ca = mint_cluster_ca("c-test").unwrap();
    let other = mint_cluster_ca("c-other").unwrap();
    let (cert_pem, key_pem) = mint_node_cert(&other, SERVER_NODE).unwrap();
    let data = tempfile::tempdir().unwrap();
    write_tls_dir(data.path(), &ca, &cert_pem, &key_pem).unwrap();
    let err = load_tls_dir(data.path()).unwrap_err().to_string();
    assert!(err.contains("was not signed by"), "{err}");
}

/// The certificate carries the node id, and a malformed node id is refused when minting.
#[tokio::test]
async fn t12_identity_lives_in_the_certificate() {
    let ca = mint_cluster_ca("c-test").unwrap();
    let (cert_pem, _) = mint_node_cert(&ca, CLIENT_NODE).unwrap();
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(peer_node_id(&chain).as_deref(), Some(CLIENT_NODE));
    let ca_chain = vec![CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()];
    assert_eq!(peer_node_id(&ca_chain), None, "the CA is nobody");
    let err = mint_node_cert(&ca, "not-hex").unwrap_err().to_string();
    assert!(err.contains("16 lowercase hex digits"), "{err}");
}

/// The CA hash a join token pins is the SHA-256 of the CA's DER, and stable.
#[tokio::test]
async fn t13_ca_sha256_is_stable() {
    let ca = mint_cluster_ca("c-test").unwrap();
    let first = ca_sha256_hex(&ca.cert_pem).unwrap();
    assert_eq!(first, ca_sha256_hex(&ca.cert_pem).unwrap());
    assert_eq!(first.len(), 64);
    let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
    assert_eq!(first, hex::encode(Sha256::digest(der.as_ref())));
    let other = mint_cluster_ca("c-test").unwrap();
    assert_ne!(first, ca_sha256_hex(&other.cert_pem).unwrap());
    assert!(ca_sha256_hex("not a pem").is_err());
}

/// A Status request over real mutual TLS returns what the callback gave, and the callback saw
/// the client's node id from its certificate (not the server's own).
#[tokio::test]
async fn t20_status_round_trip() {
    let cluster = start().await;
    let response = status(cluster.port.local_addr(), &cluster.client)
        .await
        .unwrap();
    assert_eq!(response, ControlResponse::Status(report()));
    assert_eq!(*cluster.seen.lock().unwrap(), vec![CLIENT_NODE.to_string()]);
}

/// A plaintext client is closed without an answer, and the listener serves the next client.
#[tokio::test]
async fn t30_plaintext_refused_listener_survives() {
    let cluster = start().await;
    let addr = cluster.port.local_addr();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let frame = encode_message(&ControlRequest::Status).unwrap();
    let _ = tcp.write_all(&frame).await;
    assert_closed_without_answer(&mut tcp).await;
    assert!(cluster.seen.lock().unwrap().is_empty());

    let response = status(addr, &cluster.client).await.unwrap();
    assert_eq!(response, ControlResponse::Status(report()));
}

/// A client whose certificate comes from another CA is refused, even though it trusts ours.
#[tokio::test]
async fn t31_foreign_ca_client_refused() {
    let cluster = start().await;
    let other = mint_cluster_ca("c-other").unwrap();
    let (cert_pem, key_pem) = mint_node_cert(&other, CLIENT_NODE).unwrap();
    let intruder = TlsMaterial {
        ca_cert_pem: cluster.ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    };
    let err = status(cluster.port.local_addr(), &intruder)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(cluster.seen.lock().unwrap().is_empty());
    // The listener is still there for members.
    assert!(status(cluster.port.local_addr(), &cluster.client)
        .await
        .is_ok());
}

/// A TLS client that presents no certificate is refused.
#[tokio::test]
async fn t32_client_without_certificate_refused() {
    let cluster = start().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cluster.ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_CONTROL.to_vec()];
    let tcp = TcpStream::connect(cluster.port.local_addr()).await.unwrap();
    // In TLS 1.3 the client may finish its side before the server judges its (missing)
    // certificate, so the refusal can show at connect or at the first read.
    if let Ok(mut stream) = TlsConnector::from(Arc::new(config))
        .connect(cluster_server_name(), tcp)
        .await
    {
        let _ = stream
            .write_all(&encode_message(&ControlRequest::Status).unwrap())
            .await;
        assert_closed_without_answer(&mut stream).await;
    }
    assert!(cluster.seen.lock().unwrap().is_empty());
}

/// A frame announcing more than the limit is answered with an error and the connection closed,
/// before the server reads or allocates the body.
#[tokio::test]
async fn t33_oversized_frame_refused() {
    let cluster = start().await;
    let connector = TlsConnector::from(client_config(&cluster.client, &[ALPN_CONTROL]).unwrap());
    let tcp = TcpStream::connect(cluster.port.local_addr()).await.unwrap();
    let mut stream = connector.connect(cluster_server_name(), tcp).await.unwrap();
    let too_big = u32::try_from(FRAME_BYTES_MAX + 1).unwrap().to_be_bytes();
    stream.write_all(&too_big).await.unwrap();
    stream.flush().await.unwrap();

    let payload = read_frame(&mut stream, 5_000).await.unwrap().unwrap();
    let ControlResponse::Error { message } = decode_message(&payload).unwrap() else {
        panic!("an oversized frame must be answered with an error");
    };
    assert!(message.contains("exceeds"), "{message}");
    assert!(matches!(
        read_frame(&mut stream, 5_000).await,
        Ok(None) | Err(_)
    ));
    assert!(cluster.seen.lock().unwrap().is_empty());
}

/// A request this node does not understand gets an error answer, not a dropped connection.
#[tokio::test]
async fn t34_unknown_request_answered_with_error() {
    let cluster = start().await;
    let connector = TlsConnector::from(client_config(&cluster.client, &[ALPN_CONTROL]).unwrap());
    let tcp = TcpStream::connect(cluster.port.local_addr()).await.unwrap();
    let mut stream = connector.connect(cluster_server_name(), tcp).await.unwrap();
    let frame = encode_frame(br#"{"type":"teleport"}"#).unwrap();
    write_frame(&mut stream, &frame).await.unwrap();
    let payload = read_frame(&mut stream, 5_000).await.unwrap().unwrap();
    assert!(matches!(
        decode_message(&payload).unwrap(),
        ControlResponse::Error { .. }
    ));
    // The connection stays usable for a well-formed request.
    write_frame(
        &mut stream,
        &encode_message(&ControlRequest::Status).unwrap(),
    )
    .await
    .unwrap();
    let payload = read_frame(&mut stream, 5_000).await.unwrap().unwrap();
    assert_eq!(
        decode_message::<ControlResponse>(&payload).unwrap(),
        ControlResponse::Status(report())
    );
}

/// Routing: a registered protocol gets the stream and the peer's id; an unregistered one is
/// refused in the handshake.
#[tokio::test]
async fn t40_alpn_routing() {
    install_ring_provider();
    let ca = mint_cluster_ca("c-test").unwrap();
    let server = material(&ca, SERVER_NODE);
    let client = material(&ca, CLIENT_NODE);
    let (handler, _) = recording_handler();
    // A stand-in for the Raft protocol: greets the peer by the id in its certificate.
    let raft: ProtocolHandler = Arc::new(|mut stream, peer| {
        Box::pin(async move {
            let frame = encode_frame(peer.as_bytes()).unwrap();
            let _ = write_frame(&mut stream, &frame).await;
            let _ = stream.shutdown().await;
        })
    });
    let routes = Routes::new(handler).with(ALPN_RAFT, raft);
    let port = bind_routes(loopback(), &server, routes).await.unwrap();

    let connector = TlsConnector::from(client_config(&client, &[ALPN_RAFT]).unwrap());
    let tcp = TcpStream::connect(port.local_addr()).await.unwrap();
    let mut stream = connector.connect(cluster_server_name(), tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_RAFT));
    let greeting = read_frame(&mut stream, 5_000).await.unwrap().unwrap();
    assert_eq!(greeting, CLIENT_NODE.as_bytes());

    let connector = TlsConnector::from(client_config(&client, &[ALPN_SHARD]).unwrap());
    let tcp = TcpStream::connect(port.local_addr()).await.unwrap();
    assert!(connector.connect(cluster_server_name(), tcp).await.is_err());

    // Control still works on the same port.
    assert!(status(port.local_addr(), &client).await.is_ok());
}

/// With nothing listening, the CLI says so and what to do.
#[tokio::test]
async fn t50_nothing_listening() {
    let ca = mint_cluster_ca("c-test").unwrap();
    let client = material(&ca, CLIENT_NODE);
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = status(addr, &client).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!("no hamster node is listening on {addr}; is `hamster serve` running?")
    );
}

/// Shutting the port down closes the listener.
#[tokio::test]
async fn t60_shutdown_stops_listening() {
    let cluster = start().await;
    let addr = cluster.port.local_addr();
    cluster.port.shutdown();
    // Let the runtime run the abort.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = status(addr, &cluster.client).await.unwrap_err().to_string();
    assert!(err.contains("no hamster node is listening"), "{err}");
}

/// The first bytes of a TLS ClientHello (record header, handshake header announcing more, the
/// version and part of the random): a client that starts a handshake and then stalls.
const PARTIAL_CLIENT_HELLO: [u8; 19] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 1, 2, 3, 4, 5, 6, 7,
];
/// More idle connections than the port once served in all (256).
const FLOOD_CONNECTIONS: usize = 300;

/// A flood of idle connections, every fourth stalled in the middle of its ClientHello, held
/// open from the same address as the client (loopback): the member's status request is still
/// answered, at once, and so is the next one. The port used to serve 256 connections in all
/// and close every newcomer past that until an idle one timed out.
#[tokio::test]
async fn t70_idle_flood_does_not_lock_out_a_member() {
    let cluster = start().await;
    let addr = cluster.port.local_addr();
    let mut flood = Vec::with_capacity(FLOOD_CONNECTIONS);
    for i in 0..FLOOD_CONNECTIONS {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        if i % 4 == 3 {
            tcp.write_all(&PARTIAL_CLIENT_HELLO).await.unwrap();
        }
        flood.push(tcp);
    }
    // Let the port accept the whole flood before the member arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        let response = tokio::time::timeout(REFUSAL_WAIT, status(addr, &cluster.client))
            .await
            .expect("the status request must not wait out the flood")
            .unwrap();
        assert_eq!(response, ControlResponse::Status(report()));
    }
    drop(flood);
}

/// A node that closes the connection in the middle of the TLS handshake (as a crowded port
/// does) is reported as such, after a few tries, with what to do; not as a certificate or
/// cluster mismatch.
#[tokio::test]
async fn t71_cut_handshake_is_reported_as_a_crowded_port() {
    let ca = mint_cluster_ca("c-test").unwrap();
    let client = material(&ca, CLIENT_NODE);
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    let cutter = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    let err = format!("{:#}", status(addr, &client).await.unwrap_err());
    cutter.abort();
    assert_eq!(accepted.load(Ordering::SeqCst), HANDSHAKE_ATTEMPTS_MAX);
    assert!(
        err.contains("closed the connection during the TLS handshake"),
        "{err}"
    );
    assert!(err.contains("overloaded"), "{err}");
    assert!(!err.contains("is it a node of the cluster"), "{err}");
}
