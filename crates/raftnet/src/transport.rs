//! Node-to-node TCP transport for [`raftengine::Message`]s.
//!
//! # Model
//!
//! Connections are one-directional: a node *sends* only on connections it dialed (one outbound
//! task per peer) and *reads* only from connections it accepted. Every node therefore dials every
//! peer and is dialed by every peer. This keeps both sides simple and symmetric: no tie-breaking
//! about who owns a shared connection, and a restart of either side is handled the same way.
//!
//! Delivery is best effort, which is what Raft expects (it tolerates loss, duplication and
//! reordering):
//! - [`Transport::send`] never blocks or awaits. Each peer has a queue per lane, bounded in
//!   messages and in bytes; when one is full its *oldest* messages are dropped (counted in
//!   [`PeerStats::dropped`]). Messages sent while a peer is unreachable wait in those queues.
//! - A batch being written when a connection fails is lost. Every write must progress within
//!   [`TransportConfig::write_timeout`], and TCP keepalive is on, so a peer that stopped or
//!   vanished (a SIGSTOP, a firewall dropping packets) gets a fresh connection.
//! - Good inbound messages go to the [`Inbox`](crate::inbox::Inbox) returned by
//!   [`Transport::start`], bounded in messages and in payload bytes; when it is full they are
//!   dropped and counted ([`TransportStats::inbound_dropped`]).
//!
//! # Two lanes per peer
//!
//! A 60 MiB AppendEntries takes a while to write and read; heartbeats and votes queued behind it
//! on the same connection would arrive late, followers would time out, and a leader would lose
//! its quorum check although every node is alive. So each node dials each peer twice
//! ([`wire::Lane`]): the *bulk* lane carries AppendEntries with entries, snapshot chunks and
//! forwarded commands; the *control* lane carries everything else (votes, responses,
//! heartbeats, TimeoutNow, read-index and membership requests), which is small, so it never
//! waits behind bulk data.
//!
//! Splitting the lanes reorders messages, which Raft tolerates, but one reordering costs: a
//! heartbeat names the leader's last *sent* index as its previous entry, so a heartbeat that
//! overtakes the appends before it is rejected by the follower, and the leader falls back to
//! probing and resends its whole pipeline. To avoid that, every frame carries an ordering
//! number ([`wire::Frame::order`]): bulk frames their number, control frames the number of the
//! last bulk frame sent before them. When a heartbeat arrives before bulk frames sent ahead of
//! it, the receiver delivers it with the previous entry set to the end of the last append it
//! did deliver from that leader in that term: a heartbeat the leader could have sent then, so
//! Raft's safety is untouched (its commit index is capped by that point), and the follower's
//! answer is a success. Once the bulk connection closes, heartbeats are delivered unchanged
//! again, so a lost append is still found by a rejected heartbeat.
//!
//! # Handshake and trust
//!
//! The dialer's first frame is a [`wire::Hello`] (magic, [`wire::PROTOCOL_VERSION`], cluster id,
//! node id); the acceptor answers `Welcome` or `Refused { reason }` and closes. A dialer is
//! accepted whatever its node id (except the acceptor's own) when the magic, protocol version and
//! cluster id match: a node joining the cluster, or one the leader is catching up, is not in the
//! acceptor's peer list yet. After that, each frame must be a [`raftengine::Message`] whose `from`
//! is the handshake's node id and whose `to` is this node, or the connection is closed (as the
//! runtime also closes a peer's connections when the core finds it claiming a term another
//! leader holds, [`TransportSender::disconnect`]). On its own this only *identifies* peers and
//! keeps misconfigured nodes from talking to the wrong cluster. With [`TransportConfig::tls`]
//! every connection is mutual TLS 1.3 first: both ends present certificates from the cluster's
//! CA, the dialer checks that the acceptor's names the node it dials, and the acceptor that the
//! dialer's names the node id its hello claims ([`crate::tls`]); a failure is logged with its
//! reason and counted in [`TransportStats::tls_failures`]. See [`wire`] for the byte format.
//!
//! # Connection slots
//!
//! Accepted connections must complete the hello within [`TransportConfig::handshake_timeout`]
//! (at most [`TransportConfig::max_handshakes`] at once) and are closed after
//! [`TransportConfig::idle_timeout`] without a frame. A connection claiming a node id and lane
//! replaces an older one of the same id and lane. Members (the peers this node sends to) are
//! always admitted; other nodes (joining, or strangers of the right cluster) share
//! [`TransportConfig::max_inbound_connections`] slots, at most
//! [`TransportConfig::max_connections_per_source`] per source address, so idle strangers
//! cannot keep a restarted member out.
//!
//! # Peers change at run time
//!
//! [`TransportSender::set_peers`] replaces the set of peers this node sends to (the runtime calls
//! it when the cluster's membership changes): a new peer gets a queue and a dialing task, a peer
//! whose address changed is dialed afresh, and a peer that left is still routed to for
//! [`TransportConfig::peer_linger`], then dropped: what the node sends right after a removal (the
//! leader's last heartbeat, which tells the removed node of its removal; the answer to a change
//! the removed node asked for, held until a disk write completes) still goes out.

