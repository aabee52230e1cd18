//! Events a user can subscribe to: what the node decided, for logs, metrics and traces.

use crate::membership::Membership;
use crate::types::{LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The externally visible roles. A pre-candidate is a follower asking for pre-votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    RoleChanged {
        role: RoleKind,
        term: Term,
    },
    TermChanged {
        term: Term,
    },
    LeaderChanged {
        leader: Option<NodeId>,
    },
    PreVoteStarted {
        proposed_term: Term,
    },
    ElectionStarted {
        term: Term,
        transfer: bool,
    },
    ElectionWon {
        term: Term,
    },
    ElectionLost {
        term: Term,
    },
    VoteGranted {
        candidate: NodeId,
        term: Term,
    },
    VoteRefused {
        candidate: NodeId,
        term: Term,
        reason: &'static str,
    },
    /// Check-quorum: the leader did not hear from a majority within an election timeout.
    LostQuorum {
        term: Term,
    },
    CommitAdvanced {
        commit: LogIndex,
    },
    /// A follower's log is behind or diverged; the leader is probing for the point where they match.
    FollowerProbing {
        follower: NodeId,
        next_index: LogIndex,
    },
    /// A follower that was probed now matches and receives entries in batches again.
    FollowerReplicating {
        follower: NodeId,
        match_index: LogIndex,
    },
    /// This node's log was behind or diverged and was repaired by the leader.
    LogTruncated {
        from: LogIndex,
    },
    /// The leader began handing leadership to `target` (new commands get `Retry` meanwhile).
    TransferStarted {
        target: NodeId,
    },
    /// The target did not take over in time (or refused); the leader serves commands again.
    TransferAborted {
        target: NodeId,
    },
    /// The configuration in effect changed: a configuration entry was appended (or installed
    /// with a snapshot), or one was overwritten and the one before it is back.
    MembershipChanged {
        index: LogIndex,
        membership: Membership,
    },
    /// The leader started catching up future voters (`address`es for the driver's transport).
    CatchUpStarted {
        nodes: BTreeMap<NodeId, String>,
    },
    /// A catch-up round began: it ends when the new voters hold `until`.
    CatchUpRound {
        round: u32,
        until: LogIndex,
    },
    /// A membership change was given up before any configuration entry was appended.
    MembershipChangeAborted {
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
        reason: String,
    },
    /// The repair is over: the log holds a leader's log up to its commit index.
    RepairFinished {
        caught_up_to: LogIndex,
    },
    /// `claimed_leader` sent an AppendEntries or a snapshot chunk for `term`, a term in which
    /// this node already knows `known_leader` leads (itself, or the leader it follows). Raft
    /// elects at most one leader per term, so the sender is misconfigured, forged, or the
    /// cluster's safety is already broken: the message was not accepted. A driver should log it
    /// loudly and stop listening to that peer.
    ConflictingLeader {
        term: Term,
        known_leader: NodeId,
        claimed_leader: NodeId,
    },
}
