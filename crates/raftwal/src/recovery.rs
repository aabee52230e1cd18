//! Recovery: what [`crate::Wal::open`] does with the segment files it finds, and the report of it.
//!
//! Rules, in the order they apply:
//!
//! 1. **A recorded write or sync failure** (see [`crate::failure`]): the frame it names, and
//!    anything after it, is cut before the scan, even if it reads back intact (it may exist only
//!    in the page cache). Reported as [`CutCause::FailedWrite`] and [`RecoveryReport::failed_write`].
//! 2. **Every segment is checked and replayed**: its header, then its frames, each valid only
//!    at its own position and numbered one after the other across segments.
//! 3. **The end of the newest segment**: a bad frame with no frame valid at its own position
//!    after it is the unsynced tail of a crash ([`CutCause::TornWrite`]), zeroed; a last segment
//!    left with no frame is deleted ([`CutCause::EmptySegment`]). This is an ordinary crash.
//! 4. **Evidence that synced data was lost**, cut and reported in
//!    [`RecoveryReport::lost_synced_data`]: the newest segment is shorter than the capacity its
//!    header records (its size is restored), its last frame is complete but fails its checksum
//!    (a crash leaves an unwritten sector, which reads as zeros), or its header is missing or
//!    damaged with nothing after it (headers are synced before a segment is used).
//! 5. **Corruption** refuses to start ([`WalError::Corrupt`] with file and offset): damage
//!    followed by a frame valid at its own position, any damage in a segment before the newest
//!    (those were completely synced), frames missing between segments, a missing segment.
//!
//! Every cut is logged (`tracing` warn, error when synced data may be lost) with the file,
//! offset, bytes and the log's last index after recovery.

use crate::error::WalError;
use crate::failure::{FailureRecord, FailureSlot};
use crate::format::{self, FrameAt, Record, FRAME_ALIGN, SEGMENT_HEADER_BYTES};
use crate::log_map::{FrameRef, LogMap};
use crate::segment::{self, parse_segment_name, segment_name, BadHeader, Segment};
use raftengine::LogIndex;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What [`crate::Wal::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Valid frames read.
    pub frames: u64,
    /// Records (hard state, entries, purges, ...) decoded from them.
    pub records: u64,
    /// Bytes of segment files read and checked.
    pub bytes_scanned: u64,
    /// The log's last index after recovery.
    pub last_index: LogIndex,
    /// Everything recovery removed from the log, in the order found (each also logged).
    pub cuts: Vec<Cut>,
    /// The previous run stopped after a write or sync failed and recorded where; that frame was
    /// cut (it is among `cuts` if any of its bytes were on file).
    pub failed_write: Option<FailedWrite>,
    /// Evidence that data which had been synced (and possibly acknowledged) is gone: the log
    /// may end before entries this node once reported durable. `None` after an ordinary crash
    /// (a torn unsynced last frame, nothing valid after it, the file at its full size) and after
    /// a failed write. A node with `Some` here should not count as a voter that has every
    /// entry it acknowledged until it has caught up from the others.
    pub lost_synced_data: Option<SyncedDataLoss>,
}

/// A part of the log recovery removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment file.
    pub path: PathBuf,
    /// Where the cut starts, in bytes.
    pub offset: u64,
    /// Bytes removed: non-zero bytes zeroed from `offset` on, or a deleted file's size.
    pub bytes: u64,
    /// Why it was cut.
    pub cause: CutCause,
}

/// Why recovery removed part of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutCause {
    /// The unsynced last frame, half written when the process or machine stopped (ordinary).
    TornWrite,
    /// The frame of a write or sync that failed, as the failure record says.
    FailedWrite,
    /// A complete last frame that fails its checksum: damaged after it was written.
    DamagedFrame,
    /// A newest segment with no complete frame, deleted: a roll whose first frame never became
    /// durable (ordinary).
    EmptySegment,
    /// A newest segment whose header is missing or damaged, with nothing after it, deleted.
    DamagedSegment,
}

/// A write or sync that failed in an earlier run, from the failure record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedWrite {
    /// The segment the failed frame was written to, and the frame's offset.
    pub path: PathBuf,
    /// The failed frame's offset in `path`, in bytes.
    pub offset: u64,
    /// The log's last index that was durable before the failed frame.
    pub durable_index: LogIndex,
    /// The last index the failed frame would have made durable (never reported durable).
    pub unsynced_index: LogIndex,
    /// The error, as the failing thread saw it.
    pub reason: String,
}

/// Evidence that synced data was lost (the first found; every cut is in `cuts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedDataLoss {
    /// The segment file.
    pub path: PathBuf,
    /// Where the loss was found, in bytes.
    pub offset: u64,
    /// What was found.
    pub reason: LossReason,
    /// The last index that survived; entries after it may have been lost.
    pub last_index: LogIndex,
}

/// How synced data was found lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The newest segment file is shorter than the capacity its header records.
    Truncated {
        /// The file's length, in bytes.
        len: u64,
        /// The capacity its header records, in bytes.
        capacity: u64,
    },
    /// The newest segment's last frame is complete but fails its checksum.
    DamagedLastFrame,
    /// The newest segment's header is missing (a file of `len` bytes) or damaged.
    DamagedSegmentHeader {
        /// The file's length, in bytes.
        len: u64,
    },
}

