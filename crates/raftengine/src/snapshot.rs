//! Snapshots and log compaction (paper §7). The driver takes a snapshot of its state machine when
//! asked (`Output::take_snapshot`, by the `snapshot_after_entries` policy) or when it likes, and
//! hands it to [`RaftNode::compact`]; the core then drops the entries it covers, but for a tail
//! (`Config::log_retention_entries`, and what followers still need, within
//! `log_retention_bytes`) so that a follower a little behind gets entries, not the snapshot.
//!
//! A follower whose next entry is gone receives the snapshot in chunks (`sn`/`snr` in traces),
//! one chunk in flight at a time; a chunk is sent again only when neither it nor its answer
//! arrived within the minimum election timeout, so heartbeats and duplicated messages never
//! multiply chunks. A transfer under way keeps sending the snapshot it started, though the
//! leader compacts again meanwhile. The follower hands the complete snapshot to its driver
//! (`Output::install_snapshot`); only once the driver reports it restored and durable
//! ([`RaftNode::snapshot_installed`]) does the follower purge its log and tell the leader, so a
//! crash can never leave a purged log without the snapshot that replaced it.

use crate::event::Event;
use crate::membership::Membership;
use crate::message::MessageBody;
use crate::node::{DriverError, RaftNode, Role};
use crate::progress::ProgressState;
use crate::storage::{LogId, LogWrite};
use crate::types::{LogIndex, NodeId};
use std::sync::Arc;
use thiserror::Error;

/// The state machine's state after applying every entry up to `last_included`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last entry the snapshot covers.
    pub last_included: LogId,
    /// The configuration in effect at `last_included`.
    pub membership: Membership,
    /// The state machine's bytes ([`StateMachine::snapshot`](crate::StateMachine::snapshot)).
    pub data: Arc<Vec<u8>>,
}

/// Why a snapshot could not replace a log prefix ([`RaftNode::compact`](crate::RaftNode::compact)).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompactError {
    /// The snapshot is at an index the node has not handed out to apply.
    #[error("index {index} is not applied yet (applied up to {applied})")]
    NotApplied {
        /// The snapshot's index.
        index: LogIndex,
        /// The highest index applied.
        applied: LogIndex,
    },
    /// The log already starts at or after the snapshot's index.
    #[error("index {index} is already compacted (the log starts after {start})")]
    AlreadyCompacted {
        /// The snapshot's index.
        index: LogIndex,
        /// The last compacted index.
        start: LogIndex,
    },
}

impl RaftNode {
    /// The driver's snapshot of its state machine after applying every entry up to `through`:
    /// the core keeps it (to send to followers that need it) and drops the entries it covers,
    /// but for the tail it retains.
    pub fn compact(&mut self, through: LogIndex, data: Vec<u8>) -> Result<(), CompactError> {
        if through > self.committed_emitted {
            return Err(CompactError::NotApplied {
                index: through,
                applied: self.committed_emitted,
            });
        }
        let covered = self.snapshot_index();
        let Some(term) = self.log.term(through).filter(|_| through > covered) else {
            return Err(CompactError::AlreadyCompacted {
                index: through,
                start: covered,
            });
        };
        let last_included = LogId {
            index: through,
            term,
        };
        self.snapshot = Some(Snapshot {
            last_included,
            membership: self.configs.at(through).clone(),
            data: Arc::new(data),
        });
        self.snapshot_requested = false;
        let purge_to = self.retention_start(through);
        if purge_to > self.log.start().index {
            let purge = LogId {
                index: purge_to,
                term: self.log.term(purge_to).unwrap_or(term),
            };
            self.log.compact(purge);
            self.configs.compacted(purge_to);
            self.write(LogWrite::Purge {
                through: purge_to,
                term: purge.term,
            });
        }
        self.snapshot_tail_bytes = self.log.payload_bytes_through(through);
        Ok(())
    }

