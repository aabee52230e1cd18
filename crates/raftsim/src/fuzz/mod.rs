//! Randomized fault simulation. Each seed drives a cluster on virtual time through a random
//! workload and a random fault schedule, checking the safety properties after every step, the
//! clients' history for linearizability at the end, and liveness once the faults stop. Every
//! random choice becomes a scenario command, so a failing run can be replayed, shrunk to the
//! fewest commands that still fail, and written as a scenario file.
//!
//! Same seed, same run: the generator is a ChaCha8 stream seeded with the seed, and the
//! simulator is deterministic.

pub mod cli;
mod history;
mod invariants;
mod shrink;

pub use invariants::Violation;
pub use shrink::shrink;

use crate::cluster::{Cluster, ClusterSettings, CommandOutcome};
use crate::counter::NIL;
use crate::runner;
use crate::scenario::{Command, MemberChange};
use history::History;
use invariants::Invariants;
use lincheck::{CheckResult, KvInput};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuzzOptions {
    pub nodes: usize,
    /// Random steps before the liveness phase.
    pub steps: u64,
    /// Every seed reads with leases while the nodes' clocks drift apart by more than the lease
    /// allows (`Config::lease_ticks`): a labelled mode, expected to find stale reads, which
    /// shows that the checker sees them. Off, leases run only within the documented bound.
    pub lease_beyond_drift_bound: bool,
    #[cfg(feature = "mutations")]
    pub mutation: Option<raftengine::Mutation>,
}

impl Default for FuzzOptions {
    fn default() -> FuzzOptions {
        FuzzOptions::new(3, 1000)
    }
}

