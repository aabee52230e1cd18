//! The tokio driver of the sans-IO core: one task runs the [`RaftNode`], a thread makes its log
//! durable (group commit), another task applies committed entries, and the transport moves
//! messages. The simulator drives the very same core by hand.
//!
//! ```text
//!  clients ──requests──> raft loop (RaftNode) ──persist──> log writer thread (one fdatasync per group)
//!  transport ─messages─>     │  │   ^──────── durable up to seq ───────┘
//!            <─messages──────┘  └──committed entries, confirmed reads──> apply task ──> replies
//! ```
//!
//! Performance by design: every request and message that queued while the loop was busy is
//! handled before the core's output is taken, so proposals made together become one append, one
//! AppendEntries per follower and one durable write; the leader sends before its own write is
//! durable (thesis §10.2.1); applying runs off the loop. A node that does not lead has nothing
//! to send until its write is durable, so when the writer thread is idle it writes on the loop's
//! own thread: two thread wake-ups fewer on every round trip of the commit path. The price is
//! that a disk stall longer than an election timeout also holds up the follower's heartbeat
//! answers, so a leader using check-quorum may step down during it (etcd's followers behave the
//! same way).

mod admin;
mod apply;
mod backend;
pub mod bootstrap;
mod config;
mod failure;
mod metrics;
#[cfg(feature = "mutations")]
mod mutation;

pub use admin::AdminError;
pub use backend::{InProcessNetwork, LogBackend, Network};
pub use bootstrap::BootstrapError;
pub use config::{
    Limits, NodeConfig, NodeConfigError, ENTRY_OVERHEAD_BYTES, MESSAGE_ENVELOPE_BYTES,
};
pub use metrics::{Counter, Gauge, Histogram, Metrics};
#[cfg(feature = "mutations")]
pub use mutation::RuntimeMutation;

use crate::transport::{Transport, TransportConfig, TransportStats};
use admin::{ChangeReply, PeerBook, PendingAdmin, TransferReply};
use apply::{Applier, ApplyMsg};
use bootstrap::StartPlan;
use failure::{Failure, FailureReporter};
use raftengine::{
    CommandRejected, ConfigError, Event, FatalError, LogIndex, LogStorage, Membership,
    MembershipChange, Message, NodeId, Output, RaftNode, RequestId, RoleKind, StartError,
    StateMachine,
};
use raftwal::{SnapshotStore, Wal, WalError, WalOptions};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Election jitter must differ between nodes and restarts; std's hasher keys are random.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Why a node did not start ([`Node::start`], [`Node::start_with`]). Nothing keeps running
/// after an error; the data directory is left as it was found (or with a fresh cluster record).
#[derive(Debug, Error)]
pub enum NodeError {
    /// The [`NodeConfig`]'s settings contradict each other.
    #[error("invalid node configuration: {0}")]
    InvalidConfig(#[from] NodeConfigError),
    /// The data directory's cluster record disagrees with the configuration, or cannot be read
    /// or written.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The core refused its settings ([`NodeConfig::raft`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The core refused the stored state it was restarted from.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The durable log or the snapshot store could not be opened or read (corruption, a
    /// `BROKEN` marker, I/O).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The log backend failed while starting.
    #[error("storage: {0}")]
    Storage(#[from] raftengine::StorageError),
    /// The transport could not start on the listener.
    #[error("transport: {0}")]
    Transport(#[from] crate::transport::TransportError),
    /// [`StateMachine::restore_from`] refused the latest snapshot in the data directory.
    #[error("restoring the state machine from its snapshot: {0}")]
    Snapshot(String),
}

/// What a node restarts from: its stored log and hard state, the snapshot that covers the
/// compacted part of the log (the state machine was already restored from it), and where new
/// snapshots go (none for an in-memory node).
#[derive(Default)]
pub struct Restart {
    /// The hard state and log entries the storage holds (empty on a first start).
    pub stored: raftengine::StoredState,
    /// The latest snapshot, already restored into the state machine given to the node.
    pub snapshot: Option<raftengine::Snapshot>,
    /// Where snapshots taken or received are saved; `None` keeps them in memory only.
    pub snapshots: Option<SnapshotStore>,
}

/// Why a client request got no result.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// This node does not lead and does not forward; ask `leader` (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// No leader right now (an election is under way), or a read lost its leader: retry.
    #[error("no leader available; retry")]
    Retry,
    /// The command was handed to the core (proposed) and its result was not delivered: it may
    /// or may not take effect (leadership changed before it committed, or the node stopped
    /// before it was applied here). Never a definite failure.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The command is larger than the node's limit ([`Limits::max_command_bytes`]); nothing
    /// was proposed.
    #[error("command of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The command's size in bytes.
        size: usize,
        /// The node's limit in bytes.
        limit: usize,
    },
    /// This node was removed from the cluster: ask another node.
    #[error("this node was removed from the cluster")]
    Removed,
    /// The state machine refused the command (a deterministic result).
    #[error("{0}")]
    Rejected(String),
    /// The node stopped (shut down, or a fatal error) before the request was handed to the
    /// core: nothing was proposed.
    #[error("node stopped: {0}")]
    Stopped(String),
}

/// The `status` view: role, term, leader, indexes and, on a leader, each follower's progress.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// This node's id.
    pub id: u64,
    /// `"follower"`, `"pre-candidate"`, `"candidate"` or `"leader"` (see [`role_name`]).
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader of the current term, if this node knows it.
    pub leader: Option<u64>,
    /// The index of the last entry in this node's log (durable or not).
    pub last_index: u64,
    /// The last index of the log's compacted prefix (what the latest snapshot covers, less any
    /// tail kept behind it): the log holds the entries after it. A follower whose log ends
    /// before it catches up from a snapshot.
    pub log_start: u64,
    /// The highest index this node knows committed.
    pub commit_index: u64,
    /// The highest index the state machine has applied (0 until the apply task reports; after
    /// a restart, from the snapshot's index on).
    pub applied_index: u64,
    /// The highest index of this node's log that is durable on its disk.
    pub durable_index: u64,
    /// (follower, match index, next index) on a leader.
    pub progress: Vec<(u64, u64, u64)>,
    /// The configuration in effect (the last one in the log, committed or not).
    pub membership: Membership,
    /// Whether `membership` is committed (false while a change is under way).
    pub membership_committed: bool,
    /// A committed configuration left this node out: it no longer takes part.
    pub removed: bool,
    /// The node's storage lost data it had made durable (see `raftwal`'s recovery report): it
    /// neither votes nor counts towards a majority until a leader has repaired its log
    /// ([`RaftNode::is_repairing`]).
    pub repairing: bool,
    /// Why the node stopped on its own (a task failed, the log or the state machine failed);
    /// it then no longer votes, acknowledges or applies.
    pub stopped: Option<String>,
}

