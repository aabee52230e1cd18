//! A `LogStorage` of your own, checked by raftengine's conformance suite.
//!
//! Run with `cargo run -p raftengine --example custom_log_store`.
//!
//! `JournalStore` keeps a journal: every accepted `LogWrite` is appended to it, and opening the
//! store replays the journal into an in-memory view. The journal stands in for a file: a
//! real store would append each record to a file, `fsync` it in `sync`, and read it back in
//! `open`. Here the "file" is a `Vec` that survives a simulated restart (`JournalStore::restart`),
//! and `sync` is what moves records into it: writes that were never synced are lost on a
//! restart, as they would be on a crash.
//!
//! The suite (`raftengine::conformance::check_log_storage`) runs a dozen cases — appends,
//! truncations, purges, the broken marker, unsynced reads, restarts, random operations — and
//! compares the store with the reference `MemoryStorage` after each step.

use raftengine::conformance::check_log_storage;
use raftengine::{
    DataLoss, Entry, HardState, LogId, LogIndex, LogStorage, LogWrite, StorageError, StoredState,
};

/// What survives a restart: the synced journal and the broken marker.
#[derive(Debug, Default)]
struct Disk {
    journal: Vec<LogWrite>,
    broken: Option<String>,
}

/// The state the journal describes, rebuilt by replaying it.
#[derive(Debug, Default)]
struct View {
    hard_state: HardState,
    /// The last purged entry (index 0: nothing purged).
    start: LogId,
    /// The entries after `start`, in index order.
    entries: Vec<Entry>,
    commit: LogIndex,
    repair_epoch: u64,
    repairing: bool,
}

impl View {
    fn last_index(&self) -> LogIndex {
        LogIndex(self.start.index.0 + self.entries.len() as u64)
    }

    /// Checks one write against the log and applies it; a refused write changes nothing.
    /// Replaying the journal at open goes through here too.
    fn apply(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        match write {
            LogWrite::HardState(hard_state) => self.hard_state = *hard_state,
            LogWrite::Append(entries) => {
                let next = self.last_index().0 + 1;
                if let Some((i, entry)) = entries
                    .iter()
                    .enumerate()
                    .find(|(i, e)| e.index.0 != next + *i as u64)
                {
                    return Err(StorageError::Corrupt(format!(
                        "append of index {} where {} was expected",
                        entry.index,
                        next + i as u64
                    )));
                }
                self.entries.extend(entries.iter().cloned());
            }
            LogWrite::TruncateFrom(from) => {
                if *from <= self.start.index {
                    return Err(StorageError::Corrupt(format!(
                        "truncation from {from} reaches into the purged prefix (through {})",
                        self.start.index
                    )));
                }
                let keep = (from.0 - self.start.index.0 - 1) as usize;
                self.entries.truncate(keep);
            }
            LogWrite::Purge { through, term } => {
                if *through > self.start.index {
                    let purged = (through.0 - self.start.index.0) as usize;
                    // A purge may go past the last entry (a snapshot ahead of the log).
                    self.entries.drain(..purged.min(self.entries.len()));
                    self.start = LogId {
                        index: *through,
                        term: *term,
                    };
                }
            }
            LogWrite::Commit(index) => self.commit = self.commit.max(*index),
            LogWrite::Repair { epoch, repairing } => {
                self.repair_epoch = *epoch;
                self.repairing = *repairing;
            }
        }
        Ok(())
    }
}

/// A journal-backed log store.
#[derive(Debug)]
struct JournalStore {
    disk: Disk,
    /// Accepted writes not yet synced into `disk.journal`.
    unsynced: Vec<LogWrite>,
    /// The journal plus the unsynced writes, replayed.
    view: View,
}

impl JournalStore {
    /// Opens a store on `disk`, replaying its journal.
    fn open(disk: Disk) -> JournalStore {
        let mut view = View::default();
        for write in &disk.journal {
            view.apply(write)
                .expect("the journal holds only writes that were accepted");
        }
        JournalStore {
            disk,
            unsynced: Vec::new(),
            view,
        }
    }

    /// A process restart: what was not synced is gone; the journal is replayed.
    fn restart(self) -> JournalStore {
        JournalStore::open(self.disk)
    }
}

impl LogStorage for JournalStore {
    fn load(&self) -> Result<StoredState, StorageError> {
        if let Some(reason) = &self.disk.broken {
            return Err(StorageError::Broken(reason.clone()));
        }
        Ok(StoredState {
            hard_state: self.view.hard_state,
            log_start: self.view.start,
            entries: self.view.entries.clone(),
            commit: self.view.commit,
            repair_epoch: self.view.repair_epoch,
            // A restart in the middle of a repair must go on repairing. (This store never
            // detects lost data itself: a store that can — a short file, a bad checksum —
            // reports it here with its own reason.) The reason matches MemoryStorage's, since
            // the suite compares the two.
            data_loss: self.view.repairing.then(|| DataLoss {
                reason: "a repair after lost data was under way when the node stopped".into(),
            }),
        })
    }

    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        for write in writes {
            if let LogWrite::Append(entries) = write {
                // The entries before a gap stay appended (as in the reference store), so they
                // are journaled as a write of their own; the rest is refused.
                let next = self.view.last_index().0 + 1;
                let fit = entries
                    .iter()
                    .enumerate()
                    .take_while(|(i, e)| e.index.0 == next + *i as u64)
                    .count();
                if fit < entries.len() {
                    if fit > 0 {
                        let prefix = LogWrite::Append(entries[..fit].to_vec());
                        self.view.apply(&prefix)?;
                        self.unsynced.push(prefix);
                    }
                    return self.view.apply(&LogWrite::Append(entries[fit..].to_vec()));
                }
            }
            // Checked and applied to the view; durable at the next sync.
            self.view.apply(write)?;
            self.unsynced.push(write.clone());
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        // A real store: write the records to its file and fdatasync it.
        self.disk.journal.append(&mut self.unsynced);
        Ok(())
    }

    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        let first = from.max(LogIndex(self.view.start.index.0 + 1));
        let last = to.min(self.view.last_index());
        Ok(self
            .view
            .entries
            .iter()
            .filter(|e| e.index >= first && e.index <= last)
            .cloned()
            .collect())
    }

    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        // Durable at once: a real store writes and syncs a marker file.
        self.disk.broken = Some(reason.to_string());
        Ok(())
    }

    fn clear_broken(&mut self) -> Result<(), StorageError> {
        self.disk.broken = None;
        Ok(())
    }
}

fn main() {
    match check_log_storage(
        || JournalStore::open(Disk::default()),
        JournalStore::restart,
    ) {
        Ok(()) => println!("JournalStore passes the LogStorage conformance suite"),
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(1);
        }
    }
}