impl FuzzOptions {
    pub fn new(nodes: usize, steps: u64) -> FuzzOptions {
        FuzzOptions {
            nodes,
            steps,
            lease_beyond_drift_bound: false,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// The labelled mode of [`FuzzOptions::lease_beyond_drift_bound`].
    pub fn with_lease_beyond_drift_bound(mut self) -> FuzzOptions {
        self.lease_beyond_drift_bound = true;
        self
    }

    /// Runs with a known protocol bug switched on (test builds only).
    #[cfg(feature = "mutations")]
    pub fn with_mutation(mut self, mutation: Option<raftengine::Mutation>) -> FuzzOptions {
        self.mutation = mutation;
        self
    }
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub violation: Option<Violation>,
    /// Every command the run executed, in order (the random phase and the liveness phase).
    pub commands: Vec<Command>,
    pub operations: usize,
    pub settings: ClusterSettings,
    /// The clients' history, as the linearizability checker saw it.
    pub history: Vec<lincheck::Operation>,
}

/// Steps after a membership change was asked before a disk may lie (the change has settled).
const CHANGE_SETTLE_STEPS: u64 = 500;
/// Virtual ticks the liveness phase may take to elect a leader and commit a write.
const LIVENESS_ROUNDS: u64 = 300;
/// Steps a client waits for an outcome before it gives up (the outcome stays unknown).
const CLIENT_PATIENCE: u64 = 250;
const KEYS: [&str; 2] = ["a", "b"];

/// The lease of lease-reading seeds: half the minimum election timeout, so the documented bound
/// is a clock at most twice as fast as the leader's.
const LEASE_TICKS: u64 = 3;
const ELECTION_TICKS: (u64, u64) = (6, 12);

/// The cluster settings a seed runs with (some vary by seed).
pub fn settings_for(seed: u64, options: FuzzOptions) -> ClusterSettings {
    // Seeds cycle through the options users can turn off, and through forwarding; a third of
    // the seeds with check-quorum read with leases; every fifth compacts often and sends its
    // snapshots in small chunks (transfers slower than compaction), some keeping a log tail.
    let check_quorum = options.lease_beyond_drift_bound || seed % 8 < 4;
    let lease = options.lease_beyond_drift_bound || (check_quorum && seed.is_multiple_of(3));
    let compacting = seed % 5 == 1;
    let retain = compacting && seed % 10 == 1;
    ClusterSettings {
        nodes: options.nodes,
        pre_vote: seed % 4 < 2,
        check_quorum,
        forward_proposals: seed.is_multiple_of(2),
        election_timeout_ticks: ELECTION_TICKS,
        max_entries_per_message: 8,
        // Beyond the bound the lease is as long as the configuration allows (just below the
        // minimum election timeout), so a small drift already breaks it.
        lease_ticks: match (lease, options.lease_beyond_drift_bound) {
            (false, _) => 0,
            (true, false) => LEASE_TICKS,
            (true, true) => ELECTION_TICKS.0 - 1,
        },
        snapshot_after_entries: if compacting { 4 + seed % 13 } else { 0 },
        max_snapshot_chunk_bytes: if compacting {
            3 + (seed % 11) as usize
        } else {
            1 << 20
        },
        log_retention_entries: if retain { seed % 4 } else { 0 },
        log_retention_bytes: if retain { u64::MAX } else { 0 },
        #[cfg(feature = "mutations")]
        mutation: options.mutation,
        ..ClusterSettings::default()
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, options: FuzzOptions) -> SeedReport {
    let settings = settings_for(seed, options);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sim = Sim::new(&settings);
    let drift = if options.lease_beyond_drift_bound {
        ClockDrift::BeyondLeaseBound
    } else if settings.lease_ticks > 0 {
        ClockDrift::WithinLeaseBound
    } else {
        ClockDrift::Any
    };
    let mut generator = Generator::new(&mut rng, options.nodes, drift);
    let mut violation = None;
    for _ in 0..options.steps {
        let command = generator.next(&mut rng, &sim);
        if let Err(v) = sim.apply(command) {
            violation = Some(v);
            break;
        }
    }
    let violation = violation.or_else(|| sim.finish().err());
    SeedReport {
        seed,
        violation,
        history: sim.history.operations(),
        operations: sim.history.len(),
        commands: sim.executed,
        settings,
    }
}

/// Replays commands with every check and describes where the run ended: each node's status and
/// the client operations still waiting (for debugging a failure).
pub fn explain(settings: &ClusterSettings, commands: &[Command]) -> String {
    let mut sim = Sim::new(settings);
    let mut violation = None;
    for command in commands {
        if let Err(v) = sim.apply(command.clone()) {
            violation = Some(v);
            break;
        }
    }
    let violation = violation.or_else(|| sim.finish().err());
    let mut out = format!("violation: {violation:?}\n");
    for node in 1..=sim.cluster.node_count() {
        out.push_str(&format!("N-{node}: {:?}\n", sim.cluster.status(node)));
    }
    out.push_str(&format!("waiting: {:?}\n", sim.history.describe_pending()));
    out.push_str(&format!("data losses: {:?}\n", sim.cluster.data_losses));
    out
}

/// Replays commands (from a run or a scenario file) with every check; the first violation.
pub fn replay(settings: &ClusterSettings, commands: &[Command]) -> Option<Violation> {
    let mut sim = Sim::new(settings);
    for command in commands {
        if let Err(v) = sim.apply(command.clone()) {
            return Some(v);
        }
    }
    sim.finish().err()
}

/// The cluster, the checks, and the clients' history.
struct Sim {
    settings: ClusterSettings,
    cluster: Cluster,
    invariants: Invariants,
    history: History,
    restarts: Vec<u64>,
    step: u64,
    /// Commands that did something (ones refused by the harness, like restarting a running
    /// node, are left out so the list replays cleanly as a scenario).
    executed: Vec<Command>,
    next_value: u64,
}

impl Sim {
    fn new(settings: &ClusterSettings) -> Sim {
        // Settings come from `settings_for` or a parsed scenario, both valid.
        let mut cluster = Cluster::new(settings).expect("valid fuzz settings");
        cluster.set_recording(false);
        Sim {
            settings: settings.clone(),
            cluster,
            invariants: Invariants::default(),
            history: History::default(),
            restarts: vec![0; settings.nodes],
            step: 0,
            executed: Vec::new(),
            next_value: 1,
        }
    }

    fn apply(&mut self, command: Command) -> Result<(), Violation> {
        self.step += 1;
        let issued = match &command {
            Command::Submit { node, command } => parse_write(command).map(|input| (*node, input)),
            Command::Read {
                node,
                key: Some(key),
            } => Some((*node, KvInput::Get { key: key.clone() })),
            _ => None,
        };
        if let Command::Restart { node, .. } = &command {
            if self.cluster.raft(*node).is_ok_and(|r| r.is_none()) {
                self.restarts[*node - 1] += 1;
            }
        }
        let crashing = match &command {
            Command::Crash(node) | Command::CrashLosing { node, .. } => {
                Some(*node).filter(|n| self.cluster.raft(*n).is_ok_and(|r| r.is_some()))
            }
            _ => None,
        };
        if let Some(node) = crashing.filter(|_| matches!(command, Command::CrashLosing { .. })) {
            // It may have acknowledged everything it held (answers may still be on their way):
            // until repaired it counts as storing that much.
            let held = self
                .cluster
                .storage(node)
                .map_or(raftengine::LogIndex(0), |s| s.last_index());
            self.invariants.note_data_loss(node, held);
        }
        if runner::execute(&mut self.cluster, &command).is_ok() {
            if let Some((node, input)) = issued {
                if let Some(request) = self.cluster.last_request(node) {
                    self.history.issued(node, request, input, self.step);
                }
            }
            if let Some(node) = crashing {
                // Its clients lose their connection: what they waited for is unknown.
                self.history.node_crashed(node, self.step);
            }
            self.executed.push(command);
        }
        if let Some(problem) = runner::harness_problem(&self.cluster) {
            return Err(Violation {
                property: "bad input refused, driver reports accepted",
                detail: problem,
            });
        }
        let resend_ticks = self.settings.election_timeout_ticks.0;
        if let Some(detail) = self.cluster.traffic.chunk_amplification(resend_ticks) {
            return Err(Violation {
                property: "message amplification",
                detail,
            });
        }
        // A stranger's request is refused by design; between the harness's nodes that only
        // happens when a removed node (no longer named in any configuration the receiver knows)
        // forwards a client's request.
        self.cluster
            .step_errors
            .retain(|(_, e)| !matches!(e, raftengine::StepError::UnknownSender(_)));
        if let Some((node, e)) = self.cluster.step_errors.first() {
            return Err(Violation {
                property: "no message refused",
                detail: format!("N-{node} refused a message: {e}"),
            });
        }
        self.history.poll(&self.cluster, self.step);
        self.invariants.check(&self.cluster, &self.restarts)
    }

    /// Liveness, outcome completeness, then linearizability.
    fn finish(&mut self) -> Result<(), Violation> {
        self.liveness()?;
        self.outcomes_complete()?;
        let operations = self.history.operations();
        match lincheck::check(&operations) {
            CheckResult::Linearizable | CheckResult::Unknown { .. } => Ok(()),
            CheckResult::NotLinearizable(v) => Err(Violation {
                property: "linearizability",
                detail: v.to_string(),
            }),
            CheckResult::Invalid(e) => Err(Violation {
                property: "linearizability",
                detail: format!("the history is malformed: {e}"),
            }),
        }
    }

    /// Every client operation ends with an outcome (a value, a refusal, or "unknown"): after
    /// the liveness phase the cluster runs on until none waits, within a bound.
    fn outcomes_complete(&mut self) -> Result<(), Violation> {
        let nodes = self.cluster.node_count();
        for _ in 0..LIVENESS_ROUNDS {
            if self.history.pending().is_empty() {
                return Ok(());
            }
            self.deliver_everything()?;
            for node in 1..=nodes {
                self.apply(Command::Tick(node))?;
            }
        }
        let waiting: Vec<String> = self
            .history
            .pending()
            .iter()
            .map(|(node, request)| format!("request {} at N-{node}", request.0))
            .collect();
        Err(Violation {
            property: "outcome completeness",
            detail: format!(
                "{LIVENESS_ROUNDS} ticks after the cluster recovered, {} client operations still have no outcome: {}",
                waiting.len(),
                waiting.join(", ")
            ),
        })
    }

    /// Every node forwards what it has to send and handles what it received, until nothing is
    /// queued anywhere.
    fn deliver_everything(&mut self) -> Result<(), Violation> {
        for node in 1..=self.cluster.node_count() {
            self.apply(Command::Send { node, all: true })?;
            while self
                .cluster
                .queued(node)
                .is_ok_and(|(inbound, _)| inbound > 0)
            {
                self.apply(Command::DeliverAt { node, at: 0 })?;
                self.apply(Command::Send { node, all: true })?;
            }
        }
        Ok(())
    }

    /// Faults stop: the network heals, crashed nodes restart, disks sync. The cluster must then
    /// elect a leader and commit a new write within a bounded number of ticks.
    fn liveness(&mut self) -> Result<(), Violation> {
        let nodes = self.cluster.node_count();
        self.apply(Command::Heal)?;
        self.apply(Command::RestoreLinks)?;
        for node in 1..=nodes {
            self.apply(Command::Restart { node, empty: false })?;
            self.apply(Command::Disk {
                node,
                manual: false,
            })?;
        }
        let value = format!("live{}", self.next_value);
        let mut probe = None;
        for _ in 0..LIVENESS_ROUNDS {
            self.deliver_everything()?;
            if let Some((node, request)) = probe {
                match self.cluster.outcome(node, request) {
                    Ok(CommandOutcome::Value(_)) => return Ok(()),
                    Ok(CommandOutcome::Pending) => {}
                    _ => probe = None,
                }
            }
            if probe.is_none() {
                if let Some(leader) = (1..=nodes).find(|&n| {
                    self.cluster
                        .raft(n)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.role() == raftengine::RoleKind::Leader)
                }) {
                    self.apply(Command::Submit {
                        node: leader,
                        command: format!("put live {value}"),
                    })?;
                    probe = self.cluster.last_request(leader).map(|r| (leader, r));
                }
            }
            for node in 1..=nodes {
                self.apply(Command::Tick(node))?;
            }
        }
        let states: Vec<String> = (1..=nodes)
            .map(|n| match self.cluster.status(n) {
                Ok(Some(s)) => format!(
                    "N-{n} {:?} term {} leader {:?} last {} commit {} progress {:?}",
                    s.role,
                    s.term.0,
                    s.leader.map(|l| l.0),
                    s.last_index.0,
                    s.commit.0,
                    s.progress
                ),
                _ => format!("N-{n} down"),
            })
            .collect();
        Err(Violation {
            property: "liveness",
            detail: format!(
                "after the faults stopped, no write committed within {LIVENESS_ROUNDS} ticks\n{}",
                states.join("\n")
            ),
        })
    }
}

/// The key-value operation a submitted command performs, if it is one.
fn parse_write(command: &str) -> Option<KvInput> {
    let words: Vec<&str> = command.split_whitespace().collect();
    Some(match words.as_slice() {
        ["put", key, value] => KvInput::Put {
            key: key.to_string(),
            value: value.to_string(),
        },
        ["del", key] => KvInput::Delete {
            key: key.to_string(),
        },
        ["cas", key, expected, new] => KvInput::Cas {
            key: key.to_string(),
            expected: (*expected != NIL).then(|| expected.to_string()),
            new: new.to_string(),
        },
        _ => return None,
    })
}

/// How far the nodes' clocks may drift apart (as relative tick rates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClockDrift {
    /// No leases: any rates, up to 3 to 1.
    Any,
    /// Leases are on: no clock runs faster than another by the ratio of the minimum election
    /// timeout to the lease (2 to 1 here), the bound `Config::lease_ticks` documents.
    WithinLeaseBound,
    /// Leases are on and rates differ by up to 15 to 1 (expected to find stale reads).
    BeyondLeaseBound,
}

impl ClockDrift {
    /// The range of relative tick rates to draw each node's from.
    fn rates(self) -> (u64, u64) {
        match self {
            ClockDrift::Any => (5, 15),
            // 15 / 8 < 2 = ELECTION_TICKS.0 / LEASE_TICKS.
            ClockDrift::WithinLeaseBound => (8, 15),
            ClockDrift::BeyondLeaseBound => (1, 15),
        }
    }
}

/// Chooses the next command from the cluster's state and the seed's random stream.
struct Generator {
    /// Relative tick rates: nodes whose clocks run fast tick more often.
    clock_weights: Vec<u64>,
    /// Faults per 1000 steps (varies by seed: calm runs and stormy ones).
    fault_rate: u64,
    /// Per client: the node and request it waits for, when it gave it, and the command (to
    /// retry elsewhere if it was refused without effect: a redirect or "retry").
    clients: Vec<Option<(usize, raftengine::RequestId, u64, Command)>>,
    max_down: usize,
    values: u64,
    step: u64,
    /// The node whose disk lost synced data, until it is repaired.
    lossy: Option<usize>,
    /// The step of the last membership change asked for.
    last_change: Option<u64>,
    drift: ClockDrift,
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.next_u64() % n
    }
}

