//! The raftkv processes under test: each node on its own loopback address (`127.0.0.1N`), its
//! data directory on a tmpfs of its own (so its disk can be filled), started with the faultio
//! shim (so its disk can be slowed) and, for a clock fault, with libfaketime.
//!
//! Node `i` listens for peers on `IP:7000` and tells its peers `IP:7100`, the fault proxy's port,
//! which forwards to `IP:7000` from the dialer's own address; clients use `IP:6379`, the admin
//! API `IP:9000`.

use raftkv::admin_client::{self, ClusterRequest, ClusterView, TransferView};
use raftkv::client::{Client, ClientConfig, NodeInfo};
use raftkv::demo::log_tail;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;
use thiserror::Error;
use tokio::process::Child;
use tokio::time::Instant;

pub const RAFT_PORT: u16 = 7000;
pub const PROXY_PORT: u16 = 7100;
pub const CLIENT_PORT: u16 = 6379;
pub const ADMIN_PORT: u16 = 9000;
/// The tmpfs device name of our mounts, which `--cleanup` looks for in `/proc/mounts`.
pub const MOUNT_SOURCE: &str = "raftchaos";
/// Size of each node's data tmpfs.
pub const DISK_BYTES: u64 = 256 << 20;
/// Log segment size: small, so a full disk is reached at a segment boundary soon.
pub const SEGMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount of a tmpfs on {} failed: {reason}", .path.display())]
    Mount { path: PathBuf, reason: String },
    #[error("node {id} did not answer within {timeout:?} after starting{log}")]
    NotReady {
        id: u64,
        timeout: Duration,
        log: String,
    },
}

/// How a node's clock runs (libfaketime), when it does not run true.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockFault {
    /// Seconds added to the wall clock.
    pub offset_s: i64,
    /// How fast its clocks run (1.0: true).
    pub rate: f64,
}

/// One raftkv process and its files.
#[derive(Debug)]
pub struct NodeProcess {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// faultio's control file for this node.
    pub faults_path: PathBuf,
    child: Option<Child>,
    pub paused: bool,
    pub clock: Option<ClockFault>,
    /// Starts so far.
    pub starts: u32,
}

impl NodeProcess {
    pub fn ip_of(id: u64) -> Ipv4Addr {
        // Node ids are 1..=9 (the CLI bounds them), so the last octet stays below 20.
        Ipv4Addr::new(127, 0, 0, 10 + id as u8)
    }
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), CLIENT_PORT)
    }
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), ADMIN_PORT)
    }
    /// Where peers reach it: the proxy.
    pub fn advertised_raft(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), PROXY_PORT)
    }
    pub fn listen_raft(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), RAFT_PORT)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    pub fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()?
            .id()
            .and_then(|p| i32::try_from(p).ok())
    }
}

/// Everything needed to start the nodes.
#[derive(Debug, Clone)]
pub struct Setup {
    pub raftkv: PathBuf,
    /// The faultio shim (`libfaultio.so`), preloaded into every node.
    pub faultio: PathBuf,
    /// libfaketime, preloaded for a clock fault.
    pub faketime: PathBuf,
    pub lease_reads: bool,
    /// More `raftkv serve` arguments for every node (e.g. `--election-ms 150..300`).
    pub server_args: Vec<String>,
}

/// The nodes of one run.
#[derive(Debug)]
pub struct Cluster {
    setup: Setup,
    pub nodes: Vec<NodeProcess>,
    mounts: Vec<PathBuf>,
}

pub fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
    let path = path.to_path_buf();
    move |source| ClusterError::Io { what, path, source }
}

