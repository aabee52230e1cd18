//! The Raft node: a deterministic state machine from inputs to [`Output`]s.
//!
//! This file holds the node's state, its public inputs and the output plumbing (persistence
//! sequencing, held messages). Elections live in `election.rs`, replication in `replication.rs`.

use crate::config::{Config, ConfigError};
use crate::event::{Event, RoleKind};
use crate::forward::Forwarded;
use crate::log::RaftLog;
use crate::membership::{Configurations, Membership};
use crate::message::{Message, MessageBody};
use crate::output::{CommandRejected, CommittedEntry, FatalError, Output};
use crate::progress::Progress;
use crate::read::ReadRounds;
use crate::storage::{LogWrite, PersistBatch, StoredState};
use crate::types::{Entry, EntryPayload, HardState, LogIndex, NodeId, RequestId, Term};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

/// Role-only state lives inside the role, so a follower cannot touch a leader's progress map.
#[derive(Debug)]
pub(crate) enum Role {
    Follower,
    PreCandidate(Election),
    Candidate(Election),
    /// Boxed: a leader's state is large and a node is a follower most of its life.
    Leader(Box<Leadership>),
}

#[derive(Debug, Default)]
pub(crate) struct Election {
    pub votes: BTreeMap<NodeId, bool>,
}

#[derive(Debug)]
pub(crate) struct Leadership {
    pub progress: BTreeMap<NodeId, Progress>,
    /// Client requests proposed here and not yet committed, by log index.
    pub pending: BTreeMap<LogIndex, RequestId>,
    pub quorum_elapsed: u64,
    pub heartbeat_elapsed: u64,
    /// Entries were appended since the last broadcast; sent when the output is taken, so that
    /// proposals made between two outputs travel in one message.
    pub append_dirty: bool,
    pub reads: ReadRounds,
    /// Forwarded commands placed in this term, so a duplicated `Propose` message is answered
    /// with the same place instead of being appended twice.
    pub forwarded: crate::forward::PlacedForwards,
    /// Followers waiting for the commit index to reach an index (a command they forwarded, a
    /// read index they were given): with `Config::notify_commit` they are told at once.
    pub commit_waiters: BTreeMap<NodeId, LogIndex>,
    pub transfer: Option<crate::transfer::Transfer>,
    /// Index of this term's first entry: membership changes wait until it commits (thesis §4.1,
    /// the fix for single-server changes across leader changes).
    pub term_start: LogIndex,
    /// Odd while a transfer is under way, even otherwise; AppendEntries carry it, so followers
    /// can tell a late `TimeoutNow` from a current one.
    pub transfer_generation: u64,
    /// The membership change under way, one at a time.
    pub change: Option<crate::reconfigure::PendingChange>,
    /// This leader is not in the committed configuration: it hands leadership over, then steps
    /// down even if the handover fails.
    pub stepping_down: bool,
}

/// Bad input the node refuses; nothing in the node changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    /// The sender is in no configuration this node knows.
    #[error("message from {0}, which is not a member of the cluster")]
    UnknownSender(NodeId),
    /// The message's `to` is another node.
    #[error("message addressed to {0}, not to this node")]
    WrongRecipient(NodeId),
    /// An AppendEntries whose entries are not contiguous or do not follow `prev_log_index`.
    #[error("append entries from {from} is malformed: {reason}")]
    MalformedAppend {
        /// The sender.
        from: NodeId,
        /// What is wrong, in words.
        reason: &'static str,
    },
    /// A term, index or offset beyond [`MAX_TERM`](crate::MAX_TERM) or
    /// [`MAX_INDEX`](crate::MAX_INDEX).
    #[error("message from {from} carries a {field} beyond the protocol's limits")]
    OutOfRange {
        /// The sender.
        from: NodeId,
        /// The first field out of range.
        field: &'static str,
    },
    /// The node stopped on a fatal error and takes no more input.
    #[error("the node stopped on a fatal error: {0}")]
    Stopped(FatalError),
}

