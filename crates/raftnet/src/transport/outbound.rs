//! The sending side: per peer and per lane, one bounded queue and one dialing task.

use super::stats::{bump, PeerCounters};
use super::wire::FrameCodec;
use super::wire::{self, Hello, HelloReply, Lane, HANDSHAKE_MAX_FRAME_BYTES};
use super::ConnError;
use crate::tls::{server_name_of, PeerTls, Stream};
use futures_util::{SinkExt, StreamExt};
use raftengine::{Message, NodeId};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// A message waiting in a queue, with its frame's ordering number and its counted size.
#[derive(Debug)]
pub(crate) struct Queued {
    order: u64,
    message: Message,
    bytes: usize,
}

/// The messages of a queue and the bytes they hold.
#[derive(Debug, Default)]
struct Items {
    queue: VecDeque<Queued>,
    bytes: usize,
}

/// A FIFO bounded in messages and in bytes that drops its oldest messages when full.
///
/// Oldest-first because, for Raft, a message that waited longest (an old heartbeat, a vote
/// request of a past term) is the least useful one; the newest carries the latest term and
/// commit index, and Raft resends what is lost. A message larger than the byte bound alone is
/// still queued (alone). A plain `std::sync::Mutex` is enough: it is held only for a push or a
/// swap of two buffers, never across an await, so `send` cannot block for long.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    items: Mutex<Items>,
    capacity: usize,
    max_bytes: usize,
    /// Wakes the lane's task when a message arrives. `Notify` keeps one permit, so a push that
    /// happens while the task is busy is not missed.
    notify: Notify,
}

impl PeerQueue {
    pub fn new(capacity: usize, max_bytes: usize) -> PeerQueue {
        PeerQueue {
            items: Mutex::new(Items::default()),
            capacity,
            max_bytes,
            notify: Notify::new(),
        }
    }

    /// A poisoned lock only means another thread panicked while holding it; the queue itself is
    /// still valid, so carry on rather than panic in turn.
    fn lock(&self) -> MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `message`; returns how many of the oldest messages were dropped to make room.
    pub fn push(&self, order: u64, message: Message) -> u64 {
        let bytes = wire::approx_bytes(&message);
        let evicted = {
            let mut items = self.lock();
            let mut evicted = 0;
            while !items.queue.is_empty()
                && (items.queue.len() >= self.capacity || items.bytes + bytes > self.max_bytes)
            {
                if let Some(old) = items.queue.pop_front() {
                    items.bytes -= old.bytes;
                    evicted += 1;
                }
            }
            items.bytes += bytes;
            items.queue.push_back(Queued {
                order,
                message,
                bytes,
            });
            evicted
        };
        self.notify.notify_one();
        evicted
    }

