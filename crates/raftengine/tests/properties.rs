//! Property tests of Raft's safety guarantees (paper §5.2–§5.4, figure 3), driving `RaftNode`s
//! directly through a tiny in-test network: a bag of in-flight messages delivered in random order,
//! dropped and duplicated at random, random elections (pre-vote on and off), proposals, timer
//! ticks, heartbeats and restarts from what the node persisted.
//!
//! After every step the whole cluster is checked:
//! - Log Matching: two logs with an entry of the same index and term are identical up to it.
//! - Election Safety: at most one leader per term; a node grants at most one vote per term.
//! - commit index: never decreases on a node (between restarts), never exceeds its last index.
//! - State Machine Safety: entries at a committed index are identical on every node, and every
//!   node is handed (`Output::committed`) exactly that sequence, in order.
//! - no step error and no fatal error in a well-behaved network.
//! - with writes acknowledged at once, storage always equals the node's term, vote and log.
//!
//! Clusters have 1–5 nodes, pre-vote and check-quorum on or off, small batch and pipeline limits.
//! Variants: writes acknowledged at once (with and without restarts); writes made durable late and
//! lost on restart (held messages must keep every promise); and a liveness check that after any
//! history a healed network lets an up-to-date node win and repair every log. A coverage test
//! keeps the generator honest, and separate properties check `RaftLog` against a `Vec` model.
//! `PROPTEST_CASES=N` runs a deeper search.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use raftengine::{
    Config, Entry, EntryPayload, Event, LogIndex, LogStorage, MemoryStorage, Message, MessageBody,
    NodeId, PersistBatch, RaftLog, RaftNode, RequestId, RoleKind, Term,
};
use std::collections::{BTreeMap, VecDeque};

/// In-flight messages beyond this are lost, oldest first (a network may lose anything).
const MAX_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone)]
struct Setup {
    nodes: usize,
    pre_vote: bool,
    check_quorum: bool,
    max_entries_per_message: usize,
    max_in_flight_messages: usize,
    /// Persist batches wait for an explicit `Persist` action (and are lost on restart) instead
    /// of being acknowledged at once.
    lazy_persist: bool,
}

#[derive(Debug, Clone)]
enum Action {
    /// Deliver `count` in-flight messages, each picked at `(pick + k) % len`.
    Deliver {
        pick: usize,
        count: u8,
    },
    /// Deliver everything in flight, oldest first, and what that produces, up to `limit` messages.
    Flush {
        limit: u8,
    },
    Drop {
        pick: usize,
    },
    Duplicate {
        pick: usize,
    },
    /// Start an election at a node (pre-vote first when configured).
    Campaign {
        node: usize,
        transfer: bool,
    },
    /// Propose a command at a node, or at the current leader of the highest term if any.
    Propose {
        node: usize,
        at_leader: bool,
    },
    Tick {
        node: usize,
        ticks: u8,
    },
    Heartbeat {
        node: usize,
    },
    /// Lazy persistence only: among the nodes with pending writes, the one at `pick % count`
    /// makes its oldest `batches` batches durable.
    Persist {
        pick: usize,
        batches: u8,
    },
    /// The node loses its volatile state and restarts from its storage.
    Restart {
        node: usize,
    },
}

fn setup_strategy(lazy: bool) -> impl Strategy<Value = Setup> {
    (
        1usize..=5,
        any::<bool>(),
        any::<bool>(),
        1usize..=3,
        1usize..=3,
    )
        .prop_map(
            move |(nodes, pre_vote, check_quorum, max_entries, max_in_flight)| Setup {
                nodes,
                pre_vote,
                check_quorum,
                max_entries_per_message: max_entries,
                max_in_flight_messages: max_in_flight,
                lazy_persist: lazy,
            },
        )
}

fn action_strategy(restarts: bool) -> impl Strategy<Value = Action> {
    let restart_weight = if restarts { 1 } else { 0 };
    prop_oneof![
        14 => (any::<usize>(), 1u8..=4).prop_map(|(pick, count)| Action::Deliver { pick, count }),
        1 => (8u8..=64).prop_map(|limit| Action::Flush { limit }),
        1 => any::<usize>().prop_map(|pick| Action::Drop { pick }),
        1 => any::<usize>().prop_map(|pick| Action::Duplicate { pick }),
        2 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(node, transfer)| Action::Campaign { node, transfer }),
        4 => (any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(node, at_leader)| Action::Propose { node, at_leader }),
        1 => (any::<usize>(), 1u8..=8).prop_map(|(node, ticks)| Action::Tick { node, ticks }),
        1 => any::<usize>().prop_map(|node| Action::Heartbeat { node }),
        4 => (any::<usize>(), 1u8..=3).prop_map(|(pick, batches)| Action::Persist { pick, batches }),
        restart_weight => any::<usize>().prop_map(|node| Action::Restart { node }),
    ]
}

