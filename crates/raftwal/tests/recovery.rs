//! Recovery reports, refusals with clear errors, the directory lock, snapshots and group commit.

use raftengine::{
    Entry, EntryPayload, LogId, LogIndex, LogStorage, LogWrite, Membership, NodeId, PersistBatch,
    StorageError, Term,
};
use raftwal::{Durable, GroupCommit, SnapshotStore, Wal, WalError, WalOptions};
use std::fs;
use std::path::Path;
use std::sync::mpsc;

fn entries(from: u64, to: u64) -> LogWrite {
    LogWrite::Append(
        (from..=to)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(i),
                payload: EntryPayload::Command(format!("value {i}").into_bytes()),
            })
            .collect(),
    )
}

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
    let mut bytes = fs::read(&segment).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
    let offset = end.next_multiple_of(8);
    bytes[offset..offset + 5].copy_from_slice(&[0x17, 0, 0, 0, 0xEE]);
    fs::write(&segment, &bytes).expect("write");

    let wal = open(root.path()).expect("a torn tail is not an error");
    let torn = wal.recovery_report().torn_tail.clone().expect("reported");
    assert_eq!(
        (torn.path, torn.offset, torn.bytes),
        (segment, offset as u64, 5)
    );
    assert_eq!(wal.last_index(), LogIndex(30));
    assert!(wal
        .recovery_report()
        .to_string()
        .contains("cut a torn tail of 5 bytes"));
    drop(wal);
    let wal = open(root.path()).expect("reopen");
    assert_eq!(wal.recovery_report().torn_tail, None, "the tail was zeroed");
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

#[test]
fn a_frame_of_a_newer_format_is_refused_with_its_version() {
    let root = tempfile::tempdir().expect("temp dir");
    let wal = filled(root.path(), 1);
    let segment = wal.segment_paths().pop().expect("a segment");
    drop(wal);
    let mut bytes = fs::read(&segment).expect("read");
    bytes[8] = 2;
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = crc32c::crc32c(&bytes[8..12 + len]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, &bytes).expect("write");
    match open(root.path()) {
        Err(WalError::UnsupportedVersion {
            path,
            offset,
            found,
            supported,
        }) => {
            assert_eq!((path, offset, found, supported), (segment, 0, 2, 1));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
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

/// A group commit whose completions arrive on the returned channel.
fn reporting(wal: Wal) -> (GroupCommit, mpsc::Receiver<Result<Durable, StorageError>>) {
    let (done, completions) = mpsc::channel();
    let committer = GroupCommit::spawn(wal, move |result| {
        let _ = done.send(result);
    });
    (committer, completions)
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
    assert!(matches!(err, WalError::Failed(_)), "{err}");
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