impl NodeStatus {
    fn of(raft: &RaftNode, applied: LogIndex, durable: LogIndex) -> NodeStatus {
        let status = raft.status();
        NodeStatus {
            id: status.id.0,
            role: role_name(status.role).to_string(),
            term: status.term.0,
            leader: status.leader.map(|l| l.0),
            last_index: status.last_index.0,
            log_start: raft.log().start().index.0,
            commit_index: status.commit.0,
            applied_index: applied.0,
            durable_index: durable.0,
            progress: status
                .progress
                .iter()
                .map(|(id, m, n)| (id.0, m.0, n.0))
                .collect(),
            membership_committed: *raft.committed_membership() == status.membership,
            membership: status.membership,
            removed: raft.is_removed(),
            repairing: raft.is_repairing(),
            stopped: None,
        }
    }
}

/// A repair of lost data starts or ends: an operator wants to know both (the node does not vote
/// meanwhile, so a cluster that has lost another node cannot elect a leader).
fn log_repair(event: &Event) {
    match event {
        Event::RepairStarted { reason } => tracing::warn!(
            reason,
            "repairing lost data: this node neither votes nor counts towards a majority until a \
             leader has caught it up"
        ),
        Event::RepairFinished { caught_up_to } => tracing::info!(
            caught_up_to = caught_up_to.0,
            "repair finished: this node votes and counts towards a majority again"
        ),
        _ => {}
    }
}

/// The name [`NodeStatus::role`] gives a role (lower case, `"pre-candidate"` hyphenated).
pub fn role_name(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Follower => "follower",
        RoleKind::PreCandidate => "pre-candidate",
        RoleKind::Candidate => "candidate",
        RoleKind::Leader => "leader",
    }
}

type WriteReply = oneshot::Sender<Result<Vec<u8>, ClientError>>;
type ReadReply = oneshot::Sender<Result<(), ClientError>>;
type SnapshotReply = oneshot::Sender<Result<LogIndex, AdminError>>;

enum Request {
    Write {
        command: Vec<u8>,
        reply: WriteReply,
    },
    Read {
        reply: ReadReply,
    },
    ChangeMembership {
        change: MembershipChange,
        reply: ChangeReply,
    },
    TransferLeadership {
        target: NodeId,
        reply: TransferReply,
    },
    Snapshot {
        reply: SnapshotReply,
    },
}

/// A cloneable handle for clients of one node.
pub struct NodeHandle<S> {
    requests: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<NodeStatus>,
    state_machine: Arc<RwLock<S>>,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// Byte budget of the writes handed over and not yet answered (see
    /// `NodeConfig::max_pending_write_bytes`).
    pending_writes: Arc<Semaphore>,
}

/// What a write costs the pending budget besides its command: its request and reply slots.
const PENDING_WRITE_OVERHEAD_BYTES: usize = 64;

impl<S> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            requests: self.requests.clone(),
            status: self.status.clone(),
            state_machine: self.state_machine.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits,
            pending_writes: self.pending_writes.clone(),
        }
    }
}

