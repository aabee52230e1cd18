//! The leader's view of one follower's log (etcd raft's "progress"). Knows nothing about roles.

use crate::types::LogIndex;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// We do not know where the follower's log matches ours: send one entry at a time and wait.
    Probe,
    /// The follower matches up to `match_index`: stream entries optimistically in batches.
    Replicate,
    /// The follower needs entries that are compacted: it is sent the snapshot ending at
    /// `last_included`, one chunk at a time.
    Snapshot { last_included: LogIndex },
}

#[derive(Debug, Clone)]
pub struct Progress {
    pub state: ProgressState,
    /// Highest index known to be replicated on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// In `Probe`: a probe is outstanding, send nothing more until it is answered.
    pub probe_sent: bool,
    /// In `Replicate`: last index of each unacknowledged batch, oldest first.
    pub in_flight: VecDeque<LogIndex>,
    /// Heard from this follower since the last check-quorum round.
    pub recently_active: bool,
    /// In `Snapshot`: bytes of the snapshot the follower has acknowledged.
    pub snapshot_offset: u64,
    /// In `Snapshot`: ticks since the chunk in flight was sent (it is sent again once this
    /// reaches the resend interval: the chunk or its answer was lost).
    pub snapshot_wait_ticks: u64,
    /// The follower lost durable data and is being repaired: it counts towards no majority.
    pub repairing: bool,
    /// The follower's highest repair epoch seen: answers of older epochs predate a data loss.
    pub repair_epoch: u64,
    /// In `Snapshot`: the snapshot being sent (kept though the leader compacts again).
    pub sending_snapshot: Option<crate::snapshot::Snapshot>,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            state: ProgressState::Probe,
            match_index: LogIndex(0),
            next_index,
            probe_sent: false,
            in_flight: VecDeque::new(),
            recently_active: false,
            snapshot_offset: 0,
            snapshot_wait_ticks: 0,
            repairing: false,
            repair_epoch: 0,
            sending_snapshot: None,
        }
    }

    /// A rejection answering an AppendEntries sent before the latest state of this follower
    /// was known: one whose `prev_log_index` lies below the match index (the follower has
    /// acknowledged more since), or, while probing, any answer but to the probe in flight.
    pub fn is_stale_rejection(&self, answered: LogIndex) -> bool {
        answered < self.match_index
            || (self.state == ProgressState::Probe && answered != self.next_index.prev())
    }

    /// May the leader send entries now, given the pipeline window?
    pub fn can_send(&self, max_in_flight: usize) -> bool {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot { .. } => !self.probe_sent,
            ProgressState::Replicate => self.in_flight.len() < max_in_flight,
        }
    }

    /// Records that entries up to `last` were sent.
    pub fn sent(&mut self, last: LogIndex) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot { .. } => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last.next();
                self.in_flight.push_back(last);
            }
        }
    }

    /// An acknowledgement that the follower matches up to `index`. Returns whether it was news.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        let news = index > self.match_index;
        if news {
            self.match_index = index;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        while self.in_flight.front().is_some_and(|last| *last <= index) {
            self.in_flight.pop_front();
        }
        news
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.sending_snapshot = None;
        self.probe_sent = false;
        self.next_index = self.match_index.next();
        self.in_flight.clear();
    }

    /// Starts sending the snapshot ending at `last_included` from its first byte.
    pub fn become_snapshot(&mut self, last_included: LogIndex) {
        self.state = ProgressState::Snapshot { last_included };
        self.probe_sent = false;
        self.in_flight.clear();
        self.snapshot_offset = 0;
        self.snapshot_wait_ticks = 0;
    }

    /// A rejection: go back to probing from `next_index`, never below what is known to match.
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe;
        self.sending_snapshot = None;
        self.probe_sent = false;
        self.in_flight.clear();
        self.next_index = next_index.max(self.match_index.next());
    }
}
