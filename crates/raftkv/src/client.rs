//! An async RESP2 client for a raftkv cluster.
//!
//! [`Client`] holds one connection at a time (a `Framed<TcpStream, RespClientCodec>`) to one of
//! the cluster's client ports and hides the cluster's routing replies:
//!
//! - `-MOVED 0 host:port` (a node that does not lead and does not forward): reconnect to the named
//!   address and send again, at most [`ClientConfig::max_redirects`] times per call;
//! - `-TRYAGAIN ...` (no leader, an election is under way): wait with a capped exponential backoff
//!   and send again, moving to the next node after three in a row (a node cut off from the others
//!   never learns of a leader);
//! - a connection that cannot be opened: try the next node, with the same backoff;
//! - `-UNCERTAIN ...` (the command reached a leader that lost leadership before it committed):
//!   returned as [`ClientError::Uncertain`]; only read-only commands are sent again.
//!
//! A command that is not read-only and whose connection fails or times out *after* it was sent is
//! also [`ClientError::Uncertain`]: it may or may not take effect, and sending it again could apply
//! it twice.
//!
//! Every await has its own timeout: [`ClientConfig::connect_timeout`] for opening a connection,
//! [`ClientConfig::request_timeout`] for writing a request and for each reply. Retries and
//! redirects happen within [`ClientConfig::deadline`] per call: no attempt starts after it, and the
//! last one may run on for its own timeouts, so a call ends within about
//! `deadline + request_timeout` (instead of cutting a sent write short, which would make it
//! uncertain for no reason).
//!
//! Error replies other than the routing ones (`-ERR ...`, `-WRONGTYPE ...`) become
//! [`ClientError::Server`], so an `Ok(Reply)` never holds a [`Reply::Error`].

use crate::resp::{Reply, RespClientCodec};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raftnet::tls::Stream;
use rustls_pki_types::ServerName;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

/// Timeouts, retry budget and limits of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest wait for one TCP connection to open.
    pub connect_timeout: Duration,
    /// Longest wait for one request to be written or for one reply to arrive.
    pub request_timeout: Duration,
    /// Budget of one call, retries and redirects included.
    pub deadline: Duration,
    /// Most `-MOVED` redirects one call follows.
    pub max_redirects: u32,
    /// First pause after a `-TRYAGAIN` or a failed connection; doubles on each retry.
    pub backoff_min: Duration,
    /// Longest pause between two retries.
    pub backoff_max: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(10),
            max_redirects: 5,
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
        }
    }
}

/// How a client protects its connections and proves who it is: TLS and credentials. The
/// default is neither.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS with this configuration (trusting the cluster's CA, see
    /// [`raftnet::tls::client_config`]); a node's certificate must name the address dialed.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Sent as `AUTH` on every new connection.
    pub credentials: Option<Credentials>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The TLS flags of every tool that talks to a node's client or admin port.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// TLS: the CA certificate the nodes' certificates chain to (turns TLS on).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// TLS: a client certificate to present (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the client certificate's key.
    #[arg(long, value_name = "FILE", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client configuration the flags ask for (`None`: plain TCP); reads the files.
    pub fn client_config(
        &self,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, raftnet::tls::TlsError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        Ok(Some(Arc::new(raftnet::tls::client_config(ca, identity)?)))
    }
}

/// The flags of every tool that talks to the client port: TLS and `AUTH`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    /// AUTH as this user [default: the `default` user].
    #[arg(long)]
    pub user: Option<String>,
    /// AUTH with this password.
    #[arg(long, env = "RAFTKV_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl SecurityArgs {
    /// What the flags ask for; reads the TLS files.
    pub fn security(&self) -> Result<Security, raftnet::tls::TlsError> {
        let tls = self.tls.client_config()?;
        let credentials = self.password.as_ref().map(|password| Credentials {
            user: self.user.clone(),
            password: password.clone(),
        });
        Ok(Security { tls, credentials })
    }
}

/// A user name (none: Redis's `default` user) and password, for `AUTH`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `AUTH` command carrying these credentials.
    fn auth_command(&self) -> Vec<&[u8]> {
        match &self.user {
            Some(user) => vec![b"AUTH", user.as_bytes(), self.password.as_bytes()],
            None => vec![b"AUTH", self.password.as_bytes()],
        }
    }
}

