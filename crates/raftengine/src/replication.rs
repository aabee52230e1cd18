//! Log replication: AppendEntries on both sides, progress, commit, heartbeats, check-quorum
//! (paper §5.3, §5.4; thesis §6.2).

use crate::event::Event;
use crate::message::MessageBody;
use crate::node::{RaftNode, Role};
use crate::progress::ProgressState;
use crate::types::{Entry, LogIndex, NodeId, Term};

/// A follower's answer to an AppendEntries, as the leader reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendAnswer {
    pub success: bool,
    pub match_index: LogIndex,
    pub reject_hint: LogIndex,
    /// The `prev_log_index` of the request it answers.
    pub prev_log_index: LogIndex,
    pub repairing: bool,
    pub repair_epoch: u64,
}

/// An AppendEntries, as the follower reads it.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub prev_index: LogIndex,
    pub prev_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: LogIndex,
    pub read_round: u64,
    /// This node's repair epoch as the leader knows it.
    pub epoch_known: u64,
}

/// Whom an answer to an AppendEntries goes to, and what it echoes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerTo {
    pub leader: NodeId,
    /// The request's `prev_log_index`.
    pub prev_index: LogIndex,
    pub read_round: u64,
    /// The request carried no entries.
    pub heartbeat: bool,
}

impl RaftNode {
    pub(crate) fn handle_append_entries(&mut self, from: NodeId, request: AppendRequest) {
        let AppendRequest {
            prev_index,
            prev_term,
            entries,
            leader_commit,
            read_round,
            epoch_known,
        } = request;
        if !matches!(self.role, Role::Follower) {
            // A candidate that hears from a leader of its own term steps down (paper §5.2).
            self.become_follower(self.hard.term, Some(from));
        }
        self.set_leader(Some(from));
        self.reset_election_timer();
        let answer = AnswerTo {
            leader: from,
            prev_index,
            read_round,
            heartbeat: entries.is_empty(),
        };
        if self.pending_install.is_some() {
            // The log is about to be replaced by a snapshot: take nothing until it is.
            let last = self.log.last_index();
            self.send_append_answer(answer, false, LogIndex(0), last);
            return;
        }
        let (mut prev_index, mut prev_term, mut entries) = (prev_index, prev_term, entries);
        let start = self.log.start();
        if prev_index < start.index {
            // Our snapshot covers `prev_index`: everything up to the snapshot is committed, so
            // it matches the leader's log; only what follows the snapshot is news.
            entries.retain(|e| e.index > start.index);
            prev_index = start.index;
            prev_term = start.term;
        }
        if let Some(reject_hint) = self.mismatch_hint(prev_index, prev_term) {
            self.send_append_answer(answer, false, LogIndex(0), reject_hint);
            return;
        }
        let match_index = prev_index.plus(entries.len() as u64);
        if !self.merge_entries(entries) {
            return;
        }
        self.advance_commit(leader_commit.min(match_index));
        #[cfg(feature = "mutations")]
        if self.mutated(crate::config::Mutation::ApplyBeforeCommit) {
            self.advance_commit(self.log.last_index());
        }
        self.check_repaired(match_index, leader_commit, epoch_known);
        // A heartbeat's answer goes out without waiting for earlier log writes, so it
        // acknowledges only what is durable already.
        let acknowledged = if answer.heartbeat {
            match_index.min(self.persisted_index)
        } else {
            match_index
        };
        self.send_append_answer(answer, true, acknowledged, LogIndex(0));
    }

