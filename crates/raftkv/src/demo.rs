//! `raftkv demo`: a local 3-node cluster survives losing its leader, grows by a node and
//! shrinks by one, and nothing acknowledged is lost.
//!
//! The demo runs `raftkv serve` three times as child processes ([`LocalCluster`]), each with a
//! durable data directory under one fresh directory and ports picked free on loopback, and then:
//!
//! 1. waits for a leader (polling `INFO`);
//! 2. runs a workload of `SET`s and linearizable `GET`s from several clients, each client owning
//!    its own keys, and records every acknowledged write;
//! 3. kills the leader with SIGKILL while the workload goes on, and waits for a new leader in a
//!    higher term (reporting how long the failover and the pause in writes took);
//! 4. restarts the old leader from its data directory and waits until it has applied everything
//!    the leader had committed when it came back;
//! 5. starts a 4th node with `--join`, adds it as a voter through the admin API (`POST
//!    /cluster/voters`: the leader catches it up, then adds it) and waits until it has applied
//!    what the leader had committed;
//! 6. removes the old leader from the cluster (`POST /cluster/remove`) and stops it;
//! 7. stops the workload (it ran through steps 3 to 6), reads every key from every remaining
//!    member and checks it against the acknowledged writes;
//! 8. prints a summary, stops the nodes with SIGTERM (SIGKILL after a grace period) and removes
//!    the temporary directory, unless `--keep` was given or something failed (then the node logs
//!    in it explain what happened).
//!
//! What counts as correct: a key must hold its last acknowledged value, or the value of one of
//! the key's writes whose outcome is unknown (`-UNCERTAIN`, or a connection lost or timed out
//! after sending). Such a write may take effect at any time after it was sent, even after a later
//! acknowledged write, so any of them is allowed. Reads during the workload are checked the same
//! way: a read that returns something else is stale, and a failure.

use crate::admin_client::{self, AdminAccess, AdminClientError, ClusterRequest, ClusterView};
use crate::client::{Client, ClientConfig, ClientError, Credentials, NodeInfo, Security};
use crate::resp::Reply;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tempfile::TempDir;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

// ---------------------------------------------------------------------------------------------
// A local cluster of child processes.

/// How to start a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Directory for the nodes' data and logs; it must be empty or absent. `None`: a new
    /// temporary directory, removed when the cluster is dropped unless [`LocalCluster::keep`].
    pub dir: Option<PathBuf>,
    /// The `raftkv` executable to run `serve` with; `None`: this process's own executable.
    pub server_bin: Option<PathBuf>,
    /// Longest wait for a node's ready line.
    pub ready_timeout: Duration,
    /// Extra arguments for every `serve`.
    pub extra_args: Vec<String>,
    /// Plain TCP and no credentials, or everything secured.
    pub protection: Protection,
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        LocalClusterOptions {
            nodes: 3,
            dir: None,
            server_bin: None,
            ready_timeout: Duration::from_secs(20),
            extra_args: Vec::new(),
            protection: Protection::Plain,
        }
    }
}

/// How a [`LocalCluster`]'s ports are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    /// Plain TCP, no users, no admin token (fine on loopback, for tests and benchmarks).
    #[default]
    Plain,
    /// What a deployment runs: mutual TLS between the nodes (a development CA made by
    /// `raftkv certs init` in the cluster's directory), TLS and users on the client port
    /// (`writer`: read-write; `operator`: admin, for `INFO`), TLS and a token on the admin
    /// port. The passwords and the token are drawn at random when the cluster starts.
    Secure,
}

/// The credentials of a [`Protection::Secure`] cluster, for its clients.
#[derive(Clone)]
struct Secrets {
    tls: Arc<rustls::ClientConfig>,
    writer: Credentials,
    operator: Credentials,
    admin_token: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets")
    }
}

/// Node certificates are made up front for every id a local cluster can have, so nodes added
/// later find theirs.
fn secure(dir: &Path) -> Result<(Secrets, PathBuf), ClusterError> {
    let certs = dir.join("certs");
    let setup = |what: &str, reason: String| ClusterError::Security(format!("{what}: {reason}"));
    crate::certs::init(&crate::certs::CertsInitArgs {
        dir: certs.clone(),
        nodes: (1..=MAX_LOCAL_NODES as u64).collect(),
        hosts: Vec::new(),
        force: false,
    })
    .map_err(|e| setup("certificates", e.to_string()))?;
    let secret = || crate::auth::new_admin_token().map_err(|e| setup("random", e.to_string()));
    let (writer, operator, admin_token) = (secret()?, secret()?, secret()?);
    let hash = |password: &str| {
        crate::auth::hash_password(password.as_bytes()).map_err(|e| setup("hash", e.to_string()))
    };
    let config = format!(
        "# Written by raftkv's LocalCluster: TLS everywhere, two users, an admin token.\n\
         admin_token_hash = \"{token}\"\n\n\
         [tls]\ndir = \"{certs}\"\n\n\
         [[users]]\nname = \"writer\"\npassword_hash = \"{writer_hash}\"\nrole = \"read-write\"\nkeys = [\"*\"]\n\n\
         [[users]]\nname = \"operator\"\npassword_hash = \"{operator_hash}\"\nrole = \"admin\"\nkeys = [\"*\"]\n",
        token = crate::auth::AdminTokenHash::of(&admin_token).to_config_string(),
        certs = certs.display(),
        writer_hash = hash(&writer)?,
        operator_hash = hash(&operator)?,
    );
    let config_path = dir.join("security.toml");
    std::fs::write(&config_path, config).map_err(|source| ClusterError::Io {
        path: config_path.clone(),
        source,
    })?;
    let tls = raftnet::tls::client_config(&certs.join("ca.pem"), None)
        .map_err(|e| setup("TLS", e.to_string()))?;
    let credentials = |user: &str, password: String| Credentials {
        user: Some(user.to_owned()),
        password,
    };
    let secrets = Secrets {
        tls: Arc::new(tls),
        writer: credentials("writer", writer),
        operator: credentials("operator", operator),
        admin_token,
    };
    Ok((secrets, config_path))
}

