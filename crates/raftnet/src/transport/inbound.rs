//! The receiving side: the accept loop, one task per accepted connection, the connection slots
//! and the delivery of both lanes' messages in an order Raft can use (see the module docs of
//! [`super`]).

use super::stats::{bump, Counters};
use super::wire::FrameCodec;
use super::wire::{self, Frame, HelloReply, Lane, HANDSHAKE_MAX_FRAME_BYTES};
use super::PeerTable;
use crate::tls::{certificate_names_node, node_name, PeerTls, Stream};
use futures_util::{SinkExt, StreamExt};
use raftengine::{LogIndex, Message, MessageBody, NodeId, Term};
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors), so that
/// a persistent error does not spin the loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What every connection task needs.
#[derive(Debug)]
pub(crate) struct InboundCtx {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub max_frame_bytes: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive: Duration,
    pub unacked_timeout: Duration,
    pub limits: Arc<Slots>,
    /// The peers this node sends to: its members (weak: the table outlives no transport).
    pub members: Weak<PeerTable>,
    /// Per sending node, what its bulk lane delivered (see [`InboundCtx::deliver`]).
    pub order: Mutex<HashMap<NodeId, LaneOrder>>,
    pub inbound: crate::inbox::InboxSender,
    pub counters: Arc<Counters>,
    /// Mutual TLS on every connection, when set.
    pub tls: Option<Arc<PeerTls>>,
}

/// What one sender's bulk lane delivered so far.
#[derive(Debug, Default)]
pub(crate) struct LaneOrder {
    /// The ordering number of the last bulk frame delivered; `u64::MAX` once the bulk
    /// connection closed (whatever it still carried is lost, nothing is awaited).
    delivered_bulk: u64,
    /// The end of the last append (or snapshot) delivered: (message term, index, its term).
    last_append: Option<(Term, LogIndex, Term)>,
}

impl InboundCtx {
    fn is_member(&self, id: NodeId) -> bool {
        self.members.upgrade().is_some_and(|t| t.is_member(id))
    }

    fn order(&self) -> MutexGuard<'_, HashMap<NodeId, LaneOrder>> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a message to the node. A heartbeat (an AppendEntries without entries) that
    /// overtook bulk frames sent before it names as its previous entry the end of the last
    /// append delivered from the same leader and term, so that the follower does not reject it
    /// for entries still on their way. Delivery and bookkeeping happen under one lock, so the
    /// two lanes' readers cannot interleave between them.
    fn deliver(&self, from: NodeId, lane: Lane, order: u64, mut msg: Message) {
        let mut orders = self.order();
        let state = orders.entry(from).or_default();
        let end = match lane {
            Lane::Bulk => append_end(&msg),
            Lane::Control => {
                if rewind_overtaking_heartbeat(state, order, &mut msg) {
                    bump(&self.counters.heartbeats_rewound);
                }
                None
            }
        };
        let sent = self.inbound.try_send(msg);
        if lane == Lane::Bulk {
            state.delivered_bulk = order;
            if end.is_some() {
                state.last_append = end;
            }
        }
        drop(orders);
        match sent {
            Ok(()) => bump(&self.counters.inbound_received),
            // Full: the consumer is behind; dropping is what Raft tolerates and keeps this reader
            // (and so the socket buffer) from stalling. Closed: nobody listens any more.
            Err(_) => {
                bump(&self.counters.inbound_dropped);
                tracing::debug!(
                    peer = from.0,
                    "inbound channel full or closed; message dropped"
                );
            }
        }
    }

    /// The bulk connection from `from` ended: frames it still carried are lost.
    fn bulk_closed(&self, from: NodeId) {
        self.order().entry(from).or_default().delivered_bulk = u64::MAX;
    }
}

/// Where an append or a complete snapshot leaves the follower's log, if it is one.
fn append_end(msg: &Message) -> Option<(Term, LogIndex, Term)> {
    match &msg.body {
        MessageBody::AppendEntries { entries, .. } => {
            entries.last().map(|e| (msg.term, e.index, e.term))
        }
        MessageBody::InstallSnapshot {
            last_included,
            done: true,
            ..
        } => Some((msg.term, last_included.index, last_included.term)),
        _ => None,
    }
}

/// Rewinds an overtaking heartbeat (see [`InboundCtx::deliver`]); true if it did.
fn rewind_overtaking_heartbeat(state: &LaneOrder, order: u64, msg: &mut Message) -> bool {
    let Some((term, index, index_term)) = state.last_append else {
        return false;
    };
    let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = &mut msg.body
    else {
        return false;
    };
    let overtook = order > state.delivered_bulk;
    if !entries.is_empty() || !overtook || msg.term != term || *prev_log_index <= index {
        return false;
    }
    *prev_log_index = index;
    *prev_log_term = index_term;
    true
}

