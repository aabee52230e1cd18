//! Membership changes, leadership transfer and snapshots on `raftkv serve` processes, driven the
//! way an operator would: `raftkv cluster ...` (the binary) and the admin HTTP API, while a
//! writer keeps writing. A 4th node joins (`--join`), becomes a learner, then a voter, and is
//! removed again; leadership moves to a chosen node; a new node catches up from a snapshot.
//! After each, every acknowledged write is on every member.
//!
//! Every wait is bounded and polls; nothing sleeps for correctness.

#[path = "server/processes.rs"]
mod processes;

use processes::{check_acked_on, info, start_cluster, writes_go_on, Writer, BIN, WAIT};
use raftkv::admin_client::{self, AdminClientError, ClusterRequest, ClusterView, SnapshotView};
use raftkv::client::{Client, ClientConfig};
use raftkv::demo::LocalCluster;
use std::time::Duration;
use tokio::time::Instant;

/// Runs `raftkv cluster ARGS --admin ADMINS`; returns stdout, failing the test on a non-zero exit.
async fn cluster_cli(args: &[&str], admins: &[String]) -> String {
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .arg("cluster")
            .args(args)
            .args(["--admin", &admins.join(","), "--timeout", "15"])
            .output(),
    )
    .await
    .expect("raftkv cluster ends in time")
    .expect("run raftkv cluster");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "raftkv cluster {args:?} failed ({}): {stderr}{stdout}",
        output.status
    );
    stdout
}

async fn show(admin: &str) -> ClusterView {
    admin_client::send(admin, &ClusterRequest::Show, WAIT)
        .await
        .expect("GET /cluster")
}

