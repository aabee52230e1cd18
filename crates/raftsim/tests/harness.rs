//! The deterministic cluster harness: elections, client commands and their outcomes (value,
//! redirect, retry, state-machine error, leadership lost), fatal state-machine failures that
//! mark storage broken, and timer-driven elections that repeat exactly.

use raftengine::{Event, LogIndex, LogStorage, RoleKind, StorageError, Term};
use raftsim::{Block, Cluster, ClusterSettings, CommandOutcome, HarnessError, Trigger};

fn cluster(settings: &ClusterSettings) -> Cluster {
    Cluster::new(settings).expect("valid settings")
}

/// A three-node cluster (default settings) in which `leader` won the election of term 1.
fn elected(leader: usize) -> Cluster {
    let mut c = cluster(&ClusterSettings::default());
    c.campaign(leader, false).unwrap();
    c.run(Some(&Trigger::ElectionDone)).unwrap();
    assert_eq!(c.status(leader).unwrap().unwrap().role, RoleKind::Leader);
    c
}

fn role(c: &Cluster, node: usize) -> RoleKind {
    c.status(node).unwrap().expect("node is up").role
}

#[test]
fn campaign_in_three_node_cluster_elects_leader_of_term_1_that_commits_its_term_start_entry() {
    let mut c = cluster(&ClusterSettings::default());
    c.campaign(3, false).unwrap();
    c.run(Some(&Trigger::ElectionDone)).unwrap();
    let leader = c.status(3).unwrap().unwrap();
    assert_eq!(leader.role, RoleKind::Leader);
    assert_eq!(leader.term, Term(1));
    assert_eq!(leader.commit.0, 1, "the term-start entry is committed");
    assert_eq!(leader.last_index.0, 1);
    for follower in [1, 2] {
        let s = c.status(follower).unwrap().unwrap();
        assert_eq!(s.role, RoleKind::Follower);
        assert_eq!(s.term, Term(1));
        assert_eq!(s.leader.map(|l| l.0), Some(3));
        assert_eq!(s.last_index.0, 1, "N-{follower} holds the term-start entry");
    }
    assert!(c.step_errors.is_empty(), "{:?}", c.step_errors);
    assert!(c.trigger_holds(&Trigger::ElectionDone));
}

#[test]
fn command_at_the_leader_is_applied_and_returns_the_state_machine_value() {
    let mut c = elected(3);
    c.submit(3, "add 1").unwrap();
    assert_eq!(c.wait_result(3).unwrap(), CommandOutcome::Value("1".into()));
    c.submit(3, "add 41").unwrap();
    assert_eq!(
        c.wait_result(3).unwrap(),
        CommandOutcome::Value("42".into())
    );
    assert_eq!(c.counter(3).unwrap().total, 42);
    // Followers apply once they learn the commit index (the next append or heartbeat).
    c.heartbeat(3).unwrap();
    c.run(None).unwrap();
    for n in 1..=3 {
        assert_eq!(c.counter(n).unwrap().total, 42, "N-{n}");
        assert_eq!(c.status(n).unwrap().unwrap().commit.0, 3, "N-{n}");
    }
    assert!(c.step_errors.is_empty(), "{:?}", c.step_errors);
}

#[test]
fn command_at_a_follower_is_redirected_to_the_known_leader() {
    let mut c = elected(3);
    c.submit(1, "add 1").unwrap();
    assert_eq!(c.wait_result(1).unwrap(), CommandOutcome::Redirect(3));
    assert_eq!(
        c.status(1).unwrap().unwrap().last_index.0,
        1,
        "nothing appended"
    );
}

#[test]
fn command_at_a_candidate_asks_the_client_to_retry() {
    let settings = ClusterSettings {
        pre_vote: false,
        ..ClusterSettings::default()
    };
    let mut c = cluster(&settings);
    c.campaign(2, false).unwrap();
    assert_eq!(role(&c, 2), RoleKind::Candidate);
    c.submit(2, "add 1").unwrap();
    assert_eq!(c.wait_result(2).unwrap(), CommandOutcome::Retry);
}

