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
            #[cfg(feature = "mutations")]
            mutation: None,
        }
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

/// Virtual ticks the liveness phase may take to elect a leader and commit a write.
const LIVENESS_ROUNDS: u64 = 300;
/// Steps a client waits for an outcome before it gives up (the outcome stays unknown).
const CLIENT_PATIENCE: u64 = 250;
const KEYS: [&str; 2] = ["a", "b"];

/// The cluster settings a seed runs with (some vary by seed).
pub fn settings_for(seed: u64, options: FuzzOptions) -> ClusterSettings {
    // Seeds cycle through the options users can turn off, and through forwarding.
    ClusterSettings {
        nodes: options.nodes,
        pre_vote: seed % 4 < 2,
        check_quorum: seed % 8 < 4,
        forward_proposals: seed.is_multiple_of(2),
        election_timeout_ticks: (6, 12),
        max_entries_per_message: 8,
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
    let mut generator = Generator::new(&mut rng, options.nodes);
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
        if runner::execute(&mut self.cluster, &command).is_ok() {
            if let Some((node, input)) = issued {
                if let Some(request) = self.cluster.last_request(node) {
                    self.history.issued(node, request, input, self.step);
                }
            }
            self.executed.push(command);
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

    /// Liveness, then linearizability.
    fn finish(&mut self) -> Result<(), Violation> {
        self.liveness()?;
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
            for node in 1..=nodes {
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
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.next_u64() % n
    }
}

impl Generator {
    fn new(rng: &mut ChaCha8Rng, nodes: usize) -> Generator {
        Generator {
            clock_weights: (0..nodes).map(|_| 5 + below(rng, 11)).collect(),
            fault_rate: [10, 30, 80][below(rng, 3) as usize],
            clients: vec![None; 4],
            max_down: (nodes - 1) / 2,
            values: 0,
            step: 0,
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
        let node = live[below(rng, live.len() as u64) as usize];
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
        match below(rng, 110) {
            // Without pre-vote and check-quorum, a removed node that missed its removal can
            // depose leaders forever (thesis §4.2.3): such runs change no membership.
            100.. if sim.settings.pre_vote || sim.settings.check_quorum => {
                Self::membership_change(rng, c, live)
            }
            100.. => Command::Heal,
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
            _ => Command::Disk {
                node,
                manual: !c.disk_is_manual(node),
            },
        }
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
    out.push_str(&format!(
        "cluster {} pre_vote={} check_quorum={} forward={} max_entries={} election={}..{} heartbeat={}\n\n",
        settings.nodes,
        on_off(settings.pre_vote),
        on_off(settings.check_quorum),
        on_off(settings.forward_proposals),
        settings.max_entries_per_message,
        settings.election_timeout_ticks.0,
        settings.election_timeout_ticks.1,
        settings.heartbeat_interval_ticks
    ));
    out.push_str(&format!("section Seed {report_seed}\n"));
    for command in commands {
        if let Some(line) = command.to_line() {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}
