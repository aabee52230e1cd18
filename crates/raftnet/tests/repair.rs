//! Protocol-aware recovery in the runtime: a node whose log lost synced data (a lying disk)
//! neither votes nor counts until a leader has repaired it, so a second fault cannot lose an
//! acknowledged write.

mod common;

use common::scenarios::{lost_synced_entries_are_repaired_before_voting, untuned};

/// The scenario is in `common::scenarios`; `tests/mutations.rs` runs it with
/// `Mutation::IgnoreDataLoss` (the node votes as if nothing was lost) and sees it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_disk_and_a_second_fault_lose_no_acknowledged_write() {
    common::init_tracing();
    let root = tempfile::tempdir().expect("temp dir");
    let outcome = lost_synced_entries_are_repaired_before_voting(root.path(), untuned).await;
    assert_eq!(outcome, Ok(()));
}
