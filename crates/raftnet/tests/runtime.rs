//! Three real nodes on loopback TCP with durable logs in temp directories: election, writes at any
//! node (forwarded to the leader), linearizable reads, leader shutdown and re-election, restart
//! and catch-up. Waits are bounded by timeouts; nothing sleeps for correctness.

use raftengine::{ApplyError, LogIndex, NodeId, StateMachine};
use raftnet::runtime::{ClientError, Node, NodeConfig, NodeHandle};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

/// Remembers every command in order.
#[derive(Default)]
struct Journal {
    commands: Vec<Vec<u8>>,
}

impl StateMachine for Journal {
    fn snapshot(&self) -> Vec<u8> {
        self.commands.join(&b'\n')
    }

    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        self.commands = if snapshot.is_empty() {
            Vec::new()
        } else {
            snapshot
                .split(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect()
        };
        Ok(())
    }

    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        if command == b"reject me" {
            return Err(ApplyError::Rejected("rejected on purpose".into()));
        }
        self.commands.push(command.to_vec());
        Ok(self.commands.len().to_string().into_bytes())
    }
}

const WAIT: Duration = Duration::from_secs(20);

async fn start(
    id: u64,
    addrs: &BTreeMap<NodeId, SocketAddr>,
    listener: TcpListener,
    root: &Path,
) -> Node<Journal> {
    start_with_snapshots(id, addrs, listener, root, 0).await
}

/// A node that snapshots after `every` applied entries (0: the default policy).
async fn start_with_snapshots(
    id: u64,
    addrs: &BTreeMap<NodeId, SocketAddr>,
    listener: TcpListener,
    root: &Path,
    every: u64,
) -> Node<Journal> {
    let peers = addrs
        .iter()
        .filter(|(n, _)| n.0 != id)
        .map(|(n, a)| (*n, *a))
        .collect();
    let mut config = NodeConfig::new(NodeId(id), 7, peers, root.join(format!("node-{id}")));
    if every > 0 {
        config.raft.snapshot_after_entries = every;
    }
    Node::start(config, listener, Journal::default())
        .await
        .expect("node starts")
}

type Addrs = BTreeMap<NodeId, SocketAddr>;

/// Three nodes on loopback ports, durable logs under `root`, snapshotting every `every` entries
/// (0: the default policy).
async fn start_cluster(root: &Path, every: u64) -> (Addrs, BTreeMap<u64, Node<Journal>>) {
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(NodeId(id), l.local_addr().expect("addr"));
        listeners.insert(id, l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start_with_snapshots(id, &addrs, l, root, every).await);
    }
    (addrs, nodes)
}

async fn leader_among(handles: &[(u64, NodeHandle<Journal>)]) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for (id, h) in handles {
            let s = h.status();
            if s.role == "leader" {
                return *id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes, retrying while an election is under way (the outcome of an unknown write is checked
/// by the caller through reads).
async fn write(handle: &NodeHandle<Journal>, command: &[u8]) -> Result<usize, ClientError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match handle.write(command.to_vec()).await {
            Ok(v) => return Ok(String::from_utf8_lossy(&v).parse().expect("a count")),
            Err(ClientError::Retry | ClientError::NotLeader { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn read_all(handle: &NodeHandle<Journal>) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match handle.read(|j| j.commands.clone()).await {
            Ok(v) => return v,
            Err(ClientError::Retry) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_elects_replicates_survives_its_leader_and_catches_up_a_restarted_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, mut nodes) = start_cluster(root.path(), 0).await;
    let handles: Vec<(u64, NodeHandle<Journal>)> =
        nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    let leader = leader_among(&handles).await;

    // Writes at every node: followers forward to the leader.
    for i in 0..30 {
        let (_, h) = &handles[i % 3];
        write(h, format!("w{i}").as_bytes()).await.expect("write");
    }
    let rejected = handles[0].1.write(b"reject me".to_vec()).await;
    assert_eq!(
        rejected,
        Err(ClientError::Rejected("rejected on purpose".into()))
    );
    for (_, h) in &handles {
        assert_eq!(
            read_all(h).await.len(),
            30,
            "a linearizable read sees every write"
        );
    }

    // The leader goes away; the others elect a new one and keep taking writes.
    let old = nodes.remove(&leader).expect("leader node");
    old.shutdown().await;
    let rest: Vec<(u64, NodeHandle<Journal>)> = handles
        .iter()
        .filter(|(id, _)| *id != leader)
        .cloned()
        .collect();
    let new_leader = leader_among(&rest).await;
    assert_ne!(new_leader, leader);
    for i in 30..40 {
        write(&rest[i % 2].1, format!("w{i}").as_bytes())
            .await
            .expect("write after failover");
    }

    // The old leader restarts from its data directory and catches up.
    let listener = TcpListener::bind(addrs[&NodeId(leader)])
        .await
        .expect("rebind");
    let back = start(leader, &addrs, listener, root.path()).await;
    let h = back.handle();
    let all = read_all(&h).await;
    let expected: Vec<Vec<u8>> = (0..40).map(|i| format!("w{i}").into_bytes()).collect();
    assert_eq!(
        all, expected,
        "the restarted node has every acknowledged write, in order"
    );
    let status = h.wait_for(|s| s.durable_index >= 40).await;
    assert!(
        status.durable_index >= 40,
        "its own log is durable again: {status:?}"
    );
    back.shutdown().await;
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_compacted_entries_catches_up_from_a_snapshot() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, mut nodes) = start_cluster(root.path(), 10).await;
    let handles: Vec<(u64, NodeHandle<Journal>)> =
        nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    let leader = leader_among(&handles).await;
    let absent = (1..=3).find(|id| *id != leader).expect("a follower");
    nodes.remove(&absent).expect("node").shutdown().await;
    let rest: Vec<(u64, NodeHandle<Journal>)> = handles
        .iter()
        .filter(|(id, _)| *id != absent)
        .cloned()
        .collect();
    for i in 0..60 {
        write(&rest[i % 2].1, format!("s{i}").as_bytes())
            .await
            .expect("write");
    }
    // The leader has compacted entries the absent node never received: it gets a snapshot.
    let snapshots = root.path().join(format!("node-{leader}/snapshots"));
    let files = std::fs::read_dir(&snapshots).expect("snapshot dir").count();
    assert!(files > 0, "the leader wrote snapshot files");
    let listener = TcpListener::bind(addrs[&NodeId(absent)])
        .await
        .expect("rebind");
    let back = start_with_snapshots(absent, &addrs, listener, root.path(), 10).await;
    let expected: Vec<Vec<u8>> = (0..60).map(|i| format!("s{i}").into_bytes()).collect();
    assert_eq!(read_all(&back.handle()).await, expected);
    back.shutdown().await;
    // And it restarts from its own snapshot plus log.
    let listener = TcpListener::bind(addrs[&NodeId(absent)])
        .await
        .expect("rebind");
    let again = start_with_snapshots(absent, &addrs, listener, root.path(), 10).await;
    assert_eq!(read_all(&again.handle()).await, expected);
    again.shutdown().await;
    for (_, n) in nodes {
        n.shutdown().await;
    }
}
