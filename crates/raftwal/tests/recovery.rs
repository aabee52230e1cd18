//! Recovery reports, refusals with clear errors, the directory lock, snapshots and group commit.

use raftengine::{
    Entry, EntryPayload, LogId, LogIndex, LogStorage, LogWrite, Membership, NodeId, PersistBatch,
    StorageError, Term,
};
use raftwal::{
    Cut, CutCause, Durable, GroupCommit, LossReason, SnapshotStore, SyncedDataLoss, Wal, WalError,
    WalErrorKind, WalOptions,
};
use std::fs;
use std::path::Path;
use std::sync::mpsc;

mod common;
use common::{entries, reporting};

fn open(dir: &Path) -> Result<Wal, WalError> {
    Wal::open(WalOptions::new(dir).segment_bytes(4096))
}

fn filled(dir: &Path, batches: u64) -> Wal {
    let mut wal = open(dir).expect("open");
    for b in 0..batches {
        wal.write(&entries(b * 10 + 1, b * 10 + 10)).expect("write");
        wal.sync().expect("sync");
    }
    wal
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 3);
    let segment = wal.segment_paths().pop().expect("a segment");
    drop(wal);
    // A crash wrote the first sector of a 2,000-byte frame and none of the others.
    let mut bytes = fs::read(&segment).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
    let offset = end.next_multiple_of(8);
    let sector_end = (offset / 512 + 1) * 512;
    bytes[offset..sector_end].fill(0xEE);
    bytes[offset..offset + 4].copy_from_slice(&2000u32.to_le_bytes());
    fs::write(&segment, &bytes).expect("write");
    let torn_bytes = (sector_end - offset) as u64;

    let wal = open(root.path()).expect("a torn tail is not an error");
    let report = wal.recovery_report().clone();
    assert_eq!(
        report.cuts,
        vec![Cut {
            path: segment,
            offset: offset as u64,
            bytes: torn_bytes,
            cause: CutCause::TornWrite
        }]
    );
    assert_eq!(report.lost_synced_data, None, "an ordinary crash");
    assert_eq!(
        (wal.last_index(), report.last_index),
        (LogIndex(30), LogIndex(30))
    );
    let text = report.to_string();
    assert!(text.contains(&format!("cut {torn_bytes} bytes")), "{text}");
    drop(wal);
    let wal = open(root.path()).expect("reopen");
    assert_eq!(wal.recovery_report().cuts, vec![], "the tail was zeroed");
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let root = tempfile::tempdir().expect("temp dir");
    let _first = open(root.path()).expect("open");
    match open(root.path()) {
        Err(WalError::Locked { dir }) => assert_eq!(dir, root.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 80);
    let segments = wal.segment_paths();
    assert!(segments.len() >= 3, "{segments:?}");
    drop(wal);
    fs::remove_file(&segments[1]).expect("remove");
    let err = open(root.path()).expect_err("a hole in the segments must be refused");
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("is missing"), "{err}");
}

/// The seq in a segment file's name and the salt in its header: what its frames are bound to.
fn binding(segment: &Path, bytes: &[u8]) -> (u64, u64) {
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    let seq = u64::from_str_radix(&name[..16], 16).expect("seq");
    let salt = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    (seq, salt)
}

/// The checksum a frame at `offset` of that segment must carry over `covered`.
fn frame_crc(segment: &Path, bytes: &[u8], offset: u64, covered: &[u8]) -> u32 {
    let (seq, salt) = binding(segment, bytes);
    let mut bound = salt.to_le_bytes().to_vec();
    bound.extend_from_slice(&seq.to_le_bytes());
    bound.extend_from_slice(&offset.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&bound), covered)
}

const FIRST_FRAME: usize = 64;