    /// Moves everything queued into `into` (which the caller has emptied).
    fn take_all(&self, into: &mut VecDeque<Queued>) {
        let mut items = self.lock();
        items.bytes = 0;
        // Swapping keeps both allocations, so steady-state batching does not allocate.
        std::mem::swap(&mut items.queue, into);
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// The bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// What the transport knows about one peer, shared by `send`, `stats` and the peer's task.
#[derive(Debug)]
pub(crate) struct Peer {
    pub id: NodeId,
    /// `host:port`, resolved at every dial (so a name may move, and resolving never blocks the
    /// caller of `set_peers`).
    pub addr: String,
    /// One queue per lane ([`Lane::index`]).
    pub queues: [PeerQueue; 2],
    /// Bulk messages queued for this peer so far: the ordering number of the last one.
    pub bulk_sent: AtomicU64,
    pub counters: PeerCounters,
    /// Cancelled when the peer leaves the table; its tasks then linger and end.
    pub retire: tokio_util::sync::CancellationToken,
}

impl Peer {
    /// Queues `msg` on its lane; returns how many old messages were dropped for it. Called from
    /// one sender at a time per node (the raft loop), which keeps the ordering numbers in the
    /// order the messages were sent.
    pub fn push(&self, msg: Message) -> u64 {
        let lane = Lane::of(&msg);
        let order = match lane {
            Lane::Bulk => self.bulk_sent.fetch_add(1, Ordering::AcqRel) + 1,
            Lane::Control => self.bulk_sent.load(Ordering::Acquire),
        };
        self.queues[lane.index()].push(order, msg)
    }

    pub fn queued(&self) -> usize {
        self.queues.iter().map(PeerQueue::len).sum()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queues.iter().map(PeerQueue::bytes).sum()
    }
}

/// The settings a peer's task needs.
#[derive(Debug, Clone)]
pub(crate) struct DialSettings {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub max_frame_bytes: usize,
    pub handshake_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest wait for one frame (or a flush) to be taken by the socket.
    pub write_timeout: Duration,
    pub keepalive: Duration,
    pub unacked_timeout: Duration,
    pub source_ip: Option<IpAddr>,
    /// Mutual TLS on every connection, when set.
    pub tls: Option<Arc<PeerTls>>,
}

/// One lane's task: dial, handshake, stream; on any failure wait with capped exponential
/// backoff and dial again. Runs until the task is cancelled (the caller selects on the
/// cancellation token, so every await here is a cancellation point).
pub(crate) async fn run(peer: &Peer, lane: Lane, settings: &DialSettings) {
    let mut backoff = settings.backoff_initial;
    let mut ever_connected = false;
    // Dial failures to a down peer repeat every backoff period: log the first of a streak at
    // info, the rest at debug, so a dead peer does not flood the log.
    let mut failures_in_a_row: u64 = 0;
    loop {
        match connect(peer, lane, settings).await {
            Ok(framed) => {
                backoff = settings.backoff_initial;
                failures_in_a_row = 0;
                if ever_connected {
                    bump(&peer.counters.reconnects);
                }
                ever_connected = true;
                // `connected` tells of the control lane, the one liveness depends on.
                let control = lane == Lane::Control;
                if control {
                    peer.counters.connected.store(true, Ordering::Relaxed);
                }
                tracing::info!(peer = peer.id.0, addr = %peer.addr, ?lane, "connected to peer");
                let result = stream(peer, lane, settings, framed).await;
                if control {
                    peer.counters.connected.store(false, Ordering::Relaxed);
                }
                if let Err(e) = result {
                    tracing::warn!(peer = peer.id.0, ?lane, error = %e, "connection to peer lost");
                }
            }
            Err(ConnError::Refused(reason)) => {
                bump(&peer.counters.failed_attempts);
                bump(&peer.counters.refused);
                failures_in_a_row += 1;
                tracing::warn!(peer = peer.id.0, ?reason, "peer refused the handshake");
            }
            Err(e) => {
                bump(&peer.counters.failed_attempts);
                failures_in_a_row += 1;
                if failures_in_a_row == 1 {
                    tracing::info!(peer = peer.id.0, addr = %peer.addr, error = %e, "cannot reach peer; retrying with backoff");
                } else {
                    tracing::debug!(peer = peer.id.0, error = %e, "dial failed");
                }
            }
        }
        // Also after a lost connection (backoff was just reset to the initial value): a peer
        // that accepts and immediately drops us must not be dialed in a tight loop.
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(settings.backoff_max);
    }
}

/// Dials the peer and performs the handshake; returns the connection ready for messages.
async fn connect(
    peer: &Peer,
    lane: Lane,
    settings: &DialSettings,
) -> Result<Framed<Stream, FrameCodec>, ConnError> {
    let limit = settings.handshake_timeout;
    // A connect to an unreachable host can take minutes; bound it like the handshake.
    let stream = timeout(limit, dial(peer.addr.as_str(), settings.source_ip))
        .await
        .map_err(|_| ConnError::Timeout("connect"))??;
    // Raft messages are small and latency-sensitive, and batching is done here already.
    stream.set_nodelay(true)?;
    set_keepalive(&stream, settings.keepalive, settings.unacked_timeout)?;
    let stream = match &settings.tls {
        None => Stream::Plain(stream),
        // The peer must present a certificate naming the node we mean to reach.
        Some(tls) => Stream::Dialed(Box::new(
            timeout(
                limit,
                tls.connector().connect(server_name_of(peer.id), stream),
            )
            .await
            .map_err(|_| ConnError::Timeout("TLS handshake"))?
            .map_err(ConnError::Tls)?,
        )),
    };
    let mut framed = Framed::new(stream, wire::codec(HANDSHAKE_MAX_FRAME_BYTES));
    let hello = wire::encode(&Hello::on(settings.cluster_id, settings.node_id, lane))?;
    let reply = timeout(limit, async {
        framed.send(hello).await?;
        match framed.next().await {
            None => Err(ConnError::Closed),
            Some(Err(e)) => Err(ConnError::Io(e)),
            Some(Ok(frame)) => Ok(wire::decode::<HelloReply>(&frame)?),
        }
    })
    .await
    .map_err(|_| ConnError::Timeout("handshake"))??;
    match reply {
        HelloReply::Welcome => {
            // The limit also applies to what we encode, so raise it for messages. Reading stays
            // meaningless: the acceptor sends nothing after `Welcome`.
            framed
                .codec_mut()
                .set_max_frame_length(settings.max_frame_bytes);
            Ok(framed)
        }
        HelloReply::Refused { reason } => Err(ConnError::Refused(reason)),
    }
}

/// Opens a TCP connection to `addr`, from `source_ip` when one is given.
async fn dial(addr: &str, source_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source_ip) = source_ip else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        if target.is_ipv4() != source_ip.is_ipv4() {
            continue;
        }
        let socket = if source_ip.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source_ip, 0))?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} has no address of the same family as the source address {source_ip}"),
        )
    }))
}