    /// Answers an AppendEntries. The answer to a heartbeat promises nothing on disk but the term,
    /// so it does not wait behind earlier log writes; any other waits until they are durable.
    pub(crate) fn send_append_answer(
        &mut self,
        to: AnswerTo,
        success: bool,
        match_index: LogIndex,
        reject_hint: LogIndex,
    ) {
        let body = MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_hint,
            last_log_index: self.log.last_index(),
            prev_log_index: to.prev_index,
            read_round: to.read_round,
            repairing: self.repairing,
            repair_epoch: self.repair_epoch,
        };
        let term = self.hard.term;
        if to.heartbeat {
            self.send_after_term(to.leader, term, body);
        } else {
            self.send(to.leader, term, body);
        }
    }

    /// `None` when our log holds `prev_index` with `prev_term`; otherwise where the leader should
    /// look next: our last index, or the entry before the conflicting term.
    fn mismatch_hint(&self, prev_index: LogIndex, prev_term: Term) -> Option<LogIndex> {
        match self.log.term(prev_index) {
            None => Some(self.log.last_index()),
            Some(t) if t != prev_term => Some(self.log.first_index_of_term_at(prev_index).prev()),
            Some(_) => None,
        }
    }

    /// Appends what is new, truncating a conflicting suffix first. False if that would have
    /// truncated a committed entry (the node is then stopped).
    fn merge_entries(&mut self, entries: Vec<Entry>) -> bool {
        #[cfg(feature = "mutations")]
        if self.mutated(crate::config::Mutation::TruncateCommitted) {
            // The bug: whatever follows the batch goes, committed or not (a late, shorter
            // AppendEntries then erases entries this node acknowledged).
            if let Some(last) = entries.last() {
                let after = last.index.next();
                if self.log.last_index() >= after {
                    self.truncate_log(after);
                }
            }
        }
        let mut fresh = Vec::new();
        for entry in entries {
            if !fresh.is_empty() {
                fresh.push(entry);
                continue;
            }
            match self.log.term(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    if !self.truncate_log(entry.index) {
                        return false;
                    }
                    fresh.push(entry);
                }
                None => fresh.push(entry),
            }
        }
        for entry in fresh {
            self.append_entry(entry);
        }
        true
    }

    pub(crate) fn handle_append_response(&mut self, from: NodeId, answer: AppendAnswer) {
        let last = self.log.last_index();
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(progress) = leadership.progress.get_mut(&from) else {
            return;
        };
        progress.recently_active = true;
        #[cfg(feature = "mutations")]
        let answer = if self.config.mutation == Some(crate::config::Mutation::AnswersAcrossDataLoss)
        {
            AppendAnswer {
                repair_epoch: progress.repair_epoch,
                ..answer
            }
        } else {
            answer
        };
        if answer.repair_epoch < progress.repair_epoch {
            // Sent before the follower lost data: what it acknowledged may be gone.
            return;
        }
        if answer.repair_epoch > progress.repair_epoch {
            // The follower lost data since: nothing it acknowledged before counts. It holds
            // durably what this answer acknowledges (an answer that promises entries leaves
            // only once they are durable), and nothing more is known.
            progress.repair_epoch = answer.repair_epoch;
            progress.match_index = if answer.success {
                progress.match_index.min(answer.match_index)
            } else {
                LogIndex(0)
            };
        }
        progress.repairing = answer.repairing;
        if matches!(progress.state, ProgressState::Snapshot { .. }) {
            // The snapshot is on its way; a lost chunk is sent again by the tick
            // (`resend_snapshot_chunks`), so answers to heartbeats cannot multiply chunks.
            #[cfg(feature = "mutations")]
            if self.config.mutation == Some(crate::config::Mutation::ChunkPerHeartbeat) {
                progress.probe_sent = false;
                self.send_snapshot_chunk(from);
            }
            return;
        }
        if answer.success {
            let news = progress.acknowledge(answer.match_index);
            if progress.state == ProgressState::Probe {
                progress.become_replicate();
                let event = Event::FollowerReplicating {
                    follower: from,
                    match_index: answer.match_index,
                };
                self.out.events.push(event);
            }
            if news {
                self.maybe_commit();
                self.check_catch_up();
            }
            self.maybe_tell_target(from);
        } else {
            if progress.is_stale_rejection(answer.prev_log_index) {
                return;
            }
            // A hint below the match index, answering a current request, means the follower
            // lost entries it had acknowledged (a replaced or lying disk): believe it, so it
            // can be repaired. Lowering a match index only delays commits, never hastens them.
            let hint = answer.reject_hint;
            progress.match_index = progress.match_index.min(hint);
            let next = hint.next().min(progress.next_index.prev()).max(LogIndex(1));
            progress.become_probe(next.min(last.next()));
            let event = Event::FollowerProbing {
                follower: from,
                next_index: progress.next_index,
            };
            self.out.events.push(event);
        }
        self.send_append(from);
    }

    /// Sends `peer` what it is missing, as far as its progress state and window allow.
    pub(crate) fn send_append(&mut self, peer: NodeId) {
        let (term, last) = (self.hard.term, self.log.last_index());
        let (max_entries, max_bytes, max_in_flight) = (
            self.config.max_entries_per_message as u64,
            self.config.max_bytes_per_message,
            self.config.max_in_flight_messages,
        );
        loop {
            let Role::Leader(leadership) = &mut self.role else {
                return;
            };
            let Some(progress) = leadership.progress.get_mut(&peer) else {
                return;
            };
            if progress.next_index <= self.log.start().index {
                // The entries it needs are compacted: it gets the snapshot instead.
                self.send_snapshot_chunk(peer);
                return;
            }
            if matches!(progress.state, ProgressState::Snapshot { .. })
                || progress.next_index > last
                || !progress.can_send(max_in_flight)
            {
                return;
            }
            let probing = progress.state == ProgressState::Probe;
            let next = progress.next_index;
            let batch_end = if probing {
                next
            } else {
                self.log.batch_end(next, max_entries, max_bytes)
            };
            progress.sent(batch_end);
            let prev = next.prev();
            let entries = self.log.slice(next, batch_end).to_vec();
            let body = self.append_body(peer, prev, entries);
            self.send(peer, term, body);
            if probing {
                return;
            }
        }
    }

    /// An AppendEntries of this leader to `peer` after `prev` (empty `entries`: a heartbeat).
    pub(crate) fn append_body(
        &self,
        peer: NodeId,
        prev: LogIndex,
        entries: Vec<Entry>,
    ) -> MessageBody {
        let (read_round, transfer, repair_epoch) = match &self.role {
            Role::Leader(l) => (
                l.reads.round,
                l.transfer_generation,
                l.progress.get(&peer).map_or(0, |p| p.repair_epoch),
            ),
            _ => (0, 0, 0),
        };
        MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: self.log.term(prev).unwrap_or_default(),
            entries,
            leader_commit: self.commit,
            read_round,
            transfer,
            repair_epoch,
        }
    }

    /// Sends every follower (voters, learners, nodes catching up) what it is missing.
    pub(crate) fn broadcast_append(&mut self) {
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        let peers: Vec<NodeId> = leadership.progress.keys().copied().collect();
        for peer in peers {
            self.send_append(peer);
        }
    }

    /// Sends an empty AppendEntries to every follower now (also what the heartbeat timer does).
    /// Its previous index is what the follower has been sent so far, so a follower that lost
    /// entries answers with a rejection and gets probed. Drivers need not call it (`tick`
    /// sends heartbeats); simulators use it to send one on demand.
    pub fn broadcast_heartbeat(&mut self) {
        self.heartbeat_to(|_| true);
    }

    /// With `Config::notify_commit`: followers waiting for an index the commit reached (a
    /// forwarded command, a read index) hear the new commit index now, not at the next heartbeat
    /// or append. Followers that wait for nothing get no extra message.
    pub(crate) fn notify_commit_waiters(&mut self) {
        let commit = self.commit;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let due: Vec<NodeId> = leadership
            .commit_waiters
            .iter()
            .filter(|(_, index)| **index <= commit)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return;
        }
        for id in &due {
            leadership.commit_waiters.remove(id);
        }
        self.heartbeat_to(|peer| due.contains(&peer));
    }

    /// Notes that `follower` waits for the commit index to reach `index`.
    pub(crate) fn add_commit_waiter(&mut self, follower: NodeId, index: LogIndex) {
        if !self.config.notify_commit {
            return;
        }
        if let Role::Leader(leadership) = &mut self.role {
            let waiting = leadership.commit_waiters.entry(follower).or_default();
            *waiting = (*waiting).max(index);
        }
    }

    fn heartbeat_to(&mut self, wanted: impl Fn(NodeId) -> bool) {
        let term = self.hard.term;
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        let targets: Vec<(NodeId, LogIndex)> = leadership
            .progress
            .iter()
            .filter(|(id, _)| wanted(**id))
            .map(|(id, p)| (*id, p.next_index.prev()))
            .collect();
        for (peer, prev) in targets {
            let body = self.append_body(peer, prev, Vec::new());
            self.send(peer, term, body);
        }
    }

    /// Commits the highest index a majority stores, if it is from the current term (paper §5.4.2:
    /// an older term's entry is committed only indirectly).
    pub(crate) fn maybe_commit(&mut self) {
        let me = self.config.id;
        let own = self.persisted_index;
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        // The configuration in effect counts, committed or not (thesis §4.1); during a joint
        // change both majorities are needed, and a leader outside C_new does not count itself.
        let Some(index) = self.configs.latest().1.quorum_reached(|v| {
            if v == me {
                own
            } else {
                // A follower repairing lost data counts towards no commit.
                leadership
                    .progress
                    .get(&v)
                    .filter(|p| !p.repairing)
                    .map_or(LogIndex(0), |p| p.match_index)
            }
        }) else {
            return;
        };
        #[cfg(feature = "mutations")]
        if index > self.commit && self.mutated(crate::config::Mutation::CommitPreviousTerm) {
            self.advance_commit(index);
            self.register_unready_reads();
            return;
        }
        if index > self.commit && self.log.term(index) == Some(self.hard.term) {
            self.advance_commit(index);
            self.register_unready_reads();
        }
    }

    pub(crate) fn tick_leader(&mut self) {
        let (heartbeat_interval, quorum_timeout) = (
            self.config.heartbeat_interval_ticks,
            self.config.election_timeout_min_ticks,
        );
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        leadership.heartbeat_elapsed += 1;
        leadership.quorum_elapsed += 1;
        let heartbeat_due = leadership.heartbeat_elapsed >= heartbeat_interval;
        if heartbeat_due {
            leadership.heartbeat_elapsed = 0;
        }
        let quorum_due = self.config.check_quorum && leadership.quorum_elapsed >= quorum_timeout;
        if quorum_due {
            leadership.quorum_elapsed = 0;
            if !self.heard_from_majority() {
                let term = self.hard.term;
                self.out.events.push(Event::LostQuorum { term });
                self.become_follower(term, None);
                return;
            }
        }
        self.tick_transfer();
        self.tick_catch_up();
        self.resend_snapshot_chunks();
        let lease_reads = self.tick_reads();
        if heartbeat_due {
            if lease_reads {
                self.start_read_round();
            } else {
                self.broadcast_heartbeat();
            }
        }
    }

    /// Whether a majority (this leader included) answered since the last check, and starts a new
    /// round.
    fn heard_from_majority(&mut self) -> bool {
        let me = self.config.id;
        let Role::Leader(leadership) = &mut self.role else {
            return false;
        };
        let progress = &leadership.progress;
        let ok = self
            .configs
            .latest()
            .1
            .has_quorum(|v| v == me || progress.get(&v).is_some_and(|p| p.recently_active));
        for p in leadership.progress.values_mut() {
            p.recently_active = false;
        }
        ok
    }
}
