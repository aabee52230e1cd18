//! Where a node's log lives and how its messages travel: the durable log on the group-commit
//! thread or an in-memory log; the TCP transport or in-process channels.

use super::metrics::Metrics;
use crate::transport::TransportSender;
use raftengine::{LogStorage, MemoryStorage, Message, NodeId, PersistBatch, StorageError};
use raftwal::{GroupCommit, Wal};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// A completion from the log: every batch up to `seq` is durable.
pub type Durable = Result<raftwal::Durable, StorageError>;

/// Sends messages to peers. Never blocks; may drop (Raft tolerates loss).
pub trait Network: Send + Sync {
    /// Queues `msg` for `msg.to`; a message that cannot be queued (unknown peer, full queue)
    /// is dropped.
    fn send(&self, msg: Message);

    /// The nodes to send to and their addresses (as the configuration names them), given
    /// whenever they change. A network that reaches nodes by id alone ignores it.
    fn set_peers(&self, _peers: &BTreeMap<NodeId, String>) {}

    /// Closes the connections `peer` opened to this node: it sent something no correct peer
    /// sends. It may connect again (and is judged again). A network without connections
    /// ignores it.
    fn disconnect(&self, _peer: NodeId) {}
}

impl Network for TransportSender {
    fn send(&self, msg: Message) {
        TransportSender::send(self, msg);
    }

    fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        TransportSender::set_peers(self, peers);
    }

    fn disconnect(&self, peer: NodeId) {
        TransportSender::disconnect(self, peer);
    }
}

/// Channels between nodes of one process (the in-process benchmark and tests).
#[derive(Default)]
pub struct InProcessNetwork {
    nodes: RwLock<BTreeMap<NodeId, crate::inbox::InboxSender>>,
}

impl InProcessNetwork {
    /// Registers a node and returns its inbox, bounded to `capacity` messages (and to the
    /// transport's default payload bytes).
    pub fn join(&self, id: NodeId, capacity: usize) -> crate::inbox::Inbox {
        let bytes = crate::transport::TransportConfig::DEFAULT_INBOUND_BYTES;
        let (tx, rx) = crate::inbox::inbox(capacity, bytes);
        if let Ok(mut nodes) = self.nodes.write() {
            nodes.insert(id, tx);
        }
        rx
    }

    /// Stops delivering to `id` (a crash or a partition).
    pub fn leave(&self, id: NodeId) {
        if let Ok(mut nodes) = self.nodes.write() {
            nodes.remove(&id);
        }
    }
}

impl Network for InProcessNetwork {
    fn send(&self, msg: Message) {
        let Ok(nodes) = self.nodes.read() else {
            return;
        };
        if let Some(tx) = nodes.get(&msg.to) {
            // A full inbox drops the message, as a real network would.
            let _ = tx.try_send(msg);
        }
    }
}

/// The log a node starts with.
pub enum LogBackend {
    /// The write-ahead log of `raftwal`: every write is made durable (group commit) before the
    /// core hears it is persisted.
    Durable(Box<Wal>),
    /// Persistence is instant and lost with the process (benchmarks of the framework itself).
    Memory(MemoryStorage),
    /// Any [`LogStorage`] of the application's (RocksDB, a store of its own; prove it with
    /// [`raftengine::conformance`]): each batch is written and synced on the raft loop's
    /// thread, so a slow store slows the loop (the WAL's group commit is the fast path).
    Custom(Box<dyn LogStorage + Send>),
    /// Writes are acknowledged at once and kept nowhere but in the core's own in-memory log: for a
    /// process that never restarts its nodes (the in-process framework benchmark), where a second
    /// copy of every entry would only cost memory.
    AckOnly,
}

impl LogBackend {
    /// A durable backend on an opened `wal`.
    pub fn durable(wal: Wal) -> LogBackend {
        LogBackend::Durable(Box::new(wal))
    }

    pub(crate) fn start(
        self,
        durable: mpsc::UnboundedSender<Durable>,
        metrics: Arc<Metrics>,
    ) -> RunningBackend {
        match self {
            LogBackend::Durable(wal) => {
                let writer_metrics = metrics.clone();
                let committer = GroupCommit::spawn(*wal, move |done: Durable| {
                    observe_sync(&writer_metrics, &done);
                    let _ = durable.send(done);
                });
                RunningBackend::Durable {
                    committer: Some(committer),
                    metrics,
                }
            }
            LogBackend::Memory(storage) => RunningBackend::OnLoop {
                storage: Some(Box::new(storage)),
                durable,
                last: raftengine::LogIndex::default(),
            },
            LogBackend::Custom(storage) => RunningBackend::OnLoop {
                storage: Some(storage),
                durable,
                last: raftengine::LogIndex::default(),
            },
            LogBackend::AckOnly => RunningBackend::OnLoop {
                storage: None,
                durable,
                last: raftengine::LogIndex::default(),
            },
        }
    }
}

