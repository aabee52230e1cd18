//! The fault kinds, how a seeded schedule picks them, and how each is injected and healed.

use crate::cluster::{fill_disk, ClockFault, Cluster};
use crate::firewall::{Cut, Firewall};
use crate::proxy::{Proxy, Toxics};
use raftkv::admin_client::{ClusterRequest, ClusterView, SnapshotView};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Every kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One node cut off from all others (both ways).
    Isolate,
    /// A random majority and minority, cut from each other.
    Split,
    /// Two halves that only talk through one node in the middle.
    Bridge,
    /// One node's messages to the others are lost; theirs still reach it.
    OneWay,
    /// Random packet loss on every peer link (iptables `statistic`).
    Loss,
    /// Added latency with jitter on every peer link (the proxy).
    Latency,
    /// A slow link: bandwidth limited for one node's links (the proxy).
    Bandwidth,
    /// One node's links stop carrying bytes, connections stay open (the proxy).
    Stall,
    /// `kill -9` (the leader more often than not), restarted at heal.
    Kill,
    /// SIGSTOP for longer than an election timeout (the leader more often), SIGCONT at heal.
    Pause,
    /// The node's data disk filled up; freed (and the node restarted if it stopped) at heal.
    DiskFull,
    /// Every fsync of the node's data directory made slow (faultio).
    SlowDisk,
    /// The node restarted with its clocks running fast or slow and offset (libfaketime).
    Clock,
    /// A leadership transfer to a random follower.
    Transfer,
    /// A voter removed from the configuration and added back at heal.
    Membership,
}

pub const ALL_KINDS: &[Kind] = &[
    Kind::Isolate,
    Kind::Split,
    Kind::Bridge,
    Kind::OneWay,
    Kind::Loss,
    Kind::Latency,
    Kind::Bandwidth,
    Kind::Stall,
    Kind::Kill,
    Kind::Pause,
    Kind::DiskFull,
    Kind::SlowDisk,
    Kind::Clock,
    Kind::Transfer,
    Kind::Membership,
];

impl Kind {
    /// A change made through the admin API (it can land inside another fault).
    pub fn is_administrative(self) -> bool {
        matches!(self, Kind::Transfer | Kind::Membership)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Isolate => "isolate",
            Kind::Split => "split",
            Kind::Bridge => "bridge",
            Kind::OneWay => "one-way",
            Kind::Loss => "loss",
            Kind::Latency => "latency",
            Kind::Bandwidth => "bandwidth",
            Kind::Stall => "stall",
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::DiskFull => "disk-full",
            Kind::SlowDisk => "slow-disk",
            Kind::Clock => "clock",
            Kind::Transfer => "transfer",
            Kind::Membership => "membership",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(text: &str) -> Result<Kind, String> {
        ALL_KINDS
            .iter()
            .copied()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = ALL_KINDS.iter().map(|k| k.name()).collect();
                format!("unknown fault kind `{text}` (known: {})", names.join(", "))
            })
    }
}

/// A fault as injected: what to undo at heal.
#[derive(Debug)]
pub struct Active {
    pub kind: Kind,
    pub nodes: Vec<u64>,
    pub detail: String,
    undo: Undo,
}

#[derive(Debug)]
enum Undo {
    Firewall,
    Proxy,
    Restart(u64),
    Continue(u64),
    FreeDisk { node: u64, filler: PathBuf },
    FaultioOff(u64),
    ClockBack(u64),
    AddBack(u64),
    Nothing,
}

/// What the nemesis drives.
pub struct Targets<'a> {
    pub cluster: &'a mut Cluster,
    pub firewall: &'a mut Firewall,
    pub proxy: &'a Proxy,
    /// The clock rates a `clock` fault draws from.
    pub clock_rates: &'a [f64],
}

/// The clock rates of a `clock` fault unless told otherwise: within a factor of two.
pub const CLOCK_RATES: &[f64] = &[0.5, 0.8, 1.25, 2.0];

fn ip(cluster: &Cluster, id: u64) -> IpAddr {
    cluster.node(id).ip.into()
}

fn set_text(ids: &[u64]) -> String {
    let inner: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("{{{}}}", inner.join(","))
}

