//! One client connection on the RESP port.
//!
//! # Pipelining without reordering
//!
//! A client may send many requests before reading any reply. The task decodes every request that
//! has arrived (up to [`ServerLimits::max_in_flight`](super::ServerLimits) open at once; beyond
//! that it stops reading and TCP pushes back) and serves them concurrently, while keeping what
//! Redis clients rely on: a pipeline behaves as if its commands ran one after another.
//!
//! Consecutive requests of one kind form a *run*:
//!
//! - a write run hands every write to the Raft loop at once, in request order, so they are
//!   proposed in that order and commit together (one append, one fsync, one AppendEntries);
//! - a read run takes one read barrier for all its reads and evaluates them together, in order,
//!   on one view of the store;
//! - replies that need no Raft (`PING`, errors, `INFO`, ...) join whatever run is open.
//!
//! A read run starts only when the run before it is finished (so it sees the writes sent before
//! it, and no write sent after it), and a write run starts when the write run before it has
//! handed over its writes, or when the read run before it is finished. Replies go back in request
//! order (`FuturesOrdered` over runs), every reply already available in one flush.
//!
//! The connection ends when the client closes (after the replies to everything it sent, so a
//! half-closed client gets its answers), after `QUIT`'s `+OK`, or after a protocol error's error
//! reply (the byte stream can no longer be framed).

use super::Shared;
use crate::command::{self, Action, InfoFields, ReadOp, ReplyShape};
use crate::kv::KvCommand;
use crate::resp::{Reply, RespCodec, RespError};
use futures_util::future::{maybe_done, BoxFuture, FutureExt, MaybeDone};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// A write's reply once the timeout ran out: it may still commit.
const WRITE_TIMED_OUT: &str =
    "UNCERTAIN request timed out; the command may or may not have been applied";