/// Bounds on accepted connections (see the module docs of [`super`]).
#[derive(Debug)]
pub(crate) struct Slots {
    max_handshakes: usize,
    max_strangers: usize,
    max_per_source: usize,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    handshaking: usize,
    next_conn: u64,
    open: HashMap<(NodeId, Lane), Open>,
}

#[derive(Debug)]
struct Open {
    conn: u64,
    member: bool,
    source: IpAddr,
    stop: CancellationToken,
}

impl Slots {
    pub fn new(max_handshakes: usize, max_strangers: usize, max_per_source: usize) -> Slots {
        Slots {
            max_handshakes,
            max_strangers,
            max_per_source,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more connection in its handshake, if there is one.
    fn handshake(self: &Arc<Self>) -> Option<HandshakeSlot> {
        let mut state = self.state();
        if state.handshaking >= self.max_handshakes {
            return None;
        }
        state.handshaking += 1;
        Some(HandshakeSlot(self.clone()))
    }

    /// Admits a handshaken connection of `id` on `lane`: it replaces an older one of the same
    /// id and lane; a member is always admitted, a stranger only within the bounds.
    fn admit(
        &self,
        id: NodeId,
        lane: Lane,
        source: IpAddr,
        member: bool,
    ) -> Result<(u64, CancellationToken), String> {
        let mut state = self.state();
        if let Some(old) = state.open.remove(&(id, lane)) {
            old.stop.cancel();
        }
        if !member {
            let strangers = state.open.values().filter(|o| !o.member);
            let (all, here) = strangers.fold((0, 0), |(all, here), o| {
                (all + 1, here + usize::from(o.source == source))
            });
            if all >= self.max_strangers {
                return Err(format!("too many connections from non-members ({all})"));
            }
            if here >= self.max_per_source {
                return Err(format!("too many connections from {source} ({here})"));
            }
        }
        state.next_conn += 1;
        let conn = state.next_conn;
        let stop = CancellationToken::new();
        let open = Open {
            conn,
            member,
            source,
            stop: stop.clone(),
        };
        state.open.insert((id, lane), open);
        Ok((conn, stop))
    }

    /// Closes every connection `id` has open (both lanes); returns how many there were.
    pub(crate) fn disconnect(&self, id: NodeId) -> usize {
        let mut state = self.state();
        let mut closed = 0;
        for lane in [Lane::Control, Lane::Bulk] {
            if let Some(open) = state.open.remove(&(id, lane)) {
                open.stop.cancel();
                closed += 1;
            }
        }
        closed
    }

    fn release(&self, id: NodeId, lane: Lane, conn: u64) {
        let mut state = self.state();
        if state.open.get(&(id, lane)).is_some_and(|o| o.conn == conn) {
            state.open.remove(&(id, lane));
        }
    }
}

/// A connection in its handshake; the slot is given back when dropped.
struct HandshakeSlot(Arc<Slots>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.state().handshaking -= 1;
    }
}

/// Accepts connections until `cancel` fires, then aborts every connection task and waits for
/// them, so that when this returns no connection task is left and every accepted socket (and
/// the listener) is closed.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<InboundCtx>,
    cancel: CancellationToken,
) {
    let slots = ctx.limits.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Some(slot) = slots.handshake() else {
                        bump(&ctx.counters.connections_over_limit);
                        tracing::warn!(%addr, limit = ctx.limits.max_handshakes, "too many connections in their handshake; closing the new one");
                        drop(stream);
                        continue;
                    };
                    bump(&ctx.counters.connections_accepted);
                    let span = tracing::info_span!("raftnet_inbound", node = ctx.node_id.0, %addr);
                    conns.spawn(handle(stream, addr, ctx.clone(), slots.clone(), slot).instrument(span));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

/// Serves one accepted connection: handshake, then read messages until it ends, goes idle or is
/// replaced by a newer connection of the same node and lane.
async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    ctx: Arc<InboundCtx>,
    slots: Arc<Slots>,
    slot: HandshakeSlot,
) {
    if let Err(e) = super::outbound::set_keepalive(&stream, ctx.keepalive, ctx.unacked_timeout) {
        tracing::debug!(%addr, error = %e, "cannot set keepalive");
    }
    let (stream, certificate) = match &ctx.tls {
        None => (Stream::Plain(stream), None),
        Some(tls) => match timeout(ctx.handshake_timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => {
                let stream = Stream::Accepted(Box::new(stream));
                let certificate = stream.peer_certificate().cloned();
                (stream, certificate)
            }
            Ok(Err(e)) => {
                bump(&ctx.counters.connections_refused);
                bump(&ctx.counters.tls_failures);
                tracing::warn!(%addr, error = %e, "refusing connection: TLS handshake failed");
                return;
            }
            Err(_) => {
                bump(&ctx.counters.connections_refused);
                bump(&ctx.counters.tls_failures);
                tracing::warn!(%addr, "refusing connection: TLS handshake timed out");
                return;
            }
        },
    };
    // Small limit until the dialer is known: an unauthenticated client must not make us reserve
    // `max_frame_bytes` of memory with a 4-byte length header.
    let mut framed = Framed::new(stream, wire::codec(HANDSHAKE_MAX_FRAME_BYTES));
    let admitted = handshake(&mut framed, addr, &ctx, &slots, certificate.as_ref()).await;
    drop(slot);
    let Some((from, lane, conn, stop)) = admitted else {
        bump(&ctx.counters.connections_refused);
        return;
    };
    framed.codec_mut().set_max_frame_length(ctx.max_frame_bytes);
    tracing::info!(peer = from.0, ?lane, "accepted connection from peer");
    read_frames(&mut framed, from, lane, &ctx, &stop).await;
    slots.release(from, lane, conn);
    if lane == Lane::Bulk {
        ctx.bulk_closed(from);
    }
}

