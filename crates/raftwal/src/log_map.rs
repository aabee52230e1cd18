//! The in-memory map of the log: its state (hard state, start, last index) and, for every run of
//! consecutive entries written in one frame, where that frame is.

use crate::format::Record;
use raftengine::{HardState, LogId, LogIndex, NodeId, Term};
use std::collections::BTreeMap;

/// Where the latest version of a run of entries is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRef {
    /// In the pending buffer, not yet written.
    Pending,
    Disk {
        seq: u64,
        offset: u64,
        len: u32,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogState {
    pub hard_state: HardState,
    pub log_start: LogId,
    pub last_index: LogIndex,
    /// The last commit index written (`LogWrite::Commit`).
    pub commit: LogIndex,
    /// The last repair written (`LogWrite::Repair`).
    pub repair_epoch: u64,
    pub repairing: bool,
}

/// The in-memory map of the log: its state and, for every run of consecutive entries written in
/// one frame, that frame. One key per run, not per entry, keeps memory small for big logs.
#[derive(Debug, Default)]
pub struct LogMap {
    pub state: LogState,
    /// First index of a run -> the frame holding it. A run ends where the next one starts.
    pub runs: BTreeMap<u64, FrameRef>,
    /// The frame of the run holding the last entry (saves a map search per appended entry).
    pub tail_frame: Option<FrameRef>,
}

impl LogMap {
    /// Applies one record; `Err` when it does not fit the log. Returns a run key it created.
    ///
    /// When `replaying`, the log start may already be ahead of the records (it comes from the
    /// `START` file written before old segments were deleted), so records about entries at or
    /// below it are history that no longer matters: appends there are skipped and a truncation
    /// there empties the log down to the start. The end state is the same as replaying from the
    /// very first segment.
    pub fn apply(
        &mut self,
        record: &Record<'_>,
        frame: FrameRef,
        replaying: bool,
    ) -> Result<Option<u64>, String> {
        let state = &mut self.state;
        match *record {
            Record::Entry { index, .. } => {
                if replaying && index <= state.log_start.index.0 {
                    return Ok(None);
                }
                if index != state.last_index.0 + 1 {
                    return Err(format!(
                        "entry {index} does not follow the last index {}",
                        state.last_index
                    ));
                }
                state.last_index = LogIndex(index);
                let continues_run =
                    index > state.log_start.index.0 + 1 && self.tail_frame == Some(frame);
                self.tail_frame = Some(frame);
                if continues_run {
                    return Ok(None);
                }
                self.runs.insert(index, frame);
                Ok(Some(index))
            }
            Record::HardState { term, voted_for } => {
                state.hard_state = HardState {
                    term: Term(term),
                    voted_for: voted_for.map(NodeId),
                };
                Ok(None)
            }
            Record::Commit { index } => {
                state.commit = state.commit.max(LogIndex(index));
                Ok(None)
            }
            Record::Repair { epoch, repairing } => {
                state.repair_epoch = epoch;
                state.repairing = repairing;
                Ok(None)
            }
            Record::TruncateFrom { index } => {
                if replaying && index <= state.log_start.index.0 {
                    self.runs.clear();
                    self.tail_frame = None;
                    state.last_index = state.log_start.index;
                    return Ok(None);
                }
                if index <= state.log_start.index.0 {
                    return Err(format!(
                        "truncation from {index} reaches into the purged prefix (through {})",
                        state.log_start.index
                    ));
                }
                if index <= state.last_index.0 {
                    self.runs.split_off(&index);
                    state.last_index = LogIndex(index - 1);
                    self.tail_frame = self.runs.last_key_value().map(|(_, f)| *f);
                }
                Ok(None)
            }
            Record::Purge { through, term } => {
                if through <= state.log_start.index.0 {
                    return Ok(None);
                }
                state.log_start = LogId {
                    index: LogIndex(through),
                    term: Term(term),
                };
                if through >= state.last_index.0 {
                    self.runs.clear();
                    self.tail_frame = None;
                    state.last_index = LogIndex(through);
                    return Ok(None);
                }
                let keep_from = through + 1;
                let holder = self
                    .runs
                    .range(..=keep_from)
                    .next_back()
                    .map(|(k, f)| (*k, *f));
                self.runs = self.runs.split_off(&keep_from);
                match holder {
                    Some((key, frame)) if key < keep_from => {
                        self.runs.insert(keep_from, frame);
                        Ok(Some(keep_from))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// The pending buffer was written as `frame`: runs `keys` (created while it was pending)
    /// now point at it.
    pub fn written(&mut self, keys: impl Iterator<Item = u64>, frame: FrameRef) {
        for key in keys {
            if let Some(frame_ref) = self.runs.get_mut(&key) {
                if *frame_ref == FrameRef::Pending {
                    *frame_ref = frame;
                }
            }
        }
        if self.tail_frame == Some(FrameRef::Pending) {
            self.tail_frame = Some(frame);
        }
    }
}