impl fmt::Display for CutCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutCause::TornWrite => "torn unsynced write",
            CutCause::FailedWrite => "frame of a failed write or sync",
            CutCause::DamagedFrame => "damaged last frame",
            CutCause::EmptySegment => "segment without a complete frame, deleted",
            CutCause::DamagedSegment => "segment with a damaged header, deleted",
        })
    }
}

impl fmt::Display for SyncedDataLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}:{}; the log ends at index {}",
            self.reason,
            self.path.display(),
            self.offset,
            self.last_index
        )
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::Truncated { len, capacity } => write!(
                f,
                "the newest segment is {len} bytes, shorter than its capacity of {capacity}"
            ),
            LossReason::DamagedLastFrame => {
                f.write_str("the last frame is complete but fails its checksum")
            }
            LossReason::DamagedSegmentHeader { len } => write!(
                f,
                "the newest segment's header is missing or damaged ({len} bytes on file)"
            ),
        }
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segments, {} frames, {} records, {} bytes scanned, last index {}",
            self.segments, self.frames, self.records, self.bytes_scanned, self.last_index
        )?;
        if let Some(w) = &self.failed_write {
            write!(
                f,
                "; a write failed earlier at {}:{} ({}): entries after {} up to {} were never durable",
                w.path.display(),
                w.offset,
                w.reason,
                w.durable_index,
                w.unsynced_index
            )?;
        }
        for cut in &self.cuts {
            write!(
                f,
                "; cut {} bytes at {}:{} ({})",
                cut.bytes,
                cut.path.display(),
                cut.offset,
                cut.cause
            )?;
        }
        if let Some(loss) = &self.lost_synced_data {
            write!(
                f,
                "; SYNCED DATA MAY BE LOST at {}:{}: {}; the log now ends at {}",
                loss.path.display(),
                loss.offset,
                loss.reason,
                loss.last_index
            )?;
        }
        Ok(())
    }
}

/// The log as recovery rebuilt it.
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub map: LogMap,
    /// Where the next frame goes in the last segment.
    pub write_offset: u64,
    /// The number of the next frame.
    pub next_frame: u64,
    pub report: RecoveryReport,
}

/// What the replay has built so far.
struct Replay {
    segments: Vec<Segment>,
    map: LogMap,
    /// The number of the last valid frame seen.
    last_frame: Option<u64>,
    write_offset: u64,
}

impl Replay {
    /// The next frame goes into a new segment (the previous one counts as full).
    fn roll_next(&mut self) {
        self.write_offset = self.segments.last().map_or(0, |s| s.capacity);
    }
}

