//! The operator's command, `raftwal clear-broken --data-dir DIR`, as a process.

use raftwal::{Wal, WalOptions};
use std::path::Path;
use std::process::{Command, Output};

fn raftwal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .args(args)
        .output()
        .expect("run raftwal")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn clear(dir: &Path) -> Output {
    raftwal(&["clear-broken", "--data-dir", &dir.display().to_string()])
}

#[test]
fn clear_broken_removes_the_marker_of_a_stopped_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut wal = Wal::open(WalOptions::new(root.path())).expect("open");
    wal.mark_broken("state machine failed at index 7")
        .expect("mark");
    // While the node runs, its lock keeps the command out.
    let refused = clear(root.path());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("in use by another process"),
        "{}",
        text(&refused)
    );
    drop(wal);
    let wal = Wal::open(WalOptions::new(root.path())).expect("open");
    let message = wal.load_state().expect_err("broken").to_string();
    drop(wal);
    // The refusal names the very command that clears it.
    let command = format!("raftwal clear-broken --data-dir {}", root.path().display());
    assert!(message.contains(&command), "{message}");
    let cleared = clear(root.path());
    assert_eq!(cleared.status.code(), Some(0), "{}", text(&cleared));
    assert!(
        text(&cleared).contains("state machine failed at index 7"),
        "{}",
        text(&cleared)
    );
    assert!(!root.path().join("BROKEN").exists());
    Wal::open(WalOptions::new(root.path()))
        .expect("open")
        .load_state()
        .expect("starts again");
    let again = clear(root.path());
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again).contains("has no BROKEN marker"),
        "{}",
        text(&again)
    );
}

#[test]
fn clear_broken_fails_clearly_on_a_missing_directory_and_bad_usage() {
    let missing = clear(Path::new("/nonexistent/raftwal-data"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("no such data directory"),
        "{}",
        text(&missing)
    );
    assert_eq!(raftwal(&["clear-broken"]).status.code(), Some(2), "usage");
}
