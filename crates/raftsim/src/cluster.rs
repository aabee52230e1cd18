//! N raftengine nodes in one process, with per-node inbound and outbound queues. Nothing moves
//! unless the caller moves it; every move is recorded as a trace row.

use crate::counter::Counter;
use crate::disk::{SimDisk, SyncMode};
use crate::recorder::{config_text, NodeView, Recorder};
use crate::trace::RowEvent;
use raftengine::{
    ApplyError, CommandRejected, Config, DriverError, EntryPayload, Event, FatalError, LogStorage,
    MembershipChange, MembershipError, MemoryStorage, Message, MessageBody, NodeId, RaftNode,
    ReadReady, RequestId, RoleKind, StartError, StateMachine, Status, StepError, StorageError,
    Term,
};
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// Upper bound on message moves in one pump or run, so a livelock fails instead of hanging.
pub const MAX_MOVES_PER_RUN: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub nodes: usize,
    /// The first `members` nodes form the initial configuration; the others start empty, as
    /// nodes waiting to be added (0: every node is a member).
    pub members: usize,
    /// A new voter's catch-up: at most this many rounds, aborted after this many ticks without
    /// progress.
    pub catch_up_rounds: u32,
    pub catch_up_stall_ticks: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Followers forward commands to the leader instead of redirecting.
    pub forward_proposals: bool,
    /// Snapshot after this many applied entries (0: only on `snapshot N-k`).
    pub snapshot_after_entries: u64,
    /// Also snapshot once the log holds this many command bytes (0: no size limit).
    pub snapshot_after_log_bytes: u64,
    pub max_snapshot_chunk_bytes: usize,
    /// Entries kept behind a snapshot, and the byte budget for them and for followers' needs
    /// (`Config::log_retention_*`; off by default here, so scenarios show compaction exactly at
    /// the snapshot).
    pub log_retention_entries: u64,
    pub log_retention_bytes: u64,
    pub max_entries_per_message: usize,
    pub election_timeout_ticks: (u64, u64),
    pub heartbeat_interval_ticks: u64,
    /// Lease reads with a lease of this many ticks (0: off).
    pub lease_ticks: u64,
    /// A known protocol bug switched on in every node (test builds only).
    #[cfg(feature = "mutations")]
    pub mutation: Option<raftengine::Mutation>,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            nodes: 3,
            members: 0,
            catch_up_rounds: 10,
            catch_up_stall_ticks: 300,
            pre_vote: true,
            check_quorum: true,
            forward_proposals: false,
            snapshot_after_entries: 0,
            snapshot_after_log_bytes: 0,
            max_snapshot_chunk_bytes: 1 << 20,
            log_retention_entries: 0,
            log_retention_bytes: 0,
            max_entries_per_message: 64,
            election_timeout_ticks: (15, 30),
            heartbeat_interval_ticks: 1,
            lease_ticks: 0,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }
}

/// What a client sees for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Pending,
    Value(String),
    /// The state machine refused the command (deterministically).
    Error(String),
    Redirect(usize),
    Retry,
    LeadershipLost,
    Timeout,
}

/// How a blocked node treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    None,
    /// Messages to and from the node stay queued until it is unblocked.
    Hold,
    /// Messages to and from the node are lost.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HarnessError {
    #[error("there is no node N-{0}")]
    NoSuchNode(usize),
    #[error("N-{0} is crashed")]
    NodeDown(usize),
    #[error("N-{0} is running; crash it first")]
    NodeUp(usize),
    #[error("N-{node} refused to restart: {reason}")]
    RestartRefused { node: usize, reason: String },
    #[error("bad cluster settings: {0}")]
    Settings(String),
    #[error("messages kept moving for {0} moves without settling")]
    NoProgress(usize),
    #[error("the cluster went quiet before {0}")]
    TriggerNotReached(String),
    #[error("N-{0} has no command to wait for")]
    NoCommand(usize),
    #[error("refused: {0}")]
    Refused(String),
}

/// What to stop at while moving messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A message with this trace code was forwarded, optionally by / to given nodes.
    Sent {
        code: String,
        from: Option<usize>,
        to: Option<usize>,
    },
    /// A message with this trace code was handled, optionally by / from given nodes.
    Handled {
        code: String,
        by: Option<usize>,
        from: Option<usize>,
    },
    IsLeader(usize),
    HasLeader(usize),
    LogIndex(usize, u64),
    Commit(usize, u64),
    Applied(usize, u64),
    /// A leader exists and no running voter has a queued message.
    ElectionDone,
    /// The last move wrote a note row for `node` starting with `text` (`CATCH-UP ROUND 2`).
    Note {
        node: usize,
        text: String,
    },
}

#[derive(Debug, Clone)]
struct Move {
    sent: bool,
    code: &'static str,
    from: usize,
    to: usize,
}

struct SimNode {
    config: Config,
    raft: Option<RaftNode>,
    storage: SimDisk,
    /// The newest batch written but not yet synced (manual disks only).
    unsynced_seq: Option<u64>,
    counter: Counter,
    inbound: VecDeque<Message>,
    outbound: VecDeque<Message>,
    block: Block,
    timers: bool,
    last_command: Option<RequestId>,
    results: BTreeMap<RequestId, CommandOutcome>,
    /// Linearizable reads confirmed by the core, served once the counter has applied their index.
    confirmed_reads: Vec<ReadReady>,
    /// Reads of one key (the others read the counter's total).
    read_keys: BTreeMap<RequestId, String>,
    /// The latest snapshot, kept durably (it survives crashes, like a snapshot file).
    snapshot: Option<raftengine::Snapshot>,
    last_view: NodeView,
}

