//! The client and admin ports' resource limits, each at a small value so it is reached at once:
//! the server-wide budget for partially received requests, the output buffer's soft and hard
//! limits and write timeout, the idle and read timeouts, the connection, request size and
//! pipeline bounds, and an admin client that half-closes. Progress is observed through the
//! server's own counters and gauges, never by sleeping.

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{bulk, http_get, simple, Conn, TestCluster, WAIT};
use raftkv::resp::{encode_request, Reply};
use raftkv::server::{Server, ServerLimits};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

async fn single(limits: ServerLimits) -> (TestCluster, u64) {
    let cluster = TestCluster::start(1, limits, |_| {}).await;
    let leader = cluster.leader().await;
    (cluster, leader)
}

fn server(cluster: &TestCluster, id: u64) -> &Server {
    &cluster.servers[&id]
}

/// Reads until the server closes; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection in time");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_share_one_server_wide_budget() {
    let limits = ServerLimits {
        request_buffer_budget: 1 << 20,
        ..ServerLimits::default()
    };
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);
    let header = |len: usize| format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n");

    // A SET of 700 KB that stalls after its header holds 700 KB of the 1 MiB budget.
    let mut first = Conn::connect(addr).await;
    first.raw(header(700_000).as_bytes()).await;
    eventually("the stalled request is charged", || {
        node.request_buffer_bytes() >= 700_000
    })
    .await;
    assert!(node
        .render_metrics()
        .contains("raftkv_request_buffer_bytes 7000"));

    // A second one does not fit: refused with a clear error, its connection closed.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(header(700_000).as_bytes()).await.unwrap();
    let got = String::from_utf8(read_to_close(&mut second).await).unwrap();
    assert!(
        got.starts_with("-ERR server busy: partially received requests"),
        "{got}"
    );
    assert_eq!(count(&node.stats().request_budget_refusals), 1);

    // The first completes and gives its share back; the budget serves the next request.
    first.raw(&vec![b'v'; 700_000]).await;
    first.raw(b"\r\n").await;
    assert_eq!(first.reply().await, simple("OK"));
    eventually("the budget is given back", || {
        node.request_buffer_bytes() == 0
    })
    .await;
    let mut third = Conn::connect(addr).await;
    third.raw(header(700_000).as_bytes()).await;
    third.raw(&vec![b'w'; 700_000]).await;
    third.raw(b"\r\n").await;
    assert_eq!(third.reply().await, simple("OK"));
    // A connection dropped in the middle of a request gives its share back too.
    third.raw(header(500_000).as_bytes()).await;
    eventually("charged", || node.request_buffer_bytes() >= 500_000).await;
    drop(third);
    eventually("released on close", || node.request_buffer_bytes() == 0).await;
    cluster.shutdown().await;
}

const VALUE_LEN: usize = 100 * 1024;

async fn store_big_value(addr: std::net::SocketAddr) -> Vec<u8> {
    let value = vec![b'x'; VALUE_LEN];
    let mut c = Conn::connect(addr).await;
    c.send_bytes(&[b"SET".as_slice(), b"big", &value]).await;
    assert_eq!(c.reply().await, simple("OK"));
    value
}

