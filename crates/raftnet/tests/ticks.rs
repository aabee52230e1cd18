//! Ticks reach the core on time however many inputs wait: election timers and leases count
//! ticks, so a loop that handles every queued message first would stretch them.

mod common;

use common::Journal;
use raftengine::{LogIndex, Message, MessageBody, NodeId, Term};
use raftnet::runtime::{InProcessNetwork, LogBackend, Node, NodeConfig, Restart};
use std::collections::BTreeMap;
use std::sync::Arc;

/// More than one poll of the raft loop handles (tokio gives a task 128 channel receives per
/// poll, and the loop takes up to 4096 messages per receive): the queue stays non-empty
/// across polls.
const FLOOD: usize = 600_000;

#[tokio::test(start_paused = true)]
async fn ticks_are_delivered_while_messages_are_queued() {
    let config = NodeConfig::new(NodeId(1), 7, BTreeMap::new(), "unused");
    let tick = config.tick;
    let (tx, inbound) = raftnet::inbox::inbox(FLOOD, usize::MAX);
    let network = Arc::new(InProcessNetwork::default());
    let node = Node::start_with(
        config,
        LogBackend::AckOnly,
        Restart::default(),
        network,
        inbound,
        Journal::default(),
    )
    .expect("start");
    let handle = node.handle();
    // A stranger's answer: the core drops it at once, so the flood costs little.
    let junk = Message {
        from: NodeId(9),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(0),
            reject_hint: LogIndex(0),
            last_log_index: LogIndex(0),
            prev_log_index: LogIndex(0),
            read_round: 0,
            repairing: false,
            repair_epoch: 0,
        },
    };
    for _ in 0..FLOOD {
        tx.try_send(junk.clone()).expect("room");
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        // A tick falls due; the loop gets a poll while `advance` yields.
        tokio::time::advance(tick).await;
        let queued = FLOOD - tx.capacity();
        seen.push((handle.metrics().ticks.get(), queued));
    }
    assert!(
        seen.iter().any(|&(ticks, queued)| ticks >= 1 && queued > 0),
        "no tick while messages were queued (ticks, queued): {seen:?}"
    );
    node.shutdown().await;
}
