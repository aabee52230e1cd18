//! Carrying out membership changes (the rules are in `membership.rs`): the leader's catch-up
//! rounds and configuration entries, forwarding a change from a follower (`m_c`/`m_cr`), keeping
//! the leader's progress map in step with the configuration, and noticing removal.

use crate::event::Event;
use crate::membership::{ChangePlan, Membership, MembershipChange, MembershipError};
use crate::message::{Message, MessageBody};
use crate::node::{RaftNode, Role};
use crate::progress::Progress;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, RequestId};
use std::collections::BTreeSet;

/// Who asked for a change, so the outcome reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Local(RequestId),
    Forwarded {
        from: NodeId,
        request: u64,
    },
    /// A new leader finishing the joint change its predecessor began.
    Inherited,
}

#[derive(Debug, Clone)]
pub(crate) struct PendingChange {
    origin: Origin,
    /// The configuration once the change is complete.
    target: Membership,
    joint: bool,
    phase: ChangePhase,
}

#[derive(Debug, Clone)]
enum ChangePhase {
    CatchUp(CatchUp),
    /// C_old,new is at `index`; C_new is appended once it commits.
    Joint {
        index: LogIndex,
    },
    /// The final configuration is at `index`; the change is done once it commits.
    Final {
        index: LogIndex,
    },
}

/// Future voters catching up in rounds (thesis §4.2.1).
#[derive(Debug, Clone)]
struct CatchUp {
    nodes: BTreeSet<NodeId>,
    round: u32,
    /// The round ends when every node holds this index (the leader's last index when it began).
    round_end: LogIndex,
    round_ticks: u64,
    /// Ticks since the nodes last acknowledged anything new.
    stalled_ticks: u64,
    /// Sum of the nodes' match indexes and snapshot offsets when last looked at.
    progress_mark: u64,
}

impl RaftNode {
    /// Asks for a membership change. The leader carries it out; another node forwards it to its
    /// leader (`m_c`). The outcome arrives in `Output::membership_changes`: the committed
    /// configuration, or why the change did not (or may not) happen.
    pub fn change_membership(&mut self, request: RequestId, change: MembershipChange) {
        if self.is_stopped().is_some() {
            self.out
                .membership_changes
                .push((request, Err(MembershipError::Retry)));
            return;
        }
        if matches!(self.role, Role::Leader(_)) {
            self.start_change(Origin::Local(request), change);
            return;
        }
        match self.leader.filter(|l| *l != self.config.id) {
            Some(leader) => {
                self.forwarded_changes.insert(request, leader);
                self.note_forwarded(request);
                let term = self.hard.term;
                let body = MessageBody::ChangeMembership {
                    request: request.0,
                    change,
                };
                self.send(leader, term, body);
            }
            None => self
                .out
                .membership_changes
                .push((request, Err(MembershipError::Retry))),
        }
    }

    pub(crate) fn handle_change_request(
        &mut self,
        from: NodeId,
        request: u64,
        change: MembershipChange,
    ) {
        let origin = Origin::Forwarded { from, request };
        let duplicate = matches!(&self.role, Role::Leader(l)
            if l.change.as_ref().is_some_and(|c| c.origin == origin));
        if !duplicate {
            self.start_change(origin, change);
        }
    }

    pub(crate) fn handle_change_response(
        &mut self,
        request: u64,
        result: Result<Membership, MembershipError>,
    ) {
        let request = RequestId(request);
        if self.forwarded_changes.remove(&request).is_some() {
            self.out.membership_changes.push((request, result));
        }
    }

    /// The leader changed: forwarded changes may or may not have happened.
    pub(crate) fn fail_forwarded_changes(&mut self) {
        for (request, _) in std::mem::take(&mut self.forwarded_changes) {
            self.out
                .membership_changes
                .push((request, Err(MembershipError::LeadershipLost)));
        }
    }

    fn finish_change(&mut self, origin: Origin, result: Result<Membership, MembershipError>) {
        match origin {
            Origin::Local(request) => self.out.membership_changes.push((request, result)),
            Origin::Forwarded { from, request } => {
                let term = self.hard.term;
                let body = MessageBody::ChangeMembershipResponse { request, result };
                self.send(from, term, body);
            }
            Origin::Inherited => {}
        }
    }

