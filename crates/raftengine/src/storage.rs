//! Log storage: where a driver keeps entries and hard state durably.
//!
//! The core never calls storage itself. It emits [`PersistBatch`]es in order; the driver writes each
//! batch (in order), makes it durable, then reports `persisted(seq)`. Messages that depend on the
//! batch (a vote, an append success) are held inside the core until then.

use crate::types::{Entry, HardState, LogIndex, Term};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One change to durable state, in the order it must be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogWrite {
    /// Replace the stored term and vote.
    HardState(HardState),
    /// Remove every entry from this index on (conflict repair).
    TruncateFrom(LogIndex),
    /// Add entries after the last one; the first must follow the log's last index.
    Append(Vec<Entry>),
    /// Entries up to and including `through` are covered by a snapshot whose last entry has
    /// `term`: storage may drop them. `through` may lie beyond the last entry (a follower that
    /// installs a snapshot ahead of its log); the log is then empty and continues at `through + 1`.
    Purge {
        /// The last index the snapshot covers.
        through: LogIndex,
        /// The term of the entry at `through`.
        term: Term,
    },
    /// The commit index reached `index`. Written lazily (with the next batch that writes
    /// anything else), so a restart knows at least this much is committed: it applies it at
    /// once, refuses to truncate it, and sees that data was lost if its log now ends before it.
    Commit(LogIndex),
    /// The node found data lost and repairs itself (`repairing`), or has caught up again:
    /// kept durably so that a restart in the middle of a repair does not end it. `epoch` counts
    /// the losses this node has suffered; its answers carry it, so a leader can tell them from
    /// answers sent before the loss.
    Repair {
        /// How many losses this node has suffered.
        epoch: u64,
        /// A repair is under way.
        repairing: bool,
    },
}

/// The position of an entry: its index and term.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// The entry's index.
    pub index: LogIndex,
    /// The term it was appended in.
    pub term: Term,
}

/// Writes to make durable together (group commit), identified by a sequence number that grows by
/// one per batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistBatch {
    /// The number to report to [`RaftNode::persisted`](crate::RaftNode::persisted) once every
    /// write of this batch (and of all earlier ones) is durable.
    pub seq: u64,
    /// The writes, to apply in order.
    pub writes: Vec<LogWrite>,
}

/// What a node restarts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The term and vote last written.
    pub hard_state: HardState,
    /// The last purged entry (index 0 when nothing was purged); `entries` start right after it.
    pub log_start: LogId,
    /// The stored entries, contiguous from `log_start.index + 1`.
    pub entries: Vec<Entry>,
    /// The last commit index written ([`LogWrite::Commit`]); 0 when none was.
    pub commit: LogIndex,
    /// The repair epoch last written ([`LogWrite::Repair`]); 0 when none was.
    pub repair_epoch: u64,
    /// The storage found, while loading, that data it had made durable is gone (a disk that
    /// lied about a sync, a truncated or damaged file, a replaced disk). The node may have
    /// acknowledged entries it no longer holds, so it repairs itself before it votes or counts
    /// towards any majority (see [`RaftNode::is_repairing`](crate::RaftNode::is_repairing)).
    pub data_loss: Option<DataLoss>,
}

/// Evidence that durable data was lost (see [`StoredState::data_loss`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLoss {
    /// What the storage found, for the operator (file, offset, entries lost where known).
    pub reason: String,
}

/// A failure of a [`LogStorage`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageError {
    /// A fatal failure happened earlier (for example the state machine failed in a way that is not
    /// deterministic); the data must be checked by an operator before the node may start again.
    #[error("storage is marked broken and refuses to start: {0}")]
    Broken(String),
    /// Reading or writing failed (a full disk, an I/O error); the node cannot go on.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The stored data is damaged, or a write does not fit the log.
    #[error("corrupt log: {0}")]
    Corrupt(String),
}

/// Durable home of one node's entries and hard state.
pub trait LogStorage {
    /// Everything needed to restart the node; refuses while the storage is marked broken.
    fn load(&self) -> Result<StoredState, StorageError>;
    /// Applies writes in order. They need not be durable until [`LogStorage::sync`] returns.
    /// A write that does not fit the log (an append that leaves a gap, a truncation at or below
    /// the purged prefix) is refused with [`StorageError::Corrupt`]; earlier writes of the same
    /// call stay applied.
    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError>;
    /// Makes every earlier write durable.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Entries with indexes in `from..=to`, clipped to the stored log (catch-up reads of entries
    /// the caller does not hold in memory). Entries written but not yet synced are included.
    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError>;
    /// Records that the node stopped on a fatal error, so `load` refuses until an operator clears it.
    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError>;
    /// The operator's "I checked the data" switch.
    fn clear_broken(&mut self) -> Result<(), StorageError>;

    /// Writes a batch and makes it durable: the common case for a synchronous driver.
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        self.write(&batch.writes)?;
        self.sync()
    }
}

