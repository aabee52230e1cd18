//! Cluster membership: who votes, who only receives the log, and how that changes (thesis ch. 4).
//!
//! A configuration is a log entry (`EntryPayload::Membership`). It takes effect on a node as soon
//! as the node appends it, and is reverted if a new leader overwrites it. Changes go one at a
//! time, through the leader:
//! - a learner is added at once (it does not vote, so no majority changes);
//! - a new voter first catches up as a non-member, in rounds (each round replicates the leader's
//!   log as it was when the round began; a round shorter than an election timeout ends the
//!   catch-up, too many rounds or a round without progress abort it), then one entry adds it;
//! - removing one member is one entry;
//! - changing several voters at once goes through joint consensus: C_old,new (decisions need a
//!   majority of both sets), then C_new once that commits.
//!
//! A leader that removes itself keeps leading until C_new commits (without counting itself),
//! then hands leadership to the most up-to-date remaining voter and steps down.

use crate::quorum;
use crate::types::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// One configuration of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters (C_new during a joint change).
    pub voters: BTreeSet<NodeId>,
    /// During a joint change, the previous voters (C_old); empty otherwise. Elections and commits
    /// then need a majority of both sets.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count towards commits.
    pub learners: BTreeSet<NodeId>,
    /// The driver's address of each member (raftkv: `host:port`); the core only carries it.
    pub addresses: BTreeMap<NodeId, String>,
}

impl Membership {
    /// A configuration of `voters` only, without addresses.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// A joint configuration (C_old,new): decisions need majorities of both voter sets.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Votes in this configuration (in C_new or, during a joint change, in C_old).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// A voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every voter of either set, in id order.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.outgoing).copied().collect()
    }

    /// Every member: voters of either set and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.all_voters();
        all.extend(self.learners.iter().copied());
        all
    }

    fn voter_sets(&self) -> impl Iterator<Item = &BTreeSet<NodeId>> {
        std::iter::once(&self.voters).chain(Some(&self.outgoing).filter(|o| !o.is_empty()))
    }

    /// Whether `nodes` include a majority of the voters (of both sets when joint).
    pub fn is_quorum(&self, nodes: &BTreeSet<NodeId>) -> bool {
        self.has_quorum(|n| nodes.contains(&n))
    }

    /// Whether the nodes for which `yes` holds form a majority (of both sets when joint).
    pub(crate) fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        !self.voters.is_empty() && self.voter_sets().all(|set| quorum::has_majority(set, &yes))
    }

    /// The highest value a majority has reached (of both sets when joint): the commit index given
    /// match indexes, or the confirmed read round given echoes. `None` without voters.
    pub(crate) fn quorum_reached<T: Ord + Copy>(&self, reached: impl Fn(NodeId) -> T) -> Option<T> {
        if self.voters.is_empty() {
            return None;
        }
        self.voter_sets()
            .map(|set| quorum::majority_reached(set, &reached))
            .min()
    }

    /// An election's outcome so far: `Some(true)` won, `Some(false)` lost, `None` undecided.
    pub(crate) fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> Option<bool> {
        if self.has_quorum(|v| votes.get(&v) == Some(&true)) {
            Some(true)
        } else if self.voters.is_empty()
            || self
                .voter_sets()
                .any(|set| quorum::majority_impossible(set, votes))
        {
            Some(false)
        } else {
            None
        }
    }
}

/// A change asked of the leader (`m_c` in traces when a follower forwards it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a non-voting member; it starts receiving the log at once.
    AddLearner {
        /// The new member.
        node: NodeId,
        /// Where to reach it, for the driver's transport.
        address: String,
    },
    /// Adds a voter (or promotes a learner) after it caught up.
    AddVoter {
        /// The new voter.
        node: NodeId,
        /// Where to reach it, for the driver's transport.
        address: String,
    },
    /// Removes a voter or a learner (the leader itself included).
    Remove {
        /// The member to remove.
        node: NodeId,
    },
    /// Changes several voters at once by joint consensus: `add` become voters (after catching
    /// up), `remove` leave the cluster.
    Joint {
        /// New voters, with their addresses.
        add: BTreeMap<NodeId, String>,
        /// Members to remove.
        remove: BTreeSet<NodeId>,
    },
}

