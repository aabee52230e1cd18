//! The shim in a real process: this test binary runs itself again with `LD_PRELOAD` set, and the
//! child (an ignored test, run only that way) switches faults on and off through its control
//! file and checks what its own file calls return.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `libfaultio.so`, built beside this test binary.
fn shim() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("deps dir");
    let path = dir.join("libfaultio.so");
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs the ignored test `name` of this binary in a child with the shim loaded and
/// `FAULTIO_CONTROL` set, and returns its combined output; fails if the child fails.
fn run_child(name: &str, root: &Path, preload: bool) -> String {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FAULTIO_CONTROL", root.join("control"))
        .env("FAULTIO_TEST_ROOT", root);
    if preload {
        command.env("LD_PRELOAD", shim());
    }
    let output = command.output().expect("run the child");
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
    text
}

fn root() -> PathBuf {
    PathBuf::from(std::env::var_os("FAULTIO_TEST_ROOT").expect("run by the parent test"))
}

/// Replaces the control file by rename, as the crate docs ask.
fn set_control(root: &Path, text: &str) {
    let temp = root.join("control.new");
    fs::write(&temp, text).expect("write control");
    fs::rename(&temp, root.join("control")).expect("install control");
}

fn errno(result: std::io::Result<()>) -> Option<i32> {
    result.err().map(|e| e.raw_os_error().expect("an OS error"))
}

#[test]
fn faults_switch_on_and_off_by_path_and_operation() {
    let root = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(root.path()).expect("canonical");
    run_child("child_faults_by_path_and_operation", &root, true);
    let log = fs::read_to_string(root.join("faults.log")).expect("the fault log");
    let wal = root.join("wal");
    for expected in [
        format!("fsync EIO {}/seg", wal.display()),
        format!("write ENOSPC {}/seg", wal.display()),
        format!("fallocate ENOSPC {}/seg", wal.display()),
        format!("fsync EIO {}", wal.display()),
    ] {
        assert!(
            log.contains(&expected),
            "{expected:?} missing from the log:\n{log}"
        );
    }
}

#[test]
#[ignore = "run by faults_switch_on_and_off_by_path_and_operation with LD_PRELOAD"]
fn child_faults_by_path_and_operation() {
    let root = root();
    let wal = root.join("wal");
    fs::create_dir_all(&wal).expect("mkdir");
    let open = |path: &Path| {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .expect("open")
    };
    let segment = open(&wal.join("seg"));
    let other = open(&root.join("other"));
    // No control file yet: nothing fails.
    segment.write_all_at(b"frame", 0).expect("pwrite");
    segment.sync_data().expect("fdatasync");

    let log = format!("log {}/faults.log\n", root.display());
    set_control(
        &root,
        &format!("{log}fail fsync EIO under {}\n", wal.display()),
    );
    assert_eq!(errno(segment.sync_data()), Some(libc::EIO), "fdatasync");
    assert_eq!(errno(segment.sync_all()), Some(libc::EIO), "fsync");
    assert_eq!(
        errno(File::open(&wal).and_then(|d| d.sync_all())),
        Some(libc::EIO),
        "dir"
    );
    other
        .sync_data()
        .expect("another directory is not affected");
    segment
        .write_all_at(b"frame", 8)
        .expect("writes are not affected");

    set_control(
        &root,
        &format!(
            "{log}fail write,fallocate ENOSPC under {}/\n",
            wal.display()
        ),
    );
    segment.sync_data().expect("fsync is back");
    assert_eq!(
        errno(segment.write_all_at(b"x", 0)),
        Some(libc::ENOSPC),
        "pwrite64"
    );
    assert_eq!(
        errno((&segment).write_all(b"x")),
        Some(libc::ENOSPC),
        "write"
    );
    // SAFETY: a valid descriptor; posix_fallocate returns the error number.
    let ret = unsafe { libc::posix_fallocate(segment.as_raw_fd(), 0, 4096) };
    assert_eq!(ret, libc::ENOSPC, "posix_fallocate");
    // SAFETY: a valid descriptor.
    let ret = unsafe { libc::fallocate(segment.as_raw_fd(), 0, 0, 4096) };
    assert_eq!(
        (ret, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ENOSPC))
    );
    (&other)
        .write_all(b"fine")
        .expect("another file is not affected");

    set_control(
        &root,
        &format!("{log}fail fsync EIO at {}\n", wal.display()),
    );
    assert_eq!(
        errno(File::open(&wal).and_then(|d| d.sync_all())),
        Some(libc::EIO)
    );
    segment.sync_data().expect("`at` is the directory only");

    fs::remove_file(root.join("control")).expect("remove control");
    segment
        .write_all_at(b"frame", 0)
        .expect("no control file, no faults");
    segment.sync_data().expect("fdatasync");
    assert_eq!(fs::read(wal.join("seg")).expect("read")[..5], *b"frame");
}

#[test]
fn a_bad_line_is_reported_on_stderr_and_the_rest_applies() {
    let root = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(root.path()).expect("canonical");
    let text = run_child("child_bad_line", &root, true);
    assert!(text.contains("control:1: unknown errno `EWHAT`"), "{text}");
}

#[test]
#[ignore = "run by a_bad_line_is_reported_on_stderr_and_the_rest_applies with LD_PRELOAD"]
fn child_bad_line() {
    let root = root();
    let file = root.join("f");
    fs::write(&file, b"x").expect("write");
    set_control(
        &root,
        &format!(
            "fail fsync EWHAT under /\nfail fsync EIO at {}\n",
            file.display()
        ),
    );
    let f = File::open(&file).expect("open");
    assert_eq!(errno(f.sync_all()), Some(libc::EIO));
}

#[test]
fn without_the_shim_the_child_sees_no_faults() {
    // The same child assertions fail without LD_PRELOAD: proof that the faults come from the shim.
    let root = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(root.path()).expect("canonical");
    let output = Command::new(std::env::current_exe().expect("exe"))
        .args(["--ignored", "--exact", "child_bad_line", "--test-threads=1"])
        .env("FAULTIO_CONTROL", root.join("control"))
        .env("FAULTIO_TEST_ROOT", &root)
        .output()
        .expect("run");
    assert!(!output.status.success(), "no shim, no EIO");
}
