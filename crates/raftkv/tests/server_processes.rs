//! The `raftkv` binary as separate processes: a 3-node cluster elects a leader and takes writes;
//! its leader is killed with SIGKILL; the rest elect a new leader and keep taking writes; the
//! killed node restarts from its data directory and catches up; every acknowledged write is then
//! on every node; SIGTERM and SIGINT stop the nodes cleanly (exit 0). Also: configuration
//! mistakes exit with code 2 and a message.
//!
//! Every wait is bounded and polls (INFO over RESP, /status over HTTP) rather than sleeping.

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{http_get, simple, Conn, WAIT};
use raftkv::resp::Reply;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_raftkv");

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[derive(Clone, Copy)]
struct Ports {
    raft: SocketAddr,
    client: SocketAddr,
    admin: SocketAddr,
}

struct Proc {
    id: u64,
    child: Child,
}

struct ProcCluster {
    dir: PathBuf,
    ports: BTreeMap<u64, Ports>,
    procs: BTreeMap<u64, Proc>,
}

impl ProcCluster {
    fn new(dir: &Path, n: u64) -> ProcCluster {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let ports = (1..=n)
            .map(|id| {
                let ports = Ports {
                    raft: loopback(free_port()),
                    client: loopback(free_port()),
                    admin: loopback(free_port()),
                };
                (id, ports)
            })
            .collect();
        ProcCluster {
            dir: dir.to_owned(),
            ports,
            procs: BTreeMap::new(),
        }
    }

