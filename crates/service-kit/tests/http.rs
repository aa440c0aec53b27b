//! `service_kit::serve` over real loopback sockets: slow and idle clients are cut off, the
//! connection cap answers 503 and frees its slots, and shutdown lets a request in flight
//! finish.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use service_kit::{HttpLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Far longer than any limit below: a test waiting this long has found a bug, not noise.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start(limits: HttpLimits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, app, limits, stop.clone().cancelled_owned()));
    (addr, stop, server)
}

fn limits(max_connections: usize) -> HttpLimits {
    HttpLimits::new(
        max_connections,
        Duration::from_millis(300),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// Reads until the server closes the connection; what it sent. Panics if it stays open.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got))
        .await
        .expect("the server kept the connection open")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

async fn get_healthz(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_at_the_header_timeout() {
    let (addr, _stop, _server) = start(limits(16)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // Headers that never end, one byte at a time.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if tcp.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, drip)
        .await
        .expect("a client dripping header bytes was never cut off");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _stop, _server) = start(limits(16)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    assert!(get_healthz(&mut tcp).await.starts_with("HTTP/1.1 200"));
    // Keep-alive: the server may hold it for the next request, but not forever.
    read_until_closed(&mut tcp).await;
    // A connection that never sends anything is closed too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut silent).await;
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_get_503_and_a_freed_slot_serves_again() {
    let limits = HttpLimits::new(2, Duration::from_secs(30), Duration::from_secs(5)).unwrap();
    let (addr, _stop, _server) = start(limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(get_healthz(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_healthz(&mut second).await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(addr).await.unwrap();
    let refused = read_until_closed(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    // One client lets go: its slot serves the next one.
    drop(first);
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut next = TcpStream::connect(addr).await.unwrap();
            let answer = get_healthz(&mut next).await;
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "the freed slot never served again");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_stops_accepting() {
    let (addr, stop, server) = start(limits(16)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let answer = read_until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("serve did not return after shutdown")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[test]
fn limits_are_checked() {
    assert!(HttpLimits::new(0, Duration::from_secs(1), Duration::ZERO).is_err());
    assert!(HttpLimits::new(1, Duration::from_millis(10), Duration::ZERO).is_err());
    assert!(HttpLimits::new(1, Duration::from_secs(1), Duration::ZERO).is_ok());
}
