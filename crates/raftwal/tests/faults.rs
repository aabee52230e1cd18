//! The log under real I/O failures, injected with the `faultio` preload library: this test
//! binary runs one of its ignored tests again as a child process with `LD_PRELOAD` set; the
//! child switches faults on and off through its control file while it uses the log, and the
//! parent (without the shim) reopens the directory and checks what recovery does.

use raftengine::{Entry, EntryPayload, LogIndex, LogWrite, PersistBatch, StorageError, Term};
use raftwal::{CutCause, GroupCommit, SnapshotStore, Wal, WalErrorKind, WalOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{entries, reporting, Completions};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `libfaultio.so`, built beside this test binary (faultio is a dev-dependency for that).
fn shim() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent().expect("deps dir").join("libfaultio.so");
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A fresh, canonical directory (the shim matches canonical paths).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(temp.path()).expect("canonical path");
    (temp, root)
}

/// Runs the ignored test `name` of this binary with the shim loaded; panics if it fails.
fn run_child(name: &str, root: &Path) {
    run_child_with(name, root, "")
}

/// `run_child`, passing `errno` (a name) to the child in `RAFTWAL_TEST_ERRNO`.
fn run_child_with(name: &str, root: &Path, errno: &str) {
    let output = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", shim())
        .env("FAULTIO_CONTROL", root.join("faults"))
        .env("RAFTWAL_TEST_ROOT", root)
        .env("RAFTWAL_TEST_ERRNO", errno)
        .output()
        .expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {name} did not run:\n{text}"
    );
}

/// In a child: the directory the parent gave it.
fn child_root() -> PathBuf {
    PathBuf::from(std::env::var_os("RAFTWAL_TEST_ROOT").expect("run by a parent test"))
}

/// Switches faults: the control file is replaced by rename, as faultio's docs ask. `None`
/// switches every fault off.
fn faults(root: &Path, rules: Option<&str>) {
    let control = root.join("faults");
    match rules {
        Some(text) => {
            let temp = root.join("faults.new");
            fs::write(
                &temp,
                format!("log {}/faults.log\n{text}\n", root.display()),
            )
            .expect("write control");
            fs::rename(&temp, &control).expect("install control");
        }
        None => fs::remove_file(&control).expect("remove control"),
    }
}

/// The faults the shim injected (one line each), so a test knows its fault really happened.
fn injected(root: &Path) -> String {
    fs::read_to_string(root.join("faults.log")).unwrap_or_default()
}

fn options(dir: &Path) -> WalOptions {
    WalOptions::new(dir).segment_bytes(1 << 20)
}

fn batch(seq: u64, from: u64, to: u64) -> PersistBatch {
    PersistBatch {
        seq,
        writes: vec![entries(from, to)],
    }
}

/// The failure record file holds a record (the failing thread wrote it before returning).
fn failure_recorded(data: &Path) -> bool {
    fs::read(data.join("FAILURE")).is_ok_and(|bytes| bytes.starts_with(b"RWFAIL"))
}

/// Reopens `data` without the shim and checks that recovery cut the failed frame, from the
/// offset it started at, and reported it: `durable` entries survive, the failed frame would
/// have reached `unsynced`, and the error said `reason`.
fn reopen_after_failure(options: WalOptions, durable: u64, unsynced: u64, reason: &str) -> Wal {
    let data = options.dir.clone();
    let data = data.as_path();
    assert!(failure_recorded(data), "the failure was recorded durably");
    let wal = Wal::open(options).expect("reopen without a manual step");
    let report = wal.recovery_report().clone();
    let failed = report
        .failed_write
        .clone()
        .expect("the failed write is reported");
    assert_eq!(
        (failed.durable_index, failed.unsynced_index),
        (LogIndex(durable), LogIndex(unsynced)),
        "{report}"
    );
    assert!(failed.reason.contains(reason), "{report}");
    for cut in &report.cuts {
        assert_eq!(cut.cause, CutCause::FailedWrite, "{report}");
        assert_eq!(
            (&cut.path, cut.offset),
            (&failed.path, failed.offset),
            "{report}"
        );
    }
    assert_eq!(
        report.lost_synced_data, None,
        "nothing synced was lost: {report}"
    );
    assert_eq!(wal.last_index(), LogIndex(durable), "{report}");
    assert_eq!(
        wal.load_state().expect("no broken marker").entries.len() as u64,
        durable
    );
    assert!(
        !failure_recorded(data),
        "the record is cleared once the cut is durable"
    );
    wal
}

