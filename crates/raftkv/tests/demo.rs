//! The demo end to end: three `raftkv serve` processes, the leader killed and restarted, every
//! acknowledged write read back from every node.

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
}
