//! The settings of one `raftkv serve` node: a TOML file, command-line flags that override it, and
//! the validated [`ServerConfig`] the server runs with.
//!
//! ```toml
//! id = 1
//! cluster_id = 7
//! data_dir = "./raft-data/node-1"   # default: ./raft-data/node-<id>
//! admin = "127.0.0.1:9101"          # default: no admin HTTP port
//! forward = true                    # followers forward writes to the leader (default)
//! tick_ms = 10
//! election_ms = [1000, 2000]
//! snapshot_entries = 100000        # snapshot after this many applied entries (default)
//! retain_entries = 5000             # log entries kept behind a snapshot (default; 0: none)
//! join = false                      # true: a node added to a running cluster
//! threads = 1                       # runtime threads (default 1: see ServerConfig::threads)
//! max_command_bytes = 1048576       # largest encoded write (default: just under the 64 MiB frame)
//! segment_bytes = 67108864          # size of each preallocated log segment file (default 64 MiB)
//! raft_listen = "0.0.0.0:7101"      # where to listen for peers (default: this node's raft address)
//! peer_source_ip = "10.0.0.1"       # local address of connections to peers (default: any)
//! lease_reads = false               # leaders serve reads on a lease (default off; see README)
//!
//! [[nodes]]
//! id = 1
//! raft = "127.0.0.1:7101"
//! client = "127.0.0.1:6101"
//! # ... one [[nodes]] table per member, this node included
//! ```
//!
//! A node that joins a running cluster (`join = true`, or `--join`) starts with no configuration
//! of its own: it waits until a member adds it (`raftkv cluster add-learner` or `add`) and learns
//! the configuration from the leader. Its `[[nodes]]` list names itself (its raft address is the
//! one the cluster is told) and the current members, which it must be able to answer; members
//! added at run time are reached at the addresses their configuration entries carry.
//!
//! Loading is two steps: [`RawConfig`] holds what the file and the flags said (every field
//! optional, flags merged over the file with [`RawConfig::merge`]), and [`RawConfig::validate`]
//! checks it all and resolves addresses into a [`ServerConfig`], or says precisely what is wrong
//! with a [`ConfigError`].

use crate::auth::{AdminTokenHash, AuthError, UserSpec, Users};
use crate::resp::RespLimits;
use crate::server::ServerLimits;
use clap::Args;
use raftengine::NodeId;
use raftnet::runtime::NodeConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// Default length of one Raft tick.
pub const DEFAULT_TICK_MS: u64 = 10;
/// Default election timeout range, in milliseconds: etcd's scale. A lost packet costs a TCP
/// connection at least 200 ms (Linux's smallest retransmission timeout) and a wide-area round
/// trip can be as long, so with 150–300 ms a cluster held elections under 10% packet loss or
/// 100 ms of latency and lost its leader for good at 200 ms (docs/benchmarks/degraded.md).
/// Failover takes 1–2 s instead; `--election-ms 150..300` suits a quiet LAN.
pub const DEFAULT_ELECTION_MS: [u64; 2] = [1000, 2000];
/// Default cluster id, when neither the file nor the flags give one.
pub const DEFAULT_CLUSTER_ID: u64 = 1;
/// Longest tick accepted: longer ones make elections take tens of seconds.
const MAX_TICK_MS: u64 = 1_000;
/// Default number of applied entries between two snapshots.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 100_000;
pub const DEFAULT_THREADS: usize = 1;
const MAX_THREADS: usize = 1024;
/// Smallest request size limit and request buffer budget accepted: below it ordinary commands
/// would not fit.
pub const MIN_REQUEST_BYTES: usize = 1024;
/// Smallest log segment file accepted (the log's own lower bound).
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// One member as written in the file or on the command line (addresses not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: u64,
    /// Address of the node-to-node (Raft) port.
    pub raft: String,
    /// Address of the RESP client port.
    pub client: String,
}

impl FromStr for NodeSpec {
    type Err = String;

    /// Parses `ID=RAFT_ADDR,CLIENT_ADDR`, the form of `--node`.
    fn from_str(text: &str) -> Result<NodeSpec, String> {
        let shape = "expected ID=RAFT_ADDR,CLIENT_ADDR, e.g. 1=127.0.0.1:7101,127.0.0.1:6101";
        let (id, addrs) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}': {shape}"))?;
        let id = id
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("'{text}': node id '{id}' is not a number; {shape}"))?;
        let (raft, client) = addrs
            .split_once(',')
            .ok_or_else(|| format!("'{text}': {shape}"))?;
        let (raft, client) = (raft.trim(), client.trim());
        if raft.is_empty() || client.is_empty() || client.contains(',') {
            return Err(format!("'{text}': {shape}"));
        }
        Ok(NodeSpec {
            id,
            raft: raft.to_owned(),
            client: client.to_owned(),
        })
    }
}

/// An election timeout range in milliseconds: `150..300` on the command line, `[150, 300]` in
/// the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionRange(pub [u64; 2]);

impl FromStr for ElectionRange {
    type Err = String;

    fn from_str(text: &str) -> Result<ElectionRange, String> {
        let bad = || format!("'{text}': expected MIN..MAX in milliseconds, e.g. 150..300");
        let (min, max) = text.split_once("..").ok_or_else(bad)?;
        let min = min.trim().parse().map_err(|_| bad())?;
        let max = max.trim().parse().map_err(|_| bad())?;
        Ok(ElectionRange([min, max]))
    }
}