impl MembershipChange {
    /// The trace's `op` field.
    pub fn op(&self) -> &'static str {
        match self {
            MembershipChange::AddLearner { .. } => "LEARNER",
            MembershipChange::AddVoter { .. } => "ADD",
            MembershipChange::Remove { .. } => "REMOVE",
            MembershipChange::Joint { .. } => "JOINT",
        }
    }

    /// The nodes it concerns (the trace's `n` field).
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            MembershipChange::AddLearner { node, .. }
            | MembershipChange::AddVoter { node, .. }
            | MembershipChange::Remove { node } => vec![*node],
            MembershipChange::Joint { add, remove } => {
                add.keys().chain(remove.iter()).copied().collect()
            }
        }
    }

    /// What the leader does for this change, starting from `current`.
    pub(crate) fn plan(&self, current: &Membership) -> Result<ChangePlan, MembershipError> {
        let mut target = current.clone();
        let mut catch_up = BTreeSet::new();
        let mut joint = false;
        match self {
            MembershipChange::AddLearner { node, address } => {
                if current.contains(*node) {
                    return Ok(ChangePlan::AlreadyDone);
                }
                target.learners.insert(*node);
                target.addresses.insert(*node, address.clone());
            }
            MembershipChange::AddVoter { node, address } => {
                if current.voters.contains(node) {
                    return Ok(ChangePlan::AlreadyDone);
                }
                target.learners.remove(node);
                target.voters.insert(*node);
                target.addresses.insert(*node, address.clone());
                catch_up.insert(*node);
            }
            MembershipChange::Remove { node } => {
                if !current.contains(*node) {
                    return Ok(ChangePlan::AlreadyDone);
                }
                target.voters.remove(node);
                target.learners.remove(node);
                target.addresses.remove(node);
            }
            MembershipChange::Joint { add, remove } => {
                if let Some(node) = add.keys().find(|n| remove.contains(n)) {
                    return Err(MembershipError::Invalid(format!(
                        "{node} is both added and removed"
                    )));
                }
                for (node, address) in add {
                    if !current.voters.contains(node) {
                        catch_up.insert(*node);
                    }
                    target.learners.remove(node);
                    target.voters.insert(*node);
                    target.addresses.insert(*node, address.clone());
                }
                for node in remove {
                    target.voters.remove(node);
                    target.learners.remove(node);
                    target.addresses.remove(node);
                }
                if target == *current {
                    return Ok(ChangePlan::AlreadyDone);
                }
                joint = target.voters != current.voters;
            }
        }
        if target.voters.is_empty() {
            return Err(MembershipError::Invalid(
                "the change would leave no voter".to_string(),
            ));
        }
        Ok(ChangePlan::Change {
            target,
            catch_up,
            joint,
        })
    }
}

/// How the leader carries out a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChangePlan {
    /// Nothing to do: the change is already in effect (so a repeated request succeeds).
    AlreadyDone,
    Change {
        target: Membership,
        /// Nodes that must catch up before they may vote.
        catch_up: BTreeSet<NodeId>,
        /// Go through C_old,new (several voters change at once).
        joint: bool,
    },
}

/// Why a membership change did not (or may not) happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum MembershipError {
    /// No leader is known, or the leader has not committed an entry of its term yet: retry.
    #[error("no leader is ready to change the membership; retry later")]
    Retry,
    /// Another change is under way (one at a time).
    #[error("another membership change is under way")]
    InProgress,
    /// The new voters did not catch up: nothing was changed.
    #[error("{node} did not catch up: {reason}")]
    CatchUpFailed {
        /// The first new voter that did not catch up.
        node: NodeId,
        /// Why (stalled, too many rounds), in words.
        reason: String,
    },
    /// The change makes no sense for the configuration in effect (e.g. removing a non-member,
    /// leaving no voter).
    #[error("invalid membership change: {0}")]
    Invalid(String),
    /// The configuration entry was appended but leadership was lost before it committed: it may
    /// or may not take effect; read the membership before retrying.
    #[error("leadership lost before the change committed; outcome unknown")]
    LeadershipLost,
}

