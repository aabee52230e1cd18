//! The write-ahead log: [`Wal`] implements the core's [`LogStorage`] on segment files.
//!
//! Writes are encoded into a pending buffer; [`Wal::sync`] writes the buffer as one frame with one
//! positioned write and makes it durable with one `fdatasync`. So however many writes a driver
//! groups between two syncs, they cost one sync (group commit), and at most one frame (the last)
//! is ever unsynced. Recovery relies on that (see [`crate::recovery`]): a bad frame followed by a
//! frame valid at its own position is corruption of durable data; a bad frame with nothing valid
//! after it is the torn tail of a crash. A sync group too large for one frame is written as
//! several frames, each synced before the next is written, so that still holds.
//!
//! A write or sync that fails is recorded on the failing thread (see [`crate::failure`]) and the
//! log takes no more writes; the next open cuts the failed frame and carries on.

use crate::broken;
use crate::error::{WalError, WalErrorKind};
use crate::failure::{FailureRecord, FailureSlot};
use crate::format::{
    self, FrameAt, FrameBuffer, Payload, Record, FRAME_ALIGN, SEGMENT_HEADER_BYTES,
};
use crate::log_map::{FrameRef, LogMap, LogState};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{self, segment_name, Allocation, Preallocator, Segment};
use raftengine::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogStorage, LogWrite, StorageError,
    StoredState, Term,
};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Where the log lives and how big its segments are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Data directory; relative paths are relative to the working directory.
    pub dir: PathBuf,
    /// Size of each preallocated segment file (a multiple of 8, at least 4 KiB). A frame larger
    /// than this gets a segment of its own size.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    /// `./raft-data` with 64 MiB segments.
    fn default() -> WalOptions {
        WalOptions {
            dir: PathBuf::from("raft-data"),
            segment_bytes: 64 << 20,
        }
    }
}

impl WalOptions {
    /// Options for a log in `dir`, with the default segment size.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            ..WalOptions::default()
        }
    }

    /// Sets the segment size, in bytes (the `segment_bytes` field).
    pub fn segment_bytes(mut self, bytes: u64) -> WalOptions {
        self.segment_bytes = bytes;
        self
    }
}

/// A durable, segmented log in one data directory. See the module docs for the write path.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    wal_dir: PathBuf,
    segment_bytes: u64,
    /// Held for the life of the log: the OS releases it when the process dies.
    _lock: File,
    /// Ordered by `seq`; the last one receives new frames.
    segments: Vec<Segment>,
    write_offset: u64,
    /// Frames written to the last segment since it was opened here.
    segment_frames: u64,
    /// The number the next frame gets.
    next_frame: u64,
    map: LogMap,
    /// The state as of the last frame written (what a new segment's header records).
    flushed: LogState,
    /// Encoded records waiting for the next sync.
    pending: FrameBuffer,
    /// Run keys that point at the pending buffer.
    pending_keys: Vec<u64>,
    /// A pending body never grows past this: more is written as several frames, each synced.
    /// [`FRAME_BODY_LIMIT`] except in tests.
    frame_body_limit: usize,
    preallocator: Preallocator,
    failure_slot: FailureSlot,
    broken: Option<String>,
    failed: Option<Failure>,
    recovery: RecoveryReport,
}

/// The first failure of a write or sync, after which the log takes no more writes.
#[derive(Debug, Clone)]
struct Failure {
    kind: WalErrorKind,
    reason: String,
}

/// Where a frame was being written when its write or sync failed.
#[derive(Debug, Clone, Copy)]
struct FrameAttempt {
    seq: u64,
    offset: u64,
    len: usize,
}

const LOCK_FILE: &str = "LOCK";
const WAL_DIR: &str = "wal";
/// Room kept in every frame body for the records a new segment's first frame starts with (the
/// hard state, the log start, the commit index and the repair state: at most 68 bytes encoded).
const SEGMENT_STATE_BYTES: usize = 96;
/// The largest pending body: the first frame of a segment adds the segment's state to it.
pub(crate) const FRAME_BODY_LIMIT: usize = format::MAX_FRAME_BODY_BYTES - SEGMENT_STATE_BYTES;