impl<S: Send + Sync + 'static> NodeHandle<S> {
    /// Replicates `command` and returns the state machine's answer once it is applied here.
    ///
    /// A command over [`Limits::max_command_bytes`] is refused at once
    /// ([`ClientError::TooLarge`]). Once the command is handed over, a lost answer means
    /// [`ClientError::OutcomeUnknown`], never a failure: it may have been proposed.
    /// [`ClientError::Retry`] (no leader known yet) and [`ClientError::NotLeader`] mean nothing
    /// was proposed; [`ClientError::Rejected`] is the state machine's deterministic refusal.
    /// Waits while this node's clients have [`Limits::max_pending_write_bytes`] unanswered.
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let limit = self.limits.max_command_bytes;
        if command.len() > limit {
            return Err(ClientError::TooLarge {
                size: command.len(),
                limit,
            });
        }
        // Held until the answer: waiting here is the backpressure on a flood of writes. The
        // budget fits a u32 (checked by `NodeConfig::validate`); a larger command takes it all.
        let cost = (command.len() + PENDING_WRITE_OVERHEAD_BYTES)
            .min(self.limits.max_pending_write_bytes) as u32;
        let _pending = self
            .pending_writes
            .acquire_many(cost)
            .await
            .map_err(|_| stopped())?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Write { command, reply })
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| ClientError::OutcomeUnknown("the node stopped before answering".into()))?
    }

    /// The size limits this node runs with (the largest command [`NodeHandle::write`] takes).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A linearizable read: waits until this node has applied everything committed before the
    /// read began (ReadIndex, confirmed by the leader), then runs `f` on the state machine.
    ///
    /// `f` runs under the state machine's read lock, which blocks applying: keep it short.
    /// [`ClientError::Retry`] when no leader confirmed the read (an election is under way):
    /// retrying is safe.
    pub async fn read<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Read { reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())??;
        let state_machine = self
            .state_machine
            .read()
            .map_err(|_| ClientError::Stopped("state machine lock poisoned".into()))?;
        Ok(f(&state_machine))
    }

    /// Runs `f` on the state machine as this node has applied it so far, without a read
    /// barrier, with an index it has applied at least through (entries without a command
    /// included): it may be behind the cluster, so this is for diagnostics such as comparing
    /// replicas, never for answering clients.
    pub fn inspect<R>(&self, f: impl FnOnce(&S, LogIndex) -> R) -> Result<R, ClientError> {
        // Read before taking the lock: the apply task publishes an index only once it has
        // applied through it, so the state seen below is at least that far along.
        let applied = LogIndex(self.status.borrow().applied_index);
        let state_machine = self
            .state_machine
            .read()
            .map_err(|_| ClientError::Stopped("state machine lock poisoned".into()))?;
        Ok(f(&state_machine, applied))
    }

    /// Changes the cluster's membership and waits for the outcome: the configuration committed
    /// once the change is done. Any node takes the request (a follower forwards it to the
    /// leader). Adding a voter first catches it up; adding a member that is already one, or
    /// removing a node that is not, succeeds at once. Gives up after the node's `admin_timeout`
    /// ([`AdminError::Timeout`]; the change may still happen).
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::ChangeMembership { change, reply })
            .map_err(|_| admin_stopped())?;
        answer.await.map_err(|_| admin_stopped())?
    }

    /// Hands leadership to `target` and waits until it leads (returns its id), or until the
    /// transfer is aborted (the target did not take over within an election timeout), or the
    /// node's `admin_timeout`. Only the leader transfers ([`AdminError::NotLeader`] names the
    /// leader otherwise); a transfer to the node that already leads succeeds at once.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<NodeId, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::TransferLeadership { target, reply })
            .map_err(|_| admin_stopped())?;
        answer.await.map_err(|_| admin_stopped())?
    }

    /// Takes a snapshot of the state machine now (it is saved durably) and compacts the log
    /// behind it; returns the index it covers.
    pub async fn trigger_snapshot(&self) -> Result<LogIndex, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Snapshot { reply })
            .map_err(|_| admin_stopped())?;
        answer.await.map_err(|_| admin_stopped())?
    }

    /// The node's latest status (a copy; published by the raft loop after every turn).
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The status as a [`tokio::sync::watch`] channel: `changed().await` wakes when the
    /// raft loop publishes a new one, so an application reacts to a change of leader or role
    /// without polling. The channel closes when the node stops.
    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// Waits until the status satisfies `ready` (for tests and tools).
    pub async fn wait_for(&self, ready: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
        let mut status = self.status.clone();
        let result = status.wait_for(|s| ready(s)).await.map(|s| s.clone());
        result.unwrap_or_else(|_| self.status())
    }

    /// The node's counters, gauges and histograms ([`Metrics::render`] for Prometheus).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

fn stopped() -> ClientError {
    ClientError::Stopped("the node is shut down".into())
}

fn admin_stopped() -> AdminError {
    AdminError::Stopped("the node is shut down".into())
}

/// A running node. Dropping it without [`Node::shutdown`] aborts its tasks.
pub struct Node<S> {
    handle: NodeHandle<S>,
    cancel: CancellationToken,
    raft_loop: Option<JoinHandle<()>>,
    apply_task: Option<JoinHandle<()>>,
    transport: Option<Transport>,
}

/// What a node starts from besides its configuration.
struct Parts<S> {
    plan: StartPlan,
    limits: Limits,
    backend: LogBackend,
    restart: Restart,
    network: Arc<dyn Network>,
    inbound: crate::inbox::Inbox,
    state_machine: S,
    failures: (FailureReporter, mpsc::UnboundedReceiver<Failure>),
}

