//! A userspace TCP fault proxy, in the spirit of Toxiproxy: it sits on the peer links between
//! raftkv nodes and adds latency, jitter, a bandwidth limit or a full stall to the bytes of each
//! direction of each link.
//!
//! Why in userspace: the kernel of the machines we test on has no `tc netem`, so delay and rate
//! limits cannot be put on loopback interfaces. Partitions stay with iptables; this proxy only
//! shapes what iptables lets through. To keep those rules working, the proxy dials upstream from
//! the same source IP as the connection it accepted, so a rule that matches on source and
//! destination addresses sees the true endpoints on both legs. Clients must therefore dial from
//! an IP of this machine; from any other, the upstream connect fails and the client is closed.
//!
//! How it is wired: node `j` listens for peers on `127.0.0.1j:7000` (a route's `upstream`) but
//! advertises `127.0.0.1j:7100` (the route's `listen`), and node `i` dials its peers from its own
//! IP `127.0.0.1i`. So a connection accepted on `listen` from IP `A`, where the accepted socket's
//! local IP is `B`, is the link `A -> B`:
//! - bytes from the client to the upstream get the [`Toxics`] of link `(A, B)`;
//! - bytes from the upstream back to the client get the [`Toxics`] of link `(B, A)`.
//!
//! Each direction is a reader and a writer joined by a bounded queue (at most
//! [`CHUNKS_IN_FLIGHT_MAX`] chunks of at most [`READ_CHUNK_BYTES`]). The writer holds each chunk
//! until `max(previous delivery, read time + latency + jitter)`, so order is preserved, and paces
//! it through a token bucket. A stalled or slow link fills the queue, the reader stops reading,
//! and TCP pushes back on the sender, as a congested network would; memory stays bounded.
//!
//! Toxics are read by the writer at each decision, so [`Proxy::set`] applies to live connections
//! at once, including chunks already queued (they are in flight, not yet delivered). When either
//! side closes or fails, the proxy closes the other (write shutdown, then drop).

use std::cmp::max;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// The most bytes one read takes from a socket; one chunk of a queue.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The most chunks queued per direction of a connection, so at most 4 MiB read but not yet
/// delivered: the bound that turns a stalled or slow link into backpressure on the sender. It
/// also caps a direction under latency `L` at about 4 MiB per `L`, as a TCP window would.
pub const CHUNKS_IN_FLIGHT_MAX: usize = 256;
/// How long the proxy waits for the upstream to accept a connection before closing the client.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A bandwidth limit lets through bursts of at most 1/this of a second's worth of bytes (10 ms),
/// so a limited link is smooth rather than a burst and a pause each second.
const BURST_PER_SECOND: u64 = 100;
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// One listening address of the proxy and where its connections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Where the proxy listens (port 0 picks a free port; see [`Proxy::listen_addrs`]).
    pub listen: SocketAddr,
    /// Where the proxy connects for each accepted connection.
    pub upstream: SocketAddr,
}

/// Conditions on the bytes flowing from `from` (an IP) to `to` (an IP).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Toxics {
    /// Added one-way delay.
    pub latency: Duration,
    /// Uniform extra delay in `[0, jitter]` per chunk; order is preserved.
    pub jitter: Duration,
    /// Bytes per second, through a token bucket; `None` is unlimited and `Some(0)` forwards
    /// nothing.
    pub bandwidth: Option<u64>,
    /// Forward nothing: connections stay open and bounded buffering pushes back on the sender.
    pub stalled: bool,
}

/// Counters since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted from clients.
    pub connections_accepted: u64,
    /// Connections with both legs open now.
    pub connections_open: u64,
    /// Accepted connections closed because the upstream could not be reached.
    pub upstream_connect_failures: u64,
    /// Failed accepts on the listening sockets.
    pub accept_errors: u64,
    /// Bytes written to upstreams.
    pub bytes_to_upstream: u64,
    /// Bytes written back to clients.
    pub bytes_to_client: u64,
}

/// A running fault proxy. Dropping it stops everything too, without waiting.
pub struct Proxy {
    shared: Arc<Shared>,
    listen_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    listeners: JoinSet<()>,
}

impl Proxy {
    /// Binds every route's listen address and starts forwarding, with jitter drawn from a
    /// random seed.
    pub async fn start(routes: Vec<Route>) -> io::Result<Proxy> {
        Self::start_seeded(routes, fastrand::u64(..)).await
    }