impl Cluster {
    /// Makes each node's directories (data on a fresh tmpfs) under `dir/nodes`; starts nothing.
    pub fn prepare(setup: Setup, dir: &Path, count: usize) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster {
            setup,
            nodes: Vec::new(),
            mounts: Vec::new(),
        };
        for id in 1..=count as u64 {
            let node_dir = dir.join("nodes").join(format!("n{id}"));
            let data_dir = node_dir.join("data");
            fs::create_dir_all(&data_dir).map_err(io_error("cannot create", &data_dir))?;
            mount_tmpfs(&data_dir, DISK_BYTES)?;
            cluster.mounts.push(data_dir.clone());
            cluster.nodes.push(NodeProcess {
                id,
                ip: NodeProcess::ip_of(id),
                log_path: node_dir.join("raftkv.log"),
                faults_path: node_dir.join("faultio.control"),
                data_dir,
                child: None,
                paused: false,
                clock: None,
                starts: 0,
            });
        }
        Ok(cluster)
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Starts node `id` (with its clock fault, if it has one) and waits until it answers PING.
    pub async fn start(&mut self, id: u64) -> Result<(), ClusterError> {
        let setup = self.setup.clone();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.node(id).data_dir.display().to_string(),
            "--raft-listen".into(),
            self.node(id).listen_raft().to_string(),
            "--peer-source-ip".into(),
            self.node(id).ip.to_string(),
            "--admin".into(),
            self.node(id).admin_addr().to_string(),
            "--segment-bytes".into(),
            SEGMENT_BYTES.to_string(),
        ];
        if setup.lease_reads {
            args.push("--lease-reads".into());
        }
        args.extend(setup.server_args.iter().cloned());
        for node in &self.nodes {
            args.push("--node".into());
            args.push(format!(
                "{}={},{}",
                node.id,
                node.advertised_raft(),
                node.client_addr()
            ));
        }
        let node = self.node_mut(id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(io_error("cannot open", &node.log_path))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("cannot open", &node.log_path))?;
        let mut preload = setup.faultio.display().to_string();
        let mut command = tokio::process::Command::new(&setup.raftkv);
        command
            .args(&args)
            .env("FAULTIO_CONTROL", &node.faults_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        if let Some(clock) = node.clock {
            preload = format!("{preload}:{}", setup.faketime.display());
            command.env("FAKETIME", faketime_spec(clock));
        }
        command.env("LD_PRELOAD", preload);
        let started = Instant::now();
        writeln_log(
            &node.log_path,
            &format!(
                "==== raftchaos: start #{} of node {id}{}",
                node.starts + 1,
                node.clock
                    .map(|c| format!(" with FAKETIME={}", faketime_spec(c)))
                    .unwrap_or_default()
            ),
        );
        let child = command
            .spawn()
            .map_err(io_error("cannot start", &setup.raftkv))?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        let addr = node.client_addr();
        let timeout = Duration::from_secs(20);
        loop {
            if ping(addr).await {
                return Ok(());
            }
            let exited = self.try_exit(id).is_some();
            if exited || started.elapsed() > timeout {
                return Err(ClusterError::NotReady {
                    id,
                    timeout,
                    log: log_tail(&self.node(id).log_path, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reaps it.
    pub async fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
            writeln_log(&node.log_path, "==== raftchaos: killed (SIGKILL)");
        }
        node.paused = false;
    }

    /// SIGSTOP (`pause: true`) or SIGCONT.
    pub fn pause(&mut self, id: u64, pause: bool) {
        let node = self.node_mut(id);
        if let Some(pid) = node.pid() {
            let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child.
            unsafe {
                libc::kill(pid, signal);
            }
            node.paused = pause;
        }
    }

    /// The exit status of node `id` if it exited since the last look (it is then not running).
    pub fn try_exit(&mut self, id: u64) -> Option<ExitStatus> {
        let node = self.node_mut(id);
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        writeln_log(
            &node.log_path,
            &format!("==== raftchaos: exited on its own: {status}"),
        );
        Some(status)
    }

    /// `INFO` of node `id`, if it answers within a second.
    pub async fn info(&self, id: u64) -> Option<NodeInfo> {
        let config = quick_client_config();
        let mut client = Client::new(vec![self.node(id).client_addr()], config).ok()?;
        tokio::time::timeout(Duration::from_secs(1), client.info())
            .await
            .ok()?
            .ok()
    }

    /// The leader, if some running node says it is the leader.
    pub async fn leader(&self) -> Option<u64> {
        for node in &self.nodes {
            if node.is_running() && !node.paused {
                if let Some(info) = self.info(node.id).await {
                    if info.is_leader() {
                        return Some(node.id);
                    }
                }
            }
        }
        None
    }

    /// `GET /cluster` at node `id`.
    pub async fn view(&self, id: u64) -> Option<ClusterView> {
        let addr = self.node(id).admin_addr().to_string();
        admin_client::send(&addr, &ClusterRequest::Show, Duration::from_secs(2))
            .await
            .ok()
    }

    /// Sends an admin request to node `id`; the error as text.
    pub async fn admin<T: for<'de> serde::Deserialize<'de>>(
        &self,
        id: u64,
        request: ClusterRequest,
        timeout: Duration,
    ) -> Result<T, String> {
        let addr = self.node(id).admin_addr().to_string();
        admin_client::send(&addr, &request, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks leader `from` to hand leadership to `to`; the leader after it, or why not.
    pub async fn transfer(&self, from: u64, to: u64) -> Result<u64, String> {
        let request = ClusterRequest::TransferLeader { id: to };
        let view: TransferView = self.admin(from, request, Duration::from_secs(5)).await?;
        Ok(view.leader)
    }

    pub fn set_clock(&mut self, id: u64, clock: Option<ClockFault>) {
        self.node_mut(id).clock = clock;
    }

    /// Kills every node and unmounts the data disks.
    pub async fn shutdown(&mut self) {
        for id in self.ids() {
            self.pause(id, false);
            self.kill(id).await;
        }
        for path in self.mounts.drain(..) {
            unmount(&path);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(pid) = node.pid() {
                // SAFETY: as in `pause`; a stopped process must be continued to die of SIGKILL
                // promptly on some kernels, so both go.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        for path in self.mounts.drain(..) {
            unmount(&path);
        }
    }
}

pub fn quick_client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(1),
        max_redirects: 0,
        ..ClientConfig::default()
    }
}

async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut client) = Client::new(vec![addr], quick_client_config()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), client.ping()).await,
        Ok(Ok(()))
    )
}

/// libfaketime's `FAKETIME`: an offset and a rate, e.g. `+30 x1.5`.
pub fn faketime_spec(clock: ClockFault) -> String {
    format!("{:+} x{}", clock.offset_s, clock.rate)
}

fn writeln_log(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

fn mount_tmpfs(path: &Path, bytes: u64) -> Result<(), ClusterError> {
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), MOUNT_SOURCE])
        .arg(path)
        .output()
        .map_err(io_error("cannot run mount for", path))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Mount {
            path: path.to_path_buf(),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Unmounts, lazily if something still holds a file open there.
pub fn unmount(path: &Path) {
    let done = Command::new("umount")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !done {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// Our tmpfs mounts still in place (from `/proc/mounts`), for `--cleanup`.
pub fn leftover_mounts() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let source = fields.next()?;
            let target = fields.next()?;
            // /proc/mounts escapes spaces as \040.
            (source == MOUNT_SOURCE).then(|| PathBuf::from(target.replace("\\040", " ")))
        })
        .collect()
}

/// Free bytes of the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, for which all zeros is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `stat` a valid struct to write into.
    let done = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (done == 0).then(|| stat.f_bavail * stat.f_frsize)
}

/// Fills the disk of `data_dir` with a filler file, leaving about `room` bytes.
pub fn fill_disk(data_dir: &Path, room: u64) -> Result<PathBuf, ClusterError> {
    let filler = data_dir.join("raftchaos.filler");
    let free = free_bytes(data_dir).unwrap_or(0);
    let size = free.saturating_sub(room);
    let file = File::create(&filler).map_err(io_error("cannot create", &filler))?;
    // tmpfs allocates on write: write real bytes in 1 MiB blocks.
    use std::io::Write;
    let block = vec![0xa5u8; 1 << 20];
    let mut writer = std::io::BufWriter::new(file);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if writer.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = writer.flush();
    Ok(filler)
}