/// Why a local cluster could not be started or driven.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot find the raftkv executable to run `serve` with: {0}")]
    Executable(io::Error),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not empty; the cluster needs a fresh directory", .0.display())]
    NotFresh(PathBuf),
    #[error("cannot pick free loopback ports: {0}")]
    Ports(io::Error),
    #[error("a cluster needs 1 to {MAX_LOCAL_NODES} nodes, not {0}")]
    NodeCount(usize),
    #[error("cannot start node {id} ({}): {source}", .bin.display())]
    Spawn {
        id: u64,
        bin: PathBuf,
        source: io::Error,
    },
    #[error("node {id} printed no ready line within {timeout:?}{log}")]
    NotReady {
        id: u64,
        timeout: Duration,
        log: String,
    },
    #[error("node {id} exited before it was ready ({status}){log}")]
    Exited {
        id: u64,
        status: String,
        log: String,
    },
    #[error("no leader within {timeout:?} ({last})")]
    NoLeader { timeout: Duration, last: String },
    #[error("cannot set up the cluster's security: {0}")]
    Security(String),
}

/// Most nodes a [`LocalCluster`] starts: a demo or benchmark, not a deployment.
pub const MAX_LOCAL_NODES: usize = 9;
/// Lines of a node's log quoted in an error.
const LOG_TAIL_LINES: usize = 15;

/// One `raftkv serve` child process and where it listens.
#[derive(Debug)]
pub struct LocalNode {
    /// Raft node id, `1..=n`, then `n + 1`, ... for nodes added with
    /// [`LocalCluster::add_node`].
    pub id: u64,
    pub raft_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Started with `--join` (added to the running cluster) rather than as an initial voter.
    pub joined: bool,
    /// The nodes (ids) its `--node` list names, fixed when it first starts: an initial voter
    /// restarts with the initial members, never with members added since.
    pub listed: Vec<u64>,
    /// Arguments for its `serve` in place of the cluster's `extra_args` (`None`: those).
    pub extra_args: Option<Vec<String>>,
    /// The node's stdout and stderr, appended across restarts.
    pub log_path: PathBuf,
    child: Option<Child>,
}

/// How a node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Exited on SIGTERM within the grace period; `true` if with status 0.
    Graceful(bool),
    /// Needed SIGKILL.
    Killed,
    NotRunning,
}

/// A cluster of `raftkv serve` child processes on loopback, for the demo, benchmarks and tests.
/// Dropping it kills every node still running (and removes a temporary directory).
#[derive(Debug)]
pub struct LocalCluster {
    server_bin: PathBuf,
    cluster_id: u64,
    extra_args: Vec<String>,
    ready_timeout: Duration,
    dir: PathBuf,
    temp: Option<TempDir>,
    nodes: Vec<LocalNode>,
    /// With [`Protection::Secure`]: what clients need, and the config file every node reads.
    secrets: Option<(Secrets, PathBuf)>,
}

