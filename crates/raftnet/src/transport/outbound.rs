//! The sending side: one bounded queue and one dialing task per peer.

use super::stats::{bump, PeerCounters};
use super::wire::{self, Hello, HelloReply, HANDSHAKE_MAX_FRAME_BYTES};
use super::ConnError;
use futures_util::{SinkExt, StreamExt};
use raftengine::{Message, NodeId};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A bounded FIFO that drops its oldest message when full.
///
/// Oldest-first because, for Raft, a message that waited longest (an old heartbeat, a vote
/// request of a past term) is the least useful one; the newest carries the latest term and
/// commit index. A plain `std::sync::Mutex` is enough: it is held only for a push or a swap of
/// two buffers, never across an await, so `send` cannot block for long.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    items: Mutex<VecDeque<Message>>,
    capacity: usize,
    /// Wakes the peer's task when a message arrives. `Notify` keeps one permit, so a push that
    /// happens while the task is busy is not missed.
    notify: Notify,
}

impl PeerQueue {
    pub fn new(capacity: usize) -> PeerQueue {
        PeerQueue {
            items: Mutex::new(VecDeque::new()),
            capacity,
            notify: Notify::new(),
        }
    }

    /// A poisoned lock only means another thread panicked while holding it; the queue itself is
    /// still a valid `VecDeque`, so carry on rather than panic in turn.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `msg`; returns true if the queue was full and its oldest message was dropped.
    pub fn push(&self, msg: Message) -> bool {
        let evicted = {
            let mut items = self.lock();
            let evicted = if items.len() >= self.capacity {
                items.pop_front().is_some()
            } else {
                false
            };
            items.push_back(msg);
            evicted
        };
        self.notify.notify_one();
        evicted
    }

    /// Moves everything queued into `into` (which the caller has emptied).
    fn take_all(&self, into: &mut VecDeque<Message>) {
        // Swapping keeps both allocations, so steady-state batching does not allocate.
        std::mem::swap(&mut *self.lock(), into);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What the transport knows about one peer, shared by `send`, `stats` and the peer's task.
#[derive(Debug)]
pub(crate) struct Peer {
    pub id: NodeId,
    /// `host:port`, resolved at every dial (so a name may move, and resolving never blocks the
    /// caller of `set_peers`).
    pub addr: String,
    pub queue: PeerQueue,
    pub counters: PeerCounters,
    /// Cancelled when the peer leaves the table; its task then lingers and ends.
    pub retire: tokio_util::sync::CancellationToken,
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
}

/// The peer's task: dial, handshake, stream; on any failure wait with capped exponential backoff
/// and dial again. Runs until the task is cancelled (the caller selects on the cancellation
/// token, so every await here is a cancellation point).
pub(crate) async fn run(peer: &Peer, settings: &DialSettings) {
    let mut backoff = settings.backoff_initial;
    let mut ever_connected = false;
    // Dial failures to a down peer repeat every backoff period: log the first of a streak at
    // info, the rest at debug, so a dead peer does not flood the log.
    let mut failures_in_a_row: u64 = 0;
    loop {
        match connect(peer, settings).await {
            Ok(framed) => {
                backoff = settings.backoff_initial;
                failures_in_a_row = 0;
                if ever_connected {
                    bump(&peer.counters.reconnects);
                }
                ever_connected = true;
                peer.counters.connected.store(true, Ordering::Relaxed);
                tracing::info!(peer = peer.id.0, addr = %peer.addr, "connected to peer");
                let result = stream(peer, settings, framed).await;
                peer.counters.connected.store(false, Ordering::Relaxed);
                if let Err(e) = result {
                    tracing::warn!(peer = peer.id.0, error = %e, "connection to peer lost");
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
    settings: &DialSettings,
) -> Result<Framed<TcpStream, LengthDelimitedCodec>, ConnError> {
    let limit = settings.handshake_timeout;
    // A connect to an unreachable host can take minutes; bound it like the handshake.
    let stream = timeout(limit, TcpStream::connect(peer.addr.as_str()))
        .await
        .map_err(|_| ConnError::Timeout("connect"))??;
    // Raft messages are small and latency-sensitive, and batching is done here already.
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, wire::codec(HANDSHAKE_MAX_FRAME_BYTES));
    let hello = wire::encode(&Hello::new(settings.cluster_id, settings.node_id))?;
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

/// Streams queued messages until the connection fails. Whatever was taken from the queue when a
/// write fails is lost (not counted as sent): Raft retransmits.
async fn stream(
    peer: &Peer,
    settings: &DialSettings,
    mut framed: Framed<TcpStream, LengthDelimitedCodec>,
) -> Result<(), ConnError> {
    let mut batch = VecDeque::new();
    loop {
        peer.queue.take_all(&mut batch);
        if batch.is_empty() {
            tokio::select! {
                _ = peer.queue.notify.notified() => continue,
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
        for msg in batch.drain(..) {
            let payload = match wire::encode(&msg) {
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
            framed.feed(payload).await?;
            written += 1;
        }
        SinkExt::<bytes::Bytes>::flush(&mut framed).await?;
        peer.counters.sent.fetch_add(written, Ordering::Relaxed);
    }
}
