//! The write-ahead log: [`Wal`] implements the core's [`LogStorage`] on segment files.
//!
//! Writes are encoded into a pending buffer; [`Wal::sync`] writes the buffer as one frame with one
//! positioned write and makes it durable with one `fdatasync`. So however many writes a driver
//! groups between two syncs, they cost one sync (group commit), and at most one frame (the last)
//! is ever unsynced. Recovery relies on that: a bad frame followed by a valid one is corruption of
//! durable data; a bad frame with nothing valid after it is the torn tail of a crash.

use crate::error::WalError;
use crate::format::{self, FrameAt, FrameBuffer, Payload, Record, FRAME_ALIGN};
use crate::segment::{self, parse_segment_name, segment_name, Allocation, Preallocator, Segment};
use raftengine::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogStorage, LogWrite, NodeId, StorageError,
    StoredState, Term,
};
use std::collections::BTreeMap;
use std::fmt;
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
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            ..WalOptions::default()
        }
    }

    pub fn segment_bytes(mut self, bytes: u64) -> WalOptions {
        self.segment_bytes = bytes;
        self
    }
}

/// What [`Wal::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub frames: u64,
    pub records: u64,
    /// Bytes of segment files read and checked.
    pub bytes_scanned: u64,
    /// The unsynced tail a crash left half-written, which recovery cut (zeroed).
    pub torn_tail: Option<TornTail>,
    /// A last segment that never got a complete frame (a crash right after it was created).
    pub discarded_segment: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segments, {} frames, {} records, {} bytes scanned",
            self.segments, self.frames, self.records, self.bytes_scanned
        )?;
        if let Some(t) = &self.torn_tail {
            write!(
                f,
                "; cut a torn tail of {} bytes at {}:{}",
                t.bytes,
                t.path.display(),
                t.offset
            )?;
        }
        if let Some(p) = &self.discarded_segment {
            write!(f, "; discarded the empty segment {}", p.display())?;
        }
        Ok(())
    }
}