fn pipelined_gets(n: usize) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for _ in 0..n {
        encode_request(&["GET", "big"], &mut out);
    }
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_large_gets_is_served_within_the_soft_output_limit() {
    let soft = 256 * 1024;
    let limits = ServerLimits {
        output_soft_limit: soft,
        ..ServerLimits::default()
    };
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);
    let value = store_big_value(addr).await;

    // 300 GETs of 100 KiB in one write: 30 MB of replies, produced a soft limit at a time.
    let mut c = Conn::connect(addr).await;
    c.raw(&pipelined_gets(300)).await;
    for _ in 0..300 {
        assert_eq!(c.reply().await, Reply::bulk(value.clone()));
    }
    let peak = count(&node.stats().output_buffered_bytes_peak) as usize;
    assert!(peak > 0);
    assert!(
        peak <= soft + VALUE_LEN + 64,
        "at most the soft limit and one reply wait unsent: {peak}"
    );
    assert_eq!(count(&node.stats().output_limit_closes), 0);
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    eventually("nothing left unsent", || {
        count(&node.stats().output_buffered_bytes) == 0
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_hard_limit_closes_the_connection() {
    let limits = ServerLimits {
        output_soft_limit: 64 * 1024,
        output_hard_limit: 150 * 1024,
        ..ServerLimits::default()
    };
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);
    let value = store_big_value(addr).await;
    let mut c = Conn::connect(addr).await;
    // One value fits; two in one MGET reply do not.
    assert_eq!(c.cmd(&["GET", "big"]).await, Reply::bulk(value));
    c.send(&["MGET", "big", "big"]).await;
    assert_eq!(c.until_closed().await, Vec::<Reply>::new());
    assert_eq!(count(&node.stats().output_limit_closes), 1);
    eventually("the gauge is back to zero", || {
        count(&node.stats().output_buffered_bytes) == 0
    })
    .await;
    let mut other = Conn::connect(addr).await;
    assert_eq!(other.cmd(&["PING"]).await, simple("PONG"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected_after_the_write_timeout() {
    let limits = ServerLimits {
        output_soft_limit: 256 * 1024,
        output_write_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);
    store_big_value(addr).await;
    // 60 MB of replies asked for and never read: far more than the socket buffers hold.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(&pipelined_gets(600)).await.unwrap();
    eventually("the stalled connection is closed", || {
        count(&node.stats().output_stall_closes) == 1
    })
    .await;
    let peak = count(&node.stats().output_buffered_bytes_peak) as usize;
    assert!(peak <= 256 * 1024 + VALUE_LEN + 64, "{peak}");
    let mut other = Conn::connect(addr).await;
    assert_eq!(other.cmd(&["PING"]).await, simple("PONG"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_active_ones_are_not() {
    let limits = ServerLimits {
        // Long enough that a loaded machine's scheduling pauses do not make the busy client
        // below look idle.
        idle_timeout: Some(Duration::from_secs(1)),
        read_timeout: None,
        ..ServerLimits::default()
    };
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_to_close(&mut idle).await, b"");
    assert_eq!(count(&node.stats().idle_timeouts), 1);
    // A client that keeps sending requests stays.
    let mut busy = Conn::connect(addr).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2200) {
        assert_eq!(busy.cmd(&["PING"]).await, simple("PONG"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&node.stats().idle_timeouts), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_stops_arriving_is_cut_off_by_the_read_timeout() {
    let limits = ServerLimits {
        idle_timeout: None,
        read_timeout: Some(Duration::from_millis(200)),
        ..ServerLimits::default()
    };
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);
    // Without a started request, no read timeout applies (and idle is off).
    let mut quiet = Conn::connect(addr).await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nab")
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut stalled).await, b"");
    assert_eq!(count(&node.stats().read_timeouts), 1);
    assert_eq!(quiet.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(count(&node.stats().read_timeouts), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_request_size_and_pipeline_bounds_hold() {
    let mut limits = ServerLimits {
        max_connections: 2,
        max_in_flight: 1,
        ..ServerLimits::default()
    };
    limits.resp.max_request_len = 2048;
    let (cluster, leader) = single(limits).await;
    let addr = cluster.client_addr(leader);
    let node = server(&cluster, leader);

    // One request in flight at a time: a pipeline of 50 is still answered whole, in order.
    let mut c = Conn::connect(addr).await;
    let mut pipeline = bytes::BytesMut::new();
    for i in 0..50 {
        encode_request(&["INCR", "n"], &mut pipeline);
        if i % 10 == 0 {
            encode_request(&["GET", "n"], &mut pipeline);
        }
    }
    c.raw(&pipeline).await;
    let mut n = 0;
    for i in 0..50 {
        n += 1;
        assert_eq!(c.reply().await, Reply::Integer(n));
        if i % 10 == 0 {
            assert_eq!(c.reply().await, bulk(&n.to_string()));
        }
    }

    // A request over the size limit is refused before it is buffered, and the connection closed.
    let mut big = Conn::connect(addr).await;
    let value = "v".repeat(3000);
    big.send(&["SET", "k", &value]).await;
    let replies = big.until_closed().await;
    assert!(
        matches!(&replies[..], [Reply::Error(e)] if e.contains("request exceeds the limit of 2048 bytes")),
        "{replies:?}"
    );
    assert_eq!(count(&node.stats().protocol_errors), 1);

    // Over the connection limit: told so, counted.
    let _second = Conn::connect(addr).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let got = read_to_close(&mut third).await;
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    assert!(count(&node.stats().connections_refused) >= 1);
    assert!(node
        .render_metrics()
        .contains("raftkv_connections_refused_total"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_answers_a_client_that_half_closes() {
    let (cluster, leader) = single(ServerLimits::default()).await;
    let admin = cluster.admin_addr(leader);
    for path in ["/status", "/metrics"] {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let got = String::from_utf8(read_to_close(&mut stream).await).unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{path}: {got}");
    }
    let (code, _, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "raftkv_request_buffer_bytes",
        "raftkv_output_buffered_bytes",
        "raftkv_idle_timeouts_total",
        "raftkv_read_timeouts_total",
        "raftkv_output_limit_closes_total",
        "raftkv_output_stall_closes_total",
        "raftkv_request_budget_refusals_total",
    ] {
        assert!(body.contains(name), "{name} missing");
    }
    cluster.shutdown().await;
}