/// The harness. Nodes are numbered 1..=N as in the trace (`N-1`...).
pub struct Cluster {
    nodes: Vec<SimNode>,
    segments: Option<Vec<Vec<usize>>>,
    pub recorder: Recorder,
    /// Everything the nodes reported, as (node, event), in order.
    pub events: Vec<(usize, Event)>,
    /// Inputs a node refused (should stay empty in a healthy run).
    pub step_errors: Vec<(usize, StepError)>,
    /// Reports of the harness (the driver) that a node refused: always a harness bug.
    pub driver_errors: Vec<(usize, DriverError)>,
    /// Bad input a node did not refuse cleanly (`inject-extreme`, `misuse`).
    pub misuse_failures: Vec<(usize, String)>,
    /// Disks that lied: (node, first synced index lost).
    pub data_losses: Vec<(usize, raftengine::LogIndex)>,
    /// What the nodes sent and handled (the amplification check of randomized runs).
    pub traffic: crate::traffic::Traffic,
    next_request: u64,
    last_move: Option<Move>,
    armed: Option<Trigger>,
    fired: bool,
    /// Trace rows are recorded (off for randomized runs, where only the outcome matters).
    recording: bool,
    /// One-way links that lose every message: (from, to).
    cut_links: std::collections::BTreeSet<(usize, usize)>,
    /// Notes for membership events, written after the row of the move that caused them.
    pending_notes: Vec<(usize, String)>,
    /// Notes written since the last move began.
    recent_notes: Vec<(usize, String)>,
}

