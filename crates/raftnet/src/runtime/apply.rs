//! The apply task: applies committed entries in order, answers the writes they carry, and
//! releases confirmed reads once their index is applied. It runs beside the raft loop, so
//! applying never delays replication. Taking a snapshot and installing one take tens to
//! hundreds of milliseconds for a large state: that work runs on blocking threads, so the thread
//! that runs the raft loop (possibly this one) keeps answering heartbeats. Applying waits for an
//! install, and for a snapshot's copy of the state (or its serialization, for a state machine
//! without [`StateMachine::snapshot_job`]).

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

/// What the apply task tells the raft loop about snapshots.
pub(crate) enum ApplyReport {
    /// A snapshot it took, saved durably, on its way to the core's `compact`.
    Taken(Taken),
    /// A snapshot from the leader, restored and saved durably: the core may purge its log
    /// behind it (`RaftNode::snapshot_installed`).
    Installed(LogIndex),
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
    reports: mpsc::UnboundedSender<ApplyReport>,
    applied_tx: watch::Sender<LogIndex>,
    waiting_reads: BTreeMap<LogIndex, Vec<ReadReply>>,
    metrics: Arc<Metrics>,
}

/// Where [`Applier::apply_until_snapshot`] stopped.
enum Stop {
    /// Every message was handled.
    Done,
    /// A snapshot is to be taken of the state as applied so far, before the remaining messages.
    TakeSnapshot(Option<SnapshotReply>),
    /// The leader's snapshot is to replace the state, before the remaining messages.
    Install(Snapshot),
    /// Applying failed fatally: the node must stop.
    Fatal,
}

impl<S: StateMachine + Send + Sync + 'static> Applier<S> {
    pub fn new(
        state_machine: Arc<RwLock<S>>,
        applied_tx: watch::Sender<LogIndex>,
        metrics: Arc<Metrics>,
        from: Option<LogId>,
        membership: Membership,
        snapshots: Option<SnapshotStore>,
        reports: mpsc::UnboundedSender<ApplyReport>,
    ) -> Applier<S> {
        let from = from.unwrap_or_default();
        Applier {
            state_machine,
            applied: from.index,
            applied_term: from.term,
            membership,
            snapshots: snapshots.map(|store| Arc::new(Mutex::new(store))),
            reports,
            applied_tx,
            waiting_reads: BTreeMap::new(),
            metrics,
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ApplyMsg>) {
        'inbox: while let Some(first) = inbox.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = inbox.try_recv() {
                batch.push(more);
            }
            let mut batch = batch.into_iter();
            loop {
                let ok = match self.apply_until_snapshot(&mut batch) {
                    Stop::Done => break,
                    Stop::TakeSnapshot(reply) => self.take_snapshot(reply).await,
                    Stop::Install(snapshot) => self.install(snapshot).await,
                    Stop::Fatal => false,
                };
                if !ok {
                    break 'inbox;
                }
            }
        }
        for (_, replies) in std::mem::take(&mut self.waiting_reads) {
            for reply in replies {
                let _ = reply.send(Err(ClientError::Stopped("the node stopped".into())));
            }
        }
    }

    /// Applies entries and queues reads, in order, until a snapshot is to be taken or installed
    /// (the state must stay as it is while a blocking thread copies or replaces it) or the batch
    /// ends; then answers what was applied.
    fn apply_until_snapshot(&mut self, batch: &mut impl Iterator<Item = ApplyMsg>) -> Stop {
        let mut replies = Vec::new();
        let mut stop = Stop::Done;
        {
            let Ok(mut state_machine) = self.state_machine.write() else {
                return Stop::Fatal;
            };
            for msg in batch.by_ref() {
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
                                    return Stop::Fatal;
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
                        stop = Stop::TakeSnapshot(reply);
                        break;
                    }
                    ApplyMsg::Install(snapshot) => {
                        stop = Stop::Install(snapshot);
                        break;
                    }
                }
            }
        }
        self.answer(replies);
        stop
    }

    /// Publishes the applied index, answers the writes applied and the reads now satisfied.
    fn answer(&mut self, replies: Vec<(WriteReply, Result<Vec<u8>, ClientError>)>) {
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
    }

    /// Runs `work` on the state machine on a blocking thread and waits for it; nothing is
    /// applied meanwhile, but reads and the rest of the runtime go on. `None` if `work` found
    /// the lock poisoned or the thread failed.
    async fn on_blocking_thread<R: Send + 'static>(
        &self,
        work: impl FnOnce(&RwLock<S>) -> Option<R> + Send + 'static,
    ) -> Option<R> {
        let state_machine = self.state_machine.clone();
        let task = tokio::task::spawn_blocking(move || work(&state_machine));
        task.await.ok().flatten()
    }

    /// Snapshots the state as applied so far. Applying waits while the state machine copies its
    /// state (or, if it cannot, serializes it); serializing a copy and making the bytes durable
    /// run on a blocking thread meanwhile. The core hears of the snapshot only once it is
    /// durable, since it then purges the entries it covers.
    async fn take_snapshot(&mut self, reply: Option<SnapshotReply>) -> bool {
        let Some(job) = self
            .on_blocking_thread(|state| {
                let state = state.read().ok()?;
                Some(state.snapshot_job().unwrap_or_else(|| {
                    let data = state.snapshot();
                    Box::new(move || data)
                }))
            })
            .await
        else {
            tracing::error!("could not take a snapshot: the state machine is unavailable");
            return false;
        };
        let id = LogId {
            index: self.applied,
            term: self.applied_term,
        };
        let (store, sender) = (self.snapshots.clone(), self.reports.clone());
        let membership = self.membership.clone();
        tokio::task::spawn_blocking(move || {
            let taken = Taken {
                index: id.index,
                data: job(),
                reply,
            };
            match store {
                Some(store) => save_taken(&store, id, &membership, taken, &sender),
                None => {
                    let _ = sender.send(ApplyReport::Taken(taken));
                }
            }
        });
        true
    }

    /// Replaces the state with the leader's snapshot and keeps the snapshot durably.
    async fn install(&mut self, snapshot: Snapshot) -> bool {
        let store = self.snapshots.clone();
        let data = snapshot.data.clone();
        let (last_included, membership) = (snapshot.last_included, snapshot.membership.clone());
        let installed = self
            .on_blocking_thread(move |state| {
                let mut state = state.write().ok()?;
                Some(install_and_keep(
                    &mut *state,
                    store.as_deref(),
                    last_included,
                    &membership,
                    &data,
                ))
            })
            .await
            .unwrap_or_else(|| Err("the state machine is unavailable".into()));
        if let Err(e) = installed {
            tracing::error!("{e}");
            return false;
        }
        self.applied = snapshot.last_included.index;
        self.applied_term = snapshot.last_included.term;
        self.membership = snapshot.membership;
        self.answer(Vec::new());
        let _ = self.reports.send(ApplyReport::Installed(self.applied));
        true
    }
}