/// Reads and delivers frames until the connection ends, fails, idles or is replaced.
async fn read_frames(
    framed: &mut Framed<Stream, FrameCodec>,
    from: NodeId,
    lane: Lane,
    ctx: &InboundCtx,
    stop: &CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => {
                tracing::debug!(peer = from.0, ?lane, "replaced by a newer connection, or disconnected");
                return;
            }
            next = timeout(ctx.idle_timeout, framed.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                tracing::debug!(peer = from.0, ?lane, "idle connection closed");
                return;
            }
            Ok(None) => {
                tracing::debug!(peer = from.0, "peer closed the connection");
                return;
            }
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                // Oversized, truncated (EOF mid-frame) or a socket error: the stream cannot be
                // resynchronised, so the only safe thing is to close it.
                bump(&ctx.counters.connections_failed);
                tracing::error!(peer = from.0, error = %e, "bad frame or read error; closing the connection");
                return;
            }
        };
        let frame: Frame = match wire::decode(&frame) {
            Ok(frame) => frame,
            Err(e) => {
                // A peer that sends garbage inside valid framing is broken or not what it
                // claimed to be; stop trusting the connection.
                bump(&ctx.counters.connections_failed);
                tracing::error!(peer = from.0, error = %e, "undecodable message; closing the connection");
                return;
            }
        };
        let msg = frame.message;
        if msg.from != from || msg.to != ctx.node_id {
            // A correct peer only sends its own messages, to us: this one is forging another
            // node's or is misrouted, and nothing more it says can be trusted.
            bump(&ctx.counters.inbound_rejected);
            tracing::error!(
                peer = from.0,
                msg_from = msg.from.0,
                msg_to = msg.to.0,
                node = ctx.node_id.0,
                "message not from the handshaken peer or not for this node; closing the connection"
            );
            return;
        }
        ctx.deliver(from, lane, frame.order, msg);
    }
}

/// Reads and checks the dialer's hello, admits the connection and answers. Returns the
/// dialer's node id, lane, connection number and replacement signal, or `None` after refusing
/// (the caller then closes the connection).
///
/// With TLS, `certificate` is the dialer's (verified against the CA by the TLS handshake) and
/// must name the node id the hello claims.
async fn handshake(
    framed: &mut Framed<Stream, FrameCodec>,
    addr: SocketAddr,
    ctx: &InboundCtx,
    slots: &Slots,
    certificate: Option<&CertificateDer<'static>>,
) -> Option<(NodeId, Lane, u64, CancellationToken)> {
    let reason = match timeout(ctx.handshake_timeout, framed.next()).await {
        Err(_) => "handshake timeout: no hello received".to_string(),
        Ok(None) => {
            tracing::debug!(%addr, "connection closed before the hello");
            return None;
        }
        Ok(Some(Err(e))) => format!("bad hello frame: {e}"),
        Ok(Some(Ok(frame))) => match wire::check_hello(&frame, ctx.cluster_id, ctx.node_id) {
            Ok((from, _))
                if ctx.tls.is_some()
                    && !certificate.is_some_and(|c| certificate_names_node(c, from)) =>
            {
                bump(&ctx.counters.tls_failures);
                format!(
                    "the dialer claims to be node {} but its certificate does not name {}",
                    from.0,
                    node_name(from)
                )
            }
            Ok((from, lane)) => match slots.admit(from, lane, addr.ip(), ctx.is_member(from)) {
                Ok((conn, stop)) => {
                    return match reply(framed, ctx, HelloReply::Welcome).await {
                        Ok(()) => Some((from, lane, conn, stop)),
                        Err(e) => {
                            slots.release(from, lane, conn);
                            tracing::warn!(%addr, peer = from.0, error = %e, "cannot send welcome");
                            None
                        }
                    };
                }
                Err(reason) => {
                    bump(&ctx.counters.connections_over_limit);
                    reason
                }
            },
            Err(e) => e.to_string(),
        },
    };
    tracing::warn!(%addr, %reason, "refusing connection");
    // Best effort: the dialer may already be gone, or never have been a raftnet node.
    let _ = reply(framed, ctx, HelloReply::Refused { reason }).await;
    None
}

