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
//! # Limits and authentication
//!
//! Partially received requests are charged to the server-wide
//! [`BufferBudget`](crate::resp::BufferBudget) (a request that does not fit is refused and the
//! connection closed). Read replies are counted as unsent output until written: above the soft
//! limit the connection executes nothing more, a read run is served in chunks that fit under it,
//! a reply beyond the hard limit closes the connection, and so does a socket that takes none of
//! the output for the write timeout. One timer per connection enforces the idle and read
//! timeouts. When users are configured, each request is checked against the connection's user
//! ([`crate::auth::authorize`]) before it is classified; an `AUTH` is verified on a blocking
//! thread while the requests after it wait unread.
//!
//! The connection ends when the client closes (after the replies to everything it sent, so a
//! half-closed client gets its answers), after `QUIT`'s `+OK`, or after a protocol error's error
//! reply (the byte stream can no longer be framed).

use super::Shared;
use crate::auth::User;
use crate::command::{self, Action, AuthRequest, InfoFields, ReadOp, ReplyShape};
use crate::kv::{KvCommand, KvStore};
use crate::resp::{encode_reply, Reply, RespCodec, RespError};
use bytes::BytesMut;
use futures_util::future::{maybe_done, BoxFuture, FutureExt, MaybeDone};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// A write's reply once the timeout ran out: it may still commit.
const WRITE_TIMED_OUT: &str =
    "UNCERTAIN request timed out; the command may or may not have been applied";
/// A read's reply once the timeout ran out.
const READ_TIMED_OUT: &str = "TRYAGAIN read timed out";
/// An output buffer that grew this large for one big reply is given back once it is written,
/// so an idle connection does not keep a large allocation.
const KEPT_OUTPUT_CAPACITY: usize = 64 * 1024;

/// Serves one connection over any byte stream (plain TCP or TLS, see `server::accept_tls`).
pub(super) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    tracing::debug!(%peer, "client connected");
    let codec = RespCodec::with_budget(shared.limits.resp, shared.request_budget.clone());
    let mut connection = Connection {
        reader: FramedRead::new(stream, codec),
        peer,
        output: Arc::new(Output::new(shared.clone())),
        shared,
        pending: FuturesOrdered::new(),
        chain: Chain::default(),
        in_flight: 0,
        reading: true,
        out: BytesMut::new(),
        last_activity: Instant::now(),
        requests_decoded: 0,
        stalled_since: None,
        user: None,
        auth_failures: 0,
        auth_pending: false,
    };
    let end = connection.run(cancel).await;
    match end {
        End::Done => tracing::debug!(%peer, "client connection closed"),
        End::Cancelled | End::Failed => {}
    }
}

/// How a connection ended.
enum End {
    /// The client closed, sent `QUIT`, or the connection was closed for a reason already
    /// counted and logged.
    Done,
    /// The server shuts down.
    Cancelled,
    /// The socket failed.
    Failed,
}

/// One client connection's state.
struct Connection<S> {
    reader: FramedRead<S, RespCodec>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    output: Arc<Output>,
    /// The runs being served, in request order.
    pending: FuturesOrdered<RunFuture>,
    chain: Chain,
    /// Requests decoded and not answered yet.
    in_flight: usize,
    /// Still taking requests (false after QUIT, a protocol error, or the client's EOF).
    reading: bool,
    /// Encoded replies not yet written.
    out: BytesMut,
    /// When the last request arrived or the last reply was written.
    last_activity: Instant,
    requests_decoded: u64,
    /// A request seen in progress at a timer check: the count of requests decoded then, and
    /// when. The same count at a later check means no request completed since.
    stalled_since: Option<(u64, Instant)>,
    /// Who the client authenticated as; `None` before (or without users configured).
    user: Option<Arc<User>>,
    /// Failed AUTHs on this connection: the later ones are slowed down, and too many close it.
    auth_failures: u32,
    /// An AUTH is being verified: later requests wait, since its outcome decides them.
    auth_pending: bool,
}

/// Failed AUTHs answered at once; each one after them waits `ServerLimits::auth_failure_delay`,
/// doubled per failure (up to [`AUTH_DELAY_MAX`]): guessing passwords gets slow fast.
const AUTH_FREE_FAILURES: u32 = 3;
const AUTH_DELAY_MAX: Duration = Duration::from_secs(10);
/// Failed AUTHs after which the connection is closed.
const AUTH_MAX_FAILURES: u32 = 10;

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_USERS: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// What to do with one request, once its user is known.
enum Admission {
    Serve(Action),
    Refuse(Reply),
    Authenticate(AuthRequest),
}

