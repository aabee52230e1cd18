//! The receiving side: the accept loop and one task per accepted connection.

use super::stats::{bump, Counters};
use super::wire::{self, HelloReply, HANDSHAKE_MAX_FRAME_BYTES};
use futures_util::{SinkExt, StreamExt};
use raftengine::{Message, NodeId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
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
    pub max_inbound_connections: usize,
    pub inbound: mpsc::Sender<Message>,
    pub counters: Arc<Counters>,
}

/// Accepts connections until `cancel` fires, then aborts every connection task and waits for
/// them, so that when this returns no connection task is left and every accepted socket (and
/// the listener) is closed.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<InboundCtx>,
    cancel: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    if conns.len() >= ctx.max_inbound_connections {
                        bump(&ctx.counters.connections_over_limit);
                        tracing::warn!(%addr, limit = ctx.max_inbound_connections, "too many inbound connections; closing the new one");
                        drop(stream);
                        continue;
                    }
                    bump(&ctx.counters.connections_accepted);
                    let span = tracing::info_span!("raftnet_inbound", node = ctx.node_id.0, %addr);
                    conns.spawn(handle(stream, addr, ctx.clone()).instrument(span));
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

/// Serves one accepted connection: handshake, then read messages until it ends.
async fn handle(stream: TcpStream, addr: SocketAddr, ctx: Arc<InboundCtx>) {
    // Small limit until the dialer is known: an unauthenticated client must not make us reserve
    // `max_frame_bytes` of memory with a 4-byte length header.
    let mut framed = Framed::new(stream, wire::codec(HANDSHAKE_MAX_FRAME_BYTES));
    let Some(from) = handshake(&mut framed, addr, &ctx).await else {
        bump(&ctx.counters.connections_refused);
        return;
    };
    framed.codec_mut().set_max_frame_length(ctx.max_frame_bytes);
    tracing::info!(peer = from.0, "accepted connection from peer");
    loop {
        let frame = match framed.next().await {
            None => {
                tracing::debug!(peer = from.0, "peer closed the connection");
                return;
            }
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // Oversized, truncated (EOF mid-frame) or a socket error: the stream cannot be
                // resynchronised, so the only safe thing is to close it.
                bump(&ctx.counters.connections_failed);
                tracing::error!(peer = from.0, error = %e, "bad frame or read error; closing the connection");
                return;
            }
        };
        let msg: Message = match wire::decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                // A peer that sends garbage inside valid framing is broken or not what it
                // claimed to be; stop trusting the connection.
                bump(&ctx.counters.connections_failed);
                tracing::error!(peer = from.0, error = %e, "undecodable message; closing the connection");
                return;
            }
        };
        if msg.from != from || msg.to != ctx.node_id {
            bump(&ctx.counters.inbound_rejected);
            tracing::warn!(
                peer = from.0,
                msg_from = msg.from.0,
                msg_to = msg.to.0,
                "message not from the handshaken peer or not for this node; dropped"
            );
            continue;
        }
        match ctx.inbound.try_send(msg) {
            Ok(()) => bump(&ctx.counters.inbound_received),
            // Full: the consumer is behind; dropping is what Raft tolerates and keeps this reader
            // (and so the socket buffer) from stalling. Closed: nobody listens any more.
            Err(_) => {
                bump(&ctx.counters.inbound_dropped);
                tracing::debug!(
                    peer = from.0,
                    "inbound channel full or closed; message dropped"
                );
            }
        }
    }
}

/// Reads and checks the dialer's hello and answers it. Returns the dialer's node id, or `None`
/// after refusing (the caller then closes the connection).
async fn handshake(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    addr: SocketAddr,
    ctx: &InboundCtx,
) -> Option<NodeId> {
    let reason = match timeout(ctx.handshake_timeout, framed.next()).await {
        Err(_) => "handshake timeout: no hello received".to_string(),
        Ok(None) => {
            tracing::debug!(%addr, "connection closed before the hello");
            return None;
        }
        Ok(Some(Err(e))) => format!("bad hello frame: {e}"),
        Ok(Some(Ok(frame))) => match wire::check_hello(&frame, ctx.cluster_id, ctx.node_id) {
            Ok(from) => {
                return match reply(framed, ctx, HelloReply::Welcome).await {
                    Ok(()) => Some(from),
                    Err(e) => {
                        tracing::warn!(%addr, peer = from.0, error = %e, "cannot send welcome");
                        None
                    }
                };
            }
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
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    ctx: &InboundCtx,
    reply: HelloReply,
) -> Result<(), super::ConnError> {
    let payload = wire::encode(&reply)?;
    timeout(ctx.handshake_timeout, framed.send(payload))
        .await
        .map_err(|_| super::ConnError::Timeout("handshake reply"))??;
    Ok(())
}
