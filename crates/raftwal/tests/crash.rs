//! Crash consistency. A workload runs against a real log; after every sync the directory's bytes
//! are captured. Because each sync writes exactly one frame, a crash during step `i` leaves the
//! files of step `i - 1` plus some damaged version of step `i`'s frame. For every step, every
//! byte offset of that frame is tried both as a cut (only a prefix reached the disk) and as a
//! corrupted byte (garbage in the unsynced tail): recovery must give back exactly the state that
//! was durable before the step, never an error and never a damaged entry; a cut at a sector
//! boundary (what a disk can leave) must count as an ordinary crash, not as lost synced data. (A
//! new segment's header was synced before the segment got its name, so a crash never damages
//! it.) Then every byte of the durable data is corrupted in turn: recovery must refuse with the
//! file and offset, except in the last frame, which may only be cut, and is reported. Last, a
//! frame that loses any one of its pages while the others reach the disk is a torn tail, even
//! when its value embeds copies of a valid frame.

use raftengine::{
    Entry, EntryPayload, HardState, LogIndex, LogStorage, LogWrite, MemoryStorage, NodeId,
    StoredState, Term,
};
use raftwal::format::{SECTOR_BYTES, SEGMENT_HEADER_BYTES};
use raftwal::{CutCause, RecoveryReport, Wal, WalError, WalOptions};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

const SEGMENT_BYTES: u64 = 4096;
type Image = BTreeMap<String, Vec<u8>>;

struct Step {
    /// Durable state after the step's sync.
    state: StoredState,
    image: Image,
}

fn capture(dir: &Path) -> Image {
    let mut image = Image::new();
    for item in fs::read_dir(dir.join("wal")).expect("list wal dir") {
        let item = item.expect("dir entry");
        let name = item.file_name().into_string().expect("utf-8 name");
        if name.ends_with(".wal") || name == "START" {
            image.insert(name, fs::read(item.path()).expect("read segment"));
        }
    }
    image
}

/// A deterministic workload with appends of varied sizes, truncations, hard-state changes and
/// purges, over enough segments to roll and delete some.
fn run_workload(dir: &Path) -> Vec<Step> {
    let mut wal = Wal::open(WalOptions::new(dir).segment_bytes(SEGMENT_BYTES)).expect("open");
    let mut model = MemoryStorage::new();
    let mut steps = vec![Step {
        state: model.load().expect("model"),
        image: capture(dir),
    }];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut term = 1;
    for step in 0..70u64 {
        let last = model.last_index().0;
        let start = model.log_start().index.0;
        let mut writes = Vec::new();
        match next(8) {
            0 if last > start + 3 => {
                term += 1;
                writes.push(LogWrite::HardState(HardState {
                    term: Term(term),
                    voted_for: Some(NodeId(next(3))),
                }));
                writes.push(LogWrite::TruncateFrom(LogIndex(last - 2)));
            }
            1 if step > 30 && last > start + 10 => {
                let through = last - 5;
                let entry = &LogStorage::entries(&model, LogIndex(through), LogIndex(through))
                    .expect("model read")[0];
                writes.push(LogWrite::Purge {
                    through: LogIndex(through),
                    term: entry.term,
                });
            }
            _ => {}
        }
        let first = match writes.last() {
            Some(LogWrite::TruncateFrom(i)) => i.0,
            _ => model.last_index().0 + 1,
        };
        let count = 1 + next(4);
        let entries = (first..first + count)
            .map(|i| Entry {
                term: Term(term),
                index: LogIndex(i),
                payload: if next(10) == 0 {
                    EntryPayload::TermStart
                } else {
                    EntryPayload::Command(vec![(i % 251) as u8; 8 + next(120) as usize])
                },
            })
            .collect();
        writes.push(LogWrite::Append(entries));
        model.write(&writes).expect("model accepts the workload");
        LogStorage::write(&mut wal, &writes).expect("log accepts the workload");
        wal.sync().expect("sync");
        steps.push(Step {
            state: model.load().expect("model"),
            image: capture(dir),
        });
    }
    let segments = steps
        .iter()
        .flat_map(|s| s.image.keys())
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        segments.len() >= 4,
        "the workload should roll segments: {segments:?}"
    );
    let last = &steps[steps.len() - 1];
    assert!(
        last.state.log_start.index.0 > 0,
        "the workload should purge"
    );
    assert!(
        last.image.len() < segments.len(),
        "purged segments should be deleted: {:?}",
        last.image.keys()
    );
    steps
}