/// A driver broke the contract of an input; nothing in the node changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DriverError {
    /// `persisted(seq)` names a batch the node never emitted.
    #[error(
        "persisted({seq}) reports a batch that was never issued (the last issued is {issued})"
    )]
    UnknownBatch {
        /// The reported sequence number.
        seq: u64,
        /// The last sequence number the node emitted.
        issued: u64,
    },
    /// `persisted(seq)` is below an earlier report.
    #[error("persisted({seq}) arrived after persisted({reported}): reports must not go backwards")]
    OutOfOrder {
        /// The reported sequence number.
        seq: u64,
        /// The highest one reported before.
        reported: u64,
    },
    /// `snapshot_installed(index)` does not match the install the node handed out.
    #[error(
        "snapshot_installed({index}) does not name the snapshot being installed ({expected:?})"
    )]
    NoSuchInstall {
        /// The index reported.
        index: LogIndex,
        /// The index of the snapshot being installed, if any.
        expected: Option<LogIndex>,
    },
}

/// Why a node could not be created or restarted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stored entries skip an index (the storage is damaged or buggy).
    #[error("stored log is not contiguous at index {0}")]
    GapInLog(LogIndex),
    /// Restarting behind a purged prefix needs the snapshot that replaced it.
    #[error("stored log starts after a purged prefix (through index {0}) but no snapshot covering it was given")]
    PurgedLog(LogIndex),
}

/// A snapshot of a node's state for status pages, tests and traces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: RoleKind,
    /// Its current term.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub voted_for: Option<NodeId>,
    /// The leader it knows, if any.
    pub leader: Option<NodeId>,
    /// The index of its last entry (written, not necessarily durable).
    pub last_index: LogIndex,
    /// The term of its last entry.
    pub last_term: Term,
    /// Its commit index.
    pub commit: LogIndex,
    /// For a leader: (follower, match index, next index).
    pub progress: Vec<(NodeId, LogIndex, LogIndex)>,
    /// The configuration in effect.
    pub membership: Membership,
    /// Repairing lost data (see [`RaftNode::is_repairing`]).
    pub repairing: bool,
}

/// One Raft node. Feed it inputs (`step`, `tick`, `propose`, `persisted`, ...), then carry out
/// [`RaftNode::take_output`].
#[derive(Debug)]
pub struct RaftNode {
    pub(crate) config: Config,
    pub(crate) hard: HardState,
    pub(crate) log: RaftLog,
    pub(crate) commit: LogIndex,
    /// Highest index handed to the driver in `Output::committed`.
    pub(crate) committed_emitted: LogIndex,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// Ticks since the last election-timer reset (a valid heartbeat, a vote granted, a campaign).
    pub(crate) election_elapsed: u64,
    randomized_timeout: u64,
    rng_state: u64,
    open_writes: Vec<LogWrite>,
    /// Sequence number the open batch will get.
    next_seq: u64,
    persisted_seq: u64,
    /// Log length at the end of each issued, not yet persisted batch.
    batch_last_index: VecDeque<(u64, LogIndex)>,
    /// The batch holding the latest hard-state write: a leader's appends may outrun its log
    /// writes, never the term they carry.
    hard_state_seq: u64,
    /// Highest index known durable on this node (the leader counts itself only up to here).
    pub(crate) persisted_index: LogIndex,
    /// Messages waiting for the batch they depend on, in send order.
    held: VecDeque<(u64, Message)>,
    pub(crate) out: Output,
    stopped: Option<FatalError>,
    /// Reads this follower asked its leader to confirm.
    pub(crate) forwarded_reads: BTreeSet<RequestId>,
    /// Commands this follower forwarded to its leader.
    pub(crate) forwarded: Forwarded,
    /// The latest snapshot: the state up to the log's start.
    pub(crate) snapshot: Option<crate::snapshot::Snapshot>,
    /// The policy asked the driver for a snapshot that has not arrived yet.
    pub(crate) snapshot_requested: bool,
    /// Chunks of a snapshot being received from the leader.
    pub(crate) incoming_snapshot: Option<(crate::storage::LogId, Vec<u8>)>,
    /// Every configuration this node knows (its log's and the one before its log).
    pub(crate) configs: Configurations,
    /// Some configuration named this node; a committed one that does not makes it removed.
    pub(crate) was_member: bool,
    /// A committed configuration left this node out.
    pub(crate) removed: bool,
    /// Membership changes this node forwarded to its leader.
    pub(crate) forwarded_changes: BTreeMap<RequestId, NodeId>,
    /// When each forwarded request went out (they expire unanswered).
    pub(crate) forward_clock: crate::forward::ForwardClock,
    /// Reads the leader confirmed at an index this node does not know committed yet.
    pub(crate) reads_awaiting_commit: BTreeMap<LogIndex, Vec<RequestId>>,
    /// The commit index last written to storage (`LogWrite::Commit`).
    commit_written: LogIndex,
    /// The node lost data it had made durable: it may have acknowledged entries it no longer
    /// holds, so it neither votes nor counts towards a majority until a leader has repaired its
    /// log (protocol-aware recovery, Alagappan et al., FAST '18).
    pub(crate) repairing: bool,
    /// How many data losses this node has repaired or is repairing (durable); its answers to
    /// AppendEntries carry it.
    pub(crate) repair_epoch: u64,
    /// The node restarted with a term: for the minimum election timeout it refuses votes as if
    /// it had just heard from a leader, since it may have acknowledged a leader's heartbeat
    /// just before it stopped (that leader's lease counts on it).
    pub(crate) restarted_quiet: bool,
    /// A snapshot handed to the driver that it has not reported installed yet.
    pub(crate) pending_install: Option<crate::snapshot::PendingInstall>,
    /// The highest transfer generation heard from the leader of the current term.
    pub(crate) transfer_seen: u64,
    /// Command bytes of the log's entries that the snapshot covers (the retained tail), so the
    /// size policy counts only what follows the snapshot.
    pub(crate) snapshot_tail_bytes: u64,
}