pub(crate) fn recover(wal_dir: &Path, slot: &FailureSlot) -> Result<Recovered, WalError> {
    let mut report = RecoveryReport::default();
    let mut map = LogMap::default();
    map.state.log_start = crate::wal::read_start(wal_dir)?;
    map.state.last_index = map.state.log_start.index;
    let mut names = list_segment_names(wal_dir)?;
    if let Some(record) = slot.read()? {
        cut_failed_write(wal_dir, &record, &mut names, &mut report)?;
    }
    report.segments = names.len();
    check_start_covers(wal_dir, &names, &map)?;
    let mut replay = Replay {
        segments: Vec::with_capacity(names.len()),
        map,
        last_frame: None,
        write_offset: 0,
    };
    for (position, &(seq, first)) in names.iter().enumerate() {
        let is_last = position + 1 == names.len();
        let segment = match Segment::open(wal_dir, seq, first)? {
            Ok(segment) => segment,
            Err(bad) if is_last => {
                discard_damaged_last(bad, &mut report)?;
                replay.roll_next();
                break;
            }
            Err(bad) => {
                return Err(WalError::Corrupt {
                    path: bad.path,
                    offset: 0,
                    reason: format!("{} in a segment that was completely synced", bad.reason),
                })
            }
        };
        replay_segment(segment, is_last, &mut replay, &mut report)?;
    }
    let last_index = replay.map.state.last_index;
    report.last_index = last_index;
    if let Some(loss) = &mut report.lost_synced_data {
        loss.last_index = last_index;
    }
    log_report(&report);
    Ok(Recovered {
        segments: replay.segments,
        map: replay.map,
        write_offset: replay.write_offset,
        next_frame: replay.last_frame.map_or(1, |n| n + 1),
        report,
    })
}

/// Segments deleted after a purge must be covered by the log start in `START`.
fn check_start_covers(wal_dir: &Path, names: &[(u64, u64)], map: &LogMap) -> Result<(), WalError> {
    let start = map.state.log_start.index;
    match names.first() {
        Some(&(seq, first)) if seq > 1 && first > start.0 + 1 => Err(WalError::Corrupt {
            path: wal_dir.join(segment_name(seq, first)),
            offset: 0,
            reason: format!(
                "the segments before this one are gone but the log start ({start}) does not \
                 cover them"
            ),
        }),
        _ => Ok(()),
    }
}

