//! One nemesis run: start the cluster, run the workload under the fault schedule, heal, wait for
//! recovery, read everything back, check, and write the report directory.

use crate::check;
use crate::cluster::{Cluster, NodeProcess, Setup, PROXY_PORT, RAFT_PORT};
use crate::faults::{self, Active, Kind, Targets};
use crate::firewall::Firewall;
use crate::model::{FaultSpan, Op, OpResult, Outcome, Record};
use crate::proxy::{Proxy, Route};
use crate::report;
use crate::workload::{self, Keys, Recorder, WorkloadConfig};
use raftkv::client::{Client, ClientConfig};
use raftkv::demo::log_tail;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The settings of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub nodes: usize,
    pub seed: u64,
    /// How long faults are injected (the workload runs on through recovery).
    pub duration: Duration,
    pub kinds: Vec<Kind>,
    pub report_dir: PathBuf,
    pub setup: Setup,
    pub clients_per_node: usize,
    /// Operations per second per client, at most.
    pub rate: f64,
    pub registers: usize,
    pub counters: usize,
    /// How long each fault lasts, in seconds (drawn uniformly).
    pub fault_secs: (f64, f64),
    /// Quiet time between faults, in seconds (drawn uniformly).
    pub quiet_secs: (f64, f64),
    /// After the final heal, the cluster must serve a write through every node within this.
    pub recovery_bound: Duration,
    /// Print the timeline as it happens.
    pub verbose: bool,
    /// The rates a clock fault draws from (`faults::CLOCK_RATES` by default).
    pub clock_rates: Vec<f64>,
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub passed: bool,
    /// Wall-clock time of the history's time 0 (ms since the Unix epoch), to line the history
    /// up with the nodes' logs.
    pub started_unix_ms: u64,
    pub seed: u64,
    pub nodes: usize,
    pub duration_s: f64,
    pub lease_reads: bool,
    /// Arguments given to every `raftkv serve` beyond the nemesis's own.
    pub server_args: Vec<String>,
    pub operations: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Faults that could not be injected or healed, in words.
    pub fault_errors: Vec<String>,
    /// Time from the final heal until every node served a write.
    pub recovery_ms: Option<u64>,
    pub recovery_bound_ms: u64,
    /// After each healed fault, the time until the next acknowledged write that was sent
    /// after the heal: the median and the longest.
    pub fault_recovery_p50_ms: Option<u64>,
    pub fault_recovery_max_ms: Option<u64>,
    /// Node exits the nemesis did not cause (a full disk's stop is counted as caused).
    pub unexpected_exits: Vec<String>,
    pub violations: Vec<String>,
    pub report_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
}

fn setup_error(e: impl std::fmt::Display) -> RunError {
    RunError::Setup(e.to_string())
}

/// The fault timeline as it is written.
struct Timeline {
    start: Instant,
    spans: Vec<FaultSpan>,
    errors: Vec<String>,
    verbose: bool,
}

impl Timeline {
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn open(&mut self, kind: &str, nodes: Vec<u64>, detail: String) -> usize {
        let id = self.spans.len() as u64 + 1;
        if self.verbose {
            println!(
                "{:>7.1}s  {kind:<10} {nodes:?} {detail}",
                self.start.elapsed().as_secs_f64()
            );
        }
        self.spans.push(FaultSpan {
            id,
            kind: kind.to_owned(),
            nodes,
            start_us: self.now_us(),
            end_us: None,
            detail,
        });
        self.spans.len() - 1
    }

    fn close(&mut self, index: usize, note: Option<String>) {
        let now = self.now_us();
        let span = &mut self.spans[index];
        span.end_us = Some(now);
        if let Some(note) = note {
            span.detail = format!("{}; {note}", span.detail);
        }
        if self.verbose {
            println!(
                "{:>7.1}s  healed     {}",
                self.start.elapsed().as_secs_f64(),
                span.kind
            );
        }
    }
}

/// The run's moving parts.
struct Rig {
    cluster: Cluster,
    firewall: Firewall,
    proxy: Proxy,
    clock_rates: Vec<f64>,
}

impl Rig {
    fn targets(&mut self) -> Targets<'_> {
        Targets {
            cluster: &mut self.cluster,
            firewall: &mut self.firewall,
            proxy: &self.proxy,
            clock_rates: &self.clock_rates,
        }
    }
}