impl RaftNode {
    /// A node with an empty log.
    pub fn new(config: Config) -> Result<RaftNode, StartError> {
        RaftNode::restart(config, StoredState::default())
    }

    /// A node resuming from what its storage kept. Volatile state (commit index, role, leader)
    /// starts afresh, as the paper prescribes.
    pub fn restart(config: Config, stored: StoredState) -> Result<RaftNode, StartError> {
        RaftNode::restart_from_snapshot(config, stored, None)
    }

    /// A node resuming from its storage and, when the log starts after a compacted prefix, the
    /// snapshot that covers it (the driver restores its state machine from the same snapshot).
    pub fn restart_from_snapshot(
        config: Config,
        stored: StoredState,
        snapshot: Option<crate::snapshot::Snapshot>,
    ) -> Result<RaftNode, StartError> {
        config.validate()?;
        let purged = stored.log_start;
        let covered = snapshot
            .as_ref()
            .map_or(LogIndex(0), |s| s.last_included.index);
        if purged.index > covered {
            return Err(StartError::PurgedLog(purged.index));
        }
        let mut log = RaftLog::from_parts(purged, stored.entries).map_err(StartError::GapInLog)?;
        let mut pending = Vec::new();
        if let Some(snapshot) = snapshot
            .as_ref()
            .filter(|s| s.last_included.index > purged.index)
        {
            let id = snapshot.last_included;
            // A log that holds the snapshot's last entry keeps the entries before it: the tail
            // retained behind the snapshot. One that does not is a snapshot installed from the
            // leader whose purge a crash prevented: the snapshot replaces the log up to it.
            if log.term(id.index) != Some(id.term) {
                log.compact(id);
                pending.push(LogWrite::Purge {
                    through: id.index,
                    term: id.term,
                });
            }
        }
        let start = log.start();
        let applied = start.index.max(covered);
        // The configuration at the log's start. With a retained tail that holds configuration
        // entries, the snapshot's is later than the one at the start; indexes below the
        // snapshot are never asked about after a restart, so it stands in.
        let base = snapshot.as_ref().map_or_else(
            || Membership::with_voters(config.voters.iter().copied()),
            |s| s.membership.clone(),
        );
        let mut configs = Configurations::new(start.index, base);
        for entry in log.slice(start.index.next(), log.last_index()) {
            if let EntryPayload::Membership(m) = &entry.payload {
                configs.appended(entry.index, m.clone());
            }
        }
        let persisted_index = log.last_index();
        let last_index = log.last_index();
        let stored_commit = stored.commit;
        let lost_committed = stored_commit > last_index;
        let data_loss = stored.data_loss.clone().or_else(|| {
            lost_committed.then(|| crate::storage::DataLoss {
                reason: format!(
                    "the log ends at {last_index} but index {stored_commit} was committed"
                ),
            })
        });
        let restarted_quiet = stored.hard_state.term > Term(0) && config.check_quorum;
        #[cfg(feature = "mutations")]
        let restarted_quiet = restarted_quiet
            && config.mutation != Some(crate::config::Mutation::VoteRightAfterRestart);
        let mut node = RaftNode {
            rng_state: config.jitter_seed ^ 0x9E37_79B9_7F4A_7C15,
            config,
            hard: stored.hard_state,
            log,
            commit: applied,
            committed_emitted: applied,
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            randomized_timeout: 0,
            open_writes: pending,
            next_seq: 1,
            persisted_seq: 0,
            batch_last_index: VecDeque::new(),
            hard_state_seq: 0,
            persisted_index,
            held: VecDeque::new(),
            out: Output::default(),
            stopped: None,
            forwarded_reads: BTreeSet::new(),
            forwarded: Forwarded::default(),
            snapshot,
            snapshot_requested: false,
            incoming_snapshot: None,
            configs,
            was_member: false,
            removed: false,
            forwarded_changes: BTreeMap::new(),
            forward_clock: Default::default(),
            reads_awaiting_commit: BTreeMap::new(),
            commit_written: stored_commit,
            repairing: false,
            repair_epoch: stored.repair_epoch,
            restarted_quiet,
            pending_install: None,
            transfer_seen: 0,
            snapshot_tail_bytes: 0,
        };
        node.was_member = node.configs.mentions(node.config.id);
        node.snapshot_tail_bytes = node.log.payload_bytes_through(applied);
        node.reset_election_timer();
        if let Some(loss) = data_loss {
            node.start_repair(&loss.reason);
        }
        // What was known committed before the restart is applied again at once (etcd keeps
        // the commit index with its hard state too).
        node.advance_commit(stored_commit.min(last_index));
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        self.check_running()?;
        if msg.to != self.config.id {
            return Err(StepError::WrongRecipient(msg.to));
        }
        if msg.from == self.config.id {
            return Err(StepError::UnknownSender(msg.from));
        }
        if !self.may_hear_from(&msg) {
            // A late answer from a node no longer followed (removed, or its catch-up aborted)
            // is simply stale; a stranger asking for something is refused.
            return if msg.body.is_response() {
                Ok(())
            } else {
                Err(StepError::UnknownSender(msg.from))
            };
        }
        if let Some(field) = msg.out_of_range_field() {
            return Err(StepError::OutOfRange {
                from: msg.from,
                field,
            });
        }
        if let MessageBody::AppendEntries {
            prev_log_index,
            entries,
            ..
        } = &msg.body
        {
            check_append_shape(msg.from, *prev_log_index, entries)?;
        }
        self.step_checked(msg)
    }

