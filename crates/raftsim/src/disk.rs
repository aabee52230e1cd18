//! A simulated disk: writes land in a volatile cache and become durable only when synced, so a
//! crash loses exactly what a real disk would lose. The harness syncs at once by default; with
//! `disk N-k manual` a node's writes wait for an explicit `sync N-k`.

use raftengine::{Entry, LogIndex, LogStorage, LogWrite, MemoryStorage, StorageError, StoredState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every batch is synced as soon as it is written (an infinitely fast disk).
    #[default]
    Immediate,
    /// Batches wait in the cache until the scenario says `sync`.
    Manual,
}

#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    /// What the node would read back now (the OS page cache).
    cache: MemoryStorage,
    /// What survives a crash.
    durable: MemoryStorage,
    unsynced: Vec<LogWrite>,
    pub mode: SyncMode,
}

impl SimDisk {
    /// The durable contents (what a restart would load).
    pub fn durable(&self) -> &MemoryStorage {
        &self.durable
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Power loss: unsynced writes are gone.
    pub fn crash(&mut self) {
        self.cache = self.durable.clone();
        self.unsynced.clear();
    }

    /// The disk lied: synced entries from `from` on are gone too (call after a crash).
    pub fn lose_entries_from(&mut self, from: LogIndex) {
        self.durable.lose_entries_from(from);
        self.cache = self.durable.clone();
    }

    /// A replaced, empty disk.
    pub fn wipe(&mut self) {
        let mode = self.mode;
        *self = SimDisk::default();
        self.mode = mode;
    }
}

impl LogStorage for SimDisk {
    /// What the process sees now; after [`SimDisk::crash`] that is exactly the durable part.
    fn load(&self) -> Result<StoredState, StorageError> {
        self.cache.load()
    }

    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        self.cache.write(writes)?;
        self.unsynced.extend_from_slice(writes);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let writes = std::mem::take(&mut self.unsynced);
        self.durable.write(&writes)
    }

    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        LogStorage::entries(&self.cache, from, to)
    }

    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        self.cache.mark_broken(reason)?;
        self.durable.mark_broken(reason)
    }

    fn clear_broken(&mut self) -> Result<(), StorageError> {
        self.cache.clear_broken()?;
        self.durable.clear_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftengine::conformance::check_log_storage;

    #[test]
    fn conforms() {
        check_log_storage(SimDisk::default, |disk| disk).expect("SimDisk conforms");
    }

    #[test]
    fn a_crash_loses_unsynced_writes_only() {
        let entry = |i| Entry {
            term: raftengine::Term(1),
            index: LogIndex(i),
            payload: raftengine::EntryPayload::TermStart,
        };
        let mut disk = SimDisk::default();
        disk.write(&[LogWrite::Append(vec![entry(1)])]).unwrap();
        disk.sync().unwrap();
        disk.write(&[LogWrite::Append(vec![entry(2)])]).unwrap();
        assert_eq!(
            LogStorage::entries(&disk, LogIndex(1), LogIndex(9))
                .unwrap()
                .len(),
            2
        );
        disk.crash();
        assert_eq!(disk.load().unwrap().entries, vec![entry(1)]);
        assert!(!disk.has_unsynced());
    }
}