impl Wal {
    /// Opens (or creates) the log in `options.dir`, recovering it (see [`crate::recovery`]):
    /// every frame is checked, the frame of a write or sync that failed earlier and a torn tail
    /// left by a crash are cut, everything cut is reported (and logged), and corruption of
    /// durable data is an error naming the file and offset.
    pub fn open(options: WalOptions) -> Result<Wal, WalError> {
        if options.segment_bytes < 4096
            || options.segment_bytes > format::MAX_SEGMENT_BYTES
            || !options.segment_bytes.is_multiple_of(FRAME_ALIGN as u64)
        {
            return Err(WalError::Options(format!(
                "segment_bytes must be a multiple of {FRAME_ALIGN} between 4096 and {}, got {}",
                format::MAX_SEGMENT_BYTES,
                options.segment_bytes
            )));
        }
        let dir = options.dir;
        let wal_dir = dir.join(WAL_DIR);
        segment::create_dir_durably(&wal_dir)?;
        let lock = lock_dir(&dir)?;
        let broken = broken::read(&dir)?;
        let failure_slot = FailureSlot::open(&dir)?;
        let mut preallocator = Preallocator::new(&wal_dir, options.segment_bytes)?;
        let recovered = recovery::recover(&wal_dir, &failure_slot)?;
        if recovered.report.failed_write.is_some() {
            // The cut is durable: the failure is dealt with.
            failure_slot.clear()?;
        }
        if !recovered.segments.is_empty() {
            preallocator.prepare(Allocation::Zeros);
        }
        Ok(Wal {
            dir,
            wal_dir,
            segment_bytes: options.segment_bytes,
            _lock: lock,
            segments: recovered.segments,
            write_offset: recovered.write_offset,
            segment_frames: 0,
            next_frame: recovered.next_frame,
            flushed: recovered.map.state,
            map: recovered.map,
            pending: FrameBuffer::default(),
            pending_keys: Vec::new(),
            frame_body_limit: FRAME_BODY_LIMIT,
            preallocator,
            failure_slot,
            broken,
            failed: None,
            recovery: recovered.report,
        })
    }

    /// What the open found and did (cuts, a failed write, lost synced data).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The term and vote last written.
    pub fn hard_state(&self) -> HardState {
        self.map.state.hard_state
    }

    /// The last purged entry (index 0 when nothing was purged).
    pub fn log_start(&self) -> LogId {
        self.map.state.log_start
    }

    /// The log is making a segment in the background (a large write to the disk), or has none
    /// yet, so its next write makes the first one.
    pub fn preparing_segment(&self) -> bool {
        self.segments.is_empty() || self.preallocator.busy()
    }

    /// The index of the last entry written (synced or not).
    pub fn last_index(&self) -> LogIndex {
        self.map.state.last_index
    }

    /// Segment files currently holding the log (for tests and status pages).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// `Err` with the first failure of a write or sync, after which the log takes no writes.
    pub fn failure(&self) -> Result<(), WalError> {
        self.check_failed()
    }