/// TCP keepalive: a peer that vanished without closing (powered off, cut off by a firewall)
/// is noticed on an idle connection too, not only when a write times out.
///
/// And retransmissions kept prompt. By default TCP doubles its retransmission timeout after
/// each loss up to two minutes, so a connection that lived through a partition keeps its
/// messages in the kernel until the next retransmission, long after the network healed (a
/// nemesis run saw no election for 26 s after a 15 s partition). The timeout is capped at one
/// second where the kernel allows it (`TCP_RTO_MAX_MS`, Linux 6.15 and later), and sent bytes
/// unacknowledged for `unacked` drop the connection for a new one (`TCP_USER_TIMEOUT`), which
/// bounds the wait on older kernels too.
pub(crate) fn set_keepalive(
    stream: &TcpStream,
    idle: Duration,
    unacked: Duration,
) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle.max(Duration::from_secs(1)) / 2);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    {
        socket.set_tcp_user_timeout(Some(unacked))?;
        cap_retransmission_timeout(stream);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = unacked;
    Ok(())
}

/// `TCP_RTO_MAX_MS` from `linux/tcp.h` (not in the libc crate yet).
#[cfg(target_os = "linux")]
const TCP_RTO_MAX_MS: libc::c_int = 44;
/// The smallest cap the kernel takes.
#[cfg(target_os = "linux")]
const RTO_MAX_MS: libc::c_int = 1000;