impl<S> Node<S>
where
    S: StateMachine + Send + Sync + 'static,
{
    /// Opens the durable log in `config.data_dir`, checks the configuration against the
    /// directory's cluster record (or saves it on a first start, see [`bootstrap`]), restarts
    /// the core from the log, and joins the cluster over TCP on `listener`.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        state_machine: S,
    ) -> Result<Node<S>, NodeError> {
        config.validate()?;
        let wal = Wal::open(
            WalOptions::new(config.data_dir.clone()).segment_bytes(config.segment_bytes),
        )?;
        let stored = wal.load()?;
        Node::start_on(
            config,
            listener,
            LogBackend::durable(wal),
            stored,
            state_machine,
        )
    }

    /// [`Node::start`] with the application's own log storage instead of the WAL: `storage`
    /// holds the log and hard state (and must pass [`raftengine::conformance`]); snapshots and
    /// the cluster record still live in `config.data_dir`. Everything else (the cluster-record
    /// checks, the transport, restarts) is as with [`Node::start`].
    pub async fn start_with_storage(
        config: NodeConfig,
        listener: TcpListener,
        storage: Box<dyn LogStorage + Send>,
        state_machine: S,
    ) -> Result<Node<S>, NodeError> {
        config.validate()?;
        let stored = storage.load()?;
        Node::start_on(
            config,
            listener,
            LogBackend::Custom(storage),
            stored,
            state_machine,
        )
    }

    /// What [`Node::start`] and [`Node::start_with_storage`] share: restore the latest
    /// snapshot, reconcile with the cluster record, start the transport and the node.
    fn start_on(
        config: NodeConfig,
        listener: TcpListener,
        backend: LogBackend,
        stored: raftengine::StoredState,
        state_machine: S,
    ) -> Result<Node<S>, NodeError> {
        let limits = config.validate()?;
        let snapshots = SnapshotStore::open(config.data_dir.join("snapshots"))?;
        let mut state_machine = state_machine;
        let restored = match snapshots.latest()? {
            Some(file) => {
                state_machine
                    .restore_from(&file.data)
                    .map_err(|e| NodeError::Snapshot(e.to_string()))?;
                Some(raftengine::Snapshot {
                    last_included: file.last_included,
                    membership: file.membership,
                    data: Arc::new(file.data),
                })
            }
            None => None,
        };
        let has_state = restored.is_some()
            || stored.hard_state.term.0 > 0
            || !stored.entries.is_empty()
            || stored.log_start.index.0 > 0;
        // The voters of the configuration the log (or, before it, the snapshot) holds.
        let logged = stored.entries.iter().rev().find_map(|e| match &e.payload {
            raftengine::EntryPayload::Membership(m) => Some(m),
            _ => None,
        });
        let current = logged
            .or(restored.as_ref().map(|s| &s.membership))
            .filter(|m| !m.voters.is_empty())
            .map(|m| m.all_voters().into_iter().map(|v| v.0).collect());
        let plan = bootstrap::reconcile(&config, &config.data_dir, has_state, current)?;
        let mut transport_config =
            TransportConfig::new(config.id, config.cluster_id, plan.peers.clone());
        transport_config.max_frame_bytes = limits.max_frame_bytes;
        transport_config.source_ip = config.peer_source_ip;
        transport_config.tls = config.peer_tls.clone();
        let (transport, inbound) = Transport::start(transport_config, listener)?;
        let network: Arc<dyn Network> = Arc::new(transport.sender());
        let failures = FailureReporter::channel();
        watch_transport(&transport, failures.0.clone());
        // The transport starts with the configured peers; the raft loop keeps them in step with
        // the configuration from its first turn on.
        let parts = Parts {
            plan,
            limits,
            backend,
            restart: Restart {
                stored,
                snapshot: restored,
                snapshots: Some(snapshots),
            },
            network,
            inbound,
            state_machine,
            failures,
        };
        let mut node = Node::start_parts(config, parts)?;
        node.transport = Some(transport);
        Ok(node)
    }

    /// Starts a node on any log backend and network (the in-process benchmark uses an in-memory
    /// log and channels). The voters come from `config` alone (no cluster record is kept).
    pub fn start_with(
        config: NodeConfig,
        backend: LogBackend,
        restart: Restart,
        network: Arc<dyn Network>,
        inbound: crate::inbox::Inbox,
        state_machine: S,
    ) -> Result<Node<S>, NodeError> {
        let limits = config.validate()?;
        let parts = Parts {
            plan: StartPlan::from_config(&config),
            limits,
            backend,
            restart,
            network,
            inbound,
            state_machine,
            failures: FailureReporter::channel(),
        };
        Node::start_parts(config, parts)
    }

    fn start_parts(config: NodeConfig, parts: Parts<S>) -> Result<Node<S>, NodeError> {
        let mut raft_config = config.raft.clone();
        raft_config.voters = parts.plan.voters.clone();
        raft_config.max_bytes_per_message = parts.limits.max_bytes_per_message;
        raft_config.max_command_bytes = parts.limits.max_command_bytes;
        let restart = parts.restart;
        let from = restart.snapshot.as_ref().map(|s| s.last_included);
        let raft = RaftNode::restart_from_snapshot(raft_config, restart.stored, restart.snapshot)?;
        let durable = raft.log().last_index();
        let committed_membership = raft.committed_membership().clone();
        let state_machine = Arc::new(RwLock::new(parts.state_machine));
        let metrics = Arc::new(Metrics::default());
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let initial = NodeStatus::of(&raft, LogIndex(0), durable);
        let (status_tx, status) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (applied_tx, applied_rx) = watch::channel(LogIndex(0));
        let cancel = CancellationToken::new();
        let (taken_tx, taken_rx) = mpsc::unbounded_channel();
        let (reporter, failures) = parts.failures;
        let outlets = apply::Outlets {
            applied: applied_tx,
            taken: taken_tx,
            failures: reporter.clone(),
        };
        let applier = Applier::new(
            state_machine.clone(),
            metrics.clone(),
            from,
            committed_membership,
            restart.snapshots,
            outlets,
        );
        let apply_task = reporter.spawn("apply task", applier.run(apply_rx));
        let (durable_tx, durable_rx) = mpsc::unbounded_channel();
        let backend = parts.backend.start(durable_tx, metrics.clone());
        let configured = parts
            .plan
            .peers
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        let raft_loop = RaftLoop {
            peers: PeerBook::new(config.id, configured),
            admin: PendingAdmin::default(),
            admin_timeout: config.admin_timeout,
            raft,
            backend,
            network: parts.network,
            apply: apply_tx,
            applied: applied_rx,
            status: status_tx.clone(),
            durable,
            // Unique across restarts: a leader recognizes duplicated forwards by (node, id).
            next_request: random_seed() >> 1,
            writes: HashMap::new(),
            reads: HashMap::new(),
            proposed_at: BTreeMap::new(),
            metrics: metrics.clone(),
            last_role: None,
            stopping: None,
            clock: TickClock::new(config.tick),
        };
        let inputs = Inputs {
            requests,
            inbound: parts.inbound,
            durable: durable_rx,
            taken: taken_rx,
            failures,
        };
        let task = spawn_raft_loop(raft_loop, inputs, cancel.clone(), status_tx);
        Ok(Node {
            handle: NodeHandle {
                requests: requests_tx,
                status,
                state_machine,
                metrics,
                limits: parts.limits,
                pending_writes: Arc::new(Semaphore::new(parts.limits.max_pending_write_bytes)),
            },
            cancel,
            raft_loop: Some(task),
            apply_task: Some(apply_task),
            transport: None,
        })
    }

    /// A handle for clients; clone it freely (every clone talks to this node).
    pub fn handle(&self) -> NodeHandle<S> {
        self.handle.clone()
    }

    /// Counters of the TCP transport (queued, dropped, connections); `None` for a node started
    /// with [`Node::start_with`] on another network.
    pub fn transport_stats(&self) -> Option<TransportStats> {
        self.transport.as_ref().map(Transport::stats)
    }

    /// Stops accepting work, makes what was queued for the log durable, and stops every task.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.raft_loop.take() {
            let _ = task.await;
        }
        if let Some(task) = self.apply_task.take() {
            let _ = task.await;
        }
        if let Some(transport) = self.transport.take() {
            transport.shutdown().await;
        }
    }
}