impl Cluster {
    pub fn new(settings: &ClusterSettings) -> Result<Cluster, HarnessError> {
        if settings.nodes == 0 {
            return Err(HarnessError::Settings(
                "a cluster needs at least one node".into(),
            ));
        }
        let members = match settings.members {
            0 => settings.nodes,
            m if m <= settings.nodes => m,
            m => {
                return Err(HarnessError::Settings(format!(
                    "{m} members but only {} nodes",
                    settings.nodes
                )))
            }
        };
        let voters: Vec<NodeId> = (1..=members as u64).map(NodeId).collect();
        let mut nodes = Vec::new();
        for id in (1..=settings.nodes as u64).map(NodeId) {
            // Nodes beyond the initial members join later: they start with no configuration.
            let initial = if voters.contains(&id) {
                voters.clone()
            } else {
                Vec::new()
            };
            let mut config = Config::new(id, initial);
            config.catch_up_max_rounds = settings.catch_up_rounds;
            config.catch_up_stall_ticks = settings.catch_up_stall_ticks;
            config.pre_vote = settings.pre_vote;
            config.check_quorum = settings.check_quorum;
            config.forward_proposals = settings.forward_proposals;
            config.snapshot_after_entries = settings.snapshot_after_entries;
            config.snapshot_after_log_bytes = settings.snapshot_after_log_bytes;
            config.max_snapshot_chunk_bytes = settings.max_snapshot_chunk_bytes;
            config.log_retention_entries = settings.log_retention_entries;
            config.log_retention_bytes = settings.log_retention_bytes;
            #[cfg(feature = "mutations")]
            {
                config.mutation = settings.mutation;
            }
            config.max_entries_per_message = settings.max_entries_per_message;
            (
                config.election_timeout_min_ticks,
                config.election_timeout_max_ticks,
            ) = settings.election_timeout_ticks;
            config.heartbeat_interval_ticks = settings.heartbeat_interval_ticks;
            if settings.lease_ticks > 0 {
                config.lease_reads = true;
                config.lease_ticks = settings.lease_ticks;
            }
            let raft = RaftNode::new(config.clone()).map_err(|e| settings_error(&e))?;
            let last_view = view_of(&raft, 1);
            nodes.push(SimNode {
                config,
                raft: Some(raft),
                storage: SimDisk::default(),
                unsynced_seq: None,
                counter: Counter::default(),
                inbound: VecDeque::new(),
                outbound: VecDeque::new(),
                block: Block::None,
                timers: false,
                last_command: None,
                results: BTreeMap::new(),
                confirmed_reads: Vec::new(),
                read_keys: BTreeMap::new(),
                snapshot: None,
                last_view,
            });
        }
        Ok(Cluster {
            nodes,
            segments: None,
            recorder: Recorder::new(settings.nodes),
            events: Vec::new(),
            step_errors: Vec::new(),
            driver_errors: Vec::new(),
            misuse_failures: Vec::new(),
            data_losses: Vec::new(),
            traffic: Default::default(),
            next_request: 1,
            last_move: None,
            armed: None,
            fired: false,
            recording: true,
            cut_links: Default::default(),
            pending_notes: Vec::new(),
            recent_notes: Vec::new(),
        })
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn index(&self, node: usize) -> Result<usize, HarnessError> {
        if node == 0 || node > self.nodes.len() {
            return Err(HarnessError::NoSuchNode(node));
        }
        Ok(node - 1)
    }

    fn raft_mut(&mut self, node: usize) -> Result<&mut RaftNode, HarnessError> {
        let i = self.index(node)?;
        self.nodes[i]
            .raft
            .as_mut()
            .ok_or(HarnessError::NodeDown(node))
    }

    /// The node's status, or `None` while it is crashed.
    pub fn status(&self, node: usize) -> Result<Option<Status>, HarnessError> {
        let i = self.index(node)?;
        Ok(self.nodes[i].raft.as_ref().map(RaftNode::status))
    }

    pub fn raft(&self, node: usize) -> Result<Option<&RaftNode>, HarnessError> {
        let i = self.index(node)?;
        Ok(self.nodes[i].raft.as_ref())
    }

    /// The node's durable storage (what a restart would load).
    pub fn storage(&self, node: usize) -> Result<&MemoryStorage, HarnessError> {
        Ok(self.nodes[self.index(node)?].storage.durable())
    }

    pub fn counter(&self, node: usize) -> Result<&Counter, HarnessError> {
        Ok(&self.nodes[self.index(node)?].counter)
    }

    pub fn queued(&self, node: usize) -> Result<(usize, usize), HarnessError> {
        let n = &self.nodes[self.index(node)?];
        Ok((n.inbound.len(), n.outbound.len()))
    }

    // ----- moving messages -------------------------------------------------------------------

    /// Forwards the oldest outbound message of `node`. Returns whether anything moved.
    pub fn forward_one(&mut self, node: usize) -> Result<bool, HarnessError> {
        let i = self.index(node)?;
        self.recent_notes.clear();
        let n = &mut self.nodes[i];
        if n.raft.is_none() || n.block == Block::Hold {
            return Ok(false);
        }
        let Some(msg) = n.outbound.pop_front() else {
            return Ok(false);
        };
        let to = msg.to.0 as usize;
        let delivered = self.reachable(node, to);
        let text = op_text(&msg);
        let cell = match msg.body {
            MessageBody::AppendEntriesResponse { .. } => format!("N-{node}+{text}"),
            _ => format!("{}+N-{to} {}", msg.body.code(), fields(&msg)),
        };
        self.last_move = Some(Move {
            sent: true,
            code: msg.body.code(),
            from: node,
            to,
        });
        let event = RowEvent::Sent {
            from: node,
            to,
            label: text,
            delivered,
        };
        self.record(event, &[(i, cell)]);
        if delivered {
            self.nodes[to - 1].inbound.push_back(msg);
        }
        self.trigger_pending();
        Ok(true)
    }

    pub fn forward_all(&mut self, node: usize) -> Result<usize, HarnessError> {
        let mut moved = 0;
        while !self.fired && self.forward_one(node)? {
            moved += 1;
        }
        Ok(moved)
    }

    /// Whether a message from `from` can reach `to` right now.
    fn reachable(&self, from: usize, to: usize) -> bool {
        let Some(target) = to.checked_sub(1).and_then(|t| self.nodes.get(t)) else {
            return false;
        };
        if target.raft.is_none() || target.block == Block::Drop {
            return false;
        }
        if self.nodes[from - 1].block == Block::Drop || self.cut_links.contains(&(from, to)) {
            return false;
        }
        match &self.segments {
            Some(segments) => segments
                .iter()
                .any(|s| s.contains(&from) && s.contains(&to)),
            None => true,
        }
    }

    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// Loses every message from `from` to `to` until [`Cluster::restore_links`].
    pub fn cut_link(&mut self, from: usize, to: usize) -> Result<(), HarnessError> {
        self.index(from)?;
        self.index(to)?;
        self.cut_links.insert((from, to));
        self.note(from, &format!("CUT -> N-{to}"));
        Ok(())
    }

    pub fn restore_links(&mut self) {
        self.cut_links.clear();
    }

    /// Has `node` handle its inbound message at position `at` (0 = oldest): reordering.
    pub fn handle_at(&mut self, node: usize, at: usize) -> Result<bool, HarnessError> {
        let i = self.index(node)?;
        let inbound = &mut self.nodes[i].inbound;
        let Some(msg) = inbound.remove(at) else {
            return Ok(false);
        };
        inbound.push_front(msg);
        self.handle_one(node)
    }

    /// Loses the inbound message at position `at`.
    pub fn drop_at(&mut self, node: usize, at: usize) -> Result<bool, HarnessError> {
        let i = self.index(node)?;
        Ok(self.nodes[i].inbound.remove(at).is_some())
    }

    /// Delivers a copy of the inbound message at position `at`, keeping the original queued.
    pub fn duplicate_at(&mut self, node: usize, at: usize) -> Result<bool, HarnessError> {
        let i = self.index(node)?;
        let Some(copy) = self.nodes[i].inbound.get(at).cloned() else {
            return Ok(false);
        };
        self.nodes[i].inbound.push_front(copy);
        self.handle_one(node)
    }

    /// One timer tick of `node`, whether or not its timers run.
    pub fn tick(&mut self, node: usize) -> Result<(), HarnessError> {
        self.traffic.ticked(node);
        self.control(node, RaftNode::tick)
    }

    /// Has `node` handle its oldest inbound message. Returns whether anything moved.
    pub fn handle_one(&mut self, node: usize) -> Result<bool, HarnessError> {
        let i = self.index(node)?;
        self.recent_notes.clear();
        let n = &mut self.nodes[i];
        if n.block == Block::Hold {
            return Ok(false);
        }
        let Some(raft) = n.raft.as_mut() else {
            return Ok(false);
        };
        let Some(msg) = n.inbound.pop_front() else {
            return Ok(false);
        };
        let before = raft.role();
        self.traffic.handled(node, &msg);
        let from = msg.from.0 as usize;
        let code = msg.body.code();
        let text = op_text(&msg);
        let cell = match msg.body {
            MessageBody::AppendEntriesResponse { .. } => format!("N-{from}+{text}"),
            _ => format!("N-{from}+{code} {}", fields(&msg)),
        };
        if let Err(e) = raft.step(msg) {
            self.step_errors.push((node, e));
        }
        self.process_output(node)?;
        self.last_move = Some(Move {
            sent: false,
            code,
            from,
            to: node,
        });
        self.record(
            RowEvent::Handled {
                node,
                from,
                label: text,
            },
            &[(i, cell)],
        );
        self.note_role_change(node, before);
        self.trigger_pending();
        Ok(true)
    }

    fn note_role_change(&mut self, node: usize, before: RoleKind) {
        let i = node - 1;
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return;
        };
        if role_label(before) != role_label(raft.role()) {
            self.note(node, "NEW ROLE");
        }
    }

    /// Records a node-local event row (`NEW ROLE`, `CMD START`, `CRASH`...).
    pub fn note(&mut self, node: usize, text: &str) {
        self.recent_notes.push((node, text.to_string()));
        let event = RowEvent::Note {
            node,
            text: text.to_string(),
        };
        self.record(event, &[(node - 1, text.to_string())]);
    }

    fn record(&mut self, event: RowEvent, ops: &[(usize, String)]) {
        if !self.recording {
            return;
        }
        let views = self.views();
        self.recorder.row(event, ops, views);
        self.flush_notes();
    }

    fn flush_notes(&mut self) {
        for (node, text) in std::mem::take(&mut self.pending_notes) {
            self.note(node, &text);
        }
    }

