//! The node's in-memory view of its log. Durable copies are the driver's business: every change
//! made here is also emitted as a [`LogWrite`](crate::LogWrite) for the driver to persist.
//!
//! Entries up to `start` may have been compacted into a snapshot; the log then holds only what
//! follows, and knows the index and term of the last compacted entry.

use crate::storage::LogId;
use crate::types::{Entry, EntryPayload, LogIndex, Term};

/// A node's log in memory: the entries after the compacted prefix, and the position of the
/// last compacted entry. Read it through [`RaftNode::log`](crate::RaftNode::log).
#[derive(Debug, Clone, Default)]
pub struct RaftLog {
    /// The last entry covered by a snapshot (index 0 when nothing was compacted).
    start: LogId,
    /// `entries[i]` has index `start.index + 1 + i`.
    entries: Vec<Entry>,
    /// Command bytes held in `entries` (the size policy for snapshots).
    payload_bytes: u64,
}

fn payload_bytes(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Command(c) => c.len() as u64,
            _ => 0,
        })
        .sum()
}

impl RaftLog {
    /// Builds the log from entries loaded from storage. Entries must be contiguous from index 1.
    pub fn from_entries(entries: Vec<Entry>) -> Result<RaftLog, LogIndex> {
        RaftLog::from_parts(LogId::default(), entries)
    }

    /// A log whose entries follow the compacted prefix ending at `start`.
    pub fn from_parts(start: LogId, entries: Vec<Entry>) -> Result<RaftLog, LogIndex> {
        for (i, e) in entries.iter().enumerate() {
            if e.index != start.index.plus(i as u64 + 1) {
                return Err(e.index);
            }
        }
        let payload_bytes = payload_bytes(&entries);
        Ok(RaftLog {
            start,
            entries,
            payload_bytes,
        })
    }

    /// The last compacted entry (index 0 when nothing was compacted).
    pub fn start(&self) -> LogId {
        self.start
    }

    /// Command bytes held in the log (after its compacted prefix).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// The index of the last entry (the compacted prefix's last when the log holds none).
    pub fn last_index(&self) -> LogIndex {
        self.start.index.plus(self.entries.len() as u64)
    }