/// Why a call gave no reply.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    #[error("no node addresses given")]
    NoNodes,
    /// A write of this session (number in the error) has no answer yet: resolve it with
    /// [`Client::retry_unresolved`] before the next write.
    #[error("session write {0} is unresolved; retry it before the next write")]
    Unresolved(u64),
    #[error("no session: Client::with_session first")]
    NoSession,
    /// The server refused the credentials (or asked for some, and none were given), or the TLS
    /// handshake failed: retrying cannot help.
    #[error("refused: {0}")]
    Refused(String),
    /// An error reply that is not about routing, e.g. `ERR wrong number of arguments ...`.
    #[error("{0}")]
    Server(String),
    /// The command may or may not have taken effect: the server said `-UNCERTAIN`, or the
    /// connection failed or timed out after a command that is not read-only was sent.
    #[error("outcome unknown: {0}")]
    Uncertain(String),
    #[error("too many redirects ({hops}); the last one pointed to {addr}")]
    TooManyRedirects { hops: u32, addr: SocketAddr },
    #[error("cannot resolve node address {0:?} (expected host:port)")]
    BadAddress(String),
    #[error("malformed redirect: {0}")]
    BadRedirect(String),
    /// The deadline passed while no node could serve the call.
    #[error("no node could serve the request within {deadline:?} ({attempts} attempts); last error: {last}")]
    Unavailable {
        attempts: u32,
        deadline: Duration,
        last: String,
    },
    /// A well-formed reply of the wrong shape for a typed helper.
    #[error("unexpected reply to {command}: {reply:?}")]
    UnexpectedReply { command: String, reply: Reply },
}

impl ClientError {
    /// Whether the command may have taken effect although no reply said so.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, ClientError::Uncertain(_))
    }
}

/// A node's status as `INFO` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: Option<u64>,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
}

impl NodeInfo {
    /// Parses `INFO`'s `field:value` lines. Both `raft_term` and `term` spellings are accepted
    /// (likewise for the leader and the indexes); unknown lines are ignored.
    pub fn parse(text: &str) -> NodeInfo {
        let mut info = NodeInfo::default();
        for line in text.lines() {
            let Some((field, value)) = line.trim_end_matches('\r').split_once(':') else {
                continue;
            };
            let value = value.trim();
            let number = value.parse::<u64>().ok();
            match field.trim_start_matches("raft_") {
                "node_id" => info.node_id = number,
                "role" => info.role = value.to_owned(),
                "term" => info.term = number.unwrap_or(0),
                "leader_id" | "leader" => info.leader_id = number,
                "commit_index" => info.commit_index = number.unwrap_or(0),
                "applied_index" => info.applied_index = number.unwrap_or(0),
                _ => {}
            }
        }
        info
    }

    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// Consecutive `-TRYAGAIN`s from one node after which a call tries the next node.
const TRYAGAIN_PER_NODE: u32 = 3;

/// Commands the server only reads for: sending one again cannot change anything.
const READ_ONLY_COMMANDS: &[&[u8]] = &[
    b"get", b"mget", b"exists", b"dbsize", b"info", b"ping", b"echo", b"command", b"config",
    b"select", b"client",
];

/// Whether `words` names a command that is safe to send twice.
pub fn is_read_only<W: AsRef<[u8]>>(words: &[W]) -> bool {
    words.first().is_some_and(|name| {
        READ_ONLY_COMMANDS
            .iter()
            .any(|known| name.as_ref().eq_ignore_ascii_case(known))
    })
}

/// What the server meant by a reply.
enum Verdict {
    Final(Result<Reply, ClientError>),
    Moved(String),
    TryAgain(String),
    Uncertain(String),
}

fn judge(reply: Reply) -> Verdict {
    let Reply::Error(text) = reply else {
        return Verdict::Final(Ok(reply));
    };
    let code = text.split_whitespace().next().unwrap_or("");
    match code {
        "MOVED" => Verdict::Moved(text),
        "TRYAGAIN" => Verdict::TryAgain(text),
        "UNCERTAIN" => Verdict::Uncertain(text),
        _ => Verdict::Final(Err(ClientError::Server(text))),
    }
}

/// What to do with one request of a pipeline: `TryAgain` means send it again, `Uncertain` that it
/// is final with an unknown outcome.
fn pipeline_verdict(outcome: Result<Reply, Failure>, read_only: bool) -> Verdict {
    match outcome {
        Ok(reply) => match judge(reply) {
            Verdict::Uncertain(text) if read_only => Verdict::TryAgain(text),
            verdict => verdict,
        },
        Err(Failure::Connect(error)) => Verdict::TryAgain(error),
        Err(Failure::Lost(error)) if read_only => Verdict::TryAgain(error),
        Err(Failure::Lost(error)) => Verdict::Uncertain(error),
        Err(Failure::Refused(error)) => Verdict::Final(Err(ClientError::Refused(error))),
    }
}

/// The address in `MOVED <slot> <host:port>`.
async fn redirect_target(text: &str) -> Result<SocketAddr, ClientError> {
    let target = text
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| ClientError::BadRedirect(text.to_owned()))?;
    if let Ok(addr) = target.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(target)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::BadRedirect(text.to_owned()))
}

