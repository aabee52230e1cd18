//! Group commit on a thread: batches submitted while a sync is running are written together and
//! made durable by the next single `fdatasync`.

use crate::error::WalError;
use crate::wal::Wal;
use raftengine::{LogIndex, PersistBatch, StorageError};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

/// A completion: every batch up to and including `seq` is durable, and the log ends at
/// `last_index`. Feed `seq` to `RaftNode::persisted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub seq: u64,
    pub last_index: LogIndex,
    /// How many batches this one sync covered.
    pub batches: usize,
}

/// Owns a [`Wal`] on a writer thread. `submit` never blocks on the disk.
pub struct GroupCommit {
    requests: Option<Sender<PersistBatch>>,
    writer: Option<JoinHandle<Wal>>,
}

impl GroupCommit {
    /// Starts the writer. `on_durable` runs on the writer thread after each sync; after an error
    /// it is called once with the error and the writer stops (the log is failed).
    pub fn spawn(
        wal: Wal,
        on_durable: impl FnMut(Result<Durable, StorageError>) + Send + 'static,
    ) -> GroupCommit {
        let (requests, inbox) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("raftwal-writer".into())
            .spawn(move || run_writer(wal, inbox, on_durable));
        match writer {
            Ok(handle) => GroupCommit {
                requests: Some(requests),
                writer: Some(handle),
            },
            // No thread, no writer: every submit reports the log as closed.
            Err(_) => GroupCommit {
                requests: None,
                writer: None,
            },
        }
    }

    /// Queues a batch. Fails only when the writer has stopped (after a storage error).
    pub fn submit(&self, batch: PersistBatch) -> Result<(), WalError> {
        self.requests
            .as_ref()
            .and_then(|tx| tx.send(batch).ok())
            .ok_or_else(|| WalError::Failed("the log writer has stopped".into()))
    }

    /// Writes and syncs what is queued, stops the writer and returns the log.
    pub fn shutdown(mut self) -> Result<Wal, WalError> {
        self.requests = None;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| WalError::Failed("the log writer never started".into()))?;
        writer
            .join()
            .map_err(|_| WalError::Failed("the log writer panicked".into()))
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn run_writer(
    mut wal: Wal,
    inbox: Receiver<PersistBatch>,
    mut on_durable: impl FnMut(Result<Durable, StorageError>),
) -> Wal {
    while let Ok(first) = inbox.recv() {
        let mut seq = first.seq;
        let mut batches = 1;
        let mut result = write_batch(&mut wal, &first);
        // Everything that queued up while the previous sync ran goes into this one.
        while result.is_ok() {
            let Ok(batch) = inbox.try_recv() else { break };
            seq = batch.seq;
            batches += 1;
            result = write_batch(&mut wal, &batch);
        }
        let result = result.and_then(|()| wal.sync().map_err(StorageError::from));
        match result {
            Ok(()) => on_durable(Ok(Durable {
                seq,
                last_index: wal.last_index(),
                batches,
            })),
            Err(e) => {
                // Hang up first, so no submit succeeds once the error is reported.
                drop(inbox);
                on_durable(Err(e));
                return wal;
            }
        }
    }
    wal
}

fn write_batch(wal: &mut Wal, batch: &PersistBatch) -> Result<(), StorageError> {
    batch
        .writes
        .iter()
        .try_for_each(|write| wal.write(write).map_err(StorageError::from))
}