/// A scratch directory in memory when the machine has one (`/dev/shm`): these tests recover tens
/// of thousands of crash images, each with a sync or two, and check recovery's logic, not the
/// disk; on a shared disk the syncs alone took minutes.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let in_memory = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten();
    in_memory.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"))
}

/// The files a data directory holds besides its segments, made once: a whole spare segment (so
/// that opening an image does no background work) and the empty failure record.
struct Fixtures {
    spare: Vec<u8>,
    failure: Vec<u8>,
}

fn fixtures(root: &Path) -> Fixtures {
    let dir = root.join("fixtures");
    let mut wal = Wal::open(WalOptions::new(&dir).segment_bytes(SEGMENT_BYTES)).expect("open");
    LogStorage::write(&mut wal, &[LogWrite::HardState(HardState::default())]).expect("write");
    wal.sync().expect("sync");
    // Dropping the log waits for the spare its first roll started.
    drop(wal);
    Fixtures {
        spare: fs::read(dir.join("wal/spare.tmp")).expect("spare"),
        failure: fs::read(dir.join("FAILURE")).expect("failure record file"),
    }
}

/// Writes `image` into a fresh directory and recovers it; returns the state and the report.
/// The state without the data-loss report: the loss is reported by the open that found it, and
/// the node records its repair durably (`LogWrite::Repair`) before it acts, so the next open
/// need not find it again.
fn reported_once(state: StoredState) -> StoredState {
    StoredState {
        data_loss: None,
        ..state
    }
}

fn recover(
    root: &Path,
    fixtures: &Fixtures,
    image: &Image,
) -> Result<(StoredState, RecoveryReport), WalError> {
    let dir = root.join("image");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("wal")).expect("make image dir");
    for (name, bytes) in image {
        fs::write(dir.join("wal").join(name), bytes).expect("write image file");
    }
    fs::write(dir.join("wal/spare.tmp"), &fixtures.spare).expect("spare");
    fs::write(dir.join("FAILURE"), &fixtures.failure).expect("failure record file");
    let wal = Wal::open(WalOptions::new(&dir).segment_bytes(SEGMENT_BYTES))?;
    let state = wal.load_state()?;
    let report = wal.recovery_report().clone();
    // Recovery must leave a log that opens again to the same state (the tail was really cut).
    let path = wal.dir().to_path_buf();
    drop(wal);
    let again = Wal::open(WalOptions::new(path).segment_bytes(SEGMENT_BYTES))?;
    assert_eq!(
        reported_once(again.load_state()?),
        reported_once(state.clone()),
        "a second recovery must agree"
    );
    assert_eq!(
        again.recovery_report().cuts,
        vec![],
        "the first one cut for good"
    );
    Ok((state, report))
}

/// The one segment a step wrote to, its content before the step, and the byte range it changed.
fn changed_region(before: &Image, after: &Image) -> (String, Vec<u8>, usize, usize) {
    // START is rewritten only after the sync, when old segments are deleted; not a frame.
    let changed: Vec<&String> = after
        .iter()
        .filter(|(name, bytes)| *name != "START" && before.get(*name) != Some(bytes))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(changed.len(), 1, "one sync writes one segment: {changed:?}");
    let name = changed[0].clone();
    let new = &after[&name];
    // A new segment was made whole (header, zeros) and synced before it got its name and its
    // first frame: before the frame, it held its header and zeros.
    let old = before.get(&name).cloned().unwrap_or_else(|| {
        let mut made = new[..SEGMENT_HEADER_BYTES].to_vec();
        made.resize(new.len(), 0);
        made
    });
    let lo = (0..new.len())
        .find(|&i| old[i] != new[i])
        .expect("a change");
    let hi = (0..new.len())
        .rfind(|&i| old[i] != new[i])
        .expect("a change")
        + 1;
    (name, old, lo, hi)
}