/// Checks and replays one segment whose header is good.
fn replay_segment(
    mut segment: Segment,
    is_last: bool,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<(), WalError> {
    let data = segment.read_all()?;
    report.bytes_scanned += data.len() as u64;
    let len = data.len() as u64;
    if len > segment.capacity {
        return Err(WalError::Corrupt {
            path: segment.path,
            offset: segment.capacity,
            reason: format!("{len} bytes, longer than the capacity its header records"),
        });
    }
    if len < segment.capacity {
        note_short_segment(&segment, len, is_last, report);
    }
    let scan = scan_segment(&data, &segment, replay, is_last, report)?;
    segment.has_frames = scan.last_frame.is_some();
    if !segment.has_frames && !is_last {
        return Err(WalError::Corrupt {
            path: segment.path,
            offset: SEGMENT_HEADER_BYTES as u64,
            reason: "a segment before the last one holds no frame".into(),
        });
    }
    if is_last {
        replay.write_offset = finish_last(&segment, &data, scan, report)?;
        if !segment.has_frames {
            replay.roll_next();
            return Ok(());
        }
    }
    replay.segments.push(segment);
    Ok(())
}

/// The segment files of `wal_dir` in `seq` order; a missing `seq` in the middle is corruption
/// (a deleted file would silently lose entries).
fn list_segment_names(wal_dir: &Path) -> Result<Vec<(u64, u64)>, WalError> {
    let mut found = Vec::new();
    for item in fs::read_dir(wal_dir).map_err(WalError::io(wal_dir))? {
        let item = item.map_err(WalError::io(wal_dir))?;
        if let Some(name) = item.file_name().to_str().and_then(parse_segment_name) {
            found.push(name);
        }
    }
    found.sort_unstable();
    for pair in found.windows(2) {
        let ((seq, first), (next_seq, next_first)) = (pair[0], pair[1]);
        if next_seq != seq + 1 {
            return Err(WalError::Corrupt {
                path: wal_dir.join(segment_name(seq + 1, 0)),
                offset: 0,
                reason: format!(
                    "segment {} is missing between {} and {}",
                    seq + 1,
                    segment_name(seq, first),
                    segment_name(next_seq, next_first)
                ),
            });
        }
    }
    Ok(found)
}

/// Rule 1: cuts the frame a failure record names, and any segment made after it.
fn cut_failed_write(
    wal_dir: &Path,
    record: &FailureRecord,
    names: &mut Vec<(u64, u64)>,
    report: &mut RecoveryReport,
) -> Result<(), WalError> {
    let mut removed = false;
    for &(seq, first) in names.iter().filter(|(seq, _)| *seq > record.seq) {
        let path = wal_dir.join(segment_name(seq, first));
        let bytes = fs::metadata(&path).map_err(WalError::io(&path))?.len();
        fs::remove_file(&path).map_err(WalError::io(&path))?;
        report.cuts.push(Cut {
            path,
            offset: 0,
            bytes,
            cause: CutCause::FailedWrite,
        });
        removed = true;
    }
    names.retain(|(seq, _)| *seq <= record.seq);
    if removed {
        segment::sync_dir(wal_dir)?;
    }
    let failed = names.iter().find(|(seq, _)| *seq == record.seq);
    // No such segment: the failure came before its first segment was made.
    let path = failed.map_or_else(
        || wal_dir.to_path_buf(),
        |&(seq, first)| wal_dir.join(segment_name(seq, first)),
    );
    if failed.is_some() {
        let bytes = zero_from(&path, record.offset)?;
        if bytes > 0 {
            report.cuts.push(Cut {
                path: path.clone(),
                offset: record.offset,
                bytes,
                cause: CutCause::FailedWrite,
            });
        }
    }
    report.failed_write = Some(FailedWrite {
        path,
        offset: record.offset,
        durable_index: LogIndex(record.durable_index),
        unsynced_index: LogIndex(record.unsynced_index),
        reason: record.reason.clone(),
    });
    Ok(())
}

/// Zeroes the non-zero bytes of `path` from `offset` on, durably; returns how many there were
/// (from `offset` to the last non-zero byte).
fn zero_from(path: &Path, offset: u64) -> Result<u64, WalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(WalError::io(path))?;
    let len = file.metadata().map_err(WalError::io(path))?.len();
    if offset >= len {
        return Ok(0);
    }
    let mut data = vec![0u8; (len - offset) as usize];
    file.read_exact_at(&mut data, offset)
        .map_err(WalError::io(path))?;
    let Some(last) = data.iter().rposition(|&b| b != 0) else {
        return Ok(0);
    };
    file.write_all_at(&vec![0u8; last + 1], offset)
        .and_then(|()| file.sync_data())
        .map_err(WalError::io(path))?;
    Ok(last as u64 + 1)
}

/// A newest segment whose header is missing or damaged: with nothing after the header it is
/// deleted and reported as lost synced data (headers are synced before a segment is used, so
/// no crash damages one); with data after it, that data cannot be checked: corruption.
fn discard_damaged_last(bad: BadHeader, report: &mut RecoveryReport) -> Result<(), WalError> {
    let data = fs::read(&bad.path).map_err(WalError::io(&bad.path))?;
    if data.iter().skip(SEGMENT_HEADER_BYTES).any(|&b| b != 0) {
        return Err(WalError::Corrupt {
            path: bad.path,
            offset: 0,
            reason: format!(
                "{}, and data follows that cannot be checked without it",
                bad.reason
            ),
        });
    }
    fs::remove_file(&bad.path).map_err(WalError::io(&bad.path))?;
    if let Some(dir) = bad.path.parent() {
        segment::sync_dir(dir)?;
    }
    note_loss(
        report,
        &bad.path,
        0,
        LossReason::DamagedSegmentHeader { len: bad.len },
    );
    report.cuts.push(Cut {
        path: bad.path,
        offset: 0,
        bytes: bad.len,
        cause: CutCause::DamagedSegment,
    });
    Ok(())
}

