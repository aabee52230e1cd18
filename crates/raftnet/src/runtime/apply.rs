//! The apply task: applies committed entries in order, answers the writes they carry, and
//! releases confirmed reads once their index is applied. It runs beside the raft loop, so
//! applying never delays replication.

use super::metrics::Metrics;
use super::{AdminError, ClientError, ReadReply, SnapshotReply, WriteReply};
use raftengine::{
    ApplyError, Entry, EntryPayload, LogId, LogIndex, Membership, Snapshot, StateMachine, Term,
};
use raftwal::SnapshotStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
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
    /// Where snapshots are kept durably (none for an in-memory node). Taken snapshots are
    /// written on a blocking thread, one at a time.
    snapshots: Option<Arc<Mutex<SnapshotStore>>>,
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
            snapshots: snapshots.map(|store| Arc::new(Mutex::new(store))),
            taken,
            applied_tx,
            waiting_reads: BTreeMap::new(),
            metrics,
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ApplyMsg>) {
        while let Some(first) = inbox.recv().await {
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
                        let taken = Taken {
                            index: self.applied,
                            data,
                            reply,
                        };
                        match &self.snapshots {
                            Some(store) => {
                                // Writing tens of megabytes and syncing them would hold up a
                                // runtime worker (and with it heartbeats): a blocking thread
                                // does it. The core hears of the snapshot only once it is
                                // durable, since it then purges the entries it covers.
                                let (store, sender) = (store.clone(), self.taken.clone());
                                let membership = self.membership.clone();
                                tokio::task::spawn_blocking(move || {
                                    save_taken(&store, id, &membership, taken, &sender);
                                });
                            }
                            None => {
                                let _ = self.taken.send(taken);
                            }
                        }
                    }
                    ApplyMsg::Install(snapshot) => {
                        if let Err(e) = state_machine.restore_from(&snapshot.data) {
                            tracing::error!("could not install the leader's snapshot: {e}");
                            return false;
                        }
                        if let Some(store) = &self.snapshots {
                            let Ok(store) = store.lock() else {
                                tracing::error!("the snapshot store lock is poisoned");
                                return false;
                            };
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

/// Writes a taken snapshot durably, then hands it to the raft loop (or reports the failure to
/// whoever asked for it).
fn save_taken(
    store: &Mutex<SnapshotStore>,
    id: LogId,
    membership: &Membership,
    taken: Taken,
    sender: &mpsc::UnboundedSender<Taken>,
) {
    let saved = match store.lock() {
        Ok(store) => store
            .save(id, membership, &taken.data, 2)
            .map_err(|e| e.to_string()),
        Err(_) => Err("the snapshot store lock is poisoned".to_string()),
    };
    match saved {
        Ok(_) => {
            let _ = sender.send(taken);
        }
        Err(e) => {
            tracing::error!("could not save a snapshot: {e}");
            if let Some(reply) = taken.reply {
                let _ = reply.send(Err(AdminError::Snapshot(e)));
            }
        }
    }
}
