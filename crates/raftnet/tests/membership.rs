//! Membership changes, leadership transfer and snapshots on real nodes over loopback TCP with
//! durable logs, while a writer keeps proposing: a learner added then promoted, a follower
//! removed, a joint change of two voters, a new node catching up from a snapshot, a leader that
//! removes itself, and a transfer. After each, every member holds every acknowledged write, in
//! the same order. Waits poll under a bound; nothing sleeps for correctness.

mod common;

use common::scenarios::{removed_node_added_back_serves_clients, untuned};
use common::{
    init_tracing, leader_among, node_config, read_all, start_cluster, wait_status, Addrs, Journal,
    WAIT,
};
use raftengine::{Membership, MembershipChange, MembershipError, NodeId};
use raftnet::runtime::{AdminError, ClientError, Node, NodeHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A node started to join the running cluster of `addrs` (no configuration of its own yet);
/// its address is added to `addrs`.
async fn join(id: u64, addrs: &mut Addrs, root: &Path, every: u64) -> Node<Journal> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = node_config(id, addrs, root, every);
    config.join = true;
    addrs.insert(NodeId(id), listener.local_addr().expect("addr"));
    Node::start(config, listener, Journal::default())
        .await
        .expect("joining node starts")
}

fn address(addrs: &Addrs, id: u64) -> String {
    addrs[&NodeId(id)].to_string()
}

fn ids(nodes: &[u64]) -> BTreeSet<NodeId> {
    nodes.iter().map(|id| NodeId(*id)).collect()
}

/// What a writer saw: commands acknowledged, and commands whose outcome is unknown.
#[derive(Debug, Default)]
struct Outcomes {
    acked: Vec<Vec<u8>>,
    uncertain: Vec<Vec<u8>>,
}

/// A writer proposing `w0`, `w1`, ... one at a time at the given nodes in turn, moving to the
/// next node when one cannot take it (no leader, removed, stopped).
struct Load {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Outcomes>,
}