/// Runs the nemesis. The report directory is written even when checks fail; `Err` only when
/// the run could not be carried out at all.
pub async fn run(config: RunConfig) -> Result<Summary, RunError> {
    let dir = &config.report_dir;
    fs::create_dir_all(dir).map_err(setup_error)?;
    if fs::read_dir(dir).map_err(setup_error)?.next().is_some() {
        return Err(RunError::Setup(format!(
            "the report directory {} is not empty",
            dir.display()
        )));
    }
    let firewall = Firewall::install(vec![RAFT_PORT, PROXY_PORT]).map_err(setup_error)?;
    let routes = (1..=config.nodes as u64)
        .map(|id| {
            let ip = NodeProcess::ip_of(id).into();
            Route {
                listen: std::net::SocketAddr::new(ip, PROXY_PORT),
                upstream: std::net::SocketAddr::new(ip, RAFT_PORT),
            }
        })
        .collect();
    let proxy = Proxy::start_seeded(routes, config.seed)
        .await
        .map_err(|e| RunError::Setup(format!("the fault proxy cannot start: {e}")))?;
    let cluster = Cluster::prepare(config.setup.clone(), dir, config.nodes).map_err(setup_error)?;
    let mut rig = Rig {
        cluster,
        firewall,
        proxy,
        clock_rates: config.clock_rates.clone(),
    };
    let result = drive(&config, &mut rig).await;
    rig.cluster.shutdown().await;
    rig.proxy.shutdown().await;
    rig.firewall.uninstall();
    result
}