/// What the file and the flags said; every field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub id: Option<u64>,
    pub cluster_id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    /// Address of the admin HTTP port (`/status`, `/metrics`); none means disabled.
    pub admin: Option<String>,
    pub forward: Option<bool>,
    pub tick_ms: Option<u64>,
    pub election_ms: Option<[u64; 2]>,
    /// Snapshot the store (and compact the log) after this many applied entries.
    pub snapshot_entries: Option<u64>,
    /// Log entries kept behind a snapshot, so a follower a little behind gets entries rather
    /// than the snapshot (0: none, not even for followers that need them).
    pub retain_entries: Option<u64>,
    /// This node is added to a running cluster: it starts without a configuration.
    pub join: Option<bool>,
    /// Threads of the async runtime (1: everything on one thread).
    pub threads: Option<usize>,
    /// Largest encoded write command (key, value and a few bytes); larger SETs are refused
    /// with `-ERR value too large`. Default: derived from the transport's frame limit.
    pub max_command_bytes: Option<usize>,
    /// Size of each preallocated log segment file; a multiple of 8, at least 4096. Default: the
    /// log's (64 MiB). Smaller segments suit small disks (and tests that fill one).
    pub segment_bytes: Option<u64>,
    /// Where to listen for peers when it differs from the raft address the others are told
    /// (behind a proxy or NAT). Default: this node's raft address.
    pub raft_listen: Option<String>,
    /// Local address of this node's connections to its peers. Default: the OS picks.
    pub peer_source_ip: Option<IpAddr>,
    /// TLS on the peer, client and admin ports (`[tls]`); none: plain TCP.
    pub tls: Option<RawTls>,
    /// Leaders serve reads on a lease instead of a confirmation round (Raft thesis §6.4.1);
    /// correct only while clocks drift less than the lease allows. Default: off.
    pub lease_reads: Option<bool>,
    /// Open client connections; one more is answered `-ERR max number of clients reached` (default 10000).
    pub max_connections: Option<usize>,
    /// Open admin HTTP connections; more are closed at once (default 64).
    pub max_admin_connections: Option<usize>,
    /// Requests of one client connection served at once; reading pauses beyond it (default 1024).
    pub max_pipelined_requests: Option<usize>,
    /// Largest request, headers included (default 256 MiB).
    pub max_request_bytes: Option<usize>,
    /// Bytes held for partially received requests across all client connections; a request that would pass it is refused with `-ERR server busy` and its connection closed (default 256 MiB).
    pub request_buffer_budget_bytes: Option<usize>,
    /// Unsent reply bytes of one connection above which it stops executing further pipelined requests until the client reads (default 8 MiB).
    pub output_soft_limit_bytes: Option<usize>,
    /// Unsent reply bytes (or one reply) that close a connection (default 128 MiB).
    pub output_hard_limit_bytes: Option<usize>,
    /// Seconds a client may read none of its pending replies before its connection is closed (default 60).
    pub write_timeout_secs: Option<u64>,
    /// Seconds without a request after which a client connection is closed; 0: never (default 300).
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a started request may take to arrive whole; 0: no limit (default 30).
    pub read_timeout_secs: Option<u64>,
    /// Users of the RESP port; none: every client may do everything (no AUTH needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserSpec>,
    /// `sha256:<hex>` of the admin port's bearer token; required for its cluster changes once
    /// set (see `raftkv passwd --admin-token`).
    pub admin_token_hash: Option<String>,
    /// GET /status, /metrics and /cluster answer without the token (default true).
    pub admin_open_reads: Option<bool>,
    /// Serve beyond loopback without TLS and authentication (see [`ServerConfig::exposed`]).
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeSpec>,
}

