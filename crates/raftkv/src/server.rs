//! The `raftkv serve` node: a Raft node ([`raftnet::runtime::Node`]) holding a [`KvStore`], a
//! RESP2 client port and an optional admin HTTP port.
//!
//! - Client port ([`connection`]): each connection is a `Framed<TcpStream, RespCodec>`. Every
//!   request that has arrived is decoded and started at once, up to
//!   [`ServerLimits::max_in_flight`] per connection, and the replies go back in request order
//!   (pipelining, as `redis-benchmark -P 16` does). Writes go through Raft; reads are
//!   linearizable (ReadIndex) and served from the local store, on a follower too.
//! - Admin port ([`admin`]): `GET /status` (JSON), `GET /metrics` (Prometheus text), and the
//!   cluster API of [`crate::admin_client`] (membership, leadership transfer, snapshots).
//!
//! [`run`] is what the binary does: bind, start, print the ready line, wait for SIGTERM or
//! Ctrl-C, shut down. Tests use [`Server::start`] with listeners they bound themselves (port 0),
//! so a whole cluster can run in one process.

mod admin;
mod connection;

use crate::auth::Users;
use crate::config::ServerConfig;
use crate::kv::KvStore;
use crate::resp::{BufferBudget, Reply, RespLimits};
use raftnet::runtime::{ClientError, Node, NodeError, NodeHandle};
use raftnet::tls::{PeerTls, ServerTls, Stream};
use raftnet::transport::TransportStats;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("this node's id {0} is not among the configured nodes")]
    NotAMember(u64),
    #[error("cannot start the Raft node: {0}")]
    Node(#[from] NodeError),
    #[error("the Raft node stopped: {0}")]
    Stopped(String),
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] raftnet::tls::TlsError),
}

/// Per-connection and per-server bounds. Every one is a `raftkv serve` setting (see
/// [`crate::config`]); `docs/security.md` lists them with their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests of one connection being served at once (pipelining); reading pauses beyond it.
    pub max_in_flight: usize,
    /// Open client connections; one more is answered `-ERR max number of clients reached`.
    pub max_connections: usize,
    /// Open admin HTTP connections; more are closed at once.
    pub max_admin_connections: usize,
    /// How long a write or read may wait for Raft before the client is told `-UNCERTAIN`
    /// (a write may still commit) or `-TRYAGAIN` (a read).
    pub request_timeout: Duration,
    /// How long an admin client may take to send its request headers.
    pub admin_header_timeout: Duration,
    /// How long a client or admin connection may take to complete its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// The RESP decoder's bounds (one request).
    pub resp: RespLimits,
    /// Bytes held for partially received requests across all client connections. A request
    /// that would take more is refused with `-ERR server busy ...` and its connection closed.
    pub request_buffer_budget: usize,
    /// Unsent reply bytes of one connection above which it stops executing its further
    /// pipelined requests until the client has read them (Redis's soft
    /// `client-output-buffer-limit`).
    pub output_soft_limit: usize,
    /// Unsent reply bytes of one connection that close it (counted and logged): a single reply
    /// larger than this, or output that piles up beyond it.
    pub output_hard_limit: usize,
    /// How long the socket may accept none of a connection's pending output (the client does
    /// not read) before the connection is closed.
    pub output_write_timeout: Duration,
    /// A connection with nothing in progress that sends no request for this long is closed.
    /// `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A request that started to arrive must be complete within this long (checked every
    /// `read_timeout`, so a stalled request is cut between one and two of it). `None`: never.
    pub read_timeout: Option<Duration>,
    /// The wait before verifying the 4th failed AUTH of a connection, doubled for each later
    /// one (at most 10 s); the first three are answered at once.
    pub auth_failure_delay: Duration,
}

/// The defaults, also those of the config file and flags.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_ADMIN_CONNECTIONS: usize = 64;
pub const DEFAULT_REQUEST_BUFFER_BUDGET: usize = 256 * 1024 * 1024;
pub const DEFAULT_OUTPUT_SOFT_LIMIT: usize = 8 * 1024 * 1024;
/// Above the largest value (64 MiB by default), so any single GET can be answered.
pub const DEFAULT_OUTPUT_HARD_LIMIT: usize = 128 * 1024 * 1024;
pub const DEFAULT_OUTPUT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_millis(100);

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_admin_connections: DEFAULT_MAX_ADMIN_CONNECTIONS,
            request_timeout: Duration::from_secs(10),
            admin_header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            resp: RespLimits::default(),
            request_buffer_budget: DEFAULT_REQUEST_BUFFER_BUDGET,
            output_soft_limit: DEFAULT_OUTPUT_SOFT_LIMIT,
            output_hard_limit: DEFAULT_OUTPUT_HARD_LIMIT,
            output_write_timeout: DEFAULT_OUTPUT_WRITE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            auth_failure_delay: DEFAULT_AUTH_FAILURE_DELAY,
        }
    }
}