    /// As [`Proxy::start`], with jitter drawn from `seed` (each connection gets its own stream
    /// from it in accept order, so a run reproduces as far as the order of accepts does).
    pub async fn start_seeded(routes: Vec<Route>, seed: u64) -> io::Result<Proxy> {
        // Bind everything before spawning anything, so a failure leaves nothing running.
        let mut bound = Vec::with_capacity(routes.len());
        for route in &routes {
            let listener = TcpListener::bind(route.listen).await.map_err(|e| {
                io::Error::new(e.kind(), format!("proxy: bind {}: {e}", route.listen))
            })?;
            bound.push(listener);
        }
        let listen_addrs = bound
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            links: Links::default(),
            counters: Counters::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut listeners = JoinSet::new();
        for (listener, route) in bound.into_iter().zip(&routes) {
            let task = serve_route(
                listener,
                route.upstream,
                shared.clone(),
                shutdown_rx.clone(),
            );
            listeners.spawn(task);
        }
        Ok(Proxy {
            shared,
            listen_addrs,
            shutdown,
            listeners,
        })
    }

    /// The bound listen addresses, in the order of the routes.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Sets the conditions of the link `from -> to`; live connections see them at once.
    pub fn set(&self, from: IpAddr, to: IpAddr, toxics: Toxics) {
        tracing::debug!(%from, %to, ?toxics, "proxy: set link");
        self.shared.links.set(from, to, toxics);
    }

    /// The conditions of the link `from -> to` now.
    pub fn toxics(&self, from: IpAddr, to: IpAddr) -> Toxics {
        self.shared.links.get(from, to)
    }

    /// Puts every link back to [`Toxics::default`].
    pub fn clear_all(&self) {
        tracing::debug!("proxy: clear all links");
        self.shared.links.clear_all();
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        self.shared.counters.snapshot()
    }

    /// Stops the listeners and closes every connection, stalled or not, and waits until all of
    /// the proxy's tasks have ended.
    pub async fn shutdown(self) {
        let Proxy {
            shutdown,
            mut listeners,
            ..
        } = self;
        shutdown.send_replace(true);
        while let Some(ended) = listeners.join_next().await {
            if let Err(e) = ended {
                tracing::warn!("proxy: a listener task failed: {e}");
            }
        }
    }
}

/// What the proxy's tasks share.
struct Shared {
    links: Links,
    counters: Counters,
    /// Seeds each connection's jitter; locked once per accept.
    rng: Mutex<fastrand::Rng>,
}

impl Shared {
    fn next_seed(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .u64(..)
    }
}

/// The toxics of every link, each in a watch channel so that a waiting writer wakes when its
/// link changes (a stall lifted, a latency shortened).
#[derive(Default)]
struct Links {
    by_pair: Mutex<HashMap<(IpAddr, IpAddr), watch::Sender<Toxics>>>,
}

impl Links {
    fn lock(&self) -> MutexGuard<'_, HashMap<(IpAddr, IpAddr), watch::Sender<Toxics>>> {
        // Nothing panics while holding the lock, and a map of senders is valid at any point.
        self.by_pair.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&self, from: IpAddr, to: IpAddr) -> watch::Receiver<Toxics> {
        let mut links = self.lock();
        let link = links.entry((from, to)).or_insert_with(new_link);
        link.subscribe()
    }

    fn set(&self, from: IpAddr, to: IpAddr, toxics: Toxics) {
        let mut links = self.lock();
        links
            .entry((from, to))
            .or_insert_with(new_link)
            .send_replace(toxics);
    }

    fn get(&self, from: IpAddr, to: IpAddr) -> Toxics {
        let links = self.lock();
        links
            .get(&(from, to))
            .map(|link| link.borrow().clone())
            .unwrap_or_default()
    }

    fn clear_all(&self) {
        for link in self.lock().values() {
            link.send_replace(Toxics::default());
        }
    }
}

fn new_link() -> watch::Sender<Toxics> {
    watch::channel(Toxics::default()).0
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    upstream_connect_failures: AtomicU64,
    accept_errors: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections_accepted: read(&self.connections_accepted),
            connections_open: read(&self.connections_open),
            upstream_connect_failures: read(&self.upstream_connect_failures),
            accept_errors: read(&self.accept_errors),
            bytes_to_upstream: read(&self.bytes_to_upstream),
            bytes_to_client: read(&self.bytes_to_client),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection<'a>(&'a AtomicU64);

