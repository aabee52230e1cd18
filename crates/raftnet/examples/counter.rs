//! A replicated counter: three nodes on loopback TCP, each with its durable log in a temporary
//! directory. Writes go through every node (followers forward them to the leader), every node
//! answers a linearizable read with the same total, and the cluster keeps counting after its
//! leader stops.
//!
//! ```text
//! cargo run -p raftnet --example counter
//! ```

use raftengine::{ApplyError, LogIndex, NodeId, StateMachine};
use raftnet::runtime::{ClientError, Node, NodeConfig, NodeHandle};
use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;
use tokio::net::TcpListener;

/// The replicated state: a running total.
///
/// A command is a decimal number to add; the answer is the total after it. `apply` must be
/// deterministic: every node applies the same commands in the same order and must reach the
/// same total.
#[derive(Default)]
struct Counter {
    total: i64,
}

fn number(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl StateMachine for Counter {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        // A command that is not a number is refused the same way on every node: it is the
        // command's result (`ClientError::Rejected` for the client), not a failure.
        let n = number(command).ok_or(ApplyError::Rejected("not a number".into()))?;
        self.total += n;
        Ok(self.total.to_string().into_bytes())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.total.to_string().into_bytes()
    }

    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        // A snapshot this node cannot read means its state cannot be trusted: stop the node.
        self.total = number(snapshot).ok_or(ApplyError::Fatal("bad snapshot".into()))?;
        Ok(())
    }
}

/// Bound on every wait of this example.
const WAIT: Duration = Duration::from_secs(20);

/// Adds `n` through `node`, retrying while no leader is known. `Retry` and `NotLeader` mean
/// nothing was proposed, so retrying cannot count `n` twice. `OutcomeUnknown` (leadership
/// changed after the command was proposed) is returned: the command may or may not have been
/// applied, and adding again could count it twice.
async fn add(node: &NodeHandle<Counter>, n: i64) -> Result<i64, Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.write(n.to_string().into_bytes()).await {
            Ok(total) => return Ok(number(&total).ok_or("an answer that is not a number")?),
            Err(ClientError::Retry | ClientError::NotLeader { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The total as of now, read linearizably through `node` (retried while no leader is known).
async fn total(node: &NodeHandle<Counter>) -> Result<i64, Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.read(|counter| counter.total).await {
            Ok(total) => return Ok(total),
            Err(ClientError::Retry) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until one of `nodes` leads; returns its id.
async fn leader(nodes: &BTreeMap<NodeId, Node<Counter>>) -> Result<NodeId, Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((id, _)) = nodes
            .iter()
            .find(|(_, n)| n.handle().status().role == "leader")
        {
            return Ok(*id);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("no leader elected".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        // Cluster id 1; the data directory keeps the log, snapshots and the cluster record.
        let config = NodeConfig::new(id, 1, peers, dir.path().join(format!("node-{}", id.0)));
        println!("node {} listens on {}", id.0, addrs[&id]);
        nodes.insert(id, Node::start(config, listener, Counter::default()).await?);
    }

    let first = leader(&nodes).await?;
    println!("node {} leads", first.0);

    // Writes through every node: a follower forwards its writes to the leader. The answer is
    // the total right after the command was applied.
    let handles: Vec<_> = nodes.values().map(Node::handle).collect();
    for (i, n) in (1..=9).enumerate() {
        let through = &handles[i % handles.len()];
        let after = add(through, n).await?;
        println!(
            "add {n} through node {}: total {after}",
            through.status().id
        );
    }

    // A refused command is the command's result, not a failure of the node.
    match handles[0].write(b"ten".to_vec()).await {
        Err(ClientError::Rejected(reason)) => println!("\"ten\" was refused: {reason}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // A linearizable read at any node sees every write acknowledged before it began.
    for handle in &handles {
        let seen = total(handle).await?;
        println!("node {} reads {seen}", handle.status().id);
        assert_eq!(seen, 45);
    }

    // The leader stops; the other two elect a new leader and keep counting.
    nodes
        .remove(&first)
        .ok_or("the leader is gone")?
        .shutdown()
        .await;
    println!("node {} stopped", first.0);
    let second = leader(&nodes).await?;
    println!("node {} leads now", second.0);
    let survivor = nodes[&second].handle();
    let after = add(&survivor, 55).await?;
    println!("add 55 through node {}: total {after}", second.0);
    assert_eq!(total(&survivor).await?, 100);

    for (_, node) in nodes {
        node.shutdown().await;
    }
    println!("done: total 100");
    Ok(())
}
