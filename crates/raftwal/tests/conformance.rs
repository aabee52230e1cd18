//! The storage conformance suite against the durable log, with segments small enough that the
//! cases roll, purge and delete segments, and with the default size.

use raftengine::conformance::check_log_storage;
use raftwal::{Wal, WalOptions};
use std::path::PathBuf;

fn suite(segment_bytes: u64) {
    let root = tempfile::tempdir().expect("temp dir");
    let mut made = 0;
    let mut create = || {
        made += 1;
        let dir = root.path().join(format!("store-{made}"));
        Wal::open(WalOptions::new(dir).segment_bytes(segment_bytes)).expect("open a fresh log")
    };
    let reopen = |wal: Wal| {
        let dir: PathBuf = wal.dir().to_path_buf();
        drop(wal);
        Wal::open(WalOptions::new(dir).segment_bytes(segment_bytes)).expect("reopen the log")
    };
    if let Err(failure) = check_log_storage(&mut create, reopen) {
        panic!("{failure}");
    }
}

#[test]
fn durable_log_conforms_across_many_segments() {
    suite(4096);
}

#[test]
fn durable_log_conforms_in_one_segment() {
    suite(8 << 20);
}