    fn start_change(&mut self, origin: Origin, change: MembershipChange) {
        let plan = self.check_change_allowed().and_then(|()| {
            let current = self.membership();
            change.plan(current)
        });
        let (target, catch_up, joint) = match plan {
            Err(error) => return self.finish_change(origin, Err(error)),
            Ok(ChangePlan::AlreadyDone) => {
                let current = self.membership().clone();
                return self.finish_change(origin, Ok(current));
            }
            Ok(ChangePlan::Change {
                target,
                catch_up,
                joint,
            }) => (target, catch_up, joint),
        };
        if catch_up.is_empty() {
            self.begin_configuration(origin, target, joint);
            return;
        }
        let last = self.log.last_index();
        let nodes = catch_up
            .iter()
            .map(|n| (*n, target.addresses.get(n).cloned().unwrap_or_default()))
            .collect();
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        leadership.change = Some(PendingChange {
            origin,
            target,
            joint,
            phase: ChangePhase::CatchUp(CatchUp {
                nodes: catch_up.clone(),
                round: 1,
                round_end: last,
                round_ticks: 0,
                stalled_ticks: 0,
                progress_mark: 0,
            }),
        });
        self.out.events.push(Event::CatchUpStarted { nodes });
        self.out.events.push(Event::CatchUpRound {
            round: 1,
            until: last,
        });
        self.reconcile_progress();
        for node in catch_up {
            self.send_append(node);
        }
        self.check_catch_up();
    }

    /// One change at a time, by a leader that committed an entry of its term and is not handing
    /// leadership over.
    fn check_change_allowed(&self) -> Result<(), MembershipError> {
        let Role::Leader(leadership) = &self.role else {
            return Err(MembershipError::Retry);
        };
        if leadership.stepping_down || leadership.transfer.is_some() {
            return Err(MembershipError::Retry);
        }
        if leadership.change.is_some() || self.configs.latest().0 > self.commit {
            return Err(MembershipError::InProgress);
        }
        if self.commit < leadership.term_start {
            return Err(MembershipError::Retry);
        }
        Ok(())
    }

    /// Starts a change's configuration entry, unless the new configuration could reach no
    /// majority without nodes that are repairing lost data (they refuse votes until repaired,
    /// so such a configuration could be left without any electable leader).
    fn begin_configuration(&mut self, origin: Origin, target: Membership, joint: bool) {
        let mut needed = target.clone();
        if joint {
            needed.outgoing = self.membership().voters.clone();
        }
        let me = self.config.id;
        let healthy = |v: NodeId| match &self.role {
            Role::Leader(l) => v == me || l.progress.get(&v).is_some_and(|p| !p.repairing),
            _ => false,
        };
        if !needed.has_quorum(healthy) {
            self.out.events.push(Event::MembershipChangeAborted {
                reason: "no majority without the nodes repairing lost data".into(),
            });
            return self.finish_change(origin, Err(MembershipError::Retry));
        }
        self.append_configuration(origin, target, joint);
    }

    /// Appends the next configuration of a change: C_old,new for a joint change, else the
    /// target itself.
    fn append_configuration(&mut self, origin: Origin, target: Membership, joint: bool) {
        let current = self.membership().clone();
        let (index, term) = (self.log.last_index().next(), self.hard.term);
        let entry_membership = if joint {
            let mut addresses = current.addresses.clone();
            addresses.extend(target.addresses.clone());
            Membership {
                voters: target.voters.clone(),
                outgoing: current.voters.clone(),
                learners: target.learners.clone(),
                addresses,
            }
        } else {
            target.clone()
        };
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        leadership.change = Some(PendingChange {
            origin,
            target,
            joint,
            phase: if joint {
                ChangePhase::Joint { index }
            } else {
                ChangePhase::Final { index }
            },
        });
        leadership.append_dirty = true;
        self.append_entry(Entry {
            term,
            index,
            payload: EntryPayload::Membership(entry_membership),
        });
        self.maybe_commit();
    }

    /// A new leader whose log ends in C_old,new finishes the change: C_new follows once the
    /// joint configuration commits.
    pub(crate) fn resume_joint_change(&mut self) {
        let (index, latest) = self.configs.latest();
        if !latest.is_joint() {
            return;
        }
        let mut target = latest.clone();
        for gone in target.outgoing.difference(&latest.voters) {
            target.addresses.remove(gone);
        }
        target.outgoing.clear();
        if let Role::Leader(leadership) = &mut self.role {
            leadership.change = Some(PendingChange {
                origin: Origin::Inherited,
                target,
                joint: true,
                phase: ChangePhase::Joint { index },
            });
        }
    }

