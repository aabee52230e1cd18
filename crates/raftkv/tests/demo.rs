//! The demo end to end: three `raftkv serve` processes, the leader killed and restarted, a 4th
//! node added and the old leader removed, every acknowledged write read back from every member.

use raftkv::demo::{self, DemoArgs};
use std::path::PathBuf;

/// The `raftkv` binary Cargo built for these tests.
fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftkv"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_survives_leader_failure_without_losing_acknowledged_writes() {
    let args = DemoArgs {
        before_kill: 1.5,
        after_failover: 1.0,
        clients: 3,
        keys: 32,
        no_progress: true,
        server_bin: Some(server_bin()),
        ..DemoArgs::default()
    };
    let summary = match demo::run(args).await {
        Ok(summary) => summary,
        Err(error) => panic!("demo failed: {error}"),
    };
    assert!(summary.passed());
    assert!(summary.writes_acked > 0);
    assert!(summary.keys_verified > 0);
    assert_ne!(summary.first_leader.0, summary.new_leader.0);
    assert!(summary.new_leader.1 > summary.first_leader.1);
    assert!(summary.writes_resumed.is_some());
    let (added, _) = summary.added.expect("a node was added");
    assert_eq!(added, 4);
    let (removed, _) = summary.removed.expect("a node was removed");
    assert_eq!(removed, summary.killed_leader.0);
    assert_eq!(summary.final_members.len(), 3);
    assert!(summary.final_members.contains(&4));
    assert!(!summary.final_members.contains(&removed));
}
