//! Newtypes for the paper's vocabulary: node ids, terms, log indexes, entries, hard state.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A cluster member's id. Ids are chosen by the user; the trace labels node `k` as `N-k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A Raft term. Term 0 is the term before any election.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

/// A 1-based log index; index 0 means "before the first entry".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

/// Identifies a client command submitted at one node, so its result can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N-{}", self.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// Saturating, never wrapping: peer messages are kept below `MAX_TERM`/`MAX_INDEX`, and an
// overflow must never turn a huge term or index into a small one.
impl Term {
    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }

    /// The previous index, saturating at 0.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// The index `n` after this one (saturating).
    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0.saturating_add(n))
    }
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader at the start of its term (thesis §6.4): committing it commits
    /// everything before it and tells the leader which entries are committed.
    TermStart,
    /// A client command for the state machine. (Encoded as one byte string, not a sequence
    /// of numbers: a large command costs one copy.)
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A cluster configuration: in effect on a node from the moment it is appended there.
    Membership(crate::membership::Membership),
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that appended it.
    pub term: Term,
    /// Its position in the log, from 1.
    pub index: LogIndex,
    /// What it carries.
    pub payload: EntryPayload,
}

/// State that must be durable before the node acts on it: the current term and the vote cast in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate it voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
}