struct Sim {
    setup: Setup,
    configs: Vec<Config>,
    nodes: Vec<RaftNode>,
    storage: Vec<MemoryStorage>,
    pending: Vec<VecDeque<PersistBatch>>,
    net: Vec<Message>,
    next_request: u64,
    // ----- what the checks remember -----
    /// Highest commit index seen per node since its last restart.
    max_commit: Vec<LogIndex>,
    /// Highest term seen per node (terms are durable; with lazy persistence reset on restart).
    max_term: Vec<Term>,
    /// Last index handed to the driver in `Output::committed`, per node since its last restart.
    applied: Vec<LogIndex>,
    /// The committed log as first seen anywhere: `committed[i]` has index `i + 1`.
    committed: Vec<Entry>,
    leaders: BTreeMap<Term, NodeId>,
    /// Granted votes sent: (voter, term) -> candidate.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// How much of Raft a run exercised (to keep the properties from passing vacuously).
    stats: Stats,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    truncations: usize,
    restarts: usize,
}

impl Sim {
    fn new(setup: Setup) -> Sim {
        let voters: Vec<NodeId> = (1..=setup.nodes as u64).map(NodeId).collect();
        let configs: Vec<Config> = voters
            .iter()
            .map(|id| {
                let mut c = Config::new(*id, voters.clone());
                c.pre_vote = setup.pre_vote;
                c.check_quorum = setup.check_quorum;
                c.election_timeout_min_ticks = 6;
                c.election_timeout_max_ticks = 12;
                c.heartbeat_interval_ticks = 3;
                c.max_entries_per_message = setup.max_entries_per_message;
                c.max_in_flight_messages = setup.max_in_flight_messages;
                c
            })
            .collect();
        let n = setup.nodes;
        Sim {
            nodes: configs
                .iter()
                .map(|c| RaftNode::new(c.clone()).expect("valid config"))
                .collect(),
            configs,
            storage: vec![MemoryStorage::new(); n],
            pending: vec![VecDeque::new(); n],
            net: Vec::new(),
            next_request: 1,
            max_commit: vec![LogIndex(0); n],
            max_term: vec![Term(0); n],
            applied: vec![LogIndex(0); n],
            committed: Vec::new(),
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            stats: Stats::default(),
            setup,
        }
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    /// The leader of the highest term, if any node believes it leads.
    fn current_leader(&self) -> Option<usize> {
        (0..self.n())
            .filter(|&i| self.nodes[i].role() == RoleKind::Leader)
            .max_by_key(|&i| self.nodes[i].term())
    }

    fn apply(&mut self, action: &Action) -> Result<(), TestCaseError> {
        let n = self.n();
        match *action {
            Action::Deliver { pick, count } => {
                for k in 0..count as usize {
                    if self.net.is_empty() {
                        break;
                    }
                    let m = self.net.remove(pick.wrapping_add(k) % self.net.len());
                    self.deliver(m)?;
                    self.check()?;
                }
            }
            Action::Flush { limit } => {
                for _ in 0..limit {
                    if self.net.is_empty() {
                        break;
                    }
                    let m = self.net.remove(0);
                    self.deliver(m)?;
                    self.check()?;
                }
            }
            Action::Drop { pick } => {
                if !self.net.is_empty() {
                    self.net.remove(pick % self.net.len());
                }
            }
            Action::Duplicate { pick } => {
                if !self.net.is_empty() {
                    let m = self.net[pick % self.net.len()].clone();
                    self.net.push(m);
                }
            }
            Action::Campaign { node, transfer } => {
                let i = node % n;
                self.nodes[i].campaign(transfer);
                self.process(i)?;
            }
            Action::Propose { node, at_leader } => {
                let i = match self.current_leader() {
                    Some(l) if at_leader => l,
                    _ => node % n,
                };
                let id = self.next_request;
                self.next_request += 1;
                self.nodes[i].propose(RequestId(id), format!("cmd-{id}").into_bytes());
                self.process(i)?;
            }
            Action::Tick { node, ticks } => {
                let i = node % n;
                for _ in 0..ticks {
                    self.nodes[i].tick();
                    self.process(i)?;
                }
            }
            Action::Heartbeat { node } => {
                let i = node % n;
                self.nodes[i].broadcast_heartbeat();
                self.process(i)?;
            }
            Action::Persist { pick, batches } => {
                let waiting: Vec<usize> = (0..n).filter(|&i| !self.pending[i].is_empty()).collect();
                if !waiting.is_empty() {
                    let i = waiting[pick % waiting.len()];
                    for _ in 0..batches {
                        self.persist_one(i)?;
                    }
                }
            }
            Action::Restart { node } => {
                let i = node % n;
                let stored = self.storage[i].load().expect("storage not broken");
                self.nodes[i] =
                    RaftNode::restart(self.configs[i].clone(), stored).expect("restart");
                self.pending[i].clear();
                self.stats.restarts += 1;
                self.max_commit[i] = LogIndex(0);
                self.applied[i] = LogIndex(0);
                if self.setup.lazy_persist {
                    // Unpersisted term changes are legitimately forgotten.
                    self.max_term[i] = self.nodes[i].term();
                }
                // The commit index kept in storage is applied again at once.
                self.process(i)?;
            }
        }
        if self.net.len() > MAX_IN_FLIGHT {
            let excess = self.net.len() - MAX_IN_FLIGHT;
            self.net.drain(..excess);
        }
        Ok(())
    }

    fn deliver(&mut self, m: Message) -> Result<(), TestCaseError> {
        let i = (m.to.0 - 1) as usize;
        let text = format!("{m:?}");
        let result = self.nodes[i].step(m);
        prop_assert!(result.is_ok(), "N-{} refused {text}: {result:?}", i + 1);
        self.process(i)
    }

    fn persist_one(&mut self, i: usize) -> Result<(), TestCaseError> {
        if let Some(batch) = self.pending[i].pop_front() {
            let written = self.storage[i].persist(&batch);
            prop_assert!(written.is_ok(), "N-{} batch {batch:?}: {written:?}", i + 1);
            self.nodes[i]
                .persisted(batch.seq)
                .expect("batches are reported in order");
            self.process(i)?;
        }
        Ok(())
    }

    /// Carries out a node's output until it has nothing more to say.
    fn process(&mut self, i: usize) -> Result<(), TestCaseError> {
        loop {
            let out = self.nodes[i].take_output();
            if out.is_empty() {
                return Ok(());
            }
            prop_assert!(out.fatal.is_none(), "N-{} stopped: {:?}", i + 1, out.fatal);
            self.stats.truncations += out
                .events
                .iter()
                .filter(|e| matches!(e, Event::LogTruncated { .. }))
                .count();
            if let Some(batch) = out.persist {
                if self.setup.lazy_persist {
                    self.pending[i].push_back(batch);
                } else {
                    let written = self.storage[i].persist(&batch);
                    prop_assert!(written.is_ok(), "N-{} batch {batch:?}: {written:?}", i + 1);
                    self.nodes[i]
                        .persisted(batch.seq)
                        .expect("batches are reported in order");
                }
            }
            for m in &out.messages {
                prop_assert_eq!(m.from, NodeId(i as u64 + 1));
                if let MessageBody::VoteResponse { granted: true } = m.body {
                    let earlier = *self.votes.entry((m.from, m.term)).or_insert(m.to);
                    prop_assert_eq!(
                        earlier,
                        m.to,
                        "{} granted votes to two candidates in term {}",
                        m.from,
                        m.term
                    );
                }
            }
            self.net.extend(out.messages);
            for ce in out.committed {
                let index = ce.entry.index;
                prop_assert_eq!(
                    index,
                    self.applied[i].next(),
                    "N-{} was handed committed entries out of order",
                    i + 1
                );
                self.applied[i] = index;
                self.note_committed(i, &ce.entry)?;
            }
        }
    }

    /// Records an entry known committed, or checks it against the one recorded earlier.
    fn note_committed(&mut self, node: usize, entry: &Entry) -> Result<(), TestCaseError> {
        let k = entry.index.0 as usize;
        prop_assert!(k >= 1);
        if k <= self.committed.len() {
            prop_assert_eq!(
                &self.committed[k - 1],
                entry,
                "State Machine Safety: N-{} committed a different entry at index {}",
                node + 1,
                k
            );
        } else {
            prop_assert_eq!(
                k,
                self.committed.len() + 1,
                "committed index {} seen before {}",
                k,
                self.committed.len() + 1
            );
            self.committed.push(entry.clone());
        }
        Ok(())
    }

    /// Every invariant, on every node and every pair of nodes.
    fn check(&mut self) -> Result<(), TestCaseError> {
        for i in 0..self.n() {
            let node = &self.nodes[i];
            let (commit, last, term) = (node.commit_index(), node.log().last_index(), node.term());
            let role = node.role();
            prop_assert!(
                commit <= last,
                "N-{}: commit {commit} beyond last index {last}",
                i + 1
            );
            prop_assert!(
                commit >= self.max_commit[i],
                "N-{}: commit went back from {} to {commit}",
                i + 1,
                self.max_commit[i]
            );
            self.max_commit[i] = commit;
            prop_assert!(
                term >= self.max_term[i],
                "N-{}: term went back from {} to {term}",
                i + 1,
                self.max_term[i]
            );
            self.max_term[i] = term;
            prop_assert!(
                self.applied[i] == commit,
                "N-{}: commit {commit} but {} handed to the driver",
                i + 1,
                self.applied[i]
            );
            let prefix: Vec<Entry> = node.log().slice(LogIndex(1), commit).to_vec();
            for entry in &prefix {
                self.note_committed(i, entry)?;
            }
            let node = &self.nodes[i];
            if role == RoleKind::Leader {
                let id = NodeId(i as u64 + 1);
                let first = *self.leaders.entry(term).or_insert(id);
                prop_assert_eq!(first, id, "Election Safety: two leaders in term {}", term);
                prop_assert_eq!(node.hard_state().voted_for, Some(id));
            }
            if !self.setup.lazy_persist {
                // Every change of durable state was handed out as a write.
                prop_assert_eq!(self.storage[i].hard_state(), node.hard_state());
                prop_assert_eq!(
                    self.storage[i].entries(),
                    node.log().slice(LogIndex(1), last)
                );
            }
        }
        for a in 0..self.n() {
            for b in a + 1..self.n() {
                check_log_matching(&self.nodes[a], &self.nodes[b])?;
            }
        }
        Ok(())
    }

    /// Ends the chaos: no more drops, every write made durable, every message delivered, until
    /// the cluster is quiet.
    fn quiesce(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if let Some(i) = (0..self.n()).find(|&i| !self.pending[i].is_empty()) {
                self.persist_one(i)?;
            } else if !self.net.is_empty() {
                let m = self.net.remove(0);
                self.deliver(m)?;
            } else {
                return Ok(());
            }
            self.check()?;
        }
        Err(TestCaseError::fail("the cluster did not go quiet"))
    }
}

