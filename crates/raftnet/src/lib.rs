#![deny(missing_docs)]
//! tokio runtime for raftengine: the pieces that give the sans-IO core real I/O.
//!
//! - [`runtime`]: the node: the core on a tokio task, its durable log, applying, client API.
//! - [`transport`]: the node-to-node TCP transport that carries [`raftengine::Message`]s.
//! - [`inbox`]: the channel of messages a node receives, bounded in messages and bytes.
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