async fn drive(config: &RunConfig, rig: &mut Rig) -> Result<Summary, RunError> {
    for id in rig.cluster.ids() {
        rig.cluster.start(id).await.map_err(setup_error)?;
    }
    let start = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut timeline = Timeline {
        start,
        spans: Vec::new(),
        errors: Vec::new(),
        verbose: config.verbose,
    };
    wait_for_leader(&rig.cluster, Duration::from_secs(20))
        .await
        .ok_or_else(|| RunError::Setup("no leader within 20 s of the start".into()))?;

    let keys = Keys::new(config.registers, config.counters);
    let (recorder, mut records) = Recorder::new(start);
    let history_path = config.report_dir.join("history.jsonl");
    let collector = tokio::spawn(async move {
        let mut file = fs::File::create(&history_path)
            .ok()
            .map(std::io::BufWriter::new);
        let mut all = Vec::new();
        while let Some(record) = records.recv().await {
            if let Some(file) = &mut file {
                if let Ok(line) = serde_json::to_string(&record) {
                    let _ = writeln!(file, "{line}");
                }
            }
            all.push(record);
        }
        if let Some(mut file) = file {
            let _ = file.flush();
        }
        all
    });
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = rig
        .cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.client_addr()))
        .collect();
    let workload = tokio::spawn(workload::run(
        WorkloadConfig {
            clients_per_node: config.clients_per_node,
            rate: config.rate,
            keys: keys.clone(),
            seed: config.seed,
        },
        nodes,
        recorder.clone(),
        stop.clone(),
    ));

    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut exits = Exits::default();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let end = start + config.duration;
    let administrative: Vec<Kind> = config
        .kinds
        .iter()
        .copied()
        .filter(|k| k.is_administrative())
        .collect();
    while Instant::now() < end {
        let quiet = secs(&mut rng, config.quiet_secs);
        watch(rig, &mut exits, &[], Instant::now() + quiet).await;
        if Instant::now() >= end {
            break;
        }
        let kind = config.kinds[rng.usize(0..config.kinds.len())];
        let mut hold = secs(&mut rng, config.fault_secs);
        if kind == Kind::Pause {
            // Longer than raftkv's longest default election timeout (2 s): a paused leader
            // must be replaced and wake up deposed.
            hold = hold.max(Duration::from_secs(3));
        }
        // An administrative change while a network or process fault is on, now and then.
        let also = (!kind.is_administrative() && rng.u32(0..4) == 0 && !administrative.is_empty())
            .then(|| administrative[rng.usize(0..administrative.len())]);
        let mut active = Vec::new();
        for kind in std::iter::once(kind).chain(also) {
            match faults::inject(kind, &mut rng, &mut rig.targets()).await {
                Ok(fault) => {
                    *counts.entry(kind.name().to_owned()).or_default() += 1;
                    let span =
                        timeline.open(kind.name(), fault.nodes.clone(), fault.detail.clone());
                    active.push((span, fault));
                }
                Err(e) => {
                    timeline.errors.push(format!("{kind} not injected: {e}"));
                    if config.verbose {
                        println!("          {kind} not injected: {e}");
                    }
                }
            }
            if also.is_some() {
                // The second one lands inside the first.
                watch(rig, &mut exits, &active, Instant::now() + hold / 3).await;
            }
        }
        watch(rig, &mut exits, &active, Instant::now() + hold).await;
        // The first fault first: a member is added back once the network or process fault
        // that may keep a leader from being elected is gone.
        for (span, fault) in &active {
            let note = faults::heal(fault, &mut rig.targets()).await.err();
            if let Some(e) = &note {
                timeline
                    .errors
                    .push(format!("{} not healed: {e}", fault.kind));
            }
            timeline.close(*span, note);
        }
    }

    // Heal everything a fault might have left, then measure recovery.
    let healed = Instant::now();
    let heal_span = timeline.open(
        "heal",
        vec![],
        "everything healed; waiting for recovery".into(),
    );
    heal_all(rig, &mut timeline).await;
    let recovery = recover(rig, config.recovery_bound, &mut exits).await;
    let recovery_ms = recovery.map(|()| healed.elapsed().as_millis() as u64);
    timeline.close(heal_span, None);
    // A little more workload on the healed cluster, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = workload.await;
    let finals = final_reads(rig, &keys, &recorder).await;
    drop(recorder);
    let history = collector.await.unwrap_or_default();

    let mut violations = Vec::new();
    if let Err(finding) = check::registers(&history, |k| keys.is_counter(k)) {
        violations.push(finding);
    }
    violations.extend(check::counters(&history, |k| keys.is_counter(k)));
    violations.extend(check::agreement(&finals));
    violations.extend(check::acknowledged_increments(&history, &finals));
    if recovery_ms.is_none() {
        violations.push(format!(
            "the cluster did not recover within {:?} of the final heal",
            config.recovery_bound
        ));
    }
    let unexpected: Vec<String> = exits.unexpected.clone();
    violations.extend(unexpected.iter().map(|e| format!("unexpected exit: {e}")));

    let (fault_recovery_p50_ms, fault_recovery_max_ms) =
        fault_recoveries(&history, &timeline.spans);
    let count = |class: &str| {
        history
            .iter()
            .filter(|r| r.outcome.class() == class)
            .count() as u64
    };
    let summary = Summary {
        passed: violations.is_empty(),
        started_unix_ms,
        seed: config.seed,
        nodes: config.nodes,
        duration_s: start.elapsed().as_secs_f64(),
        lease_reads: config.setup.lease_reads,
        server_args: config.setup.server_args.clone(),
        operations: history.len() as u64,
        ok: count("ok"),
        failed: count("fail"),
        unknown: count("unknown"),
        faults: counts,
        fault_errors: timeline.errors.clone(),
        recovery_ms,
        recovery_bound_ms: config.recovery_bound.as_millis() as u64,
        fault_recovery_p50_ms,
        fault_recovery_max_ms,
        unexpected_exits: unexpected,
        violations,
        report_dir: config.report_dir.clone(),
    };
    write_report(config, &summary, &history, &timeline, rig)?;
    Ok(summary)
}

/// For each healed fault, how long until a write sent after the heal was acknowledged.
fn fault_recoveries(history: &[Record], spans: &[FaultSpan]) -> (Option<u64>, Option<u64>) {
    let mut writes: Vec<(u64, u64)> = history
        .iter()
        .filter(|r| r.op.is_write() && matches!(r.outcome, Outcome::Ok(_)))
        .map(|r| (r.call_us, r.ret_us))
        .collect();
    writes.sort_unstable();
    let mut times: Vec<u64> = spans
        .iter()
        .filter(|s| s.kind != "heal")
        .filter_map(|s| s.end_us)
        .filter_map(|end| {
            let first = writes.partition_point(|&(call, _)| call < end);
            writes[first..]
                .iter()
                .map(|&(_, ret)| ret)
                .min()
                .map(|ret| (ret - end) / 1000)
        })
        .collect();
    times.sort_unstable();
    (times.get(times.len() / 2).copied(), times.last().copied())
}

fn secs(rng: &mut fastrand::Rng, (min, max): (f64, f64)) -> Duration {
    Duration::from_secs_f64(min + rng.f64() * (max - min).max(0.0))
}

/// Node exits seen so far.
#[derive(Default)]
struct Exits {
    unexpected: Vec<String>,
}