#[test]
fn a_frame_of_a_newer_format_is_refused_with_its_version() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 1);
    let segment = wal.segment_paths().pop().expect("a segment");
    drop(wal);
    let mut bytes = fs::read(&segment).expect("read");
    let at = FIRST_FRAME;
    bytes[at + 8] = 3;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let crc = frame_crc(&segment, &bytes, at as u64, &bytes[at + 8..at + 24 + len]);
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, &bytes).expect("write");
    match open(root.path()) {
        Err(WalError::UnsupportedVersion {
            path,
            offset,
            found,
            supported,
        }) => {
            assert_eq!((path, offset, found, supported), (segment, 64, 3, 2));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

/// Found by the `wal` fuzz target: a newest segment whose header (checksum intact) records a
/// capacity of 504 GiB. Recovery gave the cut-short file that size back and the next open tried
/// to read all of it into memory. Such a header is damage: refused, the file left as it was.
#[test]
fn a_header_recording_an_impossible_capacity_is_damage() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 1);
    let segment = wal.segment_paths().pop().expect("a segment");
    drop(wal);
    let mut bytes = fs::read(&segment).expect("read");
    bytes[16..24].copy_from_slice(&541_165_883_392u64.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, &bytes).expect("write");
    for _ in 0..2 {
        let err = open(root.path()).expect_err("a capacity no segment has");
        assert_eq!(err.kind(), WalErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("541165883392"), "{err}");
        let len = fs::metadata(&segment).expect("metadata").len();
        assert_eq!(len, bytes.len() as u64, "the file was not grown");
    }
    let err = Wal::open(WalOptions::new(root.path()).segment_bytes(raftwal::MAX_SEGMENT_BYTES + 8))
        .expect_err("segments beyond the largest");
    assert!(matches!(err, WalError::Options(_)), "{err}");
}

/// Found by the `wal` fuzz target: a frame (checksum intact) numbered u64::MAX, followed by
/// another, overflowed `previous + 1` in the check that no frame is missing (a panic with
/// overflow checks, a wrap to frame 0 without). That number is refused as corruption.
#[test]
fn a_frame_numbered_u64_max_is_corruption() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 2);
    let segment = wal.segment_paths().pop().expect("a segment");
    drop(wal);
    let mut bytes = fs::read(&segment).expect("read");
    let at = FIRST_FRAME;
    bytes[at + 16..at + 24].copy_from_slice(&u64::MAX.to_le_bytes());
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let crc = frame_crc(&segment, &bytes, at as u64, &bytes[at + 8..at + 24 + len]);
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, &bytes).expect("write");
    let err = open(root.path()).expect_err("frame number u64::MAX");
    assert_eq!(err.kind(), WalErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("18446744073709551615"), "{err}");
}

#[test]
fn a_log_of_format_version_1_is_refused_with_its_version() {
    let root = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(root.path().join("wal")).expect("mkdir");
    // A version-1 segment: frames from offset 0 (len, CRC-32C of the rest, version 1, kind 1).
    let body = b"\x01\x00\x00";
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&[1, 1, 0, 0]);
    frame.extend_from_slice(body);
    let crc = crc32c::crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    frame.resize(4096, 0);
    let segment = root
        .path()
        .join("wal/0000000000000001-0000000000000001.wal");
    fs::write(&segment, &frame).expect("write");
    let err = open(root.path()).expect_err("version 1 is not read");
    match &err {
        WalError::UnsupportedVersion {
            path,
            found,
            supported,
            ..
        } => assert_eq!((path, *found, *supported), (&segment, 1, 2)),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert!(err.to_string().contains("format version 1"), "{err}");
}

#[test]
fn bad_options_and_refused_writes_are_typed_errors() {
    let root = tempfile::tempdir().expect("temp dir");
    let err = Wal::open(WalOptions::new(root.path()).segment_bytes(1000)).expect_err("too small");
    assert!(matches!(err, WalError::Options(_)), "{err}");
    let mut wal = filled(root.path(), 1);
    let err = wal.write(&entries(12, 12)).expect_err("a gap");
    assert!(matches!(err, WalError::Refused(_)), "{err}");
    let err: StorageError = err.into();
    assert!(matches!(err, StorageError::Corrupt(_)));
}