#[test]
fn command_at_a_pre_candidate_asks_the_client_to_retry() {
    let mut c = cluster(&ClusterSettings::default());
    c.campaign(2, false).unwrap();
    assert_eq!(role(&c, 2), RoleKind::PreCandidate);
    c.submit(2, "add 1").unwrap();
    assert_eq!(c.wait_result(2).unwrap(), CommandOutcome::Retry);
}

#[test]
fn unknown_command_commits_and_returns_the_state_machine_error() {
    let mut c = elected(3);
    c.submit(3, "mul 2").unwrap();
    match c.wait_result(3).unwrap() {
        CommandOutcome::Error(reason) => assert!(reason.contains("mul"), "{reason}"),
        other => panic!("expected a state-machine error, got {other:?}"),
    }
    // A deterministic refusal is a result, not a failure: the node keeps running.
    assert_eq!(role(&c, 3), RoleKind::Leader);
    assert_eq!(c.status(3).unwrap().unwrap().commit.0, 2);
    c.submit(3, "add 2").unwrap();
    assert_eq!(c.wait_result(3).unwrap(), CommandOutcome::Value("2".into()));
}

#[test]
fn fatal_state_machine_failure_stops_the_node_and_restart_is_refused_until_cleared() {
    let mut c = elected(3);
    c.submit(3, "fail-io").unwrap();
    // The node stops while applying; the client is told the state machine failed.
    assert!(matches!(
        c.wait_result(3).unwrap(),
        CommandOutcome::Error(reason) if reason.contains("state machine failed")
    ));
    assert!(c.events.iter().any(|(n, e)| *n == 3
        && *e
            == Event::CommitAdvanced {
                commit: LogIndex(2)
            }));
    assert!(c.raft(3).unwrap().is_none(), "the node is down");
    assert!(matches!(
        c.storage(3).unwrap().load(),
        Err(StorageError::Broken(_))
    ));
    match c.restart(3, false) {
        Err(HarnessError::RestartRefused { node: 3, reason }) => {
            assert!(reason.contains("broken"), "{reason}")
        }
        other => panic!("expected a refused restart, got {other:?}"),
    }
    // Still refused on a second try: nothing changed.
    assert!(matches!(
        c.restart(3, false),
        Err(HarnessError::RestartRefused { node: 3, .. })
    ));
    c.clear_broken(3).unwrap();
    c.restart(3, false).unwrap();
    let s = c.status(3).unwrap().expect("running again");
    assert_eq!(s.role, RoleKind::Follower);
    assert_eq!(s.term, Term(1), "the durable term survived");
    assert_eq!(
        s.last_index.0, 2,
        "the durable log survived, fail-io included"
    );
    assert_eq!(
        s.commit.0, 1,
        "the commit index written before the failure (lazily: index 2's commit was never written)"
    );
}

#[test]
fn leader_demoted_by_a_newer_term_before_replicating_reports_leadership_lost() {
    let mut c = elected(3);
    // Node 3 appends the command but cannot send it: its traffic is held.
    c.block(3, Block::Hold).unwrap();
    c.submit(3, "add 1").unwrap();
    assert_eq!(c.status(3).unwrap().unwrap().last_index.0, 2);
    // Node 1 wins term 2 with node 2 (a transfer-style campaign passes the live-leader check).
    c.campaign(1, true).unwrap();
    c.run(Some(&Trigger::IsLeader(1))).unwrap();
    assert_eq!(c.status(1).unwrap().unwrap().term, Term(2));
    // Node 3 hears about term 2 and steps down: the command's fate is unknown to the client.
    c.block(3, Block::None).unwrap();
    assert_eq!(c.wait_result(3).unwrap(), CommandOutcome::LeadershipLost);
    c.run(None).unwrap();
    assert_eq!(role(&c, 3), RoleKind::Follower);
    assert_eq!(role(&c, 1), RoleKind::Leader);
    // The new leader never had the entry; it was replaced on node 3 by term 2's log.
    let s3 = c.status(3).unwrap().unwrap();
    assert_eq!(s3.term, Term(2));
    assert_eq!(s3.last_term, Term(2));
    for n in 1..=3 {
        assert_eq!(
            c.counter(n).unwrap().total,
            0,
            "N-{n} never applied the lost command"
        );
    }
}

