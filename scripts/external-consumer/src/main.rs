//! A replicated counter on three raftnet nodes over loopback TCP, each with its durable log in
//! `DIR/node-<id>`: a few increments sent round-robin to the nodes (followers forward them to
//! the leader), then every node must have applied the same total.
//!
//! Usage: `external-consumer DIR [WRITES]`. Exits 0 when every node reached the expected total.

use raftengine::{ApplyError, LogIndex, NodeId, StateMachine};
use raftnet::runtime::{ClientError, Node, NodeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The application's state: a sum. A command is a little-endian `u64` to add; the answer is the
/// new sum.
#[derive(Default)]
struct Counter {
    value: u64,
}

impl StateMachine for Counter {
    fn snapshot(&self) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        self.value = match snapshot {
            [] => 0,
            bytes => u64::from_le_bytes(
                bytes
                    .try_into()
                    .map_err(|_| ApplyError::Fatal("a counter snapshot is 8 bytes".into()))?,
            ),
        };
        Ok(())
    }

    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        let add: [u8; 8] = command
            .try_into()
            .map_err(|_| ApplyError::Rejected("a command is a u64 to add".into()))?;
        self.value += u64::from_le_bytes(add);
        Ok(self.value.to_le_bytes().to_vec())
    }
}

const CLUSTER_ID: u64 = 42;
const BOUND: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: external-consumer DIR [WRITES]");
        return ExitCode::from(2);
    };
    let writes: u64 = args
        .next()
        .map_or(20, |w| w.parse().expect("WRITES is a number"));
    match run(dir, writes).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("external-consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dir: PathBuf, writes: u64) -> Result<(), String> {
    // Every node's port first: each node's configuration names the others.
    let mut listeners = BTreeMap::new();
    let mut addrs: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        addrs.insert(
            NodeId(id),
            listener.local_addr().map_err(|e| e.to_string())?,
        );
        listeners.insert(id, listener);
    }
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let peers = addrs
            .iter()
            .filter(|(n, _)| n.0 != id)
            .map(|(n, a)| (*n, *a))
            .collect();
        let config = NodeConfig::new(
            NodeId(id),
            CLUSTER_ID,
            peers,
            dir.join(format!("node-{id}")),
        );
        let node = Node::start(config, listener, Counter::default())
            .await
            .map_err(|e| format!("node {id} did not start: {e}"))?;
        nodes.push(node);
    }
    let handles: Vec<_> = nodes.iter().map(Node::handle).collect();

    let started = Instant::now();
    let mut expected = 0u64;
    for i in 0..writes {
        let add = i + 1;
        let handle = &handles[(i % 3) as usize];
        loop {
            match handle.write(add.to_le_bytes().to_vec()).await {
                Ok(answer) => {
                    let sum = u64::from_le_bytes(
                        answer
                            .as_slice()
                            .try_into()
                            .map_err(|_| "an 8-byte answer")?,
                    );
                    expected += add;
                    if sum != expected {
                        return Err(format!(
                            "write {i}: the counter says {sum}, expected {expected}"
                        ));
                    }
                    break;
                }
                // No leader yet (the first election) or an election under way: nothing was
                // proposed, so sending again cannot count twice.
                Err(ClientError::Retry) if started.elapsed() < BOUND => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(format!("write {i}: {e}")),
            }
        }
    }

    // Every replica applies the same total; a linearizable read through each node agrees.
    for handle in &handles {
        let status = tokio::time::timeout(BOUND, handle.wait_for(|s| s.applied_index > 0))
            .await
            .map_err(|_| "a node applied nothing")?;
        let value = tokio::time::timeout(BOUND, handle.read(|c| c.value))
            .await
            .map_err(|_| "a read timed out")?
            .map_err(|e| format!("read on node {}: {e}", status.id))?;
        if value != expected {
            return Err(format!(
                "node {} reads {value}, expected {expected}",
                status.id
            ));
        }
    }
    let leader = handles[0].wait_for(|s| s.leader.is_some()).await.leader;
    println!(
        "external-consumer: 3 nodes (leader {}), {writes} writes, every node reads {expected}, {:.2} s",
        leader.unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