impl LocalCluster {
    /// Creates the directories, picks ports and starts every node, returning once each has
    /// printed its ready line.
    pub async fn start(options: LocalClusterOptions) -> Result<LocalCluster, ClusterError> {
        if options.nodes == 0 || options.nodes > MAX_LOCAL_NODES {
            return Err(ClusterError::NodeCount(options.nodes));
        }
        let server_bin = match options.server_bin {
            Some(bin) => bin,
            None => std::env::current_exe().map_err(ClusterError::Executable)?,
        };
        let (dir, temp) = fresh_dir(options.dir)?;
        let secrets = match options.protection {
            Protection::Plain => None,
            Protection::Secure => Some(secure(&dir)?),
        };
        let ports = free_ports(options.nodes * 3).map_err(ClusterError::Ports)?;
        let initial: Vec<u64> = (1..=options.nodes as u64).collect();
        let nodes = (0..options.nodes)
            .map(|index| {
                let id = index as u64 + 1;
                LocalNode::new(
                    &dir,
                    id,
                    &ports[3 * index..3 * index + 3],
                    false,
                    initial.clone(),
                )
            })
            .collect();
        let mut cluster = LocalCluster {
            server_bin,
            cluster_id: u64::from(std::process::id()) << 16 | u64::from(fastrand::u16(..)),
            extra_args: options.extra_args,
            ready_timeout: options.ready_timeout,
            dir,
            temp,
            nodes,
            secrets,
        };
        let mut waiting = Vec::new();
        for index in 0..cluster.nodes.len() {
            waiting.push(cluster.spawn(index)?);
        }
        for (index, ready) in waiting.into_iter().enumerate() {
            cluster.wait_ready(index, ready).await?;
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    /// The directory holding every node's data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// TLS and the read-write user's credentials, for a workload's clients (nothing for a
    /// plain cluster).
    pub fn client_security(&self) -> Security {
        self.security_of(|secrets| &secrets.writer)
    }

    /// TLS and the admin user's credentials (for `INFO`).
    pub fn operator_security(&self) -> Security {
        self.security_of(|secrets| &secrets.operator)
    }

    fn security_of(&self, user: impl Fn(&Secrets) -> &Credentials) -> Security {
        match &self.secrets {
            None => Security::default(),
            Some((secrets, _)) => Security {
                tls: Some(secrets.tls.clone()),
                credentials: Some(user(secrets).clone()),
            },
        }
    }

    /// TLS and the token for the admin ports.
    pub fn admin_access(&self) -> AdminAccess {
        match &self.secrets {
            None => AdminAccess::default(),
            Some((secrets, _)) => AdminAccess {
                tls: Some(secrets.tls.clone()),
                token: Some(secrets.admin_token.clone()),
            },
        }
    }

    /// Client addresses of all nodes, running or not, in id order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.client_addr).collect()
    }

    /// Admin (HTTP) addresses of all nodes, running or not, in id order.
    pub fn admin_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.admin_addr).collect()
    }

    /// Starts one more node with `--join` (the next id, fresh ports and data directory, every
    /// node so far in its `--node` list) and returns its index once it printed its ready line.
    /// It takes part only once a member adds it (`POST /cluster/learners` or `/cluster/voters`).
    /// `extra_args` replace the cluster's extra arguments for this node when given.
    pub async fn add_node(
        &mut self,
        extra_args: Option<Vec<String>>,
    ) -> Result<usize, ClusterError> {
        if self.nodes.len() >= MAX_LOCAL_NODES {
            return Err(ClusterError::NodeCount(self.nodes.len() + 1));
        }
        let id = self.nodes.iter().map(|node| node.id).max().unwrap_or(0) + 1;
        // A stopped node's ports are free too, but it may start again: do not take them.
        let taken: Vec<SocketAddr> = self
            .nodes
            .iter()
            .flat_map(|n| [n.raft_addr, n.client_addr, n.admin_addr])
            .collect();
        let mut ports = free_ports(3).map_err(ClusterError::Ports)?;
        for _ in 0..10 {
            if !ports.iter().any(|addr| taken.contains(addr)) {
                break;
            }
            ports = free_ports(3).map_err(ClusterError::Ports)?;
        }
        if ports.iter().any(|addr| taken.contains(addr)) {
            let busy = io::Error::new(io::ErrorKind::AddrInUse, "only ports of stopped nodes");
            return Err(ClusterError::Ports(busy));
        }
        let mut listed: Vec<u64> = self.nodes.iter().map(|node| node.id).collect();
        listed.push(id);
        let mut node = LocalNode::new(&self.dir, id, &ports, true, listed);
        node.extra_args = extra_args;
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        let ready = self.spawn(index)?;
        self.wait_ready(index, ready).await?;
        Ok(index)
    }

    /// The index of the node with Raft id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|node| node.id == id)
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// The exit status of node `index` if it has exited on its own (a node that stops on a
    /// fatal error exits with status 3); it then counts as not running. `None` while it runs,
    /// or if it was not running.
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let status = self.nodes[index]
            .child
            .as_mut()?
            .try_wait()
            .ok()
            .flatten()?;
        self.nodes[index].child = None;
        Some(status)
    }

    /// Keeps the directory when the cluster is dropped; returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(temp) = self.temp.take() {
            let _ = temp.keep();
        }
        self.dir.clone()
    }

    /// Starts a stopped node again from its data directory, on the same ports.
    pub async fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        let ready = self.spawn(index)?;
        self.wait_ready(index, ready).await
    }

    /// SIGKILL: the node dies at once, with whatever it had not synced.
    pub async fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL if the node has not exited within `grace`.
    pub async fn stop(&mut self, index: usize, grace: Duration) -> StopOutcome {
        let Some(mut child) = self.nodes[index].child.take() else {
            return StopOutcome::NotRunning;
        };
        terminate(&child);
        match timeout(grace, child.wait()).await {
            Ok(Ok(status)) => StopOutcome::Graceful(status.success()),
            _ => {
                let _ = child.kill().await;
                StopOutcome::Killed
            }
        }
    }

    /// Stops every running node: SIGTERM to all at once, then SIGKILL to those still running
    /// after `grace`.
    pub async fn shutdown(&mut self, grace: Duration) -> Vec<StopOutcome> {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                terminate(child);
            }
        }
        let mut outcomes = Vec::with_capacity(self.nodes.len());
        for index in 0..self.nodes.len() {
            outcomes.push(self.stop(index, grace).await);
        }
        outcomes
    }

    /// `INFO` of one node, with short timeouts and no failover to other nodes.
    pub async fn info(&self, index: usize) -> Result<NodeInfo, ClientError> {
        let config = ClientConfig {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(500),
            deadline: Duration::from_millis(800),
            ..ClientConfig::default()
        };
        let client = Client::new(vec![self.nodes[index].client_addr], config)?;
        client.with_security(self.operator_security()).info().await
    }

    /// Polls the running nodes until one other than `exclude` reports itself leader in a term of
    /// at least `min_term`; returns its index and `INFO`. When two claim leadership (an old
    /// leader has not heard of the new term yet) the higher term wins.
    pub async fn wait_for_leader(
        &self,
        exclude: Option<usize>,
        min_term: u64,
        within: Duration,
    ) -> Result<(usize, NodeInfo), ClusterError> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no node answered INFO");
        loop {
            let mut best: Option<(usize, NodeInfo)> = None;
            let mut seen = Vec::new();
            for index in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
                match self.info(index).await {
                    Ok(info) => {
                        seen.push(format!(
                            "node {} {} term {}",
                            self.nodes[index].id, info.role, info.term
                        ));
                        let candidate = info.is_leader()
                            && Some(index) != exclude
                            && info.term >= min_term
                            && best.as_ref().is_none_or(|(_, b)| info.term > b.term);
                        if candidate {
                            best = Some((index, info));
                        }
                    }
                    Err(error) => seen.push(format!("node {}: {error}", self.nodes[index].id)),
                }
            }
            if let Some(found) = best {
                return Ok(found);
            }
            last = if seen.is_empty() {
                last
            } else {
                seen.join(", ")
            };
            if Instant::now() >= deadline {
                return Err(ClusterError::NoLeader {
                    timeout: within,
                    last,
                });
            }
            sleep(Duration::from_millis(25)).await;
        }
    }

    /// The last lines of a node's log, for error messages.
    pub fn log_tail(&self, index: usize) -> String {
        log_tail(&self.nodes[index].log_path, LOG_TAIL_LINES)
    }

    fn spawn(&mut self, index: usize) -> Result<oneshot::Receiver<String>, ClusterError> {
        let node = &self.nodes[index];
        let io_error = |source| ClusterError::Io {
            path: node.log_path.clone(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(io_error)?;
        let stderr = log.try_clone().map_err(io_error)?;
        let mut command = Command::new(&self.server_bin);
        command
            .arg("serve")
            .args(["--id", &node.id.to_string()])
            .args(["--cluster-id", &self.cluster_id.to_string()])
            .args(["--admin", &node.admin_addr.to_string()]);
        if node.joined {
            command.arg("--join");
        }
        for member in self.nodes.iter().filter(|m| node.listed.contains(&m.id)) {
            let spec = format!("{}={},{}", member.id, member.raft_addr, member.client_addr);
            command.args(["--node", &spec]);
        }
        if let Some((_, config)) = &self.secrets {
            command.arg("--config").arg(config);
        }
        command
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(node.extra_args.as_ref().unwrap_or(&self.extra_args))
            // The nodes log to files: no colour codes in them.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ClusterError::Spawn {
            id: node.id,
            bin: self.server_bin.clone(),
            source,
        })?;
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(copy_stdout(stdout, log, ready_tx));
        }
        self.nodes[index].child = Some(child);
        Ok(ready_rx)
    }

    async fn wait_ready(
        &mut self,
        index: usize,
        ready: oneshot::Receiver<String>,
    ) -> Result<(), ClusterError> {
        let id = self.nodes[index].id;
        let outcome = timeout(self.ready_timeout, ready).await;
        if let Ok(Ok(_line)) = outcome {
            return Ok(());
        }
        let mut child = self.nodes[index].child.take().expect("spawned just before");
        // Stdout closed without the ready line: the node is exiting; give it a moment to.
        let status = timeout(Duration::from_secs(2), child.wait()).await;
        let _ = child.kill().await;
        let log = self.log_tail(index);
        Err(match (outcome, status) {
            (Ok(Err(_)), Ok(Ok(status))) => ClusterError::Exited {
                id,
                status: status.to_string(),
                log,
            },
            _ => ClusterError::NotReady {
                id,
                timeout: self.ready_timeout,
                log,
            },
        })
    }
}