    /// The leader steps down: a change that appended nothing yet simply did not happen; one
    /// whose entry is in the log may still commit under the next leader.
    pub(crate) fn abandon_change(&mut self) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        leadership.stepping_down = false;
        let Some(change) = leadership.change.take() else {
            return;
        };
        let error = match change.phase {
            ChangePhase::CatchUp(_) => MembershipError::Retry,
            ChangePhase::Joint { .. } | ChangePhase::Final { .. } => {
                MembershipError::LeadershipLost
            }
        };
        self.finish_change(change.origin, Err(error));
    }

    /// Leader, on a tick: counts the catch-up round and gives up on nodes that stalled.
    pub(crate) fn tick_catch_up(&mut self) {
        let stall_limit = self.config.catch_up_stall_ticks;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(ChangePhase::CatchUp(catch_up)) = leadership.change.as_mut().map(|c| &mut c.phase)
        else {
            return;
        };
        catch_up.round_ticks += 1;
        catch_up.stalled_ticks += 1;
        if catch_up.stalled_ticks >= stall_limit {
            let reason = format!("acknowledged nothing for {stall_limit} ticks");
            self.abort_catch_up(reason);
        }
    }

    /// Leader, after a follower acknowledged something: ends the catch-up round if the new
    /// voters reached its end, then appends the configuration, starts another round, or aborts.
    pub(crate) fn check_catch_up(&mut self) {
        let last = self.log.last_index();
        let (round_timeout, max_rounds) = (
            self.config.election_timeout_min_ticks,
            self.config.catch_up_max_rounds,
        );
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let progress = &leadership.progress;
        let Some(ChangePhase::CatchUp(catch_up)) = leadership.change.as_mut().map(|c| &mut c.phase)
        else {
            return;
        };
        let matched = |n: &NodeId| progress.get(n).map_or(LogIndex(0), |p| p.match_index);
        let mark = catch_up
            .nodes
            .iter()
            .map(|n| matched(n).0 + progress.get(n).map_or(0, |p| p.snapshot_offset))
            .sum();
        if mark > catch_up.progress_mark {
            catch_up.progress_mark = mark;
            catch_up.stalled_ticks = 0;
        }
        let reached = catch_up.nodes.iter().map(matched).min().unwrap_or(last);
        if reached < catch_up.round_end {
            return;
        }
        if catch_up.round_ticks < round_timeout || reached >= last {
            // The last round was short: what is left is less than an election timeout's worth.
            let Some(change) = leadership.change.take() else {
                return;
            };
            self.begin_configuration(change.origin, change.target, change.joint);
        } else if catch_up.round >= max_rounds {
            let reason = format!("still behind after {max_rounds} rounds");
            self.abort_catch_up(reason);
        } else {
            catch_up.round += 1;
            catch_up.round_end = last;
            catch_up.round_ticks = 0;
            let event = Event::CatchUpRound {
                round: catch_up.round,
                until: last,
            };
            self.out.events.push(event);
        }
    }

    fn abort_catch_up(&mut self, reason: String) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if !matches!(
            leadership.change.as_ref().map(|c| &c.phase),
            Some(ChangePhase::CatchUp(_))
        ) {
            return;
        }
        let Some(change) = leadership.change.take() else {
            return;
        };
        let ChangePhase::CatchUp(catch_up) = &change.phase else {
            return;
        };
        let node = catch_up
            .nodes
            .iter()
            .copied()
            .min_by_key(|n| leadership.progress.get(n).map(|p| p.match_index))
            .unwrap_or(self.config.id);
        self.out.events.push(Event::MembershipChangeAborted {
            reason: format!("{node} {reason}"),
        });
        self.finish_change(
            change.origin,
            Err(MembershipError::CatchUpFailed { node, reason }),
        );
        self.reconcile_progress();
    }

    /// The configuration in effect changed (appended, overwritten or installed).
    pub(crate) fn membership_changed(&mut self) {
        let (index, membership) = self.configs.latest();
        let membership = membership.clone();
        if membership.contains(self.config.id) {
            self.was_member = true;
        }
        self.out
            .events
            .push(Event::MembershipChanged { index, membership });
        self.reconcile_progress();
        self.membership_committed();
        self.confirm_read_rounds();
        // The commit rule counts in the new configuration too.
        self.maybe_commit();
    }

    /// The commit index moved (or the configuration changed): a leader moves its change to the
    /// next phase; a node left out of the committed configuration is removed; a leader left out
    /// of it hands leadership over.
    pub(crate) fn membership_committed(&mut self) {
        let me = self.config.id;
        let commit = self.commit;
        if self.was_member
            && !self.removed
            && !self.configs.at(commit).contains(me)
            && !self.membership().contains(me)
        {
            self.removed = true;
            self.out.events.push(Event::RemovedFromCluster);
            // No leader will send it entries any more: the commands and reads its clients wait
            // for never come. (A forwarded membership change is still answered by the leader,
            // or expires: it is often the very change that removed this node.)
            self.fail_forwarded_reads();
            self.fail_reads_awaiting_commit();
            self.fail_forwarded_proposals();
            self.fail_forwarded_placed_through(crate::message::MAX_INDEX);
        }
        #[cfg(feature = "mutations")]
        let rejoins = !self.mutated(crate::config::Mutation::RemovedForever);
        #[cfg(not(feature = "mutations"))]
        let rejoins = true;
        if rejoins && self.removed && self.membership().contains(me) {
            // Added back after its removal: it takes part again.
            self.removed = false;
            self.out.events.push(Event::RejoinedCluster);
        }
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        match leadership.change.as_ref().map(|c| &c.phase) {
            Some(ChangePhase::Joint { index }) if commit >= *index => {
                if let Some(change) = leadership.change.take() {
                    self.append_configuration(change.origin, change.target, false);
                }
            }
            Some(ChangePhase::Final { index }) if commit >= *index => {
                if let Some(change) = leadership.change.take() {
                    self.finish_change(change.origin, Ok(change.target));
                }
            }
            _ => {}
        }
        self.reconcile_progress();
        let settled = self.configs.latest().0 <= self.commit;
        if settled && !self.membership().is_voter(me) {
            self.hand_over_leadership();
        }
    }

    /// Keeps a progress entry for every member of the configuration in effect and of the
    /// committed one (so nodes being removed still learn of it), and for nodes catching up.
    /// A new entry probes from the last entry, so the node hears of the log at once.
    pub(crate) fn reconcile_progress(&mut self) {
        let next = self.log.last_index().max(LogIndex(1));
        self.reconcile_progress_from(next);
    }

    /// The same, with new entries starting at `next` (a new leader: its term-start entry).
    pub(crate) fn reconcile_progress_from(&mut self, next: LogIndex) {
        let me = self.config.id;
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        let mut wanted = self.membership().members();
        wanted.extend(self.configs.at(self.commit).members());
        if let Some(ChangePhase::CatchUp(c)) = leadership.change.as_ref().map(|c| &c.phase) {
            wanted.extend(c.nodes.iter().copied());
        }
        wanted.remove(&me);
        // A last heartbeat tells a removed node the commit index, so it learns its removal.
        let term = self.hard.term;
        let farewells: Vec<(NodeId, MessageBody)> = leadership
            .progress
            .iter()
            .filter(|(id, _)| !wanted.contains(id))
            // What it was sent so far, which includes the entry that removed it.
            .map(|(id, p)| (*id, self.append_body(*id, p.next_index.prev(), Vec::new())))
            .collect();
        for (node, body) in farewells {
            self.send(node, term, body);
        }
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        leadership.progress.retain(|id, _| wanted.contains(id));
        for id in wanted {
            leadership
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
    }

    /// A leader that is not a voter of the committed configuration hands leadership to the most
    /// up-to-date voter (a transfer), and steps down when that ends either way.
    fn hand_over_leadership(&mut self) {
        let me = self.config.id;
        let voters = self.membership().voters.clone();
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if leadership.stepping_down {
            return;
        }
        leadership.stepping_down = true;
        let target = voters
            .into_iter()
            .filter(|v| *v != me)
            // Ties go to the lowest id, so the choice is easy to predict.
            .max_by_key(|v| {
                let matched = leadership.progress.get(v).map(|p| p.match_index);
                (matched, std::cmp::Reverse(*v))
            });
        match target {
            Some(target) => self.begin_transfer(target),
            None => {
                let term = self.hard.term;
                self.become_follower(term, None);
            }
        }
    }

    /// A voter of the configuration in effect campaigns; so does a voter whose own removal is
    /// not known committed yet. It may hold the only copy of that configuration entry, which the
    /// remaining voters need from it: leading without counting itself (thesis §4.2.2), it
    /// replicates the entry, and hands over once it commits. Learners, joining nodes and nodes
    /// whose removal committed never campaign; nor does a node repairing lost data or waiting
    /// for its driver to install a snapshot.
    pub(crate) fn may_campaign(&self) -> bool {
        if self.repairing || self.pending_install.is_some() {
            return false;
        }
        let me = self.config.id;
        let (index, latest) = self.configs.latest();
        latest.is_voter(me) || (index > self.commit && self.configs.at(index.prev()).is_voter(me))
    }

    /// Whether a message from its sender is acceptable. Leaders (and candidates) of a
    /// configuration this node has not seen yet must get through (thesis §4.1: servers accept
    /// requests from outside their configuration); other messages need a sender this node knows
    /// (a member of a configuration it knows, or a node its leadership is catching up).
    pub(crate) fn may_hear_from(&self, msg: &Message) -> bool {
        let from_leader_or_candidate = matches!(
            msg.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow { .. }
                | MessageBody::PreVoteRequest { .. }
                | MessageBody::VoteRequest { .. }
        );
        from_leader_or_candidate
            || self.configs.mentions(msg.from)
            || matches!(&self.role, Role::Leader(l) if l.progress.contains_key(&msg.from))
    }
}
