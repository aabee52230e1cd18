//! Mutual TLS on the peer port: peers with the cluster's certificates talk; a certificate from
//! another CA, no certificate, or one naming another node is refused with a logged reason and a
//! counter; certificates rotate on a running transport without losing it.
//!
//! Nothing here sleeps for correctness: every wait polls a condition under a 10 s bound.

mod common;

use raftengine::NodeId;
use raftnet::inbox::Inbox;
use raftnet::tls::dev::Authority;
use raftnet::tls::{PeerTls, TlsError, TlsFiles};
use raftnet::transport::{Transport, TransportConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use common::init_tracing;
use common::transport::{bind, msg, recv, wait_until};

/// Writes node `id`'s files (CA, certificate, key) from `ca` into `dir`, as `node<id>.*`.
fn write_node_files(dir: &Path, ca: &Authority, id: u64) -> TlsFiles {
    let node = ca.node(NodeId(id), &[]).expect("issue node certificate");
    let files = TlsFiles {
        ca: dir.join(format!("node{id}-ca.pem")),
        cert: dir.join(format!("node{id}.pem")),
        key: dir.join(format!("node{id}-key.pem")),
    };
    std::fs::write(&files.ca, ca.pem().cert).unwrap();
    std::fs::write(&files.cert, node.cert).unwrap();
    std::fs::write(&files.key, node.key).unwrap();
    files
}

/// The shared test settings, with `tls`.
fn config(node: u64, peers: &[(u64, SocketAddr)], tls: Option<Arc<PeerTls>>) -> TransportConfig {
    let mut c = common::transport::config(node, peers);
    c.tls = tls;
    c
}

/// A TLS transport for node `id` sending to `peers`, with files from `ca`.
fn tls_node(
    dir: &Path,
    ca: &Authority,
    id: u64,
    peers: &[(u64, SocketAddr)],
    listener: TcpListener,
) -> (Transport, Inbox, Arc<PeerTls>) {
    let tls = PeerTls::load(write_node_files(dir, ca, id)).expect("load TLS files");
    let (t, rx) = Transport::start(config(id, peers, Some(tls.clone())), listener).unwrap();
    (t, rx, tls)
}

#[tokio::test]
async fn peers_with_the_clusters_certificates_talk_both_ways() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let (l1, l2) = (bind().await, bind().await);
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let (t1, mut rx1, _) = tls_node(dir.path(), &ca, 1, &[(2, a2)], l1);
    let (t2, mut rx2, _) = tls_node(dir.path(), &ca, 2, &[(1, a1)], l2);
    t1.send(msg(1, 2, 3));
    assert_eq!(recv(&mut rx2).await, msg(1, 2, 3));
    t2.send(msg(2, 1, 4));
    assert_eq!(recv(&mut rx1).await, msg(2, 1, 4));
    assert_eq!(t1.stats().tls_failures + t2.stats().tls_failures, 0);
}

/// A node whose certificate comes from another CA (say, another cluster's) is refused by the
/// acceptor, and refuses it as a dialer: nothing it sends is delivered.
#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (
        Authority::new("cluster CA").unwrap(),
        Authority::new("other CA").unwrap(),
    );
    let (l1, l2) = (bind().await, bind().await);
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let (t1, mut rx1, _) = tls_node(dir.path(), &ca, 1, &[(2, a2)], l1);
    let (intruder, mut rx2, _) = tls_node(dir.path(), &other, 2, &[(1, a1)], l2);
    intruder.send(msg(2, 1, 9));
    t1.send(msg(1, 2, 9));
    wait_until("node 1 refusing the intruder's TLS handshakes", || {
        t1.stats().tls_failures >= 2
    })
    .await;
    wait_until("the intruder refusing node 1's certificate", || {
        intruder.stats().tls_failures >= 2
    })
    .await;
    assert!(
        rx1.try_recv().is_none(),
        "nothing from the intruder is delivered"
    );
    assert!(rx2.try_recv().is_none(), "nothing reaches the intruder");
    assert_eq!(t1.stats().inbound_received, 0);
}

/// Node 2's certificate does not let a dialer pass as node 3, even with the right CA and
/// cluster id.
#[tokio::test]
async fn a_node_cannot_claim_another_nodes_id() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster CA").unwrap();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let (t1, mut rx1, _) = tls_node(dir.path(), &ca, 1, &[], l1);
    // The impostor runs as node 3 with node 2's certificate and key.
    let stolen = PeerTls::load(write_node_files(dir.path(), &ca, 2)).unwrap();
    let (impostor, _rx) =
        Transport::start(config(3, &[(1, a1)], Some(stolen)), bind().await).unwrap();
    impostor.send(msg(3, 1, 5));
    // The acceptor counts its refusal before the impostor reads the reply: wait for both.
    wait_until(
        "node 1 refusing the impostor, and the impostor told so",
        || t1.stats().tls_failures >= 2 && impostor.stats().peers[&NodeId(1)].refused >= 1,
    )
    .await;
    assert!(
        rx1.try_recv().is_none(),
        "nothing from the impostor is delivered"
    );
}

