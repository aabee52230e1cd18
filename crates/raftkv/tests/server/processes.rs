//! What the process tests share: a `LocalCluster` of `raftkv serve` processes started on fresh
//! ports, a writer that records acknowledged SETs, bounded polls of a node's `INFO`, `/status`
//! and log, and the check that every acknowledged write is on a node.

#![allow(dead_code)]

use bytes::Bytes;
use raftkv::client::{Client, ClientConfig};
use raftkv::demo::{LocalCluster, LocalClusterOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_raftkv");
/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// A 3-node cluster, every node started with `extra_args`, once each printed its ready line.
pub async fn start_cluster(extra_args: &[&str]) -> LocalCluster {
    // Ports are picked free, then bound by the child processes: a test running beside this one
    // may take one in between. That is the environment, not the code under test: try again on
    // fresh ports (and say why).
    let mut attempt = 0;
    loop {
        attempt += 1;
        // The fast elections of a quiet LAN (the default suits lossy and distant networks), so
        // "many election timeouts" fit in a few seconds.
        let mut args = vec!["--election-ms".to_owned(), "150..300".to_owned()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let started = LocalCluster::start(LocalClusterOptions {
            server_bin: Some(PathBuf::from(BIN)),
            extra_args: args,
            ..LocalClusterOptions::default()
        })
        .await;
        match started {
            Ok(cluster) => return cluster,
            Err(e) if attempt < 3 => eprintln!("cluster start attempt {attempt} failed: {e}"),
            Err(e) => panic!("cluster starts: {e}"),
        }
    }
}

/// What a writer saw.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub acked: Vec<(Bytes, Bytes)>,
    pub uncertain: usize,
}

/// A writer setting fresh keys `k0`, `k1`, ... through a client that fails over between nodes.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Outcomes>,
}

impl Writer {
    pub fn start(cluster: &LocalCluster) -> Writer {
        Writer::start_padded(cluster, 0)
    }

    /// A writer whose values are padded to at least `value_bytes` bytes.
    pub fn start_padded(cluster: &LocalCluster, value_bytes: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let config = ClientConfig {
            request_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        let mut client = Client::new(cluster.client_addrs(), config).expect("client");
        let task = tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = Bytes::from(format!("k{n}"));
                let value = Bytes::from(format!("v{n:.<value_bytes$}"));
                n += 1;
                match client.set(&key, &value).await {
                    Ok(()) => outcomes.acked.push((key, value)),
                    // Each key is written once, so a write of unknown outcome only means the key
                    // may be missing.
                    Err(_) => {
                        outcomes.uncertain += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            outcomes
        });
        Writer { stop, task }
    }

    pub async fn finish(self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the writer stops in time")
            .expect("the writer does not panic");
        assert!(outcomes.acked.len() > 20, "writes went on: {outcomes:?}");
        outcomes
    }
}

/// Waits until node `index` has applied `more` entries beyond what it had (the writer's writes).
pub async fn writes_go_on(cluster: &LocalCluster, index: usize, more: u64) {
    let from = info(cluster, index).await.applied_index;
    let deadline = Instant::now() + WAIT;
    while info(cluster, index).await.applied_index < from + more {
        assert!(
            Instant::now() < deadline,
            "no writes applied at index {index}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn info(cluster: &LocalCluster, index: usize) -> raftkv::client::NodeInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        match cluster.info(index).await {
            Ok(info) => return info,
            Err(error) => assert!(Instant::now() < deadline, "INFO of node {index}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every acknowledged write is on node `index` (linearizable GETs served by that node).
pub async fn check_acked_on(cluster: &LocalCluster, index: usize, acked: &[(Bytes, Bytes)]) {
    let node = &cluster.nodes()[index];
    let config = ClientConfig {
        deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let mut client = Client::new(vec![node.client_addr], config).expect("client");
    for chunk in acked.chunks(128) {
        let requests: Vec<[&[u8]; 2]> = chunk.iter().map(|(k, _)| [b"GET".as_slice(), k]).collect();
        let replies = client.pipeline(&requests).await;
        for ((key, value), reply) in chunk.iter().zip(replies) {
            assert_eq!(
                reply.expect("GET answered"),
                raftkv::resp::Reply::Bulk(Some(value.clone())),
                "node {} lost the acknowledged write of {key:?}",
                node.id
            );
        }
    }
}

/// Node `index`'s `/status` document, or `None` if it does not answer (within a second).
pub async fn status(cluster: &LocalCluster, index: usize) -> Option<serde_json::Value> {
    let addr = cluster.nodes()[index].admin_addr;
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = "GET /status HTTP/1.0\r\nHost: test\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8(response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        (head.split(' ').nth(1) == Some("200"))
            .then(|| serde_json::from_str(body).ok())
            .flatten()
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// Polls node `index`'s `/status` until `ready` holds; fails the test after [`WAIT`].
pub async fn wait_status(
    cluster: &LocalCluster,
    index: usize,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(status) = status(cluster, index).await {
            if ready(&status) {
                return status;
            }
            last = Some(status);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {last:?}{}",
            cluster.log_tail(index)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Node `index`'s log (stdout and stderr, across restarts) from byte `from` on.
pub fn log_since(cluster: &LocalCluster, index: usize, from: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(&cluster.nodes()[index].log_path) {
        if file.seek(SeekFrom::Start(from as u64)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The length of node `index`'s log so far (to read what a restart adds).
pub fn log_len(cluster: &LocalCluster, index: usize) -> usize {
    std::fs::metadata(&cluster.nodes()[index].log_path).map_or(0, |m| m.len() as usize)
}

/// Polls node `index`'s log from byte `from` until it contains `needle` (false after [`WAIT`]).
pub async fn wait_log(cluster: &LocalCluster, index: usize, from: usize, needle: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if log_since(cluster, index, from).contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}
