//! The durable log's recovery: `raftwal::Wal::open` on a data directory whose segment files are
//! the input (see `raftengine_fuzz::WalInput` for the layout). It drives the segment header
//! decoder, the frame parser (length, checksum bound to the position, version, kind), the
//! postcard record decoder and every rule of recovery (torn tails, damaged frames, frame
//! numbers across segments, short segments, the log map's checks on each record).
//!
//! Checks, beyond "no panic" and a typed error for everything refused:
//! - an opened log is consistent: the report's last index is the log's, every entry from the
//!   log start to the last index reads back with its own index, `load_state` agrees;
//! - recovery is idempotent: opening again finds nothing to cut, no lost data, the same log;
//! - the recovered log takes a write: an entry appended and synced is there after a reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftengine::{Entry, EntryPayload, LogIndex, LogWrite, Term, MAX_INDEX};
use raftengine_fuzz::{fix_checksums, scratch_dir, WalInput};
use raftwal::{Wal, WalOptions};
use std::path::Path;
use std::sync::OnceLock;

/// The segment size the log is opened with (the smallest the log accepts, so that the spare
/// segment it preallocates costs little).
const SEGMENT_BYTES: u64 = 4096;
/// The largest segment capacity an input may record (see below).
const MAX_CAPACITY_RUN: u64 = 1 << 20;

fn open(dir: &Path) -> Result<Wal, raftwal::WalError> {
    Wal::open(WalOptions::new(dir).segment_bytes(SEGMENT_BYTES))
}

/// Everything the log holds, as read back: hard state, log start, entries, commit.
fn contents(wal: &Wal) -> (raftengine::StoredState, LogIndex) {
    let state = wal.load_state().expect("an opened log loads");
    let start = wal.log_start().index;
    let last = wal.last_index();
    assert_eq!(state.log_start, wal.log_start());
    assert_eq!(state.hard_state, wal.hard_state());
    assert_eq!(
        state.entries.len() as u64,
        last.0 - start.0,
        "entries between the log start {start} and the last index {last}"
    );
    for (i, entry) in state.entries.iter().enumerate() {
        assert_eq!(entry.index.0, start.0 + 1 + i as u64, "entries in order");
    }
    (state, last)
}

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let base = DIR.get_or_init(|| scratch_dir("wal"));
    let dir = base.join("data");
    let _ = std::fs::remove_dir_all(&dir);
    let wal_dir = dir.join("wal");
    std::fs::create_dir_all(&wal_dir).expect("scratch wal directory");

    let input = WalInput::parse(data);
    for (i, (first, bytes)) in input.segments.iter().enumerate() {
        let seq = i as u64 + 1;
        let mut bytes = bytes.clone();
        fix_checksums(seq, &mut bytes, input.fix_headers, input.fix_frames);
        // Recovery reads a whole segment into memory and gives a cut-short newest segment the
        // capacity its header records (up to raftwal::MAX_SEGMENT_BYTES): memory in proportion
        // to a plausible capacity is the design, so inputs claiming more than 1 MiB are not run.
        if bytes
            .get(16..24)
            .is_some_and(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) > MAX_CAPACITY_RUN)
        {
            return;
        }
        let path = wal_dir.join(WalInput::segment_name(seq, *first));
        std::fs::write(path, &bytes).expect("scratch segment");
    }

    let Ok(wal) = open(&dir) else {
        // Refused: corruption, an unsupported version, ... all typed errors.
        return;
    };
    let report = wal.recovery_report().clone();
    assert_eq!(report.last_index, wal.last_index());
    let (state, last) = contents(&wal);
    drop(wal);

    let wal = open(&dir).expect("a log recovery accepted opens again");
    let again = wal.recovery_report();
    assert!(again.cuts.is_empty(), "second open cut again: {again}");
    assert!(again.lost_synced_data.is_none(), "second open: {again}");
    let (state_again, last_again) = contents(&wal);
    assert_eq!(last_again, last);
    assert_eq!(state_again.entries, state.entries);
    assert_eq!(state_again.hard_state, state.hard_state);
    assert_eq!(state_again.log_start, state.log_start);
    assert_eq!(state_again.commit, state.commit);
    assert_eq!(state_again.repair_epoch, state.repair_epoch);

    // One more entry, after the last one.
    let mut wal = wal;
    if last.0 < MAX_INDEX.0 {
        let term = state
            .entries
            .last()
            .map_or(state.log_start.term, |e| e.term)
            .max(state.hard_state.term)
            .max(Term(1));
        let entry = Entry {
            term,
            index: LogIndex(last.0 + 1),
            payload: EntryPayload::Command(b"after recovery".to_vec()),
        };
        let written = wal
            .write(&LogWrite::Append(vec![entry.clone()]))
            .and_then(|()| wal.sync());
        drop(wal);
        if written.is_ok() {
            let wal = open(&dir).expect("a log written after recovery opens");
            assert!(wal.recovery_report().cuts.is_empty());
            let (state, last_now) = contents(&wal);
            assert_eq!(last_now.0, last.0 + 1);
            assert_eq!(state.entries.last(), Some(&entry));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