    fn views(&mut self) -> Vec<NodeView> {
        let segments = self.segments.clone();
        let total = self.nodes.len();
        let mut views = Vec::with_capacity(total);
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let net = match &segments {
                Some(s) => {
                    let side = s
                        .iter()
                        .find(|seg| seg.contains(&(i + 1)))
                        .map_or(0, Vec::len);
                    if side * 2 > total {
                        1
                    } else {
                        2
                    }
                }
                None => 1,
            };
            let view = match &n.raft {
                Some(raft) => view_of(raft, net),
                None => NodeView {
                    role: "FLWR",
                    net,
                    ..n.last_view.clone()
                },
            };
            n.last_view = view.clone();
            views.push(view);
        }
        views
    }

    /// Carries out everything the node asked for: persist (written to the simulated disk and,
    /// unless the disk is manual, synced at once), send, apply, answer clients.
    fn process_output(&mut self, node: usize) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        loop {
            let n = &mut self.nodes[i];
            let Some(raft) = n.raft.as_mut() else {
                return Ok(());
            };
            let out = raft.take_output();
            if out.is_empty() {
                return Ok(());
            }
            if let Some(batch) = &out.persist {
                let result = match n.storage.mode {
                    SyncMode::Immediate => n.storage.persist(batch),
                    SyncMode::Manual => n.storage.write(&batch.writes),
                };
                if let Err(e) = result {
                    self.stop_node(node, &format!("storage failed: {e}"));
                    return Ok(());
                }
                match n.storage.mode {
                    SyncMode::Immediate => {
                        if let Err(e) = raft.persisted(batch.seq) {
                            self.driver_errors.push((node, e));
                        }
                    }
                    SyncMode::Manual => n.unsynced_seq = Some(batch.seq),
                }
            }
            for msg in &out.messages {
                self.traffic.sent(msg);
            }
            for event in &out.events {
                self.traffic.event(node, event);
            }
            n.outbound.extend(out.messages);
            for (id, rejection) in out.rejected {
                n.results.insert(id, rejection_outcome(&rejection));
            }
            n.confirmed_reads.extend(out.reads);
            for (id, result) in out.membership_changes {
                let outcome = match result {
                    Ok(m) => CommandOutcome::Value(format!("cfg-{}", config_text(&m))),
                    Err(MembershipError::Retry) => CommandOutcome::Retry,
                    Err(MembershipError::LeadershipLost) => CommandOutcome::LeadershipLost,
                    Err(e) => CommandOutcome::Error(e.to_string()),
                };
                n.results.insert(id, outcome);
            }
            if self.recording {
                self.pending_notes
                    .extend(out.events.iter().filter_map(event_note).map(|t| (node, t)));
            }
            self.events
                .extend(out.events.into_iter().map(|e| (node, e)));
            if let Some(fatal) = out.fatal {
                self.stop_node(node, &fatal.to_string());
                return Ok(());
            }
            // Entries committed before the snapshot arrived come first, so their clients get
            // their results; the snapshot then replaces the state.
            let (before, after): (Vec<_>, Vec<_>) = match &out.install_snapshot {
                Some(s) => out
                    .committed
                    .into_iter()
                    .partition(|c| c.entry.index <= s.last_included.index),
                None => (Vec::new(), out.committed),
            };
            self.apply(node, before);
            if let Some(snapshot) = out.install_snapshot {
                self.install(node, snapshot);
            }
            self.apply(node, after);
            self.serve_reads(node);
            if out.take_snapshot.is_some() {
                self.take_snapshot(node);
            }
        }
    }

    /// Restores the counter from the leader's snapshot, keeps the snapshot (durably, like a
    /// snapshot file), and tells the core it is installed.
    fn install(&mut self, node: usize, snapshot: raftengine::Snapshot) {
        let n = &mut self.nodes[node - 1];
        let index = snapshot.last_included.index;
        n.counter = Counter::restore(&snapshot.data, index);
        n.snapshot = Some(snapshot);
        if let Some(raft) = n.raft.as_mut() {
            if let Err(e) = raft.snapshot_installed(index) {
                self.driver_errors.push((node, e));
            }
        }
    }

    /// Snapshots the counter at what it has applied and lets the core compact its log.
    fn take_snapshot(&mut self, node: usize) {
        let n = &mut self.nodes[node - 1];
        let (applied, data) = (n.counter.applied, n.counter.encode());
        let Some(raft) = n.raft.as_mut() else {
            return;
        };
        if raft.compact(applied, data).is_ok() {
            n.snapshot = raft.snapshot().cloned();
        }
    }

    /// The operator's (or a policy's) snapshot: compacts the node's log up to what it applied.
    pub fn snapshot(&mut self, node: usize) -> Result<(), HarnessError> {
        self.raft_mut(node)?;
        self.note(node, "SNAPSHOT");
        self.take_snapshot(node);
        self.process_output(node)
    }

    /// Answers confirmed reads whose index the counter has reached, with the total (or the
    /// key's value) it shows.
    fn serve_reads(&mut self, node: usize) {
        let n = &mut self.nodes[node - 1];
        let applied = n.counter.applied;
        let (counter, results, keys) = (&n.counter, &mut n.results, &mut n.read_keys);
        n.confirmed_reads.retain(|read| {
            if read.index > applied {
                return true;
            }
            let value = match keys.remove(&read.request) {
                Some(key) => counter.get(&key),
                None => counter.total.to_string(),
            };
            results.insert(read.request, CommandOutcome::Value(value));
            false
        });
    }

    fn apply(&mut self, node: usize, committed: Vec<raftengine::CommittedEntry>) {
        let n = &mut self.nodes[node - 1];
        for ce in committed {
            let EntryPayload::Command(command) = &ce.entry.payload else {
                n.counter.applied = ce.entry.index;
                continue;
            };
            let outcome = match n.counter.apply(ce.entry.index, command) {
                Ok(value) => CommandOutcome::Value(String::from_utf8_lossy(&value).into_owned()),
                Err(ApplyError::Rejected(reason)) => CommandOutcome::Error(reason),
                Err(ApplyError::Fatal(reason)) => {
                    if let Some(id) = ce.request {
                        let failure = format!("state machine failed: {reason}");
                        n.results.insert(id, CommandOutcome::Error(failure));
                    }
                    if let Some(raft) = n.raft.as_mut() {
                        raft.fail(FatalError::StateMachine {
                            index: ce.entry.index,
                            reason,
                        });
                    }
                    return;
                }
            };
            if let Some(id) = ce.request {
                n.results.insert(id, outcome);
            }
        }
    }

    /// A fatal error: mark the storage broken (so restart refuses) and take the node down.
    fn stop_node(&mut self, node: usize, reason: &str) {
        let n = &mut self.nodes[node - 1];
        // MemoryStorage::mark_broken cannot fail.
        let _ = n.storage.mark_broken(reason);
        n.raft = None;
        n.inbound.clear();
        n.outbound.clear();
        self.note(node, "CRASH");
    }
}