    /// The term of the last entry (likewise).
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.start.term, |e| e.term)
    }

    /// Position of `index` in `entries`, if it is held (not compacted, not beyond the end).
    fn position(&self, index: LogIndex) -> Option<usize> {
        let offset = index.0.checked_sub(self.start.index.0 + 1)?;
        ((offset as usize) < self.entries.len()).then_some(offset as usize)
    }

    /// The term of the entry at `index`: `Term(0)` for index 0, the snapshot's term for the last
    /// compacted index, `None` for other compacted indexes and beyond the log.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        self.position(index).map(|p| self.entries[p].term)
    }

    /// The entry at `index`, if held (not compacted, not beyond the end).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.position(index).map(|p| &self.entries[p])
    }

    /// Entries with indexes in `from..=to`, clipped to what the log holds.
    pub fn slice(&self, from: LogIndex, to: LogIndex) -> &[Entry] {
        let first = self.start.index.next();
        let from = from.max(first);
        let to = to.min(self.last_index());
        if from > to {
            return &[];
        }
        let (a, b) = ((from.0 - first.0) as usize, (to.0 - first.0) as usize + 1);
        &self.entries[a..b]
    }

    /// Command bytes of the entries held up to `through`.
    pub fn payload_bytes_through(&self, through: LogIndex) -> u64 {
        payload_bytes(self.slice(self.start.index.next(), through))
    }

    /// The lowest index `i` in `after + 1 ..= through + 1` such that the entries `i..=through`
    /// carry at most `budget` command bytes (walking back from `through`).
    pub fn first_within_bytes(&self, after: LogIndex, through: LogIndex, budget: u64) -> LogIndex {
        let mut bytes = 0u64;
        let mut first = through.next();
        for entry in self.slice(after.next(), through).iter().rev() {
            bytes += payload_bytes(std::slice::from_ref(entry));
            if bytes > budget {
                break;
            }
            first = entry.index;
        }
        first
    }

    /// The last index of a batch starting at `from` of at most `max_entries` entries whose
    /// command bytes stay within `max_bytes`; the first entry always fits, however large.
    /// `from` must be held.
    pub fn batch_end(&self, from: LogIndex, max_entries: u64, max_bytes: u64) -> LogIndex {
        let held = self.slice(from, from.plus(max_entries.saturating_sub(1)));
        let mut bytes = 0u64;
        let mut end = from;
        for (i, entry) in held.iter().enumerate() {
            bytes += payload_bytes(std::slice::from_ref(entry));
            if i > 0 && bytes > max_bytes {
                break;
            }
            end = entry.index;
        }
        end
    }

    /// Appends an entry; its index must follow the last one. (For tests and tools that build a
    /// log by hand: a node's own log changes only through its inputs.)
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        self.payload_bytes += payload_bytes(std::slice::from_ref(&entry));
        self.entries.push(entry);
    }

    /// Removes every entry from `from` on (never the compacted prefix).
    pub fn truncate_from(&mut self, from: LogIndex) {
        let keep = from.0.saturating_sub(self.start.index.0 + 1) as usize;
        if keep < self.entries.len() {
            self.payload_bytes -= payload_bytes(&self.entries[keep..]);
            self.entries.truncate(keep);
        }
    }

    /// Drops the entries up to `through`, which a snapshot now covers; `through` may lie beyond
    /// the log (a snapshot installed from the leader), which then becomes empty.
    pub fn compact(&mut self, through: LogId) {
        if through.index <= self.start.index {
            return;
        }
        if through.index >= self.last_index() {
            self.entries.clear();
            self.payload_bytes = 0;
        } else {
            let dropped = (through.index.0 - self.start.index.0) as usize;
            self.payload_bytes -= payload_bytes(&self.entries[..dropped]);
            self.entries.drain(..dropped);
        }
        self.start = through;
    }

    /// The first index of the term that holds `index`, used as a rejection hint so a leader can
    /// skip a whole conflicting term at once (paper §5.3, the optimization it describes).
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return self.last_index().next();
        };
        let mut i = index;
        while i > self.start.index.next() && self.term(i.prev()) == Some(term) {
            i = i.prev();
        }
        i
    }

    /// Is a log ending at (`last_index`, `last_term`) at least as up to date as ours (paper §5.4.1)?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::TermStart,
        }
    }

    #[test]
    fn a_compacted_log_answers_from_its_start() {
        let mut log =
            RaftLog::from_entries((1..=10).map(|i| entry(i, 1 + i / 5)).collect()).unwrap();
        log.compact(LogId {
            index: LogIndex(4),
            term: Term(1),
        });
        assert_eq!(log.last_index(), LogIndex(10));
        assert_eq!(log.term(LogIndex(4)), Some(Term(1)));
        assert_eq!(log.term(LogIndex(3)), None);
        assert_eq!(log.entry(LogIndex(5)).map(|e| e.index), Some(LogIndex(5)));
        assert_eq!(log.slice(LogIndex(1), LogIndex(6)).len(), 2);
        assert_eq!(log.first_index_of_term_at(LogIndex(9)), LogIndex(5));
        log.compact(LogId {
            index: LogIndex(6),
            term: Term(2),
        });
        assert_eq!(
            log.last_index(),
            LogIndex(10),
            "compacting keeps what follows"
        );
        assert_eq!(log.entry(LogIndex(7)).map(|e| e.index), Some(LogIndex(7)));
        log.truncate_from(LogIndex(8));
        assert_eq!(log.last_index(), LogIndex(7));
        log.compact(LogId {
            index: LogIndex(20),
            term: Term(4),
        });
        assert_eq!((log.last_index(), log.last_term()), (LogIndex(20), Term(4)));
        assert!(log.slice(LogIndex(1), LogIndex(30)).is_empty());
        log.push(entry(21, 4));
        assert_eq!(log.slice(LogIndex(21), LogIndex(21)).len(), 1);
    }
}