    /// Starts node `id` and waits for its ready line.
    fn start(&mut self, id: u64) {
        let me = self.ports[&id];
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(["--id", &id.to_string(), "--cluster-id", "42"])
            .args(["--admin", &me.admin.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")));
        for (other, ports) in &self.ports {
            command
                .arg("--node")
                .arg(format!("{other}={},{}", ports.raft, ports.client));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .expect("log file");
        let mut child = command
            .env("RAFTKV_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn raftkv");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("node {id} printed no ready line; see its log"));
        assert_eq!(
            line,
            format!(
                "raftkv node {id} ready: raft {} client {} admin {}",
                me.raft, me.client, me.admin
            )
        );
        self.procs.insert(id, Proc { id, child });
    }

    fn kill9(&mut self, id: u64) {
        let mut proc = self.procs.remove(&id).expect("running node");
        proc.child.kill().expect("SIGKILL");
        let status = proc.child.wait().expect("reap");
        assert!(!status.success(), "killed with SIGKILL");
    }

    /// Sends `signal` (TERM, INT) and waits for the exit status.
    fn stop(&mut self, id: u64, signal: &str) -> ExitStatus {
        let mut proc = self.procs.remove(&id).expect("running node");
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(proc.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = proc.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not stop on SIG{signal}",
                proc.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self, id: u64) -> SocketAddr {
        self.ports[&id].client
    }

    /// INFO fields of a node.
    async fn info(&self, id: u64) -> BTreeMap<String, String> {
        let mut c = Conn::connect(self.client(id)).await;
        match c.cmd(&["INFO"]).await {
            Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text)
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            other => panic!("INFO: {other:?}"),
        }
    }

    /// Waits until exactly one running node leads and all running nodes follow it.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut infos = Vec::new();
            for &id in self.procs.keys() {
                infos.push((id, self.info(id).await));
            }
            let leaders: Vec<u64> = infos
                .iter()
                .filter(|(_, info)| info["role"] == "leader")
                .map(|(id, _)| *id)
                .collect();
            if let [leader] = leaders[..] {
                let named = leader.to_string();
                if infos
                    .iter()
                    .all(|(_, info)| info["raft_leader_id"] == named)
                {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader: {infos:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self, id: u64) -> serde_json::Value {
        let (code, _, body) = http_get(self.ports[&id].admin, "/status").await;
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("JSON status")
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

/// SETs `key`, retrying while there is no leader or the outcome is unknown (SET is idempotent).
/// Returns whether it was acknowledged.
async fn set(c: &mut Conn, key: &str, value: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.cmd(&["SET", key, value]).await {
            Reply::Simple(ok) if ok == "OK" => return true,
            Reply::Error(e)
                if (e.starts_with("TRYAGAIN") || e.starts_with("UNCERTAIN"))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            other => panic!("SET {key}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_survive_kill_9_of_the_leader_and_the_victim_catches_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = ProcCluster::new(dir.path(), 3);
    for id in 1..=3 {
        cluster.start(id);
    }
    let leader = cluster.leader().await;

    // Writes at every node (followers forward), and INCRs at the leader.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut conns = BTreeMap::new();
    for id in 1..=3 {
        conns.insert(id, Conn::connect(cluster.client(id)).await);
    }
    for i in 0..60 {
        let (key, value) = (format!("key{i}"), format!("value{i}"));
        let node = (i % 3) + 1;
        assert!(set(conns.get_mut(&node).unwrap(), &key, &value).await);
        acked.insert(key, value);
    }
    let mut increments = 0;
    {
        let c = conns.get_mut(&leader).unwrap();
        for _ in 0..20 {
            assert_eq!(
                c.cmd(&["INCR", "counter"]).await,
                Reply::Integer(increments + 1)
            );
            increments += 1;
        }
    }
    drop(conns);

    // SIGKILL the leader; the others elect a new one.
    cluster.kill9(leader);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let survivors: Vec<u64> = cluster.procs.keys().copied().collect();
    for (n, i) in (60..100).enumerate() {
        let (key, value) = (format!("key{i}"), format!("value{i}"));
        let mut c = Conn::connect(cluster.client(survivors[n % 2])).await;
        assert!(set(&mut c, &key, &value).await);
        acked.insert(key, value);
    }
    // Overwrites too, so that a stale copy would show.
    let mut c = Conn::connect(cluster.client(new_leader)).await;
    for i in 0..10 {
        let (key, value) = (format!("key{i}"), format!("rewritten{i}"));
        assert!(set(&mut c, &key, &value).await);
        acked.insert(key, value);
    }
    drop(c);
    let commit = cluster.status(new_leader).await["commit_index"]
        .as_u64()
        .expect("commit index");

    // The victim restarts from its data directory and catches up.
    cluster.start(leader);
    let deadline = Instant::now() + WAIT;
    loop {
        let status = cluster.status(leader).await;
        if status["applied_index"].as_u64().unwrap() >= commit {
            assert_eq!(status["role"], "follower");
            break;
        }
        assert!(Instant::now() < deadline, "no catch-up: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.leader().await;

    // Every acknowledged write is on every node: each answers from its own copy (after a read
    // barrier).
    let keys: Vec<&str> = acked.keys().map(String::as_str).collect();
    let mut mget = vec!["MGET"];
    mget.extend(&keys);
    let expected = Reply::array(acked.values().map(|v| Reply::bulk(v.clone())).collect());
    for id in 1..=3 {
        let mut c = Conn::connect(cluster.client(id)).await;
        let deadline = Instant::now() + WAIT;
        let got = loop {
            match c.cmd(&mget).await {
                Reply::Error(e) if e.starts_with("TRYAGAIN") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                reply => break reply,
            }
        };
        assert_eq!(got, expected, "node {id} has every acknowledged write");
        assert_eq!(
            c.cmd(&["GET", "counter"]).await,
            Reply::bulk(increments.to_string()),
            "node {id}"
        );
        assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    }

    // Graceful stops: exit status 0.
    assert!(cluster.stop(1, "TERM").success(), "SIGTERM exits 0");
    assert!(cluster.stop(2, "INT").success(), "SIGINT exits 0");
    assert!(cluster.stop(3, "TERM").success(), "SIGTERM exits 0");
}

fn serve(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run raftkv");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn configuration_mistakes_exit_2_with_a_message() {
    let node1 = "1=127.0.0.1:7001,127.0.0.1:6001";
    let node2 = "2=127.0.0.1:7002,127.0.0.1:6002";
    let cases: &[(&[&str], &str)] = &[
        (&[], "no node id"),
        (&["--id", "1"], "no cluster members"),
        (
            &["--id", "3", "--node", node1, "--node", node2],
            "id 3 is not among the nodes",
        ),
        (
            &["--id", "1", "--node", node1, "--node", node1],
            "appears more than once",
        ),
        (
            &[
                "--id",
                "1",
                "--node",
                node1,
                "--node",
                "2=127.0.0.1:7001,127.0.0.1:6002",
            ],
            "used twice",
        ),
        (
            &["--id", "1", "--node", "1=nowhere,127.0.0.1:6001"],
            "bad node 1 raft address",
        ),
        (
            &["--id", "1", "--node", "1:127.0.0.1:7001"],
            "expected ID=RAFT_ADDR,CLIENT_ADDR",
        ),
        (
            &["--id", "1", "--node", node1, "--election-ms", "300"],
            "MIN..MAX",
        ),
        (
            &["--id", "1", "--node", node1, "--election-ms", "300..100"],
            "bad timing",
        ),
        (
            &["--config", "/no/such/file.toml"],
            "cannot read config file",
        ),
        (
            &["--id", "1", "--node", node1, "--join"],
            "a joining node must also list the current members",
        ),
        (
            &["--id", "1", "--node", node1, "--snapshot-entries", "0"],
            "snapshot_entries must be at least 1",
        ),
        (&["--id", "x"], "invalid value"),
    ];
    for (args, message) in cases {
        let (code, stderr) = serve(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "id = 1\nnodez = []\n").unwrap();
    let (code, stderr) = serve(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nodez"), "{stderr}");

    // The example config is valid: a bad flag over it is what fails.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/raftkv.toml");
    let (code, stderr) = serve(&["--config", example.to_str().unwrap(), "--id", "9"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("id 9 is not among the nodes"), "{stderr}");
}