/// How an AUTH went, for the connection to record.
enum AuthOutcome {
    LoggedIn(Arc<User>),
    Failed,
}

/// How long the AUTH after `failures` failed ones waits before it is verified.
fn auth_delay(base: Duration, failures: u32) -> Duration {
    match failures.checked_sub(AUTH_FREE_FAILURES) {
        None => Duration::ZERO,
        Some(extra) => base
            .saturating_mul(1u32 << extra.min(16))
            .min(AUTH_DELAY_MAX),
    }
}

/// Verifies `request` (after the delay its connection's failures earned) on a blocking thread.
async fn authenticate(shared: Arc<Shared>, request: AuthRequest, failures: u32) -> RunOutput {
    tokio::time::sleep(auth_delay(shared.limits.auth_failure_delay, failures)).await;
    let users = shared.users.clone();
    let name = match &request.user {
        Some(user) => String::from_utf8_lossy(user).into_owned(),
        None => crate::auth::DEFAULT_USER.to_owned(),
    };
    let password = request.password.clone();
    let user = tokio::task::spawn_blocking(move || users.verify(&name, &password))
        .await
        .ok()
        .flatten();
    let (reply, outcome) = match user {
        Some(user) if request.hello => (command::hello_reply(), AuthOutcome::LoggedIn(user)),
        Some(user) => (Reply::ok(), AuthOutcome::LoggedIn(user)),
        None => (Reply::Error(WRONGPASS.to_owned()), AuthOutcome::Failed),
    };
    RunOutput {
        auth: Some(outcome),
        ..RunOutput::complete(vec![reply])
    }
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(&mut self, cancel: CancellationToken) -> End {
        let limits = self.shared.limits;
        let max_in_flight = limits.max_in_flight.max(1);
        let check_every = match (limits.idle_timeout, limits.read_timeout) {
            (Some(idle), Some(read)) => Some(idle.min(read)),
            (one, other) => one.or(other),
        };
        // One timer for the idle and read timeouts, reset only when it fires: a request does
        // not touch it.
        let timer = tokio::time::sleep(check_every.unwrap_or(Duration::MAX / 4));
        tokio::pin!(timer);
        loop {
            if !self.reading && self.pending.is_empty() {
                break;
            }
            let may_read = self.may_read(max_in_flight);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return End::Cancelled,
                first = self.reader.next(), if may_read => {
                    self.take_requests(first, max_in_flight);
                }
                Some(output) = self.pending.next() => {
                    if let Some(end) = self.answer(output).await {
                        return end;
                    }
                }
                _ = &mut timer, if check_every.is_some() => {
                    let now = Instant::now();
                    match self.check_timeouts(now, may_read) {
                        Ok(next) => timer.as_mut().reset(next),
                        Err(end) => return end,
                    }
                }
            }
        }
        let _ = self.reader.get_mut().shutdown().await;
        End::Done
    }

    fn may_read(&self, max_in_flight: usize) -> bool {
        self.reading
            && !self.auth_pending
            && self.in_flight < max_in_flight
            && self.output.unsent() < self.output.soft_limit
    }

    /// Takes in `first` and every other request that has already arrived, so that a pipelined
    /// batch reaches Raft in one go.
    fn take_requests(
        &mut self,
        first: Option<Result<Vec<bytes::Bytes>, RespError>>,
        max_in_flight: usize,
    ) {
        let shared = self.shared.clone();
        let peer = self.peer;
        self.last_activity = Instant::now();
        let mut runs = Runs::default();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Some(Ok(words)) => {
                    shared.stats.commands.fetch_add(1, Ordering::Relaxed);
                    self.requests_decoded += 1;
                    self.in_flight += 1;
                    let item = match self.admit(command::parse_request(&words)) {
                        Admission::Serve(Action::Quit) => {
                            self.reading = false;
                            Item::Now(Reply::ok())
                        }
                        Admission::Serve(action) => Item::from(action),
                        Admission::Refuse(reply) => Item::Now(reply),
                        Admission::Authenticate(request) => {
                            // Its outcome decides the requests after it: they stay unread
                            // until it is known.
                            runs.seal(&self.run_context(), &mut self.chain, &mut self.pending);
                            let run = authenticate(shared.clone(), request, self.auth_failures);
                            self.pending.push_back(run.boxed());
                            self.auth_pending = true;
                            break;
                        }
                    };
                    runs.push(
                        item,
                        &self.run_context(),
                        &mut self.chain,
                        &mut self.pending,
                    );
                }
                Some(Err(RespError::Io(e))) => {
                    tracing::debug!(%peer, "client connection failed: {e}");
                    // Nothing more can be read; what was sent is still answered if the socket
                    // takes it.
                    self.reading = false;
                }
                Some(Err(e @ RespError::BudgetExhausted { .. })) => {
                    if let Some(unlogged) = shared
                        .throttles
                        .request_budget
                        .count(&shared.stats.request_budget_refusals)
                    {
                        tracing::warn!(
                            %peer,
                            "refusing a client request: {e}; {unlogged} more refused since the last such line"
                        );
                    }
                    self.answer_last(&mut runs, e.to_reply());
                }
                Some(Err(e)) => {
                    shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "closing a client connection: {e}");
                    self.answer_last(&mut runs, e.to_reply());
                }
                // The client closed its side: answer what it sent, then close.
                None => self.reading = false,
            }
            if self.may_read(max_in_flight) {
                next = self.reader.next().now_or_never();
            }
        }
        runs.seal(&self.run_context(), &mut self.chain, &mut self.pending);
    }

    /// Whether the connection's user may have `action` carried out.
    fn admit(&self, action: Action) -> Admission {
        let users_configured = !self.shared.users.is_empty();
        match (&action, &self.user) {
            (Action::Auth(_), _) if !users_configured => {
                Admission::Refuse(Reply::Error(NO_USERS.to_owned()))
            }
            (Action::Auth(request), _) => Admission::Authenticate(request.clone()),
            _ if !users_configured => Admission::Serve(action),
            (Action::Quit, _) => Admission::Serve(action),
            (_, None) => Admission::Refuse(Reply::Error(NOAUTH.to_owned())),
            (_, Some(user)) => match crate::auth::authorize(user, &action) {
                Ok(()) => Admission::Serve(action),
                Err(refusal) => Admission::Refuse(Reply::Error(refusal)),
            },
        }
    }

    /// Records how an AUTH went; `Some` when the connection must close after its reply.
    fn record_auth(&mut self, outcome: AuthOutcome) -> bool {
        self.auth_pending = false;
        match outcome {
            AuthOutcome::LoggedIn(user) => {
                self.auth_failures = 0;
                self.user = Some(user);
                false
            }
            AuthOutcome::Failed => {
                self.auth_failures += 1;
                let closing = self.auth_failures >= AUTH_MAX_FAILURES;
                if let Some(unlogged) = self
                    .shared
                    .throttles
                    .auth_failure
                    .count(&self.shared.stats.auth_failures)
                {
                    tracing::warn!(
                        peer = %self.peer,
                        failures = self.auth_failures,
                        closing,
                        "failed AUTH on the client port; {unlogged} more failed since the last such line"
                    );
                }
                closing
            }
        }
    }

    /// Answers `reply` after what was read before it, and reads no more: the request stream
    /// cannot be trusted past a refused or malformed request.
    fn answer_last(&mut self, runs: &mut Runs, reply: Reply) {
        self.in_flight += 1;
        runs.push(
            Item::Now(reply),
            &self.run_context(),
            &mut self.chain,
            &mut self.pending,
        );
        self.reading = false;
    }

    fn run_context(&self) -> RunContext {
        RunContext {
            shared: self.shared.clone(),
            output: self.output.clone(),
        }
    }

    /// Writes the replies of `output` and of every other run already finished; `Some` when the
    /// connection must end.
    async fn answer(&mut self, output: RunOutput) -> Option<End> {
        let mut counted = 0;
        let mut close_after_write = false;
        let mut next = Some(output);
        while let Some(mut output) = next.take() {
            if let Some(outcome) = output.auth.take() {
                close_after_write |= self.record_auth(outcome);
            }
            self.in_flight -= output.replies.len();
            counted += output.counted;
            if output.over_hard_limit {
                self.output.sent(counted);
                self.close_over_output_limit("a single reply");
                return Some(End::Done);
            }
            if let Some(rest) = output.rest {
                // The rest of a read run cut short comes before every later run.
                self.pending.push_front(rest);
            }
            for reply in &output.replies {
                encode_reply(reply, &mut self.out);
            }
            if self.out.len() > self.output.hard_limit {
                self.output.sent(counted);
                self.close_over_output_limit("the pending replies");
                return Some(End::Done);
            }
            // Every other reply that is already available goes into the same write.
            if let Some(Some(output)) = self.pending.next().now_or_never() {
                next = Some(output);
            }
        }
        let written = self.write_out().await;
        self.output.sent(counted);
        self.last_activity = Instant::now();
        match written {
            Ok(()) if close_after_write => Some(End::Done),
            Ok(()) => None,
            Err(WriteFailure::Stalled) => {
                if let Some(unlogged) = self
                    .shared
                    .throttles
                    .output_limit
                    .count(&self.shared.stats.output_stall_closes)
                {
                    tracing::warn!(
                        peer = %self.peer,
                        "closing a client connection: it read none of its {} bytes of pending replies for {:?}; {unlogged} more closed for their output since the last such line",
                        self.out.len(),
                        self.shared.limits.output_write_timeout
                    );
                }
                Some(End::Done)
            }
            Err(WriteFailure::Closed) => Some(End::Failed),
        }
    }

    fn close_over_output_limit(&self, what: &str) {
        if let Some(unlogged) = self
            .shared
            .throttles
            .output_limit
            .count(&self.shared.stats.output_limit_closes)
        {
            tracing::warn!(
                peer = %self.peer,
                "closing a client connection: {what} would pass the output hard limit of {} bytes; {unlogged} more closed for their output since the last such line",
                self.output.hard_limit
            );
        }
    }

    /// Writes `out` whole. Each write must make progress within the write timeout: a client
    /// that stops reading is cut off rather than holding its output forever.
    async fn write_out(&mut self) -> Result<(), WriteFailure> {
        let timeout = self.shared.limits.output_write_timeout;
        let stream = self.reader.get_mut();
        while !self.out.is_empty() {
            match tokio::time::timeout(timeout, stream.write_buf(&mut self.out)).await {
                Err(_) => return Err(WriteFailure::Stalled),
                Ok(Ok(0) | Err(_)) => return Err(WriteFailure::Closed),
                Ok(Ok(_)) => {}
            }
        }
        match tokio::time::timeout(timeout, stream.flush()).await {
            Err(_) => return Err(WriteFailure::Stalled),
            Ok(Err(_)) => return Err(WriteFailure::Closed),
            Ok(Ok(())) => {}
        }
        if self.out.capacity() > KEPT_OUTPUT_CAPACITY {
            self.out = BytesMut::new();
        }
        Ok(())
    }

    /// The idle and read timeouts, checked when the timer fires; the next check's deadline, or
    /// how the connection ends.
    fn check_timeouts(&mut self, now: Instant, may_read: bool) -> Result<Instant, End> {
        let limits = self.shared.limits;
        let in_progress =
            self.reader.decoder().in_progress() || !self.reader.read_buffer().is_empty();
        let mut next = now
            + limits
                .idle_timeout
                .into_iter()
                .chain(limits.read_timeout)
                .min()
                .unwrap_or(Duration::from_secs(3600));
        // A request counts as stalled only while the server is waiting for the client, not
        // while reading is paused on the server's side (pipeline or output full).
        if in_progress && may_read {
            if let Some(read_timeout) = limits.read_timeout {
                match self.stalled_since {
                    Some((decoded, since)) if decoded == self.requests_decoded => {
                        if now.duration_since(since) >= read_timeout {
                            self.shared
                                .stats
                                .read_timeouts
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(peer = %self.peer, "closing a client connection: a request did not complete within {read_timeout:?}");
                            return Err(End::Done);
                        }
                        next = next.min(since + read_timeout);
                    }
                    _ => {
                        self.stalled_since = Some((self.requests_decoded, now));
                        next = now + read_timeout;
                    }
                }
            }
        } else {
            self.stalled_since = None;
        }
        if let Some(idle) = limits.idle_timeout {
            if !in_progress && self.pending.is_empty() {
                let deadline = self.last_activity + idle;
                if deadline <= now {
                    self.shared
                        .stats
                        .idle_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %self.peer, "closing a client connection idle for {idle:?}");
                    return Err(End::Done);
                }
                next = next.min(deadline);
            }
        }
        Ok(next)
    }
}