/// Polls node `admin`'s view until `ready` holds.
async fn wait_view(what: &str, admin: &str, ready: impl Fn(&ClusterView) -> bool) -> ClusterView {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(view) = admin_client::send(admin, &ClusterRequest::Show, WAIT).await {
            if ready(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{what}: {view:?}");
        }
        assert!(Instant::now() < deadline, "{what}: no answer from {admin}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn admins(cluster: &LocalCluster, indexes: &[usize]) -> Vec<String> {
    indexes
        .iter()
        .map(|&i| cluster.nodes()[i].admin_addr.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_under_write_load_and_is_removed_again() {
    let mut cluster = start_cluster(&[]).await;
    cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let writer = Writer::start(&cluster);
    writes_go_on(&cluster, 0, 50).await;

    let four = cluster.add_node(None).await.expect("node 4 starts");
    let raft4 = cluster.nodes()[four].raft_addr.to_string();
    let admin4 = cluster.nodes()[four].admin_addr.to_string();
    // Not a member yet: it knows no configuration.
    assert!(show(&admin4).await.members.is_empty());
    // Any member takes the change (a follower forwards it); the first admin may be a follower.
    let members = admins(&cluster, &[0, 1, 2]);
    let out = cluster_cli(&["add-learner", "4", &raft4], &members).await;
    assert!(out.starts_with("node 4 added as a learner"), "{out}");
    let view = wait_view("node 4 sees itself a learner", &admin4, |v| {
        v.learners == [4] && v.committed
    })
    .await;
    assert_eq!(view.voters, [1, 2, 3]);
    writes_go_on(&cluster, four, 50).await;

    // Promotion: the address is known already.
    let out = cluster_cli(&["add", "4"], &members).await;
    assert!(out.starts_with("node 4 is a voter"), "{out}");
    assert!(
        out.contains("127.0.0.1"),
        "the table lists addresses: {out}"
    );
    wait_view("node 4 sees itself a voter", &admin4, |v| {
        v.voters == [1, 2, 3, 4]
    })
    .await;
    writes_go_on(&cluster, four, 50).await;
    // What was acknowledged so far is on node 4 too.
    let checkpoint = info(&cluster, 0).await.commit_index;
    let deadline = Instant::now() + WAIT;
    while info(&cluster, four).await.applied_index < checkpoint {
        assert!(Instant::now() < deadline, "node 4 catches up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Removed again, through node 4's own admin port (it forwards to the leader).
    let out = cluster_cli(&["remove", "4"], std::slice::from_ref(&admin4)).await;
    assert!(out.starts_with("node 4 removed"), "{out}");
    let view = wait_view("node 4 learns of its removal", &admin4, |v| v.removed).await;
    assert!(!view.voters.contains(&4));
    writes_go_on(&cluster, 0, 50).await;
    cluster.stop(four, Duration::from_secs(5)).await;
    writes_go_on(&cluster, 0, 50).await;

    let outcomes = writer.finish().await;
    for index in 0..3 {
        check_acked_on(&cluster, index, &outcomes.acked).await;
    }
    cluster.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_chosen_node_under_write_load() {
    let mut cluster = start_cluster(&[]).await;
    let (leader, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let target = (leader + 1) % 3;
    let target_id = cluster.nodes()[target].id;
    let writer = Writer::start(&cluster);
    writes_go_on(&cluster, leader, 50).await;

    // Followers answer 421 (not the leader); the CLI moves on to the next address.
    let all = admins(&cluster, &[target, (leader + 2) % 3, leader]);
    let out = cluster_cli(&["transfer-leader", &target_id.to_string()], &all).await;
    assert!(
        out.starts_with(&format!("node {target_id} leads now")),
        "{out}"
    );
    let (now, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    assert_eq!(now, target, "the chosen node leads");
    // Only the leader transfers: a follower names it.
    wait_view("the other follower follows the new leader", &all[1], |v| {
        v.leader == Some(target_id)
    })
    .await;
    let back = ClusterRequest::TransferLeader {
        id: cluster.nodes()[leader].id,
    };
    match admin_client::send::<ClusterView>(&all[1], &back, WAIT).await {
        Err(AdminClientError::Refused { status, error, .. }) => {
            assert_eq!(status, 421, "{error:?}");
            assert_eq!(error.leader, Some(target_id));
        }
        other => panic!("expected a 421 from a follower, got {other:?}"),
    }
    writes_go_on(&cluster, target, 50).await;

    let outcomes = writer.finish().await;
    for index in 0..3 {
        check_acked_on(&cluster, index, &outcomes.acked).await;
    }
    cluster.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_from_a_snapshot() {
    // The initial nodes snapshot (and compact their logs) every 100 entries, keeping no log
    // behind their snapshots.
    let mut cluster = start_cluster(&["--snapshot-entries", "100", "--retain-entries", "0"]).await;
    let (leader, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let writer = Writer::start(&cluster);
    writes_go_on(&cluster, leader, 300).await;
    // An explicit snapshot too, through the CLI.
    let out = cluster_cli(&["snapshot"], &admins(&cluster, &[leader])).await;
    assert!(out.contains("snapshot taken through log index"), "{out}");
    let snapshot: SnapshotView = admin_client::send(
        &cluster.nodes()[leader].admin_addr.to_string(),
        &ClusterRequest::Snapshot,
        WAIT,
    )
    .await
    .expect("POST /snapshot");
    assert!(snapshot.index >= 300, "{snapshot:?}");

    // Node 4 keeps the default policy (a snapshot per 100,000 entries): a snapshot file in its
    // directory can only be the leader's, installed because the entries it needed were gone.
    let four = cluster
        .add_node(Some(Vec::new()))
        .await
        .expect("node 4 starts");
    let raft4 = cluster.nodes()[four].raft_addr.to_string();
    let out = cluster_cli(&["add", "4", &raft4], &admins(&cluster, &[0, 1, 2])).await;
    assert!(out.starts_with("node 4 is a voter"), "{out}");
    writes_go_on(&cluster, four, 50).await;
    // The snapshot is saved by node 4's apply task, beside the raft loop that acknowledges it:
    // by now (node 4 has applied entries after it) the file is there.
    let snapshots = cluster.nodes()[four].data_dir.join("snapshots");
    let files = std::fs::read_dir(&snapshots)
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert!(files > 0, "node 4 installed the leader's snapshot");

    let outcomes = writer.finish().await;
    for index in [0, 1, 2, four] {
        check_acked_on(&cluster, index, &outcomes.acked).await;
    }
    cluster.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_requests_get_clear_errors() {
    let mut cluster = start_cluster(&[]).await;
    let (leader, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let admin = cluster.nodes()[leader].admin_addr.to_string();
    // A leader takes changes once it committed an entry of its term: a write waits for that.
    let mut client = Client::new(cluster.client_addrs(), ClientConfig::default()).expect("client");
    client.set(b"ready", b"1").await.expect("a first write");
    let status = |request: ClusterRequest| {
        let admin = admin.clone();
        async move {
            admin_client::raw(&admin, &request, WAIT)
                .await
                .expect("an answer")
        }
    };
    let (code, body) = status(ClusterRequest::AddLearner {
        id: 0,
        raft: "127.0.0.1:7000".into(),
    })
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a node id"), "{body}");
    let (code, body) = status(ClusterRequest::AddLearner {
        id: 9,
        raft: "nowhere".into(),
    })
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("HOST:PORT"), "{body}");
    // Promoting a node nobody named needs its address.
    let (code, body) = status(ClusterRequest::AddVoter { id: 9, raft: None }).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no known raft address"), "{body}");
    // Leadership cannot go to a node that is not a voter.
    let (code, body) = status(ClusterRequest::TransferLeader { id: 9 }).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a voter"), "{body}");
    // Removing a node that is not a member is a no-op that succeeds.
    let (code, body) = status(ClusterRequest::Remove { id: 9 }).await;
    assert_eq!(code, 200, "{body}");
    // The CLI exits 1 with the node's reason.
    let output = tokio::process::Command::new(BIN)
        .args([
            "cluster",
            "add-learner",
            "0",
            "127.0.0.1:7000",
            "--admin",
            &admin,
        ])
        .output()
        .await
        .expect("run raftkv cluster");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("not a node id"),
        "{stderr}"
    );
    cluster.shutdown(Duration::from_secs(5)).await;
}
