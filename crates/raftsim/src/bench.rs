//! Core micro-benchmark: how many entries per second the consensus core commits through three
//! in-process nodes, with no I/O (persistence is acknowledged at once, messages are moved by
//! function call). Measures the core's own cost, not a network or a disk.

use raftengine::{Config, Message, NodeId, RaftNode, RequestId, RoleKind};
use std::collections::VecDeque;
use std::time::Instant;

struct Bench {
    nodes: Vec<RaftNode>,
    queue: VecDeque<Message>,
    committed_at_leader: u64,
}

impl Bench {
    fn new(batch: u64) -> Result<Bench, String> {
        let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut nodes = Vec::new();
        for id in &voters {
            let mut config = Config::new(*id, voters.clone());
            config.max_entries_per_message = (batch as usize).max(64);
            nodes.push(RaftNode::new(config).map_err(|e| e.to_string())?);
        }
        Ok(Bench {
            nodes,
            queue: VecDeque::new(),
            committed_at_leader: 0,
        })
    }

    fn drain(&mut self, i: usize) {
        loop {
            let out = self.nodes[i].take_output();
            if out.is_empty() {
                return;
            }
            if let Some(batch) = &out.persist {
                // The batch was just issued, and reports go in order.
                self.nodes[i]
                    .persisted(batch.seq)
                    .expect("a batch just issued is reported in order");
            }
            if i == 0 {
                self.committed_at_leader += out.committed.len() as u64;
            }
            self.queue.extend(out.messages);
        }
    }

    fn deliver_all(&mut self) -> Result<(), String> {
        while let Some(msg) = self.queue.pop_front() {
            let to = msg.to.0 as usize - 1;
            self.nodes[to].step(msg).map_err(|e| e.to_string())?;
            self.drain(to);
        }
        Ok(())
    }
}

/// Commits `entries` empty commands, proposing `batch` per round; returns a one-line report.
pub fn run(entries: u64, batch: u64) -> Result<String, String> {
    let batch = batch.max(1);
    let mut bench = Bench::new(batch)?;
    bench.nodes[0].campaign(false);
    bench.drain(0);
    bench.deliver_all()?;
    if bench.nodes[0].role() != RoleKind::Leader {
        return Err("node 1 did not become leader".into());
    }
    let start_committed = bench.committed_at_leader;
    let started = Instant::now();
    let mut request = 0;
    while bench.committed_at_leader - start_committed < entries {
        for _ in 0..batch {
            request += 1;
            bench.nodes[0].propose(RequestId(request), Vec::new());
        }
        bench.drain(0);
        bench.deliver_all()?;
    }
    let elapsed = started.elapsed();
    let committed = bench.committed_at_leader - start_committed;
    let per_second = committed as f64 / elapsed.as_secs_f64();
    Ok(format!(
        "core bench: 3 nodes, no I/O, batch {batch}: {committed} entries committed in {:.3} s = {:.0} entries/s",
        elapsed.as_secs_f64(),
        per_second
    ))
}