impl<'a> OpenConnection<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        bump(counter);
        OpenConnection(counter)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the proxy shuts down or is dropped.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, i.e. the proxy was dropped: stop as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections on one route until shutdown, then waits for its connections to close.
async fn serve_route(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown_requested(&mut shutdown) => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::warn!("proxy: a connection task failed: {e}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    bump(&shared.counters.connections_accepted);
                    let task = serve_connection(client, peer, upstream, shared.clone(), shutdown.clone());
                    connections.spawn(task);
                }
                Err(e) => {
                    bump(&shared.counters.accept_errors);
                    tracing::debug!("proxy: accept for the route to {upstream} failed: {e}");
                    sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    // Every connection watches the same signal, so these end promptly.
    while connections.join_next().await.is_some() {}
}

/// Carries one accepted connection: dials the upstream, then pumps both directions until either
/// ends or the proxy shuts down.
async fn serve_connection(
    client: TcpStream,
    peer: SocketAddr,
    upstream_addr: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (from, to) = match client.local_addr() {
        Ok(local) => (peer.ip(), local.ip()),
        Err(e) => {
            tracing::debug!("proxy: connection from {peer} lost its address: {e}");
            return;
        }
    };
    let connected = tokio::select! {
        connected = connect_upstream(from, upstream_addr) => connected,
        _ = shutdown_requested(&mut shutdown) => return,
    };
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(e) => {
            bump(&shared.counters.upstream_connect_failures);
            tracing::debug!("proxy: {from} -> {upstream_addr}: connect failed: {e}");
            return;
        }
    };
    for socket in [&client, &upstream] {
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!("proxy: {from} -> {to}: set TCP_NODELAY: {e}");
        }
    }
    let _open = OpenConnection::new(&shared.counters.connections_open);
    tracing::debug!("proxy: {from} -> {to} ({upstream_addr}) open");
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let outbound = Direction::new(&shared, from, to, &shared.counters.bytes_to_upstream);
    let inbound = Direction::new(&shared, to, from, &shared.counters.bytes_to_client);
    let ended = tokio::select! {
        ended = pump(&mut client_read, &mut upstream_write, outbound) => ended,
        ended = pump(&mut upstream_read, &mut client_write, inbound) => ended,
        _ = shutdown_requested(&mut shutdown) => Ok(()),
    };
    if let Err(e) = ended {
        tracing::debug!("proxy: {from} -> {to}: {e}");
    }
    // Either side ended, so close both: a clean FIN first, then the drop closes the sockets.
    let _ = upstream_write.shutdown().await;
    let _ = client_write.shutdown().await;
    tracing::debug!("proxy: {from} -> {to} ({upstream_addr}) closed");
}

/// Connects to `upstream` from `source_ip`, so address-matching firewall rules see the client's
/// true IP on the upstream leg too.
async fn connect_upstream(source_ip: IpAddr, upstream: SocketAddr) -> io::Result<TcpStream> {
    let socket = match upstream {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source_ip, 0))?;
    match timeout(UPSTREAM_CONNECT_TIMEOUT, socket.connect(upstream)).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "upstream connect timed out",
        )),
    }
}

/// Bytes read from a socket, stamped with when.
struct Chunk {
    bytes: Vec<u8>,
    read_at: Instant,
}

/// Forwards `reader` to `writer` under a link's toxics. Returns `Ok` once the reader reached
/// EOF and everything read was delivered, or the first error of either side.
async fn pump<R, W>(reader: &mut R, writer: &mut W, direction: Direction<'_>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (queue, queued) = mpsc::channel(CHUNKS_IN_FLIGHT_MAX);
    let read = read_chunks(reader, queue);
    let write = direction.deliver(queued, writer);
    tokio::pin!(read, write);
    tokio::select! {
        read_ended = &mut read => {
            read_ended?;
            write.await
        }
        write_ended = &mut write => write_ended,
    }
}

/// Reads chunks into the queue until EOF; waits while the queue is full, which is what pushes
/// back on the sender.
async fn read_chunks<R: AsyncRead + Unpin>(
    reader: &mut R,
    queue: mpsc::Sender<Chunk>,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let chunk = Chunk {
            bytes: buf[..n].to_vec(),
            read_at: Instant::now(),
        };
        if queue.send(chunk).await.is_err() {
            // The writer is gone; its own result says why.
            return Ok(());
        }
    }
}