/// Where the latest version of a run of entries is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameRef {
    /// In the pending buffer, not yet written.
    Pending,
    Disk {
        seq: u64,
        offset: u64,
        len: u32,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LogState {
    hard_state: HardState,
    log_start: LogId,
    last_index: LogIndex,
    commit: LogIndex,
    repair_epoch: u64,
    repairing: bool,
}

/// The in-memory map of the log: its state and, for every run of consecutive entries written in
/// one frame, that frame. One key per run, not per entry, keeps memory small for big logs.
#[derive(Debug, Default)]
struct LogMap {
    state: LogState,
    /// First index of a run -> the frame holding it. A run ends where the next one starts.
    runs: BTreeMap<u64, FrameRef>,
    /// The frame of the run holding the last entry (saves a map search per appended entry).
    tail_frame: Option<FrameRef>,
}

impl LogMap {
    /// Applies one record; `Err` when it does not fit the log. Returns a run key it created.
    ///
    /// When `replaying`, the log start may already be ahead of the records (it comes from the
    /// `START` file written before old segments were deleted), so records about entries at or
    /// below it are history that no longer matters: appends there are skipped and a truncation
    /// there empties the log down to the start. The end state is the same as replaying from the
    /// very first segment.
    fn apply(
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
    map: LogMap,
    /// The state as of the last frame written (what a new segment's header records).
    flushed: LogState,
    /// Encoded records waiting for the next sync.
    pending: FrameBuffer,
    /// Run keys that point at the pending buffer.
    pending_keys: Vec<u64>,
    preallocator: Preallocator,
    broken: Option<String>,
    failed: Option<String>,
    recovery: RecoveryReport,
}

const LOCK_FILE: &str = "LOCK";
const BROKEN_FILE: &str = "BROKEN";
const WAL_DIR: &str = "wal";

impl Wal {
    /// Opens (or creates) the log in `options.dir`, recovering it: every frame is checked, a torn
    /// tail left by a crash is cut and reported, and corruption of durable data is an error
    /// naming the file and offset.
    pub fn open(options: WalOptions) -> Result<Wal, WalError> {
        if options.segment_bytes < 4096 || !options.segment_bytes.is_multiple_of(FRAME_ALIGN as u64)
        {
            return Err(WalError::Options(format!(
                "segment_bytes must be a multiple of {FRAME_ALIGN} and at least 4096, got {}",
                options.segment_bytes
            )));
        }
        let dir = options.dir;
        let wal_dir = dir.join(WAL_DIR);
        fs::create_dir_all(&wal_dir).map_err(WalError::io(&wal_dir))?;
        let lock = lock_dir(&dir)?;
        let broken_path = dir.join(BROKEN_FILE);
        let broken = match fs::read_to_string(&broken_path) {
            Ok(reason) => Some(reason),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(WalError::io(&broken_path)(e)),
        };
        let preallocator = Preallocator::new(&wal_dir, options.segment_bytes)?;
        let mut wal = Wal {
            dir,
            segments: list_segments(&wal_dir)?,
            wal_dir,
            segment_bytes: options.segment_bytes,
            _lock: lock,
            write_offset: 0,
            segment_frames: 0,
            map: LogMap::default(),
            flushed: LogState::default(),
            pending: FrameBuffer::default(),
            pending_keys: Vec::new(),
            preallocator,
            broken,
            failed: None,
            recovery: RecoveryReport::default(),
        };
        wal.recover()?;
        Ok(wal)
    }

    fn recover(&mut self) -> Result<(), WalError> {
        let count = self.segments.len();
        let mut report = RecoveryReport {
            segments: count,
            ..RecoveryReport::default()
        };
        self.map.state.log_start = read_start(&self.wal_dir)?;
        self.map.state.last_index = self.map.state.log_start.index;
        if let Some(oldest) = self.segments.first() {
            if oldest.seq > 1 && oldest.first_index > self.map.state.log_start.index.0 + 1 {
                return Err(WalError::Corrupt {
                    path: oldest.path.clone(),
                    offset: 0,
                    reason: format!(
                        "the segments before this one are gone but the log start ({}) does not cover them",
                        self.map.state.log_start.index
                    ),
                });
            }
        }
        let mut end_of_last = 0u64;
        for position in 0..count {
            let is_last = position + 1 == count;
            let segment = &self.segments[position];
            let data = segment.read_all()?;
            report.bytes_scanned += data.len() as u64;
            let scan = scan_segment(&data, segment, &mut self.map, is_last, &mut report)?;
            self.segments[position].has_frames = scan.has_frames;
            if !scan.has_frames && !is_last {
                return Err(WalError::Corrupt {
                    path: self.segments[position].path.clone(),
                    offset: 0,
                    reason: "a segment before the last one holds no frame".into(),
                });
            }
            if is_last {
                end_of_last = scan.end;
                if let Some(tail) = scan.torn {
                    let segment = &self.segments[position];
                    segment.write_at(tail.offset, &vec![0; tail.bytes as usize])?;
                    segment.sync_data()?;
                    report.torn_tail = Some(tail);
                }
            }
        }
        if let Some(last) = self.segments.last() {
            if !last.has_frames {
                // Created by a roll whose first frame never became durable: nothing in it counts.
                let last = self.segments.pop().expect("checked non-empty above");
                fs::remove_file(&last.path).map_err(WalError::io(&last.path))?;
                segment::sync_dir(&self.wal_dir)?;
                report.discarded_segment = Some(last.path);
                report.torn_tail = None;
                end_of_last = self.segments.last().map_or(0, |s| s.capacity);
            }
        }
        self.write_offset = end_of_last;
        self.flushed = self.map.state;
        self.recovery = report;
        if !self.segments.is_empty() {
            self.preallocator.prepare(Allocation::Zeros);
        }
        Ok(())
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn hard_state(&self) -> HardState {
        self.map.state.hard_state
    }

    pub fn log_start(&self) -> LogId {
        self.map.state.log_start
    }

    /// The log is making a segment in the background (a large write to the disk), or has none
    /// yet, so its next write makes the first one.
    pub fn preparing_segment(&self) -> bool {
        self.segments.is_empty() || self.preallocator.busy()
    }

    pub fn last_index(&self) -> LogIndex {
        self.map.state.last_index
    }

    /// Segment files currently holding the log (for tests and status pages).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    fn check_failed(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(reason) => Err(WalError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Applies one write to the map and encodes it into the pending buffer.
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
        let created = self
            .map
            .apply(record, FrameRef::Pending, false)
            .map_err(WalError::Refused)?;
        if let Some(key) = created {
            if self.map.runs.get(&key) == Some(&FrameRef::Pending) {
                self.pending_keys.push(key);
            }
        }
        self.pending.push(record);
        Ok(())
    }

    /// Writes everything pending as one frame and makes it durable with one `fdatasync`. After a
    /// failure the log refuses further writes (see [`WalError::Failed`]).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_failed()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.flush_pending();
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn flush_pending(&mut self) -> Result<(), WalError> {
        let fits = self
            .segments
            .last()
            .is_some_and(|s| self.write_offset + self.pending.frame_len() as u64 <= s.capacity);
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
        let frame = match &mut rolled {
            Some(first) => first.seal(),
            None => self.pending.seal(),
        };
        let segment = self.segments.last().expect("a segment exists after a roll");
        segment.write_at(self.write_offset, frame)?;
        segment.sync_data()?;
        let written = FrameRef::Disk {
            seq: segment.seq,
            offset: self.write_offset,
            len: frame.len() as u32,
        };
        self.write_offset += frame.len() as u64;
        self.segment_frames += 1;
        for key in self.pending_keys.drain(..) {
            if let Some(frame_ref) = self.map.runs.get_mut(&key) {
                if *frame_ref == FrameRef::Pending {
                    *frame_ref = written;
                }
            }
        }
        self.map.tail_frame =
            self.map
                .tail_frame
                .map(|f| if f == FrameRef::Pending { written } else { f });
        self.pending.clear();
        self.flushed = self.map.state;
        self.delete_purged_segments()
    }

    /// Opens the next segment: the preallocated spare, or for an oversized frame a file of its
    /// own size.
    fn roll(&mut self, frame_bytes: u64) -> Result<(), WalError> {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let first = self.flushed.last_index.0 + 1;
        let path = self.wal_dir.join(segment_name(seq, first));
        // The next spare is allocated for syncs like the ones that filled this segment.
        let frames = self.segment_frames.max(1);
        let next = Allocation::for_average_frame(self.write_offset / frames);
        if frame_bytes > self.segment_bytes {
            segment::create_segment_file(&path, frame_bytes, Allocation::Zeros)?;
            segment::sync_dir(&self.wal_dir)?;
        } else {
            self.preallocator.install(&path, next)?;
        }
        self.segment_frames = 0;
        let mut segment = Segment::open(&self.wal_dir, seq, first)?;
        segment.has_frames = true;
        self.segments.push(segment);
        self.write_offset = 0;
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
                    let FrameAt::Valid { body, .. } = format::frame_at(&data, 0, &segment.path)?
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

    pub fn mark_broken(&mut self, reason: &str) -> Result<(), WalError> {
        segment::write_atomically(
            &self.dir.join(BROKEN_FILE),
            &self.dir.join("BROKEN.tmp"),
            &[reason.as_bytes()],
        )?;
        self.broken = Some(reason.to_string());
        Ok(())
    }

    pub fn clear_broken(&mut self) -> Result<(), WalError> {
        let path = self.dir.join(BROKEN_FILE);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(WalError::io(&path)(e))
            }
            _ => {}
        }
        segment::sync_dir(&self.dir)?;
        self.broken = None;
        Ok(())
    }

    /// Everything the core needs to restart; refuses while the log is marked broken.
    pub fn load_state(&self) -> Result<StoredState, WalError> {
        if let Some(reason) = &self.broken {
            return Err(WalError::Broken(reason.clone()));
        }
        let state = &self.map.state;
        Ok(StoredState {
            hard_state: state.hard_state,
            log_start: state.log_start,
            entries: self.read_entries(state.log_start.index.next(), state.last_index)?,
            commit: state.commit,
            repair_epoch: state.repair_epoch,
            data_loss: state.repairing.then(|| raftengine::DataLoss {
                reason: "a repair after lost data was under way when the node stopped".into(),
            }),
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

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(WalError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(WalError::io(&path)(e)),
    }
}

/// The segment files of `wal_dir` in `seq` order; a missing `seq` in the middle is corruption
/// (a deleted file would silently lose entries).
fn list_segments(wal_dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut found = Vec::new();
    for item in fs::read_dir(wal_dir).map_err(WalError::io(wal_dir))? {
        let item = item.map_err(WalError::io(wal_dir))?;
        if let Some(name) = item.file_name().to_str().and_then(parse_segment_name) {
            found.push(name);
        }
    }
    found.sort_unstable();
    let mut segments = Vec::with_capacity(found.len());
    for (i, &(seq, first)) in found.iter().enumerate() {
        if i > 0 && seq != found[i - 1].0 + 1 {
            return Err(WalError::Corrupt {
                path: wal_dir.join(segment_name(found[i - 1].0 + 1, 0)),
                offset: 0,
                reason: format!(
                    "segment {} is missing between {} and {}",
                    found[i - 1].0 + 1,
                    segment_name(found[i - 1].0, found[i - 1].1),
                    segment_name(seq, first)
                ),
            });
        }
        segments.push(Segment::open(wal_dir, seq, first)?);
    }
    Ok(segments)
}

struct SegmentScan {
    /// Offset just past the last valid frame.
    end: u64,
    has_frames: bool,
    torn: Option<TornTail>,
}

/// Replays one segment into `map`. Handles the end of the written data: zeros are the normal
/// end; anything else is a torn tail (last segment, nothing valid after it) or corruption.
fn scan_segment(
    data: &[u8],
    segment: &Segment,
    map: &mut LogMap,
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<SegmentScan, WalError> {
    let path = &segment.path;
    let mut offset = 0usize;
    let mut has_frames = false;
    let stop_reason = loop {
        match format::frame_at(data, offset, path)? {
            FrameAt::Valid { body, len } => {
                let records = format::decode_records(body, path, offset as u64)?;
                if !has_frames && !starts_with_header(&records) {
                    return Err(WalError::Corrupt {
                        path: path.clone(),
                        offset: offset as u64,
                        reason:
                            "the first frame of a segment does not start with the segment header"
                                .into(),
                    });
                }
                has_frames = true;
                let frame = FrameRef::Disk {
                    seq: segment.seq,
                    offset: offset as u64,
                    len: len as u32,
                };
                for record in &records {
                    map.apply(record, frame, true)
                        .map_err(|reason| WalError::Corrupt {
                            path: path.clone(),
                            offset: offset as u64,
                            reason,
                        })?;
                }
                report.frames += 1;
                report.records += records.len() as u64;
                offset += len;
            }
            FrameAt::End => break None,
            FrameAt::Bad { reason } => break Some(reason),
        }
    };
    let garbage_end = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if stop_reason.is_none() && garbage_end <= offset {
        return Ok(SegmentScan {
            end: offset as u64,
            has_frames,
            torn: None,
        });
    }
    let reason = stop_reason.unwrap_or_else(|| "non-zero bytes after the end of the data".into());
    if let Some(valid) = find_valid_frame(data, offset + FRAME_ALIGN, path) {
        return Err(WalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason: format!(
                "{reason}, but a valid frame follows at offset {valid}: durable data is damaged"
            ),
        });
    }
    if !is_last {
        return Err(WalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason: format!("{reason} in a segment that was completely synced"),
        });
    }
    Ok(SegmentScan {
        end: offset as u64,
        has_frames,
        torn: Some(TornTail {
            path: path.clone(),
            offset: offset as u64,
            bytes: (garbage_end - offset) as u64,
        }),
    })
}

/// A segment's first frame starts with the hard state and log start as of its creation.
fn starts_with_header(records: &[Record<'_>]) -> bool {
    matches!(
        records,
        [Record::HardState { .. }, Record::Purge { .. }, ..]
    )
}

const START_FILE: &str = "START";

/// The log start recorded before old segments were deleted (16 bytes: index, term, then a
/// CRC-32C of both); zero when no segment was ever deleted.
fn read_start(wal_dir: &Path) -> Result<LogId, WalError> {
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

fn find_valid_frame(data: &[u8], from: usize, path: &Path) -> Option<usize> {
    (from.next_multiple_of(FRAME_ALIGN)..data.len())
        .step_by(FRAME_ALIGN)
        .find(|&at| {
            !matches!(
                format::frame_at(data, at, path),
                Ok(FrameAt::End) | Ok(FrameAt::Bad { .. })
            )
        })
}
