//! Forwarded commands: the follower answers its client when it applies the entry the leader
//! placed, and tells it to retry when a new leader overwrote that entry.

mod common;
use common::Net;
use raftengine::{CommandRejected, NodeId, RequestId};

fn forwarding_net() -> Net {
    let mut net = Net::new(3, false);
    for node in &mut net.nodes {
        // Config is fixed at start; rebuild the nodes with forwarding on.
        let mut config = node.config().clone();
        config.forward_proposals = true;
        *node = raftengine::RaftNode::new(config).expect("valid config");
    }
    net
}

#[test]
fn a_forwarded_command_is_answered_at_the_follower() {
    let mut net = forwarding_net();
    net.elect(1);
    net.node(3).propose(RequestId(1), b"x".to_vec());
    net.settle();
    net.node(1).broadcast_heartbeat();
    net.settle();
    let answered: Vec<_> = net
        .committed
        .iter()
        .filter(|(n, c)| *n == NodeId(3) && c.request == Some(RequestId(1)))
        .collect();
    assert_eq!(answered.len(), 1, "{:?}", net.committed);
    assert!(net.rejected.is_empty(), "{:?}", net.rejected);
}

#[test]
fn a_forwarded_command_overwritten_by_a_new_leader_gets_retry() {
    let mut net = forwarding_net();
    net.elect(1);
    // N-1 keeps its AppendEntries to itself but still answers N-3 with the placement.
    net.cut = vec![NodeId(2)];
    net.node(3).propose(RequestId(9), b"lost".to_vec());
    // Deliver N-3's forward and N-1's answer, but drop N-1's AppendEntries to N-3.
    let fwd = net.node(3).take_output().messages;
    for m in fwd {
        let _ = net.node(1).step(m);
    }
    // The answer waits for the leader's own write (it promises an index it must keep).
    let mut out = net.node(1).take_output();
    let seq = out.persist.as_ref().expect("the entry is written").seq;
    net.node(1)
        .persisted(seq)
        .expect("batches are reported in order");
    out.messages.extend(net.node(1).take_output().messages);
    for m in out.messages {
        if matches!(m.body, raftengine::MessageBody::ProposeResponse { .. }) {
            let _ = net.node(3).step(m);
        }
    }
    // N-1 is cut off; N-2 and N-3 elect N-2, whose term-start entry takes the same index.
    net.cut = vec![NodeId(1)];
    net.node(2).campaign(true);
    net.settle();
    net.node(2).broadcast_heartbeat();
    net.settle();
    assert!(
        net.rejected
            .contains(&(NodeId(3), RequestId(9), CommandRejected::Retry)),
        "{:?} {:?} {:?}",
        net.rejected,
        net.committed,
        net.nodes.iter().map(|n| n.status()).collect::<Vec<_>>()
    );
}

fn notifying_net() -> Net {
    let mut net = forwarding_net();
    for node in &mut net.nodes {
        let mut config = node.config().clone();
        config.notify_commit = true;
        *node = raftengine::RaftNode::new(config).expect("valid config");
    }
    net
}

#[test]
fn with_notify_commit_only_a_waiting_follower_hears_the_commit_at_once() {
    let mut net = notifying_net();
    net.elect(1);
    net.node(1).broadcast_heartbeat();
    net.settle();
    let committed_at = |net: &Net, node: u64| {
        net.committed
            .iter()
            .filter(|(n, _)| *n == NodeId(node))
            .count()
    };
    // A command at the leader: followers learn its commit with the next heartbeat only (no
    // extra message per commit when nobody waits).
    let before = (committed_at(&net, 2), committed_at(&net, 3));
    net.node(1).propose(RequestId(1), b"at the leader".to_vec());
    net.settle();
    assert_eq!((committed_at(&net, 2), committed_at(&net, 3)), before);
    // A command forwarded by N-3: N-3 is told of the commit at once, without a heartbeat tick,
    // and answers its client; N-2 waits for nothing and is not told yet (it learned the earlier
    // commit from the append that carried the forwarded command).
    net.node(3).propose(RequestId(2), b"forwarded".to_vec());
    net.settle();
    let answered = net
        .committed
        .iter()
        .any(|(n, c)| *n == NodeId(3) && c.request == Some(RequestId(2)));
    assert!(answered, "{:?}", net.committed);
    let forwarded_index = net.node(1).log().last_index();
    assert_eq!(net.node(3).commit_index(), forwarded_index);
    assert!(net.node(2).commit_index() < forwarded_index);
}