#[test]
fn a_failed_fsync_is_recorded_and_the_next_open_cuts_the_frame() {
    let (_temp, root) = scratch();
    run_child("child_fsync_fails", &root);
    assert!(injected(&root).contains("fsync EIO"), "{}", injected(&root));
    // The failed frame's bytes are in the page cache (the shim failed the call, not the disk),
    // so they read back intact: exactly the frame a restart must not trust. (The failing
    // thread also zeroed them in the page cache; the record alone must be enough, so the
    // child wrote them back.)
    let data = root.join("data");
    let wal = reopen_after_failure(options(&data), 10, 20, "Input/output error");
    let cut = wal.recovery_report().cuts.first().cloned().expect("a cut");
    assert!(cut.bytes > 0, "the frame's bytes were on file");
    drop(wal);
    let wal = Wal::open(options(&data)).expect("reopen");
    assert_eq!(wal.recovery_report().failed_write, None, "reported once");
    assert_eq!(wal.last_index(), LogIndex(10));
}

#[test]
#[ignore = "run by a_failed_fsync_is_recorded_and_the_next_open_cuts_the_frame"]
fn child_fsync_fails() {
    let root = child_root();
    let dir = root.join("data");
    let mut wal = Wal::open(options(&dir)).expect("open");
    wal.write(&entries(1, 10)).expect("write");
    wal.sync().expect("sync");
    let segment = wal.segment_paths().pop().expect("a segment");
    let before = fs::read(&segment).expect("read");
    faults(
        &root,
        Some(&format!("fail fsync EIO under {}/wal", dir.display())),
    );
    wal.write(&entries(11, 20)).expect("write");
    let err = wal.sync().expect_err("the sync fails");
    assert_eq!(err.kind(), WalErrorKind::Io, "{err}");
    assert!(err.to_string().contains("Input/output error"), "{err}");
    let again = wal.write(&entries(21, 21)).expect_err("no more writes");
    assert_eq!(again.kind(), WalErrorKind::Io, "{again}");
    faults(&root, None);
    // Put the frame's bytes back, as a kernel that kept them in its page cache would show them
    // (the failing thread zeroed its copy, a second line of defence the record must not need).
    let frame = frame_written_after(&before, &fs::read(&segment).expect("read"));
    assert!(
        frame.is_none(),
        "the failing thread zeroed the frame in the page cache"
    );
    drop(wal);
    let mut wal = Wal::open(options(&root.join("scratch"))).expect("open a scratch log");
    wal.write(&entries(1, 10)).expect("write");
    wal.sync().expect("sync");
    wal.write(&entries(11, 20)).expect("write");
    wal.sync().expect("sync");
    let scratch = fs::read(wal.segment_paths().pop().expect("segment")).expect("read");
    drop(wal);
    // The scratch log's second frame is byte for byte what the failed sync wrote, except for
    // the salt its checksum is bound to; copy the original's header salt into place instead:
    // the frame must then be valid where it lies, so only the record keeps it out.
    let restored = rebind(&before, &scratch);
    fs::write(&segment, &restored).expect("restore the frame");
}

/// The bytes a write added after `before`, if any.
fn frame_written_after(before: &[u8], after: &[u8]) -> Option<(usize, usize)> {
    let lo = (0..after.len()).find(|&i| before[i] != after[i])?;
    let hi = (0..after.len()).rfind(|&i| before[i] != after[i])? + 1;
    Some((lo, hi))
}

