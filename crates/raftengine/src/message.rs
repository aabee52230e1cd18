//! Messages between nodes: plain data with serde derives, no behaviour.

use crate::membership::{Membership, MembershipChange, MembershipError};
use crate::storage::LogId;
use crate::types::{Entry, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

/// A message from one node to another. `term` is the sender's term, except in a pre-vote request
/// (the term the candidate proposes: its current term + 1) and a granted pre-vote response (the
/// proposed term it answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient; a node refuses a message addressed to another
    /// ([`StepError::WrongRecipient`](crate::StepError::WrongRecipient)).
    pub to: NodeId,
    /// The sender's term (see the type's description for the pre-vote exceptions).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message, one per Raft RPC request or answer (plus forwarding and reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Thesis §9.6: "would you vote for me?", asked without changing anyone's term.
    PreVoteRequest {
        /// The index of the candidate's last entry.
        last_log_index: LogIndex,
        /// The term of the candidate's last entry.
        last_log_term: Term,
        /// Part of a leadership transfer: skips the "a leader is alive" refusal.
        transfer: bool,
    },
    /// A pre-vote answer; the message's term is the proposed term when granted.
    PreVoteResponse {
        /// Whether the voter would vote for the candidate.
        granted: bool,
    },
    /// RequestVote.
    VoteRequest {
        /// The index of the candidate's last entry.
        last_log_index: LogIndex,
        /// The term of the candidate's last entry.
        last_log_term: Term,
        /// A campaign of a leadership transfer: the generation of the `TimeoutNow` that started
        /// it. Voters let it past leader stickiness only if they have not heard from that leader
        /// that the transfer ended (a later generation).
        transfer: Option<u64>,
    },
    /// The answer to a `VoteRequest`.
    VoteResponse {
        /// Whether the vote was granted (it is durable once the answer is sent).
        granted: bool,
    },
    /// AppendEntries; a heartbeat when `entries` is empty.
    AppendEntries {
        /// The index of the entry just before `entries` (0 for the log's start).
        prev_log_index: LogIndex,
        /// The term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// Entries to append after `prev_log_index`, in order.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// The leader's read round when it sent this (0 before any linearizable read). An answer
        /// echoes it; a majority of echoes of round `r` proves the sender still led after every
        /// read registered before round `r` started (thesis §6.4).
        read_round: u64,
        /// The leader's transfer generation: odd while a leadership transfer is under way, even
        /// otherwise; it grows by one when a transfer starts and when it ends.
        transfer: u64,
        /// The receiver's repair epoch as far as the leader knows (see `LogWrite::Repair`): a
        /// repairing node ends its repair only once its leader knows its current epoch.
        repair_epoch: u64,
    },
    /// The answer to an `AppendEntries`.
    AppendEntriesResponse {
        /// Whether the follower's log matched at `prev_log_index` and the entries were appended.
        success: bool,
        /// On success: the index up to which the follower's log matches the leader's
        /// (`prev_log_index` + number of entries of the request).
        match_index: LogIndex,
        /// On failure: the leader should retry from `reject_hint + 1` (or lower).
        reject_hint: LogIndex,
        /// The follower's last log index after handling the request.
        last_log_index: LogIndex,
        /// The `prev_log_index` of the request this answers, so a late answer to an old request
        /// is recognized as stale.
        prev_log_index: LogIndex,
        /// The `read_round` of the request this answers.
        read_round: u64,
        /// The follower lost durable data and is being repaired: the leader replicates to it
        /// but counts it towards no commit and no read round.
        repairing: bool,
        /// The follower's repair epoch: answers of an older epoch than the leader has seen were
        /// sent before a loss, and are ignored.
        repair_epoch: u64,
    },
    /// A chunk of the leader's snapshot, for a follower whose next entry is compacted (`sn`).
    InstallSnapshot {
        /// The last index and term the snapshot covers.
        last_included: LogId,
        /// The configuration in effect at `last_included`.
        membership: Membership,
        /// Byte offset of `data` within the snapshot.
        offset: u64,
        #[serde(with = "serde_bytes")]
        /// The chunk's bytes.
        data: Vec<u8>,
        /// This chunk is the snapshot's last.
        done: bool,
    },
    /// The follower's answer (`snr`): it has the first `next_offset` bytes; `done` once installed.
    InstallSnapshotResponse {
        /// The `last_included` index of the snapshot being installed.
        last_included: LogIndex,
        /// The offset of the chunk this answers (late answers to other chunks are stale).
        offset: u64,
        /// The byte offset the follower expects next.
        next_offset: u64,
        /// The snapshot is installed.
        done: bool,
    },
    /// Leadership transfer: "campaign now", sent once the target holds the leader's whole log
    /// (`t_p` in traces).
    TimeoutNow {
        /// The leader's last index: the target's log holds it.
        last_log_index: LogIndex,
        /// The leader's transfer generation when it sent this (see `AppendEntries::transfer`).
        transfer: u64,
    },
    /// The target's answer (`t_pr`): whether it campaigns.
    TimeoutNowResponse {
        /// The target campaigns.
        accepted: bool,
    },
    /// A follower forwards its client's command to the leader (`Config::forward_proposals`).
    Propose {
        /// The forwarding node's request number (its own, not the client's).
        request: u64,
        #[serde(with = "serde_bytes")]
        /// The command's bytes.
        command: Vec<u8>,
    },
    /// Where the leader placed a forwarded command; `None`: the receiver does not lead.
    ProposeResponse {
        /// The forwarding node's request number.
        request: u64,
        /// The index and term the entry was appended at.
        placed: Option<LogId>,
    },
    /// A node forwards a membership change to the leader (`m_c`).
    ChangeMembership {
        /// The forwarding node's request number.
        request: u64,
        /// The change asked for.
        change: MembershipChange,
    },
    /// The leader's answer once the change committed or failed (`m_cr`).
    ChangeMembershipResponse {
        /// The forwarding node's request number.
        request: u64,
        /// The configuration now committed, or why the change did not (or may not) happen.
        result: Result<Membership, MembershipError>,
    },
    /// A follower asks the leader for a read index on behalf of its client (thesis §6.4).
    ReadIndexRequest {
        /// The follower's request number.
        request: u64,
    },
    /// The leader's answer once its leadership is confirmed: reads may be served after applying
    /// up to `read_index`. `None`: the receiver does not lead (any more); retry elsewhere.
    ReadIndexResponse {
        /// The follower's request number.
        request: u64,
        /// The commit index the read must wait for.
        read_index: Option<LogIndex>,
    },
}

