//! Forwarding client commands from followers to the leader, so any node can take a client's
//! command (enabled by `Config::forward_proposals`; otherwise followers answer with a redirect).
//!
//! The follower sends the command to its leader; the leader appends it and answers with the
//! entry's index and term. When the follower later applies that index, the entry is its client's
//! command if the term matches; a different term means a later leader overwrote it, so it was
//! never applied and the client may retry.
//!
//! Raft's own messages may be duplicated harmlessly; a command may not be applied twice. So the
//! leader remembers which forwarded requests it placed in its term and answers a duplicate with
//! the same place. A refusal (`placed: None`) is not taken as "not applied": it may answer a
//! duplicate whose original was appended, so the client learns "outcome unknown". Request ids must
//! be unique per node across restarts (the runtime starts its counter at a random value).

use crate::message::MessageBody;
use crate::node::{RaftNode, Role};
use crate::output::CommandRejected;
use crate::storage::LogId;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, RequestId, Term};
use std::collections::{BTreeMap, VecDeque};

/// Forwarded requests a leader placed in its term, oldest first, bounded in number.
#[derive(Debug, Default)]
pub(crate) struct PlacedForwards {
    placed: BTreeMap<(NodeId, u64), LogId>,
    order: VecDeque<(NodeId, u64)>,
}

/// How many placed requests a leader remembers; a duplicate arriving later than this many
/// forwarded commands after its original would be appended again.
const REMEMBERED_FORWARDS: usize = 1 << 16;

impl PlacedForwards {
    fn get(&self, from: NodeId, request: u64) -> Option<LogId> {
        self.placed.get(&(from, request)).copied()
    }

    fn insert(&mut self, from: NodeId, request: u64, id: LogId) {
        self.placed.insert((from, request), id);
        self.order.push_back((from, request));
        while self.order.len() > REMEMBERED_FORWARDS {
            if let Some(oldest) = self.order.pop_front() {
                self.placed.remove(&oldest);
            }
        }
    }
}

/// When requests were forwarded, and when forwarded commands were placed, in ticks of this
/// node, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ForwardClock {
    now: u64,
    sent: VecDeque<(u64, RequestId)>,
    placed: VecDeque<(u64, LogIndex, RequestId)>,
}

/// Ticks a forwarded request waits for the leader's answer, in maximum election timeouts.
const ANSWER_TIMEOUTS: u64 = 2;
/// Ticks a placed command waits to be applied here, in maximum election timeouts: far longer
/// than a commit takes while a leader can reach this node.
const APPLY_TIMEOUTS: u64 = 10;

#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    /// Sent to the leader, waiting for its answer.
    awaiting_leader: BTreeMap<RequestId, NodeId>,
    /// Placed in the log by the leader: index -> (term, request).
    placed: BTreeMap<LogIndex, (Term, RequestId)>,
}

impl RaftNode {
    /// A follower forwards `command` to `leader`.
    pub(crate) fn forward_proposal(
        &mut self,
        leader: NodeId,
        request: RequestId,
        command: Vec<u8>,
    ) {
        self.forwarded.awaiting_leader.insert(request, leader);
        self.note_forwarded(request);
        let term = self.hard.term;
        let body = MessageBody::Propose {
            request: request.0,
            command,
        };
        self.send(leader, term, body);
    }

    pub(crate) fn handle_propose(&mut self, from: NodeId, request: u64, command: Vec<u8>) {
        let term = self.hard.term;
        let transferring = self.transferring();
        let placed = match &mut self.role {
            Role::Leader(leadership) if !transferring => {
                if let Some(id) = leadership.forwarded.get(from, request) {
                    self.send(
                        from,
                        term,
                        MessageBody::ProposeResponse {
                            request,
                            placed: Some(id),
                        },
                    );
                    return;
                }
                leadership.append_dirty = true;
                let index = self.log.last_index().next();
                leadership
                    .forwarded
                    .insert(from, request, LogId { index, term });
                self.append_entry(Entry {
                    term,
                    index,
                    payload: EntryPayload::Command(command),
                });
                Some(LogId { index, term })
            }
            _ => None,
        };
        if let Some(id) = placed {
            self.add_commit_waiter(from, id.index);
        }
        self.send(from, term, MessageBody::ProposeResponse { request, placed });
    }

    pub(crate) fn refuse_proposal(&mut self, to: NodeId, request: u64) {
        let term = self.hard.term;
        let body = MessageBody::ProposeResponse {
            request,
            placed: None,
        };
        self.send(to, term, body);
    }