impl LocalNode {
    /// A node not started yet; `ports` are its raft, client and admin ports.
    fn new(dir: &Path, id: u64, ports: &[SocketAddr], joined: bool, listed: Vec<u64>) -> LocalNode {
        LocalNode {
            id,
            raft_addr: ports[0],
            client_addr: ports[1],
            admin_addr: ports[2],
            data_dir: dir.join(format!("node-{id}")),
            joined,
            listed,
            extra_args: None,
            log_path: dir.join(format!("node-{id}.log")),
            child: None,
        }
    }
}

/// Sends SIGTERM, the request for a graceful exit.
fn terminate(child: &Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child, so it cannot
        // name another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// Copies a node's stdout into its log, handing over the ready line when it appears.
async fn copy_stdout(stdout: ChildStdout, mut log: File, ready: oneshot::Sender<String>) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // A line to a local file: too short a write to be worth a blocking-pool hop.
        let _ = writeln!(log, "{line}");
        if line.starts_with("raftkv node ") && line.contains(" ready: ") {
            if let Some(ready) = ready.take() {
                let _ = ready.send(line);
            }
        }
    }
}

/// The last `count` lines of a process's log, as a suffix for an error message (empty if none).
pub fn log_tail(path: &Path, count: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(count)..];
    if tail.is_empty() {
        return String::new();
    }
    format!(
        "; last lines of {}:\n  {}",
        path.display(),
        tail.join("\n  ")
    )
}

/// The cluster's directory: `dir` if given (created; must be empty), or a new temporary one.
fn fresh_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<TempDir>), ClusterError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClusterError::Io { path, source }
    };
    match dir {
        Some(dir) => {
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            let mut entries = fs::read_dir(&dir).map_err(io_error(&dir))?;
            if entries.next().is_some() {
                return Err(ClusterError::NotFresh(dir));
            }
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("raftkv-")
                .tempdir()
                .map_err(io_error(&std::env::temp_dir()))?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// Loopback addresses with free ports: all are bound at once (so they differ) and released.
pub fn free_ports(count: usize) -> io::Result<Vec<SocketAddr>> {
    // Taken below the kernel's ephemeral range (32768 and up by default), where the OS hands out
    // local ports for outgoing connections: a node dialing a peer that is not up yet could
    // otherwise take a port picked here before its owner binds it. Held until all are picked.
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.saturating_mul(200) {
        if listeners.len() == count {
            break;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", fastrand::u16(20_000..32_000))) {
            listeners.push(listener);
        }
    }
    while listeners.len() < count {
        listeners.push(TcpListener::bind("127.0.0.1:0")?);
    }
    listeners.iter().map(TcpListener::local_addr).collect()
}

// ---------------------------------------------------------------------------------------------
// The demo.

/// `raftkv demo`
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct DemoArgs {
    /// Directory for the nodes' data and logs (created; must be empty). Default: a new temporary
    /// directory, removed at the end unless --keep.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (data and node logs) at the end; it is always kept when the
    /// demo fails.
    #[arg(long)]
    pub keep: bool,
    /// Seconds of workload before the leader is killed.
    #[arg(long, default_value_t = 3.0)]
    pub before_kill: f64,
    /// Seconds of workload after the new leader is elected, before the old leader restarts (the
    /// workload goes on while it catches up, a node is added and one removed).
    #[arg(long, default_value_t = 2.0)]
    pub after_failover: f64,
    /// Concurrent workload clients (each its own connection and its own keys).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Keys per client.
    #[arg(long, default_value_t = 64)]
    pub keys: usize,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// The raftkv executable to run `serve` with. Default: this executable.
    #[arg(long, hide = true)]
    pub server_bin: Option<PathBuf>,
    /// Run the nodes without TLS, users or an admin token (by default the demo runs them as a
    /// deployment should: see `Protection::Secure`).
    #[arg(long)]
    pub plain: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            dir: None,
            keep: false,
            before_kill: 3.0,
            after_failover: 2.0,
            clients: 4,
            keys: 64,
            no_progress: false,
            server_bin: None,
            plain: false,
        }
    }
}

/// What the demo saw; printed at the end, and returned whether or not it passed.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    pub dir: PathBuf,
    /// Raft ids and terms of the first and the new leader.
    pub first_leader: (u64, u64),
    /// The leader when the kill came (the first one, unless leadership moved under load).
    pub killed_leader: (u64, u64),
    pub new_leader: (u64, u64),
    /// From the kill to `INFO` showing a new leader.
    pub failover: Duration,
    /// From the kill to the acknowledgement of the first write sent after it.
    pub writes_resumed: Option<Duration>,
    /// From the restarted node's ready line to its applied index reaching the leader's commit
    /// index.
    pub catch_up: Duration,
    /// The restarted node's applied index and the leader's commit index when it caught up.
    pub caught_up_at: (u64, u64),
    /// The node added with `--join`, and from its ready line to it being a voter that has
    /// applied what the leader had committed when it was added.
    pub added: Option<(u64, Duration)>,
    /// The node removed, and how long the change took.
    pub removed: Option<(u64, Duration)>,
    /// The members at the end, whose stores were verified.
    pub final_members: Vec<u64>,
    pub writes_acked: u64,
    pub writes_uncertain: u64,
    pub reads: u64,
    pub read_errors: u64,
    pub stale_reads: u64,
    pub keys_verified: usize,
    pub verification_reads: usize,
    /// The first few workload requests that failed, described.
    pub error_samples: Vec<String>,
    /// Nodes that needed SIGKILL at shutdown.
    pub forced_stops: usize,
    pub elapsed: Duration,
    /// Everything that went wrong; empty if the demo passed.
    pub failures: Vec<String>,
}

impl DemoSummary {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("invalid option: {0}")]
    Args(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{what}: {source}")]
    Step {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("demo failed: {}", .0.failures.join("; "))]
    Failed(Box<DemoSummary>),
}

