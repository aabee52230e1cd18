//! A node whose tasks fail stops loudly: it says why, and no longer votes, acknowledges or
//! answers writes as failed when their outcome is not known.

mod common;

use common::{
    bind_nodes, handles, leader_among, node_config, read_all, start_cluster, wait_status, write,
    write_acked, Journal,
};
use raftengine::NodeId;
use raftnet::runtime::{ClientError, Node};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpListener;

/// Replaces a node's snapshot directory by a file: every snapshot save then fails, as on a
/// full or failing disk (root ignores permissions, so `chmod` would not do).
fn break_snapshot_dir(root: &std::path::Path, id: u64) {
    let dir = root.join(format!("node-{id}")).join("snapshots");
    std::fs::remove_dir_all(&dir).expect("remove the snapshot directory");
    std::fs::write(&dir, b"not a directory").expect("a file in its place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_save_a_snapshot_stops_and_no_longer_acknowledges() {
    common::init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (_, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    for i in 0..5 {
        write(&all[0].1, format!("w{i}").as_bytes())
            .await
            .expect("write");
    }
    let followers: Vec<u64> = all
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != leader)
        .collect();
    let (broken, other) = (followers[0], followers[1]);
    let broken_handle = nodes[&broken].handle();
    break_snapshot_dir(root.path(), broken);

    let snapshot = broken_handle.trigger_snapshot().await;
    assert!(
        snapshot.is_err(),
        "the snapshot cannot be saved: {snapshot:?}"
    );
    let status = wait_status("the node to stop", &broken_handle, |s| s.stopped.is_some()).await;
    let reason = status.stopped.expect("a reason");
    assert!(reason.starts_with("snapshot save failed"), "{reason}");

    // With the other follower gone, the leader's only possible acknowledgement would come from
    // the stopped node: nothing may commit any more.
    nodes.remove(&other).expect("node").shutdown().await;
    let leader_handle = nodes[&leader].handle();
    let commit = leader_handle.status().commit_index;
    let late = tokio::time::timeout(
        Duration::from_secs(2),
        leader_handle.write(b"late".to_vec()),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "committed without a majority: {late:?}"
    );
    assert_eq!(
        leader_handle.status().commit_index,
        commit,
        "the stopped node acknowledged"
    );
    let written = broken_handle.write(b"refused".to_vec()).await;
    assert!(
        matches!(written, Err(ClientError::Stopped(_))),
        "{written:?}"
    );
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

/// The leader's state machine fails on a command the others apply: its clients hear that the
/// outcome is unknown (the command is committed), never that it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_state_machine_fails_answers_unknown_not_failed() {
    common::init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, listeners) = bind_nodes(3).await;
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        // Node 1 fails; it is made the leader below.
        let journal = Journal {
            poisoned: id == 1,
            ..Journal::default()
        };
        let config = node_config(id, &addrs, root.path(), 0);
        let node = Node::start(config, listener, journal).await.expect("start");
        nodes.insert(id, node);
    }
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    if leader != 1 {
        let moved = all[(leader - 1) as usize]
            .1
            .transfer_leadership(raftengine::NodeId(1))
            .await;
        assert_eq!(moved, Ok(raftengine::NodeId(1)));
    }
    let one = nodes[&1].handle();
    write(&one, b"before").await.expect("write");

    // Several writes at once, the poison among them.
    let writes: Vec<_> = ["a", "poison", "b", "c"]
        .iter()
        .map(|c| {
            let one = one.clone();
            tokio::spawn(async move { one.write(c.as_bytes().to_vec()).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in writes {
        outcomes.push(w.await.expect("task"));
    }
    let status = wait_status("node 1 to stop", &one, |s| s.stopped.is_some()).await;
    let reason = status.stopped.expect("a reason");
    assert!(
        reason.starts_with("state machine failed at index"),
        "{reason}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(_) | Err(ClientError::OutcomeUnknown(_)))),
        "a write handed to the core is answered or unknown: {outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Err(ClientError::OutcomeUnknown(_))),
        "{outcomes:?}"
    );

    // The others carry on, with the poison committed.
    let rest: Vec<_> = all.iter().filter(|(id, _)| *id != 1).cloned().collect();
    leader_among(&rest).await;
    write(&rest[0].1, b"after").await.expect("write after");
    let applied = read_all(&rest[0].1).await;
    assert!(applied.contains(&b"poison".to_vec()), "{applied:?}");
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

/// A follower whose disk refuses the leader's snapshot while it installs it stops loudly, and
/// restarts once the disk is fixed: the install's order (save and sync the snapshot, then purge
/// the log, then acknowledge) means a failed save leaves the log whole. (When the log was purged
/// before the snapshot was saved, the restart found a log that starts after a purged prefix
/// with no snapshot covering it, and refused to start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_cannot_save_the_leaders_snapshot_stops_and_restarts_once_fixed() {
    common::init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    // Snapshots every 20 entries, with no log kept behind them.
    let (addrs, mut nodes) = start_cluster(root.path(), 3, 20).await;
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut acked = Vec::new();
    for i in 0..30 {
        let command = format!("a{i}").into_bytes();
        acked.push(write_acked(&all[i % 3].1, &command).await.expect("write"));
    }
    nodes.remove(&follower).expect("node").shutdown().await;
    // The others go on and compact far beyond the follower's log.
    let leader_handle = nodes[&leader].handle();
    for i in 0..100 {
        let command = format!("b{i}").into_bytes();
        acked.push(write_acked(&leader_handle, &command).await.expect("write"));
    }
    let covered = leader_handle.trigger_snapshot().await.expect("snapshot");
    assert!(covered.0 > 100, "{covered:?}");
    // The others stop too, so that nothing reaches the follower before its disk fails.
    for (_, node) in std::mem::take(&mut nodes) {
        node.shutdown().await;
    }

    // The follower keeps the default snapshot policy now: the only snapshot it could save is the
    // leader's. Its directory is set aside (it holds the snapshot its log was compacted behind)
    // and a file put in its place.
    let restart = |id: u64, every: u64| {
        let addrs = addrs.clone();
        let root = root.path().to_path_buf();
        async move {
            let listener = TcpListener::bind(addrs[&NodeId(id)]).await.expect("rebind");
            Node::start(
                node_config(id, &addrs, &root, every),
                listener,
                Journal::default(),
            )
            .await
            .expect("the node restarts")
        }
    };
    let broken = restart(follower, 0).await;
    let snapshots = root.path().join(format!("node-{follower}/snapshots"));
    let aside = snapshots.with_extension("aside");
    std::fs::rename(&snapshots, &aside).expect("set the directory aside");
    std::fs::write(&snapshots, b"not a directory").expect("a file in its place");
    for id in (1..=3).filter(|id| *id != follower) {
        nodes.insert(id, restart(id, 20).await);
    }
    let status = wait_status("the follower to stop", &broken.handle(), |s| {
        s.stopped.is_some()
    })
    .await;
    let reason = status.stopped.expect("a reason");
    assert!(
        reason.starts_with("snapshot install failed: could not save the leader's snapshot"),
        "{reason}"
    );
    broken.shutdown().await;

    // Fixed: the follower restarts from what its disk holds and catches up.
    std::fs::remove_file(&snapshots).expect("remove the file");
    std::fs::rename(&aside, &snapshots).expect("the directory back");
    nodes.insert(follower, restart(follower, 0).await);
    let all = handles(&nodes);
    let leader = leader_among(&all).await;
    acked.push(write_acked(&all[0].1, b"after").await.expect("write"));
    let commit = nodes[&leader].handle().status().commit_index;
    wait_status(
        "the follower to catch up",
        &nodes[&follower].handle(),
        |s| s.applied_index >= commit,
    )
    .await;
    for (id, handle) in &all {
        let applied = read_all(handle).await;
        for command in &acked {
            assert!(
                applied.contains(command),
                "node {id} lost {}",
                String::from_utf8_lossy(command)
            );
        }
    }
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
