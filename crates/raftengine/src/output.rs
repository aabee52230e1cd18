//! What a node asks its driver to do after an input.

use crate::event::Event;
use crate::membership::{Membership, MembershipError};
use crate::message::Message;
use crate::storage::PersistBatch;
use crate::types::{Entry, LogIndex, NodeId, RequestId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Everything the driver must carry out. The driver may do it in any order: messages that depend
/// on `persist` are held inside the node until the driver reports `persisted(seq)`.
#[derive(Debug, Default)]
pub struct Output {
    /// Writes to make durable, then report with [`RaftNode::persisted`](crate::RaftNode::persisted).
    pub persist: Option<PersistBatch>,
    /// Messages that may be sent now.
    pub messages: Vec<Message>,
    /// Committed entries to apply to the state machine, in order.
    pub committed: Vec<CommittedEntry>,
    /// Client commands and reads this node will not (or can no longer) carry to a known outcome.
    pub rejected: Vec<(RequestId, CommandRejected)>,
    /// Linearizable reads that may be served once the state machine has applied `index`.
    pub reads: Vec<ReadReady>,
    /// A snapshot from the leader: restore the state machine from it *before* applying this
    /// output's committed entries (they follow it), and keep it durably.
    pub install_snapshot: Option<crate::snapshot::Snapshot>,
    /// The snapshot policy asks for a snapshot of the state machine at this index (once the
    /// committed entries up to it are applied); hand it to `RaftNode::compact`.
    pub take_snapshot: Option<LogIndex>,
    /// Outcomes of membership changes asked at this node
    /// ([`RaftNode::change_membership`](crate::RaftNode::change_membership)): the configuration
    /// now committed, or why the change did not (or may not) happen.
    pub membership_changes: Vec<(RequestId, Result<Membership, MembershipError>)>,
    /// What the node decided, for logs, metrics and traces.
    pub events: Vec<Event>,
    /// The node stopped on a fatal error; the driver should mark its storage broken.
    pub fatal: Option<FatalError>,
}

impl Output {
    /// Nothing to do: the driver may wait for the next input.
    pub fn is_empty(&self) -> bool {
        self.persist.is_none()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.rejected.is_empty()
            && self.reads.is_empty()
            && self.install_snapshot.is_none()
            && self.take_snapshot.is_none()
            && self.membership_changes.is_empty()
            && self.events.is_empty()
            && self.fatal.is_none()
    }
}

/// A committed entry, with the client request that proposed it if it was proposed at this node
/// while it led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEntry {
    /// The entry; only [`EntryPayload::Command`](crate::EntryPayload::Command) entries go to
    /// the state machine.
    pub entry: Entry,
    /// The request given to [`RaftNode::propose`](crate::RaftNode::propose) for it, whose
    /// client now gets the state machine's answer.
    pub request: Option<RequestId>,
}

/// A read confirmed linearizable: serve it from the state machine once it has applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReady {
    /// The read's request id, as given to the node.
    pub request: RequestId,
    /// Serve the read once the state machine has applied at least this index.
    pub index: LogIndex,
}

/// Why a client command gets no result from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum CommandRejected {
    /// This node follows `leader`: send the command there.
    #[error("not the leader; the leader is {leader}")]
    Redirect {
        /// The leader this node follows.
        leader: NodeId,
    },
    /// No leader is known right now (an election is under way): retry later.
    #[error("no leader is known; retry later")]
    Retry,
    /// The command was appended but this node lost leadership before it committed: it may or may
    /// not be applied later, so the client must check before retrying a non-idempotent command.
    #[error("leadership lost before the command committed; outcome unknown")]
    LeadershipLost,
    /// The command is larger than [`Config::max_command_bytes`](crate::Config): nothing was
    /// proposed.
    #[error("command of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The command's size in bytes.
        size: usize,
        /// `Config::max_command_bytes`.
        limit: usize,
    },
}

/// An error that stops the node: carrying on would risk breaking Raft's safety.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum FatalError {
    /// A leader asked to remove a committed entry: two leaders disagree on committed history.
    #[error("leader asked to truncate committed entry {index} (commit index {commit})")]
    TruncateCommitted {
        /// The first index the truncation would remove.
        index: LogIndex,
        /// This node's commit index.
        commit: LogIndex,
    },
    /// The state machine failed to apply an entry in a way other replicas may not share
    /// ([`ApplyError::Fatal`](crate::ApplyError::Fatal)).
    #[error("state machine failed at index {index}: {reason}")]
    StateMachine {
        /// The entry that failed.
        index: LogIndex,
        /// The state machine's reason.
        reason: String,
    },
    /// The driver could not make the log durable (an I/O error, a full disk): what the node
    /// promised others may not be on its disk, so it stops.
    #[error("log storage failed: {reason}")]
    Storage {
        /// The storage's error.
        reason: String,
    },
    /// The driver stopped the node because a part of it failed (a task that died, a snapshot
    /// that could not be saved): carrying on half alive could promise what it cannot keep.
    #[error("stopped by its driver: {reason}")]
    Driver {
        /// What failed.
        reason: String,
    },
}