/// A segment file shorter than its capacity lost its end. In the newest segment that is
/// evidence of lost synced data; in an older one the scan and the frame numbers of the next
/// segment show whether anything is missing (a shorter file of zeros is harmless).
fn note_short_segment(segment: &Segment, len: u64, is_last: bool, report: &mut RecoveryReport) {
    let capacity = segment.capacity;
    if is_last {
        note_loss(
            report,
            &segment.path,
            len,
            LossReason::Truncated { len, capacity },
        );
    } else {
        tracing::warn!(
            path = %segment.path.display(),
            len,
            capacity,
            "segment file is shorter than its capacity; checking that no frame is missing"
        );
    }
}

fn note_loss(report: &mut RecoveryReport, path: &Path, offset: u64, reason: LossReason) {
    if report.lost_synced_data.is_none() {
        report.lost_synced_data = Some(SyncedDataLoss {
            path: path.to_path_buf(),
            offset,
            reason,
            last_index: LogIndex(0),
        });
    }
}

/// The newest segment after its scan: zero a torn or damaged tail, give a short file its size
/// back; or, if it holds no frame, delete it. Returns where the next frame goes.
fn finish_last(
    segment: &Segment,
    data: &[u8],
    scan: SegmentScan,
    report: &mut RecoveryReport,
) -> Result<u64, WalError> {
    if let Some(cut) = &scan.cut {
        if cut.cause == CutCause::DamagedFrame {
            note_loss(report, &cut.path, cut.offset, LossReason::DamagedLastFrame);
        }
        report.cuts.push(cut.clone());
    }
    if scan.last_frame.is_none() {
        // Created by a roll whose first frame never became durable: nothing in it counts.
        fs::remove_file(&segment.path).map_err(WalError::io(&segment.path))?;
        if let Some(dir) = segment.path.parent() {
            segment::sync_dir(dir)?;
        }
        report.cuts.push(Cut {
            path: segment.path.clone(),
            offset: 0,
            bytes: data.len() as u64,
            cause: CutCause::EmptySegment,
        });
        return Ok(0);
    }
    if let Some(cut) = &scan.cut {
        segment.write_at(cut.offset, &vec![0; cut.bytes as usize])?;
        segment.sync_data()?;
    }
    if (data.len() as u64) < segment.capacity {
        segment.restore_capacity()?;
    }
    Ok(scan.end)
}

fn log_report(report: &RecoveryReport) {
    let last_index = report.last_index.0;
    if let Some(w) = &report.failed_write {
        tracing::warn!(
            path = %w.path.display(),
            offset = w.offset,
            durable_index = w.durable_index.0,
            unsynced_index = w.unsynced_index.0,
            reason = %w.reason,
            "a write or sync failed in the previous run: its frame is cut, the log continues"
        );
    }
    for cut in &report.cuts {
        tracing::warn!(
            path = %cut.path.display(),
            offset = cut.offset,
            bytes = cut.bytes,
            cause = %cut.cause,
            last_index,
            "recovery cut the log"
        );
    }
    if let Some(loss) = &report.lost_synced_data {
        tracing::error!(
            path = %loss.path.display(),
            offset = loss.offset,
            reason = %loss.reason,
            last_index,
            "recovery found evidence that synced data was lost: entries this node acknowledged \
             may be gone"
        );
    }
}

struct SegmentScan {
    /// Offset just past the last valid frame.
    end: u64,
    /// Number of the segment's last valid frame (`None`: no valid frame).
    last_frame: Option<u64>,
    /// What to cut at the end (newest segment only).
    cut: Option<Cut>,
}