/// Largest batch a follower writes on the raft loop's own thread: a larger one goes to the
/// writer thread, so that writing it does not hold up the loop (heartbeats keep being read and
/// ticks keep coming while megabytes are synced).
const PERSIST_HERE_MAX_BYTES: usize = 256 * 1024;

/// The command bytes a batch appends.
fn appended_bytes(batch: &PersistBatch) -> usize {
    batch
        .writes
        .iter()
        .map(|w| match w {
            raftengine::LogWrite::Append(entries) => entries
                .iter()
                .map(|e| match &e.payload {
                    raftengine::EntryPayload::Command(c) => c.len(),
                    _ => 0,
                })
                .sum(),
            _ => 0,
        })
        .sum()
}

/// The last index a batch appends (0 when it appends nothing; only used for status).
fn last_appended(batch: &PersistBatch) -> raftengine::LogIndex {
    batch
        .writes
        .iter()
        .rev()
        .find_map(|w| match w {
            raftengine::LogWrite::Append(entries) => entries.last().map(|e| e.index),
            _ => None,
        })
        .unwrap_or_default()
}

pub(crate) enum RunningBackend {
    Durable {
        committer: Option<GroupCommit>,
        metrics: Arc<Metrics>,
    },
    /// A store written and synced on the raft loop's thread (memory, or the application's).
    OnLoop {
        /// `None`: acknowledge only (see [`LogBackend::AckOnly`]).
        storage: Option<Box<dyn LogStorage + Send>>,
        durable: mpsc::UnboundedSender<Durable>,
        /// The last index appended so far (for the node's status).
        last: raftengine::LogIndex,
    },
}

fn observe_sync(metrics: &Metrics, done: &Durable) {
    if let Ok(d) = done {
        metrics.fsync_latency.observe(d.sync_time);
        metrics.fsyncs.inc();
    }
}

impl RunningBackend {
    /// Makes `batch` durable. With `wait_here`, a durable log writes it on this thread when its
    /// writer thread is idle and returns the completion; otherwise (and always for the other
    /// backends) the completion arrives on the channel given to [`LogBackend::start`]. A batch
    /// the writer refuses returns its error at once.
    pub fn persist(&mut self, batch: PersistBatch, wait_here: bool) -> Option<Durable> {
        match self {
            RunningBackend::Durable {
                committer: Some(committer),
                metrics,
            } => {
                let batch = if wait_here && appended_bytes(&batch) <= PERSIST_HERE_MAX_BYTES {
                    match committer.persist_here(batch) {
                        Ok(done) => {
                            observe_sync(metrics, &done);
                            return Some(done);
                        }
                        Err(batch) => batch,
                    }
                } else {
                    batch
                };
                if let Err(e) = committer.submit(batch) {
                    // The writer stopped (after a storage error): the node must stop too.
                    return Some(Err(e.into()));
                }
            }
            RunningBackend::Durable {
                committer: None, ..
            } => {}
            RunningBackend::OnLoop {
                storage,
                durable,
                last,
            } => {
                let seq = batch.seq;
                let appended = last_appended(&batch);
                if appended > raftengine::LogIndex::default() {
                    *last = appended;
                }
                let last_index = *last;
                let result = match storage {
                    Some(storage) => storage.persist(&batch).map(|()| last_index),
                    None => Ok(last_index),
                };
                let _ = durable.send(result.map(|last_index| raftwal::Durable {
                    seq,
                    last_index,
                    batches: 1,
                    sync_time: std::time::Duration::ZERO,
                }));
            }
        }
        None
    }

    pub fn mark_broken(&mut self, reason: &str) {
        match self {
            RunningBackend::Durable {
                committer: Some(committer),
                ..
            } => {
                if let Err(e) = committer.mark_broken(reason) {
                    tracing::error!("could not mark the log broken: {e}");
                }
            }
            RunningBackend::Durable {
                committer: None, ..
            } => {}
            RunningBackend::OnLoop { storage, .. } => {
                if let Some(storage) = storage {
                    let _ = storage.mark_broken(reason);
                }
            }
        }
    }

    /// Writes what is queued and stops the writer thread.
    pub fn shutdown(&mut self) {
        if let RunningBackend::Durable { committer, .. } = self {
            if let Some(committer) = committer.take() {
                if let Err(e) = committer.shutdown() {
                    tracing::error!("log writer: {e}");
                }
            }
        }
    }
}