impl Generator {
    fn new(rng: &mut ChaCha8Rng, nodes: usize, drift: ClockDrift) -> Generator {
        let (low, high) = drift.rates();
        Generator {
            clock_weights: (0..nodes)
                .map(|_| low + below(rng, high - low + 1))
                .collect(),
            fault_rate: [10, 30, 80][below(rng, 3) as usize],
            clients: vec![None; 4],
            max_down: (nodes - 1) / 2,
            values: 0,
            step: 0,
            lossy: None,
            last_change: None,
            drift,
        }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng, sim: &Sim) -> Command {
        self.step += 1;
        let c = &sim.cluster;
        let nodes = c.node_count();
        let live: Vec<usize> = (1..=nodes)
            .filter(|&n| c.raft(n).is_ok_and(|r| r.is_some()))
            .collect();
        let with_inbound: Vec<usize> = (1..=nodes)
            .filter(|&n| c.queued(n).is_ok_and(|(i, _)| i > 0))
            .collect();
        let with_outbound: Vec<usize> = (1..=nodes)
            .filter(|&n| c.queued(n).is_ok_and(|(_, o)| o > 0))
            .collect();
        let pick =
            |rng: &mut ChaCha8Rng, from: &[usize]| from[below(rng, from.len() as u64) as usize];
        let roll = below(rng, 1000);
        if roll < 400 && !with_inbound.is_empty() {
            let node = pick(rng, &with_inbound);
            let len = c.queued(node).map(|(i, _)| i).unwrap_or(1) as u64;
            let at = if below(rng, 10) < 8 {
                0
            } else {
                below(rng, len)
            } as usize;
            return match below(rng, 100) {
                0..=87 => Command::DeliverAt { node, at },
                88..=93 => Command::DropAt { node, at },
                _ => Command::DuplicateAt { node, at },
            };
        }
        if roll < 580 && !with_outbound.is_empty() {
            return Command::Send {
                node: pick(rng, &with_outbound),
                all: true,
            };
        }
        if (780..900).contains(&roll) && !live.is_empty() {
            if let Some(command) = self.client_op(rng, sim, &live) {
                return command;
            }
        }
        if roll >= 1000 - self.fault_rate && !live.is_empty() {
            return self.fault(rng, sim, &live);
        }
        let total: u64 = self.clock_weights.iter().sum();
        let mut r = below(rng, total);
        for (i, w) in self.clock_weights.iter().enumerate() {
            if r < *w {
                return Command::Tick(i + 1);
            }
            r -= w;
        }
        Command::Tick(1)
    }