    /// The snapshot this node holds, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The last index the snapshot covers (the log's start without one).
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(self.log.start().index, |s| s.last_included.index)
            .max(self.log.start().index)
    }

    /// Where a compaction through `through` may purge the log to: it keeps
    /// `log_retention_entries` behind the snapshot and, on a leader, what followers it
    /// replicates to still need, as long as the tail's command bytes stay within
    /// `log_retention_bytes` (0 keeps nothing: the log is purged up to the snapshot).
    fn retention_start(&self, through: LogIndex) -> LogIndex {
        let budget = self.config.log_retention_bytes;
        if budget == 0 {
            return through;
        }
        let start = self.log.start().index;
        let mut keep_from = LogIndex(through.0.saturating_sub(self.config.log_retention_entries));
        if let Role::Leader(leadership) = &self.role {
            for progress in leadership.progress.values() {
                match progress.state {
                    ProgressState::Replicate => keep_from = keep_from.min(progress.match_index),
                    ProgressState::Snapshot { last_included } => {
                        keep_from = keep_from.min(last_included)
                    }
                    ProgressState::Probe => {}
                }
            }
        }
        let keep_from = keep_from.max(start).min(through);
        self.log
            .first_within_bytes(keep_from, through, budget)
            .prev()
    }

    /// Asks the driver for a snapshot when enough entries were applied since the last one, or
    /// when the log holds too many bytes beyond it.
    pub(crate) fn maybe_request_snapshot(&mut self) {
        let (every, max_bytes) = (
            self.config.snapshot_after_entries,
            self.config.snapshot_after_log_bytes,
        );
        if self.snapshot_requested {
            return;
        }
        let since = self
            .committed_emitted
            .0
            .saturating_sub(self.snapshot_index().0);
        let bytes = self
            .log
            .payload_bytes()
            .saturating_sub(self.snapshot_tail_bytes);
        let by_count = every > 0 && since >= every;
        let by_size = max_bytes > 0 && since > 0 && bytes >= max_bytes;
        if by_count || by_size {
            self.snapshot_requested = true;
            self.out.take_snapshot = Some(self.committed_emitted);
        }
    }

    /// Leader: sends the next chunk of a snapshot to `peer`, whose next entry is compacted. A
    /// transfer under way goes on with the snapshot it started; a new one takes the latest.
    pub(crate) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let chunk_size = self.config.max_snapshot_chunk_bytes.max(1);
        let term = self.hard.term;
        let latest = self.snapshot.clone();
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(progress) = leadership.progress.get_mut(&peer) else {
            return;
        };
        #[cfg(feature = "mutations")]
        let restart = self.config.mutation
            == Some(crate::config::Mutation::SnapshotRestartsOnCompaction)
            && latest.as_ref().map(|s| s.last_included.index)
                != progress
                    .sending_snapshot
                    .as_ref()
                    .map(|s| s.last_included.index);
        #[cfg(not(feature = "mutations"))]
        let restart = false;
        if restart || !matches!(progress.state, ProgressState::Snapshot { .. }) {
            let Some(latest) = latest else {
                return;
            };
            progress.become_snapshot(latest.last_included.index);
            progress.sending_snapshot = Some(latest);
        }
        let Some(snapshot) = progress.sending_snapshot.clone() else {
            return;
        };
        if progress.probe_sent {
            return;
        }
        let offset = progress.snapshot_offset.min(snapshot.data.len() as u64) as usize;
        let end = offset.saturating_add(chunk_size).min(snapshot.data.len());
        progress.probe_sent = true;
        progress.snapshot_wait_ticks = 0;
        let body = MessageBody::InstallSnapshot {
            last_included: snapshot.last_included,
            membership: snapshot.membership.clone(),
            offset: offset as u64,
            data: snapshot.data.get(offset..end).unwrap_or_default().to_vec(),
            done: end == snapshot.data.len(),
        };
        self.send(peer, term, body);
    }

    /// Leader, on a tick: a chunk that got no answer within the minimum election timeout (it
    /// or its answer was lost) is sent again.
    pub(crate) fn resend_snapshot_chunks(&mut self) {
        let limit = self.config.election_timeout_min_ticks;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let mut due = Vec::new();
        for (id, progress) in leadership.progress.iter_mut() {
            if !matches!(progress.state, ProgressState::Snapshot { .. }) || !progress.probe_sent {
                continue;
            }
            progress.snapshot_wait_ticks += 1;
            if progress.snapshot_wait_ticks >= limit {
                progress.probe_sent = false;
                due.push(*id);
            }
        }
        for peer in due {
            self.send_snapshot_chunk(peer);
        }
    }

    /// Leader: a follower's answer to the chunk at `answered`: it now has `next_offset` bytes,
    /// or (`done`) installed the snapshot. Answers to any other chunk than the one in flight
    /// are stale (a duplicate, a resent chunk answered twice) and change nothing.
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        last_included: LogIndex,
        answered: u64,
        next_offset: u64,
        done: bool,
    ) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(progress) = leadership.progress.get_mut(&from) else {
            return;
        };
        progress.recently_active = true;
        if progress.state != (ProgressState::Snapshot { last_included }) {
            return;
        }
        if done {
            progress.sending_snapshot = None;
            progress.acknowledge(last_included);
            progress.become_probe(last_included.next());
            self.maybe_commit();
            self.check_catch_up();
            self.send_append(from);
            return;
        }
        #[cfg(feature = "mutations")]
        let chained = self.config.mutation == Some(crate::config::Mutation::ChunkPerHeartbeat);
        #[cfg(not(feature = "mutations"))]
        let chained = false;
        if !chained && (!progress.probe_sent || answered != progress.snapshot_offset) {
            return;
        }
        progress.probe_sent = false;
        progress.snapshot_offset = next_offset;
        self.check_catch_up();
        self.send_snapshot_chunk(from);
    }

    /// Follower: one chunk of the leader's snapshot.
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, chunk: SnapshotChunk) {
        if !matches!(self.role, Role::Follower) {
            self.become_follower(self.hard.term, Some(from));
        }
        self.set_leader(Some(from));
        self.reset_election_timer();
        let id = chunk.last_included;
        if self.pending_install.is_some() {
            // The driver is installing a snapshot: the leader resends later if need be.
            return;
        }
        if id.index <= self.commit {
            // Already have everything it covers: tell the leader to go on from there.
            self.send_snapshot_answer(from, id.index, chunk.offset, chunk.offset, true);
            return;
        }
        let buffer = match self.incoming_snapshot.take() {
            Some((held, buffer)) if held == id && buffer.len() as u64 == chunk.offset => buffer,
            _ if chunk.offset == 0 => Vec::new(),
            other => {
                // A chunk out of order: ask for what follows what we have.
                let have = match &other {
                    Some((held, buffer)) if *held == id => buffer.len() as u64,
                    _ => 0,
                };
                self.incoming_snapshot = other;
                self.send_snapshot_answer(from, id.index, chunk.offset, have, false);
                return;
            }
        };
        let mut buffer = buffer;
        buffer.extend_from_slice(&chunk.data);
        if !chunk.done {
            let have = buffer.len() as u64;
            self.incoming_snapshot = Some((id, buffer));
            self.send_snapshot_answer(from, id.index, chunk.offset, have, false);
            return;
        }
        self.begin_install(
            Snapshot {
                last_included: id,
                membership: chunk.membership,
                data: Arc::new(buffer),
            },
            from,
            chunk.offset,
        );
    }

    fn send_snapshot_answer(
        &mut self,
        to: NodeId,
        last_included: LogIndex,
        answered: u64,
        next_offset: u64,
        done: bool,
    ) {
        let term = self.hard.term;
        let body = MessageBody::InstallSnapshotResponse {
            last_included,
            offset: answered,
            next_offset,
            done,
        };
        self.send(to, term, body);
    }

    /// Hands a complete snapshot to the driver. Nothing up to it is emitted as committed any
    /// more; the log is purged (and the leader told) once the driver reports it installed.
    fn begin_install(&mut self, snapshot: Snapshot, leader: NodeId, answered: u64) {
        let index = snapshot.last_included.index;
        self.committed_emitted = self.committed_emitted.max(index);
        // Forwarded commands placed up to it were applied (or overwritten) inside the
        // snapshot: their results will never be known here.
        self.fail_forwarded_placed_through(index);
        self.out.install_snapshot = Some(snapshot.clone());
        self.pending_install = Some(PendingInstall {
            snapshot,
            leader,
            answered,
        });
    }

    /// The driver restored its state machine from the snapshot of `Output::install_snapshot`
    /// and keeps the snapshot durably: the log is purged up to it, and the leader hears that
    /// the snapshot is installed once that purge is durable.
    pub fn snapshot_installed(&mut self, index: LogIndex) -> Result<(), DriverError> {
        let expected = self
            .pending_install
            .as_ref()
            .map(|p| p.snapshot.last_included.index);
        if expected != Some(index) {
            return Err(DriverError::NoSuchInstall { index, expected });
        }
        let Some(pending) = self.pending_install.take() else {
            return Err(DriverError::NoSuchInstall { index, expected });
        };
        if self.is_stopped().is_some() {
            return Ok(());
        }
        let id = pending.snapshot.last_included;
        self.install_snapshot(pending.snapshot);
        let size = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        let answered = pending.answered;
        self.send_snapshot_answer(pending.leader, id.index, answered, size, true);
        Ok(())
    }

    /// Replaces the log up to the snapshot: a conflicting suffix goes the way any conflicting
    /// entries go (`truncate_log`), the rest is purged.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let id = snapshot.last_included;
        let keeps_suffix = self.log.term(id.index) == Some(id.term);
        if !keeps_suffix && self.log.last_index() > id.index && !self.truncate_log(id.index.next())
        {
            return;
        }
        self.log.compact(id);
        self.write(LogWrite::Purge {
            through: id.index,
            term: id.term,
        });
        self.persisted_index = self.persisted_index.min(self.log.last_index());
        self.configs
            .installed(id.index, snapshot.membership.clone(), keeps_suffix);
        self.snapshot_tail_bytes = 0;
        self.snapshot = Some(snapshot);
        self.membership_changed();
        if id.index > self.commit {
            self.commit = id.index;
            self.out
                .events
                .push(Event::CommitAdvanced { commit: id.index });
            self.membership_committed();
        }
    }
}

/// A snapshot handed to the driver, waiting for [`RaftNode::snapshot_installed`].
#[derive(Debug, Clone)]
pub(crate) struct PendingInstall {
    snapshot: Snapshot,
    /// Who sent it, and the offset of its last chunk, for the final answer.
    leader: NodeId,
    answered: u64,
}

/// One `InstallSnapshot` message's content.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotChunk {
    pub last_included: LogId,
    pub membership: Membership,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}
