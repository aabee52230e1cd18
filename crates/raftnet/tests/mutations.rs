//! The runtime tests catch known defects: with each put back (a `RuntimeMutation`, or the core's
//! `raftengine::Mutation`), its scenario fails; with none, the same scenario passes. Run with
//! `cargo test -p raftnet --features mutations --test mutations`.
#![cfg(feature = "mutations")]

mod common;

use common::scenarios::{
    lost_synced_entries_are_repaired_before_voting, removed_node_added_back_serves_clients,
    restart_without_peers_keeps_the_saved_voters, untuned, Tune,
};
use raftengine::Mutation;
use raftnet::runtime::{NodeConfig, RuntimeMutation};
use std::future::Future;
use std::path::Path;
use tempfile::TempDir;

/// Runs `scenario` with `mutation` switched on (it must fail) and off (it must pass), each in
/// one of `dirs`.
async fn caught<'a, F, Fut>(name: &str, mutation: Tune, scenario: F, dirs: &'a [TempDir; 2])
where
    F: Fn(&'a Path, Tune) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let failed = scenario(dirs[0].path(), mutation).await;
    eprintln!("{name} with its mutation: {failed:?}");
    assert!(failed.is_err(), "{name}: the mutation went unnoticed");
    assert_eq!(
        scenario(dirs[1].path(), untuned).await,
        Ok(()),
        "{name} without a mutation"
    );
}

fn temp_dirs() -> [TempDir; 2] {
    [0, 1].map(|_| tempfile::tempdir().expect("temp dir"))
}

fn bootstrap_record_not_saved(config: &mut NodeConfig) {
    config.mutation = Some(RuntimeMutation::BootstrapRecordNotSaved);
}

fn removed_forever(config: &mut NodeConfig) {
    config.raft.mutation = Some(Mutation::RemovedForever);
}

fn ignore_data_loss(config: &mut NodeConfig) {
    config.raft.mutation = Some(Mutation::IgnoreDataLoss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_peers_catches_the_unsaved_bootstrap_record() {
    caught(
        "restart_without_peers_keeps_the_saved_voters",
        bootstrap_record_not_saved,
        restart_without_peers_keeps_the_saved_voters,
        &temp_dirs(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_back_catches_a_core_that_keeps_it_removed() {
    caught(
        "removed_node_added_back_serves_clients",
        removed_forever,
        removed_node_added_back_serves_clients,
        &temp_dirs(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_disk_catches_a_core_that_ignores_data_loss() {
    caught(
        "lost_synced_entries_are_repaired_before_voting",
        ignore_data_loss,
        lost_synced_entries_are_repaired_before_voting,
        &temp_dirs(),
    )
    .await;
}
