//! Events a user can subscribe to: what the node decided, for logs, metrics and traces.

use crate::membership::Membership;
use crate::types::{LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The externally visible roles. A pre-candidate is a follower asking for pre-votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleKind {
    /// Follows a leader (or waits for one): answers votes and appends.
    Follower,
    /// Asks for pre-votes before campaigning (thesis §9.6), without raising its term.
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Leads the term: accepts commands and replicates the log.
    Leader,
}

/// What the node decided, reported in [`Output::events`](crate::Output::events) for logs,
/// metrics and traces. Events are informational: a driver that ignores them stays correct
/// (except [`Event::ConflictingLeader`], which deserves an operator's attention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// This node took a new role.
    RoleChanged {
        /// The new role.
        role: RoleKind,
        /// The term it took the role in.
        term: Term,
    },
    /// This node's current term rose (a newer term seen, or its own campaign).
    TermChanged {
        /// The new current term.
        term: Term,
    },
    /// The leader this node knows changed (`None`: no leader known, e.g. during an election).
    LeaderChanged {
        /// The leader now known, if any.
        leader: Option<NodeId>,
    },
    /// This node asks for pre-votes for the term it would campaign in.
    PreVoteStarted {
        /// The term the campaign would use (current term + 1); the current term is unchanged.
        proposed_term: Term,
    },
    /// This node campaigns in a new term.
    ElectionStarted {
        /// The campaign's term.
        term: Term,
        /// The campaign was asked for by a leadership transfer (`TimeoutNow`), skipping pre-vote.
        transfer: bool,
    },
    /// A majority voted for this node: it leads `term`.
    ElectionWon {
        /// The term won.
        term: Term,
    },
    /// A majority refused (or a newer term or leader appeared): the campaign is over.
    ElectionLost {
        /// The term of the lost campaign.
        term: Term,
    },
    /// This node voted for `candidate` (the vote is sent once it is durable).
    VoteGranted {
        /// Who got the vote.
        candidate: NodeId,
        /// The term voted in.
        term: Term,
    },
    /// This node refused a vote or pre-vote.
    VoteRefused {
        /// Who asked.
        candidate: NodeId,
        /// The term asked for.
        term: Term,
        /// Why, in words (e.g. log behind, already voted, leader still alive).
        reason: &'static str,
    },
    /// Check-quorum: the leader did not hear from a majority within an election timeout.
    LostQuorum {
        /// The term the leader stepped down in.
        term: Term,
    },
    /// The commit index advanced.
    CommitAdvanced {
        /// The new commit index.
        commit: LogIndex,
    },
    /// A follower's log is behind or diverged; the leader is probing for the point where they match.
    FollowerProbing {
        /// The follower probed.
        follower: NodeId,
        /// The index the leader tries next.
        next_index: LogIndex,
    },
    /// A follower that was probed now matches and receives entries in batches again.
    FollowerReplicating {
        /// The follower.
        follower: NodeId,
        /// The highest index known to match the leader's log.
        match_index: LogIndex,
    },
    /// This node's log was behind or diverged and was repaired by the leader.
    LogTruncated {
        /// The first index removed.
        from: LogIndex,
    },
    /// The leader began handing leadership to `target` (new commands get `Retry` meanwhile).
    TransferStarted {
        /// The node meant to take over.
        target: NodeId,
    },
    /// The target did not take over in time (or refused); the leader serves commands again.
    TransferAborted {
        /// The node that was meant to take over.
        target: NodeId,
    },
    /// The configuration in effect changed: a configuration entry was appended (or installed
    /// with a snapshot), or one was overwritten and the one before it is back.
    MembershipChanged {
        /// The index of the configuration's entry.
        index: LogIndex,
        /// The configuration now in effect.
        membership: Membership,
    },
    /// The leader started catching up future voters (`address`es for the driver's transport).
    CatchUpStarted {
        /// Each node being caught up, with the address given for it.
        nodes: BTreeMap<NodeId, String>,
    },
    /// A catch-up round began: it ends when the new voters hold `until`.
    CatchUpRound {
        /// The round's number, from 1 (at most `Config::catch_up_max_rounds`).
        round: u32,
        /// The leader's last index when the round began.
        until: LogIndex,
    },
    /// A membership change was given up before any configuration entry was appended.
    MembershipChangeAborted {
        /// Why, in words.
        reason: String,
    },
    /// A committed configuration no longer includes this node: it will not campaign again and
    /// may be shut down.
    RemovedFromCluster,
    /// A configuration that includes this node again was appended after its removal: it takes
    /// part again (a removed node added back).
    RejoinedCluster,
    /// The storage lost durable data: the node repairs itself before it votes or counts
    /// towards a majority again (see `RaftNode::is_repairing`).
    RepairStarted {
        /// What the storage reported lost.
        reason: String,
    },
    /// The repair is over: the log holds a leader's log up to its commit index.
    RepairFinished {
        /// The leader's commit index this node's log now holds.
        caught_up_to: LogIndex,
    },
    /// `claimed_leader` sent an AppendEntries or a snapshot chunk for `term`, a term in which
    /// this node already knows `known_leader` leads (itself, or the leader it follows). Raft
    /// elects at most one leader per term, so the sender is misconfigured, forged, or the
    /// cluster's safety is already broken: the message was not accepted. A driver should log it
    /// loudly and stop listening to that peer.
    ConflictingLeader {
        /// The term with two claimed leaders.
        term: Term,
        /// The leader this node knows for `term`.
        known_leader: NodeId,
        /// The sender that claimed to lead `term` too.
        claimed_leader: NodeId,
    },
}