/// Log Matching: if two logs hold an entry with the same index and term, the logs are identical
/// in every entry up to that index. Checking the highest such index covers all lower ones.
fn check_log_matching(a: &RaftNode, b: &RaftNode) -> Result<(), TestCaseError> {
    let common = a.log().last_index().min(b.log().last_index());
    let mut i = common;
    while i.0 > 0 && a.log().term(i) != b.log().term(i) {
        i = i.prev();
    }
    if i.0 > 0 {
        let (sa, sb) = (a.log().slice(LogIndex(1), i), b.log().slice(LogIndex(1), i));
        prop_assert!(
            sa == sb,
            "Log Matching: {} and {} agree on the term at index {i} but differ before it:\n{sa:?}\n{sb:?}",
            a.id(),
            b.id()
        );
    }
    Ok(())
}

fn run_case(setup: Setup, actions: &[Action]) -> Result<Sim, TestCaseError> {
    let mut sim = Sim::new(setup);
    sim.check()?;
    for action in actions {
        sim.apply(action)?;
        sim.check()?;
    }
    Ok(sim)
}

fn actions(restarts: bool) -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(action_strategy(restarts), 20..300)
}

/// `cases` by default; `PROPTEST_CASES=N` runs N cases instead (for a deeper local search).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Failures are turned into named regression tests by hand, not files next to the source.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Log Matching, commit monotonicity, State Machine Safety and Election Safety under random
    /// elections (pre-vote on and off), proposals, delivery orders, drops and duplicates, with
    /// every write acknowledged at once.
    #[test]
    fn safety_holds_under_random_delivery_drops_and_duplicates(
        setup in setup_strategy(false),
        actions in actions(false),
    ) {
        run_case(setup, &actions)?;
    }

    /// The same safety properties with restarts from storage: a restarted node keeps only what
    /// it persisted, and its commit index starts again from zero.
    #[test]
    fn safety_holds_across_restarts_from_persisted_state(
        setup in setup_strategy(false),
        actions in actions(true),
    ) {
        run_case(setup, &actions)?;
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// With writes made durable late (and lost on a restart), messages held until `persisted`
    /// keep every promise a node made: the safety properties still hold.
    #[test]
    fn safety_holds_with_late_persistence_and_restarts_losing_unpersisted_writes(
        setup in setup_strategy(true),
        actions in actions(true),
    ) {
        run_case(setup, &actions)?;
    }

    /// After any history, once the network delivers everything, a node with the most up-to-date
    /// log that campaigns wins, repairs every follower's log to its own and commits all of it.
    #[test]
    fn after_healing_a_leader_makes_every_log_identical_and_committed(
        setup in setup_strategy(false),
        actions in actions(true),
    ) {
        let mut sim = run_case(setup, &actions)?;
        sim.quiesce()?;
        let mut leader = None;
        for _ in 0..8 {
            let best = (0..sim.n())
                .max_by_key(|&i| {
                    let log = sim.nodes[i].log();
                    (log.last_term(), log.last_index(), sim.nodes[i].term())
                })
                .expect("nodes");
            if sim.nodes[best].role() == RoleKind::Leader {
                // Heartbeats are the leader's retransmissions: a few rounds repair every
                // follower (a lost probe is answered by the next heartbeat), tell it the final
                // commit index, or show that a newer term exists (the leader then steps down).
                for _ in 0..4 {
                    sim.nodes[best].broadcast_heartbeat();
                    sim.process(best)?;
                    sim.quiesce()?;
                }
                if sim.nodes[best].role() == RoleKind::Leader {
                    leader = Some(best);
                    break;
                }
            } else {
                sim.nodes[best].campaign(true);
                sim.process(best)?;
                sim.check()?;
                sim.quiesce()?;
            }
        }
        let l = leader.ok_or_else(|| TestCaseError::fail("no leader after healing"))?;
        let want = sim.nodes[l].log().slice(LogIndex(1), sim.nodes[l].log().last_index()).to_vec();
        prop_assert_eq!(sim.nodes[l].commit_index(), sim.nodes[l].log().last_index());
        for i in 0..sim.n() {
            let node = &sim.nodes[i];
            prop_assert_eq!(node.role() == RoleKind::Leader, i == l);
            prop_assert_eq!(node.log().slice(LogIndex(1), node.log().last_index()), &want[..],
                "N-{} was not repaired", i + 1);
            prop_assert_eq!(node.commit_index(), node.log().last_index(), "N-{}", i + 1);
        }
    }
}

