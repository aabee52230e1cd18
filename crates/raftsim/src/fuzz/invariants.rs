//! Safety properties checked after every step of a randomized run, each named after the Raft
//! paper's property (Figure 3) or the rule it guards.

use crate::cluster::Cluster;
use raftengine::{Entry, Event, LogIndex, LogStorage, Membership, NodeId, RoleKind, Term};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A broken property and what showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

fn violation(property: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { property, detail })
}

/// What the checker remembers between steps.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The leader seen for each term.
    leaders: BTreeMap<Term, usize>,
    /// The longest prefix any node has reported committed (entries 1..=len).
    committed: Vec<Entry>,
    /// For each committed entry, the term of the node that first reported it committed: leaders
    /// of that term and later must hold it.
    committed_in: Vec<Term>,
    /// Per node: (restarts seen, last commit index) so commits are compared within one life.
    commits: BTreeMap<usize, (u64, LogIndex)>,
    /// Every configuration seen in effect on some node, by the index of its entry.
    configs: BTreeMap<LogIndex, Vec<Membership>>,
    /// Nodes whose disk lost synced entries, with the last index they held before: until
    /// repaired, such a node counts as storing what it may have acknowledged (the loss is the
    /// fault injected, not a protocol bug).
    lost: BTreeMap<usize, LogIndex>,
    /// The first state machine seen at each applied index: (node, its encoded state). Every
    /// replica that has applied the same prefix must hold the same state.
    states: BTreeMap<LogIndex, (usize, Vec<u8>)>,
    /// How many of the cluster's events were already looked at.
    events_seen: usize,
}

impl Invariants {
    /// `node`'s disk lost synced entries; it held up to `held` before.
    pub fn note_data_loss(&mut self, node: usize, held: LogIndex) {
        self.lost.insert(node, held);
    }

