//! A node on the application's own log storage (`Node::start_with_storage`): a store that passes
//! the conformance suite runs a 3-node cluster, and a node restarted on what its store kept
//! comes back with its log and catches up.

mod common;

use common::Journal;
use common::{bind_nodes, handles, leader_among, node_config, read_all, wait_status, write_acked};
use raftengine::conformance::check_log_storage;
use raftengine::{Entry, LogIndex, LogStorage, LogWrite, MemoryStorage, StorageError, StoredState};
use raftnet::runtime::Node;
use std::sync::{Arc, Mutex, MutexGuard};

/// A store whose contents outlive the node using it (as a database on disk would): clones share
/// one `MemoryStorage`, so a restarted node opens what the stopped one persisted.
#[derive(Clone, Default)]
struct SharedStore(Arc<Mutex<MemoryStorage>>);

impl SharedStore {
    fn inner(&self) -> MutexGuard<'_, MemoryStorage> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogStorage for SharedStore {
    fn load(&self) -> Result<StoredState, StorageError> {
        LogStorage::load(&*self.inner())
    }

    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        LogStorage::write(&mut *self.inner(), writes)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        LogStorage::sync(&mut *self.inner())
    }

    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        LogStorage::entries(&*self.inner(), from, to)
    }

    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        LogStorage::mark_broken(&mut *self.inner(), reason)
    }

    fn clear_broken(&mut self) -> Result<(), StorageError> {
        LogStorage::clear_broken(&mut *self.inner())
    }
}

#[test]
fn the_shared_store_passes_the_conformance_suite() {
    // Reopening keeps what was synced: a clone of the same store.
    check_log_storage(SharedStore::default, |store| store.clone()).expect("SharedStore conforms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_on_custom_storage_and_a_node_restarts_from_it() {
    common::init_tracing();
    let root = tempfile::tempdir().unwrap();
    let (addrs, listeners) = bind_nodes(3).await;
    let stores: Vec<SharedStore> = (0..3).map(|_| SharedStore::default()).collect();
    let mut nodes = std::collections::BTreeMap::new();
    for (id, listener) in listeners {
        let store = stores[id as usize - 1].clone();
        let node = Node::start_with_storage(
            node_config(id, &addrs, root.path(), 0),
            listener,
            Box::new(store),
            Journal::default(),
        )
        .await
        .expect("a node starts on custom storage");
        nodes.insert(id, node);
    }
    let leader = leader_among(&handles(&nodes)).await;
    let mut acked = Vec::new();
    for n in 0..10 {
        let handle = nodes[&leader].handle();
        acked.push(
            write_acked(&handle, format!("c{n}").as_bytes())
                .await
                .unwrap(),
        );
    }

    // A follower stops; its store keeps the log; it restarts on it, on the same port.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let kept = stores[follower as usize - 1].load().unwrap();
    assert!(
        kept.entries.len() >= 10,
        "the store holds the log: {} entries",
        kept.entries.len()
    );
    nodes.remove(&follower).unwrap().shutdown().await;
    let handle = nodes[&leader].handle();
    acked.push(write_acked(&handle, b"while it was down").await.unwrap());
    let listener = tokio::net::TcpListener::bind(addrs[&raftengine::NodeId(follower)])
        .await
        .expect("the port again");
    let restarted = Node::start_with_storage(
        node_config(follower, &addrs, root.path(), 0),
        listener,
        Box::new(stores[follower as usize - 1].clone()),
        Journal::default(),
    )
    .await
    .expect("the follower restarts from its store");
    let leader_commit = nodes[&leader].handle().status().commit_index;
    wait_status(
        "the restarted follower catching up",
        &restarted.handle(),
        |s| s.applied_index >= leader_commit,
    )
    .await;
    let applied = read_all(&restarted.handle()).await;
    for command in &acked {
        assert!(
            applied.contains(command),
            "{command:?} applied after the restart"
        );
    }
    restarted.shutdown().await;
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