    fn check_failed(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(failure) => Err(WalError::Failed {
                kind: failure.kind,
                reason: failure.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Applies one write to the map and encodes it into the pending buffer. A write that would
    /// make the pending frame larger than a frame may be first syncs what is pending, as a frame
    /// of its own (so a huge sync group becomes several syncs, never a frame whose length
    /// overflows its header).
    pub fn write(&mut self, write: &LogWrite) -> Result<(), WalError> {
        self.check_failed()?;
        match write {
            LogWrite::HardState(hs) => self.stage(&Record::HardState {
                term: hs.term.0,
                voted_for: hs.voted_for.map(|n| n.0),
            }),
            LogWrite::TruncateFrom(index) => self.stage(&Record::TruncateFrom { index: index.0 }),
            LogWrite::Purge { through, term } => self.stage(&Record::Purge {
                through: through.0,
                term: term.0,
            }),
            LogWrite::Commit(index) => self.stage(&Record::Commit { index: index.0 }),
            LogWrite::Repair { epoch, repairing } => self.stage(&Record::Repair {
                epoch: *epoch,
                repairing: *repairing,
            }),
            LogWrite::Append(entries) => {
                for entry in entries {
                    self.stage(&Record::Entry {
                        index: entry.index.0,
                        term: entry.term.0,
                        payload: match &entry.payload {
                            EntryPayload::TermStart => Payload::TermStart,
                            EntryPayload::Command(bytes) => Payload::Command(bytes),
                            EntryPayload::Membership(m) => Payload::Membership(m.clone()),
                        },
                    })?;
                }
                Ok(())
            }
        }
    }

    fn stage(&mut self, record: &Record<'_>) -> Result<(), WalError> {
        let before = self.pending.body_len();
        self.pending.push(record);
        let record_bytes = self.pending.body_len() - before;
        if self.pending.body_len() > self.frame_body_limit {
            if before == 0 {
                self.pending.clear();
                return Err(WalError::Refused(format!(
                    "a record of {record_bytes} bytes is larger than a frame may be ({} bytes)",
                    self.frame_body_limit
                )));
            }
            let encoded = self.pending.split_off_body(before);
            self.sync_pending()?;
            self.pending.extend_body(&encoded);
        }
        match self.map.apply(record, FrameRef::Pending, false) {
            Ok(Some(key)) if self.map.runs.get(&key) == Some(&FrameRef::Pending) => {
                self.pending_keys.push(key);
            }
            Ok(_) => {}
            Err(reason) => {
                self.pending
                    .truncate_body(self.pending.body_len() - record_bytes);
                return Err(WalError::Refused(reason));
            }
        }
        Ok(())
    }

    /// Writes everything pending as one frame and makes it durable with one `fdatasync`. After a
    /// failure the log refuses further writes (see [`WalError::Failed`]); if the frame may have
    /// reached the file, the failure is recorded first, on this thread, so that the next open
    /// cuts the frame instead of trusting bytes that may exist only in the page cache.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_failed()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.sync_pending()
    }

    fn sync_pending(&mut self) -> Result<(), WalError> {
        let mut attempt = None;
        let result = self.flush_pending(&mut attempt);
        if let Err(e) = &result {
            let reason = match attempt {
                Some(attempt) => self.record_failure(attempt, e),
                None => e.to_string(),
            };
            self.failed = Some(Failure {
                kind: e.kind(),
                reason,
            });
        }
        result
    }

    /// Records a failed write or sync durably (see [`crate::failure`]) and zeroes the frame's
    /// bytes in the page cache, so that a restart before the machine's does not read them back
    /// even if the record could not be written. Returns the reason to fail later calls with.
    fn record_failure(&mut self, attempt: FrameAttempt, error: &WalError) -> String {
        let record = FailureRecord {
            seq: attempt.seq,
            offset: attempt.offset,
            durable_index: self.flushed.last_index.0,
            unsynced_index: self.map.state.last_index.0,
            reason: error.to_string(),
        };
        let recorded = self.failure_slot.record(&record);
        if let Some(segment) = self.segment(attempt.seq).filter(|_| attempt.len > 0) {
            let _ = segment.write_at(attempt.offset, &vec![0; attempt.len]);
        }
        let slot = self.failure_slot.path().display();
        let segment = self
            .segment(attempt.seq)
            .map_or_else(|| self.wal_dir.clone(), |s| s.path.clone());
        match recorded {
            Ok(()) => {
                tracing::error!(
                    path = %segment.display(),
                    offset = attempt.offset,
                    durable_index = record.durable_index,
                    "log write or sync failed: {error}; recorded in {slot}, the next open cuts \
                     this frame"
                );
                format!(
                    "{error} (recorded in {slot}: the next open cuts the log at {}:{})",
                    segment.display(),
                    attempt.offset
                )
            }
            Err(e) => {
                tracing::error!(
                    path = %segment.display(),
                    offset = attempt.offset,
                    "log write or sync failed: {error}; recording it in {slot} failed too: {e}"
                );
                format!(
                    "{error} (recording the failure in {slot} failed too: {e}; the frame was \
                     zeroed in the page cache only)"
                )
            }
        }
    }

    /// Writes the pending frame and syncs it. `attempt` says where the frame goes while it may
    /// be on file unsynced (`None` before and once it is durable).
    fn flush_pending(&mut self, attempt: &mut Option<FrameAttempt>) -> Result<(), WalError> {
        let fits = self
            .segments
            .last()
            .is_some_and(|s| self.write_offset + self.pending.frame_len() as u64 <= s.capacity);
        // If a roll fails, nothing was written, but a segment may have been made for it.
        *attempt = Some(FrameAttempt {
            seq: self.segments.last().map_or(0, |s| s.seq),
            offset: self.write_offset,
            len: 0,
        });
        let mut rolled = None;
        if !fits {
            // A new segment starts with the state so far, so it can be read without the older
            // segments once those are purged. (A copy of the body, once per segment.)
            let mut first = FrameBuffer::default();
            let hs = self.flushed.hard_state;
            first.push(&Record::HardState {
                term: hs.term.0,
                voted_for: hs.voted_for.map(|n| n.0),
            });
            let start = self.flushed.log_start;
            first.push(&Record::Purge {
                through: start.index.0,
                term: start.term.0,
            });
            first.push(&Record::Commit {
                index: self.flushed.commit.0,
            });
            if self.flushed.repair_epoch > 0 {
                first.push(&Record::Repair {
                    epoch: self.flushed.repair_epoch,
                    repairing: self.flushed.repairing,
                });
            }
            first.extend_body(self.pending.body());
            self.roll(first.frame_len() as u64)?;
            rolled = Some(first);
        }
        // roll() pushed a segment if there was none.
        let segment = self.segments.last().expect("a segment exists after a roll");
        let position = segment.position(self.write_offset);
        let number = self.next_frame;
        let frame = match &mut rolled {
            Some(first) => first.seal(position, number),
            None => self.pending.seal(position, number),
        };
        *attempt = Some(FrameAttempt {
            seq: segment.seq,
            offset: self.write_offset,
            len: frame.len(),
        });
        segment.write_at(self.write_offset, frame)?;
        segment.sync_data()?;
        *attempt = None;
        let written = FrameRef::Disk {
            seq: segment.seq,
            offset: self.write_offset,
            // At most MAX_FRAME_BODY_BYTES + header (FrameBuffer::seal checks): fits a u32.
            len: frame.len() as u32,
        };
        self.write_offset += frame.len() as u64;
        self.segment_frames += 1;
        self.next_frame += 1;
        self.map.written(self.pending_keys.drain(..), written);
        self.pending.clear();
        self.flushed = self.map.state;
        self.delete_purged_segments()
    }

    /// Opens the next segment: the preallocated spare, or for an oversized frame a file of its
    /// own size (made under a temporary name, then renamed, like the spare).
    fn roll(&mut self, frame_bytes: u64) -> Result<(), WalError> {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let first = self.flushed.last_index.0 + 1;
        let path = self.wal_dir.join(segment_name(seq, first));
        // The next spare is allocated for syncs like the ones that filled this segment.
        let frames = self.segment_frames.max(1);
        let next = Allocation::for_average_frame(self.write_offset / frames);
        let needed = SEGMENT_HEADER_BYTES as u64 + frame_bytes;
        if needed > self.segment_bytes {
            let temp = self.wal_dir.join(segment::LARGE_NAME);
            segment::create_segment_file(&temp, needed, Allocation::Zeros)?;
            fs::rename(&temp, &path).map_err(WalError::io(&path))?;
            segment::sync_dir(&self.wal_dir)?;
        } else {
            self.preallocator.install(&path, next)?;
        }
        self.segment_frames = 0;
        let mut segment =
            Segment::open(&self.wal_dir, seq, first)?.map_err(|bad| WalError::Failed {
                kind: WalErrorKind::Io,
                reason: format!("a segment just made reads back damaged: {}", bad.reason),
            })?;
        segment.has_frames = true;
        self.segments.push(segment);
        self.write_offset = SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }

    /// Deletes the oldest segments whose entries are all purged. Every entry of a segment lies
    /// below the first index of the next one (the log ended there when the next one was opened),
    /// so segment `k` may go once the purged prefix reaches `first_index(k + 1) - 1`. The log
    /// start is first written to `START`, so recovery knows where the remaining log begins.
    fn delete_purged_segments(&mut self) -> Result<(), WalError> {
        let start = self.flushed.log_start;
        let keep_from = self
            .segments
            .iter()
            .rposition(|s| s.first_index <= start.index.0 + 1)
            .unwrap_or(0);
        if keep_from == 0 {
            return Ok(());
        }
        write_start(&self.wal_dir, start)?;
        for old in self.segments.drain(..keep_from) {
            fs::remove_file(&old.path).map_err(WalError::io(&old.path))?;
        }
        segment::sync_dir(&self.wal_dir)
    }

    /// Entries `from..=to`, clipped to the log, read from the segment files (each frame's checksum
    /// is checked again) or from the pending buffer.
    pub fn read_entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, WalError> {
        let state = &self.map.state;
        let low = from.0.max(state.log_start.index.0 + 1);
        let high = to.0.min(state.last_index.0);
        let mut out =
            Vec::with_capacity(high.saturating_sub(low).saturating_add(1).min(1 << 16) as usize);
        let mut index = low;
        while index <= high {
            let Some((_, &frame)) = self.map.runs.range(..=index).next_back() else {
                return Err(self.lost(index));
            };
            let run_end = self
                .map
                .runs
                .range(index + 1..)
                .next()
                .map_or(high, |(next, _)| next - 1)
                .min(high);
            let mut slots: Vec<Option<Entry>> = vec![None; (run_end - index + 1) as usize];
            let mut fill = |records: Vec<Record<'_>>| {
                for record in records {
                    if let Record::Entry {
                        index: i,
                        term,
                        payload,
                    } = record
                    {
                        if (index..=run_end).contains(&i) {
                            slots[(i - index) as usize] = Some(Entry {
                                term: Term(term),
                                index: LogIndex(i),
                                payload: match payload {
                                    Payload::TermStart => EntryPayload::TermStart,
                                    Payload::Command(bytes) => {
                                        EntryPayload::Command(bytes.to_vec())
                                    }
                                    Payload::Membership(m) => EntryPayload::Membership(m),
                                },
                            });
                        }
                    }
                }
            };
            match frame {
                FrameRef::Pending => fill(format::decode_records(
                    self.pending.body(),
                    Path::new("<pending>"),
                    0,
                )?),
                FrameRef::Disk { seq, offset, len } => {
                    let segment = self.segment(seq).ok_or_else(|| self.lost(index))?;
                    let data = segment.read_at(offset, len as usize)?;
                    let at = segment.position(offset);
                    let FrameAt::Valid { body, .. } =
                        format::frame_alone(&data, at, &segment.path)?
                    else {
                        return Err(WalError::Corrupt {
                            path: segment.path.clone(),
                            offset,
                            reason: "a frame that was valid no longer reads back".into(),
                        });
                    };
                    fill(format::decode_records(body, &segment.path, offset)?);
                }
            }
            for slot in slots {
                out.push(slot.ok_or_else(|| self.lost(index))?);
            }
            index = run_end + 1;
        }
        Ok(out)
    }

    fn segment(&self, seq: u64) -> Option<&Segment> {
        self.segments
            .binary_search_by_key(&seq, |s| s.seq)
            .ok()
            .map(|i| &self.segments[i])
    }

    fn lost(&self, index: u64) -> WalError {
        WalError::Corrupt {
            path: self.wal_dir.clone(),
            offset: 0,
            reason: format!("entry {index} is missing from the frame the log map points to"),
        }
    }

    /// Records that the node stopped on a fatal error, so that the log refuses to load until an
    /// operator clears the marker (`raftwal clear-broken --data-dir DIR`). Not after the log's
    /// own I/O failure: that was recorded where it happened, the next open recovers from it by
    /// itself, and a node stopped by a full disk must come back without a manual step; the
    /// request is then logged and ignored.
    pub fn mark_broken(&mut self, reason: &str) -> Result<(), WalError> {
        if let Some(failure) = self.failed.as_ref().filter(|f| f.kind == WalErrorKind::Io) {
            tracing::warn!(
                "not marking the log broken ({reason}): it stopped on an I/O failure ({}), which \
                 the next open recovers from without an operator",
                failure.reason
            );
            return Ok(());
        }
        broken::mark(&self.dir, reason)?;
        self.broken = Some(reason.to_string());
        Ok(())
    }

    /// Removes the `BROKEN` marker: the operator checked the data.
    pub fn clear_broken(&mut self) -> Result<(), WalError> {
        broken::remove(&self.dir)?;
        self.broken = None;
        Ok(())
    }

    /// Everything the core needs to restart; refuses while the log is marked broken.
    pub fn load_state(&self) -> Result<StoredState, WalError> {
        if let Some(reason) = &self.broken {
            return Err(WalError::Broken {
                marker: broken::marker_path(&self.dir),
                reason: reason.clone(),
            });
        }
        let state = &self.map.state;
        Ok(StoredState {
            hard_state: state.hard_state,
            log_start: state.log_start,
            entries: self.read_entries(state.log_start.index.next(), state.last_index)?,
            commit: state.commit,
            repair_epoch: state.repair_epoch,
            data_loss: self.data_loss(),
        })
    }

    /// Evidence that data this log had made durable is gone: what recovery found at this open
    /// (see [`RecoveryReport::lost_synced_data`]), or a repair the node had not finished.
    fn data_loss(&self) -> Option<raftengine::DataLoss> {
        if let Some(loss) = &self.recovery.lost_synced_data {
            return Some(raftengine::DataLoss {
                reason: loss.to_string(),
            });
        }
        self.map.state.repairing.then(|| raftengine::DataLoss {
            reason: "a repair after lost data was under way when the node stopped".into(),
        })
    }
}

impl LogStorage for Wal {
    fn load(&self) -> Result<StoredState, StorageError> {
        Ok(self.load_state()?)
    }

