//! Membership changes at the core, driven through the harness: the rules the scenario files do
//! not show one by one (one change at a time, the new leader's first commit, idempotent requests,
//! stalled catch-ups, restarts that recover the configuration from the log or a snapshot, a
//! joining node that learns the configuration from a snapshot).

use raftengine::{Membership, MembershipChange, MembershipError, NodeId, RoleKind};
use raftsim::{Block, Cluster, ClusterSettings, CommandOutcome, Trigger};

fn id(n: u64) -> NodeId {
    NodeId(n)
}

fn add(n: u64) -> MembershipChange {
    MembershipChange::AddVoter {
        node: id(n),
        address: format!("N-{n}"),
    }
}

/// `nodes` nodes of which the first `members` form the cluster, with N-1 elected.
fn cluster(nodes: usize, members: usize, tweak: impl FnOnce(&mut ClusterSettings)) -> Cluster {
    let mut settings = ClusterSettings {
        nodes,
        members,
        ..ClusterSettings::default()
    };
    tweak(&mut settings);
    let mut c = Cluster::new(&settings).expect("valid settings");
    c.campaign(1, false).unwrap();
    c.run(Some(&Trigger::ElectionDone)).unwrap();
    c
}

fn voters(c: &Cluster, node: usize) -> Vec<u64> {
    let raft = c.raft(node).unwrap().expect("node is up");
    raft.membership().voters.iter().map(|n| n.0).collect()
}

fn outcome(c: &mut Cluster, node: usize) -> CommandOutcome {
    c.wait_result(node).unwrap()
}

#[test]
fn a_second_change_waits_for_the_first_to_commit() {
    let mut c = cluster(5, 3, |_| {});
    c.change_membership(1, add(4)).unwrap();
    // The catch-up of N-4 is under way: another change is refused at once.
    c.change_membership(1, add(5)).unwrap();
    assert_eq!(
        c.last_outcome(1).unwrap(),
        CommandOutcome::Error(MembershipError::InProgress.to_string())
    );
    c.run(None).unwrap();
    assert_eq!(voters(&c, 1), [1, 2, 3, 4]);
    c.change_membership(1, add(5)).unwrap();
    assert_eq!(
        outcome(&mut c, 1),
        CommandOutcome::Value("cfg-1,2,3,4,5".into())
    );
}

#[test]
fn a_new_leader_changes_nothing_before_its_first_commit() {
    let mut c = cluster(4, 3, |_| {});
    // N-2 wins term 2 but its term-start entry is not committed yet.
    c.block(3, Block::Hold).unwrap();
    c.campaign(2, true).unwrap();
    c.run(Some(&Trigger::IsLeader(2))).unwrap();
    c.block(1, Block::Hold).unwrap();
    c.change_membership(2, add(4)).unwrap();
    assert_eq!(c.last_outcome(2).unwrap(), CommandOutcome::Retry);
    c.block(1, Block::None).unwrap();
    c.block(3, Block::None).unwrap();
    c.run(None).unwrap();
    c.change_membership(2, add(4)).unwrap();
    assert_eq!(
        outcome(&mut c, 2),
        CommandOutcome::Value("cfg-1,2,3,4".into())
    );
}

#[test]
fn repeated_requests_succeed_without_a_new_entry() {
    let mut c = cluster(5, 3, |_| {});
    c.change_membership(1, add(4)).unwrap();
    assert_eq!(
        outcome(&mut c, 1),
        CommandOutcome::Value("cfg-1,2,3,4".into())
    );
    let last = c.raft(1).unwrap().unwrap().log().last_index();
    c.change_membership(1, add(4)).unwrap();
    assert_eq!(
        c.last_outcome(1).unwrap(),
        CommandOutcome::Value("cfg-1,2,3,4".into())
    );
    c.change_membership(1, MembershipChange::Remove { node: id(5) })
        .unwrap();
    assert!(matches!(
        c.last_outcome(1).unwrap(),
        CommandOutcome::Value(_)
    ));
    assert_eq!(c.raft(1).unwrap().unwrap().log().last_index(), last);
}

#[test]
fn invalid_changes_are_refused_with_a_reason() {
    let mut c = cluster(3, 0, |_| {});
    let joint = MembershipChange::Joint {
        add: [(id(2), "N-2".to_string())].into(),
        remove: [id(2)].into(),
    };
    c.change_membership(1, joint).unwrap();
    assert!(
        matches!(c.last_outcome(1).unwrap(), CommandOutcome::Error(e) if e.contains("both added and removed"))
    );
    for n in [2, 3] {
        c.change_membership(1, MembershipChange::Remove { node: id(n) })
            .unwrap();
        c.wait_result(1).unwrap();
    }
    c.change_membership(1, MembershipChange::Remove { node: id(1) })
        .unwrap();
    assert!(
        matches!(c.last_outcome(1).unwrap(), CommandOutcome::Error(e) if e.contains("no voter"))
    );
}

