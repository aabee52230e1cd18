//! Terms, pre-vote, votes and role changes (paper §5.2, thesis §9.6 and §6.2).

use crate::event::Event;
use crate::message::{Message, MessageBody};
use crate::node::{Election, Leadership, RaftNode, Role, StepError};
use crate::output::CommandRejected;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, Term};
use std::collections::BTreeMap;

impl RaftNode {
    /// Applies the term rules common to every message, then dispatches on its kind.
    pub(crate) fn step_checked(&mut self, msg: Message) -> Result<(), StepError> {
        if self.ignores_stale_answer(&msg) {
            return Ok(());
        }
        let current = self.hard.term;
        if msg.term > current {
            if !self.adopt_newer_term(&msg) {
                return Ok(());
            }
        } else if msg.term < current {
            self.answer_stale(&msg);
            return Ok(());
        }
        match msg.body {
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
                transfer,
            } => {
                self.handle_pre_vote_request(
                    msg.from,
                    msg.term,
                    last_log_index,
                    last_log_term,
                    transfer,
                );
            }
            MessageBody::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(msg.from, msg.term, granted);
            }
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
                transfer: _,
            } => {
                self.handle_vote_request(msg.from, last_log_index, last_log_term);
            }
            MessageBody::VoteResponse { granted } => self.handle_vote_response(msg.from, granted),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
                transfer,
                repair_epoch,
            } => {
                if self.refuses_second_leader(msg.from, msg.term) {
                    return Ok(());
                }
                self.note_transfer_generation(transfer);
                let request = crate::replication::AppendRequest {
                    prev_index: prev_log_index,
                    prev_term: prev_log_term,
                    entries,
                    leader_commit,
                    read_round,
                    epoch_known: repair_epoch,
                };
                self.handle_append_entries(msg.from, request);
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_hint,
                prev_log_index,
                read_round,
                repairing,
                repair_epoch,
                ..
            } => {
                let answer = crate::replication::AppendAnswer {
                    success,
                    match_index,
                    reject_hint,
                    prev_log_index,
                    repairing,
                    repair_epoch,
                };
                if !repairing {
                    self.note_read_round_echo(msg.from, read_round);
                }
                self.handle_append_response(msg.from, answer);
            }
            MessageBody::InstallSnapshot {
                last_included,
                membership,
                offset,
                data,
                done,
            } => {
                if self.refuses_second_leader(msg.from, msg.term) {
                    return Ok(());
                }
                let chunk = crate::snapshot::SnapshotChunk {
                    last_included,
                    membership,
                    offset,
                    data,
                    done,
                };
                self.handle_install_snapshot(msg.from, chunk);
            }
            MessageBody::InstallSnapshotResponse {
                last_included,
                offset,
                next_offset,
                done,
            } => self.handle_snapshot_response(msg.from, last_included, offset, next_offset, done),
            MessageBody::TimeoutNow {
                last_log_index,
                transfer,
            } => {
                self.handle_timeout_now(msg.from, last_log_index, transfer);
            }
            MessageBody::TimeoutNowResponse { accepted } => {
                self.handle_timeout_now_response(msg.from, accepted);
            }
            MessageBody::Propose { request, command } => {
                self.handle_propose(msg.from, request, command);
            }
            MessageBody::ProposeResponse { request, placed } => {
                self.handle_propose_response(request, placed);
            }
            MessageBody::ReadIndexRequest { request } => {
                self.handle_read_index_request(msg.from, request);
            }
            MessageBody::ChangeMembership { request, change } => {
                self.handle_change_request(msg.from, request, change);
            }
            MessageBody::ChangeMembershipResponse { request, result } => {
                self.handle_change_response(request, result);
            }
            MessageBody::ReadIndexResponse {
                request,
                read_index,
            } => self.handle_read_index_response(request, read_index),
        }
        Ok(())
    }

    /// A leader's message (AppendEntries, snapshot chunk) of the current term from `from`,
    /// while this node leads that term or follows another leader in it: two leaders of one term
    /// cannot both be legitimate, so the message is not accepted and an event names both. The
    /// leader known here is always one of the current term: `leader` is cleared whenever the
    /// term moves on (`become_follower` sets it afresh, candidates clear it), so a node that does
    /// not know the leader (after a restart, during an election) accepts the first one it hears.
    fn refuses_second_leader(&mut self, from: NodeId, term: Term) -> bool {
        let known = match self.role {
            Role::Leader(_) => Some(self.config.id),
            _ => self.leader.filter(|&leader| leader != from),
        };
        let Some(known_leader) = known else {
            return false;
        };
        self.out.events.push(Event::ConflictingLeader {
            term,
            known_leader,
            claimed_leader: from,
        });
        true
    }

    /// At a leader, an answer from a node it no longer replicates to (removed, or its catch-up
    /// given up) is stale: it is dropped before its term is looked at, so a removed server that
    /// moved on to a higher term cannot depose the leader through it. (Vote requests from
    /// outside the configuration are handled like any other, as the thesis prescribes (§4.1):
    /// refusing them can leave a joint configuration without any electable node. Pre-vote and
    /// check-quorum keep a removed server's campaigns harmless, §4.2.3.)
    fn ignores_stale_answer(&self, msg: &Message) -> bool {
        let followed = matches!(&self.role, Role::Leader(l) if l.progress.contains_key(&msg.from));
        matches!(self.role, Role::Leader(_)) && msg.body.is_response() && !followed
    }

    /// A message carries a newer term. Returns whether to go on handling it.
    fn adopt_newer_term(&mut self, msg: &Message) -> bool {
        match &msg.body {
            // Pre-vote changes no state on the voter; a granted pre-vote answers our proposed term.
            MessageBody::PreVoteRequest { .. } => true,
            MessageBody::PreVoteResponse { granted: true } => true,
            MessageBody::VoteRequest { transfer, .. }
                if self.config.check_quorum
                    && self.leader_is_alive()
                    && !self.transfer_vote_authorized(msg.from, *transfer) =>
            {
                // Thesis §4.2.3: a server that heard from a live leader within the minimum election
                // timeout neither updates its term nor grants its vote.
                self.out.events.push(Event::VoteRefused {
                    candidate: msg.from,
                    term: msg.term,
                    reason: self.stickiness_reason(),
                });
                false
            }
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(msg.term, Some(msg.from));
                true
            }
            _ => {
                self.become_follower(msg.term, None);
                true
            }
        }
    }

    /// A message from an older term: tell the sender our term where that helps it step down.
    fn answer_stale(&mut self, msg: &Message) {
        let term = self.hard.term;
        match msg.body {
            MessageBody::AppendEntries {
                prev_log_index,
                ref entries,
                ..
            } => {
                let last = self.log.last_index();
                let to = crate::replication::AnswerTo {
                    leader: msg.from,
                    prev_index: prev_log_index,
                    read_round: 0,
                    heartbeat: entries.is_empty(),
                };
                self.send_append_answer(to, false, LogIndex(0), last);
            }
            MessageBody::ReadIndexRequest { request } => self.refuse_read(msg.from, request),
            MessageBody::Propose { request, .. } => self.refuse_proposal(msg.from, request),
            MessageBody::PreVoteRequest { .. } => {
                self.send(
                    msg.from,
                    term,
                    MessageBody::PreVoteResponse { granted: false },
                );
            }
            MessageBody::VoteRequest { .. } => {
                self.send(msg.from, term, MessageBody::VoteResponse { granted: false });
            }
            _ => {}
        }
    }

    /// This node leads, or heard from a leader within the minimum election timeout: an election
    /// now would only disrupt a working leader. Pre-vote refuses on this; with check-quorum on,
    /// so does a higher-term RequestVote (leader stickiness, thesis §4.2.3). A node that just
    /// restarted counts as having heard from one: it may have answered a heartbeat just before
    /// it stopped, and the lease of that heartbeat's leader counts on its stickiness.
    pub(crate) fn leader_is_alive(&self) -> bool {
        if matches!(self.role, Role::Leader(_)) {
            return true;
        }
        let heard = self.leader.is_some() || self.restarted_quiet;
        heard && self.election_elapsed < self.config.election_timeout_min_ticks
    }

    /// Why `leader_is_alive` holds, for a refused vote.
    fn stickiness_reason(&self) -> &'static str {
        if self.leader.is_none() && !matches!(self.role, Role::Leader(_)) {
            "restarted within the minimum election timeout"
        } else {
            "a leader is alive"
        }
    }

    fn handle_pre_vote_request(
        &mut self,
        from: NodeId,
        proposed: Term,
        last_index: LogIndex,
        last_term: Term,
        transfer: bool,
    ) {
        let refusal = if proposed <= self.hard.term {
            Some("proposed term is not newer")
        } else if self.repairing {
            Some("repairing lost data")
        } else if !self.log.is_up_to_date(last_index, last_term) {
            Some("candidate log is behind")
        } else if !transfer && self.leader_is_alive() {
            Some(self.stickiness_reason())
        } else {
            None
        };
        let granted = refusal.is_none();
        let term = if granted { proposed } else { self.hard.term };
        if let Some(reason) = refusal {
            self.out.events.push(Event::VoteRefused {
                candidate: from,
                term: proposed,
                reason,
            });
        }
        self.send(from, term, MessageBody::PreVoteResponse { granted });
    }

    fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        let proposed = self.hard.term.next();
        let Role::PreCandidate(election) = &mut self.role else {
            return;
        };
        if granted && term != proposed {
            return;
        }
        election.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.become_candidate(None),
            Some(false) => self.lose_election(),
            None => {}
        }
    }

    fn handle_vote_request(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let term = self.hard.term;
        let free = self.hard.voted_for.is_none() || self.hard.voted_for == Some(from);
        #[cfg(feature = "mutations")]
        let free = free || self.mutated(crate::config::Mutation::TwoVotesPerTerm);
        let refusal = if !free {
            Some("already voted in this term")
        } else if self.repairing {
            Some("repairing lost data")
        } else if !self.log.is_up_to_date(last_index, last_term) {
            Some("candidate log is behind")
        } else {
            None
        };
        let granted = refusal.is_none();
        if granted {
            self.set_hard_state(term, Some(from));
            self.reset_election_timer();
            self.out.events.push(Event::VoteGranted {
                candidate: from,
                term,
            });
        } else if let Some(reason) = refusal {
            self.out.events.push(Event::VoteRefused {
                candidate: from,
                term,
                reason,
            });
        }
        self.send(from, term, MessageBody::VoteResponse { granted });
    }

    fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        let Role::Candidate(election) = &mut self.role else {
            return;
        };
        election.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.become_leader(),
            Some(false) => self.lose_election(),
            None => {}
        }
    }

    /// `Some(true)` won, `Some(false)` lost, `None` undecided.
    fn tally(&self) -> Option<bool> {
        let votes = match &self.role {
            Role::PreCandidate(e) | Role::Candidate(e) => &e.votes,
            _ => return None,
        };
        self.membership().vote_result(votes)
    }

    fn lose_election(&mut self) {
        self.out.events.push(Event::ElectionLost {
            term: self.hard.term,
        });
        self.become_follower(self.hard.term, None);
    }

    // ----- role changes: the only places a role is entered -----------------------------------

    /// Starts an election: with pre-vote first when enabled. `transfer` marks an election the
    /// leader asked for (leadership transfer): it skips pre-vote and goes to term + 1 at once, as
    /// if its election timer had fired (thesis §3.10), and leader stickiness lets it through. A
    /// pre-vote round here would be undone by the next append from the old leader, which is
    /// still sending in the current term, and the transfer would time out.
    ///
    /// A forced transfer campaign (a test control) is authorized whatever transfers voters
    /// heard of; one started by `TimeoutNow` carries that message's transfer generation.
    ///
    /// Public for simulators and tests (a campaign on demand); a driver never needs it, since
    /// `tick` starts elections.
    pub fn campaign(&mut self, transfer: bool) {
        self.campaign_as(transfer.then_some(u64::MAX));
    }

    /// Starts an election, as a transfer of generation `transfer` when given.
    pub(crate) fn campaign_as(&mut self, transfer: Option<u64>) {
        if self.is_stopped().is_some()
            || matches!(self.role, Role::Leader(_))
            || !self.may_campaign()
        {
            return;
        }
        self.restarted_quiet = false;
        if self.config.pre_vote && transfer.is_none() {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        let me = self.config.id;
        self.set_role(Role::PreCandidate(Election {
            votes: BTreeMap::from([(me, true)]),
        }));
        self.set_leader(None);
        self.reset_election_timer();
        let proposed = self.hard.term.next();
        self.out.events.push(Event::PreVoteStarted {
            proposed_term: proposed,
        });
        if self.tally() == Some(true) {
            self.become_candidate(None);
            return;
        }
        self.request_votes(proposed, true, None);
    }

    fn become_candidate(&mut self, transfer: Option<u64>) {
        let me = self.config.id;
        let term = self.hard.term.next();
        self.set_hard_state(term, Some(me));
        self.set_role(Role::Candidate(Election {
            votes: BTreeMap::from([(me, true)]),
        }));
        self.set_leader(None);
        self.reset_election_timer();
        self.out.events.push(Event::ElectionStarted {
            term,
            transfer: transfer.is_some(),
        });
        if self.tally() == Some(true) {
            self.become_leader();
            return;
        }
        self.request_votes(term, false, transfer);
    }

    /// Asks every other voter for a (pre-)vote in `term`, with this node's last log position.
    fn request_votes(&mut self, term: Term, pre_vote: bool, transfer: Option<u64>) {
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.other_voters() {
            let body = if pre_vote {
                MessageBody::PreVoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer: transfer.is_some(),
                }
            } else {
                MessageBody::VoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            };
            self.send(peer, term, body);
        }
    }

    fn become_leader(&mut self) {
        let term = self.hard.term;
        let next = self.log.last_index().next();
        self.set_role(Role::Leader(Box::new(Leadership {
            progress: BTreeMap::new(),
            pending: BTreeMap::new(),
            quorum_elapsed: 0,
            heartbeat_elapsed: 0,
            append_dirty: true,
            reads: Default::default(),
            forwarded: Default::default(),
            commit_waiters: BTreeMap::new(),
            transfer: None,
            term_start: next,
            transfer_generation: 0,
            change: None,
            stepping_down: false,
        })));
        self.reconcile_progress_from(next);
        self.resume_joint_change();
        self.set_leader(Some(self.config.id));
        self.out.events.push(Event::ElectionWon { term });
        self.append_entry(Entry {
            term,
            index: next,
            payload: EntryPayload::TermStart,
        });
        self.maybe_commit();
    }

    /// Becomes (or stays) a follower of `term`, following `leader` if known. A leader that steps
    /// down tells its pending clients that their outcome is unknown.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.hard.term {
            self.set_hard_state(term, None);
        }
        self.abandon_change();
        let (pending, reads) = match &mut self.role {
            Role::Leader(leadership) => (
                std::mem::take(&mut leadership.pending),
                std::mem::take(&mut leadership.reads),
            ),
            _ => (BTreeMap::new(), Default::default()),
        };
        self.fail_leader_reads(reads);
        for (_, id) in pending {
            self.out
                .rejected
                .push((id, CommandRejected::LeadershipLost));
        }
        self.set_role(Role::Follower);
        self.set_leader(leader);
        self.reset_election_timer();
    }

    // ----- controls for harnesses and operators ----------------------------------------------

    /// Drops back to follower in the current term with no known leader. A control for
    /// simulators, tests and operators; not part of normal driving.
    pub fn force_follower(&mut self) {
        if self.is_stopped().is_none() {
            self.become_follower(self.hard.term, None);
        }
    }

    /// Overwrites the current term (and clears the vote). A test control that reproduces the
    /// seed's "force the term back down"; never needed in production.
    pub fn force_term(&mut self, term: Term) {
        self.set_hard_state(term, None);
    }
}
