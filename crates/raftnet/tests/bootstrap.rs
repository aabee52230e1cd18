//! A node's voters come from one place: its id and peers on the first start, then the cluster
//! record its data directory keeps. An operator's slip (no peers on a restart, peers set after
//! `NodeConfig::new`) can no longer make a node lead alone.

mod common;

use common::scenarios::{restart_without_peers_keeps_the_saved_voters, untuned};
use common::{
    bind_nodes, handles, leader_among, node_config, read_all, start_cluster, write, Addrs, Journal,
};
use raftengine::NodeId;
use raftnet::runtime::{BootstrapError, Node, NodeConfig, NodeError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tokio::net::TcpListener;

/// Node `id`'s configuration with the given peers (empty: none given).
fn config_with_peers(id: u64, peers: &[u64], addrs: &Addrs, root: &Path) -> NodeConfig {
    let mut config = node_config(id, addrs, root, 0);
    config.peers = peers
        .iter()
        .map(|p| (NodeId(*p), addrs[&NodeId(*p)]))
        .collect();
    config
}

async fn restart(config: NodeConfig, addrs: &Addrs) -> Result<Node<Journal>, NodeError> {
    let listener = TcpListener::bind(addrs[&config.id]).await.expect("rebind");
    Node::start(config, listener, Journal::default()).await
}

fn voters(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().map(|id| NodeId(*id)).collect()
}

/// The scenario lives in `common::scenarios`, where `tests/mutations.rs` also runs it with the
/// record's defect put back (`RuntimeMutation::BootstrapRecordNotSaved`) and sees it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_without_peers_uses_the_saved_voters() {
    let root = tempfile::tempdir().expect("temp dir");
    let outcome = restart_without_peers_keeps_the_saved_voters(root.path(), untuned).await;
    assert_eq!(outcome, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_contradicting_settings_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, nodes) = start_cluster(root.path(), 3, 0).await;
    for (_, node) in nodes {
        node.shutdown().await;
    }
    let fewer = restart(config_with_peers(1, &[2], &addrs, root.path()), &addrs).await;
    assert!(
        matches!(
            fewer,
            Err(NodeError::Bootstrap(BootstrapError::Voters { .. }))
        ),
        "{:?}",
        fewer.err()
    );
    let mut other = config_with_peers(1, &[2, 3], &addrs, root.path());
    other.cluster_id = 8;
    let other = restart(other, &addrs).await;
    assert!(
        matches!(
            other,
            Err(NodeError::Bootstrap(BootstrapError::ClusterId {
                saved: 7,
                given: 8
            }))
        ),
        "{:?}",
        other.err()
    );
    let mut join = config_with_peers(1, &[2, 3], &addrs, root.path());
    join.join = true;
    let join = restart(join, &addrs).await;
    assert!(
        matches!(
            join,
            Err(NodeError::Bootstrap(BootstrapError::JoinAfterNewCluster))
        ),
        "{:?}",
        join.err()
    );
    // The same settings as the first start still work.
    let same = restart(config_with_peers(1, &[2, 3], &addrs, root.path()), &addrs)
        .await
        .expect("the same settings");
    same.shutdown().await;
}

/// The misuse of the review: peers set after `NodeConfig::new`. Voters used to be computed in
/// `new`, so each node was the only voter of its own cluster and all three took writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_set_after_new_make_one_three_node_cluster() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, listeners) = bind_nodes(3).await;
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = root.path().join(format!("node-{id}"));
        let mut config = NodeConfig::new(NodeId(id), 7, BTreeMap::new(), dir);
        config.peers = addrs
            .iter()
            .filter(|(n, _)| n.0 != id)
            .map(|(n, a)| (*n, *a))
            .collect();
        let node = Node::start(config, listener, Journal::default())
            .await
            .expect("start");
        nodes.insert(id, node);
    }
    let all = handles(&nodes);
    leader_among(&all).await;
    for (id, h) in &all {
        assert_eq!(
            h.status().membership.voters,
            voters(&[1, 2, 3]),
            "node {id}"
        );
    }
    write(&all[0].1, b"one cluster").await.expect("write");
    let leaders = all
        .iter()
        .filter(|(_, h)| h.status().role == "leader")
        .count();
    assert_eq!(leaders, 1);
    for (_, h) in &all {
        assert_eq!(read_all(h).await, vec![b"one cluster".to_vec()]);
    }
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
