//! What the transport tests share: bounded waits, messages, listeners and test settings.

use raftengine::{Message, MessageBody, NodeId, Term};
use raftnet::inbox::Inbox;
use raftnet::transport::{Transport, TransportConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

pub const LIMIT: Duration = Duration::from_secs(10);
pub const CLUSTER: u64 = 7;

pub fn msg(from: u64, to: u64, term: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::VoteResponse { granted: true },
    }
}

/// Runs `fut` under the global bound.
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// Polls `cond` until it holds (the 10 ms pause only paces the polling).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub async fn recv(rx: &mut Inbox) -> Message {
    bounded("receiving a message", rx.recv())
        .await
        .expect("inbound channel closed")
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// An address with nothing listening on it (bound then released), for a peer started later.
pub async fn free_addr() -> SocketAddr {
    bind().await.local_addr().expect("local_addr")
}

/// Binds exactly `addr`, retrying while the port is still being released.
pub async fn bind_at(addr: SocketAddr) -> TcpListener {
    bounded("rebinding a port", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
}

/// Test defaults: shorter backoff cap and handshake timeout so failures recover quickly.
pub fn config(node: u64, peers: &[(u64, SocketAddr)]) -> TransportConfig {
    let peers = peers.iter().map(|&(id, a)| (NodeId(id), a)).collect();
    let mut c = TransportConfig::new(NodeId(node), CLUSTER, peers);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c.handshake_timeout = Duration::from_millis(500);
    c
}

pub fn start(config: TransportConfig, listener: TcpListener) -> (Transport, Inbox) {
    Transport::start(config, listener).expect("start transport")
}
