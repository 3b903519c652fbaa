//! The peer link's pooled connections over real loopback mutual TLS. A connection the serving
//! side has closed (it restarted, or dropped the connection after its idle limit) is never used
//! for the next request: that request dials afresh and is answered, rather than failing as the
//! first request after a quiet spell did. And a failure tells whether the request can have
//! left this node, which is what decides whether a caller may send it again elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hamster_actors::control::{
    bind_routes, read_frame, write_frame, ControlHandler, ProtocolHandler, Routes,
};
use hamster_actors::peer::{node_id_hex, PeerLink, PeerRequest};
use hamster_actors::tls::{
    install_ring_provider, mint_cluster_ca, mint_node_cert, ClusterCa, TlsMaterial,
};
use hamster_protocol::wire::{encode_frame, ControlResponse, ALPN_RAFT};
use tokio::io::AsyncWriteExt;

const SERVER: u64 = 2;
const CLIENT: u64 = 1;
/// Time allowed for one request that is expected to be answered on loopback.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// Long enough on loopback for a close sent by the server to reach the client.
const CLOSE_ARRIVES: Duration = Duration::from_millis(300);

fn material(ca: &ClusterCa, id: u64) -> TlsMaterial {
    let (cert_pem, key_pem) = mint_node_cert(ca, &node_id_hex(id)).unwrap();
    TlsMaterial {
        ca_cert_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

fn stub_control() -> ControlHandler {
    Arc::new(|_request, _peer| {
        Box::pin(async {
            ControlResponse::Error {
                message: "this test node has no control protocol".into(),
            }
        })
    })
}

/// A stand-in for the Raft protocol that echoes one request per connection and then closes
/// it, as a peer that restarts or closes an idle connection does; counts connections served.
fn one_answer_per_connection(served: Arc<AtomicUsize>) -> ProtocolHandler {
    Arc::new(move |mut stream, _peer| {
        let served = served.clone();
        Box::pin(async move {
            served.fetch_add(1, Ordering::SeqCst);
            if let Ok(Some(payload)) = read_frame(&mut stream, 5_000).await {
                let frame = encode_frame(&payload).unwrap();
                let _ = write_frame(&mut stream, &frame).await;
            }
            let _ = stream.shutdown().await;
        })
    })
}

/// A stand-in that takes a request and never answers it.
fn never_answers() -> ProtocolHandler {
    Arc::new(|mut stream, _peer| {
        Box::pin(async move {
            let _ = read_frame(&mut stream, 5_000).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    })
}

fn request(addr: &str, payload: &[u8], timeout: Duration) -> PeerRequest {
    PeerRequest {
        to: SERVER,
        addr: addr.to_string(),
        payload: payload.to_vec(),
        timeout,
    }
}

#[tokio::test]
async fn t10_a_connection_the_peer_closed_is_not_used_again() {
    install_ring_provider();
    let ca = mint_cluster_ca("c-peer-link").unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let routes =
        Routes::new(stub_control()).with(ALPN_RAFT, one_answer_per_connection(served.clone()));
    let port = bind_routes(
        "127.0.0.1:0".parse().unwrap(),
        &material(&ca, SERVER),
        routes,
    )
    .await
    .unwrap();
    let addr = port.local_addr().to_string();
    let link = PeerLink::new(&material(&ca, CLIENT)).unwrap();

    for round in 0..3u8 {
        let payload = [b'r', b'0' + round];
        let answer = link
            .send(request(&addr, &payload, REQUEST_WAIT))
            .await
            .unwrap_or_else(|e| panic!("request {round} after the peer closed: {e}"));
        assert_eq!(answer, payload);
        // The server has closed this connection; give the close time to arrive, as it has
        // long arrived after a quiet spell.
        tokio::time::sleep(CLOSE_ARRIVES).await;
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        3,
        "one fresh connection per request"
    );
}

#[tokio::test]
async fn t20_a_failure_says_whether_the_request_left() {
    install_ring_provider();
    let ca = mint_cluster_ca("c-peer-link-sent").unwrap();
    let link = PeerLink::new(&material(&ca, CLIENT)).unwrap();

    // Nothing listens here: no connection, so the request cannot have left.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let e = link
        .send(request(&closed, b"x", REQUEST_WAIT))
        .await
        .expect_err("nothing listens");
    assert!(e.never_sent() && e.is_unreachable(), "{e:?}");

    // A peer that takes the request and does not answer may have acted on it.
    let routes = Routes::new(stub_control()).with(ALPN_RAFT, never_answers());
    let port = bind_routes(
        "127.0.0.1:0".parse().unwrap(),
        &material(&ca, SERVER),
        routes,
    )
    .await
    .unwrap();
    let silent = port.local_addr().to_string();
    let e = link
        .send(request(&silent, b"x", Duration::from_millis(500)))
        .await
        .expect_err("the peer never answers");
    assert!(!e.never_sent() && e.is_unreachable(), "{e:?}");
}
