//! Hostile and broken clients on the client and admin ports of a running node: every such
//! connection is answered with an error and/or closed, and the node keeps serving a normal client.

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{http_get, simple, Conn, TestCluster, WAIT};
use futures_util::{SinkExt, StreamExt};
use raftkv::resp::Reply;
use raftkv::server::ServerLimits;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Sends `bytes`, optionally half-closes, and reads until the server closes; returns what it
/// sent back.
async fn send_and_read_to_close(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close before everything is written; that is one of the allowed outcomes.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the server closes the connection in time")
        {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn still_serves(addr: SocketAddr, round: usize) {
    let mut c = Conn::connect(addr).await;
    let key = format!("after-{round}");
    assert_eq!(c.cmd_retrying(&["SET", &key, "ok"]).await, simple("OK"));
    assert_eq!(c.cmd(&["GET", &key]).await, Reply::bulk("ok".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_survives_garbage() {
    let cluster = TestCluster::start(1, ServerLimits::default(), |_| {}).await;
    let leader = cluster.leader().await;
    let addr = cluster.client_addr(leader);
    still_serves(addr, 0).await;

    // Random bytes, of several sizes and seeds: whatever they decode to, the connection ends
    // (by a protocol error or the half-close) and nothing else is disturbed.
    for (round, (seed, len)) in [(1u64, 16usize), (2, 1000), (3, 70_000), (4, 300_000)]
        .into_iter()
        .enumerate()
    {
        let _ = send_and_read_to_close(addr, &random_bytes(seed, len), true).await;
        still_serves(addr, round + 1).await;
    }

    // A bulk length beyond the limit: an error reply, then the server closes (without a
    // half-close from us).
    let got = send_and_read_to_close(addr, b"*1\r\n$99999999999\r\n", false).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("-ERR Protocol error: bulk length"),
        "{text}"
    );
    still_serves(addr, 10).await;

    // A malformed array header.
    let got = send_and_read_to_close(addr, b"*abc\r\n", false).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
    // A negative one, and a bulk where the header promised another type.
    let got = send_and_read_to_close(addr, b"*-5\r\n", false).await;
    assert!(String::from_utf8_lossy(&got).starts_with("-ERR Protocol error"));
    let got = send_and_read_to_close(addr, b"*1\r\n:5\r\n", false).await;
    assert!(String::from_utf8_lossy(&got).starts_with("-ERR Protocol error"));
    // Good requests before the bad one are answered first, in order.
    let got = send_and_read_to_close(addr, b"PING\r\n*1\r\n$4\r\nPING\r\n*x\r\n", false).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
    );
    still_serves(addr, 11).await;

    // A request cut off by the client's half-close.
    let got = send_and_read_to_close(addr, b"*2\r\n$3\r\nGET\r\n$5\r\nab", true).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("-ERR Protocol error"),
        "{got:?}"
    );

    // A half-closed client still gets the replies to everything it sent.
    let got = send_and_read_to_close(
        addr,
        b"*3\r\n$3\r\nSET\r\n$2\r\nhc\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$2\r\nhc\r\n*2\r\n$3\r\nGET\r\n$2\r\nhc\r\n",
        true,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n:2\r\n$1\r\n2\r\n");
    still_serves(addr, 12).await;

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_survives_garbage() {
    let limits = ServerLimits {
        admin_header_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let cluster = TestCluster::start(1, limits, |_| {}).await;
    let leader = cluster.leader().await;
    let admin = cluster.admin_addr(leader);
    let (code, _, _) = http_get(admin, "/status").await;
    assert_eq!(code, 200);

    for (seed, len) in [(5u64, 10usize), (6, 5000), (7, 200_000)] {
        let got = send_and_read_to_close(admin, &random_bytes(seed, len), true).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 4"),
            "garbage gets a 4xx or a close: {text}"
        );
        let (code, _, _) = http_get(admin, "/metrics").await;
        assert_eq!(code, 200);
    }

    // A truncated request: the client stops in the middle of its headers and half-closes.
    let got = send_and_read_to_close(admin, b"GET /status HTTP/1.1\r\nHost: x\r\nAcc", true).await;
    assert!(
        got.is_empty() || String::from_utf8_lossy(&got).starts_with("HTTP/1.1 4"),
        "{got:?}"
    );
    // The same, but the client keeps the connection open: the header timeout closes it.
    let got = send_and_read_to_close(admin, b"GET /status HTTP/1.1\r\nHost: x\r\n", false).await;
    assert!(
        got.is_empty() || String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{got:?}"
    );
    // A client port request on the admin port, and an HTTP request on the client port.
    let _ = send_and_read_to_close(admin, b"*1\r\n$4\r\nPING\r\n", true).await;
    let client = cluster.client_addr(leader);
    let got =
        send_and_read_to_close(client, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with(
            "-ERR wrong number of arguments for 'get' command\r\n-ERR unknown command 'Host:'"
        ),
        "{text}"
    );

    let (code, _, body) = http_get(admin, "/status").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"role\": \"leader\""), "{body}");
    still_serves(client, 0).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_told_so_and_closed() {
    let limits = ServerLimits {
        max_connections: 2,
        ..ServerLimits::default()
    };
    let cluster = TestCluster::start(1, limits, |_| {}).await;
    let leader = cluster.leader().await;
    let addr = cluster.client_addr(leader);
    let mut first = Conn::connect(addr).await;
    let mut second = Conn::connect(addr).await;
    assert_eq!(first.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(second.cmd(&["PING"]).await, simple("PONG"));
    let got = send_and_read_to_close(addr, b"", false).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    // A slot frees up when a connection ends.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // A refused connection may also be reset under our feet: any failure means "not yet".
        let mut c = Conn::connect(addr).await;
        let sent = c.framed.send(&["PING"][..]).await.is_ok();
        let reply = tokio::time::timeout(WAIT, c.framed.next())
            .await
            .expect("an answer in time");
        match reply {
            Some(Ok(Reply::Simple(pong))) if sent && pong == "PONG" => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "{other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(second.cmd(&["PING"]).await, simple("PONG"));
    cluster.shutdown().await;
}