type Connection = Framed<Stream, RespClientCodec>;

/// Why one attempt on a connection failed.
enum Failure {
    /// The connection could not be opened: nothing was sent.
    Connect(String),
    /// The connection was refused for good: bad credentials or a failed TLS handshake.
    Refused(String),
    /// The connection failed or timed out once the request may have been sent.
    Lost(String),
}

/// Pause schedule between retries: doubles from `min` up to `max`.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &ClientConfig) -> Backoff {
        Backoff {
            next: config.backoff_min,
            max: config.backoff_max,
        }
    }

    /// Sleeps for the next pause, never past `deadline`.
    async fn pause(&mut self, deadline: Instant) {
        let wake = (Instant::now() + self.next).min(deadline);
        tokio::time::sleep_until(wake).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// A RESP client for a raftkv cluster; see the module documentation.
pub struct Client {
    nodes: Vec<SocketAddr>,
    config: ClientConfig,
    security: Security,
    /// Where the next connection goes: a node of `nodes`, or where a redirect pointed.
    target: SocketAddr,
    /// Index in `nodes` of the node tried after `target` fails.
    next_node: usize,
    conn: Option<Connection>,
    /// With [`Client::with_session`]: the session's numbering.
    session: Option<Session>,
    /// Sends again after an unknown outcome during the last [`Client::send`].
    uncertain_resends: u64,
}

/// A client's session: its id, the last number used and the write whose outcome is unknown.
#[derive(Debug, Clone)]
struct Session {
    client: u64,
    seq: u64,
    unresolved: Option<(u64, Vec<Vec<u8>>)>,
    /// Numbered writes sent again after an unknown outcome (a lost connection, `-UNCERTAIN`).
    resent: u64,
}

/// A random 64-bit session id from the kernel's random source.
pub fn fresh_session_id() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    crate::auth::random_bytes(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(bytes))
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.nodes)
            .field("target", &self.target)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Client {
    /// A client that connects on first use.
    pub fn new(nodes: Vec<SocketAddr>, config: ClientConfig) -> Result<Client, ClientError> {
        let target = *nodes.first().ok_or(ClientError::NoNodes)?;
        Ok(Client {
            next_node: 1 % nodes.len(),
            nodes,
            config,
            security: Security::default(),
            target,
            conn: None,
            session: None,
            uncertain_resends: 0,
        })
    }

    /// Uses TLS and credentials as `security` says on every connection opened from now on.
    pub fn with_security(mut self, security: Security) -> Client {
        self.security = security;
        self.conn = None;
        self
    }

    /// Connects to the first node of `nodes` that accepts, with the default configuration.
    pub async fn connect(nodes: Vec<SocketAddr>) -> Result<Client, ClientError> {
        Client::connect_with(nodes, ClientConfig::default()).await
    }

    /// Connects to the first node of `nodes` that accepts within `config.deadline`.
    pub async fn connect_with(
        nodes: Vec<SocketAddr>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        Client::connect_secure(nodes, config, Security::default()).await
    }

    /// [`Client::connect_with`], with TLS and credentials.
    pub async fn connect_secure(
        nodes: Vec<SocketAddr>,
        config: ClientConfig,
        security: Security,
    ) -> Result<Client, ClientError> {
        let mut client = Client::new(nodes, config)?.with_security(security);
        let deadline = Instant::now() + config.deadline;
        let mut backoff = Backoff::new(&config);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.connection(deadline).await {
                Ok(_) => return Ok(client),
                Err(Failure::Refused(error)) => return Err(ClientError::Refused(error)),
                Err(Failure::Connect(error) | Failure::Lost(error)) => {
                    if Instant::now() >= deadline {
                        return Err(client.unavailable(attempts, error));
                    }
                    backoff.pause(deadline).await;
                }
            }
        }
    }

    /// The configured node addresses.
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    /// The address the client is connected to, or will connect to next.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Closes the connection; the next call opens a new one.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Sends one command and returns its reply, following redirects and retrying as the module
    /// documentation describes. With a session ([`Client::with_session`]) a write is numbered and
    /// sent again, with its number, until it has an answer: it takes effect once.
    pub async fn cmd(&mut self, words: &[&[u8]]) -> Result<Reply, ClientError> {
        if is_read_only(words) || self.session.is_none() {
            return self.send(words, is_read_only(words)).await;
        }
        let session = self.session.as_mut().expect("checked above");
        if let Some((seq, _)) = &session.unresolved {
            return Err(ClientError::Unresolved(*seq));
        }
        session.seq += 1;
        let seq = session.seq;
        self.send_numbered(seq, words.iter().map(|w| w.to_vec()).collect())
            .await
    }

    /// Sends the session's write whose outcome is still unknown again, with its number: its
    /// reply, or `Ok(None)` when no write is unresolved.
    pub async fn retry_unresolved(&mut self) -> Result<Option<Reply>, ClientError> {
        let Some((seq, words)) = self.session.as_ref().and_then(|s| s.unresolved.clone()) else {
            return Ok(None);
        };
        self.send_numbered(seq, words).await.map(Some)
    }

    /// Numbers this client's writes in a session (Raft thesis §6.3; see [`crate::session`]):
    /// a write is sent as `SESSION <client> <seq> ...` and, since the cluster applies each
    /// number once, sent again after a lost connection or `-UNCERTAIN` until it has an answer.
    /// A write still unanswered at the deadline is [`ClientError::Uncertain`] and stays
    /// unresolved: [`Client::retry_unresolved`] sends it again; other writes wait for it
    /// ([`ClientError::Unresolved`]). `client` must be unique to this client
    /// ([`fresh_session_id`]). Pipelines are sent as they are.
    pub fn with_session(mut self, client: u64) -> Client {
        self.session = Some(Session {
            client,
            seq: 0,
            unresolved: None,
            resent: 0,
        });
        self
    }

    /// How many times this client's numbered writes were sent again after an unknown outcome.
    pub fn session_resends(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.resent)
    }

    /// Sends write `seq` of the session, retrying while its outcome is unknown; records it as
    /// unresolved if it still is at the deadline.
    async fn send_numbered(&mut self, seq: u64, words: Vec<Vec<u8>>) -> Result<Reply, ClientError> {
        let client = match &self.session {
            Some(session) => session.client.to_string(),
            None => return Err(ClientError::NoSession),
        };
        let seq_text = seq.to_string();
        let mut numbered: Vec<&[u8]> = vec![b"SESSION", client.as_bytes(), seq_text.as_bytes()];
        numbered.extend(words.iter().map(Vec::as_slice));
        self.uncertain_resends = 0;
        let result = self.send(&numbered, true).await;
        let resends = self.uncertain_resends;
        if let Some(session) = self.session.as_mut() {
            session.resent += resends;
            session.unresolved = match &result {
                Err(error)
                    if error.is_uncertain() || matches!(error, ClientError::Unavailable { .. }) =>
                {
                    Some((seq, words))
                }
                _ => None,
            };
        }
        result
    }

    /// One command: `idempotent` ones (reads, numbered writes) are sent again after a lost
    /// connection or `-UNCERTAIN`; others are then [`ClientError::Uncertain`].
    async fn send(&mut self, words: &[&[u8]], idempotent: bool) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.config.deadline;
        let mut backoff = Backoff::new(&self.config);
        let (mut attempts, mut hops, mut refusals) = (0, 0, 0);
        let mut last = String::new();
        loop {
            // Never send with no time left for the reply: a write would only become uncertain.
            if attempts > 0 && Instant::now() >= deadline {
                return Err(self.unavailable(attempts, last));
            }
            attempts += 1;
            last = match self.attempt(words, deadline).await {
                Ok(reply) => match judge(reply) {
                    Verdict::Final(result) => return result,
                    Verdict::Moved(text) => {
                        self.follow(&text, &mut hops).await?;
                        continue;
                    }
                    Verdict::TryAgain(text) => {
                        refusals += 1;
                        if refusals % TRYAGAIN_PER_NODE == 0 {
                            // A node cut off from the others never learns of a leader.
                            self.switch_node();
                        }
                        text
                    }
                    Verdict::Uncertain(text) if idempotent => {
                        self.uncertain_resends += 1;
                        text
                    }
                    Verdict::Uncertain(text) => return Err(ClientError::Uncertain(text)),
                },
                Err(Failure::Connect(error)) => error,
                Err(Failure::Lost(error)) if idempotent => {
                    self.uncertain_resends += 1;
                    error
                }
                Err(Failure::Lost(error)) => return Err(ClientError::Uncertain(error)),
                Err(Failure::Refused(error)) => return Err(ClientError::Refused(error)),
            };
            backoff.pause(deadline).await;
        }
    }

    /// Sends every request before reading any reply (pipelining), and returns one result per
    /// request, in order.
    ///
    /// Requests refused unexecuted (`-MOVED`, `-TRYAGAIN`) and read-only requests whose
    /// connection failed are sent again, in their original relative order, in a later round on
    /// the new connection: when the order *between* the writes of one pipeline matters, check
    /// the results. Writes whose connection failed after sending are
    /// [`ClientError::Uncertain`]. All rounds share one [`ClientConfig::deadline`].
    pub async fn pipeline<R, W>(&mut self, requests: &[R]) -> Vec<Result<Reply, ClientError>>
    where
        R: AsRef<[W]>,
        W: AsRef<[u8]>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let mut results: Vec<Option<Result<Reply, ClientError>>> =
            requests.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut backoff = Backoff::new(&self.config);
        let (mut attempts, mut hops) = (0, 0);
        while !pending.is_empty() {
            attempts += 1;
            let round = self.pipeline_round(requests, &pending, deadline).await;
            let mut retry = Vec::new();
            let mut moved = None;
            let mut last = String::new();
            for (index, outcome) in pending.iter().copied().zip(round) {
                match pipeline_verdict(outcome, is_read_only(requests[index].as_ref())) {
                    Verdict::Final(result) => results[index] = Some(result),
                    Verdict::Moved(text) => {
                        moved = Some(text);
                        retry.push(index);
                    }
                    Verdict::TryAgain(text) => {
                        last = text;
                        retry.push(index);
                    }
                    Verdict::Uncertain(text) => {
                        results[index] = Some(Err(ClientError::Uncertain(text)));
                    }
                }
            }
            pending = retry;
            if pending.is_empty() {
                break;
            }
            let stop = match moved {
                Some(text) => self.follow(&text, &mut hops).await.err(),
                None => {
                    backoff.pause(deadline).await;
                    None
                }
            };
            // Never send with no time left for the replies.
            let stop = stop
                .or_else(|| (Instant::now() >= deadline).then(|| self.unavailable(attempts, last)));
            if let Some(error) = stop {
                for &index in &pending {
                    results[index] = Some(Err(error.clone()));
                }
                break;
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every request has a result once no request is pending"))
            .collect()
    }

    /// Sends `requests[pending]` and reads their replies; one outcome per pending request.
    async fn pipeline_round<R, W>(
        &mut self,
        requests: &[R],
        pending: &[usize],
        deadline: Instant,
    ) -> Vec<Result<Reply, Failure>>
    where
        R: AsRef<[W]>,
        W: AsRef<[u8]>,
    {
        let request_timeout = self.config.request_timeout;
        let target = self.target;
        let conn = match self.connection(deadline).await {
            Ok(conn) => conn,
            Err(failure) => {
                let refused = matches!(failure, Failure::Refused(_));
                let text = match failure {
                    Failure::Connect(text) | Failure::Lost(text) | Failure::Refused(text) => text,
                };
                return pending
                    .iter()
                    .map(|_| {
                        Err(if refused {
                            Failure::Refused(text.clone())
                        } else {
                            Failure::Connect(text.clone())
                        })
                    })
                    .collect();
            }
        };
        let mut outcomes = Vec::with_capacity(pending.len());
        let sent = async {
            for &index in pending {
                conn.feed(requests[index].as_ref()).await?;
            }
            SinkExt::<&[W]>::flush(conn).await
        };
        let mut failed = match timeout(request_timeout, sent).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("sending to {target}: {error}")),
            Err(_) => Some(format!("sending to {target}: timed out")),
        };
        if failed.is_none() {
            for _ in pending {
                match read_reply(conn, request_timeout).await {
                    Ok(reply) => outcomes.push(Ok(reply)),
                    Err(error) => {
                        failed = Some(format!("{target}: {error}"));
                        break;
                    }
                }
            }
        }
        if let Some(text) = failed {
            self.lose_connection();
            outcomes.resize_with(pending.len(), || Err(Failure::Lost(text.clone())));
        }
        outcomes
    }

    /// One send and one reply on the current connection, opening it first if needed.
    async fn attempt(&mut self, words: &[&[u8]], deadline: Instant) -> Result<Reply, Failure> {
        let request_timeout = self.config.request_timeout;
        let target = self.target;
        let conn = self.connection(deadline).await?;
        let result = match timeout(request_timeout, conn.send(words)).await {
            Ok(Ok(())) => read_reply(conn, request_timeout).await,
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out sending".to_owned()),
        };
        result.map_err(|error| {
            self.lose_connection();
            Failure::Lost(format!("{target}: {error}"))
        })
    }

    /// The open connection, or a new one to `target`. A connection that cannot be opened moves
    /// `target` to the next node.
    async fn connection(&mut self, deadline: Instant) -> Result<&mut Connection, Failure> {
        if self.conn.is_none() {
            let target = self.target;
            let limit = deadline.min(Instant::now() + self.config.connect_timeout);
            let stream = match timeout_at(limit, TcpStream::connect(target)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(self.connect_failed(format!("{error}"))),
                Err(_) => return Err(self.connect_failed("timed out".to_owned())),
            };
            // Requests are small and latency-bound; Nagle would only add delay.
            let _ = stream.set_nodelay(true);
            let stream = match &self.security.tls {
                None => Stream::Plain(stream),
                Some(tls) => {
                    let name = ServerName::IpAddress(target.ip().into());
                    let handshake = TlsConnector::from(tls.clone()).connect(name, stream);
                    match timeout_at(limit, handshake).await {
                        Ok(Ok(stream)) => Stream::Dialed(Box::new(stream)),
                        Ok(Err(error)) => {
                            return Err(Failure::Refused(format!(
                                "TLS handshake with {target}: {error}"
                            )))
                        }
                        Err(_) => return Err(self.connect_failed("TLS handshake timed out".into())),
                    }
                }
            };
            let mut conn = Framed::new(stream, RespClientCodec::default());
            if let Some(credentials) = &self.security.credentials {
                let request_timeout = self.config.request_timeout;
                let auth = credentials.auth_command();
                let sent = timeout(request_timeout, conn.send(&auth[..]));
                let reply = match sent.await {
                    Ok(Ok(())) => read_reply(&mut conn, request_timeout).await,
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("timed out sending AUTH".to_owned()),
                };
                match reply {
                    Ok(Reply::Error(text)) => {
                        return Err(Failure::Refused(format!("AUTH at {target}: {text}")))
                    }
                    Ok(_) => {}
                    Err(error) => return Err(self.connect_failed(error)),
                }
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected just above"))
    }

    fn connect_failed(&mut self, error: String) -> Failure {
        let failed = self.target;
        self.advance();
        Failure::Connect(format!("connecting to {failed}: {error}"))
    }

    /// Drops a connection whose state is unknown and moves on to the next node, since the one
    /// that failed may be down.
    fn lose_connection(&mut self) {
        self.conn = None;
        self.advance();
    }

    /// Moves on to the next node, if there is another.
    fn switch_node(&mut self) {
        if self.nodes.len() > 1 {
            self.lose_connection();
        }
    }

    fn advance(&mut self) {
        self.target = self.nodes[self.next_node];
        self.next_node = (self.next_node + 1) % self.nodes.len();
    }

    /// Points the client at the address of a `-MOVED` reply.
    async fn follow(&mut self, text: &str, hops: &mut u32) -> Result<(), ClientError> {
        let addr = redirect_target(text).await?;
        *hops += 1;
        if *hops > self.config.max_redirects {
            return Err(ClientError::TooManyRedirects { hops: *hops, addr });
        }
        if addr != self.target || self.conn.is_none() {
            self.conn = None;
            self.target = addr;
        }
        Ok(())
    }

    fn unavailable(&self, attempts: u32, last: String) -> ClientError {
        ClientError::Unavailable {
            attempts,
            deadline: self.config.deadline,
            last,
        }
    }

    // Typed helpers.

    /// `GET key`: the value, or `None` if the key is absent.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        match self.cmd(&[b"GET", key]).await? {
            Reply::Bulk(value) => Ok(value),
            other => Err(unexpected("GET", other)),
        }
    }

    /// `SET key value`.
    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        match self.cmd(&[b"SET", key, value]).await? {
            Reply::Simple(text) if text == "OK" => Ok(()),
            other => Err(unexpected("SET", other)),
        }
    }

    /// `DEL key...`: how many of the keys existed.
    pub async fn del(&mut self, keys: &[&[u8]]) -> Result<i64, ClientError> {
        let mut words: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        words.push(b"DEL");
        words.extend_from_slice(keys);
        self.integer("DEL", &words).await
    }

    /// `INCR key`: the new value.
    pub async fn incr(&mut self, key: &[u8]) -> Result<i64, ClientError> {
        self.integer("INCR", &[b"INCR", key]).await
    }

    /// `INCRBY key by`: the new value.
    pub async fn incr_by(&mut self, key: &[u8], by: i64) -> Result<i64, ClientError> {
        let by = by.to_string();
        self.integer("INCRBY", &[b"INCRBY", key, by.as_bytes()])
            .await
    }

    /// `CAS key expected new`: whether the value was swapped.
    pub async fn cas(
        &mut self,
        key: &[u8],
        expected: &[u8],
        new: &[u8],
    ) -> Result<bool, ClientError> {
        Ok(self.integer("CAS", &[b"CAS", key, expected, new]).await? == 1)
    }

    /// `SETNX key value`: whether the key was absent and is now set.
    pub async fn setnx(&mut self, key: &[u8], value: &[u8]) -> Result<bool, ClientError> {
        Ok(self.integer("SETNX", &[b"SETNX", key, value]).await? == 1)
    }

    /// `PING`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        match self.cmd(&[b"PING"]).await? {
            Reply::Simple(text) if text == "PONG" => Ok(()),
            other => Err(unexpected("PING", other)),
        }
    }

    /// `INFO` of the node this client is connected to.
    pub async fn info(&mut self) -> Result<NodeInfo, ClientError> {
        match self.cmd(&[b"INFO"]).await? {
            Reply::Bulk(Some(text)) => Ok(NodeInfo::parse(&String::from_utf8_lossy(&text))),
            other => Err(unexpected("INFO", other)),
        }
    }

    async fn integer(&mut self, name: &str, words: &[&[u8]]) -> Result<i64, ClientError> {
        match self.cmd(words).await? {
            Reply::Integer(n) => Ok(n),
            other => Err(unexpected(name, other)),
        }
    }
}