    fn write(&mut self, writes: &[LogWrite]) -> Result<(), StorageError> {
        for write in writes {
            Wal::write(self, write)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(Wal::sync(self)?)
    }

    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        Ok(self.read_entries(from, to)?)
    }

    fn mark_broken(&mut self, reason: &str) -> Result<(), StorageError> {
        Ok(Wal::mark_broken(self, reason)?)
    }

    fn clear_broken(&mut self) -> Result<(), StorageError> {
        Ok(Wal::clear_broken(self)?)
    }
}

/// Takes the data directory's lock: no two processes open one directory. (The directory is not
/// synced after making the file: a crash that loses it loses nothing, the next open makes it.)
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(WalError::io(&path))?;
    // The lock belongs to the open file description, which a child forked by this process
    // shares until it execs (std opens files close-on-exec): a log dropped and opened again
    // while another thread starts a process can find its own lock held for that moment.
    for attempt in 1..=LOCK_ATTEMPTS {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if attempt < LOCK_ATTEMPTS => {
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            Err(fs::TryLockError::WouldBlock) => break,
            Err(fs::TryLockError::Error(e)) => return Err(WalError::io(&path)(e)),
        }
    }
    Err(WalError::Locked {
        dir: dir.to_path_buf(),
    })
}

/// How often, and how far apart, taking the directory's lock is tried (about 200 ms in all).
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

