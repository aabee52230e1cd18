//! The apply task: applies committed entries in order, answers the writes they carry, and
//! releases confirmed reads once their index is applied. It runs beside the raft loop, so
//! applying never delays replication. Taking a snapshot and installing one take tens to
//! hundreds of milliseconds for a large state: that work runs on blocking threads, so the thread
//! that runs the raft loop (possibly this one) keeps answering heartbeats. Applying waits for an
//! install, and for a snapshot's copy of the state (or its serialization, for a state machine
//! without [`StateMachine::snapshot_job`]).

use super::failure::{panic_message, Failure, FailureReporter};
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

impl ApplyMsg {
    /// The messages for one output's committed entries and the snapshot it installs. The core
    /// may emit, in one output, entries it committed before a snapshot arrived in the same turn:
    /// those at or below the snapshot's last included index are applied (and their clients
    /// answered) first, then the snapshot replaces the state, then the rest follow.
    pub fn committed(
        entries: Vec<(Entry, Option<WriteReply>)>,
        install: Option<Snapshot>,
    ) -> Vec<ApplyMsg> {
        let Some(snapshot) = install else {
            return if entries.is_empty() {
                Vec::new()
            } else {
                vec![ApplyMsg::Entries(entries)]
            };
        };
        let covered = snapshot.last_included.index;
        let (before, after): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(e, _)| e.index <= covered);
        let mut msgs = Vec::with_capacity(3);
        if !before.is_empty() {
            msgs.push(ApplyMsg::Entries(before));
        }
        msgs.push(ApplyMsg::Install(snapshot));
        if !after.is_empty() {
            msgs.push(ApplyMsg::Entries(after));
        }
        msgs
    }

    /// Answers what this message waits for when it will never be carried out: a write's outcome
    /// is unknown (its entry is committed, but its result will not be known here), a read fails.
    pub fn abandon(self, why: &str) {
        match self {
            ApplyMsg::Entries(entries) => {
                for reply in entries.into_iter().filter_map(|(_, reply)| reply) {
                    let _ = reply.send(Err(ClientError::OutcomeUnknown(why.to_string())));
                }
            }
            ApplyMsg::Read { reply, .. } => {
                let _ = reply.send(Err(ClientError::Stopped(why.to_string())));
            }
            ApplyMsg::TakeSnapshot { reply: Some(reply) } => {
                let _ = reply.send(Err(AdminError::Stopped(why.to_string())));
            }
            ApplyMsg::TakeSnapshot { reply: None } | ApplyMsg::Install(_) => {}
        }
    }
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
    /// Snapshots taken (saved durably) and snapshots installed, for the raft loop.
    taken: mpsc::UnboundedSender<ApplyReport>,
    applied_tx: watch::Sender<LogIndex>,
    waiting_reads: BTreeMap<LogIndex, Vec<ReadReply>>,
    metrics: Arc<Metrics>,
    /// Told when applying, snapshotting or installing fails: the node then stops.
    failures: FailureReporter,
}

/// What the clients of a write hear when the node stopped before applying it here.
const STOPPED_BEFORE_APPLYING: &str =
    "the node stopped before applying the command; it is committed but its result is unknown";

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

/// Where the apply task reports: the applied index, snapshots taken, failures.
pub(crate) struct Outlets {
    pub applied: watch::Sender<LogIndex>,
    pub taken: mpsc::UnboundedSender<ApplyReport>,
    pub failures: FailureReporter,
}

