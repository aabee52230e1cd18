//! Node configuration, validated before a node starts.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Settings of one node. Time is counted in ticks: the driver decides how long a tick is
/// (the tokio runtime uses 10 ms, so the defaults give a 10 ms heartbeat and a 150–300 ms
/// election timeout, like the seed's engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// This node's id; unique in the cluster and never reused for another node.
    pub id: NodeId,
    /// The initial voters, this node included; empty for a node that joins a running cluster
    /// (it learns the configuration from the leader's log or snapshot). Once the log or a
    /// snapshot holds a configuration, that one is in effect.
    pub voters: Vec<NodeId>,
    /// Thesis §9.6: ask before campaigning, so a partitioned node cannot disrupt the cluster.
    pub pre_vote: bool,
    /// Thesis §6.2: a leader that has not heard from a majority within an election timeout steps
    /// down; followers that heard from a leader within the minimum election timeout ignore votes.
    pub check_quorum: bool,
    /// Shortest election timeout, in ticks (default 15). Each timeout is drawn from
    /// `[min, max]` with the jitter seed.
    pub election_timeout_min_ticks: u64,
    /// Longest election timeout, in ticks (default 30); at least the minimum.
    pub election_timeout_max_ticks: u64,
    /// Ticks between a leader's heartbeats (default 1); below the minimum election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Upper bound on entries in one AppendEntries.
    pub max_entries_per_message: usize,
    /// Upper bound on the command bytes of one AppendEntries (one entry always fits, however
    /// large, so a message is at most this plus one command). With `max_command_bytes`, this
    /// bounds the frames a transport must carry.
    pub max_bytes_per_message: u64,
    /// The largest command [`RaftNode::propose`](crate::RaftNode::propose) accepts; larger
    /// ones are rejected with `CommandRejected::TooLarge` before anything is appended.
    pub max_command_bytes: usize,
    /// Upper bound on unacknowledged AppendEntries batches per follower (the pipeline window).
    pub max_in_flight_messages: usize,
    /// Seed for election-timeout jitter, chosen by the driver so runs are reproducible.
    pub jitter_seed: u64,
    /// Followers forward client commands to the leader instead of answering with a redirect.
    pub forward_proposals: bool,
    /// A leader tells followers a new commit index at once (an empty AppendEntries when its
    /// output is taken) instead of with the next heartbeat or append. Followers then answer
    /// forwarded commands and reads a heartbeat interval sooner, for one message per follower
    /// per output that advanced the commit.
    pub notify_commit: bool,
    /// Ask the driver for a snapshot after this many entries were applied since the last one
    /// (0: only when the driver decides).
    pub snapshot_after_entries: u64,
    /// Also ask for a snapshot once the entries held in the log carry this many payload bytes
    /// (0: no limit by size).
    pub snapshot_after_log_bytes: u64,
    /// A new voter catches up in at most this many rounds before the change is aborted.
    pub catch_up_max_rounds: u32,
    /// A catch-up is aborted when the new voters acknowledge nothing for this many ticks.
    pub catch_up_stall_ticks: u64,
    /// Largest snapshot chunk in one message.
    pub max_snapshot_chunk_bytes: usize,
    /// Entries kept in the log behind a snapshot, so that a follower a little behind gets
    /// entries instead of the whole snapshot (etcd keeps 5,000). Entries a follower heard from
    /// within an election timeout still needs are kept too, within `log_retention_bytes`.
    pub log_retention_entries: u64,
    /// Upper bound on the command bytes kept behind a snapshot by `log_retention_entries` and
    /// for followers; 0 turns retention off (the log is purged up to each snapshot).
    pub log_retention_bytes: u64,
    /// Opt-in lease reads (thesis §6.4.1): a leader that a majority acknowledged less than
    /// `lease_ticks` ago serves reads without a confirmation round. Needs `check_quorum`.
    ///
    /// **What the lease assumes.** A follower that answered the leader's heartbeat refuses
    /// votes for the minimum election timeout after it (leader stickiness), counted on its own
    /// clock; the lease is counted on the leader's clock from when that heartbeat was *sent*.
    /// So the lease is safe as long as:
    /// - no node's clock runs faster than the leader's by more than
    ///   `election_timeout_min_ticks / lease_ticks` (15 / 12 = 1.25 with the defaults): the
    ///   one assumption about time, shown at its boundary by the scenario
    ///   `reads/lease_beyond_clock_drift_bound`;
    /// - a node that restarts refuses votes for the minimum election timeout from its restart
    ///   (it may have answered a heartbeat just before it stopped): the core does so
    ///   (`reads/lease_holds_across_a_follower_restart`), so a restart is covered as long as
    ///   the time from the crash to the restart is not negative, i.e. the clock does not run
    ///   backwards across it;
    /// - no election skips stickiness: a leadership transfer's campaign does, so once the
    ///   leader has sent `TimeoutNow` it serves reads with a confirmation round instead, and
    ///   after an aborted transfer only a round started later renews the lease
    ///   (`reads/lease_read_refused_once_transfer_starts`,
    ///   `transfer/late_timeout_now_ignored_after_abort`);
    /// - a node's term and vote survive its crashes (its log may not; see
    ///   `StoredState::data_loss`).
    ///
    /// Where clocks may drift further (virtual machines paused and resumed, clocks stepped),
    /// leave this off: reads then confirm leadership with a round (ReadIndex), which assumes
    /// nothing about time.
    pub lease_reads: bool,
    /// Lease length in ticks, counted from when the confirmed heartbeat was *sent*; must be
    /// below the minimum election timeout (see `lease_reads` for what it assumes).
    pub lease_ticks: u64,
    /// A known protocol bug to switch on (test builds with the `mutations` feature only).
    #[cfg(feature = "mutations")]
    #[serde(default)]
    pub mutation: Option<Mutation>,
}

