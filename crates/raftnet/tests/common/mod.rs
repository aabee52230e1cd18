//! What the runtime tests share: a state machine that journals every command, nodes on loopback
//! TCP with durable logs in a temporary directory, and bounded, polling waits.

#![allow(dead_code)]

pub mod scenarios;
pub mod transport;

use raftengine::{ApplyError, LogIndex, NodeId, StateMachine};
use raftnet::runtime::{ClientError, Node, NodeConfig, NodeHandle, NodeStatus};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

/// Logs to the test's output, filtered by `RUST_LOG` (e.g. `raftnet=debug` shows the core's
/// events).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// Remembers every command in order. A poisoned journal fails (`ApplyError::Fatal`) on the
/// command `poison`, as a replica whose disk fails would.
#[derive(Default)]
pub struct Journal {
    pub commands: Vec<Vec<u8>>,
    pub poisoned: bool,
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
        if self.poisoned && command == b"poison" {
            return Err(ApplyError::Fatal("the journal's disk failed".into()));
        }
        self.commands.push(command.to_vec());
        Ok(self.commands.len().to_string().into_bytes())
    }
}

pub type Addrs = BTreeMap<NodeId, SocketAddr>;

/// The configuration of node `id` whose peers are the others of `addrs`: small log segments,
/// snapshots every `every` applied entries (0: the default policy), and then no log kept behind
/// a snapshot, so that followers behind it need the snapshot.
pub fn node_config(id: u64, addrs: &Addrs, root: &Path, every: u64) -> NodeConfig {
    let peers = addrs
        .iter()
        .filter(|(n, _)| n.0 != id)
        .map(|(n, a)| (*n, *a))
        .collect();
    let mut config = NodeConfig::new(NodeId(id), 7, peers, root.join(format!("node-{id}")));
    config.segment_bytes = 4 << 20;
    if every > 0 {
        config.raft.snapshot_after_entries = every;
        config.raft.log_retention_bytes = 0;
    }
    config
}

pub async fn start(
    id: u64,
    addrs: &Addrs,
    listener: TcpListener,
    root: &Path,
    every: u64,
) -> Node<Journal> {
    Node::start(
        node_config(id, addrs, root, every),
        listener,
        Journal::default(),
    )
    .await
    .expect("node starts")
}

/// Nodes `1..=n` on loopback ports, durable logs under `root`, snapshotting every `every`
/// entries (0: the default policy).
pub async fn start_cluster(
    root: &Path,
    n: u64,
    every: u64,
) -> (Addrs, BTreeMap<u64, Node<Journal>>) {
    let (addrs, listeners) = bind_nodes(n).await;
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start(id, &addrs, l, root, every).await);
    }
    (addrs, nodes)
}

/// Listeners for nodes `1..=n` on loopback ports.
pub async fn bind_nodes(n: u64) -> (Addrs, BTreeMap<u64, TcpListener>) {
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(NodeId(id), l.local_addr().expect("addr"));
        listeners.insert(id, l);
    }
    (addrs, listeners)
}

/// The handles of `nodes`, by id.
pub fn handles(nodes: &BTreeMap<u64, Node<Journal>>) -> Vec<(u64, NodeHandle<Journal>)> {
    nodes.iter().map(|(id, n)| (*id, n.handle())).collect()
}

/// Waits until some node of `handles` leads; returns its id.
pub async fn leader_among(handles: &[(u64, NodeHandle<Journal>)]) -> u64 {
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

/// Waits until `handle`'s status satisfies `ready`, failing the test after [`WAIT`].
pub async fn wait_status(
    what: &str,
    handle: &NodeHandle<Journal>,
    ready: impl Fn(&NodeStatus) -> bool,
) -> NodeStatus {
    match tokio::time::timeout(WAIT, handle.wait_for(ready)).await {
        Ok(status) => status,
        Err(_) => panic!("timed out waiting for {what}: {:?}", handle.status()),
    }
}

/// Writes, retrying while an election is under way (the outcome of an unknown write is checked
/// by the caller through reads).
pub async fn write(handle: &NodeHandle<Journal>, command: &[u8]) -> Result<usize, ClientError> {
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

/// Writes `base` until a write is acknowledged and returns the command that was. A write whose
/// outcome is unknown (leadership changed, as it may on a loaded machine) is followed by a
/// fresh command (`base~1`, `base~2`, ...), so that none is applied twice; the unknown ones may
/// or may not be applied, and a test counts only on the acknowledged ones.
pub async fn write_acked(
    handle: &NodeHandle<Journal>,
    base: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut command = base.to_vec();
    let mut attempt = 0;
    loop {
        match write(handle, &command).await {
            Ok(_) => return Ok(command),
            Err(ClientError::OutcomeUnknown(_)) if tokio::time::Instant::now() < deadline => {
                attempt += 1;
                command = [base, format!("~{attempt}").as_bytes()].concat();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Everything applied at `handle`, read linearizably.
pub async fn read_all(handle: &NodeHandle<Journal>) -> Vec<Vec<u8>> {
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