/// Guards the properties above against passing vacuously: the generated histories (fixed seed)
/// must reach leaders in several terms, commits, conflicting logs repaired by truncation, and
/// restarts.
#[test]
fn generated_histories_exercise_elections_commits_truncations_and_restarts() {
    let mut runner = TestRunner::deterministic();
    let strategy = (setup_strategy(false), actions(true));
    let (mut several_leaders, mut commits, mut truncations, mut restarts) = (0, 0, 0, 0);
    let cases = 64;
    for _ in 0..cases {
        let (setup, actions) = strategy.new_tree(&mut runner).expect("generate").current();
        let sim = run_case(setup, &actions).expect("safety");
        several_leaders += usize::from(sim.leaders.len() >= 2);
        commits += usize::from(sim.committed.len() >= 3);
        truncations += usize::from(sim.stats.truncations > 0);
        restarts += usize::from(sim.stats.restarts > 0);
    }
    let seen = (several_leaders, commits, truncations, restarts);
    assert!(several_leaders >= cases / 4, "{seen:?}");
    assert!(commits >= cases / 4, "{seen:?}");
    assert!(truncations >= cases / 8, "{seen:?}");
    assert!(restarts >= cases / 2, "{seen:?}");
}

// ----- RaftLog against a Vec model ------------------------------------------------------------

