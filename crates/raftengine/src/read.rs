//! Linearizable reads (thesis §6.4): ReadIndex at the leader, forwarded from followers, and the
//! opt-in lease read of §6.4.1.
//!
//! A read registered at the leader takes the commit index as its read index (once the leader has
//! committed an entry of its own term, so that index covers every earlier leader's commits). It
//! is released when a majority has answered an AppendEntries sent after it was registered: the
//! leader still led at that moment, so no newer leader can have committed anything it lacks.
//! AppendEntries carry the leader's current *read round*; answers echo it. Reads registered
//! while a round is in flight wait for the next one, which starts as soon as that round is
//! confirmed, so one round confirms any number of reads.

use crate::message::MessageBody;
use crate::node::{RaftNode, Role};
use crate::output::{CommandRejected, ReadReady};
use crate::types::{LogIndex, NodeId, RequestId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A leader's reads and read rounds.
#[derive(Debug, Default)]
pub(crate) struct ReadRounds {
    /// The latest round started; AppendEntries carry it.
    pub round: u64,
    /// The highest round a majority has echoed.
    confirmed: u64,
    /// The highest round each follower echoed.
    echoed: BTreeMap<NodeId, u64>,
    /// Leader ticks at which recent rounds started (for leases).
    started_at: VecDeque<(u64, u64)>,
    /// Ticks since this node became leader.
    pub ticks: u64,
    /// Tick at which the confirmed round started: the lease runs from there.
    lease_from: Option<u64>,
    /// Only rounds above this one may start a lease (`u64::MAX`: none may, a transfer's
    /// `TimeoutNow` is out).
    lease_floor: u64,
    /// Reads waiting for the leader's first commit in its term.
    unready: Vec<PendingRead>,
    /// Reads waiting for a round, in registration order (so `needed` never decreases).
    waiting: VecDeque<PendingRead>,
}

#[derive(Debug, Clone, Copy)]
struct PendingRead {
    request: RequestId,
    /// The follower that asked on behalf of its client; `None` for a read of this node's client.
    origin: Option<NodeId>,
    index: LogIndex,
    needed: u64,
}

impl ReadRounds {
    /// A `TimeoutNow` went out: its target may win without waiting out the followers'
    /// stickiness, so no lease holds until the transfer ends (reads confirm with a round).
    pub(crate) fn suspend_lease(&mut self) {
        self.lease_from = None;
        self.lease_floor = u64::MAX;
    }

    /// A transfer whose `TimeoutNow` went out was aborted: only a round started from now on
    /// (whose echoes prove a majority heard that the transfer ended) may start a lease again.
    pub(crate) fn restart_lease_after_current_round(&mut self) {
        self.lease_from = None;
        self.lease_floor = self.round;
    }

    fn lease_valid(&self, lease_ticks: u64) -> bool {
        self.lease_from
            .is_some_and(|from| self.ticks < from + lease_ticks)
    }
}

impl RaftNode {
    /// A linearizable read. The leader answers with a [`ReadReady`] in `Output::reads` once its
    /// leadership is confirmed; a follower asks its leader; without a leader the read is rejected
    /// with `Retry`. Serve the read after applying up to `ReadReady::index`.
    pub fn read(&mut self, request: RequestId) {
        if self.is_stopped().is_some() {
            self.out.rejected.push((request, CommandRejected::Retry));
            return;
        }
        if matches!(self.role, Role::Leader(_)) {
            self.register_read(request, None);
            return;
        }
        match self.leader {
            Some(leader) if leader != self.config.id => {
                self.forwarded_reads.insert(request);
                self.note_forwarded(request);
                let term = self.hard.term;
                let body = MessageBody::ReadIndexRequest { request: request.0 };
                self.send(leader, term, body);
            }
            _ => self.out.rejected.push((request, CommandRejected::Retry)),
        }
    }

    pub(crate) fn handle_read_index_request(&mut self, from: NodeId, request: u64) {
        if matches!(self.role, Role::Leader(_)) {
            self.register_read(RequestId(request), Some(from));
        } else {
            self.refuse_read(from, request);
        }
    }

    pub(crate) fn refuse_read(&mut self, to: NodeId, request: u64) {
        let body = MessageBody::ReadIndexResponse {
            request,
            read_index: None,
        };
        let term = self.hard.term;
        self.send(to, term, body);
    }

    pub(crate) fn handle_read_index_response(
        &mut self,
        request: u64,
        read_index: Option<LogIndex>,
    ) {
        let request = RequestId(request);
        if !self.forwarded_reads.remove(&request) {
            return;
        }
        match read_index {
            Some(index) if index <= self.commit => {
                self.out.reads.push(ReadReady { request, index })
            }
            // Released once this node knows the index committed, so a driver never waits to
            // apply an index it may never learn of (it expires like a placed command).
            Some(index) => self.await_commit_for_read(index, request),
            None => self.out.rejected.push((request, CommandRejected::Retry)),
        }
    }

    /// The commit index reached `commit`: reads waiting for it are ready.
    pub(crate) fn release_reads_through(&mut self, commit: LogIndex) {
        let later = self.reads_awaiting_commit.split_off(&commit.next());
        let ready = std::mem::replace(&mut self.reads_awaiting_commit, later);
        for (index, requests) in ready {
            for request in requests {
                self.out.reads.push(ReadReady { request, index });
            }
        }
    }

    /// Forwarded reads cannot be answered by a leader we no longer follow.
    pub(crate) fn fail_forwarded_reads(&mut self) {
        let failed: BTreeSet<RequestId> = std::mem::take(&mut self.forwarded_reads);
        for request in failed {
            self.out.rejected.push((request, CommandRejected::Retry));
        }
    }

    /// Reads confirmed by the leader that wait for this node to learn their index committed
    /// give up (a removed node, or one that hears from no leader for long): retry elsewhere.
    pub(crate) fn fail_reads_awaiting_commit(&mut self) {
        for (_, requests) in std::mem::take(&mut self.reads_awaiting_commit) {
            for request in requests {
                self.out.rejected.push((request, CommandRejected::Retry));
            }
        }
    }

    fn register_read(&mut self, request: RequestId, origin: Option<NodeId>) {
        let commit = self.commit;
        let committed_in_term = self.log.term(commit) == Some(self.hard.term);
        let lease_reads = self.config.lease_reads;
        let lease_ticks = self.config.lease_ticks;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let rounds = &mut leadership.reads;
        let read = PendingRead {
            request,
            origin,
            index: commit,
            needed: rounds.round + 1,
        };
        if !committed_in_term {
            rounds.unready.push(read);
            return;
        }
        let lease_valid = lease_reads && rounds.lease_valid(lease_ticks);
        #[cfg(feature = "mutations")]
        let lease_valid =
            lease_valid || self.config.mutation == Some(crate::config::Mutation::ReadWithoutQuorum);
        if lease_valid {
            self.release_read(read);
            return;
        }
        let idle = rounds.confirmed == rounds.round;
        rounds.waiting.push_back(read);
        if idle {
            self.start_read_round();
        }
    }

    /// Registers the reads that waited for the leader's first commit in its term.
    pub(crate) fn register_unready_reads(&mut self) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if leadership.reads.unready.is_empty() || self.log.term(self.commit) != Some(self.hard.term)
        {
            return;
        }
        let unready = std::mem::take(&mut leadership.reads.unready);
        for read in unready {
            self.register_read(read.request, read.origin);
        }
    }

    /// Starts a round: a heartbeat to every follower carrying the new round number.
    pub(crate) fn start_read_round(&mut self) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let rounds = &mut leadership.reads;
        rounds.round += 1;
        let started = (rounds.round, rounds.ticks);
        rounds.started_at.push_back(started);
        self.broadcast_heartbeat();
        self.confirm_read_rounds();
    }

    /// A follower answered an AppendEntries of `round`.
    pub(crate) fn note_read_round_echo(&mut self, from: NodeId, round: u64) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let echoed = leadership.reads.echoed.entry(from).or_default();
        if round <= *echoed {
            return;
        }
        *echoed = round;
        self.confirm_read_rounds();
    }

    /// Releases the reads of every round a majority of the configuration in effect has echoed
    /// (also called when that configuration changes: fewer voters may already be enough).
    pub(crate) fn confirm_read_rounds(&mut self) {
        let me = self.config.id;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let rounds = &mut leadership.reads;
        let Some(confirmed) = self.configs.latest().1.quorum_reached(|v| {
            if v == me {
                rounds.round
            } else {
                rounds.echoed.get(&v).copied().unwrap_or(0)
            }
        }) else {
            return;
        };
        if confirmed <= rounds.confirmed {
            return;
        }
        rounds.confirmed = confirmed;
        while rounds
            .started_at
            .front()
            .is_some_and(|(r, _)| *r < confirmed)
        {
            rounds.started_at.pop_front();
        }
        if let Some(&(round, tick)) = rounds.started_at.front() {
            if round == confirmed && round > rounds.lease_floor {
                rounds.lease_from = Some(tick);
            }
        }
        let mut released = Vec::new();
        while rounds
            .waiting
            .front()
            .is_some_and(|r| r.needed <= confirmed)
        {
            released.extend(rounds.waiting.pop_front());
        }
        let more = !rounds.waiting.is_empty() && rounds.confirmed == rounds.round;
        for read in released {
            self.release_read(read);
        }
        if more {
            self.start_read_round();
        }
    }

    fn release_read(&mut self, read: PendingRead) {
        match read.origin {
            None => self.out.reads.push(ReadReady {
                request: read.request,
                index: read.index,
            }),
            Some(follower) => {
                self.add_commit_waiter(follower, read.index);
                let term = self.hard.term;
                let body = MessageBody::ReadIndexResponse {
                    request: read.request.0,
                    read_index: Some(read.index),
                };
                self.send(follower, term, body);
            }
        }
    }

    /// A leader stepping down fails its reads: local ones get `Retry`, forwarded ones a refusal.
    pub(crate) fn fail_leader_reads(&mut self, rounds: ReadRounds) {
        for read in rounds.unready.into_iter().chain(rounds.waiting) {
            match read.origin {
                None => self
                    .out
                    .rejected
                    .push((read.request, CommandRejected::Retry)),
                Some(follower) => self.refuse_read(follower, read.request.0),
            }
        }
    }

    /// Lease reads: start a round with every heartbeat, so the lease keeps being renewed.
    pub(crate) fn tick_reads(&mut self) -> bool {
        let lease_reads = self.config.lease_reads;
        let Role::Leader(leadership) = &mut self.role else {
            return false;
        };
        leadership.reads.ticks += 1;
        lease_reads
    }
}
