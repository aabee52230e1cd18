//! `raftkv bench`: closed-loop load against a raftkv cluster, measured the way
//! `shared/tools/kvload` measures etcd, so the figures compare with `benchmarks.md`.
//!
//! - **Closed loop, no pipelining**: each client is its own TCP connection with exactly one
//!   request outstanding; it sends the next as soon as the reply arrives.
//! - **Latency** runs from just before a request is sent to just after its whole reply arrived,
//!   recorded in nanoseconds in an HdrHistogram (3 significant digits), shown in microseconds.
//!   With `--duration`, only requests that start after the warm-up and finish before the end
//!   count, and ops/s = counted requests / duration. With `--count N`, the clients share N
//!   requests, there is no warm-up, and ops/s = N / wall time.
//! - **Workload** (as kvload): keys are `k` and a zero-padded index, 8 bytes, uniform over
//!   100,000; values are 256 random alphanumerics per client.
//! - **Errors** are counted (not timed); the client pauses 10 ms after one. The client library
//!   retries `-TRYAGAIN` and follows `-MOVED` within a request, so such a request counts once,
//!   with its whole latency.
//!
//! Modes:
//!
//! | mode | request | goes through |
//! | --- | --- | --- |
//! | `set` | `SET k<i> <256 B>` | Raft: replicated, fsynced, applied |
//! | `get` | `GET k<i>` | a linearizable read (read barrier), no log entry |
//! | `empty` | `SET e ""` | Raft with the smallest entry: the cheapest write |
//! | `ping` | `PING` | nothing: the RESP path alone, a no-consensus baseline |
//!
//! By default every client connects to the leader (`--connect leader`), as the etcd figures were
//! measured; `--connect all` spreads clients over all nodes, so followers forward.

use crate::client::{
    resolve_nodes, Client, ClientConfig, ClientError, NodeInfo, Security, SecurityArgs,
};
use crate::demo::{ClusterError, LocalCluster, LocalClusterOptions, Protection};
use crate::resp::Reply;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::time::{sleep, Instant};

/// What each request does; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    Set,
    Get,
    Empty,
    Ping,
}

/// Which nodes the clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectTo {
    /// Every client to the leader (found with INFO).
    Leader,
    /// Client i to node i mod n: followers forward writes.
    All,
}

/// `raftkv bench`
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// Client (RESP) addresses of the cluster's nodes, host:port, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:6379")]
    pub nodes: Vec<String>,
    /// Start a local 3-node cluster (child processes of this executable, durable data in a
    /// temporary directory) and benchmark it instead of --nodes.
    #[arg(long)]
    pub local: bool,
    /// With --local: secure the cluster as the demo does (mutual TLS, TLS and users on the
    /// client ports); the clients then speak TLS and authenticate.
    #[arg(long, requires = "local")]
    pub secure: bool,
    /// Concurrent clients, one connection each; one row per value.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024")]
    pub clients: Vec<usize>,
    /// Request kinds, comma separated: set, get, empty (SET of an empty value to one key, the
    /// cheapest write through Raft) or ping (no consensus at all).
    #[arg(
        long = "mode",
        value_name = "MODE",
        value_enum,
        value_delimiter = ',',
        default_value = "set"
    )]
    pub modes: Vec<BenchMode>,
    /// Measured seconds per row (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds of load before each row's measurement.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Requests per row instead of --duration (no warm-up).
    #[arg(long)]
    pub count: Option<u64>,
    /// Which nodes the clients connect to.
    #[arg(long, value_enum, default_value = "leader")]
    pub connect: ConnectTo,
    /// Key length in bytes: `k` and a zero-padded index.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value length in bytes (set mode).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Size of the uniformly drawn key space.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Write every key once before the runs (pipelined, unmeasured), so that gets hit.
    #[arg(long)]
    pub preload: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Free-form tag copied into the JSON.
    #[arg(long, default_value = "")]
    pub label: String,
    /// With --local: directory for the nodes' data (created; must be empty). Default: a new
    /// temporary directory, removed at the end.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --local: the raftkv executable to run `serve` with. Default: this executable.
    #[arg(long, hide = true)]
    pub server_bin: Option<PathBuf>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            nodes: vec!["127.0.0.1:6379".to_owned()],
            local: false,
            secure: false,
            clients: vec![1, 64, 256, 1024],
            modes: vec![BenchMode::Set],
            duration: 10.0,
            warmup: 2.0,
            count: None,
            connect: ConnectTo::Leader,
            key_size: 8,
            value_size: 256,
            keys: 100_000,
            preload: false,
            json: None,
            label: String::new(),
            data_dir: None,
            server_bin: None,
            security: SecurityArgs::default(),
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub mode: BenchMode,
    pub clients: usize,
    /// Requests that succeeded within the measured window.
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    pub get_misses: u64,
    /// The first few errors, described.
    pub error_samples: Vec<String>,
}