enum WriteFailure {
    /// No byte was taken within the write timeout.
    Stalled,
    /// The socket failed or closed.
    Closed,
}

/// A connection's reply bytes produced (by reads: the only replies that can be large) and not
/// yet written to its socket.
struct Output {
    shared: Arc<Shared>,
    unsent: AtomicUsize,
    /// Wakes a read run waiting for the output to drain.
    drained: Notify,
    soft_limit: usize,
    hard_limit: usize,
}

impl Output {
    fn new(shared: Arc<Shared>) -> Output {
        let limits = shared.limits;
        Output {
            shared,
            unsent: AtomicUsize::new(0),
            drained: Notify::new(),
            soft_limit: limits.output_soft_limit.max(1),
            hard_limit: limits.output_hard_limit.max(1),
        }
    }

    fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Acquire)
    }

    fn grew(&self, bytes: usize) {
        self.unsent.fetch_add(bytes, Ordering::AcqRel);
        self.shared.stats.output_grew(bytes);
    }

    fn sent(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.unsent.fetch_sub(bytes, Ordering::AcqRel);
        self.shared.stats.output_sent(bytes);
        self.drained.notify_waiters();
    }

    /// Resolves once the unsent output is under the soft limit.
    async fn below_soft_limit(&self) {
        loop {
            // Created before the check, so a drain between the check and the wait still wakes.
            let drained = self.drained.notified();
            if self.unsent() < self.soft_limit {
                return;
            }
            drained.await;
        }
    }
}