/// An ordinary crash's cuts: the torn frame, and a new segment left without a frame.
fn ordinary(report: &RecoveryReport) -> bool {
    report.lost_synced_data.is_none()
        && report
            .cuts
            .iter()
            .all(|c| matches!(c.cause, CutCause::TornWrite | CutCause::EmptySegment))
}

#[test]
fn a_crash_during_any_write_loses_nothing_durable_and_returns_nothing_damaged() {
    let root = scratch();
    let steps = run_workload(&root.path().join("source"));
    let fixtures = fixtures(root.path());
    let mut recoveries = 0;
    for i in 1..steps.len() {
        let (before, after) = (&steps[i - 1], &steps[i]);
        let (name, old, lo, hi) = changed_region(&before.image, &after.image);
        let new = &after.image[&name];
        // The crash image: the durable files of the previous step plus this step's file.
        let mut image = before.image.clone();
        for cut in 0..=(hi - lo) {
            let mut bytes = old.clone();
            bytes[lo..lo + cut].copy_from_slice(&new[lo..lo + cut]);
            image.insert(name.clone(), bytes);
            let expected = if cut == hi - lo {
                &after.state
            } else {
                &before.state
            };
            let (got, report) = recover(root.path(), &fixtures, &image)
                .unwrap_or_else(|e| panic!("step {i}, cut at {cut}: recovery failed: {e}"));
            // What the log holds; whether the cut counts as lost synced data is checked below.
            assert_eq!(
                reported_once(got),
                reported_once(expected.clone()),
                "step {i}, cut after {cut} bytes of the frame"
            );
            // A disk writes whole sectors: a crash cuts a frame at a sector boundary, and that
            // is an ordinary torn write, never evidence of lost synced data.
            if (lo + cut) % SECTOR_BYTES == 0 || cut == hi - lo {
                assert!(ordinary(&report), "step {i}, cut at {cut}: {report}");
            }
            recoveries += 1;
        }
        for at in lo..hi {
            let mut bytes = new.clone();
            bytes[at] ^= 0x5A;
            image.insert(name.clone(), bytes);
            let (got, _) = recover(root.path(), &fixtures, &image)
                .unwrap_or_else(|e| panic!("step {i}, garbage at {at}: recovery failed: {e}"));
            assert_eq!(
                reported_once(got),
                reported_once(before.state.clone()),
                "step {i}, garbage at byte {at} of {name}"
            );
            recoveries += 1;
        }
    }
    assert!(
        recoveries > 5000,
        "only {recoveries} crash images were tried"
    );
}

#[test]
fn corruption_of_durable_data_is_refused_with_file_and_offset() {
    let root = scratch();
    let steps = run_workload(&root.path().join("source"));
    let fixtures = fixtures(root.path());
    let last = steps.len() - 1;
    let image = &steps[last].image;
    // Where each frame still on disk lies: the region its step changed.
    let mut frames: BTreeMap<String, Vec<(usize, usize, usize)>> = BTreeMap::new();
    for i in 1..steps.len() {
        let (name, _, lo, hi) = changed_region(&steps[i - 1].image, &steps[i].image);
        if image.contains_key(&name) {
            frames.entry(name).or_default().push((i, lo, hi));
        }
    }
    let (mut refused, mut cut) = (0, 0);
    for (name, regions) in &frames {
        for &(step, lo, hi) in regions {
            for at in lo..hi {
                let mut damaged = image.clone();
                damaged.get_mut(name).expect("segment in image")[at] ^= 0x01;
                match recover(root.path(), &fixtures, &damaged) {
                    Err(WalError::Corrupt { path, offset, .. }) if step < last => {
                        assert!(
                            path.ends_with(name),
                            "error names {path:?}, damage in {name}"
                        );
                        assert!(
                            offset as usize <= at,
                            "offset {offset} is after the damage at {at}"
                        );
                        refused += 1;
                    }
                    Ok((state, report)) if step == last => {
                        assert_eq!(
                            reported_once(state),
                            steps[last - 1].state,
                            "the damaged last frame is cut"
                        );
                        assert!(
                            report.lost_synced_data.is_some()
                                || report.cuts.iter().any(|c| c.cause == CutCause::TornWrite),
                            "damage to the synced last frame is reported: {report}"
                        );
                        cut += 1;
                    }
                    other => panic!(
                        "damage at {name}:{at} (frame of step {step} of {last}) gave {other:?}"
                    ),
                }
            }
        }
    }
    assert!(refused > 1000 && cut > 0, "refused {refused}, cut {cut}");
}