/// A node to hit: the leader with probability `leader_bias` (when there is one), else any.
async fn pick_node(rng: &mut fastrand::Rng, cluster: &Cluster, leader_bias: f64) -> u64 {
    let ids = cluster.ids();
    let any = ids[rng.usize(0..ids.len())];
    if rng.f64() < leader_bias {
        if let Some(leader) = cluster.leader().await {
            return leader;
        }
    }
    any
}

/// Injects one fault of `kind`. Parameters come from `rng`; which node is the leader comes
/// from the cluster at the time. `Err`: it could not be injected (said in the timeline).
pub async fn inject(
    kind: Kind,
    rng: &mut fastrand::Rng,
    t: &mut Targets<'_>,
) -> Result<Active, String> {
    let ids = t.cluster.ids();
    let n = ids.len();
    let active = |nodes: Vec<u64>, detail: String, undo| Active {
        kind,
        nodes,
        detail,
        undo,
    };
    match kind {
        Kind::Isolate => {
            let node = pick_node(rng, t.cluster, 0.5).await;
            for &other in ids.iter().filter(|&&o| o != node) {
                let (a, b) = (t.cluster.node(node).ip, t.cluster.node(other).ip);
                t.firewall.cut_both(a, b, None).map_err(|e| e.to_string())?;
            }
            let rest: Vec<u64> = ids.iter().copied().filter(|&o| o != node).collect();
            Ok(active(
                vec![node],
                format!("{} | {}", set_text(&[node]), set_text(&rest)),
                Undo::Firewall,
            ))
        }
        Kind::Split => {
            let mut shuffled = ids.clone();
            rng.shuffle(&mut shuffled);
            let minority = &shuffled[..n / 2];
            let majority = &shuffled[n / 2..];
            for &a in minority {
                for &b in majority {
                    let (a, b) = (t.cluster.node(a).ip, t.cluster.node(b).ip);
                    t.firewall.cut_both(a, b, None).map_err(|e| e.to_string())?;
                }
            }
            Ok(active(
                minority.to_vec(),
                format!("{} | {}", set_text(minority), set_text(majority)),
                Undo::Firewall,
            ))
        }
        Kind::Bridge => {
            // Halves that can only reach each other through the bridge node.
            let mut shuffled = ids.clone();
            rng.shuffle(&mut shuffled);
            let bridge = shuffled[0];
            let rest = &shuffled[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            for &a in left {
                for &b in right {
                    let (a, b) = (t.cluster.node(a).ip, t.cluster.node(b).ip);
                    t.firewall.cut_both(a, b, None).map_err(|e| e.to_string())?;
                }
            }
            Ok(active(
                vec![bridge],
                format!("{} - {} - {}", set_text(left), bridge, set_text(right)),
                Undo::Firewall,
            ))
        }
        Kind::OneWay => {
            let node = pick_node(rng, t.cluster, 0.5).await;
            let outgoing = rng.bool();
            for &other in ids.iter().filter(|&&o| o != node) {
                let (a, b) = (t.cluster.node(node).ip, t.cluster.node(other).ip);
                let (from, to) = if outgoing { (a, b) } else { (b, a) };
                t.firewall
                    .cut(Cut {
                        from,
                        to,
                        probability: None,
                    })
                    .map_err(|e| e.to_string())?;
            }
            let detail = if outgoing {
                format!("node {node}'s messages to the others lost")
            } else {
                format!("the others' messages to node {node} lost")
            };
            Ok(active(vec![node], detail, Undo::Firewall))
        }
        Kind::Loss => {
            let p = [0.1, 0.2, 0.3][rng.usize(0..3)];
            for (i, &a) in ids.iter().enumerate() {
                for &b in &ids[i + 1..] {
                    let (a, b) = (t.cluster.node(a).ip, t.cluster.node(b).ip);
                    t.firewall
                        .cut_both(a, b, Some(p))
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(active(
                vec![],
                format!("{:.0}% of packets", p * 100.0),
                Undo::Firewall,
            ))
        }
        Kind::Latency => {
            let latency = Duration::from_millis(rng.u64(20..=150));
            let jitter = latency / 2;
            for &a in &ids {
                for &b in ids.iter().filter(|&&b| b != a) {
                    let toxics = Toxics {
                        latency,
                        jitter,
                        ..Toxics::default()
                    };
                    t.proxy.set(ip(t.cluster, a), ip(t.cluster, b), toxics);
                }
            }
            Ok(active(
                vec![],
                format!("{latency:?} ±{jitter:?} on every link"),
                Undo::Proxy,
            ))
        }
        Kind::Bandwidth | Kind::Stall => {
            let node = pick_node(rng, t.cluster, 0.5).await;
            let bytes = [16 << 10, 64 << 10, 256 << 10][rng.usize(0..3)];
            let toxics = if kind == Kind::Stall {
                Toxics {
                    stalled: true,
                    ..Toxics::default()
                }
            } else {
                Toxics {
                    bandwidth: Some(bytes),
                    ..Toxics::default()
                }
            };
            for &other in ids.iter().filter(|&&o| o != node) {
                let (a, b) = (ip(t.cluster, node), ip(t.cluster, other));
                t.proxy.set(a, b, toxics.clone());
                t.proxy.set(b, a, toxics.clone());
            }
            let detail = if kind == Kind::Stall {
                format!("node {node}'s links carry nothing")
            } else {
                format!("node {node}'s links at {} KiB/s", bytes >> 10)
            };
            Ok(active(vec![node], detail, Undo::Proxy))
        }
        Kind::Kill => {
            let node = pick_node(rng, t.cluster, 0.6).await;
            t.cluster.kill(node).await;
            Ok(active(vec![node], "kill -9".into(), Undo::Restart(node)))
        }
        Kind::Pause => {
            let node = pick_node(rng, t.cluster, 0.6).await;
            t.cluster.pause(node, true);
            Ok(active(vec![node], "SIGSTOP".into(), Undo::Continue(node)))
        }
        Kind::DiskFull => {
            let node = pick_node(rng, t.cluster, 0.5).await;
            let dir = t.cluster.node(node).data_dir.clone();
            // No room at all; and a snapshot asked for, which needs room at once (the log's
            // segments are preallocated, so its appends alone would need room only at the
            // next segment, minutes away at this workload's rate).
            let filler = fill_disk(&dir, 0).map_err(|e| e.to_string())?;
            let snapshot: Result<SnapshotView, String> = t
                .cluster
                .admin(node, ClusterRequest::Snapshot, Duration::from_secs(3))
                .await;
            let detail = match snapshot {
                Ok(view) => format!("data disk full; a snapshot at {} was saved", view.index),
                Err(e) => format!("data disk full; snapshot: {e}"),
            };
            Ok(active(vec![node], detail, Undo::FreeDisk { node, filler }))
        }
        Kind::SlowDisk => {
            let node = pick_node(rng, t.cluster, 0.5).await;
            let ms = [20, 50, 100][rng.usize(0..3)];
            let n = t.cluster.node(node);
            let dir = n.data_dir.canonicalize().map_err(|e| e.to_string())?;
            write_control(
                &n.faults_path,
                &format!("delay fsync {ms}ms under {}\n", dir.display()),
            )?;
            Ok(active(
                vec![node],
                format!("every fsync +{ms}ms"),
                Undo::FaultioOff(node),
            ))
        }
        Kind::Clock => {
            let node = pick_node(rng, t.cluster, 0.5).await;
            let rate = t.clock_rates[rng.usize(0..t.clock_rates.len())];
            let offset_s = rng.i64(-600..=600);
            let clock = ClockFault { offset_s, rate };
            t.cluster.kill(node).await;
            t.cluster.set_clock(node, Some(clock));
            t.cluster.start(node).await.map_err(|e| e.to_string())?;
            let mut detail = format!("restarted with clocks {offset_s:+}s, rate x{rate}");
            // Half the time, the adversary of a lease: the node with the odd clock is made
            // leader and then cut off, so a stale leader and a new one overlap in time.
            if rng.bool() {
                detail.push_str(&lead_then_isolate(t, node).await);
            }
            Ok(active(vec![node], detail, Undo::ClockBack(node)))
        }
        Kind::Transfer => {
            let leader = t
                .cluster
                .leader()
                .await
                .ok_or("no leader to transfer from")?;
            let others: Vec<u64> = ids.iter().copied().filter(|&o| o != leader).collect();
            let target = others[rng.usize(0..others.len())];
            let result = t.cluster.transfer(leader, target).await;
            let detail = match result {
                Ok(now) => format!("{leader} -> {target}: node {now} leads"),
                Err(e) => format!("{leader} -> {target}: {e}"),
            };
            Ok(active(vec![leader, target], detail, Undo::Nothing))
        }
        Kind::Membership => {
            let leader = t
                .cluster
                .leader()
                .await
                .ok_or("no leader to change members")?;
            // A follower, so the change does not also move leadership.
            let others: Vec<u64> = ids.iter().copied().filter(|&o| o != leader).collect();
            let node = others[rng.usize(0..others.len())];
            let result: Result<ClusterView, String> = t
                .cluster
                .admin(
                    leader,
                    ClusterRequest::Remove { id: node },
                    Duration::from_secs(10),
                )
                .await;
            let detail = match &result {
                Ok(view) => format!("node {node} removed: voters {:?}", view.voters),
                Err(e) => format!("removing node {node}: {e}"),
            };
            Ok(active(vec![node], detail, Undo::AddBack(node)))
        }
    }
}

/// Moves leadership to `node`, then cuts it off from every other node; says what happened.
async fn lead_then_isolate(t: &mut Targets<'_>, node: u64) -> String {
    let mut said = String::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    match t.cluster.leader().await {
        Some(leader) if leader != node => {
            said = match t.cluster.transfer(leader, node).await {
                Ok(now) => format!("; node {now} leads"),
                Err(e) => format!("; transfer to it: {e}"),
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Some(_) => said.push_str("; it leads"),
        None => said.push_str("; no leader"),
    }
    for other in t.cluster.ids().into_iter().filter(|&o| o != node) {
        let (a, b) = (t.cluster.node(node).ip, t.cluster.node(other).ip);
        if let Err(e) = t.firewall.cut_both(a, b, None) {
            return format!("{said}; not cut off: {e}");
        }
    }
    format!("{said}; then cut off")
}

/// Undoes `active`. Errors are returned as text for the timeline; healing goes on.
pub async fn heal(active: &Active, t: &mut Targets<'_>) -> Result<(), String> {
    match &active.undo {
        Undo::Firewall => t.firewall.heal().map_err(|e| e.to_string()),
        Undo::Proxy => {
            t.proxy.clear_all();
            Ok(())
        }
        Undo::Restart(node) => {
            if !t.cluster.node(*node).is_running() {
                t.cluster.start(*node).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Undo::Continue(node) => {
            t.cluster.pause(*node, false);
            Ok(())
        }
        Undo::FreeDisk { node, filler } => {
            std::fs::remove_file(filler).map_err(|e| e.to_string())?;
            if !t.cluster.node(*node).is_running() {
                t.cluster.start(*node).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Undo::FaultioOff(node) => {
            let path = &t.cluster.node(*node).faults_path;
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        }
        Undo::ClockBack(node) => {
            t.firewall.heal().map_err(|e| e.to_string())?;
            t.cluster.kill(*node).await;
            t.cluster.set_clock(*node, None);
            t.cluster.start(*node).await.map_err(|e| e.to_string())
        }
        Undo::AddBack(node) => add_back(t.cluster, *node, 20).await,
        Undo::Nothing => Ok(()),
    }
}

/// Adds `node` back as a voter if the configuration lacks it, retrying for a while (a change
/// may be refused while another is under way or no leader is ready).
pub async fn add_back(cluster: &Cluster, node: u64, attempts: u32) -> Result<(), String> {
    let raft = cluster.node(node).advertised_raft().to_string();
    let mut last = String::new();
    for _ in 0..attempts {
        let Some(leader) = cluster.leader().await else {
            last = "no leader".into();
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if let Some(view) = cluster.view(leader).await {
            if view.committed && view.voters.contains(&node) {
                return Ok(());
            }
        }
        let request = ClusterRequest::AddVoter {
            id: node,
            raft: Some(raft.clone()),
        };
        match cluster
            .admin::<ClusterView>(leader, request, Duration::from_secs(10))
            .await
        {
            Ok(view) if view.voters.contains(&node) => return Ok(()),
            Ok(view) => last = format!("voters {:?}", view.voters),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("node {node} could not be added back: {last}"))
}

/// Replaces faultio's control file atomically (its rule: by rename).
fn write_control(path: &std::path::Path, text: &str) -> Result<(), String> {
    let new = path.with_extension("new");
    std::fs::write(&new, text).map_err(|e| e.to_string())?;
    std::fs::rename(&new, path).map_err(|e| e.to_string())
}