/// The pre-bound sockets of a node.
#[derive(Debug)]
pub struct Listeners {
    pub raft: TcpListener,
    pub client: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds this node's configured raft, client and admin addresses.
    pub async fn bind(config: &ServerConfig) -> Result<Listeners, ServerError> {
        let me = config.me().ok_or(ServerError::NotAMember(config.id))?;
        let raft = bind("raft", config.raft_listen.unwrap_or(me.raft)).await?;
        let client = bind("client", me.client).await?;
        let admin = match config.admin {
            Some(addr) => Some(bind("admin", addr).await?),
            None => None,
        };
        Ok(Listeners {
            raft,
            client,
            admin,
        })
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// Where a running node actually listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    pub raft: SocketAddr,
    pub client: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl BoundAddrs {
    /// The line the binary prints on stdout once it serves.
    pub fn ready_line(&self, id: u64) -> String {
        let admin = self
            .admin
            .map_or_else(|| "off".to_owned(), |addr| addr.to_string());
        format!(
            "raftkv node {id} ready: raft {} client {} admin {admin}",
            self.raft, self.client
        )
    }
}

/// Counters of the client port, rendered after the node's own metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    pub commands: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Requests refused because the server-wide request buffer budget was spent.
    pub request_budget_refusals: AtomicU64,
    /// Connections closed because their unsent output passed the hard limit.
    pub output_limit_closes: AtomicU64,
    /// Connections closed because the client read none of its output for the write timeout.
    pub output_stall_closes: AtomicU64,
    /// Reply bytes produced and not yet handed to the socket, all connections together.
    pub output_buffered_bytes: AtomicU64,
    /// The most `output_buffered_bytes` has been.
    pub output_buffered_bytes_peak: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub read_timeouts: AtomicU64,
    pub admin_connections_refused: AtomicU64,
    /// Failed AUTHs on the client port.
    pub auth_failures: AtomicU64,
    /// Admin requests refused for a missing or wrong bearer token.
    pub admin_unauthorized: AtomicU64,
    /// Client and admin connections whose TLS handshake failed or timed out.
    pub tls_handshake_failures: AtomicU64,
}

impl ServerStats {
    /// Counts `bytes` more of unsent output.
    pub(crate) fn output_grew(&self, bytes: usize) {
        let now = self
            .output_buffered_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed)
            + bytes as u64;
        self.output_buffered_bytes_peak
            .fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn output_sent(&self, bytes: usize) {
        self.output_buffered_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows = [
            (
                "raftkv_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                get(&self.connections_accepted),
            ),
            (
                "raftkv_connections_open",
                "gauge",
                "Client connections open now.",
                get(&self.connections_open),
            ),
            (
                "raftkv_connections_refused_total",
                "counter",
                "Client connections refused because too many were open.",
                get(&self.connections_refused),
            ),
            (
                "raftkv_commands_total",
                "counter",
                "Client requests decoded.",
                get(&self.commands),
            ),
            (
                "raftkv_protocol_errors_total",
                "counter",
                "Client connections closed for malformed input.",
                get(&self.protocol_errors),
            ),
            (
                "raftkv_request_budget_refusals_total",
                "counter",
                "Client requests refused (and connections closed) because partially received requests held the whole request buffer budget.",
                get(&self.request_budget_refusals),
            ),
            (
                "raftkv_output_limit_closes_total",
                "counter",
                "Client connections closed because their unsent output passed the hard limit.",
                get(&self.output_limit_closes),
            ),
            (
                "raftkv_output_stall_closes_total",
                "counter",
                "Client connections closed because the client read none of its output for the write timeout.",
                get(&self.output_stall_closes),
            ),
            (
                "raftkv_output_buffered_bytes",
                "gauge",
                "Reply bytes produced and not yet written to client sockets.",
                get(&self.output_buffered_bytes),
            ),
            (
                "raftkv_output_buffered_bytes_peak",
                "gauge",
                "The most reply bytes ever waiting to be written to client sockets at once.",
                get(&self.output_buffered_bytes_peak),
            ),
            (
                "raftkv_idle_timeouts_total",
                "counter",
                "Client connections closed after the idle timeout.",
                get(&self.idle_timeouts),
            ),
            (
                "raftkv_read_timeouts_total",
                "counter",
                "Client connections closed because a started request did not complete within the read timeout.",
                get(&self.read_timeouts),
            ),
            (
                "raftkv_admin_connections_refused_total",
                "counter",
                "Admin connections closed at once because too many were open.",
                get(&self.admin_connections_refused),
            ),
            (
                "raftkv_auth_failures_total",
                "counter",
                "Failed AUTH attempts on the client port.",
                get(&self.auth_failures),
            ),
            (
                "raftkv_tls_handshake_failures_total",
                "counter",
                "Client and admin connections closed because their TLS handshake failed or timed out.",
                get(&self.tls_handshake_failures),
            ),
            (
                "raftkv_admin_unauthorized_total",
                "counter",
                "Admin requests refused (401) for a missing or wrong bearer token.",
                get(&self.admin_unauthorized),
            ),
        ];
        for (name, kind, help, value) in rows {
            render_metric(out, name, kind, help, value);
        }
    }
}

fn render_metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Lets one log line through per interval and counts the rest, so a flood of refusals or
/// failures costs one line a second (with the count) instead of one line each.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub(crate) fn per_second() -> LogThrottle {
        LogThrottle {
            interval: Duration::from_secs(1),
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// Counts one event in `counter`, then [`LogThrottle::allow`]: every event is counted, a
    /// line is logged at most once per interval.
    pub(crate) fn count(&self, counter: &AtomicU64) -> Option<u64> {
        counter.fetch_add(1, Ordering::Relaxed);
        self.allow()
    }

    /// `Some(n)` when a line may be logged now, `n` being how many events went unlogged since
    /// the last line; `None` when this event should only be counted.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.last {
            Some(last) if now.duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

/// The throttled log lines of one server.
#[derive(Debug)]
pub(crate) struct Throttles {
    pub refused_client: LogThrottle,
    pub refused_admin: LogThrottle,
    pub request_budget: LogThrottle,
    pub output_limit: LogThrottle,
    pub auth_failure: LogThrottle,
    pub admin_unauthorized: LogThrottle,
    pub tls_failure: LogThrottle,
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles {
            refused_client: LogThrottle::per_second(),
            refused_admin: LogThrottle::per_second(),
            request_budget: LogThrottle::per_second(),
            output_limit: LogThrottle::per_second(),
            auth_failure: LogThrottle::per_second(),
            admin_unauthorized: LogThrottle::per_second(),
            tls_failure: LogThrottle::per_second(),
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub addrs: BoundAddrs,
    pub handle: NodeHandle<KvStore>,
    pub limits: ServerLimits,
    pub stats: ServerStats,
    /// Bytes of partially received requests, all client connections together.
    pub request_budget: Arc<BufferBudget>,
    pub throttles: Throttles,
    /// The RESP port's users (shared with the threads that verify passwords).
    pub users: Arc<Users>,
    /// The node, taken out at shutdown; the admin port reads its transport stats.
    pub node: Mutex<Option<Node<KvStore>>>,
    pub tls: LoadedTls,
}

/// The TLS material a server runs with, read from [`crate::config::TlsSettings`]' files at
/// start and again by [`Server::reload_tls`].
#[derive(Debug, Default)]
pub(crate) struct LoadedTls {
    /// Mutual TLS between nodes.
    pub peer: Option<Arc<PeerTls>>,
    /// The client port's TLS.
    pub client: Option<Arc<ServerTls>>,
    /// The admin port's TLS (the same material as the client port's).
    pub admin: Option<Arc<ServerTls>>,
}

impl LoadedTls {
    fn load(config: &ServerConfig) -> Result<LoadedTls, raftnet::tls::TlsError> {
        let Some(settings) = &config.tls else {
            return Ok(LoadedTls::default());
        };
        let peer = match settings.peer {
            true => Some(PeerTls::load(settings.files.clone())?),
            false => None,
        };
        let ports = match settings.client || settings.admin {
            true => Some(ServerTls::load(
                settings.files.clone(),
                settings.client_certificates.into(),
            )?),
            false => None,
        };
        Ok(LoadedTls {
            peer,
            client: ports.clone().filter(|_| settings.client),
            admin: ports.filter(|_| settings.admin),
        })
    }

    /// Reads every file again; on any error the material in use stays.
    fn reload(&self) -> Result<(), raftnet::tls::TlsError> {
        if let Some(peer) = &self.peer {
            peer.reload()?;
        }
        // The client and admin ports share one `ServerTls`; reload it once.
        if let Some(ports) = self.client.as_ref().or(self.admin.as_ref()) {
            ports.reload()?;
        }
        Ok(())
    }
}

impl Shared {
    /// The reply for a request the runtime could not carry out.
    pub fn error_reply(&self, error: ClientError) -> Reply {
        client_error_reply(error, |id| self.config.nodes.get(&id).map(|n| n.client))
    }

    fn transport_stats(&self) -> Option<TransportStats> {
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        node.as_ref().and_then(Node::transport_stats)
    }

    fn render_metrics(&self) -> String {
        let mut out = self.handle.metrics().render();
        self.stats.render(&mut out);
        render_metric(
            &mut out,
            "raftkv_request_buffer_bytes",
            "gauge",
            "Bytes held for partially received client requests, all connections together.",
            self.request_budget.in_use() as u64,
        );
        render_metric(
            &mut out,
            "raftkv_request_buffer_budget_bytes",
            "gauge",
            "The limit of raftkv_request_buffer_bytes.",
            self.request_budget.limit() as u64,
        );
        out
    }
}

/// The reply for a [`ClientError`]; `client_addr` finds a node's client address for `-MOVED`.
pub fn client_error_reply(
    error: ClientError,
    client_addr: impl Fn(u64) -> Option<SocketAddr>,
) -> Reply {
    let text = match error {
        // The state machine's refusals already carry Redis's wording, code included.
        ClientError::Rejected(text) => text,
        // Redis Cluster's redirect (slot 0: the whole key space lives on the leader), which
        // `redis-cli -c` and cluster clients follow.
        ClientError::NotLeader {
            leader: Some(leader),
        } => match client_addr(leader.0) {
            Some(addr) => format!("MOVED 0 {addr}"),
            None => "TRYAGAIN no leader".to_owned(),
        },
        ClientError::NotLeader { leader: None } | ClientError::Retry => {
            "TRYAGAIN no leader".to_owned()
        }
        // The command reached the core and its result was not delivered: it may or may not
        // take effect, so it must never read as a failure.
        ClientError::OutcomeUnknown(why) => {
            format!("UNCERTAIN {why}; the command may or may not have been applied")
        }
        // Refused before anything was proposed.
        ClientError::TooLarge { size, limit } => {
            format!("ERR value too large: the command is {size} bytes, the limit is {limit}")
        }
        // TRYAGAIN: a client that gets it repeatedly moves on to another node. Both are
        // refusals before the command was proposed: sending it elsewhere is safe.
        ClientError::Removed => {
            "TRYAGAIN this node was removed from the cluster; ask another node".to_owned()
        }
        ClientError::Stopped(_) => "TRYAGAIN node stopped; ask another node".to_owned(),
    };
    Reply::Error(text)
}

/// A running node with its client and admin ports.
pub struct Server {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts the Raft node on `listeners.raft` and serves clients on the others.
    pub async fn start(config: ServerConfig, listeners: Listeners) -> Result<Server, ServerError> {
        let limits = config.limits;
        Server::start_with_limits(config, listeners, limits).await
    }

    /// [`Server::start`] with `limits` in place of the configuration's.
    pub async fn start_with_limits(
        mut config: ServerConfig,
        listeners: Listeners,
        limits: ServerLimits,
    ) -> Result<Server, ServerError> {
        config.limits = limits;
        let Some(me) = config.me().copied() else {
            return Err(ServerError::NotAMember(config.id));
        };
        let local = |listener: &TcpListener, what, fallback| {
            listener.local_addr().map_err(|source| ServerError::Bind {
                what,
                addr: fallback,
                source,
            })
        };
        let addrs = BoundAddrs {
            raft: local(&listeners.raft, "raft", me.raft)?,
            client: local(&listeners.client, "client", me.client)?,
            admin: match &listeners.admin {
                Some(l) => Some(local(l, "admin", config.admin.unwrap_or(me.client))?),
                None => None,
            },
        };
        for port in config.exposed() {
            tracing::warn!("--insecure: {port}; anyone who can reach it is trusted");
        }
        let tls = LoadedTls::load(&config)?;
        let mut node_config = config.node_config();
        node_config.peer_tls = tls.peer.clone();
        let node = Node::start(node_config, listeners.raft, KvStore::new()).await?;
        let users = Arc::new(config.users.clone());
        let shared = Arc::new(Shared {
            handle: node.handle(),
            config,
            addrs,
            limits,
            stats: ServerStats::default(),
            request_budget: BufferBudget::new(limits.request_buffer_budget),
            throttles: Throttles::default(),
            users,
            node: Mutex::new(Some(node)),
            tls,
        });
        let cancel = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(accept_clients(
            listeners.client,
            shared.clone(),
            cancel.clone(),
        ))];
        if let Some(admin) = listeners.admin {
            tasks.push(tokio::spawn(admin::serve(
                admin,
                shared.clone(),
                cancel.clone(),
            )));
        }
        tracing::info!(
            id = shared.config.id,
            raft = %addrs.raft,
            client = %addrs.client,
            admin = ?addrs.admin,
            "serving"
        );
        Ok(Server {
            shared,
            cancel,
            tasks,
        })
    }

    pub fn id(&self) -> u64 {
        self.shared.config.id
    }

    /// Reads the TLS files again (what SIGHUP does): new connections use the new certificates,
    /// open ones keep theirs. On an error nothing changes.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        Ok(self.shared.tls.reload()?)
    }

    pub fn addrs(&self) -> BoundAddrs {
        self.shared.addrs
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    pub fn handle(&self) -> NodeHandle<KvStore> {
        self.shared.handle.clone()
    }

    pub fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    /// Bytes held now for partially received client requests (the request buffer budget in use).
    pub fn request_buffer_bytes(&self) -> usize {
        self.shared.request_budget.in_use()
    }

    /// The Prometheus text of `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.shared.render_metrics()
    }

    /// Resolves when the Raft node stopped by itself (a fatal error), with the reason.
    pub fn stopped(&self) -> impl Future<Output = String> + Send + 'static {
        let handle = self.shared.handle.clone();
        async move {
            let status = handle.wait_for(|s| s.stopped.is_some()).await;
            status
                .stopped
                .unwrap_or_else(|| "the node stopped".to_owned())
        }
    }