impl Cluster {
    // ----- schedules ---------------------------------------------------------------------------

    /// The seed's pump: round-robin over the nodes in id order; per pass each node handles one
    /// inbound message, then forwards one outbound message; until nothing is queued (or the
    /// trigger fires).
    pub fn pump(&mut self, trigger: Option<&Trigger>) -> Result<usize, HarnessError> {
        self.schedule(trigger, |c, node| {
            let handled = c.handle_one(node)?;
            let forwarded = !c.fired && c.forward_one(node)?;
            Ok(usize::from(handled) + usize::from(forwarded))
        })
    }

    /// Each node in id order forwards everything it has queued, then handles its inbound
    /// messages one by one, forwarding what each produces at once: as if every node ran until
    /// idle. Repeats until nothing is queued (or the trigger fires).
    pub fn run(&mut self, trigger: Option<&Trigger>) -> Result<usize, HarnessError> {
        self.schedule(trigger, |c, node| {
            let mut moved = c.forward_all(node)?;
            while !c.fired && c.handle_one(node)? {
                moved += 1 + c.forward_all(node)?;
            }
            Ok(moved)
        })
    }

    fn schedule(
        &mut self,
        trigger: Option<&Trigger>,
        mut turn: impl FnMut(&mut Cluster, usize) -> Result<usize, HarnessError>,
    ) -> Result<usize, HarnessError> {
        self.armed = trigger.cloned();
        self.fired = false;
        let mut moves = 0;
        let result = loop {
            let mut moved = 0;
            for node in 1..=self.nodes.len() {
                moved += turn(self, node)?;
                if self.fired {
                    break;
                }
            }
            moves += moved;
            if self.fired {
                break Ok(moves);
            }
            if moved == 0 {
                break match trigger {
                    Some(t) if !self.trigger_holds(t) => {
                        Err(HarnessError::TriggerNotReached(format!("{t:?}")))
                    }
                    _ => Ok(moves),
                };
            }
            if moves > MAX_MOVES_PER_RUN {
                break Err(HarnessError::NoProgress(moves));
            }
        };
        self.armed = None;
        self.fired = false;
        result
    }

    /// Called after every single move: fires the armed trigger if it now holds.
    fn trigger_pending(&mut self) {
        if let Some(t) = self.armed.clone() {
            if self.trigger_holds(&t) {
                self.fired = true;
            }
        }
    }

    pub fn trigger_holds(&self, trigger: &Trigger) -> bool {
        let status = |n: usize| {
            self.nodes
                .get(n.wrapping_sub(1))
                .and_then(|s| s.raft.as_ref())
        };
        match trigger {
            Trigger::Sent { code, from, to } => self.last_move.as_ref().is_some_and(|m| {
                m.sent
                    && m.code == code
                    && from.is_none_or(|f| f == m.from)
                    && to.is_none_or(|t| t == m.to)
            }),
            Trigger::Handled { code, by, from } => self.last_move.as_ref().is_some_and(|m| {
                !m.sent
                    && m.code == code
                    && by.is_none_or(|b| b == m.to)
                    && from.is_none_or(|f| f == m.from)
            }),
            Trigger::Note { node, text } => self
                .recent_notes
                .iter()
                .any(|(n, t)| n == node && t.starts_with(text.as_str())),
            Trigger::IsLeader(n) => status(*n).is_some_and(|r| r.role() == RoleKind::Leader),
            Trigger::HasLeader(n) => status(*n).is_some_and(|r| r.leader().is_some()),
            Trigger::LogIndex(n, k) => status(*n).is_some_and(|r| r.log().last_index().0 >= *k),
            Trigger::Commit(n, k) => status(*n).is_some_and(|r| r.commit_index().0 >= *k),
            Trigger::Applied(n, k) => {
                status(*n).is_some() && self.nodes[*n - 1].counter.applied.0 >= *k
            }
            Trigger::ElectionDone => {
                let leader = self.nodes.iter().any(|n| {
                    n.raft
                        .as_ref()
                        .is_some_and(|r| r.role() == RoleKind::Leader)
                });
                let quiet = self
                    .nodes
                    .iter()
                    .all(|n| n.raft.is_none() || (n.inbound.is_empty() && n.outbound.is_empty()));
                leader && quiet
            }
        }
    }

    // ----- controls ----------------------------------------------------------------------------

    /// Applies `f` to a running node, carries out its output and notes a role change.
    fn control(&mut self, node: usize, f: impl FnOnce(&mut RaftNode)) -> Result<(), HarnessError> {
        let raft = self.raft_mut(node)?;
        let before = raft.role();
        f(raft);
        self.process_output(node)?;
        self.note_role_change(node, before);
        self.flush_notes();
        Ok(())
    }

    pub fn campaign(&mut self, node: usize, transfer: bool) -> Result<(), HarnessError> {
        self.control(node, |r| r.campaign(transfer))
    }

    /// Leader `node` hands leadership to `target` (thesis §3.10).
    pub fn transfer(&mut self, node: usize, target: usize) -> Result<(), HarnessError> {
        self.index(target)?;
        self.raft_mut(node)?;
        self.note(node, &format!("TRANSFER -> N-{target}"));
        let mut refused = None;
        self.control(node, |r| {
            refused = r.transfer_leadership(NodeId(target as u64)).err();
        })?;
        match refused {
            Some(e) => Err(HarnessError::Refused(e.to_string())),
            None => Ok(()),
        }
    }

