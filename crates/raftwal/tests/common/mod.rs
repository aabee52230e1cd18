//! Helpers shared by the test files (each file is its own crate and uses what it needs).
#![allow(dead_code)]

use raftengine::{Entry, EntryPayload, LogIndex, LogWrite, StorageError, Term};
use raftwal::{Durable, GroupCommit, Wal};
use std::sync::mpsc;

/// Entries `from..=to` of term 1, each holding "value <index>".
pub fn entries(from: u64, to: u64) -> LogWrite {
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

pub type Completions = mpsc::Receiver<Result<Durable, StorageError>>;

/// A group commit whose completions arrive on the returned channel.
pub fn reporting(wal: Wal) -> (GroupCommit, Completions) {
    let (done, completions) = mpsc::channel();
    let committer = GroupCommit::spawn(wal, move |result| {
        let _ = done.send(result);
    });
    (committer, completions)
}