/// A plain-TCP node cannot talk to a TLS node (its hello is not a TLS handshake).
#[tokio::test]
async fn a_node_without_tls_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster CA").unwrap();
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let (t1, mut rx1, _) = tls_node(dir.path(), &ca, 1, &[], l1);
    let (plain, _rx) = Transport::start(config(2, &[(1, a1)], None), bind().await).unwrap();
    plain.send(msg(2, 1, 5));
    wait_until("node 1 refusing the plain dialer", || {
        t1.stats().tls_failures >= 2
    })
    .await;
    assert!(rx1.try_recv().is_none());
}

/// A log sink for the refusal messages (the tests run on one thread, so a thread-local
/// subscriber sees every task's events).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Each refusal names its reason in the log: another CA, or a certificate naming another node.
#[tokio::test]
async fn refusals_are_logged_with_their_reason() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (
        Authority::new("cluster CA").unwrap(),
        Authority::new("other CA").unwrap(),
    );
    let l1 = bind().await;
    let a1 = l1.local_addr().unwrap();
    let (t1, _rx1, _) = tls_node(dir.path(), &ca, 1, &[], l1);
    let (foreign, _rx, _) = tls_node(dir.path(), &other, 2, &[(1, a1)], bind().await);
    foreign.send(msg(2, 1, 1));
    let stolen = PeerTls::load(write_node_files(dir.path(), &ca, 3)).unwrap();
    let (impostor, _rx) =
        Transport::start(config(4, &[(1, a1)], Some(stolen)), bind().await).unwrap();
    impostor.send(msg(4, 1, 1));
    wait_until("both refusals logged", || {
        let text = log.text();
        text.contains("TLS handshake failed") && text.contains("does not name raft-node-4")
    })
    .await;
    let text = log.text();
    assert!(
        text.contains("UnknownIssuer") || text.contains("unknown issuer"),
        "{text}"
    );
    assert!(t1.stats().tls_failures >= 2);
}

#[test]
fn missing_or_mismatched_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster CA").unwrap();
    let mut files = write_node_files(dir.path(), &ca, 1);
    files.cert = dir.path().join("absent.pem");
    assert!(matches!(
        PeerTls::load(files.clone()),
        Err(TlsError::Read { .. })
    ));
    // A key that is not the certificate's.
    let other = write_node_files(dir.path(), &ca, 2);
    files.cert = dir.path().join("node1.pem");
    files.key = other.key;
    let error = PeerTls::load(files).unwrap_err();
    assert!(matches!(error, TlsError::Config(_)), "{error}");
    // An empty CA file.
    let mut files = write_node_files(dir.path(), &ca, 3);
    std::fs::write(&files.ca, "").unwrap();
    files.key = dir.path().join("node3-key.pem");
    assert!(matches!(PeerTls::load(files), Err(TlsError::Empty { .. })));
}

/// The cluster moves to a new CA while messages flow: each node's files are replaced and
/// reloaded, traffic goes on, and a node started with only the new CA's certificates talks to
/// the reloaded ones (so they present and accept the new material). A failed reload keeps the
/// old material.
#[tokio::test]
async fn certificates_rotate_under_load_without_a_restart() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (
        Authority::new("old CA").unwrap(),
        Authority::new("new CA").unwrap(),
    );
    let (l1, l2, l3) = (bind().await, bind().await, bind().await);
    let (a1, a2, a3) = (
        l1.local_addr().unwrap(),
        l2.local_addr().unwrap(),
        l3.local_addr().unwrap(),
    );
    let (t1, _rx1, tls1) = tls_node(dir.path(), &old_ca, 1, &[(2, a2), (3, a3)], l1);
    let (_t2, mut rx2, tls2) = tls_node(dir.path(), &old_ca, 2, &[(1, a1)], l2);

    let load = tokio::spawn({
        let sender = t1.sender();
        async move {
            for term in 1.. {
                sender.send(msg(1, 2, term));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let before = recv(&mut rx2).await.term.0;

    // A broken rotation (a missing key) is refused and changes nothing.
    std::fs::remove_file(dir.path().join("node1-key.pem")).unwrap();
    assert!(tls1.reload().is_err());

    write_node_files(dir.path(), &new_ca, 1);
    write_node_files(dir.path(), &new_ca, 2);
    tls1.reload().expect("reload node 1");
    tls2.reload().expect("reload node 2");
    let mut after = before;
    while after < before + 50 {
        after = recv(&mut rx2).await.term.0;
    }

    // A newcomer with the new CA only: node 1 dials it, and it dials node 1.
    let (t3, mut rx3, _) = tls_node(dir.path(), &new_ca, 3, &[(1, a1)], l3);
    t1.send(msg(1, 3, 1));
    assert_eq!(recv(&mut rx3).await.from, NodeId(1));
    t3.send(msg(3, 1, 1));
    wait_until("node 1 hearing from the newcomer", || {
        t1.stats().inbound_received >= 1
    })
    .await;
    // (Node 3 may count failures: dials node 1 made with the old certificates before the
    // rotation wait in its listener's backlog.)
    load.abort();
}