/// The writer's side of one direction of a connection.
struct Direction<'a> {
    link: watch::Receiver<Toxics>,
    rng: fastrand::Rng,
    bucket: TokenBucket,
    /// When the previous chunk was delivered: no chunk goes before it, so order is kept.
    last_due: Instant,
    forwarded: &'a AtomicU64,
}

impl<'a> Direction<'a> {
    fn new(shared: &Shared, from: IpAddr, to: IpAddr, forwarded: &'a AtomicU64) -> Self {
        let now = Instant::now();
        Direction {
            link: shared.links.subscribe(from, to),
            rng: fastrand::Rng::with_seed(shared.next_seed()),
            bucket: TokenBucket::new(now),
            last_due: now,
            forwarded,
        }
    }

    /// Writes every queued chunk when it is due, until the queue closes.
    async fn deliver<W: AsyncWrite + Unpin>(
        mut self,
        mut queued: mpsc::Receiver<Chunk>,
        writer: &mut W,
    ) -> io::Result<()> {
        while let Some(chunk) = queued.recv().await {
            // One draw per chunk, scaled by the jitter in force when it is delivered.
            let jitter_share = self.rng.f64();
            self.wait_until_due(chunk.read_at, jitter_share).await?;
            self.write_paced(writer, &chunk.bytes).await?;
        }
        Ok(())
    }

    /// Waits until the link is not stalled and the chunk's delay has passed, re-reading the
    /// toxics whenever they change.
    async fn wait_until_due(&mut self, read_at: Instant, jitter_share: f64) -> io::Result<()> {
        loop {
            let toxics = self.link.borrow_and_update().clone();
            let due = match (toxics.stalled, due_at(read_at, &toxics, jitter_share)) {
                (false, Some(due)) => max(self.last_due, due),
                // Stalled, or a delay past the end of time: wait for the link to change.
                _ => {
                    self.link_changed().await?;
                    continue;
                }
            };
            if due <= Instant::now() {
                self.last_due = due;
                return Ok(());
            }
            tokio::select! {
                _ = sleep_until(due) => {}
                changed = self.link.changed() => changed.map_err(link_gone)?,
            }
        }
    }

    /// Writes `bytes` in slices the link's bandwidth allows, stopping while it is stalled.
    async fn write_paced<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        mut bytes: &[u8],
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let toxics = self.link.borrow_and_update().clone();
            let allowed = match toxics.bandwidth {
                _ if toxics.stalled => None,
                Some(0) => None,
                None => Some(bytes.len()),
                Some(rate) => match self.bucket.take(rate, bytes.len(), Instant::now()) {
                    Ok(n) => Some(n),
                    Err(wait) => {
                        tokio::select! {
                            _ = sleep(wait) => {}
                            changed = self.link.changed() => changed.map_err(link_gone)?,
                        }
                        continue;
                    }
                },
            };
            let Some(n) = allowed else {
                self.link_changed().await?;
                continue;
            };
            writer.write_all(&bytes[..n]).await?;
            self.forwarded.fetch_add(n as u64, Ordering::Relaxed);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    async fn link_changed(&mut self) -> io::Result<()> {
        self.link.changed().await.map_err(link_gone)
    }
}

/// A link's sender lives as long as the proxy's shared state, which this connection holds, so
/// this does not happen; if it did, the connection would end rather than spin.
fn link_gone(_: watch::error::RecvError) -> io::Error {
    io::Error::other("proxy: link settings dropped")
}

/// When a chunk read at `read_at` is due under `toxics`, or `None` if that is too far out to
/// represent.
fn due_at(read_at: Instant, toxics: &Toxics, jitter_share: f64) -> Option<Instant> {
    let jitter = toxics.jitter.mul_f64(jitter_share.clamp(0.0, 1.0));
    read_at.checked_add(toxics.latency.checked_add(jitter)?)
}

