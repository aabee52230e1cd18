//! Snapshots and log compaction (paper §7). The driver takes a snapshot of its state machine when
//! asked (`Output::take_snapshot`, by the `snapshot_after_entries` policy) or when it likes, and
//! hands it to [`RaftNode::compact`]; the core then drops the entries it covers. A follower whose
//! next entry is gone receives the snapshot in chunks (`sn`/`snr` in traces) while heartbeats go
//! on, installs it (`Output::install_snapshot`), and continues from the entry after it.

use crate::membership::Membership;
use crate::message::MessageBody;
use crate::node::{RaftNode, Role};
use crate::progress::ProgressState;
use crate::storage::{LogId, LogWrite};
use crate::types::{LogIndex, NodeId};
use std::sync::Arc;
use thiserror::Error;

/// The state machine's state after applying every entry up to `last_included`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub last_included: LogId,
    /// The configuration in effect at `last_included`.
    pub membership: Membership,
    pub data: Arc<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompactError {
    #[error("index {index} is not applied yet (applied up to {applied})")]
    NotApplied { index: LogIndex, applied: LogIndex },
    #[error("index {index} is already compacted (the log starts after {start})")]
    AlreadyCompacted { index: LogIndex, start: LogIndex },
}

impl RaftNode {
    /// The driver's snapshot of its state machine after applying every entry up to `through`:
    /// the core keeps it (to send to followers that need it) and drops the entries it covers.
    pub fn compact(&mut self, through: LogIndex, data: Vec<u8>) -> Result<(), CompactError> {
        if through > self.committed_emitted {
            return Err(CompactError::NotApplied {
                index: through,
                applied: self.committed_emitted,
            });
        }
        let start = self.log.start().index;
        let Some(term) = self.log.term(through).filter(|_| through > start) else {
            return Err(CompactError::AlreadyCompacted {
                index: through,
                start,
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
        self.log.compact(last_included);
        self.configs.compacted(through);
        self.write(LogWrite::Purge { through, term });
        Ok(())
    }

    /// The snapshot this node holds, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Asks the driver for a snapshot when enough entries were applied since the last one, or
    /// when the log holds too many bytes.
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
            .saturating_sub(self.log.start().index.0);
        let by_count = every > 0 && since >= every;
        let by_size = max_bytes > 0 && since > 0 && self.log.payload_bytes() >= max_bytes;
        if by_count || by_size {
            self.snapshot_requested = true;
            self.out.take_snapshot = Some(self.committed_emitted);
        }
    }

    /// Leader: sends the next chunk of the snapshot to `peer`, whose next entry is compacted.
    pub(crate) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let chunk_size = self.config.max_snapshot_chunk_bytes.max(1);
        let term = self.hard.term;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(progress) = leadership.progress.get_mut(&peer) else {
            return;
        };
        if progress.state
            != (ProgressState::Snapshot {
                last_included: snapshot.last_included.index,
            })
        {
            progress.become_snapshot(snapshot.last_included.index);
        }
        if progress.probe_sent {
            return;
        }
        let offset = progress.snapshot_offset as usize;
        let end = (offset + chunk_size).min(snapshot.data.len());
        progress.probe_sent = true;
        let body = MessageBody::InstallSnapshot {
            last_included: snapshot.last_included,
            membership: snapshot.membership.clone(),
            offset: offset as u64,
            data: snapshot.data.get(offset..end).unwrap_or_default().to_vec(),
            done: end == snapshot.data.len(),
        };
        self.send(peer, term, body);
    }

    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        last_included: LogIndex,
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
        progress.probe_sent = false;
        if done {
            progress.acknowledge(last_included);
            progress.become_probe(last_included.next());
            self.maybe_commit();
            self.check_catch_up();
            self.send_append(from);
        } else {
            progress.snapshot_offset = next_offset;
            self.send_snapshot_chunk(from);
        }
    }

    /// Follower: one chunk of the leader's snapshot.
    pub(crate) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        last_included: LogId,
        membership: Membership,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        if !matches!(self.role, Role::Follower) {
            self.become_follower(self.hard.term, Some(from));
        }
        self.set_leader(Some(from));
        self.reset_election_timer();
        let term = self.hard.term;
        let respond = |node: &mut RaftNode, next_offset: u64, done: bool| {
            node.send(
                from,
                term,
                MessageBody::InstallSnapshotResponse {
                    last_included: last_included.index,
                    next_offset,
                    done,
                },
            );
        };
        if last_included.index <= self.commit {
            // Already have everything it covers: tell the leader to go on from there.
            respond(self, offset, true);
            return;
        }
        let buffer = match self.incoming_snapshot.take() {
            Some((id, buffer)) if id == last_included && buffer.len() as u64 == offset => buffer,
            _ if offset == 0 => Vec::new(),
            other => {
                // A chunk out of order: ask for what follows what we have.
                let have = match &other {
                    Some((id, buffer)) if *id == last_included => buffer.len() as u64,
                    _ => 0,
                };
                self.incoming_snapshot = other;
                respond(self, have, false);
                return;
            }
        };
        let mut buffer = buffer;
        buffer.extend_from_slice(&data);
        if !done {
            let have = buffer.len() as u64;
            self.incoming_snapshot = Some((last_included, buffer));
            respond(self, have, false);
            return;
        }
        self.install_snapshot(Snapshot {
            last_included,
            membership,
            data: Arc::new(buffer),
        });
        respond(self, offset + data.len() as u64, true);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let id = snapshot.last_included;
        let keeps_suffix = self.log.term(id.index) == Some(id.term);
        self.log.compact(id);
        self.write(LogWrite::Purge {
            through: id.index,
            term: id.term,
        });
        if !keeps_suffix && self.log.last_index() > id.index {
            self.log.truncate_from(id.index.next());
            self.write(LogWrite::TruncateFrom(id.index.next()));
        }
        self.persisted_index = self.persisted_index.min(self.log.last_index());
        self.configs
            .installed(id.index, snapshot.membership.clone(), keeps_suffix);
        self.membership_changed();
        self.commit = self.commit.max(id.index);
        self.committed_emitted = self.committed_emitted.max(id.index);
        self.out.install_snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }
}