    /// One unit of time. Followers and candidates count towards an election timeout, leaders
    /// towards the next heartbeat and the check-quorum deadline.
    pub fn tick(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        self.expire_forwarded();
        if matches!(self.role, Role::Leader(_)) {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            // Learners, joining and removed nodes never campaign (`campaign` checks).
            if self.election_elapsed >= self.randomized_timeout {
                self.campaign(false);
            }
        }
    }

    /// A client command. At the leader it is appended; elsewhere it is rejected with a redirect
    /// or a retry (see `Output::rejected`).
    pub fn propose(&mut self, id: RequestId, command: Vec<u8>) {
        if self.stopped.is_some() {
            self.out.rejected.push((id, CommandRejected::Retry));
            return;
        }
        let limit = self.config.max_command_bytes;
        if command.len() > limit {
            let size = command.len();
            self.out
                .rejected
                .push((id, CommandRejected::TooLarge { size, limit }));
            return;
        }
        if self.transferring() {
            self.out.rejected.push((id, CommandRejected::Retry));
            return;
        }
        let term = self.hard.term;
        let index = self.log.last_index().next();
        match &mut self.role {
            Role::Leader(leadership) => {
                leadership.pending.insert(index, id);
                leadership.append_dirty = true;
            }
            _ => {
                let rejection = match self.leader {
                    Some(leader) if leader != self.config.id && self.config.forward_proposals => {
                        self.forward_proposal(leader, id, command);
                        return;
                    }
                    Some(leader) if leader != self.config.id => {
                        CommandRejected::Redirect { leader }
                    }
                    _ => CommandRejected::Retry,
                };
                self.out.rejected.push((id, rejection));
                return;
            }
        }
        self.append_entry(Entry {
            term,
            index,
            payload: EntryPayload::Command(command),
        });
    }