    pub fn force_follower(&mut self, node: usize) -> Result<(), HarnessError> {
        self.control(node, RaftNode::force_follower)
    }

    pub fn force_term(&mut self, node: usize, term: u64) -> Result<(), HarnessError> {
        self.control(node, |r| r.force_term(Term(term)))
    }

    pub fn heartbeat(&mut self, node: usize) -> Result<(), HarnessError> {
        self.control(node, RaftNode::broadcast_heartbeat)
    }

    pub fn clear_queues(&mut self, node: usize) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        self.nodes[i].inbound.clear();
        self.nodes[i].outbound.clear();
        Ok(())
    }

    /// Submits a client command; its outcome is read with [`Cluster::outcome`].
    pub fn submit(&mut self, node: usize, command: &str) -> Result<RequestId, HarnessError> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let i = self.index(node)?;
        self.nodes[i].last_command = Some(id);
        self.nodes[i].results.insert(id, CommandOutcome::Pending);
        self.note(node, "CMD START");
        self.control(node, |r| r.propose(id, command.as_bytes().to_vec()))?;
        Ok(id)
    }

    /// Asks `node` for a membership change (the leader carries it out, a follower forwards it
    /// as `m_c`); the outcome is the committed configuration (`cfg-...`) or the refusal. Wait
    /// for it with `wait_result`.
    pub fn change_membership(
        &mut self,
        node: usize,
        change: MembershipChange,
    ) -> Result<RequestId, HarnessError> {
        for n in change.nodes() {
            self.index(n.0 as usize)?;
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let i = self.index(node)?;
        self.nodes[i].last_command = Some(id);
        self.nodes[i].results.insert(id, CommandOutcome::Pending);
        let text = format!("CMD START {} {}", change.op(), node_list(&change.nodes()));
        self.note(node, &text);
        self.control(node, |r| r.change_membership(id, change))?;
        Ok(id)
    }

    /// A linearizable read of the counter at `node` (ReadIndex; a follower asks its leader). Its
    /// outcome is the total once the read is confirmed and applied; wait with `wait_result`.
    pub fn read(&mut self, node: usize) -> Result<RequestId, HarnessError> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let i = self.index(node)?;
        self.nodes[i].last_command = Some(id);
        self.nodes[i].results.insert(id, CommandOutcome::Pending);
        self.note(node, "READ START");
        self.control(node, |r| r.read(id))?;
        Ok(id)
    }

    /// The id the next command or read will get.
    pub fn next_request_id(&self) -> RequestId {
        RequestId(self.next_request)
    }

    /// The last command or read submitted at `node`.
    pub fn last_request(&self, node: usize) -> Option<RequestId> {
        self.nodes.get(node.checked_sub(1)?)?.last_command
    }

    /// Whether `node` has written something its disk has not synced yet.
    pub fn disk_has_unsynced(&self, node: usize) -> bool {
        node.checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .is_some_and(|n| n.storage.has_unsynced())
    }

    pub fn disk_is_manual(&self, node: usize) -> bool {
        node.checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .is_some_and(|n| n.storage.mode == SyncMode::Manual)
    }

    /// A linearizable read of one key of the map (see [`Cluster::read`]).
    pub fn read_key(&mut self, node: usize, key: &str) -> Result<RequestId, HarnessError> {
        let i = self.index(node)?;
        let id = RequestId(self.next_request);
        self.nodes[i].read_keys.insert(id, key.to_string());
        self.read(node)?;
        Ok(id)
    }

    pub fn outcome(&self, node: usize, id: RequestId) -> Result<CommandOutcome, HarnessError> {
        let n = &self.nodes[self.index(node)?];
        Ok(n.results
            .get(&id)
            .cloned()
            .unwrap_or(CommandOutcome::Pending))
    }

    /// Waits for the last command submitted at `node`: pumps until its outcome is known or
    /// nothing moves (then it is a timeout), and records `CMD DONE`.
    pub fn wait_result(&mut self, node: usize) -> Result<CommandOutcome, HarnessError> {
        let i = self.index(node)?;
        let id = self.nodes[i]
            .last_command
            .ok_or(HarnessError::NoCommand(node))?;
        let mut moves = 0;
        while self.outcome(node, id)? == CommandOutcome::Pending {
            let moved = self.pump_pass()?;
            moves += moved;
            if moved == 0 || moves > MAX_MOVES_PER_RUN {
                self.nodes[i].results.insert(id, CommandOutcome::Timeout);
            }
        }
        self.note(node, "CMD DONE");
        self.outcome(node, id)
    }

    fn pump_pass(&mut self) -> Result<usize, HarnessError> {
        let mut moved = 0;
        for node in 1..=self.nodes.len() {
            moved += usize::from(self.handle_one(node)?) + usize::from(self.forward_one(node)?);
        }
        Ok(moved)
    }

    /// The outcome of the last command submitted at `node`.
    pub fn last_outcome(&self, node: usize) -> Result<CommandOutcome, HarnessError> {
        let i = self.index(node)?;
        let id = self.nodes[i]
            .last_command
            .ok_or(HarnessError::NoCommand(node))?;
        self.outcome(node, id)
    }

    /// Loses the node's volatile state, queues and unsynced writes; its durable storage is kept.
    pub fn crash(&mut self, node: usize) -> Result<(), HarnessError> {
        self.raft_mut(node)?;
        let n = &mut self.nodes[node - 1];
        n.storage.crash();
        n.unsynced_seq = None;
        n.raft = None;
        n.inbound.clear();
        n.outbound.clear();
        self.note(node, "CRASH");
        Ok(())
    }

    /// A crash of a node whose disk lied: besides the unsynced writes, the synced entries from
    /// `from` on are gone (the next load reports the loss).
    pub fn crash_losing(
        &mut self,
        node: usize,
        from: raftengine::LogIndex,
    ) -> Result<(), HarnessError> {
        self.crash(node)?;
        self.nodes[node - 1].storage.lose_entries_from(from);
        self.data_losses.push((node, from));
        Ok(())
    }

    /// Delivers a message with a term beyond the protocol's limits from another member; the
    /// node must refuse it with a typed error and change nothing.
    pub fn inject_extreme(&mut self, node: usize) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        let from = if node == 1 { 2 } else { 1 };
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Err(HarnessError::NodeDown(node));
        };
        let before = raft.status();
        let body = MessageBody::VoteRequest {
            last_log_index: raftengine::LogIndex(u64::MAX),
            last_log_term: Term(u64::MAX),
            transfer: None,
        };
        let msg = Message {
            from: NodeId(from as u64),
            to: NodeId(node as u64),
            term: Term(u64::MAX),
            body,
        };
        match raft.step(msg) {
            Err(StepError::OutOfRange { .. }) if raft.status() == before => Ok(()),
            other => {
                self.misuse_failures
                    .push((node, format!("an extreme vote request gave {other:?}")));
                Ok(())
            }
        }
    }

    /// Misuses the node as a buggy driver would: reports a batch never issued as durable, and
    /// an older one after a newer one. Both must be refused, changing nothing.
    pub fn misuse(&mut self, node: usize) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Err(HarnessError::NodeDown(node));
        };
        let before = raft.status();
        let unknown = raft.persisted(u64::MAX / 2);
        let backwards = raft.persisted(0);
        let out = raft.take_output();
        let quiet = out.messages.is_empty() && out.committed.is_empty();
        let unchanged = raft.status() == before;
        let refused = matches!(unknown, Err(DriverError::UnknownBatch { .. }))
            && (matches!(backwards, Err(DriverError::OutOfOrder { .. })) || backwards.is_ok());
        self.nodes[i].outbound.extend(out.messages);
        if !(refused && quiet && unchanged) {
            self.misuse_failures.push((
                node,
                format!(
                    "driver misuse gave {unknown:?} and {backwards:?}; the node changed or spoke"
                ),
            ));
        }
        Ok(())
    }

    /// Restarts a crashed node from its storage (or from an empty disk).
    pub fn restart(&mut self, node: usize, empty: bool) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        let n = &mut self.nodes[i];
        if n.raft.is_some() {
            return Err(HarnessError::NodeUp(node));
        }
        if empty {
            n.storage.wipe();
            n.snapshot = None;
        }
        let refused = |reason: String| HarnessError::RestartRefused { node, reason };
        let stored = n
            .storage
            .load()
            .map_err(|e: StorageError| refused(e.to_string()))?;
        let raft = RaftNode::restart_from_snapshot(n.config.clone(), stored, n.snapshot.clone())
            .map_err(|e: StartError| refused(e.to_string()))?;
        n.raft = Some(raft);
        n.counter = match &n.snapshot {
            Some(s) => Counter::restore(&s.data, s.last_included.index),
            None => Counter::default(),
        };
        self.note(node, "RESTART");
        // A restart from a snapshot may have log writes to make (purging what it covers).
        self.process_output(node)
    }

    /// Makes a node's disk sync at once (the default) or only on [`Cluster::sync`].
    pub fn set_disk(&mut self, node: usize, mode: SyncMode) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        self.nodes[i].storage.mode = mode;
        if mode == SyncMode::Immediate && self.nodes[i].raft.is_some() {
            self.sync(node)?;
        }
        Ok(())
    }

    /// Syncs the node's disk and tells the core, which releases the messages that waited for it.
    pub fn sync(&mut self, node: usize) -> Result<(), HarnessError> {
        self.raft_mut(node)?;
        let n = &mut self.nodes[node - 1];
        let Some(seq) = n.unsynced_seq.take() else {
            return Ok(());
        };
        if let Err(e) = n.storage.sync() {
            self.stop_node(node, &format!("storage failed: {e}"));
            return Ok(());
        }
        if let Some(raft) = n.raft.as_mut() {
            if let Err(e) = raft.persisted(seq) {
                self.driver_errors.push((node, e));
            }
        }
        self.process_output(node)?;
        self.note(node, "SYNC");
        Ok(())
    }

    /// The operator's switch after checking a node that stopped on a fatal error.
    pub fn clear_broken(&mut self, node: usize) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        // MemoryStorage::clear_broken cannot fail.
        let _ = self.nodes[i].storage.clear_broken();
        Ok(())
    }

    pub fn block(&mut self, node: usize, mode: Block) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        self.nodes[i].block = mode;
        let text = match mode {
            Block::None => "UNBLOCK",
            Block::Hold => "BLOCK",
            Block::Drop => "BLOCK DROP",
        };
        self.note(node, text);
        Ok(())
    }

    /// Splits the network; messages between segments are lost. Nodes not named form one more
    /// segment.
    pub fn split(&mut self, mut segments: Vec<Vec<usize>>) -> Result<(), HarnessError> {
        for s in &segments {
            for n in s {
                self.index(*n)?;
            }
        }
        let rest: Vec<usize> = (1..=self.nodes.len())
            .filter(|n| !segments.iter().any(|s| s.contains(n)))
            .collect();
        if !rest.is_empty() {
            segments.push(rest);
        }
        self.segments = Some(segments.clone());
        self.recorder_network("NETSPLIT", segments);
        Ok(())
    }

    pub fn heal(&mut self) -> Result<(), HarnessError> {
        self.segments = None;
        self.recorder_network("NETJOIN", vec![(1..=self.nodes.len()).collect()]);
        Ok(())
    }

    fn recorder_network(&mut self, text: &str, segments: Vec<Vec<usize>>) {
        let ops: Vec<(usize, String)> = (0..self.nodes.len())
            .map(|i| (i, text.to_string()))
            .collect();
        self.record(
            RowEvent::Network {
                text: text.to_string(),
                segments,
            },
            &ops,
        );
    }

    /// Turns a node's timers on or off, optionally with its own election timeout range.
    pub fn set_timers(
        &mut self,
        node: usize,
        on: bool,
        range: Option<(u64, u64)>,
    ) -> Result<(), HarnessError> {
        let i = self.index(node)?;
        self.nodes[i].timers = on;
        if let Some((min, max)) = range {
            let config = &mut self.nodes[i].config;
            (
                config.election_timeout_min_ticks,
                config.election_timeout_max_ticks,
            ) = (min, max);
            config
                .validate()
                .map_err(|e| HarnessError::Settings(e.to_string()))?;
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.set_election_timeout(min, max);
            }
        }
        Ok(())
    }

    /// Advances virtual time by `ticks`: each tick, every node with timers on ticks in id order.
    /// Messages do not move by themselves: pump or run to deliver them.
    pub fn advance(&mut self, ticks: u64) -> Result<(), HarnessError> {
        for _ in 0..ticks {
            for node in 1..=self.nodes.len() {
                let n = &self.nodes[node - 1];
                if n.timers && n.raft.is_some() {
                    self.tick(node)?;
                }
            }
        }
        Ok(())
    }
}