const START_FILE: &str = "START";

/// The log start recorded before old segments were deleted (16 bytes: index, term, then a
/// CRC-32C of both); zero when no segment was ever deleted.
pub(crate) fn read_start(wal_dir: &Path) -> Result<LogId, WalError> {
    let path = wal_dir.join(START_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogId::default()),
        Err(e) => return Err(WalError::io(&path)(e)),
    };
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (Some(index), Some(term), Some(crc)) = (word(0), word(8), bytes.get(16..20)) else {
        return Err(WalError::Corrupt {
            path,
            offset: 0,
            reason: "START file is too short".into(),
        });
    };
    if crc32c::crc32c(&bytes[..16]).to_le_bytes() != crc {
        return Err(WalError::Corrupt {
            path,
            offset: 16,
            reason: "START file checksum mismatch".into(),
        });
    }
    Ok(LogId {
        index: LogIndex(index),
        term: Term(term),
    })
}

fn write_start(wal_dir: &Path, start: LogId) -> Result<(), WalError> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&start.index.0.to_le_bytes());
    bytes.extend_from_slice(&start.term.0.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    segment::write_atomically(
        &wal_dir.join(START_FILE),
        &wal_dir.join("START.tmp"),
        &[&bytes],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, to: u64, bytes: usize) -> LogWrite {
        LogWrite::Append(
            (from..=to)
                .map(|i| Entry {
                    term: Term(1),
                    index: LogIndex(i),
                    payload: EntryPayload::Command(vec![(i % 200) as u8 + 1; bytes]),
                })
                .collect(),
        )
    }

    /// The frames of a segment: (offset, body length), read from their headers.
    fn frame_bodies(segment: &Path) -> Vec<(u64, usize)> {
        let bytes = fs::read(segment).expect("read segment");
        let mut frames = Vec::new();
        let mut at = SEGMENT_HEADER_BYTES;
        while bytes[at..at + 4] != [0; 4] {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            frames.push((at as u64, len));
            at += format::frame_len(len);
        }
        frames
    }

    /// The u32 length of a frame cannot hold a sync group above 4 GiB: with the limit lowered,
    /// a group larger than a frame becomes several frames, each synced in turn, and recovery
    /// reads them back. (Before the split, the group was one frame whose length, stored as
    /// `body_len as u32`, wrapped.)
    #[test]
    fn a_sync_group_larger_than_a_frame_is_written_as_several_synced_frames() {
        let root = tempfile::tempdir().expect("temp dir");
        let options = WalOptions::new(root.path()).segment_bytes(1 << 20);
        let mut wal = Wal::open(options.clone()).expect("open");
        wal.frame_body_limit = 1000;
        wal.write(&entries(1, 30, 100)).expect("write");
        let pending: Vec<u64> = wal
            .read_entries(LogIndex(1), LogIndex(30))
            .expect("read across written and pending frames")
            .iter()
            .map(|e| e.index.0)
            .collect();
        assert_eq!(pending, (1..=30).collect::<Vec<_>>());
        wal.sync().expect("sync");
        let segment = wal.segment_paths().pop().expect("a segment");
        let frames = frame_bodies(&segment);
        assert!(frames.len() >= 3, "{frames:?}");
        for &(_, len) in &frames {
            assert!(len <= 1000 + SEGMENT_STATE_BYTES, "{frames:?}");
        }
        // One record larger than a frame may be is refused, and the log goes on.
        let err = wal.write(&entries(31, 31, 2000)).expect_err("too large");
        assert!(matches!(err, WalError::Refused(_)), "{err}");
        wal.write(&entries(31, 32, 10)).expect("write");
        wal.sync().expect("sync");
        let expected = wal.load_state().expect("load");
        drop(wal);
        let wal = Wal::open(options).expect("reopen");
        assert_eq!(wal.recovery_report().frames, frames.len() as u64 + 1);
        assert_eq!(wal.load_state().expect("load"), expected);
        assert_eq!(expected.entries.len(), 32);
    }

    #[test]
    fn the_frame_limit_leaves_room_for_a_segments_first_records() {
        let mut first = FrameBuffer::default();
        first.push(&Record::HardState {
            term: u64::MAX,
            voted_for: Some(u64::MAX),
        });
        first.push(&Record::Purge {
            through: u64::MAX,
            term: u64::MAX,
        });
        first.push(&Record::Commit { index: u64::MAX });
        first.push(&Record::Repair {
            epoch: u64::MAX,
            repairing: true,
        });
        assert!(
            first.body_len() <= SEGMENT_STATE_BYTES,
            "{}",
            first.body_len()
        );
    }
}
