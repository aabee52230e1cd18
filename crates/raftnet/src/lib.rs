//! tokio runtime for raftengine: the pieces that give the sans-IO core real I/O.
//!
//! - [`runtime`]: the node: the core on a tokio task, its durable log, applying, client API.
//! - [`transport`]: the node-to-node TCP transport that carries [`raftengine::Message`]s.
//! - [`tls`]: mutual TLS between nodes, and TLS for an application's own ports.
//! - [`inbox`]: the channel of messages a node receives, bounded in messages and bytes.
//!
//! An application supplies a [`StateMachine`](raftengine::StateMachine) and starts one
//! [`Node`](runtime::Node) per server with a [`NodeConfig`](runtime::NodeConfig) and a bound
//! [`TcpListener`](tokio::net::TcpListener); its clients go through the node's
//! [`NodeHandle`](runtime::NodeHandle): [`write`](runtime::NodeHandle::write) replicates a
//! command and returns the state machine's answer, [`read`](runtime::NodeHandle::read) runs a
//! closure on the state once it is linearizable.
//!
//! # Example: a replicated counter
//!
//! Three nodes on loopback, each with its durable log in a temporary directory. Any node takes
//! writes (a follower forwards them to the leader).
//!
//! ```
//! use raftengine::{ApplyError, LogIndex, NodeId, StateMachine};
//! use raftnet::runtime::{ClientError, Node, NodeConfig, NodeHandle};
//! use std::{collections::BTreeMap, time::Duration};
//!
//! /// The replicated state. A command is a decimal number to add; its answer is the new total.
//! #[derive(Default)]
//! struct Counter { total: i64 }
//!
//! fn number(bytes: &[u8]) -> Option<i64> {
//!     std::str::from_utf8(bytes).ok()?.parse().ok()
//! }
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
//!         let n = number(command).ok_or(ApplyError::Rejected("not a number".into()))?;
//!         self.total += n;
//!         Ok(self.total.to_string().into_bytes())
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.total.to_string().into_bytes()
//!     }
//!     fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
//!         self.total = number(snapshot).ok_or(ApplyError::Fatal("bad snapshot".into()))?;
//!         Ok(())
//!     }
//! }
//!
//! /// Retries while no leader is known: nothing was proposed then, so it cannot apply twice.
//! async fn add(node: &NodeHandle<Counter>, n: i64) -> Result<Vec<u8>, ClientError> {
//!     loop {
//!         match node.write(n.to_string().into_bytes()).await {
//!             Err(ClientError::Retry | ClientError::NotLeader { .. }) => {
//!                 tokio::time::sleep(Duration::from_millis(20)).await
//!             }
//!             answer => return answer,
//!         }
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // Bind every port first: each node is configured with the others' addresses.
//! let (mut listeners, mut addrs) = (BTreeMap::new(), BTreeMap::new());
//! for id in (1..=3).map(NodeId) {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     addrs.insert(id, listener.local_addr()?);
//!     listeners.insert(id, listener);
//! }
//! let mut nodes = Vec::new();
//! for (id, listener) in listeners {
//!     let mut peers = addrs.clone();
//!     peers.remove(&id);
//!     let config = NodeConfig::new(id, 1, peers, dir.path().join(format!("node-{}", id.0)));
//!     nodes.push(Node::start(config, listener, Counter::default()).await?);
//! }
//!
//! let handle = nodes[0].handle();
//! let total = tokio::time::timeout(Duration::from_secs(30), async {
//!     for n in [1, 2, 3, 4] {
//!         add(&handle, n).await?;
//!     }
//!     handle.read(|counter| counter.total).await // sees every write acknowledged before it
//! })
//! .await??;
//! assert_eq!(total, 10);
//!
//! for node in nodes {
//!     node.shutdown().await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `cargo run -p raftnet --example counter` runs the same with progress printed;
//! `--example snapshots` shows a state machine with snapshots and a node catching up from one.
//!
//! # Writes, reads and their outcomes
//!
//! [`NodeHandle::write`](runtime::NodeHandle::write) answers with the value
//! [`StateMachine::apply`](raftengine::StateMachine::apply) returned on this node, once the
//! command is committed and applied here. [`ClientError::Retry`](runtime::ClientError::Retry)
//! and [`ClientError::NotLeader`](runtime::ClientError::NotLeader) mean nothing was proposed: a
//! retry is safe. [`ClientError::OutcomeUnknown`](runtime::ClientError::OutcomeUnknown) means
//! the command may or may not take effect: retry only commands that are idempotent (or carry
//! an id the state machine deduplicates). [`ApplyError::Rejected`](raftengine::ApplyError)
//! comes back as [`ClientError::Rejected`](runtime::ClientError::Rejected), the command's
//! deterministic result; [`ApplyError::Fatal`](raftengine::ApplyError) stops the node.
//!
//! # Slow work off the apply path
//!
//! The apply task calls [`StateMachine::apply`](raftengine::StateMachine::apply) for every
//! committed entry, one at a time, in log order, on every node, holding the state machine's
//! write lock for the batch. The raft loop does not wait for it (replication, elections and
//! commits go on), but while `apply` runs no later entry is applied, writes are not answered,
//! [`read`](runtime::NodeHandle::read) and [`inspect`](runtime::NodeHandle::inspect) wait for
//! the lock, and committed entries queue up in memory. So `apply` must be quick and deterministic: no network calls, no waiting on
//! another service, no clock. There is no asynchronous apply; slow work with side effects
//! (sending an e-mail, calling another system) is done this way:
//!
//! 1. `apply` records the intent in the replicated state, e.g. a queue of pending jobs keyed by
//!    the entry's [`LogIndex`](raftengine::LogIndex), and returns at once. The queue is part of
//!    the state, so [`snapshot`](raftengine::StateMachine::snapshot) includes it.
//! 2. A worker task of the application, with a clone of the [`NodeHandle`](runtime::NodeHandle),
//!    waits for the applied index to move
//!    ([`wait_for`](runtime::NodeHandle::wait_for)`(|s| s.applied_index > seen)`), copies the
//!    pending jobs out with [`inspect`](runtime::NodeHandle::inspect) (or
//!    [`read`](runtime::NodeHandle::read) for a linearizable view), and does the slow work
//!    after the closure returns, holding no lock.
//! 3. When the outcome must be known to every replica, the worker writes it back as a command
//!    (`"done <index>"`); applying that removes the job from the queue.
//!
//! Entries are applied on every node, and after a restart the entries after the latest
//! snapshot are applied again, so a side effect done inside `apply` would be repeated; with
//! intents in the state, the application chooses who acts (for instance the worker acts only
//! while [`NodeStatus::role`](runtime::NodeStatus::role) is `"leader"`). The effect is then done
//! at least once, not exactly once (a leader may act and crash before its `"done"` commits, and
//! an old leader may not yet know it was replaced): make it idempotent, keyed by the job's
//! index. `apply` may also notify the worker through a
//! channel that never blocks (`tokio::sync::watch::Sender::send`,
//! `tokio::sync::mpsc::UnboundedSender::send`), as long as the state does not depend on it.
//!
//! A state machine whose snapshots are slow to serialize can implement
//! [`StateMachine::snapshot_job`](raftengine::StateMachine::snapshot_job): applying then waits
//! only for a copy of the state, and the copy is serialized and saved on a blocking thread.
//!
//! # Features
//!
//! - `dev-certs`: `tls::dev` makes a development CA and node certificates (rcgen).
//! - `mutations`: test-only; known defects put back (`runtime::RuntimeMutation`) so that tests
//!   show they catch them. Never enable it in a build that serves data.
#![deny(missing_docs)]

pub mod inbox;
pub mod runtime;
pub mod tls;
pub mod transport;

/// Messages the unit tests of several modules build.
#[cfg(test)]
mod test_messages {
    use raftengine::{Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, Term};

    /// An AppendEntries from 1 to 2 carrying one command of `bytes` bytes.
    pub(crate) fn append(bytes: usize) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: vec![Entry {
                    term: Term(1),
                    index: LogIndex(1),
                    payload: EntryPayload::Command(vec![0; bytes]),
                }],
                leader_commit: LogIndex(0),
                read_round: 0,
                transfer: 0,
                repair_epoch: 0,
            },
        }
    }
}