/// Membership events worth a row of their own (the configuration itself shows as `cfg-` deltas).
fn event_note(event: &Event) -> Option<String> {
    match event {
        Event::CatchUpRound { round, until } => {
            Some(format!("CATCH-UP ROUND {round} TO {}", until.0))
        }
        Event::MembershipChangeAborted { .. } => Some("CATCH-UP ABORTED".into()),
        Event::RemovedFromCluster => Some("REMOVED".into()),
        _ => None,
    }
}

fn settings_error(e: &StartError) -> HarnessError {
    HarnessError::Settings(e.to_string())
}

fn rejection_outcome(rejection: &CommandRejected) -> CommandOutcome {
    match rejection {
        CommandRejected::Redirect { leader } => CommandOutcome::Redirect(leader.0 as usize),
        CommandRejected::Retry => CommandOutcome::Retry,
        CommandRejected::LeadershipLost => CommandOutcome::LeadershipLost,
        CommandRejected::TooLarge { .. } => CommandOutcome::Error(rejection.to_string()),
    }
}

pub fn role_label(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Follower => "FLWR",
        RoleKind::PreCandidate | RoleKind::Candidate => "CNDI",
        RoleKind::Leader => "LEAD",
    }
}

fn view_of(raft: &RaftNode, net: u8) -> NodeView {
    NodeView {
        role: role_label(raft.role()),
        term: raft.term().0,
        last_term: raft.log().last_term().0,
        last_index: raft.log().last_index().0,
        commit: raft.commit_index().0,
        net,
        config: config_text(raft.membership()),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A message's fields in trace notation (`shared/trace-format.md`).
pub fn fields(msg: &Message) -> String {
    let t = msg.term.0;
    match &msg.body {
        MessageBody::PreVoteRequest {
            last_log_index,
            last_log_term,
            ..
        }
        | MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => {
            format!("t-{t} li-{} lt-{}", last_log_index.0, last_log_term.0)
        }
        MessageBody::PreVoteResponse { granted } | MessageBody::VoteResponse { granted } => {
            format!("yes-{}", yes(*granted))
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_round,
            ..
        } => format!(
            "t-{t} i-{} lt-{} e-{} c-{}{}",
            prev_log_index.0,
            prev_log_term.0,
            entries.len(),
            leader_commit.0,
            read_round_field(*read_round)
        ),
        MessageBody::AppendEntriesResponse {
            success,
            last_log_index,
            read_round,
            repairing,
            ..
        } => {
            format!(
                "ok-{} mi-{}{}{}",
                yes(*success),
                last_log_index.0,
                read_round_field(*read_round),
                if *repairing { " repairing" } else { "" }
            )
        }
        MessageBody::InstallSnapshot {
            last_included,
            offset,
            data,
            done,
            ..
        } => format!(
            "t-{t} i-{} o-{offset} b-{}{}",
            last_included.index.0,
            data.len(),
            if *done { " done" } else { "" }
        ),
        MessageBody::InstallSnapshotResponse {
            last_included,
            next_offset,
            done,
            ..
        } => format!("i-{} o-{next_offset} s-{}", last_included.0, yes(*done)),
        MessageBody::TimeoutNow { last_log_index, .. } => format!("i-{}", last_log_index.0),
        MessageBody::TimeoutNowResponse { accepted } => format!("ok-{}", yes(*accepted)),
        MessageBody::Propose { request, .. } => format!("t-{t} r-{request}"),
        MessageBody::ProposeResponse { request, placed } => match placed {
            Some(id) => format!("r-{request} i-{} t-{}", id.index.0, id.term.0),
            None => format!("r-{request} refused"),
        },
        MessageBody::ReadIndexRequest { request } => format!("t-{t} r-{request}"),
        MessageBody::ChangeMembership { request, change } => {
            format!(
                "op-{} n-{} r-{request}",
                change.op(),
                node_list(&change.nodes())
            )
        }
        MessageBody::ChangeMembershipResponse { request, result } => {
            format!("ok-{} r-{request}", yes(result.is_ok()))
        }
        MessageBody::ReadIndexResponse {
            request,
            read_index,
        } => match read_index {
            Some(index) => format!("r-{request} ri-{}", index.0),
            None => format!("r-{request} refused"),
        },
    }
}

/// Node numbers joined by commas (`4,5`).
pub fn node_list(nodes: &[NodeId]) -> String {
    let ids: Vec<String> = nodes.iter().map(|n| n.0.to_string()).collect();
    ids.join(",")
}

/// ` rr-N` for a read round, nothing before the first read (so traces without reads keep the
/// seed's notation).
fn read_round_field(round: u64) -> String {
    if round == 0 {
        String::new()
    } else {
        format!(" rr-{round}")
    }
}

/// `code fields`, e.g. `ae t-1 i-0 lt-0 e-1 c-0`.
pub fn op_text(msg: &Message) -> String {
    format!("{} {}", msg.body.code(), fields(msg))
}