/// Waits until `until`, looking for nodes that exit on their own. A node whose disk is full
/// (an active `disk-full` fault) may stop, and must say why in its log; any other exit is
/// unexpected.
async fn watch(rig: &mut Rig, exits: &mut Exits, active: &[(usize, Active)], until: Instant) {
    loop {
        for id in rig.cluster.ids() {
            if let Some(status) = rig.cluster.try_exit(id) {
                let disk_full = active
                    .iter()
                    .any(|(_, a)| a.kind == Kind::DiskFull && a.nodes.contains(&id));
                let log = fs::read_to_string(&rig.cluster.node(id).log_path).unwrap_or_default();
                let explained = disk_full && log.contains("No space left on device");
                if !explained {
                    exits.unexpected.push(format!(
                        "node {id} exited ({status}){}",
                        log_tail(&rig.cluster.node(id).log_path, 15)
                    ));
                }
            }
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
    }
}

/// Undoes whatever may be left: cuts, toxics, pauses, fillers, slow disks, clocks, stopped
/// nodes and removed members.
async fn heal_all(rig: &mut Rig, timeline: &mut Timeline) {
    let mut note = |what: String| timeline.errors.push(what);
    if let Err(e) = rig.firewall.heal() {
        note(format!("final heal: iptables: {e}"));
    }
    rig.proxy.clear_all();
    for id in rig.cluster.ids() {
        let node = rig.cluster.node(id);
        let _ = fs::remove_file(&node.faults_path);
        let _ = fs::remove_file(node.data_dir.join("raftchaos.filler"));
        rig.cluster.pause(id, false);
        if rig.cluster.node(id).clock.is_some() {
            rig.cluster.kill(id).await;
            rig.cluster.set_clock(id, None);
        }
        if !rig.cluster.node(id).is_running() {
            if let Err(e) = rig.cluster.start(id).await {
                note(format!("final heal: node {id} does not start: {e}"));
            }
        }
    }
    for id in rig.cluster.ids() {
        if let Err(e) = faults::add_back(&rig.cluster, id, 20).await {
            note(format!("final heal: {e}"));
        }
    }
}

async fn wait_for_leader(cluster: &Cluster, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(leader) = cluster.leader().await {
            return Some(leader);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Waits until a write goes through every node (forwarded to the leader where needed) and every
/// node has applied it. `None` if that does not happen within `bound`.
async fn recover(rig: &mut Rig, bound: Duration, exits: &mut Exits) -> Option<()> {
    let deadline = Instant::now() + bound;
    'attempt: while Instant::now() < deadline {
        watch(rig, exits, &[], Instant::now()).await;
        // A member whose removal or addition was cut short by a fault is added back.
        for id in rig.cluster.ids() {
            if faults::add_back(&rig.cluster, id, 2).await.is_err() {
                continue 'attempt;
            }
        }
        let mut commit = 0;
        for node in &rig.cluster.nodes {
            let config = ClientConfig {
                request_timeout: Duration::from_secs(1),
                deadline: Duration::from_secs(2),
                ..ClientConfig::default()
            };
            let Ok(mut client) = Client::new(vec![node.client_addr()], config) else {
                continue 'attempt;
            };
            let key = format!("recovery-{}", node.id);
            if client.set(key.as_bytes(), b"1").await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'attempt;
            }
        }
        for id in rig.cluster.ids() {
            match rig.cluster.info(id).await {
                Some(info) => commit = commit.max(info.commit_index),
                None => continue 'attempt,
            }
        }
        // Every node must apply what was committed once the writes went through: a fixed
        // target, as the workload goes on committing (a target read again each time could
        // stay a few milliseconds ahead of the followers for good).
        let mut behind = rig.cluster.ids();
        while !behind.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for id in behind {
                match rig.cluster.info(id).await {
                    Some(info) if info.applied_index >= commit => {}
                    _ => still.push(id),
                }
            }
            behind = still;
            if !behind.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        return behind.is_empty().then_some(());
    }
    None
}

/// Reads every key from every node (the node itself answers: no redirects), recorded in the
/// history like any read.
async fn final_reads(rig: &Rig, keys: &Keys, recorder: &Recorder) -> Vec<Record> {
    let mut finals = Vec::new();
    for node in &rig.cluster.nodes {
        let config = ClientConfig {
            max_redirects: 0,
            deadline: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        let Ok(mut client) = Client::new(vec![node.client_addr()], config) else {
            continue;
        };
        for key in keys.all() {
            let mut record = None;
            for _ in 0..5 {
                let op = Op::Get { key: key.clone() };
                let r = recorder.perform(&mut client, 0, node.id, op).await;
                let ok = matches!(r.outcome, Outcome::Ok(OpResult::Value { .. }));
                record = Some(r);
                if ok {
                    break;
                }
            }
            finals.extend(record);
        }
    }
    finals
}

fn write_report(
    config: &RunConfig,
    summary: &Summary,
    history: &[Record],
    timeline: &Timeline,
    rig: &Rig,
) -> Result<(), RunError> {
    let dir = &config.report_dir;
    let write = |name: &str, text: String| fs::write(dir.join(name), text).map_err(setup_error);
    let mut faults = String::new();
    for span in &timeline.spans {
        faults.push_str(&serde_json::to_string(span).map_err(setup_error)?);
        faults.push('\n');
    }
    write("faults.jsonl", faults)?;
    write(
        "summary.json",
        serde_json::to_string_pretty(summary).map_err(setup_error)?,
    )?;
    write("summary.txt", summary_text(summary))?;
    let end_us = u64::try_from(timeline.start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let title = format!(
        "raftchaos: {} nodes, seed {}, {}",
        config.nodes,
        config.seed,
        if summary.passed { "passed" } else { "FAILED" }
    );
    write(
        "timeline.svg",
        report::timeline_svg(history, &timeline.spans, end_us, &title),
    )?;
    let rows = summary_rows(summary);
    write(
        "index.html",
        report::html_page(
            &title,
            &rows,
            summary.passed,
            "timeline.svg",
            &timeline.spans,
            &summary.violations,
        ),
    )?;
    if !summary.passed {
        write("excerpts.txt", excerpts(rig))?;
    }
    Ok(())
}

/// What each node's log says about roles, configuration and trouble: where to start reading
/// when a run fails.
fn excerpts(rig: &Rig) -> String {
    let mut text = String::new();
    for node in &rig.cluster.nodes {
        text.push_str(&format!(
            "==== node {} ({})\n",
            node.id,
            node.log_path.display()
        ));
        let log = fs::read_to_string(&node.log_path).unwrap_or_default();
        for line in log.lines().filter(|l| {
            [
                "role:",
                "WARN",
                "ERROR",
                "raftchaos",
                "configuration in effect",
            ]
            .iter()
            .any(|m| l.contains(m))
        }) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn summary_rows(summary: &Summary) -> Vec<(String, String)> {
    let faults: Vec<String> = summary
        .faults
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    vec![
        ("seed".into(), summary.seed.to_string()),
        ("nodes".into(), summary.nodes.to_string()),
        ("duration".into(), format!("{:.1} s", summary.duration_s)),
        ("lease reads".into(), summary.lease_reads.to_string()),
        ("server args".into(), summary.server_args.join(" ")),
        (
            "operations".into(),
            format!(
                "{} ({} ok, {} failed, {} unknown)",
                summary.operations, summary.ok, summary.failed, summary.unknown
            ),
        ),
        ("faults".into(), faults.join(", ")),
        (
            "recovery".into(),
            match summary.recovery_ms {
                Some(ms) => format!("{ms} ms (bound {} ms)", summary.recovery_bound_ms),
                None => format!("none within {} ms", summary.recovery_bound_ms),
            },
        ),
        (
            "after a fault".into(),
            match (summary.fault_recovery_p50_ms, summary.fault_recovery_max_ms) {
                (Some(p50), Some(max)) => {
                    format!(
                        "a write acknowledged {p50} ms after the heal (median), {max} ms at most"
                    )
                }
                _ => "-".into(),
            },
        ),
        (
            "fault errors".into(),
            if summary.fault_errors.is_empty() {
                "none".into()
            } else {
                summary.fault_errors.join("; ")
            },
        ),
        ("violations".into(), summary.violations.len().to_string()),
    ]
}

/// The summary as the terminal shows it.
pub fn summary_text(summary: &Summary) -> String {
    let mut text = String::new();
    for (name, value) in summary_rows(summary) {
        text.push_str(&format!("{name:<13} {value}\n"));
    }
    for violation in &summary.violations {
        text.push_str(&format!("VIOLATION: {violation}\n"));
    }
    text.push_str(&format!(
        "verdict       {}\nreport        {}/index.html\n",
        if summary.passed { "PASS" } else { "FAIL" },
        summary.report_dir.display()
    ));
    text
}