/// Everything one `raftkv bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub label: String,
    /// The addresses the clients connected to (the leader first).
    pub nodes: Vec<String>,
    pub local: bool,
    pub connect: ConnectTo,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub count: Option<u64>,
    pub key_size: usize,
    pub value_size: usize,
    pub keys: u64,
    pub rows: Vec<BenchRow>,
    pub unix_time: u64,
}

impl BenchReport {
    /// The rows as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| mode | clients | ops/s | mean µs | p50 µs | p99 µs | p999 µs | max µs | errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                serde_json::to_value(row.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                row.clients,
                thousands(row.ops_per_s.round() as u64),
                row.mean_us,
                row.p50_us,
                row.p99_us,
                row.p999_us,
                row.max_us,
                row.errors
            );
        }
        out
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("invalid option: {0}")]
    Args(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: ClientError,
    },
    #[error("no node reports itself leader ({0})")]
    NoLeader(String),
    #[error(transparent)]
    Tls(#[from] raftnet::tls::TlsError),
    #[error("cannot write {}: {source}", .path.display())]
    Json {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn client_error(what: impl Into<String>) -> impl FnOnce(ClientError) -> BenchError {
    let what = what.into();
    move |source| BenchError::Client { what, source }
}

/// Most clients in one row: each is a connection, and file descriptors are finite.
pub const MAX_CLIENTS: usize = 10_000;
/// Errors described in a row; the rest are only counted.
const ERROR_SAMPLES: usize = 5;

/// Runs the benchmark and prints the table (and progress lines on stderr).
pub async fn run(args: BenchArgs) -> Result<BenchReport, BenchError> {
    validate(&args)?;
    raise_open_file_limit();
    let mut cluster = None;
    let nodes = if args.local {
        eprintln!("raftkv bench: starting a local 3-node cluster");
        let local = LocalCluster::start(LocalClusterOptions {
            dir: args.data_dir.clone(),
            server_bin: args.server_bin.clone(),
            protection: match args.secure {
                true => Protection::Secure,
                false => Protection::Plain,
            },
            ..LocalClusterOptions::default()
        })
        .await?;
        local
            .wait_for_leader(None, 0, Duration::from_secs(10))
            .await?;
        // The admin user: `INFO` finds the leader, and every key is allowed.
        let target = (local.client_addrs(), local.operator_security());
        cluster = Some(local);
        target
    } else {
        let nodes = resolve_nodes(&args.nodes)
            .await
            .map_err(client_error("--nodes"))?;
        (nodes, args.security.security()?)
    };
    let (nodes, security) = nodes;
    let result = run_on(&args, nodes, security).await;
    if let Some(mut local) = cluster {
        local.shutdown(Duration::from_secs(5)).await;
    }
    let report = result?;
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report).expect("the report serializes");
        text.push('\n');
        std::fs::write(path, text).map_err(|source| BenchError::Json {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

/// Runs the benchmark on a fresh multi-thread runtime: for `main`.
pub fn run_cli(args: BenchArgs) -> ExitCode {
    match crate::block_on_fresh_runtime("raftkv bench", crate::RuntimeThreads::PerCore, run(args)) {
        None => ExitCode::FAILURE,
        Some(Ok(_)) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            eprintln!("raftkv bench: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &BenchArgs) -> Result<(), BenchError> {
    let bad = |text: String| Err(BenchError::Args(text));
    if args.clients.is_empty() || args.clients.iter().any(|&c| c == 0 || c > MAX_CLIENTS) {
        return bad(format!("--clients must be 1 to {MAX_CLIENTS}"));
    }
    if args.modes.is_empty() {
        return bad("--mode needs at least one mode".to_owned());
    }
    let seconds_ok = |s: f64| s.is_finite() && s >= 0.0;
    if !(seconds_ok(args.duration) && args.duration > 0.0 && seconds_ok(args.warmup)) {
        return bad("--duration must be positive and --warmup not negative".to_owned());
    }
    if args.count == Some(0) {
        return bad("--count must be positive".to_owned());
    }
    if args.keys == 0 {
        return bad("--keys must be positive".to_owned());
    }
    let digits = (args.keys - 1).to_string().len();
    if args.key_size <= digits {
        return bad(format!(
            "--key-size {} is too small for --keys {} (need more than {digits})",
            args.key_size, args.keys
        ));
    }
    Ok(())
}

/// Lifts the soft open-file limit to the hard one: a row of 1,024 clients needs 1,024 sockets
/// here, and as many in a leader started by `--local` (which inherits the limit).
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

async fn run_on(
    args: &BenchArgs,
    nodes: Vec<SocketAddr>,
    security: Security,
) -> Result<BenchReport, BenchError> {
    let nodes = match args.connect {
        ConnectTo::Leader => {
            let (nodes, found) = leader_first(nodes, &security).await?;
            if found {
                eprintln!("raftkv bench: clients connect to the leader {}", nodes[0]);
            }
            nodes
        }
        ConnectTo::All => {
            eprintln!("raftkv bench: clients connect to all of {nodes:?}");
            nodes
        }
    };
    let workload = Arc::new(Workload::new(args));
    if args.preload {
        preload(&nodes, &workload, &security).await?;
    }
    let mut rows = Vec::new();
    for &mode in &args.modes {
        for &clients in &args.clients {
            let row = run_row(args, &nodes, &security, &workload, mode, clients).await?;
            eprintln!(
                "raftkv bench: {:?} x{}: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs, errors {}",
                mode, clients, row.ops_per_s, row.p50_us, row.p99_us, row.errors
            );
            for sample in &row.error_samples {
                eprintln!("  error: {sample}");
            }
            rows.push(row);
        }
    }
    Ok(BenchReport {
        label: args.label.clone(),
        nodes: nodes.iter().map(ToString::to_string).collect(),
        local: args.local,
        connect: args.connect,
        warmup_s: args.warmup,
        duration_s: args.duration,
        count: args.count,
        key_size: args.key_size,
        value_size: args.value_size,
        keys: args.keys,
        rows,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// `nodes` with the leader first (asking each node's INFO until one leads, for up to 10 s), and
/// whether it was found: when the nodes name a leader that is not among them, `nodes` unchanged.
async fn leader_first(
    mut nodes: Vec<SocketAddr>,
    security: &Security,
) -> Result<(Vec<SocketAddr>, bool), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    loop {
        let mut seen = Vec::new();
        let mut leader_elsewhere = None;
        for (index, &addr) in nodes.iter().enumerate() {
            let info: Result<NodeInfo, ClientError> = match Client::new(vec![addr], config) {
                Ok(client) => client.with_security(security.clone()).info().await,
                Err(error) => Err(error),
            };
            match info {
                Ok(info) if info.is_leader() => {
                    nodes.swap(0, index);
                    return Ok((nodes, true));
                }
                Ok(info) => {
                    leader_elsewhere = leader_elsewhere.or(info.leader_id);
                    seen.push(format!("{addr}: {}", info.role));
                }
                Err(error) => seen.push(format!("{addr}: {error}")),
            }
        }
        if let Some(leader) = leader_elsewhere {
            // The leader is not among --nodes: measure through these nodes, which forward.
            eprintln!(
                "raftkv bench: warning: the leader (node {leader}) is not in --nodes; \
                 requests go through {} and are forwarded",
                seen.join(", ")
            );
            return Ok((nodes, false));
        }
        if Instant::now() >= deadline {
            return Err(BenchError::NoLeader(seen.join(", ")));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Keys and values, as kvload makes them.
struct Workload {
    key_size: usize,
    value_size: usize,
    keys: u64,
}

impl Workload {
    fn new(args: &BenchArgs) -> Workload {
        Workload {
            key_size: args.key_size,
            value_size: args.value_size,
            keys: args.keys,
        }
    }

    /// `k` and the zero-padded index, `key_size` bytes.
    fn key(&self, index: u64, buf: &mut Vec<u8>) {
        buf.clear();
        let _ = std::io::Write::write_fmt(
            buf,
            format_args!("k{:0width$}", index, width = self.key_size - 1),
        );
    }

    fn value(&self, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..self.value_size)
            .map(|_| rng.alphanumeric() as u8)
            .collect()
    }
}

/// Writes every key once, pipelined over a few connections.
async fn preload(
    nodes: &[SocketAddr],
    workload: &Arc<Workload>,
    security: &Security,
) -> Result<(), BenchError> {
    const CONNECTIONS: u64 = 16;
    const BATCH: u64 = 256;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let workload = workload.clone();
        let nodes = nodes.to_vec();
        let security = security.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(nodes, ClientConfig::default())?.with_security(security);
            let value = Bytes::from(workload.value(connection));
            let indexes: Vec<u64> = (connection..workload.keys)
                .step_by(CONNECTIONS as usize)
                .collect();
            for chunk in indexes.chunks(BATCH as usize) {
                let requests: Vec<[Bytes; 3]> = chunk
                    .iter()
                    .map(|&index| {
                        let mut key = Vec::new();
                        workload.key(index, &mut key);
                        [Bytes::from_static(b"SET"), Bytes::from(key), value.clone()]
                    })
                    .collect();
                for result in client.pipeline(&requests).await {
                    result?;
                }
            }
            Ok::<(), ClientError>(())
        }));
    }
    for task in tasks {
        task.await
            .expect("a preload task panicked")
            .map_err(client_error("preload"))?;
    }
    eprintln!(
        "raftkv bench: preloaded {} keys in {:.1} s",
        workload.keys,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// When one client's requests count.
#[derive(Clone, Copy)]
enum Window {
    /// Requests starting at or after `from` and finishing by `end`; stop at `end`.
    Timed { from: Instant, end: Instant },
    /// Exactly this many requests, all counted.
    Count(u64),
}

/// One client's tally.
struct Tally {
    histogram: Histogram<u64>,
    errors: u64,
    get_misses: u64,
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits, as kvload.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

async fn run_row(
    args: &BenchArgs,
    nodes: &[SocketAddr],
    security: &Security,
    workload: &Arc<Workload>,
    mode: BenchMode,
    clients: usize,
) -> Result<BenchRow, BenchError> {
    let config = ClientConfig {
        deadline: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let mut connections = Vec::with_capacity(clients);
    for client in 0..clients {
        let mut order = nodes.to_vec();
        if args.connect == ConnectTo::All {
            order.rotate_left(client % nodes.len());
        }
        let connection = Client::connect_secure(order, config, security.clone())
            .await
            .map_err(client_error(format!("opening connection {client}")))?;
        connections.push(connection);
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let error_count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let windows: Vec<Window> = match args.count {
        Some(total) => (0..clients as u64)
            .map(|i| Window::Count(total / clients as u64 + u64::from(i < total % clients as u64)))
            .collect(),
        None => {
            let from = started + Duration::from_secs_f64(args.warmup);
            let end = from + Duration::from_secs_f64(args.duration);
            vec![Window::Timed { from, end }; clients]
        }
    };
    let tasks: Vec<_> = connections
        .into_iter()
        .zip(windows)
        .enumerate()
        .map(|(id, (connection, window))| {
            let errors = ErrorLog {
                samples: samples.clone(),
                count: error_count.clone(),
            };
            tokio::spawn(closed_loop(
                connection,
                id as u64,
                mode,
                workload.clone(),
                window,
                errors,
            ))
        })
        .collect();
    let mut histogram = new_histogram();
    let (mut errors, mut get_misses) = (0, 0);
    for task in tasks {
        let tally = task.await.expect("a benchmark client panicked");
        histogram
            .add(&tally.histogram)
            .expect("histograms with equal bounds add");
        errors += tally.errors;
        get_misses += tally.get_misses;
    }
    let seconds = match args.count {
        Some(_) => started.elapsed().as_secs_f64(),
        None => args.duration,
    };
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let error_samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(BenchRow {
        mode,
        clients,
        ops: histogram.len(),
        seconds,
        ops_per_s: (histogram.len() as f64 / seconds).round(),
        mean_us: (histogram.mean() / 100.0).round() / 10.0,
        p50_us: us(histogram.value_at_quantile(0.50)),
        p99_us: us(histogram.value_at_quantile(0.99)),
        p999_us: us(histogram.value_at_quantile(0.999)),
        max_us: us(histogram.max()),
        errors,
        get_misses,
        error_samples,
    })
}

/// Where clients report errors: all counted, the first few described.
struct ErrorLog {
    samples: Arc<std::sync::Mutex<Vec<String>>>,
    count: Arc<AtomicU64>,
}

impl ErrorLog {
    fn note(&self, error: &ClientError) {
        if self.count.fetch_add(1, Ordering::Relaxed) < ERROR_SAMPLES as u64 {
            if let Ok(mut samples) = self.samples.lock() {
                samples.push(error.to_string());
            }
        }
    }
}

/// One client: one request outstanding until its window closes.
async fn closed_loop(
    mut client: Client,
    id: u64,
    mode: BenchMode,
    workload: Arc<Workload>,
    window: Window,
    errors: ErrorLog,
) -> Tally {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000 + id);
    let value = workload.value(id);
    let mut key = Vec::with_capacity(workload.key_size);
    let mut tally = Tally {
        histogram: new_histogram(),
        errors: 0,
        get_misses: 0,
    };
    let mut done_requests = 0;
    loop {
        let start = Instant::now();
        match window {
            Window::Timed { end, .. } if start >= end => return tally,
            Window::Count(limit) if done_requests >= limit => return tally,
            _ => {}
        }
        done_requests += 1;
        workload.key(rng.u64(..workload.keys), &mut key);
        let result = request(&mut client, mode, &key, &value).await;
        let done = Instant::now();
        let measured = match window {
            Window::Timed { from, end } => start >= from && done <= end,
            Window::Count(_) => true,
        };
        let counts_errors = match window {
            Window::Timed { from, .. } => start >= from,
            Window::Count(_) => true,
        };
        match result {
            Ok(hit) => {
                if measured {
                    let nanos = u64::try_from((done - start).as_nanos()).unwrap_or(u64::MAX);
                    tally.histogram.saturating_record(nanos);
                    tally.get_misses += u64::from(!hit);
                }
            }
            Err(error) => {
                if counts_errors {
                    tally.errors += 1;
                    errors.note(&error);
                }
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Sends one request of `mode`; `Ok(false)` is a GET of an absent key.
async fn request(
    client: &mut Client,
    mode: BenchMode,
    key: &[u8],
    value: &[u8],
) -> Result<bool, ClientError> {
    let (words, name): (&[&[u8]], &str) = match mode {
        BenchMode::Set => (&[b"SET", key, value], "SET"),
        BenchMode::Get => (&[b"GET", key], "GET"),
        BenchMode::Empty => (&[b"SET", b"e", b""], "SET"),
        BenchMode::Ping => (&[b"PING"], "PING"),
    };
    match (mode, client.cmd(words).await?) {
        (BenchMode::Set | BenchMode::Empty, Reply::Simple(text)) if text == "OK" => Ok(true),
        (BenchMode::Ping, Reply::Simple(text)) if text == "PONG" => Ok(true),
        (BenchMode::Get, Reply::Bulk(value)) => Ok(value.is_some()),
        (_, reply) => Err(ClientError::UnexpectedReply {
            command: name.to_owned(),
            reply,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_to_their_size() {
        let workload = Workload::new(&BenchArgs::default());
        let mut key = Vec::new();
        workload.key(42, &mut key);
        assert_eq!(key, b"k0000042");
        workload.key(99_999, &mut key);
        assert_eq!(key, b"k0099999");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn key_size_must_fit_the_key_space() {
        let args = BenchArgs {
            key_size: 5,
            ..BenchArgs::default()
        };
        assert!(matches!(validate(&args), Err(BenchError::Args(_))));
        assert!(validate(&BenchArgs::default()).is_ok());
    }
}