impl RawConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: Some(path.to_owned()),
            message: e.to_string(),
        })
    }

    /// `over`'s fields where it has them, `self`'s otherwise. A non-empty `over.nodes` replaces
    /// the whole member list (a partial list would be a different cluster).
    pub fn merge(self, over: RawConfig) -> RawConfig {
        RawConfig {
            id: over.id.or(self.id),
            cluster_id: over.cluster_id.or(self.cluster_id),
            data_dir: over.data_dir.or(self.data_dir),
            admin: over.admin.or(self.admin),
            forward: over.forward.or(self.forward),
            tick_ms: over.tick_ms.or(self.tick_ms),
            election_ms: over.election_ms.or(self.election_ms),
            snapshot_entries: over.snapshot_entries.or(self.snapshot_entries),
            retain_entries: over.retain_entries.or(self.retain_entries),
            join: over.join.or(self.join),
            threads: over.threads.or(self.threads),
            max_command_bytes: over.max_command_bytes.or(self.max_command_bytes),
            segment_bytes: over.segment_bytes.or(self.segment_bytes),
            raft_listen: over.raft_listen.or(self.raft_listen),
            peer_source_ip: over.peer_source_ip.or(self.peer_source_ip),
            tls: match (self.tls, over.tls) {
                (Some(file), Some(flags)) => Some(file.merge(flags)),
                (file, flags) => flags.or(file),
            },
            lease_reads: over.lease_reads.or(self.lease_reads),
            max_connections: over.max_connections.or(self.max_connections),
            max_admin_connections: over.max_admin_connections.or(self.max_admin_connections),
            max_pipelined_requests: over.max_pipelined_requests.or(self.max_pipelined_requests),
            max_request_bytes: over.max_request_bytes.or(self.max_request_bytes),
            request_buffer_budget_bytes: over
                .request_buffer_budget_bytes
                .or(self.request_buffer_budget_bytes),
            output_soft_limit_bytes: over
                .output_soft_limit_bytes
                .or(self.output_soft_limit_bytes),
            output_hard_limit_bytes: over
                .output_hard_limit_bytes
                .or(self.output_hard_limit_bytes),
            write_timeout_secs: over.write_timeout_secs.or(self.write_timeout_secs),
            idle_timeout_secs: over.idle_timeout_secs.or(self.idle_timeout_secs),
            read_timeout_secs: over.read_timeout_secs.or(self.read_timeout_secs),
            // Users are a list like nodes: given at all, they replace the file's.
            users: if over.users.is_empty() {
                self.users
            } else {
                over.users
            },
            admin_token_hash: over.admin_token_hash.or(self.admin_token_hash),
            admin_open_reads: over.admin_open_reads.or(self.admin_open_reads),
            insecure: over.insecure.or(self.insecure),
            nodes: if over.nodes.is_empty() {
                self.nodes
            } else {
                over.nodes
            },
        }
    }

    /// Checks everything and resolves the addresses.
    pub fn validate(&self) -> Result<ServerConfig, ConfigError> {
        let id = self.id.ok_or(ConfigError::MissingId)?;
        if id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        let mut nodes = BTreeMap::new();
        // Every address in use, with who uses it, to refuse two things on one port.
        let mut used: HashMap<SocketAddr, String> = HashMap::new();
        let mut claim = |addr: SocketAddr, who: String| match used.get(&addr) {
            Some(first) if addr.port() != 0 => Err(ConfigError::DuplicateAddress {
                addr,
                first: first.clone(),
                second: who,
            }),
            _ => {
                used.insert(addr, who);
                Ok(())
            }
        };
        for spec in &self.nodes {
            if spec.id == 0 {
                return Err(ConfigError::ZeroId);
            }
            let raft = resolve(&spec.raft, &format!("node {} raft", spec.id))?;
            let client = resolve(&spec.client, &format!("node {} client", spec.id))?;
            for (addr, what) in [(raft, "raft"), (client, "client")] {
                if addr.port() == 0 {
                    return Err(ConfigError::BadAddress {
                        what: format!("node {} {what}", spec.id),
                        value: addr.to_string(),
                        reason: "port 0 cannot be reached by other nodes or clients".into(),
                    });
                }
            }
            let addrs = NodeAddrs {
                id: spec.id,
                raft,
                client,
            };
            if nodes.insert(spec.id, addrs).is_some() {
                return Err(ConfigError::DuplicateId(spec.id));
            }
            claim(raft, format!("node {} raft", spec.id))?;
            claim(client, format!("node {} client", spec.id))?;
        }
        if !nodes.contains_key(&id) {
            return Err(ConfigError::OwnIdMissing {
                id,
                known: nodes.keys().copied().collect(),
            });
        }
        let join = self.join.unwrap_or(false);
        if join && nodes.len() < 2 {
            return Err(ConfigError::JoinWithoutMembers);
        }
        let snapshot_entries = self.snapshot_entries.unwrap_or(DEFAULT_SNAPSHOT_ENTRIES);
        if snapshot_entries == 0 {
            return Err(ConfigError::ZeroSnapshotEntries);
        }
        let threads = self.threads.unwrap_or(DEFAULT_THREADS);
        if threads == 0 || threads > MAX_THREADS {
            return Err(ConfigError::BadThreads(threads));
        }
        if let Some(bytes) = self.segment_bytes {
            if bytes < MIN_SEGMENT_BYTES || !bytes.is_multiple_of(8) {
                return Err(ConfigError::BadSegmentBytes(bytes));
            }
        }
        let tls = match &self.tls {
            None => None,
            Some(raw) => Some(raw.validate(id)?),
        };
        let raft_listen = match self.raft_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(resolve(text, "raft_listen")?),
        };
        let admin = match self.admin.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(text) => {
                let addr = resolve(text, "admin")?;
                claim(addr, "admin".to_owned())?;
                Some(addr)
            }
        };
        let tick_ms = self.tick_ms.unwrap_or(DEFAULT_TICK_MS);
        if tick_ms == 0 || tick_ms > MAX_TICK_MS {
            return Err(ConfigError::BadTiming(format!(
                "tick_ms must be between 1 and {MAX_TICK_MS}, not {tick_ms}"
            )));
        }
        let [min_ms, max_ms] = self.election_ms.unwrap_or(DEFAULT_ELECTION_MS);
        if max_ms < min_ms {
            return Err(ConfigError::BadTiming(format!(
                "election_ms [{min_ms}, {max_ms}]: the maximum is below the minimum"
            )));
        }
        let (min_ticks, max_ticks) = (min_ms.div_ceil(tick_ms), max_ms.div_ceil(tick_ms));
        // Heartbeats go out every tick and must come well before anyone's election timeout.
        if min_ticks < 3 {
            return Err(ConfigError::BadTiming(format!(
                "election_ms minimum {min_ms} must be at least 3 ticks ({} ms with tick_ms = {tick_ms})",
                3 * tick_ms
            )));
        }
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("./raft-data/node-{id}")));
        let limits = self.limits()?;
        let users = Users::from_specs(&self.users).map_err(ConfigError::Auth)?;
        let admin_token = match self.admin_token_hash.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(AdminTokenHash::parse(text).map_err(ConfigError::Auth)?),
        };
        let admin_open_reads = self.admin_open_reads.unwrap_or(true);
        if !admin_open_reads && admin_token.is_none() {
            return Err(ConfigError::ClosedReadsWithoutToken);
        }
        let config = ServerConfig {
            id,
            cluster_id: self.cluster_id.unwrap_or(DEFAULT_CLUSTER_ID),
            nodes,
            data_dir,
            admin,
            forward: self.forward.unwrap_or(true),
            tick: Duration::from_millis(tick_ms),
            election_ticks: (min_ticks, max_ticks),
            snapshot_entries,
            retain_entries: self.retain_entries,
            join,
            threads,
            max_command_bytes: self.max_command_bytes,
            segment_bytes: self.segment_bytes,
            raft_listen,
            peer_source_ip: self.peer_source_ip,
            tls,
            lease_reads: self.lease_reads.unwrap_or(false),
            limits,
            users,
            admin_token,
            admin_open_reads,
            insecure: self.insecure.unwrap_or(false),
        };
        let exposed = config.exposed();
        if !exposed.is_empty() && !config.insecure {
            return Err(ConfigError::Exposed(exposed.join("; ")));
        }
        Ok(config)
    }

    /// The client and admin ports' limits: the defaults with the given settings over them.
    fn limits(&self) -> Result<ServerLimits, ConfigError> {
        let defaults = ServerLimits::default();
        let at_least =
            |name: &'static str, value: Option<usize>, min: usize, default: usize| match value {
                Some(value) if value < min => Err(ConfigError::BadLimit(format!(
                    "{name} must be at least {min}, not {value}"
                ))),
                Some(value) => Ok(value),
                None => Ok(default),
            };
        // 0 turns a timeout off.
        let optional_secs = |value: Option<u64>, default: Option<Duration>| match value {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
            None => default,
        };
        let max_request_len = at_least(
            "max_request_bytes",
            self.max_request_bytes,
            MIN_REQUEST_BYTES,
            defaults.resp.max_request_len,
        )?;
        let limits = ServerLimits {
            max_in_flight: at_least(
                "max_pipelined_requests",
                self.max_pipelined_requests,
                1,
                defaults.max_in_flight,
            )?,
            max_connections: at_least(
                "max_connections",
                self.max_connections,
                1,
                defaults.max_connections,
            )?,
            max_admin_connections: at_least(
                "max_admin_connections",
                self.max_admin_connections,
                1,
                defaults.max_admin_connections,
            )?,
            resp: RespLimits {
                max_request_len,
                ..defaults.resp
            },
            request_buffer_budget: at_least(
                "request_buffer_budget_bytes",
                self.request_buffer_budget_bytes,
                MIN_REQUEST_BYTES,
                defaults.request_buffer_budget,
            )?,
            output_soft_limit: at_least(
                "output_soft_limit_bytes",
                self.output_soft_limit_bytes,
                1,
                defaults.output_soft_limit,
            )?,
            output_hard_limit: at_least(
                "output_hard_limit_bytes",
                self.output_hard_limit_bytes,
                1,
                defaults.output_hard_limit,
            )?,
            output_write_timeout: match self.write_timeout_secs {
                Some(0) => {
                    return Err(ConfigError::BadLimit(
                        "write_timeout_secs must be at least 1".to_owned(),
                    ))
                }
                Some(secs) => Duration::from_secs(secs),
                None => defaults.output_write_timeout,
            },
            idle_timeout: optional_secs(self.idle_timeout_secs, defaults.idle_timeout),
            read_timeout: optional_secs(self.read_timeout_secs, defaults.read_timeout),
            ..defaults
        };
        if limits.output_hard_limit < limits.output_soft_limit {
            return Err(ConfigError::BadLimit(format!(
                "output_hard_limit_bytes ({}) is below output_soft_limit_bytes ({})",
                limits.output_hard_limit, limits.output_soft_limit
            )));
        }
        Ok(limits)
    }
}

/// Resolves `host:port` (an IP address or a name) to one socket address.
fn resolve(text: &str, what: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: String| ConfigError::BadAddress {
        what: what.to_owned(),
        value: text.to_owned(),
        reason,
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(bad("expected HOST:PORT".into()));
    }
    // The config_toml fuzz target must not send a DNS query for every name it invents.
    #[cfg(fuzzing)]
    if !text.starts_with("localhost:") {
        return Err(bad(
            "names other than localhost are not resolved in fuzzing builds".into(),
        ));
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect::<Vec<_>>();
    // Prefer IPv4 so that `localhost` means the same on every node.
    addrs.sort_by_key(|addr| !addr.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| bad("the name resolves to no address".into()))
}

/// Whether the client and admin ports ask clients for certificates (see
/// [`raftnet::tls::ClientAuth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertificates {
    /// Not asked for.
    None,
    /// Asked for and verified when given: on the admin port one from the CA authorizes
    /// cluster changes like the admin token.
    #[default]
    Optional,
    /// Required on every connection.
    Required,
}