    /// The driver made every batch up to `seq` durable. A `seq` that was never issued, or one
    /// below an earlier report, is refused: releasing held votes and acknowledgements on a
    /// wrong report would promise state that is not on disk.
    pub fn persisted(&mut self, seq: u64) -> Result<(), DriverError> {
        let issued = self.next_seq - 1;
        #[cfg(feature = "mutations")]
        let issued = if self.mutated(crate::config::Mutation::UncheckedPersisted) {
            u64::MAX
        } else {
            issued
        };
        if seq > issued {
            return Err(DriverError::UnknownBatch { seq, issued });
        }
        if seq < self.persisted_seq {
            return Err(DriverError::OutOfOrder {
                seq,
                reported: self.persisted_seq,
            });
        }
        if seq == self.persisted_seq {
            return Ok(());
        }
        self.persisted_seq = seq;
        while let Some((batch, last)) = self.batch_last_index.front().copied() {
            if batch > seq {
                break;
            }
            self.batch_last_index.pop_front();
            self.persisted_index = last.min(self.log.last_index());
        }
        while self.held.front().is_some_and(|(needs, _)| *needs <= seq) {
            if let Some((_, msg)) = self.held.pop_front() {
                self.out.messages.push(msg);
            }
        }
        if matches!(self.role, Role::Leader(_)) {
            self.maybe_commit();
        }
        Ok(())
    }

    /// Stops the node because applying a committed entry failed in a way other replicas may not
    /// share. The driver should also mark the storage broken (see `Output::fatal`).
    pub fn fail(&mut self, error: FatalError) {
        self.stop(error);
    }

    /// Everything the driver must now do. Pending appends of a leader are sent here.
    pub fn take_output(&mut self) -> Output {
        self.maybe_request_snapshot();
        let dirty = matches!(&self.role, Role::Leader(l) if l.append_dirty);
        if dirty {
            if let Role::Leader(leadership) = &mut self.role {
                leadership.append_dirty = false;
            }
            self.broadcast_append();
        }
        self.notify_commit_waiters();
        if !self.open_writes.is_empty() {
            if self.commit > self.commit_written {
                // Every entry up to the commit index is in this batch or an earlier one.
                self.open_writes.push(LogWrite::Commit(self.commit));
                self.commit_written = self.commit;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.batch_last_index
                .push_back((seq, self.log.last_index()));
            let writes = std::mem::take(&mut self.open_writes);
            self.out.persist = Some(PersistBatch { seq, writes });
        }
        std::mem::take(&mut self.out)
    }

    /// Changes the election timeout range (a driver or harness tuning timers at run time).
    pub fn set_election_timeout(&mut self, min_ticks: u64, max_ticks: u64) {
        self.config.election_timeout_min_ticks = min_ticks;
        self.config.election_timeout_max_ticks = max_ticks.max(min_ticks);
        self.reset_election_timer();
    }

    // ----- queries ------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration it was started with (the initial voters, not the membership in effect).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its current role.
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower => RoleKind::Follower,
            Role::PreCandidate(_) => RoleKind::PreCandidate,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// Its current term.
    pub fn term(&self) -> Term {
        self.hard.term
    }

    /// Its term and vote as last handed to storage (durable once reported `persisted`).
    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// The leader of its current term, if known (itself when it leads).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// The configuration in effect (the last one in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        self.configs.latest().1
    }

    /// The configuration in effect and the index of its entry (the log's start index when it
    /// came with a snapshot or is the initial one).
    pub fn membership_entry(&self) -> (LogIndex, &Membership) {
        self.configs.latest()
    }