/// `scratch`'s content with `original`'s header (salt), and its frames re-sealed for that
/// salt, so that they are valid in the original file.
fn rebind(original: &[u8], scratch: &[u8]) -> Vec<u8> {
    let mut bytes = scratch.to_vec();
    bytes[..64].copy_from_slice(&original[..64]);
    let salt = u64::from_le_bytes(original[24..32].try_into().expect("8 bytes"));
    let mut at = 64;
    while bytes[at..at + 4] != [0; 4] {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let mut bound = salt.to_le_bytes().to_vec();
        bound.extend_from_slice(&1u64.to_le_bytes());
        bound.extend_from_slice(&(at as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bound), &bytes[at + 8..at + 24 + len]);
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += (24 + len).next_multiple_of(8);
    }
    bytes
}

#[test]
fn a_failed_fsync_on_the_writer_thread_is_recorded_there() {
    let (_temp, root) = scratch();
    run_child("child_fsync_fails_on_the_writer_thread", &root);
    assert!(injected(&root).contains("fsync EIO"), "{}", injected(&root));
    // The runtime asked to mark the log broken after the error: an I/O failure needs no
    // operator, so no marker may block this open.
    reopen_after_failure(options(&root.join("data")), 1, 5, "Input/output error");
}

/// Waits for the next completion, failing the test after a while instead of hanging.
fn next<T>(completions: &mpsc::Receiver<T>) -> T {
    completions
        .recv_timeout(Duration::from_secs(30))
        .expect("a completion within 30 s")
}

/// A group commit on the log in `dir` that has made entry 1 durable.
fn started(dir: &Path) -> (GroupCommit, Completions) {
    let (committer, completions) = reporting(Wal::open(options(dir)).expect("open"));
    committer.submit(batch(1, 1, 1)).expect("submit");
    next(&completions).expect("durable");
    (committer, completions)
}

#[test]
#[ignore = "run by a_failed_fsync_on_the_writer_thread_is_recorded_there"]
fn child_fsync_fails_on_the_writer_thread() {
    let root = child_root();
    let dir = root.join("data");
    let (committer, completions) = started(&dir);
    faults(
        &root,
        Some(&format!("fail fsync EIO under {}/wal", dir.display())),
    );
    committer.submit(batch(2, 2, 5)).expect("submit");
    next(&completions).expect_err("the sync fails");
    // What the runtime does on a storage error today: stop the node as fatal, marking the log
    // broken. An I/O failure needs no operator, so this must not block the restart.
    let _ = committer.mark_broken("log storage failed");
    faults(&root, None);
    drop(committer);
}

#[test]
fn a_failed_write_on_the_callers_thread_needs_no_manual_step_once_the_disk_is_back() {
    for (errno, message) in [
        ("ENOSPC", "No space left on device"),
        ("EROFS", "Read-only file system"),
        ("EIO", "Input/output error"),
    ] {
        let (_temp, root) = scratch();
        run_child_with("child_write_fails_here", &root, errno);
        let injected = injected(&root);
        assert!(injected.contains(&format!("write {errno}")), "{injected}");
        reopen_after_failure(options(&root.join("data")), 1, 2, message);
    }
}

#[test]
#[ignore = "run by a_failed_write_on_the_callers_thread_needs_no_manual_step_once_the_disk_is_back"]
fn child_write_fails_here() {
    let root = child_root();
    let dir = root.join("data");
    let (committer, _completions) = started(&dir);
    let errno = std::env::var("RAFTWAL_TEST_ERRNO").expect("an errno");
    faults(
        &root,
        Some(&format!("fail write {errno} under {}/wal", dir.display())),
    );
    // A follower's write on its own thread (once the writer is idle and the spare is made).
    let mut pending = batch(2, 2, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        match committer.persist_here(pending) {
            Ok(result) => break result,
            Err(refused) => pending = refused,
        }
        assert!(Instant::now() < deadline, "never written here");
        std::thread::sleep(Duration::from_millis(1));
    };
    let err = result.expect_err("the write fails");
    assert!(matches!(err, StorageError::Io(_)), "{err}");
    let _ = committer.mark_broken("log storage failed");
    faults(&root, None);
    drop(committer);
}