impl<S> Drop for Node<S> {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.raft_loop.take() {
            task.abort();
        }
        if let Some(task) = self.apply_task.take() {
            task.abort();
        }
    }
}

/// Reports a failure of the transport's own tasks (its accept loop, a peer's sending task) as
/// a failure of the node: without them it would hear or reach nobody while looking alive.
fn watch_transport(transport: &Transport, failures: FailureReporter) {
    let mut failed = transport.failure();
    tokio::spawn(async move {
        if let Ok(reason) = failed.wait_for(Option::is_some).await {
            let reason = reason.clone().unwrap_or_default();
            failures.report(Failure::task("transport", reason));
        }
    });
}

/// Runs the raft loop; if it panics, the node's status says so (its clients' pending answers
/// are dropped, which they read as an unknown outcome).
fn spawn_raft_loop(
    raft_loop: RaftLoop,
    inputs: Inputs,
    cancel: CancellationToken,
    status: Arc<watch::Sender<NodeStatus>>,
) -> JoinHandle<()> {
    use futures_util::FutureExt;
    tokio::spawn(async move {
        let run = std::panic::AssertUnwindSafe(raft_loop.run(inputs, cancel));
        if let Err(panic) = run.catch_unwind().await {
            let reason = format!("raft loop failed: {}", failure::panic_message(&*panic));
            tracing::error!("{reason}; the node stopped");
            status.send_modify(|status| status.stopped = Some(reason));
        }
    })
}

/// Inputs handled per loop turn before the output is taken (bounds latency under load).
const MAX_INPUTS_PER_TURN: usize = 4096;
/// Inputs handled between two looks at the clock, so that a due tick is not held up by a
/// long batch (leases and election timers count ticks).
const INPUTS_BETWEEN_CLOCK_CHECKS: usize = 64;

/// When the next tick is due. A late tick is delivered once and the next one follows a full
/// period later (tokio's `MissedTickBehavior::Delay`): ticks are never bunched up.
struct TickClock {
    period: Duration,
    next: tokio::time::Instant,
}

impl TickClock {
    fn new(period: Duration) -> TickClock {
        TickClock {
            period,
            next: tokio::time::Instant::now() + period,
        }
    }

    /// Whether a tick is due now; if so, the next one is scheduled.
    fn take_due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + self.period;
        true
    }
}

/// The channels the raft loop reads.
struct Inputs {
    requests: mpsc::UnboundedReceiver<Request>,
    inbound: crate::inbox::Inbox,
    durable: mpsc::UnboundedReceiver<backend::Durable>,
    taken: mpsc::UnboundedReceiver<apply::ApplyReport>,
    failures: mpsc::UnboundedReceiver<Failure>,
}

struct RaftLoop {
    raft: RaftNode,
    backend: backend::RunningBackend,
    network: Arc<dyn Network>,
    apply: mpsc::UnboundedSender<ApplyMsg>,
    applied: watch::Receiver<LogIndex>,
    status: Arc<watch::Sender<NodeStatus>>,
    durable: LogIndex,
    next_request: u64,
    writes: HashMap<RequestId, WriteReply>,
    reads: HashMap<RequestId, ReadReply>,
    /// When each pending write was proposed here (append latency).
    proposed_at: BTreeMap<RequestId, Instant>,
    metrics: Arc<Metrics>,
    last_role: Option<RoleKind>,
    /// Where to send, kept in step with the configuration.
    peers: PeerBook,
    /// Membership changes and transfers waiting for their outcome.
    admin: PendingAdmin,
    admin_timeout: Duration,
    /// The failure this loop stopped the core for (its reason is what the status shows).
    stopping: Option<Failure>,
    clock: TickClock,
}