/// Replays one segment into the map, then judges what follows its last valid frame: zeros (the
/// end), a tail to cut (newest segment only), or corruption.
fn scan_segment(
    data: &[u8],
    segment: &Segment,
    replay: &mut Replay,
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<SegmentScan, WalError> {
    let frames = replay_frames(data, segment, replay, report)?;
    let end = frames.end;
    let garbage_end = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if frames.stop_reason.is_none() && garbage_end <= end {
        return Ok(SegmentScan {
            end: end as u64,
            last_frame: frames.last_here,
            cut: None,
        });
    }
    let path = &segment.path;
    let reason = frames
        .stop_reason
        .unwrap_or_else(|| "non-zero bytes after the end of the data".into());
    let corrupt = |reason: String| WalError::Corrupt {
        path: path.clone(),
        offset: end as u64,
        reason,
    };
    if let Some(valid) = find_valid_frame(data, end + FRAME_ALIGN, segment) {
        return Err(corrupt(format!(
            "{reason}, but a frame valid at its own position follows at offset {valid}: \
             durable data is damaged"
        )));
    }
    if !is_last {
        return Err(corrupt(format!(
            "{reason} in a segment that was completely synced"
        )));
    }
    let cause = if format::looks_torn(data, end) {
        CutCause::TornWrite
    } else {
        CutCause::DamagedFrame
    };
    Ok(SegmentScan {
        end: end as u64,
        last_frame: frames.last_here,
        cut: Some(Cut {
            path: path.clone(),
            offset: end as u64,
            bytes: (garbage_end.max(end) - end) as u64,
            cause,
        }),
    })
}

/// Where the valid frames of a segment end, and why.
struct Frames {
    /// Offset just past the last valid frame.
    end: usize,
    /// Why the next offset holds no valid frame (`None`: an all-zero header).
    stop_reason: Option<String>,
    /// The number of the segment's last valid frame.
    last_here: Option<u64>,
}

/// Replays the valid frames of a segment, each checked at its position and by its number.
fn replay_frames(
    data: &[u8],
    segment: &Segment,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<Frames, WalError> {
    let path = &segment.path;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut last_here = None;
    loop {
        let (body, len, number) =
            match format::frame_at(data, segment.position(offset as u64), path)? {
                FrameAt::Valid { body, len, number } => (body, len, number),
                FrameAt::End => {
                    return Ok(Frames {
                        end: offset,
                        stop_reason: None,
                        last_here,
                    })
                }
                FrameAt::Bad { reason } => {
                    return Ok(Frames {
                        end: offset,
                        stop_reason: Some(reason),
                        last_here,
                    })
                }
            };
        let corrupt = |reason: String| WalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        // No writer numbers 2^64 - 1 frames; refusing that number keeps `number + 1` (here and
        // for the next frame) from overflowing.
        if number == u64::MAX {
            return Err(corrupt(format!(
                "frame number {number} is beyond any the log reaches"
            )));
        }
        if let Some(previous) = replay.last_frame.filter(|&p| number != p + 1) {
            return Err(corrupt(format!(
                "frame number {number} follows frame {previous}: frames are missing"
            )));
        }
        let records = format::decode_records(body, path, offset as u64)?;
        if last_here.is_none() && !starts_with_header(&records) {
            return Err(corrupt(
                "the first frame of a segment does not start with the segment's state".into(),
            ));
        }
        let frame = FrameRef::Disk {
            seq: segment.seq,
            offset: offset as u64,
            // Frames are at most MAX_FRAME_BODY_BYTES + header, which fits a u32.
            len: len as u32,
        };
        for record in &records {
            replay.map.apply(record, frame, true).map_err(corrupt)?;
        }
        report.frames += 1;
        report.records += records.len() as u64;
        replay.last_frame = Some(number);
        last_here = Some(number);
        offset += len;
    }
}

/// A segment's first frame starts with the hard state and log start as of its creation.
fn starts_with_header(records: &[Record<'_>]) -> bool {
    matches!(
        records,
        [Record::HardState { .. }, Record::Purge { .. }, ..]
    )
}

/// The first offset from `from` holding a frame valid at that very offset.
fn find_valid_frame(data: &[u8], from: usize, segment: &Segment) -> Option<usize> {
    (from.next_multiple_of(FRAME_ALIGN)..data.len())
        .step_by(FRAME_ALIGN)
        .find(|&at| {
            !matches!(
                format::frame_at(data, segment.position(at as u64), &segment.path),
                Ok(FrameAt::End) | Ok(FrameAt::Bad { .. })
            )
        })
}