#[test]
fn creating_the_data_directories_syncs_their_parents() {
    let (_temp, root) = scratch();
    run_child("child_directory_syncs", &root);
}

#[test]
#[ignore = "run by creating_the_data_directories_syncs_their_parents"]
fn child_directory_syncs() {
    let root = child_root();
    // Each new directory's entry lives in its parent: the parent must be synced, and a failed
    // sync is an error, not a directory that may vanish in a crash.
    faults(
        &root,
        Some(&format!("fail fsync EIO at {}", root.display())),
    );
    let err = Wal::open(options(&root.join("data"))).expect_err("the data dir's parent sync");
    assert!(
        err.to_string().contains(&root.display().to_string()),
        "{err}"
    );
    faults(
        &root,
        Some(&format!("fail fsync EIO at {}/data", root.display())),
    );
    let err = Wal::open(options(&root.join("data"))).expect_err("wal/'s parent sync");
    assert!(err.to_string().contains("data"), "{err}");
    let err = SnapshotStore::open(root.join("data/snapshots")).expect_err("snapshots/'s parent");
    assert!(err.to_string().contains("data"), "{err}");
    faults(&root, None);
    Wal::open(options(&root.join("data"))).expect("open");
    let snapshots = root.join("data/snapshots");
    SnapshotStore::open(&snapshots).expect("open");
    // Removing a temporary file a crash left is made durable too.
    fs::write(
        snapshots.join("00000000000001f4-0000000000000005.tmp"),
        b"half",
    )
    .expect("write");
    faults(
        &root,
        Some(&format!("fail fsync EIO at {}", snapshots.display())),
    );
    let err = SnapshotStore::open(&snapshots).expect_err("the removal's directory sync");
    assert!(err.to_string().contains("snapshots"), "{err}");
    faults(&root, None);
    SnapshotStore::open(&snapshots).expect("open");
    assert!(injected(&root).lines().count() >= 3, "{}", injected(&root));
}

/// A tmpfs mounted for one test, unmounted when dropped (on every path, panics included).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `path`; `Err` says why not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status})"));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file open: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A real full disk, no shim: a node fills a small tmpfs until a new segment cannot be made;
/// the writer records the failure, the runtime's request to mark the log broken is declined,
/// and once space is freed the next open carries on from the last durable batch by itself.
#[test]
fn a_real_full_disk_needs_no_manual_step_once_space_is_freed() {
    let (_temp, root) = scratch();
    let mount = match Tmpfs::mount(&root.join("small"), "1m") {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!(
                "skipped a_real_full_disk_needs_no_manual_step_once_space_is_freed: {reason}"
            );
            return;
        }
    };
    let filler = mount.path.join("filler");
    fs::write(&filler, vec![1u8; 256 << 10]).expect("filler");
    let data = mount.path.join("data");
    let options = || WalOptions::new(&data).segment_bytes(128 << 10);
    let value = |i: u64| {
        LogWrite::Append(vec![Entry {
            term: Term(1),
            index: LogIndex(i),
            payload: EntryPayload::Command(vec![i as u8; 8 << 10]),
        }])
    };
    let (committer, completions) = reporting(Wal::open(options()).expect("open"));
    let mut durable = 0;
    let error = loop {
        let seq = durable + 1;
        assert!(seq <= 500, "1 MiB never filled up");
        let batch = PersistBatch {
            seq,
            writes: vec![value(seq)],
        };
        committer.submit(batch).expect("submit");
        match next(&completions) {
            Ok(d) => durable = d.last_index.0,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(error, StorageError::Io(ref m) if m.contains("No space left")),
        "{error}"
    );
    committer
        .mark_broken("log storage failed")
        .expect("declined, not an error");
    drop(committer);
    fs::remove_file(&filler).expect("free space");
    let mut wal = reopen_after_failure(options(), durable, durable + 1, "No space left on device");
    wal.write(&value(durable + 1)).expect("write");
    wal.sync().expect("the log takes writes again");
    drop(wal);
    drop(mount);
}