/// A token bucket in bytes that refills at the link's rate and holds at most
/// `rate / BURST_PER_SECOND` bytes (at least one), so bursts stay short.
struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(now: Instant) -> Self {
        TokenBucket {
            tokens: 0.0,
            refilled_at: now,
        }
    }

    /// Takes tokens for the next slice of at most `want` bytes and returns its size, or how long
    /// to wait until a slice can go. A rate of 0 forwards nothing and is handled by the caller;
    /// here it counts as 1 so that nothing divides by zero.
    fn take(&mut self, rate: u64, want: usize, now: Instant) -> Result<usize, Duration> {
        let rate = rate.max(1) as f64;
        let burst = (rate / BURST_PER_SECOND as f64).max(1.0);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled_at = now;
        let slice = (want as f64).min(burst).floor().max(1.0);
        if self.tokens >= slice {
            self.tokens -= slice;
            return Ok(slice as usize);
        }
        let wait = Duration::try_from_secs_f64((slice - self.tokens) / rate);
        Err(wait.unwrap_or(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::sync::oneshot;

    /// A generous bound on what must happen; the tests never bound how long anything takes.
    const PATIENCE: Duration = Duration::from_secs(30);
    /// How long a test watches for "nothing arrives".
    const QUIET: Duration = Duration::from_millis(300);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn stalled() -> Toxics {
        Toxics {
            stalled: true,
            ..Toxics::default()
        }
    }

    /// A server that accepts one connection, reports the client's address and every chunk it
    /// receives, and echoes them back if asked to.
    struct Upstream {
        addr: SocketAddr,
        peer: oneshot::Receiver<SocketAddr>,
        received: mpsc::UnboundedReceiver<Vec<u8>>,
    }

    impl Upstream {
        async fn start(ip: IpAddr, echo: bool) -> Upstream {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .expect("bind upstream");
            let addr = listener.local_addr().expect("upstream address");
            let (peer_tx, peer) = oneshot::channel();
            let (received_tx, received) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    return;
                };
                let _ = peer_tx.send(peer);
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let _ = received_tx.send(buf[..n].to_vec());
                    if echo && stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            Upstream {
                addr,
                peer,
                received,
            }
        }

        /// Everything received until at least `len` bytes.
        async fn receive(&mut self, len: usize) -> Vec<u8> {
            let mut all = Vec::with_capacity(len);
            while all.len() < len {
                let chunk = timeout(PATIENCE, self.received.recv()).await;
                all.extend(
                    chunk
                        .expect("upstream receives in time")
                        .expect("upstream open"),
                );
            }
            all
        }

        async fn assert_quiet(&mut self) {
            let chunk = timeout(QUIET, self.received.recv()).await;
            assert!(
                chunk.is_err(),
                "upstream received {chunk:?} through a stalled link"
            );
        }
    }

    async fn proxy_to(listen_ip: IpAddr, upstream: SocketAddr) -> Proxy {
        let listen = SocketAddr::new(listen_ip, 0);
        Proxy::start_seeded(vec![Route { listen, upstream }], 7)
            .await
            .expect("start proxy")
    }

    async fn dial(from: IpAddr, to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind client");
        let stream = socket.connect(to).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Sends `bytes` and reads as many back, both at once so neither side waits on the other.
    async fn round_trip(client: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        let (mut read, mut write) = client.split();
        let mut echoed = vec![0u8; bytes.len()];
        let (sent, got) = tokio::join!(write.write_all(bytes), read.read_exact(&mut echoed));
        sent.expect("send");
        got.expect("read the echo");
        echoed
    }

    async fn eventually(what: &str, holds: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !holds() {
            assert!(Instant::now() < deadline, "never: {what}");
            sleep(Duration::from_millis(10)).await;
        }
    }

    async fn assert_closed(client: &mut TcpStream) {
        let mut buf = [0u8; 16];
        let read = timeout(PATIENCE, client.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "read {read:?} from a closed connection"
        );
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_both_ways_from_the_client_source_ip() {
        let mut upstream = Upstream::start(ip(21), true).await;
        let proxy = proxy_to(ip(22), upstream.addr).await;
        let mut client = dial(ip(23), proxy.listen_addrs()[0]).await;
        let sent = pattern(100_000);

        assert_eq!(round_trip(&mut client, &sent).await, sent);
        assert_eq!(upstream.receive(sent.len()).await, sent);
        let peer = timeout(PATIENCE, &mut upstream.peer)
            .await
            .expect("accepted")
            .expect("peer");
        assert_eq!(peer.ip(), ip(23), "the upstream sees the client's IP");
        eventually("both directions counted", || {
            let stats = proxy.stats();
            stats.bytes_to_upstream == 100_000 && stats.bytes_to_client == 100_000
        })
        .await;
        assert_eq!(proxy.stats().connections_accepted, 1);
        assert_eq!(proxy.stats().connections_open, 1);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn latency_delays_each_direction_by_at_least_its_link_latency() {
        let upstream = Upstream::start(ip(24), true).await;
        let proxy = proxy_to(ip(25), upstream.addr).await;
        let (client_ip, proxy_ip) = (ip(26), ip(25));
        let latency = |ms| Toxics {
            latency: Duration::from_millis(ms),
            ..Toxics::default()
        };
        proxy.set(client_ip, proxy_ip, latency(100));
        proxy.set(proxy_ip, client_ip, latency(50));
        let mut client = dial(client_ip, proxy.listen_addrs()[0]).await;

        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut client, b"ping").await, b"ping");
        took_at_least(started, 150);
        proxy.shutdown().await;
    }

    /// Only a lower bound: a busy machine may always be slower.
    fn took_at_least(started: std::time::Instant, ms: u64) {
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(ms), "took {took:?}");
    }

    #[tokio::test]
    async fn jitter_keeps_bytes_in_order() {
        let mut upstream = Upstream::start(ip(27), false).await;
        let proxy = proxy_to(ip(28), upstream.addr).await;
        let jittery = Toxics {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(30),
            ..Toxics::default()
        };
        proxy.set(ip(29), ip(28), jittery);
        let mut client = dial(ip(29), proxy.listen_addrs()[0]).await;

        let mut sent = Vec::new();
        for i in 0..300u32 {
            client.write_all(&i.to_be_bytes()).await.expect("send");
            sent.extend(i.to_be_bytes());
        }
        assert_eq!(upstream.receive(sent.len()).await, sent);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn stalled_link_forwards_nothing_until_lifted() {
        let mut upstream = Upstream::start(ip(21), false).await;
        let proxy = proxy_to(ip(24), upstream.addr).await;
        let (client_ip, proxy_ip) = (ip(27), ip(24));
        let mut client = dial(client_ip, proxy.listen_addrs()[0]).await;
        client.write_all(b"before").await.expect("send");
        assert_eq!(upstream.receive(6).await, b"before");

        // Set on a live connection: it must take effect without reconnecting.
        proxy.set(client_ip, proxy_ip, stalled());
        client.write_all(b"during the stall").await.expect("send");
        upstream.assert_quiet().await;
        assert_eq!(proxy.stats().bytes_to_upstream, 6);

        proxy.set(client_ip, proxy_ip, Toxics::default());
        assert_eq!(upstream.receive(16).await, b"during the stall");
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn upstream_to_client_bytes_use_the_reverse_link() {
        let mut upstream = Upstream::start(ip(22), true).await;
        let proxy = proxy_to(ip(25), upstream.addr).await;
        let (client_ip, proxy_ip) = (ip(28), ip(25));
        proxy.set(proxy_ip, client_ip, stalled());
        let mut client = dial(client_ip, proxy.listen_addrs()[0]).await;

        client.write_all(b"ping").await.expect("send");
        assert_eq!(
            upstream.receive(4).await,
            b"ping",
            "client -> upstream is not stalled"
        );
        let mut echoed = [0u8; 4];
        let early = timeout(QUIET, client.read_exact(&mut echoed)).await;
        assert!(
            early.is_err(),
            "the echo came through a stalled link: {early:?}"
        );

        proxy.clear_all();
        timeout(PATIENCE, client.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(&echoed, b"ping");
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn stalled_link_pushes_back_on_the_sender() {
        // More than the client's send buffer, the proxy's receive buffer and its queue together.
        const TOTAL_BYTES: usize = 64 * 1024 * 1024;
        let mut upstream = Upstream::start(ip(23), false).await;
        let proxy = proxy_to(ip(26), upstream.addr).await;
        proxy.set(ip(29), ip(26), stalled());
        let mut client = dial(ip(29), proxy.listen_addrs()[0]).await;

        let writer = tokio::spawn(async move {
            let written = client.write_all(&pattern(TOTAL_BYTES)).await;
            written.map(|()| client)
        });
        sleep(QUIET).await;
        assert!(
            !writer.is_finished(),
            "a stalled link took all the sender's bytes"
        );
        assert_eq!(proxy.stats().bytes_to_upstream, 0);

        proxy.clear_all();
        let received = upstream.receive(TOTAL_BYTES).await;
        assert!(received == pattern(TOTAL_BYTES), "bytes changed on the way");
        let written = timeout(PATIENCE, writer)
            .await
            .expect("writer done")
            .expect("writer task");
        written.expect("every byte written");
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn bandwidth_limit_paces_the_bytes() {
        let mut upstream = Upstream::start(ip(24), false).await;
        let proxy = proxy_to(ip(27), upstream.addr).await;
        let slow = Toxics {
            bandwidth: Some(1_000_000),
            ..Toxics::default()
        };
        proxy.set(ip(21), ip(27), slow);
        let mut client = dial(ip(21), proxy.listen_addrs()[0]).await;

        let started = std::time::Instant::now();
        let sent = pattern(200_000);
        client.write_all(&sent).await.expect("send");
        assert_eq!(upstream.receive(sent.len()).await, sent);
        // 200 KB at 1 MB/s is 200 ms, less one burst of at most 10 ms worth.
        took_at_least(started, 150);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_connections_even_while_stalled() {
        let upstream = Upstream::start(ip(25), true).await;
        let stalled_upstream = Upstream::start(ip(25), true).await;
        let routes = [upstream.addr, stalled_upstream.addr].map(|upstream| Route {
            listen: SocketAddr::new(ip(29), 0),
            upstream,
        });
        let proxy = Proxy::start_seeded(routes.to_vec(), 1)
            .await
            .expect("start proxy");
        let addrs = proxy.listen_addrs().to_vec();
        let mut client = dial(ip(22), addrs[0]).await;
        assert_eq!(round_trip(&mut client, b"ping").await, b"ping");
        proxy.set(ip(23), ip(29), stalled());
        let mut stalled_client = dial(ip(23), addrs[1]).await;
        stalled_client.write_all(b"held").await.expect("send");
        eventually("both connections open", || {
            proxy.stats().connections_open == 2
        })
        .await;

        timeout(PATIENCE, proxy.shutdown())
            .await
            .expect("shutdown in time");
        let mut buf = [0u8; 4];
        let read = timeout(PATIENCE, client.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0)), "expected EOF, read {read:?}");
        assert_closed(&mut stalled_client).await;
        let socket = TcpSocket::new_v4().expect("socket");
        assert!(
            socket.connect(addrs[0]).await.is_err(),
            "the listener is closed"
        );
    }

    #[tokio::test]
    async fn unreachable_upstream_closes_the_client() {
        let unused = TcpListener::bind(SocketAddr::new(ip(26), 0))
            .await
            .expect("bind");
        let upstream = unused.local_addr().expect("address");
        drop(unused);
        let proxy = proxy_to(ip(21), upstream).await;
        let mut client = dial(ip(28), proxy.listen_addrs()[0]).await;

        assert_closed(&mut client).await;
        eventually("the failure counted", || {
            proxy.stats().upstream_connect_failures == 1
        })
        .await;
        assert_eq!(proxy.stats().connections_open, 0);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn set_and_clear_all_change_each_link_alone() {
        let proxy = Proxy::start(Vec::new()).await.expect("start proxy");
        let slow = Toxics {
            latency: Duration::from_millis(20),
            bandwidth: Some(10),
            ..Toxics::default()
        };
        proxy.set(ip(21), ip(22), slow.clone());
        assert_eq!(proxy.toxics(ip(21), ip(22)), slow);
        assert_eq!(
            proxy.toxics(ip(22), ip(21)),
            Toxics::default(),
            "directions are separate"
        );
        proxy.clear_all();
        assert_eq!(proxy.toxics(ip(21), ip(22)), Toxics::default());
        proxy.shutdown().await;
    }

    #[test]
    fn token_bucket_lets_one_burst_through_then_paces_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        // 1000 B/s allows bursts of 10 bytes.
        let wait = bucket
            .take(1000, 100, start)
            .expect_err("an empty bucket waits");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(10),
            "waits {wait:?}"
        );
        assert_eq!(
            bucket.take(1000, 100, start + Duration::from_secs(5)),
            Ok(10)
        );
        assert!(bucket
            .take(1000, 100, start + Duration::from_secs(5))
            .is_err());
        let mut fast = TokenBucket::new(start);
        let later = start + Duration::from_secs(1);
        assert_eq!(
            fast.take(u64::MAX, 100, later),
            Ok(100),
            "no overflow at any rate"
        );
    }
}
