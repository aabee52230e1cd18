//! The framework benchmark in the shape of openraft's `benchmarks/minimal`: three nodes in one
//! process, an in-memory log (the core's own; no second copy), an in-process network, empty
//! commands, C concurrent clients each waiting for its previous command before sending the next.
//! Reports committed-and-applied commands per second.
//!
//! `cargo run --release -p raftbench -- --clients 1,64,256,1024 --ops 200000`

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use raftengine::{ApplyError, LogIndex, NodeId, StateMachine};
use raftnet::runtime::{
    InProcessNetwork, LogBackend, Network, Node, NodeConfig, NodeHandle, Restart,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "In-process framework benchmark (openraft benchmarks/minimal shape)")]
struct Args {
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024")]
    clients: Vec<usize>,
    /// Commands per measurement (split among the clients).
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// Applies nothing: the benchmark measures the framework, not a state machine.
struct Empty;

impl StateMachine for Empty {
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore_from(&mut self, _: &[u8]) -> Result<(), ApplyError> {
        Ok(())
    }

    fn apply(&mut self, _: LogIndex, _: &[u8]) -> Result<Vec<u8>, ApplyError> {
        Ok(Vec::new())
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    println!("| clients | commands | seconds | ops/s | per op |");
    println!("|---:|---:|---:|---:|---:|");
    for &clients in &args.clients {
        let (nodes, leader) = start_cluster().await;
        // Warm up the path (allocation, first appends) before timing.
        drive(&leader, clients.min(64), 2_000).await;
        let started = Instant::now();
        drive(&leader, clients, args.ops).await;
        let elapsed = started.elapsed();
        let rate = args.ops as f64 / elapsed.as_secs_f64();
        println!(
            "| {clients} | {} | {:.2} | {:.0} | {:.2} µs |",
            args.ops,
            elapsed.as_secs_f64(),
            rate,
            1e6 / rate
        );
        for node in nodes {
            node.shutdown().await;
        }
    }
}

/// `clients` tasks share `ops` commands; each waits for its command before sending the next.
async fn drive(leader: &NodeHandle<Empty>, clients: usize, ops: u64) {
    let clients = clients.max(1) as u64;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let handle = leader.clone();
        let share = ops / clients + u64::from(c < ops % clients);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                if let Err(e) = handle.write(Vec::new()).await {
                    panic!("a benchmark write failed: {e}");
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn start_cluster() -> (Vec<Node<Empty>>, NodeHandle<Empty>) {
    let network = Arc::new(InProcessNetwork::default());
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    // Addresses are unused by the in-process network; NodeConfig wants the peer list.
    let addr = |id: NodeId| SocketAddr::from((Ipv4Addr::LOCALHOST, 20_000 + id.0 as u16));
    let mut nodes = Vec::new();
    for &id in &ids {
        let peers: BTreeMap<NodeId, SocketAddr> = ids
            .iter()
            .filter(|p| **p != id)
            .map(|p| (*p, addr(*p)))
            .collect();
        let mut config = NodeConfig::new(id, 1, peers, "unused");
        // Node 1 times out first so the leader is known without waiting on chance.
        if id == NodeId(1) {
            config.raft.election_timeout_min_ticks = 2;
            config.raft.election_timeout_max_ticks = 3;
        }
        config.raft.max_entries_per_message = 4096;
        // Compact like openraft's benchmark does (a snapshot every 5,000 entries).
        config.raft.snapshot_after_entries = 5_000;
        let inbound = network.join(id, 1 << 16);
        let net: Arc<dyn Network> = network.clone();
        let node = Node::start_with(
            config,
            LogBackend::AckOnly,
            Restart::default(),
            net,
            inbound,
            Empty,
        )
        .expect("node starts");
        nodes.push(node);
    }
    let leader = nodes[0].handle();
    let ready = tokio::time::timeout(
        Duration::from_secs(10),
        leader.wait_for(|s| s.role == "leader" && s.commit_index >= 1),
    )
    .await;
    assert!(ready.is_ok(), "node 1 did not become leader");
    (nodes, leader)
}