    fn client_op(&mut self, rng: &mut ChaCha8Rng, sim: &Sim, live: &[usize]) -> Option<Command> {
        let step = self.step;
        let free = self.clients.iter().position(|slot| match slot {
            None => true,
            Some((node, request, since, _)) => {
                !sim.history.is_pending(*node, *request) || step - since > CLIENT_PATIENCE
            }
        })?;
        let node = match self.stale_leader(&sim.cluster, live) {
            // With leases, half the operations go to the oldest node that believes it leads:
            // that is where a lease read would be stale.
            Some(leader) if below(rng, 2) == 0 => leader,
            _ => live[below(rng, live.len() as u64) as usize],
        };
        let refused = self.clients[free]
            .as_ref()
            .filter(|(n, r, _, _)| sim.history.had_no_effect(*n, *r))
            .map(|(_, _, _, command)| command.clone());
        if let Some(command) = refused {
            // Retry the refused operation, at another node chosen at random.
            let command = match command {
                Command::Read { key, .. } => Command::Read { node, key },
                Command::Submit { command, .. } => Command::Submit { node, command },
                other => other,
            };
            let request = sim.cluster.next_request_id();
            self.clients[free] = Some((node, request, step, command.clone()));
            return Some(command);
        }
        let key = KEYS[below(rng, KEYS.len() as u64) as usize];
        self.values += 1;
        let value = format!("v{}", self.values);
        let command = match below(rng, 100) {
            0..=39 => Command::Read {
                node,
                key: Some(key.to_string()),
            },
            40..=74 => Command::Submit {
                node,
                command: format!("put {key} {value}"),
            },
            75..=89 => {
                let expected = if below(rng, 3) == 0 {
                    NIL.to_string()
                } else {
                    format!("v{}", 1 + below(rng, self.values))
                };
                Command::Submit {
                    node,
                    command: format!("cas {key} {expected} {value}"),
                }
            }
            _ => Command::Submit {
                node,
                command: format!("del {key}"),
            },
        };
        // The request id the harness will give it.
        let request = sim.cluster.next_request_id();
        self.clients[free] = Some((node, request, step, command.clone()));
        Some(command)
    }

