//! raftengine: a sans-IO Raft consensus core.
//!
//! A [`RaftNode`] takes inputs — a message from a peer ([`RaftNode::step`]), a timer tick
//! ([`RaftNode::tick`]), a client command ([`RaftNode::propose`]), a storage completion
//! ([`RaftNode::persisted`]) — and returns what to do in an [`Output`]: messages to send, writes to
//! make durable, committed entries to apply, command rejections and events. It holds no clock,
//! thread, socket or file; drivers (the `raftsim` simulator, a tokio runtime) supply those.

mod config;
pub mod conformance;
mod election;
mod event;
mod forward;
mod log;
mod membership;
mod message;
mod node;
mod output;
mod progress;
mod quorum;
mod read;
mod reconfigure;
mod repair;
mod replication;
mod snapshot;
mod state_machine;
mod storage;
mod transfer;
mod types;

#[cfg(feature = "mutations")]
pub use config::Mutation;
pub use config::{Config, ConfigError};
pub use event::{Event, RoleKind};
pub use log::RaftLog;
pub use membership::{Membership, MembershipChange, MembershipError};
pub use message::{Message, MessageBody, MAX_INDEX, MAX_TERM};
pub use node::{DriverError, RaftNode, StartError, Status, StepError};
pub use output::{CommandRejected, CommittedEntry, FatalError, Output, ReadReady};
pub use snapshot::{CompactError, Snapshot};
pub use state_machine::{ApplyError, SnapshotJob, StateMachine};
pub use storage::{
    DataLoss, LogId, LogStorage, LogWrite, MemoryStorage, PersistBatch, StorageError, StoredState,
};
pub use transfer::TransferError;
pub use types::{Entry, EntryPayload, HardState, LogIndex, NodeId, RequestId, Term};
