//! A state machine with snapshots, and a node that catches up from one.
//!
//! Three nodes keep an inventory (item -> count). They snapshot every 25 applied entries and
//! keep no log behind a snapshot, so a node whose log ends before the leader's begins can only
//! catch up from the leader's snapshot. After 100 writes a fourth node joins: it is restored
//! from the leader's snapshot (`restore_from`), applies the entries after it, then restarts
//! and is restored from the snapshot it saved itself.
//!
//! ```text
//! cargo run -p raftnet --example snapshots
//! ```

use raftengine::{ApplyError, LogIndex, MembershipChange, NodeId, SnapshotJob, StateMachine};
use raftnet::runtime::{ClientError, Node, NodeConfig, NodeHandle};
use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Counts per item. A command is `"<item> <n>"`: add `n` to `item`'s count; the answer is the
/// new count.
#[derive(Default)]
struct Inventory {
    counts: BTreeMap<String, u64>,
    /// How many times this replica's state was replaced by a snapshot: not replicated state,
    /// just what this example shows.
    restores: Arc<AtomicUsize>,
}

impl StateMachine for Inventory {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        let parsed = std::str::from_utf8(command).ok().and_then(|text| {
            let (item, n) = text.split_once(' ')?;
            Some((item.to_string(), n.parse::<u64>().ok()?))
        });
        let (item, n) = parsed.ok_or(ApplyError::Rejected("expected \"<item> <n>\"".into()))?;
        let count = self.counts.entry(item).or_default();
        *count = count.saturating_add(n);
        Ok(count.to_string().into_bytes())
    }

    /// The whole state, serialized. It is saved in the node's data directory and sent in
    /// chunks to followers whose missing entries were compacted.
    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.counts).expect("a map of strings to numbers serializes")
    }

    /// Replaces the whole state: on a start (from the latest snapshot saved in the data
    /// directory) and when the leader sends a snapshot. Entries after the snapshot are applied
    /// next. An error stops the node: its state could not be trusted.
    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        self.counts = serde_json::from_slice(snapshot)
            .map_err(|e| ApplyError::Fatal(format!("unreadable snapshot: {e}")))?;
        self.restores.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Optional: a copy of the state, serialized later on a blocking thread while applying goes
    /// on. Worth it when copying is much faster than serializing (here it hardly matters).
    fn snapshot_job(&self) -> Option<SnapshotJob> {
        let copy = self.counts.clone();
        Some(Box::new(move || {
            serde_json::to_vec(&copy).expect("a map of strings to numbers serializes")
        }))
    }
}

/// Bound on every wait of this example.
const WAIT: Duration = Duration::from_secs(20);

/// Starts node `id` on `listener`, its data under `root`, with a fresh inventory (restored
/// from the node's own latest snapshot, if it has one). `peers` are the other initial voters,
/// or, with `join`, the members a node joining the running cluster can reach.
async fn start(
    id: NodeId,
    listener: TcpListener,
    peers: BTreeMap<NodeId, SocketAddr>,
    join: bool,
    root: &Path,
) -> Result<(Node<Inventory>, Arc<AtomicUsize>), Box<dyn Error>> {
    let mut config = NodeConfig::new(id, 1, peers, root.join(format!("node-{}", id.0)));
    config.join = join;
    // Ask for a snapshot every 25 applied entries (the default is 100 000), and purge the log
    // up to each one: a node whose log ends before the leader's begins must take a snapshot.
    config.raft.snapshot_after_entries = 25;
    config.raft.log_retention_bytes = 0;
    // Small log segments: the log files are purged a whole segment at a time.
    config.segment_bytes = 4 << 20;
    let inventory = Inventory::default();
    let restores = inventory.restores.clone();
    Ok((Node::start(config, listener, inventory).await?, restores))
}

/// Adds through `node`, retrying while no leader is known (nothing was proposed then).
async fn add(node: &NodeHandle<Inventory>, item: &str, n: u64) -> Result<(), Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.write(format!("{item} {n}").into_bytes()).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Retry | ClientError::NotLeader { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every count, read linearizably through `node`: it waits until `node` has applied every
/// write acknowledged before the read (retried while no leader is known).
async fn counts(node: &NodeHandle<Inventory>) -> Result<BTreeMap<String, u64>, Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.read(|inventory| inventory.counts.clone()).await {
            Ok(counts) => return Ok(counts),
            Err(ClientError::Retry) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    // Bind every node's port first: each node is configured with the others' addresses.
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in (1..=3).map(NodeId) {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.insert(id, listener.local_addr()?);
        listeners.insert(id, listener);
    }
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let mut peers = addrs.clone();
        peers.remove(&id);
        nodes.insert(id, start(id, listener, peers, false, dir.path()).await?.0);
    }

    // 100 writes: every node snapshots every 25 entries and purges its log behind.
    let handle = nodes[&NodeId(1)].handle();
    let mut expected = BTreeMap::<String, u64>::new();
    for i in 0..100u64 {
        let item = ["apple", "pear", "plum"][(i % 3) as usize];
        add(&handle, item, i % 5 + 1).await?;
        *expected.entry(item.to_string()).or_default() += i % 5 + 1;
    }
    let leader = NodeId(handle.status().leader.ok_or("no leader known")?);
    let leader_handle = nodes[&leader].handle();
    let status = leader_handle.status();
    println!(
        "node {} leads: applied through {}, log compacted through {}",
        leader.0, status.applied_index, status.log_start
    );
    // A snapshot can also be asked for at any time (an operator's command, a backup).
    let taken = leader_handle.trigger_snapshot().await?;
    println!(
        "node {}: snapshot taken on request at index {}",
        leader.0, taken.0
    );

    // Node 4 joins: it starts empty, with no configuration, and waits for a member to add it.
    // The leader's log now begins after its snapshot, so it sends node 4 the snapshot (in
    // chunks); node 4 restores from it and then applies the entries after it.
    let four = NodeId(4);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let four_addr = listener.local_addr()?;
    let (joined, restores) = start(four, listener, addrs.clone(), true, dir.path()).await?;
    let change = MembershipChange::AddVoter {
        node: four,
        address: four_addr.to_string(),
    };
    let membership = tokio::time::timeout(WAIT, leader_handle.change_membership(change)).await??;
    println!("voters now: {:?}", membership.voters);
    let caught_up = counts(&joined.handle()).await?;
    println!(
        "node 4 caught up: {caught_up:?} (restored from a snapshot {} time(s))",
        restores.load(Ordering::Relaxed)
    );
    assert_eq!(caught_up, expected);
    assert!(
        restores.load(Ordering::Relaxed) >= 1,
        "node 4 installed the leader's snapshot"
    );
    joined.shutdown().await;

    // Restarted, node 4 starts from the snapshot it saved and the log after it.
    let listener = TcpListener::bind(four_addr).await?;
    let (again, restores) = start(four, listener, addrs.clone(), true, dir.path()).await?;
    println!(
        "node 4 restarted: restored from its own snapshot at start: {}",
        restores.load(Ordering::Relaxed) == 1
    );
    assert_eq!(restores.load(Ordering::Relaxed), 1);
    assert_eq!(counts(&again.handle()).await?, expected);
    again.shutdown().await;

    for (_, node) in nodes {
        node.shutdown().await;
    }
    println!("done: every node holds {expected:?}");
    Ok(())
}