/// The configurations a node knows: the one its log starts with (from its snapshot, or the
/// initial configuration) and every configuration entry in its log, so that truncating the log
/// reverts to the configuration before.
#[derive(Debug, Clone)]
pub(crate) struct Configurations {
    base: (LogIndex, Membership),
    in_log: Vec<(LogIndex, Membership)>,
}

impl Configurations {
    pub fn new(base_index: LogIndex, base: Membership) -> Configurations {
        Configurations {
            base: (base_index, base),
            in_log: Vec::new(),
        }
    }

    /// The configuration in effect: the last one in the log.
    pub fn latest(&self) -> (LogIndex, &Membership) {
        let (index, m) = self.in_log.last().unwrap_or(&self.base);
        (*index, m)
    }

    /// The configuration in effect at `index` (the last one at or before it).
    pub fn at(&self, index: LogIndex) -> &Membership {
        self.in_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base.1, |(_, m)| m)
    }

    pub fn appended(&mut self, index: LogIndex, membership: Membership) {
        self.in_log.retain(|(i, _)| *i < index);
        self.in_log.push((index, membership));
    }

    /// Entries from `from` on were removed. Returns whether the configuration in effect changed.
    pub fn truncated(&mut self, from: LogIndex) -> bool {
        let before = self.in_log.len();
        self.in_log.retain(|(i, _)| *i < from);
        self.in_log.len() != before
    }

    /// The log now starts after `through`: the configuration at `through` becomes the base.
    pub fn compacted(&mut self, through: LogIndex) {
        if through <= self.base.0 {
            return;
        }
        let base = self.at(through).clone();
        self.in_log.retain(|(i, _)| *i > through);
        self.base = (through, base);
    }

    /// A snapshot through `through` with `membership` replaced the log up to there; entries
    /// after it stay only if `keep_suffix`.
    pub fn installed(&mut self, through: LogIndex, membership: Membership, keep_suffix: bool) {
        if keep_suffix {
            self.in_log.retain(|(i, _)| *i > through);
        } else {
            self.in_log.clear();
        }
        self.base = (through, membership);
    }

    /// Whether any known configuration names `id`.
    pub fn mentions(&self, id: NodeId) -> bool {
        std::iter::once(&self.base)
            .chain(self.in_log.iter())
            .any(|(_, m)| m.contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn joint_configuration_needs_both_majorities() {
        let m = Membership {
            voters: ids(&[4, 5, 6]),
            outgoing: ids(&[1, 2, 3]),
            ..Membership::default()
        };
        assert!(!m.has_quorum(|v| [1, 2, 3, 4].contains(&v.0)));
        assert!(m.has_quorum(|v| [1, 2, 4, 5].contains(&v.0)));
        let matches = |v: NodeId| LogIndex([0, 9, 9, 2, 7, 7, 1][v.0 as usize]);
        assert_eq!(m.quorum_reached(matches), Some(LogIndex(7)));
        let votes = BTreeMap::from([(NodeId(1), false), (NodeId(2), false)]);
        assert_eq!(m.vote_result(&votes), Some(false));
    }

    #[test]
    fn plans_are_idempotent_and_refuse_an_empty_cluster() {
        let m = Membership::with_voters([NodeId(1)]);
        let add = MembershipChange::AddVoter {
            node: NodeId(1),
            address: String::new(),
        };
        assert_eq!(add.plan(&m), Ok(ChangePlan::AlreadyDone));
        let remove = MembershipChange::Remove { node: NodeId(1) };
        assert!(matches!(remove.plan(&m), Err(MembershipError::Invalid(_))));
    }

    #[test]
    fn truncation_reverts_and_compaction_keeps_the_configuration_at_the_cut() {
        let mut c = Configurations::new(LogIndex(0), Membership::with_voters([NodeId(1)]));
        c.appended(LogIndex(3), Membership::with_voters([NodeId(1), NodeId(2)]));
        c.appended(LogIndex(6), Membership::with_voters([NodeId(2)]));
        assert!(c.truncated(LogIndex(5)));
        assert_eq!(c.latest().0, LogIndex(3));
        c.compacted(LogIndex(4));
        assert_eq!(
            c.latest(),
            (
                LogIndex(4),
                &Membership::with_voters([NodeId(1), NodeId(2)])
            )
        );
        assert!(!c.mentions(NodeId(3)));
    }
}