mod inbound;
mod outbound;
mod stats;
pub mod wire;

pub use stats::{PeerStats, TransportStats};

use crate::tls::PeerTls;
use outbound::{DialSettings, Peer, PeerQueue};
use raftengine::{Message, NodeId};
use stats::{bump, Counters, PeerCounters};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wire::Lane;

/// Settings of a [`Transport`]. Build with [`TransportConfig::new`] and adjust the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Identifies the cluster; nodes only talk to nodes with the same id.
    pub cluster_id: u64,
    /// The other nodes and where they listen, at start; [`TransportSender::set_peers`] changes
    /// them later. Must not contain `node_id`.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Largest frame payload sent or accepted (default 64 MiB). Larger outgoing messages are
    /// dropped; a larger incoming frame closes the connection.
    pub max_frame_bytes: usize,
    /// Messages queued per peer and lane before the oldest is dropped (default 4096).
    pub peer_queue_capacity: usize,
    /// Bytes (payloads, roughly) queued per peer and lane before the oldest messages are
    /// dropped (default 32 MiB); a single larger message is still queued, alone.
    pub peer_queue_bytes: usize,
    /// Longest wait for the socket to take one frame or a flush before the connection is
    /// replaced (default 10 s).
    pub write_timeout: Duration,
    /// Idle time before TCP keepalive probes start, on every connection (default 10 s).
    pub keepalive: Duration,
    /// Longest time sent bytes may stay unacknowledged before the connection is dropped and
    /// redialed (`TCP_USER_TIMEOUT`, Linux; default 10 s). With the retransmission timeout
    /// capped at 1 s (Linux 6.15+), a connection that lived through a partition carries
    /// messages again within a second of the network healing; on older kernels this bound is
    /// what keeps it from waiting minutes. Lower values drop connections under heavy loss.
    pub unacked_timeout: Duration,
    /// An accepted connection that sends no frame for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Accepted connections still in their handshake at once; more are closed (default 64).
    pub max_handshakes: usize,
    /// Connections of non-members from one source address (default 32).
    pub max_connections_per_source: usize,
    /// Capacity of the inbound channel (default 4096).
    pub inbound_capacity: usize,
    /// Most command and snapshot bytes the inbound channel holds (default 64 MiB; one message
    /// always fits an empty channel).
    pub inbound_bytes: usize,
    /// First delay before redialing a peer (default 10 ms); doubles per failure.
    pub reconnect_backoff_initial: Duration,
    /// Cap of the redial delay (default 1 s).
    pub reconnect_backoff_max: Duration,
    /// Bound on connecting, on the whole handshake, and on waiting for a dialer's hello
    /// (default 2 s).
    pub handshake_timeout: Duration,
    /// Handshaken connections of nodes that are not members (not among the peers this node
    /// sends to) open at once; more are refused (default 1024). Members are always admitted.
    pub max_inbound_connections: usize,
    /// How long a peer dropped by [`TransportSender::set_peers`] is still sent to (default 1 s).
    pub peer_linger: Duration,
    /// Local address outgoing connections are bound to (default: none, the OS picks). A node
    /// with several addresses sets its own so that peers and firewalls see where it really is.
    pub source_ip: Option<IpAddr>,
    /// Mutual TLS 1.3 on every peer connection (default: none, plain TCP). Every node of a
    /// cluster must have it or none: a TLS node and a plain one cannot talk.
    pub tls: Option<Arc<PeerTls>>,
}