impl Drop for Output {
    /// Replies still counted when the connection goes away leave the server-wide gauge with it.
    fn drop(&mut self) {
        let left = *self.unsent.get_mut();
        if left > 0 {
            self.shared.stats.output_sent(left);
        }
    }
}

/// What a run needs of its connection.
#[derive(Clone)]
struct RunContext {
    shared: Arc<Shared>,
    output: Arc<Output>,
}

/// What a run hands back to the connection.
struct RunOutput {
    replies: Vec<Reply>,
    /// Bytes of `replies` counted in the connection's [`Output`].
    counted: usize,
    /// The rest of a read run cut short to keep the output under the soft limit; it goes next,
    /// before any later run.
    rest: Option<RunFuture>,
    /// A reply would pass the hard output limit: the connection must close.
    over_hard_limit: bool,
    /// The run was an AUTH: how it went.
    auth: Option<AuthOutcome>,
}

impl RunOutput {
    fn complete(replies: Vec<Reply>) -> RunOutput {
        RunOutput {
            replies,
            counted: 0,
            rest: None,
            over_hard_limit: false,
            auth: None,
        }
    }
}

type RunFuture = BoxFuture<'static, RunOutput>;

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
            // The connection answers AUTH itself (`Connection::admit`); never a run's item.
            Action::Auth(_) => Item::Now(internal_error()),
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
        context: &RunContext,
        chain: &mut Chain,
        pending: &mut FuturesOrdered<RunFuture>,
    ) {
        let kind = item.kind();
        match self.kind {
            None => self.kind = Some(kind),
            Some(current) if current == kind || kind == Kind::Neutral => {}
            Some(Kind::Neutral) => self.kind = Some(kind),
            Some(_) => {
                self.seal(context, chain, pending);
                self.kind = Some(kind);
            }
        }
        self.items.push(item);
    }

    /// Turns the open run into a future and queues it.
    fn seal(
        &mut self,
        context: &RunContext,
        chain: &mut Chain,
        pending: &mut FuturesOrdered<RunFuture>,
    ) {
        let Some(kind) = self.kind.take() else {
            return;
        };
        let items = std::mem::take(&mut self.items);
        let shared = context.shared.clone();
        let run = match kind {
            Kind::Neutral => {
                async move { RunOutput::complete(neutral_run(&shared, items)) }.boxed()
            }
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
                write_run(shared, items, gate, started_tx, done_tx)
                    .map(RunOutput::complete)
                    .boxed()
            }
            Kind::Read => {
                let gate = chain.last.take().map(|signals| signals.done);
                let (done_tx, done) = oneshot::channel();
                chain.last = Some(Signals {
                    kind: Kind::Read,
                    started: None,
                    done,
                });
                read_run(context.clone(), items, gate, done_tx).boxed()
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
    context: RunContext,
    items: Vec<Item>,
    gate: Gate,
    done: oneshot::Sender<()>,
) -> RunOutput {
    pass(gate).await;
    let mut layout = VecDeque::with_capacity(items.len());
    let mut ops = VecDeque::new();
    for item in items {
        match item {
            Item::Read(op) => {
                ops.push_back(op);
                layout.push_back(None);
            }
            other => layout.push_back(Some(other)),
        }
    }
    read_chunk(ReadRun {
        context,
        layout,
        ops,
        done,
    })
    .await
}

/// A read run between two of its chunks.
struct ReadRun {
    context: RunContext,
    /// The run's requests not answered yet, in order; `None` is a read, whose op is next in
    /// `ops`.
    layout: VecDeque<Option<Item>>,
    ops: VecDeque<ReadOp>,
    done: oneshot::Sender<()>,
}

/// Serves the next reads of `run` under one barrier, as many as fit in the room left under the
/// connection's soft output limit (at least one), evaluated together on one view of the store.
/// Whatever does not fit is served by the run's next chunk, once the client has read this one:
/// a pipeline of large GETs costs one soft limit of memory, not all its replies at once.
fn read_chunk(mut run: ReadRun) -> RunFuture {
    async move {
        let output = run.context.output.clone();
        output.below_soft_limit().await;
        let room = output.soft_limit.saturating_sub(output.unsent()).max(1);
        let hard_limit = output.hard_limit;
        let shared = run.context.shared.clone();
        let ops = &run.ops;
        let read = shared
            .handle
            .read(|store| evaluate_reads(ops, store, room, hard_limit));
        let result = match tokio::time::timeout(shared.limits.request_timeout, read).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(error)) => Err(shared.error_reply(error)),
            Err(_) => Err(Reply::Error(READ_TIMED_OUT.to_owned())),
        };
        let chunk = match result {
            Ok(chunk) if chunk.over_hard_limit => {
                return RunOutput {
                    over_hard_limit: true,
                    ..RunOutput::complete(Vec::new())
                };
            }
            Ok(chunk) => chunk,
            Err(error) => {
                // Every read left gets the failure; the other requests their own replies.
                let replies = run
                    .layout
                    .drain(..)
                    .map(|slot| match slot {
                        None => error.clone(),
                        Some(item) => immediate_reply(&shared, item),
                    })
                    .collect();
                let _ = run.done.send(());
                return RunOutput::complete(replies);
            }
        };
        output.grew(chunk.bytes);
        run.ops.drain(..chunk.replies.len());
        let mut read_replies = chunk.replies.into_iter();
        let mut replies = Vec::with_capacity(read_replies.len());
        // Answer in order, up to the first read this chunk did not serve.
        while let Some(slot) = run.layout.pop_front() {
            match slot {
                Some(item) => replies.push(immediate_reply(&shared, item)),
                None => match read_replies.next() {
                    Some(reply) => replies.push(reply),
                    None => {
                        run.layout.push_front(None);
                        break;
                    }
                },
            }
        }
        let rest = if run.layout.is_empty() {
            let _ = run.done.send(());
            None
        } else {
            Some(read_chunk(run))
        };
        RunOutput {
            counted: chunk.bytes,
            rest,
            ..RunOutput::complete(replies)
        }
    }
    .boxed()
}

