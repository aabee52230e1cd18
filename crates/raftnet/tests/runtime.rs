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
    let peers = addrs
        .iter()
        .filter(|(n, _)| n.0 != id)
        .map(|(n, a)| (*n, *a))
        .collect();
    let config = NodeConfig::new(NodeId(id), 7, peers, root.join(format!("node-{id}")));
    Node::start(config, listener, Journal::default())
        .await
        .expect("node starts")
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
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(NodeId(id), l.local_addr().expect("addr"));
        listeners.insert(id, l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start(id, &addrs, l, root.path()).await);
    }
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