impl<S: StateMachine + Send + Sync + 'static> Applier<S> {
    pub fn new(
        state_machine: Arc<RwLock<S>>,
        metrics: Arc<Metrics>,
        from: Option<LogId>,
        membership: Membership,
        snapshots: Option<SnapshotStore>,
        outlets: Outlets,
    ) -> Applier<S> {
        let from = from.unwrap_or_default();
        let Outlets {
            applied: applied_tx,
            taken,
            failures,
        } = outlets;
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
            failures,
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
                    // Nothing more is applied here: what was handed over gets its answer now.
                    batch.for_each(|msg| msg.abandon(STOPPED_BEFORE_APPLYING));
                    inbox.close();
                    while let Ok(msg) = inbox.try_recv() {
                        msg.abandon(STOPPED_BEFORE_APPLYING);
                    }
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
            let state_machine = self.state_machine.clone();
            let Ok(mut state_machine) = state_machine.write() else {
                self.failures.report(Failure::task(
                    "apply task",
                    "the state machine's lock is poisoned",
                ));
                return Stop::Fatal;
            };
            for msg in batch.by_ref() {
                match msg {
                    ApplyMsg::Entries(entries) => {
                        if !self.apply_entries(&mut *state_machine, entries, &mut replies) {
                            stop = Stop::Fatal;
                            break;
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

    /// Applies `entries` in order, collecting the writes' answers in `replies`. False if the
    /// state machine failed fatally: the failure is reported, and the writes of the failed
    /// entry and of those after it are answered with an unknown outcome (they are committed).
    fn apply_entries(
        &mut self,
        state_machine: &mut S,
        entries: Vec<(Entry, Option<WriteReply>)>,
        replies: &mut Vec<(WriteReply, Result<Vec<u8>, ClientError>)>,
    ) -> bool {
        let mut entries = entries.into_iter();
        while let Some((entry, reply)) = entries.next() {
            if entry.index <= self.applied {
                // Covered by an installed snapshot: its effect is in, its result is not known.
                if let Some(reply) = reply {
                    let why = "the command was applied through a snapshot; its result is unknown";
                    let _ = reply.send(Err(ClientError::OutcomeUnknown(why.into())));
                }
                continue;
            }
            let result = match &entry.payload {
                EntryPayload::TermStart => Ok(Vec::new()),
                EntryPayload::Membership(m) => {
                    self.membership = m.clone();
                    Ok(Vec::new())
                }
                EntryPayload::Command(command) => state_machine.apply(entry.index, command),
            };
            let answer = match result {
                Ok(value) => Ok(value),
                Err(ApplyError::Rejected(reason)) => Err(ClientError::Rejected(reason)),
                Err(ApplyError::Fatal(reason)) => {
                    let failure = Failure::StateMachine {
                        index: entry.index,
                        reason,
                    };
                    let why = failure.to_string();
                    self.failures.report(failure);
                    let unknown = |reply: WriteReply| {
                        let _ = reply.send(Err(ClientError::OutcomeUnknown(why.clone())));
                    };
                    reply.into_iter().for_each(unknown);
                    entries.filter_map(|(_, reply)| reply).for_each(unknown);
                    return false;
                }
            };
            self.applied = entry.index;
            self.applied_term = entry.term;
            if let Some(reply) = reply {
                replies.push((reply, answer));
            }
        }
        true
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
    /// applied meanwhile, but reads and the rest of the runtime go on. `Err` if `work` found the
    /// lock poisoned or the thread panicked.
    async fn on_blocking_thread<R: Send + 'static>(
        &self,
        work: impl FnOnce(&RwLock<S>) -> Option<R> + Send + 'static,
    ) -> Result<R, String> {
        let state_machine = self.state_machine.clone();
        let task = tokio::task::spawn_blocking(move || work(&state_machine));
        match task.await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err("the state machine's lock is poisoned".to_string()),
            Err(e) if e.is_panic() => Err(panic_message(&*e.into_panic())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Snapshots the state as applied so far. Applying waits while the state machine copies its
    /// state (or, if it cannot, serializes it); serializing a copy and making the bytes durable
    /// run on a blocking thread meanwhile. The core hears of the snapshot only once it is
    /// durable, since it then purges the entries it covers.
    async fn take_snapshot(&mut self, reply: Option<SnapshotReply>) -> bool {
        let job = self
            .on_blocking_thread(|state| {
                let state = state.read().ok()?;
                Some(state.snapshot_job().unwrap_or_else(|| {
                    let data = state.snapshot();
                    Box::new(move || data)
                }))
            })
            .await;
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(AdminError::Snapshot(e.clone())));
                }
                self.failures.report(Failure::task("snapshot", e));
                return false;
            }
        };
        let id = LogId {
            index: self.applied,
            term: self.applied_term,
        };
        let (store, sender) = (self.snapshots.clone(), self.taken.clone());
        let (membership, failures) = (self.membership.clone(), self.failures.clone());
        // Nobody awaits this thread: whatever happens on it is reported from it.
        tokio::task::spawn_blocking(move || {
            let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let taken = Taken {
                    index: id.index,
                    data: job(),
                    reply,
                };
                match store {
                    Some(store) => save_taken(&store, id, &membership, taken, &sender),
                    None => {
                        let _ = sender.send(ApplyReport::Taken(taken));
                        Ok(())
                    }
                }
            }));
            let failure = match saved {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Failure::task("snapshot save", e),
                Err(panic) => Failure::task("snapshot save", panic_message(&*panic)),
            };
            failures.report(failure);
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
            .and_then(|installed| installed);
        if let Err(e) = installed {
            self.failures.report(Failure::task("snapshot install", e));
            return false;
        }
        self.applied = snapshot.last_included.index;
        self.applied_term = snapshot.last_included.term;
        self.membership = snapshot.membership;
        self.answer(Vec::new());
        let _ = self.taken.send(ApplyReport::Installed(self.applied));
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

/// Writes a taken snapshot durably, then hands it to the raft loop; or tells whoever asked for
/// it why not, and returns the error (the node stops: a disk that cannot take a snapshot cannot
/// be trusted with the log either, and the log would grow without bound).
fn save_taken(
    store: &Mutex<SnapshotStore>,
    id: LogId,
    membership: &Membership,
    taken: Taken,
    sender: &mpsc::UnboundedSender<ApplyReport>,
) -> Result<(), String> {
    let saved = match store.lock() {
        Ok(store) => store
            .save(id, membership, &taken.data, 2)
            .map_err(|e| e.to_string()),
        Err(_) => Err("the snapshot store lock is poisoned".to_string()),
    };
    match saved {
        Ok(_) => {
            let _ = sender.send(ApplyReport::Taken(taken));
            Ok(())
        }
        Err(e) => {
            if let Some(reply) = taken.reply {
                let _ = reply.send(Err(AdminError::Snapshot(e.clone())));
            }
            Err(e)
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
        let outlets = Outlets {
            applied: applied_tx,
            taken: taken_tx,
            failures: FailureReporter::channel().0,
        };
        let applier = Applier::new(
            state.clone(),
            Arc::new(Metrics::default()),
            None,
            Membership::default(),
            None,
            outlets,
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

    /// One output of the core may carry entries it committed before a snapshot arrived in the
    /// same turn: they are applied and answered first, then the snapshot, then the rest.
    #[tokio::test]
    async fn entries_committed_before_an_install_are_applied_and_answered_first() {
        let state = Arc::new(RwLock::new(Log::default()));
        let (applied_tx, mut applied) = watch::channel(LogIndex(0));
        let outlets = Outlets {
            applied: applied_tx,
            taken: mpsc::unbounded_channel().0,
            failures: FailureReporter::channel().0,
        };
        let applier = Applier::new(
            state.clone(),
            Arc::new(Metrics::default()),
            None,
            Membership::default(),
            None,
            outlets,
        );
        let mut answers = Vec::new();
        let committed = (1..=5)
            .map(|i| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                answers.push(answer);
                let entry = Entry {
                    term: Term(1),
                    index: LogIndex(i),
                    payload: EntryPayload::Command(vec![i as u8]),
                };
                (entry, Some(reply))
            })
            .collect();
        // The leader's snapshot covers 1..=3 (the same commands, applied elsewhere).
        let snapshot = Snapshot {
            last_included: LogId {
                index: LogIndex(3),
                term: Term(1),
            },
            membership: Membership::default(),
            data: Arc::new(vec![1, 2, 3]),
        };
        let (inbox, rx) = mpsc::unbounded_channel();
        for msg in ApplyMsg::committed(committed, Some(snapshot)) {
            inbox.send(msg).expect("send");
        }
        let task = tokio::spawn(applier.run(rx));
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.await.expect("an answer");
            assert_eq!(
                answer,
                Ok(Vec::new()),
                "entry {} has its real result",
                i + 1
            );
        }
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