    pub(crate) fn handle_propose_response(&mut self, request: u64, placed: Option<LogId>) {
        let request = RequestId(request);
        if self.forwarded.awaiting_leader.remove(&request).is_none() {
            return;
        }
        let Some(LogId { index, term }) = placed else {
            self.out
                .rejected
                .push((request, CommandRejected::LeadershipLost));
            return;
        };
        if index <= self.committed_emitted {
            // Committed and handed to the driver before the leader's answer arrived: the command
            // may have been applied, but its result went out untagged.
            self.out
                .rejected
                .push((request, CommandRejected::LeadershipLost));
            return;
        }
        // Two commands placed at one index by leaders of different terms: the one of the
        // lower term was overwritten and will never be applied, so retrying it is safe.
        if let Some(&(held_term, held)) = self.forwarded.placed.get(&index) {
            if held_term >= term {
                self.out.rejected.push((request, CommandRejected::Retry));
                return;
            }
            self.out.rejected.push((held, CommandRejected::Retry));
        }
        self.forwarded.placed.insert(index, (term, request));
        let now = self.forward_clock.now;
        self.forward_clock.placed.push_back((now, index, request));
    }

    /// The request a committed entry answers, if it was forwarded from here. A forwarded command
    /// whose index now holds another term was overwritten: it will never apply, so retry is safe.
    pub(crate) fn forwarded_request_at(&mut self, entry: &Entry) -> Option<RequestId> {
        let (term, request) = self.forwarded.placed.remove(&entry.index)?;
        if term == entry.term {
            return Some(request);
        }
        self.out.rejected.push((request, CommandRejected::Retry));
        None
    }

    /// A snapshot up to `index` replaces the log here: forwarded commands placed up to it were
    /// applied inside it (or overwritten), so their results will never be known here.
    pub(crate) fn fail_forwarded_placed_through(&mut self, index: LogIndex) {
        let later = self.forwarded.placed.split_off(&index.next());
        let covered = std::mem::replace(&mut self.forwarded.placed, later);
        for (_, (_, request)) in covered {
            #[cfg(feature = "mutations")]
            if self.mutated(crate::config::Mutation::ForwardedLostInSnapshot) {
                continue;
            }
            self.out
                .rejected
                .push((request, CommandRejected::LeadershipLost));
        }
    }

    /// A read the leader confirmed at `index`, above this node's commit index: it waits until
    /// this node learns `index` committed.
    pub(crate) fn await_commit_for_read(&mut self, index: LogIndex, request: RequestId) {
        self.reads_awaiting_commit
            .entry(index)
            .or_default()
            .push(request);
        let now = self.forward_clock.now;
        self.forward_clock.placed.push_back((now, index, request));
    }

    /// Notes when a request was forwarded, so it expires if the leader never answers.
    pub(crate) fn note_forwarded(&mut self, request: RequestId) {
        let now = self.forward_clock.now;
        self.forward_clock.sent.push_back((now, request));
    }

    /// On a tick: a forwarded command, read or membership change whose answer has not arrived
    /// within twice the maximum election timeout was lost on the way (or its answer was): its
    /// outcome is unknown (a read may simply be retried). A client never waits forever.
    pub(crate) fn expire_forwarded(&mut self) {
        self.forward_clock.now += 1;
        let now = self.forward_clock.now;
        let limit = APPLY_TIMEOUTS * self.config.election_timeout_max_ticks;
        while let Some(&(placed_at, index, request)) = self.forward_clock.placed.front() {
            if now - placed_at < limit {
                break;
            }
            self.forward_clock.placed.pop_front();
            // A command placed, or a read confirmed, but whose index this node never learned
            // committed (it no longer hears from a leader, or was removed without learning it):
            // the command's outcome is unknown; the read may be retried.
            if self
                .forwarded
                .placed
                .get(&index)
                .is_some_and(|(_, r)| *r == request)
            {
                self.forwarded.placed.remove(&index);
                self.out
                    .rejected
                    .push((request, CommandRejected::LeadershipLost));
            } else if let Some(waiting) = self.reads_awaiting_commit.get_mut(&index) {
                if let Some(at) = waiting.iter().position(|r| *r == request) {
                    waiting.remove(at);
                    if waiting.is_empty() {
                        self.reads_awaiting_commit.remove(&index);
                    }
                    self.out.rejected.push((request, CommandRejected::Retry));
                }
            }
        }
        let limit = ANSWER_TIMEOUTS * self.config.election_timeout_max_ticks;
        while let Some(&(sent, request)) = self.forward_clock.sent.front() {
            if self.forward_clock.now - sent < limit {
                break;
            }
            self.forward_clock.sent.pop_front();
            if self.forwarded.awaiting_leader.remove(&request).is_some() {
                self.out
                    .rejected
                    .push((request, CommandRejected::LeadershipLost));
            } else if self.forwarded_reads.remove(&request) {
                self.out.rejected.push((request, CommandRejected::Retry));
            } else if self.forwarded_changes.remove(&request).is_some() {
                let lost = Err(crate::membership::MembershipError::LeadershipLost);
                self.out.membership_changes.push((request, lost));
            }
        }
    }

    /// Commands still waiting for the leader's answer have an unknown outcome when the leader
    /// changes (it may have appended them).
    pub(crate) fn fail_forwarded_proposals(&mut self) {
        let waiting = std::mem::take(&mut self.forwarded.awaiting_leader);
        for request in waiting.into_keys() {
            self.out
                .rejected
                .push((request, CommandRejected::LeadershipLost));
        }
    }
}
