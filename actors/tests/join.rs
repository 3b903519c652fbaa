//! The pieces of joining that need no running cluster: the cluster port lets a client without a
//! certificate reach the join protocol and nothing else; the joiner's pinned trust accepts only
//! the CA its token names; the CA signs a request only for the node id it names.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hamster_actors::control::{
    bind_routes, read_frame, write_frame, ClusterPort, ControlHandler, ProtocolHandler, Routes,
};
use hamster_actors::join::request_join;
use hamster_actors::tls::{
    ca_sha256_hex, check_member_material, cluster_server_name, install_ring_provider,
    mint_cluster_ca, mint_node_cert, node_key_and_csr, pinned_client_config, sign_node_csr,
    ClusterCa, TlsMaterial,
};
use hamster_protocol::wire::{
    encode_message, ControlRequest, ControlResponse, JoinRequest, ALPN_CONTROL, ALPN_JOIN,
    ALPN_RAFT,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SERVER_NODE: &str = "00000000000000a1";
const JOINER_NODE: &str = "00000000000000c3";
const REFUSAL_WAIT: Duration = Duration::from_secs(5);

fn material(ca: &ClusterCa, node_id: &str) -> TlsMaterial {
    let (cert_pem, key_pem) = mint_node_cert(ca, node_id).unwrap();
    TlsMaterial {
        ca_cert_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

fn pin(ca: &ClusterCa) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(ca_sha256_hex(&ca.cert_pem).unwrap(), &mut out).unwrap();
    out
}

/// Handlers that record which protocol was reached, and with which peer id.
fn recording_routes() -> (Routes, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let control: ControlHandler = Arc::new(move |_, peer| {
        log.lock().unwrap().push(format!("control:{peer}"));
        Box::pin(async {
            ControlResponse::Error {
                message: "test".into(),
            }
        })
    });
    let echo = |name: &'static str, seen: Arc<Mutex<Vec<String>>>| -> ProtocolHandler {
        Arc::new(move |mut stream, peer| {
            seen.lock().unwrap().push(format!("{name}:{peer}"));
            Box::pin(async move {
                if let Ok(Some(payload)) = read_frame(&mut stream, 5_000).await {
                    let frame = encode_message(&payload.len()).unwrap();
                    let _ = write_frame(&mut stream, &frame).await;
                }
                let _ = stream.shutdown().await;
            })
        })
    };
    let routes = Routes::new(control)
        .with(ALPN_RAFT, echo("raft", seen.clone()))
        .with(ALPN_JOIN, echo("join", seen.clone()));
    (routes, seen)
}

async fn start(ca: &ClusterCa) -> (ClusterPort, Arc<Mutex<Vec<String>>>) {
    install_ring_provider();
    let (routes, seen) = recording_routes();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let port = bind_routes(loopback, &material(ca, SERVER_NODE), routes)
        .await
        .unwrap();
    (port, seen)
}

/// A TLS client that trusts the CA but presents no certificate.
fn certless(ca: &ClusterCa, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Sends one frame over `connector` and returns whatever came back before the close.
async fn exchange(port: &ClusterPort, connector: TlsConnector) -> Vec<u8> {
    let tcp = TcpStream::connect(port.local_addr()).await.unwrap();
    let Ok(mut stream) = connector.connect(cluster_server_name(), tcp).await else {
        return Vec::new();
    };
    let frame = encode_message(&ControlRequest::Status).unwrap();
    let _ = stream.write_all(&frame).await;
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("a refused connection is closed promptly");
    bytes
}

/// Without a certificate, control and Raft are closed unanswered; join is served, with an
/// empty peer id. The mTLS guarantee of every other protocol is unchanged.
#[tokio::test]
async fn t10_only_join_is_served_without_a_certificate() {
    let ca = mint_cluster_ca("c-join").unwrap();
    let (port, seen) = start(&ca).await;
    for alpn in [ALPN_CONTROL, ALPN_RAFT] {
        let answer = exchange(&port, certless(&ca, alpn)).await;
        assert!(
            answer.is_empty(),
            "{alpn:?} answered a client without a certificate"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    let answer = exchange(&port, certless(&ca, ALPN_JOIN)).await;
    assert!(
        !answer.is_empty(),
        "join must be served without a certificate"
    );
    assert_eq!(*seen.lock().unwrap(), vec!["join:".to_string()]);
}

/// The joiner's pinned trust: a port whose chain carries the pinned CA is accepted; a port of
/// another cluster fails the handshake before anything is sent.
#[tokio::test]
async fn t20_pinned_trust_accepts_only_the_tokens_ca() {
    let ca = mint_cluster_ca("c-join").unwrap();
    let other = mint_cluster_ca("c-other").unwrap();
    let (port, seen) = start(&ca).await;
    let good = TlsConnector::from(pinned_client_config(pin(&ca), &[ALPN_JOIN]).unwrap());
    assert!(!exchange(&port, good).await.is_empty());
    let bad = TlsConnector::from(pinned_client_config(pin(&other), &[ALPN_JOIN]).unwrap());
    let tcp = TcpStream::connect(port.local_addr()).await.unwrap();
    assert!(bad.connect(cluster_server_name(), tcp).await.is_err());
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the refused joiner reached no handler"
    );
}

/// A request naming the node it asks for is signed into a certificate that fits the joiner's
/// key and names that node; a request for another node's id is refused.
#[tokio::test]
async fn t30_csr_is_signed_only_for_its_own_node_id() {
    install_ring_provider();
    let ca = mint_cluster_ca("c-join").unwrap();
    let (key_pem, csr_pem) = node_key_and_csr(JOINER_NODE).unwrap();
    assert!(!csr_pem.contains("PRIVATE KEY"));
    let cert_pem = sign_node_csr(&ca, &csr_pem, JOINER_NODE).unwrap();
    let m = TlsMaterial {
        ca_cert_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    };
    check_member_material(&m, JOINER_NODE).unwrap();
    assert!(check_member_material(&m, SERVER_NODE).is_err());
    let err = sign_node_csr(&ca, &csr_pem, SERVER_NODE).unwrap_err();
    assert!(err.to_string().contains("not exactly"), "{err}");
    assert!(sign_node_csr(&ca, "not a csr", JOINER_NODE).is_err());
}

/// A joiner whose handshake the node cuts (a crowded cluster port) is told so, with what to do;
/// it is not told that the node is not of the token's cluster.
#[tokio::test]
async fn t40_cut_handshake_is_not_blamed_on_the_token() {
    install_ring_provider();
    let ca = mint_cluster_ca("c-join").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cutter = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let (_, csr_pem) = node_key_and_csr(JOINER_NODE).unwrap();
    let req = JoinRequest {
        token: "not-used".into(),
        csr_pem,
        node_id: JOINER_NODE.into(),
        cluster_addr: "127.0.0.1:9400".into(),
        zone: "z1".into(),
        host: "h1".into(),
        capacity_bytes: 1 << 30,
        replaces: None,
    };
    let err = format!(
        "{:#}",
        request_join(&addr.to_string(), pin(&ca), &req)
            .await
            .unwrap_err()
    );
    cutter.abort();
    assert!(!err.contains("is not a member"), "{err}");
    assert!(
        err.contains("closed the connection during the TLS handshake"),
        "{err}"
    );
    assert!(err.contains("overloaded"), "{err}");
}
