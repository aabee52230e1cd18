//! Integration tests of `raftnet::transport` over 127.0.0.1.
//!
//! Nothing here sleeps for correctness: every wait polls a condition under a 10 s
//! `tokio::time::timeout`, so a broken transport fails a test instead of hanging it.

mod common;

use futures_util::{SinkExt, StreamExt};
use raftengine::{Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, Term};
use raftnet::inbox::Inbox;
use raftnet::transport::wire::FrameCodec;
use raftnet::transport::wire::{self, Hello, HelloReply};
use raftnet::transport::{Transport, TransportError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use common::init_tracing;
use common::transport::*;

/// A raw framed client for speaking (or abusing) the protocol by hand.
async fn raw_connect(addr: SocketAddr) -> Framed<TcpStream, FrameCodec> {
    let stream = bounded("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    Framed::new(stream, wire::codec(64 * 1024 * 1024))
}

async fn raw_hello(framed: &mut Framed<TcpStream, FrameCodec>, hello: &Hello) -> HelloReply {
    let payload = wire::encode(hello).expect("encode hello");
    bounded("sending hello", framed.send(payload))
        .await
        .expect("send hello");
    let frame = bounded("reading hello reply", framed.next())
        .await
        .expect("connection closed before a reply")
        .expect("read reply");
    wire::decode(&frame).expect("decode reply")
}

/// A raw client that completed a good handshake as `node`.
async fn raw_peer(addr: SocketAddr, node: u64) -> Framed<TcpStream, FrameCodec> {
    let mut framed = raw_connect(addr).await;
    let reply = raw_hello(&mut framed, &Hello::new(CLUSTER, NodeId(node))).await;
    assert_eq!(reply, HelloReply::Welcome);
    framed
}

/// Reads until the server closes the connection (EOF or reset); anything read before is
/// ignored (e.g. a `Refused` reply).
async fn expect_closed(stream: &mut TcpStream) {
    bounded("server closing the connection", async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
}

/// Checks that `good` (a transport of a configured peer) still gets messages through to
/// `node`, whose receiver is `rx`.
async fn still_serves(good: &Transport, rx: &mut Inbox, to: u64, term: u64) {
    let from = good.node_id().0;
    good.send(msg(from, to, term));
    let m = recv(rx).await;
    assert_eq!(m, msg(from, to, term));
}

#[tokio::test]
async fn all_to_all_three_nodes() {
    init_tracing();
    let listeners = [bind().await, bind().await, bind().await];
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let peers: Vec<(u64, SocketAddr)> = (1..=3u64)
            .filter(|&p| p != id)
            .map(|p| (p, addrs[p as usize - 1]))
            .collect();
        nodes.push(start(config(id, &peers), listener));
    }
    const PER_PAIR: u64 = 50;
    for term in 1..=PER_PAIR {
        for (i, (t, _)) in nodes.iter().enumerate() {
            let from = i as u64 + 1;
            for to in (1..=3).filter(|&to| to != from) {
                t.send(msg(from, to, term));
            }
        }
    }
    for (i, (_, rx)) in nodes.iter_mut().enumerate() {
        let me = i as u64 + 1;
        // Per sender, terms must arrive complete and in order (one FIFO connection per pair).
        let mut next: BTreeMap<u64, u64> = (1..=3).filter(|&p| p != me).map(|p| (p, 1)).collect();
        for _ in 0..2 * PER_PAIR {
            let m = recv(rx).await;
            assert_eq!(m.to, NodeId(me));
            let expected = next.get_mut(&m.from.0).expect("message from a peer");
            assert_eq!(m.term, Term(*expected));
            assert_eq!(m.body, MessageBody::VoteResponse { granted: true });
            *expected += 1;
        }
        assert!(rx.try_recv().is_none());
    }
    for (t, _) in &nodes {
        let me = t.node_id();
        wait_until("all messages counted as sent", || {
            t.stats().peers.values().all(|p| p.sent == PER_PAIR)
        })
        .await;
        let stats = t.stats();
        assert_eq!(stats.inbound_received, 2 * PER_PAIR, "node {me:?}");
        assert_eq!(stats.inbound_dropped, 0);
        assert_eq!(stats.connections_refused, 0);
        assert!(stats.peers.values().all(|p| p.connected && p.dropped == 0));
    }
    for (t, _) in nodes {
        bounded("shutdown", t.shutdown()).await;
    }
}

#[tokio::test]
async fn peer_started_late_gets_queued_messages() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let a2 = free_addr().await;
    let (t1, _rx1) = start(config(1, &[(2, a2)]), l1);
    for term in 1..=5 {
        t1.send(msg(1, 2, term));
    }
    // The dial fails (nothing listens) and is retried with backoff; messages stay queued.
    wait_until("several failed dials", || {
        t1.stats().peers[&NodeId(2)].failed_attempts >= 2
    })
    .await;
    let p = &t1.stats().peers[&NodeId(2)];
    assert!(!p.connected);
    assert_eq!((p.queued, p.sent, p.dropped), (5, 0, 0));

    let (t2, mut rx2) = start(config(2, &[(1, a1)]), bind_at(a2).await);
    for term in 1..=5 {
        assert_eq!(recv(&mut rx2).await, msg(1, 2, term));
    }
    wait_until("sent counted", || t1.stats().peers[&NodeId(2)].sent == 5).await;
    let p = &t1.stats().peers[&NodeId(2)];
    assert!(p.connected);
    assert_eq!(p.queued, 0);
    // The first successful connection is not a reconnect.
    assert_eq!(p.reconnects, 0);
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn refused_handshakes_then_good_peer_served() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let (t1, mut rx1) = start(config(1, &[(2, a2)]), l1);

    // Wrong cluster id: a real transport claiming to be node 2.
    let mut c = config(2, &[(1, a1)]);
    c.cluster_id = 999;
    let (bad_cluster, _) = start(c, bind().await);
    bad_cluster.send(msg(2, 1, 100));
    wait_until("cluster mismatch refused", || {
        bad_cluster.stats().peers[&NodeId(1)].refused >= 1 && t1.stats().connections_refused >= 1
    })
    .await;
    assert!(!bad_cluster.stats().peers[&NodeId(1)].connected);
    bounded("shutdown", bad_cluster.shutdown()).await;

    // Wrong protocol version: by hand, to see the reply.
    let mut raw = raw_connect(a1).await;
    let mut hello = Hello::new(CLUSTER, NodeId(2));
    hello.protocol_version = wire::PROTOCOL_VERSION + 1;
    match raw_hello(&mut raw, &hello).await {
        HelloReply::Refused { reason } => assert!(reason.contains("protocol version"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    expect_closed(raw.get_mut()).await;

    // A dialer claiming the acceptor's own id (two nodes given the same id).
    let (twin, _) = start(config(1, &[(2, a1)]), bind().await);
    twin.send(msg(1, 2, 101));
    wait_until("same id refused", || {
        twin.stats().peers[&NodeId(2)].refused >= 1
    })
    .await;
    bounded("shutdown", twin.shutdown()).await;

    let stats = t1.stats();
    assert!(stats.connections_refused >= 3, "{stats:?}");
    assert_eq!(stats.inbound_received, 0);

    // The good node 2 still gets through, and its message is the first one delivered.
    let (t2, _rx2) = start(config(2, &[(1, a1)]), l2);
    still_serves(&t2, &mut rx1, 1, 42).await;
    assert!(rx1.try_recv().is_none());
    assert_eq!(t1.stats().inbound_received, 1);
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn bad_input_closes_connection_and_node_keeps_serving() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let (t1, mut rx1) = start(config(1, &[(2, a2)]), l1);
    let (t2, _rx2) = start(config(2, &[(1, a1)]), l2);
    still_serves(&t2, &mut rx1, 1, 1).await;

    // Random bytes instead of a hello (fixed-seed xorshift, so failures reproduce).
    let mut raw = bounded("connect", TcpStream::connect(a1)).await.unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..512)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = raw.write_all(&junk).await;
    expect_closed(&mut raw).await;

    // An oversized frame header before the handshake (above the handshake limit).
    let mut raw = bounded("connect", TcpStream::connect(a1)).await.unwrap();
    let _ = raw.write_all(&(1u32 << 20).to_be_bytes()).await;
    expect_closed(&mut raw).await;

    // A connection that never says anything: closed after the handshake timeout.
    let mut raw = bounded("connect", TcpStream::connect(a1)).await.unwrap();
    expect_closed(&mut raw).await;
    wait_until("three refusals counted", || {
        t1.stats().connections_refused >= 3
    })
    .await;

    // After a good handshake: an oversized frame (over max_frame_bytes = 64 MiB).
    let mut raw = raw_peer(a1, 2).await.into_inner();
    let _ = raw.write_all(&(100u32 << 20).to_be_bytes()).await;
    let _ = raw.write_all(&[0u8; 64]).await;
    expect_closed(&mut raw).await;

    // After a good handshake: a well-framed payload that is not a Message (bad enum variant).
    let mut framed = raw_peer(a1, 2).await;
    let _ = framed
        .send(bytes::Bytes::from_static(&[2, 1, 1, 100]))
        .await;
    expect_closed(framed.get_mut()).await;

    // After a good handshake: half a frame, then the client shuts its write side.
    let mut raw = raw_peer(a1, 2).await.into_inner();
    let _ = raw.write_all(&100u32.to_be_bytes()).await;
    let _ = raw.write_all(&[0u8; 10]).await;
    let _ = raw.shutdown().await;
    expect_closed(&mut raw).await;

    wait_until("three failed connections counted", || {
        t1.stats().connections_failed >= 3
    })
    .await;
    assert_eq!(t1.stats().inbound_received, 1);
    still_serves(&t2, &mut rx1, 1, 2).await;
    assert!(rx1.try_recv().is_none());
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn message_not_matching_handshake_closes_the_connection() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let (t1, mut rx1) = start(
        config(1, &[(2, free_addr().await), (3, free_addr().await)]),
        l1,
    );
    // Node 2's connection carries a message claiming to be node 3's: the connection goes, and
    // the good message behind the forged one is never delivered.
    let mut raw = raw_peer(a1, 2).await;
    for m in [msg(2, 1, 1), msg(3, 1, 2), msg(2, 1, 3)] {
        raw.feed(wire::encode_frame(0, &m).unwrap()).await.unwrap();
    }
    SinkExt::<bytes::Bytes>::flush(&mut raw).await.unwrap();
    assert_eq!(recv(&mut rx1).await, msg(2, 1, 1));
    expect_closed(raw.get_mut()).await;
    // A message for another node closes the connection alike.
    let mut raw = raw_peer(a1, 2).await;
    raw.send(wire::encode_frame(0, &msg(2, 3, 4)).unwrap())
        .await
        .unwrap();
    expect_closed(raw.get_mut()).await;
    let stats = t1.stats();
    assert_eq!(stats.inbound_rejected, 2);
    assert_eq!(stats.inbound_received, 1);
    assert!(rx1.try_recv().is_none());
    bounded("shutdown", t1.shutdown()).await;
}

#[tokio::test]
async fn disconnect_closes_the_peers_connections() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let (t1, mut rx1) = start(config(1, &[(2, free_addr().await)]), l1);
    let mut raw = raw_peer(a1, 2).await;
    raw.send(wire::encode_frame(0, &msg(2, 1, 1)).unwrap())
        .await
        .unwrap();
    // Delivered, so the connection is admitted before it is cut.
    assert_eq!(recv(&mut rx1).await, msg(2, 1, 1));
    t1.sender().disconnect(NodeId(2));
    expect_closed(raw.get_mut()).await;
    assert_eq!(t1.stats().connections_disconnected, 1);
    // It may come back, and is heard again.
    let mut raw = raw_peer(a1, 2).await;
    raw.send(wire::encode_frame(0, &msg(2, 1, 2)).unwrap())
        .await
        .unwrap();
    assert_eq!(recv(&mut rx1).await, msg(2, 1, 2));
    bounded("shutdown", t1.shutdown()).await;
}

#[tokio::test]
async fn full_queue_drops_oldest_without_blocking() {
    init_tracing();
    const N: usize = 8;
    const K: u64 = 5;
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let a2 = free_addr().await;
    let mut c = config(1, &[(2, a2)]);
    c.peer_queue_capacity = N;
    let (t1, _rx1) = start(c, l1);
    // `send` is synchronous: this loop cannot await, so it cannot block on the down peer.
    let total = N as u64 + K;
    for term in 1..=total {
        t1.send(msg(1, 2, term));
    }
    let p = &t1.stats().peers[&NodeId(2)];
    assert_eq!((p.dropped, p.queued), (K, N));
    // Unroutable messages are counted, not queued.
    t1.send(msg(1, 77, 1));
    t1.send(msg(5, 2, 1));
    assert_eq!(t1.stats().unroutable, 2);
    assert_eq!(t1.stats().peers[&NodeId(2)].queued, N);

    // The oldest were dropped: the peer gets the last N, in order.
    let (t2, mut rx2) = start(config(2, &[(1, a1)]), bind_at(a2).await);
    for term in K + 1..=total {
        assert_eq!(recv(&mut rx2).await, msg(1, 2, term));
    }
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
    assert!(bounded("channel close", rx2.recv()).await.is_none());
}

#[tokio::test]
async fn restarted_peer_is_reconnected() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let (t1, mut rx1) = start(config(1, &[(2, a2)]), l1);
    let (t2, mut rx2) = start(config(2, &[(1, a1)]), l2);
    still_serves(&t1, &mut rx2, 2, 1).await;
    still_serves(&t2, &mut rx1, 1, 1).await;

    bounded("shutdown", t2.shutdown()).await;
    wait_until("node 1 sees node 2 gone", || {
        !t1.stats().peers[&NodeId(2)].connected
    })
    .await;
    let (t2, mut rx2) = start(config(2, &[(1, a1)]), bind_at(a2).await);

    // A message sent into the dying old connection may be lost (Raft retransmits), so keep
    // sending until one arrives, as Raft's heartbeats would.
    bounded("delivery to the restarted node", async {
        for term in 2.. {
            t1.send(msg(1, 2, term));
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx2.recv()).await {
                assert_eq!((m.from, m.to), (NodeId(1), NodeId(2)));
                return;
            }
        }
    })
    .await;
    still_serves(&t2, &mut rx1, 1, 2).await;
    assert!(t1.stats().peers[&NodeId(2)].reconnects >= 1);
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn shutdown_stops_everything_and_frees_the_port() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let (t1, mut rx1) = start(config(1, &[(2, a2)]), l1);
    let (t2, mut rx2) = start(config(2, &[(1, a1)]), l2);
    still_serves(&t1, &mut rx2, 2, 1).await;
    still_serves(&t2, &mut rx1, 1, 1).await;
    // An authenticated connection and a half-open handshake, both open during shutdown.
    let mut authed = raw_peer(a1, 2).await;
    let mut pending = bounded("connect", TcpStream::connect(a1)).await.unwrap();

    bounded("shutdown", t1.shutdown()).await;
    // Every task holding the inbound sender is gone (accept loop and connection tasks).
    assert!(bounded("channel close", rx1.recv()).await.is_none());
    expect_closed(authed.get_mut()).await;
    expect_closed(&mut pending).await;
    wait_until("node 2 sees node 1 gone", || {
        !t2.stats().peers[&NodeId(1)].connected
    })
    .await;
    let rebound = TcpListener::bind(a1)
        .await
        .expect("port free after shutdown");
    drop(rebound);
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn inbound_channel_full_drops_without_stalling() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let mut c = config(1, &[(2, a2)]);
    c.inbound_capacity = 2;
    let (t1, mut rx1) = start(c, l1);
    let (t2, _rx2) = start(config(2, &[(1, a1)]), l2);
    for term in 1..=10 {
        t2.send(msg(2, 1, term));
    }
    wait_until("all ten handled", || {
        let s = t1.stats();
        s.inbound_received + s.inbound_dropped == 10
    })
    .await;
    assert_eq!(t1.stats().inbound_dropped, 8);
    assert_eq!(recv(&mut rx1).await.term, Term(1));
    assert_eq!(recv(&mut rx1).await.term, Term(2));
    // The reader did not stall: new messages get through once there is room.
    still_serves(&t2, &mut rx1, 1, 11).await;
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn oversized_outgoing_message_is_dropped_not_fatal() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let mut c1 = config(1, &[(2, a2)]);
    c1.max_frame_bytes = 1024;
    let mut c2 = config(2, &[(1, a1)]);
    c2.max_frame_bytes = 1024;
    let (t1, _rx1) = start(c1, l1);
    let (t2, mut rx2) = start(c2, l2);
    let big = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![Entry {
                term: Term(1),
                index: LogIndex(1),
                payload: EntryPayload::Command(vec![0xab; 4096]),
            }],
            leader_commit: LogIndex(0),
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
    };
    t1.send(big);
    t1.send(msg(1, 2, 2));
    assert_eq!(recv(&mut rx2).await, msg(1, 2, 2));
    let p = &t1.stats().peers[&NodeId(2)];
    assert_eq!(p.oversized, 1);
    assert_eq!(p.reconnects, 0);
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let l = bind().await;
    let a = l.local_addr().unwrap();
    let c = config(1, &[(1, a)]);
    assert!(matches!(
        Transport::start(c, l),
        Err(TransportError::InvalidConfig(_))
    ));
    let mut c = config(1, &[]);
    c.peer_queue_capacity = 0;
    assert!(matches!(
        Transport::start(c, bind().await),
        Err(TransportError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn a_node_not_in_the_peer_list_is_accepted_if_its_cluster_matches() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let (t1, mut rx1) = start(config(1, &[]), l1);
    // Node 9 joins: node 1 has never heard of it, but it belongs to the cluster.
    let (t9, _rx9) = start(config(9, &[(1, a1)]), bind().await);
    still_serves(&t9, &mut rx1, 1, 5).await;
    // Another cluster's node is still refused.
    let mut c = config(8, &[(1, a1)]);
    c.cluster_id = CLUSTER + 1;
    let (stranger, _) = start(c, bind().await);
    stranger.send(msg(8, 1, 6));
    wait_until("other cluster refused", || {
        stranger.stats().peers[&NodeId(1)].refused >= 1
    })
    .await;
    assert!(rx1.try_recv().is_none());
    for t in [t1, t9, stranger] {
        bounded("shutdown", t.shutdown()).await;
    }
}

#[tokio::test]
async fn peers_are_added_moved_and_removed_at_run_time() {
    init_tracing();
    let l1 = bind().await;
    let mut c1 = config(1, &[]);
    c1.peer_linger = Duration::from_millis(300);
    let (t1, _rx1) = start(c1, l1);
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let (t2, mut rx2) = start(config(2, &[]), l2);

    // Unknown at first: unroutable.
    t1.send(msg(1, 2, 1));
    assert_eq!(t1.stats().unroutable, 1);
    // Added: delivered.
    let peers: BTreeMap<NodeId, String> = [(NodeId(2), a2.to_string())].into();
    t1.set_peers(&peers);
    assert_eq!(t1.peers(), peers);
    still_serves(&t1, &mut rx2, 2, 2).await;

    // Node 2 moves to another port: after the update, messages reach the new place.
    bounded("shutdown", t2.shutdown()).await;
    let l2b = bind().await;
    let a2b = l2b.local_addr().unwrap();
    let (t2b, mut rx2b) = start(config(2, &[]), l2b);
    let moved: BTreeMap<NodeId, String> = [(NodeId(2), a2b.to_string())].into();
    t1.set_peers(&moved);
    still_serves(&t1, &mut rx2b, 2, 3).await;

    // Removed: what was queued just before still goes out (a farewell), and after the linger
    // the peer is gone from the table and messages to it are unroutable.
    t1.send(msg(1, 2, 4));
    t1.set_peers(&BTreeMap::new());
    t1.send(msg(1, 2, 5));
    assert_eq!(recv(&mut rx2b).await, msg(1, 2, 4));
    assert_eq!(recv(&mut rx2b).await, msg(1, 2, 5));
    wait_until("peer dropped after lingering", || t1.peers().is_empty()).await;
    let before = t1.stats().unroutable;
    t1.send(msg(1, 2, 6));
    assert_eq!(t1.stats().unroutable, before + 1);
    // Added again: a fresh entry.
    t1.set_peers(&moved);
    still_serves(&t1, &mut rx2b, 2, 7).await;
    // Its own id is ignored.
    t1.set_peers(&[(NodeId(1), "127.0.0.1:1".to_string())].into());
    wait_until("only node 2 left the table", || t1.peers().is_empty()).await;
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2b.shutdown()).await;
}

/// Idle strangers of the right cluster cannot keep a member out: they get few slots (per
/// source and in all), those slots time out when idle, and members are always admitted.
#[tokio::test]
async fn idle_strangers_cannot_take_a_members_slot() {
    init_tracing();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let l2 = bind().await;
    let a2 = l2.local_addr().unwrap();
    let mut c1 = config(1, &[(2, a2)]);
    c1.max_inbound_connections = 4;
    c1.max_connections_per_source = 3;
    c1.idle_timeout = Duration::from_millis(500);
    let (t1, mut rx1) = start(c1, l1);
    // Twenty strangers from this address complete the hello and go quiet.
    let mut welcomed = Vec::new();
    for id in 100..120 {
        let mut framed = raw_connect(a1).await;
        if raw_hello(&mut framed, &Hello::new(CLUSTER, NodeId(id))).await == HelloReply::Welcome {
            welcomed.push(framed);
        }
    }
    assert_eq!(welcomed.len(), 3, "at most three strangers from one source");
    // The member still gets through (both lanes), over every stranger.
    let (t2, _rx2) = start(config(2, &[(1, a1)]), l2);
    still_serves(&t2, &mut rx1, 1, 1).await;
    // Idle connections are closed.
    let mut idle = welcomed.pop().expect("a stranger").into_inner();
    expect_closed(&mut idle).await;
    bounded("shutdown", t1.shutdown()).await;
    bounded("shutdown", t2.shutdown()).await;
}

/// A peer that takes the connection but stops reading (a SIGSTOPped process): the write times
/// out and the connection is replaced, instead of the lane hanging for ever.
#[tokio::test]
async fn a_peer_that_stops_reading_gets_a_new_connection() {
    init_tracing();
    let l1 = bind().await;
    let silent = bind().await;
    let a2 = silent.local_addr().unwrap();
    let mut c1 = config(1, &[(2, a2)]);
    c1.write_timeout = Duration::from_millis(300);
    let (t1, _rx1) = start(c1, l1);
    // The silent peer welcomes every dialer, then never reads again; it counts bulk dials.
    let (dials_tx, mut dials) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((stream, _)) = silent.accept().await else {
                return;
            };
            let mut framed = Framed::new(stream, wire::codec(64 * 1024));
            let Some(Ok(hello)) = framed.next().await else {
                continue;
            };
            let Ok((_, lane)) = wire::check_hello(&hello, CLUSTER, NodeId(2)) else {
                continue;
            };
            let welcome = wire::encode(&HelloReply::Welcome).unwrap();
            let _ = framed.send(welcome).await;
            let _ = dials_tx.send(lane);
            held.push(framed);
        }
    });
    let big = |term: u64| Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![Entry {
                term: Term(term),
                index: LogIndex(1),
                payload: EntryPayload::Command(vec![0; 1 << 20]),
            }],
            leader_commit: LogIndex(0),
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
    };
    bounded("a second bulk connection", async {
        let mut bulk_dials = 0;
        for term in 1.. {
            t1.send(big(term));
            if let Ok(Some(lane)) =
                tokio::time::timeout(Duration::from_millis(20), dials.recv()).await
            {
                bulk_dials += usize::from(lane == wire::Lane::Bulk);
                if bulk_dials >= 2 {
                    return;
                }
            }
        }
    })
    .await;
    acceptor.abort();
    bounded("shutdown", t1.shutdown()).await;
}