    fn fault(&mut self, rng: &mut ChaCha8Rng, sim: &Sim, live: &[usize]) -> Command {
        let c = &sim.cluster;
        let nodes = c.node_count();
        let down: Vec<usize> = (1..=nodes).filter(|n| !live.contains(n)).collect();
        let manual: Vec<usize> = (1..=nodes).filter(|&n| c.disk_is_manual(n)).collect();
        let node = 1 + below(rng, nodes as u64) as usize;
        if self.drift != ClockDrift::Any && below(rng, 2) == 0 {
            return self.lease_adversary(rng, c, live);
        }
        if let Some(lossy) = self.lossy {
            let repaired = c
                .raft(lossy)
                .ok()
                .flatten()
                .is_some_and(|r| !r.is_repairing());
            if repaired {
                self.lossy = None;
            }
        }
        match below(rng, 112) {
            // Without pre-vote and check-quorum, a removed node that missed its removal can
            // depose leaders forever (thesis §4.2.3): such runs change no membership.
            // Nor while a node repairs lost data: a configuration of fewer than three voters
            // could then never elect a leader (the repairing node refuses votes).
            101..=110
                if (sim.settings.pre_vote || sim.settings.check_quorum) && self.lossy.is_none() =>
            {
                self.last_change = Some(self.step);
                Self::membership_change(rng, c, live)
            }
            101..=110 => Command::Heal,
            0..=24 if !manual.is_empty() => {
                Command::Sync(manual[below(rng, manual.len() as u64) as usize])
            }
            25..=36 if down.len() < self.max_down && !live.is_empty() => {
                Command::Crash(live[below(rng, live.len() as u64) as usize])
            }
            37..=51 if !down.is_empty() => Command::Restart {
                node: down[below(rng, down.len() as u64) as usize],
                empty: false,
            },
            52..=66 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for n in 1..=nodes {
                    if below(rng, 2) == 0 {
                        a.push(n)
                    } else {
                        b.push(n)
                    }
                }
                if a.is_empty() || b.is_empty() {
                    Command::Heal
                } else {
                    Command::Split(vec![a, b])
                }
            }
            67..=76 => Command::Heal,
            77..=84 => {
                let to = 1 + below(rng, nodes as u64) as usize;
                if to == node {
                    Command::RestoreLinks
                } else {
                    Command::CutLink { from: node, to }
                }
            }
            85..=89 => Command::RestoreLinks,
            90..=96 => {
                // Leadership transfer from whoever leads to another node (refused, and left out
                // of the run, when the node asked does not lead).
                let leader = live
                    .iter()
                    .copied()
                    .find(|&n| {
                        c.raft(n)
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.role() == raftengine::RoleKind::Leader)
                    })
                    .unwrap_or(node);
                let target = 1 + below(rng, nodes as u64) as usize;
                Command::Transfer {
                    node: leader,
                    target,
                }
            }
            97 | 98 => Command::Snapshot(node),
            99 => Command::Disk {
                node,
                manual: !c.disk_is_manual(node),
            },
            // Nor while a change may still be under way (a forwarded request, a catch-up): the
            // leader refuses a configuration that needs a repairing node's vote only once it
            // knows that node is repairing.
            100 if self.lossy.is_none()
                && self
                    .last_change
                    .is_none_or(|at| self.step > at + CHANGE_SETTLE_STEPS) =>
            {
                let command = Self::lying_disk(rng, c, live, down.len() < self.max_down);
                if let Command::CrashLosing { node, .. } = command {
                    self.lossy = Some(node);
                }
                command
            }
            100 => Command::Heal,
            _ if below(rng, 2) == 0 => Command::InjectExtreme(live[0]),
            _ => Command::Misuse(live[below(rng, live.len() as u64) as usize]),
        }
    }

    /// With leases: the live node that believes it leads in the oldest term.
    fn stale_leader(&self, c: &Cluster, live: &[usize]) -> Option<usize> {
        if self.drift == ClockDrift::Any {
            return None;
        }
        live.iter()
            .copied()
            .filter_map(|n| c.raft(n).ok().flatten().map(|r| (n, r)))
            .filter(|(_, r)| r.role() == raftengine::RoleKind::Leader)
            .min_by_key(|(_, r)| r.term())
            .map(|(n, _)| n)
    }

    /// With leases: the faults that break a lease whose drift assumption does not hold (and
    /// must not break one whose assumption holds). Leadership goes to the slowest clock (its
    /// lease then lasts longest), and the leader is cut off (the others elect a new one while
    /// its lease runs).
    fn lease_adversary(&mut self, rng: &mut ChaCha8Rng, c: &Cluster, live: &[usize]) -> Command {
        let slowest = self.slowest_clock();
        match self.stale_leader(c, live) {
            Some(leader) if leader != slowest && below(rng, 3) == 0 => Command::Transfer {
                node: leader,
                target: slowest,
            },
            Some(leader) => Command::Split(vec![
                vec![leader],
                (1..=c.node_count()).filter(|n| *n != leader).collect(),
            ]),
            None => Command::Heal,
        }
    }

    /// The node whose clock runs slowest.
    fn slowest_clock(&self) -> usize {
        let slowest = (0..self.clock_weights.len()).min_by_key(|&i| self.clock_weights[i]);
        slowest.map_or(1, |i| i + 1)
    }

    /// A crash of one node whose disk loses synced entries too (its last few), while every other
    /// node holds its data: protocol-aware recovery must keep a second fault (another crash, the
    /// leader's) from losing acknowledged writes. One such loss at a time: two lying disks at
    /// once are beyond what any replication protocol survives.
    fn lying_disk(rng: &mut ChaCha8Rng, c: &Cluster, live: &[usize], may_crash: bool) -> Command {
        let all_live = live.len() == c.node_count();
        // Within what the protocol tolerates: one lying disk among at least three voters, so
        // the others can elect a leader that repairs it.
        let voters_everywhere = live.iter().all(|n| {
            c.raft(*n).ok().flatten().is_some_and(|r| {
                let m = r.membership();
                !m.is_joint() && m.voters.len() >= 3 && !r.membership_change_in_progress()
            })
        });
        if !may_crash || !all_live || !voters_everywhere {
            return Command::Heal;
        }
        let node = live[below(rng, live.len() as u64) as usize];
        let last = c.storage(node).map_or(0, |s| s.last_index().0);
        let from = last.saturating_sub(below(rng, 4)).max(1);
        Command::CrashLosing { node, from }
    }
}