/// Sends a handshake reply, bounded by the handshake timeout (a dialer that does not read must
/// not hold the task).
async fn reply(
    framed: &mut Framed<Stream, FrameCodec>,
    ctx: &InboundCtx,
    reply: HelloReply,
) -> Result<(), super::ConnError> {
    let payload = wire::encode(&reply)?;
    timeout(ctx.handshake_timeout, framed.send(payload))
        .await
        .map_err(|_| super::ConnError::Timeout("handshake reply"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(term: u64, prev: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(term),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(prev),
                prev_log_term: Term(term),
                entries: Vec::new(),
                leader_commit: LogIndex(prev),
                read_round: 0,
                transfer: 0,
                repair_epoch: 0,
            },
        }
    }

    #[test]
    fn only_a_heartbeat_that_overtook_bulk_frames_is_rewound() {
        let state = LaneOrder {
            delivered_bulk: 4,
            last_append: Some((Term(3), LogIndex(10), Term(2))),
        };
        // Sent after bulk frame 5, which has not arrived: rewound to index 10 (term 2).
        let mut msg = heartbeat(3, 20);
        assert!(rewind_overtaking_heartbeat(&state, 5, &mut msg));
        assert!(matches!(
            msg.body,
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(10),
                prev_log_term: Term(2),
                ..
            }
        ));
        // Everything sent before it arrived: unchanged (a lost append must still be noticed).
        let mut msg = heartbeat(3, 20);
        assert!(!rewind_overtaking_heartbeat(&state, 4, &mut msg));
        // Another term's leader, or a heartbeat already at or below the delivered end.
        assert!(!rewind_overtaking_heartbeat(
            &state,
            5,
            &mut heartbeat(4, 20)
        ));
        assert!(!rewind_overtaking_heartbeat(
            &state,
            5,
            &mut heartbeat(3, 10)
        ));
        // After the bulk connection closed, nothing is awaited.
        let closed = LaneOrder {
            delivered_bulk: u64::MAX,
            ..state
        };
        assert!(!rewind_overtaking_heartbeat(
            &closed,
            5,
            &mut heartbeat(3, 20)
        ));
    }

    #[test]
    fn members_always_get_a_slot_and_replace_their_older_connection() {
        let slots = Slots::new(4, 2, 1);
        let here: IpAddr = "127.0.0.1".parse().expect("ip");
        let there: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(slots.admit(NodeId(100), Lane::Control, here, false).is_ok());
        // One stranger per source.
        assert!(slots
            .admit(NodeId(101), Lane::Control, here, false)
            .is_err());
        assert!(slots
            .admit(NodeId(102), Lane::Control, there, false)
            .is_ok());
        // Two strangers in all.
        let third: IpAddr = "127.0.0.3".parse().expect("ip");
        assert!(slots
            .admit(NodeId(103), Lane::Control, third, false)
            .is_err());
        // A member gets in regardless, and its new connection replaces the old one.
        let (_, first) = slots
            .admit(NodeId(2), Lane::Control, here, true)
            .expect("member");
        let (_, second) = slots
            .admit(NodeId(2), Lane::Control, here, true)
            .expect("again");
        assert!(first.is_cancelled() && !second.is_cancelled());
    }

    #[test]
    fn disconnect_closes_both_lanes_of_one_node_only() {
        let slots = Slots::new(4, 4, 4);
        let here: IpAddr = "127.0.0.1".parse().expect("ip");
        let (_, control) = slots
            .admit(NodeId(2), Lane::Control, here, true)
            .expect("control");
        let (_, bulk) = slots
            .admit(NodeId(2), Lane::Bulk, here, true)
            .expect("bulk");
        let (_, other) = slots
            .admit(NodeId(3), Lane::Control, here, true)
            .expect("other");
        assert_eq!(slots.disconnect(NodeId(2)), 2);
        assert!(control.is_cancelled() && bulk.is_cancelled());
        assert!(!other.is_cancelled());
        assert_eq!(slots.disconnect(NodeId(2)), 0);
    }
}