impl DemoError {
    fn step(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DemoError::Step {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// Runs the demo; see the module documentation. `Ok` only if every check passed.
pub async fn run(args: DemoArgs) -> Result<DemoSummary, DemoError> {
    validate(&args)?;
    let started = Instant::now();
    let out = Narrator::new(args.no_progress);
    let protection = match args.plain {
        true => Protection::Plain,
        false => Protection::Secure,
    };
    out.step(match protection {
        Protection::Plain => "starting 3 nodes (plain TCP, no authentication)",
        Protection::Secure => {
            "starting 3 nodes (mutual TLS between nodes; TLS and users on the client ports; TLS \
             and a token on the admin ports)"
        }
    });
    let mut cluster = LocalCluster::start(LocalClusterOptions {
        dir: args.dir.clone(),
        server_bin: args.server_bin.clone(),
        protection,
        ..LocalClusterOptions::default()
    })
    .await?;
    out.say(format!("cluster directory: {}", cluster.dir().display()));
    if protection == Protection::Secure {
        out.say(format!(
            "certificates in {0}/certs, users and token hash in {0}/security.toml",
            cluster.dir().display()
        ));
    }
    for node in cluster.nodes() {
        out.say(format!(
            "node {}: client {} raft {} (log {})",
            node.id,
            node.client_addr,
            node.raft_addr,
            node.log_path.display()
        ));
    }
    let mut summary = DemoSummary {
        dir: cluster.dir().to_path_buf(),
        ..DemoSummary::default()
    };
    let result = scenario(&args, &mut cluster, &out, &mut summary).await;
    out.step("shutting down");
    let outcomes = cluster.shutdown(Duration::from_secs(5)).await;
    summary.forced_stops = outcomes
        .iter()
        .filter(|outcome| **outcome == StopOutcome::Killed)
        .count();
    // A failed run keeps its directory: the node logs are what explains the failure.
    let failed = result.is_err() || !summary.passed();
    if args.keep || failed {
        cluster.keep();
    }
    let keep_dir = args.keep || failed || args.dir.is_some();
    drop(cluster);
    summary.elapsed = started.elapsed();
    out.finish();
    if let Err(error) = result {
        eprintln!("raftkv demo: node logs kept in {}", summary.dir.display());
        return Err(error);
    }
    print_summary(&summary, keep_dir);
    if summary.passed() {
        Ok(summary)
    } else {
        Err(DemoError::Failed(Box::new(summary)))
    }
}

/// Runs the demo on a fresh runtime and prints the outcome: for `main`.
pub fn run_cli(args: DemoArgs) -> ExitCode {
    match crate::block_on_fresh_runtime("raftkv demo", crate::RuntimeThreads::PerCore, run(args)) {
        None => ExitCode::FAILURE,
        Some(Ok(_)) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            eprintln!("raftkv demo: FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &DemoArgs) -> Result<(), DemoError> {
    let seconds = |value: f64, name: &str| {
        if value.is_finite() && (0.0..=600.0).contains(&value) {
            Ok(())
        } else {
            Err(DemoError::Args(format!(
                "--{name} must be 0 to 600 seconds, not {value}"
            )))
        }
    };
    seconds(args.before_kill, "before-kill")?;
    seconds(args.after_failover, "after-failover")?;
    if !(1..=256).contains(&args.clients) {
        return Err(DemoError::Args(format!(
            "--clients must be 1 to 256, not {}",
            args.clients
        )));
    }
    if !(1..=100_000).contains(&args.keys) {
        return Err(DemoError::Args(format!(
            "--keys must be 1 to 100000, not {}",
            args.keys
        )));
    }
    Ok(())
}

/// Longest wait for the first leader, for a new leader after the kill, and for catch-up.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a membership change (a new voter catches up first).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Steps 1 to 7, filling `summary`. `Err` for a step that could not be carried out; failed
/// checks go into `summary.failures`.
async fn scenario(
    args: &DemoArgs,
    cluster: &mut LocalCluster,
    out: &Narrator,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    out.step("waiting for a leader");
    let (leader, info) = cluster.wait_for_leader(None, 0, LEADER_TIMEOUT).await?;
    let leader_id = cluster.nodes()[leader].id;
    summary.first_leader = (leader_id, info.term);
    out.say(format!("node {leader_id} leads (term {})", info.term));

    out.step("workload");
    let workload = Workload::start(args, cluster.client_addrs(), cluster.client_security());
    let progress = workload.report_progress(out.bar.clone());
    sleep(Duration::from_secs_f64(args.before_kill)).await;

    out.step("killing the leader");
    // Leadership may have moved during the workload: kill whoever leads now.
    let (leader, info) = cluster.wait_for_leader(None, 0, LEADER_TIMEOUT).await?;
    let leader_id = cluster.nodes()[leader].id;
    if (leader_id, info.term) != summary.first_leader {
        out.say(format!(
            "leadership moved during the workload: node {leader_id} leads (term {})",
            info.term
        ));
    }
    summary.killed_leader = (leader_id, info.term);
    let killed_at = Instant::now();
    workload.shared.killed_at.get_or_init(|| killed_at);
    cluster.kill(leader).await;
    out.say(format!(
        "killed node {leader_id} (the leader) with SIGKILL after {} acknowledged writes ({} with outcome unknown)",
        workload.shared.writes_acked.load(Ordering::Relaxed),
        workload.shared.writes_uncertain.load(Ordering::Relaxed)
    ));
    let (new_leader, new_info) = cluster
        .wait_for_leader(Some(leader), info.term + 1, FAILOVER_TIMEOUT)
        .await
        .map_err(|error| {
            DemoError::step(format!("failover after killing node {leader_id}"), error)
        })?;
    summary.failover = killed_at.elapsed();
    let new_id = cluster.nodes()[new_leader].id;
    summary.new_leader = (new_id, new_info.term);
    out.say(format!(
        "node {new_id} leads (term {}), {} ms after the kill",
        new_info.term,
        summary.failover.as_millis()
    ));
    sleep(Duration::from_secs_f64(args.after_failover)).await;
    match workload.shared.writes_resumed.get() {
        Some(resumed) => out.say(format!(
            "writes resumed {} ms after the kill",
            resumed.as_millis()
        )),
        None => out.say("no write acknowledged since the kill yet".to_owned()),
    }

    out.step("restarting the old leader");
    restart_and_catch_up(cluster, leader, new_leader, out, summary).await?;

    out.step("adding a node");
    let added = add_voter(cluster, out, summary).await?;

    out.step("removing a node");
    remove_member(cluster, leader, out, summary).await?;

    let history = workload.stop().await;
    progress.abort();
    summary.writes_resumed = history.shared.writes_resumed.get().copied();
    if summary.writes_resumed.is_none() {
        summary
            .failures
            .push("no write was acknowledged after the leader was killed".to_owned());
    }
    history.record_counts(summary);

    out.step("verifying");
    let members: Vec<usize> = (0..cluster.nodes().len())
        .filter(|&index| index != leader && (cluster.is_running(index) || index == added))
        .collect();
    summary.final_members = members.iter().map(|&i| cluster.nodes()[i].id).collect();
    verify(cluster, &members, &history, out, summary).await;
    Ok(())
}

/// The leader's commit index as its `INFO` reports it (polled until it answers).
async fn commit_index_of(cluster: &LocalCluster, index: usize) -> Result<u64, DemoError> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        match cluster.info(index).await {
            Ok(info) => return Ok(info.commit_index),
            Err(error) if Instant::now() >= deadline => {
                return Err(DemoError::step("reading the leader's commit index", error))
            }
            Err(_) => sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Polls node `index` until it has applied `target`; returns its `INFO` then, or `None` after
/// [`CATCH_UP_TIMEOUT`] (with the last state seen in `last`).
async fn wait_applied(
    cluster: &LocalCluster,
    index: usize,
    target: u64,
    last: &mut String,
) -> Option<NodeInfo> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        if let Ok(node) = cluster.info(index).await {
            if node.applied_index >= target {
                return Some(node);
            }
            *last = format!("applied index {}, target {target}", node.applied_index);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(25)).await;
    }
}

async fn restart_and_catch_up(
    cluster: &mut LocalCluster,
    old: usize,
    leader: usize,
    out: &Narrator,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    let id = cluster.nodes()[old].id;
    cluster.restart(old).await?;
    out.say(format!(
        "restarted node {id} from {}",
        cluster.nodes()[old].data_dir.display()
    ));
    let restarted = Instant::now();
    // The writes go on, so the leader's commit index keeps moving: catching up means reaching
    // where it was when the node came back.
    let target = commit_index_of(cluster, leader).await?;
    let mut last = String::from("no INFO answer yet");
    match wait_applied(cluster, old, target, &mut last).await {
        Some(node) => {
            summary.catch_up = restarted.elapsed();
            summary.caught_up_at = (node.applied_index, target);
            out.say(format!(
                "node {id} caught up in {} ms: applied index {} >= leader commit index {target} ({}, term {})",
                summary.catch_up.as_millis(),
                node.applied_index,
                node.role,
                node.term
            ));
        }
        None => summary.failures.push(format!(
            "node {id} did not catch up within {CATCH_UP_TIMEOUT:?} ({last})"
        )),
    }
    Ok(())
}

/// The admin addresses of the running nodes: a membership change may go to any member.
fn running_admins(cluster: &LocalCluster) -> Vec<String> {
    (0..cluster.nodes().len())
        .filter(|&index| cluster.is_running(index))
        .map(|index| cluster.nodes()[index].admin_addr.to_string())
        .collect()
}

/// Sends a membership change to the first running node that answers.
async fn change_membership(
    cluster: &LocalCluster,
    request: ClusterRequest,
) -> Result<ClusterView, AdminClientError> {
    let mut last = None;
    for admin in running_admins(cluster) {
        let access = cluster.admin_access();
        match admin_client::send_with::<ClusterView>(&admin, &request, CHANGE_TIMEOUT, &access)
            .await
        {
            Ok(view) => return Ok(view),
            Err(
                error @ (AdminClientError::Unreachable { .. } | AdminClientError::Timeout { .. }),
            ) => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or(AdminClientError::Unreachable {
        addr: String::new(),
        reason: "no node is running".into(),
    }))
}

/// Step 5: a new node joins as a voter; returns its index.
async fn add_voter(
    cluster: &mut LocalCluster,
    out: &Narrator,
    summary: &mut DemoSummary,
) -> Result<usize, DemoError> {
    let index = cluster.add_node(None).await?;
    let started = Instant::now();
    let node = &cluster.nodes()[index];
    let (id, raft) = (node.id, node.raft_addr.to_string());
    out.say(format!(
        "started node {id} with --join (client {}, raft {raft}); adding it as a voter",
        node.client_addr
    ));
    let view = change_membership(
        cluster,
        ClusterRequest::AddVoter {
            id,
            raft: Some(raft),
        },
    )
    .await
    .map_err(|error| DemoError::step(format!("adding node {id}"), error))?;
    if !view.voters.contains(&id) {
        summary.failures.push(format!(
            "node {id} is not a voter after being added: voters {:?}",
            view.voters
        ));
    }
    let (leader, _) = cluster.wait_for_leader(None, 0, LEADER_TIMEOUT).await?;
    let target = commit_index_of(cluster, leader).await?;
    let mut last = String::from("no INFO answer yet");
    match wait_applied(cluster, index, target, &mut last).await {
        Some(info) => {
            let took = started.elapsed();
            summary.added = Some((id, took));
            out.say(format!(
                "node {id} is a voter (voters {:?}) and caught up in {} ms: applied index {} ({}, term {})",
                view.voters,
                took.as_millis(),
                info.applied_index,
                info.role,
                info.term
            ));
        }
        None => summary.failures.push(format!(
            "node {id} did not catch up within {CATCH_UP_TIMEOUT:?} ({last})"
        )),
    }
    Ok(index)
}

/// Step 6: node `index` leaves the cluster and is stopped.
async fn remove_member(
    cluster: &mut LocalCluster,
    index: usize,
    out: &Narrator,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    let id = cluster.nodes()[index].id;
    let started = Instant::now();
    let view = change_membership(cluster, ClusterRequest::Remove { id })
        .await
        .map_err(|error| DemoError::step(format!("removing node {id}"), error))?;
    let took = started.elapsed();
    if view.members.iter().any(|member| member.id == id) {
        summary.failures.push(format!(
            "node {id} is still a member after its removal: {:?}",
            view.members
        ));
    }
    summary.removed = Some((id, took));
    out.say(format!(
        "removed node {id} in {} ms (voters now {:?}); stopping it",
        took.as_millis(),
        view.voters
    ));
    cluster.stop(index, Duration::from_secs(5)).await;
    Ok(())
}

/// Reads every written key from every node (pipelined, linearizable GETs) and checks it against
/// the history.
async fn verify(
    cluster: &LocalCluster,
    members: &[usize],
    history: &History,
    out: &Narrator,
    summary: &mut DemoSummary,
) {
    const BATCH: usize = 128;
    const FAILURES_SHOWN: usize = 10;
    let keys: Vec<&KeyHistory> = history.keys.iter().filter(|key| key.written()).collect();
    summary.keys_verified = keys.len();
    let mut wrong = 0;
    for node in members.iter().map(|&index| &cluster.nodes()[index]) {
        let config = ClientConfig {
            deadline: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        let Ok(client) = Client::new(vec![node.client_addr], config) else {
            continue;
        };
        let mut client = client.with_security(cluster.client_security());
        for chunk in keys.chunks(BATCH) {
            let requests: Vec<[&[u8]; 2]> = chunk
                .iter()
                .map(|key| [b"GET".as_slice(), &key.key])
                .collect();
            let replies = client.pipeline(&requests).await;
            summary.verification_reads += replies.len();
            for (key, reply) in chunk.iter().zip(replies) {
                let problem = match reply {
                    Ok(Reply::Bulk(value)) if key.allows(value.as_ref()) => continue,
                    Ok(Reply::Bulk(value)) => {
                        format!("holds {}, {}", show(value.as_ref()), key.expectation())
                    }
                    Ok(other) => format!("unexpected reply {other:?}"),
                    Err(error) => format!("read failed: {error}"),
                };
                wrong += 1;
                if wrong <= FAILURES_SHOWN {
                    summary.failures.push(format!(
                        "node {}: key {} {problem}",
                        node.id,
                        String::from_utf8_lossy(&key.key)
                    ));
                }
            }
        }
    }
    if wrong > FAILURES_SHOWN {
        summary
            .failures
            .push(format!("... {} more wrong reads", wrong - FAILURES_SHOWN));
    }
    out.say(format!(
        "read {} keys from each of the {} members (nodes {:?}): {}",
        keys.len(),
        members.len(),
        summary.final_members,
        if wrong == 0 {
            "every key holds its last acknowledged value".to_owned()
        } else {
            format!("{wrong} wrong")
        }
    ));
}

fn print_summary(summary: &DemoSummary, kept: bool) {
    let mut text = String::from("\n== raftkv demo summary\n");
    let mut line = |label: &str, value: String| {
        let _ = writeln!(text, "{label:<22} {value}");
    };
    line(
        "first leader",
        format!(
            "node {} (term {})",
            summary.first_leader.0, summary.first_leader.1
        ),
    );
    if summary.killed_leader != summary.first_leader {
        line(
            "killed leader",
            format!(
                "node {} (term {})",
                summary.killed_leader.0, summary.killed_leader.1
            ),
        );
    }
    line(
        "new leader",
        format!(
            "node {} (term {})",
            summary.new_leader.0, summary.new_leader.1
        ),
    );
    line(
        "failover",
        format!("{} ms (kill to new leader)", summary.failover.as_millis()),
    );
    line(
        "writes resumed",
        summary.writes_resumed.map_or("never".to_owned(), |d| {
            format!("{} ms after the kill", d.as_millis())
        }),
    );
    line(
        "catch-up",
        format!(
            "{} ms (applied {} / leader commit {})",
            summary.catch_up.as_millis(),
            summary.caught_up_at.0,
            summary.caught_up_at.1
        ),
    );
    if let Some((id, took)) = summary.added {
        line(
            "added",
            format!(
                "node {id} (--join, then a voter, caught up) in {} ms",
                took.as_millis()
            ),
        );
    }
    if let Some((id, took)) = summary.removed {
        line("removed", format!("node {id} in {} ms", took.as_millis()));
    }
    line(
        "writes",
        format!(
            "{} acknowledged, {} outcome unknown",
            summary.writes_acked, summary.writes_uncertain
        ),
    );
    line(
        "reads",
        format!(
            "{} during the workload ({} stale, {} failed), {} to verify {} keys",
            summary.reads,
            summary.stale_reads,
            summary.read_errors,
            summary.verification_reads,
            summary.keys_verified
        ),
    );
    for (i, sample) in summary.error_samples.iter().enumerate() {
        line(
            if i == 0 { "failed requests, e.g." } else { "" },
            sample.clone(),
        );
    }
    line(
        "shutdown",
        format!("{} node(s) needed SIGKILL", summary.forced_stops),
    );
    line(
        "data",
        if kept {
            format!("kept in {}", summary.dir.display())
        } else {
            format!("{} removed", summary.dir.display())
        },
    );
    line("elapsed", format!("{:.1} s", summary.elapsed.as_secs_f64()));
    let verdict = if summary.passed() {
        "PASSED: no acknowledged write was lost".to_owned()
    } else {
        format!("FAILED:\n  {}", summary.failures.join("\n  "))
    };
    line("result", verdict);
    print!("{text}");
}

fn show(value: Option<&Bytes>) -> String {
    value.map_or("(nil)".to_owned(), |value| crate::client::quote(value))
}

// ---------------------------------------------------------------------------------------------
// The workload and its history.

/// What is known about one key: written by one client only, so its writes are ordered.
#[derive(Debug, Clone)]
struct KeyHistory {
    key: Bytes,
    /// The last acknowledged value.
    acked: Option<Bytes>,
    /// Every write whose outcome is unknown: any of them may take effect, at any later time.
    uncertain: Vec<Bytes>,
}

impl KeyHistory {
    fn written(&self) -> bool {
        self.acked.is_some() || !self.uncertain.is_empty()
    }

    fn allows(&self, value: Option<&Bytes>) -> bool {
        value == self.acked.as_ref() || value.is_some_and(|value| self.uncertain.contains(value))
    }

    fn expectation(&self) -> String {
        let mut text = format!("expected {}", show(self.acked.as_ref()));
        if !self.uncertain.is_empty() {
            let maybe: Vec<String> = self.uncertain.iter().map(|v| show(Some(v))).collect();
            let _ = write!(text, " or one of the uncertain {}", maybe.join(", "));
        }
        text
    }
}

/// Counters and events shared by the workload tasks.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    writes_acked: AtomicU64,
    writes_uncertain: AtomicU64,
    reads: AtomicU64,
    read_errors: AtomicU64,
    stale_reads: AtomicU64,
    killed_at: OnceLock<Instant>,
    /// From the kill to the acknowledgement of the first write sent after it.
    writes_resumed: OnceLock<Duration>,
    /// The first stale reads, described.
    stale: Mutex<Vec<String>>,
    /// The first failed writes and reads, described.
    error_samples: Mutex<Vec<String>>,
}

impl Shared {
    fn note_error(&self, what: &str, key: &KeyHistory, error: &ClientError) {
        if let Ok(mut samples) = self.error_samples.lock() {
            if samples.len() < ERROR_SAMPLES {
                samples.push(format!(
                    "{what} {}: {error}",
                    String::from_utf8_lossy(&key.key)
                ));
            }
        }
    }
}

struct Workload {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<Vec<KeyHistory>>>,
}

struct History {
    shared: Arc<Shared>,
    keys: Vec<KeyHistory>,
}

impl History {
    fn record_counts(&self, summary: &mut DemoSummary) {
        let shared = &self.shared;
        summary.writes_acked = shared.writes_acked.load(Ordering::Relaxed);
        summary.writes_uncertain = shared.writes_uncertain.load(Ordering::Relaxed);
        summary.reads = shared.reads.load(Ordering::Relaxed);
        summary.read_errors = shared.read_errors.load(Ordering::Relaxed);
        summary.stale_reads = shared.stale_reads.load(Ordering::Relaxed);
        let stale = shared.stale.lock().map(|s| s.clone()).unwrap_or_default();
        summary.failures.extend(stale);
        summary.error_samples = shared
            .error_samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if summary.writes_acked == 0 {
            summary
                .failures
                .push("no write was acknowledged".to_owned());
        }
    }
}

/// Stale reads described in the summary; the rest are only counted.
const STALE_SHOWN: usize = 10;
/// Failed requests described in the summary.
const ERROR_SAMPLES: usize = 5;

impl Workload {
    fn start(args: &DemoArgs, nodes: Vec<SocketAddr>, security: Security) -> Workload {
        let shared = Arc::new(Shared::default());
        let tasks = (0..args.clients)
            .map(|client| {
                // Start each client at a different node: followers forward writes.
                let mut nodes = nodes.clone();
                let first = client % nodes.len();
                nodes.rotate_left(first);
                let security = security.clone();
                tokio::spawn(workload_client(
                    client,
                    args.keys,
                    nodes,
                    security,
                    shared.clone(),
                ))
            })
            .collect();
        Workload { shared, tasks }
    }

    /// Keeps the progress bar's message current until aborted.
    fn report_progress(&self, bar: ProgressBar) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                bar.set_message(format!(
                    "{} writes acked, {} uncertain, {} reads ({} stale)",
                    shared.writes_acked.load(Ordering::Relaxed),
                    shared.writes_uncertain.load(Ordering::Relaxed),
                    shared.reads.load(Ordering::Relaxed),
                    shared.stale_reads.load(Ordering::Relaxed),
                ));
                sleep(Duration::from_millis(100)).await;
            }
        })
    }

    async fn stop(self) -> History {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut keys = Vec::new();
        for task in self.tasks {
            // A task only ends by returning its keys; a panic would be a bug worth surfacing.
            keys.extend(task.await.expect("workload client panicked"));
        }
        History {
            shared: self.shared,
            keys,
        }
    }
}

/// One workload client: half SETs of fresh values, half GETs, on its own keys, checking every
/// read against what it knows.
async fn workload_client(
    client: usize,
    key_count: usize,
    nodes: Vec<SocketAddr>,
    security: Security,
    shared: Arc<Shared>,
) -> Vec<KeyHistory> {
    let mut keys: Vec<KeyHistory> = (0..key_count)
        .map(|i| KeyHistory {
            key: Bytes::from(format!("demo:{client}:{i}")),
            acked: None,
            uncertain: Vec::new(),
        })
        .collect();
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let Ok(conn) = Client::new(nodes, config) else {
        return keys;
    };
    let mut conn = conn.with_security(security);
    let mut rng = fastrand::Rng::with_seed(client as u64);
    let mut sequence = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let key = &mut keys[rng.usize(..key_count)];
        if rng.bool() {
            sequence += 1;
            let value = Bytes::from(format!("c{client}-{sequence}"));
            write(&mut conn, key, value, &shared).await;
        } else {
            read(&mut conn, key, &shared).await;
        }
    }
    keys
}