/// Known protocol bugs, each breaking one rule of the paper, for proving that the randomized
/// checkers notice.
#[cfg(feature = "mutations")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Commit an earlier term's entry by counting replicas (paper §5.4.2, Figure 8).
    CommitPreviousTerm,
    /// Forget the vote across restarts: the vote is not written to storage.
    VoteNotPersisted,
    /// Grant a vote to every candidate of a term.
    TwoVotesPerTerm,
    /// Hand entries to the state machine as soon as they are appended.
    ApplyBeforeCommit,
    /// Drop every entry after an AppendEntries batch, committed ones included (instead of only
    /// conflicting ones, and never committed ones).
    TruncateCommitted,
    /// Serve reads at once, without confirming leadership.
    ReadWithoutQuorum,
    /// Keep serving lease reads after `TimeoutNow` went out, and trust the lease that was
    /// running when a transfer is aborted (issue 13, defect 1).
    LeaseDuringTransfer,
    /// A restarted node grants votes at once (issue 13, defect 2).
    VoteRightAfterRestart,
    /// A forwarded command committed inside an installed snapshot is never answered (defect 3).
    ForwardedLostInSnapshot,
    /// Every answer from a follower receiving a snapshot resends the current chunk (defect 4).
    ChunkPerHeartbeat,
    /// A new snapshot restarts a transfer under way from byte 0 (defect 5).
    SnapshotRestartsOnCompaction,
    /// A removed node added back stays removed (defect 6).
    RemovedForever,
    /// `TimeoutNow` and transfer votes carry no generation check (defect 7).
    StaleTimeoutNow,
    /// `persisted` believes any sequence number (defect 9).
    UncheckedPersisted,
    /// A node whose storage lost synced data votes and counts as if nothing happened
    /// (defect 15).
    IgnoreDataLoss,
    /// A leader counts answers a follower sent before it lost data (no repair epochs): found by
    /// the randomized runs after defect 15's fix.
    AnswersAcrossDataLoss,
}

#[cfg(feature = "mutations")]
impl Mutation {
    /// Every mutation, for checkers that try them all.
    pub const ALL: [Mutation; 16] = [
        Mutation::CommitPreviousTerm,
        Mutation::VoteNotPersisted,
        Mutation::TwoVotesPerTerm,
        Mutation::ApplyBeforeCommit,
        Mutation::TruncateCommitted,
        Mutation::ReadWithoutQuorum,
        Mutation::LeaseDuringTransfer,
        Mutation::VoteRightAfterRestart,
        Mutation::ForwardedLostInSnapshot,
        Mutation::ChunkPerHeartbeat,
        Mutation::SnapshotRestartsOnCompaction,
        Mutation::RemovedForever,
        Mutation::StaleTimeoutNow,
        Mutation::UncheckedPersisted,
        Mutation::IgnoreDataLoss,
        Mutation::AnswersAcrossDataLoss,
    ];

    /// The mutation named `name` (its variant name, case-insensitive, `-` and `_` ignored).
    pub fn named(name: &str) -> Option<Mutation> {
        let key = |s: &str| s.replace(['-', '_'], "").to_lowercase();
        Mutation::ALL
            .into_iter()
            .find(|m| key(&format!("{m:?}")) == key(name))
    }
}