/// Reads one reply within `request_timeout`.
async fn read_reply(conn: &mut Connection, request_timeout: Duration) -> Result<Reply, String> {
    match timeout(request_timeout, conn.next()).await {
        Ok(Some(Ok(reply))) => Ok(reply),
        Ok(Some(Err(error))) => Err(error.to_string()),
        Ok(None) => Err("connection closed by the server".to_owned()),
        Err(_) => Err(format!("no reply within {request_timeout:?}")),
    }
}

fn unexpected(command: &str, reply: Reply) -> ClientError {
    ClientError::UnexpectedReply {
        command: command.to_owned(),
        reply,
    }
}

/// Resolves `host:port` words (`127.0.0.1:6379`, `localhost:6379`) to addresses, keeping the
/// first address of each and the given order.
pub async fn resolve_nodes(nodes: &[String]) -> Result<Vec<SocketAddr>, ClientError> {
    let mut addrs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let node = node.trim();
        if node.is_empty() {
            continue;
        }
        let addr = match node.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => tokio::net::lookup_host(node)
                .await
                .ok()
                .and_then(|mut found| found.next())
                .ok_or_else(|| ClientError::BadAddress(node.to_owned()))?,
        };
        addrs.push(addr);
    }
    if addrs.is_empty() {
        return Err(ClientError::NoNodes);
    }
    Ok(addrs)
}