impl Load {
    fn start(handles: Vec<NodeHandle<Journal>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut at = 0;
            let mut next = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let command = format!("w{next}").into_bytes();
                let write = handles[at % handles.len()].write(command.clone());
                // A forwarded command whose answer was lost waits for ever: bound it.
                let outcome = tokio::time::timeout(Duration::from_secs(2), write)
                    .await
                    .unwrap_or_else(|_| Err(ClientError::OutcomeUnknown("timed out".into())));
                match outcome {
                    Ok(_) => {
                        outcomes.acked.push(command);
                        next += 1;
                    }
                    // Not appended anywhere: the same command may go again.
                    Err(
                        ClientError::Retry | ClientError::NotLeader { .. } | ClientError::Removed,
                    ) => {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    // Maybe appended (or the node stopped): a fresh command next, so that
                    // none can be applied twice.
                    Err(_) => {
                        outcomes.uncertain.push(command);
                        next += 1;
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            outcomes
        });
        Load { stop, task }
    }

    /// Waits until `more` further entries are committed at `handle` (the writer's commands
    /// advance its commit index).
    async fn progress(handle: &NodeHandle<Journal>, more: u64) {
        let from = handle.status().commit_index;
        wait_status("writes to commit", handle, |s| {
            s.commit_index >= from + more
        })
        .await;
    }

    async fn finish(self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the writer stops in time")
            .expect("the writer does not panic");
        assert!(!outcomes.acked.is_empty(), "some writes were acknowledged");
        outcomes
    }
}

/// Every node of `members` holds every acknowledged write and nothing that was never written,
/// each once, and all hold the same sequence.
async fn check_no_write_lost(members: &[&NodeHandle<Journal>], outcomes: &Outcomes) {
    let mut first: Option<Vec<Vec<u8>>> = None;
    for handle in members {
        let journal = read_all(handle).await;
        let held: BTreeSet<&Vec<u8>> = journal.iter().collect();
        assert_eq!(held.len(), journal.len(), "no command applied twice");
        for command in &outcomes.acked {
            assert!(
                held.contains(command),
                "node {} lost the acknowledged write {}",
                handle.status().id,
                String::from_utf8_lossy(command)
            );
        }
        let written: BTreeSet<&Vec<u8>> =
            outcomes.acked.iter().chain(&outcomes.uncertain).collect();
        assert!(
            held.is_subset(&written),
            "only written commands are applied"
        );
        match &first {
            None => first = Some(journal),
            Some(expected) => {
                // Reads are linearizable and the writer has stopped: all agree.
                assert_eq!(&journal, expected, "node {} diverged", handle.status().id)
            }
        }
    }
}

async fn change(
    handle: &NodeHandle<Journal>,
    change: MembershipChange,
) -> Result<Membership, AdminError> {
    tokio::time::timeout(WAIT, handle.change_membership(change))
        .await
        .expect("the change has an outcome in time")
}

fn handles(nodes: &BTreeMap<u64, Node<Journal>>) -> Vec<(u64, NodeHandle<Journal>)> {
    nodes.iter().map(|(id, n)| (*id, n.handle())).collect()
}

/// Every node in `nodes` holds every acknowledged write; then they stop.
async fn check_every_member_and_shut_down(
    nodes: BTreeMap<u64, Node<Journal>>,
    outcomes: &Outcomes,
) {
    let members = handles(&nodes);
    check_no_write_lost(
        &members.iter().map(|(_, h)| h).collect::<Vec<_>>(),
        outcomes,
    )
    .await;
    shutdown(nodes).await;
}

async fn shutdown(nodes: BTreeMap<u64, Node<Journal>>) {
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_added_then_promoted_to_voter_under_write_load() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (mut addrs, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let follower = all
        .iter()
        .find(|(id, _)| *id != leader)
        .expect("a follower");
    let load = Load::start(all.iter().map(|(_, h)| h.clone()).collect());
    Load::progress(&all[0].1, 20).await;

    // Node 4 starts with no configuration; a follower forwards the change to the leader.
    let four = join(4, &mut addrs, root.path(), 0).await;
    assert!(four.handle().status().membership.members().is_empty());
    let added = change(
        &follower.1,
        MembershipChange::AddLearner {
            node: NodeId(4),
            address: address(&addrs, 4),
        },
    )
    .await
    .expect("learner added");
    assert_eq!(added.learners, ids(&[4]));
    assert_eq!(added.voters, ids(&[1, 2, 3]));
    assert_eq!(added.addresses.get(&NodeId(4)), Some(&address(&addrs, 4)));
    // The learner receives the log and knows itself as a learner, but does not vote.
    let status = wait_status("node 4 to learn it is a learner", &four.handle(), |s| {
        s.membership.learners.contains(&NodeId(4)) && s.membership_committed
    })
    .await;
    assert_eq!(status.role, "follower");
    Load::progress(&four.handle(), 20).await;

    // Promotion, at the leader this time; asking again is a no-op that succeeds.
    let leader_handle = &all[leader as usize - 1].1;
    let promoted = change(
        leader_handle,
        MembershipChange::AddVoter {
            node: NodeId(4),
            address: address(&addrs, 4),
        },
    )
    .await
    .expect("learner promoted");
    assert_eq!(promoted.voters, ids(&[1, 2, 3, 4]));
    assert!(promoted.learners.is_empty());
    let again = change(
        leader_handle,
        MembershipChange::AddVoter {
            node: NodeId(4),
            address: address(&addrs, 4),
        },
    )
    .await
    .expect("a repeated add succeeds");
    assert_eq!(again.voters, promoted.voters);
    wait_status("node 4 to know it votes", &four.handle(), |s| {
        s.membership.voters.contains(&NodeId(4))
    })
    .await;
    Load::progress(&four.handle(), 20).await;

    let outcomes = load.finish().await;
    nodes.insert(4, four);
    check_every_member_and_shut_down(nodes, &outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_follower_learns_it_and_the_rest_go_on() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (_addrs, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let victim = all
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader)
        .expect("a follower");
    let load = Load::start(all.iter().map(|(_, h)| h.clone()).collect());
    Load::progress(&all[0].1, 20).await;

    let after = change(
        &all[leader as usize - 1].1,
        MembershipChange::Remove {
            node: NodeId(victim),
        },
    )
    .await
    .expect("follower removed");
    assert!(!after.contains(NodeId(victim)));
    assert_eq!(after.voters.len(), 2);
    let removed = nodes.remove(&victim).expect("the victim");
    let status = wait_status(
        "the victim to learn of its removal",
        &removed.handle(),
        |s| s.removed,
    )
    .await;
    assert!(!status.membership.contains(NodeId(victim)));
    assert_eq!(
        removed.handle().write(b"too late".to_vec()).await,
        Err(ClientError::Removed)
    );
    // The leader no longer sends to it.
    let leader_node = &nodes[&leader];
    let deadline = tokio::time::Instant::now() + WAIT;
    while leader_node
        .transport_stats()
        .expect("a TCP node")
        .peers
        .contains_key(&NodeId(victim))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader still routes to the victim"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Load::progress(&leader_node.handle(), 30).await;
    removed.shutdown().await;
    Load::progress(&leader_node.handle(), 20).await;

    let outcomes = load.finish().await;
    check_every_member_and_shut_down(nodes, &outcomes).await;
}

/// Removed, then added back: the node serves its clients again without a restart. The scenario
/// is in `common::scenarios`; `tests/mutations.rs` runs it with `Mutation::RemovedForever` (the
/// core kept the node removed, so the runtime kept refusing its clients) and sees it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_added_back_serves_its_clients_again() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let outcome = removed_node_added_back_serves_clients(root.path(), untuned).await;
    assert_eq!(outcome, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joint_change_replaces_two_voters_at_once() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (mut addrs, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let leaving: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let load = Load::start(all.iter().map(|(_, h)| h.clone()).collect());
    Load::progress(&all[0].1, 20).await;

    let four = join(4, &mut addrs, root.path(), 0).await;
    let five = join(5, &mut addrs, root.path(), 0).await;
    let add = [4, 5].map(|id| (NodeId(id), address(&addrs, id))).into();
    let after = change(
        &all[leaving[0] as usize - 1].1,
        MembershipChange::Joint {
            add,
            remove: ids(&leaving),
        },
    )
    .await
    .expect("joint change done");
    assert_eq!(after.voters, ids(&[leader, 4, 5]));
    assert!(!after.is_joint(), "the change ends in C_new");
    for id in &leaving {
        let gone = nodes.remove(id).expect("leaving node");
        wait_status(
            "a replaced voter to learn of its removal",
            &gone.handle(),
            |s| s.removed,
        )
        .await;
        gone.shutdown().await;
    }
    // The new majority (two of leader, 4 and 5) carries on without the old voters.
    Load::progress(&five.handle(), 30).await;

    let outcomes = load.finish().await;
    nodes.insert(4, four);
    nodes.insert(5, five);
    let members = handles(&nodes);
    for (_, h) in &members {
        wait_status("the final configuration", h, |s| {
            s.membership.voters == ids(&[leader, 4, 5]) && s.membership_committed
        })
        .await;
    }
    check_every_member_and_shut_down(nodes, &outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_from_a_snapshot() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (mut addrs, mut nodes) = start_cluster(root.path(), 3, 20).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let load = Load::start(all.iter().map(|(_, h)| h.clone()).collect());
    Load::progress(&all[0].1, 50).await;
    // An explicit snapshot as well as the policy's: the log before it is gone.
    let leader_handle = &all[leader as usize - 1].1;
    let covered = tokio::time::timeout(WAIT, leader_handle.trigger_snapshot())
        .await
        .expect("snapshot in time")
        .expect("snapshot taken");
    assert!(
        covered.0 >= 50,
        "the snapshot covers what was applied: {covered:?}"
    );
    let leader_snapshots = root.path().join(format!("node-{leader}/snapshots"));
    assert!(
        std::fs::read_dir(&leader_snapshots)
            .expect("snapshot dir")
            .count()
            > 0
    );

    // Node 4 keeps the default policy (a snapshot every 100,000 entries), so any snapshot file
    // it holds is the leader's.
    let four = join(4, &mut addrs, root.path(), 0).await;
    let after = change(
        leader_handle,
        MembershipChange::AddVoter {
            node: NodeId(4),
            address: address(&addrs, 4),
        },
    )
    .await
    .expect("new voter added");
    assert_eq!(after.voters, ids(&[1, 2, 3, 4]));
    let four_snapshots = root.path().join("node-4/snapshots");
    assert!(
        std::fs::read_dir(&four_snapshots)
            .expect("snapshot dir")
            .count()
            > 0,
        "node 4 installed a snapshot"
    );
    Load::progress(&four.handle(), 20).await;

    let outcomes = load.finish().await;
    nodes.insert(4, four);
    check_every_member_and_shut_down(nodes, &outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_removes_itself_hands_over_to_another_node() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (_addrs, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let load = Load::start(all.iter().map(|(_, h)| h.clone()).collect());
    Load::progress(&all[0].1, 20).await;

    let after = change(
        &all[leader as usize - 1].1,
        MembershipChange::Remove {
            node: NodeId(leader),
        },
    )
    .await
    .expect("leader removed");
    assert_eq!(after.voters.len(), 2);
    assert!(!after.contains(NodeId(leader)));
    let old = nodes.remove(&leader).expect("old leader");
    wait_status("the old leader to step down", &old.handle(), |s| {
        s.removed && s.role != "leader"
    })
    .await;
    let rest = handles(&nodes);
    let new_leader = leader_among(&rest).await;
    assert_ne!(new_leader, leader);
    Load::progress(&nodes[&new_leader].handle(), 30).await;
    old.shutdown().await;

    let outcomes = load.finish().await;
    check_no_write_lost(&rest.iter().map(|(_, h)| h).collect::<Vec<_>>(), &outcomes).await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_chosen_node_under_load() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (_addrs, nodes) = start_cluster(root.path(), 3, 0).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let load = Load::start(all.iter().map(|(_, h)| h.clone()).collect());
    Load::progress(&all[0].1, 20).await;

    // Only the leader transfers; a follower names it.
    let at_follower = all[target as usize - 1]
        .1
        .transfer_leadership(NodeId(leader))
        .await;
    assert_eq!(
        at_follower,
        Ok(NodeId(leader)),
        "the named node already leads"
    );
    let third = (1..=3)
        .find(|id| *id != leader && *id != target)
        .expect("a third node");
    assert!(matches!(
        all[target as usize - 1].1.transfer_leadership(NodeId(third)).await,
        Err(AdminError::NotLeader { leader: Some(l) }) if l == NodeId(leader)
    ));
    assert!(matches!(
        all[leader as usize - 1]
            .1
            .transfer_leadership(NodeId(9))
            .await,
        Err(AdminError::Transfer(_))
    ));

    let moved = tokio::time::timeout(
        WAIT,
        all[leader as usize - 1]
            .1
            .transfer_leadership(NodeId(target)),
    )
    .await
    .expect("transfer ends in time");
    assert_eq!(moved, Ok(NodeId(target)));
    let status = wait_status("the target to lead", &all[target as usize - 1].1, |s| {
        s.role == "leader"
    })
    .await;
    assert_eq!(status.leader, Some(target));
    Load::progress(&all[target as usize - 1].1, 30).await;

    let outcomes = load.finish().await;
    check_no_write_lost(&all.iter().map(|(_, h)| h).collect::<Vec<_>>(), &outcomes).await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_membership_changes_are_refused_with_a_reason() {
    init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addrs = [(NodeId(1), listener.local_addr().expect("addr"))].into();
    let mut config = node_config(1, &addrs, root.path(), 0);
    // A new voter that acknowledges nothing for 0.3 s is given up.
    config.raft.catch_up_stall_ticks = 30;
    let node = Node::start(config, listener, Journal::default())
        .await
        .expect("node starts");
    let handle = node.handle();
    wait_status("the single node to lead", &handle, |s| {
        s.role == "leader" && s.commit_index >= 1
    })
    .await;
    assert_eq!(
        change(&handle, MembershipChange::Remove { node: NodeId(1) }).await,
        Err(AdminError::Membership(MembershipError::Invalid(
            "the change would leave no voter".into()
        )))
    );
    let both = MembershipChange::Joint {
        add: [(NodeId(2), "127.0.0.1:1".to_string())].into(),
        remove: ids(&[2]),
    };
    assert!(matches!(
        change(&handle, both).await,
        Err(AdminError::Membership(MembershipError::Invalid(_)))
    ));
    // A voter nobody runs never catches up: the change is aborted and nothing changes.
    let ghost = MembershipChange::AddVoter {
        node: NodeId(2),
        address: "127.0.0.1:1".into(),
    };
    match change(&handle, ghost).await {
        Err(AdminError::Membership(MembershipError::CatchUpFailed { node, .. })) => {
            assert_eq!(node, NodeId(2))
        }
        other => panic!("expected a failed catch-up, got {other:?}"),
    }
    assert_eq!(handle.status().membership.voters, ids(&[1]));
    // The next change goes through: the aborted one left nothing behind.
    let learner = MembershipChange::AddLearner {
        node: NodeId(3),
        address: "127.0.0.1:1".into(),
    };
    assert_eq!(
        change(&handle, learner).await.expect("learner").learners,
        ids(&[3])
    );
    node.shutdown().await;
}