    /// Stops accepting, closes the connections, and shuts the Raft node down gracefully.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let node = self
            .shared
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(node) = node {
            node.shutdown().await;
        }
        tracing::info!(id = self.shared.config.id, "shut down");
    }
}

async fn accept_clients(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let conn_cancel = cancel.clone();
    accept_loop(
        listener,
        "client",
        slots,
        cancel,
        move |stream, peer, permit| {
            shared
                .stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let Some(permit) = permit else {
                if let Some(unlogged) = shared.throttles.refused_client.count(&shared.stats.connections_refused) {
                    tracing::warn!(
                        %peer,
                        "refusing a client connection: {} open (the limit); {unlogged} more refused since the last such line",
                        shared.limits.max_connections
                    );
                }
                tokio::spawn(connection::refuse(stream));
                return;
            };
            let shared = shared.clone();
            let cancel = conn_cancel.clone();
            tokio::spawn(async move {
                shared
                    .stats
                    .connections_open
                    .fetch_add(1, Ordering::Relaxed);
                let tls = shared.tls.client.as_deref();
                if let Some(stream) = accept_tls(stream, peer, tls, "client", &shared).await {
                    connection::serve(stream, peer, shared.clone(), cancel).await;
                }
                shared
                    .stats
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        },
    )
    .await;
}

/// The connection as it will be served: plain, or after a TLS handshake when `tls` is set.
/// A failed or slow handshake is counted, logged at a bounded rate and closes the connection.
pub(crate) async fn accept_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<&ServerTls>,
    what: &'static str,
    shared: &Shared,
) -> Option<Stream> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Some(Stream::Plain(stream));
    };
    let why = match tokio::time::timeout(
        shared.limits.tls_handshake_timeout,
        tls.acceptor().accept(stream),
    )
    .await
    {
        Ok(Ok(stream)) => return Some(Stream::Accepted(Box::new(stream))),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "no handshake within {:?}",
            shared.limits.tls_handshake_timeout
        ),
    };
    if let Some(unlogged) = shared
        .throttles
        .tls_failure
        .count(&shared.stats.tls_handshake_failures)
    {
        tracing::warn!(
            %peer,
            "refusing a {what} connection: TLS handshake failed: {why}; {unlogged} more since the last such line"
        );
    }
    None
}