#[test]
fn purging_deletes_old_segments_and_reopens_from_the_rest() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut wal = filled(root.path(), 40);
    let before = wal.segment_paths().len();
    wal.write(&LogWrite::Purge {
        through: LogIndex(350),
        term: Term(1),
    })
    .expect("purge");
    wal.write(&entries(401, 401)).expect("write");
    wal.sync().expect("sync");
    let after = wal.segment_paths().len();
    assert!(after < before, "{before} segments before, {after} after");
    let expected = wal.load_state().expect("load");
    drop(wal);
    let wal = open(root.path()).expect("reopen");
    let state = wal.load_state().expect("load");
    assert_eq!(state, expected);
    assert_eq!(state.log_start.index, LogIndex(350));
    assert_eq!(state.entries.first().map(|e| e.index), Some(LogIndex(351)));
}

#[test]
fn snapshots_are_atomic_checked_and_pruned() {
    let root = tempfile::tempdir().expect("temp dir");
    let store = SnapshotStore::open(root.path().join("snapshots")).expect("open");
    assert_eq!(store.latest().expect("empty"), None);
    for i in 1..=4u64 {
        let id = LogId {
            index: LogIndex(i * 100),
            term: Term(i),
        };
        let mut membership = Membership::with_voters((1..=i).map(NodeId));
        membership
            .addresses
            .insert(NodeId(1), "127.0.0.1:7001".into());
        store
            .save(id, &membership, &vec![i as u8; 1000], 2)
            .expect("save");
    }
    let latest = store.latest().expect("read").expect("a snapshot");
    assert_eq!(latest.last_included.index, LogIndex(400));
    assert_eq!(latest.membership.voters.len(), 4, "the membership is kept");
    assert_eq!(latest.membership.addresses[&NodeId(1)], "127.0.0.1:7001");
    assert_eq!(latest.data, vec![4u8; 1000]);
    let files = fs::read_dir(root.path().join("snapshots"))
        .expect("list")
        .count();
    assert_eq!(files, 2, "older snapshots are pruned");

    // A crash before the rename leaves a temporary file: ignored, then removed on open.
    fs::write(
        root.path()
            .join("snapshots/00000000000001f4-0000000000000005.tmp"),
        b"half",
    )
    .expect("write");
    let store = SnapshotStore::open(root.path().join("snapshots")).expect("reopen");
    assert_eq!(
        store
            .latest()
            .expect("read")
            .expect("a snapshot")
            .last_included
            .index,
        LogIndex(400)
    );
    assert_eq!(
        fs::read_dir(root.path().join("snapshots"))
            .expect("list")
            .count(),
        2
    );

    // Damage is an error naming the file, not a silent fallback to an older snapshot.
    let mut bytes = fs::read(&latest.path).expect("read");
    bytes[100] ^= 1;
    fs::write(&latest.path, &bytes).expect("write");
    match store.latest() {
        Err(WalError::Corrupt { path, .. }) => assert_eq!(path, latest.path),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn group_commit_reports_every_batch_durable_in_order() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    let (committer, completions) = reporting(wal);
    let total = 200u64;
    for seq in 1..=total {
        committer
            .submit(PersistBatch {
                seq,
                writes: vec![entries(seq, seq)],
            })
            .expect("submit");
    }
    let mut seen = 0;
    let mut syncs = 0;
    while seen < total {
        let Durable {
            seq,
            last_index,
            batches,
            ..
        } = completions.recv().expect("completion").expect("durable");
        assert_eq!(
            seq,
            seen + batches as u64,
            "completions cover batches in order"
        );
        assert_eq!(last_index, LogIndex(seq));
        seen = seq;
        syncs += 1;
    }
    assert!(syncs <= total);
    let wal = committer.shutdown().expect("shutdown");
    assert_eq!(wal.load().expect("load").entries.len(), total as usize);
}

#[test]
fn group_commit_reports_a_refused_write_and_stops() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    let (committer, completions) = reporting(wal);
    committer
        .submit(PersistBatch {
            seq: 1,
            writes: vec![entries(5, 5)],
        })
        .expect("submit");
    let result = completions.recv().expect("completion");
    assert!(
        matches!(result, Err(StorageError::Corrupt(_))),
        "{result:?}"
    );
    let _ = completions.recv(); // the writer hung up
    let err = committer
        .submit(PersistBatch {
            seq: 2,
            writes: vec![entries(1, 1)],
        })
        .expect_err("the writer stopped");
    assert!(matches!(err, WalError::Failed { .. }), "{err}");
}

