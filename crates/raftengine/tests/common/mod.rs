//! A tiny in-memory network for core tests: instant delivery and persistence, and a cut list.
#![allow(dead_code)] // each test file uses a different part

use raftengine::{
    CommandRejected, CommittedEntry, Config, Message, NodeId, Output, RaftNode, ReadReady,
    RequestId,
};
use std::collections::VecDeque;

pub fn config(id: u64, voters: u64, lease: bool) -> Config {
    let mut c = Config::new(NodeId(id), (1..=voters).map(NodeId).collect());
    c.lease_reads = lease;
    c
}

/// Nodes delivering to each other instantly, with instant persistence; `cut` drops traffic of
/// the listed nodes.
pub struct Net {
    pub nodes: Vec<RaftNode>,
    pub cut: Vec<NodeId>,
    pub reads: Vec<(NodeId, ReadReady)>,
    pub rejected: Vec<(NodeId, RequestId, CommandRejected)>,
    pub committed: Vec<(NodeId, CommittedEntry)>,
}

impl Net {
    pub fn new(count: u64, lease: bool) -> Net {
        let nodes = (1..=count)
            .map(|id| RaftNode::new(config(id, count, lease)).expect("valid config"))
            .collect();
        Net {
            nodes,
            cut: Vec::new(),
            reads: Vec::new(),
            rejected: Vec::new(),
            committed: Vec::new(),
        }
    }

    pub fn node(&mut self, id: u64) -> &mut RaftNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Delivers everything until no node has anything left to do.
    pub fn settle(&mut self) {
        let mut queue: VecDeque<Message> = VecDeque::new();
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                let id = self.nodes[i].id();
                let out: Output = self.nodes[i].take_output();
                busy |= !out.is_empty();
                if let Some(batch) = &out.persist {
                    self.nodes[i]
                        .persisted(batch.seq)
                        .expect("batches are reported in order");
                }
                queue.extend(out.messages);
                self.reads.extend(out.reads.into_iter().map(|r| (id, r)));
                self.committed
                    .extend(out.committed.into_iter().map(|c| (id, c)));
                self.rejected
                    .extend(out.rejected.into_iter().map(|(r, why)| (id, r, why)));
            }
            if let Some(msg) = queue.pop_front() {
                if !self.cut.contains(&msg.from) && !self.cut.contains(&msg.to) {
                    let to = msg.to.0;
                    let _ = self.node(to).step(msg);
                }
            } else if !busy {
                return;
            }
        }
    }

    pub fn elect(&mut self, id: u64) {
        self.node(id).campaign(false);
        self.settle();
        assert!(self.node(id).status().role == raftengine::RoleKind::Leader);
    }
}