impl TransportConfig {
    /// Default limit on a frame payload.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
    /// Default per-peer queue capacity, in messages.
    pub const DEFAULT_PEER_QUEUE_CAPACITY: usize = 4096;
    /// Default inbound channel capacity, in messages.
    pub const DEFAULT_INBOUND_CAPACITY: usize = 4096;
    /// Default bound on the command and snapshot bytes the inbound channel holds (64 MiB).
    pub const DEFAULT_INBOUND_BYTES: usize = 64 * 1024 * 1024;

    /// A configuration with the defaults documented on each field.
    pub fn new(
        node_id: NodeId,
        cluster_id: u64,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id,
            peers,
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            peer_queue_capacity: Self::DEFAULT_PEER_QUEUE_CAPACITY,
            peer_queue_bytes: 32 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            unacked_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_handshakes: 64,
            max_connections_per_source: 32,
            inbound_capacity: Self::DEFAULT_INBOUND_CAPACITY,
            inbound_bytes: Self::DEFAULT_INBOUND_BYTES,
            reconnect_backoff_initial: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            max_inbound_connections: 1024,
            peer_linger: Duration::from_secs(1),
            source_ip: None,
            tls: None,
        }
    }

    /// Rejects settings that would panic (zero-capacity channels), spin (zero backoff) or cannot
    /// be framed (a limit over the 4-byte length field).
    fn validate(&self) -> Result<(), TransportError> {
        let fail = |what: &str| Err(TransportError::InvalidConfig(what.to_string()));
        if self.peers.contains_key(&self.node_id) {
            return fail("peers must not contain this node's own id");
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > u32::MAX as usize {
            return fail("max_frame_bytes must be in 1..=u32::MAX");
        }
        if self.peer_queue_capacity == 0 || self.inbound_capacity == 0 {
            return fail("peer_queue_capacity and inbound_capacity must be at least 1");
        }
        if self.reconnect_backoff_initial.is_zero()
            || self.reconnect_backoff_max < self.reconnect_backoff_initial
        {
            return fail("need 0 < reconnect_backoff_initial <= reconnect_backoff_max");
        }
        if self.handshake_timeout.is_zero() {
            return fail("handshake_timeout must not be zero");
        }
        if self.max_inbound_connections == 0
            || self.max_handshakes == 0
            || self.max_connections_per_source == 0
        {
            return fail("max_inbound_connections, max_handshakes and max_connections_per_source must be at least 1");
        }
        if self.peer_queue_bytes == 0 {
            return fail("peer_queue_bytes must be at least 1");
        }
        if self.write_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.keepalive.is_zero()
            || self.unacked_timeout.is_zero()
        {
            return fail(
                "write_timeout, idle_timeout, keepalive and unacked_timeout must not be zero",
            );
        }
        Ok(())
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A setting is out of range.
    #[error("invalid transport config: {0}")]
    InvalidConfig(String),
    /// `start` was called outside a tokio runtime, so there is nowhere to spawn the tasks.
    #[error("Transport::start must be called from within a tokio runtime")]
    NoRuntime,
    /// The listener failed (e.g. its local address cannot be read).
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Why one connection ended; internal, only logged.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("connection closed by the peer")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("encode: {0}")]
    Encode(#[from] postcard::Error),
    #[error("decode: {0}")]
    Decode(#[from] wire::DecodeError),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
}

/// The peers a transport sends to, shared by its senders (which route and change them) and the
/// transport itself (stats, shutdown).
#[derive(Debug)]
struct PeerTable {
    node_id: NodeId,
    peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    settings: Arc<DialSettings>,
    queue_capacity: usize,
    queue_bytes: usize,
    linger: Duration,
    /// The transport's; cancelling it stops every peer task.
    cancel: CancellationToken,
    runtime: tokio::runtime::Handle,
    /// Every peer task, lingering ones included. Dropping the set aborts them.
    tasks: Mutex<JoinSet<()>>,
    /// Set when a task of the transport fails (see [`Transport::failure`]).
    failure: Arc<watch::Sender<Option<String>>>,
}

impl PeerTable {
    /// A poisoned lock only means a thread panicked while holding it; the map is still valid.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<NodeId, Arc<Peer>>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<NodeId, Arc<Peer>>> {
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn tasks(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` is a peer this node sends to (a member, or a node being caught up).
    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.read()
            .get(&id)
            .is_some_and(|p| !p.retire.is_cancelled())
    }

    /// Starts sending to `id` at `addr`: fresh queues and a dialing task per lane.
    fn spawn_peer(self: &Arc<Self>, id: NodeId, addr: String) -> Arc<Peer> {
        let queue = || PeerQueue::new(self.queue_capacity, self.queue_bytes);
        let peer = Arc::new(Peer {
            id,
            addr,
            queues: [queue(), queue()],
            bulk_sent: std::sync::atomic::AtomicU64::new(0),
            counters: PeerCounters::default(),
            retire: CancellationToken::new(),
        });
        for lane in [Lane::Control, Lane::Bulk] {
            self.spawn_lane(&peer, lane);
        }
        peer
    }

    fn spawn_lane(self: &Arc<Self>, peer: &Arc<Peer>, lane: Lane) {
        let id = peer.id;
        let (task_peer, settings, cancel, linger) = (
            Arc::clone(peer),
            self.settings.clone(),
            self.cancel.clone(),
            self.linger,
        );
        let failure = self.failure.clone();
        // Weak: the table holds the tasks, so a strong reference here would be a cycle.
        let table = Arc::downgrade(self);
        let span = tracing::info_span!(
            "raftnet_outbound",
            node = self.node_id.0,
            peer = id.0,
            ?lane
        );
        self.tasks().spawn_on(
            async move {
                // Cancellation interrupts the task at whatever it awaits (dial, handshake,
                // write, backoff sleep); dropping its state closes the socket.
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = async {
                        task_peer.retire.cancelled().await;
                        tokio::time::sleep(linger).await;
                    } => {
                        if let Some(table) = table.upgrade() {
                            let mut peers = table.write();
                            // Unless the peer was added again meanwhile (a new entry).
                            if peers.get(&id).is_some_and(|p| Arc::ptr_eq(p, &task_peer)) {
                                peers.remove(&id);
                            }
                        }
                        tracing::debug!(peer = id.0, "peer removed; its task ends");
                    }
                    // `run` only returns by panicking (it redials forever).
                    _ = supervised("peer task", outbound::run(&task_peer, lane, &settings), &failure) => {}
                }
            }
            .instrument(span),
            &self.runtime,
        );
    }

    /// Makes `wanted` the set of peers (see [`TransportSender::set_peers`]).
    fn set_peers(self: &Arc<Self>, wanted: &BTreeMap<NodeId, String>) {
        if self.cancel.is_cancelled() {
            return;
        }
        let mut peers = self.write();
        for (id, peer) in peers.iter() {
            if peer.retire.is_cancelled() || wanted.get(id) == Some(&peer.addr) {
                continue;
            }
            // Still routed to until it is replaced or its task ends after lingering.
            peer.retire.cancel();
            tracing::info!(
                node = self.node_id.0,
                peer = id.0,
                "peer left; sending what is queued for it, then no more"
            );
        }
        for (&id, addr) in wanted {
            let current = peers
                .get(&id)
                .filter(|p| !p.retire.is_cancelled() && p.addr == *addr);
            if id == self.node_id || current.is_some() {
                continue;
            }
            tracing::info!(node = self.node_id.0, peer = id.0, %addr, "sending to peer");
            let peer = self.spawn_peer(id, addr.clone());
            peers.insert(id, peer);
        }
        drop(peers);
        // Reap the tasks of peers that have finished lingering, so the set does not grow.
        let mut tasks = self.tasks();
        while tasks.try_join_next().is_some() {}
    }
}

/// The sending side of a [`Transport`]: it only queues messages for the peer tasks, and changes
/// the set of peers.
#[derive(Debug, Clone)]
pub struct TransportSender {
    node_id: NodeId,
    table: Arc<PeerTable>,
    counters: Arc<Counters>,
    /// The accepted connections, for [`TransportSender::disconnect`].
    inbound: Arc<inbound::Slots>,
}

impl TransportSender {
    /// Queues `msg` for peer `msg.to`. Never blocks or awaits.
    ///
    /// If the peer's queue is full, its oldest message is dropped to make room (counted in
    /// [`PeerStats::dropped`]). A message for an unknown node, or whose `from` is not this node
    /// (the receiver would reject it), is dropped with a warning and counted in
    /// [`TransportStats::unroutable`].
    pub fn send(&self, msg: Message) {
        if msg.from != self.node_id {
            bump(&self.counters.unroutable);
            tracing::warn!(
                node = self.node_id.0,
                msg_from = msg.from.0,
                "message from another node id; dropped"
            );
            return;
        }
        let peers = self.table.read();
        let Some(peer) = peers.get(&msg.to) else {
            bump(&self.counters.unroutable);
            tracing::debug!(
                node = self.node_id.0,
                to = msg.to.0,
                "message for a node with no known address; dropped"
            );
            return;
        };
        let dropped = peer.push(msg);
        if dropped > 0 {
            peer.counters
                .dropped
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
            tracing::trace!(
                peer = peer.id.0,
                dropped,
                "peer queue full; dropped the oldest messages"
            );
        }
    }

    /// Makes `peers` (node id to `host:port`) the nodes this transport sends to: new ones are
    /// dialed, ones whose address changed are dialed afresh at the new address (their queue and
    /// counters start over), and ones left out are still routed to for
    /// [`TransportConfig::peer_linger`] (an answer held until a disk write completes still
    /// reaches a node that was just removed), then dropped. This node's own id is ignored.
    /// Addresses are resolved when dialed. Does nothing after the transport shut down.
    pub fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        self.table.set_peers(peers);
    }

    /// Closes the connections `peer` opened to this node (both lanes), counted in
    /// [`TransportStats::connections_disconnected`]: the node found it inconsistent (a second
    /// leader of a term). Messages queued for it still go out; it may dial again, and its next
    /// message is judged afresh.
    pub fn disconnect(&self, peer: NodeId) {
        let closed = self.inbound.disconnect(peer);
        self.counters
            .connections_disconnected
            .fetch_add(closed as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The peers this transport sends to now (those that left within the last `peer_linger`
    /// included), with their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.table
            .read()
            .iter()
            .map(|(id, peer)| (*id, peer.addr.clone()))
            .collect()
    }
}

/// A running transport: an accept loop plus one dialing task per peer.
///
/// Dropping it stops its tasks without waiting; [`Transport::shutdown`] stops them and waits.
#[derive(Debug)]
pub struct Transport {
    node_id: NodeId,
    local_addr: SocketAddr,
    sender: TransportSender,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    /// The accept loop. Dropping a `JoinSet` aborts its tasks.
    tasks: JoinSet<()>,
    failure: Arc<watch::Sender<Option<String>>>,
}

/// Runs `task`; a panic is logged and published as the transport's failure.
async fn supervised(
    what: &'static str,
    task: impl std::future::Future<Output = ()>,
    failure: &watch::Sender<Option<String>>,
) {
    use futures_util::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        report(failure, what, format!("panicked: {text}"));
    }
}

/// Publishes the first failure of the transport.
fn report(failure: &watch::Sender<Option<String>>, what: &str, reason: String) {
    tracing::error!("transport {what} failed: {reason}");
    failure.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(format!("{what} failed: {reason}"));
        }
        first
    });
}

impl Transport {
    /// Starts the transport on an already bound listener (binding is the caller's so that it can
    /// pick port 0 and learn the port first). Returns the transport and the channel of inbound
    /// messages. Must be called within a tokio runtime.
    pub fn start(
        config: TransportConfig,
        listener: TcpListener,
    ) -> Result<(Transport, crate::inbox::Inbox), TransportError> {
        config.validate()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let local_addr = listener.local_addr()?;
        let (inbound_tx, inbound_rx) =
            crate::inbox::inbox(config.inbound_capacity, config.inbound_bytes);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let failure = Arc::new(watch::channel(None).0);
        let settings = Arc::new(DialSettings {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            max_frame_bytes: config.max_frame_bytes,
            handshake_timeout: config.handshake_timeout,
            backoff_initial: config.reconnect_backoff_initial,
            backoff_max: config.reconnect_backoff_max,
            write_timeout: config.write_timeout,
            keepalive: config.keepalive,
            unacked_timeout: config.unacked_timeout,
            source_ip: config.source_ip,
            tls: config.tls.clone(),
        });
        let table = Arc::new(PeerTable {
            node_id: config.node_id,
            peers: RwLock::new(BTreeMap::new()),
            settings,
            queue_capacity: config.peer_queue_capacity,
            queue_bytes: config.peer_queue_bytes,
            linger: config.peer_linger,
            cancel: cancel.clone(),
            runtime: runtime.clone(),
            tasks: Mutex::new(JoinSet::new()),
            failure: failure.clone(),
        });
        let slots = Arc::new(inbound::Slots::new(
            config.max_handshakes,
            config.max_inbound_connections,
            config.max_connections_per_source,
        ));
        let ctx = Arc::new(inbound::InboundCtx {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            max_frame_bytes: config.max_frame_bytes,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            keepalive: config.keepalive,
            unacked_timeout: config.unacked_timeout,
            limits: slots.clone(),
            members: Arc::downgrade(&table),
            order: Mutex::default(),
            inbound: inbound_tx,
            counters: counters.clone(),
            tls: config.tls.clone(),
        });
        let span = tracing::info_span!("raftnet_accept", node = config.node_id.0, %local_addr);
        let (accept_cancel, accept_failure) = (cancel.clone(), failure.clone());
        tasks.spawn_on(
            async move {
                let accept = inbound::accept_loop(listener, ctx, accept_cancel.clone());
                supervised("accept loop", accept, &accept_failure).await;
                if !accept_cancel.is_cancelled() {
                    report(&accept_failure, "accept loop", "it ended".into());
                }
            }
            .instrument(span),
            &runtime,
        );
        let sender = TransportSender {
            node_id: config.node_id,
            table,
            counters: counters.clone(),
            inbound: slots,
        };
        let initial = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        sender.set_peers(&initial);

        let transport = Transport {
            node_id: config.node_id,
            local_addr,
            sender,
            counters,
            cancel,
            tasks,
            failure,
        };
        Ok((transport, inbound_rx))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queues `msg` for peer `msg.to`; see [`TransportSender::send`].
    pub fn send(&self, msg: Message) {
        self.sender.send(msg);
    }

    /// A cheap, cloneable handle that only sends (for the node's event loop).
    pub fn sender(&self) -> TransportSender {
        self.sender.clone()
    }

    /// Replaces the set of peers; see [`TransportSender::set_peers`].
    pub fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        self.sender.set_peers(peers);
    }

    /// The peers this transport sends to now, with their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.sender.peers()
    }

    /// Becomes `Some(reason)` when a task of the transport failed (its accept loop, or a peer's
    /// sending task panicked): the node then hears or reaches nobody, and should stop.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    /// A snapshot of the counters (`peers`: the peers routed to now).
    pub fn stats(&self) -> TransportStats {
        let mut stats = self.counters.snapshot();
        stats.peers = self
            .sender
            .table
            .read()
            .iter()
            .map(|(&id, peer)| {
                (
                    id,
                    peer.counters.snapshot(peer.queued(), peer.queued_bytes()),
                )
            })
            .collect();
        stats
    }

    /// Stops the accept loop and every peer task, closing all sockets and the listener, and
    /// waits until they are gone. Queued messages are discarded. After this returns the
    /// listener's port can be bound again and the inbound channel yields `None` once drained.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let mut peer_tasks = std::mem::take(&mut *self.sender.table.tasks());
        for set in [&mut self.tasks, &mut peer_tasks] {
            while let Some(result) = set.join_next().await {
                if let Err(e) = result {
                    if e.is_panic() {
                        tracing::error!(node = self.node_id.0, error = %e, "transport task panicked");
                    }
                }
            }
        }
    }
}

impl Drop for Transport {
    /// The peer tasks belong to a table that senders share, so dropping the transport cannot
    /// abort them directly: cancelling makes every task end at its next await.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