impl Generator {
    /// A membership change asked at a random live node (a follower forwards it): a node outside
    /// the configuration joins as a voter or a learner, a voter leaves (never below two), or
    /// one voter is swapped for another by joint consensus.
    fn membership_change(rng: &mut ChaCha8Rng, c: &Cluster, live: &[usize]) -> Command {
        let id = |n: usize| raftengine::NodeId(n as u64);
        // The configuration as the most advanced live node sees it.
        let membership = live
            .iter()
            .filter_map(|n| c.raft(*n).ok().flatten())
            .max_by_key(|r| (r.commit_index(), r.term()))
            .map(|r| r.membership().clone())
            .unwrap_or_default();
        let nodes = c.node_count();
        let outside: Vec<usize> = (1..=nodes)
            .filter(|&n| !membership.is_voter(id(n)))
            .collect();
        let voters: Vec<usize> = (1..=nodes)
            .filter(|&n| membership.voters.contains(&id(n)))
            .collect();
        let pick =
            |rng: &mut ChaCha8Rng, from: &[usize]| from[below(rng, from.len() as u64) as usize];
        let at = pick(rng, live);
        let change = match below(rng, 4) {
            0 | 1 if !outside.is_empty() => {
                let n = pick(rng, &outside);
                if below(rng, 3) == 0 {
                    MemberChange::Learner(n)
                } else {
                    MemberChange::Add(n)
                }
            }
            2 if !outside.is_empty() && voters.len() >= 2 => MemberChange::Joint {
                add: vec![pick(rng, &outside)],
                remove: vec![pick(rng, &voters)],
            },
            _ if voters.len() >= 3 => MemberChange::Remove(pick(rng, &voters)),
            _ if !outside.is_empty() => MemberChange::Add(pick(rng, &outside)),
            _ => MemberChange::Remove(pick(rng, &voters)),
        };
        Command::Member { node: at, change }
    }
}

/// The scenario file for a (shrunk) failing run.
pub fn scenario_text(
    report_seed: u64,
    settings: &ClusterSettings,
    violation: &Violation,
    commands: &[Command],
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Found by `raftsim fuzz`, seed {report_seed}, shrunk to {} commands.\n# Violated: {}\n",
        commands.len(),
        violation.property
    ));
    for line in violation.detail.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str(&format!("\nname fuzz_seed_{report_seed}\n"));
    out.push_str(&format!(
        "> A randomized run (seed {report_seed}) that breaks \"{}\". Replay it with\n> `raftsim fuzz --replay FILE` to check it again.\n\n",
        violation.property
    ));
    out.push_str(&crate::scenario::cluster_line(settings));
    out.push_str("\n\n");
    out.push_str(&format!("section Seed {report_seed}\n"));
    for command in commands {
        if let Some(line) = command.to_line() {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