async fn write(conn: &mut Client, key: &mut KeyHistory, value: Bytes, shared: &Shared) {
    let sent = Instant::now();
    match conn.set(&key.key, &value).await {
        Ok(()) => {
            key.acked = Some(value);
            shared.writes_acked.fetch_add(1, Ordering::Relaxed);
            if let Some(&killed) = shared.killed_at.get() {
                if sent >= killed {
                    shared.writes_resumed.get_or_init(|| killed.elapsed());
                }
            }
        }
        // Even an error that says "not done" is treated as maybe done: that only widens what the
        // verification accepts, never hides a lost acknowledged write.
        Err(error) => {
            shared.note_error("SET", key, &error);
            key.uncertain.push(value);
            shared.writes_uncertain.fetch_add(1, Ordering::Relaxed);
            sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn read(conn: &mut Client, key: &KeyHistory, shared: &Shared) {
    match conn.get(&key.key).await {
        Ok(value) => {
            shared.reads.fetch_add(1, Ordering::Relaxed);
            if !key.allows(value.as_ref()) {
                let count = shared.stale_reads.fetch_add(1, Ordering::Relaxed);
                if count < STALE_SHOWN as u64 {
                    if let Ok(mut stale) = shared.stale.lock() {
                        stale.push(format!(
                            "stale read during the workload: key {} returned {}, {}",
                            String::from_utf8_lossy(&key.key),
                            show(value.as_ref()),
                            key.expectation()
                        ));
                    }
                }
            }
        }
        Err(error) => {
            shared.note_error("GET", key, &error);
            shared.read_errors.fetch_add(1, Ordering::Relaxed);
            sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// The demo's steps, for the progress bar.
const STEPS: u64 = 9;

/// Prints the demo's story: above the progress bar when it is shown, plainly otherwise.
struct Narrator {
    bar: ProgressBar,
}

impl Narrator {
    fn new(no_progress: bool) -> Narrator {
        let target = if no_progress {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(STEPS), target);
        let style = ProgressStyle::with_template(
            "{spinner:.green} [{elapsed:>3}] [{bar:14.cyan/blue}] {pos}/{len} {prefix:.bold} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        Narrator { bar }
    }

    fn step(&self, name: &str) {
        if self.bar.prefix().is_empty() {
            self.bar.set_position(0);
        } else {
            self.bar.inc(1);
        }
        self.bar.set_prefix(name.to_owned());
        self.bar.set_message("");
    }

    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