impl RaftLoop {
    async fn run(mut self, mut inputs: Inputs, cancel: CancellationToken) {
        // The peers of the configuration the node restarted with.
        self.sync_admin();
        let sleep = tokio::time::sleep_until(self.clock.next);
        tokio::pin!(sleep);
        let mut stopped_by = "the node is shutting down".to_string();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(failure) = inputs.failures.recv() => self.fail(failure),
                // Before any input: a flood of messages or requests must not hold up ticks.
                () = &mut sleep => self.tick_if_due(),
                done = inputs.durable.recv() => match done {
                    Some(done) => {
                        self.on_durable(done);
                        while let Ok(done) = inputs.durable.try_recv() {
                            self.on_durable(done);
                        }
                    }
                    None => self.fail(Failure::LogStorage("the log writer stopped".into())),
                },
                Some(msg) = inputs.inbound.recv() => {
                    self.on_message(msg);
                    for n in 1..MAX_INPUTS_PER_TURN {
                        let Some(msg) = inputs.inbound.try_recv() else { break };
                        self.on_message(msg);
                        self.tick_between_inputs(n);
                    }
                }
                Some(request) = inputs.requests.recv() => {
                    self.on_request(request);
                    for n in 1..MAX_INPUTS_PER_TURN {
                        let Ok(request) = inputs.requests.try_recv() else { break };
                        self.on_request(request);
                        self.tick_between_inputs(n);
                    }
                }
                Some(report) = inputs.taken.recv() => match report {
                    apply::ApplyReport::Taken(taken) => {
                        self.on_snapshot_taken(taken.index, taken.data, taken.reply);
                    }
                    apply::ApplyReport::Installed(index) => {
                        tracing::info!(
                            index = index.0,
                            "the leader's snapshot is installed and saved; the log behind it may go"
                        );
                        if let Err(e) = self.raft.snapshot_installed(index) {
                            tracing::error!("the core refused a snapshot installation: {e}");
                        }
                    }
                },
            }
            // Whatever else is already queued joins this turn's output.
            for n in 1..MAX_INPUTS_PER_TURN {
                let Ok(request) = inputs.requests.try_recv() else {
                    break;
                };
                self.on_request(request);
                self.tick_between_inputs(n);
            }
            sleep.as_mut().reset(self.clock.next);
            if let Err(reason) = self.carry_out() {
                stopped_by = reason;
                break;
            }
        }
        self.stop_all(&stopped_by);
        refuse_queued(&mut inputs.requests, &stopped_by);
        self.backend.shutdown();
    }

    /// Ticks the core if a tick is due.
    fn tick_if_due(&mut self) {
        if self.clock.take_due() {
            self.metrics.ticks.inc();
            self.raft.tick();
            self.expire_admin();
        }
    }

    /// Within a batch of inputs: every so often, a due tick goes in before the rest.
    fn tick_between_inputs(&mut self, handled: usize) {
        if handled.is_multiple_of(INPUTS_BETWEEN_CLOCK_CHECKS) {
            self.tick_if_due();
        }
    }

    /// Stops the core: it votes, acknowledges and commits no more, and the loop ends once the
    /// output is carried out. The first failure is the reason given.
    fn fail(&mut self, failure: Failure) {
        if self.stopping.is_none() {
            self.stopping = Some(failure.clone());
        }
        self.raft.fail(failure.fatal_error());
    }

    fn on_durable(&mut self, done: backend::Durable) {
        match done {
            Ok(d) => {
                self.durable = d.last_index;
                if let Err(e) = self.raft.persisted(d.seq) {
                    tracing::error!("the core refused a durability report: {e}");
                }
            }
            Err(e) => self.fail(Failure::LogStorage(e.to_string())),
        }
    }

    fn on_message(&mut self, msg: Message) {
        if let Err(e) = self.raft.step(msg) {
            tracing::warn!("refused a message: {e}");
        }
    }

    fn new_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    fn on_request(&mut self, request: Request) {
        let removed = self.raft.is_removed();
        match request {
            // The core would still pass them to its former leader, which no longer listens.
            Request::Write { reply, .. } if removed => {
                let _ = reply.send(Err(ClientError::Removed));
            }
            Request::Read { reply } if removed => {
                let _ = reply.send(Err(ClientError::Removed));
            }
            Request::Write { command, reply } => {
                let id = self.new_request_id();
                self.writes.insert(id, reply);
                self.proposed_at.insert(id, Instant::now());
                self.metrics.proposals.inc();
                self.raft.propose(id, command);
            }
            Request::Read { reply } => {
                let id = self.new_request_id();
                self.reads.insert(id, reply);
                self.metrics.reads.inc();
                self.raft.read(id);
            }
            Request::ChangeMembership { change, reply } => self.on_change_request(change, reply),
            Request::TransferLeadership { target, reply } => {
                self.on_transfer_request(target, reply)
            }
            Request::Snapshot { reply } => {
                self.hand_to_apply(ApplyMsg::TakeSnapshot { reply: Some(reply) });
            }
        }
    }

    /// Hands work to the apply task. If it is gone, the node stops (it could apply nothing
    /// more) and the work is answered as abandoned.
    fn hand_to_apply(&mut self, msg: ApplyMsg) {
        if let Err(mpsc::error::SendError(msg)) = self.apply.send(msg) {
            let failure = Failure::task("apply task", "it is no longer running");
            msg.abandon(&failure.to_string());
            if self.stopping.is_none() {
                tracing::error!("{failure}; stopping the node");
            }
            self.fail(failure);
        }
    }

    /// Carries out the core's output. `Err` with the reason when the node must stop.
    fn carry_out(&mut self) -> Result<(), String> {
        loop {
            let out: Output = self.raft.take_output();
            if out.is_empty() {
                break;
            }
            // Send first: followers write in parallel with the leader's own write.
            for msg in out.messages {
                self.network.send(msg);
            }
            if let Some(batch) = out.persist {
                // A leader must not wait: its appends and heartbeats go out from this thread.
                // Anyone else has nothing to send until the write is durable, and writing here
                // saves the hand-offs to and from the writer thread (as etcd's followers do).
                let wait_here = self.raft.role() != RoleKind::Leader;
                if let Some(done) = self.backend.persist(batch, wait_here) {
                    self.on_durable(done);
                }
            }
            self.apply_committed(out.committed, out.install_snapshot);
            if out.take_snapshot.is_some() {
                self.hand_to_apply(ApplyMsg::TakeSnapshot { reply: None });
            }
            for ready in out.reads {
                if let Some(reply) = self.reads.remove(&ready.request) {
                    self.hand_to_apply(ApplyMsg::Read {
                        index: ready.index,
                        reply,
                    });
                }
            }
            for (id, why) in out.rejected {
                self.reject(id, why);
            }
            self.on_change_outcomes(out.membership_changes);
            self.on_admin_events(&out.events);
            self.count_events(&out.events);
            if let Some(fatal) = out.fatal {
                return Err(self.stopped(fatal));
            }
        }
        self.sync_admin();
        self.publish_status(None);
        Ok(())
    }

    /// Sends committed entries (with the writes they answer) and a snapshot to install to the
    /// apply task, in the order they must be applied.
    fn apply_committed(
        &mut self,
        committed: Vec<raftengine::CommittedEntry>,
        install: Option<raftengine::Snapshot>,
    ) {
        if let Some(snapshot) = &install {
            tracing::info!(
                index = snapshot.last_included.index.0,
                term = snapshot.last_included.term.0,
                "installing the leader's snapshot"
            );
        }
        let now = Instant::now();
        let mut entries = Vec::with_capacity(committed.len());
        for committed in committed {
            let reply = committed.request.and_then(|id| {
                if let Some(at) = self.proposed_at.remove(&id) {
                    self.metrics.commit_latency.observe(now.duration_since(at));
                }
                self.writes.remove(&id)
            });
            entries.push((committed.entry, reply));
        }
        for msg in ApplyMsg::committed(entries, install) {
            self.hand_to_apply(msg);
        }
    }

    fn count_events(&self, events: &[Event]) {
        for event in events {
            tracing::debug!(?event, "core event");
            log_repair(event);
            if let Event::ConflictingLeader {
                term,
                known_leader,
                claimed_leader,
            } = event
            {
                // Forged, misconfigured or a safety bug: whatever that peer says next cannot be
                // trusted either, so its connections go (it may reconnect and is judged again).
                tracing::error!(
                    term = term.0,
                    known_leader = known_leader.0,
                    claimed_leader = claimed_leader.0,
                    "a second leader claims a term another node leads; message refused, \
                     disconnecting that peer"
                );
                self.metrics.conflicting_leaders.inc();
                self.network.disconnect(*claimed_leader);
            }
            if let Event::ElectionWon { .. } = event {
                self.metrics.elections_won.inc();
            }
            if let Event::RoleChanged {
                role: RoleKind::Candidate,
                ..
            } = event
            {
                self.metrics.elections_started.inc();
            }
        }
    }

    /// The core stopped: says why (the failure this loop reported, or the core's own reason),
    /// marks the log broken when replicas may have diverged, and publishes the reason.
    fn stopped(&mut self, fatal: FatalError) -> String {
        let (reason, broken) = match self.stopping.take() {
            Some(failure) => (failure.to_string(), failure.marks_log_broken()),
            None => (fatal.to_string(), true),
        };
        tracing::error!("node stopped: {reason}");
        if broken {
            self.backend.mark_broken(&reason);
        }
        self.publish_status(Some(reason.clone()));
        reason
    }

    fn reject(&mut self, id: RequestId, why: CommandRejected) {
        self.proposed_at.remove(&id);
        let error = match why {
            CommandRejected::Redirect { leader } => ClientError::NotLeader {
                leader: Some(leader),
            },
            CommandRejected::Retry => ClientError::Retry,
            CommandRejected::LeadershipLost => ClientError::OutcomeUnknown(
                "leadership changed before the command committed".into(),
            ),
            CommandRejected::TooLarge { size, limit } => ClientError::TooLarge { size, limit },
        };
        if let Some(reply) = self.writes.remove(&id) {
            let _ = reply.send(Err(error));
        } else if let Some(reply) = self.reads.remove(&id) {
            let error = match error {
                ClientError::OutcomeUnknown(_) => ClientError::Retry,
                other => other,
            };
            let _ = reply.send(Err(error));
        }
    }

    fn publish_status(&mut self, stopped: Option<String>) {
        let (term, commit, role) = (self.raft.term(), self.raft.commit_index(), self.raft.role());
        let applied = *self.applied.borrow();
        let mut status = NodeStatus::of(&self.raft, applied, self.durable);
        status.stopped = stopped;
        self.metrics.term.set(term.0);
        self.metrics.commit_index.set(commit.0);
        self.metrics.applied_index.set(applied.0);
        self.metrics
            .is_leader
            .set(u64::from(role == RoleKind::Leader));
        if self.last_role != Some(role) {
            self.last_role = Some(role);
            tracing::info!(term = term.0, "role: {}", role_name(role));
        }
        self.status.send_if_modified(|current| {
            let changed = current.role != status.role
                || current.term != status.term
                || current.leader != status.leader
                || current.commit_index != status.commit_index
                || current.applied_index != status.applied_index
                || current.last_index != status.last_index
                || current.log_start != status.log_start
                || current.durable_index != status.durable_index
                || current.stopped != status.stopped
                || current.progress != status.progress
                || current.membership_committed != status.membership_committed
                || current.removed != status.removed
                || current.repairing != status.repairing
                || current.membership != status.membership;
            if changed {
                *current = status;
            }
            changed
        });
    }

    /// This node will apply nothing more, so the writes and reads it waits for would never be
    /// answered. A write may still have been committed by the others: its outcome is unknown.
    fn fail_requests_of_removed_node(&mut self) {
        self.proposed_at.clear();
        for (_, reply) in self.writes.drain() {
            let why = "this node was removed before the command was applied here";
            let _ = reply.send(Err(ClientError::OutcomeUnknown(why.into())));
        }
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(ClientError::Removed));
        }
    }

    /// The loop ends: the writes it proposed may still commit (their outcome is unknown), the
    /// reads and administrative requests fail.
    fn stop_all(&mut self, reason: &str) {
        self.proposed_at.clear();
        for (_, reply) in self.writes.drain() {
            let why = format!("the node stopped before the command was applied here ({reason})");
            let _ = reply.send(Err(ClientError::OutcomeUnknown(why)));
        }
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(ClientError::Stopped(reason.into())));
        }
        self.admin.stop_all(reason);
    }
}