/// Replaces `state` with the leader's snapshot, then saves the snapshot (if this node keeps them).
fn install_and_keep<S: StateMachine>(
    state: &mut S,
    store: Option<&Mutex<SnapshotStore>>,
    last_included: LogId,
    membership: &Membership,
    data: &[u8],
) -> Result<(), String> {
    state
        .restore_from(data)
        .map_err(|e| format!("could not install the leader's snapshot: {e}"))?;
    let Some(store) = store else { return Ok(()) };
    let store = store
        .lock()
        .map_err(|_| "the snapshot store lock is poisoned".to_string())?;
    store
        .save(last_included, membership, data, 2)
        .map(|_| ())
        .map_err(|e| format!("could not save the leader's snapshot: {e}"))
}

/// Writes a taken snapshot durably, then hands it to the raft loop (or reports the failure to
/// whoever asked for it).
fn save_taken(
    store: &Mutex<SnapshotStore>,
    id: LogId,
    membership: &Membership,
    taken: Taken,
    sender: &mpsc::UnboundedSender<ApplyReport>,
) {
    let saved = match store.lock() {
        Ok(store) => store
            .save(id, membership, &taken.data, 2)
            .map_err(|e| e.to_string()),
        Err(_) => Err("the snapshot store lock is poisoned".to_string()),
    };
    match saved {
        Ok(_) => {
            let _ = sender.send(ApplyReport::Taken(taken));
        }
        Err(e) => {
            tracing::error!("could not save a snapshot: {e}");
            if let Some(reply) = taken.reply {
                let _ = reply.send(Err(AdminError::Snapshot(e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftengine::{EntryPayload, SnapshotJob};

    /// Appends every command; a snapshot is the list so far, taken with or without a copy.
    #[derive(Default)]
    struct Log {
        commands: Vec<u8>,
        copies: bool,
    }

    impl StateMachine for Log {
        fn apply(&mut self, _: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
            self.commands.extend_from_slice(command);
            Ok(Vec::new())
        }
        fn snapshot(&self) -> Vec<u8> {
            self.commands.clone()
        }
        fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
            self.commands = snapshot.to_vec();
            Ok(())
        }
        fn snapshot_job(&self) -> Option<SnapshotJob> {
            let copy = self.commands.clone();
            self.copies.then(|| Box::new(move || copy) as SnapshotJob)
        }
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> ApplyMsg {
        ApplyMsg::Entries(
            range
                .map(|i| {
                    let entry = Entry {
                        term: Term(1),
                        index: LogIndex(i),
                        payload: EntryPayload::Command(vec![i as u8]),
                    };
                    (entry, None)
                })
                .collect(),
        )
    }

    /// A snapshot asked for between entries of one batch covers exactly the entries before it,
    /// though the entries after it are applied while (or before) it is serialized.
    async fn snapshot_mid_batch_covers_what_came_before(copies: bool) {
        let state = Arc::new(RwLock::new(Log {
            copies,
            ..Log::default()
        }));
        let (applied_tx, mut applied) = watch::channel(LogIndex(0));
        let (taken_tx, mut taken) = mpsc::unbounded_channel();
        let applier = Applier::new(
            state.clone(),
            applied_tx,
            Arc::new(Metrics::default()),
            None,
            Membership::default(),
            None,
            taken_tx,
        );
        let (inbox, rx) = mpsc::unbounded_channel();
        for msg in [
            entries(1..=3),
            ApplyMsg::TakeSnapshot { reply: None },
            entries(4..=5),
        ] {
            inbox.send(msg).expect("send");
        }
        let task = tokio::spawn(applier.run(rx));
        let Some(ApplyReport::Taken(snapshot)) = taken.recv().await else {
            panic!("a snapshot taken");
        };
        assert_eq!(snapshot.index, LogIndex(3));
        assert_eq!(snapshot.data, vec![1, 2, 3]);
        applied
            .wait_for(|index| *index == LogIndex(5))
            .await
            .expect("applied");
        assert_eq!(state.read().expect("lock").commands, vec![1, 2, 3, 4, 5]);
        drop(inbox);
        task.await.expect("the apply task ends");
    }

    #[tokio::test]
    async fn a_snapshot_from_a_copy_covers_the_entries_before_it() {
        snapshot_mid_batch_covers_what_came_before(true).await;
    }

    #[tokio::test]
    async fn a_serialized_snapshot_covers_the_entries_before_it() {
        snapshot_mid_batch_covers_what_came_before(false).await;
    }
}
