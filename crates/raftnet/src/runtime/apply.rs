//! The apply thread: applies committed entries in order, answers the writes they carry, and
//! releases confirmed reads once their index is applied. It runs beside the raft loop, on a
//! thread of its own, so applying and snapshotting never delay replication or heartbeats.

use super::metrics::Metrics;
use super::{AdminError, ClientError, ReadReply, SnapshotReply, WriteReply};
use raftengine::{
    ApplyError, Entry, EntryPayload, LogId, LogIndex, Membership, Snapshot, StateMachine, Term,
};
use raftwal::SnapshotStore;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, watch};

pub(crate) enum ApplyMsg {
    Entries(Vec<(Entry, Option<WriteReply>)>),
    Read {
        index: LogIndex,
        reply: ReadReply,
    },
    /// Snapshot the state machine (everything before this message is applied) and send it back;
    /// `reply` answers an explicit request once the raft loop has compacted behind it.
    TakeSnapshot {
        reply: Option<SnapshotReply>,
    },
    /// Replace the state with the leader's snapshot (before the entries that follow it).
    Install(Snapshot),
}

/// A snapshot the apply task took, on its way to the core's `compact`.
pub(crate) struct Taken {
    pub index: LogIndex,
    pub data: Vec<u8>,
    pub reply: Option<SnapshotReply>,
}

pub(crate) struct Applier<S> {
    state_machine: Arc<RwLock<S>>,
    applied: LogIndex,
    applied_term: Term,
    /// The configuration as of `applied` (saved with each snapshot).
    membership: Membership,
    /// Where snapshots are kept durably (none for an in-memory node).
    snapshots: Option<SnapshotStore>,
    taken: mpsc::UnboundedSender<Taken>,
    applied_tx: watch::Sender<LogIndex>,
    waiting_reads: BTreeMap<LogIndex, Vec<ReadReply>>,
    metrics: Arc<Metrics>,
}

impl<S: StateMachine> Applier<S> {
    pub fn new(
        state_machine: Arc<RwLock<S>>,
        applied_tx: watch::Sender<LogIndex>,
        metrics: Arc<Metrics>,
        from: Option<LogId>,
        membership: Membership,
        snapshots: Option<SnapshotStore>,
        taken: mpsc::UnboundedSender<Taken>,
    ) -> Applier<S> {
        let from = from.unwrap_or_default();
        Applier {
            state_machine,
            applied: from.index,
            applied_term: from.term,
            membership,
            snapshots,
            taken,
            applied_tx,
            waiting_reads: BTreeMap::new(),
            metrics,
        }
    }

    /// Runs on its own thread: applying, snapshotting (serializing the whole state and writing
    /// it durably) and restoring block, and must never hold up a runtime worker the raft loop
    /// needs for its heartbeats.
    pub fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ApplyMsg>) {
        while let Some(first) = inbox.blocking_recv() {
            let mut batch = vec![first];
            while let Ok(more) = inbox.try_recv() {
                batch.push(more);
            }
            if !self.handle(batch) {
                break;
            }
        }
        for (_, replies) in std::mem::take(&mut self.waiting_reads) {
            for reply in replies {
                let _ = reply.send(Err(ClientError::Stopped("the node stopped".into())));
            }
        }
    }

    /// False when applying failed fatally (the node must stop).
    fn handle(&mut self, batch: Vec<ApplyMsg>) -> bool {
        let mut replies = Vec::new();
        {
            let Ok(mut state_machine) = self.state_machine.write() else {
                return false;
            };
            for msg in batch {
                match msg {
                    ApplyMsg::Entries(entries) => {
                        for (entry, reply) in entries {
                            if entry.index <= self.applied {
                                continue;
                            }
                            let result = match &entry.payload {
                                EntryPayload::TermStart => Ok(Vec::new()),
                                EntryPayload::Membership(m) => {
                                    self.membership = m.clone();
                                    Ok(Vec::new())
                                }
                                EntryPayload::Command(command) => {
                                    state_machine.apply(entry.index, command)
                                }
                            };
                            self.applied = entry.index;
                            self.applied_term = entry.term;
                            let answer = match result {
                                Ok(value) => Ok(value),
                                Err(ApplyError::Rejected(reason)) => {
                                    Err(ClientError::Rejected(reason))
                                }
                                Err(ApplyError::Fatal(reason)) => {
                                    tracing::error!(
                                        index = entry.index.0,
                                        "state machine failed: {reason}"
                                    );
                                    if let Some(reply) = reply {
                                        let _ = reply.send(Err(ClientError::Stopped(reason)));
                                    }
                                    return false;
                                }
                            };
                            if let Some(reply) = reply {
                                replies.push((reply, answer));
                            }
                        }
                    }
                    ApplyMsg::Read { index, reply } => {
                        self.waiting_reads.entry(index).or_default().push(reply);
                    }
                    ApplyMsg::TakeSnapshot { reply } => {
                        let data = state_machine.snapshot();
                        let id = LogId {
                            index: self.applied,
                            term: self.applied_term,
                        };
                        if let Some(store) = &self.snapshots {
                            // Durable before the core may purge the entries it covers.
                            if let Err(e) = store.save(id, &self.membership, &data, 2) {
                                tracing::error!("could not save a snapshot: {e}");
                                if let Some(reply) = reply {
                                    let _ = reply.send(Err(AdminError::Snapshot(e.to_string())));
                                }
                                continue;
                            }
                        }
                        let _ = self.taken.send(Taken {
                            index: self.applied,
                            data,
                            reply,
                        });
                    }
                    ApplyMsg::Install(snapshot) => {
                        if let Err(e) = state_machine.restore_from(&snapshot.data) {
                            tracing::error!("could not install the leader's snapshot: {e}");
                            return false;
                        }
                        if let Some(store) = &self.snapshots {
                            let saved = store.save(
                                snapshot.last_included,
                                &snapshot.membership,
                                &snapshot.data,
                                2,
                            );
                            if let Err(e) = saved {
                                tracing::error!("could not save the leader's snapshot: {e}");
                                return false;
                            }
                        }
                        self.applied = snapshot.last_included.index;
                        self.applied_term = snapshot.last_included.term;
                        self.membership = snapshot.membership.clone();
                    }
                }
            }
        }
        self.metrics.applied_index.set(self.applied.0);
        let _ = self.applied_tx.send(self.applied);
        for (reply, answer) in replies {
            let _ = reply.send(answer);
        }
        let still_waiting = self.waiting_reads.split_off(&self.applied.next());
        for (_, ready) in std::mem::replace(&mut self.waiting_reads, still_waiting) {
            for reply in ready {
                let _ = reply.send(Ok(()));
            }
        }
        true
    }
}
