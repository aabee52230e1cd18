//! Three real nodes on loopback TCP with durable logs in temp directories: election, writes at any
//! node (forwarded to the leader), linearizable reads, leader shutdown and re-election, restart
//! and catch-up. Waits are bounded by timeouts; nothing sleeps for correctness.

mod common;

use common::{leader_among, read_all, start, start_cluster, write, Journal};
use raftengine::NodeId;
use raftnet::runtime::{ClientError, NodeHandle};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_elects_replicates_survives_its_leader_and_catches_up_a_restarted_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let handles: Vec<(u64, NodeHandle<Journal>)> =
        nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    let leader = leader_among(&handles).await;

    // Writes at every node: followers forward to the leader.
    for i in 0..30 {
        let (_, h) = &handles[i % 3];
        write(h, format!("w{i}").as_bytes()).await.expect("write");
    }
    let rejected = handles[0].1.write(b"reject me".to_vec()).await;
    assert_eq!(
        rejected,
        Err(ClientError::Rejected("rejected on purpose".into()))
    );
    for (_, h) in &handles {
        assert_eq!(
            read_all(h).await.len(),
            30,
            "a linearizable read sees every write"
        );
    }

    // The leader goes away; the others elect a new one and keep taking writes.
    let old = nodes.remove(&leader).expect("leader node");
    old.shutdown().await;
    let rest: Vec<(u64, NodeHandle<Journal>)> = handles
        .iter()
        .filter(|(id, _)| *id != leader)
        .cloned()
        .collect();
    let new_leader = leader_among(&rest).await;
    assert_ne!(new_leader, leader);
    for i in 30..40 {
        write(&rest[i % 2].1, format!("w{i}").as_bytes())
            .await
            .expect("write after failover");
    }

    // The old leader restarts from its data directory and catches up.
    let listener = TcpListener::bind(addrs[&NodeId(leader)])
        .await
        .expect("rebind");
    let back = start(leader, &addrs, listener, root.path(), 0).await;
    let h = back.handle();
    let all = read_all(&h).await;
    let expected: Vec<Vec<u8>> = (0..40).map(|i| format!("w{i}").into_bytes()).collect();
    assert_eq!(
        all, expected,
        "the restarted node has every acknowledged write, in order"
    );
    let status = h.wait_for(|s| s.durable_index >= 40).await;
    assert!(
        status.durable_index >= 40,
        "its own log is durable again: {status:?}"
    );
    back.shutdown().await;
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_compacted_entries_catches_up_from_a_snapshot() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, mut nodes) = start_cluster(root.path(), 3, 10).await;
    let handles: Vec<(u64, NodeHandle<Journal>)> =
        nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    let leader = leader_among(&handles).await;
    let absent = (1..=3).find(|id| *id != leader).expect("a follower");
    nodes.remove(&absent).expect("node").shutdown().await;
    let rest: Vec<(u64, NodeHandle<Journal>)> = handles
        .iter()
        .filter(|(id, _)| *id != absent)
        .cloned()
        .collect();
    for i in 0..60 {
        write(&rest[i % 2].1, format!("s{i}").as_bytes())
            .await
            .expect("write");
    }
    // The leader has compacted entries the absent node never received: it gets a snapshot.
    let snapshots = root.path().join(format!("node-{leader}/snapshots"));
    let files = std::fs::read_dir(&snapshots).expect("snapshot dir").count();
    assert!(files > 0, "the leader wrote snapshot files");
    let listener = TcpListener::bind(addrs[&NodeId(absent)])
        .await
        .expect("rebind");
    let back = start(absent, &addrs, listener, root.path(), 10).await;
    let expected: Vec<Vec<u8>> = (0..60).map(|i| format!("s{i}").into_bytes()).collect();
    assert_eq!(read_all(&back.handle()).await, expected);
    back.shutdown().await;
    // And it restarts from its own snapshot plus log.
    let listener = TcpListener::bind(addrs[&NodeId(absent)])
        .await
        .expect("rebind");
    let again = start(absent, &addrs, listener, root.path(), 10).await;
    assert_eq!(read_all(&again.handle()).await, expected);
    again.shutdown().await;
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

/// A follower's subscription to its status wakes when the leader it knows changes: the old
/// leader stops, and the subscriber sees a new leader without polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_subscription_sees_the_leader_change() {
    common::init_tracing();
    let root = tempfile::tempdir().unwrap();
    let (_addrs, mut nodes) = start_cluster(root.path(), 3, 0).await;
    let handles = common::handles(&nodes);
    let leader = leader_among(&handles).await;
    let follower = handles
        .iter()
        .find(|(id, _)| *id != leader)
        .unwrap()
        .1
        .clone();
    common::wait_status("the follower knowing the leader", &follower, |s| {
        s.leader == Some(leader)
    })
    .await;
    let mut statuses = follower.subscribe();
    statuses.borrow_and_update();
    nodes.remove(&leader).unwrap().shutdown().await;
    let changed = tokio::time::timeout(common::WAIT, async {
        loop {
            statuses.changed().await.expect("the follower runs");
            let status = statuses.borrow_and_update().clone();
            if status.leader.is_some_and(|l| l != leader) {
                return status;
            }
        }
    })
    .await
    .expect("a new leader within the bound");
    assert_ne!(changed.leader, Some(leader));
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