impl From<ClientCertificates> for raftnet::tls::ClientAuth {
    fn from(setting: ClientCertificates) -> Self {
        match setting {
            ClientCertificates::None => raftnet::tls::ClientAuth::None,
            ClientCertificates::Optional => raftnet::tls::ClientAuth::Optional,
            ClientCertificates::Required => raftnet::tls::ClientAuth::Required,
        }
    }
}

/// The `[tls]` table (or the `--tls-*` flags); every field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// A `raftkv certs init` directory: `ca`, `cert` and `key` default to its `ca.pem`,
    /// `node-<id>.pem` and `node-<id>-key.pem`.
    pub dir: Option<PathBuf>,
    /// The CA certificate that peers' (and clients') certificates chain to.
    pub ca: Option<PathBuf>,
    /// This node's certificate: names `raft-node-<id>` and the addresses clients dial.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Mutual TLS between nodes (default true).
    pub peer: Option<bool>,
    /// TLS on the client (RESP) port (default true).
    pub client: Option<bool>,
    /// TLS on the admin port (default true).
    pub admin: Option<bool>,
    /// Client certificates on the client and admin ports (default optional).
    pub client_certificates: Option<ClientCertificates>,
}

impl RawTls {
    fn merge(self, over: RawTls) -> RawTls {
        RawTls {
            dir: over.dir.or(self.dir),
            ca: over.ca.or(self.ca),
            cert: over.cert.or(self.cert),
            key: over.key.or(self.key),
            peer: over.peer.or(self.peer),
            client: over.client.or(self.client),
            admin: over.admin.or(self.admin),
            client_certificates: over.client_certificates.or(self.client_certificates),
        }
    }

    fn validate(&self, id: u64) -> Result<TlsSettings, ConfigError> {
        let from_dir = |name: String| self.dir.as_ref().map(|dir| dir.join(name));
        let ca = self.ca.clone().or_else(|| from_dir("ca.pem".into()));
        let cert = self
            .cert
            .clone()
            .or_else(|| from_dir(format!("node-{id}.pem")));
        let key = self
            .key
            .clone()
            .or_else(|| from_dir(format!("node-{id}-key.pem")));
        let missing: Vec<&str> = [("ca", &ca), ("cert", &cert), ("key", &key)]
            .into_iter()
            .filter(|(_, path)| path.is_none())
            .map(|(name, _)| name)
            .collect();
        let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
            return Err(ConfigError::IncompleteTls(missing.join(", ")));
        };
        Ok(TlsSettings {
            files: raftnet::tls::TlsFiles { ca, cert, key },
            peer: self.peer.unwrap_or(true),
            client: self.client.unwrap_or(true),
            admin: self.admin.unwrap_or(true),
            client_certificates: self.client_certificates.unwrap_or_default(),
        })
    }
}

/// Validated TLS settings: the files (read when the server starts, and again on SIGHUP) and the
/// ports that use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub files: raftnet::tls::TlsFiles,
    pub peer: bool,
    pub client: bool,
    pub admin: bool,
    pub client_certificates: ClientCertificates,
}

/// A member's resolved addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeAddrs {
    pub id: u64,
    pub raft: SocketAddr,
    pub client: SocketAddr,
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub id: u64,
    pub cluster_id: u64,
    /// Every member, this node included.
    pub nodes: BTreeMap<u64, NodeAddrs>,
    pub data_dir: PathBuf,
    /// The admin HTTP address; `None` disables it.
    pub admin: Option<SocketAddr>,
    /// Followers forward writes to the leader; when off they answer `-MOVED`.
    pub forward: bool,
    pub tick: Duration,
    /// Election timeout range in ticks.
    pub election_ticks: (u64, u64),
    /// Applied entries between two snapshots.
    pub snapshot_entries: u64,
    /// Log entries kept behind a snapshot; `None`: the core's default (5,000); 0: none.
    pub retain_entries: Option<u64>,
    /// Start without a configuration, to be added to a running cluster.
    pub join: bool,
    /// Threads of the async runtime. With 1 (the default) the raft loop, the transport, the
    /// apply task and the client connections share one thread: a hand-off between them is a
    /// function call instead of a wake-up of another thread, which on a small machine costs more
    /// than the work handed off (measured in docs/benchmarks/durable.md). The log writer thread
    /// and blocking snapshot writes come on top. More threads help when one core cannot keep up
    /// with the clients.
    pub threads: usize,
    /// Largest encoded write command; `None`: the runtime's default (see
    /// `raftnet::runtime::NodeConfig::max_command_bytes`).
    pub max_command_bytes: Option<usize>,
    /// Size of each preallocated log segment file; `None`: the log's default (64 MiB).
    pub segment_bytes: Option<u64>,
    /// Where the raft port listens, when not at this node's raft address.
    pub raft_listen: Option<SocketAddr>,
    /// Local address of connections to peers; `None`: the OS picks.
    pub peer_source_ip: Option<IpAddr>,
    /// TLS files and the ports that use them; `None`: plain TCP everywhere.
    pub tls: Option<TlsSettings>,
    /// Leaders serve reads on a lease (the core's `Config::lease_reads`).
    pub lease_reads: bool,
    /// Bounds of the client and admin ports.
    pub limits: ServerLimits,
    /// Users of the RESP port; empty: no authentication.
    pub users: Users,
    /// The admin port's bearer token (its digest); `None`: the admin port asks for none.
    pub admin_token: Option<AdminTokenHash>,
    /// The admin port's reads (status, metrics, cluster view) need no token.
    pub admin_open_reads: bool,
    /// Ports listed by [`ServerConfig::exposed`] are allowed (and warned about at start).
    pub insecure: bool,
}

impl ServerConfig {
    /// A configuration with the defaults for member `id` of `nodes` (for tests and tools).
    pub fn new(
        id: u64,
        nodes: impl IntoIterator<Item = NodeAddrs>,
        data_dir: impl Into<PathBuf>,
    ) -> ServerConfig {
        let tick_ms = DEFAULT_TICK_MS;
        ServerConfig {
            id,
            cluster_id: DEFAULT_CLUSTER_ID,
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            data_dir: data_dir.into(),
            admin: None,
            forward: true,
            tick: Duration::from_millis(tick_ms),
            election_ticks: (
                DEFAULT_ELECTION_MS[0] / tick_ms,
                DEFAULT_ELECTION_MS[1] / tick_ms,
            ),
            snapshot_entries: DEFAULT_SNAPSHOT_ENTRIES,
            retain_entries: None,
            join: false,
            threads: DEFAULT_THREADS,
            max_command_bytes: None,
            segment_bytes: None,
            raft_listen: None,
            peer_source_ip: None,
            tls: None,
            lease_reads: false,
            limits: ServerLimits::default(),
            users: Users::default(),
            admin_token: None,
            admin_open_reads: true,
            insecure: false,
        }
    }