/// Why a [`Config`] was refused ([`Config::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `voters` is not empty and does not include `id`.
    #[error(
        "node {0} is not among the initial voters (leave them empty to join a running cluster)"
    )]
    NotAVoter(NodeId),
    /// A voter is listed twice.
    #[error("node {0} appears more than once among the voters")]
    DuplicateVoter(NodeId),
    /// The minimum election timeout is 0 or above the maximum.
    #[error("election timeout range [{min}, {max}] is empty or zero")]
    BadElectionTimeout {
        /// `election_timeout_min_ticks`.
        min: u64,
        /// `election_timeout_max_ticks`.
        max: u64,
    },
    /// The heartbeat interval is 0 or not below the minimum election timeout.
    #[error("heartbeat interval {heartbeat} must be at least 1 and below the minimum election timeout {min}")]
    BadHeartbeat {
        /// `heartbeat_interval_ticks`.
        heartbeat: u64,
        /// `election_timeout_min_ticks`.
        min: u64,
    },
    /// A limit that must be at least 1 (named) is 0.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// `lease_reads` without `check_quorum`, or `lease_ticks` not in `1..min`.
    #[error("lease reads need check_quorum and lease_ticks ({lease}) in 1..{min} (the minimum election timeout)")]
    BadLease {
        /// `lease_ticks`.
        lease: u64,
        /// `election_timeout_min_ticks`.
        min: u64,
    },
}

impl Config {
    /// A configuration with the defaults for node `id` of a cluster of `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            pre_vote: true,
            check_quorum: true,
            election_timeout_min_ticks: 15,
            election_timeout_max_ticks: 30,
            heartbeat_interval_ticks: 1,
            max_entries_per_message: 64,
            max_bytes_per_message: 1 << 20,
            max_command_bytes: 64 << 20,
            max_in_flight_messages: 256,
            jitter_seed: id.0,
            forward_proposals: false,
            snapshot_after_entries: 0,
            snapshot_after_log_bytes: 0,
            catch_up_max_rounds: 10,
            catch_up_stall_ticks: 300,
            max_snapshot_chunk_bytes: 1 << 20,
            log_retention_entries: 5_000,
            log_retention_bytes: 64 << 20,
            notify_commit: false,
            lease_reads: false,
            lease_ticks: 12,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Checks the settings; [`RaftNode::new`](crate::RaftNode::new) and the restarts call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        let mut seen = self.voters.clone();
        seen.sort();
        if let Some(pair) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicateVoter(pair[0]));
        }
        let (min, max) = (
            self.election_timeout_min_ticks,
            self.election_timeout_max_ticks,
        );
        if min == 0 || max < min {
            return Err(ConfigError::BadElectionTimeout { min, max });
        }
        let heartbeat = self.heartbeat_interval_ticks;
        if heartbeat == 0 || heartbeat >= min {
            return Err(ConfigError::BadHeartbeat { heartbeat, min });
        }
        if self.max_entries_per_message == 0 {
            return Err(ConfigError::ZeroLimit("max_entries_per_message"));
        }
        if self.catch_up_max_rounds == 0 {
            return Err(ConfigError::ZeroLimit("catch_up_max_rounds"));
        }
        if self.catch_up_stall_ticks == 0 {
            return Err(ConfigError::ZeroLimit("catch_up_stall_ticks"));
        }
        if self.max_in_flight_messages == 0 {
            return Err(ConfigError::ZeroLimit("max_in_flight_messages"));
        }
        if self.max_bytes_per_message == 0 {
            return Err(ConfigError::ZeroLimit("max_bytes_per_message"));
        }
        if self.max_command_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max_command_bytes"));
        }
        if self.max_snapshot_chunk_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max_snapshot_chunk_bytes"));
        }
        if self.lease_reads
            && (!self.check_quorum || self.lease_ticks == 0 || self.lease_ticks >= min)
        {
            return Err(ConfigError::BadLease {
                lease: self.lease_ticks,
                min,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_node_outside_voters_and_bad_timers() {
        let ids = vec![NodeId(1), NodeId(2)];
        assert_eq!(
            Config::new(NodeId(3), ids.clone()).validate(),
            Err(ConfigError::NotAVoter(NodeId(3)))
        );
        let mut c = Config::new(NodeId(1), ids);
        c.heartbeat_interval_ticks = 20;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BadHeartbeat { .. })
        ));
        c.heartbeat_interval_ticks = 1;
        c.election_timeout_max_ticks = 3;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BadElectionTimeout { .. })
        ));
    }

    #[test]
    fn rejects_duplicate_voters() {
        let c = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(2)]);
        assert_eq!(c.validate(), Err(ConfigError::DuplicateVoter(NodeId(2))));
    }
}
