//! Counters of the transport: atomics updated by the tasks, read as a snapshot by
//! [`Transport::stats`](super::Transport::stats).

use raftengine::NodeId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of the transport's counters. Counters only grow; `connected` and `queued` are
/// current values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Per peer sent to now (see `Transport::set_peers`): its outbound connection and queue.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Messages from authenticated connections handed to the inbound channel.
    pub inbound_received: u64,
    /// Good messages dropped because the inbound channel was full (or its receiver gone).
    pub inbound_dropped: u64,
    /// Frames whose `from` was not the handshake's node or whose `to` was not this node: each
    /// was dropped and its connection closed.
    pub inbound_rejected: u64,
    /// Connections closed by [`TransportSender::disconnect`](super::TransportSender::disconnect)
    /// (the node found their peer inconsistent).
    pub connections_disconnected: u64,
    /// TCP connections accepted by the listener.
    pub connections_accepted: u64,
    /// Accepted connections whose handshake failed (bad, missing or late hello; wrong magic,
    /// version or cluster; the acceptor's own node id): each was closed without delivering
    /// anything.
    pub connections_refused: u64,
    /// Of those, connections refused by TLS: a failed TLS handshake (no certificate, one from
    /// another CA, a protocol error) or a certificate that does not name the claimed node.
    pub tls_failures: u64,
    /// Authenticated connections closed because of a malformed frame (oversized, truncated or
    /// undecodable) or a read error.
    pub connections_failed: u64,
    /// Connections closed because a bound on connections was reached (handshakes at once,
    /// non-members, per source address).
    pub connections_over_limit: u64,
    /// Messages given to `send` that name an unknown destination or another sender.
    pub unroutable: u64,
    /// Heartbeats that overtook bulk frames and were delivered with an earlier previous entry
    /// (see the transport's docs on lanes).
    pub heartbeats_rewound: u64,
}

/// A snapshot of the counters of one peer (the outbound side: this node sending to it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// Whether a handshaken connection to the peer is open now.
    pub connected: bool,
    /// Messages waiting in the peer's queues (both lanes) now.
    pub queued: usize,
    /// The bytes they hold (payloads, roughly).
    pub queued_bytes: usize,
    /// Messages written and flushed to the peer's socket (the peer may still lose them).
    pub sent: u64,
    /// Messages evicted from the full queue (the oldest goes, see `Transport::send`).
    pub dropped: u64,
    /// Messages dropped because their encoding exceeds `max_frame_bytes`.
    pub oversized: u64,
    /// Connections established after the first one (each follows a lost or failed connection).
    pub reconnects: u64,
    /// Dial or handshake attempts that failed, refusals included.
    pub failed_attempts: u64,
    /// Handshakes the peer refused.
    pub refused: u64,
}

/// The live counters of one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub connected: AtomicBool,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub oversized: AtomicU64,
    pub reconnects: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub refused: AtomicU64,
}

impl PeerCounters {
    pub fn snapshot(&self, queued: usize, queued_bytes: usize) -> PeerStats {
        PeerStats {
            connected: self.connected.load(Ordering::Relaxed),
            queued,
            queued_bytes,
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// The live global counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub inbound_received: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub inbound_rejected: AtomicU64,
    pub connections_disconnected: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub tls_failures: AtomicU64,
    pub connections_failed: AtomicU64,
    pub connections_over_limit: AtomicU64,
    pub unroutable: AtomicU64,
    pub heartbeats_rewound: AtomicU64,
}

impl Counters {
    /// A snapshot with an empty `peers` map, for the caller to fill.
    pub fn snapshot(&self) -> TransportStats {
        TransportStats {
            peers: BTreeMap::new(),
            inbound_received: self.inbound_received.load(Ordering::Relaxed),
            inbound_dropped: self.inbound_dropped.load(Ordering::Relaxed),
            inbound_rejected: self.inbound_rejected.load(Ordering::Relaxed),
            connections_disconnected: self.connections_disconnected.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            tls_failures: self.tls_failures.load(Ordering::Relaxed),
            connections_failed: self.connections_failed.load(Ordering::Relaxed),
            connections_over_limit: self.connections_over_limit.load(Ordering::Relaxed),
            unroutable: self.unroutable.load(Ordering::Relaxed),
            heartbeats_rewound: self.heartbeats_rewound.load(Ordering::Relaxed),
        }
    }
}

/// Adds one to a counter; relaxed because the counters order nothing.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