    /// The configuration in effect at `index` (the last one at or before it that this node
    /// knows; the one its log starts with for compacted indexes).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.configs.at(index)
    }

    /// A membership change is under way here: this leader is catching up new voters or
    /// committing a configuration, or the configuration in effect is not known committed.
    pub fn membership_change_in_progress(&self) -> bool {
        let leading_one = matches!(&self.role, Role::Leader(l) if l.change.is_some());
        leading_one || self.configs.latest().0 > self.commit
    }

    /// The configuration known committed.
    pub fn committed_membership(&self) -> &Membership {
        self.configs.at(self.commit)
    }

    /// A committed configuration left this node out: it no longer takes part.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Its in-memory view of the log (entries after the compacted prefix).
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// The fatal error it stopped on, if any; a stopped node refuses all input.
    pub fn is_stopped(&self) -> Option<&FatalError> {
        self.stopped.as_ref()
    }

    /// The node lost durable data and is being repaired by a leader: until then it neither
    /// votes nor counts towards any majority (see [`StoredState::data_loss`]).
    pub fn is_repairing(&self) -> bool {
        self.repairing
    }

    /// A summary of its state, for status pages and tests.
    pub fn status(&self) -> Status {
        let progress = match &self.role {
            Role::Leader(l) => l
                .progress
                .iter()
                .map(|(id, p)| (*id, p.match_index, p.next_index))
                .collect(),
            _ => Vec::new(),
        };
        Status {
            id: self.config.id,
            role: self.role(),
            term: self.hard.term,
            voted_for: self.hard.voted_for,
            leader: self.leader,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            commit: self.commit,
            progress,
            membership: self.membership().clone(),
            repairing: self.repairing,
        }
    }

    // ----- shared mechanics ---------------------------------------------------------------

    fn check_running(&self) -> Result<(), StepError> {
        match &self.stopped {
            Some(error) => Err(StepError::Stopped(error.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn stop(&mut self, error: FatalError) {
        if self.stopped.is_none() {
            self.stopped = Some(error.clone());
            self.out.fatal = Some(error);
        }
    }

    /// Queues a message. A leader's AppendEntries may go before its own disk write (thesis
    /// §10.2.1); anything else waits until every write issued so far is durable, so a vote or an
    /// append success never outruns the state it promises.
    pub(crate) fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let msg = Message {
            from: self.config.id,
            to,
            term,
            body,
        };
        // A leader's AppendEntries goes out before its own log write (thesis §10.2.1); so does
        // its answer to a forwarded command, which only says where the command was placed. Not
        // before its term is durable, though: a leader elected by its own vote alone (a single
        // voter) that crashed first would lead the same term again with another log.
        let leader_append = matches!(self.role, Role::Leader(_))
            && self.hard_state_seq <= self.persisted_seq
            && matches!(
                msg.body,
                MessageBody::AppendEntries { .. } | MessageBody::ProposeResponse { .. }
            );
        let needs = if self.open_writes.is_empty() {
            self.next_seq - 1
        } else {
            self.next_seq
        };
        if leader_append || (needs <= self.persisted_seq && self.held.is_empty()) {
            self.out.messages.push(msg);
        } else {
            self.held.push_back((needs, msg));
        }
    }

    /// Queues an answer that promises nothing on disk but the term it carries (an answer to a
    /// heartbeat): it goes out once the term is durable, ahead of answers that wait for log
    /// writes. So a slow sync (a large command, a stalling disk) does not silence a follower for
    /// longer than it takes, and its leader keeps its quorum and its lease.
    pub(crate) fn send_after_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let msg = Message {
            from: self.config.id,
            to,
            term,
            body,
        };
        if self.hard_state_seq <= self.persisted_seq {
            self.out.messages.push(msg);
        } else {
            self.held.push_back((self.hard_state_seq, msg));
        }
    }

    pub(crate) fn write(&mut self, write: LogWrite) {
        self.open_writes.push(write);
    }

    pub(crate) fn set_hard_state(&mut self, term: Term, voted_for: Option<NodeId>) {
        let term_changed = term != self.hard.term;
        if term_changed {
            self.transfer_seen = 0;
        }
        self.hard = HardState { term, voted_for };
        #[cfg(feature = "mutations")]
        if self.mutated(crate::config::Mutation::VoteNotPersisted) {
            self.write(LogWrite::HardState(HardState {
                term,
                voted_for: None,
            }));
            self.hard_state_seq = self.next_seq;
            if term_changed {
                self.out.events.push(Event::TermChanged { term });
            }
            return;
        }
        self.write(LogWrite::HardState(self.hard));
        self.hard_state_seq = self.next_seq;
        if term_changed {
            self.out.events.push(Event::TermChanged { term });
        }
    }

    pub(crate) fn append_entry(&mut self, entry: Entry) {
        if let EntryPayload::Membership(m) = &entry.payload {
            // Thesis §4.1: a configuration is in effect as soon as it is in the log.
            self.configs.appended(entry.index, m.clone());
            self.log.push(entry.clone());
            self.membership_changed();
        } else {
            self.log.push(entry.clone());
        }
        // Consecutive appends share one write (one allocation, one record run in the log).
        match self.open_writes.last_mut() {
            Some(LogWrite::Append(entries)) => entries.push(entry),
            _ => self.write(LogWrite::Append(vec![entry])),
        }
    }

    /// Removes entries from `from` on; refuses (and stops the node) if any of them is committed.
    /// Whether a test build switched `mutation` on.
    #[cfg(feature = "mutations")]
    pub(crate) fn mutated(&self, mutation: crate::config::Mutation) -> bool {
        self.config.mutation == Some(mutation)
    }

    pub(crate) fn truncate_log(&mut self, from: LogIndex) -> bool {
        #[cfg(feature = "mutations")]
        if self.mutated(crate::config::Mutation::TruncateCommitted) && from <= self.commit {
            self.log.truncate_from(from);
            self.write(LogWrite::TruncateFrom(from));
            self.commit = from.prev();
            self.committed_emitted = self.committed_emitted.min(self.commit);
            self.persisted_index = self.persisted_index.min(from.prev());
            return true;
        }
        if from <= self.commit {
            self.stop(FatalError::TruncateCommitted {
                index: from,
                commit: self.commit,
            });
            return false;
        }
        self.log.truncate_from(from);
        self.write(LogWrite::TruncateFrom(from));
        if self.configs.truncated(from) {
            // The overwritten configuration never was: the one before it is back.
            self.membership_changed();
        }
        let keep = from.prev();
        self.persisted_index = self.persisted_index.min(keep);
        for (_, last) in self.batch_last_index.iter_mut() {
            *last = (*last).min(keep);
        }
        self.out.events.push(Event::LogTruncated { from });
        true
    }

    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.leader = leader;
            self.out.events.push(Event::LeaderChanged { leader });
            self.fail_forwarded_reads();
            self.fail_forwarded_proposals();
            self.fail_forwarded_changes();
        }
    }

    pub(crate) fn set_role(&mut self, role: Role) {
        let before = self.role();
        self.role = role;
        let after = self.role();
        if before != after {
            self.out.events.push(Event::RoleChanged {
                role: after,
                term: self.hard.term,
            });
        }
    }

    /// Raises the commit index and hands the newly committed entries to the driver.
    pub(crate) fn advance_commit(&mut self, commit: LogIndex) {
        if commit <= self.commit {
            return;
        }
        self.commit = commit;
        self.out.events.push(Event::CommitAdvanced { commit });
        let from = self.committed_emitted.next();
        let entries = self.log.slice(from, commit).to_vec();
        for entry in entries {
            let request = match &mut self.role {
                Role::Leader(l) => l.pending.remove(&entry.index),
                _ => None,
            }
            .or_else(|| self.forwarded_request_at(&entry));
            self.out.committed.push(CommittedEntry { entry, request });
        }
        self.committed_emitted = commit;
        self.release_reads_through(commit);
        self.membership_committed();
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let (min, max) = (
            self.config.election_timeout_min_ticks,
            self.config.election_timeout_max_ticks,
        );
        self.randomized_timeout = min + self.next_random() % (max - min + 1);
    }

    /// splitmix64: jitter without a randomness dependency; the seed comes from the driver.
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Every voter of the configuration in effect but this node.
    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.membership()
            .all_voters()
            .into_iter()
            .filter(|v| *v != me)
            .collect()
    }
}

/// Entries must follow `prev_log_index` without gaps; anything else is a broken peer.
fn check_append_shape(from: NodeId, prev: LogIndex, entries: &[Entry]) -> Result<(), StepError> {
    for (i, e) in entries.iter().enumerate() {
        if e.index != prev.plus(i as u64 + 1) {
            return Err(StepError::MalformedAppend {
                from,
                reason: "entry indexes not contiguous",
            });
        }
        if i > 0 && e.term < entries[i - 1].term {
            return Err(StepError::MalformedAppend {
                from,
                reason: "entry terms decrease",
            });
        }
    }
    Ok(())
}