/// A crash can lose any page of the last frame and keep the others: the first page lost and
/// the later ones written leaves the frame's header as zeros and its body's bytes on file. That
/// is an ordinary torn tail, even when the body is a client's value that embeds a byte-exact
/// copy of a valid frame at every alignment: a frame is only valid at its own position.
#[test]
fn a_lost_page_of_the_last_frame_is_a_torn_tail_even_when_a_value_embeds_a_frame() {
    const SEGMENT: u64 = 1 << 20;
    const PAGE: usize = 4096;
    let root = scratch();
    let dir = root.path().join("log");
    let options = || WalOptions::new(&dir).segment_bytes(SEGMENT);
    let mut wal = Wal::open(options()).expect("open");
    let mut model = MemoryStorage::new();
    for i in 1..=5u64 {
        let writes = [LogWrite::Append(vec![Entry {
            term: Term(1),
            index: LogIndex(i),
            payload: EntryPayload::Command(format!("small {i}").into_bytes()),
        }])];
        LogStorage::write(&mut wal, &writes).expect("write");
        model.write(&writes).expect("model");
        wal.sync().expect("sync");
    }
    let segment = wal.segment_paths().pop().expect("a segment");
    let before = fs::read(&segment).expect("read");
    let durable = model.load().expect("model");
    // The first frame of the log, byte for byte (its length is a multiple of 8), then a value
    // holding it 8 times, each copy one byte further along modulo 8, behind 8 KiB of filler.
    let first = SEGMENT_HEADER_BYTES;
    let len = u32::from_le_bytes(before[first..first + 4].try_into().expect("4 bytes")) as usize;
    let frame = before[first..first + (24 + len).next_multiple_of(8)].to_vec();
    let mut value = vec![0xCD; 8192];
    for _ in 0..8 {
        value.extend_from_slice(&frame);
        value.push(0xAB);
    }
    LogStorage::write(
        &mut wal,
        &[LogWrite::Append(vec![Entry {
            term: Term(1),
            index: LogIndex(6),
            payload: EntryPayload::Command(value),
        }])],
    )
    .expect("write");
    wal.sync().expect("sync");
    drop(wal);
    let after = fs::read(&segment).expect("read");
    let lo = (0..after.len())
        .find(|&i| before[i] != after[i])
        .expect("a change");
    let hi = (0..after.len())
        .rfind(|&i| before[i] != after[i])
        .expect("a change")
        + 1;
    let aligned_copy = (lo..hi)
        .step_by(8)
        .any(|at| after.get(at..at + frame.len()) == Some(&frame[..]));
    assert!(
        aligned_copy,
        "a copy of the frame lies at an 8-byte boundary"
    );
    let pages: Vec<usize> = (lo / PAGE..hi.div_ceil(PAGE)).collect();
    assert!(pages.len() >= 3, "the frame spans {} pages", pages.len());
    for &page in &pages {
        // The page as it was before the write: the previous frame's end, then zeros.
        let mut image = after.clone();
        let (from, to) = ((page * PAGE).max(lo), ((page + 1) * PAGE).min(hi));
        image[from..to].copy_from_slice(&before[from..to]);
        fs::write(&segment, &image).expect("write the crash image");
        let wal = Wal::open(options()).unwrap_or_else(|e| panic!("page {page} lost: {e}"));
        assert_eq!(wal.load_state().expect("load"), durable, "page {page} lost");
        let report = wal.recovery_report();
        assert!(ordinary(report), "page {page} lost: {report}");
        assert_eq!(report.cuts.len(), 1, "page {page} lost: {report}");
        assert_eq!(report.cuts[0].offset as usize, lo, "page {page} lost");
    }
}
