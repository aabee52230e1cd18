//! Counts of what the nodes send and handle, for the message-amplification check of randomized
//! runs: a leader sends a follower at most one snapshot chunk per answer to a chunk, plus one
//! resend per minimum election timeout of silence, plus one to start each transfer. (Each
//! answer to a heartbeat used to resend the chunk in flight and start one more chain of chunks:
//! a 16-chunk snapshot went out 76 times after 4 heartbeats.)

use raftengine::{Event, Message, MessageBody};
use std::collections::BTreeMap;

/// Traffic between one ordered pair of nodes, as seen by the sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pair {
    /// `InstallSnapshot` messages the sender's core emitted to the receiver.
    chunks_sent: u64,
    /// `InstallSnapshotResponse` messages from the receiver that the sender handled.
    chunk_answers: u64,
}

/// Per node and per pair counts since the cluster started (restarts included).
#[derive(Debug, Default)]
pub struct Traffic {
    pairs: BTreeMap<(usize, usize), Pair>,
    ticks: BTreeMap<usize, u64>,
    /// Terms a node was elected in, and configuration changes it saw: each may start a new
    /// snapshot transfer to a follower.
    fresh_starts: BTreeMap<usize, u64>,
}

impl Traffic {
    pub fn sent(&mut self, msg: &Message) {
        if let MessageBody::InstallSnapshot { .. } = msg.body {
            let pair = (msg.from.0 as usize, msg.to.0 as usize);
            self.pairs.entry(pair).or_default().chunks_sent += 1;
        }
    }

    pub fn handled(&mut self, node: usize, msg: &Message) {
        if let MessageBody::InstallSnapshotResponse { .. } = msg.body {
            let pair = (node, msg.from.0 as usize);
            self.pairs.entry(pair).or_default().chunk_answers += 1;
        }
    }

    pub fn ticked(&mut self, node: usize) {
        *self.ticks.entry(node).or_default() += 1;
    }

    pub fn event(&mut self, node: usize, event: &Event) {
        if matches!(
            event,
            Event::ElectionWon { .. } | Event::MembershipChanged { .. }
        ) {
            *self.fresh_starts.entry(node).or_default() += 1;
        }
    }

    /// The first pair whose chunks exceed the bound, with the numbers.
    pub fn chunk_amplification(&self, resend_ticks: u64) -> Option<String> {
        self.pairs.iter().find_map(|(&(from, to), pair)| {
            let ticks = self.ticks.get(&from).copied().unwrap_or(0);
            let starts = self.fresh_starts.get(&from).copied().unwrap_or(0);
            let bound = pair.chunk_answers + ticks / resend_ticks.max(1) + starts + 1;
            (pair.chunks_sent > bound).then(|| {
                format!(
                    "N-{from} sent N-{to} {} snapshot chunks; the bound is {bound} ({} answers, {ticks} ticks / {resend_ticks}, {starts} elections and configuration changes, + 1)",
                    pair.chunks_sent, pair.chunk_answers
                )
            })
        })
    }
}