/// Storage in memory: durable for as long as the process lives, which is what the simulator's
/// "crash" keeps (a crash loses the node's volatile state, not this).
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    hard_state: HardState,
    log_start: LogId,
    /// `entries[i]` has index `log_start.index + 1 + i`.
    entries: Vec<Entry>,
    commit: LogIndex,
    repair_epoch: u64,
    repairing: bool,
    /// Data lost on purpose by [`MemoryStorage::lose_entries_from`], reported by the next load.
    lost: Option<DataLoss>,
    broken: Option<String>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// The term and vote last written.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The stored entries (after the purged prefix).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The last purged entry (index 0 when nothing was purged).
    pub fn log_start(&self) -> LogId {
        self.log_start
    }

    /// The last commit index written.
    pub fn commit(&self) -> LogIndex {
        self.commit
    }

    /// A repair after lost data is under way, as last written ([`LogWrite::Repair`]).
    pub fn repairing(&self) -> bool {
        self.repairing || self.lost.is_some()
    }

    /// The index of the last stored entry (`log_start.index` when there are none).
    pub fn last_index(&self) -> LogIndex {
        self.log_start.index.plus(self.entries.len() as u64)
    }

    /// Position in `entries` of `index`, if it lies after the purged prefix.
    fn offset_of(&self, index: LogIndex) -> Option<usize> {
        (index > self.log_start.index).then(|| (index.0 - self.log_start.index.0 - 1) as usize)
    }

    /// Forgets every entry and the hard state (a replaced, empty disk). The next load reports
    /// the loss.
    pub fn wipe(&mut self) {
        *self = MemoryStorage {
            lost: Some(DataLoss {
                reason: "the disk was replaced: every entry and the hard state are gone".into(),
            }),
            ..MemoryStorage::default()
        };
    }

    /// Loses the entries from `from` on, though they were synced (a disk that lied, a truncated
    /// file); the hard state survives. The next load reports the loss.
    pub fn lose_entries_from(&mut self, from: LogIndex) {
        let Some(keep) = self.offset_of(from) else {
            return;
        };
        if keep >= self.entries.len() {
            return;
        }
        let lost = self.entries.len() - keep;
        self.entries.truncate(keep);
        self.lost = Some(DataLoss {
            reason: format!(
                "{lost} synced entries from index {from} on are gone; the log ends at {}",
                self.last_index()
            ),
        });
    }
}

impl LogStorage for MemoryStorage {
    fn load(&self) -> Result<StoredState, StorageError> {
        if let Some(reason) = &self.broken {
            return Err(StorageError::Broken(reason.clone()));
        }
        Ok(StoredState {
            hard_state: self.hard_state,
            log_start: self.log_start,
            entries: self.entries.clone(),
            commit: self.commit,
            repair_epoch: self.repair_epoch,
            data_loss: self.lost.clone().or_else(|| {
                self.repairing.then(|| DataLoss {
                    reason: "a repair after lost data was under way when the node stopped".into(),
                })
            }),
        })
    }

    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        for write in writes {
            match write {
                LogWrite::HardState(hs) => self.hard_state = *hs,
                LogWrite::TruncateFrom(index) => {
                    let Some(keep) = self.offset_of(*index) else {
                        return Err(StorageError::Corrupt(format!(
                            "truncation from index {index} reaches into the purged prefix (through {})",
                            self.log_start.index
                        )));
                    };
                    self.entries.truncate(keep);
                }
                LogWrite::Append(entries) => {
                    for e in entries {
                        if e.index != self.last_index().next() {
                            return Err(StorageError::Corrupt(format!(
                                "append of index {} after last index {}",
                                e.index,
                                self.last_index()
                            )));
                        }
                        self.entries.push(e.clone());
                    }
                }
                LogWrite::Commit(index) => self.commit = self.commit.max(*index),
                LogWrite::Repair { epoch, repairing } => {
                    self.repair_epoch = *epoch;
                    self.repairing = *repairing;
                    // The loss is recorded as a repair now (or the repair is over).
                    self.lost = None;
                }
                LogWrite::Purge { through, term } => {
                    if *through <= self.log_start.index {
                        continue;
                    }
                    let drop =
                        ((through.0 - self.log_start.index.0) as usize).min(self.entries.len());
                    self.entries.drain(..drop);
                    self.log_start = LogId {
                        index: *through,
                        term: *term,
                    };
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        let start = self
            .offset_of(from.max(self.log_start.index.next()))
            .unwrap_or(0);
        let end = match self.offset_of(to) {
            Some(offset) => (offset + 1).min(self.entries.len()),
            None => 0,
        };
        Ok(self
            .entries
            .get(start..end)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default())
    }

    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        self.broken = Some(reason.to_string());
        Ok(())
    }

    fn clear_broken(&mut self) -> Result<(), StorageError> {
        self.broken = None;
        Ok(())
    }
}
