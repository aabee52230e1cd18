//! `raftkv clear-broken`: the operator's switch after a fatal error, without the raftwal tool.

use raftwal::{Wal, WalOptions};
use std::process::Command;

fn clear_broken(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["clear-broken", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run raftkv clear-broken")
}

#[test]
fn a_broken_marker_is_cleared_and_the_log_opens_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut wal = Wal::open(WalOptions::new(dir.path())).expect("open");
        wal.mark_broken("state machine failed at index 7: EIO under the store")
            .expect("mark");
    }
    let refused = Wal::open(WalOptions::new(dir.path()))
        .and_then(|wal| wal.load_state())
        .expect_err("a broken log refuses to load");
    assert!(refused.to_string().contains("clear-broken"), "{refused}");

    let out = clear_broken(dir.path());
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("EIO under the store"), "{said}");
    let wal = Wal::open(WalOptions::new(dir.path())).expect("opens");
    wal.load_state().expect("loads again");
    drop(wal);

    let again = clear_broken(dir.path());
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("no BROKEN marker"));
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = clear_broken(&dir.path().join("nowhere"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such data directory"));
}