    /// Whether clients must authenticate anywhere: users on the RESP port or a token on the
    /// admin port.
    pub fn auth_configured(&self) -> bool {
        !self.users.is_empty() || self.admin_token.is_some()
    }

    /// This node's ports that listen beyond loopback without protection, each with why: the
    /// raft port without mutual TLS; the client port without TLS or without users; the admin
    /// port without TLS, or without a token or client certificates. Validation refuses them
    /// unless `insecure` is set: anyone who can reach such a port can read and write every key,
    /// change the membership, or pose as a node.
    pub fn exposed(&self) -> Vec<String> {
        let Some(me) = self.me() else {
            return Vec::new();
        };
        let tls = self.tls.as_ref();
        let mut exposed = Vec::new();
        let mut check = |what: &str, addr: SocketAddr, missing: Vec<&str>| {
            if !addr.ip().is_loopback() && !missing.is_empty() {
                exposed.push(format!(
                    "{what} port {addr} has no {}",
                    missing.join(" and no ")
                ));
            }
        };
        let peer_tls = tls.is_some_and(|t| t.peer);
        check(
            "raft",
            self.raft_listen.unwrap_or(me.raft),
            [(!peer_tls).then_some("peer TLS")]
                .into_iter()
                .flatten()
                .collect(),
        );
        let client_tls = tls.is_some_and(|t| t.client);
        check(
            "client",
            me.client,
            [
                (!client_tls).then_some("TLS"),
                self.users.is_empty().then_some("users ([[users]])"),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        if let Some(admin) = self.admin {
            let admin_tls = tls.is_some_and(|t| t.admin);
            let certificates =
                admin_tls && tls.is_some_and(|t| t.client_certificates != ClientCertificates::None);
            check(
                "admin",
                admin,
                [
                    (!admin_tls).then_some("TLS"),
                    (self.admin_token.is_none() && !certificates)
                        .then_some("admin token or client certificates"),
                ]
                .into_iter()
                .flatten()
                .collect(),
            );
        }
        exposed
    }

    /// This node's own addresses.
    pub fn me(&self) -> Option<&NodeAddrs> {
        self.nodes.get(&self.id)
    }

    /// The runtime's configuration for this node.
    pub fn node_config(&self) -> NodeConfig {
        let peers = self
            .nodes
            .values()
            .filter(|n| n.id != self.id)
            .map(|n| (NodeId(n.id), n.raft))
            .collect();
        let mut config = NodeConfig::new(
            NodeId(self.id),
            self.cluster_id,
            peers,
            self.data_dir.clone(),
        );
        config.tick = self.tick;
        config.join = self.join;
        config.raft.snapshot_after_entries = self.snapshot_entries;
        match self.retain_entries {
            // Nothing kept: not even what followers still need.
            Some(0) => config.raft.log_retention_bytes = 0,
            Some(entries) => config.raft.log_retention_entries = entries,
            None => {}
        }
        config.raft.forward_proposals = self.forward;
        config.raft.election_timeout_min_ticks = self.election_ticks.0;
        config.raft.election_timeout_max_ticks = self.election_ticks.1;
        config.max_command_bytes = self.max_command_bytes;
        config.peer_source_ip = self.peer_source_ip;
        config.raft.lease_reads = self.lease_reads;
        if let Some(bytes) = self.segment_bytes {
            config.segment_bytes = bytes;
        }
        config
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}{message}", path.as_ref().map(|p| format!("config file {}: ", p.display())).unwrap_or_default())]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("no node id: give `id` in the config file or --id")]
    MissingId,
    #[error("node ids start at 1; 0 is not a valid id")]
    ZeroId,
    #[error("no cluster members: give [[nodes]] tables in the config file or --node ID=RAFT_ADDR,CLIENT_ADDR for every member")]
    NoNodes,
    #[error("node id {0} appears more than once among the nodes")]
    DuplicateId(u64),
    #[error("this node's id {id} is not among the nodes (known ids: {known:?}); list every member, this one included")]
    OwnIdMissing { id: u64, known: Vec<u64> },
    #[error("bad {what} address '{value}': {reason}")]
    BadAddress {
        what: String,
        value: String,
        reason: String,
    },
    #[error("address {addr} is used twice: by {first} and by {second}")]
    DuplicateAddress {
        addr: SocketAddr,
        first: String,
        second: String,
    },
    #[error("bad timing: {0}")]
    BadTiming(String),
    #[error("a joining node must also list the current members it can reach (--node for each), not only itself")]
    JoinWithoutMembers,
    #[error("threads must be between 1 and {MAX_THREADS}, not {0}")]
    BadThreads(usize),
    #[error("snapshot_entries must be at least 1")]
    ZeroSnapshotEntries,
    #[error("segment_bytes must be a multiple of 8 and at least {MIN_SEGMENT_BYTES}, not {0}")]
    BadSegmentBytes(u64),
    #[error("[tls] needs ca, cert and key (or --tls-dir); missing: {0}")]
    IncompleteTls(String),
    #[error("refusing to serve beyond loopback unprotected: {0}. Configure [tls] (raftkv certs init), [[users]] and admin_token_hash, bind 127.0.0.1, or pass --insecure to accept the risk")]
    Exposed(String),
    #[error("bad limit: {0}")]
    BadLimit(String),
    #[error("{0}")]
    Auth(AuthError),
    #[error("admin_open_reads = false needs admin_token_hash: without a token nobody could read the admin port")]
    ClosedReadsWithoutToken,
}

/// `raftkv serve`'s flags. Each overrides the same setting of the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; flags override its settings.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// This node's id (must be one of the --node ids).
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
    /// Cluster id; nodes of different clusters refuse each other's connections [default: 1].
    #[arg(long, value_name = "N")]
    pub cluster_id: Option<u64>,
    /// A cluster member, repeated for every member including this one.
    #[arg(long = "node", value_name = "ID=RAFT_ADDR,CLIENT_ADDR")]
    pub nodes: Vec<NodeSpec>,
    /// Admin HTTP address (GET /status, /metrics) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Data directory for the Raft log [default: ./raft-data/node-<id>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Followers answer writes with -MOVED to the leader instead of forwarding them.
    #[arg(long)]
    pub no_forward: bool,
    /// Length of one Raft tick in milliseconds [default: 10].
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Election timeout range in milliseconds [default: 1000..2000].
    #[arg(long, value_name = "MIN..MAX")]
    pub election_ms: Option<ElectionRange>,
    /// Snapshot the store and compact the log after this many applied entries [default: 100000].
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<u64>,
    /// Log entries kept behind each snapshot, so a follower a little behind is sent entries
    /// rather than the snapshot; 0 keeps none [default: 5000].
    #[arg(long, value_name = "N")]
    pub retain_entries: Option<u64>,
    /// Join a running cluster: start without a configuration and wait to be added (`raftkv
    /// cluster add-learner` or `add`, at any member). List this node and the current members
    /// with --node.
    #[arg(long)]
    pub join: bool,
    /// Threads of the async runtime; 1 runs the node on one thread (plus its log writer)
    /// [default: 1].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Largest encoded write command in bytes; larger SETs are refused with -ERR value too
    /// large [default: just under the transport's 64 MiB frame limit].
    #[arg(long, value_name = "BYTES")]
    pub max_command_bytes: Option<usize>,
    /// Size of each preallocated log segment file in bytes (a multiple of 8, at least 4096)
    /// [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Listen for peers here instead of at this node's --node raft address (which is what the
    /// other nodes are told), e.g. behind a proxy or NAT.
    #[arg(long, value_name = "ADDR")]
    pub raft_listen: Option<String>,
    /// Local IP address of this node's connections to its peers [default: the OS picks].
    #[arg(long, value_name = "IP")]
    pub peer_source_ip: Option<IpAddr>,
    /// Leaders serve reads on a lease, without a confirmation round: faster, but correct only
    /// while no clock runs faster than the lease allows (Raft thesis §6.4.1).
    #[arg(long)]
    pub lease_reads: bool,
    /// TLS with the files of a `raftkv certs init` directory (ca.pem, node-<id>.pem,
    /// node-<id>-key.pem) on the peer, client and admin ports.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// TLS: the CA certificate [default: DIR/ca.pem with --tls-dir].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// TLS: this node's certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: this node's private key.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Client certificates on the client and admin ports [default: optional].
    #[arg(long, value_name = "WHEN")]
    pub tls_client_certificates: Option<ClientCertificates>,
    /// Open client connections; one more is answered -ERR max number of clients reached [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open admin HTTP connections; more are closed at once [default: 64].
    #[arg(long, value_name = "N")]
    pub max_admin_connections: Option<usize>,
    /// Requests of one client connection served at once; reading pauses beyond it [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_pipelined_requests: Option<usize>,
    /// Largest client request, headers included [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Bytes held for partially received requests across all client connections; a request past it is refused (-ERR server busy) and its connection closed [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    pub request_buffer_budget_bytes: Option<usize>,
    /// Unsent reply bytes of a connection above which its further pipelined requests wait until the client reads [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub output_soft_limit_bytes: Option<usize>,
    /// Unsent reply bytes (or one reply) that close a client connection [default: 134217728].
    #[arg(long, value_name = "BYTES")]
    pub output_hard_limit_bytes: Option<usize>,
    /// Seconds a client may read none of its pending replies before it is disconnected [default: 60].
    #[arg(long, value_name = "SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Seconds without a request before a client connection is closed; 0: never [default: 300].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a started request may take to arrive whole; 0: no limit [default: 30].
    #[arg(long, value_name = "SECS")]
    pub read_timeout_secs: Option<u64>,
    /// sha256:<hex> of the admin port's bearer token (`raftkv passwd --admin-token`); cluster
    /// changes then need `Authorization: Bearer <token>`. Users of the RESP port are set in the
    /// config file only ([[users]]).
    #[arg(long, value_name = "sha256:HEX")]
    pub admin_token_hash: Option<String>,
    /// GET /status, /metrics and /cluster need the admin token too (they are open by default).
    #[arg(long)]
    pub admin_closed_reads: bool,
    /// Serve on addresses beyond loopback without TLS and authentication (anyone who reaches
    /// a port can then read and write every key or change the cluster); logged as a warning.
    #[arg(long)]
    pub insecure: bool,
}

impl ServeArgs {
    /// The `--tls-*` flags as a `[tls]` layer, if any was given.
    fn tls_layer(&self) -> Option<RawTls> {
        let layer = RawTls {
            dir: self.tls_dir.clone(),
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_certificates: self.tls_client_certificates,
            ..RawTls::default()
        };
        (layer != RawTls::default()).then_some(layer)
    }