/// Caps the retransmission timeout; kernels without the option keep their own (an error is
/// expected there and ignored).
#[cfg(target_os = "linux")]
fn cap_retransmission_timeout(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let value = RTO_MAX_MS;
    // SAFETY: a valid socket descriptor, and a pointer to an int with its exact length.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Streams queued messages until the connection fails. Whatever was taken from the queue when a
/// write fails is lost (not counted as sent): Raft retransmits. Every write and flush must
/// complete within the write timeout: a peer that stopped reading (stopped, or cut off) gets a
/// new connection instead of a stalled one.
async fn stream(
    peer: &Peer,
    lane: Lane,
    settings: &DialSettings,
    mut framed: Framed<Stream, FrameCodec>,
) -> Result<(), ConnError> {
    let queue = &peer.queues[lane.index()];
    let mut batch = VecDeque::new();
    let limit = settings.write_timeout;
    loop {
        queue.take_all(&mut batch);
        if batch.is_empty() {
            tokio::select! {
                _ = queue.notify.notified() => continue,
                // The acceptor never writes after `Welcome`, so anything here means the
                // connection ended: notice it now rather than on the next write, so that
                // `connected` is accurate and we redial before the next message.
                frame = framed.next() => {
                    return Err(match frame {
                        None => ConnError::Closed,
                        Some(Err(e)) => ConnError::Io(e),
                        Some(Ok(_)) => ConnError::Protocol("unexpected frame from acceptor"),
                    });
                }
            }
        }
        // Feed the whole batch, then flush once: one syscall burst per wake-up, not per message.
        let mut written = 0u64;
        for queued in batch.drain(..) {
            let payload = match wire::encode_frame(queued.order, &queued.message) {
                Ok(payload) => payload,
                Err(e) => {
                    // Cannot happen for `Message` (plain data), but never panic on it.
                    tracing::error!(peer = peer.id.0, error = %e, "cannot encode message; dropped");
                    continue;
                }
            };
            if payload.len() > settings.max_frame_bytes {
                // Sending it would make the codec fail and tear down the connection, and the
                // peer would reject it anyway.
                bump(&peer.counters.oversized);
                tracing::warn!(
                    peer = peer.id.0,
                    bytes = payload.len(),
                    max = settings.max_frame_bytes,
                    "message larger than max_frame_bytes; dropped"
                );
                continue;
            }
            timeout(limit, framed.feed(payload))
                .await
                .map_err(|_| ConnError::Timeout("write"))??;
            written += 1;
        }
        timeout(limit, SinkExt::<bytes::Bytes>::flush(&mut framed))
            .await
            .map_err(|_| ConnError::Timeout("write"))??;
        peer.counters.sent.fetch_add(written, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_messages::append;

    /// A peer that is down must not make the sender hold every large message sent to it.
    #[test]
    fn a_queue_holds_no_more_bytes_than_its_bound() {
        let queue = PeerQueue::new(4096, 8 << 20);
        let mut dropped = 0;
        for _ in 0..300 {
            dropped += queue.push(0, append(1 << 20));
            assert!(queue.bytes() <= 8 << 20, "{}", queue.bytes());
        }
        assert_eq!(queue.len() as u64 + dropped, 300);
        assert!(queue.len() >= 7);
        // A message over the bound on its own is still queued, alone.
        queue.push(0, append(9 << 20));
        assert_eq!(queue.len(), 1);
    }

    /// A node with its own address (a firewall rule or a proxy tells peers apart by it) dials
    /// from that address.
    #[tokio::test]
    async fn dials_from_the_source_address_given() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let (dialed, accepted) = tokio::join!(dial(&addr, Some(source)), listener.accept());
        dialed.unwrap();
        assert_eq!(accepted.unwrap().1.ip(), source);
        let (dialed, accepted) = tokio::join!(dial(&addr, None), listener.accept());
        dialed.unwrap();
        assert_eq!(accepted.unwrap().1.ip().to_string(), "127.0.0.1");
    }

    /// Sent bytes unacknowledged for longer than the bound drop the connection: a connection
    /// that lived through a partition must not wait for TCP's backed-off retransmission.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn unacknowledged_bytes_are_bounded_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (dialed, _accepted) = tokio::join!(dial(&addr, None), listener.accept());
        let stream = dialed.unwrap();
        set_keepalive(&stream, Duration::from_secs(10), Duration::from_secs(5)).unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(5))
        );
        assert!(socket.keepalive().unwrap());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket and an int-sized buffer with its length.
        let read = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                TCP_RTO_MAX_MS,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        // Kernels before 6.15 have no such option; where there is one, it is capped.
        if read == 0 {
            assert_eq!(value, RTO_MAX_MS);
        }
    }
}
