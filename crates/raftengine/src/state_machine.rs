//! The user's replicated state machine.

use crate::types::LogIndex;
use thiserror::Error;

/// Applies committed commands in log order. Every replica applies the same commands in the same
/// order, so `apply` must be deterministic.
pub trait StateMachine {
    /// Applies the command of the committed entry at `index` and returns the answer for its
    /// client; [`ApplyError::Rejected`] is an answer too, [`ApplyError::Fatal`] stops the node.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError>;
    /// The whole state after every entry applied so far, for log compaction and for followers
    /// whose missing entries are compacted.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's (from [`StateMachine::snapshot`], possibly on
    /// another replica). An error stops the node.
    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError>;
    /// A job that returns what [`StateMachine::snapshot`] returns now, for a state machine that
    /// can copy its state faster than it serializes it: a driver then applies further entries
    /// while the copy is serialized on another thread (the tokio runtime does). `None`, the
    /// default: applying waits for `snapshot`.
    fn snapshot_job(&self) -> Option<SnapshotJob> {
        None
    }
}

/// A snapshot to be serialized later (see [`StateMachine::snapshot_job`]).
pub type SnapshotJob = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// A deterministic refusal (e.g. "unknown key"): every replica reaches it, so it is simply
    /// the command's result, returned to the client.
    #[error("command rejected by the state machine: {0}")]
    Rejected(String),
    /// A failure that other replicas may not see (an I/O error): the replica's state can no longer
    /// be trusted, so the node stops and its storage is marked broken.
    #[error("state machine failed: {0}")]
    Fatal(String),
}