fn batch(seq: u64) -> PersistBatch {
    PersistBatch {
        seq,
        writes: vec![entries(seq, seq)],
    }
}

/// `persist_here` until it takes the batch (the writer finished reporting, the log is not
/// making a segment).
fn retry_here(committer: &GroupCommit, mut batch: PersistBatch) -> Result<Durable, StorageError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match committer.persist_here(batch) {
            Ok(result) => return result,
            Err(refused) => batch = refused,
        }
        assert!(std::time::Instant::now() < deadline, "never written here");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_write_on_the_callers_thread_waits_until_the_writer_has_reported_everything() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    let (done, completions) = mpsc::channel();
    // The callback holds the writer until the test lets it go, so "reported" is under our control.
    let (release, released) = mpsc::channel::<()>();
    let committer = GroupCommit::spawn(wal, move |result| {
        let _ = done.send(result);
        let _ = released.recv();
    });
    committer.submit(batch(1)).expect("submit");
    let first = completions.recv().expect("completion").expect("durable");
    assert_eq!(first.seq, 1);
    // Batch 1 is durable but its report has not returned: writing here would not overtake it,
    // but the rule is simple and safe: nothing here until the writer is done.
    let batch_2 = committer
        .persist_here(batch(2))
        .expect_err("the writer has not finished its report");
    release.send(()).expect("release");
    // Once the writer has reported, batch 2 is written and synced here, in order.
    let durable = retry_here(&committer, batch_2).expect("durable");
    assert_eq!((durable.seq, durable.last_index), (2, LogIndex(2)));
    // The writer thread takes over again for the next batches.
    committer.submit(batch(3)).expect("submit");
    let third = completions.recv().expect("completion").expect("durable");
    assert_eq!((third.seq, third.last_index), (3, LogIndex(3)));
    release.send(()).expect("release");
    let wal = committer.shutdown().expect("shutdown");
    let stored = wal.load().expect("load");
    let indexes: Vec<u64> = stored.entries.iter().map(|e| e.index.0).collect();
    assert_eq!(indexes, vec![1, 2, 3]);
}

#[test]
fn writes_on_the_callers_thread_are_in_the_log_after_a_reopen() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    let (committer, completions) = reporting(wal);
    // A fresh log has no segment: its first write, which makes one, goes to the writer thread.
    assert!(committer.persist_here(batch(1)).is_err());
    committer.submit(batch(1)).expect("submit");
    completions.recv().expect("completion").expect("durable");
    for seq in 2..=50 {
        // Refused only while the log makes its next segment (these segments are tiny).
        let durable = retry_here(&committer, batch(seq)).expect("durable");
        assert_eq!(durable.last_index, LogIndex(seq));
    }
    // Dropped without a shutdown, as a crash would: a fresh open finds everything.
    drop(committer);
    let wal = open(root.path()).expect("reopen");
    assert_eq!(wal.load().expect("load").entries.len(), 50);
}

#[test]
fn after_a_storage_failure_nothing_is_written_on_the_callers_thread() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    let (committer, completions) = reporting(wal);
    // A gap (5 after an empty log) is refused by the log.
    committer.submit(batch(5)).expect("submit");
    assert!(completions.recv().expect("completion").is_err());
    let _ = completions.recv(); // the writer hung up
    committer
        .persist_here(batch(1))
        .expect_err("the failed log takes no more writes");
}

/// `(offset, length on disk)` of every frame in a segment's bytes, read from the headers.
fn frames_in(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut frames = Vec::new();
    let mut at = FIRST_FRAME;
    while at + 24 <= bytes.len() && bytes[at..at + 24].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let on_disk = (24 + len).next_multiple_of(8);
        frames.push((at, on_disk));
        at += on_disk;
    }
    frames
}

