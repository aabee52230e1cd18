//! Leadership transfer (thesis §3.10). The leader stops taking new commands (they get `Retry`),
//! brings the target's log up to date, then tells it to campaign at once (`TimeoutNow`, `t_p` in
//! traces). The target's campaign is transfer-authorized, so pre-vote and leader stickiness do
//! not hold it back. If the target has not taken over within one election timeout, the transfer
//! is aborted and the leader serves commands again.

use crate::event::Event;
use crate::message::MessageBody;
use crate::node::{RaftNode, Role};
use crate::types::{LogIndex, NodeId};
use thiserror::Error;

/// A transfer under way at the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub target: NodeId,
    /// Ticks since the transfer began; the transfer is aborted at the minimum election timeout.
    pub elapsed: u64,
    /// `TimeoutNow` went out (once the target had caught up).
    pub told: bool,
}

/// Why a transfer cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    /// This node does not lead.
    #[error("only the leader can transfer leadership")]
    NotLeader,
    /// The target is not a voter.
    #[error("{0} is not a voter of this cluster")]
    UnknownTarget(NodeId),
    /// The target is this leader.
    #[error("the leader cannot transfer leadership to itself")]
    TargetIsSelf,
    /// A transfer (to the named node) is already under way.
    #[error("a transfer to {0} is already under way")]
    InProgress(NodeId),
}

impl RaftNode {
    /// Starts handing leadership to `target`. Progress shows in `Output::events`
    /// (`TransferStarted`, then `TransferAborted` or the role change itself).
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if target == self.config.id {
            return Err(TransferError::TargetIsSelf);
        }
        if !self.membership().is_voter(target) {
            return Err(TransferError::UnknownTarget(target));
        }
        let Role::Leader(leadership) = &mut self.role else {
            return Err(TransferError::NotLeader);
        };
        if let Some(t) = leadership.transfer {
            return Err(TransferError::InProgress(t.target));
        }
        self.begin_transfer(target);
        Ok(())
    }

    /// Leader: starts handing leadership to `target` (the caller checked that it may).
    pub(crate) fn begin_transfer(&mut self, target: NodeId) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        leadership.transfer_generation += 1;
        leadership.transfer = Some(Transfer {
            target,
            elapsed: 0,
            told: false,
        });
        self.out.events.push(Event::TransferStarted { target });
        self.maybe_tell_target(target);
    }

    /// Sends `TimeoutNow` once the target holds the leader's whole log; until then, catches it up.
    pub(crate) fn maybe_tell_target(&mut self, peer: NodeId) {
        let last = self.log.last_index();
        let term = self.hard.term;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(transfer) = leadership.transfer.as_mut() else {
            return;
        };
        if transfer.target != peer || transfer.told {
            return;
        }
        let caught_up = leadership
            .progress
            .get(&peer)
            .is_some_and(|p| p.match_index >= last);
        if !caught_up {
            self.send_append(peer);
            return;
        }
        transfer.told = true;
        let generation = leadership.transfer_generation;
        // From here the target may win without waiting out the followers' stickiness: a lease
        // no longer holds.
        #[cfg(feature = "mutations")]
        let mutated = self.config.mutation == Some(crate::config::Mutation::LeaseDuringTransfer);
        #[cfg(not(feature = "mutations"))]
        let mutated = false;
        if !mutated {
            leadership.reads.suspend_lease();
        }
        self.send(
            peer,
            term,
            MessageBody::TimeoutNow {
                last_log_index: last,
                transfer: generation,
            },
        );
    }

    /// The target campaigns at once if it is a follower of the sender with the sender's log,
    /// and has not heard from the sender that this transfer ended (a late `TimeoutNow`).
    pub(crate) fn handle_timeout_now(
        &mut self,
        from: NodeId,
        last_log_index: LogIndex,
        generation: u64,
    ) {
        let accepted = matches!(self.role, Role::Follower)
            && self.leader == Some(from)
            && self.transfer_current(generation)
            && !self.repairing
            && self.membership().is_voter(self.config.id)
            && self.log.last_index() >= last_log_index;
        let term = self.hard.term;
        self.send(from, term, MessageBody::TimeoutNowResponse { accepted });
        if accepted {
            self.campaign_as(Some(generation));
        }
    }

    /// Whether a vote request for a transfer of generation `transfer` may pass leader
    /// stickiness here: a leader lets through only its transfer under way to that candidate;
    /// a follower, any transfer its leader has not told it is over. A forced transfer campaign
    /// (`u64::MAX`, a test control) always passes.
    pub(crate) fn transfer_vote_authorized(&self, from: NodeId, transfer: Option<u64>) -> bool {
        let Some(generation) = transfer else {
            return false;
        };
        if generation == u64::MAX {
            return true;
        }
        match &self.role {
            Role::Leader(l) => {
                #[cfg(feature = "mutations")]
                if self.mutated(crate::config::Mutation::StaleTimeoutNow) {
                    return true;
                }
                l.transfer_generation == generation
                    && l.transfer.is_some_and(|t| t.target == from && t.told)
            }
            _ => self.transfer_current(generation),
        }
    }

    /// Whether this follower has not heard from its leader that transfer `generation` ended.
    fn transfer_current(&self, generation: u64) -> bool {
        #[cfg(feature = "mutations")]
        if self.mutated(crate::config::Mutation::StaleTimeoutNow) {
            return true;
        }
        generation >= self.transfer_seen
    }

    /// A follower heard its leader's transfer generation (in an AppendEntries).
    pub(crate) fn note_transfer_generation(&mut self, generation: u64) {
        self.transfer_seen = self.transfer_seen.max(generation);
    }

    pub(crate) fn handle_timeout_now_response(&mut self, from: NodeId, accepted: bool) {
        if !accepted {
            self.abort_transfer(from);
        }
    }

    /// Counts a tick of a transfer; aborts it after the minimum election timeout.
    pub(crate) fn tick_transfer(&mut self) {
        let limit = self.config.election_timeout_min_ticks;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(transfer) = leadership.transfer.as_mut() else {
            return;
        };
        transfer.elapsed += 1;
        if transfer.elapsed >= limit {
            let target = transfer.target;
            self.abort_transfer(target);
        }
    }

    fn abort_transfer(&mut self, target: NodeId) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if let Some(transfer) = leadership.transfer.filter(|t| t.target == target) {
            leadership.transfer = None;
            leadership.transfer_generation += 1;
            #[cfg(feature = "mutations")]
            let mutated =
                self.config.mutation == Some(crate::config::Mutation::LeaseDuringTransfer);
            #[cfg(not(feature = "mutations"))]
            let mutated = false;
            if transfer.told && !mutated {
                // A late TimeoutNow may still start the target's campaign; only a read round
                // that starts now, once a majority echoes it (and so heard that the transfer
                // ended), proves the followers stick to this leader again.
                leadership.reads.restart_lease_after_current_round();
            }
            self.out.events.push(Event::TransferAborted { target });
            if leadership.stepping_down {
                // A removed leader leaves even if no one took over: the others elect a leader.
                let term = self.hard.term;
                self.become_follower(term, None);
            }
        }
    }

    /// While a transfer is under way the leader takes no new commands.
    pub(crate) fn transferring(&self) -> bool {
        matches!(&self.role, Role::Leader(l) if l.transfer.is_some())
    }
}