/// What a timer-driven election run produced: (ticks until a leader, leader, its term, every
/// event the nodes reported, the whole trace).
type ElectionRun = (u64, usize, Term, Vec<(usize, Event)>, String);

/// Runs a cluster with timers on every node (election timeout 5–10 ticks) until a leader exists,
/// moving every message after each tick.
fn timer_election() -> ElectionRun {
    let mut c = cluster(&ClusterSettings::default());
    for n in 1..=3 {
        c.set_timers(n, true, Some((5, 10))).unwrap();
    }
    for tick in 1..=200 {
        c.advance(1).unwrap();
        c.pump(None).unwrap();
        let leaders: Vec<usize> = (1..=3)
            .filter(|&n| role(&c, n) == RoleKind::Leader)
            .collect();
        assert!(
            leaders.len() <= 1,
            "two leaders at tick {tick}: {leaders:?}"
        );
        if let [leader] = leaders[..] {
            let term = c.status(leader).unwrap().unwrap().term;
            let trace = format!("{:?}", c.recorder.trace);
            return (tick, leader, term, c.events.clone(), trace);
        }
    }
    panic!("no leader after 200 ticks");
}

#[test]
fn timers_elect_a_leader_and_the_same_run_repeats_exactly() {
    let first = timer_election();
    let second = timer_election();
    assert_eq!(
        (first.0, first.1, first.2),
        (second.0, second.1, second.2),
        "same tick, same leader, same term"
    );
    assert_eq!(first.3, second.3, "same events in the same order");
    assert_eq!(first.4, second.4, "same trace");
    let (ticks, _, term, events, _) = first;
    assert!(ticks >= 5, "no election before the minimum timeout");
    assert!(term >= Term(1));
    assert!(events
        .iter()
        .any(|(_, e)| matches!(e, Event::ElectionWon { .. })));
}

#[test]
fn harness_reports_bad_node_numbers_and_crashed_nodes() {
    let mut c = cluster(&ClusterSettings::default());
    assert!(matches!(
        c.campaign(4, false),
        Err(HarnessError::NoSuchNode(4))
    ));
    assert!(matches!(c.status(0), Err(HarnessError::NoSuchNode(0))));
    c.crash(2).unwrap();
    assert!(matches!(
        c.campaign(2, false),
        Err(HarnessError::NodeDown(2))
    ));
    assert!(matches!(c.crash(2), Err(HarnessError::NodeDown(2))));
    assert!(matches!(c.restart(1, false), Err(HarnessError::NodeUp(1))));
    assert!(matches!(c.wait_result(1), Err(HarnessError::NoCommand(1))));
    assert!(matches!(
        Cluster::new(&ClusterSettings {
            nodes: 0,
            ..ClusterSettings::default()
        }),
        Err(HarnessError::Settings(_))
    ));
}

#[test]
fn minority_side_of_a_split_cannot_elect_a_leader_and_the_majority_can() {
    let mut c = cluster(&ClusterSettings::default());
    c.split(vec![vec![1], vec![2, 3]]).unwrap();
    c.campaign(1, false).unwrap();
    c.run(None).unwrap();
    assert_ne!(role(&c, 1), RoleKind::Leader);
    c.campaign(2, false).unwrap();
    c.run(Some(&Trigger::IsLeader(2))).unwrap();
    c.heal().unwrap();
    c.heartbeat(2).unwrap();
    c.run(None).unwrap();
    assert_eq!(role(&c, 2), RoleKind::Leader);
    assert_eq!(c.status(1).unwrap().unwrap().leader.map(|l| l.0), Some(2));
}
