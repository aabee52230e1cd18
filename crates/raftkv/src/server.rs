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

use crate::config::ServerConfig;
use crate::kv::KvStore;
use crate::resp::{Reply, RespLimits};
use raftnet::runtime::{ClientError, Node, NodeError, NodeHandle};
use raftnet::tls::{PeerTls, ServerTls};
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

/// Per-connection and per-server bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests of one connection being served at once; reading pauses beyond it.
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
    /// The RESP decoder's bounds.
    pub resp: RespLimits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_in_flight: 1024,
            max_connections: 10_000,
            max_admin_connections: 64,
            request_timeout: Duration::from_secs(10),
            admin_header_timeout: Duration::from_secs(10),
            resp: RespLimits::default(),
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
}

impl ServerStats {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
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
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
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
        Server::start_with_limits(config, listeners, ServerLimits::default()).await
    }

    pub async fn start_with_limits(
        config: ServerConfig,
        listeners: Listeners,
        limits: ServerLimits,
    ) -> Result<Server, ServerError> {
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
        let tls = LoadedTls::load(&config)?;
        let mut node_config = config.node_config();
        node_config.peer_tls = tls.peer.clone();
        let node = Node::start(node_config, listeners.raft, KvStore::new()).await?;
        let shared = Arc::new(Shared {
            handle: node.handle(),
            config,
            addrs,
            limits,
            stats: ServerStats::default(),
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
                shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
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
                connection::serve(stream, peer, shared.clone(), cancel).await;
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

/// Accepts connections until cancelled, backing off when accepting fails (out of file
/// descriptors and the like) rather than spinning. Each connection comes with a permit from
/// `slots`, or `None` (logged) when that many are open already.
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
                if permit.is_none() {
                    tracing::warn!(%peer, "refusing a {what} connection: too many open");
                }
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
