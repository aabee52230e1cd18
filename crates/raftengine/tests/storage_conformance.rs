//! The storage conformance suite: MemoryStorage passes it, and a store with a typical bug fails
//! it (so the suite can fail).

use raftengine::conformance::check_log_storage;
use raftengine::{Entry, LogIndex, LogStorage, LogWrite, MemoryStorage, StorageError, StoredState};

#[test]
fn memory_storage_conforms() {
    check_log_storage(MemoryStorage::new, |s| s).expect("MemoryStorage conforms");
}

/// Forgets the hard state on every restart, as a store that writes it without syncing would.
struct ForgetsHardState(MemoryStorage);

impl LogStorage for ForgetsHardState {
    fn load(&self) -> Result<StoredState, StorageError> {
        self.0.load()
    }
    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        self.0.write(writes)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.0.sync()
    }
    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        LogStorage::entries(&self.0, from, to)
    }
    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        self.0.mark_broken(reason)
    }
    fn clear_broken(&mut self) -> Result<(), StorageError> {
        self.0.clear_broken()
    }
}

/// Accepts an append that leaves a gap.
struct AcceptsGaps(MemoryStorage);

impl LogStorage for AcceptsGaps {
    fn load(&self) -> Result<StoredState, StorageError> {
        self.0.load()
    }
    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        // Swallow the refusal: a store that does not check appends.
        let _ = self.0.write(writes);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.0.sync()
    }
    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        LogStorage::entries(&self.0, from, to)
    }
    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        self.0.mark_broken(reason)
    }
    fn clear_broken(&mut self) -> Result<(), StorageError> {
        self.0.clear_broken()
    }
}

#[test]
fn a_store_that_loses_the_hard_state_fails() {
    let failure = check_log_storage(
        || ForgetsHardState(MemoryStorage::new()),
        |store| {
            let mut fresh = MemoryStorage::new();
            let state = store.0.load().expect("load");
            fresh
                .write(&[LogWrite::Append(state.entries)])
                .expect("rebuild the log");
            ForgetsHardState(fresh)
        },
    )
    .expect_err("the suite must catch a lost hard state");
    assert_eq!(failure.case, "hard state", "{failure}");
}

#[test]
fn a_store_that_accepts_gaps_fails() {
    let failure = check_log_storage(|| AcceptsGaps(MemoryStorage::new()), |s| s)
        .expect_err("the suite must catch an accepted gap");
    assert_eq!(failure.case, "append leaving a gap is refused", "{failure}");
}