#[test]
fn a_damaged_complete_last_frame_is_cut_and_reported_as_lost_synced_data() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 3);
    let segment = wal.segment_paths().pop().expect("a segment");
    drop(wal);
    let mut bytes = fs::read(&segment).expect("read");
    let &(last, len) = frames_in(&bytes).last().expect("frames");
    // Every sector of the frame was written (a crash would leave one as zeros): damage after.
    bytes[last + len / 2] ^= 0x10;
    fs::write(&segment, &bytes).expect("write");

    let wal = open(root.path()).expect("the last frame is cut, not refused");
    let report = wal.recovery_report().clone();
    assert_eq!(wal.last_index(), LogIndex(20));
    assert_eq!(
        report
            .cuts
            .iter()
            .map(|c| (c.offset, c.cause))
            .collect::<Vec<_>>(),
        vec![(last as u64, CutCause::DamagedFrame)]
    );
    assert_eq!(
        report.lost_synced_data,
        Some(SyncedDataLoss {
            path: segment,
            offset: last as u64,
            reason: LossReason::DamagedLastFrame,
            last_index: LogIndex(20),
        })
    );
    assert!(
        report.to_string().contains("SYNCED DATA MAY BE LOST"),
        "{report}"
    );
}

#[test]
fn a_newest_segment_cut_short_is_reported_as_lost_synced_data() {
    for (cut_to, survives) in [(Some(2), 20), (None, 30)] {
        let root = tempfile::tempdir().expect("temp dir");
        let wal = filled(root.path(), 3);
        let segment = wal.segment_paths().pop().expect("a segment");
        drop(wal);
        let bytes = fs::read(&segment).expect("read");
        let frames = frames_in(&bytes);
        // Into the last frame, or past every frame (in the zeros: still evidence, since nothing
        // a crash does makes a segment shorter).
        let len = match cut_to {
            Some(frame) => frames[frame].0 + 10,
            None => frames[2].0 + frames[2].1 + 100,
        };
        fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .and_then(|f| f.set_len(len as u64))
            .expect("truncate");

        let wal = open(root.path()).expect("cut, not refused");
        let report = wal.recovery_report().clone();
        assert_eq!(wal.last_index(), LogIndex(survives));
        assert_eq!(
            report.lost_synced_data,
            Some(SyncedDataLoss {
                path: segment.clone(),
                offset: len as u64,
                reason: LossReason::Truncated {
                    len: len as u64,
                    capacity: 4096
                },
                last_index: LogIndex(survives),
            })
        );
        assert_eq!(
            fs::metadata(&segment).expect("stat").len(),
            4096,
            "size restored"
        );
        drop(wal);
        let wal = open(root.path()).expect("reopen");
        assert_eq!(
            wal.recovery_report().lost_synced_data,
            None,
            "reported once"
        );
        assert_eq!(wal.last_index(), LogIndex(survives));
    }
}

#[test]
fn a_newest_segment_without_its_header_is_deleted_and_reported() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 80);
    let segments = wal.segment_paths();
    let newest = segments.last().expect("segments").clone();
    drop(wal);
    let before = open_read_only_last_index(root.path(), segments.len() - 1);
    fs::write(&newest, b"").expect("truncate to nothing");
    let wal = open(root.path()).expect("cut, not refused");
    let report = wal.recovery_report().clone();
    assert_eq!(
        report.lost_synced_data.map(|l| l.reason),
        Some(LossReason::DamagedSegmentHeader { len: 0 })
    );
    assert_eq!(wal.last_index(), before);
    assert!(!newest.exists(), "deleted");
}

/// The last index of a copy of the log in `root` holding only its first `segments` segments.
fn open_read_only_last_index(root: &Path, segments: usize) -> LogIndex {
    let copy = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(copy.path().join("wal")).expect("mkdir");
    let mut names: Vec<_> = fs::read_dir(root.join("wal"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".wal"))
        .collect();
    names.sort();
    for name in names.iter().take(segments) {
        fs::copy(
            root.join("wal").join(name),
            copy.path().join("wal").join(name),
        )
        .expect("copy");
    }
    open(copy.path()).expect("open the copy").last_index()
}