    /// Checks every property on the cluster as it is now. `restarts[node]` counts restarts, so
    /// a node's volatile commit index may start over after one.
    pub fn check(&mut self, cluster: &Cluster, restarts: &[u64]) -> Result<(), Violation> {
        let count = cluster.node_count();
        let mut live = Vec::new();
        for node in 1..=count {
            if let Ok(Some(raft)) = cluster.raft(node) {
                live.push((node, raft));
            }
        }
        // A repaired node holds again what it lost, once the end of its repair is durable.
        self.lost.retain(|node, _| {
            let repaired = live.iter().any(|(n, r)| n == node && !r.is_repairing());
            let durably = cluster.storage(*node).is_ok_and(|s| !s.repairing());
            !(repaired && durably)
        });
        for &(node, raft) in &live {
            // Removed is a node left out of the configuration, never one named in it.
            if raft.is_removed() && raft.membership().contains(NodeId(node as u64)) {
                return violation(
                    "removed only when left out",
                    format!("N-{node} is marked removed, but its configuration names it"),
                );
            }
        }
        for &(_, raft) in &live {
            let (index, membership) = raft.membership_entry();
            let seen = self.configs.entry(index).or_default();
            if !seen.contains(membership) {
                seen.push(membership.clone());
            }
        }
        for &(node, raft) in &live {
            let (commit, last) = (raft.commit_index(), raft.log().last_index());
            // Election safety: at most one leader per term.
            if raft.role() == RoleKind::Leader {
                let term = raft.term();
                match self.leaders.get(&term) {
                    Some(&other) if other != node => {
                        return violation(
                            "election safety",
                            format!("N-{other} and N-{node} both lead term {term}"),
                        );
                    }
                    _ => {
                        self.leaders.insert(term, node);
                    }
                }
            }
            if commit > last {
                return violation(
                    "commit within the log",
                    format!("N-{node} commit {commit} beyond its last index {last}"),
                );
            }
            let applied = cluster.counter(node).map(|c| c.applied).unwrap_or_default();
            if applied > commit {
                return violation(
                    "apply only committed entries",
                    format!("N-{node} applied {applied} but commit is {commit}"),
                );
            }
            // Persistent state on stable storage (Figure 2): once a node's disk has synced, what
            // it would restart from is what it acts on: its term, its vote and its log.
            if !cluster.disk_has_unsynced(node) {
                if let Ok(storage) = cluster.storage(node) {
                    let durable = storage.hard_state();
                    if durable != raft.hard_state() {
                        return violation(
                            "persistent state on stable storage",
                            format!(
                                "N-{node} acts on {:?} but its storage holds {durable:?}",
                                raft.hard_state()
                            ),
                        );
                    }
                    if storage.last_index() != last {
                        return violation(
                            "persistent state on stable storage",
                            format!(
                                "N-{node} has a log ending at {last} but its storage ends at {}",
                                storage.last_index()
                            ),
                        );
                    }
                }
            }
            let life = restarts.get(node - 1).copied().unwrap_or(0);
            let previous = self.commits.insert(node, (life, commit));
            if let Some((previous_life, previous_commit)) = previous {
                if previous_life == life && commit < previous_commit {
                    return violation(
                        "commit index never decreases",
                        format!("N-{node} commit went from {previous_commit} to {commit}"),
                    );
                }
                // Paper §5.4.2: a leader commits by counting replicas only entries of its own
                // term (earlier ones are committed with them).
                let leading = raft.role() == RoleKind::Leader;
                if leading && previous_life == life && commit > previous_commit {
                    let term = raft.log().term(commit);
                    if term != Some(raft.term()) {
                        return violation(
                            "commit only current-term entries by counting",
                            format!(
                                "N-{node}, leader of term {}, moved its commit index to {commit}, an entry of term {}",
                                raft.term(),
                                term.map_or(0, |t| t.0)
                            ),
                        );
                    }
                }
            }
            // State machine safety: every committed prefix agrees with every other (entries a
            // snapshot covers are compared where some log still holds them).
            for entry in raft.log().slice(LogIndex(1), commit) {
                let i = entry.index.0 as usize - 1;
                if let Some(known) = self.committed.get(i) {
                    if known != entry {
                        return violation(
                            "state machine safety",
                            format!(
                                "N-{node} committed {entry:?} at index {}, another node committed {known:?}",
                                i + 1
                            ),
                        );
                    }
                } else if i == self.committed.len() {
                    self.committed.push(entry.clone());
                    self.committed_in.push(raft.term());
                }
            }
            // Commit only what a majority stores durably: a majority of the configuration the
            // committing leader had in effect — the one at the index, or a later one seen on
            // some node (a leader counts in its latest configuration, which may follow entries
            // this node lacks). One change at a time keeps those majorities overlapping.
            if commit.0 > 0 {
                let term = raft.log().term(commit);
                let lost = &self.lost;
                let stored: BTreeSet<NodeId> = (1..=count)
                    .filter(|&n| {
                        lost.get(&n).is_some_and(|owed| commit <= *owed)
                            || cluster.storage(n).is_ok_and(|s| {
                                // A snapshot past the index holds it too.
                                s.log_start().index >= commit
                                    || LogStorage::entries(s, commit, commit)
                                        .ok()
                                        .and_then(|e| e.first().map(|e| Some(e.term)))
                                        == Some(term)
                            })
                    })
                    .map(|n| NodeId(n as u64))
                    .collect();
                let quorum = raft.membership_at(commit).is_quorum(&stored)
                    || self
                        .configs
                        .range(commit..)
                        .flat_map(|(_, seen)| seen)
                        .any(|m| m.is_quorum(&stored));
                if !quorum {
                    return violation(
                        "commit only what a majority stores",
                        format!(
                            "N-{node} commits index {commit} but only {stored:?} store it durably (configuration {:?})",
                            raft.membership_at(commit)
                        ),
                    );
                }
            }
        }
        self.check_state_machines_agree(cluster, &live)?;
        self.check_no_conflicting_leader(cluster)?;
        // Leader completeness: a leader holds every entry committed in its term or before. (A
        // deposed leader that has not heard of a newer term may lack later commits.)
        for &(node, raft) in &live {
            if raft.role() != RoleKind::Leader {
                continue;
            }
            let owed = self
                .committed_in
                .iter()
                .take_while(|t| **t <= raft.term())
                .count();
            // Entries its snapshot covers are held in the snapshot.
            let start = (raft.log().start().index.0 as usize).min(owed);
            let held = raft.log().slice(LogIndex(1), LogIndex(owed as u64));
            if held != &self.committed[start..owed] {
                let matching = held
                    .iter()
                    .zip(&self.committed[start..])
                    .take_while(|(a, b)| a == b)
                    .count();
                return violation(
                    "leader completeness",
                    format!(
                        "N-{node} leads term {} without every entry committed by then ({owed} owed, it holds {} of them)",
                        raft.term(),
                        start + matching
                    ),
                );
            }
        }
        // Log matching: two logs with the same term at an index agree on everything before it.
        for (a, &(node_a, raft_a)) in live.iter().enumerate() {
            for &(node_b, raft_b) in &live[a + 1..] {
                let (log_a, log_b) = (raft_a.log(), raft_b.log());
                // Compare where both still hold entries (snapshots cover the rest).
                let bottom = log_a.start().index.max(log_b.start().index);
                let mut index = log_a.last_index().min(log_b.last_index());
                while index > bottom && log_a.term(index) != log_b.term(index) {
                    index = index.prev();
                }
                let from = bottom.next();
                let (sa, sb) = (log_a.slice(from, index), log_b.slice(from, index));
                if let Some(i) = (0..sa.len()).find(|&i| sa[i] != sb[i]) {
                    return violation(
                        "log matching",
                        format!(
                            "N-{node_a} and N-{node_b} agree on the term at index {index} but differ at index {}",
                            from.0 + i as u64
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// State machine agreement: two replicas that applied the log up to the same index hold
    /// the same state. Log matching alone does not show this: a state machine fed something
    /// other than the committed log (a bug in a driver's apply or snapshot path) diverges with
    /// identical logs. A stopped node's state machine is left out (its last apply may have
    /// failed half way, which is why it stopped).
    fn check_state_machines_agree(
        &mut self,
        cluster: &Cluster,
        live: &[(usize, &raftengine::RaftNode)],
    ) -> Result<(), Violation> {
        for &(node, raft) in live {
            if raft.is_stopped().is_some() {
                continue;
            }
            let Ok(counter) = cluster.counter(node) else {
                continue;
            };
            let state = counter.encode();
            match self.states.get(&counter.applied) {
                Some((other, known)) if *known != state => {
                    return violation(
                        "state machines agree at equal applied index",
                        format!(
                            "at applied index {}, N-{other} holds {:?} and N-{node} holds {:?}",
                            counter.applied,
                            String::from_utf8_lossy(known),
                            String::from_utf8_lossy(&state)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.states.insert(counter.applied, (node, state));
                }
            }
        }
        Ok(())
    }

    /// One leader per term, as each node sees it: a node told by a second leader of a term it
    /// knows a leader of reports `ConflictingLeader`, which a correct cluster never causes.
    fn check_no_conflicting_leader(&mut self, cluster: &Cluster) -> Result<(), Violation> {
        let new = cluster.events.get(self.events_seen..).unwrap_or_default();
        self.events_seen = cluster.events.len();
        for (node, event) in new {
            if let Event::ConflictingLeader {
                term,
                known_leader,
                claimed_leader,
            } = event
            {
                return violation(
                    "no second leader in a term",
                    format!(
                        "N-{node} follows N-{known_leader} in term {term} and heard from N-{claimed_leader} as its leader too",
                        known_leader = known_leader.0,
                        claimed_leader = claimed_leader.0
                    ),
                );
            }
        }
        Ok(())
    }
}