/// A read's reply once the timeout ran out.
const READ_TIMED_OUT: &str = "TRYAGAIN read timed out";

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, "client connected");
    let framed = Framed::new(stream, RespCodec::new(shared.limits.resp));
    let (mut sink, mut requests) = framed.split();
    let mut pending: FuturesOrdered<BoxFuture<'static, Vec<Reply>>> = FuturesOrdered::new();
    let mut chain = Chain::default();
    let max_in_flight = shared.limits.max_in_flight.max(1);
    let mut in_flight = 0usize;
    let mut reading = true;
    loop {
        if !reading && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            first = requests.next(), if reading && in_flight < max_in_flight => {
                // Take in every request that has already arrived, so that a pipelined batch
                // reaches Raft in one go.
                let mut runs = Runs::default();
                let mut next = Some(first);
                while let Some(request) = next.take() {
                    match request {
                        Some(Ok(words)) => {
                            shared.stats.commands.fetch_add(1, Ordering::Relaxed);
                            in_flight += 1;
                            match command::parse_request(&words) {
                                Action::Quit => {
                                    runs.push(Item::Now(Reply::ok()), &shared, &mut chain, &mut pending);
                                    reading = false;
                                }
                                action => runs.push(Item::from(action), &shared, &mut chain, &mut pending),
                            }
                        }
                        Some(Err(RespError::Io(e))) => {
                            tracing::debug!(%peer, "client connection failed: {e}");
                            return;
                        }
                        Some(Err(e)) => {
                            shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, "closing a client connection: {e}");
                            in_flight += 1;
                            runs.push(Item::Now(e.to_reply()), &shared, &mut chain, &mut pending);
                            reading = false;
                        }
                        // The client closed its side: answer what it sent, then close.
                        None => reading = false,
                    }
                    if reading && in_flight < max_in_flight {
                        next = requests.next().now_or_never();
                    }
                }
                runs.seal(&shared, &mut chain, &mut pending);
            }
            Some(replies) = pending.next() => {
                in_flight -= replies.len();
                if !send_all(&mut sink, replies).await {
                    return;
                }
                // Every other reply that is already available goes into the same write.
                while let Some(Some(replies)) = pending.next().now_or_never() {
                    in_flight -= replies.len();
                    if !send_all(&mut sink, replies).await {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = sink.close().await;
    tracing::debug!(%peer, "client connection closed");
}

async fn send_all<S>(sink: &mut S, replies: Vec<Reply>) -> bool
where
    S: futures_util::Sink<Reply> + Unpin,
{
    for reply in replies {
        if sink.feed(reply).await.is_err() {
            return false;
        }
    }
    true
}

/// One request, classified.
enum Item {
    /// A reply known now.
    Now(Reply),
    /// `INFO`: this node's status when the reply is made.
    Info,
    Write(KvCommand, ReplyShape),
    Read(ReadOp),
}

impl From<Action> for Item {
    fn from(action: Action) -> Item {
        match action {
            Action::Write(cmd, shape) => Item::Write(cmd, shape),
            Action::Read(op) => Item::Read(op),
            Action::Info => Item::Info,
            Action::Immediate(reply) => Item::Now(reply),
            Action::Quit => Item::Now(Reply::ok()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only replies that touch no state: may join any run.
    Neutral,
    Write,
    Read,
}

impl Item {
    fn kind(&self) -> Kind {
        match self {
            Item::Now(_) | Item::Info => Kind::Neutral,
            Item::Write(..) => Kind::Write,
            Item::Read(_) => Kind::Read,
        }
    }
}

/// What the next run must wait for: the signals of the last write or read run.
#[derive(Default)]
struct Chain {
    last: Option<Signals>,
}

struct Signals {
    kind: Kind,
    /// A write run has handed every write to the Raft loop.
    started: Option<oneshot::Receiver<()>>,
    /// The run has all its replies.
    done: oneshot::Receiver<()>,
}

/// What a run waits for before it starts; `None` means nothing.
type Gate = Option<oneshot::Receiver<()>>;

async fn pass(gate: Gate) {
    if let Some(gate) = gate {
        // An error means the previous run was dropped, which only happens when the whole
        // connection goes away.
        let _ = gate.await;
    }
}

/// The runs of one batch of requests, built one request at a time.
#[derive(Default)]
struct Runs {
    kind: Option<Kind>,
    items: Vec<Item>,
}

impl Runs {
    fn push(
        &mut self,
        item: Item,
        shared: &Arc<Shared>,
        chain: &mut Chain,
        pending: &mut FuturesOrdered<BoxFuture<'static, Vec<Reply>>>,
    ) {
        let kind = item.kind();
        match self.kind {
            None => self.kind = Some(kind),
            Some(current) if current == kind || kind == Kind::Neutral => {}
            Some(Kind::Neutral) => self.kind = Some(kind),
            Some(_) => {
                self.seal(shared, chain, pending);
                self.kind = Some(kind);
            }
        }
        self.items.push(item);
    }

    /// Turns the open run into a future and queues it.
    fn seal(
        &mut self,
        shared: &Arc<Shared>,
        chain: &mut Chain,
        pending: &mut FuturesOrdered<BoxFuture<'static, Vec<Reply>>>,
    ) {
        let Some(kind) = self.kind.take() else {
            return;
        };
        let items = std::mem::take(&mut self.items);
        let shared = shared.clone();
        let run = match kind {
            Kind::Neutral => async move { neutral_run(&shared, items) }.boxed(),
            Kind::Write => {
                let gate = match chain.last.take() {
                    Some(Signals {
                        kind: Kind::Write,
                        started,
                        ..
                    }) => started,
                    Some(Signals { done, .. }) => Some(done),
                    None => None,
                };
                let (started_tx, started) = oneshot::channel();
                let (done_tx, done) = oneshot::channel();
                chain.last = Some(Signals {
                    kind: Kind::Write,
                    started: Some(started),
                    done,
                });
                write_run(shared, items, gate, started_tx, done_tx).boxed()
            }
            Kind::Read => {
                let gate = chain.last.take().map(|signals| signals.done);
                let (done_tx, done) = oneshot::channel();
                chain.last = Some(Signals {
                    kind: Kind::Read,
                    started: None,
                    done,
                });
                read_run(shared, items, gate, done_tx).boxed()
            }
        };
        pending.push_back(run);
    }
}

fn neutral_run(shared: &Shared, items: Vec<Item>) -> Vec<Reply> {
    items
        .into_iter()
        .map(|item| match item {
            Item::Now(reply) => reply,
            Item::Info => info(shared),
            Item::Write(..) | Item::Read(_) => internal_error(),
        })
        .collect()
}

fn internal_error() -> Reply {
    Reply::Error("ERR internal error: request in the wrong run".to_owned())
}

enum WriteSlot {
    Now(Reply),
    Info,
    Pending(Pin<Box<MaybeDone<BoxFuture<'static, Reply>>>>),
}

async fn write_run(
    shared: Arc<Shared>,
    items: Vec<Item>,
    gate: Gate,
    started: oneshot::Sender<()>,
    done: oneshot::Sender<()>,
) -> Vec<Reply> {
    pass(gate).await;
    let mut slots: Vec<WriteSlot> = items
        .into_iter()
        .map(|item| match item {
            Item::Now(reply) => WriteSlot::Now(reply),
            Item::Info => WriteSlot::Info,
            Item::Write(cmd, shape) => WriteSlot::Pending(Box::pin(maybe_done(
                write(shared.clone(), cmd, shape).boxed(),
            ))),
            Item::Read(_) => WriteSlot::Now(internal_error()),
        })
        .collect();
    // One poll of each write, in order, hands it to the Raft loop (`NodeHandle::write` queues the
    // command before its first await), so the writes are proposed in request order.
    poll_fn(|cx| {
        for slot in &mut slots {
            if let WriteSlot::Pending(write) = slot {
                let _ = write.as_mut().poll(cx);
            }
        }
        Poll::Ready(())
    })
    .await;
    let _ = started.send(());
    poll_fn(|cx| {
        let mut all_done = true;
        for slot in &mut slots {
            if let WriteSlot::Pending(write) = slot {
                all_done &= write.as_mut().poll(cx).is_ready();
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let replies = slots
        .into_iter()
        .map(|slot| match slot {
            WriteSlot::Now(reply) => reply,
            WriteSlot::Info => info(&shared),
            WriteSlot::Pending(mut write) => {
                write.as_mut().take_output().unwrap_or_else(internal_error)
            }
        })
        .collect();
    let _ = done.send(());
    replies
}

async fn write(shared: Arc<Shared>, cmd: KvCommand, shape: ReplyShape) -> Reply {
    let result = tokio::time::timeout(
        shared.limits.request_timeout,
        shared.handle.write(cmd.encode()),
    )
    .await;
    match result {
        Ok(Ok(output)) => command::reply_for_apply(shape, &Ok(output)),
        Ok(Err(error)) => shared.error_reply(error),
        Err(_) => Reply::Error(WRITE_TIMED_OUT.to_owned()),
    }
}

async fn read_run(
    shared: Arc<Shared>,
    items: Vec<Item>,
    gate: Gate,
    done: oneshot::Sender<()>,
) -> Vec<Reply> {
    pass(gate).await;
    let mut ops = Vec::new();
    let mut layout = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Read(op) => {
                ops.push(op);
                layout.push(None);
            }
            other => layout.push(Some(other)),
        }
    }
    // One barrier for the whole run; its reads are evaluated together, in order.
    let read = shared.handle.read(move |store| -> Vec<Reply> {
        ops.iter()
            .map(|op| command::read_reply(op, store))
            .collect()
    });
    let results = match tokio::time::timeout(shared.limits.request_timeout, read).await {
        Ok(Ok(replies)) => Ok(replies),
        Ok(Err(error)) => Err(shared.error_reply(error)),
        Err(_) => Err(Reply::Error(READ_TIMED_OUT.to_owned())),
    };
    let (mut read_replies, failure) = match results {
        Ok(replies) => (replies.into_iter(), None),
        Err(error) => (Vec::new().into_iter(), Some(error)),
    };
    let replies = layout
        .into_iter()
        .map(|slot| match slot {
            None => match &failure {
                None => read_replies.next().unwrap_or_else(internal_error),
                Some(error) => error.clone(),
            },
            Some(Item::Now(reply)) => reply,
            Some(Item::Info) => info(&shared),
            Some(Item::Write(..) | Item::Read(_)) => internal_error(),
        })
        .collect();
    let _ = done.send(());
    replies
}

fn info(shared: &Shared) -> Reply {
    let status = shared.handle.status();
    command::info_reply(&InfoFields {
        node_id: status.id,
        role: status.role,
        term: status.term,
        leader: status.leader,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
    })
}

/// Tells a client over the connection limit so, as Redis does, and closes.
pub(super) async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}