/// Renders a reply the way `redis-cli` does: `OK`, `"value"`, `(nil)`, `(integer) 1`,
/// `(error) ERR ...`, numbered lines for arrays.
pub fn format_reply(reply: &Reply) -> String {
    let mut out = String::new();
    format_into(reply, "", &mut out);
    out
}

fn format_into(reply: &Reply, indent: &str, out: &mut String) {
    match reply {
        Reply::Simple(text) => out.push_str(text),
        Reply::Error(text) => {
            out.push_str("(error) ");
            out.push_str(text);
        }
        Reply::Integer(n) => out.push_str(&format!("(integer) {n}")),
        Reply::Bulk(None) | Reply::Array(None) => out.push_str("(nil)"),
        Reply::Bulk(Some(data)) => out.push_str(&quote(data)),
        Reply::Array(Some(items)) if items.is_empty() => out.push_str("(empty array)"),
        Reply::Array(Some(items)) => {
            let width = items.len().to_string().len();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                    out.push_str(indent);
                }
                let label = format!("{:>width$}) ", i + 1);
                out.push_str(&label);
                let inner = format!("{indent}{}", " ".repeat(label.len()));
                format_into(item, &inner, out);
            }
        }
    }
}

/// Quotes bytes like `redis-cli`: printable ASCII as is, `\"` and `\\` escaped, `\n \r \t \a \b`
/// by name and anything else as `\xHH`.
pub fn quote(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() + 2);
    out.push('"');
    for &byte in data {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(char::from(byte)),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parses_the_servers_field_names() {
        let text = "# Server\r\nraftkv_version:0.1.0\r\nnode_id:2\r\n\r\n# Replication\r\n\
                    role:leader\r\nraft_term:7\r\nraft_leader_id:2\r\nraft_commit_index:40\r\n\
                    raft_applied_index:39\r\n";
        let info = NodeInfo::parse(text);
        assert_eq!(
            info,
            NodeInfo {
                node_id: Some(2),
                role: "leader".into(),
                term: 7,
                leader_id: Some(2),
                commit_index: 40,
                applied_index: 39,
            }
        );
        assert!(info.is_leader());
        let info = NodeInfo::parse("role:candidate\r\nterm:3\r\nleader_id:none\r\n");
        assert_eq!((info.term, info.leader_id), (3, None));
    }

    #[test]
    fn read_only_commands_are_recognised_in_any_case() {
        assert!(is_read_only(&[b"get".as_slice(), b"k"]));
        assert!(is_read_only(&[b"INFO".as_slice()]));
        assert!(!is_read_only(&[b"SET".as_slice(), b"k", b"v"]));
        assert!(!is_read_only(&[b"Incr".as_slice(), b"k"]));
        assert!(!is_read_only::<&[u8]>(&[]));
    }

    #[test]
    fn replies_render_like_redis_cli() {
        assert_eq!(format_reply(&Reply::ok()), "OK");
        assert_eq!(format_reply(&Reply::null()), "(nil)");
        assert_eq!(format_reply(&Reply::Integer(-3)), "(integer) -3");
        assert_eq!(format_reply(&Reply::bulk("a\"b\n\x01")), r#""a\"b\n\x01""#);
        assert_eq!(
            format_reply(&Reply::Error("ERR nope".into())),
            "(error) ERR nope"
        );
        let array = Reply::array(vec![Reply::bulk("x"), Reply::null()]);
        assert_eq!(format_reply(&array), "1) \"x\"\n2) (nil)");
        assert_eq!(format_reply(&Reply::array(vec![])), "(empty array)");
    }
}