    /// The flags as a [`RawConfig`] layer.
    pub fn to_raw(&self) -> RawConfig {
        RawConfig {
            id: self.id,
            cluster_id: self.cluster_id,
            data_dir: self.data_dir.clone(),
            admin: self.admin.clone(),
            forward: self.no_forward.then_some(false),
            tick_ms: self.tick_ms,
            election_ms: self.election_ms.map(|range| range.0),
            snapshot_entries: self.snapshot_entries,
            retain_entries: self.retain_entries,
            join: self.join.then_some(true),
            threads: self.threads,
            max_command_bytes: self.max_command_bytes,
            segment_bytes: self.segment_bytes,
            raft_listen: self.raft_listen.clone(),
            peer_source_ip: self.peer_source_ip,
            tls: self.tls_layer(),
            lease_reads: self.lease_reads.then_some(true),
            max_connections: self.max_connections,
            max_admin_connections: self.max_admin_connections,
            max_pipelined_requests: self.max_pipelined_requests,
            max_request_bytes: self.max_request_bytes,
            request_buffer_budget_bytes: self.request_buffer_budget_bytes,
            output_soft_limit_bytes: self.output_soft_limit_bytes,
            output_hard_limit_bytes: self.output_hard_limit_bytes,
            write_timeout_secs: self.write_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            read_timeout_secs: self.read_timeout_secs,
            users: Vec::new(),
            admin_token_hash: self.admin_token_hash.clone(),
            admin_open_reads: self.admin_closed_reads.then_some(false),
            insecure: self.insecure.then_some(true),
            nodes: self.nodes.clone(),
        }
    }

    /// The file (if any) with the flags over it, validated.
    pub fn resolve(&self) -> Result<ServerConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => RawConfig::load(path)?,
            None => RawConfig::default(),
        };
        file.merge(self.to_raw()).validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        id = 2
        cluster_id = 7
        admin = "127.0.0.1:9102"
        tick_ms = 5
        election_ms = [100, 200]

        [[nodes]]
        id = 1
        raft = "127.0.0.1:7101"
        client = "127.0.0.1:6101"

        [[nodes]]
        id = 2
        raft = "127.0.0.1:7102"
        client = "127.0.0.1:6102"

        [[nodes]]
        id = 3
        raft = "127.0.0.1:7103"
        client = "127.0.0.1:6103"
    "#;

    fn spec(id: u64, raft: &str, client: &str) -> NodeSpec {
        NodeSpec {
            id,
            raft: raft.into(),
            client: client.into(),
        }
    }

    #[test]
    fn a_file_validates_with_defaults_filled_in() {
        let config = RawConfig::from_toml(FILE).unwrap().validate().unwrap();
        assert_eq!(config.id, 2);
        assert_eq!(config.cluster_id, 7);
        assert_eq!(config.admin, Some("127.0.0.1:9102".parse().unwrap()));
        assert!(config.forward);
        assert_eq!(config.tick, Duration::from_millis(5));
        assert_eq!(config.election_ticks, (20, 40));
        assert_eq!(config.data_dir, PathBuf::from("./raft-data/node-2"));
        assert_eq!(config.nodes.len(), 3);
        assert_eq!(
            config.me().unwrap().client,
            "127.0.0.1:6102".parse().unwrap()
        );
        let node = config.node_config();
        assert_eq!(node.peers.len(), 2);
        assert!(!node.peers.contains_key(&NodeId(2)));
        assert!(node.raft.forward_proposals);
        assert_eq!(node.raft.election_timeout_min_ticks, 20);
        assert_eq!(node.raft.snapshot_after_entries, DEFAULT_SNAPSHOT_ENTRIES);
        assert!(!node.join);
        assert_eq!(config.threads, 1);
        node.raft.validate().unwrap();
    }