/// Accepts connections until cancelled, backing off when accepting fails (out of file
/// descriptors and the like) rather than spinning. Each connection comes with a permit from
/// `slots`, or `None` when that many are open already (the caller counts and logs it).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
    mut accepted: impl FnMut(
        tokio::net::TcpStream,
        SocketAddr,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
) {
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = listener.accept() => next,
        };
        match next {
            Ok((stream, peer)) => {
                let permit = slots.clone().try_acquire_owned().ok();
                accepted(stream, peer, permit);
            }
            Err(e) => {
                tracing::warn!("accepting a {what} connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Binds the configured addresses, starts, prints the ready line, and serves until SIGTERM or
/// Ctrl-C; then shuts down gracefully.
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    let stop = shutdown_signal()?;
    run_until(config, stop).await
}

/// [`run`] with a chosen stop signal.
pub async fn run_until(
    config: ServerConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let listeners = Listeners::bind(&config).await?;
    let server = Server::start(config, listeners).await?;
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", server.addrs().ready_line(server.id()));
        let _ = stdout.flush();
    }
    let stopped = server.stopped();
    let reloader = tokio::spawn(reload_on_hangup(&server)?);
    let result = tokio::select! {
        _ = stop => {
            tracing::info!("shutting down");
            Ok(())
        }
        reason = stopped => {
            tracing::error!("the Raft node stopped: {reason}");
            Err(ServerError::Stopped(reason))
        }
    };
    reloader.abort();
    server.shutdown().await;
    result
}

/// Reloads the TLS files on every SIGHUP, logging the outcome.
fn reload_on_hangup(
    server: &Server,
) -> Result<impl Future<Output = ()> + Send + 'static, ServerError> {
    let shared = server.shared.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).map_err(ServerError::Signal)?;
        Ok(async move {
            while hangup.recv().await.is_some() {
                match shared.tls.reload() {
                    Ok(()) if shared.config.tls.is_some() => {
                        tracing::info!("SIGHUP: TLS certificates reloaded")
                    }
                    Ok(()) => tracing::info!("SIGHUP: no TLS configured; nothing to reload"),
                    Err(e) => {
                        tracing::error!("SIGHUP: TLS reload failed, the old certificates stay: {e}")
                    }
                }
            }
        })
    }
    #[cfg(not(unix))]
    {
        drop(shared);
        Ok(async {})
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, ServerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftengine::NodeId;

    #[test]
    fn client_errors_map_to_redis_style_replies() {
        let addr: SocketAddr = "127.0.0.1:6102".parse().unwrap();
        let lookup = |id| (id == 2).then_some(addr);
        let text = |e| match client_error_reply(e, lookup) {
            Reply::Error(text) => text,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(ClientError::NotLeader {
                leader: Some(NodeId(2))
            }),
            "MOVED 0 127.0.0.1:6102"
        );
        assert_eq!(
            text(ClientError::NotLeader {
                leader: Some(NodeId(5))
            }),
            "TRYAGAIN no leader"
        );
        assert_eq!(
            text(ClientError::NotLeader { leader: None }),
            "TRYAGAIN no leader"
        );
        assert_eq!(text(ClientError::Retry), "TRYAGAIN no leader");
        assert_eq!(
            text(ClientError::OutcomeUnknown("leadership changed".into())),
            "UNCERTAIN leadership changed; the command may or may not have been applied"
        );
        assert_eq!(
            text(ClientError::TooLarge {
                size: 11,
                limit: 10
            }),
            "ERR value too large: the command is 11 bytes, the limit is 10"
        );
        assert_eq!(
            text(ClientError::Rejected("ERR not an integer".into())),
            "ERR not an integer"
        );
        assert_eq!(
            text(ClientError::Stopped("x".into())),
            "TRYAGAIN node stopped; ask another node"
        );
    }

    #[test]
    fn the_ready_line_has_the_agreed_shape() {
        let addrs = BoundAddrs {
            raft: "127.0.0.1:7101".parse().unwrap(),
            client: "127.0.0.1:6101".parse().unwrap(),
            admin: None,
        };
        assert_eq!(
            addrs.ready_line(1),
            "raftkv node 1 ready: raft 127.0.0.1:7101 client 127.0.0.1:6101 admin off"
        );
    }
}
