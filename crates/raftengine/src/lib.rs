//! raftengine: a sans-IO Raft consensus core.
//!
//! A [`RaftNode`] takes inputs — a message from a peer ([`RaftNode::step`]), a timer tick
//! ([`RaftNode::tick`]), a client command ([`RaftNode::propose`]), a storage completion
//! ([`RaftNode::persisted`]) — and returns what to do in an [`Output`]: messages to send, writes to
//! make durable, committed entries to apply, command rejections and events. It holds no clock,
//! thread, socket or file; drivers (the `raftsim` simulator, a tokio runtime) supply those.
//!
//! # The driver's loop
//!
//! After any input, call [`RaftNode::take_output`] and carry out the [`Output`]:
//!
//! 1. write [`Output::persist`] to the node's [`LogStorage`], make it durable, then report
//!    [`RaftNode::persisted`] with the batch's `seq` (votes and acknowledgements that depend on
//!    the batch stay inside the node until then);
//! 2. send [`Output::messages`] to their peers, which hand them to [`RaftNode::step`];
//! 3. apply [`Output::committed`] to the state machine, in order, and answer the client of each
//!    entry that carries a [`CommittedEntry::request`];
//! 4. answer [`Output::rejected`] requests (redirect, retry, or outcome unknown), serve
//!    [`Output::reads`], and act on snapshots, events and [`Output::fatal`].
//!
//! Time is [`RaftNode::tick`]: the driver calls it at a fixed interval of its choosing.
//!
//! # Example: three nodes driven by hand
//!
//! Three nodes in one process, a queue as the network and [`MemoryStorage`] as each disk; the
//! state machine is a counter that adds the number each command carries. (The `core_by_hand`
//! example prints each step of the same loop.)
//!
//! ```
//! use raftengine::{
//!     Config, EntryPayload, LogStorage, MemoryStorage, Message, NodeId, RaftNode, RequestId,
//!     RoleKind,
//! };
//! use std::collections::VecDeque;
//!
//! struct Replica {
//!     node: RaftNode,
//!     disk: MemoryStorage,
//!     counter: u64,
//! }
//!
//! /// Carries out every output and delivers every message until the cluster is quiet.
//! fn run_until_quiet(replicas: &mut [Replica]) {
//!     let mut network: VecDeque<Message> = VecDeque::new();
//!     loop {
//!         let mut progress = false;
//!         for r in replicas.iter_mut() {
//!             let out = r.node.take_output();
//!             assert!(out.fatal.is_none());
//!             if let Some(batch) = &out.persist {
//!                 r.disk.persist(batch).expect("memory storage does not fail");
//!                 r.node.persisted(batch.seq).expect("batches are reported in order");
//!                 progress = true; // held messages are released by the next take_output
//!             }
//!             for c in &out.committed {
//!                 if let EntryPayload::Command(bytes) = &c.entry.payload {
//!                     r.counter += u64::from_le_bytes(bytes[..].try_into().unwrap());
//!                 }
//!             }
//!             progress |= !out.messages.is_empty() || !out.committed.is_empty();
//!             network.extend(out.messages);
//!         }
//!         while let Some(msg) = network.pop_front() {
//!             let to = replicas.iter_mut().find(|r| r.node.id() == msg.to).unwrap();
//!             to.node.step(msg).expect("well-formed message");
//!         }
//!         if !progress {
//!             return;
//!         }
//!     }
//! }
//!
//! let ids = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let mut replicas: Vec<Replica> = ids
//!     .iter()
//!     .map(|&id| Replica {
//!         node: RaftNode::new(Config::new(id, ids.clone())).expect("valid config"),
//!         disk: MemoryStorage::new(),
//!         counter: 0,
//!     })
//!     .collect();
//!
//! // Tick until an election timeout fires and a leader is elected.
//! let leader = loop {
//!     for r in replicas.iter_mut() {
//!         r.node.tick();
//!     }
//!     run_until_quiet(&mut replicas);
//!     if let Some(i) = replicas.iter().position(|r| r.node.role() == RoleKind::Leader) {
//!         break i;
//!     }
//! };
//!
//! // Propose "add 5" at the leader; it commits once a majority has it durably.
//! replicas[leader].node.propose(RequestId(1), 5u64.to_le_bytes().to_vec());
//! run_until_quiet(&mut replicas);
//! assert_eq!(replicas[leader].counter, 5);
//!
//! // Followers learn the new commit index with the next heartbeat.
//! for r in replicas.iter_mut() {
//!     r.node.tick();
//! }
//! run_until_quiet(&mut replicas);
//! assert!(replicas.iter().all(|r| r.counter == 5));
//! ```
//!
//! # Where to go next
//!
//! - [`StateMachine`]: the shape of the application's state; the driver calls it on
//!   [`Output::committed`], snapshots and installs.
//! - [`RaftNode::read`] (linearizable reads: ReadIndex, follower reads, leases),
//!   [`RaftNode::change_membership`], [`RaftNode::transfer_leadership`], [`RaftNode::compact`]
//!   and [`Output::install_snapshot`] (snapshots), [`RaftNode::restart_from_snapshot`].
//! - [`conformance::check_log_storage`]: the suite every [`LogStorage`] must pass; the
//!   `custom_log_store` example runs it on a store written from scratch.
//! - `docs/guide.md` in the repository: the concepts in order, each with the scenarios that
//!   show it step by step.

#![deny(missing_docs)]

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
