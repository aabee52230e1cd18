//! The node's in-memory view of its log. Durable copies are the driver's business: every change
//! made here is also emitted as a [`LogWrite`](crate::LogWrite) for the driver to persist.

use crate::types::{Entry, LogIndex, Term};

#[derive(Debug, Clone, Default)]
pub struct RaftLog {
    /// `entries[i]` has index `i + 1`.
    entries: Vec<Entry>,
}

impl RaftLog {
    /// Builds the log from entries loaded from storage. Entries must be contiguous from index 1.
    pub fn from_entries(entries: Vec<Entry>) -> Result<RaftLog, LogIndex> {
        for (i, e) in entries.iter().enumerate() {
            if e.index != LogIndex(i as u64 + 1) {
                return Err(e.index);
            }
        }
        Ok(RaftLog { entries })
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(Term(0), |e| e.term)
    }

    /// The term of the entry at `index`; `Term(0)` for index 0; `None` beyond the log.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index.0 == 0 {
            return Some(Term(0));
        }
        self.entries.get(index.0 as usize - 1).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index.0 == 0 {
            return None;
        }
        self.entries.get(index.0 as usize - 1)
    }

    /// Entries with indexes in `from..=to`, clipped to the log.
    pub fn slice(&self, from: LogIndex, to: LogIndex) -> &[Entry] {
        let start = (from.0.max(1) - 1) as usize;
        let end = (to.0 as usize).min(self.entries.len());
        if start >= end {
            return &[];
        }
        &self.entries[start..end]
    }

    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        self.entries.push(entry);
    }

    /// Removes every entry from `from` on.
    pub fn truncate_from(&mut self, from: LogIndex) {
        self.entries.truncate((from.0.max(1) - 1) as usize);
    }

    /// The first index of the term that holds `index`, used as a rejection hint so a leader can
    /// skip a whole conflicting term at once (paper §5.3, the optimization it describes).
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return self.last_index().next();
        };
        let mut i = index;
        while i.0 > 1 && self.term(i.prev()) == Some(term) {
            i = i.prev();
        }
        i
    }

    /// Is a log ending at (`last_index`, `last_term`) at least as up to date as ours (paper §5.4.1)?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}