#[test]
fn frames_missing_between_segments_are_corruption() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut wal = open(root.path()).expect("open");
    let big = |i: u64, bytes: usize| {
        LogWrite::Append(vec![Entry {
            term: Term(1),
            index: LogIndex(i),
            payload: EntryPayload::Command(vec![7; bytes]),
        }])
    };
    for i in 1..=3 {
        wal.write(&big(i, 1000)).expect("write");
        wal.sync().expect("sync");
    }
    // A frame of nothing but a hard state ends the first segment; the next entry rolls.
    wal.write(&LogWrite::HardState(raftengine::HardState {
        term: Term(2),
        voted_for: Some(NodeId(1)),
    }))
    .expect("write");
    wal.sync().expect("sync");
    wal.write(&big(4, 2000)).expect("write");
    wal.sync().expect("sync");
    let segments = wal.segment_paths();
    assert_eq!(segments.len(), 2);
    drop(wal);
    // The hard-state frame goes missing: the second segment repeats the state, so without frame
    // numbers nothing would show that a synced frame is gone.
    let mut bytes = fs::read(&segments[0]).expect("read");
    let &(last, len) = frames_in(&bytes).last().expect("frames");
    bytes[last..last + len].fill(0);
    fs::write(&segments[0], &bytes).expect("write");
    match open(root.path()) {
        Err(WalError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, segments[1]);
            assert!(reason.contains("frames are missing"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_damaged_segment_header_with_frames_after_it_is_corruption() {
    for newest in [false, true] {
        let root = tempfile::tempdir().expect("temp dir");
        let wal = filled(root.path(), 80);
        let segments = wal.segment_paths();
        drop(wal);
        let target = if newest {
            segments[segments.len() - 1].clone()
        } else {
            segments[1].clone()
        };
        let mut bytes = fs::read(&target).expect("read");
        bytes[30] ^= 1;
        fs::write(&target, &bytes).expect("write");
        match open(root.path()) {
            Err(WalError::Corrupt {
                path,
                offset,
                reason,
            }) => {
                assert_eq!((path, offset), (target, 0));
                assert!(reason.contains("segment header checksum"), "{reason}");
            }
            other => panic!("newest {newest}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_fatal_error_after_the_writer_stopped_still_marks_the_log_broken() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    let (committer, completions) = reporting(wal);
    // A gap: the log refuses it (a bug, not an I/O failure) and the writer stops.
    committer.submit(batch(5)).expect("submit");
    assert!(completions.recv().expect("completion").is_err());
    committer
        .mark_broken("state machine failed at index 4: boom")
        .expect("marked on the caller's thread");
    drop(committer);
    let wal = open(root.path()).expect("open");
    let err = wal.load_state().expect_err("marked broken");
    let marker = root.path().join("BROKEN");
    match &err {
        WalError::Broken { marker: m, reason } => {
            assert_eq!(
                (m, reason.as_str()),
                (&marker, "state machine failed at index 4: boom")
            );
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    let command = format!("raftwal clear-broken --data-dir {}", root.path().display());
    assert!(err.to_string().contains(&command), "{err}");
    let storage: StorageError = err.into();
    assert!(storage.to_string().contains(&command), "{storage}");
    assert!(matches!(storage, StorageError::Broken(_)));
    drop(wal);
    let reason = raftwal::clear_broken(root.path()).expect("clear");
    assert_eq!(
        reason.as_deref(),
        Some("state machine failed at index 4: boom")
    );
    open(root.path())
        .expect("open")
        .load_state()
        .expect("loads again");
}

#[test]
fn error_kinds_say_what_happened() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = open(root.path()).expect("open");
    assert_eq!(
        open(root.path()).expect_err("locked").kind(),
        WalErrorKind::Locked
    );
    let mut wal = wal;
    let refused = wal.write(&entries(3, 3)).expect_err("a gap");
    assert_eq!(refused.kind(), WalErrorKind::Refused);
    let io = WalError::Io {
        path: root.path().into(),
        source: std::io::Error::from_raw_os_error(28),
    };
    assert_eq!(io.kind(), WalErrorKind::Io);
    assert!(matches!(StorageError::from(io), StorageError::Io(m) if m.contains("No space")));
}