/// Answers the requests still queued when the loop ended: none was handed to the core, so each
/// is a definite failure.
fn refuse_queued(requests: &mut mpsc::UnboundedReceiver<Request>, reason: &str) {
    requests.close();
    while let Ok(request) = requests.try_recv() {
        let stopped = || ClientError::Stopped(reason.to_string());
        let admin_stopped = || AdminError::Stopped(reason.to_string());
        match request {
            Request::Write { reply, .. } => {
                let _ = reply.send(Err(stopped()));
            }
            Request::Read { reply } => {
                let _ = reply.send(Err(stopped()));
            }
            Request::ChangeMembership { reply, .. } => {
                let _ = reply.send(Err(admin_stopped()));
            }
            Request::TransferLeadership { reply, .. } => {
                let _ = reply.send(Err(admin_stopped()));
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(Err(admin_stopped()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// A handle whose requests land in the returned receiver instead of a raft loop.
    fn handle_with_budget(pending: usize) -> (NodeHandle<()>, mpsc::UnboundedReceiver<Request>) {
        let raft = RaftNode::new(raftengine::Config::new(NodeId(1), vec![NodeId(1)]))
            .expect("a one-voter config is valid");
        let (_, status) = watch::channel(NodeStatus::of(&raft, LogIndex(0), LogIndex(0)));
        let (requests, received) = mpsc::unbounded_channel();
        let limits = Limits {
            max_frame_bytes: 1 << 20,
            max_command_bytes: 1 << 19,
            max_bytes_per_message: 1 << 19,
            max_pending_write_bytes: pending,
        };
        let handle = NodeHandle {
            requests,
            status,
            state_machine: Arc::new(RwLock::new(())),
            metrics: Arc::new(Metrics::default()),
            limits,
            pending_writes: Arc::new(Semaphore::new(pending)),
        };
        (handle, received)
    }

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn answer_write(request: Option<Request>, answer: &[u8]) {
        match request {
            Some(Request::Write { reply, .. }) => {
                let _ = reply.send(Ok(answer.to_vec()));
            }
            _ => panic!("expected a write request"),
        }
    }

    #[test]
    fn writes_past_the_pending_budget_wait_for_earlier_answers() {
        let (handle, mut received) = handle_with_budget(1_000);
        let mut first = pin!(handle.write(vec![1; 600]));
        let mut second = pin!(handle.write(vec![2; 600]));
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        // Only the first fits the budget: the second is not handed over yet.
        let first_request = received.try_recv().ok();
        assert!(
            received.try_recv().is_err(),
            "second write handed over past the budget"
        );

        answer_write(first_request, b"one");
        assert!(matches!(poll_once(first.as_mut()), Poll::Ready(Ok(v)) if v == b"one"));
        assert!(poll_once(second.as_mut()).is_pending());
        answer_write(received.try_recv().ok(), b"two");
        assert!(matches!(poll_once(second.as_mut()), Poll::Ready(Ok(v)) if v == b"two"));
    }

    #[test]
    fn a_command_larger_than_the_budget_goes_alone() {
        let (handle, mut received) = handle_with_budget(100);
        let mut large = pin!(handle.write(vec![7; 5_000]));
        let mut small = pin!(handle.write(vec![8; 1]));
        assert!(poll_once(large.as_mut()).is_pending());
        assert!(poll_once(small.as_mut()).is_pending());
        let large_request = received.try_recv().ok();
        assert!(
            received.try_recv().is_err(),
            "a write went alongside the large one"
        );
        answer_write(large_request, b"large");
        assert!(matches!(poll_once(large.as_mut()), Poll::Ready(Ok(_))));
        assert!(poll_once(small.as_mut()).is_pending());
        assert!(received.try_recv().is_ok(), "the small write follows");
    }

    #[test]
    fn an_abandoned_write_returns_its_budget() {
        let (handle, mut received) = handle_with_budget(1_000);
        {
            let mut abandoned = pin!(handle.write(vec![1; 900]));
            assert!(poll_once(abandoned.as_mut()).is_pending());
        }
        let mut next = pin!(handle.write(vec![2; 900]));
        assert!(poll_once(next.as_mut()).is_pending());
        assert_eq!(
            received.try_recv().iter().count(),
            1,
            "the abandoned write was sent"
        );
        assert!(
            received.try_recv().is_ok(),
            "the next write waited for a dropped one"
        );
    }
}