    /// Beyond loopback, every port needs its protection, or --insecure.
    #[test]
    fn unprotected_ports_beyond_loopback_are_refused_unless_insecure() {
        let public = FILE
            .replace("127.0.0.1:7102", "0.0.0.0:7102")
            .replace("127.0.0.1:6102", "0.0.0.0:6102")
            .replace("127.0.0.1:9102", "0.0.0.0:9102");
        let error = RawConfig::from_toml(&public)
            .unwrap()
            .validate()
            .unwrap_err();
        let ConfigError::Exposed(text) = &error else {
            panic!("{error}");
        };
        for port in ["raft port", "client port", "admin port"] {
            assert!(text.contains(port), "{text}");
        }
        let insecure = format!("insecure = true\n{public}");
        let config = RawConfig::from_toml(&insecure).unwrap().validate().unwrap();
        assert_eq!(config.exposed().len(), 3);

        // TLS alone is not enough for the client port: it also needs users.
        let tls = "[tls]\ndir = \"/certs\"\n";
        let with_tls = public.replacen("[[nodes]]", &format!("{tls}\n[[nodes]]"), 1);
        let error = RawConfig::from_toml(&with_tls)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            matches!(&error, ConfigError::Exposed(text) if !text.contains("raft port")
                && text.contains("client port 0.0.0.0:6102 has no users")
                && !text.contains("admin port")),
            "{error}"
        );
        // Loopback stays open without any of it.
        assert!(RawConfig::from_toml(FILE).unwrap().validate().is_ok());
    }

    #[test]
    fn a_joining_node_starts_without_voters() {
        let text = format!("join = true\nsnapshot_entries = 50\n{FILE}");
        let config = RawConfig::from_toml(&text).unwrap().validate().unwrap();
        assert!(config.join);
        let node = config.node_config();
        assert!(node.join);
        assert_eq!(node.peers.len(), 2, "it knows the members it can reach");
        assert_eq!(node.raft.snapshot_after_entries, 50);
        // The flag does the same.
        let args = ServeArgs {
            join: true,
            ..ServeArgs::default()
        };
        let config = RawConfig::from_toml(FILE)
            .unwrap()
            .merge(args.to_raw())
            .validate()
            .unwrap();
        assert!(config.join);
        // Alone in its list, it could answer nobody.
        let alone = RawConfig {
            join: Some(true),
            nodes: vec![spec(1, "127.0.0.1:7001", "127.0.0.1:6001")],
            ..base()
        };
        assert_eq!(alone.validate(), Err(ConfigError::JoinWithoutMembers));
        let zero = RawConfig {
            snapshot_entries: Some(0),
            ..base()
        };
        assert_eq!(zero.validate(), Err(ConfigError::ZeroSnapshotEntries));
        for bytes in [0, 4095, 4100] {
            let bad = RawConfig {
                segment_bytes: Some(bytes),
                ..base()
            };
            assert_eq!(bad.validate(), Err(ConfigError::BadSegmentBytes(bytes)));
        }
        let small = RawConfig {
            segment_bytes: Some(1 << 20),
            ..base()
        };
        let config = small.validate().expect("valid");
        assert_eq!(config.node_config().segment_bytes, 1 << 20);
    }

    #[test]
    fn flags_override_the_file() {
        let args = ServeArgs {
            id: Some(3),
            no_forward: true,
            election_ms: Some("150..300".parse().unwrap()),
            tick_ms: Some(10),
            admin: Some("off".into()),
            data_dir: Some("/tmp/x".into()),
            threads: Some(2),
            ..ServeArgs::default()
        };
        let config = RawConfig::from_toml(FILE)
            .unwrap()
            .merge(args.to_raw())
            .validate()
            .unwrap();
        assert_eq!(config.id, 3);
        assert_eq!(config.cluster_id, 7);
        assert!(!config.forward);
        assert_eq!(config.admin, None);
        assert_eq!(config.election_ticks, (15, 30));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.threads, 2);
        assert!(!config.node_config().raft.forward_proposals);
    }

    #[test]
    fn listen_source_and_lease_settings_reach_the_runtime() {
        let plain = RawConfig::from_toml(FILE).unwrap().validate().unwrap();
        assert_eq!(plain.raft_listen, None);
        assert!(!plain.node_config().raft.lease_reads);
        let args = ServeArgs {
            raft_listen: Some("127.0.0.12:7000".into()),
            peer_source_ip: Some("127.0.0.12".parse().unwrap()),
            lease_reads: true,
            ..ServeArgs::default()
        };
        let config = RawConfig::from_toml(FILE)
            .unwrap()
            .merge(args.to_raw())
            .validate()
            .unwrap();
        assert_eq!(config.raft_listen, Some("127.0.0.12:7000".parse().unwrap()));
        let node = config.node_config();
        assert_eq!(node.peer_source_ip, Some("127.0.0.12".parse().unwrap()));
        assert!(node.raft.lease_reads);
        node.raft.validate().unwrap();
        let bad = RawConfig {
            raft_listen: Some("nowhere".into()),
            ..RawConfig::from_toml(FILE).unwrap()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::BadAddress { .. })
        ));
    }

    #[test]
    fn node_flags_parse_and_replace_the_file_list() {
        let one: NodeSpec = "1=127.0.0.1:7001,127.0.0.1:6001".parse().unwrap();
        assert_eq!(one, spec(1, "127.0.0.1:7001", "127.0.0.1:6001"));
        for bad in ["", "1", "x=a,b", "1=a", "1=,b", "1=a,", "1=a,b,c"] {
            assert!(bad.parse::<NodeSpec>().is_err(), "{bad}");
        }
        let raw = RawConfig::from_toml(FILE).unwrap().merge(RawConfig {
            id: Some(1),
            nodes: vec![one],
            ..RawConfig::default()
        });
        let config = raw.validate().unwrap();
        assert_eq!(config.nodes.len(), 1);
        assert!(config.node_config().peers.is_empty());
    }

    #[test]
    fn limits_come_from_the_file_and_flags_with_defaults() {
        let plain = RawConfig::from_toml(FILE).unwrap().validate().unwrap();
        assert_eq!(plain.limits, ServerLimits::default());
        let text = format!(
            "max_connections = 50\nmax_pipelined_requests = 8\nmax_request_bytes = 4096\n\
             request_buffer_budget_bytes = 65536\noutput_soft_limit_bytes = 1000\n\
             output_hard_limit_bytes = 2000\nwrite_timeout_secs = 5\nidle_timeout_secs = 0\n\
             read_timeout_secs = 7\nmax_admin_connections = 3\n{FILE}"
        );
        let args = ServeArgs {
            max_connections: Some(60),
            ..ServeArgs::default()
        };
        let config = RawConfig::from_toml(&text)
            .unwrap()
            .merge(args.to_raw())
            .validate()
            .unwrap();
        let limits = config.limits;
        assert_eq!(limits.max_connections, 60);
        assert_eq!(limits.max_admin_connections, 3);
        assert_eq!(limits.max_in_flight, 8);
        assert_eq!(limits.resp.max_request_len, 4096);
        assert_eq!(limits.request_buffer_budget, 65536);
        assert_eq!(limits.output_soft_limit, 1000);
        assert_eq!(limits.output_hard_limit, 2000);
        assert_eq!(limits.output_write_timeout, Duration::from_secs(5));
        assert_eq!(limits.idle_timeout, None);
        assert_eq!(limits.read_timeout, Some(Duration::from_secs(7)));
        for bad in [
            "max_connections = 0",
            "max_pipelined_requests = 0",
            "max_request_bytes = 10",
            "write_timeout_secs = 0",
            "output_soft_limit_bytes = 10\noutput_hard_limit_bytes = 5",
        ] {
            let raw = RawConfig::from_toml(&format!("{bad}\n{FILE}")).unwrap();
            assert!(
                matches!(raw.validate(), Err(ConfigError::BadLimit(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn users_and_the_admin_token_come_from_the_file() {
        let hash = crate::auth::hash_password(b"pw").unwrap();
        let token = AdminTokenHash::of("t").to_config_string();
        let text = format!(
            "admin_token_hash = \"{token}\"\nadmin_open_reads = false\n{FILE}\n\
             [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nrole = \"read-write\"\n\
             keys = [\"app:*\"]\n"
        );
        let config = RawConfig::from_toml(&text).unwrap().validate().unwrap();
        assert!(config.auth_configured());
        assert!(!config.admin_open_reads);
        assert!(config.admin_token.as_ref().unwrap().matches("t"));
        let alice = config.users.get("alice").unwrap();
        assert_eq!(alice.role, crate::auth::Role::ReadWrite);
        assert!(alice.may_access(b"app:1") && !alice.may_access(b"cfg:1"));
        assert!(!RawConfig::from_toml(FILE)
            .unwrap()
            .validate()
            .unwrap()
            .auth_configured());
        // A plaintext password, a bad role, a malformed token, closed reads without a token.
        let plain = format!(
            "{FILE}\n[[users]]\nname = \"a\"\npassword_hash = \"secret\"\nrole = \"admin\"\n"
        );
        assert!(matches!(
            RawConfig::from_toml(&plain).unwrap().validate(),
            Err(ConfigError::Auth(
                crate::auth::AuthError::BadPasswordHash { .. }
            ))
        ));
        let role = format!(
            "{FILE}\n[[users]]\nname = \"a\"\npassword_hash = \"{hash}\"\nrole = \"root\"\n"
        );
        assert!(RawConfig::from_toml(&role).is_err());
        let bad_token = format!("admin_token_hash = \"sha256:12\"\n{FILE}");
        assert!(matches!(
            RawConfig::from_toml(&bad_token).unwrap().validate(),
            Err(ConfigError::Auth(crate::auth::AuthError::BadTokenHash))
        ));
        let closed = format!("admin_open_reads = false\n{FILE}");
        assert_eq!(
            RawConfig::from_toml(&closed).unwrap().validate(),
            Err(ConfigError::ClosedReadsWithoutToken)
        );
    }

    #[test]
    fn election_ranges_parse() {
        assert_eq!(
            "150..300".parse::<ElectionRange>(),
            Ok(ElectionRange([150, 300]))
        );
        assert!("150".parse::<ElectionRange>().is_err());
        assert!("a..b".parse::<ElectionRange>().is_err());
    }

    fn base() -> RawConfig {
        RawConfig {
            id: Some(1),
            nodes: vec![
                spec(1, "127.0.0.1:7001", "127.0.0.1:6001"),
                spec(2, "127.0.0.1:7002", "127.0.0.1:6002"),
            ],
            ..RawConfig::default()
        }
    }

    #[test]
    fn every_mistake_has_its_own_error() {
        let check = |raw: RawConfig| raw.validate().unwrap_err();
        for threads in [0, MAX_THREADS + 1] {
            assert_eq!(
                check(RawConfig {
                    threads: Some(threads),
                    ..base()
                }),
                ConfigError::BadThreads(threads)
            );
        }
        assert_eq!(
            check(RawConfig { id: None, ..base() }),
            ConfigError::MissingId
        );
        assert_eq!(
            check(RawConfig {
                id: Some(0),
                ..base()
            }),
            ConfigError::ZeroId
        );
        assert_eq!(
            check(RawConfig {
                nodes: vec![],
                ..base()
            }),
            ConfigError::NoNodes
        );
        assert_eq!(
            check(RawConfig {
                id: Some(9),
                ..base()
            }),
            ConfigError::OwnIdMissing {
                id: 9,
                known: vec![1, 2]
            }
        );
        let mut dup = base();
        dup.nodes.push(spec(2, "127.0.0.1:7003", "127.0.0.1:6003"));
        assert_eq!(check(dup), ConfigError::DuplicateId(2));
        let mut dup = base();
        dup.nodes[1].raft = "127.0.0.1:6001".into();
        assert!(matches!(
            check(dup),
            ConfigError::DuplicateAddress { ref first, ref second, .. }
                if first == "node 1 client" && second == "node 2 raft"
        ));
        let mut bad = base();
        bad.nodes[0].client = "nowhere".into();
        assert!(
            matches!(check(bad), ConfigError::BadAddress { ref what, .. } if what == "node 1 client")
        );
        let mut bad = base();
        bad.nodes[0].raft = "127.0.0.1:0".into();
        assert!(matches!(check(bad), ConfigError::BadAddress { .. }));
        let mut bad = base();
        bad.nodes[0].raft = "127.0.0.1:99999".into();
        assert!(matches!(check(bad), ConfigError::BadAddress { .. }));
        assert!(matches!(
            check(RawConfig {
                admin: Some("127.0.0.1:6002".into()),
                ..base()
            }),
            ConfigError::DuplicateAddress { .. }
        ));
        assert!(matches!(
            check(RawConfig {
                tick_ms: Some(0),
                ..base()
            }),
            ConfigError::BadTiming(_)
        ));
        assert!(matches!(
            check(RawConfig {
                election_ms: Some([300, 150]),
                ..base()
            }),
            ConfigError::BadTiming(_)
        ));
        assert!(matches!(
            check(RawConfig {
                election_ms: Some([20, 30]),
                ..base()
            }),
            ConfigError::BadTiming(_)
        ));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_parse_errors() {
        let err = RawConfig::from_toml("id = 1\nbogus = 2\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = RawConfig::from_toml("id = \"one\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = RawConfig::load(Path::new("/definitely/not/here.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn the_example_config_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/raftkv.toml");
        let config = RawConfig::load(&path).unwrap().validate().unwrap();
        assert_eq!(config.nodes.len(), 3);
    }
}