/// The highest term a message may carry. Far beyond any real cluster's (a term per
/// nanosecond lasts 146 years), and far enough below `u64::MAX` that no arithmetic on a
/// peer's term or index can wrap.
pub const MAX_TERM: Term = Term(1 << 62);
/// The highest log index (or snapshot offset) a message may carry; see [`MAX_TERM`].
pub const MAX_INDEX: LogIndex = LogIndex(1 << 62);

impl Message {
    /// Bytes of commands and snapshot data it carries (what makes a message large), for
    /// drivers that bound their queues in bytes.
    pub fn payload_bytes(&self) -> usize {
        match &self.body {
            MessageBody::AppendEntries { entries, .. } => entries
                .iter()
                .map(|e| match &e.payload {
                    crate::types::EntryPayload::Command(c) => c.len(),
                    _ => 0,
                })
                .sum(),
            MessageBody::InstallSnapshot { data, .. } => data.len(),
            MessageBody::Propose { command, .. } => command.len(),
            _ => 0,
        }
    }

    /// The first field whose value lies beyond [`MAX_TERM`] or [`MAX_INDEX`], if any.
    pub fn out_of_range_field(&self) -> Option<&'static str> {
        let term = |t: Term| t > MAX_TERM;
        let index = |i: LogIndex| i > MAX_INDEX;
        let offset = |o: u64| o > MAX_INDEX.0;
        if term(self.term) {
            return Some("term");
        }
        let bad = match &self.body {
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
                ..
            }
            | MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
                ..
            } => index(*last_log_index)
                .then_some("last_log_index")
                .or(term(*last_log_term).then_some("last_log_term")),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => index(*prev_log_index)
                .then_some("prev_log_index")
                .or(term(*prev_log_term).then_some("prev_log_term"))
                .or(index(*leader_commit).then_some("leader_commit"))
                .or(entries
                    .iter()
                    .any(|e| index(e.index) || term(e.term))
                    .then_some("entries")),
            MessageBody::AppendEntriesResponse {
                match_index,
                reject_hint,
                last_log_index,
                prev_log_index,
                ..
            } => [match_index, reject_hint, last_log_index, prev_log_index]
                .into_iter()
                .any(|i| index(*i))
                .then_some("index"),
            MessageBody::InstallSnapshot {
                last_included,
                offset: o,
                ..
            } => (index(last_included.index) || term(last_included.term) || offset(*o))
                .then_some("snapshot position"),
            MessageBody::InstallSnapshotResponse {
                last_included,
                offset: o,
                next_offset,
                ..
            } => (index(*last_included) || offset(*o) || offset(*next_offset))
                .then_some("snapshot position"),
            MessageBody::TimeoutNow { last_log_index, .. } => {
                index(*last_log_index).then_some("last_log_index")
            }
            MessageBody::ProposeResponse {
                placed: Some(id), ..
            } => (index(id.index) || term(id.term)).then_some("placed"),
            MessageBody::ReadIndexResponse {
                read_index: Some(i),
                ..
            } => index(*i).then_some("read_index"),
            _ => None,
        };
        bad
    }
}

impl MessageBody {
    /// An answer to a request this node sent.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            MessageBody::PreVoteResponse { .. }
                | MessageBody::VoteResponse { .. }
                | MessageBody::AppendEntriesResponse { .. }
                | MessageBody::InstallSnapshotResponse { .. }
                | MessageBody::TimeoutNowResponse { .. }
                | MessageBody::ProposeResponse { .. }
                | MessageBody::ChangeMembershipResponse { .. }
                | MessageBody::ReadIndexResponse { .. }
        )
    }

    /// The short code used in trace tables (`shared/trace-format.md`).
    pub fn code(&self) -> &'static str {
        match self {
            MessageBody::PreVoteRequest { .. } => "p_v_r",
            MessageBody::PreVoteResponse { .. } => "p_v",
            MessageBody::VoteRequest { .. } => "poll",
            MessageBody::VoteResponse { .. } => "vote",
            MessageBody::AppendEntries { .. } => "ae",
            MessageBody::AppendEntriesResponse { .. } => "ae_reply",
            MessageBody::InstallSnapshot { .. } => "sn",
            MessageBody::InstallSnapshotResponse { .. } => "snr",
            MessageBody::TimeoutNow { .. } => "t_p",
            MessageBody::TimeoutNowResponse { .. } => "t_pr",
            MessageBody::Propose { .. } => "fwd",
            MessageBody::ProposeResponse { .. } => "fwd_reply",
            MessageBody::ChangeMembership { .. } => "m_c",
            MessageBody::ChangeMembershipResponse { .. } => "m_cr",
            MessageBody::ReadIndexRequest { .. } => "ri_r",
            MessageBody::ReadIndexResponse { .. } => "ri",
        }
    }
}