/// The replies of one chunk of reads.
struct ReadChunk {
    replies: Vec<Reply>,
    /// Their encoded size.
    bytes: usize,
    /// A reply alone would pass the hard output limit; nothing was copied for it.
    over_hard_limit: bool,
}

/// Evaluates `ops` in order until the replies fill `room` bytes (at least one is served). Each
/// reply's size is known before its value is copied, so a reply too large for the hard limit
/// costs no memory.
fn evaluate_reads(
    ops: &VecDeque<ReadOp>,
    store: &KvStore,
    room: usize,
    hard_limit: usize,
) -> ReadChunk {
    let mut chunk = ReadChunk {
        replies: Vec::new(),
        bytes: 0,
        over_hard_limit: false,
    };
    for op in ops {
        let size = command::read_reply_len(op, store);
        if size > hard_limit {
            chunk.over_hard_limit = true;
            break;
        }
        if !chunk.replies.is_empty() && chunk.bytes.saturating_add(size) > room {
            break;
        }
        chunk.replies.push(command::read_reply(op, store));
        chunk.bytes += size;
    }
    chunk
}

/// The reply of a request that needs no Raft (in a read run).
fn immediate_reply(shared: &Shared, item: Item) -> Reply {
    match item {
        Item::Now(reply) => reply,
        Item::Info => info(shared),
        Item::Write(..) | Item::Read(_) => internal_error(),
    }
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
pub(super) async fn refuse<S: AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_auths_after_the_third_wait_longer_and_longer() {
        let base = Duration::from_millis(100);
        let delays: Vec<u64> = (0..8)
            .map(|failures| auth_delay(base, failures).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 0, 100, 200, 400, 800, 1600]);
        assert_eq!(auth_delay(base, 40), AUTH_DELAY_MAX);
        assert_eq!(auth_delay(base, u32::MAX), AUTH_DELAY_MAX);
    }
}