#[test]
fn an_unreachable_new_node_stalls_and_the_change_is_aborted() {
    let mut c = cluster(4, 3, |s| s.catch_up_stall_ticks = 20);
    c.block(4, Block::Drop).unwrap();
    c.change_membership(1, add(4)).unwrap();
    for _ in 0..20 {
        c.tick(1).unwrap();
        c.run(None).unwrap();
    }
    assert!(
        matches!(c.last_outcome(1).unwrap(), CommandOutcome::Error(e) if e.contains("acknowledged nothing for 20 ticks"))
    );
    assert_eq!(voters(&c, 1), [1, 2, 3]);
    // Nothing was appended, so the next change may go ahead.
    c.block(4, Block::None).unwrap();
    c.change_membership(1, add(4)).unwrap();
    assert_eq!(
        outcome(&mut c, 1),
        CommandOutcome::Value("cfg-1,2,3,4".into())
    );
}

#[test]
fn a_restarted_node_recovers_its_configuration_from_its_log_and_from_a_snapshot() {
    let mut c = cluster(4, 3, |_| {});
    c.change_membership(1, add(4)).unwrap();
    c.wait_result(1).unwrap();
    c.heartbeat(1).unwrap();
    c.run(None).unwrap();
    c.crash(4).unwrap();
    c.restart(4, false).unwrap();
    assert_eq!(
        voters(&c, 4),
        [1, 2, 3, 4],
        "from the configuration entry in its log"
    );
    c.snapshot(2).unwrap();
    c.crash(2).unwrap();
    c.restart(2, false).unwrap();
    let raft = c.raft(2).unwrap().unwrap();
    assert!(raft.log().start().index.0 > 0, "the log was compacted");
    assert_eq!(voters(&c, 2), [1, 2, 3, 4], "from the snapshot");
}

#[test]
fn a_joining_node_learns_the_configuration_from_a_snapshot() {
    let mut c = cluster(4, 3, |s| s.snapshot_after_entries = 3);
    for i in 0..6 {
        c.submit(1, &format!("add {i}")).unwrap();
        c.wait_result(1).unwrap();
    }
    assert!(c.raft(1).unwrap().unwrap().snapshot().is_some());
    let before = Membership::with_voters([id(1), id(2), id(3)]);
    assert_eq!(
        c.raft(1).unwrap().unwrap().snapshot().unwrap().membership,
        before
    );
    c.change_membership(1, add(4)).unwrap();
    assert_eq!(
        outcome(&mut c, 1),
        CommandOutcome::Value("cfg-1,2,3,4".into())
    );
    c.heartbeat(1).unwrap();
    c.run(None).unwrap();
    let joined = c.raft(4).unwrap().unwrap();
    assert!(
        joined.snapshot().is_some(),
        "it caught up from the snapshot"
    );
    assert_eq!(voters(&c, 4), [1, 2, 3, 4]);
    assert_eq!(c.counter(4).unwrap().total, 15);
}

#[test]
fn learners_and_joining_nodes_never_campaign() {
    let mut c = cluster(5, 3, |_| {});
    c.change_membership(
        1,
        MembershipChange::AddLearner {
            node: id(4),
            address: "N-4".into(),
        },
    )
    .unwrap();
    c.wait_result(1).unwrap();
    for node in [4, 5] {
        c.set_timers(node, true, None).unwrap();
    }
    c.advance(200).unwrap();
    for node in [4, 5] {
        let status = c.status(node).unwrap().unwrap();
        assert_eq!((node, status.role), (node, RoleKind::Follower));
        assert!(
            status.term.0 <= 1,
            "N-{node} moved to term {}",
            status.term.0
        );
    }
}

#[test]
fn the_snapshot_policy_also_counts_log_bytes() {
    // No entry-count policy: only the command bytes the log holds ask for a snapshot.
    let mut c = cluster(3, 0, |s| s.snapshot_after_log_bytes = 40);
    let put = |i: usize| format!("put key{i} {}", "x".repeat(8)); // 17 bytes
    for i in 0..2 {
        c.submit(1, &put(i)).unwrap();
        c.wait_result(1).unwrap();
    }
    let raft = c.raft(1).unwrap().unwrap();
    assert_eq!(raft.log().payload_bytes(), 34);
    assert!(raft.snapshot().is_none(), "34 bytes are below the limit");
    c.submit(1, &put(2)).unwrap();
    c.wait_result(1).unwrap();
    let raft = c.raft(1).unwrap().unwrap();
    assert!(raft.snapshot().is_some(), "51 bytes ask for a snapshot");
    // It covers what was applied when the log reached the limit: the third command was
    // appended then, not yet applied, so it stays in the log.
    assert_eq!(
        raft.log().payload_bytes(),
        17,
        "the log behind it is compacted"
    );
}
