//! Linearizable reads in the core: ReadIndex at a single node, lease reads, and what happens to
//! pending reads when leadership changes. (Multi-node ReadIndex flows are shown step by step in
//! `scenarios/reads/`.)

use raftengine::{CommandRejected, ConfigError, LogIndex, NodeId, ReadReady, RequestId};

mod common;
use common::{config, Net};

#[test]
fn a_single_node_confirms_reads_by_itself() {
    let mut net = Net::new(1, false);
    net.elect(1);
    net.node(1).read(RequestId(7));
    net.settle();
    assert_eq!(
        net.reads,
        vec![(
            NodeId(1),
            ReadReady {
                request: RequestId(7),
                index: LogIndex(1)
            }
        )]
    );
}

#[test]
fn a_lease_serves_reads_without_a_round_until_it_expires() {
    let mut net = Net::new(3, true);
    net.elect(1);
    // A heartbeat tick starts a round; its echoes start the lease.
    net.node(1).tick();
    net.settle();
    net.node(1).read(RequestId(1));
    let out = net.node(1).take_output();
    assert_eq!(out.reads.len(), 1, "served from the lease at once");
    assert!(
        out.messages.is_empty(),
        "no confirmation round: {:?}",
        out.messages
    );
    // Cut the followers off: heartbeats go unanswered and the lease runs out.
    net.cut = vec![NodeId(2), NodeId(3)];
    for _ in 0..12 {
        net.node(1).tick();
        net.settle();
    }
    net.node(1).read(RequestId(2));
    net.settle();
    assert!(
        !net.reads.iter().any(|(_, r)| r.request == RequestId(2)),
        "an expired lease needs a round, which cannot complete: {:?}",
        net.reads
    );
}

#[test]
fn lease_reads_need_check_quorum_and_a_lease_shorter_than_the_election_timeout() {
    let mut c = config(1, 3, true);
    c.check_quorum = false;
    assert!(matches!(c.validate(), Err(ConfigError::BadLease { .. })));
    let mut c = config(1, 3, true);
    c.lease_ticks = c.election_timeout_min_ticks;
    assert!(matches!(c.validate(), Err(ConfigError::BadLease { .. })));
}

#[test]
fn a_leader_that_steps_down_rejects_its_pending_reads_and_refuses_forwarded_ones() {
    let mut net = Net::new(3, false);
    net.elect(1);
    net.cut = vec![NodeId(1)];
    net.node(1).read(RequestId(10));
    net.settle();
    assert!(net.reads.is_empty());
    net.cut.clear();
    net.node(2).campaign(true);
    net.settle();
    assert!(net
        .rejected
        .contains(&(NodeId(1), RequestId(10), CommandRejected::Retry)));
    // A follower's forwarded read fails when its leader changes before answering.
    net.cut = vec![NodeId(2)];
    net.node(3).read(RequestId(20));
    net.settle();
    net.cut.clear();
    net.node(1).campaign(true);
    net.settle();
    assert!(net
        .rejected
        .contains(&(NodeId(3), RequestId(20), CommandRejected::Retry)));
    // Through the new leader the read succeeds.
    net.node(3).read(RequestId(21));
    net.settle();
    assert!(net
        .reads
        .iter()
        .any(|(n, r)| *n == NodeId(3) && r.request == RequestId(21)));
}

#[test]
fn a_node_without_a_leader_rejects_reads_with_retry() {
    let mut net = Net::new(3, false);
    net.node(2).read(RequestId(5));
    net.settle();
    assert_eq!(
        net.rejected,
        vec![(NodeId(2), RequestId(5), CommandRejected::Retry)]
    );
}