#[derive(Debug, Clone)]
enum LogOp {
    /// Push an entry whose term is the last term plus `bump` (terms never decrease in a log).
    Push { bump: u64 },
    /// Truncate from `at % (len + 2)`.
    Truncate { at: usize },
}

fn log_op() -> impl Strategy<Value = LogOp> {
    prop_oneof![
        4 => (0u64..=2).prop_map(|bump| LogOp::Push { bump }),
        1 => any::<usize>().prop_map(|at| LogOp::Truncate { at }),
    ]
}

fn model_entry(index: usize, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index as u64),
        payload: EntryPayload::Command(vec![index as u8, term as u8]),
    }
}

fn check_log_against_model(log: &RaftLog, model: &[Entry]) -> Result<(), TestCaseError> {
    let len = model.len() as u64;
    prop_assert_eq!(log.last_index(), LogIndex(len));
    prop_assert_eq!(log.last_term(), model.last().map_or(Term(0), |e| e.term));
    prop_assert_eq!(log.term(LogIndex(0)), Some(Term(0)));
    prop_assert_eq!(log.entry(LogIndex(0)), None);
    for i in 1..=len + 2 {
        let want = model.get(i as usize - 1);
        prop_assert_eq!(log.term(LogIndex(i)), want.map(|e| e.term));
        prop_assert_eq!(log.entry(LogIndex(i)), want);
        if let Some(e) = want {
            // First index of the term holding i.
            let mut first = i as usize;
            while first > 1 && model[first - 2].term == e.term {
                first -= 1;
            }
            prop_assert_eq!(
                log.first_index_of_term_at(LogIndex(i)),
                LogIndex(first as u64)
            );
        } else {
            prop_assert_eq!(log.first_index_of_term_at(LogIndex(i)), LogIndex(len + 1));
        }
    }
    for from in 0..=len + 2 {
        for to in 0..=len + 2 {
            let lo = from.max(1);
            let hi = to.min(len);
            let want: &[Entry] = if lo > hi {
                &[]
            } else {
                &model[lo as usize - 1..hi as usize]
            };
            prop_assert_eq!(
                log.slice(LogIndex(from), LogIndex(to)),
                want,
                "slice({}, {})",
                from,
                to
            );
        }
    }
    let (last_term, last_index) = (log.last_term().0, len);
    for t in last_term.saturating_sub(1)..=last_term + 1 {
        for i in last_index.saturating_sub(1)..=last_index + 1 {
            prop_assert_eq!(
                log.is_up_to_date(LogIndex(i), Term(t)),
                (t, i) >= (last_term, last_index)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    /// Random pushes and truncations keep `last_index`, `last_term`, `term`, `entry`, `slice`,
    /// `first_index_of_term_at` and `is_up_to_date` consistent with a Vec of entries.
    #[test]
    fn raft_log_agrees_with_a_vec_model(ops in prop::collection::vec(log_op(), 0..120)) {
        let mut log = RaftLog::default();
        let mut model: Vec<Entry> = Vec::new();
        for op in ops {
            match op {
                LogOp::Push { bump } => {
                    let term = model.last().map_or(1, |e| e.term.0) + bump;
                    let e = model_entry(model.len() + 1, term);
                    log.push(e.clone());
                    model.push(e);
                }
                LogOp::Truncate { at } => {
                    let from = at % (model.len() + 2);
                    log.truncate_from(LogIndex(from as u64));
                    model.truncate(from.max(1) - 1);
                }
            }
            check_log_against_model(&log, &model)?;
        }
        let rebuilt = RaftLog::from_entries(model.clone());
        prop_assert!(rebuilt.is_ok());
        check_log_against_model(&rebuilt.unwrap(), &model)?;
    }

    /// `RaftLog::from_entries` accepts exactly the contiguous logs, naming the first bad index.
    #[test]
    fn raft_log_from_entries_rejects_the_first_gap(
        len in 1usize..20,
        gap_at in any::<prop::sample::Index>(),
        skip in 1u64..4,
    ) {
        let gap = gap_at.index(len);
        let entries: Vec<Entry> = (0..len)
            .map(|k| {
                let index = if k >= gap { k as u64 + 1 + skip } else { k as u64 + 1 };
                Entry { term: Term(1), index: LogIndex(index), payload: EntryPayload::TermStart }
            })
            .collect();
        let bad = entries[gap].index;
        prop_assert_eq!(RaftLog::from_entries(entries).err(), Some(bad));
    }
}
